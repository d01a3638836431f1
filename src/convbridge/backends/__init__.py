"""Backend registry: lazy imports, inference from array types, availability.

Each backend module implements the same small interface on a validated spec:
``asarray(a)``, ``to_numpy(a)``, ``check(spec)``, ``precision(spec, x)``, and one
function per op of :mod:`convbridge.ops`: ``conv(spec, x, w, b)``,
``conv_transpose(spec, x, w, b)``, ``unfold(spec, x)`` and ``fold(spec, cols)``.
Inferring a backend from an array's type imports nothing.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from convbridge.errors import ArgumentError, BackendUnavailable

__all__ = ["NAMES", "get", "infer", "available", "validate"]

NAMES = ("numpy", "jax", "torch")
_MODULES = {"numpy": "numpy_backend", "jax": "jax_backend", "torch": "torch_backend"}
_INSTALL = {"jax": "pip install 'convbridge[jax]'  (or: pip install jax)",
            "torch": "pip install 'convbridge[torch]'  (or: pip install torch)"}


def validate(name: object) -> str:
    """Return ``name`` if it names a backend, else raise listing the known ones."""
    if not isinstance(name, str) or name not in NAMES:
        raise ArgumentError(f"unknown backend {name!r}; choose one of {', '.join(map(repr, NAMES))}")
    return name


def get(name: str) -> ModuleType:
    """Import and return the backend module for ``name``.

    Raises:
        ArgumentError: unknown name.
        BackendUnavailable: its framework is not installed (the message names the pip line).
    """
    validate(name)
    if name in _INSTALL and importlib.util.find_spec(name) is None:
        raise BackendUnavailable(f"backend {name!r} needs {name}, which is not installed; {_INSTALL[name]}")
    return importlib.import_module(f"convbridge.backends.{_MODULES[name]}")


def infer(x: object) -> str:
    """The backend that owns ``x``'s type: torch tensor -> torch, jax array -> jax, else numpy."""
    root = type(x).__module__.partition(".")[0]
    if root in ("jax", "jaxlib"):
        return "jax"
    if root == "torch":
        return "torch"
    return "numpy"


def available() -> tuple[str, ...]:
    """Backends whose framework is installed (importing nothing)."""
    return tuple(n for n in NAMES if n not in _INSTALL or importlib.util.find_spec(n) is not None)
