"""Padding forms and padding modes -> per-dimension ``(lo, hi)`` pairs and gather indices.

The ``"same"`` widths themselves are geometry (:meth:`convbridge.spec.geometry.ConvAxis.same`).
"""

from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType
from typing import Any, cast

import numpy as np

from convbridge._args import as_param, choice, is_seq
from convbridge._types import Pairs
from convbridge.errors import ArgumentTypeError, ConvBridgeError, PaddingError, brief, describe_value
from convbridge.spec.geometry import ConvAxis

__all__ = ["PADDING_MODES", "PADDING_STRINGS", "NUMPY_PAD_MODES", "parse_padding", "check_mode_widths",
           "gather_indices"]

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
PADDING_STRINGS = ("valid", "same", "same_lower")
#: ``numpy.pad`` (and ``jnp.pad``) names of the padding modes.
NUMPY_PAD_MODES = MappingProxyType({"zeros": "constant", "reflect": "reflect", "replicate": "edge",
                                    "circular": "wrap"})


def parse_padding(padding: object, nsp: int) -> str | Pairs:
    """Parse a padding argument into ``"same"``/``"same_lower"`` or explicit ``(lo, hi)`` pairs.

    Accepted forms: an int; a flat sequence of ints (length 1 broadcasts, else one per
    spatial dim); a sequence of ``(lo, hi)`` pairs, one per spatial dim; ``"valid"``;
    ``"same"`` (XLA rule, odd pixel high); ``"same_lower"`` (odd pixel low).

    Raises:
        PaddingError: unknown string, negative width, wrong length or a malformed pair.
        ArgumentTypeError: a width is not an int.
    """
    if isinstance(padding, str):
        try:
            mode = choice(padding, "padding string", PADDING_STRINGS)
        except ConvBridgeError:
            raise PaddingError(
                f"unknown padding {brief(padding)}; use an int, per-dim ints, (lo, hi) pairs, "
                "or one of 'valid', 'same', 'same_lower'"
            ) from None
        return ((0, 0),) * nsp if mode == "valid" else mode
    if is_seq(padding):
        return _parse_sequence(list(cast(Sequence[Any], padding)), nsp)
    width = _width(padding, "padding")
    return ((width, width),) * nsp


def _parse_sequence(items: list[Any], nsp: int) -> Pairs:
    if not items:
        raise PaddingError(f"padding is an empty sequence; give one int or {nsp} ints or {nsp} (lo, hi) pairs")
    flat = all(not is_seq(v) for v in items)
    if flat and len(items) not in (1, nsp):
        hint = f"; for (lo, hi) per side write {tuple([tuple(items)])!r}" if len(items) == 2 and nsp == 1 else ""
        raise PaddingError(
            f"padding {brief(tuple(items))} has {len(items)} ints but the input has {nsp} spatial dims; "
            f"give 1 int, {nsp} ints, or {nsp} (lo, hi) pairs{hint}"
        )
    if not flat and len(items) != nsp:
        raise PaddingError(
            f"padding has {len(items)} entries but the input has {nsp} spatial dims; "
            f"give one (lo, hi) pair per spatial dim"
        )
    pairs = []
    for i, item in enumerate(items):
        if is_seq(item):
            if len(item) != 2:
                raise PaddingError(
                    f"padding[{i}] = {brief(tuple(item))} is not a (lo, hi) pair; give exactly two ints per spatial dim"
                )
            pairs.append((_width(item[0], f"padding[{i}][0]"), _width(item[1], f"padding[{i}][1]")))
        else:
            w = _width(item, f"padding[{i}]")
            pairs.append((w, w))
    if len(pairs) == 1:
        pairs = pairs * nsp
    return tuple(pairs)


def _width(value: object, name: str) -> int:
    try:
        w = as_param(value, name)
    except ArgumentTypeError:
        raise PaddingError(f"{name} must be an int, got {describe_value(value)}") from None
    if w < 0:
        raise PaddingError(f"{name} is {w} but padding must be >= 0; crop the input instead of padding negatively")
    return w


def check_mode_widths(mode: str, axes: Sequence[ConvAxis], letters: Sequence[str]) -> None:
    """Reject widths the padding mode cannot produce (torch's rules).

    reflect needs each width < the input size; circular needs each width <= the input size.
    """
    for a, letter in zip(axes, letters):
        lo, hi, n = a.lo, a.hi, a.size
        if mode == "reflect" and max(lo, hi) >= n:
            raise PaddingError(
                f"reflect padding ({lo}, {hi}) on axis {letter} needs each width < the input size {n}; "
                "use padding_mode='replicate' or 'zeros', or a smaller padding"
            )
        if mode == "circular" and max(lo, hi) > n:
            raise PaddingError(
                f"circular padding ({lo}, {hi}) on axis {letter} needs each width <= the input size {n}; "
                "use a smaller padding"
            )


def gather_indices(n: int, lo: int, hi: int, mode: str) -> np.ndarray:
    """Indices into an axis of size ``n`` that produce its padded version in ``mode``.

    Taking ``x[idx]`` along the axis pads it by ``lo``/``hi`` with reflect (no edge
    repeat), replicate (edge) or circular (wrap) values.

    >>> gather_indices(4, 2, 1, "reflect").tolist()
    [2, 1, 0, 1, 2, 3, 2]
    """
    i = np.arange(-lo, n + hi)
    if mode == "replicate":
        return np.clip(i, 0, n - 1)
    if mode == "circular":
        return np.mod(i, n)
    if mode == "reflect":
        period = 2 * n - 2 if n > 1 else 1
        j = np.mod(i, period)
        return np.where(j < n, j, period - j)
    raise PaddingError(f"no gather indices for padding_mode {mode!r}")
