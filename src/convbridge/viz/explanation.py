"""The pictures of ``convbridge explain --draw``: the im2col product, the Toeplitz matrix, and two GIFs.

All pictures use one image of the explained convolution. Geometries too large to
draw legibly are reduced (fewer pixels per side, at most 4 groups of 2 channels)
and the file's title says so; strides, dilations, paddings and groups are kept.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from convbridge.errors import ConvBridgeError
from convbridge.spec import ConvSpec, make_conv_spec

__all__ = ["draw_explanation", "reduced_geometry"]

_MAX_MATMUL_ROWS = 4096
_MAX_MATRIX = 300_000
_MAX_ANIMATED_SIDE = 12


def reduced_geometry(spec: ConvSpec, max_side: int | None = None, max_entries: int | None = None) -> ConvSpec:
    """One image of ``spec`` (channels-first), shrunk to at most ``max_side`` output pixels per side
    and at most ``max_entries`` Toeplitz-matrix entries; stride, dilation, padding and groups kept."""
    sizes = list(spec.in_spatial)
    g, cg, og = spec.groups, spec.in_channels // spec.groups, spec.out_channels // spec.groups
    channels = (g * cg, g * og)

    def build(sizes, channels, groups):
        return make_conv_spec((channels[0], *sizes), (channels[1], channels[0] // groups, *spec.kernel_spatial),
                              stride=spec.stride, padding=spec.padding, dilation=spec.dilation, groups=groups,
                              padding_mode=spec.padding_mode)

    small = build(sizes, channels, g)
    if max_entries and math.prod(small.canonical_out_shape) * channels[0] * math.prod(sizes) > max_entries:
        g = min(g, 4)
        channels, small = (g * min(cg, 2), g * min(og, 2)), build(sizes, (g * min(cg, 2), g * min(og, 2)), g)
    while max_side and max(small.out_spatial) > max_side or max_entries and \
            math.prod(small.canonical_out_shape) * channels[0] * math.prod(sizes) > max_entries:
        i = int(np.argmax(small.out_spatial))
        if small.out_spatial[i] <= 1:
            break
        sizes[i] -= spec.stride[i]
        try:
            small = build(sizes, channels, g)
        except ConvBridgeError:  # e.g. reflect padding wider than the shrunk input
            sizes[i] += spec.stride[i]
            break
    return small


def _note(spec: ConvSpec, small: ConvSpec) -> str:
    if small.in_spatial == spec.in_spatial and small.in_channels == spec.in_channels and spec.batch == 1:
        return ""
    return (f" (drawn for one {'x'.join(map(str, small.in_spatial))} image with {small.in_channels} channels; "
            f"the explained input is {spec.batch} x {spec.in_channels} x {'x'.join(map(str, spec.in_spatial))})")


def _example(spec: ConvSpec, seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1, spec.in_channels, *spec.in_spatial)).astype(np.float32)
    w = rng.standard_normal((spec.out_channels, spec.in_channels // spec.groups, *spec.kernel_spatial))
    return x, w.astype(np.float32)


def draw_explanation(explanation, folder) -> list[Path]:
    """Write ``matmul.png``, ``conv_matrix.png``, ``conv.gif`` and ``conv_transpose.gif`` into ``folder``.

    Returns:
        The paths written (the GIFs only for 1-d and 2-d convolutions).
    """
    from convbridge.lowering import as_matmul, conv_matrix
    from convbridge.viz.lowering import animate_conv, animate_conv_transpose, draw_conv_matrix, draw_matmul

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    spec = explanation.spec
    paths = []
    small = reduced_geometry(spec, max_entries=None) if math.prod(spec.out_spatial) <= _MAX_MATMUL_ROWS else \
        reduced_geometry(spec, max_side=int(_MAX_MATMUL_ROWS ** (1 / spec.nsp)))
    x, w = _example(small)
    view = as_matmul(x, w, **_kwargs(small))
    prod = view.product()
    groups = [(view.lhs[i], view.rhs[i], prod[i]) for i in range(small.groups)]
    cols, kern, out = ([t[j] for t in groups] for j in range(3)) if small.groups > 1 else groups[0]
    title = (f"{explanation.summary_line()}: {view.lhs.shape[1]} x {view.lhs.shape[2]} @ "
             f"{view.rhs.shape[1]} x {view.rhs.shape[2]} per group\n{_note(spec, small).strip(' ()')}").strip()
    paths.append(draw_matmul(cols, kern, out, folder / "matmul.png", title=title,
                             highlight_row=view.lhs.shape[1] // 2))
    small = reduced_geometry(spec, max_entries=_MAX_MATRIX)
    x, w = _example(small)
    C = conv_matrix(x.shape, w, **_kwargs(small))
    paths.append(draw_conv_matrix(C, x.shape, (1, small.out_channels, *small.out_spatial), folder / "conv_matrix.png",
                                  title=f"Toeplitz matrix C: vec(conv(x)) = C @ vec(x)\n{_note(spec, small).strip(' ()')}".strip()))
    if spec.nsp <= 2:
        small = reduced_geometry(spec, max_side=_MAX_ANIMATED_SIDE)
        paths.append(animate_conv(small, folder / "conv.gif"))
        paths.append(_animate_adjoint(small, folder / "conv_transpose.gif", animate_conv_transpose))
    return paths


def _kwargs(spec: ConvSpec) -> dict:
    return dict(stride=spec.stride, padding=spec.padding, dilation=spec.dilation, groups=spec.groups,
                padding_mode=spec.padding_mode)


def _animate_adjoint(spec: ConvSpec, path: Path, animate) -> Path:
    """The transposed convolution that maps the conv's output back to its input's size."""
    op = tuple(n + lo + hi - ((o - 1) * s + d * (k - 1) + 1) for n, (lo, hi), o, s, d, k in zip(
        spec.in_spatial, spec.padding, spec.out_spatial, spec.stride, spec.dilation, spec.kernel_spatial))
    return animate(spec.out_spatial, spec.kernel_spatial, spec.stride, spec.padding, spec.dilation, op,
                   spec.out_channels, spec.in_channels, spec.groups, path)
