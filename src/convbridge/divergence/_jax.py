"""The JAX sides of :func:`convbridge.divergence`: Flax linen (method interception), Flax nnx and Equinox (module
traversal: each leaf module's class ``__call__`` is wrapped for the run, then restored).

Every run is eager (no ``jit``), so each layer's input and output are concrete arrays; Equinox models, which take
one example, run one example at a time and the calls are stacked into a batch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from typing import Any, Callable, Iterator, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from convbridge.arrays import to_host
from convbridge.divergence._common import Call, Run, conv_info, first_array, linear_info, plain_config, window_terms
from convbridge.divergence.layers import Info, kind_of
from convbridge.errors import ArgumentError

__all__ = ["LinenSide", "NnxSide", "EquinoxSide"]


def _host(a: Any) -> np.ndarray:
    return to_host(a, "a layer's value")


def _f64(tree: Any) -> Any:
    """Every floating leaf of ``tree`` as float64 (call inside ``jax.enable_x64``)."""
    def cast(a: Any) -> Any:
        if hasattr(a, "dtype") and jnp.issubdtype(a.dtype, jnp.floating):
            return jnp.asarray(np.asarray(a, np.float64))
        return a

    return jax.tree_util.tree_map(cast, tree)


def _scope(float64: bool) -> contextlib.AbstractContextManager[Any]:
    return jax.enable_x64(True) if float64 else contextlib.nullcontext()


def _type_name(obj: Any, api: str) -> str:
    where = type(obj).__module__
    if where.startswith(("flax.", "equinox.")):
        return f"{api}.{type(obj).__name__}"
    return f"{where}.{type(obj).__name__}"


def _norm_info(kind: str, p: Mapping[str, Any], eps: Any, x: Any, config: dict[str, Any], terms: int = 0) -> Info:
    params = {k: _host(v) for k, v in p.items() if v is not None}
    out = Info(kind, params, config, terms, None, -1)
    if eps is not None:
        out.config["eps"] = float(eps)
    return out


# ------------------------------------------------------------------------------------------------------ linen

def _linen_info(m: Any, x: Any, variables: Mapping[str, Any]) -> Info:
    """A linen layer's :class:`Info`; ``variables``: its own collections, concrete (also under ``jit``)."""
    import flax.linen as nn

    kind = kind_of(type(m).__name__)
    params = dict(variables.get("params", {}))
    if kind in ("conv", "conv_transpose"):
        from convbridge.port import _flax

        try:
            layer, w, b = _flax.read(m, {"params": params})
            return conv_info(layer, w, b, channels_last=True, spatial=tuple(x.shape[1:-1]))
        except Exception:
            return Info("other", config=plain_config(m))
    if isinstance(m, nn.Dense):
        k = _host(params["kernel"])
        return linear_info(k.T, None if params.get("bias") is None else _host(params["bias"]))
    stats = dict(variables.get("batch_stats", {}))
    if isinstance(m, nn.BatchNorm):
        return _norm_info("batchnorm", {"weight": params.get("scale"), "bias": params.get("bias"),
                                        "running_mean": stats.get("mean"), "running_var": stats.get("var")},
                          m.epsilon, x, {})
    if isinstance(m, nn.GroupNorm):
        groups = m.num_groups or (x.shape[-1] // (m.group_size or 1))
        terms = int(np.prod(x.shape[1:-1])) * (x.shape[-1] // max(groups, 1))
        return _norm_info("groupnorm", {"weight": params.get("scale"), "bias": params.get("bias")}, m.epsilon, x,
                          {"num_groups": float(groups)}, terms)
    if isinstance(m, nn.LayerNorm):
        return _norm_info("layernorm", {"weight": params.get("scale"), "bias": params.get("bias")}, m.epsilon, x, {},
                          int(x.shape[-1]))
    return _plain_info(m, kind, x, params)


def _plain_info(m: Any, kind: str, x: Any, params: Mapping[str, Any]) -> Info:
    """A layer convbridge has no reader for: its kind, configuration and any arrays it holds; channels last."""
    config = plain_config(m)
    out = Info(kind, {k: _host(v) for k, v in params.items() if hasattr(v, "shape")}, config, 0, None, -1)
    if kind in ("avgpool",):
        out.terms = window_terms(config.get("kernel_size"))
    elif kind == "adaptive_avgpool":
        size = config.get("output_size")
        spatial = x.shape[1:-1]
        size = size if isinstance(size, tuple) else (size,) * len(spatial)
        try:
            out.terms = int(np.prod([-(-n // int(o or n)) + 1 for n, o in zip(spatial, size)]))
        except (TypeError, ValueError):
            out.terms = int(np.prod(spatial))
    elif kind == "upsample" and str(config.get("mode", "")).lower() == "nearest":
        out.kind = "upsample_nearest"
    elif kind == "gelu" and config.get("approximate") in (True, "tanh"):
        out.config["approximate"] = "tanh"
    return out


class _Tape:
    """Leaf calls in order: a call is a leaf when no recorded module was called inside it.

    A run with feeds replaces the input of leaf ``k`` with ``feeds[k]`` (its output is then ``fed[k]``); the
    leaf is found by its position among all intercepted calls in the run without feeds (``orders``), because
    whether a call is a leaf is known only once it returns. Feeding changes the values downstream, never the
    sequence of calls, and every judged layer is fed. Values are kept as they come (tracers under ``jit``, which
    then returns them); :meth:`calls` converts them.
    """

    def __init__(self, feeds: Mapping[int, Any], describe: bool, orders: Sequence[int] = ()) -> None:
        self.meta: list[tuple[str, str, Info]] = []
        self.xs: list[Any] = []
        self.ys: list[Any] = []
        self.orders: list[int] = []
        self.fed: dict[int, Any] = {}
        self.stack: list[bool] = []
        self.feeds = feeds
        self.describe = describe
        self.count = 0
        self.by_order = {orders[k]: k for k in feeds}

    def around(self, name: str, type_name: str, info: Callable[[Any], Info], call: Callable[[Any], Any],
               args: tuple[Any, ...]) -> Any:
        """Run ``call(args)`` (the first argument replaced by a feed waiting for it); record it if it is a leaf."""
        order = self.count
        self.count += 1
        k = self.by_order.get(order)
        xin = first_array(args)  # what arrived (the glue's output), recorded even when a feed replaces it
        if k is not None:
            args = (jnp.asarray(self.feeds[k]), *args[1:])
        self.stack.append(False)
        try:
            out = call(args)
        finally:
            nested = self.stack.pop()
            if self.stack:
                self.stack[-1] = True
        y = first_array(out)
        if nested or xin is None or y is None:
            return out
        if k is not None:
            self.fed[k] = y
        self.meta.append((name, type_name, info(xin) if self.describe else Info("")))
        self.xs.append(xin)
        self.ys.append(y)
        self.orders.append(order)
        return out

    def calls(self, xs: Sequence[Any] | None = None, ys: Sequence[Any] | None = None) -> list[Call]:
        """The recorded calls with host values (``xs``/``ys``: the values a jitted run returned)."""
        xs = self.xs if xs is None else xs
        ys = self.ys if ys is None else ys
        return [Call(n, t, _host(a), _host(b), i) for (n, t, i), a, b in zip(self.meta, xs, ys)]


def _path_get(tree: Any, path: Sequence[str]) -> Any:
    for p in path:
        if not isinstance(tree, Mapping) or p not in tree:
            return {}
        tree = tree[p]
    return tree


class _Jitted:
    """A side whose run is one ``jax.jit`` program ``program(params, x, feeds) -> (y, xs, ys, fed)``."""

    orders: list[int]

    def run(self, x: np.ndarray, feeds: Mapping[int, np.ndarray], float64: bool, structure: bool = False) -> Run:
        raise NotImplementedError

    def _execute(self, program: Callable[..., Any], params: Any, x: np.ndarray, feeds: Mapping[int, np.ndarray],
                 float64: bool, structure: bool, tape: Callable[[], _Tape]) -> Run:
        """Run ``program`` (inside the side's dtype scope); with ``structure``, only trace it."""
        dtype = np.float64 if float64 else None
        xin = jnp.asarray(x.astype(dtype) if dtype else x)
        fed_in = {k: jnp.asarray(v.astype(dtype) if dtype else v) for k, v in feeds.items()}
        if structure:
            shapes = jax.eval_shape(program, params, xin, fed_in)
            self.orders = tape().orders
            return Run(tape().calls(*[[np.broadcast_to(np.zeros((), s.dtype), s.shape) for s in v]
                                      for v in shapes[1:3]]), {}, np.zeros(0))
        y, xs, ys, fed = jax.jit(program)(params, xin, fed_in)
        if not feeds:
            self.orders = tape().orders
        return Run(tape().calls(xs, ys), {k: _host(v) for k, v in fed.items()}, _host(y))

    def structure(self, x: np.ndarray) -> list[Call]:
        """The leaf calls' names, kinds and shapes, from tracing alone (values are zeros, nothing is compiled)."""
        return self.run(x, {}, False, structure=True).calls


class LinenSide(_Jitted):
    """A ``(linen_module, variables)`` pair (or ``(module, variables, apply_kwargs)``), run with
    ``flax.linen.intercept_methods``: every submodule's ``__call__`` is seen with its inputs and output.

    The run is one ``jax.jit`` program returning every leaf's input and output (one compile instead of one per
    operation, which is what eager execution costs); parameters are read for judging from the concrete variables
    by each module's path.
    """

    framework = "flax.linen"
    channels_last = True

    def __init__(self, module: Any, variables: Any, kwargs: Mapping[str, Any] | None = None) -> None:
        self.module, self.variables, self.kwargs = module, variables, dict(kwargs or {})
        self.description = f"flax.linen {type(module).__name__}"
        self.orders: list[int] = []

    def run(self, x: np.ndarray, feeds: Mapping[int, np.ndarray], float64: bool, structure: bool = False) -> Run:
        import flax.linen as nn

        tape = _Tape({}, False)

        def interceptor(next_fun: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                        context: Any) -> Any:
            if context.method_name != "__call__" or not args:
                return next_fun(*args, **kwargs)
            m = context.module
            path = tuple(str(p) for p in m.scope.path) if m.scope is not None else ()
            concrete = {col: _path_get(tree, path) for col, tree in self.variables.items()}
            return tape.around("/".join(path) or type(m).__name__, _type_name(m, "flax.linen"),
                               lambda xin: _linen_info(m, xin, concrete), lambda a: next_fun(*a, **kwargs), args)

        def program(variables: Any, xin: Any, fed_in: Any) -> Any:
            nonlocal tape
            tape = _Tape(fed_in, not float64 and not fed_in, self.orders)
            with nn.intercept_methods(interceptor):
                y = self.module.apply(variables, xin, **self.kwargs)
            if fed_in:  # the model's own output: a plain run in the same program
                y = self.module.apply(variables, xin, **self.kwargs)
            return first_array(y), tape.xs, tape.ys, tape.fed

        with _scope(float64):
            variables = _f64(self.variables) if float64 else self.variables
            return self._execute(program, variables, x, feeds, float64, structure, lambda: tape)


# ------------------------------------------------------------------------------------------ nnx and Equinox

def _children(obj: Any, path: str, is_module: Callable[[Any], bool], seen: set[int]) -> Iterator[tuple[str, Any]]:
    """Every module inside ``obj`` with its dotted path (fields, lists, tuples, dicts), depth first."""
    if is_module(obj):
        if id(obj) in seen:
            return
        seen.add(id(obj))
        yield path, obj
        fields = ([f.name for f in dataclasses.fields(obj)] if dataclasses.is_dataclass(obj)
                  else [k for k in vars(obj) if not k.startswith("_")])
        for name in fields:
            value = getattr(obj, name, None)
            yield from _children(value, f"{path}.{name}" if path else name, is_module, seen)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _children(v, f"{path}.{i}" if path else str(i), is_module, seen)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _children(v, f"{path}.{k}" if path else str(k), is_module, seen)


@contextlib.contextmanager
def _wrapped(modules: Mapping[int, tuple[str, Any]], tape: _Tape, api: str,
             describe: Callable[[Any, Any], Info]) -> Iterator[None]:
    """Wrap ``__call__`` of the classes of ``modules`` so that their calls go through ``tape``; restore after."""
    classes = {type(m) for _, m in modules.values()}
    saved: dict[type, Any] = {cls: cls.__dict__.get("__call__") for cls in classes}
    try:
        for cls in classes:
            original = cls.__call__

            @functools.wraps(original)
            def call(self: Any, *args: Any, __original: Any = original, **kwargs: Any) -> Any:
                found = modules.get(id(self))
                if found is None or not args:
                    return __original(self, *args, **kwargs)
                name = found[0]
                return tape.around(name, _type_name(self, api), lambda xin: describe(self, xin),
                                   lambda a: __original(self, *a, **kwargs), args)

            type.__setattr__(cls, "__call__", call)
        yield
    finally:
        for cls, original in saved.items():
            if original is None:
                type.__delattr__(cls, "__call__")
            else:
                type.__setattr__(cls, "__call__", original)


def _nnx_info(m: Any, x: Any) -> Info:
    from flax import nnx

    kind = kind_of(type(m).__name__)
    if kind in ("conv", "conv_transpose"):
        from convbridge.port import _flax

        try:
            layer, w, b = _flax.read(m)
            return conv_info(layer, w, b, channels_last=True, spatial=tuple(x.shape[1:-1]))
        except Exception:
            return Info("other", config=plain_config(m))

    def value(v: Any) -> Any:
        return None if v is None else v.get_value() if hasattr(v, "get_value") else v

    if isinstance(m, nnx.Linear):
        return linear_info(_host(value(m.kernel)).T, None if m.bias is None else _host(value(m.bias)))
    if isinstance(m, nnx.BatchNorm):
        return _norm_info("batchnorm", {"weight": value(m.scale), "bias": value(m.bias),
                                        "running_mean": value(m.mean), "running_var": value(m.var)},
                          m.epsilon, x, {})
    if isinstance(m, nnx.LayerNorm):
        return _norm_info("layernorm", {"weight": value(m.scale), "bias": value(m.bias)}, m.epsilon, x, {},
                          int(x.shape[-1]))
    if isinstance(m, nnx.GroupNorm):
        groups = m.num_groups
        terms = int(np.prod(x.shape[1:-1])) * (x.shape[-1] // max(groups, 1))
        return _norm_info("groupnorm", {"weight": value(m.scale), "bias": value(m.bias)}, m.epsilon, x,
                          {"num_groups": float(groups)}, terms)
    return _plain_info(m, kind, x, {})


class _Eager:
    def structure(self, x: np.ndarray) -> list[Call]:
        """The leaf calls (a run: eager sides have nothing cheaper)."""
        return self.run(x, {}, False).calls  # type: ignore[attr-defined]


class NnxSide(_Eager):
    """A Flax nnx module (channels last), its leaf modules' calls recorded."""

    framework = "flax.nnx"
    channels_last = True

    def __init__(self, model: Any) -> None:
        from flax import nnx

        for path, node in nnx.iter_graph(model):
            training = ((isinstance(node, nnx.BatchNorm) and not node.use_running_average)
                        or (isinstance(node, nnx.Dropout) and not node.deterministic))
            if training:
                where = ".".join(map(str, path)) or type(node).__name__
                what = "uses batch statistics" if isinstance(node, nnx.BatchNorm) else "is random"
                raise ArgumentError(f"the nnx model {type(model).__name__} is in training mode ({where}: "
                                    f"{type(node).__name__} {what}), so its layers cannot be compared; call "
                                    "model.eval() first")
        self.model = model
        self.description = f"flax.nnx {type(model).__name__}"
        self.orders: list[int] = []

    def _modules(self, model: Any) -> dict[int, tuple[str, Any]]:
        from flax import nnx

        out = {}
        for path, node in nnx.iter_graph(model):
            if isinstance(node, nnx.Module) and node is not model:
                out[id(node)] = (".".join(str(p) for p in path), node)
        return out

    def run(self, x: np.ndarray, feeds: Mapping[int, np.ndarray], float64: bool) -> Run:
        from flax import nnx

        tape = _Tape(feeds, not float64, self.orders)
        with _scope(float64):
            graphdef, state = nnx.split(self.model)  # a copy runs: whatever a layer writes stays off the user's model
            model = nnx.merge(graphdef, _f64(state) if float64 else state)
            xin = jnp.asarray(x.astype(np.float64) if float64 else x)
            with _wrapped(self._modules(model), tape, "flax.nnx", _nnx_info):
                y = model(xin)
            if feeds:
                y = model(xin)
            if not feeds:
                self.orders = tape.orders
            return Run(tape.calls(), {k: _host(v) for k, v in tape.fed.items()}, _host(first_array(y)))


def _eqx_info(m: Any, x: Any) -> Info:
    """An Equinox layer (called on one example, channels first)."""
    import equinox as eqx

    kind = kind_of(type(m).__name__)
    if isinstance(m, eqx.nn.Lambda):
        fn = getattr(m, "fn", None)
        kind = kind_of(getattr(fn, "__name__", "") or "other")
    if kind in ("conv", "conv_transpose"):
        from convbridge.port import _equinox

        try:
            layer, w, b = _equinox.read(m)
            return conv_info(layer, w, b, channels_last=False, spatial=tuple(x.shape[1:]))
        except Exception:
            return Info("other", config=plain_config(m))
    if isinstance(m, eqx.nn.Linear):
        w = _host(m.weight)
        return linear_info(w if w.ndim == 2 else w.reshape(-1, 1), None if m.bias is None else _host(m.bias))
    arrays = {f.name: getattr(m, f.name) for f in dataclasses.fields(m)
              if hasattr(getattr(m, f.name, None), "shape")}
    if kind == "batchnorm":
        canon = {"weight": arrays.get("weight"), "bias": arrays.get("bias"),
                 "running_mean": arrays.get("running_mean", arrays.get("mean")),
                 "running_var": arrays.get("running_var", arrays.get("var"))}
        if canon["running_mean"] is not None and canon["running_var"] is not None:
            out = _norm_info("batchnorm", canon, getattr(m, "eps", None), x, {})
            out.channels_axis = 1
            return out
        kind = "other"
    out = _plain_info(m, kind, x[None], arrays)  # terms from a batched, channels-last view are not used here
    out.channels_axis = 1
    if kind in ("avgpool", "adaptive_avgpool"):
        out.terms = window_terms(out.config.get("kernel_size")) or int(np.prod(x.shape[1:]))
    if kind in ("groupnorm", "layernorm"):
        out.terms = int(np.prod(x.shape))
    return out


class EquinoxSide(_Jitted):
    """An Equinox module taking one example (channels first): the batch is ``jax.vmap``-ed in one ``jax.jit``
    program returning every leaf's input and output; parameters are read for judging from the concrete model by
    each module's path."""

    framework = "equinox"
    channels_last = False

    def __init__(self, model: Any) -> None:
        import equinox as eqx

        for path, node in _children(model, "", lambda o: isinstance(o, eqx.Module), set()):
            if isinstance(node, eqx.nn.Dropout) and not node.inference:
                raise ArgumentError(f"the Equinox model {type(model).__name__} has a Dropout in training mode "
                                    f"({path or 'the model'}: inference=False), so its layers cannot be compared; "
                                    "use eqx.nn.inference_mode(model) first")
        self.model = model
        self.description = f"equinox {type(model).__name__}"
        self.orders: list[int] = []
        self.concrete = {p: m for p, m in _children(model, "", lambda o: isinstance(o, eqx.Module), set())}

    def run(self, x: np.ndarray, feeds: Mapping[int, np.ndarray], float64: bool, structure: bool = False) -> Run:
        import equinox as eqx

        tape = _Tape({}, False)
        paths: dict[int, str] = {}

        def describe(m: Any, xin: Any) -> Info:
            return _eqx_info(self.concrete[paths[id(m)]], xin)

        def one(params: Any, static: Any, xi: Any, fed_in: Any) -> Any:
            nonlocal tape
            model = eqx.combine(params, static)
            modules = {id(m): (p, m) for p, m in _children(model, "", lambda o: isinstance(o, eqx.Module), set())
                       if m is not model}
            paths.clear()
            paths.update({k: p for k, (p, _) in modules.items()})
            tape = _Tape(fed_in, not float64 and not fed_in, self.orders)
            with _wrapped(modules, tape, "equinox.nn", describe):
                y = model(xi)
            if fed_in:  # the model's own output: a plain run in the same program
                y = model(xi)
            return first_array(y), tape.xs, tape.ys, tape.fed

        with _scope(float64):
            model = _f64(self.model) if float64 else self.model
            params, static = eqx.partition(model, eqx.is_array)

            def program(p: Any, a: Any, f: Any) -> Any:
                return jax.vmap(lambda pp, aa, ff: one(pp, static, aa, ff), in_axes=(None, 0, 0))(p, a, f)

            return self._execute(program, params, x, feeds, float64, structure, lambda: tape)
