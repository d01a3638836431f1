"""NumPy backend: the reference definitions (conv, conv_transpose, unfold, fold), computed in the input's dtype."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from convbridge import reference
from convbridge._types import ArrayLike
from convbridge.arrays import to_numpy
from convbridge.dispatch import Impl, register
from convbridge.errors import ArgumentError, ConvBridgeError
from convbridge.plan import Plan
from convbridge.precision import Precision
from convbridge.spec import ConvSpec, ConvTransposeSpec, FoldSpec, Spec, UnfoldSpec

NAME = "numpy"

__all__ = ["NAME", "place", "to_numpy", "unsupported", "precision", "transpose", "take", "compile"]


def place(arrays: Sequence[ArrayLike | None], device: object) -> tuple[np.ndarray | None, ...]:
    """Any arrays (numpy, jax, torch, lists) as NumPy arrays on the host, dtypes unchanged."""
    if device not in (None, "cpu"):
        raise ArgumentError(f"the numpy backend computes on the host; device must be None or 'cpu', got {device!r}")
    return tuple(None if a is None else to_numpy(a) for a in arrays)


def unsupported(spec: Spec, plan: Plan) -> ConvBridgeError | None:
    """NumPy computes every float dtype it has."""
    return None


def precision(spec: Spec, plan: Plan, x: np.ndarray) -> Precision:
    how = "NumPy einsum" if spec.op in ("conv", "conv_transpose") else "NumPy"
    return Precision.of(str(spec.dtype), f"{spec.dtype} (IEEE), {how}")


def transpose(a: np.ndarray, axes: Sequence[int]) -> np.ndarray:
    return a.transpose(tuple(axes))


def take(a: np.ndarray, index: np.ndarray, axis: int) -> np.ndarray:
    return np.take(a, index, axis=axis)


def compile(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """NumPy runs eagerly: ``fn`` itself."""
    return fn


def conv(spec: ConvSpec, plan: Plan, x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    return reference.conv(x, w, b, spec, dtype=x.dtype)


def conv_transpose(spec: ConvTransposeSpec, plan: Plan, x: np.ndarray, w: np.ndarray,
                   b: np.ndarray | None) -> np.ndarray:
    return reference.conv_transpose(x, w, b, spec, dtype=x.dtype)


def unfold(spec: UnfoldSpec, plan: Plan, x: np.ndarray) -> np.ndarray:
    return reference.unfold(x, spec, dtype=x.dtype)


def fold(spec: FoldSpec, plan: Plan, cols: np.ndarray) -> np.ndarray:
    return reference.fold(cols, spec, dtype=cols.dtype)


for _fn in (conv, conv_transpose, unfold, fold):
    register(Impl(_fn.__name__, NAME, "native", _fn, summary="the NumPy reference definition, in the input dtype"))
