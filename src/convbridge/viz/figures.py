"""Figures of ``convbridge compare``: feature maps side by side, differences, bound ratios, inputs.

Uses matplotlib's object-oriented API with the Agg canvas, so nothing here
changes the user's global backend or needs a display.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps, colors
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.style import context as style_context

from convbridge.viz._files import save

__all__ = ["side_by_side", "rows", "heatmap", "input_grid", "filters", "STYLE"]

#: The original tutorial plotted on a dark background.
#: Every figure's style: dark, and text drawn as given (a class or layer name holding ``$`` is not TeX math).
STYLE: list[str | dict[str, object]] = ["dark_background", {"text.parse_math": False}]


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    return save(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))


def _finite_range(*arrays: np.ndarray) -> tuple[float, float]:
    """The smallest and largest finite value (inf and NaN are drawn in the colour map's 'bad' colour)."""
    finite = [a[np.isfinite(a)] for a in (np.asarray(a, dtype=np.float64) for a in arrays)]
    values = np.concatenate([f.ravel() for f in finite]) if finite else np.zeros(0)
    if not values.size:
        return 0.0, 1.0
    lo, hi = float(values.min()), float(values.max())
    return (lo, hi) if hi > lo else (lo - 0.5, hi + 0.5)


_BAD = "magenta"  # inf or NaN in a feature map


def side_by_side(maps: Mapping[str, np.ndarray], title: str, path: Path) -> Path:
    """One 2-d map per framework, side by side, on a shared colour scale."""
    with style_context(STYLE):
        fig = Figure(figsize=(3.4 * len(maps) + 0.8, 3.6))
        axes = fig.subplots(1, len(maps), squeeze=False)[0]
        lo, hi = _finite_range(*maps.values())
        cmap = colormaps["viridis"].with_extremes(bad=_BAD)
        for ax, (name, m) in zip(axes, maps.items()):
            im = ax.imshow(np.where(np.isfinite(m), m, np.nan), cmap=cmap, vmin=lo, vmax=hi)
            ax.set_title(name)
            ax.axis("off")
        fig.colorbar(im, ax=list(axes), shrink=0.85)
        fig.suptitle(title)
        return _save(fig, path)


def rows(maps: Mapping[str, np.ndarray], labels: Sequence[str], title: str, path: Path) -> Path:
    """One row per framework, one column per image (maps: name -> (n_images, H, W))."""
    n = max(len(m) for m in maps.values())
    with style_context(STYLE):
        fig = Figure(figsize=(2.1 * n, 2.3 * len(maps) + 0.5))
        axes = fig.subplots(len(maps), n, squeeze=False)
        for r, (name, stack) in enumerate(maps.items()):
            for c in range(n):
                ax = axes[r][c]
                ax.axis("off")
                if c < len(stack):
                    lo, hi = _finite_range(stack[c])
                    ax.imshow(np.where(np.isfinite(stack[c]), stack[c], np.nan),
                              cmap=colormaps["viridis"].with_extremes(bad=_BAD), vmin=lo, vmax=hi)
                    ax.set_title(f"{name}: {labels[c]}" if c < len(labels) else name, fontsize=8)
        fig.suptitle(title)
        return _save(fig, path)


def heatmap(values: np.ndarray, title: str, path: Path, *, label: str, log: bool = False,
            limit: float | None = None) -> Path:
    """A single annotated heatmap; ``limit`` draws the allowed value as a colour-bar line."""
    with style_context(STYLE):
        fig = Figure(figsize=(4.8, 4.0))
        ax = fig.subplots()
        data = np.asarray(values, dtype=np.float64)
        data = np.where(np.isfinite(data), data, np.nan)  # inf or NaN: drawn black, like exact zeros on a log scale
        finite = data[np.isfinite(data)]
        top = float(finite.max()) if finite.size else 0.0
        norm: colors.Normalize
        if log:
            positive = data[data > 0]
            floor = float(positive.min()) if positive.size else 1e-3
            norm = colors.LogNorm(vmin=floor, vmax=max(top, floor * 10, 3 * (limit or 0)))
            data = np.where(data > 0, data, np.nan)  # exact zeros have no logarithm: drawn black
        else:
            norm = colors.Normalize(vmin=0.0, vmax=top if top > 0 else 1.0)
        cmap = colormaps["magma"].with_extremes(bad="black")
        im = ax.imshow(data, cmap=cmap, norm=norm)
        if top == 0:
            ax.text(0.5, 0.5, "all differences are exactly 0\n(bitwise identical)", color="white",
                    ha="center", va="center", transform=ax.transAxes)
        elif log and np.isnan(data).any():
            ax.set_xlabel("black: exactly equal", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        bar = fig.colorbar(im, ax=ax, shrink=0.85)
        bar.set_label(label)
        if limit is not None and np.isfinite(limit):
            bar.ax.axhline(limit, color="cyan", linewidth=2)
        return _save(fig, path)


def input_grid(images: np.ndarray, captions: Sequence[str], title: str, path: Path, cols: int = 8) -> Path:
    """Input images (uint8 NHWC) with their class names: one mosaic, so that it draws in a fraction of a second."""
    n, h, w = images.shape[:3]
    cols = max(1, min(cols, n))
    nrows = -(-n // cols)
    gap_x, gap_y = max(1, w // 8), max(1, h // 8) + max(4, h // 3)  # room for a caption above each image
    mosaic = np.zeros((nrows * (h + gap_y), cols * (w + gap_x), 3), np.uint8)  # the dark background
    with style_context(STYLE):
        fig = Figure(figsize=(1.5 * cols, 1.65 * nrows + 0.4))
        ax = fig.subplots()
        ax.axis("off")
        for i in range(n):
            top, left = (i // cols) * (h + gap_y) + gap_y, (i % cols) * (w + gap_x)
            mosaic[top:top + h, left:left + w] = images[i]
            ax.text(left + w / 2, top - 1, f"{i}: {captions[i]}", fontsize=7, ha="center", va="bottom")
        ax.imshow(mosaic, interpolation="nearest")
        fig.suptitle(title)
        return _save(fig, path)


def filters(kernel: np.ndarray, title: str, path: Path) -> Path:
    """Each filter (O, I, kh, kw) as one image per in-channel."""
    o, i = kernel.shape[:2]
    lim = max(abs(v) for v in _finite_range(kernel))
    with style_context(STYLE):
        fig = Figure(figsize=(1.4 * i + 0.8, 1.4 * o + 0.4))
        axes = fig.subplots(o, i, squeeze=False)
        for r in range(o):
            for c in range(i):
                ax = axes[r][c]
                im = ax.imshow(kernel[r, c], cmap="coolwarm", vmin=-lim, vmax=lim)
                ax.set_xticks([])
                ax.set_yticks([])
                if c == 0:
                    ax.set_ylabel(f"filter {r}", fontsize=8)
                if r == 0:
                    ax.set_title(f"in {c}", fontsize=8)
        fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8)
        fig.suptitle(title)
        return _save(fig, path)
