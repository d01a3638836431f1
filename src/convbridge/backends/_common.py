"""Framework-free steps the backends share: padding modes as one gather per spatial axis."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from convbridge._types import Array, Pairs
from convbridge.spec import ConvSpec, gather_indices

__all__ = ["pad_by_mode"]


def pad_by_mode(spec: ConvSpec, x: Array, take: Callable[[Array, np.ndarray, int], Array],
                axes: Sequence[int]) -> tuple[Array, Pairs]:
    """Apply a reflect / replicate / circular padding as one gather per spatial axis.

    Args:
        spec: the convolution.
        x: the input, with its spatial dims at ``axes`` (in the spec's canonical spatial order).
        take: the backend's gather, ``take(a, index, axis)``.
        axes: where each canonical spatial dim lies in ``x``.

    Returns:
        The (possibly padded) input and the zero padding still to apply: the spec's padding for
        ``"zeros"``, none after a gather.

    >>> from convbridge.spec import make_conv_spec
    >>> spec = make_conv_spec((1, 1, 4), (1, 1, 3), padding=1, padding_mode="reflect")
    >>> x, rest = pad_by_mode(spec, np.arange(4.0)[None, None], lambda a, i, ax: np.take(a, i, ax), (2,))
    >>> x.tolist(), rest
    ([[[1.0, 0.0, 1.0, 2.0, 3.0, 2.0]]], ((0, 0),))
    """
    if spec.padding_mode == "zeros":
        return x, spec.padding
    for axis, a in zip(axes, spec.axes):
        x = take(x, gather_indices(a.size, a.lo, a.hi, spec.padding_mode), axis)
    return x, ((0, 0),) * spec.nsp
