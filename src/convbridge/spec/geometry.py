"""Per-dimension geometry: every convolution size formula, written once.

One spatial dim of a convolution is a :class:`ConvAxis` (input size ``n``, kernel ``k``,
stride ``s``, dilation ``d``, padding ``(lo, hi)``); one spatial dim of a transposed
convolution is a :class:`TransposeAxis` (the same, with ``(lo, hi)`` rows cropped from the
full output and ``output_padding`` rows added back). Specs hold a tuple of them; the
reference, the backends, ``explain``, the pictures and the lowering read sizes from them
and never write a formula of their own.

>>> a = ConvAxis(224, 7, stride=2, lo=3, hi=3)
>>> a.span, a.out, a.unread
(7, 112, 1)
>>> ConvAxis.same(224, 7, stride=2).padding
(2, 3)
>>> t = a.adjoint()
>>> t.out, t.output_padding
(224, 1)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from convbridge.errors import ArgumentError, ArgumentTypeError, PaddingError, brief, describe_value

__all__ = ["ConvAxis", "TransposeAxis", "lax_transpose_padding"]


def _span(kernel: int, dilation: int) -> int:
    return dilation * (kernel - 1) + 1


def _at_least(axis: object, name: str, minimum: int | None) -> None:
    """An int field (bools refused), at least ``minimum`` when one is given."""
    value = getattr(axis, name)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ArgumentTypeError(f"{type(axis).__name__}.{name} must be an int, got {describe_value(value)}")
    if minimum is not None and value < minimum:
        raise ArgumentError(f"{type(axis).__name__}.{name} must be >= {minimum}, got {value}")


@dataclass(frozen=True)
class _Taps:
    """A kernel of ``kernel`` taps, ``dilation`` apart, placed every ``stride`` rows over ``size`` positions."""

    size: int
    kernel: int
    stride: int = 1
    dilation: int = 1

    def __post_init__(self) -> None:
        for name in ("size", "kernel", "stride", "dilation"):
            _at_least(self, name, 1)

    @property
    def span(self) -> int:
        """The dilated kernel's extent ``d * (k - 1) + 1``."""
        return _span(self.kernel, self.dilation)

    def taps(self, position: int) -> tuple[int, ...]:
        """Rows the kernel touches when placed at ``position``: ``position * s + t * d`` for each tap t
        (conv: padded input rows read; transposed conv: full-output rows written).

        >>> ConvAxis(9, 3, stride=2, dilation=2).taps(1)
        (2, 4, 6)
        """
        return tuple(position * self.stride + t * self.dilation for t in range(self.kernel))


