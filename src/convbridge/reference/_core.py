"""Rank-generic building blocks of the reference: window views, tap scatter-adds, crops.

Every op of the reference is one of two moves over the taps of a (dilated,
strided) kernel window: *gather* (a strided window view, for conv and unfold) or
*scatter-add* (for the adjoints: transposed convolution, fold, conv's VJP).
"""

from __future__ import annotations

import string
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from convbridge.spec import ConvAxis, TransposeAxis

__all__ = ["letters", "window_view", "scatter_taps", "crop", "index", "blocks", "BLOCK_ELEMENTS", "compute_dtype",
           "magnitude"]

#: The most window elements one block of the reference's contraction copies (64 MiB in float64).
BLOCK_ELEMENTS = 2**23


def compute_dtype(dtype: Any, *arrays: Any) -> np.dtype:
    """The dtype the reference computes in: ``dtype`` (None: float64), or, when any array is complex and ``dtype``
    is real, the complex dtype whose components have ``dtype``'s precision (float64 -> complex128, float32 ->
    complex64): the reference never drops an imaginary part.

    >>> compute_dtype(None, np.ones(2)).name, compute_dtype(None, np.ones(2, np.complex64)).name
    ('float64', 'complex128')
    >>> compute_dtype(np.float32, [1j]).name, compute_dtype(np.complex64, np.ones(2)).name
    ('complex64', 'complex64')
    """
    dt = np.dtype(np.float64 if dtype is None else dtype)
    if dt.kind != "c" and any(_complex(a) for a in arrays if a is not None):
        dt = np.result_type(dt, np.complex64)
    return dt


def _complex(a: Any) -> bool:
    """Whether an array of any framework (its dtype's name: numpy, jax, torch) or nested lists holds complex."""
    dt = getattr(a, "dtype", None)
    return "complex" in str(dt) if dt is not None else bool(np.iscomplexobj(a))


def magnitude(a: np.ndarray | None) -> np.ndarray | None:
    """``|a|`` for a real array; ``|Re a| + |Im a|`` (real, of the components' dtype) for a complex one: the
    magnitude the gauges of complex convolutions read (each complex product ``x w`` is four real products, and
    ``|Re(x w)|, |Im(x w)| <= (|Re x| + |Im x|)(|Re w| + |Im w|)``). None stays None.

    >>> magnitude(np.array([3 - 4j, -1j])).tolist(), magnitude(np.array([-2.0])).tolist()
    ([7.0, 1.0], [2.0])
    """
    if a is None:
        return None
    if np.iscomplexobj(a):
        return np.abs(a.real) + np.abs(a.imag)
    return np.abs(a)


def letters(nsp: int) -> tuple[str, str]:
    """Two disjoint runs of ``nsp`` einsum letters (positions, taps), avoiding n, g, c, o."""
    pool = [c for c in string.ascii_letters if c not in "ngcoNGCO"]
    return "".join(pool[:nsp]), "".join(pool[nsp : 2 * nsp])


def index(*parts: object) -> tuple[Any, ...]:
    """An indexing tuple (``a[index(Ellipsis, *tap)]``) typed for NumPy's stubs.

    >>> np.arange(6).reshape(2, 3)[index(Ellipsis, 1)].tolist()
    [1, 4]
    """
    return parts


def blocks(batch: int, rows: int, per_row: int, budget: int | None = None) -> Iterator[tuple[slice, slice]]:
    """Slices of the batch and of the first output axis that cover both, each block holding at most
    ``budget`` window elements (``per_row`` per output row of one image), or one row of one image.

    ``budget`` defaults to :data:`BLOCK_ELEMENTS` and never exceeds it.

    >>> [(b.start, b.stop, r.start, r.stop) for b, r in blocks(3, 4, 2**22)]
    [(0, 1, 0, 2), (0, 1, 2, 4), (1, 2, 0, 2), (1, 2, 2, 4), (2, 3, 0, 2), (2, 3, 2, 4)]
    >>> [(b.start, b.stop) for b, _ in blocks(5, 4, 2)]
    [(0, 5)]
    """
    cap = BLOCK_ELEMENTS if budget is None else min(budget, BLOCK_ELEMENTS)
    per_image = max(per_row * rows, 1)
    if per_image <= cap:
        images = max(1, cap // per_image)
        for start in range(0, batch, images):
            yield slice(start, min(start + images, batch)), slice(0, rows)
        return
    step = max(1, cap // max(per_row, 1))
    for image in range(batch):
        for start in range(0, rows, step):
            yield slice(image, image + 1), slice(start, min(start + step, rows))


def window_view(xpad: np.ndarray, axes: Sequence[ConvAxis]) -> np.ndarray:
    """``(..., *S_pad) -> (..., *out, *kernel)``: strided, dilated windows over the trailing axes (a view).

    Element ``[..., p, t]`` is ``xpad[..., p * stride + t * dilation]``; the trailing axes are the
    axes' padded sizes.

    >>> window_view(np.arange(7), (ConvAxis(7, 2, stride=3, dilation=2),)).tolist()
    [[0, 2], [3, 5]]
    """
    nsp = len(axes)
    lead = xpad.ndim - nsp
    v = sliding_window_view(xpad, [a.span for a in axes], axis=tuple(range(lead, lead + nsp)))
    pos = tuple(slice(None, None, a.stride) for a in axes)
    taps = tuple(slice(None, None, a.dilation) for a in axes)
    return v[(slice(None),) * lead + pos + taps]


def scatter_taps(buf: np.ndarray, axes: Sequence[ConvAxis | TransposeAxis], count: Sequence[int],
                 contribution: Callable[[tuple[int, ...]], np.ndarray]) -> np.ndarray:
    """Add ``contribution(tap)[..., p]`` into ``buf[..., p * stride + tap * dilation]`` for every tap; in place.

    This is the definition of every adjoint in the reference: the transposed
    convolution, fold, and the input gradient of conv.

    Args:
        buf: accumulator whose trailing ``len(kernel)`` axes are the (padded) full output.
        axes: the geometry of each spatial dim (kernel, stride, dilation).
        count: number of source positions per spatial dim (the trailing shape of each contribution).
        contribution: maps a tap (tuple of ints) to an array broadcastable to ``buf``'s slice.

    Returns:
        ``buf``.

    >>> scatter_taps(np.zeros(5), (ConvAxis(5, 2, stride=2),), (2,), lambda t: np.array([1.0, 10.0])).tolist()
    [1.0, 1.0, 10.0, 10.0, 0.0]
    """
    lead = buf.ndim - len(axes)
    for tap in np.ndindex(*(a.kernel for a in axes)):
        dst = tuple(slice(t * a.dilation, t * a.dilation + a.stride * n, a.stride)
                    for t, a, n in zip(tap, axes, count))
        buf[(slice(None),) * lead + dst] += contribution(tap)
    return buf


def crop(y: np.ndarray, pairs: Sequence[tuple[int, int]]) -> np.ndarray:
    """Remove ``lo``/``hi`` entries from each trailing axis; a negative width adds that many zeros instead.

    >>> crop(np.arange(1.0, 6.0), ((1, -2),)).tolist()
    [2.0, 3.0, 4.0, 5.0, 0.0, 0.0]
    """
    lead = y.ndim - len(pairs)
    grow = [(0, 0)] * lead + [(max(0, -lo), max(0, -hi)) for lo, hi in pairs]
    if any(w for pair in grow for w in pair):
        y = np.pad(y, grow)
    cut = tuple(slice(max(0, lo), y.shape[lead + i] - max(0, hi)) for i, (lo, hi) in enumerate(pairs))
    return y[(slice(None),) * lead + cut]
