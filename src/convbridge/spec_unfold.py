"""UnfoldSpec and FoldSpec: im2col and col2im parsed, validated and resolved once, framework-free.

Ordering is ``torch.nn.functional.unfold``'s, for any rank: ``unfold`` maps
``(N, C, *spatial)`` to ``(N, C * prod(k), L)``; row ``c * prod(k) + t`` holds
channel ``c`` at kernel offset ``t`` (row-major over the kernel's spatial dims),
column ``l`` is block ``l`` (row-major over the output positions). ``fold`` is
its adjoint: it sums every block back into ``(N, C, *output_size)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from convbridge._args import per_dim
from convbridge.errors import ArgumentError, LayoutError, ShapeError
from convbridge.layout import Layout, default_spatial_letters, resolve_layout
from convbridge.padding import parse_padding, same_pairs
from convbridge.spec import _check_nonempty, _common_dtype, _conv_out_spatial, _shape

__all__ = ["UnfoldSpec", "FoldSpec", "make_unfold_spec", "make_fold_spec"]

Pairs = tuple[tuple[int, int], ...]

_EXACT = "exact: no arithmetic, so any difference is a mismatch (K = 0, allowed r = 0)"


@dataclass(frozen=True)
class UnfoldSpec:
    """A validated unfold (im2col).

    Attributes:
        op: ``"unfold"``.
        layout: the input's resolved layout (``layout.batched`` False for an unbatched input).
        batch, channels: N (may be 0) and C.
        in_spatial, kernel_spatial: spatial sizes in canonical order.
        out_spatial: blocks per spatial dim (conv's output size); L is their product.
        stride, dilation, padding: per spatial dim; padding as resolved ``(lo, hi)`` zero widths.
        dtype: the input's dtype name; precision: always ``"highest"`` (no arithmetic).
    """

    op: str
    layout: Layout
    batch: int
    channels: int
    in_spatial: tuple[int, ...]
    kernel_spatial: tuple[int, ...]
    out_spatial: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    padding: Pairs
    dtype: str | None
    precision: str = "highest"

    @property
    def nsp(self) -> int:
        return len(self.in_spatial)

    @property
    def terms(self) -> int:
        """K = 0: unfold only copies, so no rounding is allowed."""
        return 0

    @property
    def out_shape(self) -> tuple[int, ...]:
        """``(N, C * prod(k), L)``, without N for an unbatched input."""
        shape = (self.batch, self.channels * math.prod(self.kernel_spatial), math.prod(self.out_spatial))
        return shape if self.layout.batched else shape[1:]

    def describe(self) -> str:
        pads = ", ".join(f"({lo}, {hi})" for lo, hi in self.padding)
        return (f"{self.nsp}-d, input layout {self.layout.user(self.layout.lhs)}, kernel {self.kernel_spatial}, "
                f"stride {self.stride}, padding [{pads}], dilation {self.dilation}, blocks {self.out_spatial}; "
                + _EXACT)


@dataclass(frozen=True)
class FoldSpec:
    """A validated fold (col2im), the adjoint of :class:`UnfoldSpec`'s unfold.

    Attributes:
        op: ``"fold"``.
        layout: channels-first output layout (``layout.batched`` False for unbatched ``cols``).
        batch, channels: N (may be 0) and C (``cols`` has ``C * prod(k)`` rows).
        out_spatial: ``output_size``; kernel_spatial, stride, dilation, padding as for unfold.
        blocks: blocks per spatial dim; ``cols`` has their product as its last axis.
        dtype: the input's dtype name; precision: always ``"highest"``.
    """

    op: str
    layout: Layout
    batch: int
    channels: int
    out_spatial: tuple[int, ...]
    kernel_spatial: tuple[int, ...]
    blocks: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    padding: Pairs
    dtype: str | None
    precision: str = "highest"

    @property
    def nsp(self) -> int:
        return len(self.out_spatial)

    @property
    def terms(self) -> int:
        """K: the most blocks overlapping one output element, prod over dims of min(ceil(k gcd(s, d) / s), blocks)."""
        per_dim_overlap = (min(-(-k * math.gcd(s, d) // s), b) for k, s, d, b in
                           zip(self.kernel_spatial, self.stride, self.dilation, self.blocks))
        return math.prod(per_dim_overlap)

    @property
    def out_shape(self) -> tuple[int, ...]:
        shape = (self.batch, self.channels, *self.out_spatial)
        return shape if self.layout.batched else shape[1:]

    def describe(self) -> str:
        pads = ", ".join(f"({lo}, {hi})" for lo, hi in self.padding)
        return (f"{self.nsp}-d, kernel {self.kernel_spatial}, stride {self.stride}, padding [{pads}], "
                f"dilation {self.dilation}, blocks {self.blocks}; up to K = {self.terms} blocks overlap one element")


def make_unfold_spec(x_shape, kernel_size, *, dilation=1, padding=0, stride=1, layout=None,
                     dtypes: tuple[str | None, ...] = (None,)) -> UnfoldSpec:
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
    x_shape = _shape(x_shape, "input")
    lay = _unfold_layout(layout, len(x_shape), kernel_size)
    nsp = len(lay.spatial)
    xs = (1, *x_shape) if not lay.batched else x_shape
    xc = [xs[i] for i in lay.lhs_perm]
    kernel = per_dim(kernel_size, "kernel_size", nsp, minimum=1)
    _check_nonempty(xc, [1, 1, *kernel], lay)
    stride = per_dim(stride, "stride", nsp, minimum=1)
    dilation = per_dim(dilation, "dilation", nsp, minimum=1)
    pads = _pairs(padding, xc[2:], kernel, stride, dilation)
    blocks = _conv_out_spatial(xc[2:], kernel, stride, dilation, pads, lay.spatial)
    return UnfoldSpec(op="unfold", layout=lay, batch=xc[0], channels=xc[1], in_spatial=tuple(xc[2:]),
                      kernel_spatial=kernel, out_spatial=blocks, stride=stride, dilation=dilation, padding=pads,
                      dtype=_common_dtype(dtypes))


def make_fold_spec(cols_shape, output_size, kernel_size, *, dilation=1, padding=0, stride=1,
                   dtypes: tuple[str | None, ...] = (None,)) -> FoldSpec:
    """Parse and validate fold arguments into a :class:`FoldSpec`.

    Raises:
        ShapeError: rows not a multiple of prod(kernel_size), or L not the block count of output_size.

    Shape:
        (N, C * prod(k), L) -> (N, C, *output_size).

    >>> make_fold_spec((2, 27, 64), (8, 8), 3, padding=1).out_shape
    (2, 3, 8, 8)
    """
    cols = _shape(cols_shape, "fold input")
    nsp = _fold_rank(output_size, kernel_size)
    if len(cols) not in (2, 3):
        raise ShapeError(f"fold input has {len(cols)} dims (shape {cols}); it must be (N, C x prod(kernel_size), L) "
                         "or unbatched (C x prod(kernel_size), L)")
    sp = default_spatial_letters(nsp)
    lay = Layout("NC" + sp, "OI" + sp, "NC" + sp, batched=len(cols) == 3)
    batch, rows, count = (cols if lay.batched else (1, *cols))
    kernel = per_dim(kernel_size, "kernel_size", nsp, minimum=1)
    out = per_dim(output_size, "output_size", nsp, minimum=1)
    stride = per_dim(stride, "stride", nsp, minimum=1)
    dilation = per_dim(dilation, "dilation", nsp, minimum=1)
    taps = math.prod(kernel)
    if rows == 0 or rows % taps:
        raise ShapeError(f"fold input has {rows} rows (its channel axis), which is not a positive multiple of "
                         f"prod(kernel_size) = {taps} (kernel {kernel}); the rows must be C x {taps}: "
                         "check kernel_size or the input")
    pads = _pairs(padding, out, kernel, stride, dilation)
    blocks = _conv_out_spatial(out, kernel, stride, dilation, pads, lay.spatial)
    if math.prod(blocks) != count:
        raise ShapeError(
            f"fold input has {count} blocks (its last axis) but output_size {out} with kernel {kernel}, stride "
            f"{stride}, dilation {dilation}, padding {list(pads)} has {' x '.join(map(str, blocks))} = "
            f"{math.prod(blocks)} blocks; check output_size and the other arguments against the unfold that made it"
        )
    return FoldSpec(op="fold", layout=lay, batch=batch, channels=rows // taps, out_spatial=out, kernel_spatial=kernel,
                    blocks=blocks, stride=stride, dilation=dilation, padding=pads, dtype=_common_dtype(dtypes))


def _is_seq(v: object) -> bool:
    return (isinstance(v, Sequence) and not isinstance(v, str)) or getattr(v, "ndim", 0) > 0


def _pairs(padding, sizes, kernel, stride, dilation) -> Pairs:
    pads = parse_padding(padding, len(kernel))
    if isinstance(pads, str):
        return same_pairs(sizes, kernel, stride, dilation, lower=pads == "same_lower")
    return pads


def _unfold_layout(layout, x_ndim: int, kernel_size) -> Layout:
    if layout is None:
        if _is_seq(kernel_size):
            nsp = len(kernel_size)
            if x_ndim not in (nsp + 1, nsp + 2):
                raise ShapeError(f"input has {x_ndim} dims but kernel_size {tuple(kernel_size)!r} has {nsp} entries; "
                                 f"the input must be (N, C, {nsp} spatial) or unbatched (C, {nsp} spatial)")
        elif x_ndim == 3:
            raise ShapeError(
                f"an input with 3 dims and the int kernel_size {kernel_size!r} is ambiguous: torch reads it as an "
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
        raise LayoutError(f"unfold takes an input layout only, such as 'NCHW', 'NHWC' or 'CHW'; got {layout!r} "
                          "(its output is always (N, C x prod(kernel_size), L))")
    nsp = sum(c not in "NCOI" for c in layout.replace(" ", ""))
    return resolve_layout(layout, x_ndim, nsp + 2, "conv")


def _fold_rank(output_size, kernel_size) -> int:
    for value in (output_size, kernel_size):
        if _is_seq(value):
            return len(value)
    raise ArgumentError(
        f"fold cannot tell the number of spatial dims from the ints output_size={output_size!r} and "
        f"kernel_size={kernel_size!r}; give output_size per dim, e.g. ({output_size}, {output_size}) for 2-d"
    )
