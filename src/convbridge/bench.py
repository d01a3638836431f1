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

Ctrl-C (KeyboardInterrupt) stops the run: :func:`run_suite` returns what was measured so far, marked ``partial``.

>>> result = run_suite(select(["seed_b512"], quick=True), ["numpy"], repeats=1, quick=True)
>>> [m.method.label for m in result.cases[0].measurements][0], result.cases[0].out_shape
('cb native', (16, 4, 8, 8))
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
           "parse_backends", "parse_algorithms", "measure", "run_case", "run_suite", "gemm_peak", "stoppable",
           "FORMAT", "MIN_CALLS", "TARGET_SECONDS", "REFERENCE_RATE", "SUSPECT",
           "BASELINE", "AUTO"]

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
_STOP: list[bool] = []  # set by a Ctrl-C under stoppable()
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
    """The suite's cases named by ``patterns`` (all with None), in suite order: a pattern that is a case's name
    selects that case, any other every case whose name contains it.

    Raises:
        ArgumentError: a pattern that matches no case (the message lists the names).

    >>> [c.name for c in select(["resnet", "seed"], quick=True)]
    ['resnet3x3', 'seed', 'resnet3x3s2', 'resnet512']
    """
    cases = QUICK if quick else SUITE
    if not patterns:
        return cases
    chosen: set[str] = set()
    for p in patterns:
        named = [c.name for c in cases if c.name == p] or [c.name for c in cases if p in c.name]
        if not named:
            raise ArgumentError(f"no benchmark shape matches {p!r}; the shapes are "
                                f"{', '.join(c.name for c in cases)} (a name or a part of one)")
        chosen.update(named)
    return tuple(c for c in cases if c.name in chosen)


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
    verdict: str | None = None
    ratio: float | None = None  # the verdict's r / allowed (worst element, or the worst slice for FFT)

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
    jax_devices: int | None = None  # the devices jax's batch was split over (the largest count dividing it)

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
        if algorithms is None or AUTO in algorithms:
            out.append(Method("cb auto", b, AUTO, AUTO))
    return out


def _arrays(case: Case, backend_names: Sequence[str], devices: int | None = None) -> dict[str, tuple[Any, Any]]:
    """The case's random float32 input and kernel (seeded), as each backend's arrays; with ``devices``, jax's
    input split along N over the largest number of them that divides the batch, its kernel on each of those."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(case.x, dtype=np.float32)
    w = rng.standard_normal(case.w, dtype=np.float32)
    out: dict[str, tuple[Any, Any]] = {"numpy": (x, w)}
    if "torch" in backend_names:
        import torch

        out["torch"] = (torch.from_numpy(x), torch.from_numpy(w))
    if "jax" in backend_names and devices:
        from convbridge import sharding

        devs = sharding.local_devices(devices)
        devs = devs[:max(sharding.divisors(case.x[0], len(devs)))]
        out["jax"] = (sharding.shard_batch(x, devs), sharding.replicate(w, devs))
    elif "jax" in backend_names:
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


def _model(spec: ConvSpec | ConvTransposeSpec, method: Method) -> tuple[float | None, str]:
    """The registered implementation's cost model in seconds, and ``"model"``; on numpy without one, the
    estimate at :data:`REFERENCE_RATE` and ``"no model; at 2 GFLOP/s"``. Raises when the implementation
    declines the spec."""
    if method.kind == AUTO:  # the estimate of what auto would run by the models
        from convbridge.autotune import candidates

        costs = candidates(spec, Plan(method.backend, "auto"))[0]
        best = min(costs.values())
        return (best, "model") if best < math.inf else (None, "")
    if method.kind != "convbridge" or method.algorithm is None:
        return None, ""
    plan = Plan(method.backend, method.algorithm)
    impl = dispatch.find(spec, plan)
    if impl.cost is not None:
        return float(impl.cost(spec, plan)), "model"
    if method.backend == "numpy":
        return 2.0 * spec.macs / REFERENCE_RATE, f"no model; at {REFERENCE_RATE / 1e9:g} GFLOP/s"
    return None, ""


def measure(case: Case, spec: ConvSpec | ConvTransposeSpec, method: Method, arrays: Mapping[str, tuple[Any, Any]],
            *, repeats: int, budget: float) -> tuple[Measurement, Any]:
    """Time one method on one case; returns the measurement and the method's result (None unless timed)."""
    m = Measurement(method, "ok")
    try:
        estimate, source = _model(spec, method)
        m.model = estimate if source == "model" else None
        if estimate is not None and estimate > budget:
            m.status, m.note = "skipped", f"{source}: {estimate:.3g} s per call > budget {budget:g} s"
            return m, None
        m.first, m.times, y = _time(_call(case, spec, method, *arrays[method.backend]), repeats)
    except ConvBridgeError as exc:  # not supported, or refused (e.g. over the memory limit)
        m.status, m.note = "declined", str(exc)
        return m, None
    except (KeyboardInterrupt, SystemExit, MemoryError):
        raise
    except Exception as exc:  # a bug in a method or its cost model: reported in the table, the benchmark goes on
        m.status, m.note = "failed", f"{type(exc).__name__}: {exc}"
        return m, None
    return m, y


