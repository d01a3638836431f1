"""The dispatcher: a registry of implementations keyed by (op, backend, algorithm), and the one place that
handles the batch axis, host conversion and device placement, and checks every result's shape and dtype.

An implementation receives a *batched* spec (``spec.layout.batched`` is True) and the
backend's arrays with their batch axis, and makes one framework call (or a short,
framework-free sequence of them, such as the im2col lowering). Each says which specs it
supports; a request none supports is a :class:`~convbridge.errors.ConvBridgeError` that
names the alternatives.

>>> {"native", "matmul", "fft"} <= {i.algorithm for i in implementations("conv", "numpy")}
True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from convbridge import backends
from convbridge._tracing import tracing
from convbridge._types import Array, ArrayLike
from convbridge.arrays import dtype_name, framework_of, shape_of
from convbridge.errors import ArgumentError, ArgumentTypeError, ConvBridgeError, ImplementationError
from convbridge.memory import check, native_bytes
from convbridge.ops import get_op
from convbridge.plan import Plan
from convbridge.spec import Spec

__all__ = ["Impl", "register", "implementations", "find", "place", "execute", "run"]

#: Modules that register algorithms for the backends (imported by :func:`_load`).
_PROVIDERS = ("convbridge.lowering.im2col", "convbridge.algorithms.fft", "convbridge.algorithms.direct")

Supports = Callable[[Spec, Plan], "ConvBridgeError | None"]


def _everything(spec: Spec, plan: Plan) -> ConvBridgeError | None:
    return None


@dataclass(frozen=True)
class Impl:
    """One implementation of an op.

    Attributes:
        op: ``"conv" | "conv_transpose" | "unfold" | "fold"``.
        backend: ``"numpy" | "jax" | "torch"``.
        algorithm: its name in a plan, e.g. ``"native"`` or ``"matmul"``.
        run: ``run(spec, plan, *arrays) -> array``: the batched spec and the backend's batched arrays
            (``(x, kernel, bias)`` for the convolutions, ``(x,)`` for unfold and fold).
        supports: ``supports(spec, plan)`` -> None, or the error that says why not (never raises).
        summary: one line for listings.
        composite: ``run`` is framework-free code over the backend's ops (such as the im2col lowering); the
            backend may compile it as a whole (JAX: one XLA program per spec and plan).
        memory: ``memory(spec)`` -> the bytes it needs at its peak (an estimate), checked against the memory
            limit before it runs (:mod:`convbridge.memory`).
        cost: ``cost(spec, plan)`` -> its estimated run time in seconds on a CPU core (a cheap model, never a
            measurement), or None when it has no model; ``algorithm="auto"`` (:mod:`convbridge.autotune`)
            picks the cheapest supported implementation and refines the pick by measurement when allowed.
    """

    op: str
    backend: str
    algorithm: str
    run: Callable[..., Array]
    supports: Supports = _everything
    summary: str = ""
    composite: bool = False
    memory: Callable[[Spec], int] = native_bytes
    cost: Callable[[Spec, Plan], float] | None = None

    def __repr__(self) -> str:
        return f"Impl({self.op}, {self.backend}, {self.algorithm}: {self.summary or self.run.__name__})"


_REGISTRY: dict[tuple[str, str, str], Impl] = {}
_FACTS: dict[tuple[Impl, Spec], tuple[int, Spec, tuple[int, ...]]] = {}
_COMPILED: dict[Impl, Callable[..., Array]] = {}


def register(impl: Impl) -> Impl:
    """Add an implementation; registering the same (op, backend, algorithm) again replaces it.

    Returns:
        ``impl``, so that registration can decorate a module-level name.

    Raises:
        ConvBridgeError: not an :class:`Impl`, an unknown op or backend, an algorithm name that is not a
            lower-case identifier, or a ``run``/``supports`` that is not callable.
    """
    if not isinstance(impl, Impl):
        raise ArgumentTypeError(f"register takes a convbridge.dispatch.Impl, got {type(impl).__name__}")
    get_op(impl.op)
    backends.validate(impl.backend)
    if impl.backend != impl.backend.lower():
        raise ArgumentError(f"backend names are lower case: {impl.backend!r}")
    if not isinstance(impl.algorithm, str) or not impl.algorithm.isidentifier() or impl.algorithm.lower() != \
            impl.algorithm:
        raise ArgumentError(f"an algorithm name is a lower-case identifier such as 'fft', got {impl.algorithm!r}")
    for name in ("run", "supports", "memory"):
        if not callable(getattr(impl, name)):
            raise ArgumentTypeError(f"Impl.{name} must be callable, got {getattr(impl, name)!r}")
    _REGISTRY[(impl.op, impl.backend, impl.algorithm)] = impl
    _COMPILED.pop(impl, None)
    return impl


_PROVIDED: list[bool] = []


def _load(backend: str) -> backends.Backend:
    be = backends.get(backend)
    if not _PROVIDED:  # import statements, once: torch.compile traces them (not importlib.import_module)
        import convbridge.algorithms.direct
        import convbridge.algorithms.fft
        import convbridge.lowering.im2col  # noqa: F401
        if not tracing():
            _PROVIDED.append(True)
    return be


def implementations(op: str | None = None, backend: str | None = None) -> tuple[Impl, ...]:
    """The registered implementations, optionally of one op and one installed backend: by op, then backend,
    the native algorithm first."""
    if op is not None:
        get_op(op)
    backend = None if backend is None else backends.validate(backend)
    for name in (backends.available() if backend is None else (backend,)):
        _load(name)
    found = [i for (o, b, _), i in _REGISTRY.items() if (op is None or o == op) and (backend is None or b == backend)]
    return tuple(sorted(found, key=lambda i: (i.op, backends.NAMES.index(i.backend), i.algorithm != "native",
                                              i.algorithm)))


def find(spec: Spec, plan: Plan) -> Impl:
    """The implementation that runs ``spec`` under ``plan``.

    Raises:
        ConvBridgeError: the backend cannot run the spec at all, no implementation of that algorithm is
            registered, or the one registered does not support the spec (its own message says why).
    """
    be = _load(plan.backend)
    impl = _REGISTRY.get((spec.op, plan.backend, plan.algorithm))
    if impl is None:
        known = sorted(a for (o, b, a) in _REGISTRY if o == spec.op and b == plan.backend)
        raise ArgumentError(f"no algorithm {plan.algorithm!r} for {spec.op} on the {plan.backend} backend; "
                            f"registered: {', '.join(map(repr, known)) or 'none'}; or 'auto' (the fastest that supports "
                            "the call)")
    problem = be.unsupported(spec, plan) or impl.supports(spec, plan)
    if problem is not None:
        if not isinstance(problem, ConvBridgeError):
            raise ImplementationError(f"{impl!r}.supports returned {problem!r}; it must return None or a "
                                      "ConvBridgeError that says why the spec is not supported")
        raise problem
    return impl


def place(plan: Plan, arrays: Sequence[ArrayLike | None]) -> tuple[Array, ...]:
    """The arrays as the plan's backend's arrays on the plan's device (None: where the first one lives)."""
    return _load(plan.backend).place(arrays, plan.device)


