"""The Flax side of :func:`convbridge.port.state_dict`: linen variables dicts (with their module's types where
``setup`` makes them known) and nnx modules, read into layers and written as new ones."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import jax
import numpy as np
from flax import linen, nnx
from flax.core import FrozenDict

from convbridge.errors import ArgumentError, ArgumentTypeError, brief
from convbridge.port.state_dict import Model, Tensor, Unit

__all__ = ["read_linen", "read_nnx"]

#: Flax's tensor names -> torch's.
ROLES = {"kernel": "weight", "scale": "weight", "embedding": "weight", "mean": "running_mean", "var": "running_var"}


# ------------------------------------------------------------------------------------------------------------ linen

def read_linen(obj: Any, module: Any = None) -> Model:
    """The layers of a linen variables dict (or a ``(module, variables)`` pair), in the dict's order."""
    if isinstance(obj, tuple):
        if module is not None and module is not obj[0]:
            raise ArgumentError("module= and a (module, variables) pair name two linen modules; give one")
        module, variables = obj
    else:
        variables = obj
    if module is not None and not isinstance(module, linen.Module):
        raise ArgumentTypeError(f"module= must be the flax.linen module of the variables, got {brief(module)}")
    collections = "params" in variables or "batch_stats" in variables
    tree = variables if collections else {None: variables}
    tree = {c: tree[c] for c in sorted(tree, key=lambda c: c != "params")}  # params first, as init makes them
    layers: dict[tuple[str, ...], list[Tensor]] = {}
    for coll, sub in tree.items():
        if not isinstance(sub, Mapping):
            raise ArgumentTypeError(f"linen variables are nested dicts such as {{'params': {{'conv1': {{'kernel': "
                                    f"...}}}}}} (what module.init returns); {coll!r} holds {brief(sub)}")
        for path, leaves in _linen_layers(sub, ()):
            layers.setdefault(path, []).extend(_linen_tensor(coll, path, k, v) for k, v in leaves)
    types = _linen_types(module, variables) if module is not None else {}
    units = tuple(_linen_unit(path, tensors, types.get(path)) for path, tensors in layers.items())
    sorted_keys = len(units) > 2 and all(_is_sorted(sub) for sub in tree.values())

    def fill(values: dict[Any, np.ndarray]) -> Any:
        new = _rebuild(variables, (), _placed(values), collections)
        return (module, new) if isinstance(obj, tuple) else new

    return Model("flax.linen", units, fill, sorted_keys)


def _is_leaf(v: Any) -> bool:
    return not isinstance(v, Mapping) and hasattr(v, "shape") and hasattr(v, "dtype")


def _linen_layers(tree: Mapping[str, Any], path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...],
                                                                                    list[tuple[str, Any]]]]:
    leaves = [(k, v) for k, v in tree.items() if _is_leaf(v)]
    if leaves:
        yield path, leaves
    for k, v in tree.items():
        if isinstance(v, Mapping):
            yield from _linen_layers(v, path + (str(k),))


def _linen_tensor(coll: str | None, path: tuple[str, ...], key: str, v: Any) -> Tensor:
    where = (coll, *path, key)
    label = "/".join(str(p) for p in where if p is not None)
    return Tensor(key, ROLES.get(key, key), label, tuple(v.shape), np.dtype(v.dtype).name, v, where)


def _is_sorted(tree: Any) -> bool:
    if not isinstance(tree, Mapping):
        return True
    keys = [str(k) for k in tree]
    return keys == sorted(keys) and all(_is_sorted(v) for v in tree.values())


def _linen_types(module: Any, variables: Any) -> dict[tuple[str, ...], Any]:
    """The submodules ``setup`` makes, by path (those of ``@nn.compact`` code exist only while it runs)."""
    found: dict[tuple[str, ...], Any] = {(): module}
    try:
        bound = module.bind(variables)
    except Exception:  # noqa: BLE001  (any error of the user's module: its types stay unknown, shapes still decide)
        return found

    def visit(m: Any, path: tuple[str, ...]) -> None:
        try:
            m._try_setup()  # runs the user's setup; submodules it makes register as children
        except Exception:  # noqa: BLE001  (a setup that needs more than variables: its children stay unknown)
            return
        for name, child in m._state.children.items():
            if isinstance(child, linen.Module):
                found[path + (name,)] = child
                visit(child, path + (name,))

    visit(bound, ())
    return found


def _linen_unit(path: tuple[str, ...], tensors: list[Tensor], m: Any) -> Unit:
    kind, style, groups = _flax_kind(m) if m is not None else ("", "flax?", None)
    if not kind:
        kind, style = _guess(tensors), "flax?"
    type_name = _type_name(m) if m is not None and style != "flax?" else "flax.linen (" + ", ".join(
        t.key for t in tensors) + ")"
    layout = str(m.kernel_layout) if style == "convbridge.flax" else ""
    return Unit("/".join(path), kind, style, type_name, tuple(tensors), groups, layout=layout)


def _guess(tensors: list[Tensor]) -> str:
    keys = {t.key: t for t in tensors}
    if "mean" in keys and "var" in keys:
        return "batchnorm"
    if "kernel" in keys:
        return "linear" if len(keys["kernel"].shape) == 2 else "conv?"
    return "norm" if "scale" in keys else "params"


def _type_name(m: Any) -> str:
    where = type(m).__module__
    api = "flax.nnx" if isinstance(m, nnx.Module) else "flax.linen"
    return f"{where}.{type(m).__name__}" if where.startswith("convbridge") else f"{api}.{type(m).__name__}"


