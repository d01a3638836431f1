"""The pictures of ``convbridge explain --draw``: the im2col product, the Toeplitz matrix, and two GIFs.

All pictures use one image of the explained convolution. Geometries too large to
draw legibly are reduced (fewer pixels per side, at most 4 groups of 2 channels)
and the file's title says so; strides, dilations, paddings and groups are kept.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from convbridge.errors import ArgumentError, ConvBridgeError
from convbridge.spec import ConvSpec

if TYPE_CHECKING:
    from convbridge.explain import Explanation

__all__ = ["DRAWINGS", "draw_explanation", "reduced_geometry"]

#: The files :func:`draw_explanation` may write.
DRAWINGS = ("matmul.png", "conv_matrix.png", "conv.gif", "conv_transpose.gif")

_MAX_MATMUL_ROWS = 4096
_MAX_MATMUL_CELLS = 2**22  # rows x columns of the drawn im2col matrix
_MAX_MATMUL_CHANNELS = 16  # per group, in and out, in the matmul picture (4 groups at most)
_MAX_MATRIX = 300_000
_MAX_ANIMATED_SIDE = 12


def reduced_geometry(spec: ConvSpec, max_side: int | None = None, max_entries: int | None = None,
                     max_channels: int | None = None, max_cells: int | None = None) -> ConvSpec:
    """One image of ``spec`` (channels-first), shrunk to at most ``max_side`` output pixels per side,
    ``max_entries`` Toeplitz-matrix entries, ``max_channels`` channels per group (and 4 groups) and
    ``max_cells`` im2col-matrix cells; stride, dilation, padding and (up to 4) groups kept.

    >>> from convbridge.spec import make_conv_spec
    >>> reduced_geometry(make_conv_spec((8, 3, 224, 224), (64, 3, 7, 7), stride=2), max_side=12).out_spatial
    (12, 12)
    >>> reduced_geometry(make_conv_spec((1, 4096, 64, 64), (4096, 4096, 3, 3)), max_channels=16).in_channels
    16
    """
    sizes = list(spec.in_spatial)
    g, cg, og = spec.groups, spec.in_channels // spec.groups, spec.out_channels // spec.groups
    small = spec.resized(sizes)

    def entries(s: ConvSpec) -> int:
        return math.prod(s.canonical_out_shape) * s.in_channels * math.prod(s.in_spatial)

    def cells(s: ConvSpec) -> int:
        return math.prod(s.out_spatial) * (s.in_channels // s.groups) * math.prod(s.kernel_spatial)

    if max_channels and (g > 4 or cg > max_channels or og > max_channels):
        g = min(g, 4)
        small = spec.resized(sizes, g * min(cg, max_channels), g * min(og, max_channels), g)
    if max_entries and entries(small) > max_entries:
        g = min(g, 4)
        small = spec.resized(sizes, g * min(cg, 2), g * min(og, 2), g)
    while (max_side and max(small.out_spatial) > max_side or max_entries and entries(small) > max_entries
           or max_cells and cells(small) > max_cells):
        i = int(np.argmax(small.out_spatial))
        if small.out_spatial[i] <= 1:
            break
        sizes[i] -= spec.stride[i]
        try:
            small = small.resized(sizes)
        except ConvBridgeError:  # e.g. reflect padding wider than the shrunk input
            break
    return small


def _note(spec: ConvSpec, small: ConvSpec) -> str:
    if small.in_spatial == spec.in_spatial and small.in_channels == spec.in_channels and spec.batch == 1:
        return ""
    return (f" (drawn for one {'x'.join(map(str, small.in_spatial))} image with {small.in_channels} channels; "
            f"the explained input is {spec.batch} x {spec.in_channels} x {'x'.join(map(str, spec.in_spatial))})")


def _example(spec: ConvSpec, seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """A random input (unbatched, channels-first, as ``spec``) and kernel of the spec's shapes."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((spec.in_channels, *spec.in_spatial)).astype(np.float32)
    w = rng.standard_normal((spec.out_channels, spec.in_channels // spec.groups, *spec.kernel_spatial))
    return x, w.astype(np.float32)


def draw_explanation(explanation: Explanation, folder: str | Path, *, max_frames: int = 60) -> list[Path]:
    """Write ``matmul.png``, ``conv_matrix.png``, ``conv.gif`` and ``conv_transpose.gif`` into ``folder``.

    ``conv_transpose.gif`` scatters the transposed convolution of the same geometry with zero padding (with a
    padding mode, the gradient also adds each padded row back onto the row it copies, which it does not draw).

    Args:
        explanation: what :func:`convbridge.explain` returned.
        folder: created if missing.
        max_frames: the most frames per GIF.

    Returns:
        The paths written (the GIFs only for 1-d and 2-d convolutions).
    """
    from convbridge.lowering.im2col import lower
    from convbridge.plan import Plan
    from convbridge.viz.lowering import animate_conv, animate_conv_transpose, draw_conv_matrix, draw_matmul

    folder = Path(folder)
    if not str(folder).strip():
        raise ArgumentError("the picture folder is empty; give a folder to draw into, e.g. pictures/")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ArgumentError(f"cannot create the picture folder {str(folder)!r}: {exc.strerror or exc}; pass a folder "
                            "you can write to") from None
    spec: ConvSpec = explanation.spec
    paths: list[Path] = []
    side = None if math.prod(spec.out_spatial) <= _MAX_MATMUL_ROWS else int(_MAX_MATMUL_ROWS ** (1 / spec.nsp))
    small = reduced_geometry(spec, max_side=side, max_channels=_MAX_MATMUL_CHANNELS, max_cells=_MAX_MATMUL_CELLS)
    x, w = _example(small)
    view = lower(small, Plan("numpy"), x[None], w, None)
    title = (f"{explanation.summary_line()}: {view.lhs.shape[1]} x {view.lhs.shape[2]} @ "
             f"{view.rhs.shape[1]} x {view.rhs.shape[2]} per group\n{_note(spec, small).strip(' ()')}").strip()
    paths.append(draw_matmul(view, folder / "matmul.png", title=title, highlight_row=view.lhs.shape[1] // 2))
    small = reduced_geometry(spec, max_entries=_MAX_MATRIX)
    title = f"Toeplitz matrix C: vec(conv(x)) = C @ vec(x)\n{_note(spec, small).strip(' ()')}".strip()
    paths.append(draw_conv_matrix(small, _example(small)[1], folder / "conv_matrix.png", title=title))
    if spec.nsp <= 2:
        small = reduced_geometry(spec, max_side=_MAX_ANIMATED_SIDE)
        paths.append(animate_conv(small, folder / "conv.gif", max_frames=max_frames))
        zero_padded = replace(small, padding_mode="zeros")  # the scatter; a mode's fold-back is not drawn
        paths.append(animate_conv_transpose(zero_padded.adjoint(), folder / "conv_transpose.gif",
                                            max_frames=max_frames))
    return paths
