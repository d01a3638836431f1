"""Animated convolution and transposed convolution: every channel, padding mode, stride, dilation, group.

Frames are drawn with matplotlib's object-oriented API on an Agg canvas (never
pyplot, so the user's backend is untouched) and written as a GIF with Pillow.
1-d is drawn as grids of one row; 3-d and higher are refused (a depth slice
would hide the taps in other slices). Each channel is a grid of cells coloured
by its group; at most ``MAX_CHANNELS`` channels per side are drawn (the title
says so when more exist).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TypeAlias, cast

import numpy as np
from matplotlib.style import context as style_context
from PIL import Image

from convbridge._args import as_int
from convbridge._types import Pair
from convbridge.errors import ArgumentError, ShapeError
from convbridge.spec import ConvAxis, ConvSpec, ConvTransposeSpec, TransposeAxis, gather_indices
from convbridge.viz._cells import _bands, _Board, _names, _Panel, _write_gif
from convbridge.viz.figures import STYLE

__all__ = ["animate_conv", "animate_conv_transpose", "MAX_CHANNELS"]

#: Channels drawn per side (input, output); the title says when more exist.
MAX_CHANNELS = 8
#: One hue per group (cycled); the highlight is white so it never clashes with a group.
_LIVE_LABELS = 600  # cell labels redrawn every frame, per section, beyond which they are left out

#: One value per dim of the problem promoted to 2-d: (rows, cols).
_Grid: TypeAlias = tuple[int, int]
#: The (lo, hi) padding of the rows, then of the columns.
_Pads: TypeAlias = tuple[Pair, Pair]
#: (group, flat output (conv) or input (transposed conv) position) per frame.
_Plan: TypeAlias = list[tuple[int, int]]


# --- public --------------------------------------------------------------------------------------

def animate_conv(spec: ConvSpec, path: str | Path, *, max_frames: int = 60, fps: float = 3) -> Path:
    """A GIF of the dilated kernel window sliding over the padded, strided input of ``spec``.

    Every input channel is a grid of cells, labelled with their index when large
    enough. Zero padding is hatched; reflect / replicate / circular padding is
    darker, tinted like (and labelled with the index of) the cell it copies.
    Channels are coloured by group. Each frame is one output position of one
    group's sweep: the taps are highlighted on every input channel of that group,
    other groups are dimmed, and the output cell is outlined in every output
    channel of the group (computed cells stay filled). With more than
    ``max_frames`` steps, each group shows an evenly spaced grid of output
    positions, first and last included (the title says so).

    Args:
        spec: a ConvSpec from :func:`convbridge.spec.make_conv_spec`, 1 or 2 spatial dims.
        path: where to write the GIF.
        max_frames: the most frames to write (>= 1).
        fps: frames per second, in (0, 50].

    Returns:
        ``path`` as a Path.

    Raises:
        ShapeError: the spec has more than 2 spatial dims.
        ArgumentError: ``spec`` is not a ConvSpec, or max_frames / fps is out of range.

    Shape:
        frames = groups drawn x prod(out_spatial), one per (group, output position); with more than
        ``max_frames``, an evenly spaced grid of positions per group that fits in ``max_frames``.

    >>> import tempfile, os
    >>> from convbridge.spec import make_conv_spec
    >>> spec = make_conv_spec((1, 2, 5), (2, 2, 3), padding=1, padding_mode="reflect")
    >>> animate_conv(spec, os.path.join(tempfile.mkdtemp(), "c.gif"), max_frames=2).suffix
    '.gif'
    """
    if not isinstance(spec, ConvSpec):
        raise ArgumentError(f"animate_conv needs a ConvSpec (from convbridge.spec.make_conv_spec), "
                            f"got {type(spec).__name__}")
    _check_rank(spec.nsp, "animate_conv")
    max_frames, delay = _frame_args(max_frames, fps)
    g = _Geo(spec.axes)
    chans = _Channels(spec.in_channels, spec.out_channels, spec.groups)
    plan, note = _plan(chans.swept, g.out, max_frames)
    with style_context(STYLE):
        board = _conv_board(spec, g, chans, _conv_title(spec, chans, note))
        frames = [_conv_frame(board, g, chans, step, plan) for step in range(len(plan))]
    return _write_gif(frames, path, delay)


def animate_conv_transpose(spec: ConvTransposeSpec, path: str | Path, *, max_frames: int = 60,
                           fps: float = 3) -> Path:
    """A GIF of a transposed convolution (PyTorch semantics: the gradient of conv) as a scatter.

    Each frame takes one input pixel of one group and scatters the kernel, scaled by
    that pixel, onto the full uncropped output canvas of every output channel of the
    group, at ``i * stride + k * dilation``. Numbers count the products added to each
    canvas cell so far (the overlap pattern behind checkerboard artifacts); cells
    cropped by ``padding`` are hatched and dark, ``output_padding`` cells (never
    written) have a dashed outline, and the white frame is the final output. Frames
    are capped as in :func:`animate_conv` (skipped pixels still add their counts).

    Args:
        spec: a ConvTransposeSpec (``cb.ConvTransposeSpec``, e.g. from
            :func:`convbridge.spec.make_conv_transpose_spec` or ``ConvSpec.adjoint()``), 1 or 2 spatial dims.
        path: where to write the GIF.
        max_frames: the most frames to write (>= 1).
        fps: frames per second, in (0, 50].

    Returns:
        ``path`` as a Path.

    Raises:
        ShapeError: more than 2 spatial dims.
        ArgumentError: not a ConvTransposeSpec, a padding that adds rows (only lax's convention can), or
            max_frames / fps out of range.

    Shape:
        canvas = (n - 1) * stride + dilation * (k - 1) + 1 + output_padding; out = canvas - lo - hi.

    >>> import tempfile, os
    >>> from convbridge.spec import make_conv_transpose_spec
    >>> spec = make_conv_transpose_spec((1, 3), (1, 1, 3), stride=2, padding=1, output_padding=1)
    >>> animate_conv_transpose(spec, os.path.join(tempfile.mkdtemp(), "t.gif"), max_frames=2).name
    't.gif'
    """
    if not isinstance(spec, ConvTransposeSpec):
        raise ArgumentError(f"animate_conv_transpose needs a ConvTransposeSpec (from "
                            f"convbridge.spec.make_conv_transpose_spec), got {type(spec).__name__}")
    _check_rank(spec.nsp, "animate_conv_transpose")
    if any(lo < 0 or hi < 0 for lo, hi in spec.padding):
        raise ArgumentError(f"animate_conv_transpose draws crops of the full output, but padding {spec.padding} "
                            "adds rows (lax's convention); state the call in torch's with jax_to_torch first")
    max_frames, delay = _frame_args(max_frames, fps)
    g = _Geo(spec.axes)
    chans = _Channels(spec.in_channels, spec.out_channels, spec.groups)
    plan, note = _plan(chans.swept, g.n, max_frames)
    with style_context(STYLE):
        board = _transpose_board(g, g.op, chans, _transpose_title(g, g.op, chans, note))
        frames = [_transpose_frame(board, g, chans, step, plan) for step in range(len(plan))]
    return _write_gif(frames, path, delay)


# --- arguments -----------------------------------------------------------------------------------

class _Geo:
    """The spec's axes promoted to 2-d (a 1-d problem becomes one row): sizes, taps and the output grid."""

    def __init__(self, axes: Sequence[ConvAxis] | Sequence[TransposeAxis]) -> None:
        self.nsp, self.one_d = len(axes), len(axes) == 1
        trivial: ConvAxis | TransposeAxis = ConvAxis(1, 1) if isinstance(axes[0], ConvAxis) else TransposeAxis(1, 1)
        self.axes: tuple[ConvAxis | TransposeAxis, ...] = tuple(axes) if len(axes) == 2 else (trivial, *axes)
        # two axes from here on, so every per-dim tuple is a pair
        self.n = cast(_Grid, tuple(a.size for a in self.axes))
        self.k = cast(_Grid, tuple(a.kernel for a in self.axes))
        self.s = cast(_Grid, tuple(a.stride for a in self.axes))
        self.d = cast(_Grid, tuple(a.dilation for a in self.axes))
        self.pads = cast(_Pads, tuple(a.padding for a in self.axes))
        self.span = cast(_Grid, tuple(a.span for a in self.axes))
        if isinstance(self.axes[0], TransposeAxis):
            self.op = cast(_Grid, tuple(a.output_padding for a in self.axes))  # type: ignore[union-attr]
            self.canvas = cast(_Grid, tuple(a.full + a.output_padding for a in self.axes))  # type: ignore[union-attr]
            self.final = cast(_Grid, tuple(a.out for a in self.axes))
        else:
            self.padded = cast(_Grid, tuple(a.padded for a in self.axes))  # type: ignore[union-attr]
            self.out = cast(_Grid, tuple(a.out for a in self.axes))

    def taps(self, pos: Sequence[int]) -> list[tuple[int, int]]:
        """Cells (row, col) under the kernel taps when the window starts at ``pos * stride``."""
        rows, cols = (a.taps(p) for a, p in zip(self.axes, pos))
        return [(r, c) for r in rows for c in cols]

    def user(self, dims: Sequence[int] | Sequence[tuple[int, int]]) -> str:
        """Per-dim values as the caller gave them (an int in 1-d, a tuple in 2-d)."""
        return str(dims[-1]) if self.one_d else str(tuple(dims))


class _Channels:
    """Which channels are drawn, each channel's group, and which groups are swept."""

    def __init__(self, c_in: int, c_out: int, groups: int) -> None:
        self.c_in, self.c_out, self.groups = c_in, c_out, groups
        self.ins, self.outs = list(range(min(c_in, MAX_CHANNELS))), list(range(min(c_out, MAX_CHANNELS)))
        self.in_group = [c // (c_in // groups) for c in self.ins]
        self.out_group = [o // (c_out // groups) for o in self.outs]
        self.swept = sorted(set(self.in_group) & set(self.out_group))

    def members(self, group: int) -> str:
        """All (not only drawn) input and output channels of ``group``, as a caption fragment."""
        ci, co = self.c_in // self.groups, self.c_out // self.groups
        span = lambda a, n: str(a) if n == 1 else f"{a}..{a + n - 1}"  # noqa: E731
        return f"in-channels {span(group * ci, ci)} \u2192 out-channels {span(group * co, co)}"

    def note(self) -> str:
        hidden = [f"{len(d)} of {n} {w} channels" for d, n, w in
                  ((self.ins, self.c_in, "input"), (self.outs, self.c_out, "output")) if len(d) < n]
        return f"; drawing the first {' and '.join(hidden)}" if hidden else ""


def _check_rank(nsp: int, who: str) -> None:
    if nsp not in (1, 2):
        raise ShapeError(f"{who} draws 1-d and 2-d convolutions, but this one has {nsp} spatial dims; "
                         "animate a 2-d slice of it, or draw its matrix with draw_conv_matrix")


def _frame_args(max_frames: int, fps: float) -> tuple[int, int]:
    """The drawing options (not the convolution's arguments): a frame count and a frame rate."""
    m = as_int(max_frames, "max_frames")
    if m < 1:
        raise ArgumentError(f"max_frames must be >= 1, got {m}; a GIF needs at least one frame")
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0.01 <= fps <= 50:
        raise ArgumentError(f"fps must be a number in [0.01, 50] (a GIF holds frame times up to 655 s), got "
                            f"{fps!r}; e.g. fps=3")
    return m, max(20, round(1000 / fps))


def _plan(groups: list[int], shape: _Grid, max_frames: int) -> tuple[_Plan, str]:
    """(group, flat position) per frame, and a note: every position, or an even grid of them per group."""
    total = len(groups) * math.prod(shape)
    if len(groups) > max_frames:
        groups = [groups[i] for i in np.unique(np.linspace(0, len(groups) - 1, max_frames).round().astype(int))]
    budget = max_frames // len(groups)
    if math.prod(shape) <= budget:
        picks = [np.arange(n) for n in shape]
    else:
        m0 = min(shape[0], max(1, int(shape[0] * math.sqrt(budget / math.prod(shape)))))
        picks = [np.unique(np.linspace(0, n - 1, m).round().astype(int))
                 for n, m in zip(shape, (m0, min(shape[1], budget // m0)))]
    flats = np.ravel_multi_index(np.meshgrid(*picks, indexing="ij"), shape).ravel()
    plan = [(g, int(f)) for g in groups for f in flats]
    if len(plan) == total:
        return plan, f"{total} frames: one per " + "{unit}" + (" per group" if len(groups) > 1 else "")
    where = (f"{len(picks[1])} evenly spaced positions" if shape[0] == 1 else
             f"an evenly spaced {len(picks[0])} x {len(picks[1])} grid of positions")
    return plan, (f"showing {len(plan)} of {total} steps: {where} per group (max_frames={max_frames}); "
                  "skipped steps still count as done")


# --- titles and captions ---------------------------------------------------------------------------

def _conv_title(spec: ConvSpec, ch: _Channels, note: str) -> str:
    x = (spec.batch, spec.in_channels, *spec.in_spatial)
    w = (spec.out_channels, spec.in_channels // spec.groups, *spec.kernel_spatial)
    pads = str(spec.padding) if spec.nsp > 1 else str(spec.padding[0])
    user = lambda v: str(v[0]) if len(v) == 1 else str(v)  # noqa: E731
    return (f"conv{spec.nsp}d: x {x} with kernel w {w} \u2192 y {spec.canonical_out_shape}\n"
            f"stride={user(spec.stride)}, padding={pads} ({spec.padding_mode}), "
            f"dilation={user(spec.dilation)}, groups={spec.groups}\n{note.format(unit='output position')}{ch.note()}")


def _transpose_title(g: _Geo, op: _Grid, ch: _Channels, note: str) -> str:
    final = g.final
    shape = lambda c, dims: str((c, *dims[2 - g.nsp:]))  # noqa: E731
    return (f"conv_transpose{g.nsp}d (PyTorch semantics, the gradient of conv): x (C, spatial) = "
            f"{shape(ch.c_in, g.n)} \u2192 y {shape(ch.c_out, final)}\n"
            f"kernel={g.user(g.k)}, stride={g.user(g.s)}, padding={g.user(g.pads)}, "
            f"output_padding={g.user(op)}, dilation={g.user(g.d)}, groups={ch.groups}\n"
            f"canvas {g.user(g.canvas)} = (n-1)\u00b7stride + dilation\u00b7(kernel-1) + 1 + output_padding;"
            f" crop (lo, hi) \u2192 {g.user(final)}\n{note.format(unit='input pixel')}{ch.note()}")


def _seq(start: int, k: int, step: int) -> str:
    if k <= 5:
        return ", ".join(str(start + i * step) for i in range(k))
    return f"{start}, {start + step}, ..., {start + (k - 1) * step}"


def _cell_size(g: _Geo, *shapes: _Grid) -> float:
    biggest = max(max(s) for s in shapes)
    return min(0.45, 10.0 / biggest) if g.one_d else min(0.42, 2.7 / biggest)


def _conv_board(spec: ConvSpec, g: _Geo, ch: _Channels, title: str) -> _Board:
    mode, padded = spec.padding_mode, any(map(any, g.pads))
    legend = ("hatched = zero padding" if mode == "zeros" else
              f"dark = {mode} padding, tinted like, and labelled with, the input cell it copies")
    sections = [(f"input x{', padded' if padded else ''} \u2014 "
                 f"{legend + '; grey frame = the real input' if padded else 'no padding'}; "
                 "white = kernel taps, dashed = the dilated window", [g.padded] * len(ch.ins)),
                ("output y, one grid per output channel \u2014 filled = computed so far, white = this step",
                 [g.out] * len(ch.outs))]
    board = _Board(title, sections, _cell_size(g, g.padded, g.out), g.one_d)
    names: np.ndarray | None
    level, names = _input_cells(g, mode)
    extras = [lambda ax: _bands(ax, *g.padded, g.pads, fill=False, hatch="///", edgecolor="#8c8c8c",
                                linewidth=0) if mode == "zeros" else [],
              lambda ax: _bands(ax, *g.padded, g.pads, frame=True, edgecolor="#d0d0d0", linewidth=1.6)]
    board.ins = [_Panel(board, ax, f"in c={c} (group {grp})", grp, level, names, marks=math.prod(g.k),
                        live=False, extras=extras if padded else ())
                 for ax, c, grp in zip(board.axes, ch.ins, ch.in_group)]
    names = _names(g.out, g.one_d) if len(ch.outs) * math.prod(g.out) <= _LIVE_LABELS else None
    board.outs = [_Panel(board, ax, f"out o={o} (group {grp})", grp, np.full(g.out, 0.16), names,
                         marks=1, live=True)
                  for ax, o, grp in zip(board.axes[len(ch.ins):], ch.outs, ch.out_group)]
    return board


def _input_cells(g: _Geo, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Brightness and label of every padded input cell: a ramp over the index of the cell it copies."""
    src = [_sources(n, lo, hi, mode) for n, (lo, hi) in zip(g.n, g.pads)]
    idx = np.stack(np.meshgrid(*src, indexing="ij"), axis=-1)
    valid = (idx >= 0).all(-1)
    ramp = np.where(valid, idx[..., 0] * g.n[1] + idx[..., 1], 0) / max(1, g.n[0] * g.n[1] - 1)
    inner = np.zeros(g.padded, bool)
    inner[g.pads[0][0]:g.pads[0][0] + g.n[0], g.pads[1][0]:g.pads[1][0] + g.n[1]] = True
    return np.where(valid, (0.34 + 0.42 * ramp) * np.where(inner, 1.0, 0.6), 0.2), _names(idx, g.one_d)


def _sources(n: int, lo: int, hi: int, mode: str) -> np.ndarray:
    """For each padded position, the input index it copies (-1 for zero padding)."""
    if mode == "zeros":
        i = np.arange(-lo, n + hi)
        return np.where((i >= 0) & (i < n), i, -1)
    return gather_indices(n, lo, hi, mode)


def _conv_frame(board: _Board, g: _Geo, ch: _Channels, step: int, plan: _Plan) -> Image.Image:
    group, flat = plan[step]
    pos = tuple(int(v) for v in np.unravel_index(flat, g.out))
    taps = g.taps(pos)
    for panel in board.ins:
        panel.focus(panel.group == group, taps, taps[0], g.span)
    for panel in board.outs:
        if panel.group == group:
            panel.state = np.arange(panel.state.size).reshape(panel.state.shape) <= flat
        panel.paint(np.where(panel.state > 0, 0.62, 0.16))
        panel.focus(panel.group == group, [pos])
    where = f"y[o, {pos[1]}]" if g.one_d else f"y[o, {pos[0]}, {pos[1]}]"
    rows = "" if g.one_d else f"rows {_seq(taps[0][0], g.k[0], g.d[0])} and columns "
    board.set_caption(
        f"step {step + 1}/{len(plan)} \u00b7 group {group}: {ch.members(group)}.  {where} = \u03a3 over "
        f"{ch.c_in // ch.groups} channel(s) \u00d7 {math.prod(g.k)} taps of "
        f"w \u00b7 x_padded at {rows or 'positions '}{_seq(taps[0][1], g.k[1], g.d[1])}  "
        "(window start = output index \u00d7 stride)")
    return board.grab()


# --- conv_transpose --------------------------------------------------------------------------------

def _transpose_board(g: _Geo, op: _Grid, ch: _Channels, title: str) -> _Board:
    canvas = g.canvas
    sections = [("input x \u2014 one frame per input pixel; filled = already scattered, white = this step",
                 [g.n] * len(ch.ins)),
                ("output canvas before cropping \u2014 numbers: products added so far; hatched = cropped by "
                 "padding; dashed = output_padding cells (never written); white frame = the final output",
                 [canvas] * len(ch.outs))]
    board = _Board(title, sections, _cell_size(g, g.n, canvas), g.one_d)
    board.peak = max(1, int(_scatter_counts(g, canvas).max()))
    extras = [lambda ax: _bands(ax, *canvas, g.pads, facecolor=(0, 0, 0, 0.55), hatch="///",
                                edgecolor="#8a8a8a", linewidth=0),
              lambda ax: _bands(ax, *canvas, ((0, op[0]), (0, op[1])), fill=False, edgecolor="#7fd8ff",
                                linestyle="--", linewidth=1.4),
              lambda ax: _bands(ax, *canvas, g.pads, frame=True, edgecolor="white", linewidth=2.2)]
    names = _names(g.n, g.one_d) if len(ch.ins) * math.prod(g.n) <= _LIVE_LABELS else None
    board.ins = [_Panel(board, ax, f"in c={c} (group {grp})", grp, np.full(g.n, 0.3), names, marks=1,
                        live=True) for ax, c, grp in zip(board.axes, ch.ins, ch.in_group)]
    blank = np.full(canvas, "", dtype=object) if len(ch.outs) * math.prod(canvas) <= _LIVE_LABELS else None
    board.outs = [_Panel(board, ax, f"out o={o} (group {grp})", grp, np.full(canvas, 0.14), blank,
                         marks=math.prod(g.k), live=True, extras=extras)
                  for ax, o, grp in zip(board.axes[len(ch.ins):], ch.outs, ch.out_group)]
    return board


def _scatter_counts(g: _Geo, canvas: _Grid) -> np.ndarray:
    """How many (input pixel, tap) products land on each canvas cell over the whole scatter."""
    counts = np.zeros(canvas, int)
    for pos in np.ndindex(*g.n):
        for r, c in g.taps(pos):
            counts[r, c] += 1
    return counts


def _transpose_frame(board: _Board, g: _Geo, ch: _Channels, step: int, plan: _Plan) -> Image.Image:
    group, flat = plan[step]
    pos = tuple(int(v) for v in np.unravel_index(flat, g.n))
    taps = g.taps(pos)
    for panel in board.ins:
        if panel.group == group:
            panel.state = np.arange(panel.state.size).reshape(panel.state.shape) <= flat
        panel.paint(np.where(panel.state > 0, 0.7, 0.3))
        panel.focus(panel.group == group, [pos])
    for panel in board.outs:
        for done in range(panel.upto + 1, flat + 1) if panel.group == group else ():
            for cell in g.taps(cast("tuple[int, ...]", np.unravel_index(done, g.n))):  # np.intp works as int
                panel.state[cell] += 1
        panel.upto = flat if panel.group == group else panel.upto
        cnt = panel.state
        panel.paint(np.where(cnt > 0, 0.3 + 0.55 * cnt / board.peak, 0.14),
                    np.where(cnt > 0, cnt.astype(str).astype(object), ""))
        panel.focus(panel.group == group, taps)
    at = f"x[c, {pos[1]}]" if g.one_d else f"x[c, {pos[0]}, {pos[1]}]"
    rows = "" if g.one_d else (f"rows {pos[0]}\u00b7{g.s[0]} + {g.d[0]}\u00b7(0..{g.k[0] - 1}) = "
                               f"{_seq(taps[0][0], g.k[0], g.d[0])}, cols ")
    board.set_caption(
        f"step {step + 1}/{len(plan)} \u00b7 group {group} ({ch.members(group)}): {at} adds "
        f"x \u00b7 w[c, o, k] to each out-channel o at {rows or 'positions '}"
        f"{pos[1]}\u00b7{g.s[1]} + {g.d[1]}\u00b7(0..{g.k[1] - 1}) = {_seq(taps[0][1], g.k[1], g.d[1])}")
    return board.grab()
