"""The error catalogue: every input error convbridge raises is a ConvBridgeError.

Messages state the rule, give the values and suggest a fix, e.g.
``input has 6 channels but groups (4) x kernel in-channels (2) = 8; check the kernel's I axis or groups``.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import reprlib
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

__all__ = [
    "ConvBridgeError",
    "ArgumentError",
    "ArgumentTypeError",
    "LayoutError",
    "PaddingError",
    "ShapeError",
    "DTypeError",
    "BackendUnavailable",
    "ImplementationError",
    "ConvBridgeWarning",
    "unknown_argument",
    "checked_signature",
    "describe_value",
    "brief",
]

_F = TypeVar("_F", bound=Callable[..., Any])
_SHORT = reprlib.Repr()
_SHORT.maxstring, _SHORT.maxother = 120, 60


class ConvBridgeError(ValueError):
    """Base class of every error caused by the caller's input."""


class ArgumentError(ConvBridgeError):
    """A scalar argument (stride, dilation, groups, precision, ...) has an invalid value."""


class ArgumentTypeError(ConvBridgeError, TypeError):
    """An argument has the wrong type (a float or bool where an int is required, ...)."""


class LayoutError(ConvBridgeError):
    """A layout string or tuple is malformed or does not fit the arrays."""


class PaddingError(ConvBridgeError):
    """A padding form, width or mode is invalid for the input."""


class ShapeError(ConvBridgeError):
    """Array shapes are inconsistent with each other or with the arguments."""


class DTypeError(ConvBridgeError, TypeError):
    """Dtypes are unsupported, mixed, or unavailable on the chosen backend."""


class BackendUnavailable(ConvBridgeError, ImportError):
    """The requested backend's framework is not installed."""


class ImplementationError(RuntimeError):
    """An implementation broke its contract (a wrong output shape or dtype): a bug in convbridge, not the input."""


class ConvBridgeWarning(UserWarning):
    """Something worked but deserves the caller's attention."""


def unknown_argument(function: str, key: str, allowed: Iterable[str], hint: str = "") -> ArgumentTypeError:
    """The error for ``function(..., key=...)`` where ``key`` is not one of ``allowed``, with a spelling hint."""
    allowed = tuple(allowed)
    near = difflib.get_close_matches(key, allowed, n=1) if isinstance(key, str) else []
    guess = f" (did you mean {near[0]!r}?)" if near else ""
    return ArgumentTypeError(f"{function} has no argument {key!r}{guess}; its arguments are {', '.join(allowed)}"
                             f"{hint}")


def checked_signature(fn: _F) -> _F:
    """Turn Python's own call errors (an unknown keyword, a missing or extra positional) into ArgumentTypeError.

    Costs nothing on a good call: the signature is bound only after a TypeError, to tell a bad call from a
    TypeError raised inside ``fn`` (which propagates as it is).
    """
    sig = inspect.signature(fn)
    params = list(sig.parameters.values())
    names = [p.name for p in params if p.kind is not p.VAR_KEYWORD]
    usage = ", ".join(p.name if p.default is p.empty else f"{p.name}={p.default!r}" for p in params
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))

    @functools.wraps(fn)
    def checked(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TypeError:
            try:
                sig.bind(*args, **kwargs)
            except TypeError as bad:
                unknown = [k for k in kwargs if k not in sig.parameters]
                if unknown and not any(p.kind is p.VAR_KEYWORD for p in params):
                    raise unknown_argument(fn.__name__, unknown[0], names) from None
                raise ArgumentTypeError(f"{fn.__name__}({usage}, ...): {bad}; got {len(args)} positional "
                                        f"argument{'s' if len(args) != 1 else ''}") from None
            raise

    return checked  # type: ignore[return-value]


def brief(value: object) -> str:
    """``repr(value)`` for an error message, never longer than a line: arrays by shape and dtype.

    >>> brief((1, 2)), brief("same"), brief(__import__("numpy").zeros((20, 30)))
    ('(1, 2)', "'same'", '<ndarray of shape (20, 30) float64>')
    """
    shape = getattr(value, "shape", None)
    if isinstance(shape, tuple) and shape:
        return f"<{type(value).__name__} of shape {shape} {getattr(value, 'dtype', '')}>".replace(" >", ">")
    return _SHORT.repr(value)


def describe_value(value: object) -> str:
    """A value with its type for an error message, never longer than a line: ``float 1.5``, ``ndarray of shape
    (2, 3) float32``."""
    shape = getattr(value, "shape", None)
    if isinstance(shape, tuple) and shape:
        return brief(value)[1:-1]
    return f"{type(value).__name__} {brief(value)}"
