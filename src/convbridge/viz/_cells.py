"""Cell-grid drawing shared by the animations: a board of panels of cells, highlights, GIF writing.

A :class:`_Board` lays out labelled sections of same-sized cell grids on one
matplotlib Figure (Agg canvas); a :class:`_Panel` is one grid. Frames are grabbed
as PIL images and written as one GIF with a shared palette.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast, overload

import numpy as np
from matplotlib import colors as mcolors
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle
from matplotlib.text import Text
from PIL import Image

from convbridge._types import Pair
from convbridge.viz._files import save

PALETTE = ("#4e9bff", "#ff8c42", "#3ccf7a", "#e056fd", "#f9d423", "#00d2d3", "#ff6b6b", "#a3cb38")
HIGHLIGHT = "#ffffff"
_DPI, _MAX_W, _GAP, _MARGIN, _TEXT_CELL = 100, 12.5, 0.3, 0.35, 0.22
_ArtistT = TypeVar("_ArtistT", bound=Artist)


def _wrap(text: str, width_in: float, fontsize: float) -> str:
    chars = max(20, int(width_in / (fontsize * 0.55 / 72)))
    return "\n".join(textwrap.fill(line, chars) for line in text.split("\n"))


# --- drawing primitives ----------------------------------------------------------------------------


class _Board:
    """A figure of channel grids in sections (rows of axes placed in inches), plus a caption.

    Static artists are rendered once; artists registered with :meth:`dynamic` are
    redrawn over that background every frame (blitting), in registration order.
    """

    axes: list[Axes]
    _dynamic: list[Artist]
    _background: object | None  # the Agg renderer's saved region of the static artists
    #: The input and output panels and (transposed conv) the largest count, set by the animation that draws.
    ins: list[_Panel]
    outs: list[_Panel]
    peak: int

    def __init__(self, title: str, sections: Sequence[tuple[str, Sequence[tuple[int, int]]]], cell: float,
                 stack: bool) -> None:
        self.cell, self.axes, self._dynamic, self._background = cell, [], [], None
        size = lambda s: (max(s[1] * cell, 0.2), max(s[0] * cell, 0.2))  # noqa: E731  (w, h) inches
        rows = []
        for label, shapes in sections:
            w = size(shapes[0])[0]
            per = 1 if stack else max(1, min(len(shapes), int((_MAX_W + _GAP) // (w + _GAP))))
            rows.append((label, [size(s) for s in shapes], per, w))
        self.width = max(max(per * (w + _GAP) - _GAP for *_, per, w in rows) + 2 * _MARGIN, 9.0)
        title = _wrap(title, self.width - 0.2, 10)
        y, labels, boxes = 0.25 + 0.2 * (title.count("\n") + 1), [], []
        for label, sizes, per, w in rows:
            labels.append((_wrap(label, self.width - 2 * _MARGIN, 9), y))
            y += 0.18 * (labels[-1][0].count("\n") + 1) + 0.08
            for start in range(0, len(sizes), per):
                chunk = sizes[start:start + per]
                x0 = (self.width - len(chunk) * (w + _GAP) + _GAP) / 2
                boxes += [(x0 + i * (w + _GAP), y + 0.22, cw, ch) for i, (cw, ch) in enumerate(chunk)]
                y += max(ch for _, ch in chunk) + 0.34
            y += 0.15
        self.height = y + 0.75
        self.fig = Figure(figsize=(self.width, self.height), dpi=_DPI)
        FigureCanvasAgg(self.fig)
        self.fig.text(0.5, 1 - 0.12 / self.height, title, ha="center", va="top", fontsize=10)
        for text, top in labels:
            self.fig.text(_MARGIN / self.width, 1 - top / self.height, text, va="top", fontsize=9, color="#ddd")
        self.axes = [self.fig.add_axes((x / self.width, 1 - (t + h) / self.height, w / self.width,
                                        h / self.height)) for x, t, w, h in boxes]
        self.caption = self.dynamic(self.fig.text(0.5, 0.68 / self.height, "", ha="center", va="top",
                                                  fontsize=9))

    @overload
    def dynamic(self, first: _ArtistT, /, *rest: Artist) -> _ArtistT: ...
    @overload
    def dynamic(self) -> None: ...

    def dynamic(self, *artists: Artist) -> Artist | None:
        """Mark artists as redrawn every frame; returns the first."""
        for a in artists:
            a.set_animated(True)
        self._dynamic.extend(artists)
        return artists[0] if artists else None

    def set_caption(self, text: str) -> None:
        self.caption.set_text(_wrap(text, self.width - 0.4, 9))

    def grab(self) -> Image.Image:
        """Render one frame: the static background once, then the dynamic artists over it."""
        canvas = cast(FigureCanvasAgg, self.fig.canvas)  # attached in __init__
        if self._background is None:
            canvas.draw()
            self._background = canvas.copy_from_bbox(self.fig.bbox)
        canvas.restore_region(self._background)
        for artist in self._dynamic:
            if artist.get_visible():
                self.fig.draw_artist(artist)
        return Image.fromarray(np.asarray(canvas.buffer_rgba())).convert("RGB")


class _Panel:
    """One channel's grid of cells: image, cell labels, highlight pools and a shade that dims it."""

    state: np.ndarray
    upto: int

    def __init__(self, board: _Board, ax: Axes, title: str, group: int, level: np.ndarray, names: np.ndarray | None,
                 *, marks: int, live: bool, extras: Sequence[Callable[[Axes], Sequence[Artist]]] = ()) -> None:
        self.group, self.hue, cell = group, PALETTE[group % len(PALETTE)], board.cell
        rgba = _tint(self.hue, level)
        h, w = rgba.shape[:2]
        ax.set(xlim=(0, w), ylim=(h, 0), xticks=[], yticks=[])
        ax.set_title(title, fontsize=8, color=self.hue, pad=3)
        for spine in ax.spines.values():
            spine.set_color(self.hue)
        self.image = ax.imshow(rgba, extent=(0, w, h, 0), interpolation="nearest", aspect="auto")
        lines = [ax.vlines(range(1, w), 0, h, colors="black", linewidth=0.8),
                 ax.hlines(range(1, h), 0, w, colors="black", linewidth=0.8)] if cell >= 0.1 else []
        over = [a for make in extras for a in make(ax)]
        self.labels = _labels(ax, names, cell, rgba)
        self.marks, self.window = _marks(ax, marks, cell), _marks(ax, 1, cell, dashed=True)
        self.shade = ax.add_patch(Rectangle((0, 0), w, h, facecolor=(0, 0, 0, 0.62), edgecolor="none",
                                            zorder=7, visible=False))
        if live:
            board.dynamic(self.image, *lines, *over, *self.labels.values(), *ax.spines.values())
        board.dynamic(*self.marks, *self.window, self.shade)
        self.state, self.upto = np.zeros((h, w), int), -1

    def paint(self, level: np.ndarray, texts: np.ndarray | None = None) -> None:
        rgba = _tint(self.hue, level)
        self.image.set_data(rgba)
        for (r, c), label in self.labels.items():
            label.set_color(_ink(rgba[r, c]))
            if texts is not None:
                label.set_text(texts[r, c])

    def focus(self, active: bool, cells: Sequence[Sequence[int]], window: Sequence[int] | None = None,
              span: Sequence[int] = (1, 1)) -> None:
        _show(self.marks, cells if active else [])
        _show(self.window, [window] if active and window is not None else [], span)
        self.shade.set_visible(not active)


