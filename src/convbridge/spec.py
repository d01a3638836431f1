"""ConvSpec: every argument parsed, validated and resolved once, framework-free.

Backends never parse user input: they receive a :class:`ConvSpec` whose shapes,
strides, dilations and ``(lo, hi)`` paddings are in canonical order
``(N, C, *spatial)`` / ``(O, I, *spatial)``, spatial axes in the order of the
input layout's spatial letters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from convbridge._args import as_int, choice, per_dim
from convbridge.errors import ArgumentError, DTypeError, PaddingError, ShapeError
from convbridge.layout import Layout, resolve_layout
from convbridge.padding import PADDING_MODES, check_mode_widths, parse_padding, same_pairs

__all__ = ["ConvSpec", "ConvGeometry", "make_conv_spec", "output_shape", "user_out_shape", "dtype_name", "PRECISIONS", "FLOAT_DTYPES"]

PRECISIONS = ("highest", "high", "default")
FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")


class ConvGeometry:
    """Shape properties shared by the convolution specs (fields: layout, batch, channels, groups, sizes)."""

    @property
    def nsp(self) -> int:
        """Number of spatial dims."""
        return len(self.in_spatial)

    @property
    def terms(self) -> int:
        """K: products summed into one output element, an upper bound (+1 with a bias)."""
        return self.in_channels // self.groups * math.prod(self.kernel_spatial) + int(self.has_bias)

    @property
    def canonical_out_shape(self) -> tuple[int, ...]:
        return (self.batch, self.out_channels, *self.out_spatial)

    @property
    def out_shape(self) -> tuple[int, ...]:
        """The output shape in the user's output layout (no N axis for unbatched input)."""
        return user_out_shape(self.layout, self.canonical_out_shape)


@dataclass(frozen=True)
class ConvSpec(ConvGeometry):
    """A validated convolution, in canonical order.

    Attributes:
        op: ``"conv"``.
        layout: resolved layouts (with permutations to canonical order).
        batch: N (1 for an unbatched input).
        in_channels, out_channels, groups: channel arithmetic; in_channels = groups x kernel I.
        in_spatial, kernel_spatial, out_spatial: spatial sizes in canonical order.
        stride, dilation: per spatial dim.
        padding: per spatial dim ``(lo, hi)``, resolved (``"same"`` already applied).
        padding_mode: ``"zeros" | "reflect" | "replicate" | "circular"``.
        has_bias: whether a bias of shape ``(out_channels,)`` is added.
        dtype: dtype name shared by input, kernel and bias (``None`` for shape-only specs).
        precision: ``"highest" | "high" | "default"``.
    """

    op: str
    layout: Layout
    batch: int
    in_channels: int
    out_channels: int
    groups: int
    in_spatial: tuple[int, ...]
    kernel_spatial: tuple[int, ...]
    out_spatial: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    padding: tuple[tuple[int, int], ...]
    padding_mode: str
    has_bias: bool
    dtype: str | None
    precision: str

    @property
    def macs(self) -> int:
        """Multiply-accumulates of the direct algorithm."""
        per_out = self.in_channels // self.groups * math.prod(self.kernel_spatial)
        return self.batch * self.out_channels * math.prod(self.out_spatial) * per_out

    def describe(self) -> str:
        """The resolved arguments in words (the report's description line)."""
        pads = ", ".join(f"({lo}, {hi})" for lo, hi in self.padding)
        return (f"{self.nsp}-d, layout {self.layout}, stride {self.stride}, padding [{pads}] {self.padding_mode}, "
                f"dilation {self.dilation}, groups {self.groups}, bias {self.has_bias}")


def user_out_shape(layout: Layout, canonical: tuple[int, ...]) -> tuple[int, ...]:
    """A canonical ``(N, C, *spatial)`` output shape in the user's output layout (no N when unbatched)."""
    sizes = dict(zip(("N", "C", *layout.spatial), canonical))
    return tuple(sizes[c] for c in layout.user(layout.out))


