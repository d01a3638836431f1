"""Reference transposed convolution, from the definition: a scatter-add of kernel-weighted input.

It never calls :func:`convbridge.reference.conv`: every input pixel scatters
``x[c_in, i] * W[c_in, o, j]`` into output position ``i * stride + j * dilation``
of the full output, which is then cropped by the spec's ``(lo, hi - output_padding)``
(negative crops add zero rows), and the bias is added.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from convbridge.reference import _core, _gemm
from convbridge.reference._core import blocks, compute_dtype, crop, index, letters, scatter_taps
from convbridge.reference._gemm import GEMM_DTYPES
from convbridge.reference.conv import from_canonical, to_canonical
from convbridge.spec import ConvTransposeSpec

__all__ = ["conv_transpose", "conv_transpose_canonical", "torch_kernel"]


def torch_kernel(w: Any, spec: ConvTransposeSpec) -> np.ndarray:
    """User-layout kernel -> torch's ``(C_in, C_out / groups, *k)``, unflipped whatever the convention."""
    perm = spec.layout.rhs_perm
    wt = np.asarray(w).transpose((perm[1], perm[0], *perm[2:]))
    return np.flip(wt, axis=tuple(range(2, wt.ndim))) if spec.kernel_flipped else wt


def conv_transpose(x: Any, w: Any, b: Any, spec: ConvTransposeSpec, *, dtype: Any = None) -> np.ndarray:
    """Transposed convolution of user-layout arrays as ``spec`` says, computing in ``dtype``.

    Args:
        x, w, b: input, kernel (in the spec's kernel layout and convention) and optional bias.
        spec: the validated spec.
        dtype: computation and result dtype: None for the reference's float64, complex128 when an array is
            complex (:func:`~convbridge.reference._core.compute_dtype`). No conjugation.

    Returns:
        The output in the user's output layout.

    Shape:
        out = (n - 1) * stride - lo - hi + dilation * (k - 1) + output_padding + 1 per spatial dim.

    >>> from convbridge.spec import make_conv_transpose_spec
    >>> spec = make_conv_transpose_spec((1, 1, 2), (1, 1, 3), stride=2)
    >>> conv_transpose(np.array([[[1.0, 10.0]]]), np.array([[[1.0, 2.0, 3.0]]]), None, spec).tolist()
    [[[1.0, 2.0, 13.0, 20.0, 30.0]]]
    """
    dtype = compute_dtype(dtype, x, w, b)
    xc = to_canonical(np.asarray(x, dtype=dtype), spec)
    wt = torch_kernel(np.asarray(w, dtype=dtype), spec)
    bc = None if b is None else np.asarray(b, dtype=dtype)
    return from_canonical(conv_transpose_canonical(xc, wt, bc, spec), spec)


def conv_transpose_canonical(xc: np.ndarray, wt: np.ndarray, bc: np.ndarray | None,
                             spec: ConvTransposeSpec) -> np.ndarray:
    """y_full[n, g(c)*Og + o, i*s + j*d] += x[n, c, i] W[c, o, j]; then crop and add the bias.

    float64, float32 and the complex dtypes form every tap's contribution at once, one matrix product per block
    of images (BLAS);
    float16 contracts tap by tap with einsum (rounded between the per-tap adds).
    """
    g, nsp = spec.groups, spec.nsp
    P, _ = letters(nsp)
    xg = xc.reshape(xc.shape[0], g, spec.in_channels // g, *spec.in_spatial)
    wg = wt.reshape(g, spec.in_channels // g, spec.out_channels // g, *spec.kernel_spatial)
    full = spec.full_spatial
    buf = np.zeros((xc.shape[0], g, spec.out_channels // g, *full), dtype=np.result_type(xc, wt))
    if buf.dtype in GEMM_DTYPES:
        _scatter_products(buf, xg, wg, spec)
    else:
        scatter_taps(buf, spec.axes, spec.in_spatial,
                     lambda tap: np.einsum(f"ngc{P},gco->ngo{P}", xg, wg[index(Ellipsis, *tap)]))
    y = crop(buf.reshape(xc.shape[0], spec.out_channels, *full), spec.crops)
    if bc is not None:
        y = y + bc.reshape(-1, *([1] * nsp))
    return y


def _scatter_products(buf: np.ndarray, xg: np.ndarray, wg: np.ndarray, spec: ConvTransposeSpec) -> None:
    """``buf[n, g, o, i*s + j*d] += sum_c W[g, c, o, j] x[n, g, c, i]``: for a block of images, every tap's
    contribution in one product ``(G, O/g * taps, C/g) @ (G, C/g, n * pixels)``, then one strided add per tap."""
    n_img, g, cg = xg.shape[:3]
    og, taps, pixels = wg.shape[2], math.prod(spec.kernel_spatial), math.prod(spec.in_spatial)
    wm = np.moveaxis(wg.reshape(g, cg, og * taps), 1, 2).astype(buf.dtype)  # (G, O/g * taps, C/g)
    budget = max(_gemm.CACHE_ELEMENTS, min(_core.BLOCK_ELEMENTS, g * og * taps * pixels))
    for images, _ in blocks(n_img, 1, g * og * taps * pixels, budget):
        n = images.stop - images.start
        cols = np.moveaxis(xg[images], 0, 2).reshape(g, cg, n * pixels)
        z = np.matmul(wm, cols).reshape(g, og, *spec.kernel_spatial, n, *spec.in_spatial)
        scatter_taps(buf[images], spec.axes, spec.in_spatial, _tap_of(z))


def _tap_of(z: np.ndarray) -> Callable[[tuple[int, ...]], np.ndarray]:
    """``tap -> z[:, :, *tap]`` with the images first: ``(n, G, O/g, *pixels)``."""
    return lambda tap: np.moveaxis(z[index(slice(None), slice(None), *tap)], 2, 0)
