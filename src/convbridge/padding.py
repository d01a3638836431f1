"""Padding forms and padding modes -> per-dimension ``(lo, hi)`` pairs and gather indices."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from convbridge._args import as_int, choice
from convbridge.errors import ArgumentTypeError, PaddingError

__all__ = ["PADDING_MODES", "PADDING_STRINGS", "parse_padding", "same_pairs", "check_mode_widths", "gather_indices"]

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
PADDING_STRINGS = ("valid", "same", "same_lower")

Pairs = tuple[tuple[int, int], ...]


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
        except Exception:
            raise PaddingError(
                f"unknown padding {padding!r}; use an int, per-dim ints, (lo, hi) pairs, "
                "or one of 'valid', 'same', 'same_lower'"
            ) from None
        return ((0, 0),) * nsp if mode == "valid" else mode
    if isinstance(padding, Sequence) or (hasattr(padding, "ndim") and getattr(padding, "ndim", 0) > 0):
        return _parse_sequence(list(padding), nsp)
    width = _width(padding, "padding")
    return ((width, width),) * nsp


def _parse_sequence(items: list, nsp: int) -> Pairs:
    if not items:
        raise PaddingError(f"padding is an empty sequence; give one int or {nsp} ints or {nsp} (lo, hi) pairs")
    flat = all(not _is_seq(v) for v in items)
    if flat and len(items) not in (1, nsp):
        hint = f"; for (lo, hi) per side write {tuple([tuple(items)])!r}" if len(items) == 2 and nsp == 1 else ""
        raise PaddingError(
            f"padding {tuple(items)!r} has {len(items)} ints but the input has {nsp} spatial dims; "
            f"give 1 int, {nsp} ints, or {nsp} (lo, hi) pairs{hint}"
        )
    if not flat and len(items) != nsp:
        raise PaddingError(
            f"padding has {len(items)} entries but the input has {nsp} spatial dims; "
            f"give one (lo, hi) pair per spatial dim"
        )
    pairs = []
    for i, item in enumerate(items):
        if _is_seq(item):
            if len(item) != 2:
                raise PaddingError(
                    f"padding[{i}] = {tuple(item)!r} is not a (lo, hi) pair; give exactly two ints per spatial dim"
                )
            pairs.append((_width(item[0], f"padding[{i}][0]"), _width(item[1], f"padding[{i}][1]")))
        else:
            w = _width(item, f"padding[{i}]")
            pairs.append((w, w))
    if len(pairs) == 1:
        pairs = pairs * nsp
    return tuple(pairs)


def _is_seq(v: object) -> bool:
    return (isinstance(v, Sequence) and not isinstance(v, str)) or getattr(v, "ndim", 0) > 0


def _width(value: object, name: str) -> int:
    try:
        w = as_int(value, name)
    except ArgumentTypeError:
        raise PaddingError(f"{name} must be an int, got {type(value).__name__} {value!r}") from None
    if w < 0:
        raise PaddingError(f"{name} is {w} but padding must be >= 0; crop the input instead of padding negatively")
    return w


def same_pairs(sizes, kernel, stride, dilation, *, lower: bool = False) -> Pairs:
    """XLA/TF 'SAME' widths: output ceil(n / s); the odd pixel goes high (low with ``lower``).

    >>> same_pairs((224,), (7,), (2,), (1,))
    ((2, 3),)
    """
    pairs = []
    for n, k, s, d in zip(sizes, kernel, stride, dilation):
        out = -(-n // s)
        total = max((out - 1) * s + d * (k - 1) + 1 - n, 0)
        small, big = total // 2, total - total // 2
        pairs.append((big, small) if lower else (small, big))
    return tuple(pairs)


def check_mode_widths(mode: str, pairs: Pairs, sizes: Sequence[int], letters: Sequence[str]) -> None:
    """Reject widths the padding mode cannot produce (torch's rules).

    reflect needs each width < the input size; circular needs each width <= the input size.
    """
    for (lo, hi), n, letter in zip(pairs, sizes, letters):
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
        period = 2 * (n - 1) if n > 1 else 1
        j = np.mod(i, period)
        return np.where(j < n, j, period - j)
    raise PaddingError(f"no gather indices for padding_mode {mode!r}")
