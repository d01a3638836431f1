"""FFT convolution (``algorithm="fft"``) on every backend: real FFTs of 2,3-smooth lengths, channels mixed by
one batched product in the frequency domain.

For each spatial dim the input is transformed at a length ``L`` (:func:`fft_lengths`), the zero-dilated,
flipped kernel at the same length (flipping is exact, and makes the product torch's cross-correlation); the
spectra multiply as ``Y[n, o] = sum_c X[n, c] W[o, c]`` within each group; one inverse FFT gives the circular
convolution, whose rows ``(q * stride + S - 1 - lo) mod L`` are the outputs (``S`` the dilated kernel's span).
Zero padding is never materialised: that circular offset stands for the ``lo`` rows, and ``L`` is large enough
that no window wraps onto data it must not read. A padding mode (reflect, replicate, circular) is one gather
per axis first (:func:`convbridge.backends._common.pad_by_mode`). A stride is computed at stride 1 and
sampled (the FFT's cost does not shrink with the stride; the cost model says so, and ``algorithm="auto"``
weighs it). Each axis is transformed separately, the last one by a real FFT, so that rows that are all zero
(the kernel's, the input's padding) are never transformed and the inverse only finishes the rows it keeps.

Every step is the backend's own (``numpy.fft`` or ``scipy.fft`` when SciPy is installed, ``jnp.fft``,
``torch.fft``): JAX compiles the whole program once per (spec, plan) and differentiates it, torch keeps
autograd. float32 computes in complex64, float64 in complex128; float16 and bfloat16 are computed in float32
(complex64) and each output rounded once to its dtype (bias included); NumPy has no bfloat16 at all. complex64
and complex128 inputs take complex FFTs along the last axis too (every frequency: twice the points of a real
FFT's spectrum), the kernel flipped and never conjugated, as torch's and lax's convolutions. An inf
or NaN propagates, but through the transforms: it makes every output of its (image, output channel) slice NaN,
where the direct definition confines it to the windows that read it.

Which lengths: the verdict's bound (:func:`convbridge.bounds.fft_error_bound`) is Higham's Theorem 24.2 for
radix-2 FFTs, with ``t = sum_i ceil(log2 (P_i + S_i - 1))`` stages (``P_i`` the padded input, ``S_i`` the
dilated kernel), each of relative 2-norm error ``eta = u + gamma_4 (sqrt 2 + u) ~ 6.66 u``; stage errors add
(``prod (1 + eta_k) - 1``). A radix-r stage computes each output as an r-term sum of twiddled inputs: the r - 1
complex additions round by at most ``sqrt 2 gamma_{r-1}`` and each twiddled product by ``sqrt 2 gamma_2 + u``
(the twiddle's own error, ``sqrt(3)/2`` included), relative to ``sum |w_j v_j|``; the stage matrix ``A`` has
``|| |A| ||_2 = r`` and ``||A v||_2 = sqrt(r) ||v||_2``, so a radix-3 stage's relative error is at most
``sqrt 3 (2 sqrt 2 + 2 sqrt 2 + 1) u ~ 11.5 u``, below :data:`RADIX3_STAGES` = 1.75 radix-2 stages (the same
argument gives ``sqrt 2 (sqrt 2 + 2 sqrt 2 + 1) u ~ 7.4 u`` for radix 2, matching ``eta``). So a length
``2**a 3**b`` is covered when ``a + 1.75 b <= ceil(log2 (P_i + S_i - 1))`` (:func:`smooth_at_least`): e.g.
576 instead of 1024 for a 51x51 kernel on 512x512 'same' (3.2x fewer points in 2-d), 18432 instead of 32768
for a 1024-tap kernel on 16384 samples. Radix 5 would be ``~ 17.5 u > log2(5) eta`` per stage: not used.

>>> import numpy as np, convbridge as cb
>>> x, w = np.arange(12.0).reshape(1, 1, 12), np.array([[[1.0, -1.0, 2.0]]])
>>> y = cb.conv(x, w, padding="same", algorithm="fft")
>>> bool(np.allclose(y, cb.conv(x, w, padding="same")))
True
>>> fft_lengths(make_conv_spec((1, 1, 12), (1, 1, 3), padding="same"))
(16,)
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from convbridge import backends, dispatch
from convbridge._tracing import tracing
from convbridge._types import Array
from convbridge.backends._common import HALF_DTYPES, pad_by_mode
from convbridge.errors import ArgumentError, ConvBridgeError, DTypeError
from convbridge.memory import footprint
from convbridge.plan import Plan
from convbridge.precision import COMPLEX_DTYPES, FLOAT_DTYPES, is_complex
from convbridge.spec import ConvAxis, ConvSpec, Spec, inverse, make_conv_spec

__all__ = ["fft_lengths", "pow2_at_least", "smooth_at_least", "RADIX3_STAGES", "conv_fft", "supports", "cost", "flops", "fft_bytes", "THROUGHPUT",
           "OVERHEAD"]

#: Sustained float32 rates per backend on this machine's CPU (2 cores, AVX-512), flop/s, of the three parts of
#: :func:`flops`: FFT passes along the last (contiguous) axis, along the other (strided) axes, and the channel
#: product. Calibrated (medians, the three backends in one run) on the 51x51 kernel on (1, 1, 512, 512) 'same'
#: (mostly strided passes), the depthwise k1024 on (8, 64, 16384) 'same' (contiguous passes) and a dense 15x15
#: 16 -> 16 on (8, 16, 64, 64) 'same' (the product).
THROUGHPUT = {"numpy": (7e9, 2.5e9, 2e9), "jax": (6e9, 3e9, 2e9), "torch": (9e9, 4e9, 1.5e9)}
#: Fixed cost of one call (dispatch, plans, small copies), seconds.
OVERHEAD = {"numpy": 1e-4, "jax": 5e-5, "torch": 1e-4}
#: A radix-3 stage's rounding in radix-2 stages (at most ~1.73; see the module's docstring).
RADIX3_STAGES = 1.75
#: float64 runs at about half the float32 rate (twice the bytes, half the SIMD lanes).
_FLOAT64_SLOWDOWN = 2.0


def pow2_at_least(n: int) -> int:
    """The smallest power of two >= n (1 for n <= 1).

    >>> pow2_at_least(537), pow2_at_least(512), pow2_at_least(1)
    (1024, 512, 1)
    """
    return 1 << (n - 1).bit_length() if n > 1 else 1


def fft_lengths(spec: ConvSpec) -> tuple[int, ...]:
    """The FFT length per spatial dim: the smallest ``L = 2**a 3**b`` within the bound's stages
    (:func:`smooth_at_least`) that holds the dilated kernel and lets no window wrap onto data it must not read.

    With zero padding (never materialised), the input's ``n`` rows sit at ``0..n-1`` and output ``q`` reads
    circular rows ``q s - lo + j`` for taps ``j < S``: those below 0 must land on zeros (``L >= n + lo``) and
    none past ``L`` may wrap onto data (``L >= reach - lo``, ``reach = (out - 1) s + S``). A padding mode
    materialises its rows first (``lo = 0`` over the padded input). ``L <= 2**ceil(log2 (P + S - 1))``, the
    length whose stages the verdict's bound counts.

    Shape:
        ``L_i = 2**ceil(log2 max(n_i + lo_i, reach_i - lo_i, S_i))`` (zeros), ``2**ceil(log2 max(P_i, S_i))``
        (modes).

    >>> fft_lengths(make_conv_spec((1, 1, 512, 512), (1, 1, 51, 51), padding="same"))
    (576, 576)
    >>> fft_lengths(make_conv_spec((1, 1, 500), (1, 1, 13))), fft_lengths(make_conv_spec((1, 1, 9), (1, 1, 9)))
    ((512,), (9,))
    """
    out = []
    for a in spec.axes:
        n, lo = (a.size, a.lo) if spec.padding_mode == "zeros" else (a.padded, 0)
        need = max(n + lo, a.reach - lo, a.span)
        out.append(smooth_at_least(need, pow2_at_least(need).bit_length() - 1))
    return tuple(out)


def smooth_at_least(n: int, stages: int) -> int:
    """The smallest ``L = 2**a 3**b >= n`` whose rounding stays within ``stages`` radix-2 stages:
    ``a + RADIX3_STAGES * b <= stages`` (a power of two always qualifies when ``2**stages >= n``).

    >>> smooth_at_least(562, 10), smooth_at_least(17407, 15), smooth_at_least(600, 10), smooth_at_least(5, 3)
    (576, 18432, 648, 6)
    """
    best = pow2_at_least(n)
    three = 1
    for b in range(stages + 1):
        if b * RADIX3_STAGES > stages:
            break
        a = max(0, (-(-n // three) - 1).bit_length())  # the smallest 2**a with 2**a * 3**b >= n
        if a + RADIX3_STAGES * b <= stages and three << a < best:
            best = three << a
        three *= 3
    return best


# --------------------------------------------------------------------------------------- per-backend table

@dataclass(frozen=True)
class _Ops:
    """What the algorithm needs of a framework beyond the backend interface (transpose, take)."""

    rfft: Callable[[Array, int, int], Array]
    fft: Callable[[Array, int, int], Array]
    ifft: Callable[[Array, int, int], Array]
    irfft: Callable[[Array, int, int], Array]
    pad: Callable[[Array, list[tuple[int, int]]], Array]
    flip: Callable[[Array, tuple[int, ...]], Array]
    concat: Callable[[list[Array], int], Array]
    mix: Callable[[Array, Array, Plan], Array]
    astype: Callable[[Array, Any], Array]
    float32: Any
    quiet: Callable[[], contextlib.AbstractContextManager[None]]


@contextlib.contextmanager
def _numpy_quiet() -> Iterator[None]:
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # inf and NaN propagate, as elsewhere
        yield


def _numpy_cast(a: np.ndarray, dtype: Any) -> np.ndarray:
    """``a`` in ``dtype``; a value past the dtype's range becomes inf, as in torch and JAX, without a warning."""
    with np.errstate(over="ignore", invalid="ignore"):
        return a.astype(dtype)


