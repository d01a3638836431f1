"""The benchmark runner behind ``convbridge bench`` (and ``benchmarks/run.py``): every algorithm on every backend,
the calls a user writes by hand, and ``algorithm="auto"``, timed on a suite of real convolution shapes.

Every method starts from the same float32 arrays in channels-first layout and returns a channels-first result:
a layout change a method needs (torch channels-last, JAX's NHWC/HWIO) happens inside the timed call, input and
output, and counts. Kernels are converted once, outside it (they are a model's parameters). JAX calls are
``jax.jit``-compiled and warmed up; torch calls run under ``torch.no_grad()``. Each combination gets one
warm-up call, then timed calls until about :data:`TARGET_SECONDS` have passed (at least :data:`MIN_CALLS`, at
most ``repeats``). A registered algorithm whose cost model predicts more than ``budget`` seconds per call is
skipped, not timed. Every result is checked against the shape's first result by the normwise relative
difference ``||y - y_ref|| / ||y_ref||`` (a sanity check that catches a wrong method, not the verdict:
``cb.compare`` judges accuracy).

Ctrl-C (KeyboardInterrupt) stops the run after the combination in progress: :func:`run_suite` returns what was
measured so far, marked ``partial``.

>>> [c.name for c in select(["seed"], quick=True)]
['seed', 'seed_b512']
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

from convbridge import backends, dispatch
from convbridge.errors import ArgumentError, ConvBridgeError
from convbridge.ops import get_op
from convbridge.plan import Plan
from convbridge.spec import ConvSpec, ConvTransposeSpec

__all__ = ["Case", "Method", "Measurement", "CaseResult", "SuiteResult", "SUITE", "QUICK", "select",
           "parse_backends", "parse_algorithms", "run_suite", "gemm_peak", "stoppable", "FORMAT", "MIN_CALLS",
           "TARGET_SECONDS", "REFERENCE_RATE", "BASELINE", "AUTO"]

#: The key and version of the JSON file (a file with this key is one ``convbridge bench`` wrote).
FORMAT = ("convbridge_bench", 1)
#: Timed calls per combination at least (unless ``repeats`` is smaller), and the time to fill with them.
MIN_CALLS, TARGET_SECONDS = 3, 0.5
#: FLOP/s assumed for an implementation without a cost model on the numpy backend (the float32 NumPy reference
#: runs at about this rate), so that the budget still keeps it off the big shapes. jax and torch calls without
#: a model are always timed.
REFERENCE_RATE = 2e9
#: Normwise relative difference above which a result is flagged as wrong (FFT in float32 stays near 1e-6).
SUSPECT = 1e-3
#: Names for ``--algorithms`` besides the registered algorithms: the calls written by hand, and auto.
BASELINE, AUTO = "baseline", "auto"
_ORDER = ("torch", "jax", "numpy")  # the table's order: torch by hand first, the reference of the error check


@dataclass(frozen=True)
class Case:
    """One benchmark shape: ``op(x, w, **kwargs)`` with float32 ``x`` and ``w`` of these shapes, channels first."""

    name: str
    title: str
    x: tuple[int, ...]
    w: tuple[int, ...]
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    op: str = "conv"

    def spec(self) -> ConvSpec | ConvTransposeSpec:
        spec = get_op(self.op).build(self.x, self.w, None, dtypes=("float32", "float32", None), **self.kwargs)
        return cast("ConvSpec | ConvTransposeSpec", spec)

    def describe(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
        return f"{self.op}({self.x} x {self.w}{', ' + args if args else ''})"


def _case(name: str, title: str, x: tuple[int, ...], w: tuple[int, ...], qx: tuple[int, ...],
          qw: tuple[int, ...], op: str = "conv", depthwise: bool = False, **kw: Any) -> tuple[Case, Case]:
    """The full shape and its tiny version (same arguments, depthwise kept depthwise)."""
    full = dict(kw, groups=x[1]) if depthwise else kw
    quick = dict(kw, groups=qx[1]) if depthwise else kw
    return Case(name, title, x, w, full, op), Case(name, title + " (quick)", qx, qw, quick, op)


_PAIRS = (
    _case("large2d_k51", "1-ch 2-d, 51x51 kernel on 512x512, same", (1, 1, 512, 512), (1, 1, 51, 51),
          (1, 1, 24, 24), (1, 1, 9, 9), padding="same"),
    _case("dw1d_k1024", "1-d depthwise, kernel 1024, (8, 64, 16384), same", (8, 64, 16384), (64, 1, 1024),
          (2, 4, 256), (4, 1, 64), depthwise=True, padding="same"),
    _case("dw31", "depthwise 31x31, 128 ch @56, batch 4, same", (4, 128, 56, 56), (128, 1, 31, 31),
          (2, 8, 12, 12), (8, 1, 7, 7), depthwise=True, padding="same"),
    _case("dw7", "depthwise 7x7, 96 ch @56, batch 8, same", (8, 96, 56, 56), (96, 1, 7, 7),
          (2, 8, 10, 10), (8, 1, 3, 3), depthwise=True, padding="same"),
    _case("resnet3x3", "ResNet-50 3x3 64->64 @56, batch 8, pad 1", (8, 64, 56, 56), (64, 64, 3, 3),
          (2, 8, 10, 10), (8, 8, 3, 3), padding=1),
    _case("pointwise", "1x1 256->64 @56, batch 8", (8, 256, 56, 56), (64, 256, 1, 1),
          (2, 16, 8, 8), (8, 16, 1, 1)),
    _case("seed", "the seed: 32 CIFAR-size images, 4 filters 5x5, valid", (32, 3, 32, 32), (4, 3, 5, 5),
          (4, 3, 12, 12), (4, 3, 5, 5)),
    _case("seed_b512", "the seed at batch 512", (512, 3, 32, 32), (4, 3, 5, 5), (16, 3, 12, 12), (4, 3, 5, 5)),
    _case("resnet3x3s2", "ResNet-50 3x3/2 128->128 @56, batch 8, pad 1", (8, 128, 56, 56), (128, 128, 3, 3),
          (2, 8, 12, 12), (8, 8, 3, 3), stride=2, padding=1),
    _case("stem7x7s2", "ResNet-50 stem 7x7/2 3->64 @224, batch 8, pad 3", (8, 3, 224, 224), (64, 3, 7, 7),
          (2, 3, 20, 20), (8, 3, 7, 7), stride=2, padding=3),
    _case("resnet512", "ResNet-50 3x3 512->512 @7, batch 8, pad 1", (8, 512, 7, 7), (512, 512, 3, 3),
          (2, 16, 5, 5), (16, 16, 3, 3), padding=1),
    _case("dense1d_k9", "dense 1-d 64->64 k9 on (8, 64, 16384), same", (8, 64, 16384), (64, 64, 9),
          (2, 8, 128), (8, 8, 9), padding="same"),
    _case("conv3d", "3-d (2, 16, 32, 64, 64), 32 filters 3x3x3, same", (2, 16, 32, 64, 64), (32, 16, 3, 3, 3),
          (1, 2, 6, 8, 8), (4, 2, 3, 3, 3), padding="same"),
    _case("transposed", "transposed 64->32 k4/2 pad 1, 56 -> 112, batch 8", (8, 64, 56, 56), (64, 32, 4, 4),
          (2, 8, 6, 6), (8, 4, 4, 4), op="conv_transpose", stride=2, padding=1),
)
#: The suite at full size, and the same shapes tiny (for smoke tests: ``--quick``).
SUITE: tuple[Case, ...] = tuple(full for full, _ in _PAIRS)
QUICK: tuple[Case, ...] = tuple(quick for _, quick in _PAIRS)


def select(patterns: Sequence[str] | None = None, *, quick: bool = False) -> tuple[Case, ...]:
    """The suite's cases whose name equals or contains one of ``patterns`` (all with None), in suite order.

    Raises:
        ArgumentError: a pattern that matches no case (the message lists the names).
    """
    cases = QUICK if quick else SUITE
    if not patterns:
        return cases
    for p in patterns:
        if not any(p == c.name or p in c.name for c in cases):
            raise ArgumentError(f"no benchmark shape matches {p!r}; the shapes are "
                                f"{', '.join(c.name for c in cases)} (a name or a part of one)")
    return tuple(c for c in cases if any(p == c.name or p in c.name for p in patterns))


def parse_backends(names: Sequence[str] | None) -> tuple[str, ...]:
    """The backends to run, in the table's order (None: every installed one).

    Raises:
        ArgumentError: an unknown backend. BackendUnavailable: one that is not installed.
    """
    have = backends.available()
    if not names:
        return tuple(b for b in _ORDER if b in have)
    chosen = {backends.validate(n) for n in names}
    for name in chosen - set(have):
        backends.get(name)  # raises BackendUnavailable with the install hint
    return tuple(b for b in _ORDER if b in chosen)


def parse_algorithms(names: Sequence[str] | None, backend_names: Sequence[str]) -> frozenset[str] | None:
    """The algorithm names to run (None: all); ``baseline`` stands for the calls written by hand.

    Raises:
        ArgumentError: a name that no selected backend registers.
    """
    if not names:
        return None
    known = {BASELINE, AUTO} | {i.algorithm for op in ("conv", "conv_transpose") for b in backend_names
                                for i in dispatch.implementations(op, b)}
    for n in names:
        if n not in known:
            raise ArgumentError(f"unknown algorithm {n!r} for --algorithms; choose from {', '.join(sorted(known))}")
    return frozenset(names)


# ------------------------------------------------------------------------------------------------- methods

@dataclass(frozen=True)
class Method:
    """One way to compute a case: ``kind`` is ``"baseline"`` (the framework's call written by hand),
    ``"convbridge"`` (``cb.conv(..., algorithm=algorithm)``) or ``"auto"``."""

    label: str
    backend: str
    kind: str
    algorithm: str | None = None


@dataclass
class Measurement:
    """One method on one case. ``status``: ``"ok"`` (timed), ``"declined"`` (the method does not support the
    case, or refused it, e.g. for memory), ``"skipped"`` (its cost model exceeds the budget) or ``"failed"``
    (it raised: a bug). Times are in seconds; ``error`` is the normwise relative difference to the case's
    reference result."""

    method: Method
    status: str
    note: str = ""
    times: list[float] = field(default_factory=list)
    first: float | None = None
    model: float | None = None
    error: float | None = None

    @property
    def median(self) -> float:
        return float(np.median(self.times)) if self.times else math.nan

    def quartiles(self) -> tuple[float, float]:
        if not self.times:
            return math.nan, math.nan
        q1, q3 = np.percentile(self.times, [25, 75])
        return float(q1), float(q3)


@dataclass
class CaseResult:
    """Every measurement of one case, with its FLOP count, the reference of the error check and auto's choices."""

    case: Case
    flops: float
    out_shape: tuple[int, ...]
    measurements: list[Measurement] = field(default_factory=list)
    reference: str | None = None
    auto: dict[str, dict[str, Any]] = field(default_factory=dict)

    def ok(self, backend: str | None = None) -> list[Measurement]:
        return [m for m in self.measurements if m.status == "ok" and backend in (None, m.method.backend)]

    def best(self, backend: str | None = None, kind: str | None = None) -> Measurement | None:
        found = [m for m in self.ok(backend) if kind in (None, m.method.kind)]
        return min(found, key=lambda m: m.median) if found else None


@dataclass
class SuiteResult:
    """A whole run: the machine, its measured float32 GEMM peak, the settings, and one result per case."""

    machine: dict[str, Any]
    peak: dict[str, Any]
    settings: dict[str, Any]
    cases: list[CaseResult] = field(default_factory=list)
    partial: bool = False
    seconds: float = 0.0


def _methods(case: Case, backend_names: Sequence[str], algorithms: frozenset[str] | None) -> list[Method]:
    """Baselines, then every registered algorithm, then auto, backend by backend (torch, jax, numpy)."""
    nsp = len(case.x) - 2
    out: list[Method] = []
    for b in backend_names:
        if algorithms is None or BASELINE in algorithms:
            if b == "torch":
                fn = f"F.conv{'_transpose' if case.op == 'conv_transpose' else ''}{nsp}d"
                out.append(Method(f"{fn} NCHW", b, BASELINE))
                if nsp in (2, 3):
                    out.append(Method(f"{fn} channels-last", b, BASELINE))
            elif b == "jax":
                fn = "lax.conv_transpose" if case.op == "conv_transpose" else "lax.conv"
                out += [Method(f"{fn} NCHW/OIHW", b, BASELINE), Method(f"{fn} NHWC/HWIO", b, BASELINE)]
        for impl in dispatch.implementations(case.op, b):
            if algorithms is None or impl.algorithm in algorithms:
                out.append(Method(f"cb {impl.algorithm}", b, "convbridge", impl.algorithm))
        if b != "numpy" and (algorithms is None or AUTO in algorithms):
            out.append(Method("cb auto", b, AUTO, AUTO))
    return out


def _arrays(case: Case, backend_names: Sequence[str]) -> dict[str, tuple[Any, Any]]:
    """The case's random float32 input and kernel (seeded), as each backend's arrays."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(case.x, dtype=np.float32)
    w = rng.standard_normal(case.w, dtype=np.float32)
    out: dict[str, tuple[Any, Any]] = {"numpy": (x, w)}
    if "torch" in backend_names:
        import torch

        out["torch"] = (torch.from_numpy(x), torch.from_numpy(w))
    if "jax" in backend_names:
        import jax

        out["jax"] = (jax.device_put(x), jax.device_put(w))
    return out


def _convbridge_call(case: Case, method: Method, x: Any, w: Any) -> Callable[[], Any]:
    import convbridge as cb

    fn = cb.conv_transpose if case.op == "conv_transpose" else cb.conv
    kw = dict(case.kwargs, backend=method.backend, algorithm=method.algorithm)
    if method.backend == "jax":
        import jax

        jitted = jax.jit(lambda x, w: fn(x, w, **kw))
        return lambda: jitted(x, w)
    if method.backend == "torch":
        import torch

        def call() -> Any:
            with torch.no_grad():
                return fn(x, w, **kw)
        return call
    return lambda: fn(x, w, **kw)


def _torch_call(case: Case, spec: ConvSpec | ConvTransposeSpec, method: Method, x: Any, w: Any) -> Callable[[], Any]:
    """``F.convNd`` / ``F.conv_transposeNd`` as a user writes it; channels-last converts x in and the result out."""
    import torch
    import torch.nn.functional as F

    nsp = spec.nsp
    pads = [a.padding for a in spec.axes]
    kw: dict[str, Any] = dict(stride=spec.stride, dilation=spec.dilation, groups=spec.groups)
    pre: Callable[[Any], Any] = lambda t: t  # noqa: E731
    if isinstance(spec, ConvTransposeSpec):
        if any(lo != hi for lo, hi in pads):
            raise ArgumentError("F.conv_transposeNd crops both ends alike; this case crops them differently")
        fn, kw = getattr(F, f"conv_transpose{nsp}d"), dict(kw, padding=tuple(lo for lo, _ in pads),
                                                              output_padding=spec.output_padding)
    elif all(lo == hi for lo, hi in pads):
        fn, kw = getattr(F, f"conv{nsp}d"), dict(kw, padding=tuple(lo for lo, _ in pads))
    else:  # asymmetric: pad first, as a user would
        flat = [v for lo, hi in reversed(pads) for v in (lo, hi)]
        fn, pre = getattr(F, f"conv{nsp}d"), (lambda t: F.pad(t, flat))
    if method.label.endswith("channels-last"):
        fmt = torch.channels_last if nsp == 2 else torch.channels_last_3d
        wl = w.contiguous(memory_format=fmt)

        def call() -> Any:
            with torch.no_grad():
                return fn(pre(x.contiguous(memory_format=fmt)), wl, **kw).contiguous()
        return call

    def plain() -> Any:
        with torch.no_grad():
            return fn(pre(x), w, **kw)
    return plain


def _jax_call(case: Case, spec: ConvSpec | ConvTransposeSpec, method: Method, x: Any, w: Any) -> Callable[[], Any]:
    """``lax.conv_general_dilated`` (``lax.conv_transpose`` with torch's kernel) as a user writes it, jit-compiled;
    NHWC transposes x in and the result out inside the program."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    sp = "DHW"[3 - spec.nsp:] if spec.nsp <= 3 else None
    if sp is None:
        raise ArgumentError("the hand-written lax call is written for 1 to 3 spatial dims")
    nhwc = method.label.endswith("NHWC/HWIO")
    to_last, to_first = (0, *range(2, spec.nsp + 2), 1), (0, spec.nsp + 1, *range(1, spec.nsp + 1))
    dn = ("N" + sp + "C", sp + "IO", "N" + sp + "C") if nhwc else ("NC" + sp, "OI" + sp, "NC" + sp)
    wk = jnp.transpose(w, (*range(2, spec.nsp + 2), 1, 0)) if nhwc else w
    if isinstance(spec, ConvTransposeSpec):
        if spec.groups != 1:
            raise ArgumentError("lax.conv_transpose has no groups")
        pads = [a.lax_padding for a in spec.axes]

        def op(v: Any) -> Any:  # transpose_kernel: the letter O names x's channels, as torch's (C_in, C_out, k)
            return lax.conv_transpose(v, wk, spec.stride, pads, rhs_dilation=spec.dilation, dimension_numbers=dn,
                                      transpose_kernel=True)
    else:
        def op(v: Any) -> Any:
            return lax.conv_general_dilated(v, wk, spec.stride, list(spec.padding), rhs_dilation=spec.dilation,
                                            dimension_numbers=dn, feature_group_count=spec.groups)

    def program(v: Any) -> Any:
        return jnp.transpose(op(jnp.transpose(v, to_last)), to_first) if nhwc else op(v)

    jitted = jax.jit(program)
    return lambda: jitted(x)


def _call(case: Case, spec: ConvSpec | ConvTransposeSpec, method: Method, x: Any, w: Any) -> Callable[[], Any]:
    if method.kind != BASELINE:
        return _convbridge_call(case, method, x, w)
    return (_torch_call if method.backend == "torch" else _jax_call)(case, spec, method, x, w)


# ------------------------------------------------------------------------------------------------- timing

def _sync(y: Any) -> Any:
    block = getattr(y, "block_until_ready", None)
    return block() if block is not None else y


def _time(call: Callable[[], Any], repeats: int) -> tuple[float, list[float], Any]:
    """One warm-up call (which compiles), then timed calls: at least MIN_CALLS (or ``repeats``), until
    TARGET_SECONDS or ``repeats`` calls. Returns the warm-up's seconds, the timed seconds and the warm-up's result."""
    t0 = time.perf_counter()
    y = _sync(call())
    first = time.perf_counter() - t0
    times: list[float] = []
    least = min(MIN_CALLS, repeats)
    while len(times) < least or (len(times) < repeats and sum(times) < TARGET_SECONDS):
        t0 = time.perf_counter()
        _sync(call())
        times.append(time.perf_counter() - t0)
    return first, times, y


def _host(y: Any) -> np.ndarray:
    detach = getattr(y, "detach", None)
    return np.asarray(detach().cpu().numpy() if detach is not None else y)


def _relative_error(y: np.ndarray, ref: np.ndarray) -> float:
    if y.shape != ref.shape:
        return math.inf
    scale = float(np.linalg.norm(ref.ravel()))
    diff = float(np.linalg.norm((y.astype(np.float64) - ref).ravel()))
    return diff / scale if scale else (0.0 if diff == 0 else math.inf)


def _model(spec: ConvSpec | ConvTransposeSpec, method: Method) -> float | None:
    """The registered implementation's cost model in seconds (numpy without one: the reference's rate)."""
    if method.kind != "convbridge" or method.algorithm is None:
        return None
    impl = dispatch.find(spec, Plan(method.backend, method.algorithm))  # raises when it declines the spec
    if impl.cost is not None:
        return float(impl.cost(spec, Plan(method.backend, method.algorithm)))
    return 2.0 * spec.macs / REFERENCE_RATE if method.backend == "numpy" else None


def measure(case: Case, spec: ConvSpec | ConvTransposeSpec, method: Method, arrays: Mapping[str, tuple[Any, Any]],
            *, repeats: int, budget: float) -> tuple[Measurement, Any]:
    """Time one method on one case; returns the measurement and the method's result (None unless timed)."""
    m = Measurement(method, "ok")
    try:
        m.model = _model(spec, method)
    except ConvBridgeError as exc:
        return Measurement(method, "declined", str(exc)), None
    if m.model is not None and m.model > budget:
        m.status, m.note = "skipped", f"model: {m.model:.3g} s per call > budget {budget:g} s"
        return m, None
    try:
        m.first, m.times, y = _time(_call(case, spec, method, *arrays[method.backend]), repeats)
    except ConvBridgeError as exc:
        m.status, m.note = "declined", str(exc)
        return m, None
    except (KeyboardInterrupt, SystemExit, MemoryError):
        raise
    except Exception as exc:  # a bug in a method: reported in the table, the benchmark goes on
        m.status, m.note = "failed", f"{type(exc).__name__}: {exc}"
        return m, None
    return m, y


def _auto_choice(case: Case, backend: str, arrays: Mapping[str, tuple[Any, Any]], tune: bool) -> dict[str, Any]:
    """What ``algorithm="auto"`` picks for the case on ``backend`` (measuring first with ``tune``)."""
    try:
        from convbridge.autotune import choose
    except ImportError:
        return {"algorithm": None, "source": "n/a", "note": "auto: n/a (convbridge.autotune is missing)"}
    x, w = arrays[backend]
    try:
        c = choose(x, w, op=case.op, backend=backend, measure=tune, **case.kwargs)
    except ConvBridgeError as exc:
        return {"algorithm": None, "source": "declined", "note": str(exc)}
    return {"algorithm": c.algorithm, "source": c.source, "costs": dict(c.costs),
            "timings": None if c.timings is None else dict(c.timings)}


Progress = Callable[[int, int, CaseResult, "Measurement | None"], None]


def run_case(case: Case, backend_names: Sequence[str], *, algorithms: frozenset[str] | None = None,
             repeats: int = 20, budget: float = 2.0, tune: bool = False,
             progress: Progress | None = None, index: int = 0, total: int = 1,
             into: CaseResult | None = None) -> CaseResult:
    """Measure every method of ``case``; ``into`` receives the measurements as they come (kept on Ctrl-C)."""
    spec = case.spec()
    res = into or CaseResult(case, 2.0 * spec.macs, spec.out_shape)
    if progress:
        progress(index, total, res, None)
    arrays = _arrays(case, backend_names)
    ref: np.ndarray | None = None
    for method in _methods(case, backend_names, algorithms):
        if method.kind == AUTO and method.backend not in res.auto:
            res.auto[method.backend] = _auto_choice(case, method.backend, arrays, tune)
        m, y = measure(case, spec, method, arrays, repeats=repeats, budget=budget)
        if y is not None:
            host = _host(y)
            if ref is None:
                ref, res.reference = host.astype(np.float64), f"{method.backend} {method.label}"
            m.error = _relative_error(host, ref)
        res.measurements.append(m)
        if progress:
            progress(index, total, res, m)
    return res


# ------------------------------------------------------------------------------------------------ the suite

def gemm_peak(backend_names: Sequence[str], n: int = 2048, calls: int = 5) -> dict[str, Any]:
    """The machine's float32 GEMM rate, measured now: the best of ``np.matmul`` and (with torch) ``torch.mm``
    on ``n x n`` matrices, each its fastest of ``calls`` calls after a warm-up."""
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
    calls_by: dict[str, Callable[[], Any]] = {"np.matmul": lambda: np.matmul(a, b)}
    if "torch" in backend_names:
        import torch

        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        calls_by["torch.mm"] = lambda: torch.mm(ta, tb)
    rates = {}
    for name, call in calls_by.items():
        call()
        best = math.inf
        for _ in range(calls):
            t0 = time.perf_counter()
            call()
            best = min(best, time.perf_counter() - t0)
        rates[name] = 2.0 * n**3 / best
    by = max(rates, key=lambda k: rates[k])
    return {"flops": rates[by], "by": by, "n": n, "rates": rates}


def _machine(backend_names: Sequence[str]) -> dict[str, Any]:
    from convbridge import __version__

    info: dict[str, Any] = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                            "cpus": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
                            "convbridge": __version__, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                            "XLA_FLAGS": os.environ.get("XLA_FLAGS", "")}
    if "torch" in backend_names:
        import torch

        info.update(torch=torch.__version__, torch_threads=torch.get_num_threads())
    if "jax" in backend_names:
        import jax

        info.update(jax=jax.__version__, jax_devices=[str(d) for d in jax.devices()])
    return info


def run_suite(cases: Sequence[Case], backend_names: Sequence[str], *, algorithms: frozenset[str] | None = None,
              repeats: int = 20, budget: float = 2.0, tune: bool = False, quick: bool = False,
              progress: Progress | None = None) -> SuiteResult:
    """Measure the machine's GEMM peak, then every case. Ctrl-C (KeyboardInterrupt) ends the run early with
    ``partial=True`` and everything measured so far.

    Raises:
        ArgumentError: ``repeats`` < 1 or ``budget`` <= 0.
    """
    if repeats < 1 or not budget > 0:
        raise ArgumentError(f"repeats must be >= 1 and budget > 0 seconds; got repeats={repeats}, budget={budget}")
    t0 = time.perf_counter()
    settings = {"repeats": repeats, "min_calls": MIN_CALLS, "target_seconds": TARGET_SECONDS, "budget_s": budget,
                "tune": tune, "quick": quick, "backends": list(backend_names),
                "algorithms": None if algorithms is None else sorted(algorithms), "dtype": "float32"}
    result = SuiteResult(_machine(backend_names), {}, settings)
    try:
        result.peak = gemm_peak(backend_names, n=256 if quick else 2048)
        for i, case in enumerate(cases):
            spec = case.spec()
            res = CaseResult(case, 2.0 * spec.macs, spec.out_shape)
            result.cases.append(res)
            run_case(case, backend_names, algorithms=algorithms, repeats=repeats, budget=budget, tune=tune,
                     progress=progress, index=i, total=len(cases), into=res)
    except KeyboardInterrupt:
        result.partial = True
    result.seconds = time.perf_counter() - t0
    return result


@contextlib.contextmanager
def stoppable() -> Iterator[None]:
    """Within the block, Ctrl-C raises KeyboardInterrupt (which :func:`run_suite` turns into a partial result)
    instead of the command's immediate exit; the previous handler (a second Ctrl-C) is back after it."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.getsignal(signal.SIGINT)
    if before is signal.SIG_IGN:  # started with Ctrl-C ignored (nohup): keep it so
        yield
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


# ------------------------------------------------------------------------------------------ results as data

def _ms(seconds: float | None) -> float | None:
    return None if seconds is None or not math.isfinite(seconds) else seconds * 1e3


def _numbers(res: CaseResult, m: Measurement, peak: float) -> dict[str, Any]:
    """A measurement's numbers: times in ms, GFLOP/s, % of the GEMM peak, ratios to the best."""
    if m.status != "ok":
        return {}
    med, (q1, q3) = m.median, m.quartiles()
    best, own = res.best(), res.best(m.method.backend)
    return {"median_ms": _ms(med), "q1_ms": _ms(q1), "q3_ms": _ms(q3), "min_ms": _ms(min(m.times)),
            "max_ms": _ms(max(m.times)), "calls": len(m.times), "first_call_ms": _ms(m.first),
            "gflops": res.flops / med / 1e9, "peak_pct": 100.0 * res.flops / med / peak if peak else None,
            "ratio_best": med / best.median if best else None, "ratio_backend_best": med / own.median if own else None,
            "times_ms": [t * 1e3 for t in m.times]}


def _auto_measurement(res: CaseResult, backend: str) -> Measurement | None:
    return next((m for m in res.ok(backend) if m.method.kind == AUTO), None)


def _summary(res: CaseResult) -> dict[str, Any]:
    """The issue's targets for one case: the best method, and per framework the best hand-written call, the
    best method on that backend, and auto against both."""
    best = res.best()
    out: dict[str, Any] = {"best": None if best is None else f"{best.method.backend} {best.method.label}",
                           "best_ms": _ms(best.median) if best else None}
    for b in ("torch", "jax"):
        hand, top, auto = res.best(b, BASELINE), res.best(b), _auto_measurement(res, b)
        out[b] = {"baseline": hand.method.label if hand else None, "baseline_ms": _ms(hand.median) if hand else None,
                  "backend_best": top.method.label if top else None, "backend_best_ms": _ms(top.median) if top else None,
                  "auto_algorithm": res.auto.get(b, {}).get("algorithm"),
                  "auto_ms": _ms(auto.median) if auto else None,
                  "auto_vs_baseline": auto.median / hand.median if auto and hand else None,
                  "auto_vs_backend_best": auto.median / top.median if auto and top else None,
                  "auto_vs_best": auto.median / best.median if auto and best else None}
    return out


def to_dict(result: SuiteResult) -> dict[str, Any]:
    """Every number of the run as plain data (what the JSON file holds)."""
    peak = float(result.peak.get("flops", 0.0))
    cases = []
    for res in result.cases:
        c = res.case
        rows = [{"method": m.method.label, "backend": m.method.backend, "kind": m.method.kind,
                 "algorithm": m.method.algorithm, "status": m.status, "note": m.note, "model_ms": _ms(m.model),
                 "error": m.error, **_numbers(res, m, peak)} for m in res.measurements]
        cases.append({"name": c.name, "title": c.title, "op": c.op, "x": list(c.x), "w": list(c.w),
                      "kwargs": dict(c.kwargs), "out": list(res.out_shape), "gflop": res.flops / 1e9,
                      "error_reference": res.reference, "auto": res.auto, "summary": _summary(res), "results": rows})
    return {FORMAT[0]: FORMAT[1], "partial": result.partial, "seconds": result.seconds, "machine": result.machine,
            "peak": result.peak, "settings": result.settings, "cases": cases}


# ----------------------------------------------------------------------------------------------- tables

def _fmt(v: float | None, spec: str = ".3g", suffix: str = "") -> str:
    return "-" if v is None or not math.isfinite(v) else f"{v:{spec}}{suffix}"


def _note(m: Measurement, width: int | None) -> str:
    text = m.note if m.status == "ok" else f"{m.status}: {m.note}"
    if m.error is not None and m.error > SUSPECT:
        text = f"WRONG? rel. diff {m.error:.2g} to the reference; {text}".rstrip("; ")
    text = " ".join(text.split())
    return text if width is None or len(text) <= width else text[:width - 1] + "…"


CASE_COLUMNS = ("backend", "method", "median ms", "IQR", "GFLOP/s", "% peak", "x best", "x backend", "rel. diff",
                "note")


def case_rows(res: CaseResult, peak: float, width: int | None = 60) -> list[list[str]]:
    """One row per method, in :data:`CASE_COLUMNS` (notes cut to ``width`` characters)."""
    rows = []
    for m in res.measurements:
        n = _numbers(res, m, peak)
        spread = f"±{50 * (n['q3_ms'] - n['q1_ms']) / n['median_ms']:.0f}%" if n else ""
        rows.append([m.method.backend, m.method.label, _fmt(n.get("median_ms")), spread, _fmt(n.get("gflops"), ".1f"),
                     _fmt(n.get("peak_pct"), ".0f", "%"), _fmt(n.get("ratio_best"), ".2f"),
                     _fmt(n.get("ratio_backend_best"), ".2f"), _fmt(m.error, ".1e"), _note(m, width)])
    return rows


def case_title(res: CaseResult) -> str:
    auto = ", ".join(f"{b}: {v.get('algorithm') or v.get('note', '-')} ({v.get('source')})"
                     for b, v in res.auto.items())
    return (f"{res.case.name}: {res.case.title}; {res.case.describe()} -> {res.out_shape}, "
            f"{res.flops / 1e9:.3g} GFLOP" + (f"; auto chose {auto}" if auto else ""))


SUMMARY_COLUMNS = ("shape", "best (ms)", "torch by hand", "torch auto", "auto / hand, / best torch", "jax by hand",
                   "jax auto", "auto / hand, / best jax")


def summary_rows(result: SuiteResult) -> list[list[str]]:
    """Per case: the best method, then per framework its best hand-written call, auto, and auto's ratios."""
    rows = []
    for res in result.cases:
        s = _summary(res)
        row = [res.case.name, f"{_fmt(s['best_ms'])} {s['best'] or ''}".strip()]
        for b in ("torch", "jax"):
            v = s[b]
            row += [f"{_fmt(v['baseline_ms'])} {v['baseline'] or ''}".strip(),
                    f"{_fmt(v['auto_ms'])} {v['auto_algorithm'] or ''}".strip(),
                    f"{_fmt(v['auto_vs_baseline'], '.2f')}, {_fmt(v['auto_vs_backend_best'], '.2f')}"]
        rows.append(row)
    return rows


def header(result: SuiteResult) -> list[str]:
    """The lines above the tables: machine, GEMM peak, settings, and whether the run is partial."""
    m, p, s = result.machine, result.peak, result.settings
    lines = [f"machine: {m.get('processor')}, {m.get('cpus')} CPUs, {m.get('platform')}; numpy {m.get('numpy')}"
             + "".join(f", {k} {m[k]}" for k in ("torch", "jax") if k in m)
             + (f", torch threads {m['torch_threads']}" if "torch_threads" in m else "")]
    if p:
        rates = ", ".join(f"{k} {v / 1e9:.0f}" for k, v in p["rates"].items())
        lines.append(f"float32 GEMM peak {p['flops'] / 1e9:.0f} GFLOP/s ({p['by']}, {p['n']}x{p['n']}; {rates})")
    least = min(s["min_calls"], s["repeats"])
    lines.append(f"timing: 1 warm-up, then {least}..{s['repeats']} calls up to ~{s['target_seconds']} s; "
                 f"median, ± half the interquartile range; budget {s['budget_s']:g} s per call by the cost model"
                 + ("; auto measured (--tune)" if s["tune"] else ""))
    if result.partial:
        lines.append(f"PARTIAL: interrupted after {len(result.cases)} case(s); the last may be incomplete")
    return lines


def print_tables(result: SuiteResult, console: Any) -> None:
    """Print the run with rich: the header, one table per case, then the summary table."""
    from rich.table import Table

    for line in header(result):
        console.print(line, markup=False, highlight=False)
    peak = float(result.peak.get("flops", 0.0))
    for res in result.cases:
        t = Table(title=case_title(res), title_justify="left")
        for col in CASE_COLUMNS:
            t.add_column(col, justify="right" if col not in ("backend", "method", "note") else "left")
        for row in case_rows(res, peak):
            t.add_row(*row)
        console.print(t)
    t = Table(title="Summary: median ms; ratios of auto's time (<= 1.0 meets the target against the hand-written "
                    "call)", title_justify="left")
    for col in SUMMARY_COLUMNS:
        t.add_column(col)
    for row in summary_rows(result):
        t.add_row(*row)
    console.print(t)


def markdown(result: SuiteResult) -> str:
    """The run as Markdown: the header, the summary table, then one table per case (for an issue's closing note)."""
    def table(cols: Sequence[str], rows: list[list[str]]) -> list[str]:
        esc = [[c.replace("|", "\\|") for c in r] for r in rows]
        return ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols), *("| " + " | ".join(r) + " |" for r in esc)]

    peak = float(result.peak.get("flops", 0.0))
    out = [_MD_TAG, "", *(f"- {line}" for line in header(result)), "", *table(SUMMARY_COLUMNS, summary_rows(result))]
    for res in result.cases:
        out += ["", f"**{case_title(res)}**", "", *table(CASE_COLUMNS, case_rows(res, peak, width=None))]
    return "\n".join(out) + "\n"


