"""The error catalogue: every input error convbridge raises is a ConvBridgeError.

Messages state the rule, give the values and suggest a fix, e.g.
``input has 6 channels but groups (4) x kernel in-channels (2) = 8; check the kernel's I axis or groups``.
"""

from __future__ import annotations

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
]


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
