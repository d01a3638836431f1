"""Array type sniffing and host conversion, in one place, importing no framework.

A torch tensor or a JAX array is recognised by its type's module, as
array-api-compat does, so that inferring a backend never imports torch or jax.
Host conversion (to a NumPy array) uses the array's own methods, so it needs no
import either: whoever made the array has already imported its framework.
"""

from __future__ import annotations

import numpy as np

from convbridge._types import Array, ArrayLike, Shape

__all__ = ["framework_of", "shape_of", "dtype_name", "to_numpy"]


def framework_of(a: object) -> str:
    """``"torch"``, ``"jax"`` or ``"numpy"`` (anything else): the framework that owns ``a``'s type.

    >>> framework_of(np.zeros(2)), framework_of([1.0, 2.0])
    ('numpy', 'numpy')
    """
    root = type(a).__module__.partition(".")[0]
    if root in ("jax", "jaxlib"):
        return "jax"
    if root == "torch":
        return "torch"
    return "numpy"


def shape_of(a: ArrayLike) -> Shape:
    """The shape of an array of any framework, or of nested lists.

    >>> shape_of([[1, 2, 3]])
    (1, 3)
    """
    shape = getattr(a, "shape", None)
    return tuple(int(s) for s in shape) if shape is not None else tuple(np.shape(a))


def dtype_name(a: ArrayLike) -> str:
    """The dtype of a numpy/jax/torch array as a plain name (``"float32"``); lists read as NumPy would.

    >>> dtype_name(np.zeros(1, np.float32)), dtype_name([1.0])
    ('float32', 'float64')
    """
    if isinstance(a, (list, tuple)):
        a = np.asarray(a)
    dt = getattr(a, "dtype", None)
    if dt is None:
        return type(a).__name__
    text = str(dt)
    return text[len("torch.") :] if text.startswith("torch.") else str(getattr(dt, "name", text))


def to_numpy(a: ArrayLike) -> np.ndarray:
    """Any array as a NumPy array on the host, same dtype (torch bfloat16, which NumPy lacks, becomes float32).

    >>> to_numpy([1.0, 2.0]).dtype.name
    'float64'
    """
    if framework_of(a) == "torch":
        t: Array = a.detach().cpu()
        return np.asarray(t.float().numpy() if str(t.dtype) == "torch.bfloat16" else t.numpy())
    return np.asarray(a)
