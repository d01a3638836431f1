"""``algorithm="auto"``: the fastest correct algorithm per (op, backend, device, shapes, dtype, layout, arguments).

Every registered implementation (:mod:`convbridge.dispatch`) may carry a cost model, an estimate in seconds
from the geometry alone. ``auto`` takes the supported implementation with the lowest estimate; when measuring
is allowed (``choose(..., measure=True)``, :func:`measuring`, or ``CONVBRIDGE_AUTOTUNE=measure``) and the
call is not being traced (``jax.jit``, ``torch.compile``), the first eager call of a new key times the
cheapest candidates on the user's own arrays and keeps the fastest. Decisions are cached in memory; measured
ones are also written to a small JSON file under the user cache directory (``$CONVBRIDGE_CACHE_DIR``, else
``$XDG_CACHE_HOME/convbridge``, else ``~/.cache/convbridge``): atomically (a temporary file renamed into
place), merged under a lock so that concurrent processes keep each other's entries, versioned, and ignored
and rebuilt when it is unreadable or from another version.

Measuring never costs more than about 20 calls of the slowest candidate it times: each candidate gets one
warm-up call (which compiles on JAX) and up to three timed calls (more only when all are sub-millisecond),
taken in interleaved rounds, and at most :data:`MAX_CANDIDATES` are timed.

>>> import numpy as np
>>> choose(np.ones((1, 1, 8)), np.ones((1, 1, 3))).algorithm in ("native", "matmul", "fft", "shifted")
True
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from convbridge._tracing import tracing
from convbridge._types import Array, ArrayLike
from convbridge.errors import ArgumentError, ArgumentTypeError, ConvBridgeError, brief
from convbridge.plan import Plan
from convbridge.spec import Spec

__all__ = ["Choice", "choose", "resolve", "candidates", "measuring", "measure_setting", "cache_path", "clear", "AUTO", "CACHE_VERSION",
           "MAX_CANDIDATES"]

#: The algorithm name that asks for a choice.
AUTO = "auto"
#: The persisted cache's format; a file of another version is ignored and rebuilt.
CACHE_VERSION = 1
#: The most candidates one measurement times (the cheapest by the model).
MAX_CANDIDATES = 4
#: Candidates whose estimate exceeds the best estimate by this factor are not timed.
HOPELESS = 30.0
#: The most decisions the JSON file keeps (the newest).
MAX_ENTRIES = 2048
#: Timed calls per candidate after the warm-up (one when a warm-up took over SLOW_CALL seconds; up to
#: FAST_ROUNDS when every candidate is fast).
TIMED_CALLS, SLOW_CALL, FAST_ROUNDS = 3, 0.5, 9

_ENV = "CONVBRIDGE_AUTOTUNE"
_memory: dict[tuple[Any, ...], Choice] = {}
_lock = threading.Lock()
_state = threading.local()


@dataclass(frozen=True)
class Choice:
    """What ``auto`` chose for one call, and why.

    Attributes:
        algorithm: the chosen implementation's name, e.g. ``"native"`` or ``"fft"``.
        source: ``"model"`` (the cost models), ``"measured"`` (timed now) or ``"cache"`` (timed before).
        costs: every supported candidate's estimate in seconds (``inf`` where it has no model).
        timings: the timed candidates' median seconds, or None when nothing was timed.
        declined: the registered algorithms that cannot run this call, with the reason.
    """

    algorithm: str
    source: str
    costs: Mapping[str, float] = field(default_factory=dict)
    timings: Mapping[str, float] | None = None
    declined: Mapping[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        def ms(v: float) -> str:
            return "no model" if math.isinf(v) else f"{v * 1e3:.3g} ms"

        parts = [f"auto chose {self.algorithm!r} ({self.source})"]
        if self.timings:
            parts.append("measured: " + ", ".join(f"{a} {ms(t)}" for a, t in sorted(self.timings.items(),
                                                                                    key=lambda kv: kv[1])))
        parts.append("model: " + ", ".join(f"{a} {ms(c)}" for a, c in sorted(self.costs.items(), key=lambda kv: kv[1])))
        return "; ".join(parts)


# ------------------------------------------------------------------------------------------- measuring switch

_ON, _OFF = ("measure", "1", "on", "yes", "true"), ("", "model", "0", "off", "no", "false")


def measure_setting() -> bool:
    """``CONVBRIDGE_AUTOTUNE``: ``measure`` (or 1, on, yes, true) times the candidates on the first eager call of
    each shape; ``model`` (or unset, 0, off, no, false) uses the cost models only.

    Raises:
        ArgumentError: any other value.
    """
    value = os.environ.get(_ENV, "").strip().lower()
    if value in _OFF:
        return False
    if value in _ON:
        return True
    raise ArgumentError(f"{_ENV}={value!r}: use 'measure' (time the candidates on the first call of each shape) or "
                        "'model' (the cost models only); also accepted: 1/0, on/off, yes/no, true/false")


_measure_default = measure_setting


def _measure_allowed() -> bool:
    override = getattr(_state, "measure", None)
    return _measure_default() if override is None else bool(override)


@contextlib.contextmanager
def measuring(enabled: bool = True) -> Iterator[None]:
    """Within the block, ``algorithm="auto"`` times the candidates on the first eager call of each new key
    (``enabled=False``: the cost models only). Thread-local; restores the previous setting.

    >>> with measuring(False):
    ...     _measure_allowed()
    False
    """
    if not isinstance(enabled, bool):
        raise ArgumentTypeError(f"measuring takes True or False, got {brief(enabled)}")
    before = getattr(_state, "measure", None)
    _state.measure = enabled
    try:
        yield
    finally:
        _state.measure = before


# ------------------------------------------------------------------------------------------------ the keys

def _device_of(backend: str, arrays: Sequence[Array | None]) -> str:
    x = arrays[0]
    if backend == "torch":
        return str(getattr(x, "device", "cpu"))
    if backend == "jax":  # the platform: a tracer under jit finds what an eager call on the same arrays chose
        try:
            return str(next(iter(x.devices())).platform)  # type: ignore[union-attr]
        except Exception:  # a tracer has no devices: the default backend computes it
            import jax

            return str(jax.default_backend())
    return "cpu"


def _memory_key(spec: Spec, plan: Plan, device: str) -> tuple[Any, ...]:
    return (spec, plan.backend, plan.precision, device)


def _disk_key(spec: Spec, plan: Plan, device: str) -> str:
    """A stable text key: the spec's full repr (shapes, dtype, layout, every argument), the backend, its
    framework's version, the device and precision policy, and this machine's processor."""
    import platform

    version = _framework_version(plan.backend)
    text = f"{spec!r}|{plan.backend} {version}|{device}|{plan.precision}|{platform.machine()} {os.cpu_count()}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _framework_version(backend: str) -> str:
    module = {"numpy": "numpy", "jax": "jax", "torch": "torch"}[backend]
    return str(getattr(sys.modules.get(module), "__version__", "?"))


# --------------------------------------------------------------------------------------------- the JSON file

def cache_path() -> Path:
    """Where measured decisions persist: ``$CONVBRIDGE_CACHE_DIR/autotune.json``, else under
    ``$XDG_CACHE_HOME/convbridge``, else ``~/.cache/convbridge``."""
    root = os.environ.get("CONVBRIDGE_CACHE_DIR")
    if root:
        return Path(root).expanduser() / "autotune.json"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "convbridge" / "autotune.json"


def _read(path: Path) -> dict[str, Any]:
    """The file's entries; an absent, unreadable, corrupted or other-version file reads as empty."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION or not isinstance(data.get("entries"), dict):
        return {}
    return {k: v for k, v in data["entries"].items() if isinstance(v, dict) and isinstance(v.get("algorithm"), str)}


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` + ``.lock`` (POSIX); elsewhere, no lock (the rename stays atomic)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path.with_name(path.name + ".lock"), "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _persist(key: str, entry: Mapping[str, Any]) -> None:
    """Merge one entry into the file under the lock, then rename a complete temporary file into place. A cache
    that cannot be written (read-only home, full disk) costs the decision's persistence, never the call."""
    path = cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _file_lock(path):
            entries = _read(path)
            entries[key] = dict(entry)
            if len(entries) > MAX_ENTRIES:  # the oldest decisions go first: the file stays small and fast to read
                keep = sorted(entries, key=lambda k: str(entries[k].get("when", "")))[-MAX_ENTRIES:]
                entries = {k: entries[k] for k in keep}
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".autotune-", suffix=".json")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    json.dump({"version": CACHE_VERSION, "entries": entries}, handle, sort_keys=True)
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
    except OSError:
        pass


def _recall(key: str) -> dict[str, Any] | None:
    return _read(cache_path()).get(key)


def clear(*, disk: bool = False) -> None:
    """Forget the decisions kept in memory; ``disk=True`` also removes the JSON file."""
    with _lock:
        _memory.clear()
    if disk:
        with contextlib.suppress(FileNotFoundError):
            cache_path().unlink()


# ------------------------------------------------------------------------------------------------ choosing

def candidates(spec: Spec, plan: Plan) -> tuple[dict[str, float], dict[str, str]]:
    """Every supported algorithm's estimate in seconds (inf without a model), and why the others decline.

    Raises:
        ConvBridgeError: no algorithm supports the call (the one reason itself when every algorithm gives the
            same, e.g. the backend's DTypeError for a dtype it cannot compute).
    """
    from convbridge import dispatch

    costs: dict[str, float] = {}
    declined: dict[str, str] = {}
    refusals: list[ConvBridgeError] = []
    for impl in dispatch.implementations(spec.op, plan.backend):
        try:
            dispatch.find(spec, replace(plan, algorithm=impl.algorithm))
        except ConvBridgeError as exc:
            declined[impl.algorithm] = str(exc)
            refusals.append(exc)
            continue
        cost = math.inf
        if impl.cost is not None:
            try:
                cost = float(impl.cost(spec, plan))
            except Exception as exc:  # a broken model must not break the call
                declined_reason = f"its cost model failed ({type(exc).__name__}: {exc})"
                declined[impl.algorithm] = declined_reason
                continue
            if not cost >= 0:
                cost = math.inf
        costs[impl.algorithm] = cost
    if not costs:
        if refusals and len(set(declined.values())) == 1:  # one reason for all: the backend refuses the call itself
            raise refusals[0]  # (e.g. complex128 on JAX without x64), with its own type
        reasons = "; ".join(f"{a}: {r}" for a, r in declined.items())
        raise ArgumentError(f"no algorithm can run this {spec.op} on the {plan.backend} backend ({reasons})")
    return costs, declined


def _by_model(costs: Mapping[str, float]) -> str:
    """The lowest estimate; without any model, the native algorithm (ties go to native, then by name)."""
    return min(costs, key=lambda a: (costs[a], a != "native", a))


def _traced(backend: str, arrays: Sequence[Array | None]) -> bool:
    if backend == "jax":
        import jax

        return any(isinstance(a, jax.core.Tracer) for a in arrays if a is not None)
    return False


def _sync(y: Any) -> None:
    block = getattr(y, "block_until_ready", None)
    if block is not None:
        block()


def _timed(call: Callable[[], Any]) -> float:
    start = time.perf_counter()
    _sync(call())
    return time.perf_counter() - start


def _time_all(calls: Mapping[str, Callable[[], Any]]) -> dict[str, float]:
    """Each call's median time: one warm-up each (JAX compiles), then rounds that call every candidate once in
    turn, so that a slow moment of the machine or a cold start does not fall on one candidate alone.
    :data:`TIMED_CALLS` rounds (one when a warm-up took over :data:`SLOW_CALL` seconds); fast calls get more
    rounds, up to :data:`FAST_ROUNDS`, while a round takes under a millisecond or two."""
    first = {name: _timed(call) for name, call in calls.items()}
    slowest = max(first.values())
    rounds = 1 if slowest > SLOW_CALL else TIMED_CALLS
    if slowest * len(calls) < 2e-3:
        rounds = FAST_ROUNDS
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            times[name].append(_timed(call))
    return {name: sorted(t)[len(t) // 2] for name, t in times.items()}


def _measure(spec: Spec, plan: Plan, arrays: Sequence[Array | None], costs: Mapping[str, float]) -> dict[str, float]:
    """Time the cheapest candidates by the model (at most :data:`MAX_CANDIDATES`, none :data:`HOPELESS` times
    the best estimate) on the user's arrays, interleaved; the native algorithm is always among them."""
    from convbridge import dispatch

    best = min(costs.values())
    ranked = sorted(costs, key=lambda a: (costs[a], a))
    chosen = [a for a in ranked if math.isinf(best) or costs[a] <= HOPELESS * best][:MAX_CANDIDATES]
    if "native" in costs and "native" not in chosen:  # the framework's own call is always a contender
        chosen = [*chosen[:MAX_CANDIDATES - 1], "native"]
    grad = contextlib.nullcontext()
    if plan.backend == "torch":
        import torch

        grad = torch.no_grad()  # type: ignore[assignment]

    def call(name: str) -> Callable[[], Any]:
        sub = replace(plan, algorithm=name)
        impl = dispatch.find(spec, sub)
        return lambda: dispatch.execute(impl, spec, sub, arrays)

    with grad:
        return _time_all({name: call(name) for name in chosen})


#: Algorithms whose result differs from the definition's when an input holds inf or NaN (an FFT spreads it over
#: its whole output slice): ``auto`` passes them over for such inputs, whatever it measured.
LOCAL_ONLY = ("fft",)


def _finite(backend: str, arrays: Sequence[Array | None]) -> bool:
    """Whether every input is finite (one pass over each; called only when an FFT was chosen)."""
    for a in arrays:
        if a is None:
            continue
        if backend == "torch":
            import torch

            if not bool(torch.isfinite(a).all()):
                return False
        elif backend == "jax":
            import jax.numpy as jnp

            if not bool(jnp.isfinite(a).all()):
                return False
        elif not np.isfinite(a).all():
            return False
    return True


def resolve(spec: Spec, plan: Plan, arrays: Sequence[Array | None], *, measure: bool | None = None) -> Choice:
    """The choice for one call whose arrays are already the backend's (``dispatch.place``).

    Args:
        spec, plan: the call; ``plan.algorithm`` is ignored.
        arrays: the placed arrays (timed on when measuring).
        measure: None: as :func:`measuring` / ``CONVBRIDGE_AUTOTUNE`` say; True or False: this call's choice.
            Never inside a trace, whatever it says.
    """
    choice = _resolve(spec, plan, arrays, measure)
    if choice.algorithm in LOCAL_ONLY and not tracing() and not _traced(plan.backend, arrays) and \
            not _finite(plan.backend, arrays):
        costs = {a: c for a, c in choice.costs.items() if a not in LOCAL_ONLY}
        why = "an input holds inf or NaN, which an FFT spreads over its whole output slice"
        return Choice(_by_model(costs), "model", costs, None, {**choice.declined, choice.algorithm: why})
    return choice


def _resolve(spec: Spec, plan: Plan, arrays: Sequence[Array | None], measure: bool | None) -> Choice:
    device = _device_of(plan.backend, arrays)
    key = _memory_key(spec, plan, device)
    if tracing():  # torch.compile: no locks, files or stores; a decision made eagerly before still counts
        known = _memory.get(key)
        if known is not None:
            return known
        costs, declined = candidates(spec, plan)
        return Choice(_by_model(costs), "model", costs, None, declined)
    want = _measure_allowed() if measure is None else measure
    with _lock:
        known = _memory.get(key)
    if known is not None and (known.source != "model" or not want):
        return known if known.source != "measured" else replace(known, source="cache")
    costs, declined = candidates(spec, plan)
    traced = _traced(plan.backend, arrays)
    disk = None if traced else _disk_key(spec, plan, device)
    if disk is not None:
        entry = _recall(disk)
        if entry is not None and entry["algorithm"] in costs:
            timings = entry.get("timings") if isinstance(entry.get("timings"), dict) else None
            choice = Choice(entry["algorithm"], "cache", costs, timings, declined)
            with _lock:
                _memory[key] = choice
            return choice
    empty = any(a is not None and 0 in tuple(a.shape) for a in arrays)  # nothing to time on an empty batch
    if want and not traced and not empty and len(costs) > 1:
        timings = _measure(spec, plan, arrays, costs)
        fastest = min(timings, key=lambda a: (timings[a], a))
        choice = Choice(fastest, "measured", costs, timings, declined)
        if disk is not None:
            _persist(disk, {"algorithm": fastest, "timings": timings, "spec": spec.describe(),
                            "backend": plan.backend, "device": device, "when": time.strftime("%Y-%m-%dT%H:%M:%S")})
    else:
        choice = Choice(_by_model(costs), "model", costs, None, declined)
    with _lock:
        _memory[key] = choice
    return choice


def choose(x: ArrayLike, kernel: ArrayLike, bias: ArrayLike | None = None, *, op: str = "conv",
           backend: str | None = None, measure: bool = False, **op_kwargs: Any) -> Choice:
    """What ``algorithm="auto"`` runs for these arguments, with every candidate's estimate (and timing).

    Args:
        x, kernel, bias: as for ``cb.conv`` / ``cb.conv_transpose`` (any framework).
        op: ``"conv"`` or ``"conv_transpose"``.
        backend: ``"numpy" | "jax" | "torch"``; None infers it from ``x``.
        measure: time the cheapest candidates now (like ``scipy.signal.choose_conv_method(measure=True)``),
            keep the fastest and remember it (in memory and in the JSON cache).
        **op_kwargs: the op's keyword arguments (stride, padding, layout, ...), and precision / device.

    Returns:
        A :class:`Choice`.

    Raises:
        ConvBridgeError: invalid arguments, or no algorithm can run them.
    """
    from convbridge import dispatch
    from convbridge.ops import build, get_op, split_plan_keywords
    from convbridge.plan import make_plan

    if not isinstance(measure, bool):
        raise ArgumentTypeError(f"measure is True or False, got {brief(measure)}")
    if op not in ("conv", "conv_transpose"):
        raise ArgumentError(f"choose picks algorithms for 'conv' and 'conv_transpose', not {brief(op)}")
    kwargs, plan_kwargs = split_plan_keywords(op_kwargs)
    if plan_kwargs.pop("algorithm", AUTO) != AUTO:
        raise ArgumentError("choose is algorithm='auto' itself; it takes no other algorithm")
    spec = build(op, x, kernel, bias, kwargs)
    plan = make_plan(backend, x, algorithm=AUTO, **plan_kwargs)
    arrays = dispatch.place(plan, (x, kernel, bias) if get_op(op).kernel_is_array else (x,))
    return resolve(spec, plan, arrays, measure=measure)
