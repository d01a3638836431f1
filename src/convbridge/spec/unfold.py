"""UnfoldSpec and FoldSpec: im2col and col2im parsed, validated and resolved once, framework-free.

Ordering is ``torch.nn.functional.unfold``'s, for any rank: ``unfold`` maps
``(N, C, *spatial)`` to ``(N, C * prod(k), L)``; row ``c * prod(k) + t`` holds
channel ``c`` at kernel offset ``t`` (row-major over the kernel's spatial dims),
column ``l`` is block ``l`` (row-major over the output positions). ``fold`` is
its adjoint: it sums every block back into ``(N, C, *output_size)``. Both are
windows over a padded axis, so their geometry is :class:`~convbridge.spec.geometry.ConvAxis`
(for fold, over ``output_size``: its blocks are the axis' window positions).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, cast

from convbridge._args import is_seq, per_dim
from convbridge._types import DTypes, IntOrInts, LayoutLike, PaddingLike, Shape
from convbridge.errors import ArgumentError, LayoutError, ShapeError, brief
from convbridge.spec import _parse
from convbridge.spec.conv import ConvSpec, SpatialSpec
from convbridge.spec.geometry import ConvAxis
from convbridge.spec.layout import RESERVED, Layout, default_spatial_letters, resolve_layout
from convbridge.spec.padding import parse_padding
from convbridge.spec.transpose import ConvTransposeSpec

__all__ = ["UnfoldSpec", "FoldSpec", "make_unfold_spec", "make_fold_spec", "im2col_spec", "col2im_spec"]

_EXACT = "exact: no arithmetic, so any difference is a mismatch (K = 0, allowed r = 0)"


@dataclass(frozen=True)
class _Blocks(SpatialSpec):
    """What unfold and fold share: blocks of ``prod(kernel)`` taps over ``channels`` channels.

    Attributes:
        layout: the resolved layout (``layout.batched`` False for an unbatched array).
        batch, channels: N (may be 0) and C.
        axes: one :class:`ConvAxis` per spatial dim; its window positions are the blocks (L is their product).
        dtype: the input's dtype name.
    """

    layout: Layout
    batch: int
    channels: int
    axes: tuple[ConvAxis, ...]
    dtype: str | None = None


@dataclass(frozen=True)
class UnfoldSpec(_Blocks):
    """A validated unfold (im2col): the axes run over the input; ``out_spatial`` counts the blocks per dim."""

    op: ClassVar[str] = "unfold"

    @property
    def terms(self) -> int:
        """K = 0: unfold only copies, so no rounding is allowed."""
        return 0

    @property
    def batched_out_shape(self) -> Shape:
        """``(N, C * prod(k), L)``."""
        return self.batch, self.channels * math.prod(self.kernel_spatial), math.prod(self.out_spatial)

    def describe(self) -> str:
        pads = ", ".join(f"({lo}, {hi})" for lo, hi in self.padding)
        return (f"{self.nsp}-d, input layout {self.layout.user(self.layout.lhs)}, kernel {self.kernel_spatial}, "
                f"stride {self.stride}, padding [{pads}], dilation {self.dilation}, blocks {self.out_spatial}; "
                + _EXACT)


@dataclass(frozen=True)
class FoldSpec(_Blocks):
    """A validated fold (col2im), the adjoint of unfold: the axes run over ``output_size`` (channels-first),
    and ``cols`` holds their blocks."""

    op: ClassVar[str] = "fold"

    @property
    def in_spatial(self) -> Shape:
        """The blocks per spatial dim: the grid ``cols``' last axis flattens."""
        return tuple(a.out for a in self.axes)

    @property
    def out_spatial(self) -> Shape:
        """``output_size``."""
        return tuple(a.size for a in self.axes)

    @property
    def blocks(self) -> Shape:
        """Blocks per spatial dim; ``cols`` has their product as its last axis."""
        return self.in_spatial

    @property
    def terms(self) -> int:
        """K: the most blocks overlapping one output element, the product of the axes' overlaps."""
        return math.prod(a.overlap for a in self.axes)

    @property
    def batched_out_shape(self) -> Shape:
        return (self.batch, self.channels, *self.out_spatial)

    def describe(self) -> str:
        pads = ", ".join(f"({lo}, {hi})" for lo, hi in self.padding)
        return (f"{self.nsp}-d, kernel {self.kernel_spatial}, stride {self.stride}, padding [{pads}], "
                f"dilation {self.dilation}, blocks {self.blocks}; up to K = {self.terms} blocks overlap one element")


