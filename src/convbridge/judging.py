"""``compare`` and ``verify``: run an op on backends (or any callable), and judge every result.

What a judgment reads is computed once per op from its inputs (:func:`gauges`): the float64
reference, the gauge G, the per-element term counts K_e, the products that flush-to-zero may drop,
and the FFT / Winograd bounds when those families are judged. The verdict itself lives in
:mod:`convbridge.parity`. Two ways to turn an undecided result into a decided one live here:

- a **re-run in float64** (numpy and torch natively, jax under a scoped x64 context), automatic when a
  float32/16 result lands between the probabilistic threshold and the rigorous bound;
- **exact mode**: integer-valued data of the same shapes, thinned so that every partial sum is an
  integer the compute format holds exactly; then any difference is a bug.
"""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from convbridge import backends as _backends
from convbridge import dispatch, memory
from convbridge._types import ArrayLike
from convbridge.arrays import dtype_name, framework_of, shape_of, to_host, to_numpy
from convbridge.errors import ArgumentError, ArgumentTypeError, DTypeError, ShapeError, brief, checked_signature, \
    describe_value
from convbridge.memory import verdict_bytes
from convbridge.ops import build, get_op, split_plan_keywords
from convbridge.parity import FAMILIES, Gauges, PairResult, ParityReport, judge_pair
from convbridge.plan import make_plan
from convbridge.precision import DTYPES, REFERENCE, Precision, candidate, is_complex, real_dtype, unit_roundoff
from convbridge.reference import conv_and_gauge, from_canonical
from convbridge.spec import NUMPY_PAD_MODES, ConvSpec, Spec

__all__ = ["compare", "verify", "gauges", "exact_inputs", "RERUN"]

#: ``compare(rerun=...)``: ``"auto"`` re-runs in float64 when a result is undecided; True always; False never.
RERUN = ("auto", True, False)


# ----------------------------------------------------------------------------------------------- gauges

def _batch_axis(spec: Spec, x: np.ndarray) -> int | None:
    if not spec.layout.batched:
        return None
    return 0 if spec.op == "fold" else spec.layout.lhs.index("N")


def _one_image(a: np.ndarray, axis: int | None) -> np.ndarray:
    return a if axis is None else a[(slice(None),) * axis + (slice(0, 1),)]


def term_map(spec: Spec, host: Sequence[np.ndarray | None]) -> np.ndarray:
    """K_e: the products that reach each output element (+1 with a bias), for one image (broadcastable).

    Counted by running the reference on ones: zero padding, dilation holes and transposed strides add
    nothing; reflect/replicate/circular padding reads real values, which count. A convolution's count is the
    same for every output channel and separable over the spatial axes (:func:`conv_terms`).
    """
    if spec.op == "unfold":
        return np.zeros(())
    if isinstance(spec, ConvSpec):
        return conv_terms(spec)
    reference = get_op(spec.op).reference
    x0 = np.asarray(host[0])
    x1 = np.ones(_one_image(x0, _batch_axis(spec, x0)).shape)
    if get_op(spec.op).kernel_is_array:
        w, b = np.asarray(host[1]), host[2]
        return np.asarray(reference(x1, np.ones(w.shape), None if b is None else np.ones(np.asarray(b).shape), spec))
    return np.asarray(reference(x1, spec))


