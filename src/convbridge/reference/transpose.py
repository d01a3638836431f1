"""Reference transposed convolution, from the definition: a scatter-add of kernel-weighted input.

It never calls :func:`convbridge.reference.conv`: every input pixel scatters
``x[c_in, i] * W[c_in, o, j]`` into output position ``i * stride + j * dilation``
of the full output, which is then cropped by the spec's ``(lo, hi - output_padding)``
(negative crops add zero rows), and the bias is added.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from convbridge.reference._core import crop, index, letters, scatter_taps
from convbridge.reference.conv import from_canonical, to_canonical
from convbridge.spec import ConvTransposeSpec

__all__ = ["conv_transpose", "conv_transpose_canonical", "torch_kernel"]


def torch_kernel(w: Any, spec: ConvTransposeSpec) -> np.ndarray:
    """User-layout kernel -> torch's ``(C_in, C_out / groups, *k)``, unflipped whatever the convention."""
    perm = spec.layout.rhs_perm
    wt = np.asarray(w).transpose((perm[1], perm[0], *perm[2:]))
    return np.flip(wt, axis=tuple(range(2, wt.ndim))) if spec.kernel_flipped else wt


def conv_transpose(x: Any, w: Any, b: Any, spec: ConvTransposeSpec, *, dtype: Any = np.float64) -> np.ndarray:
    """Transposed convolution of user-layout arrays as ``spec`` says, computing in ``dtype``.

    Args:
        x, w, b: input, kernel (in the spec's kernel layout and convention) and optional bias.
        spec: the validated spec.
        dtype: computation and result dtype (float64 for the reference).

    Returns:
        The output in the user's output layout.

    Shape:
        out = (n - 1) * stride - lo - hi + dilation * (k - 1) + output_padding + 1 per spatial dim.

    >>> from convbridge.spec import make_conv_transpose_spec
    >>> spec = make_conv_transpose_spec((1, 1, 2), (1, 1, 3), stride=2)
    >>> conv_transpose(np.array([[[1.0, 10.0]]]), np.array([[[1.0, 2.0, 3.0]]]), None, spec).tolist()
    [[[1.0, 2.0, 13.0, 20.0, 30.0]]]
    """
    xc = to_canonical(np.asarray(x, dtype=dtype), spec)
    wt = torch_kernel(np.asarray(w, dtype=dtype), spec)
    bc = None if b is None else np.asarray(b, dtype=dtype)
    return from_canonical(conv_transpose_canonical(xc, wt, bc, spec), spec)


def conv_transpose_canonical(xc: np.ndarray, wt: np.ndarray, bc: np.ndarray | None,
                             spec: ConvTransposeSpec) -> np.ndarray:
    """y_full[n, g(c)*Og + o, i*s + j*d] += x[n, c, i] W[c, o, j]; then crop and add the bias."""
    g, nsp = spec.groups, spec.nsp
    P, _ = letters(nsp)
    xg = xc.reshape(xc.shape[0], g, spec.in_channels // g, *spec.in_spatial)
    wg = wt.reshape(g, spec.in_channels // g, spec.out_channels // g, *spec.kernel_spatial)
    full = spec.full_spatial
    buf = np.zeros((xc.shape[0], g, spec.out_channels // g, *full), dtype=np.result_type(xc, wt))
    scatter_taps(buf, spec.axes, spec.in_spatial,
                 lambda tap: np.einsum(f"ngc{P},gco->ngo{P}", xg, wg[index(Ellipsis, *tap)]))
    y = crop(buf.reshape(xc.shape[0], spec.out_channels, *full), spec.crops)
    if bc is not None:
        y = y + bc.reshape(-1, *([1] * nsp))
    return y