def _choice(c: Any) -> dict[str, Any]:
    return {"algorithm": c.algorithm, "source": c.source, "costs": dict(c.costs),
            "timings": None if c.timings is None else dict(c.timings)}


def _auto_choice(case: Case, backend: str, arrays: Mapping[str, tuple[Any, Any]], tune: bool) -> dict[str, Any]:
    """What ``algorithm="auto"`` picks for the case on ``backend`` (measuring first with ``tune``); on jax also
    what it picks under ``jax.jit`` (the timed call), where nothing is measured."""
    try:
        from convbridge.autotune import choose
    except ImportError:
        return {"algorithm": None, "source": "n/a", "note": "auto: n/a"}
    x, w = arrays[backend]
    try:
        out = _choice(choose(x, w, op=case.op, backend=backend, measure=tune, **case.kwargs))
        if backend == "jax":
            import jax

            seen: list[Any] = []

            def probe(x: Any, w: Any) -> Any:
                seen.append(choose(x, w, op=case.op, backend=backend, **case.kwargs))
                return x
            jax.make_jaxpr(probe)(x, w)
            out["under_jit"] = {"algorithm": seen[0].algorithm, "source": seen[0].source}
    except ConvBridgeError as exc:
        return {"algorithm": None, "source": "declined", "note": f"declined: {exc}"}
    except (KeyboardInterrupt, SystemExit, MemoryError):
        raise
    except Exception as exc:  # a bug in autotune: reported, the benchmark goes on
        return {"algorithm": None, "source": "failed", "note": f"failed: {type(exc).__name__}: {exc}"}
    return out


def auto_algorithm(res: CaseResult, backend: str) -> str | None:
    """The algorithm the timed auto call ran (on jax: the choice under jit)."""
    choice = res.auto.get(backend, {})
    return choice.get("under_jit", choice).get("algorithm")


Progress = Callable[[int, int, CaseResult, "Measurement | None"], None]


def run_case(case: Case, backend_names: Sequence[str], *, algorithms: frozenset[str] | None = None,
             repeats: int = 20, budget: float = 2.0, tune: bool = False,
             progress: Progress | None = None, index: int = 0, total: int = 1,
             into: CaseResult | None = None, verify: bool = False, devices: int | None = None) -> CaseResult:
    """Measure every method of ``case``; ``into`` receives the measurements as they come (kept on Ctrl-C).
    ``verify``: then judge every result with the verdict (:func:`judge`). ``devices``: split the jax methods'
    batch over that many local JAX devices (:func:`_arrays`)."""
    spec = case.spec()
    res = into or CaseResult(case, 2.0 * spec.macs, spec.out_shape)
    if progress:
        progress(index, total, res, None)
    arrays = _arrays(case, backend_names, devices)
    if devices and "jax" in arrays:
        res.jax_devices = len(arrays["jax"][0].sharding.device_set)
    ref: np.ndarray | None = None
    outputs: list[tuple[Measurement, np.ndarray]] = []
    for method in _methods(case, backend_names, algorithms):
        if method.kind == AUTO and method.backend not in res.auto:
            res.auto[method.backend] = _auto_choice(case, method.backend, arrays, tune)
        _check_stop()
        m, y = measure(case, spec, method, arrays, repeats=repeats, budget=budget)
        _check_stop()
        if y is not None:
            host = _host(y)
            if ref is None:
                ref, res.reference = host.astype(np.float64), f"{method.backend} {method.label}"
            m.error = _relative_error(host, ref)
            if verify:
                outputs.append((m, host))
        res.measurements.append(m)
        if progress:
            progress(index, total, res, m)
    if outputs:
        judge(res, arrays["numpy"], outputs)
    return res


def _family(res: CaseResult, m: Measurement) -> str:
    """The bound that judges a method's result: FFT's normwise bound for the FFT algorithm (and for auto when
    it ran FFT), else the direct per-element bound."""
    ran = auto_algorithm(res, m.method.backend) if m.method.kind == AUTO else m.method.algorithm
    return "fft" if ran == "fft" else "direct"


