"""Reference convolution and its vector-Jacobian product, in canonical order."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from convbridge.reference._core import letters as _letters
from convbridge.reference._core import blocks, compute_dtype, index, magnitude, scatter_taps, window_view
from convbridge.reference._gemm import GEMM_DTYPES, contract
from convbridge.spec import NUMPY_PAD_MODES, ConvSpec, SpatialSpec, inverse

__all__ = ["conv", "conv_and_gauge", "conv_canonical", "conv_and_gauge_canonical", "conv_vjp_canonical",
           "to_canonical", "from_canonical"]


def to_canonical(x: Any, spec: SpatialSpec) -> np.ndarray:
    """User-layout input -> ``(N, C, *spatial)`` (adds N for unbatched input)."""
    x = np.asarray(x)
    if not spec.layout.batched:
        x = x[None]
    return x.transpose(spec.layout.lhs_perm)


def from_canonical(y: np.ndarray, spec: SpatialSpec) -> np.ndarray:
    """``(N, C, *spatial)`` -> user output layout (drops N for unbatched input)."""
    y = y.transpose(inverse(spec.layout.out_perm))
    return y if spec.layout.batched else y[0]


def conv(x: Any, w: Any, b: Any, spec: ConvSpec, *, dtype: Any = None) -> np.ndarray:
    """Convolve user-layout arrays as ``spec`` says, computing in ``dtype``.

    Args:
        x, w, b: input, kernel and optional bias (any array-likes convertible by numpy).
        spec: the validated spec.
        dtype: computation and result dtype: None for the reference's float64, complex128 when an array is
            complex (a real ``dtype`` with complex arrays computes in the complex dtype of its precision:
            :func:`~convbridge.reference._core.compute_dtype`). No conjugation: ``sum x w``, as torch and lax.

    Returns:
        The output in the user's output layout.

    >>> from convbridge.spec import make_conv_spec
    >>> x, w = np.array([[[1j, 2.0, 1 - 1j]]]), np.array([[[1j, 1.0]]])  # 1j * 1j + 2, not 1j * conj(1j) + 2
    >>> conv(x, w, None, make_conv_spec((1, 1, 3), (1, 1, 2))).tolist()
    [[[(1+0j), (1+1j)]]]
    """
    dtype = compute_dtype(dtype, x, w, b)
    xc = to_canonical(np.asarray(x, dtype=dtype), spec)
    wc = np.asarray(w, dtype=dtype).transpose(spec.layout.rhs_perm)
    bc = None if b is None else np.asarray(b, dtype=dtype)
    return from_canonical(conv_canonical(xc, wc, bc, spec), spec)


def _pad(xc: np.ndarray, spec: ConvSpec) -> np.ndarray:
    widths = [(0, 0), (0, 0), *spec.padding]
    mode: Any = NUMPY_PAD_MODES[spec.padding_mode]
    return np.pad(xc, widths, mode=mode)


def _windows(xpad: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """(N, G, Cg, *S_pad) -> (N, G, Cg, *out, *kernel) strided, dilated windows (a view)."""
    return window_view(xpad, spec.axes)


def _grouped(xc: np.ndarray, wc: np.ndarray, spec: ConvSpec) -> tuple[np.ndarray, np.ndarray]:
    g = spec.groups
    xg = xc.reshape(xc.shape[0], g, xc.shape[1] // g, *xc.shape[2:])
    wg = wc.reshape(g, wc.shape[0] // g, *wc.shape[1:])
    return xg, wg


def conv_canonical(xc: np.ndarray, wc: np.ndarray, bc: np.ndarray | None, spec: ConvSpec) -> np.ndarray:
    """y[n, o, p] = sum_{c, k} pad(x)[n, g(o)*Cg + c, p*s + k*d] w[o, c, k] + b[o].

    float64, float32, complex128 and complex64 contract with BLAS, one matrix product per block of the column
    matrix (:func:`convbridge.reference._gemm.contract`); float16 with einsum over the window view. Either runs in
    blocks of images and output rows (:func:`blocks`), so that its copy of the windows never exceeds
    ``BLOCK_ELEMENTS`` elements whatever the batch and kernel.
    """
    xpad = _pad(xc, spec)
    if xpad.shape[0] == 0:  # an empty batch: an empty result (BLAS blocks need one image)
        y = np.zeros((0, spec.out_channels, *spec.out_spatial), np.result_type(xpad, wc))
    elif np.result_type(xpad, wc) in GEMM_DTYPES:
        y = contract(xpad, wc, spec)[0]
    else:
        y = _einsum(xpad, wc, spec)
    return _add_bias(y, bc, spec)


def conv_and_gauge_canonical(xc: np.ndarray, wc: np.ndarray, bc: np.ndarray | None,
                             spec: ConvSpec) -> tuple[np.ndarray, np.ndarray]:
    """``conv_canonical`` of the arrays and of their absolute values (the verdict's gauge), in one pass.

    The gauge equals ``conv_canonical(|x|, |w|, |b|)``: padding commutes with ``abs`` in every mode. For complex
    arrays ``|.|`` is :func:`~convbridge.reference._core.magnitude` (``|Re| + |Im|``, real), in a second pass.
    """
    if any(a is not None and np.iscomplexobj(a) for a in (xc, wc, bc)):  # two passes: |Re| + |Im| is no BLAS op
        real = np.finfo(np.result_type(*(a for a in (xc, wc, bc) if a is not None))).dtype  # complex128 -> float64
        mx, mw, mb = (None if a is None else np.asarray(magnitude(a), real) for a in (xc, wc, bc))
        assert mx is not None and mw is not None
        return conv_canonical(xc, wc, bc, spec), conv_canonical(mx, mw, mb, spec)
    xpad = _pad(xc, spec)
    if xpad.shape[0] == 0:
        empty = np.zeros((0, spec.out_channels, *spec.out_spatial), np.result_type(xpad, wc))
        return empty, empty.copy()
    y, gauge = contract(xpad, wc, spec, gauge=True) if np.result_type(xpad, wc) in GEMM_DTYPES else (None, None)
    if y is None or gauge is None:  # float16: no BLAS
        y, gauge = _einsum(xpad, wc, spec), _einsum(np.abs(xpad), np.abs(wc), spec)
    return _add_bias(y, bc, spec), _add_bias(gauge, None if bc is None else np.abs(bc), spec)


def conv_and_gauge(x: Any, w: Any, b: Any, spec: ConvSpec, *,
                   dtype: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """The reference and its gauge ``conv(|x|, |w|) + |b|``, in the user's output layout, computed in ``dtype``
    (None: float64 for the verdict).

    Complex inputs (any of the three): the reference is complex, computed in complex128 (``dtype`` None or
    float64; complex64 for float32), with no conjugation of the kernel; the gauge is real (float64, or float32),
    ``conv(|Re x| + |Im x|, |Re w| + |Im w|) + |Re b| + |Im b|``. It bounds the real and the imaginary part of
    every product (``|Re(x w)|, |Im(x w)| <= (|Re x| + |Im x|)(|Re w| + |Im w|)``), so a sum of ``K`` complex
    products computed by 4 real multiplies (or torch's 3-multiply Gauss trick, whose ``(Re x + Im x)(Re w +
    Im w)`` it bounds too) errs by ``gamma_K``-multiples of it per component.

    >>> from convbridge.spec import make_conv_spec
    >>> y, g = conv_and_gauge(np.array([[[1.0, -2.0, 3.0]]]), np.array([[[1.0, 1.0]]]), None,
    ...                       make_conv_spec((1, 1, 3), (1, 1, 2)))
    >>> y.tolist(), g.tolist()
    ([[[-1.0, 1.0]]], [[[3.0, 5.0]]])
    >>> y, g = conv_and_gauge(np.array([[[1j, -2.0, 3.0]]]), np.array([[[1 - 1j, 1.0]]]), np.array([2j]),
    ...                       make_conv_spec((1, 1, 3), (1, 1, 2), b_shape=(1,)))
    >>> y.dtype.name, y.tolist(), g.dtype.name, g.tolist()
    ('complex128', [[[(-1+3j), (1+4j)]]], 'float64', [[[6.0, 9.0]]])
    """
    dtype = compute_dtype(dtype, x, w, b)
    xc = to_canonical(np.asarray(x, dtype=dtype), spec)
    wc = np.asarray(w, dtype=dtype).transpose(spec.layout.rhs_perm)
    bc = None if b is None else np.asarray(b, dtype=dtype)
    y, gauge = conv_and_gauge_canonical(xc, wc, bc, spec)
    return from_canonical(y, spec), from_canonical(gauge, spec)


def _add_bias(y: np.ndarray, bc: np.ndarray | None, spec: ConvSpec) -> np.ndarray:
    """``y + b`` over the channel axis (in place: ``y`` is the contraction's own array)."""
    if bc is None:
        return y
    if np.result_type(y, bc) != y.dtype:
        return y + bc.reshape(-1, *([1] * spec.nsp))
    y += bc.reshape(-1, *([1] * spec.nsp))
    return y


def _einsum(xpad: np.ndarray, wc: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """The contraction as einsum over the window view, in blocks (float16: no BLAS)."""
    xg, wg = _grouped(xpad, wc, spec)
    P, K = _letters(spec.nsp)
    windows = _windows(xg, spec)
    out = spec.out_spatial
    y = np.empty((xg.shape[0], spec.groups, spec.out_channels // spec.groups, *out), np.result_type(xg, wg))
    per_row = spec.in_channels * math.prod(spec.kernel_spatial) * math.prod(out[1:])
    for images, rows in blocks(xg.shape[0], out[0], per_row):
        y[images, :, :, rows] = np.einsum(f"ngc{P}{K},goc{K}->ngo{P}", windows[images, :, :, rows], wg,
                                          optimize=True)
    return y.reshape(y.shape[0], spec.out_channels, *out)


def conv_vjp_canonical(t: np.ndarray, xc: np.ndarray, wc: np.ndarray,
                       spec: ConvSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of ``sum(conv(x, w, b) * t)`` with respect to x, w and b (canonical order).

    The input gradient is the transposed convolution: a scatter-add of
    kernel-weighted ``t`` into the padded input, then the adjoint of the padding.
    """
    g, nsp = spec.groups, spec.nsp
    P, K = _letters(nsp)
    tg = t.reshape(t.shape[0], g, spec.out_channels // g, *spec.out_spatial)
    xpad = _pad(xc, spec)
    xg, wg = _grouped(xpad, wc, spec)
    dw = np.einsum(f"ngc{P}{K},ngo{P}->goc{K}", _windows(xg, spec), tg, optimize=True).reshape(wc.shape)
    db = t.sum(axis=(0, *range(2, 2 + nsp)))
    dpad = np.zeros(xg.shape, dtype=np.result_type(t, wc))
    scatter_taps(dpad, spec.axes, spec.out_spatial,
                 lambda tap: np.einsum(f"ngo{P},goc->ngc{P}", tg, wg[index(Ellipsis, *tap)]))
    dx = _unpad(dpad.reshape(xpad.shape), spec)
    return dx, dw, db


def _unpad(dpad: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """Adjoint of the padding: add each padded position's gradient to its source."""
    mode: Any = NUMPY_PAD_MODES[spec.padding_mode]
    out = dpad
    for axis, a in enumerate(spec.axes, start=2):
        n, lo, hi = a.size, a.lo, a.hi
        fill = {"constant_values": -1} if mode == "constant" else {}
        idx = np.pad(np.arange(n), (lo, hi), mode=mode, **fill)
        keep = idx >= 0
        moved = np.moveaxis(out, axis, 0)
        acc = np.zeros((n, *moved.shape[1:]), dtype=out.dtype)
        np.add.at(acc, idx[keep], moved[keep])
        out = np.moveaxis(acc, 0, axis)
    return out