def _numpy_mix(x: np.ndarray, w: np.ndarray, plan: Plan) -> np.ndarray:
    """``(n, g, c, *F) x (g, o, c, *F) -> (n, g, o, *F)`` as one batched matrix product over (g, F)."""
    (n, g, c), o, freq = x.shape[:3], w.shape[1], x.shape[3:]
    f = math.prod(freq)
    y = np.matmul(x.reshape(n, g, c, f).transpose(1, 3, 0, 2), w.reshape(g, o, c, f).transpose(0, 3, 2, 1))
    return y.transpose(2, 0, 3, 1).reshape(n, g, o, *freq)  # (g, f, n, c) @ (g, f, c, o) -> (n, g, o, *F)


@functools.cache
def _numpy_ops() -> _Ops:
    try:  # SciPy's pocketfft: the same algorithm as numpy.fft, on every core (as torch's MKL); optional
        import scipy.fft as sp

        fns: tuple[Callable[..., Any], ...] = tuple(functools.partial(f, workers=-1)
                                                    for f in (sp.rfft, sp.fft, sp.ifft, sp.irfft))
    except ImportError:  # pragma: no cover - scipy is an optional dependency
        fns = (np.fft.rfft, np.fft.fft, np.fft.ifft, np.fft.irfft)
    rfft, fft_, ifft, irfft = fns
    return _Ops(lambda a, n, ax: rfft(a, n, ax), lambda a, n, ax: fft_(a, n, ax), lambda a, n, ax: ifft(a, n, ax),
                lambda a, n, ax: irfft(a, n, ax), lambda a, pairs: np.pad(a, pairs), lambda a, axes: np.flip(a, axes),
                lambda parts, ax: np.concatenate(parts, ax), _numpy_mix, _numpy_cast, np.float32,
                _numpy_quiet)


