"""Convolution as one matrix product per group: im2col (unfold) times the kernel matrix.

For a convolution, ``cols`` holds, per group, one row per (image, output pixel) and
one column per (input channel of the group, kernel tap): ``(N * out_pixels, C_in/g *
prod(k))``; ``kernel`` is ``(C_in/g * prod(k), C_out/g)``; their product reshapes
into the output. For a transposed convolution (col2im) the roles turn around: the
input, one row per (image, input pixel), times the kernel matrix ``(C_in/g,
C_out/g * prod(k))`` gives columns that ``fold`` sums into the output. Every step
is a backend op (``cb.unfold``/``cb.fold``, reshape, permute, ``@``), so the matrices
are numpy, jax or torch arrays like the input, and autodiff flows through them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from convbridge import api
from convbridge.errors import ArgumentError
from convbridge.layout import inverse
from convbridge.padding import gather_indices

__all__ = ["MatmulView", "as_matmul"]


def _permute(a, perm):
    return a.permute(*perm) if hasattr(a, "permute") else a.transpose(perm)


def _take(be, a, idx: np.ndarray, axis: int):
    """Gather ``idx`` along ``axis`` with the backend's own index array (frameworks stay in backends/)."""
    return a[(slice(None),) * axis + (be.asarray(idx),)]


@dataclass(frozen=True)
class MatmulView:
    """A convolution as ``lhs @ rhs`` per group, plus what turns the product back into the result.

    Attributes:
        op: ``"conv"`` (im2col) or ``"conv_transpose"`` (col2im).
        lhs: ``(groups, rows, inner)``: conv: the im2col matrix, rows = N * output pixels,
            inner = C_in/g * prod(k); conv_transpose: the input, rows = N * input pixels, inner = C_in/g.
        rhs: ``(groups, inner, cols)``: conv: the kernel matrix, cols = C_out/g; conv_transpose:
            the kernel matrix, cols = C_out/g * prod(k).
        spec: the validated spec of the op.
        bias: the bias (backend array) or None.
    """

    op: str
    lhs: object
    rhs: object
    spec: object
    bias: object = None

    def product(self):
        """``lhs @ rhs`` for every group: ``(groups, rows, cols)``."""
        return self.lhs @ self.rhs

    def to_output(self, prod):
        """Turn the product into the op's result in the user's output layout (bias added)."""
        s, g = self.spec, self.spec.groups
        n, rows = s.batch, prod.shape[1] // s.batch
        if self.op == "conv":
            y = _permute(prod.reshape(g, n, rows, -1), (1, 0, 3, 2)).reshape(n, s.out_channels, *s.out_spatial)
        else:
            cols = _permute(prod.reshape(g, n, rows, -1), (1, 0, 3, 2)).reshape(n, -1, rows)
            y = api.fold(cols, s.out_spatial, s.kernel_spatial, dilation=s.dilation, stride=s.stride,
                         padding=s.crops)
        if self.bias is not None:
            y = y + self.bias.reshape(-1, *([1] * s.nsp))
        y = _permute(y, inverse(s.layout.out_perm))
        return y if s.layout.batched else y[0]

    def __call__(self):
        """The op's result, computed through the matrix product."""
        return self.to_output(self.product())


def as_matmul(x, kernel, bias=None, *, op: str = "conv", backend=None, **op_kwargs) -> MatmulView:
    """Lower ``conv`` (im2col) or ``conv_transpose`` (col2im) to one matrix product per group.

    Args:
        x, kernel, bias: as for ``cb.conv`` / ``cb.conv_transpose`` (any framework).
        op: ``"conv"`` or ``"conv_transpose"`` (torch convention).
        backend: ``"numpy" | "jax" | "torch"``; ``None`` infers it from ``x``.
        **op_kwargs: the op's keyword arguments.

    Returns:
        A :class:`MatmulView`; ``view()`` equals the op, ``view.lhs`` / ``view.rhs`` are the matrices.

    Raises:
        ConvBridgeError: invalid arguments, or a transposed convolution whose output_padding exceeds
            its high-side padding (col2im cannot add rows that no block touches).

    Shape:
        conv: (g, N*prod(out), C_in/g*prod(k)) @ (g, C_in/g*prod(k), C_out/g);
        conv_transpose: (g, N*prod(in), C_in/g) @ (g, C_in/g, C_out/g*prod(k)), then fold.

    >>> import numpy as np
    >>> v = as_matmul(np.ones((1, 3, 32, 32), np.float32), np.ones((4, 3, 5, 5), np.float32))
    >>> v.lhs.shape, v.rhs.shape
    ((1, 784, 75), (1, 75, 4))
    """
    if op not in ("conv", "conv_transpose"):
        raise ArgumentError(f"as_matmul lowers 'conv' or 'conv_transpose', not {op!r}")
    if op == "conv_transpose" and op_kwargs.get("convention", "torch") != "torch":
        raise ArgumentError("as_matmul lowers the torch convention; map a jax-convention call with "
                            "convbridge.transpose.jax_to_torch first")
    entry, spec, arrays = api._prepare(op, x, kernel, bias, op_kwargs)
    be = api._backends.get(api._backend_for(backend, x))
    be.check(spec)
    xb, wb, bb = (be.asarray(a) for a in arrays)
    lay = spec.layout
    xc = _permute(xb if lay.batched else xb[None], lay.lhs_perm)
    perm = lay.rhs_perm  # (O, I, *spatial); for conv_transpose torch's order is (I, O, *spatial)
    wc = _permute(wb, perm if op == "conv" else (perm[1], perm[0], *perm[2:]))
    if op == "conv":
        return MatmulView(op, _im2col(be, spec, xc), _conv_kernel_matrix(spec, wc), spec, bb)
    if any(c < 0 for _, c in spec.crops):
        raise ArgumentError(f"col2im cannot express output_padding {spec.output_padding} beyond the high-side "
                            f"padding {tuple(hi for _, hi in spec.padding)}; use cb.conv_transpose")
    g, n = spec.groups, spec.batch
    lhs = _permute(xc.reshape(n, g, spec.in_channels // g, -1), (1, 0, 3, 2)).reshape(g, -1, spec.in_channels // g)
    rhs = wc.reshape(g, spec.in_channels // g, -1)
    return MatmulView(op, lhs, rhs, spec, bb)


def _im2col(be, spec, xc):
    pads = spec.padding
    if spec.padding_mode != "zeros":
        for i, (n, (lo, hi)) in enumerate(zip(spec.in_spatial, spec.padding)):
            xc = _take(be, xc, gather_indices(n, lo, hi, spec.padding_mode), 2 + i)
        pads = ((0, 0),) * spec.nsp
    cols = api.unfold(xc, spec.kernel_spatial, dilation=spec.dilation, padding=pads, stride=spec.stride)
    g, n = spec.groups, spec.batch
    taps = math.prod(spec.kernel_spatial)
    cols = cols.reshape(n, g, spec.in_channels // g * taps, -1)
    return _permute(cols, (1, 0, 3, 2)).reshape(g, -1, spec.in_channels // g * taps)


def _conv_kernel_matrix(spec, wc):
    g = spec.groups
    wm = wc.reshape(g, spec.out_channels // g, -1)
    return _permute(wm, (0, 2, 1))
