"""Backends: lazy imports, inference from array types, availability, and the interface each one implements.

A backend module maps a validated, batched spec to its framework's calls. It registers
its implementations with :func:`convbridge.dispatch.register` when imported (one per op
and algorithm) and provides the small :class:`Backend` interface the dispatcher and the
framework-free algorithms (such as the im2col lowering) use. Inferring a backend from an
array's type imports nothing.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Sequence
from typing import Protocol, cast

import numpy as np

from convbridge._tracing import tracing
from convbridge._types import Array, ArrayLike
from convbridge.arrays import framework_of
from convbridge.errors import ArgumentError, BackendUnavailable, ConvBridgeError
from convbridge.precision import Precision

__all__ = ["NAMES", "Backend", "get", "infer", "available", "validate"]

NAMES = ("numpy", "jax", "torch")
_MODULES = {"numpy": "numpy_backend", "jax": "jax_backend", "torch": "torch_backend"}
_LOADED: dict[str, Backend] = {}
_INSTALL = {"jax": "pip install 'convbridge[jax]'  (or: pip install jax)",
            "torch": "pip install 'convbridge[torch]'  (or: pip install torch)"}


class Backend(Protocol):
    """What every backend module provides besides its registered implementations."""

    NAME: str

    def place(self, arrays: Sequence[ArrayLike | None], device: object) -> tuple[Array | None, ...]:
        """The arrays as this backend's arrays, same dtypes, on ``device`` (None: where the first one lives)."""

    def to_numpy(self, a: Array) -> np.ndarray:
        """A host NumPy copy of one of this backend's arrays."""

    def unsupported(self, spec: object, plan: object) -> ConvBridgeError | None:
        """Why this backend cannot run ``spec`` under ``plan`` at all (any algorithm), or None."""

    def precision(self, spec: object, plan: object, x: Array) -> Precision:
        """What a computation of ``spec`` under ``plan`` on ``x``'s device uses."""

    def transpose(self, a: Array, axes: Sequence[int]) -> Array:
        """``a`` with its axes permuted."""

    def take(self, a: Array, index: np.ndarray, axis: int) -> Array:
        """``a`` gathered at ``index`` (a NumPy int array) along ``axis``."""

    def compile(self, fn: Callable[..., Array]) -> Callable[..., Array]:
        """``fn(spec, plan, *arrays)`` compiled as a whole where the framework can (spec and plan static)."""

    def astype(self, a: Array, dtype: str) -> Array:
        """One of this backend's arrays in the dtype named ``dtype`` (what ``preferred_element_type`` widens to)."""


def validate(name: object) -> str:
    """Return ``name`` (lower-cased) if it names a backend, else raise listing the known ones.

    >>> validate("Torch")
    'torch'
    """
    if not isinstance(name, str) or name.lower() not in NAMES:
        raise ArgumentError(f"unknown backend {name!r}; choose one of {', '.join(map(repr, NAMES))}")
    return name.lower()


def get(name: str) -> Backend:
    """Import and return the backend module for ``name`` (registering its implementations).

    Raises:
        ArgumentError: unknown name.
        BackendUnavailable: its framework is not installed (the message names the pip line).
    """
    loaded = _LOADED.get(name)
    if loaded is not None:  # a dict lookup: torch.compile traces through it (not through import_module)
        return loaded
    validate(name)
    if name in _INSTALL and importlib.util.find_spec(name) is None:
        raise BackendUnavailable(f"backend {name!r} needs {name}, which is not installed; {_INSTALL[name]}")
    module = cast(Backend, _import(name))
    if not tracing():  # torch.compile cannot replay a module stored into a dict; it re-traces the import instead
        _LOADED[name] = module
    return module


def _import(name: str) -> object:
    """Import statements, not ``importlib.import_module``: torch.compile traces through them."""
    if name == "torch":
        from convbridge.backends import torch_backend

        return torch_backend
    if name == "jax":
        from convbridge.backends import jax_backend

        return jax_backend
    from convbridge.backends import numpy_backend

    return numpy_backend


def infer(x: object) -> str:
    """The backend that owns ``x``'s type: torch tensor -> torch, jax array -> jax, else numpy."""
    return framework_of(x)


def available() -> tuple[str, ...]:
    """Backends whose framework is installed (importing nothing)."""
    return tuple(n for n in NAMES if n not in _INSTALL or importlib.util.find_spec(n) is not None)