def conv_terms(spec: ConvSpec) -> np.ndarray:
    """K_e of a convolution, ``(1, 1, *out)`` in the output's layout (no N when unbatched): C/g times the taps of
    each axis that land inside the input (every tap with reflect/replicate/circular padding), +1 with a bias.

    >>> from convbridge.spec import make_conv_spec
    >>> conv_terms(make_conv_spec((1, 2, 4), (3, 2, 3), padding=1)).tolist()
    [[[4.0, 6.0, 6.0, 4.0]]]
    """
    counts = np.full((), float(spec.in_channels // spec.groups))
    for a in spec.axes:
        taps = np.arange(a.out)[:, None] * a.stride + np.arange(a.kernel)[None, :] * a.dilation - a.lo
        inside = (taps >= 0) & (taps < a.size) if spec.padding_mode == "zeros" else np.ones(taps.shape, bool)
        counts = np.multiply.outer(counts, np.count_nonzero(inside, axis=1).astype(np.float64))
    counts = counts.reshape(1, 1, *spec.out_spatial) + float(spec.has_bias)
    return from_canonical(counts, spec)


def _subnormal(a: np.ndarray) -> np.ndarray:
    """|a| where a is subnormal in its own dtype, else 0."""
    try:
        tiny = float(np.finfo(a.dtype).tiny)
    except ValueError:
        import ml_dtypes

        tiny = float(ml_dtypes.finfo(a.dtype).tiny)
    if a.dtype.kind == "f":  # first look in the array's own dtype (half the memory of float64 for float32)
        own = np.abs(a)
        if not np.any((own < a.dtype.type(tiny)) & (own != 0)):
            return np.zeros(a.shape)
    m = np.abs(a.astype(np.float64))
    return np.where((m > 0) & (m < tiny), m, 0.0)


def gauges(spec: Spec, arrays: Sequence[ArrayLike | None], families: Sequence[str] = ("direct",), *,
           exact: bool = False) -> Gauges:
    """Everything the verdict reads, from the op's inputs (any framework), in float64.

    ``exact``: the inputs are :func:`exact_inputs`' integer data, on which every partial sum is an integer of at
    most ``2**24`` in magnitude for float32 and narrower dtypes; float32 arithmetic (twice BLAS's float64 rate)
    then computes a convolution's reference and gauge exactly, in any summation order.
    """
    host = [None if a is None else to_numpy(a) for a in arrays]
    if is_complex(spec.dtype):
        g = _complex_gauges(spec, host)
        return _fast_bounds(g, spec, host, families) if "fft" in families or "winograd" in families else g
    reference = get_op(spec.op).reference
    with np.errstate(over="ignore", invalid="ignore"):  # inf inputs give inf/NaN here, judged, not warned about
        if isinstance(spec, ConvSpec):  # the reference and the gauge share each block of windows
            ref, gauge = _conv_and_gauge(spec, host, exact)
        else:
            ref = np.asarray(reference(*host, spec))
            gauge = np.asarray(reference(*(None if h is None else np.abs(h.astype(np.float64)) for h in host), spec))
        flushed: np.ndarray | float = 0.0
        subs = [None if h is None else _subnormal(h) for h in host]
        if any(s is not None and s.any() for s in subs[:2]):
            absolute = [None if h is None else np.abs(h.astype(np.float64)) for h in host]
            if get_op(spec.op).kernel_is_array:
                flushed = np.asarray(reference(subs[0], absolute[1], None, spec)) + np.asarray(
                    reference(absolute[0], subs[1], None, spec))
            else:
                flushed = np.asarray(reference(subs[0], spec))
    terms = term_map(spec, host)
    g = Gauges(gauge=gauge, terms=terms, reference=ref, flushed=flushed, spatial_axes=_spatial_axes(spec))
    if "fft" in families or "winograd" in families:
        g = _fast_bounds(g, spec, host, families)
    return g


#: Terms a complex result's bound counts per real product count K: each component of a complex multiply-add sums
#: 2K real products (4 real convolutions, as XLA does) or takes 3 real convolutions of K terms and 2 subtractions
#: (Gauss's trick, as torch does: Im = conv(xr + xi, wr + wi) - conv(xr, wr) - conv(xi, wi)), whose error is at most
#: (3 gamma_K + 7 u) G with G = op(|Re x| + |Im x|, |Re w| + |Im w|) + |Re b| + |Im b|; gamma_{3K + 8} covers both.
COMPLEX_TERMS = (3, 8)


def _magnitude(a: np.ndarray) -> np.ndarray:
    """|Re a| + |Im a| in float64 (|a| for a real array): what the complex gauge sums."""
    if np.iscomplexobj(a):
        return np.abs(a.real.astype(np.float64)) + np.abs(a.imag.astype(np.float64))
    return np.abs(a.astype(np.float64))


def _complex_gauges(spec: Spec, host: Sequence[np.ndarray | None]) -> Gauges:
    """:func:`gauges` of a complex op, from real float64 reference calls on the real and imaginary parts:
    ``op(x, w, b) = op(xr, wr, br) - op(xi, wi, 0) + i (op(xr, wi, bi) + op(xi, wr, 0))`` (unfold and fold act on
    each part), the gauge ``op(|xr| + |xi|, |wr| + |wi|) + |br| + |bi|`` and, for ops that multiply, 3 K + 8 terms
    (:data:`COMPLEX_TERMS`). The bound then holds for each component."""
    real = replace(spec, dtype=real_dtype(str(spec.dtype)))
    reference = get_op(spec.op).reference
    parts = [None if h is None else (h.real.astype(np.float64), h.imag.astype(np.float64)) for h in host]
    with np.errstate(over="ignore", invalid="ignore"):
        if get_op(spec.op).kernel_is_array:
            (xr, xi), (wr, wi) = parts[0], parts[1]  # type: ignore[misc]
            br, bi = parts[2] if parts[2] is not None else (None, None)
            re = np.asarray(reference(xr, wr, br, real)) - np.asarray(reference(xi, wi, None, real))
            im = np.asarray(reference(xr, wi, bi, real)) + np.asarray(reference(xi, wr, None, real))
            mags = [None if h is None else _magnitude(h) for h in host]
            gauge = np.asarray(reference(mags[0], mags[1], mags[2], real))
            abs_b = None if br is None else np.abs(br)
            real_part = np.asarray(reference(np.abs(xr), np.abs(wr), abs_b, real)) + np.asarray(
                reference(np.abs(xi), np.abs(wi), None, real))
            split = np.stack(np.broadcast_arrays(real_part, gauge), axis=-1)
            subs = [None if h is None else _subnormal(h.real) + _subnormal(h.imag) for h in host]
            flushed: np.ndarray | float = 0.0
            if any(sb is not None and sb.any() for sb in subs[:2]):
                flushed = np.asarray(reference(subs[0], mags[1], None, real)) + np.asarray(
                    reference(mags[0], subs[1], None, real))
        else:
            (xr, xi) = parts[0]  # type: ignore[misc]
            re, im = np.asarray(reference(xr, real)), np.asarray(reference(xi, real))
            gauge = np.asarray(reference(_magnitude(host[0]), real))  # type: ignore[arg-type]
            split = np.stack([np.asarray(reference(np.abs(xr), real)), np.asarray(reference(np.abs(xi), real))], -1)
            flushed = 0.0
    terms = term_map(real, [None if h is None else h.real for h in host])
    if get_op(spec.op).kernel_is_array:
        terms = COMPLEX_TERMS[0] * terms + COMPLEX_TERMS[1]
    both = np.empty(re.shape, np.complex128)  # re + 1j * im would turn an infinite imaginary part into NaN + ...
    both.real, both.imag = re, im
    return Gauges(gauge=gauge, terms=terms, reference=both, flushed=flushed, spatial_axes=_spatial_axes(spec),
                  parts=split)


def _conv_and_gauge(spec: ConvSpec, host: Sequence[np.ndarray | None], exact: bool) -> tuple[np.ndarray, np.ndarray]:
    """A convolution's float64 reference and gauge; in float32 when that is exact: integer inputs whose every partial
    sum is at most 2**24 in magnitude (checked: integers, and max G <= 2**24 afterwards)."""
    if exact and unit_roundoff(str(spec.dtype)) >= 2.0**-24 and all(
            h is None or np.array_equal(h, np.round(h)) for h in host):
        ref, gauge = conv_and_gauge(host[0], host[1], host[2], spec, dtype=np.float32)
        if float(np.max(gauge, initial=0.0)) <= 2.0**24:
            return ref.astype(np.float64), gauge.astype(np.float64)
    return conv_and_gauge(host[0], host[1], host[2], spec)


def _spatial_axes(spec: Spec) -> tuple[int, ...]:
    if spec.op not in ("conv", "conv_transpose"):
        return ()
    out = spec.layout.out if spec.layout.batched else spec.layout.out.replace("N", "")
    return tuple(i for i, c in enumerate(out) if c not in "NC")


def _fast_bounds(g: Gauges, spec: Spec, host: Sequence[np.ndarray | None], families: Sequence[str]) -> Gauges:
    """The FFT and Winograd bounds, for a conv (canonical arrays in, the user's output layout out)."""
    from convbridge import bounds
    from convbridge.reference import to_canonical

    if not isinstance(spec, ConvSpec):
        raise ArgumentError(f"the FFT and Winograd bounds cover conv, not {spec.op}; judge it with "
                            "algorithm='direct'")
    wide = np.complex128 if is_complex(spec.dtype) else np.float64
    if "winograd" in families and is_complex(spec.dtype):
        raise ArgumentError("complex results are judged by the direct or the FFT bound, not Winograd's; judge them "
                            "with algorithm='direct' or 'fft'")
    xc = to_canonical(np.asarray(host[0], wide), spec)
    xc = np.pad(xc, [(0, 0), (0, 0), *spec.padding], mode=NUMPY_PAD_MODES[spec.padding_mode])  # type: ignore[call-overload]
    wc = np.asarray(host[1], wide).transpose(spec.layout.rhs_perm)
    canon_slices = (spec.batch if spec.layout.batched else 1, spec.out_channels) + (1,) * spec.nsp
    fft = wino = None
    if "fft" in families:
        def fft(u: float) -> np.ndarray:
            e = bounds.fft_error_bound(xc, wc, groups=spec.groups, stride=spec.stride, dilation=spec.dilation, u=u)
            return from_canonical(np.asarray(e).reshape(canon_slices), spec)
    if "winograd" in families:
        if spec.nsp > 2 or set(spec.kernel_spatial) != {3} or set(spec.stride) != {1} or set(spec.dilation) != {1}:
            raise ArgumentError(f"the Winograd bound covers F(m, 3) for 1-d and 2-d convolutions with stride 1 and "
                                f"dilation 1; this conv has kernel {spec.kernel_spatial}, stride {spec.stride}, "
                                f"dilation {spec.dilation}: judge it with algorithm='direct'")
        channels = spec.in_channels // spec.groups
        gauges_m = {m: from_canonical(bounds.winograd_gauge(xc, wc, m=m, groups=spec.groups), spec)
                    for m in range(2, 7)}

        def wino(u: float) -> np.ndarray:
            worst = None
            for m, gw in gauges_m.items():
                n = bounds.winograd_terms(m, channels, rank=spec.nsp) * u
                b = (n / (1 - n) if n < 1 else math.inf) * gw + u * g.gauge  # + the bias addition
                worst = b if worst is None else np.maximum(worst, b)
            assert worst is not None
            return worst
    return replace(g, fft=fft, winograd=wino)


# ----------------------------------------------------------------------------------------------- who runs

@dataclass(frozen=True)
class _Runner:
    """A named backend, or a callable ``fn(x, w, b) -> y`` on the caller's arrays."""

    name: str
    backend: str | None = None
    fn: Callable[..., Any] | None = None


def _runners(entries: object) -> tuple[_Runner, ...]:
    if isinstance(entries, str) or callable(entries):
        entries = (entries,)
    if isinstance(entries, Mapping):
        entries = tuple(entries.items())
    if not isinstance(entries, Sequence):
        raise ArgumentError(f"backends must be a name or a sequence of names (or callables fn(x, w, b) -> y) such "
                            f"as ('torch', 'jax', my_conv), got {brief(entries)}")
    out: list[_Runner] = []
    for e in entries:
        if isinstance(e, str):
            out.append(_Runner(_backends.validate(e), backend=_backends.validate(e)))
        elif callable(e):
            out.append(_Runner(_callable_name(e), fn=e))
        elif isinstance(e, tuple) and len(e) == 2 and isinstance(e[0], str) and callable(e[1]):
            out.append(_Runner(e[0], fn=e[1]))
        else:
            raise ArgumentTypeError(f"each of backends is a backend name, a callable fn(x, w, b) -> y or a "
                                    f"(name, callable) pair, got {describe_value(e)}")
    if not out:
        raise ArgumentError("compare needs at least one backend, e.g. backends=('torch', 'jax')")
    names = [r.name for r in out]
    clash = sorted({n for n in names if names.count(n) > 1} | ({"reference"} & set(names)))
    if clash:
        raise ArgumentError(f"backends {tuple(names)} repeats a name ({', '.join(clash)}; 'reference' is taken); "
                            "list each backend once, and name callables with (name, fn) pairs")
    return tuple(out)


def _callable_name(fn: Callable[..., Any]) -> str:
    """``__qualname__`` without the enclosing function (``test.<locals>.my_port`` -> ``my_port``)."""
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    if not isinstance(name, str):
        inner = getattr(fn, "func", None)  # functools.partial
        name = getattr(inner, "__qualname__", None) or type(fn).__name__
    return str(name).rpartition("<locals>.")[2]


@contextlib.contextmanager
def _float64_scope() -> Iterator[None]:
    """JAX's x64 mode for the duration (restored after), when JAX is loaded; nothing otherwise."""
    if "jax" in sys.modules:  # only a loaded JAX can be asked for float64 here
        from convbridge.backends import jax_backend

        with jax_backend.float64():
            yield
    else:
        yield


def _run_all(spec: Spec, runners: Sequence[_Runner], arrays: Sequence[ArrayLike | None], x: ArrayLike,
             plan_kwargs: Mapping[str, Any], family: str) -> dict[str, tuple[np.ndarray, Precision, str]]:
    runs: dict[str, tuple[np.ndarray, Precision, str]] = {}
    for r in runners:
        if r.backend is not None:
            plan = make_plan(r.backend, x, **plan_kwargs)
            native = dispatch.place(plan, arrays)
            if plan.algorithm == "auto":  # judged by the bound of the algorithm it runs
                from convbridge import autotune

                plan = replace(plan, algorithm=autotune.resolve(spec, plan, native).algorithm)
            impl = dispatch.find(spec, plan)
            y = dispatch.execute(impl, spec, plan, native)
            be = _backends.get(r.backend)  # on the host in its own dtype (a torch bfloat16 result stays bfloat16)
            runs[r.name] = (to_host(y), be.precision(spec, plan, native[0]), _family_of(plan.algorithm))
        else:
            assert r.fn is not None
            args = tuple(arrays) + (None,) * (3 - len(arrays)) if get_op(spec.op).kernel_is_array else tuple(arrays)
            y = r.fn(*args)
            runs[r.name] = (_checked_result(y, r.name, spec), candidate(None, dtype_name(y)), family)
    return runs


#: The registered algorithms that a bound other than the direct one judges.
_ALGORITHM_FAMILIES = {"fft": "fft"}


def _family_of(algorithm: str) -> str:
    return _ALGORITHM_FAMILIES.get(algorithm, "direct")


def _families(spec: Spec, runners: Sequence[_Runner], family: str, plan_kwargs: Mapping[str, Any],
              x: ArrayLike) -> tuple[str, ...]:
    """The bound families the runs need: the callables' family, and each named backend's algorithm's (``auto``
    may pick FFT, so it asks for every family its choice could need)."""
    found = {family} if any(r.fn is not None for r in runners) else set()
    algorithm = plan_kwargs.get("algorithm")
    for r in runners:
        if r.backend is not None:
            found.add("fft" if algorithm == "auto" and spec.op == "conv" else _family_of(str(algorithm)))
    return tuple(sorted(found or {"direct"}))


def _checked_result(y: object, name: str, spec: Spec) -> np.ndarray:
    """A callable's result as NumPy, after its shape and dtype are checked against the spec."""
    if y is None or isinstance(y, (str, bytes, Mapping)) or not hasattr(y, "shape"):
        raise ShapeError(f"{name} returned {describe_value(y)}, not an array; compare expects fn(x, w, b) -> y")
    shape = tuple(shape_of(y))
    if shape != tuple(spec.out_shape):
        raise ShapeError(f"{name} returned shape {shape} but this {spec.op} gives {tuple(spec.out_shape)}: a "
                         "different result, not rounding (check its layout, padding, stride)")
    got = dtype_name(y)
    if got != str(spec.dtype):
        raise DTypeError(f"{name} returned {got} for {spec.dtype} inputs; a result in another dtype is not the same "
                         "computation (cast inside the callable, or compare in that dtype)")
    return to_host(y, f"the result of {name}")


# ----------------------------------------------------------------------------------------------- exact data

def exact_inputs(spec: Spec, arrays: Sequence[ArrayLike | None], *, seed: int = 0,
                 bits: int | None = None) -> tuple[np.ndarray | None, ...]:
    """Integer-valued inputs of the same shapes (NumPy float64) on which every partial sum is exact.

    Values are integers in [-a, a] with a small; the kernel is thinned (most entries zero) until
    max G = op(|x|, |w|) + |b| <= 2**bits, so every partial sum is an integer the compute format holds
    (2**24 for float32, 2**11 float16, 2**8 bfloat16, each result stored in the dtype).
    """
    dtype = str(spec.dtype)
    p = bits if bits is not None else round(-math.log2(unit_roundoff(dtype)))  # integers up to 2**p are exact
    budget = 2.0**p
    reference = get_op(spec.op).reference
    host = [None if a is None else np.shape(a) for a in arrays]
    rng = np.random.default_rng(seed)
    kmax = max(float(spec.terms), 1.0)
    a = max(1, min(2 ** (p // 3), int(math.sqrt(budget / (2 * kmax)))))
    density = min(1.0, budget / (2 * kmax * a * a))
    complex_ = is_complex(spec.dtype)
    real = replace(spec, dtype=real_dtype(dtype)) if complex_ else spec

    def draw(shape: Any, bound: int) -> np.ndarray:
        v = rng.integers(-bound, bound + 1, size=shape).astype(np.float64)
        return v + 1j * rng.integers(-bound, bound + 1, size=shape) if complex_ else v

    for _ in range(60):
        x = draw(host[0], a)
        if not get_op(spec.op).kernel_is_array:
            cols = x * (rng.random(host[0]) < density)
            if float(np.max(np.abs(reference(_magnitude(cols), real)), initial=0.0)) <= budget:
                return (cols,)
        else:
            w = draw(host[1], a) * (rng.random(host[1]) < density)
            b = None if host[2] is None else _nonzero(draw(host[2], a), rng, complex_)
            if _gauge_below(real, x, w, b, budget):
                return x, w, b
        if a > 1:
            a = max(1, a // 2)
        else:
            density /= 2
    raise ArgumentError(f"no integer data keeps every partial sum of this {spec.op} below 2**{p}; exact mode "
                        "cannot run it")


def _nonzero(b: np.ndarray, rng: np.random.Generator, complex_: bool) -> np.ndarray:
    """``b`` with every zero (every zero part, for complex data) replaced by +-1: a bias of zeros would let exact
    data miss a dropped bias."""
    def fill(part: np.ndarray) -> np.ndarray:
        return np.where(part == 0, rng.choice([-1.0, 1.0], size=part.shape), part)

    return fill(b.real) + 1j * fill(b.imag) if complex_ else fill(b)


def _gauge_below(spec: Spec, x: np.ndarray, w: np.ndarray, b: np.ndarray | None, budget: float) -> bool:
    """max G <= budget, G = op(|x|, |w|) + |b|. For a convolution, first by the cheap bound max|x| times the largest
    L1 norm of one output channel's kernel, plus max|b|: no element sums more; else by computing G."""
    x, w, b = _magnitude(x), _magnitude(w), None if b is None else _magnitude(b)  # |Re| + |Im| for complex data
    if isinstance(spec, ConvSpec):
        per_channel = w.transpose(spec.layout.rhs_perm).reshape(spec.out_channels, -1).sum(axis=1)
        bound = float(np.max(x, initial=0.0)) * float(np.max(per_channel, initial=0.0))
        if bound + (0.0 if b is None else float(np.max(b, initial=0.0))) <= budget:
            return True
    g = get_op(spec.op).reference(x, w, b, spec)
    return float(np.max(g, initial=0.0)) <= budget


def _as_inputs_like(values: Sequence[np.ndarray | None], like: Sequence[ArrayLike | None],
                    dtype: str) -> tuple[Any, ...]:
    """NumPy values as arrays of the caller's framework and device, in ``dtype``."""
    np_dtype = _np_dtype(dtype)
    host = tuple(None if v is None else v.astype(np_dtype) for v in values)
    plan = make_plan(None, like[0])
    placed = dispatch.place(plan, host)
    return tuple(placed)


def _np_dtype(dtype: str) -> Any:
    if dtype == "bfloat16":
        import ml_dtypes

        return ml_dtypes.bfloat16
    return np.dtype(dtype)


# ----------------------------------------------------------------------------------------------- reports

def _report(spec: Spec, runs: Mapping[str, tuple[np.ndarray, Precision, str]], g: Gauges, *,
            exact: bool = False, notes: Sequence[str] = ()) -> ParityReport:
    pairs: list[PairResult] = []
    outputs: dict[str, np.ndarray] = {"reference": np.asarray(g.reference)}
    names = list(runs)
    for name in names:
        out, prec, fam = runs[name]
        outputs[name] = out
        pairs.append(_judge((name, "reference"), out, outputs["reference"], g, (prec, REFERENCE), (fam, "direct"),
                            exact=exact, b_is_reference=True))
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            pairs.append(_judge((a, b), runs[a][0], runs[b][0], g, (runs[a][1], runs[b][1]),
                                (runs[a][2], runs[b][2]), exact=exact))
    ref_label = ("complex128 from float64 NumPy references on the real and imaginary parts"
                 if is_complex(spec.dtype) else REFERENCE.label)
    precisions = {n: p.label for n, (_, p, _) in runs.items()} | {"reference": ref_label}
    terms = int(np.max(g.terms)) if np.size(g.terms) else 0
    return ParityReport(op=spec.op, description=spec.describe(), shape=spec.out_shape, dtype=str(spec.dtype),
                        terms=terms, precisions=precisions, pairs=tuple(pairs), outputs=outputs,
                        gauge=g.gauge, term_map=g.terms, exact=exact, notes=tuple(notes))


def _judge_pair(names: tuple[str, str], a: np.ndarray, b: np.ndarray, g: Gauges,
                precisions: tuple[Precision, Precision], families: tuple[str, str],
                b_is_reference: bool = False) -> PairResult:
    """:func:`judge_pair`, with complex results judged as their real and imaginary parts (a trailing axis of 2 in
    ``worst_index``: 0 real, 1 imaginary), each held to the complex bound."""
    if np.iscomplexobj(a) or np.iscomplexobj(b):
        if "winograd" in families:
            raise ArgumentError("complex results are judged by the direct or the FFT bound, not Winograd's; judge "
                                "them with algorithm='direct' or 'fft'")
        a, b, g = _split(a), _split(b), _split_gauges(g)
    return judge_pair(names, a, b, g, None, precisions, b_is_reference=b_is_reference, families=families)[0]


def _split(a: np.ndarray) -> np.ndarray:
    """A complex array as its real and imaginary parts on a new trailing axis, in the component dtype."""
    a = np.asarray(a)
    return np.stack([a.real, a.imag], axis=-1) if np.iscomplexobj(a) else a[..., None]


def _split_gauges(g: Gauges) -> Gauges:
    """:class:`Gauges` for :func:`_split` results: each part has its own gauge (:attr:`Gauges.parts`) and shares its
    element's term count and its slice's FFT bound (a bound on the complex error's 2-norm bounds each part's)."""
    flushed = g.flushed[..., None] if isinstance(g.flushed, np.ndarray) and g.flushed.ndim else g.flushed
    fft = g.fft
    gauge = np.asarray(g.gauge)[..., None] if g.parts is None else g.parts
    return Gauges(gauge=gauge, terms=np.asarray(g.terms)[..., None],
                  reference=None if g.reference is None else _split(g.reference), flushed=flushed,
                  fft=None if fft is None else (lambda u: np.asarray(fft(u))[..., None]),
                  spatial_axes=g.spatial_axes)


def _judge(names: tuple[str, str], a: np.ndarray, b: np.ndarray, g: Gauges, precisions: tuple[Precision, Precision],
           families: tuple[str, str], *, exact: bool, b_is_reference: bool = False) -> PairResult:
    result = _judge_pair(names, a, b, g, precisions, families, b_is_reference)
    if not exact or set(families) != {"direct"}:  # integer data does not make FFT or Winograd transforms exact
        return result
    same = result.array_equiv or np.array_equal(_split(a).astype(np.float64), _split(b).astype(np.float64),
                                                equal_nan=True)
    ref = np.asarray(g.reference)
    zeros = float(np.mean(ref == 0)) if ref.size else 0.0
    weak = f" (weak evidence: {zeros:.0%} of the outputs are zero)" if zeros > 0.5 else ""
    if same:
        return replace(result, verdict="identical", evidence="exact: integer data, bitwise equal" + weak, reason="")
    return replace(result, verdict="mismatch", reason="", evidence=f"exact: integer data where every partial sum is "
                   f"exact, yet {result.n_different} element(s) differ: a bug, not rounding")


def _settle(report: ParityReport, runs: Mapping[str, tuple[np.ndarray, Precision, str]], g: Gauges,
            again: ParityReport | None, exact: ParityReport | None) -> ParityReport:
    """Decide each undecided (inconclusive or weak) pair from its re-runs: in float64 (``again``) and on exact
    integer data in the original dtype (``exact``, which also tests a dtype's own code path).

    A mismatch on exact data is a bug. A float64 mismatch is a bug too, unless exact data is bitwise identical and
    the float64 outputs lie within the original dtype's thresholds: then the implementation computes below float64
    inside (a float32 accumulation cast up), which is rounding. Agreement in a re-run, with no mismatch in the
    other, is equivalence (float64 can stay undecided where rounding errors are biased, as on data spanning many
    binades; exact data still decides the meaning).
    """
    pairs = []
    for p in report.pairs:
        if p.verdict != "inconclusive" and not p.weak or p.overflowed:  # a re-run cannot decide a question of range
            pairs.append(p)
            continue
        q64 = _pair_or_none(again, p)
        qx = _pair_or_none(exact, p)
        if qx is not None and qx.verdict == "mismatch":
            pairs.append(replace(p, verdict="mismatch", weak=False, evidence=f"re-run on exact integer data: "
                                 f"{qx.evidence}"))
        elif q64 is not None and q64.verdict == "mismatch":
            low = _lower_precision(p, again, runs, g) if qx is not None and again is not None else None
            if low is not None and qx is not None and qx.verdict == "identical" and low.verdict != "mismatch":
                pairs.append(replace(p, verdict="equivalent", weak=False, evidence="re-run on exact integer data: "
                                     "identical; the float64 re-run differs only by rounding of the original dtype "
                                     "(it computes below float64 inside)"))
            else:
                pairs.append(replace(p, verdict="mismatch", weak=False, evidence=f"re-run in float64: {q64.evidence}"))
        elif any(q is not None and q.verdict in AGREE for q in (q64, qx)):  # and neither is a mismatch
            how = " and ".join(f"{label} {q.verdict}" for label, q in (("re-run in float64:", q64),
                                                                        ("re-run on exact integer data:", qx))
                               if q is not None)
            pairs.append(replace(p, verdict="equivalent", weak=False, evidence=how))
        elif p.verdict == "inconclusive":
            states = "; ".join(f"{label} {q.verdict}" for label, q in (("float64 re-run", q64),
                                                                       ("exact re-run", qx)) if q is not None)
            pairs.append(replace(p, reason=p.reason + (f"; {states}" if states else "; no re-run could run")))
        else:
            pairs.append(p)
    notes = list(report.notes)
    for label, r in (("re-run in float64", again), ("re-run on exact integer data", exact)):
        if r is not None:
            notes += [f"{label}: {n}" for n in r.notes]
    return replace(report, pairs=tuple(pairs), rerun=again, exact_rerun=exact, notes=tuple(notes))


AGREE = ("identical", "equivalent")


def _pair_or_none(report: ParityReport | None, p: PairResult) -> PairResult | None:
    if report is None:
        return None
    try:
        return report.pair(p.a, p.b)
    except KeyError:  # that result could not re-run (the notes say why)
        return None


def _lower_precision(p: PairResult, again: ParityReport, runs: Mapping[str, tuple[np.ndarray, Precision, str]],
                     g: Gauges) -> PairResult | None:
    """The float64 re-run's outputs judged with the original computations' precisions."""
    def prec(name: str) -> Precision:
        return REFERENCE if name == "reference" else runs[name][1]

    def fam(name: str) -> str:
        return "direct" if name == "reference" else runs[name][2]

    try:
        a, b = again.outputs[p.a], again.outputs[p.b]
    except KeyError:
        return None
    return _judge_pair((p.a, p.b), a, b, g, (prec(p.a), prec(p.b)), (fam(p.a), fam(p.b)))


# ----------------------------------------------------------------------------------------------- the API

def _family(algorithm: object) -> str:
    if not isinstance(algorithm, str) or algorithm.lower() not in FAMILIES:
        raise ArgumentError(f"algorithm names the family whose error bound judges the result: "
                            f"{', '.join(map(repr, FAMILIES))}; got {brief(algorithm)}")
    return algorithm.lower()


@checked_signature
def compare(x: ArrayLike, kernel: ArrayLike = None, bias: ArrayLike | None = None, *, op: str = "conv",
            backends: Any = ("torch", "jax"), rerun: bool | str = "auto", exact: bool = False, grad: bool = False,
            **op_kwargs: Any) -> ParityReport:
    """Run ``op`` on several backends (or callables) and judge every result against the float64 reference.

    Args:
        x, kernel, bias: as for :func:`conv` / :func:`conv_transpose` (from any framework). For
            ``"unfold"`` and ``"fold"``, ``x`` is the op's input and ``kernel`` the kernel size
            (or pass ``kernel_size=``); they take no bias, and fold needs ``output_size=``.
        op: ``"conv" | "conv_transpose" | "unfold" | "fold"``.
        backends: backend names, callables ``fn(x, w, b) -> y`` (b may be None; they receive the
            caller's arrays in the spec's layout; ``fn(x)`` for unfold and fold; they must return the op's
            output shape and dtype), or
            ``(name, fn)`` pairs; callables are named by ``__qualname__`` unless named.
        rerun: ``"auto"`` (default): when a result is undecided (between the probabilistic threshold and
            the rigorous bound, no power, or blind to a 1e-4 relative change), run it again in float64 and on
            exact integer data in its dtype, and let those decide; ``True``: always re-run; ``False``: never.
        exact: run on integer-valued data of the same shapes (not ``x``'s values), thinned so that every
            partial sum is exact in the dtype; then equality must be bitwise.
        grad: also judge the gradients with respect to x, the kernel and the bias (conv and conv_transpose; torch,
            JAX and callables written in them): each backend's VJP of one seeded cotangent against the float64
            reference VJP, in :attr:`ParityReport.gradients` (:mod:`convbridge.gradparity`).
        **op_kwargs: the op's keyword arguments (stride, padding, layout, ...), ``preferred_element_type``
            (conv and conv_transpose: the inputs are widened to it and judged there), and the plan's (algorithm,
            precision, device), which apply to every backend. ``algorithm="direct" | "fft" | "winograd"``
            names the family whose bound judges the callables' results (named backends run natively).

    Returns:
        A :class:`ParityReport`; ``print(report)`` shows the table and each pair's evidence;
        ``report.verdict`` follows from the results against the reference.

    >>> import numpy as np, convbridge as cb
    >>> rng = np.random.default_rng(0)
    >>> x, w = rng.standard_normal((2, 3, 8, 8)), rng.standard_normal((4, 3, 3, 3))
    >>> cb.compare(x.astype("float32"), w.astype("float32"), backends=("numpy",)).verdict in ("identical", "equivalent")
    True
    >>> cb.compare(x.astype("float32"), (3, 3), op="unfold", backends=("numpy",)).verdict
    'identical'
    """
    if grad is not False:
        from convbridge.gradparity import compare_gradients

        return compare_gradients(x, kernel, bias, op=op, backends=backends, rerun=rerun, exact=exact, grad=grad,
                                 **op_kwargs)
    runners = _runners(backends)
    if rerun not in RERUN or not isinstance(rerun, (bool, str)):
        raise ArgumentError(f"rerun is 'auto', True or False, got {brief(rerun)}")
    if not isinstance(exact, bool):
        raise ArgumentTypeError(f"exact is True or False, got {describe_value(exact)}")
    x, kernel, bias = _widened(op, x, kernel, bias, op_kwargs)
    kwargs, plan_kwargs = split_plan_keywords(op_kwargs)
    family = "direct"
    if isinstance(plan_kwargs.get("algorithm"), str) and plan_kwargs["algorithm"].lower() in FAMILIES:
        family = _family(plan_kwargs.pop("algorithm"))
        if family in _ALGORITHM_FAMILIES.values():  # also an algorithm: the named backends run it too
            plan_kwargs["algorithm"] = family
    if isinstance(plan_kwargs.get("algorithm"), str):
        plan_kwargs["algorithm"] = plan_kwargs["algorithm"].lower()
    spec = build(op, x, kernel, bias, kwargs)
    arrays = (x, kernel, bias) if get_op(op).kernel_is_array else (x,)
    memory.check(verdict_bytes(spec, len(runners)), f"judging {spec.op} on {len(runners)} backend(s) against the "
                 "float64 reference", "compare a smaller batch (the statistics of several batches add up), or a "
                 "smaller geometry")
    families = _families(spec, runners, family, plan_kwargs, x)
    if exact:
        values = exact_inputs(spec, arrays)
        arrays = _as_inputs_like(values, arrays, str(spec.dtype))
        x = arrays[0]
        g = gauges(spec, values, families, exact=True)
        return _report(spec, _run_all(spec, runners, arrays, x, plan_kwargs, family), g, exact=True)
    runs = _run_all(spec, runners, arrays, x, plan_kwargs, family)
    g = gauges(spec, arrays, families)
    report = _report(spec, runs, g)
    decisive = [p for p in report.pairs if p.b == "reference"] or list(report.pairs)  # what the verdict reads
    undecided = [p for p in decisive if p.verdict == "inconclusive" or p.weak]
    if rerun is False or (rerun == "auto" and not undecided):
        return report
    if rerun == "auto":  # only what is undecided runs again
        again = {n for p in undecided for n in (p.a, p.b)}
        runners = tuple(r for r in runners if r.name in again)
    float64 = None
    if str(spec.dtype) not in ("float64", "complex128"):
        float64 = _rerun64(op, runners, arrays, kernel, kwargs, plan_kwargs, family, g)
    on_integers = None
    if all(np.isfinite(to_numpy(a)).all() for a in arrays if a is not None):  # integer data cannot stand for inf/NaN
        values = exact_inputs(spec, arrays)
        placed = _as_inputs_like(values, arrays, str(spec.dtype))
        on_integers = _report(spec, _run_all(spec, runners, placed, placed[0], plan_kwargs, family),
                              gauges(spec, values, families, exact=True), exact=True)
    else:
        report = replace(report, notes=report.notes + ("the inputs hold inf or NaN: no re-run on exact integer data",))
    return _settle(report, runs, g, float64, on_integers)


def _widened(op: str, x: ArrayLike, kernel: ArrayLike, bias: ArrayLike | None,
             op_kwargs: dict[str, Any]) -> tuple[ArrayLike, ArrayLike, ArrayLike | None]:
    """The inputs widened to ``op_kwargs``' ``preferred_element_type`` (popped), which conv and conv_transpose take:
    a result accumulated in the wider dtype is judged as the computation in it."""
    if "preferred_element_type" in op_kwargs and not get_op(op).kernel_is_array:
        raise ArgumentTypeError(f"{op} has no argument 'preferred_element_type': it only moves or adds values, in "
                                "their own dtype; widen the input yourself to judge it in another")
    preferred = op_kwargs.pop("preferred_element_type", None)
    if preferred is None:
        return x, kernel, bias
    from convbridge.api import widen

    x, kernel, bias = widen((x, kernel, bias), preferred)
    return x, kernel, bias


def _rerun64(op: str, runners: Sequence[_Runner], arrays: Sequence[ArrayLike | None], kernel: Any,
             kwargs: Mapping[str, Any], plan_kwargs: Mapping[str, Any], family: str, g: Gauges) -> ParityReport:
    """The same comparison in float64, on the same values."""
    wide = "complex128" if any(a is not None and np.iscomplexobj(to_numpy(a)) for a in arrays) else "float64"
    host = [None if a is None else to_numpy(a).astype(wide) for a in arrays]
    notes = []
    with _float64_scope():
        placed = _as_inputs_like(host, arrays, wide) if framework_of(arrays[0]) != "numpy" else tuple(host)
        x = placed[0]
        if get_op(op).kernel_is_array:
            spec = build(op, x, placed[1], placed[2], dict(kwargs))
        else:
            spec = build(op, x, kernel, None, dict(kwargs))
        runs: dict[str, tuple[np.ndarray, Precision, str]] = {}
        for r in runners:
            try:
                runs.update(_run_all(spec, (r,), placed if r.fn is not None else tuple(host), x, plan_kwargs, family))
            except (ShapeError, DTypeError) as e:
                notes.append(f"{r.name} could not re-run in {wide}: {e}")
    return _report(spec, runs, g, notes=notes)


@checked_signature
def verify(y: ArrayLike, x: ArrayLike, kernel: ArrayLike = None, bias: ArrayLike | None = None, *, op: str = "conv",
           precision: str | Precision | None = None, name: str = "candidate", algorithm: str = "direct",
           **op_kwargs: Any) -> ParityReport:
    """Judge a candidate output ``y`` (from any framework) against the float64 reference of ``op``.

    Args:
        y: the candidate result, in the op's output layout and a float dtype.
        x, kernel, bias: the op's inputs (for unfold/fold, ``kernel`` is the kernel size), as for :func:`compare`.
        op: ``"conv" | "conv_transpose" | "unfold" | "fold"``.
        precision: what produced ``y``: ``None``/``"highest"`` (full precision of its dtype),
            ``"tf32"``, ``"bf16"``, ``"bf16_3x"`` (inputs rounded first) or a ``Precision``.
        name: label of the candidate in the report.
        algorithm: the family whose bound judges ``y``: ``"direct"`` (any summation order), ``"fft"``
            (normwise, per output slice) or ``"winograd"`` (F(m, 3), m <= 6).
        **op_kwargs: the op's keyword arguments, and ``preferred_element_type`` for a result accumulated in a
            wider dtype (conv, conv_transpose): it is judged as the computation in that dtype.

    Raises:
        ShapeError: ``y`` does not have the op's output shape.
        DTypeError: ``y`` is not a float array.

    >>> import numpy as np, convbridge as cb
    >>> x = np.arange(8.0).reshape(1, 2, 4)
    >>> cb.verify(cb.unfold(x, (2,)), x, (2,), op="unfold").verdict
    'identical'
    """
    if not isinstance(name, str):
        raise ArgumentTypeError(f"name labels the candidate in the report and must be a string, got "
                                f"{describe_value(name)}")
    family = _family(algorithm)
    x, kernel, bias = _widened(op, x, kernel, bias, op_kwargs)
    spec = build(op, x, kernel, bias, op_kwargs)
    arrays = (x, kernel, bias) if get_op(op).kernel_is_array else (x,)
    memory.check(verdict_bytes(spec, 1), f"judging a {spec.op} result against the float64 reference",
                 "verify a smaller batch, or a smaller geometry")
    cand_dtype = dtype_name(y)
    if cand_dtype not in DTYPES:  # before any copy: NumPy has no torch float8 or complex32
        raise DTypeError(f"candidate dtype {cand_dtype} is not a float dtype convbridge can judge; cast it to the "
                         "dtype that computed it")
    out = to_host(y, "the candidate")
    if tuple(out.shape) != spec.out_shape:
        raise ShapeError(f"candidate has shape {tuple(out.shape)} but this {op} gives {spec.out_shape}; "
                         "check the arguments (stride, padding, layout) used to produce it")
    cand_dtype = dtype_name(y)
    if cand_dtype not in DTYPES:
        raise DTypeError(f"candidate dtype {cand_dtype} is not a float dtype convbridge can judge; cast it to the "
                         "dtype that computed it")
    if is_complex(cand_dtype) != is_complex(spec.dtype):
        raise DTypeError(f"candidate dtype {cand_dtype} for {spec.dtype} inputs: a complex result of real inputs (or "
                         "a real one of complex inputs) is not this computation; judge it with the inputs that "
                         "produced it")
    g = gauges(spec, arrays, (family,))
    computed = cand_dtype
    if unit_roundoff(cand_dtype) < unit_roundoff(str(spec.dtype)):  # a float64 copy (or list) of a float32 result:
        computed = str(spec.dtype)  # judge what the inputs' dtype computes; a float64 computation passes it too
    return _report(spec, {name: (out, candidate(precision, computed), family)}, g)

