"""The Equinox side of :func:`convbridge.port.state_dict`: a module's layers (modules with array fields) in field
order, and a new module with the leaves replaced (``eqx.tree_at``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

import equinox as eqx
import jax
import numpy as np

from convbridge.port.state_dict import Model, Tensor, Unit

__all__ = ["read"]

_BN_STATS = {"running_mean", "running_var"}
_STATE_BN = ("eqx.nn.BatchNorm keeps its running statistics in an eqx.nn.State, outside the module, which this port "
             "does not fill; use a BatchNorm module holding weight, bias, running_mean and running_var as fields "
             "(as convbridge.models.equinox's)")

Step = tuple[str, Any]  # ("attr", name) or ("item", index or key)


def read(model: Any) -> Model:
    """The layers of an Equinox module (the root included when it owns arrays), in field order."""
    units = tuple(_unit(path, m, own) for path, m, own in _walk(model, ()))
    return Model("equinox", units, lambda values: _fill(model, values))


def _is_array(v: Any) -> bool:
    return isinstance(v, (jax.Array, np.ndarray, jax.ShapeDtypeStruct))


def _children(node: Any) -> Iterator[tuple[str, Step, Any]]:
    """``(name, step, value)`` of a node's children; ``eqx.nn.Sequential``'s ``layers`` are its own (``features.0``
    as torch's ``nn.Sequential``)."""
    if isinstance(node, eqx.nn.Sequential):
        for i, v in enumerate(node.layers):
            yield str(i), ("seq", i), v
    elif isinstance(node, eqx.Module):
        for f in dataclasses.fields(node):
            if not f.metadata.get("static", False):
                yield f.name, ("attr", f.name), getattr(node, f.name, None)
    elif isinstance(node, (list, tuple)):
        yield from ((str(i), ("item", i), v) for i, v in enumerate(node))
    elif isinstance(node, Mapping):
        yield from ((str(k), ("item", k), v) for k, v in node.items())


def _walk(node: Any, path: tuple[tuple[str, Step], ...]) -> Iterator[tuple[tuple[tuple[str, Step], ...], Any,
                                                                            list[tuple[str, Step, Any]]]]:
    children = list(_children(node))
    own = [c for c in children if _is_array(c[2])]
    if own and isinstance(node, eqx.Module):
        yield path, node, own
    for name, step, v in children:
        if isinstance(v, (eqx.Module, list, tuple, Mapping)) and not isinstance(v, eqx.nn.StateIndex):
            yield from _walk(v, path + ((name, step),))


def _unit(path: tuple[tuple[str, Step], ...], m: Any, own: list[tuple[str, Step, Any]]) -> Unit:
    name = ".".join(p for p, _ in path)
    prefix = name + "." if name else ""
    steps = tuple(s for _, s in path)
    tensors = tuple(Tensor(key, key, prefix + key, tuple(v.shape), np.dtype(v.dtype).name, v, steps + (step,))
                    for key, step, v in own)
    kind, style, groups = _kind(m, {t.key for t in tensors})
    where = type(m).__module__
    type_name = f"{where}.{type(m).__name__}" if not where.startswith("equinox") else f"eqx.nn.{type(m).__name__}"
    refusal = _STATE_BN if isinstance(m, eqx.nn.BatchNorm) else ""
    layout = str(m.kernel_layout) if style == "convbridge.equinox" else ""
    return Unit(name, kind, style, type_name, tensors, groups, refusal, layout)


def _kind(m: Any, keys: set[str]) -> tuple[str, str, int | None]:
    if type(m).__module__.startswith("convbridge.nn"):
        from convbridge.nn import equinox as cbe

        if isinstance(m, cbe.ConvTranspose):
            return "conv_transpose", "convbridge.equinox", int(m.groups)
        if isinstance(m, cbe.Conv):
            return "conv", "convbridge.equinox", int(m.groups)
    if isinstance(m, eqx.nn.ConvTranspose):
        return "conv_transpose", "equinox", int(m.groups)
    if isinstance(m, eqx.nn.Conv):
        return "conv", "equinox", int(m.groups)
    kinds = ((eqx.nn.Linear, "linear"), (eqx.nn.BatchNorm, "batchnorm"), (eqx.nn.LayerNorm, "layernorm"),
             (eqx.nn.GroupNorm, "groupnorm"))
    kind = next((k for cls, k in kinds if isinstance(m, cls)), "")
    if not kind:
        kind = "batchnorm" if _BN_STATS <= keys else "params"
    return kind, "equinox", None


def _get(node: Any, step: Step) -> Any:
    how, key = step
    if how == "attr":
        return getattr(node, key)
    if how == "seq":
        return node.layers[key]
    return node[key]


def _fill(model: Any, values: dict[Any, np.ndarray]) -> Any:
    """A new module (``eqx.tree_at``) holding ``values`` at their paths; ``model`` is left as it was."""
    paths = list(values)
    if not paths:
        return model

    def where(m: Any) -> list[Any]:
        out = []
        for steps in paths:
            node = m
            for step in steps:
                node = _get(node, step)
            out.append(node)
        return out

    from convbridge.port._walk_flax import check_x64

    check_x64({".".join(map(str, p)): values[p] for p in paths})
    return eqx.tree_at(where, model, jax.device_put([values[p] for p in paths]))  # one transfer for all
