"""The explicit (doubly-block) Toeplitz matrix of a convolution, built from index arithmetic.

``conv_matrix(x_shape, w)`` returns C with ``conv(x).ravel() == C @ x.ravel()``
(bias excluded: the map is affine, y = C x + b), each array raveled in its own
layout. ``C.T`` is the adjoint: with zero padding, ``C.T @ y.ravel()`` is
``conv_transpose(y, w)`` with the same stride, padding, dilation and groups. (For a complex
kernel ``C.T`` is the plain transpose, not the conjugate one: convolutions conjugate nothing.)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from convbridge import memory
from convbridge._types import ArrayLike, Shape
from convbridge.arrays import dtype_name, to_numpy
from convbridge.errors import checked_signature
from convbridge.memory import footprint
from convbridge.ops import get_op
from convbridge.spec import ConvSpec, as_shape, gather_indices, make_conv_spec

__all__ = ["conv_matrix", "conv_matrix_of", "matrix_bytes"]


def matrix_bytes(spec: ConvSpec, itemsize: int, dense: bool) -> int:
    """What building C needs: every (row, column, value) triple (int64, int64, value) held three times over
    (the entries, COO and CSR), plus the dense array when asked for one."""
    f = footprint(spec)
    nonzeros = spec.batch * math.prod(spec.out_spatial) * f.kernel  # every output element reads Cg x prod(k) inputs
    return 3 * nonzeros * (16 + itemsize) + (f.outputs * f.inputs * itemsize if dense else 0)


@checked_signature
def conv_matrix(x_shape: Shape, kernel: ArrayLike, *, dense: bool = False, **conv_kwargs: Any) -> Any:
    """The matrix C of ``conv(x, kernel, **conv_kwargs)`` (bias excluded) for inputs of ``x_shape``.

    Args:
        x_shape: the input's shape in its layout (the batch axis gives a block-diagonal C).
        kernel: the kernel array (any framework), in the kernel layout.
        dense: return a dense NumPy array instead of a ``scipy.sparse.csr_array``.
        **conv_kwargs: stride, padding, dilation, groups, padding_mode, layout, as for ``cb.conv``.

    Returns:
        C of shape ``(prod(out_shape), prod(x_shape))``, in the kernel's dtype; rows follow
        ``conv(x).ravel()`` and columns ``x.ravel()``. scipy.sparse has no 16-bit floats, so a sparse C of a
        float16 or bfloat16 kernel is float32 (the same values: entries are kernel values, or sums of them where
        a padding mode reads one input twice).

    Raises:
        ConvBridgeError: invalid arguments, or a matrix too large to build (> 2**28 entries).

    Shape:
        (prod(out_shape), prod(x_shape)).

    >>> import numpy as np
    >>> C = conv_matrix((1, 1, 4), np.array([[[1.0, 2.0]]]), dense=True)
    >>> C.tolist()
    [[1.0, 2.0, 0.0, 0.0], [0.0, 1.0, 2.0, 0.0], [0.0, 0.0, 1.0, 2.0]]
    """
    get_op("conv").check_keywords(conv_kwargs)  # the convolution's arguments only (no bias, no plan keywords)
    w = to_numpy(kernel, "kernel")
    spec = make_conv_spec(as_shape(x_shape, "input"), w.shape, dtypes=(dtype_name(w), dtype_name(w)), **conv_kwargs)
    return conv_matrix_of(spec, w, dense=dense)


def conv_matrix_of(spec: ConvSpec, w: np.ndarray, *, dense: bool = False) -> Any:
    """:func:`conv_matrix` for a validated spec and its kernel (a NumPy array in the spec's kernel layout)."""
    x_shape = spec.layout.user_in_shape((spec.batch, spec.in_channels, *spec.in_spatial))
    n_rows, n_cols = math.prod(spec.out_shape), math.prod(x_shape)
    memory.check(matrix_bytes(spec, w.dtype.itemsize, dense), f"conv_matrix ({n_rows} x {n_cols}, "
                 f"{'dense' if dense else 'sparse'})", "it is meant for small inputs: use cb.as_matmul for large ones")
    rows, cols, vals = _entries(spec, w.transpose(spec.layout.rhs_perm))
    rows = _user_order(spec, spec.canonical_out_shape, spec.layout.out_perm, spec.out_shape)[rows]
    cols = _user_order(spec, (spec.batch, spec.in_channels, *spec.in_spatial), spec.layout.lhs_perm,
                       x_shape)[cols]
    if dense:
        out = np.zeros((n_rows, n_cols), dtype=w.dtype)
        np.add.at(out, (rows, cols), vals)
        return out
    from scipy import sparse

    if vals.dtype.itemsize < 4:  # float16 / bfloat16: float32 holds them exactly
        vals = vals.astype(np.float32)
    return sparse.csr_array(sparse.coo_array((vals, (rows, cols)), shape=(n_rows, n_cols)))


def _user_order(spec: ConvSpec, canonical_shape: Shape, perm: Shape, user_shape: Shape) -> np.ndarray:
    """For each canonical flat index, the flat index of the same element in the user's layout."""
    batched_shape = user_shape if spec.layout.batched else (1, *user_shape)
    return np.arange(math.prod(batched_shape)).reshape(batched_shape).transpose(perm).ravel()


def _entries(spec: ConvSpec, wc: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, col, value) triples of C in canonical order, taps outside a zero padding dropped."""
    nsp, g = spec.nsp, spec.groups
    cg, og = spec.in_channels // g, spec.out_channels // g
    out_pos = np.indices(spec.out_spatial).reshape(nsp, -1)  # (nsp, P)
    taps = np.indices(spec.kernel_spatial).reshape(nsp, -1)  # (nsp, T)
    src = np.zeros((out_pos.shape[1], taps.shape[1]), dtype=np.int64)
    valid = np.ones(src.shape, dtype=bool)
    for i, a in enumerate(spec.axes):
        n, lo, hi = a.size, a.lo, a.hi
        coord = out_pos[i][:, None] * a.stride + taps[i][None, :] * a.dilation  # in the padded input
        if spec.padding_mode == "zeros":
            idx = coord - lo
            valid &= (idx >= 0) & (idx < n)
        else:
            idx = gather_indices(n, lo, hi, spec.padding_mode)[coord]
        src = src * n + np.clip(idx, 0, n - 1)
    p_idx, t_idx = np.nonzero(valid)
    spatial_in, spatial_out = math.prod(spec.in_spatial), math.prod(spec.out_spatial)
    n_, o_, c_ = np.meshgrid(np.arange(spec.batch), np.arange(spec.out_channels), np.arange(cg), indexing="ij")
    n_, o_, c_ = (a.ravel()[:, None] for a in (n_, o_, c_))
    c_in = (o_ // og) * cg + c_
    rows = ((n_ * spec.out_channels + o_) * spatial_out + p_idx[None, :]).ravel()
    cols = ((n_ * spec.in_channels + c_in) * spatial_in + src[p_idx, t_idx][None, :]).ravel()
    vals = wc.reshape(spec.out_channels, cg, -1)[o_, c_, t_idx[None, :]].ravel()
    return rows, cols, vals
