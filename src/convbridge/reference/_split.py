"""Few outputs per group, many taps (depthwise and large kernels): the kernel's first axis moves to the output side
of the matrix product, so that the column matrix holds only the other taps.

With every stride 1 a tap splits into an outer part i (the taps of the first spatial axis; in 1-d, blocks of k2
consecutive taps, k2 a divisor of k near its square root) and an inner part j (the rest), and its offset into the
flattened padded input is ``off_out(i) + off_in(j)``. Then

    Z[g, (o, i), q] = sum_{c, j} W[g, o, c, i, j] x[g, c, q + off_in(j)]      (a GEMM per block of positions q)
    y[g, o, q]      = sum_i Z[g, (o, i), q + off_out(i)]                        (k0 shifted adds)

the definition summed in another order: every product is formed once and rounded once, so the error bound of the
definition holds. The column matrix shrinks by the first axis' taps (49 -> 7 for a 7x7 depthwise kernel), and the
product has k0 rows per output instead of one, which BLAS runs well where one row per output (a matrix-vector
product) would be bound by memory.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import as_strided

from convbridge.reference._core import blocks
from convbridge.spec import ConvAxis, ConvSpec

__all__ = ["use_split", "contract_split", "SPLIT_OUTPUTS", "SPLIT_TAPS"]

#: The split serves groups whose (input channels x output channels) is below this (a matrix-vector-like product) ...
SPLIT_OUTPUTS = 8
#: ... and kernels with at least this many taps.
SPLIT_TAPS = 16


def _inner_1d(kernel: int) -> int:
    """k2: the divisor of a 1-d kernel's size nearest its square root (k = k1 k2, no tap added)."""
    return min((d for d in range(1, kernel + 1) if kernel % d == 0), key=lambda d: (abs(d - math.sqrt(kernel)), d))


def use_split(spec: ConvSpec) -> bool:
    """Whether :func:`contract_split` serves ``spec``: every stride 1, few channels per group (depthwise, a single
    channel), many taps that split into at least 4 x 4 (a 1-d kernel of prime size does not split)."""
    k = spec.kernel_spatial
    per_group = (spec.in_channels // spec.groups) * (spec.out_channels // spec.groups)
    if set(spec.stride) != {1} or per_group >= SPLIT_OUTPUTS or math.prod(k) < SPLIT_TAPS:
        return False
    if spec.nsp == 1:
        k2 = _inner_1d(k[0])
        return min(k2, k[0] // k2) >= 4
    return k[0] >= 3


def contract_split(xg: np.ndarray, wc: np.ndarray, spec: ConvSpec, budget: int,
                   gauge: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """``(N, G, C / g, *S_pad)`` x ``(O, C / g, *k)`` -> ``(N, O, *out)`` (and the gauge), as the module says.

    Blocks of positions hold about ``budget`` elements of the column matrix.
    """
    n_img, g, cg = xg.shape[:3]
    og, padded = spec.out_channels // g, xg.shape[3:]
    pitch = math.prod(padded[1:])  # flat elements per row of the first axis
    outer, inner = _taps(spec, padded)  # each a kernel whose dilation is a step of the flattened input
    taps_in = math.prod(a.kernel for a in inner)
    w2 = wc.reshape(g, og, cg, outer.kernel, taps_in).transpose(0, 1, 3, 2, 4)
    w2 = np.ascontiguousarray(w2.reshape(g, og * outer.kernel, cg * taps_in), dtype=xg.dtype)
    positions = spec.out_spatial[0] * pitch  # flat output positions per image (columns past out[1:] dropped)
    rows = -(-(positions + outer.span - 1) // pitch)  # rows of Z: every position some output reads
    reach = sum(a.span - 1 for a in inner)  # the farthest inner tap, from a run's start
    flat = np.zeros((n_img, g, cg, max(rows * pitch + reach, math.prod(padded))), xg.dtype)
    flat[..., : math.prod(padded)] = xg.reshape(n_img, g, cg, -1)
    item, length = flat.itemsize, flat.shape[-1]
    runs = as_strided(flat, (g, cg, *(a.kernel for a in inner), n_img, rows * pitch),
                      (cg * length * item, length * item, *(a.dilation * item for a in inner),
                       g * cg * length * item, item), writeable=False)
    weights = [w2] + ([np.abs(w2)] if gauge else [])
    acc = [np.zeros((n_img, g, og, positions), xg.dtype) for _ in weights]
    buffer = np.empty(0, xg.dtype)
    for images, block in blocks(n_img, rows, g * cg * taps_in * pitch, budget):
        src = runs[..., images, block.start * pitch: block.stop * pitch]
        if buffer.size < src.size:
            buffer = np.empty(src.size, xg.dtype)
        cols = buffer[: src.size].reshape(src.shape)
        np.copyto(cols, src)
        mat = cols.reshape(g, cg * taps_in, -1)
        for i, (wm, out) in enumerate(zip(weights, acc)):
            if i:
                np.abs(mat, out=mat)
            z = np.matmul(wm, mat).reshape(g, og, outer.kernel, images.stop - images.start, -1)
            _shift_add(out, z, images, block.start * pitch, outer.dilation)
    results = [_crop(a, spec, padded) for a in acc]
    return results[0], results[1] if gauge else None


def _taps(spec: ConvSpec, padded: tuple[int, ...]) -> tuple[ConvAxis, tuple[ConvAxis, ...]]:
    """The outer taps and the inner tap axes, as kernels over the flattened padded input (a dilation is the step
    between two taps there): 2-d and up, the first axis' taps are outer and the others inner; 1-d, k = k1 k2 taps
    are k1 outer ones k2 d apart and k2 inner ones d apart."""
    if spec.nsp == 1:
        a = spec.axes[0]
        k2 = _inner_1d(a.kernel)
        return ConvAxis(1, a.kernel // k2, dilation=k2 * a.dilation), (ConvAxis(1, k2, dilation=a.dilation),)
    pitches = [math.prod(padded[i + 1:]) for i in range(spec.nsp)]
    flat = [ConvAxis(1, a.kernel, dilation=a.dilation * p) for a, p in zip(spec.axes, pitches)]
    return flat[0], tuple(flat[1:])


def _shift_add(acc: np.ndarray, z: np.ndarray, images: slice, first: int, step: int) -> None:
    """``acc[images, :, :, q] += z[:, :, i, :, q + i * step - first]`` for every outer tap i and position q."""
    width, positions = z.shape[-1], acc.shape[-1]
    for i in range(z.shape[2]):
        start = first - i * step  # the output position of z's first column
        lo, hi = max(start, 0), min(start + width, positions)
        if lo < hi:
            acc[images, :, :, lo:hi] += np.moveaxis(z[:, :, i, :, lo - start: hi - start], 2, 0)


def _crop(acc: np.ndarray, spec: ConvSpec, padded: tuple[int, ...]) -> np.ndarray:
    """``(N, G, O/g, out[0] * pitch)`` -> C-contiguous ``(N, O, *out)``, dropping the columns past ``out[1:]``."""
    n_img, g, og = acc.shape[:3]
    full = acc.reshape(n_img, g * og, spec.out_spatial[0], *padded[1:])
    keep = full[(slice(None), slice(None), slice(None), *(slice(0, o) for o in spec.out_spatial[1:]))]
    return np.ascontiguousarray(keep)