def dtype_name(array: object) -> str:
    """The dtype of a numpy/jax/torch array as a plain name (``"float32"``), importing nothing."""
    dt = getattr(array, "dtype", None)
    if dt is None:
        return type(array).__name__
    text = str(dt)
    return text[len("torch.") :] if text.startswith("torch.") else getattr(dt, "name", text)


def make_conv_spec(
    x_shape,
    w_shape,
    b_shape=None,
    *,
    stride=1,
    padding=0,
    dilation=1,
    groups=1,
    padding_mode="zeros",
    layout=None,
    precision="highest",
    dtypes: tuple[str | None, ...] = (None,),
) -> ConvSpec:
    """Parse and validate convolution arguments into a :class:`ConvSpec`.

    Raises:
        ConvBridgeError: any invalid argument; the subclass says which kind.
    """
    x_shape, w_shape = _shape(x_shape, "input"), _shape(w_shape, "kernel")
    lay = resolve_layout(layout, len(x_shape), len(w_shape), "conv")
    xs = (1, *x_shape) if not lay.batched else x_shape
    xc = [xs[i] for i in lay.lhs_perm]
    wc = [w_shape[i] for i in lay.rhs_perm]
    nsp = len(lay.spatial)
    _check_nonempty(xc, wc, lay)
    groups = _groups(groups, xc[1], wc[0], wc[1])
    stride = per_dim(stride, "stride", nsp, minimum=1)
    dilation = per_dim(dilation, "dilation", nsp, minimum=1)
    mode = choice(padding_mode, "padding_mode", PADDING_MODES)
    pads = parse_padding(padding, nsp)
    if isinstance(pads, str):
        pads = same_pairs(xc[2:], wc[2:], stride, dilation, lower=pads == "same_lower")
    if mode != "zeros":
        check_mode_widths(mode, pads, xc[2:], lay.spatial)
    out_sp = _conv_out_spatial(xc[2:], wc[2:], stride, dilation, pads, lay.spatial)
    _check_bias(b_shape, wc[0])
    dtype = _common_dtype(dtypes)
    return ConvSpec(
        op="conv", layout=lay, batch=xc[0], in_channels=xc[1], out_channels=wc[0], groups=groups,
        in_spatial=tuple(xc[2:]), kernel_spatial=tuple(wc[2:]), out_spatial=out_sp,
        stride=stride, dilation=dilation, padding=pads, padding_mode=mode,
        has_bias=b_shape is not None, dtype=dtype,
        precision=choice(precision, "precision", PRECISIONS),
    )


def output_shape(input_shape, kernel_shape, *, op: str = "conv", **op_kwargs) -> tuple[int, ...]:
    """The output shape of ``op`` without computing anything.

    Args:
        input_shape: shape of ``x`` (``cols`` for ``"fold"``).
        kernel_shape: shape of the kernel for ``"conv"``/``"conv_transpose"``; the kernel size
            (int or per-dim ints) for ``"unfold"``/``"fold"``.
        op: ``"conv" | "conv_transpose" | "unfold" | "fold"``.
        **op_kwargs: the op's keyword arguments (``bias`` may be an array or a shape).

    Shape:
        conv: out = floor((n + lo + hi - dilation * (k - 1) - 1) / stride) + 1 per spatial dim;
        conv_transpose: out = (n - 1) * stride - lo - hi + dilation * (k - 1) + output_padding + 1;
        unfold: (N, C * prod(k), L), L = product of conv's out; fold: (N, C, *output_size).

    >>> output_shape((32, 3, 32, 32), (4, 3, 5, 5))
    (32, 4, 28, 28)
    >>> output_shape((8, 224, 224, 3), (7, 7, 3, 64), stride=2, padding="same", layout="NHWC")
    (8, 112, 112, 64)
    >>> output_shape((1, 4, 15), (4, 2, 3), op="conv_transpose", stride=2, padding=1, output_size=30)
    (1, 2, 30)
    >>> output_shape((2, 3, 8, 8), (3, 3), op="unfold", padding=1)
    (2, 27, 64)
    """
    from convbridge.ops import get_op  # the op table imports this module

    bias = op_kwargs.pop("bias", None)
    b_shape = None if bias is None else tuple(getattr(bias, "shape", bias))
    return get_op(op).build(input_shape, kernel_shape, b_shape, **op_kwargs).out_shape


