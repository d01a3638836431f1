"""Framework-free steps the backends share: padding modes as one gather per spatial axis, and the precision of
float16/bfloat16 convolutions that accumulate in float32."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from convbridge._types import Array, Pairs
from convbridge.plan import Plan
from convbridge.precision import Precision, unit_roundoff
from convbridge.spec import ConvSpec, Spec, gather_indices

__all__ = ["pad_by_mode", "HALF_DTYPES", "accumulates_in_float32", "float32_accumulation"]

#: The algorithms whose 16-bit float convolutions multiply and add in float32 and round each output once.
WIDENING = ("native", "channels_last", "shifted")
#: The 16-bit float dtypes, which CPU convolution kernels widen to float32 to multiply and add.
HALF_DTYPES = ("float16", "bfloat16")


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


def accumulates_in_float32(spec: Spec, plan: Plan) -> bool:
    """Whether a CPU run of ``spec`` under ``plan`` on torch or JAX multiplies and adds a 16-bit float in float32
    and rounds each output once, bias included: the native conv and conv_transpose do (oneDNN/ATen; XLA:CPU with
    a float32 result type), and so do torch's channels-last run of it and the shifted-slices depthwise method
    (it sums in float32). unfold only copies; fold and the matmul algorithm's col2im add in the dtype
    (tests/test_dtypes_kept.py measures it).

    >>> from convbridge.spec import make_conv_spec
    >>> spec = make_conv_spec((1, 1, 4), (1, 1, 3), dtypes=("bfloat16", "bfloat16"))
    >>> accumulates_in_float32(spec, Plan("torch")), accumulates_in_float32(spec, Plan("torch", algorithm="matmul"))
    (True, False)
    """
    return spec.dtype in HALF_DTYPES and spec.op in ("conv", "conv_transpose") and plan.algorithm in WIDENING


def float32_accumulation(spec: Spec, how: str) -> Precision:
    """A 16-bit float result accumulated in float32 and rounded once to its dtype, described by ``how``:
    u = 2**-24 for the accumulation, u_out = the dtype's unit roundoff for the final rounding.

    >>> from convbridge.spec import make_conv_spec
    >>> spec = make_conv_spec((1, 1, 4), (1, 1, 3), dtypes=("bfloat16", "bfloat16"))
    >>> p = float32_accumulation(spec, "cpu")
    >>> p.label, p.u == 2.0**-24, p.u_out == 2.0**-8
    ('computed in float32 and rounded to bfloat16, cpu', True, True)
    """
    return Precision(2.0**-24, 0.0, f"computed in float32 and rounded to {spec.dtype}, {how}",
                     u_out=unit_roundoff(str(spec.dtype)))