def _flax_kind(m: Any) -> tuple[str, str, int | None]:
    """``(kind, style, groups)`` of a linen or nnx module; ``("", "flax?", None)`` for a type not known here."""
    if type(m).__module__.startswith("convbridge.nn"):
        if type(m).__name__ in ("Conv", "ConvTranspose"):
            kind = "conv" if type(m).__name__ == "Conv" else "conv_transpose"
            return kind, "convbridge.flax", int(m.groups)
        return "", "flax?", None
    if isinstance(m, (linen.ConvTranspose, nnx.ConvTranspose)):
        return "conv_transpose", "flax.transpose_kernel" if m.transpose_kernel else "flax", 1
    if isinstance(m, (linen.Conv, nnx.Conv)):
        dilated = any(v != 1 for v in np.atleast_1d(m.input_dilation if m.input_dilation is not None else 1))
        return ("conv_transpose" if dilated else "conv"), "flax", int(m.feature_group_count)
    kinds = (((linen.Dense, nnx.Linear), "linear"), ((linen.BatchNorm, nnx.BatchNorm), "batchnorm"),
             ((linen.LayerNorm, nnx.LayerNorm), "layernorm"), ((linen.GroupNorm, nnx.GroupNorm), "groupnorm"),
             ((linen.InstanceNorm, nnx.InstanceNorm), "instancenorm"))
    kind = next((k for cls, k in kinds if isinstance(m, cls)), "")
    return kind, "flax" if kind else "flax?", None


def _placed(values: dict[Any, np.ndarray]) -> dict[Any, Any]:
    """The host arrays as JAX arrays, in one transfer."""
    check_x64(values)
    return dict(zip(values, jax.device_put(list(values.values()))))


def check_x64(values: Any) -> None:
    """Refuse 64-bit arrays when JAX's x64 mode is off: JAX would round them to 32 bits (a port keeps dtypes).

    Raises:
        DTypeError: naming the first such array.
    """
    from convbridge.errors import DTypeError

    if jax.config.read("jax_enable_x64"):
        return
    items = values.items() if isinstance(values, dict) else enumerate(values)
    for name, v in items:
        if np.dtype(v.dtype) in (np.float64, np.complex128):
            raise DTypeError(f"{name} is {np.dtype(v.dtype).name}, but JAX's x64 mode is off, so JAX would round it "
                             "to 32 bits; enable it first (jax.config.update('jax_enable_x64', True)) or cast the "
                             "source model to float32")


def _rebuild(tree: Any, path: tuple[Any, ...], values: dict[Any, Any], collections: bool) -> Any:
    """A new nested dict like ``tree`` (same key order), the leaves at ``values``' paths replaced."""
    out = {}
    for k, v in tree.items():
        here = path + (k,)
        if isinstance(v, Mapping):
            out[k] = _rebuild(v, here, values, collections)
        else:
            where = here if collections else (None, *here)
            out[k] = values.get(where, v)
    return FrozenDict(out) if isinstance(tree, FrozenDict) else out


# ------------------------------------------------------------------------------------------------------------- nnx

def read_nnx(model: Any) -> Model:
    """The layers of an nnx module in attribute (creation) order, parents before their children."""
    units = tuple(_nnx_unit(path, m, own) for path, m, own in _nnx_walk(model))
    names = [u.name for u in units]
    return Model("flax.nnx", units, lambda values: _nnx_fill(model, values), len(names) > 2 and names == sorted(names))


def _nnx_children(node: Any) -> Iterator[tuple[str, Any]]:
    """A node's children by name; ``nnx.Sequential``'s layers are its own (``features.0`` as torch's)."""
    if isinstance(node, nnx.Sequential):
        yield from ((str(i), v) for i, v in enumerate(node.layers))
    elif isinstance(node, (list, tuple)):
        yield from ((str(i), v) for i, v in enumerate(node))
    elif isinstance(node, Mapping):
        yield from ((str(k), v) for k, v in node.items())
    else:
        yield from ((k, v) for k, v in vars(node).items() if not k.startswith("_"))


def _nnx_walk(node: Any, path: tuple[str, ...] = (), seen: set[int] | None = None) -> Iterator[
        tuple[tuple[str, ...], Any, list[tuple[str, Any]]]]:
    seen = set() if seen is None else seen
    if id(node) in seen:
        return
    seen.add(id(node))
    children = list(_nnx_children(node))
    own = [(k, v) for k, v in children if isinstance(v, nnx.Variable)]
    if own:
        yield path, node, own
    for k, v in children:
        if isinstance(v, (nnx.Module, list, tuple, Mapping)) and not isinstance(v, (str, bytes)):
            yield from _nnx_walk(v, path + (k,), seen)


def _nnx_unit(path: tuple[str, ...], m: Any, own: list[tuple[str, Any]]) -> Unit:
    prefix = ".".join(path) + "." if path else ""
    tensors = []
    for key, var in own:
        v = var.get_value()
        tensors.append(Tensor(key, ROLES.get(key, key), prefix + key, tuple(v.shape), np.dtype(v.dtype).name, v,
                              path + (key,)))
    kind, style, groups = _flax_kind(m)
    if not kind:
        kind, style = _guess(tensors), "flax"
        kind = "params" if kind in ("conv?", "norm") else kind
    layout = str(m.kernel_layout) if style == "convbridge.flax" else ""
    return Unit(".".join(path), kind, style, _type_name(m), tuple(tensors), groups, layout=layout)


def _nnx_fill(model: Any, values: dict[Any, np.ndarray]) -> Any:
    new = nnx.clone(model)
    placed = _placed(values)
    for path, _, own in _nnx_walk(new):
        for key, var in own:
            if path + (key,) in placed:
                var.set_value(placed[path + (key,)])
    return new
