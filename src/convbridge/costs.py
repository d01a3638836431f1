"""Cost models: the estimated run time, in seconds, of each framework's own convolution and of the im2col
lowering on a CPU, from the geometry alone. ``algorithm="auto"`` (:mod:`convbridge.autotune`) ranks the
candidates by them and refines by measurement when allowed, so they need to be right within a factor of
about two where the candidates are close, and right in order of magnitude elsewhere.

The constants were calibrated on the 2-core AVX-512 machine the issue's table was measured on (float32,
forward, medians): a dense layer reaches ``rate = peak x m / (m + M_HALF)`` with ``m`` the smaller of the
output channels per group and the terms per output (the GEMM's narrow side), so ResNet-50's 3x3 64->64 runs
near the peak and a one-channel 51x51 filter far below it; depthwise convolutions follow their own, much
lower rate (oneDNN in channels-first memory, every XLA:CPU grouped convolution). float64 halves the rates. A
complex multiply-add counts as four real ones, at the rate of its components' dtype (complex128 at float64's).

>>> from convbridge.spec import make_conv_spec
>>> from convbridge.plan import Plan
>>> dense = make_conv_spec((8, 64, 56, 56), (64, 64, 3, 3), padding=1, dtypes=("float32", "float32"))
>>> 1e-3 < native(dense, Plan("torch")) < 2e-2
True
"""

from __future__ import annotations

import math

from convbridge.plan import Plan
from convbridge.spec import ConvSpec, ConvTransposeSpec, Spec

__all__ = ["flops", "real_macs", "COMPLEX_MACS", "native", "matmul", "gemm_rate", "OVERHEAD", "PEAK", "DEPTHWISE",
           "BANDWIDTH"]

#: Per-call overhead in seconds (dispatch, argument checks, the framework's own).
OVERHEAD = {"numpy": 30e-6, "jax": 40e-6, "torch": 25e-6}
#: float32 GEMM-bound rate in FLOP/s of a dense convolution at its best, by (backend, algorithm).
PEAK = {("torch", "native"): 3.5e11, ("jax", "native"): 2.0e11, ("numpy", "native"): 5.0e10,
        ("torch", "matmul"): 3.0e11, ("jax", "matmul"): 2.5e11, ("numpy", "matmul"): 1.2e11}
#: Depthwise (one input channel per group) rate in FLOP/s of the frameworks' own convolutions, by backend and
#: whether the input is channels-last in memory (torch's oneDNN has a fast channels-last kernel only).
DEPTHWISE = {("torch", False): 1.6e9, ("torch", True): 2.5e11, ("jax", False): 7e8, ("jax", True): 7e8,
             ("numpy", False): 3e9, ("numpy", True): 3e9}
#: oneDNN runs a channels-first depthwise convolution through its channels-last kernel (copying in and out) up
#: to this kernel side, and through a slow single-threaded path beyond it (the rate ``DEPTHWISE[torch, False]``).
TORCH_DEPTHWISE_REORDER_MAX = 13
#: oneDNN's 1-d depthwise convolution (any layout), FLOP/s.
TORCH_DEPTHWISE_1D = 3.7e10
#: oneDNN's channels-first dense convolution and transposed convolution, as fractions of the channels-last rate.
TORCH_CHANNELS_FIRST = 1 / 1.2
TORCH_TRANSPOSED = 1 / 1.7
#: The GEMM's narrow side at which a dense convolution reaches half its peak rate.
M_HALF = 16.0
#: Memory bandwidth in bytes/s for copies (im2col's columns, layout changes).
BANDWIDTH = 8e9


#: Real multiply-adds per multiply-add of a dtype: a complex one is four real ones.
COMPLEX_MACS = 4


def real_macs(spec: Spec) -> int:
    """Real multiply-adds per multiply-add of the spec's dtype: :data:`COMPLEX_MACS` for complex, else 1.

    >>> from convbridge.spec import make_conv_spec
    >>> real_macs(make_conv_spec((1, 1, 4), (1, 1, 3), dtypes=("complex64", "complex64")))
    4
    """
    return COMPLEX_MACS if str(spec.dtype).startswith("complex") else 1


def flops(spec: Spec) -> float:
    """2 x the real multiply-accumulates of the direct algorithm (conv and conv_transpose: a complex one counts
    as four); 0 for other ops."""
    macs = getattr(spec, "macs", None)
    return 2.0 * float(macs) * real_macs(spec) if macs is not None else 0.0