def execute(impl: Impl, spec: Spec, plan: Plan, native: Sequence[Array]) -> Array:
    """Run ``impl`` on the backend's arrays: add the batch axis when the user's arrays have none, check the
    result's shape and dtype against the spec, and drop the batch axis again."""
    traced = tracing()
    facts = None if traced else _FACTS.get((impl, spec))
    if facts is None:  # the spec's derived facts, once per (impl, spec): repeated small calls stay cheap
        facts = (impl.memory(spec) if not traced else 0, spec.as_batched(), spec.batched_out_shape)
        if not traced:
            if len(_FACTS) >= 512:
                _FACTS.pop(next(iter(_FACTS)))
            _FACTS[(impl, spec)] = facts
    nbytes, batched_spec, want = facts
    if not traced:  # torch.compile plans its own memory (and cannot trace the estimate's generators)
        check(nbytes, f"{spec.op} with the {impl.algorithm!r} algorithm on the {impl.backend} backend",
              "use a smaller batch (run it in chunks), a smaller geometry, or another algorithm or backend")
    batched = spec.layout.batched
    x = native[0] if batched else native[0][None]
    y = _runner(impl)(batched_spec, plan, x, *native[1:])
    dtype = spec.dtype or dtype_name(x)  # the user's dtype, whatever placing did
    if framework_of(y) != impl.backend or shape_of(y) != want or dtype_name(y) != dtype:
        raise ImplementationError(
            f"the {impl.algorithm!r} {spec.op} of the {impl.backend} backend returned a {framework_of(y)} array "
            f"{shape_of(y)} {dtype_name(y)} but the spec gives a {impl.backend} array {want} {dtype}; "
            f"the implementation ({impl.summary or impl.run}) breaks the dispatcher's contract. If it is one of "
            f"convbridge's own, please report it with the arguments ({spec.describe()})")
    return y if batched else y[0]


def _runner(impl: Impl) -> Callable[..., Array]:
    """``impl.run``, or for a composite, the backend's compiled version of it (made once)."""
    if not impl.composite:
        return impl.run
    if impl not in _COMPILED:
        _COMPILED[impl] = _load(impl.backend).compile(impl.run)
    return _COMPILED[impl]


def run(spec: Spec, plan: Plan, arrays: Sequence[ArrayLike | None]) -> Array:
    """Run ``spec`` under ``plan`` on arrays from any framework; the result is the plan's backend's array.
    ``algorithm="auto"`` is resolved here (:mod:`convbridge.autotune`), on the placed arrays."""
    if plan.algorithm == "auto":
        from convbridge import autotune

        native = place(plan, arrays)
        chosen = replace(plan, algorithm=autotune.resolve(spec, plan, native).algorithm)
        return execute(find(spec, chosen), spec, chosen, native)
    impl = find(spec, plan)
    return execute(impl, spec, plan, place(plan, arrays))