def _labels(ax: Axes, names: np.ndarray | None, cell: float, rgba: np.ndarray) -> dict[tuple[int, int], Text]:
    """One centred label per cell, when cells are large enough to read; keyed by (row, col)."""
    if cell < _TEXT_CELL or names is None:
        return {}
    size = float(np.clip(cell * 21, 4.5, 8))
    return {(r, c): ax.text(c + 0.5, r + 0.5, str(names[r, c]), ha="center", va="center", fontsize=size,
                            color=_ink(rgba[r, c]), zorder=6)
            for r, c in np.ndindex(*names.shape)}


def _ink(rgba: np.ndarray) -> str:
    return "#111111" if 0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2] > 0.5 else "#f4f4f4"


def _marks(ax: Axes, n: int, cell: float, *, dashed: bool = False) -> list[Rectangle]:
    """A pool of ``n`` hidden highlight rectangles, positioned per frame by :func:`_show`."""
    lw = float(np.clip(cell * 8, 1.0, 2.4)) * (0.7 if dashed else 1)
    face = mcolors.to_rgba(HIGHLIGHT, 0 if dashed else 0.28)
    return [cast(Rectangle, ax.add_patch(Rectangle((0, 0), 1, 1, facecolor=face, edgecolor=HIGHLIGHT, linewidth=lw,
                                                   zorder=5, linestyle="--" if dashed else "-", visible=False)))
            for _ in range(n)]


