"""Array type sniffing and host conversion, in one place, importing no framework.

A torch tensor or a JAX array is recognised by its type's module, as
array-api-compat does, so that inferring a backend never imports torch or jax.
Host conversion (to a NumPy array) uses the array's own methods, so it needs no
import either: whoever made the array has already imported its framework.
"""

from __future__ import annotations

import numpy as np

from convbridge._types import Array, ArrayLike, Shape
from convbridge.errors import ArgumentTypeError, DTypeError, ShapeError

__all__ = ["framework_of", "shape_of", "dtype_name", "to_numpy", "to_host", "check_array", "is_tracer"]


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


def is_tracer(a: object) -> bool:
    """A JAX tracer (inside ``jax.jit``, ``grad`` or ``vmap``): an abstract value with no data to copy."""
    return framework_of(a) == "jax" and any(c.__name__.endswith("Tracer") for c in type(a).__mro__)


def check_array(a: object, role: str) -> None:
    """Refuse, with a ConvBridgeError naming ``role``, what no backend can take as an array.

    Raises:
        ArgumentTypeError: a string, a mapping or another non-array; a sparse or nested torch tensor.
        ShapeError: a ragged nested sequence.

    >>> check_array("abc", "input")
    Traceback (most recent call last):
    ...
    convbridge.errors.ArgumentTypeError: input must be an array (NumPy, JAX or PyTorch) ..., got str 'abc'
    """
    fw = framework_of(a)
    if fw == "torch":
        layout = str(getattr(a, "layout", "torch.strided"))
        if layout != "torch.strided" or getattr(a, "is_nested", False):
            kind = "nested" if getattr(a, "is_nested", False) else layout.removeprefix("torch.")
            raise ArgumentTypeError(f"{role} is a {kind} torch tensor; convbridge convolves dense (strided) tensors: "
                                    "pass .to_dense() (or torch.nested.to_padded_tensor for a nested one)")
        return
    if fw == "jax" and not hasattr(a, "__array__"):
        raise ArgumentTypeError(f"{role} is a {type(a).__name__}, which has a shape but no values; pass a jax array "
                                "(cb.output_shape computes shapes alone)")
    if isinstance(a, np.ma.MaskedArray):
        raise ArgumentTypeError(f"{role} is a masked array, whose mask no framework's convolution reads; pass "
                                "a.filled(0) (masked entries as zeros) or a.data (the values under the mask)")
    if fw == "jax" or hasattr(a, "__array__") or hasattr(a, "__array_interface__"):
        return
    if isinstance(a, (str, bytes, dict, set)) or not isinstance(a, (list, tuple, int, float)):
        raise ArgumentTypeError(f"{role} must be an array (NumPy, JAX or PyTorch) or nested lists of numbers, got "
                                f"{type(a).__name__} {_short(a)}")
    try:
        arr = np.asarray(a)
    except ValueError:
        raise ShapeError(f"{role} is a ragged nested sequence (rows of different lengths); give it one shape, "
                         "e.g. as a NumPy array") from None
    except (RuntimeError, TypeError) as e:  # e.g. a list of torch tensors that require grad
        raise ArgumentTypeError(f"{role} is a list that NumPy cannot turn into one array ({_short(str(e))}); "
                                "stack its items into one array first (torch.stack(...).detach(), jnp.stack, "
                                "np.stack)") from None
    if arr.dtype.kind not in "biufc":
        raise ArgumentTypeError(f"{role} must hold numbers, got {arr.dtype.name} values {_short(a)}")


def _short(a: object) -> str:
    import reprlib

    return reprlib.repr(a)


def shape_of(a: ArrayLike) -> Shape:
    """The shape of an array of any framework, or of nested lists.

    >>> shape_of([[1, 2, 3]])
    (1, 3)
    """
    shape = getattr(a, "shape", None)
    return tuple(int(s) for s in shape) if shape is not None else tuple(np.shape(a))