def _shape(shape, what: str) -> tuple[int, ...]:
    try:
        return tuple(as_int(s, f"{what} shape") for s in shape)
    except TypeError:
        raise ShapeError(f"{what} shape must be a sequence of ints, got {shape!r}") from None


def _check_nonempty(xc, wc, lay: Layout) -> None:
    names = {"O": "out-channel", "I": "in-channel"}
    for letter, size in zip(("O", "I", *lay.spatial), wc):
        if size == 0:
            axis = names.get(letter, f"spatial {letter}")
            raise ShapeError(f"kernel has a zero-size {axis} axis (shape {tuple(wc)} in O, I, spatial order); "
                             "every kernel axis needs at least one element")
    if xc[1] == 0:
        raise ShapeError("input has 0 channels; the channel axis needs at least one element")
    for letter, size in zip(lay.spatial, xc[2:]):
        if size == 0:
            raise ShapeError(f"input spatial axis {letter} has size 0; every spatial axis needs at least one element")


def _groups(groups, c_in: int, c_out: int, w_in: int) -> int:
    g = as_int(groups, "groups")
    if g <= 0:
        raise ArgumentError(f"groups must be >= 1, got {g}; groups=1 is an ordinary convolution")
    if c_in % g:
        raise ArgumentError(f"input has {c_in} channels, which groups ({g}) does not divide; "
                            "choose groups dividing the input channels")
    if c_out % g:
        raise ArgumentError(f"kernel has {c_out} out-channels, which groups ({g}) does not divide; "
                            "choose groups dividing the output channels")
    if c_in != g * w_in:
        raise ShapeError(f"input has {c_in} channels but groups ({g}) x kernel in-channels ({w_in}) = {g * w_in}; "
                         "check the kernel's I axis or groups")
    return g


def _conv_out_spatial(sizes, kernel, stride, dilation, pads, letters) -> tuple[int, ...]:
    out = []
    for n, k, s, d, (lo, hi), letter in zip(sizes, kernel, stride, dilation, pads, letters):
        span = d * (k - 1) + 1
        if n + lo + hi < span:
            raise PaddingError(
                f"effective kernel size {span} (kernel {k}, dilation {d}) is larger than the padded input "
                f"{n + lo + hi} (size {n} + padding {lo} + {hi}) on axis {letter}; "
                "pad more, use a smaller kernel or dilation, or a larger input"
            )
        out.append((n + lo + hi - span) // s + 1)
    return tuple(out)


def _check_bias(b_shape, c_out: int) -> None:
    if b_shape is not None and tuple(b_shape) != (c_out,):
        raise ShapeError(f"bias has shape {tuple(b_shape)} but the kernel has {c_out} out-channels; "
                         f"pass a bias of shape ({c_out},) or None")


def _common_dtype(dtypes) -> str | None:
    names = [d for d in dtypes if d is not None]
    if not names:
        return None
    roles = ("input", "kernel", "bias")
    if len(set(names)) > 1:
        listed = ", ".join(f"{r} {d}" for r, d in zip(roles, dtypes) if d is not None)
        raise DTypeError(f"mixed dtypes ({listed}); convbridge never casts silently: "
                         f"cast all to one dtype, e.g. .astype('{names[0]}')")
    if names[0] not in FLOAT_DTYPES:
        raise DTypeError(f"dtype {names[0]} is not supported; use one of {', '.join(FLOAT_DTYPES)}")
    return names[0]