def _show(pool: list[Rectangle], cells: Sequence[Sequence[int]], size: Sequence[int] = (1, 1)) -> None:
    for i, rect in enumerate(pool):
        rect.set_visible(i < len(cells))
        if i < len(cells):
            rect.set_bounds(cells[i][1], cells[i][0], size[1], size[0])


def _bands(ax: Axes, h: int, w: int, pads: tuple[Pair, Pair], *, frame: bool = False, **style: Any) -> list[Patch]:
    """Rectangles over the border cells ``pads = ((top, bottom), (left, right))``, or (``frame``)
    one outline around the cells inside them (the real input, or the kept output)."""
    (t, b), (lft, rgt) = pads
    if frame:
        return [ax.add_patch(Rectangle((lft, t), w - lft - rgt, h - t - b, fill=False, zorder=4, **style))]
    boxes = ((0, 0, w, t), (0, h - b, w, b), (0, t, lft, h - t - b), (w - rgt, t, rgt, h - t - b))
    return [ax.add_patch(Rectangle((x, y), bw, bh, zorder=3, **style)) for x, y, bw, bh in boxes
            if bw > 0 and bh > 0]


def _tint(hue: str, level: np.ndarray) -> np.ndarray:
    """RGBA of ``hue`` scaled towards black by ``level`` (array in [0, 1])."""
    level = np.asarray(level, float)[..., None]
    return np.concatenate([np.asarray(mcolors.to_rgb(hue)) * level, np.ones(level.shape)], axis=-1)


def _names(idx: np.ndarray | tuple[int, ...], one_d: bool) -> np.ndarray:
    """'h,w' (or 'w' in 1-d) labels of an (h, w, 2) index grid (or of a grid shape); negative -> ''."""
    # numpy's stub wants a Sequence of arrays; np.stack iterates an ndarray (the index planes) all the same
    idx = np.stack(np.indices(idx), axis=-1) if isinstance(idx, tuple) else idx  # type: ignore[call-overload]
    out = np.empty(idx.shape[:2], dtype=object)
    for r, c in np.ndindex(*out.shape):
        a, b = idx[r, c]
        out[r, c] = "" if min(a, b) < 0 else (f"{b}" if one_d else f"{a},{b}")
    return out


def _write_gif(frames: list[Image.Image], path: str | Path, delay: int) -> Path:
    """One shared palette (from the first, middle and last frames), so frames differ only where drawn."""
    picks = {0, len(frames) // 2, len(frames) - 1}
    sample = Image.new("RGB", (frames[0].width, frames[0].height * len(picks)))
    for i, k in enumerate(sorted(picks)):
        sample.paste(frames[k], (0, i * frames[0].height))
    palette = sample.quantize(colors=255, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    paletted = [f.quantize(palette=palette, dither=Image.Dither.NONE) for f in frames]
    durations = [delay] * (len(frames) - 1) + [delay * 3]
    return save(path, lambda tmp: paletted[0].save(tmp, format="GIF", save_all=True, append_images=paletted[1:],
                                                   duration=durations, loop=0))


# --- conv ------------------------------------------------------------------------------------------
