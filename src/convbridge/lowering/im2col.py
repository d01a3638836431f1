"""Convolution as one matrix product per group: im2col (unfold) times the kernel matrix.

For a convolution, ``cols`` holds, per group, one row per (image, output pixel) and
one column per (input channel of the group, kernel tap): ``(N * out_pixels, C_in/g *
prod(k))``; ``kernel`` is ``(C_in/g * prod(k), C_out/g)``; their product reshapes
into the output. For a transposed convolution (col2im) the roles turn around: the
input, one row per (image, input pixel), times the kernel matrix ``(C_in/g,
C_out/g * prod(k))`` gives columns that ``fold`` sums into the output. Every step
is a backend op (the backend's own unfold/fold, reshape, transpose, ``@``), so the
matrices are numpy, jax or torch arrays like the input, and autodiff flows through them.

This module also registers the lowering as ``algorithm="matmul"`` for conv on every
backend, so that ``cb.conv(x, w, algorithm="matmul")`` runs it.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import Any, cast

import numpy as np

from convbridge import backends, costs, dispatch, memory
from convbridge._types import Array, ArrayLike
from convbridge.errors import ArgumentError, ArgumentTypeError, ConvBridgeError, brief, checked_signature
from convbridge.memory import matmul_bytes
from convbridge.ops import build, split_plan_keywords
from convbridge.plan import Plan, make_plan
from convbridge.precision import lax_precision
from convbridge.spec import ConvSpec, ConvTransposeSpec, Spec, col2im_spec, im2col_spec, inverse

__all__ = ["MatmulView", "as_matmul", "lower"]


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
        plan: the plan it runs under (its backend owns lhs and rhs).
        bias: the bias (a backend array) or None.
    """

    op: str
    lhs: Array
    rhs: Array
    spec: ConvSpec | ConvTransposeSpec
    plan: Plan
    bias: Array | None = None

    def __repr__(self) -> str:
        def arr(a: Array) -> str:
            return "None" if a is None else f"<{type(a).__module__.partition('.')[0]} {tuple(a.shape)} {a.dtype}>"

        return (f"MatmulView(op={self.op!r}, lhs={arr(self.lhs)}, rhs={arr(self.rhs)}, bias={arr(self.bias)}, "
                f"spec={self.spec.describe()!r}, plan={self.plan.describe()!r})")

    def product(self) -> Array:
        """``lhs @ rhs`` for every group: ``(groups, rows, cols)``, under the plan's precision policy (JAX:
        ``lax.Precision``; torch: the TF32 switches, on a GPU)."""
        if self.plan.backend == "jax":
            import jax.numpy as jnp
            from jax import lax

            return jnp.matmul(self.lhs, self.rhs, precision=lax.Precision[lax_precision(self.plan.precision)])
        if self.plan.backend == "torch":
            from convbridge.backends import torch_backend

            with torch_backend.precision_scope(self.plan, self.lhs):
                return self.lhs @ self.rhs
        with np.errstate(over="ignore", invalid="ignore"):  # float32 overflow is inf, as in every framework
            return self.lhs @ self.rhs

    def to_output(self, prod: Array) -> Array:
        """Turn the product into the op's result in the user's output layout (bias added)."""
        s, be = self.spec, backends.get(self.plan.backend)
        n, g = s.batch, s.groups
        if isinstance(s, ConvSpec):  # rows: (image, output pixel); columns: output channels of the group
            rows, cols = math.prod(s.out_spatial), s.out_channels // g
        else:  # rows: (image, input pixel); columns: (output channel of the group, tap)
            rows, cols = math.prod(s.in_spatial), s.out_channels // g * math.prod(s.kernel_spatial)
        grouped = be.transpose(prod.reshape(g, n, rows, cols), (1, 0, 3, 2))
        quiet = np.errstate(over="ignore", invalid="ignore") if self.plan.backend == "numpy" else nullcontext()
        with quiet:  # NumPy: a sum past the dtype's range is inf, unwarned (torch.compile cannot trace errstate)
            if isinstance(s, ConvSpec):
                y = grouped.reshape(n, s.out_channels, *s.out_spatial)
            else:
                fspec = col2im_spec(s)
                fold = dispatch.find(fspec, replace(self.plan, algorithm="native"))
                y = dispatch.execute(fold, fspec, self.plan, (grouped.reshape(n, g * cols, rows),))
            if self.bias is not None:
                y = y + self.bias.reshape(-1, *([1] * s.nsp))
        y = be.transpose(y, inverse(s.layout.out_perm))
        return y if s.layout.batched else y[0]

    def __call__(self) -> Array:
        """The op's result, computed through the matrix product."""
        return self.to_output(self.product())


