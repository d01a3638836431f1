"""ConvTransposeSpec: a transposed convolution parsed, validated and resolved once, framework-free.

Two conventions resolve to one canonical meaning, PyTorch's: the transposed
convolution is the gradient of :func:`convbridge.conv` with respect to its input.
Per spatial dim (a :class:`~convbridge.spec.geometry.TransposeAxis`), input position
``i`` and tap ``j`` of the kernel ``W[c_in, o, j]`` (torch's ``(C_in, C_out / groups, *k)``)
add ``x[c_in, i] * W[c_in, o, j]`` into position ``i * stride + j * dilation`` of the
*full* output; then ``padding`` crops ``lo``/``hi`` from its ends and
``output_padding`` adds rows back on the high side (zeros, plus the bias).

- ``convention="torch"``: ``padding`` is an int, per-dim ints, ``(lo, hi)``
  pairs, ``"valid"``, ``"same"`` (output ``n * stride``: the gradient of
  :func:`convbridge.conv` with ``padding="same"``) or ``"same_lower"``.
  ``output_padding`` obeys ATen's functional rule
  ``0 <= output_padding < max(stride, dilation)``; ``output_size`` picks it, so
  the reachable sizes are ``base .. base + max(stride, dilation) - 1``.
- ``convention="jax"``: ``lax.conv_transpose`` exactly. ``padding`` is
  ``'SAME'``, ``'VALID'`` (read through jax's ``_conv_transpose_padding`` with the
  dilated kernel size) or ``(a, b)`` pairs padding the stride-dilated input
  (negative pairs crop, as in lax). The kernel is *not* flipped; with
  ``transpose_kernel=True`` lax flips it and swaps its ``I`` and ``O`` axes, so
  the axis its layout calls ``O`` holds ``x``'s channels. In torch's terms the
  crops are ``(dilation * (k - 1) - a, dilation * (k - 1) - b)``, which may be
  negative (zero rows added).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar, cast

from convbridge import frameworks
from convbridge._args import as_int, as_param, choice, is_seq, per_dim
from convbridge._types import DTypes, IntOrInts, LayoutLike, PaddingLike, Pairs, Shape
from convbridge.errors import ArgumentError, PaddingError, ShapeError, brief
from convbridge.spec import _parse
from convbridge.spec.conv import ChannelSpec, ConvSpec
from convbridge.spec.geometry import TransposeAxis
from convbridge.spec.layout import Layout, default_kernel_layout, default_spatial_letters, resolve_layout
from convbridge.spec.padding import parse_padding

__all__ = ["ConvTransposeSpec", "make_conv_transpose_spec", "CONVENTIONS", "resolve_transpose_layout",
           "torch_axes", "lax_axes"]

CONVENTIONS = ("torch", "jax")


@dataclass(frozen=True)
class ConvTransposeSpec(ChannelSpec):
    """A validated transposed convolution, in canonical order (torch's meaning, whatever the convention).

    Attributes:
        layout: resolved layouts; in ``layout.rhs`` the letter ``I`` is always ``x``'s channels.
        batch, in_channels, out_channels, groups: channel arithmetic; the kernel is
            ``(in_channels, out_channels / groups, *k)`` in torch's order.
        axes: one :class:`TransposeAxis` per spatial dim: sizes, crops ``(lo, hi)`` of the full output
            (negative: zero rows added; only the jax convention produces those) and output_padding.
        convention: ``"torch"`` or ``"jax"`` (how the arguments were read).
        kernel_flipped: the user's kernel is torch's kernel flipped in every spatial axis
            (``lax.conv_transpose`` without ``transpose_kernel``).
        transpose_kernel: the jax convention's flag, as given (for the description).
        has_bias, dtype: as for :class:`convbridge.spec.ConvSpec`.

    >>> make_conv_transpose_spec((1, 4, 15), (4, 2, 3), stride=2, padding=1, output_size=30).output_padding
    (1,)
    """

    op: ClassVar[str] = "conv_transpose"
    layout: Layout
    batch: int
    in_channels: int
    out_channels: int
    groups: int
    axes: tuple[TransposeAxis, ...]
    convention: str = "torch"
    kernel_flipped: bool = False
    transpose_kernel: bool = False
    has_bias: bool = False
    dtype: str | None = None

    @property
    def output_padding(self) -> Shape:
        return tuple(a.output_padding for a in self.axes)

    @property
    def crops(self) -> Pairs:
        """Per dim ``(lo, hi - output_padding)``: what is removed from the full output (negative: added)."""
        return tuple(a.crops for a in self.axes)

    @property
    def full_spatial(self) -> Shape:
        """The uncropped output size per dim."""
        return tuple(a.full for a in self.axes)

    @property
    def macs(self) -> int:
        """Multiply-accumulates of the direct (scatter) algorithm."""
        per_in = self.out_channels // self.groups * math.prod(self.kernel_spatial)
        return self.batch * self.in_channels * math.prod(self.in_spatial) * per_in

    def describe(self) -> str:
        """The resolved arguments in words (the report's description line)."""
        pads = ", ".join(f"({lo}, {hi})" for lo, hi in self.padding)
        how = "torch convention" if self.convention == "torch" else (
            f"jax convention (lax.conv_transpose, transpose_kernel={self.transpose_kernel})")
        return (f"{self.nsp}-d {how}, layout {self.layout}, stride {self.stride}, crops [{pads}], "
                f"output_padding {self.output_padding}, dilation {self.dilation}, groups {self.groups}, "
                f"kernel flipped {self.kernel_flipped}, bias {self.has_bias}")

    @property
    def kernel_shape(self) -> Shape:
        """The kernel's shape in the spec's kernel layout (``I`` = x's channels, ``O`` = the result's per group)."""
        sizes = dict(zip(("I", "O", *self.layout.spatial),
                         (self.in_channels, self.out_channels // self.groups, *self.kernel_spatial)))
        return tuple(sizes[c] for c in self.layout.rhs)

    def adjoint(self) -> ConvSpec:
        """The convolution this transposed convolution is the gradient of (channels-first, zero padding by its
        crops), on the same kernel array: torch's ``(C_in, C_out / groups, *k)`` read as conv's ``OI...``.

        Raises:
            ArgumentError: the jax convention's flipped kernel, or crops that add rows (no conv pads negatively).

        >>> make_conv_transpose_spec((1, 3, 7), (3, 2, 3), stride=2, padding=1).adjoint().out_shape
        (1, 3, 7)
        """
        if self.kernel_flipped or any(c < 0 for pair in self.crops for c in pair):
            raise ArgumentError(f"{self.describe()}: only an unflipped kernel with crops >= 0 is the gradient of a "
                                "conv on the same kernel array; state it in torch's convention first "
                                "(convbridge.transpose.jax_to_torch)")
        sp = "".join(self.layout.spatial)
        lay = Layout("NC" + sp, default_kernel_layout(sp), "NC" + sp, self.layout.batched)
        return ConvSpec(layout=lay, batch=self.batch, in_channels=self.out_channels, out_channels=self.in_channels,
                        groups=self.groups, axes=tuple(a.adjoint() for a in self.axes), dtype=self.dtype)


def make_conv_transpose_spec(
    x_shape: Shape, w_shape: Shape, b_shape: Shape | None = None, *, stride: IntOrInts = 1,
    padding: PaddingLike = 0, output_padding: IntOrInts = 0, dilation: IntOrInts = 1, groups: int = 1,
    layout: LayoutLike = None, output_size: IntOrInts | None = None, convention: str = "torch",
    transpose_kernel: bool = False, dtypes: DTypes = (None,),
) -> ConvTransposeSpec:
    """Parse and validate transposed-convolution arguments into a :class:`ConvTransposeSpec`.

    Raises:
        ConvBridgeError: any invalid argument; the subclass says which kind.

    Shape:
        out = (n - 1) * stride - lo - hi + dilation * (k - 1) + output_padding + 1 per spatial dim.

    >>> make_conv_transpose_spec((1, 4, 15), (4, 2, 3), stride=2, padding=1).out_shape
    (1, 2, 29)
    """
    convention = choice(convention, "convention", CONVENTIONS)
    tk = _transpose_kernel_flag(transpose_kernel, convention)
    x_shape, w_shape = _parse.as_shape(x_shape, "input"), _parse.as_shape(w_shape, "kernel")
    lay = resolve_transpose_layout(layout, len(x_shape), len(w_shape), convention, tk)
    xc, wc = _parse.canonical(x_shape, w_shape, lay)  # kernel (O = C_out / groups, I = C_in, *k)
    nsp = len(lay.spatial)
    g = _groups(groups, xc[1], wc[1], convention)
    stride_, dilation_ = _parse.strides(stride, dilation, nsp)
    geometry = (xc[2:], wc[2:], stride_, dilation_)
    if convention == "jax":
        _check_jax_only_arguments(per_dim(output_padding, "output_padding", nsp, minimum=0), output_size)
        axes = lax_axes(padding, *geometry)
    else:
        axes = torch_axes(padding, output_padding, output_size, *geometry, letters=lay.spatial)
    _check_sizes(axes, lay.spatial)
    _parse.check_bias(b_shape, g * wc[0])
    return ConvTransposeSpec(
        layout=lay, batch=xc[0], in_channels=xc[1], out_channels=g * wc[0], groups=g, axes=axes,
        convention=convention, kernel_flipped=convention == "jax" and not tk, transpose_kernel=tk,
        has_bias=b_shape is not None, dtype=_parse.common_dtype(dtypes),
    )


def _transpose_kernel_flag(value: object, convention: str) -> bool:
    if not isinstance(value, bool):
        raise ArgumentError(f"transpose_kernel must be True or False, got {brief(value)}")
    if value and convention != "jax":
        raise ArgumentError(
            "transpose_kernel=True is lax.conv_transpose's flag and only means something with convention='jax'; "
            "with convention='torch' the kernel is already torch's (C_in, C_out / groups, *k): drop "
            "transpose_kernel, or pass convention='jax'"
        )
    return value


def resolve_transpose_layout(layout: LayoutLike, x_ndim: int, w_ndim: int, convention: str,
                             transpose_kernel: bool = False) -> Layout:
    """Resolve a conv_transpose layout; the jax convention defaults to lax's channels-last dimension numbers.

    With ``transpose_kernel=True`` the kernel letters are read as lax reads them before it swaps
    the kernel's ``I`` and ``O`` axes, so the result's ``rhs`` swaps those two letters.

    >>> resolve_transpose_layout(None, 4, 4, "jax", transpose_kernel=True).rhs
    'HWOI'
    """
    if convention == "jax" and layout is None:
        if w_ndim < 3:
            return resolve_layout(None, x_ndim, w_ndim, "conv_transpose")  # raises the rank error
        sp = default_spatial_letters(w_ndim - 2)
        layout = frameworks.LAX.input_layout(sp, batched=x_ndim == w_ndim)
    lay = resolve_layout(layout, x_ndim, w_ndim, "conv_transpose")
    if transpose_kernel:
        lay = replace(lay, rhs=lay.rhs.translate(str.maketrans("IO", "OI")))
    return lay


def _groups(groups: object, c_in: int, w_in: int, convention: str) -> int:
    if convention == "jax" and as_int(groups, "groups") > 1:
        raise ArgumentError(
            f"groups={groups} with convention='jax': lax.conv_transpose has no groups; use convention='torch' "
            "(convbridge.transpose.jax_to_torch converts the arguments and kernel)"
        )
    g = _parse.groups_of(groups, c_in, "transposed convolution")
    if c_in != w_in:
        raise ShapeError(
            f"input has {c_in} channels but the kernel's I axis has {w_in}; a conv_transpose kernel is "
            "(C_in, C_out / groups, *k) as torch's ConvTranspose weight (its I axis holds all of the input's "
            "channels, unlike conv's): check the input's channels, the kernel or their layouts (an input with one "
            "dim fewer than the layout names is read as unbatched)"
        )
    return g


def _check_jax_only_arguments(output_padding: tuple[int, ...], output_size: object) -> None:
    if output_size is not None or any(output_padding):
        raise ArgumentError(
            "output_padding and output_size are torch-convention arguments; lax.conv_transpose has neither: "
            "with convention='jax' widen the high side of padding instead, e.g. ((1, 2),) rather than ((1, 1),)"
        )


def lax_axes(padding: object, sizes: Sequence[int], kernel: Sequence[int], stride: Sequence[int],
             dilation: Sequence[int]) -> tuple[TransposeAxis, ...]:
    """The axes of a ``lax.conv_transpose`` padding: ``'SAME'``, ``'VALID'`` or ``(a, b)`` pairs."""
    protos = [TransposeAxis(n, k, s, d) for n, k, s, d in zip(sizes, kernel, stride, dilation)]
    if isinstance(padding, str):
        if padding not in ("SAME", "VALID"):
            raise PaddingError(
                f"padding {brief(padding)} with convention='jax': lax.conv_transpose reads only 'SAME' and 'VALID' "
                "(upper case) as forward-conv paddings (other strings reach conv_general_dilated with another "
                "meaning); write 'SAME' or 'VALID', or give (a, b) pairs"
            )
        return tuple(p.with_lax_padding(padding) for p in protos)
    return tuple(p.with_lax_padding(pair) for p, pair in zip(protos, _lax_pairs(padding, len(protos))))


def _lax_pairs(padding: object, nsp: int) -> Pairs:
    items = list(cast(Sequence[Any], padding)) if is_seq(padding) else None
    if items is None or len(items) != nsp or not all(_is_pair(p) for p in items):
        raise PaddingError(
            f"padding {brief(padding)} with convention='jax': lax.conv_transpose takes 'SAME', 'VALID' or one (a, b) "
            f"pair per spatial dim ({nsp} here), e.g. {tuple([(1, 1)] * nsp)!r}"
        )
    return tuple((as_param(a, f"padding[{i}][0]"), as_param(b, f"padding[{i}][1]")) for i, (a, b) in enumerate(items))


def _is_pair(p: object) -> bool:
    return is_seq(p) and getattr(p, "ndim", 1) == 1 and len(cast(Sequence[Any], p)) == 2


def torch_axes(padding: object, output_padding: object, output_size: object, sizes: Sequence[int],
               kernel: Sequence[int], stride: Sequence[int], dilation: Sequence[int], *,
               letters: Sequence[str]) -> tuple[TransposeAxis, ...]:
    """The axes of torch-convention arguments: crops, output_padding (or output_size, which picks it)."""
    nsp = len(sizes)
    pads = parse_padding(padding, nsp)
    out_pad = per_dim(output_padding, "output_padding", nsp, minimum=0)
    if isinstance(pads, str):
        if output_size is not None or any(out_pad):
            raise ArgumentError(
                f"padding={brief(pads)} already fixes the output size (n * stride) and output_padding; "
                "pass output_size/output_padding with explicit padding instead"
            )
        return tuple(TransposeAxis.same(n, k, s, d, lower=pads == "same_lower")
                     for n, k, s, d in zip(sizes, kernel, stride, dilation))
    axes = tuple(TransposeAxis(n, k, s, d, lo, hi) for n, k, s, d, (lo, hi) in zip(sizes, kernel, stride, dilation,
                                                                                     pads))
    if output_size is not None:
        if any(out_pad):
            raise ArgumentError(f"output_padding {out_pad} and output_size {brief(output_size)} both given; "
                                "output_size chooses output_padding: pass only one")
        targets = per_dim(output_size, "output_size", nsp, minimum=1)
        return tuple(_to_size(a, t, letter) for a, t, letter in zip(axes, targets, letters))
    for a, op, letter in zip(axes, out_pad, letters):
        if op >= a.room:
            raise ArgumentError(
                f"output_padding {op} on axis {letter} must be < max(stride {a.stride}, dilation {a.dilation}) = "
                f"{a.room} (ATen's rule); allowed: 0..{a.room - 1}; pick the size with output_size=, or a larger "
                "stride"
            )
    return tuple(replace(a, output_padding=op) for a, op in zip(axes, out_pad))


def _to_size(a: TransposeAxis, target: int, letter: str) -> TransposeAxis:
    if not 0 <= target - a.base < a.room:
        dil = f", dilation {a.dilation}" if a.dilation != 1 else ""
        pad = f"{a.lo}" if a.lo == a.hi else f"({a.lo}, {a.hi})"
        reach = a.reachable
        text = (f"reachable sizes are {reach.start}..{reach.stop - 1} (output_padding {reach.start - a.base}.."
                f"{a.room - 1})" if len(reach) else "no size is reachable (the padding crops everything)")
        raise ShapeError(f"output_size {target} is unreachable from input {a.size} (stride {a.stride}, kernel "
                         f"{a.kernel}{dil}, padding {pad}); {text} on axis {letter}")
    return replace(a, output_padding=target - a.base)


def _check_sizes(axes: Sequence[TransposeAxis], letters: Sequence[str]) -> None:
    for a, letter in zip(axes, letters):
        if a.out < 1:
            raise PaddingError(
                f"conv_transpose output on axis {letter} would have size {a.out}: the full output {a.full} "
                f"(input {a.size}, stride {a.stride}, kernel {a.kernel}, dilation {a.dilation}) cropped by "
                f"({a.lo}, {a.hi}) plus output_padding {a.output_padding}; crop less (padding), or use a larger "
                "input, kernel or stride"
            )
