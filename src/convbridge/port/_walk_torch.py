"""The torch side of :func:`convbridge.port.state_dict`: a module's layers (modules owning parameters or
persistent buffers) in registration order, and a deep copy filled with new weights."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

from convbridge.errors import ArgumentError, ArgumentTypeError
from convbridge.port.state_dict import Model, Tensor, Unit

__all__ = ["read"]


def read(model: Any) -> Model:
    """The layers of a torch ``nn.Module`` (the root included when it owns tensors), in registration order."""
    units = [_unit(name, m) for name, m in model.named_modules() if _own(m)]
    meta = [t.label for u in units for t in u.tensors if t.value.is_meta]
    if meta:
        raise ArgumentTypeError(f"{meta[0]!r} (and {len(meta) - 1} more) is on the meta device: shapes without "
                                "storage; build the model on a real device, or call model.to_empty(device='cpu') "
                                "first")
    return Model("torch", tuple(units), lambda values: fill(model, values))


def _own(m: Any) -> list[tuple[str, Any]]:
    tensors = list(m.named_parameters(recurse=False))
    tensors += [(n, b) for n, b in m.named_buffers(recurse=False) if n not in m._non_persistent_buffers_set]
    return tensors


def _unit(name: str, m: Any) -> Unit:
    prefix = f"{name}." if name else ""
    tensors = []
    for key, t in _own(m):
        if isinstance(t, torch.nn.parameter.UninitializedTensorMixin):  # type: ignore[attr-defined]
            raise ArgumentError(f"{prefix}{key} of {type(m).__name__} is not initialised yet (a lazy module): run the "
                                "model once, or build it with sizes, before porting")
        tensors.append(Tensor(key, key, prefix + key, tuple(t.shape), str(t.dtype).removeprefix("torch."), t,
                              prefix + key))
    kind, groups = _kind(m)
    where = type(m).__module__
    type_name = f"torch.nn.{type(m).__name__}" if where.startswith("torch.") else f"{where}.{type(m).__name__}"
    layout = str(m.kernel_layout) if where.startswith("convbridge.nn") and kind.startswith("conv") else ""
    return Unit(name, kind, "torch", type_name, tuple(tensors), groups, layout=layout)


def _kind(m: Any) -> tuple[str, int | None]:
    nn = torch.nn
    if type(m).__module__.startswith("convbridge.nn"):
        from convbridge.nn import torch as cbt

        if isinstance(m, cbt.ConvTranspose):
            return "conv_transpose", int(m.groups)
        if isinstance(m, cbt.Conv):
            return "conv", int(m.groups)
    if isinstance(m, nn.modules.conv._ConvNd):
        return ("conv_transpose" if m.transposed else "conv"), int(m.groups)
    kinds = ((nn.Linear, "linear"), (nn.modules.batchnorm._BatchNorm, "batchnorm"), (nn.LayerNorm, "layernorm"),
             (nn.GroupNorm, "groupnorm"), (nn.modules.instancenorm._InstanceNorm, "instancenorm"))
    return next((k for cls, k in kinds if isinstance(m, cls)), "params"), None


def fill(model: Any, values: dict[Any, np.ndarray]) -> Any:
    """A deep copy of ``model`` holding ``values`` (qualified name -> host array, owned: wrapped without a copy);
    ``model`` is left as it was. The tensors replaced are not cloned first: ``deepcopy`` finds them in its memo."""
    named = dict(model.named_parameters(remove_duplicate=False))
    named.update(model.named_buffers(remove_duplicate=False))
    memo: dict[int, Any] = {}
    for name, a in values.items():
        old = named[name]
        new = _tensor(a).to(device=old.device)
        if isinstance(old, torch.nn.Parameter):
            new = torch.nn.Parameter(new, requires_grad=old.requires_grad)
        memo[id(old)] = new
    return copy.deepcopy(model, memo)


def _tensor(a: np.ndarray) -> Any:
    if a.dtype.name == "bfloat16":
        return torch.from_numpy(a.astype(np.float32)).to(torch.bfloat16)  # exact: float32 holds every bfloat16
    return torch.from_numpy(a if a.flags.writeable else a.copy())