def lower(spec: ConvSpec | ConvTransposeSpec, plan: Plan, x: Array, w: Array, b: Array | None) -> MatmulView:
    """The matrix view of ``spec`` for the backend's arrays; ``x`` has its batch axis.

    Raises:
        ConvBridgeError: a transposed convolution whose output_padding exceeds its high-side padding (col2im
            cannot add rows that no block touches), or one in the jax convention.
    """
    be = backends.get(plan.backend)
    lay = spec.layout
    xc = be.transpose(x, lay.lhs_perm)
    perm = lay.rhs_perm  # (O, I, *spatial); for conv_transpose torch's order is (I, O, *spatial)
    if isinstance(spec, ConvSpec):
        wc = be.transpose(w, perm)
        return MatmulView("conv", _im2col(spec, plan, xc), _conv_kernel_matrix(spec, wc, be), spec, plan, b)
    problem = _col2im_supports(spec, plan)
    if problem is not None:
        raise problem
    wc = be.transpose(w, (perm[1], perm[0], *perm[2:]))
    g, n, cg = spec.groups, spec.batch, spec.in_channels // spec.groups
    pixels = math.prod(spec.in_spatial)
    lhs = be.transpose(xc.reshape(n, g, cg, pixels), (1, 0, 3, 2)).reshape(g, n * pixels, cg)
    rhs = wc.reshape(g, cg, spec.out_channels // g * math.prod(spec.kernel_spatial))
    return MatmulView("conv_transpose", lhs, rhs, spec, plan, b)


def _im2col(spec: ConvSpec, plan: Plan, xc: Array) -> Array:
    """``(groups, N * out_pixels, C_in/g * prod(k))`` from the canonical input, with the backend's own unfold."""
    be = backends.get(plan.backend)
    moded = spec.padding_mode != "zeros"
    if moded:
        from convbridge.backends._common import pad_by_mode

        xc, _ = pad_by_mode(spec, xc, be.take, range(2, 2 + spec.nsp))
    uspec = im2col_spec(spec, mode_padded=moded)
    unfold = dispatch.find(uspec, replace(plan, algorithm="native"))
    cols = dispatch.execute(unfold, uspec, plan, (xc,))
    g, n = spec.groups, spec.batch
    inner, blocks = spec.in_channels // g * math.prod(spec.kernel_spatial), math.prod(spec.out_spatial)
    cols = cols.reshape(n, g, inner, blocks)
    return be.transpose(cols, (1, 0, 3, 2)).reshape(g, n * blocks, inner)


def _conv_kernel_matrix(spec: ConvSpec, wc: Array, be: Any) -> Array:
    g = spec.groups
    inner = spec.in_channels // g * math.prod(spec.kernel_spatial)
    return be.transpose(wc.reshape(g, spec.out_channels // g, inner), (0, 2, 1))


@checked_signature
def as_matmul(x: ArrayLike, kernel: ArrayLike, bias: ArrayLike | None = None, *, op: str = "conv",
              backend: str | None = None, **op_kwargs: Any) -> MatmulView:
    """Lower ``conv`` (im2col) or ``conv_transpose`` (col2im) to one matrix product per group.

    Args:
        x, kernel, bias: as for ``cb.conv`` / ``cb.conv_transpose`` (any framework).
        op: ``"conv"`` or ``"conv_transpose"`` (torch convention).
        backend: ``"numpy" | "jax" | "torch"``; ``None`` infers it from ``x``.
        **op_kwargs: the op's keyword arguments (and ``precision``/``device``, as for ``cb.conv``).

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
        raise ArgumentError(f"as_matmul lowers 'conv' or 'conv_transpose', not {brief(op)}")
    kwargs, plan_kwargs = split_plan_keywords(op_kwargs)
    if "algorithm" in plan_kwargs:
        raise ArgumentTypeError("as_matmul is the matmul lowering itself; it takes no algorithm= (for the result "
                                "alone, use cb.conv(..., algorithm='matmul'))")
    if op == "conv_transpose" and kwargs.get("convention", "torch") != "torch":
        raise ArgumentError("as_matmul lowers the torch convention; map a jax-convention call with "
                            "convbridge.transpose.jax_to_torch first")
    spec = cast(ConvSpec | ConvTransposeSpec, build(op, x, kernel, bias, kwargs))
    plan = make_plan(backend, x, algorithm="matmul", **plan_kwargs)
    problem = backends.get(plan.backend).unsupported(spec, plan)
    if problem is not None:
        raise problem
    memory.check(matmul_bytes(spec), "as_matmul", "use a smaller batch or geometry")
    xb, wb, bb = dispatch.place(plan, (x, kernel, bias))
    return lower(spec, plan, xb if spec.layout.batched else xb[None], wb, bb)


def _matmul(spec: Spec, plan: Plan, x: Array, w: Array, b: Array | None) -> Array:
    """im2col (col2im) and one matrix product per group: the backend's unfold (fold), reshapes and ``@``."""
    return lower(cast(ConvSpec | ConvTransposeSpec, spec), plan, x, w, b)()


def _col2im_supports(spec: Spec, plan: Plan) -> ConvBridgeError | None:
    """col2im states torch-convention transposed convolutions whose output_padding adds no untouched rows."""
    s = cast(ConvTransposeSpec, spec)
    if s.convention != "torch":
        return ArgumentError("algorithm='matmul' lowers the torch convention; state a jax-convention call in torch's "
                             "with convbridge.transpose.jax_to_torch, or use algorithm='native'")
    if any(c < 0 for pair in s.crops for c in pair):
        return ArgumentError(f"col2im cannot express output_padding {s.output_padding} beyond the high-side padding "
                             f"{tuple(hi for _, hi in s.padding)}: no block touches those rows; use algorithm='native'")
    return None


for _name in backends.NAMES:
    dispatch.register(dispatch.Impl("conv", _name, "matmul", _matmul, composite=True, memory=matmul_bytes,
                                    cost=costs.matmul, summary="im2col (the backend's unfold) and one matrix product per group"))
    dispatch.register(dispatch.Impl("conv_transpose", _name, "matmul", _matmul, _col2im_supports, composite=True,
                                    memory=matmul_bytes, cost=costs.matmul,
                                    summary="one matrix product per group, then col2im (the backend's fold)"))
