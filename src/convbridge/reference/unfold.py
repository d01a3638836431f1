"""Reference unfold (im2col) from a window view, and fold (col2im) as its scatter-add adjoint."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from convbridge.reference._core import compute_dtype, crop, index, scatter_taps, window_view
from convbridge.reference.conv import to_canonical
from convbridge.spec import FoldSpec, UnfoldSpec

__all__ = ["unfold", "unfold_canonical", "fold", "fold_canonical"]


def unfold(x: Any, spec: UnfoldSpec, *, dtype: Any = None) -> np.ndarray:
    """Unfold a user-layout input into ``(N, C * prod(k), L)`` (torch's ordering), in ``dtype`` (None: float64,
    complex128 for a complex input).

    Shape:
        (N, C, *n) -> (N, C * prod(k), L), L = prod(floor((n + lo + hi - d * (k - 1) - 1) / s) + 1).

    >>> from convbridge.spec import make_unfold_spec
    >>> unfold(np.arange(4.0).reshape(1, 1, 4), make_unfold_spec((1, 1, 4), (2,), stride=2)).tolist()
    [[[0.0, 2.0], [1.0, 3.0]]]
    """
    xc = to_canonical(np.asarray(x, dtype=compute_dtype(dtype, x)), spec)
    cols = unfold_canonical(xc, spec)
    return cols if spec.layout.batched else cols[0]


def unfold_canonical(xc: np.ndarray, spec: UnfoldSpec) -> np.ndarray:
    """cols[n, c * K + t, l] = pad(x)[n, c, p(l) * s + t * d] (t, l row-major multi-indices)."""
    nsp = spec.nsp
    xpad = np.pad(xc, [(0, 0), (0, 0), *spec.padding])
    v = window_view(xpad, spec.axes)
    v = v.transpose(0, 1, *range(2 + nsp, 2 + 2 * nsp), *range(2, 2 + nsp))  # (N, C, *k, *blocks)
    return v.reshape(xc.shape[0], spec.channels * math.prod(spec.kernel_spatial), math.prod(spec.out_spatial))


def fold(cols: Any, spec: FoldSpec, *, dtype: Any = None) -> np.ndarray:
    """Sum the blocks of ``cols`` back into ``(N, C, *output_size)``, in ``dtype`` (None: float64, complex128 for
    complex ``cols``): the adjoint of unfold.

    Shape:
        (N, C * prod(k), L) -> (N, C, *output_size).

    >>> from convbridge.spec import make_fold_spec
    >>> fold(np.ones((1, 2, 3)), make_fold_spec((1, 2, 3), (4,), (2,))).tolist()
    [[[1.0, 2.0, 2.0, 1.0]]]
    """
    cc = np.asarray(cols, dtype=compute_dtype(dtype, cols))
    y = fold_canonical(cc if spec.layout.batched else cc[None], spec)
    return y if spec.layout.batched else y[0]


def fold_canonical(cc: np.ndarray, spec: FoldSpec) -> np.ndarray:
    """y_pad[n, c, p(l) * s + t * d] += cols[n, c * K + t, l]; then crop the padding."""
    blocks = cc.reshape(cc.shape[0], spec.channels, *spec.kernel_spatial, *spec.blocks)
    padded = [a.padded for a in spec.axes]
    buf = np.zeros((cc.shape[0], spec.channels, *padded), dtype=cc.dtype)
    scatter_taps(buf, spec.axes, spec.blocks,
                 lambda tap: blocks[index(slice(None), slice(None), *tap)])
    return crop(buf, spec.padding)