def dtype_name(a: ArrayLike) -> str:
    """The dtype of a numpy/jax/torch array as a plain name (``"float32"``, ``"complex64"``); lists read as NumPy
    would.

    >>> dtype_name(np.zeros(1, np.float32)), dtype_name([1.0]), dtype_name([1j])
    ('float32', 'float64', 'complex128')
    """
    if isinstance(a, (list, tuple)):
        a = np.asarray(a)
    dt = getattr(a, "dtype", None)
    if dt is None:
        return type(a).__name__
    if isinstance(dt, np.dtype):  # numpy and jax: the name, without str()'s slower path
        return dt.name
    text = str(dt)
    return text[len("torch.") :] if text.startswith("torch.") else str(getattr(dt, "name", text))


def native_order(a: ArrayLike) -> ArrayLike:
    """A NumPy array in the machine's byte order (torch and JAX read no other); anything else as it is.

    >>> native_order(np.ones(2, ">f4")).dtype.isnative
    True
    """
    if isinstance(a, np.ndarray) and not a.dtype.isnative:
        return a.astype(a.dtype.newbyteorder("="))
    return a


def to_numpy(a: ArrayLike, role: str = "argument") -> np.ndarray:
    """Any array as a NumPy array on the host, same dtype (torch bfloat16, which NumPy lacks, becomes float32;
    complex stays complex, a torch tensor's lazy conjugation resolved).

    Raises:
        ConvBridgeError: ``a`` is no array (see :func:`check_array`; ``role`` names it), a meta tensor or a
            JAX tracer.

    >>> to_numpy([1.0, 2.0]).dtype.name
    'float64'
    """
    return _host(a, role, keep_bfloat16=False)


def to_host(a: ArrayLike, role: str = "argument") -> np.ndarray:
    """Any array as a NumPy array on the host in exactly its dtype: torch bfloat16 becomes ml_dtypes' bfloat16 (the
    same bits), as JAX's bfloat16 already is, so that a backend computing on it keeps the dtype.

    Raises:
        DTypeError: a torch bfloat16 tensor when ml_dtypes (which JAX installs) is not installed.
        ConvBridgeError: as :func:`to_numpy`.

    >>> to_host(np.zeros(2, np.float16)).dtype.name
    'float16'
    """
    return _host(a, role, keep_bfloat16=True)


def _host(a: ArrayLike, role: str, keep_bfloat16: bool) -> np.ndarray:
    if type(a) is np.ndarray:
        return a
    check_array(a, role)
    if framework_of(a) == "torch":
        if getattr(a, "is_meta", False):
            raise ArgumentTypeError("a torch tensor on the meta device has a shape but no values; judging or copying "
                                    "it needs data: pass a real tensor (backend='torch' computes shapes on meta)")
        # a lazily conjugated or negated view (x.conj(), x.conj().imag) has no NumPy form until its bit is resolved
        t: Array = a.detach().cpu().resolve_conj().resolve_neg()
        if str(t.dtype) != "torch.bfloat16":
            return np.asarray(t.numpy())
        return _torch_bfloat16(t) if keep_bfloat16 else np.asarray(t.float().numpy())
    if is_tracer(a):
        raise ArgumentTypeError("a JAX tracer (inside jax.jit, grad or vmap) has no concrete values to copy; verify, "
                                "compare and the numpy and torch backends run on concrete arrays: call them outside "
                                "the transformation, or use backend='jax' inside it")
    return np.asarray(a)


def _torch_bfloat16(t: Array) -> np.ndarray:
    """A CPU torch bfloat16 tensor as an ml_dtypes bfloat16 NumPy array, the same values (through float32, which
    holds every bfloat16 exactly)."""
    try:
        import ml_dtypes
    except ImportError:
        raise DTypeError("a torch bfloat16 tensor becomes a NumPy array only through ml_dtypes' bfloat16, and "
                         "ml_dtypes is not installed; pip install ml-dtypes, or use backend='torch'") from None
    return np.asarray(t.float().numpy()).astype(ml_dtypes.bfloat16)
