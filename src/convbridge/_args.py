"""Small validators shared by the spec parsers: ints, per-dimension tuples, choices."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import SupportsIndex, cast

from convbridge.errors import ArgumentError, ArgumentTypeError, brief, describe_value

__all__ = ["LARGEST", "as_int", "as_param", "per_dim", "choice", "is_seq"]


def as_int(value: object, name: str) -> int:
    """Return ``value`` as a Python int; bools, floats and strings are rejected.

    Args:
        value: the candidate (a Python or NumPy integer).
        name: the argument's name, for the message.

    Raises:
        ArgumentTypeError: ``value`` is not an integer.
    """
    if isinstance(value, bool):
        raise ArgumentTypeError(f"{name} must be an int, got the bool {describe_value(value)}; pass 1 or 0 explicitly")
    if isinstance(value, int) or type(value).__name__ == "SymInt":  # torch.compile may make an int dynamic: the
        return int(value)  # type: ignore[call-overload]  # geometry is static, so it is specialised here
    if hasattr(value, "dtype") and getattr(value.dtype, "kind", "") == "b":
        raise ArgumentTypeError(f"{name} must be an int, got the bool {describe_value(value)}; pass 1 or 0 explicitly")
    try:
        return operator.index(cast(SupportsIndex, value))
    except TypeError:
        hint = f"; use {int(value)}" if isinstance(value, float) and float(value).is_integer() else ""
        raise ArgumentTypeError(
            f"{name} must be an int, got {describe_value(value)}{hint}"
        ) from None


#: The largest stride, dilation, padding, kernel or output size and group count: what frameworks' C ints hold.
LARGEST = 2**31 - 1


def as_param(value: object, name: str) -> int:
    """:func:`as_int` for a convolution's parameters, which must also fit in a C int.

    Raises:
        ArgumentTypeError: ``value`` is not an integer.
        ArgumentError: ``|value|`` exceeds :data:`LARGEST`.
    """
    v = as_int(value, name)
    if abs(v) > LARGEST:
        raise ArgumentError(f"{name} is {v}, beyond what any framework accepts (at most {LARGEST:,})")
    return v


def is_seq(value: object) -> bool:
    """True for a non-string sequence or an array with at least one axis (a per-dim argument).

    >>> is_seq((1, 2)), is_seq("ab"), is_seq(3)
    (True, False, False)
    """
    return (isinstance(value, Sequence) and not isinstance(value, str)) or getattr(value, "ndim", 0) > 0


def per_dim(value: object, name: str, ndim: int, *, minimum: int) -> tuple[int, ...]:
    """Normalise an int or a per-dimension sequence of ints to a tuple of length ``ndim``.

    A length-1 sequence broadcasts, as in torch.

    Raises:
        ArgumentTypeError: an element is not an int.
        ArgumentError: wrong length, or an element below ``minimum``.
    """
    scalar = not (isinstance(value, Sequence) and not isinstance(value, str))
    if isinstance(value, Sequence) and not isinstance(value, str):
        items = [as_param(v, f"{name}[{i}]") for i, v in enumerate(value)]
        if len(items) == 1:
            items = items * ndim
        elif len(items) != ndim:
            raise ArgumentError(
                f"{name} has {len(items)} entries but the input has {ndim} spatial dims; "
                f"give one int or {ndim} ints (one per spatial dim)"
            )
    elif isinstance(value, str):
        raise ArgumentTypeError(f"{name} must be an int or a sequence of ints, got the string {brief(value)}")
    else:
        items = [as_param(value, name)] * ndim
    for i, v in enumerate(items):
        if v < minimum:
            where = name if scalar or ndim == 1 else f"{name}[{i}]"
            raise ArgumentError(f"{where} must be >= {minimum}, got {v}; {name} counts from {minimum}")
    return tuple(items)


def choice(value: object, name: str, allowed: Sequence[str]) -> str:
    """Return ``value`` lower-cased if it is one of ``allowed``, else raise listing them."""
    text = getattr(value, "name", value)
    if not isinstance(text, str) or text.lower() not in allowed:
        options = ", ".join(repr(a) for a in allowed)
        raise ArgumentError(f"unknown {name} {brief(value)}; choose one of {options}")
    return text.lower()
