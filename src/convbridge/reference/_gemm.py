"""The reference convolution as matrix products: im2col in blocks, one batched GEMM over the groups per block.

The definition is the same as the window-view einsum's,

    y[n, g, o, p] = sum_{c, t} W[g, o, c, t] cols[g, (c, t), (n, p)],
    cols[g, (c, t), (n, p)] = pad(x)[n, g, c, p s + t d],

but each block of ``cols`` is copied once into a contiguous matrix and contracted by ``np.matmul``, which NumPy
hands to BLAS (dgemm / sgemm / zgemm / cgemm) for float64, float32, complex128 and complex64: another summation
order, each product and sum still rounded once, so the definition's error bound (gamma_K) holds unchanged.

- With every stride 1, a column is one flat position of the padded plane (``p . pitch``): for each channel and
  tap, a block's columns are one contiguous run of the input, copied at memory speed; the columns that fall in
  the padding of the trailing axes are computed and dropped (a few percent more products).
- With a stride, the columns are the strided windows themselves.
- A 1x1 kernel with stride 1 and no padding needs no copy: the input is the column matrix.
- Few outputs per group and many taps (depthwise, large kernels): :mod:`convbridge.reference._split` moves the
  kernel's first axis to the output side of the product.

Blocks hold about :data:`CACHE_ELEMENTS` (:data:`SMALL_ELEMENTS` for few outputs per group) elements of ``cols``
(at least twice the kernel matrix), never more than
:data:`~convbridge.reference._core.BLOCK_ELEMENTS`. The gauge ``|x| conv |w|`` reuses each block: its absolute
value, in place, times ``|W|``.

float16 has no BLAS; the reference keeps its einsum there (rounded between per-tap adds, blocks and bias).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from numpy.lib.stride_tricks import as_strided

from convbridge.reference._core import blocks, index, window_view
from convbridge.reference._split import contract_split, use_split
from convbridge.spec import ConvSpec

__all__ = ["GEMM_DTYPES", "CACHE_ELEMENTS", "contract"]

#: Dtypes whose matrix products NumPy computes with BLAS (complex: zgemm / cgemm, no conjugation).
GEMM_DTYPES = (np.dtype(np.float64), np.dtype(np.float32), np.dtype(np.complex128), np.dtype(np.complex64))
#: Target size of one block of the column matrix (16 MiB of float64): few enough BLAS calls that threads pay off.
CACHE_ELEMENTS = 2**21
#: ... and with fewer than 16 outputs per group, where copying the columns costs more than their product: 2 MiB,
#: so that the product reads them from cache.
SMALL_ELEMENTS = 2**18


def contract(xpad: np.ndarray, wc: np.ndarray, spec: ConvSpec,
             gauge: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """``(N, C, *S_pad)`` x ``(O, C / g, *k)`` -> ``(N, O, *out)``, and ``|x| conv |w|`` when ``gauge``.

    Args:
        xpad: the padded input in canonical order, one of :data:`GEMM_DTYPES`.
        wc: the kernel in canonical order.
        spec: the spec (groups, strides, dilations, output sizes).
        gauge: also return the contraction of the absolute values (the verdict's gauge, without the bias); real
            dtypes only (a complex gauge reads ``|Re| + |Im|``: ``conv_and_gauge_canonical`` contracts it apart).

    Returns:
        ``(y, gauge or None)``, both C-contiguous ``(N, O, *out)`` in the result type of the two arrays.
    """
    n_img, g = xpad.shape[0], spec.groups
    cg, og, taps = spec.in_channels // g, spec.out_channels // g, math.prod(spec.kernel_spatial)
    dtype = np.result_type(xpad, wc)
    wm = np.ascontiguousarray(wc.reshape(g, og, cg * taps), dtype=dtype)
    wabs = np.abs(wm) if gauge else None
    xg = xpad.astype(dtype, copy=False).reshape(n_img, g, cg, *xpad.shape[2:])
    shape = (n_img, spec.out_channels, *spec.out_spatial)
    if taps == 1 and set(spec.stride) == {1} and not any(lo or hi for lo, hi in spec.padding):
        flat = xg.reshape(n_img, g, cg, -1)  # a 1x1 kernel: the input is the column matrix
        y = np.matmul(wm, flat).reshape(shape)
        return y, None if wabs is None else np.matmul(wabs, np.abs(flat)).reshape(shape)
    budget = max(CACHE_ELEMENTS if og >= 16 else SMALL_ELEMENTS, 2 * wm.size)
    if use_split(spec):  # few outputs per group, many taps: the kernel's first axis joins the outputs
        return contract_split(xg, wc, spec, budget, gauge)
    take, width = _columns(xg, spec)
    y = np.empty((n_img, g, og, *spec.out_spatial), dtype)
    ga = np.empty_like(y) if gauge else None
    buffer = np.empty(0, dtype)  # one buffer for every block: fresh pages would cost more than the copy
    for images, rows in blocks(n_img, spec.out_spatial[0], spec.in_channels * taps * math.prod(width), budget):
        src = take(images, rows)
        if buffer.size < src.size:
            buffer = np.empty(src.size, dtype)
        cols = buffer[: src.size].reshape(src.shape)
        np.copyto(cols, src)
        mat = cols.reshape(g, cg * taps, -1)
        _place(y, np.matmul(wm, mat), images, rows, width)
        if ga is not None and wabs is not None:
            _place(ga, np.matmul(wabs, np.abs(mat, out=mat)), images, rows, width)
    return y.reshape(shape), None if ga is None else ga.reshape(shape)


def _columns(xg: np.ndarray, spec: ConvSpec) -> tuple[Callable[[slice, slice], np.ndarray], tuple[int, ...]]:
    """``take(images, rows)``: a view ``(G, Cg, *k, n, ...)`` of a block of the column matrix, and the trailing sizes
    its columns run over per output row: ``out[1:]`` for strided windows; with every stride 1 the padded sizes,
    where a column is a flat position of the padded plane, one contiguous run per channel and tap, and the columns
    past ``out[1:]`` are dropped after the product."""
    nsp = spec.nsp
    if set(spec.stride) != {1}:
        v = window_view(xg, spec.axes)  # (N, G, Cg, *out, *k)
        v = v.transpose(1, 2, *range(3 + nsp, 3 + 2 * nsp), 0, *range(3, 3 + nsp))  # (G, Cg, *k, N, *out)
        lead = (slice(None),) * (2 + nsp)
        return lambda images, rows: v[lead + (images, rows)], spec.out_spatial[1:]
    padded = xg.shape[3:]
    slack = np.zeros((*xg.shape[:3], padded[0] + 1, *padded[1:]), xg.dtype)  # a zero row: the last run stays inside
    slack[:, :, :, : padded[0]] = xg
    item = slack.itemsize
    pitches = [math.prod(padded[i + 1:]) for i in range(nsp)]
    n_img, g, cg = slack.shape[:3]
    plane = slack[0, 0, 0].size
    strides = (cg * plane * item, plane * item, *(a.dilation * p * item for a, p in zip(spec.axes, pitches)),
               g * cg * plane * item, item)
    shape = (g, cg, *spec.kernel_spatial, n_img, spec.out_spatial[0] * pitches[0])
    runs = as_strided(slack, shape, strides, writeable=False)
    return lambda images, rows: runs[..., images, rows.start * pitches[0]: rows.stop * pitches[0]], padded[1:]


def _place(y: np.ndarray, prod: np.ndarray, images: slice, rows: slice, width: tuple[int, ...]) -> None:
    """Write a block's product ``(G, O/g, n * rows * prod(width))`` into ``y[images, :, :, rows]`` of
    ``(N, G, O/g, *out)``, dropping the columns past ``out[1:]``."""
    block = y[images, :, :, rows]
    n, g, og = block.shape[:3]
    full = prod.reshape(g, og, n, block.shape[3], *width)
    block[...] = np.moveaxis(full[index(Ellipsis, *(slice(0, o) for o in block.shape[4:]))], 2, 0)