def _itemsize(spec: Spec) -> int:
    """Bytes of one element of the spec's dtype (float32 when unknown)."""
    return 8 if spec.dtype in ("float64", "complex64") else 16 if spec.dtype == "complex128" else \
        2 if spec.dtype in ("float16", "bfloat16") else 4


def _double(spec: Spec) -> bool:
    """Whether the arithmetic is double precision (float64, complex128), at half the float32 rates."""
    return spec.dtype in ("float64", "complex128")


def _narrow_side(spec: ConvSpec | ConvTransposeSpec) -> float:
    per_group_out = spec.out_channels // spec.groups
    terms = spec.in_channels // spec.groups * math.prod(spec.kernel_spatial)
    return float(min(per_group_out, terms))


def gemm_rate(spec: ConvSpec | ConvTransposeSpec, peak: float) -> float:
    """A dense convolution's rate: ``peak x m / (m + M_HALF)`` (float64, complex128: half of it), in real flop/s."""
    m = _narrow_side(spec)
    rate = peak * m / (m + M_HALF)
    return rate / 2 if _double(spec) else rate


def _channels_last(spec: Spec) -> bool:
    """Whether the user's input keeps channels innermost (e.g. NHWC), so that no copy makes it channels-last."""
    perm = spec.layout.lhs_perm
    return perm[1] == max(perm)


def native(spec: Spec, plan: Plan) -> float:
    """The framework's own convolution (``F.convNd``, ``lax.conv_general_dilated``, the NumPy definition)."""
    if not isinstance(spec, (ConvSpec, ConvTransposeSpec)):
        return OVERHEAD[plan.backend]
    work, last = flops(spec), _channels_last(spec)
    half = 2.0 if _double(spec) else 1.0
    if spec.in_channels // spec.groups == 1 and spec.groups > 1:
        if plan.backend == "torch" and spec.nsp == 1:  # oneDNN's 1-d depthwise: ~37 GFLOP/s at k = 1024
            return OVERHEAD["torch"] + work * half / TORCH_DEPTHWISE_1D
        if plan.backend == "torch" and not last and max(spec.kernel_spatial) <= TORCH_DEPTHWISE_REORDER_MAX:
            moved = 2.0 * (spec.batch * spec.in_channels * math.prod(spec.in_spatial)
                           + spec.batch * spec.out_channels * math.prod(spec.out_spatial)) * _itemsize(spec)
            return OVERHEAD["torch"] + moved / (BANDWIDTH / 2) + work * half / DEPTHWISE[("torch", True)]
        return OVERHEAD[plan.backend] + work * half / DEPTHWISE[(plan.backend, last)]
    rate = gemm_rate(spec, PEAK[(plan.backend, "native")])
    if plan.backend == "torch":
        rate *= TORCH_TRANSPOSED if isinstance(spec, ConvTransposeSpec) else 1.0 if last else TORCH_CHANNELS_FIRST
    return OVERHEAD[plan.backend] + work / rate


def matmul(spec: Spec, plan: Plan) -> float:
    """im2col (a copy of every window) and one GEMM per group; for conv_transpose, the GEMM and col2im."""
    if not isinstance(spec, (ConvSpec, ConvTransposeSpec)):
        return OVERHEAD[plan.backend]
    if isinstance(spec, ConvSpec):
        columns = spec.batch * math.prod(spec.out_spatial) * spec.in_channels * math.prod(spec.kernel_spatial)
    else:
        columns = spec.batch * math.prod(spec.in_spatial) * spec.out_channels * math.prod(spec.kernel_spatial)
    copy = 3.0 * columns * _itemsize(spec) / BANDWIDTH  # written, read by the GEMM, transposed views
    if plan.backend == "jax":  # XLA's gather reads a (taps x blocks) int64 index, compiled in as a constant
        index = 8.0 * math.prod(spec.kernel_spatial) * math.prod(spec.out_spatial if isinstance(spec, ConvSpec)
                                                                 else spec.in_spatial)
        copy += index / (BANDWIDTH / 16)
    return 3 * OVERHEAD[plan.backend] + copy + flops(spec) / gemm_rate(spec, PEAK[(plan.backend, "matmul")])
