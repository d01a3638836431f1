"""NumPy backend: the reference definitions (conv, conv_transpose, unfold, fold), computed in the input's dtype."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from convbridge import costs, reference
from convbridge._types import ArrayLike
from convbridge.arrays import to_host, to_numpy
from convbridge.backends._common import float32_accumulation
from convbridge.dispatch import Impl, register
from convbridge.errors import ArgumentError, ConvBridgeError, DTypeError
from convbridge.memory import reference_bytes
from convbridge.plan import Plan
from convbridge.precision import Precision
from convbridge.spec import ConvSpec, ConvTransposeSpec, FoldSpec, Spec, UnfoldSpec

NAME = "numpy"

__all__ = ["NAME", "place", "to_numpy", "unsupported", "precision", "transpose", "take", "compile", "astype"]


def place(arrays: Sequence[ArrayLike | None], device: object) -> tuple[np.ndarray | None, ...]:
    """Any arrays (numpy, jax, torch, lists) as NumPy arrays on the host, dtypes unchanged (bfloat16: ml_dtypes')."""
    on_host = device in (None, "cpu") or "cpu" in (getattr(device, "type", None), getattr(device, "platform", None))
    if not on_host:
        raise ArgumentError(f"the numpy backend computes on the host; device must be None or 'cpu', got {device!r}")
    return tuple(None if a is None else to_host(a) for a in arrays)


def unsupported(spec: Spec, plan: Plan) -> ConvBridgeError | None:
    """NumPy computes every float and complex dtype it has natively; bfloat16 (ml_dtypes) only through the native
    algorithm, which computes it in float32 and rounds the result."""
    if spec.dtype == "bfloat16" and plan.algorithm != "native":
        return DTypeError(f"NumPy has no bfloat16 arithmetic, so the {plan.algorithm!r} algorithm cannot run it on "
                          "the numpy backend; use algorithm='native' (float32 arithmetic, rounded to bfloat16), "
                          "backend='torch' or 'jax'")
    return None


def _compute_dtype(a: np.ndarray) -> np.dtype:
    """The dtype the reference computes in: the array's, or float32 for bfloat16 (NumPy has no bf16 arithmetic)."""
    return np.dtype(np.float32) if a.dtype.name == "bfloat16" else a.dtype


def precision(spec: Spec, plan: Plan, x: np.ndarray) -> Precision:
    """The input's dtype (float16 is rounded to between steps: per-tap adds, blocks, bias); bfloat16 is computed
    in float32 and each output rounded once, except by unfold, which only copies."""
    how = "NumPy" if spec.op not in ("conv", "conv_transpose") else \
        "NumPy einsum" if spec.dtype == "float16" else "NumPy matmul (BLAS)"
    if spec.dtype == "bfloat16" and spec.op != "unfold":
        return float32_accumulation(spec, how)
    return Precision.of(str(spec.dtype), f"{spec.dtype} (IEEE), {how}")


def transpose(a: np.ndarray, axes: Sequence[int]) -> np.ndarray:
    return a.transpose(tuple(axes))


def take(a: np.ndarray, index: np.ndarray, axis: int) -> np.ndarray:
    return np.take(a, index, axis=axis)


def compile(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """NumPy runs eagerly: ``fn`` itself."""
    return fn


def conv(spec: ConvSpec, plan: Plan, x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    return reference.conv(x, w, b, spec, dtype=_compute_dtype(x)).astype(x.dtype, copy=False)


def conv_transpose(spec: ConvTransposeSpec, plan: Plan, x: np.ndarray, w: np.ndarray,
                   b: np.ndarray | None) -> np.ndarray:
    return reference.conv_transpose(x, w, b, spec, dtype=_compute_dtype(x)).astype(x.dtype, copy=False)


def unfold(spec: UnfoldSpec, plan: Plan, x: np.ndarray) -> np.ndarray:
    return reference.unfold(x, spec, dtype=x.dtype)


def fold(spec: FoldSpec, plan: Plan, cols: np.ndarray) -> np.ndarray:
    return reference.fold(cols, spec, dtype=_compute_dtype(cols)).astype(cols.dtype, copy=False)


def _as_a_framework(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """Overflow in the input's dtype gives infinities silently, as in torch and JAX (the verdict judges them)."""
    @functools.wraps(fn)
    def run(*args: Any) -> np.ndarray:
        with np.errstate(over="ignore", invalid="ignore"):
            return fn(*args)

    return run


for _fn in (conv, conv_transpose, unfold, fold):
    register(Impl(_fn.__name__, NAME, "native", _as_a_framework(_fn), memory=reference_bytes,
                  summary="the NumPy reference definition, in the input dtype", cost=costs.native))


def astype(a: np.ndarray, dtype: str) -> np.ndarray:
    return np.asarray(a).astype(dtype)