@functools.cache
def _jax_ops() -> _Ops:
    import jax.numpy as jnp
    from jax import lax

    from convbridge.precision import lax_precision

    def mix(x: Any, w: Any, plan: Plan) -> Any:
        return jnp.einsum("ngc...,goc...->ngo...", x, w, precision=lax.Precision[lax_precision(plan.precision)])

    return _Ops(lambda a, n, ax: jnp.fft.rfft(a, n, ax), lambda a, n, ax: jnp.fft.fft(a, n, ax),
                lambda a, n, ax: jnp.fft.ifft(a, n, ax), lambda a, n, ax: jnp.fft.irfft(a, n, ax),
                lambda a, pairs: jnp.pad(a, pairs), lambda a, axes: jnp.flip(a, axes),
                lambda parts, ax: jnp.concatenate(parts, ax), mix, lambda a, dt: a.astype(dt), jnp.float32,
                contextlib.nullcontext)


@functools.cache
def _torch_ops() -> _Ops:
    import torch
    import torch.nn.functional as F

    def pad(a: Any, pairs: list[tuple[int, int]]) -> Any:
        return F.pad(a, [v for pair in reversed(pairs) for v in pair])

    return _Ops(lambda a, n, ax: torch.fft.rfft(a, n, ax), lambda a, n, ax: torch.fft.fft(a, n, ax),
                lambda a, n, ax: torch.fft.ifft(a, n, ax), lambda a, n, ax: torch.fft.irfft(a, n, ax), pad,
                lambda a, axes: torch.flip(a, axes), lambda parts, ax: torch.cat(parts, ax),
                lambda x, w, plan: torch.einsum("ngc...,goc...->ngo...", x, w), lambda a, dt: a.to(dt), torch.float32,
                contextlib.nullcontext)


