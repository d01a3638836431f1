"""Module ports between torch.nn, Flax (linen and nnx) and Equinox, each exact, each checkable.

A source module is read into a :class:`~convbridge.port.layer.Layer` (PyTorch's meaning, padding as
explicit pairs) plus its kernel in torch's layout; the target is built from the same. The target is
the framework's own layer whenever that layer expresses the configuration exactly (padding always
as explicit pairs, never a ``'SAME'`` that moves strided outputs by a pixel); otherwise it is
convbridge's layer for that framework (:mod:`convbridge.nn`), and a :class:`PortWarning` says why.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable

import numpy as np

from convbridge.arrays import to_numpy
from convbridge.errors import ArgumentError, ArgumentTypeError, LayoutError, ShapeError, describe_value
from convbridge.port.kernels import _permute
from convbridge.port.layer import Layer, PortWarning
from convbridge.port.recipe import TARGETS, Recipe, build, recipe
from convbridge.spec.layout import permutation

__all__ = ["to_flax", "to_equinox", "to_torch", "read", "check", "Side", "plan", "port"]

_APIS = ("linen", "nnx")


@dataclass(frozen=True)
class Side:
    """One module read: its framework, layer, weights (torch's layout) and how to run it with other weights.

    Attributes:
        framework: ``"torch"``, ``"flax.linen"``, ``"flax.nnx"`` or ``"equinox"``.
        layer: the configuration in PyTorch's meaning, with the module's input layout.
        weight, bias: NumPy arrays; the kernel in torch's layout (``OI*`` conv, ``IO*`` transposed).
        run: ``fn(x, w, b) -> y`` running the module on ``x`` (its layout) with torch-layout ``w`` and ``b``.
        name: a label for reports, e.g. ``"torch.nn.Conv2d"``.
        stored: ``(layout, convention)`` of the kernel as the module stores it.
    """

    framework: str
    layer: Layer
    weight: np.ndarray
    bias: np.ndarray | None
    run: Callable[[Any, Any, Any], Any]
    name: str
    stored: tuple[str, str]


def _side(kind: str) -> ModuleType:
    """The framework side's module, imported on first use."""
    import importlib

    return importlib.import_module(f"convbridge.port._{kind}")


def _kind(obj: object) -> str:
    """``"torch"``, ``"linen"``, ``"nnx"`` or ``"equinox"`` for a module, without importing a framework."""
    root = type(obj).__module__.partition(".")[0]
    mro = {c.__module__.partition(".")[0] for c in type(obj).__mro__}
    if root == "torch" or "torch" in mro:
        return "torch"
    if "flax" in mro:
        from convbridge.port import _flax

        return "linen" if _flax.is_linen(obj) else "nnx"
    if "equinox" in mro:
        return "equinox"
    raise ArgumentTypeError(f"cannot port {describe_value(obj)}: give a torch.nn conv layer, a flax.linen module "
                            "with its variables, a flax.nnx module or an equinox module")


def read(module: Any, variables: Any = None) -> Side:
    """Read a convolution layer from any supported framework.

    Args:
        module: ``torch.nn.Conv*d`` / ``ConvTranspose*d``, flax linen or nnx ``Conv`` / ``ConvTranspose``,
            ``equinox.nn.Conv`` / ``ConvTranspose``, or a convbridge.nn layer; a ``(linen_module, variables)``
            pair works too.
        variables: a linen module's variables (``{"params": ...}``).

    Returns:
        A :class:`Side`.

    Raises:
        ConvBridgeError: an unknown layer type, missing variables, or a configuration no other framework has.
    """
    if isinstance(module, tuple) and len(module) == 2 and variables is None:
        module, variables = module
    side = _read(module, variables)
    layer = side.layer
    if side.weight.shape != layer.torch_kernel_shape or (side.bias is not None and side.bias.shape !=
                                                          (layer.out_channels,)):
        raise ShapeError(f"{side.name}'s weight {side.weight.shape} and bias "
                         f"{None if side.bias is None else side.bias.shape} do not fit its configuration (kernel "
                         f"{layer.torch_kernel_shape} in torch's layout, bias ({layer.out_channels},))")
    return side


def _read(module: Any, variables: Any) -> Side:
    kind = _kind(module)
    if kind != "linen" and variables is not None:
        raise ArgumentError(f"variables are for flax.linen modules; this {type(module).__name__} holds its own weights")
    if kind == "torch":
        t = _side("torch")
        layer, w, b = t.read(module)
        return Side("torch", layer, w, b, t.runner(module), _name(module, "torch.nn"),
                    t.kernel_format(module, layer))
    if kind in _APIS:
        f = _side("flax")
        layer, w, b = f.read(module, variables)
        return Side(f"flax.{kind}", layer, w, b, f.runner(module, variables, layer), _name(module, f"flax.{kind}"),
                    f.kernel_format(module, layer))
    e = _side("equinox")
    layer, w, b = e.read(module)
    return Side("equinox", layer, w, b, e.runner(module, layer), _name(module, "equinox.nn"),
                e.kernel_format(module, layer))


def _name(module: object, api: str) -> str:
    where = type(module).__module__
    return f"{where}.{type(module).__name__}" if where.startswith("convbridge") else f"{api}.{type(module).__name__}"


def _layout(layer: Layer, layout: str | None, template: str) -> str:
    if layout is None:
        return template.replace("*", layer.spatial)
    if not isinstance(layout, str):
        raise ArgumentError(f"layout must be a string such as 'NCHW' or 'NHWC', got {describe_value(layout)}")
    layout = layout.upper()
    letters = [c for c in layout if c not in "NC"]
    if "".join(letters) != layer.spatial or "C" not in layout or len(set(layout)) != len(layout):
        raise LayoutError(f"layout {layout!r} does not fit this layer: write C, an optional N and the spatial letters "
                          f"{layer.spatial!r} in this order, e.g. {'N' + layer.spatial + 'C'!r} or "
                          f"{'NC' + layer.spatial!r}")
    return layout


def _warn(reason: str, target: str, op: str) -> None:
    if reason:  # stacklevel: the user's call of to_flax / to_equinox / to_torch
        cls = "Conv" if op == "conv" else "ConvTranspose"
        warnings.warn(PortWarning(f"{reason}: ported to convbridge.nn.{target}.{cls}, which computes exactly the same "
                                  "thing"), stacklevel=4)


def to_torch(module: Any, variables: Any = None, *, layout: str | None = None) -> Any:
    """Port a Flax (linen with ``variables``, or nnx), Equinox or torch convolution layer to torch.

    Args:
        module, variables: the source (see :func:`read`).
        layout: the input layout the result takes; default channels-first (``NC*``).

    Returns:
        A ``torch.nn.Conv*d`` / ``ConvTranspose*d`` when it expresses the layer exactly, else a
        ``convbridge.nn.torch`` layer (with a :class:`PortWarning`).
    """
    m, _ = port(module, variables, target="torch", layout=layout)
    return m


def to_flax(module: Any, variables: Any = None, *, api: str = "linen", layout: str | None = None) -> Any:
    """Port a torch, Equinox or Flax convolution layer to Flax.

    Args:
        module, variables: the source (see :func:`read`).
        api: ``"linen"`` (returns ``(module, variables)``) or ``"nnx"`` (returns a module holding its params).
        layout: the input layout the result takes; default channels-last (``N*C``).

    Returns:
        Flax's ``Conv`` / ``ConvTranspose`` when it expresses the layer exactly (explicit padding pairs), else
        a ``convbridge.nn.linen`` / ``convbridge.nn.nnx`` layer (with a :class:`PortWarning`).
    """
    if api not in _APIS:
        raise ArgumentError(f"api must be 'linen' or 'nnx', got {describe_value(api)}")
    m, params = port(module, variables, target=api, layout=layout)
    return (m, params) if api == "linen" else m


def to_equinox(module: Any, variables: Any = None, *, layout: str | None = None) -> Any:
    """Port a torch, Flax or Equinox convolution layer to Equinox.

    Args:
        module, variables: the source (see :func:`read`).
        layout: the input layout the result takes; default one unbatched example (``C*``, as Equinox layers).

    Returns:
        ``equinox.nn.Conv`` / ``ConvTranspose`` when it expresses the layer exactly, else a
        ``convbridge.nn.equinox`` layer (with a :class:`PortWarning`).
    """
    m, _ = port(module, variables, target="equinox", layout=layout)
    return m


_CUSTOMARY = {"torch": "NC*", "linen": "N*C", "nnx": "N*C", "equinox": "C*"}


def plan(module: Any, variables: Any = None, *, target: str, layout: str | None = None) -> tuple[Side, Recipe]:
    """The source read and the target's recipe (what :func:`port` builds and ``convbridge port`` prints)."""
    if target not in TARGETS:
        raise ArgumentError(f"target must be one of {', '.join(map(repr, TARGETS))}, got {describe_value(target)}")
    src = read(module, variables)
    lay = _layout(src.layer, layout, _CUSTOMARY[target])
    return src, recipe(src.layer, target, lay, src.weight.dtype)


def port(module: Any, variables: Any = None, *, target: str, layout: str | None = None) -> tuple[Any, Any]:
    """``(module, variables)`` of the port to ``target`` (variables: linen's dict, else None)."""
    src, r = plan(module, variables, target=target, layout=layout)
    _warn(r.reason, target, src.layer.op)
    return build(r, src.weight, src.bias)


# ---------------------------------------------------------------------------------------------------------- check

def adapt(run: Callable[[Any, Any, Any], Any], own: str, given: str) -> Callable[[Any, Any, Any], Any]:
    """``run`` (taking layout ``own``) as a function of ``x`` in layout ``given``, returning ``given``'s layout."""
    if own == given:
        return run
    own_b = own if "N" in own else "N" + own
    given_b = given if "N" in given else "N" + given
    to_own, back = permutation(given_b, own_b), permutation(own_b, given_b)

    def adapted(x: Any, w: Any, b: Any) -> Any:
        xb = x if "N" in given else x[None]
        xo = _permute(xb, to_own)
        if "N" in own:
            y = run(xo, w, b)
        else:  # one example at a time (Equinox)
            y = _each(run, xo, w, b)
        y = _host(y, x)
        y = _permute(y, back)
        return y if "N" in given else y[0]

    return adapted


def _host(y: Any, x: Any) -> Any:
    """A JAX result as NumPy when the input was NumPy (permuting on the host compiles nothing)."""
    from convbridge.arrays import framework_of, is_tracer

    if isinstance(x, np.ndarray) and framework_of(y) == "jax" and not is_tracer(y):
        return np.asarray(y)
    return y


def _each(run: Callable[[Any, Any, Any], Any], x: Any, w: Any, b: Any) -> Any:
    import jax

    return jax.vmap(lambda xi: run(xi, w, b))(x)


def check(src: Any, dst: Any, x: Any, *, src_variables: Any = None, dst_variables: Any = None,
          **compare_kwargs: Any) -> Any:
    """Judge a port: run ``src`` and ``dst`` on the same input through :func:`convbridge.compare`.

    When ``dst`` holds the same weights as ``src`` (bit for bit, after :func:`kernel`), both run as callables
    with the weights compare gives them, so its float64 and exact-integer re-runs test the port's weight mapping
    and configuration, not one draw. When its weights differ (a kernel not flipped, a lost bias, other values),
    ``dst`` runs with its own, the report says so in its notes, and the verdict judges what ``dst`` computes.

    Args:
        src, dst: modules of any supported framework, or ``(linen_module, variables)`` pairs. ``dst`` may also
            be a plain ``fn(x) -> y`` (then judged on ``x`` alone, with no re-runs).
        x: an input in ``src``'s layout (a batch is fine for an Equinox source: it is vmapped; an unbatched
            example is fine for a torch source).
        src_variables, dst_variables: linen variables, when not given as pairs.
        **compare_kwargs: passed to :func:`convbridge.compare` (``rerun``, ``exact``).

    Returns:
        A :class:`convbridge.ParityReport` (``.verdict``).

    Raises:
        ConvBridgeError: ``dst`` is not a port of ``src`` (another op, channels, kernel size or groups), or ``x``
            does not fit ``src``.
    """
    from dataclasses import replace

    from convbridge.judging import compare

    s = read(src, src_variables)
    xn = to_numpy(x, "x")
    given = _given_layout(s, xn)
    runs = [(s.name, _compiled(s, adapt(s.run, s.layer.layout, given)))]
    notes: tuple[str, ...] = ()
    if callable(dst) and _is_plain_function(dst):
        runs.append((str(getattr(dst, "__qualname__", "dst")), _plain(dst, x)))
        compare_kwargs.setdefault("rerun", False)
    else:
        d = read(dst, dst_variables)
        _same_layer(s, d)
        name = d.name if d.name != s.name else d.name + " (port)"
        run = d.run
        if not _same_weights(s, d):
            run = _own_weights(d)
            notes = (f"{name} holds other weights than {s.name} (compared in torch's layout): it runs with its own, so "
                     "this verdict judges the weights as well as the configuration",)
        runs.append((name, _compiled(d, adapt(run, d.layer.layout, given))))
    report = compare(xn.astype(s.weight.dtype, copy=False), s.weight, s.bias, op=s.layer.op,
                     backends=[(n, _no_grad(f)) for n, f in runs], **s.layer.op_kwargs(given), **compare_kwargs)
    return replace(report, notes=report.notes + notes) if notes else report


def _plain(fn: Callable[[Any], Any], like: Any) -> Callable[[Any, Any, Any], Any]:
    """A plain ``fn(x) -> y`` as compare's callable: it gets ``x`` in the caller's framework."""
    from convbridge.arrays import framework_of

    fw = framework_of(like)

    def run(x: Any, w: Any, b: Any) -> Any:
        if fw == "torch":
            import torch

            x = torch.from_numpy(np.array(x))
        elif fw == "jax":
            import jax

            x = jax.device_put(np.asarray(x))
        y = fn(x)
        if y is None or not hasattr(y, "shape"):
            raise ShapeError(f"{getattr(fn, '__qualname__', 'dst')} returned {describe_value(y)}; check expects a "
                             "destination fn(x) -> y returning an array")
        return y

    return run


def _given_layout(s: Side, xn: np.ndarray) -> str:
    """The layout of ``x``: the source's, batched (Equinox) or unbatched (torch) as ``x`` is."""
    lay = s.layer.layout
    if xn.ndim == len(lay) + 1 and "N" not in lay:
        return "N" + lay
    if xn.ndim == len(lay) - 1 and "N" in lay:
        return lay.replace("N", "")
    if xn.ndim != len(lay):
        raise ArgumentError(f"x has shape {xn.shape}, but {s.name} takes {len(lay)}-d input in layout {lay}")
    return lay


def _same_layer(s: Side, d: Side) -> None:
    fields = ("op", "in_channels", "out_channels", "kernel_size", "groups")
    differ = [f for f in fields if getattr(s.layer, f) != getattr(d.layer, f)]
    if differ:
        both = ", ".join(f"{f} {getattr(s.layer, f)} vs {getattr(d.layer, f)}" for f in differ)
        raise ArgumentError(f"{s.name} and {d.name} are different layers ({both}); check compares a layer with its "
                            "port")


def _same_weights(s: Side, d: Side) -> bool:
    same = bool(np.array_equal(s.weight, d.weight))
    if s.bias is None or d.bias is None:
        return same and s.bias is None and d.bias is None
    return same and bool(np.array_equal(s.bias, d.bias))


def _own_weights(d: Side) -> Callable[[Any, Any, Any], Any]:
    """``d.run`` with ``d``'s own weights, in the dtype of the input (float64 in a re-run)."""
    def run(x: Any, w: Any, b: Any) -> Any:
        dtype = x.dtype
        return d.run(x, d.weight.astype(dtype), None if d.bias is None else d.bias.astype(dtype))

    return run


def _compiled(side: Side, fn: Callable[[Any, Any, Any], Any]) -> Callable[[Any, Any, Any], Any]:
    """A JAX side as one XLA program (one compile instead of one per op)."""
    if side.framework == "torch":
        return fn
    import jax

    return jax.jit(fn)


def _is_plain_function(obj: object) -> bool:
    roots = {c.__module__.partition(".")[0] for c in type(obj).__mro__}
    return not roots & {"torch", "flax", "equinox"} and not isinstance(obj, tuple)


def _no_grad(fn: Callable[[Any, Any, Any], Any]) -> Callable[[Any, Any, Any], Any]:
    def run(x: Any, w: Any, b: Any) -> Any:
        if "torch" in __import__("sys").modules:
            import torch

            with torch.no_grad():
                return fn(x, w, b)
        return fn(x, w, b)

    return run