@dataclass(frozen=True)
class ConvAxis(_Taps):
    """One spatial dim of a convolution, unfold or fold: window positions over a padded axis.

    Attributes:
        size: input size n (fold: the output size, which its blocks tile).
        kernel: kernel size k.
        stride: s >= 1.
        dilation: d >= 1.
        lo: padding before the input.
        hi: padding after the input.
    """

    lo: int = 0
    hi: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        _at_least(self, "lo", None)
        _at_least(self, "hi", None)

    @classmethod
    def same(cls, size: int, kernel: int, stride: int = 1, dilation: int = 1, *, lower: bool = False) -> ConvAxis:
        """XLA/TF 'SAME': output ``ceil(n / s)``; the odd pixel of the padding goes high (low with ``lower``).

        >>> ConvAxis.same(224, 7, 2).padding, ConvAxis.same(224, 7, 2, lower=True).padding
        ((2, 3), (3, 2))
        """
        span = cls(size, kernel, stride, dilation).span  # validates the arguments
        out = -(-size // stride)
        total = max((out - 1) * stride + span - size, 0)
        small, big = total // 2, total - total // 2
        lo, hi = (big, small) if lower else (small, big)
        return cls(size, kernel, stride, dilation, lo, hi)

    @property
    def padding(self) -> tuple[int, int]:
        """``(lo, hi)``."""
        return self.lo, self.hi

    @property
    def padded(self) -> int:
        """``n + lo + hi``."""
        return self.size + self.lo + self.hi

    @property
    def fits(self) -> bool:
        """The dilated kernel fits the padded input (at least one output)."""
        return self.padded >= self.span

    @property
    def out(self) -> int:
        """Window positions (conv's output size, unfold's blocks): ``floor((n + lo + hi - span) / s) + 1``."""
        return (self.padded - self.span) // self.stride + 1

    @property
    def reach(self) -> int:
        """Padded rows the windows read, from the first: ``(out - 1) * s + span``."""
        return (self.out - 1) * self.stride + self.span

    @property
    def unread(self) -> int:
        """Padded rows after the last window (0 .. s - 1): the adjoint's output_padding."""
        return self.padded - self.reach

    @property
    def overlap(self) -> int:
        """The most windows covering one padded row: ``min(ceil(k gcd(s, d) / s), out)`` (fold's K)."""
        return min(-(-self.kernel * math.gcd(self.stride, self.dilation) // self.stride), self.out)

    def halo(self, start: int, stop: int) -> tuple[int, int]:
        """Input rows (unpadded coordinates: below 0 or from n on lie in the padding) that outputs
        ``start .. stop - 1`` read: what a spatial shard of the output needs of the input.

        >>> ConvAxis(10, 3, lo=1, hi=1).halo(0, 5), ConvAxis(10, 3, lo=1, hi=1).halo(5, 10)
        ((-1, 6), (4, 11))
        """
        return start * self.stride - self.lo, (stop - 1) * self.stride - self.lo + self.span

    def adjoint(self) -> TransposeAxis:
        """The transposed convolution that maps this axis' output back to its input size (its gradient)."""
        return TransposeAxis(self.out, self.kernel, self.stride, self.dilation, self.lo, self.hi, self.unread)


@dataclass(frozen=True)
class TransposeAxis(_Taps):
    """One spatial dim of a transposed convolution (torch's meaning: the gradient of conv).

    Input row ``i`` and tap ``j`` add into row ``i * s + j * d`` of the *full* output
    (``(n - 1) * s + span`` rows); ``lo``/``hi`` rows are cropped from its ends (negative:
    zero rows added, as lax's paddings can ask) and ``output_padding`` rows added on the high side.

    Attributes:
        size: input size n.
        kernel, stride, dilation: as for :class:`ConvAxis`.
        lo, hi: rows cropped from the full output.
        output_padding: rows added back on the high side.
    """

    lo: int = 0
    hi: int = 0
    output_padding: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        _at_least(self, "lo", None)
        _at_least(self, "hi", None)
        _at_least(self, "output_padding", 0)
        if self.output_padding >= self.room:
            raise ArgumentError(f"output_padding {self.output_padding} must be < max(stride {self.stride}, dilation "
                                f"{self.dilation}) = {self.room} (ATen's rule)")

    @classmethod
    def same(cls, size: int, kernel: int, stride: int = 1, dilation: int = 1, *,
             lower: bool = False) -> TransposeAxis:
        """Output ``n * s``, the gradient of conv's ``"same"``: the excess ``span - s`` is cropped (odd row high;
        low with ``lower``), or, when negative, added back as output_padding.

        >>> TransposeAxis.same(4, 3, 2).crops, TransposeAxis.same(4, 1, 3).output_padding
        ((0, 1), 2)
        """
        total = cls(size, kernel, stride, dilation).span - stride  # validates the arguments
        small, big = max(total, 0) // 2, max(total, 0) - max(total, 0) // 2
        lo, hi = (big, small) if lower else (small, big)
        return cls(size, kernel, stride, dilation, lo, hi, max(-total, 0))

    @property
    def padding(self) -> tuple[int, int]:
        """``(lo, hi)`` as given (crops of the full output, before output_padding)."""
        return self.lo, self.hi

    @property
    def full(self) -> int:
        """The uncropped output: ``(n - 1) * s + span``."""
        return (self.size - 1) * self.stride + self.span

    @property
    def base(self) -> int:
        """The output size at output_padding 0: ``full - lo - hi``."""
        return self.full - self.lo - self.hi

    @property
    def out(self) -> int:
        """``(n - 1) * s - lo - hi + d * (k - 1) + output_padding + 1``."""
        return self.base + self.output_padding

    @property
    def room(self) -> int:
        """ATen's rule: ``0 <= output_padding < max(s, d)``."""
        return max(self.stride, self.dilation)

    @property
    def reachable(self) -> range:
        """The output sizes output_padding can reach: ``base .. base + max(s, d) - 1`` (sizes >= 1).

        >>> TransposeAxis(15, 3, stride=2, lo=1, hi=1).reachable
        range(29, 31)
        """
        return range(max(self.base, 1), self.base + self.room)

    @property
    def crops(self) -> tuple[int, int]:
        """What is removed from each end of the full output: ``(lo, hi - output_padding)`` (negative: added)."""
        return self.lo, self.hi - self.output_padding

    @property
    def lax_padding(self) -> tuple[int, int]:
        """The padding of the stride-dilated input that gives this output with a flipped-kernel conv:
        ``(D - lo, D - hi + output_padding)``, ``D = d * (k - 1)`` (negative: crop)."""
        d_k = self.span - 1
        lo, hi = self.crops
        return d_k - lo, d_k - hi

    def with_lax_padding(self, padding: str | tuple[int, int]) -> TransposeAxis:
        """This axis with lax's padding of the stride-dilated input: ``'SAME'``, ``'VALID'`` or ``(a, b)``;
        in torch's terms the crops are ``(D - a, D - b)``, ``D = d * (k - 1)``, and output_padding is 0.

        >>> TransposeAxis(4, 3, 2).with_lax_padding("SAME").crops
        (0, 1)
        """
        if not isinstance(padding, str) and len(padding) != 2:
            raise PaddingError(f"lax's padding of one dim is 'SAME', 'VALID' or an (a, b) pair, got {brief(padding)}")
        a, b = lax_transpose_padding(self.span, self.stride, padding) if isinstance(padding, str) else padding
        d_k = self.span - 1
        return TransposeAxis(self.size, self.kernel, self.stride, self.dilation, d_k - a, d_k - b)

    def adjoint(self) -> ConvAxis:
        """The convolution this is the gradient of: over the output, padded by the crops."""
        lo, hi = self.crops
        return ConvAxis(self.out, self.kernel, self.stride, self.dilation, lo, hi)


def lax_transpose_padding(span: int, stride: int, padding: str) -> tuple[int, int]:
    """jax's ``_conv_transpose_padding``: lax's ``(a, b)`` for ``'SAME'``/``'VALID'``, ``span`` the dilated kernel.

    >>> lax_transpose_padding(3, 2, "SAME"), lax_transpose_padding(3, 2, "VALID"), lax_transpose_padding(1, 3, "SAME")
    ((2, 1), (2, 2), (0, 2))
    """
    if padding == "SAME":
        total = span + stride - 2
        a = span - 1 if stride > span - 1 else -(-total // 2)
    elif padding == "VALID":
        total = span + stride - 2 + max(span - stride, 0)
        a = span - 1
    else:
        raise PaddingError(f"no lax transposed padding for {brief(padding)}; use 'SAME' or 'VALID'")
    return a, total - a