def judge(res: CaseResult, host: tuple[np.ndarray, np.ndarray], outputs: Sequence[tuple[Measurement, np.ndarray]]) \
        -> None:
    """Judge every timed result against the float64 reference with the verdict (``cb.compare``, one run per
    bound family, so that the reference is computed once or twice per case); fills ``verdict`` and ``ratio``."""
    import convbridge as cb

    case = res.case
    families: dict[str, list[tuple[Measurement, np.ndarray]]] = {}
    for m, y in outputs:
        families.setdefault(_family(res, m), []).append((m, y))
    for family, items in families.items():
        callables = [(f"{i}", (lambda y: lambda *a: y)(y)) for i, (_, y) in enumerate(items)]
        try:
            report = cb.compare(*host, op=case.op, backends=callables, rerun=False, algorithm=family, **case.kwargs)
        except ConvBridgeError as exc:  # e.g. over the memory limit: say so, keep the timings
            for m, _ in items:
                m.verdict = f"not judged: {exc}"[:120]
            continue
        for pair in report.pairs:
            if pair.b == "reference" and pair.a.isdigit():
                m = items[int(pair.a)][0]
                m.verdict = pair.verdict
                m.ratio = pair.max_ratio / pair.allowed_ratio if pair.allowed_ratio else math.inf


# ------------------------------------------------------------------------------------------------ the suite

def gemm_peak(backend_names: Sequence[str], n: int = 2048, calls: int = 5) -> dict[str, Any]:
    """The machine's float32 GEMM rate, measured now: the best of ``np.matmul`` and (with torch) ``torch.mm``
    on ``n x n`` matrices, each its fastest of ``calls`` calls after a warm-up. :func:`run_suite` measures it
    at the start and at the end of a run and keeps the faster (a busy moment only lowers a rate)."""
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


def _best_peak(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """The faster of two peak measurements (at the start and at the end of a run), per source and overall."""
    rates = {k: max(a["rates"].get(k, 0.0), b["rates"].get(k, 0.0)) for k in {**a["rates"], **b["rates"]}}
    by = max(rates, key=lambda k: rates[k])
    return {"flops": rates[by], "by": by, "n": a["n"], "rates": rates, "runs": 2}


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
              progress: Progress | None = None, verify: bool = False, devices: int | None = None) -> SuiteResult:
    """Measure the machine's GEMM peak, then every case. Ctrl-C (KeyboardInterrupt) ends the run early with
    ``partial=True`` and everything measured so far. ``quick`` (a smoke test on the tiny :data:`QUICK` cases)
    times at most :data:`MIN_CALLS` calls per combination and measures the peak on smaller matrices. ``devices``:
    the jax methods compute each batch split along N over that many local JAX devices.

    Raises:
        ArgumentError: ``repeats`` < 1 or ``budget`` <= 0.
    """
    if repeats < 1 or not budget > 0:
        raise ArgumentError(f"repeats must be >= 1 and budget > 0 seconds; got repeats={repeats}, budget={budget}")
    repeats = min(repeats, MIN_CALLS) if quick else repeats
    t0 = time.perf_counter()
    settings = {"repeats": repeats, "min_calls": MIN_CALLS, "target_seconds": TARGET_SECONDS, "budget_s": budget,
                "tune": tune, "verify": verify, "quick": quick, "backends": list(backend_names),
                "algorithms": None if algorithms is None else sorted(algorithms), "dtype": "float32",
                "devices": devices}
    result = SuiteResult(_machine(backend_names), {}, settings)
    try:
        result.peak = gemm_peak(backend_names, n=512 if quick else 2048)
        for i, case in enumerate(cases):
            spec = case.spec()
            res = CaseResult(case, 2.0 * spec.macs, spec.out_shape)
            result.cases.append(res)
            run_case(case, backend_names, algorithms=algorithms, repeats=repeats, budget=budget, tune=tune,
                     progress=progress, index=i, total=len(cases), into=res, verify=verify, devices=devices)
        result.peak = _best_peak(result.peak, gemm_peak(backend_names, n=512 if quick else 2048))
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

    def interrupted(signum: int, frame: Any) -> None:
        _STOP.append(True)  # kept even where the KeyboardInterrupt is swallowed (JAX's GC callback)
        raise KeyboardInterrupt

    _STOP.clear()
    signal.signal(signal.SIGINT, interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


def _check_stop() -> None:
    """Raise the KeyboardInterrupt a library swallowed (Python ignores exceptions raised in GC callbacks)."""
    if _STOP:
        raise KeyboardInterrupt