def make_unfold_spec(x_shape: Shape, kernel_size: IntOrInts, *, dilation: IntOrInts = 1, padding: PaddingLike = 0,
                     stride: IntOrInts = 1, layout: LayoutLike = None, dtypes: DTypes = (None,)) -> UnfoldSpec:
    """Parse and validate unfold arguments into an :class:`UnfoldSpec`.

    An int ``kernel_size`` with ``layout=None`` reads ``x`` as batched ``(N, C, *spatial)``; a
    3-dim input is then ambiguous (torch reads it as unbatched 2-d) and must say its rank.

    Raises:
        ConvBridgeError: any invalid argument; the subclass says which kind.

    Shape:
        (N, C, *n) -> (N, C * prod(k), L), L = prod(floor((n + lo + hi - d * (k - 1) - 1) / s) + 1).

    >>> make_unfold_spec((2, 3, 8, 8), 3, padding=1).out_shape
    (2, 27, 64)
    """
    x_shape = _parse.as_shape(x_shape, "input")
    lay = _unfold_layout(layout, len(x_shape), kernel_size)
    nsp = len(lay.spatial)
    kernel = per_dim(kernel_size, "kernel_size", nsp, minimum=1)
    xc = _parse.canonical_input(x_shape, lay)
    _parse.check_nonempty(xc, (1, 1, *kernel), lay)
    stride_, dilation_ = _parse.strides(stride, dilation, nsp)
    axes = _parse.conv_axes(xc[2:], kernel, stride_, dilation_, parse_padding(padding, nsp))
    _parse.check_fits(axes, lay.spatial)
    return UnfoldSpec(layout=lay, batch=xc[0], channels=xc[1], axes=axes, dtype=_parse.common_dtype(dtypes))