_OPS = {"numpy": _numpy_ops, "jax": _jax_ops, "torch": _torch_ops}


# ------------------------------------------------------------------------------------------------ the steps

def _dilate(ops: _Ops, w: Array, spec: ConvSpec) -> Array:
    """``(O, C/g, *k) -> (O, C/g, *S)``, ``S`` the dilated span: ``d - 1`` zeros between taps (pad, reshape,
    crop: exact)."""
    for i, a in enumerate(spec.axes):
        if a.dilation == 1:
            continue
        ax, shape = 2 + i, tuple(w.shape)
        w = w.reshape(*shape[:ax + 1], 1, *shape[ax + 1:])
        w = ops.pad(w, [(0, 0)] * (ax + 1) + [(0, a.dilation - 1)] + [(0, 0)] * (len(shape) - ax - 1))
        w = w.reshape(*shape[:ax], a.kernel * a.dilation, *shape[ax + 1:])
        w = w[(slice(None),) * ax + (slice(0, a.span),)]
    return w


def _spectrum(lengths: tuple[int, ...], full: bool = False) -> tuple[int, ...]:
    """The shape of a real FFT's spectrum over ``lengths``: the last axis keeps its non-negative frequencies
    (``full``: a complex FFT's, every frequency).

    >>> _spectrum((1024, 1024)), _spectrum((1024, 1024), full=True)
    ((1024, 513), (1024, 1024))
    """
    return lengths if full else (*lengths[:-1], 1 + lengths[-1] // 2)


def _forward(ops: _Ops, a: Array, lengths: tuple[int, ...], full: bool) -> Array:
    """The spectrum over the trailing ``len(lengths)`` axes: a real FFT along the last (a complex one for complex
    data, ``full``; only the rows that hold data), then complex FFTs along the others; each zero-extends its axis
    to its length."""
    first = a.ndim - len(lengths)
    a = (ops.fft if full else ops.rfft)(a, lengths[-1], a.ndim - 1)
    for i in reversed(range(len(lengths) - 1)):
        a = ops.fft(a, lengths[i], first + i)
    return a


def _rows(a: ConvAxis, spec: ConvSpec, length: int) -> list[slice]:
    """The circular rows that hold one axis' outputs, ``(q s + S - 1 - lo) mod L`` for ``q < out``, as one
    strided slice, or two when the offset is negative (padding wider than the kernel's span)."""
    lo = a.lo if spec.padding_mode == "zeros" else 0
    offset, last = a.span - 1 - lo, (a.out - 1) * a.stride
    if offset >= 0:
        return [slice(offset, offset + last + 1, a.stride)]
    wrapped = slice(length + offset, min(length, length + offset + last + 1), a.stride)
    count = len(range(wrapped.start, wrapped.stop, a.stride))
    return [wrapped] + ([slice(count * a.stride + offset, offset + last + 1, a.stride)] if count < a.out else [])


def _pick(ops: _Ops, y: Array, rows: list[slice], axis: int) -> Array:
    parts = [y[(slice(None),) * axis + (r,)] for r in rows]
    return parts[0] if len(parts) == 1 else ops.concat(parts, axis)


def _inverse(ops: _Ops, y: Array, spec: ConvSpec, lengths: tuple[int, ...], full: bool) -> Array:
    """The outputs from the product's spectrum: inverse FFTs along the leading spatial axes, keeping only the
    rows sampled after each, then the real inverse along the last (a complex one for complex data, ``full``)."""
    for i, (a, n) in enumerate(zip(spec.axes[:-1], lengths)):
        y = _pick(ops, ops.ifft(y, n, 2 + i), _rows(a, spec, n), 2 + i)
    last = 1 + spec.nsp
    return _pick(ops, (ops.ifft if full else ops.irfft)(y, lengths[-1], last), _rows(spec.axes[-1], spec, lengths[-1]),
                 last)


def _mix(ops: _Ops, x: Array, w: Array, spec: ConvSpec, plan: Plan) -> Array:
    """``Y[n, o] = sum_c X[n, c] W[o, c]`` within each group: ``(N, C_in, *F) x (C_out, C_in/g, *F)``. Only
    axes are split or merged where that is a view (never the frequency axes)."""
    n, g, freq = spec.batch, spec.groups, tuple(x.shape[2:])
    cg, og = spec.in_channels // g, spec.out_channels // g
    if cg == 1 and og == 1:  # depthwise, single channel: an elementwise product
        return x * w[:, 0][None]
    xr, wr = x.reshape(n, g, cg, *freq), w.reshape(g, og, cg, *freq)
    y = xr * wr.reshape(1, g, og, *freq) if cg == 1 else ops.mix(xr, wr, plan)  # channel multiplier: broadcast
    return y.reshape(n, spec.out_channels, *freq)


def conv_fft(spec: Spec, plan: Plan, x: Array, w: Array, b: Array | None) -> Array:
    """FFT convolution of the backend's batched arrays in the user's layout (the registered ``run``)."""
    s = cast(ConvSpec, spec)
    make = _OPS[plan.backend]
    ops, be = (make.__wrapped__() if tracing() else make()), backends.get(plan.backend)  # Dynamo skips caches
    dtype, wide = x.dtype, s.dtype in HALF_DTYPES
    if wide:  # computed in float32, each output rounded once at the end
        x, w = ops.astype(x, ops.float32), ops.astype(w, ops.float32)
        b = None if b is None else ops.astype(b, ops.float32)
    lay, nsp = s.layout, s.nsp
    with ops.quiet():
        xc, wc = be.transpose(x, lay.lhs_perm), be.transpose(w, lay.rhs_perm)
        if s.batch == 0:  # nothing to transform (MKL refuses empty transforms)
            y = xc.reshape(0, s.out_channels, *s.out_spatial)
        else:
            xc, _ = pad_by_mode(s, xc, be.take, range(2, 2 + nsp))  # modes only; zero padding stays implicit
            lengths = fft_lengths(s)
            full = is_complex(s.dtype)
            spectrum = _forward(ops, xc, lengths, full)
            flipped = ops.flip(_dilate(ops, wc, s), tuple(range(2, 2 + nsp)))  # correlation (never conjugated)
            y = _inverse(ops, _mix(ops, spectrum, _forward(ops, flipped, lengths, full), s, plan), s, lengths, full)
        if b is not None:
            y = y + b.reshape(1, -1, *([1] * nsp))
    if wide:
        y = ops.astype(y, dtype)
    return be.transpose(y, inverse(lay.out_perm))


# ------------------------------------------------------------------------------------ support, cost, memory

def supports(spec: Spec, plan: Plan) -> ConvBridgeError | None:
    """Float and complex convolutions with non-negative padding (every spec ``cb.conv`` builds), any rank, layout,
    stride, dilation, groups and padding mode. Never raises."""
    if not isinstance(spec, ConvSpec):
        return ArgumentError(f"algorithm='fft' computes conv, not {spec.op}; use algorithm='native'")
    if spec.dtype not in (None, "float32", "float64", *HALF_DTYPES, *COMPLEX_DTYPES):
        return DTypeError(f"algorithm='fft' computes float convolutions ({', '.join(FLOAT_DTYPES)}) and complex "
                          f"ones ({', '.join(COMPLEX_DTYPES)}), not {spec.dtype}; use algorithm='native'")
    if any(lo < 0 or hi < 0 for lo, hi in spec.padding):
        return ArgumentError(f"algorithm='fft' takes non-negative padding, got {spec.padding}; crop the input first "
                             "or use algorithm='native'")
    return None


def _compute_itemsize(spec: ConvSpec) -> int:
    """Bytes of one real number of the computation (float32 for the 16-bit floats; a complex dtype's component)."""
    return 8 if spec.dtype in ("float64", "complex128") else 4


def _passes(rows: tuple[int, ...], lengths: tuple[int, ...],
            keep: tuple[int, ...] | None = None, full: bool = False) -> tuple[float, float]:
    """Flops of one array's per-axis transforms, ``(along the last axis, along the others)``: forward (``keep``
    None) over data ``rows`` per axis, the real pass along the last axis first; inverse (``keep``: rows kept per
    axis) in the other order, the real pass last. ``full``: complex data, whose last pass is a complex one over
    every frequency (twice the flops, and twice the columns for the other passes)."""
    width, last = _spectrum(lengths, full)[-1], lengths[-1]
    strided = 0.0
    for i, n in enumerate(lengths[:-1]):
        before = math.prod(keep[:i]) if keep is not None else math.prod(rows[:i])
        strided += before * width * math.prod(lengths[i + 1:-1]) * 5.0 * n * math.log2(n)
    real = (5.0 if full else 2.5) * last * math.log2(last) * math.prod(keep[:-1] if keep is not None else rows[:-1])
    return real, strided


def flops(spec: ConvSpec) -> tuple[float, float, float]:
    """``(flops of the passes along the last axis, of the passes along the others, of the channel product)`` of
    the FFT convolution of ``spec``, counting only the rows each pass transforms: 2.5 L log2 L per real pass
    and 5 L log2 L per complex pass of L points (complex data: every pass), 8 per complex multiply-add
    (:func:`cost` divides them by :data:`THROUGHPUT`).

    >>> [f"{v:.3g}" for v in flops(make_conv_spec((1, 1, 512, 512), (1, 1, 51, 51), padding="same"))]
    ['1.42e+07', '2.29e+07', '1.33e+06']
    """
    lengths, full = fft_lengths(spec), is_complex(spec.dtype)
    data = tuple(a.size if spec.padding_mode == "zeros" else a.padded for a in spec.axes)
    cg = spec.in_channels // spec.groups
    arrays = ((spec.batch * spec.in_channels, _passes(data, lengths, full=full)),
              (spec.out_channels * cg, _passes(tuple(a.span for a in spec.axes), lengths, full=full)),
              (spec.batch * spec.out_channels, _passes((), lengths, spec.out_spatial, full)))
    freq = math.prod(_spectrum(lengths, full))
    return (sum(count * p[0] for count, p in arrays), sum(count * p[1] for count, p in arrays),
            8.0 * spec.batch * spec.out_channels * cg * freq)


def cost(spec: Spec, plan: Plan) -> float:
    """Estimated seconds on this machine's CPU: ``OVERHEAD`` plus each part of :func:`flops` over its rate in
    :data:`THROUGHPUT`; float64 and complex128 at half the rates. The stride does not reduce it.

    >>> s = make_conv_spec((1, 1, 512, 512), (1, 1, 51, 51), padding="same")
    >>> 1e-3 < cost(s, Plan("numpy", "fft")) < 0.1
    True
    """
    s = cast(ConvSpec, spec)
    slow = _FLOAT64_SLOWDOWN if s.dtype in ("float64", "complex128") else 1.0
    return OVERHEAD[plan.backend] + slow * sum(f / r for f, r in zip(flops(s), THROUGHPUT[plan.backend]))


def fft_bytes(spec: Spec) -> int:
    """Peak bytes (an estimate): inputs and output, the input's, kernel's and product's spectra (complex, half the
    points plus one row), and the product's transposed copies when channels mix.

    >>> fft_bytes(make_conv_spec((1, 1, 512, 512), (1, 1, 51, 51), padding="same")) // 2**20
    7
    """
    s = cast(ConvSpec, spec)
    f = footprint(s)
    lengths = fft_lengths(s)
    freq = math.prod(_spectrum(lengths, is_complex(s.dtype)))
    cg = s.in_channels // s.groups
    spectra = s.batch * s.in_channels + s.out_channels * cg + s.batch * s.out_channels
    copies = 2 if cg > 1 else 1
    complex_bytes = 2 * _compute_itemsize(s)
    return (f.padded + f.kernel + 2 * f.outputs) * f.itemsize + spectra * copies * freq * complex_bytes


for _name in backends.NAMES:
    dispatch.register(dispatch.Impl(
        "conv", _name, "fft", conv_fft, supports, composite=True, memory=fft_bytes, cost=cost,
        summary="real FFTs of 2,3-smooth lengths, channels mixed by one batched product per frequency"))
