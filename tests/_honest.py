"""Honest fast convolutions for the bound tests: every step computed in the target precision.

- :func:`fft_conv`: per-channel full linear convolution by FFT (scipy.fft, which computes float32 input
  in single precision; numpy.fft would compute in float64), product, channel sum in the frequency
  domain, inverse, strided samples.
- :func:`winograd_conv`: F(m, 3) / F(m x m, 3 x 3) with tiles from origin 0 (zero past the input),
  transforms as plain matrix products in ``dtype``, channel sum in the transformed domain.

Arrays are canonical: ``x (N, C_in, *spatial)`` already padded, ``w (C_out, C_in // groups, *k)``.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.fft
from numpy.lib.stride_tricks import sliding_window_view

from convbridge.bounds import winograd_matrices

_COMPLEX = {np.dtype(np.float32): np.complex64, np.dtype(np.float64): np.complex128}


def _dilate(w: np.ndarray, dilation: tuple[int, ...]) -> np.ndarray:
    """Insert d - 1 zeros between taps along each spatial dim."""
    shape = w.shape[:2] + tuple(d * k - d + 1 for k, d in zip(w.shape[2:], dilation))
    out = np.zeros(shape, w.dtype)
    out[(Ellipsis, *(slice(None, None, d) for d in dilation))] = w
    return out


def fft_conv(x, w, *, groups=1, stride=1, dilation=1, dtype=np.float32):
    """Cross-correlation by FFT in ``dtype`` (float32: complex64 transforms)."""
    x, w = np.asarray(x, dtype), np.asarray(w, dtype)
    rank = x.ndim - 2
    stride = (stride,) * rank if isinstance(stride, int) else tuple(stride)
    dilation = (dilation,) * rank if isinstance(dilation, int) else tuple(dilation)
    wd = _dilate(w, dilation)[(Ellipsis, *([slice(None, None, -1)] * rank))]  # flipped: correlation
    span, n = wd.shape[2:], x.shape[2:]
    full = tuple(a + b - 1 for a, b in zip(n, span))
    axes = tuple(range(2, 2 + rank))
    xf = scipy.fft.fftn(x.astype(_COMPLEX[np.dtype(dtype)]), s=full, axes=axes)
    wf = scipy.fft.fftn(wd.astype(_COMPLEX[np.dtype(dtype)]), s=full, axes=axes)
    nb, cg, o = x.shape[0], w.shape[1], w.shape[0]
    xg = xf.reshape(nb, groups, cg, -1)
    wg = wf.reshape(groups, o // groups, cg, -1)
    zf = np.zeros((nb, groups, o // groups, xg.shape[-1]), xf.dtype)
    for c in range(cg):  # channel sum in the frequency domain, one rounding per addition
        zf += xg[:, :, None, c] * wg[None, :, :, c]
    z = scipy.fft.ifftn(zf.reshape(nb, o, *full), axes=axes).real
    take = tuple(slice(s_ - 1, s_ - 1 + nn - s_ + 1, st) for s_, nn, st in zip(span, n, stride))
    return np.ascontiguousarray(z[(Ellipsis, *take)]).astype(dtype)


def winograd_conv(x, w, *, m, dtype=np.float32):
    """Winograd F(m, 3) (rank 1) or F(m x m, 3 x 3) (rank 2), stride 1, every step in ``dtype``."""
    x, w = np.asarray(x, dtype), np.asarray(w, dtype)
    at, g, bt = (v.astype(dtype) for v in winograd_matrices(m))
    rank, tile = x.ndim - 2, m + 2
    out = tuple(n - 2 for n in x.shape[2:])
    tiles = tuple(math.ceil(n / m) for n in out)
    d = np.pad(x, [(0, 0), (0, 0)] + [(0, t * m + 2 - n) for t, n in zip(tiles, x.shape[2:])])
    for i in range(rank):  # (N, C, *tiles, *tile): tiles every m rows
        d = sliding_window_view(d, tile, axis=2 + i)
        d = d[(slice(None),) * (2 + i) + (slice(None, None, m),)]
    v, u = d, w
    for i in range(rank):  # B^T d B and G g G^T, one axis at a time
        v = np.moveaxis(np.tensordot(v, bt, axes=([2 + rank + i], [1])), -1, 2 + rank + i)
        u = np.moveaxis(np.tensordot(u, g, axes=([2 + i], [1])), -1, 2 + i)
    # elementwise product and channel sum: y[n, o, *t, *l] = sum_c u[o, c, *l] v[n, c, *t, *l]
    letters_t, letters_l = "tuv"[:rank], "abc"[:rank]
    mm = np.einsum(f"nc{letters_t}{letters_l},oc{letters_l}->no{letters_t}{letters_l}", v, u).astype(dtype)
    for i in range(rank):
        mm = np.moveaxis(np.tensordot(mm, at, axes=([2 + rank + i], [1])), -1, 2 + rank + i)
    # (N, O, *tiles, *m) -> (N, O, *out)
    perm = [0, 1] + [k for i in range(rank) for k in (2 + i, 2 + rank + i)]
    y = mm.transpose(perm).reshape(mm.shape[:2] + tuple(t * m for t in tiles))
    return np.ascontiguousarray(y[(Ellipsis, *(slice(0, n) for n in out))])
