"""A convolution layer's configuration in PyTorch's meaning, framework-free: what every port reads and writes.

Every framework side of :mod:`convbridge.port` reads its module into a :class:`Layer` plus the
kernel in torch's layout (``OI*`` for a convolution, ``IO*`` for a transposed one) and a bias
``(C_out,)``, and builds its module from the same. Padding is resolved to explicit per-dim pairs
whenever the pairs do not depend on the input's size; only a strided XLA ``"same"`` stays a word.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from convbridge.errors import ArgumentError, ConvBridgeWarning
from convbridge.spec import make_conv_spec
from convbridge.spec.geometry import ConvAxis, TransposeAxis
from convbridge.spec.layout import default_spatial_letters
from convbridge.spec.transpose import make_conv_transpose_spec

__all__ = ["Layer", "PortWarning", "same_like", "torch_same", "span", "transpose_crops", "resolve_conv_padding"]

Pairs = tuple[tuple[int, int], ...]


class PortWarning(ConvBridgeWarning):
    """A port used convbridge's own layer (:mod:`convbridge.nn`) because the target's native layer cannot
    express the configuration exactly; the result computes the same thing."""


@dataclass(frozen=True)
class Layer:
    """One convolution layer, resolved, in PyTorch's meaning.

    Attributes:
        op: ``"conv"`` or ``"conv_transpose"`` (torch's: the gradient of conv).
        in_channels, out_channels, groups: channel arithmetic.
        kernel_size, stride, dilation: per spatial dim.
        padding: conv: per-dim ``(lo, hi)`` pads; conv_transpose: per-dim ``(lo, hi)`` crops of the full output;
            or ``"same"`` / ``"same_lower"`` (XLA's rule, whose pairs depend on the input's size when strided).
        output_padding: per dim (conv_transpose; zeros for conv).
        use_bias: whether the layer adds a bias.
        padding_mode: ``"zeros" | "reflect" | "replicate" | "circular"`` (conv only).
        layout: the input (and output) layout the layer takes, e.g. ``"NCHW"``, ``"NHWC"``, ``"CHW"``.

    >>> Layer("conv", 3, 8, (3, 3), padding=((1, 1), (1, 1)), layout="NCHW").op_kwargs()["padding"]
    ((1, 1), (1, 1))
    """

    op: str
    in_channels: int
    out_channels: int
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...] = ()
    padding: Pairs | str = ()
    dilation: tuple[int, ...] = ()
    groups: int = 1
    use_bias: bool = True
    padding_mode: str = "zeros"
    output_padding: tuple[int, ...] = ()
    layout: str = ""
    dtype: str = field(default="float32", compare=False)

    def __post_init__(self) -> None:
        n = len(self.kernel_size)
        for name in ("stride", "dilation", "output_padding"):
            if not getattr(self, name):
                object.__setattr__(self, name, ((1 if name != "output_padding" else 0),) * n)
        if self.padding == ():
            object.__setattr__(self, "padding", ((0, 0),) * n)
        if not self.layout:
            object.__setattr__(self, "layout", "NC" + default_spatial_letters(n))
        if self.op == "conv_transpose" and not isinstance(self.padding, str):  # one form for one meaning
            from convbridge.transpose import torch_crops

            pads, out_pad = [], []
            for (lo, hi), op, s, d in zip(self.padding, self.output_padding, self.stride, self.dilation):
                found = torch_crops(lo, hi - op, max(s, d))
                (pair, extra) = found if found is not None else ((lo, hi), op)
                pads.append(pair)
                out_pad.append(extra)
            object.__setattr__(self, "padding", tuple(pads))
            object.__setattr__(self, "output_padding", tuple(out_pad))

    @property
    def nsp(self) -> int:
        return len(self.kernel_size)

    @property
    def spatial(self) -> str:
        return "".join(c for c in self.layout if c not in "NC")

    @property
    def batched(self) -> bool:
        return "N" in self.layout

    @property
    def torch_kernel_shape(self) -> tuple[int, ...]:
        """The kernel's shape in torch's layout: conv ``(out, in/g, *k)``, transposed ``(in, out/g, *k)``."""
        if self.op == "conv":
            return (self.out_channels, self.in_channels // self.groups, *self.kernel_size)
        return (self.in_channels, self.out_channels // self.groups, *self.kernel_size)

    @property
    def torch_kernel_layout(self) -> str:
        return ("OI" if self.op == "conv" else "IO") + self.spatial

    @property
    def pairs(self) -> Pairs:
        """The padding as per-dim pairs (a strided ``"same"`` has none: its pairs depend on the input)."""
        if isinstance(self.padding, str):
            raise ArgumentError(f"padding {self.padding!r} has no fixed pairs: they depend on the input's size")
        return self.padding

    @property
    def symmetric(self) -> bool:
        return not isinstance(self.padding, str) and all(lo == hi for lo, hi in self.padding)

    def op_kwargs(self, layout: str | None = None) -> dict[str, Any]:
        """Keyword arguments of ``cb.conv`` / ``cb.conv_transpose`` for input layout ``layout`` and torch's
        kernel layout."""
        lay = layout or self.layout
        kw: dict[str, Any] = dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                                  groups=self.groups, layout=f"{lay},{self.torch_kernel_layout}->{lay}")
        if self.op == "conv":
            kw["padding_mode"] = self.padding_mode
        else:
            kw["output_padding"] = self.output_padding
        return kw

    def with_layout(self, layout: str) -> Layer:
        """The same layer taking ``layout`` (same spatial letters, or any for the default letters)."""
        from dataclasses import replace

        return replace(self, layout=layout)

    def lax_pairs(self) -> Pairs:
        """A transposed layer's ``lax.conv_transpose`` paddings ``(D - lo, D - hi + output_padding)``."""
        return tuple(TransposeAxis(1, k, s, d, lo, hi, op).lax_padding for (lo, hi), k, s, d, op
                     in zip(self.pairs, self.kernel_size, self.stride, self.dilation, self.output_padding))

    def validate(self) -> Layer:
        """Check the configuration with convbridge's own spec builders (on a dummy input); return self.

        Raises:
            ConvBridgeError: what ``cb.conv`` / ``cb.conv_transpose`` would refuse.
        """
        most = 0 if isinstance(self.padding, str) else max(max(abs(lo), abs(hi)) for lo, hi in self.padding)
        x = (1, self.in_channels, *(span(k, d) + 2 * most + 1 for k, d in zip(self.kernel_size, self.dilation)))
        g = max(self.groups, 1)
        if self.op == "conv":
            make_conv_spec(x, (self.out_channels, self.in_channels // g, *self.kernel_size), stride=self.stride,
                           padding=self.padding, dilation=self.dilation, groups=self.groups,
                           padding_mode=self.padding_mode)
        else:
            if self.out_channels % g:
                raise ArgumentError(f"out_channels ({self.out_channels}) must be a multiple of groups ({g})")
            make_conv_transpose_spec(x, (self.in_channels, self.out_channels // g, *self.kernel_size),
                                     stride=self.stride, padding=self.padding, output_padding=self.output_padding,
                                     dilation=self.dilation, groups=self.groups)
        return self


def span(kernel: int, dilation: int) -> int:
    """The dilated kernel's extent (the geometry's)."""
    return TransposeAxis(1, kernel, 1, dilation).span


def same_like(kernel_size: tuple[int, ...], dilation: tuple[int, ...]) -> Pairs:
    """The widths Flax's padding modes always pad: ``((k' - 1) // 2, k' // 2)`` with ``k' = d (k - 1) + 1``."""
    return tuple(((span(k, d) - 1) // 2, span(k, d) // 2) for k, d in zip(kernel_size, dilation))


def torch_same(kernel_size: tuple[int, ...], dilation: tuple[int, ...]) -> Pairs:
    """torch's ``padding='same'`` (stride 1): total ``d (k - 1)``, the odd pixel on the high side."""
    return tuple(ConvAxis.same(span(k, d), k, 1, d).padding for k, d in zip(kernel_size, dilation))


def resolve_conv_padding(padding: Any, kernel_size: tuple[int, ...], stride: tuple[int, ...],
                         dilation: tuple[int, ...]) -> Pairs | str:
    """A conv padding as pairs, or ``"same"``/``"same_lower"`` when strided (input-size dependent)."""
    if isinstance(padding, str):
        word = padding.lower()
        if word == "valid":
            return ((0, 0),) * len(kernel_size)
        if word in ("same", "same_lower"):
            if all(s == 1 for s in stride):
                pairs = torch_same(kernel_size, dilation)
                return pairs if word == "same" else tuple((hi, lo) for lo, hi in pairs)
            return word
        raise ArgumentError(f"padding {padding!r} has no convolution meaning here; use 'same', 'valid' or pairs")
    if isinstance(padding, int):
        return ((padding, padding),) * len(kernel_size)
    out = []
    for p in padding:
        out.append((int(p), int(p)) if isinstance(p, int) else (int(p[0]), int(p[1])))
    return tuple(out)


def transpose_crops(padding: Any, output_padding: Any, kernel_size: tuple[int, ...], stride: tuple[int, ...],
                    dilation: tuple[int, ...]) -> tuple[Pairs, tuple[int, ...]]:
    """A torch-convention transposed padding (int, ints, pairs, ``"valid"``, ``"same"``...) as crop pairs and
    output_padding; they never depend on the input's size."""
    from convbridge.spec.transpose import torch_axes

    n = len(kernel_size)
    axes = torch_axes(padding, output_padding, None, (1,) * n, kernel_size, stride, dilation,
                      letters=default_spatial_letters(n))
    return tuple(a.padding for a in axes), tuple(a.output_padding for a in axes)