def plot(result: SuiteResult, path: str | os.PathLike[str]) -> Any:
    """Draw every timed method's time / the case's best time (log scale), one row per case, into a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    cases = [r for r in result.cases if r.ok()]
    fig = Figure(figsize=(9.0, 1.6 + 0.42 * max(len(cases), 1)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colours, markers = {"torch": "tab:red", "jax": "tab:blue", "numpy": "tab:green"}, \
        {BASELINE: "o", "convbridge": "s", AUTO: "*"}
    for i, res in enumerate(cases):
        best = res.best()
        for m in res.ok():
            off = {"torch": -0.2, "jax": 0.0, "numpy": 0.2}[m.method.backend]
            ax.scatter(m.median / best.median if best else math.nan, i + off, c=colours[m.method.backend],
                       marker=markers[m.method.kind], s=90 if m.method.kind == AUTO else 28, alpha=0.8)
    ax.set_xscale("log")
    ax.set_yticks(range(len(cases)), [r.case.name for r in cases])
    ax.invert_yaxis()
    ax.axvline(1.0, color="grey", lw=0.8)
    ax.set_xlabel("time / best time for the shape (log)")
    handles = [Line2D([], [], ls="", marker="o", color=c, label=b) for b, c in colours.items()] + \
        [Line2D([], [], ls="", marker=mk, color="black", label=k) for k, mk in markers.items()]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    ax.set_title("convbridge bench: ratio to the best method per shape" + (" (partial)" if result.partial else ""))
    return write_output(path, "--plot", lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight",
                                                                 metadata={"Software": _PNG_TAG}))


# ------------------------------------------------------------------------------------------ output files

_MD_TAG = "<!-- written by convbridge bench -->"
_PNG_TAG = "convbridge bench"
_KINDS = {"--json": "JSON", "--plot": "PNG", "--markdown": "Markdown"}


def _ours(path: os.PathLike[str], flag: str) -> bool:
    """Whether ``path`` is a file ``convbridge bench`` wrote (its JSON key, its PNG tag, its Markdown tag)."""
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16) if flag != "--json" else f.read()
    except OSError:
        return False
    if flag == "--plot":
        return head.startswith(b"\x89PNG\r\n\x1a\n") and b"Software\x00" + _PNG_TAG.encode() in head
    if flag == "--markdown":
        return head.startswith(_MD_TAG.encode())
    import json

    try:
        data = json.loads(head)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return False
    return isinstance(data, dict) and FORMAT[0] in data


def check_output(path: str | os.PathLike[str], flag: str) -> Any:
    """The absolute path if ``convbridge bench`` may write its ``flag`` file there: a new file, or one it wrote
    before. Checked before any work; anything else (a folder, a link, a file of the user's) is refused.

    Raises:
        OutputError: with what is wrong and what to pass instead.
    """
    from pathlib import Path

    from convbridge.reportdir import OutputError

    shown, kind = repr(str(path)), _KINDS[flag]
    if not str(path).strip():
        raise OutputError(f"{flag} is empty; pass the {kind} file to write, e.g. {flag} bench.{flag[2:4]}")
    target = Path(os.path.abspath(os.path.expanduser(path)))
    if target.is_symlink():
        raise OutputError(f"{flag} {shown} is a symbolic link; convbridge writes a plain file: pass another path")
    if target.is_dir():
        raise OutputError(f"{flag} {shown} is a folder; pass a file path inside it, e.g. {str(target / 'bench')!r}")
    if target.exists() and not _ours(target, flag):
        raise OutputError(f"{flag} {shown} is a file convbridge bench did not write; convbridge never overwrites "
                          f"it: remove it yourself, or pass another path")
    for parent in target.parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputError(f"{flag} {shown} lies under {str(parent)!r}, which is a file, not a folder")
            break
    return target


def write_output(path: str | os.PathLike[str], flag: str, write: Callable[[Any], object]) -> Any:
    """``write(tmp)`` into a temporary file beside ``path``, then rename it into place (checked again just
    before); Ctrl-C or a failure leaves ``path`` as it was and no temporary file behind."""
    import tempfile
    from pathlib import Path

    from convbridge import interrupts
    from convbridge.reportdir import OutputError

    target = check_output(path, flag)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise OutputError(f"cannot write {flag} {str(path)!r}: {exc.strerror or exc}") from None
    os.close(fd)
    tmp = Path(name)
    with interrupts.cleanup_on_interrupt(tmp):
        try:
            umask = os.umask(0)
            os.umask(umask)
            tmp.chmod(0o666 & ~umask)  # mkstemp makes it private; the result is an ordinary file
            write(tmp)
            with interrupts.critical():
                check_output(path, flag)  # nothing of the user's appeared meanwhile
                os.replace(tmp, target)
        except OSError as exc:
            raise OutputError(f"cannot write {flag} {str(path)!r}: {exc.strerror or exc}") from None
        finally:
            tmp.unlink(missing_ok=True)
    return target


def write_json(result: SuiteResult, path: str | os.PathLike[str]) -> Any:
    """Write :func:`to_dict` as strict JSON (non-finite numbers as strings) to ``path``, safely."""
    from convbridge.reportdir import strict_json

    text = strict_json(to_dict(result), indent=1)
    return write_output(path, "--json", lambda tmp: tmp.write_text(text))


def write_markdown(result: SuiteResult, path: str | os.PathLike[str]) -> Any:
    """Write :func:`markdown` to ``path``, safely."""
    text = markdown(result)
    return write_output(path, "--markdown", lambda tmp: tmp.write_text(text))