def make_fold_spec(cols_shape: Shape, output_size: IntOrInts, kernel_size: IntOrInts, *, dilation: IntOrInts = 1,
                   padding: PaddingLike = 0, stride: IntOrInts = 1, dtypes: DTypes = (None,)) -> FoldSpec:
    """Parse and validate fold arguments into a :class:`FoldSpec`.

    Raises:
        ShapeError: rows not a multiple of prod(kernel_size), or L not the block count of output_size.

    Shape:
        (N, C * prod(k), L) -> (N, C, *output_size).

    >>> make_fold_spec((2, 27, 64), (8, 8), 3, padding=1).out_shape
    (2, 3, 8, 8)
    """
    cols = _parse.as_shape(cols_shape, "fold input")
    nsp = _fold_rank(output_size, kernel_size)
    if len(cols) not in (2, 3):
        raise ShapeError(f"fold input has {len(cols)} dims (shape {cols}); it must be (N, C x prod(kernel_size), L) "
                         "or unbatched (C x prod(kernel_size), L)")
    sp = default_spatial_letters(nsp)
    lay = Layout("NC" + sp, "OI" + sp, "NC" + sp, batched=len(cols) == 3)
    batch, rows, count = cols if lay.batched else (1, *cols)
    kernel = per_dim(kernel_size, "kernel_size", nsp, minimum=1)
    out = per_dim(output_size, "output_size", nsp, minimum=1)
    stride_, dilation_ = _parse.strides(stride, dilation, nsp)
    taps = math.prod(kernel)
    if rows == 0 or rows % taps:
        raise ShapeError(f"fold input has {rows} rows (its channel axis), which is not a positive multiple of "
                         f"prod(kernel_size) = {taps} (kernel {kernel}); the rows must be C x {taps}: "
                         "check kernel_size or the input")
    axes = _parse.conv_axes(out, kernel, stride_, dilation_, parse_padding(padding, nsp))
    _parse.check_fits(axes, lay.spatial)
    blocks = tuple(a.out for a in axes)
    if math.prod(blocks) != count:
        raise ShapeError(
            f"fold input has {count} blocks (its last axis) but output_size {out} with kernel {kernel}, stride "
            f"{stride_}, dilation {dilation_}, padding {[a.padding for a in axes]} has "
            f"{' x '.join(map(str, blocks))} = {math.prod(blocks)} blocks; check output_size and the other "
            "arguments against the unfold that made it"
        )
    return FoldSpec(layout=lay, batch=batch, channels=rows // taps, axes=axes, dtype=_parse.common_dtype(dtypes))


def im2col_spec(spec: ConvSpec, *, mode_padded: bool = False) -> UnfoldSpec:
    """The unfold of a convolution's canonical, batched input (its im2col); ``mode_padded``: the input
    was already padded by the padding mode, so the unfold pads nothing."""
    axes = tuple(ConvAxis(a.padded, a.kernel, a.stride, a.dilation) for a in spec.axes) if mode_padded \
        else spec.axes
    return UnfoldSpec(layout=spec.layout.canonical_layout(), batch=spec.batch, channels=spec.in_channels,
                      axes=axes, dtype=spec.dtype)


def col2im_spec(spec: ConvTransposeSpec) -> FoldSpec:
    """The fold of a transposed convolution's columns into its canonical, batched output (its col2im):
    blocks are its input positions, the padding its crops (which must not be negative)."""
    axes = tuple(a.adjoint() for a in spec.axes)
    return FoldSpec(layout=spec.layout.canonical_layout(), batch=spec.batch, channels=spec.out_channels,
                    axes=axes, dtype=spec.dtype)


def _unfold_layout(layout: LayoutLike, x_ndim: int, kernel_size: object) -> Layout:
    if layout is None:
        if is_seq(kernel_size):
            sizes = tuple(cast(Sequence[int], kernel_size))
            nsp = len(sizes)
            if x_ndim not in (nsp + 1, nsp + 2):
                raise ShapeError(f"input has {x_ndim} dims but kernel_size {brief(sizes)} has {nsp} entries; the input "
                                 f"must be (N, C, {nsp} spatial) or unbatched (C, {nsp} spatial)")
        elif x_ndim == 3:
            raise ShapeError(
                f"an input with 3 dims and the int kernel_size {brief(kernel_size)} is ambiguous: torch reads it as an "
                f"unbatched 2-d (C, H, W), convbridge could read a batched 1-d (N, C, W); say which: "
                f"kernel_size=({kernel_size}, {kernel_size}) or layout='CHW' for 2-d, kernel_size=({kernel_size},) "
                "or layout='NCW' for 1-d"
            )
        else:
            nsp = x_ndim - 2
            if nsp < 1:
                raise ShapeError(f"input has {x_ndim} dims; unfold needs (N, C, *spatial) with at least one "
                                 "spatial dim")
        batched = x_ndim == nsp + 2
        layout = ("N" if batched else "") + "C" + default_spatial_letters(nsp)
    if not isinstance(layout, str) or "," in layout or "->" in layout:
        raise LayoutError(f"unfold takes an input layout only, such as 'NCHW', 'NHWC' or 'CHW'; got {brief(layout)} "
                          "(its output is always (N, C x prod(kernel_size), L))")
    nsp = sum(c not in RESERVED for c in layout.replace(" ", ""))
    return resolve_layout(layout, x_ndim, nsp + 2, "conv")


def _fold_rank(output_size: object, kernel_size: object) -> int:
    for value in (output_size, kernel_size):
        if is_seq(value):
            return len(cast(Sequence[int], value))
    raise ArgumentError(
        f"fold cannot tell the number of spatial dims from the ints output_size={brief(output_size)} and "
        f"kernel_size={brief(kernel_size)}; give output_size per dim, e.g. ({output_size}, {output_size}) for 2-d"
    )
