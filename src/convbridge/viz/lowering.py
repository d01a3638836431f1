"""Pictures of convolution as matrix multiplication: im2col @ kernel, and the explicit conv matrix.

The tutorial's central picture: a 32x32x3 image convolved with 4 filters of 5x5
is one matrix product, the im2col matrix (28*28 x 3*5*5) times the kernel
matrix (75 x 4), giving 28*28 x 4. These functions take plain NumPy arrays
(or a scipy.sparse matrix) and know nothing about frameworks. They use
matplotlib's object-oriented API on an Agg canvas, never pyplot, so nothing
changes the user's backend. The animations live in :mod:`convbridge.viz.animate`
and are re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps, colors
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.patches import Rectangle
from matplotlib.style import context as style_context
from matplotlib.ticker import MaxNLocator

from convbridge._args import as_int
from convbridge._types import ArrayLike
from convbridge.arrays import to_numpy
from convbridge.errors import ArgumentError, ShapeError
from convbridge.lowering.im2col import MatmulView
from convbridge.spec import ConvSpec, default_spatial_letters
from convbridge.viz.animate import animate_conv, animate_conv_transpose
from convbridge.viz._files import save
from convbridge.viz.figures import STYLE

__all__ = ["draw_matmul", "draw_conv_matrix", "animate_conv", "animate_conv_transpose"]

HIGHLIGHT = "#ffe14d"
#: Value colours: blue < 0 < red; exact zeros of C and entries outside a group's block are drawn apart.
CMAP = colormaps["coolwarm"]
_MIN_SIDE, _MAX_H, _MAX_W, _MAX_CELL = 0.3, 8.5, 9.0, 0.42
_MAX_PX = 900  # draw_conv_matrix pools larger matrices to about this many pixels per side


# --- draw_matmul -----------------------------------------------------------------------------------

def draw_matmul(view: MatmulView, path: str | Path, *, title: str | None = None, highlight_row: int | None = None,
                annotate: bool | None = None) -> Path:
    """Draw a convolution's matrix view ``lhs @ rhs = product`` as three value-coloured matrices.

    Rows run over the whole batch, image by image (draw a view of one image for a legible picture). For a
    convolution (im2col) the rows are output pixels, the inner axis (channel, tap) pairs and the
    columns filters; for a transposed convolution (col2im) the rows are input pixels, the inner axis input
    channels and the columns (filter, tap) pairs. Each matrix is labelled with its dimensions and drawn to
    one scale (cells are square), so a tall-skinny product looks tall-skinny; a side of fewer cells than
    ``0.3 in`` would hold is widened to stay visible (the footnote says so). Values are written in the cells
    when they are large enough (``annotate=None``: auto). Groups are drawn as the one product they form: the
    groups' columns side by side, the kernel block-diagonal (entries outside the blocks grey: no weight
    connects those channels), group boundaries as white lines.

    Args:
        view: a :class:`convbridge.MatmulView` from ``cb.as_matmul`` (its spec and its matrices).
        path: where to write the PNG.
        title: a first title line, e.g. the convolution's arguments.
        highlight_row: a row r of ``lhs`` to outline in ``lhs`` and the product
            (row r of lhs times the whole kernel matrix).
        annotate: write values in the cells; None decides by cell size.

    Returns:
        ``path`` as a Path.

    Raises:
        ArgumentError: not a MatmulView, an empty one (no rows), highlight_row out of range, or annotate
            neither None nor a bool.

    Shape:
        lhs (P, K) @ rhs (K, O) = product (P, O) per group, P = N x pixels (the whole batch, image-major);
        drawn with K = sum K_g and O = sum O_g.

    >>> import numpy as np, tempfile, os, convbridge as cb
    >>> view = cb.as_matmul(np.ones((1, 2, 4, 4)), np.ones((3, 2, 3, 3)))
    >>> draw_matmul(view, os.path.join(tempfile.mkdtemp(), "m.png")).suffix
    '.png'
    """
    if not isinstance(view, MatmulView):
        raise ArgumentError(f"draw_matmul draws a MatmulView (from convbridge.as_matmul), got {type(view).__name__}")
    if annotate is not None and not isinstance(annotate, bool):
        raise ArgumentError(f"annotate must be None (decide by cell size), True or False, got {annotate!r}")
    if 0 in view.lhs.shape or 0 in view.rhs.shape:
        raise ArgumentError(f"nothing to draw: the matrices are {tuple(view.lhs.shape)} @ {tuple(view.rhs.shape)} "
                            "(an empty batch?)")
    lhs, rhs, product = (to_numpy(a).astype(np.float64) for a in (view.lhs, view.rhs, view.product()))
    groups = [(lhs[g], rhs[g], product[g]) for g in range(view.spec.groups)]
    row_label, col_label, out_label = _LABELS[view.op]
    mats, k_cuts, o_cuts = _assemble(groups)
    p, k, o = mats[0].shape[0], mats[0].shape[1], mats[1].shape[1]
    row = _row(highlight_row, p)
    geo = _MatmulGeometry(p, k, o, grouped=len(k_cuts) > 0)
    with style_context(STYLE):
        fig = Figure(figsize=geo.figsize)
        axes = [fig.add_axes(r) for r in geo.rects]
        names = ("im2col matrix (cols)", "kernel matrix", "output") if view.op == "conv" else \
            ("input", "kernel matrix", "columns (before col2im)")
        show_values = geo.cell >= 0.24 and p * k <= 4000 if annotate is None else bool(annotate)
        for ax, m, name, size in zip(axes, mats, names, geo.sizes):
            _matrix(ax, m, f"{name}\n{m.shape[0]} x {m.shape[1]}", show_values, size)
        _axis_labels(axes, row_label, col_label, out_label)
        _group_lines(axes, k_cuts, o_cuts)
        for x, symbol in geo.operators:
            fig.text(x, geo.mid, symbol, ha="center", va="center", fontsize=22)
        notes = _matmul_notes(p, k, o, row, geo, bool(k_cuts), max(view.spec.batch, 1))
        if row is not None:
            _highlight(axes, row, k, o)
        _titles(fig, geo, title, f"{p} x {k} @ {k} x {o} = {p} x {o}", notes)
        return _save(fig, path)


class _MatmulGeometry:
    """Where the three matrices go, in inches: one cell size for all, small sides widened."""

    def __init__(self, p: int, k: int, o: int, *, grouped: bool) -> None:
        self.cell = min(_MAX_H / max(p, k), _MAX_W / (k + 2 * o), _MAX_CELL)
        side = lambda n: max(n * self.cell, _MIN_SIDE)  # noqa: E731
        self.widened = min(k, o) * self.cell < _MIN_SIDE
        self.sizes = sizes = [(side(k), side(p)), (side(o), side(k)), (side(o), side(p))]
        gaps, left, right = [1.25, 0.95], 1.15, 1.0
        top, bottom = 1.55 + 0.25 * grouped, 1.25
        body_w = sum(w for w, _ in sizes) + sum(gaps)
        self.width = max(left + body_w + right, 7.0)
        tallest = max(h for _, h in sizes)
        self.height = top + tallest + bottom
        x = (self.width - body_w) / 2 + (left - right) / 2
        self.rects, self.operators = [], []
        for i, (w, h) in enumerate(sizes):
            y = bottom + (tallest - h) / 2
            self.rects.append((x / self.width, y / self.height, w / self.width, h / self.height))
            x += w
            if i < 2:
                at = x + (0.45 if i == 0 else gaps[1] / 2)
                self.operators.append((at / self.width, "@" if i == 0 else "="))
                x += gaps[i]
        self.mid = (bottom + tallest / 2) / self.height
        self.figsize = (self.width, self.height)
        self.top = 1 - 0.15 / self.height


_LABELS = {"conv": ("output pixel", "(channel, tap)", "filter"),
           "conv_transpose": ("input pixel", "input channel", "(filter, tap)")}


def _assemble(groups: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) \
        -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], list[int], list[int]]:
    """The three 2-d matrices (groups side by side, the kernel block-diagonal) and the group boundaries
    along K and O."""
    ks, os_ = [t[1].shape[0] for t in groups], [t[1].shape[1] for t in groups]
    kernel_full = np.full((sum(ks), sum(os_)), np.nan)
    for g, t in enumerate(groups):
        kernel_full[sum(ks[:g]):sum(ks[:g + 1]), sum(os_[:g]):sum(os_[:g + 1])] = t[1]
    if len(groups) == 1:
        kernel_full = groups[0][1]
    full = (np.hstack([t[0] for t in groups]), kernel_full, np.hstack([t[2] for t in groups]))
    return full, [int(c) for c in np.cumsum(ks)[:-1]], [int(c) for c in np.cumsum(os_)[:-1]]


def _row(row: int | None, p: int) -> int | None:
    if row is None:
        return None
    r = as_int(row, "highlight_row")
    if not 0 <= r < p:
        raise ArgumentError(f"highlight_row {r} is out of range; cols has {p} rows, so use 0..{p - 1}")
    return r


def _matrix(ax: Axes, m: np.ndarray, name: str, show_values: bool, size: tuple[float, float]) -> None:
    lim = float(np.nanmax(np.abs(m))) if np.isfinite(m).any() else 0.0
    cmap = CMAP.with_extremes(bad="#3c3c3c")
    im = ax.imshow(m, cmap=cmap, norm=colors.Normalize(-(lim or 1.0), lim or 1.0), aspect="auto",
                   interpolation="nearest")
    ax.set_title(name, fontsize=9, pad=6)
    for axis, inches, n in zip((ax.xaxis, ax.yaxis), size, m.shape[::-1]):
        if inches < 1.2:
            axis.set_ticks(sorted({0, n - 1}))
        else:
            axis.set_major_locator(MaxNLocator(nbins=min(8, int(inches * 2.5)), integer=True))
    ax.tick_params(labelsize=7)
    if show_values:
        cell = min(size[0] / m.shape[1], size[1] / m.shape[0])
        _values(ax, m, im, cell)


def _values(ax: Axes, m: np.ndarray, im: AxesImage, cell: float) -> None:
    finite = m[np.isfinite(m)]
    integral = finite.size and np.all(finite == np.round(finite)) and np.abs(finite).max() < 1000
    one_decimal = finite.size and np.allclose(finite, np.round(finite, 1), rtol=0, atol=1e-9)
    fmt = "{:.0f}" if integral else "{:.1f}" if one_decimal else "{:.2f}" if np.abs(finite).max() < 10 else "{:.3g}"
    size = float(np.clip(cell * 20, 4, 8))
    for (r, c), v in np.ndenumerate(m):
        if np.isfinite(v):
            rgb = im.cmap(im.norm(v))
            ink = "black" if 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] > 0.55 else "white"
            text = fmt.format(v)
            ax.text(c, r, text.lstrip("-") if float(text) == 0 else text, ha="center", va="center", fontsize=size,
                    color=ink)


def _axis_labels(axes: Sequence[Axes], row_label: str, col_label: str, out_label: str) -> None:
    a, b, c = axes
    a.set_ylabel(row_label, fontsize=9)
    a.set_xlabel(col_label, fontsize=9)
    b.set_ylabel(col_label, fontsize=9)
    b.set_xlabel(out_label, fontsize=9)
    c.set_xlabel(out_label, fontsize=9)
    c.yaxis.tick_right()
    c.yaxis.set_label_position("right")
    c.set_ylabel(row_label, fontsize=9)


def _group_lines(axes: Sequence[Axes], k_cuts: Sequence[int], o_cuts: Sequence[int]) -> None:
    a, b, c = axes
    for cut in k_cuts:
        a.axvline(cut - 0.5, color="white", linewidth=1.5)
        b.axhline(cut - 0.5, color="white", linewidth=1.5)
    for cut in o_cuts:
        b.axvline(cut - 0.5, color="white", linewidth=1.5)
        c.axvline(cut - 0.5, color="white", linewidth=1.5)
    if k_cuts:
        for ax, cuts, n in ((a, k_cuts, a.get_xlim()[1] + 0.5), (c, o_cuts, c.get_xlim()[1] + 0.5)):
            edges = [0, *cuts, n]
            top = ax.secondary_xaxis("top")
            top.set_xticks([(lo + hi) / 2 - 0.5 for lo, hi in zip(edges, edges[1:])],
                           [f"g{g}" for g in range(len(edges) - 1)], fontsize=7)
            top.tick_params(length=0)


def _highlight(axes: Sequence[Axes], row: int, k: int, o: int) -> None:
    a, b, c = axes
    for ax, width in ((a, k), (c, o)):
        ax.add_patch(Rectangle((-0.5, row - 0.5), width, 1, facecolor=(1, 0.88, 0.3, 0.25),
                               edgecolor=HIGHLIGHT, linewidth=2, clip_on=False, zorder=4))
    b.add_patch(Rectangle((-0.5, -0.5), o, k, fill=False, edgecolor=HIGHLIGHT, linewidth=2.5,
                          clip_on=False, zorder=4))


def _matmul_notes(p: int, k: int, o: int, row: int | None, geo: _MatmulGeometry, grouped: bool,
                  images: int = 1) -> list[str]:
    notes = ["colour = value (blue < 0 < red), each matrix on its own symmetric scale"
             + ("; grey = no weight (outside the group's block)" if grouped else "")]
    if row is not None:
        pixel = f"output pixel {row}" if images == 1 else f"image {row // (p // images)}, output pixel " \
            f"{row % (p // images)}"
        notes.append(f"yellow: row {row} of cols (the {k} input values under {pixel}'s window) "
                     f"@ the whole kernel matrix = row {row} of the output ({o} values, one per filter)")
    if geo.widened:
        notes.append(f"drawn to scale (one cell = {geo.cell * 72:.2g} pt), except sides under "
                     f"{_MIN_SIDE:g} in, widened to stay visible")
    return notes


def _titles(fig: Figure, geo: _MatmulGeometry, title: str | None, product: str, notes: Sequence[str]) -> None:
    head = f"{title}\n{product}" if title else product
    fig.text(0.5, geo.top, head, ha="center", va="top", fontsize=11)
    fig.text(0.5, 0.12 / geo.height, "\n".join(notes), ha="center", va="bottom", fontsize=8,
             color="#cfcfcf", wrap=True)


def _save(fig: Figure, path: str | Path) -> Path:
    FigureCanvasAgg(fig)
    return save(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight", pad_inches=0.15))


# --- draw_conv_matrix ------------------------------------------------------------------------------

def draw_conv_matrix(spec: ConvSpec, kernel: ArrayLike, path: str | Path, *, title: str | None = None) -> Path:
    """Draw the explicit convolution matrix C of ``spec`` with ``kernel``, vec(y) = C @ vec(x), coloured by value.

    C is built for the channels-first arrays (x ``(N, C, *spatial)``, y ``(N, O, *spatial)``), so its
    blocks read as channels whatever the spec's layout. Nonzero entries use a diverging colour map
    (blue < 0 < red; a tiny value is light grey); exact zeros are black, so the (doubly-)block-Toeplitz
    structure shows. White lines separate batch blocks, grey lines channel blocks, and dotted lines the
    rows of the outer spatial axes when there is room. Matrices larger than about 900 x 900 are pooled:
    each pixel shows the entry of largest magnitude in its block (the title says so), so no nonzero
    disappears.

    Args:
        spec: the convolution (a :class:`convbridge.ConvSpec`).
        kernel: its kernel (any framework), in the spec's kernel layout.
        path: where to write the PNG.
        title: a first title line, e.g. the convolution's arguments.

    Returns:
        ``path`` as a Path.

    Raises:
        ConvBridgeError: not a ConvSpec, a kernel of another shape, an empty batch, or a matrix too large to
            build (see :func:`convbridge.conv_matrix`).

    Shape:
        C: (N * O * prod(out_spatial), N * C * prod(in_spatial)).

    >>> import numpy as np, tempfile, os
    >>> from convbridge.spec import make_conv_spec
    >>> spec = make_conv_spec((1, 1, 4), (1, 1, 1))
    >>> draw_conv_matrix(spec, np.ones((1, 1, 1)), os.path.join(tempfile.mkdtemp(), "c.png")).name
    'c.png'
    """
    from convbridge.lowering.toeplitz import conv_matrix_of

    if not isinstance(spec, ConvSpec):
        raise ArgumentError(f"draw_conv_matrix draws a ConvSpec (from convbridge.spec.make_conv_spec), got "
                            f"{type(spec).__name__}")
    weights = to_numpy(kernel)
    if tuple(weights.shape) != spec.kernel_shape:
        raise ShapeError(f"kernel has shape {tuple(weights.shape)} but the spec's kernel is {spec.kernel_shape} "
                         f"(layout {spec.layout.rhs}); pass the kernel the spec describes")
    if spec.batch == 0:
        raise ArgumentError("nothing to draw: the spec's batch is empty (N = 0); draw one example")
    canonical = replace(spec, layout=spec.layout.canonical_layout())
    C = conv_matrix_of(canonical, weights.transpose(spec.layout.rhs_perm))
    x_shape, y_shape = (spec.batch, spec.in_channels, *spec.in_spatial), spec.canonical_out_shape
    rows, cols, vals, shape = _entries(C)
    raster, factor = _raster(rows, cols, vals, shape)
    side = min(8.5 / max(shape), 0.4)
    w, h = max(shape[1] * side, 2.5), max(shape[0] * side, 2.5)
    with style_context(STYLE):
        fig = Figure(figsize=(w + 2.8, h + 2.4))
        ax = fig.add_axes((1.3 / (w + 2.8), 1.1 / (h + 2.4), w / (w + 2.8), h / (h + 2.4)))
        lim = float(np.abs(vals).max()) if vals.size else 1.0
        im = ax.imshow(raster, cmap=CMAP.with_extremes(bad="black"), norm=colors.Normalize(-lim, lim),
                       interpolation="nearest", aspect="auto",
                       extent=(0, raster.shape[1] * factor, raster.shape[0] * factor, 0))
        ax.set(xlim=(0, shape[1]), ylim=(shape[0], 0))
        for axis, dims, shown in (("x", x_shape, w), ("y", y_shape, h)):
            _blocks(ax, axis, dims, shown / (shape[1] if axis == "x" else shape[0]) * 110)
        ax.set_xlabel(f"input element {_letters(x_shape, 'c')}", fontsize=10)
        ax.set_ylabel(f"output element {_letters(y_shape, 'o')}", fontsize=10)
        bar = fig.colorbar(im, ax=ax, shrink=min(0.8, 4.0 / h + 0.3), pad=0.03)
        bar.set_label("value of C (black: exactly 0)")
        _conv_matrix_title(fig, ax, title, shape, vals.size, factor, x_shape, y_shape)
        return _save(fig, path)


def _entries(C: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, ...]]:
    """Row, column and value of every nonzero of a sparse C (duplicates summed), and its shape."""
    coo = C.tocoo()
    coo.sum_duplicates()
    rows, cols, vals, shape = np.asarray(coo.row), np.asarray(coo.col), np.asarray(coo.data), coo.shape
    keep = vals != 0
    return rows[keep], cols[keep], vals[keep].astype(np.float64), tuple(int(s) for s in shape)


def _raster(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, int]:
    """An image of C: NaN for zero; pooled by ``factor`` keeping the largest-magnitude entry per block."""
    factor = max(1, -(-max(shape) // _MAX_PX))
    out = np.full((-(-shape[0] // factor), -(-shape[1] // factor)), np.nan)
    if vals.size:
        flat = (rows // factor) * out.shape[1] + cols // factor
        order = np.lexsort((np.abs(vals), flat))
        flat, vals = flat[order], vals[order]
        last = np.r_[flat[1:] != flat[:-1], True]
        out.ravel()[flat[last]] = vals[last]
    return out, factor


def _letters(shape: Sequence[int], channel: str) -> str:
    names = ([] if shape[0] == 1 else ["n"]) + [channel] + list(default_spatial_letters(len(shape) - 2).lower())
    return f"({', '.join(names)})"


def _blocks(ax: Axes, axis: str, dims: Sequence[int], px_per_element: float) -> None:
    """Batch / channel / outer-spatial boundaries as lines, channel blocks as tick labels."""
    n, c, spatial = dims[0], dims[1], dims[2:]
    chan, inner = math.prod(spatial), math.prod(spatial[1:])
    line = ax.axvline if axis == "x" else ax.axhline
    for b in range(1, n):
        line(b * c * chan, color="white", linewidth=1.6)
    for k in range(1, n * c):
        if k % c:
            line(k * chan, color="#a8a8a8", linewidth=0.9)
    if len(spatial) > 1 and inner * px_per_element >= 6:
        for k in range(1, n * c * spatial[0]):
            if k % spatial[0]:
                line(k * inner, color="#6a6a6a", linewidth=0.5, linestyle=":")
    if n * c <= 24:
        ticks = [(k + 0.5) * chan for k in range(n * c)]
        letter = "c" if axis == "x" else "o"
        labels = [f"n{k // c} {letter}{k % c}" if n > 1 else f"{letter}={k % c}" for k in range(n * c)]
        (ax.set_xticks if axis == "x" else ax.set_yticks)(ticks, labels, fontsize=8,
                                                         rotation=90 if axis == "x" and n * c > 8 else 0)


def _conv_matrix_title(fig: Figure, ax: Axes, title: str | None, shape: tuple[int, ...], nnz: int, factor: int,
                       x_shape: Sequence[int], y_shape: Sequence[int]) -> None:
    density = nnz / max(1, shape[0] * shape[1])
    lines = [title] if title else []
    lines.append(f"vec(y) = C @ vec(x):  C is {shape[0]} x {shape[1]}, {nnz} nonzeros "
                 f"(density {density:.2%})")
    lines.append(f"x {tuple(x_shape)} {_letters(x_shape, 'c')}  \u2192  y {tuple(y_shape)} "
                 f"{_letters(y_shape, 'o')}")
    if factor > 1:
        lines.append(f"each pixel shows the largest-magnitude entry of a {factor} x {factor} block")
    ax.set_title("\n".join(lines), fontsize=10, pad=10)
