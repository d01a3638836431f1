"""What the layers of :mod:`convbridge.nn` share, framework-free: argument validation, storage layouts, fan-in
and the init bounds.

A layer's arguments are validated once, at construction, into a :class:`LayerConfig` whose fields are the
attributes every layer exposes; the forward pass and ``repr`` read those attributes back
(:meth:`LayerConfig.of`), so nothing is validated twice and no framework re-derives a layout.

>>> cfg = conv_config("linen", 2, 3, 8, 3, padding=1)
>>> cfg.layout, cfg.kernel_layout, cfg.kernel_shape, cfg.fan_in("torch")
('NHWC', 'HWIO', (3, 3, 3, 8), 27)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sized
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import Any, TypeAlias, cast

from convbridge import frameworks
from convbridge._args import as_param, choice, is_seq, per_dim
from convbridge.errors import ArgumentError, ArgumentTypeError, LayoutError, brief, describe_value
from convbridge.spec.conv import make_conv_spec
from convbridge.spec.geometry import ConvAxis, TransposeAxis
from convbridge.spec.layout import RESERVED, default_spatial_letters, resolve_layout
from convbridge.spec.padding import PADDING_MODES, parse_padding
from convbridge.spec.transpose import make_conv_transpose_spec

__all__ = ["INITS", "TRUNCATED_STD", "FrozenPadding", "Storage", "STORAGE", "LayerConfig", "conv_config",
           "transpose_config", "freeze_padding"]

#: The init schemes a layer draws its parameters with.
INITS = ("torch", "flax")
#: The standard deviation of a standard normal truncated to (-2, 2): Flax's ``variance_scaling`` divides by it so
#: that its truncated normal keeps the variance asked for.
TRUNCATED_STD = 0.87962566103423978

#: A padding argument as a layer stores it: an int, a string, or (nested) tuples of ints (hashable).
FrozenPadding: TypeAlias = int | str | tuple[Any, ...]


@dataclass(frozen=True)
class Storage:
    """Where one framework's layers keep their parameters, as layout templates (``*`` = the spatial letters).

    Attributes:
        input: the customary input (and output) layout, e.g. ``"NC*"``.
        conv_kernel: the Conv kernel's storage layout; ``I`` is one group's input channels.
        transpose_kernel: the ConvTranspose kernel's storage layout; ``I`` is all of ``x``'s channels, ``O`` one
            group's output channels (convbridge's letters).
        init: the default init scheme.

    >>> STORAGE["equinox"].input, STORAGE["equinox"].transpose_kernel, STORAGE["nnx"].init
    ('C*', 'IO*', 'flax')
    """

    input: str
    conv_kernel: str
    transpose_kernel: str
    init: str


_T, _L = frameworks.TORCH, frameworks.FLAX_LINEN
#: Per framework of :mod:`convbridge.nn`. Equinox's layers keep torch's weight (not eqx.nn.ConvTranspose's own).
STORAGE = MappingProxyType({
    "torch": Storage(_T.input, _T.kernel, _T.transpose_kernel, "torch"),
    "linen": Storage(_L.input, _L.kernel, _L.transpose_kernel, "flax"),
    "nnx": Storage(frameworks.FLAX_NNX.input, frameworks.FLAX_NNX.kernel, frameworks.FLAX_NNX.transpose_kernel,
                   "flax"),
    "equinox": Storage(frameworks.EQUINOX.input, _T.kernel, _T.transpose_kernel, "torch"),
})


@dataclass(frozen=True)
class LayerConfig:
    """A layer's validated arguments: exactly the attributes every layer of :mod:`convbridge.nn` exposes.

    Attributes:
        op: ``"conv"`` or ``"conv_transpose"``.
        num_spatial_dims, in_channels, out_channels, groups, use_bias: as given.
        kernel_size, stride, dilation: one int per spatial dim (in the order of the layout's spatial letters).
        padding: as given, with sequences made tuples (hashable).
        padding_mode: ``"zeros"``, ``"reflect"``, ``"replicate"`` or ``"circular"`` (``"zeros"`` for
            ConvTranspose).
        output_padding: one int per spatial dim (zeros for Conv, which has no such attribute).
        layout: the input and output layout, e.g. ``"NCHW"``; no ``N``: one example (unbatched).
        kernel_layout: the kernel's storage layout in convbridge's letters, e.g. ``"OIHW"``.
        init_scheme: ``"torch"`` or ``"flax"``.

    >>> cfg = transpose_config("nnx", 1, 4, 6, 3, stride=2, groups=2, layout="NCW")
    >>> cfg.kernel_layout, cfg.kernel_shape, cfg.output_padding
    ('WIO', (3, 4, 3), (0,))
    """

    op: str
    num_spatial_dims: int
    in_channels: int
    out_channels: int
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    padding: FrozenPadding
    dilation: tuple[int, ...]
    groups: int
    use_bias: bool
    padding_mode: str
    output_padding: tuple[int, ...]
    layout: str
    kernel_layout: str
    init_scheme: str

    @classmethod
    def of(cls, layer: Any, op: str) -> LayerConfig:
        """The config of a constructed layer, read back from its attributes (no validation).

        >>> cfg = conv_config("torch", 1, 2, 4, 3)
        >>> LayerConfig.of(cfg, "conv") == cfg
        True
        """
        values = {f.name: getattr(layer, f.name) for f in fields(cls) if f.name not in ("op", "output_padding")}
        output_padding = getattr(layer, "output_padding") if op == "conv_transpose" else (0,) * len(layer.stride)
        return cls(op=op, output_padding=output_padding, **values)

    @property
    def transposed(self) -> bool:
        return self.op == "conv_transpose"

    @property
    def spatial(self) -> str:
        """The spatial letters, in the layout's order."""
        return "".join(c for c in self.layout if c not in RESERVED)

    def _shape(self, layout: str) -> tuple[int, ...]:
        if self.transposed:
            channels = {"I": self.in_channels, "O": self.out_channels // self.groups}
        else:
            channels = {"O": self.out_channels, "I": self.in_channels // self.groups}
        sizes = {**channels, **dict(zip(self.spatial, self.kernel_size))}
        return tuple(sizes[c] for c in layout)

    @property
    def kernel_shape(self) -> tuple[int, ...]:
        """The kernel's shape as the layer stores it."""
        return self._shape(self.kernel_layout)

    @property
    def torch_layout(self) -> str:
        """torch's weight layout: ``OI*`` for Conv, ``IO*`` for ConvTranspose."""
        template = _T.transpose_kernel if self.transposed else _T.kernel
        return template.replace("*", self.spatial)

    @property
    def flax_layout(self) -> str:
        """Flax's kernel layout ``*IO`` (for ConvTranspose ``I`` is all of x's channels)."""
        return _L.kernel.replace("*", self.spatial)

    def fan_in(self, scheme: str) -> int:
        """The fan-in an init scheme scales by.

        ``"torch"``: torch's weight axis 1 times the kernel's taps: ``in / groups * prod(k)`` for Conv, but
        ``out / groups * prod(k)`` for ConvTranspose (PyTorch's quirk, pytorch#30079, kept). ``"flax"``: the
        kernel laid out as Flax's ``*IO``, all axes but the last: ``prod(k) * in / groups`` for Conv,
        ``prod(k) * in`` for ConvTranspose.

        >>> cfg = transpose_config("torch", 2, 8, 4, 3, groups=2)
        >>> cfg.fan_in("torch"), cfg.fan_in("flax")
        (18, 72)
        """
        if choice(scheme, "init", INITS) == "torch":
            return math.prod(self._shape(self.torch_layout)[1:])  # torch's weight axis 1 times the taps
        return math.prod(self._shape(self.flax_layout)[:-1])  # Flax: every axis but the last (O)

    def uniform_bound(self) -> float:
        """``"torch"`` init: weight and bias are drawn from U(-b, b), ``b = 1 / sqrt(fan_in)`` (0 if no fan-in).

        >>> conv_config("torch", 2, 3, 8, 3).uniform_bound() == 1 / math.sqrt(27)
        True
        """
        fan = self.fan_in("torch")
        return 1 / math.sqrt(fan) if fan > 0 else 0.0

    def normal_std(self) -> float:
        """``"flax"`` init (``lecun_normal``): the scale of a standard normal truncated to (-2, 2),
        ``sqrt(1 / fan_in) / TRUNCATED_STD``, so that the draws have variance ``1 / fan_in``.

        >>> round(conv_config("linen", 1, 1, 1, 4).normal_std(), 6)
        0.568424
        """
        return math.sqrt(1 / self.fan_in("flax")) / TRUNCATED_STD

    @property
    def flax_kernel_shape(self) -> tuple[int, ...]:
        """The kernel's shape laid out as Flax's ``*IO`` (what ``"flax"`` init draws, then permutes)."""
        return self._shape(self.flax_layout)

    @property
    def from_flax(self) -> tuple[int, ...]:
        """The axes of a ``*IO`` kernel to take, in order, to lay it out as the layer stores it.

        >>> transpose_config("torch", 2, 3, 8, (1, 2)).from_flax
        (2, 3, 0, 1)
        """
        return tuple(self.flax_layout.index(c) for c in self.kernel_layout)

    @property
    def call_layout(self) -> str:
        """The ``layout=`` argument of :func:`convbridge.conv`: input, stored kernel, output."""
        return f"{self.layout},{self.kernel_layout}->{self.layout}"

    def kwargs(self, ndim: int | None = None) -> dict[str, Any]:
        """The keyword arguments of :func:`convbridge.conv` or :func:`convbridge.conv_transpose` (backend aside) for
        an input of ``ndim`` dims: one dim fewer than a batched layout names is one unbatched example, as torch's
        and Flax's own layers take it.

        >>> conv_config("equinox", 1, 2, 2, 3, padding_mode="circular").kwargs()["layout"]
        'CW,OIW->CW'
        >>> conv_config("torch", 2, 3, 8, 3).kwargs(ndim=3)["layout"]
        'CHW,OIHW->CHW'
        """
        layout = self.call_layout
        if ndim is not None and "N" in self.layout and ndim == len(self.layout) - 1:
            layout = layout.replace("N", "")  # kernel layouts have no N
        common = dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups,
                      layout=layout, precision="highest")
        if self.transposed:
            return dict(common, output_padding=self.output_padding, convention="torch")
        return dict(common, padding_mode=self.padding_mode)

    def describe(self, default_init: str) -> str:
        """torch-style ``extra_repr``: the channels, kernel size and stride, then what differs from the defaults.

        >>> conv_config("torch", 2, 3, 8, 3, padding=1, groups=1).describe("torch")
        "2, 3, 8, kernel_size=(3, 3), stride=(1, 1), padding=1, layout='NCHW'"
        """
        n = self.num_spatial_dims
        text = f"{n}, {self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        extras = [("padding", self.padding, 0), ("dilation", self.dilation, (1,) * n),
                  ("output_padding", self.output_padding, (0,) * n), ("groups", self.groups, 1),
                  ("use_bias", self.use_bias, True), ("padding_mode", self.padding_mode, "zeros"),
                  ("layout", self.layout, None), ("init", self.init_scheme, default_init)]
        for name, value, default in extras:
            if value != default:
                text += f", {name}={value!r}"
        return text


def conv_config(framework: str, num_spatial_dims: int, in_channels: int, out_channels: int, kernel_size: object,
                stride: object = 1, padding: object = 0, dilation: object = 1, groups: object = 1,
                use_bias: object = True, padding_mode: object = "zeros", layout: object = None,
                init: object = None) -> LayerConfig:
    """Validate a Conv layer's arguments (``framework``: a key of :data:`STORAGE`; ``init=None``: its default).

    Raises:
        ConvBridgeError: any invalid argument; the subclass says which kind.

    >>> conv_config("torch", 2, 4, 6, 3, groups=4)
    Traceback (most recent call last):
    ...
    convbridge.errors.ArgumentError: groups (4) must divide out_channels (6); ...
    """
    cfg = _config("conv", framework, num_spatial_dims, in_channels, out_channels, kernel_size, stride, padding,
                  dilation, groups, use_bias, choice(padding_mode, "padding_mode", PADDING_MODES), 0, layout, init)
    make_conv_spec(_dummy_input(cfg), cfg.kernel_shape, (cfg.out_channels,) if cfg.use_bias else None,
                   **_spec_kwargs(cfg))
    return cfg


def transpose_config(framework: str, num_spatial_dims: int, in_channels: int, out_channels: int,
                     kernel_size: object, stride: object = 1, padding: object = 0, output_padding: object = 0,
                     dilation: object = 1, groups: object = 1, use_bias: object = True, padding_mode: object = "zeros",
                     layout: object = None, init: object = None) -> LayerConfig:
    """Validate a ConvTranspose layer's arguments (as :func:`conv_config`; ``padding_mode`` must be ``"zeros"``).

    Raises:
        ConvBridgeError: any invalid argument; the subclass says which kind.

    >>> transpose_config("torch", 1, 2, 2, 3, stride=2, output_padding=2)
    Traceback (most recent call last):
    ...
    convbridge.errors.ArgumentError: output_padding 2 on axis W must be < max(stride 2, dilation 1) = 2 ...
    """
    if padding_mode != "zeros":
        raise ArgumentError(f"ConvTranspose has no padding_mode {brief(padding_mode)}: a transposed convolution "
                            "crops its full output instead of padding an input (torch's ConvTranspose takes 'zeros' "
                            "only); drop padding_mode, or pad or crop the result yourself")
    cfg = _config("conv_transpose", framework, num_spatial_dims, in_channels, out_channels, kernel_size, stride,
                  padding, dilation, groups, use_bias, "zeros", output_padding, layout, init)
    make_conv_transpose_spec(_dummy_input(cfg), cfg.kernel_shape, (cfg.out_channels,) if cfg.use_bias else None,
                             **_spec_kwargs(cfg))
    return cfg


def _spec_kwargs(cfg: LayerConfig) -> dict[str, Any]:
    return {k: v for k, v in cfg.kwargs().items() if k not in ("precision", "convention")}


def _config(op: str, framework: str, nsp: object, in_channels: object, out_channels: object, kernel_size: object,
            stride: object, padding: object, dilation: object, groups: object, use_bias: object, padding_mode: str,
            output_padding: object, layout: object, init: object) -> LayerConfig:
    storage = STORAGE[framework]
    n = _positive(nsp, "num_spatial_dims")
    c_in, c_out = _positive(in_channels, "in_channels"), _positive(out_channels, "out_channels")
    g = _groups(groups, c_in, c_out)
    if not isinstance(use_bias, bool):
        raise ArgumentTypeError(f"use_bias must be True or False, got {describe_value(use_bias)}")
    lhs, kernel = _layouts(layout, storage, n, op)
    cfg = LayerConfig(
        op=op, num_spatial_dims=n, in_channels=c_in, out_channels=c_out,
        kernel_size=_per_dim(kernel_size, "kernel_size", n, 1), stride=_per_dim(stride, "stride", n, 1),
        padding=freeze_padding(padding, n), dilation=_per_dim(dilation, "dilation", n, 1), groups=g,
        use_bias=use_bias, padding_mode=padding_mode, output_padding=_per_dim(output_padding, "output_padding", n, 0),
        layout=lhs, kernel_layout=kernel, init_scheme=choice(storage.init if init is None else init, "init", INITS))
    _check_output_padding(cfg)
    return cfg


def _positive(value: object, name: str) -> int:
    v = as_param(value, name)
    if v < 1:
        raise ArgumentError(f"{name} must be >= 1, got {v}")
    return v


def _groups(groups: object, c_in: int, c_out: int) -> int:
    g = _positive(groups, "groups")
    for name, channels in (("in_channels", c_in), ("out_channels", c_out)):
        if channels % g:
            common = [d for d in range(1, math.gcd(c_in, c_out) + 1) if c_in % d == 0 == c_out % d]
            raise ArgumentError(f"groups ({g}) must divide {name} ({channels}); with in_channels {c_in} and "
                                f"out_channels {c_out} choose groups from {common}")
    return g


def _per_dim(value: object, name: str, nsp: int, minimum: int) -> tuple[int, ...]:
    if is_seq(value) and len(cast(Sized, value)) not in (1, nsp):
        raise ArgumentError(f"{name} has {len(cast(Sized, value))} entries but num_spatial_dims is {nsp}; "
                            f"give one int or {nsp} ints (one per spatial dim)")
    return per_dim(value, name, nsp, minimum=minimum)


def freeze_padding(padding: object, nsp: int) -> FrozenPadding:
    """Validate a padding argument (any form :func:`convbridge.conv` takes) and store it as given, with sequences
    made tuples so that a layer holding it hashes and compares.

    Raises:
        PaddingError: a form :func:`convbridge.conv` does not accept.

    >>> freeze_padding([[1, 0], [2, 1]], 2), freeze_padding("same", 2), freeze_padding(3, 1)
    (((1, 0), (2, 1)), 'same', 3)
    """
    parse_padding(padding, nsp)
    return _freeze(padding)


def _freeze(value: object) -> FrozenPadding:
    if isinstance(value, str):
        return value
    if is_seq(value):
        return tuple(_freeze(v) for v in cast(Iterable[object], value))
    return as_param(value, "padding")


def _layouts(layout: object, storage: Storage, nsp: int, op: str) -> tuple[str, str]:
    """The input layout (``None``: the framework's) and the kernel's storage layout with its spatial letters."""
    if layout is None:
        lhs = storage.input.replace("*", default_spatial_letters(nsp))
    elif isinstance(layout, str) and "," not in layout and "->" not in layout:
        lhs = layout.replace(" ", "")
    else:
        raise LayoutError(f"layout is the layer's input (and output) layout, a string such as 'NHWC' or 'CHW'; got "
                          f"{brief(layout)}: the kernel's layout is fixed by how the layer stores it "
                          f"({storage.transpose_kernel if op == 'conv_transpose' else storage.conv_kernel})")
    spatial = "".join(c for c in lhs if c not in RESERVED)
    template = storage.transpose_kernel if op == "conv_transpose" else storage.conv_kernel
    kernel = template.replace("*", spatial)
    resolve_layout(f"{lhs},{kernel}->{lhs}", len(lhs), len(kernel), op)  # the letters: raises LayoutError
    if len(spatial) != nsp:
        example = storage.input.replace("*", default_spatial_letters(nsp))
        raise LayoutError(f"layout {lhs!r} has {len(spatial)} spatial axes ({spatial}) but num_spatial_dims is "
                          f"{nsp}; give {nsp} spatial letters, e.g. {example!r}")
    return lhs, kernel


def _check_output_padding(cfg: LayerConfig) -> None:
    for letter, op, s, d in zip(cfg.spatial, cfg.output_padding, cfg.stride, cfg.dilation):
        room = TransposeAxis(1, 1, s, d).room
        if op >= room:
            raise ArgumentError(
                f"output_padding {op} on axis {letter} must be < max(stride {s}, dilation {d}) = {room} (ATen's "
                f"rule; torch.nn.ConvTranspose allows only < stride); use 0..{room - 1}, or a larger stride")


def _dummy_input(cfg: LayerConfig) -> tuple[int, ...]:
    """An input shape every argument fits (the spec builders validate the rest on it)."""
    pads = parse_padding(cfg.padding, cfg.num_spatial_dims)
    widths = [0] * cfg.num_spatial_dims if isinstance(pads, str) else [sum(p) for p in pads]
    sizes = {"N": 1, "C": cfg.in_channels}
    for letter, k, d, w in zip(cfg.spatial, cfg.kernel_size, cfg.dilation, widths):
        sizes[letter] = ConvAxis(1, k, 1, d).span + w
    return tuple(sizes[c] for c in cfg.layout)
