"""The torch side of :func:`convbridge.divergence`: forward hooks capture every leaf module's input and output."""

from __future__ import annotations

import copy
import math
from typing import Any, Mapping

import numpy as np
import torch

from convbridge.arrays import to_host
from convbridge.divergence._common import Call, Run, conv_info, first_array, linear_info, plain_config, window_terms
from convbridge.divergence.layers import Info, kind_of
from convbridge.errors import ArgumentError

__all__ = ["TorchSide"]


def _host(t: Any) -> np.ndarray:
    return to_host(t.detach(), "a layer's value")


def _tensor(a: np.ndarray) -> torch.Tensor:
    from convbridge.port._torch import _tensor as tensor  # a copy (JAX's host arrays are read-only), bfloat16 too

    return tensor(a)


def info(m: torch.nn.Module, x: torch.Tensor) -> Info:
    """What judging module ``m`` needs (torch's own layout: channels first)."""
    name = f"{type(m).__module__}.{type(m).__name__}"
    kind = kind_of(type(m).__name__)
    if kind in ("conv", "conv_transpose"):
        from convbridge.port import _torch

        try:
            layer, w, b = _torch.read(m)
            return conv_info(layer, w, b, channels_last=False)
        except Exception:  # not a layer porting knows (a user's Conv-named block): judged as "other"
            return Info("other", config=plain_config(m))
    if isinstance(m, torch.nn.Linear):
        return linear_info(_host(m.weight), None if m.bias is None else _host(m.bias))
    config = plain_config(m)
    params = {k: _host(v) for k, v in list(m.named_parameters(recurse=False)) + list(m.named_buffers(recurse=False))
              if v is not None and k != "num_batches_tracked"}
    out = Info(kind, params, config, 0, None, 1)
    if isinstance(m, (torch.nn.modules.batchnorm._BatchNorm,)):
        out.kind = "batchnorm"
        if not m.track_running_stats or m.running_mean is None:
            out.kind = "other"
    elif isinstance(m, torch.nn.GroupNorm):
        out.terms = int(np.prod(x.shape[2:])) * (m.num_channels // m.num_groups)
    elif isinstance(m, torch.nn.LayerNorm):
        out.terms = int(np.prod(m.normalized_shape))
        out.channels_axis = -1
    elif isinstance(m, (torch.nn.AvgPool1d, torch.nn.AvgPool2d, torch.nn.AvgPool3d)):
        out.terms = window_terms(m.kernel_size) if x.ndim == 4 else int(np.prod(np.broadcast_to(m.kernel_size, (
            x.ndim - 2,))))
    elif kind == "adaptive_avgpool":
        size = m.output_size if isinstance(m.output_size, tuple) else (m.output_size,) * (x.ndim - 2)
        out.terms = int(np.prod([math.ceil(n / (o or n)) + 1 for n, o in zip(x.shape[2:], size)]))
    elif kind == "upsample" and getattr(m, "mode", "") == "nearest":
        out.kind = "upsample_nearest"
    elif kind == "gelu" and getattr(m, "approximate", "none") == "tanh":
        out.config["approximate"] = "tanh"
    return out


class TorchSide:
    """A torch model, run with forward hooks on every module; leaves (no module called inside) are recorded."""

    framework = "torch"
    channels_last = False

    def __init__(self, model: torch.nn.Module) -> None:
        if model.training:
            raise ArgumentError(f"the torch model {type(model).__name__} is in training mode (BatchNorm uses the "
                                "batch's statistics, dropout is random), so its layers cannot be compared; call "
                                "model.eval() first")
        self.model = model
        self.description = f"torch {type(model).__name__}"
        self._model64: torch.nn.Module | None = None
        self.orders: list[int] = []

    def structure(self, x: np.ndarray) -> list[Call]:
        """The leaf calls (a run: cheap in torch)."""
        return self.run(x, {}, False).calls

    def _double(self) -> torch.nn.Module:
        if self._model64 is None:
            self._model64 = copy.deepcopy(self.model).double()
        return self._model64

    def run(self, x: np.ndarray, feeds: Mapping[int, np.ndarray], float64: bool) -> Run:
        """Leaf calls in order; with ``feeds``, leaf ``k`` gets ``feeds[k]`` as its input (a pre-hook replaces it;
        ``calls[k].x`` is then the input that arrived, ``fed[k]`` the output) and ``output`` is a plain run's."""
        model = self._double() if float64 else self.model
        dtype = np.float64 if float64 else None
        names = {id(m): name for name, m in model.named_modules()}
        calls: list[Call] = []
        fed: dict[int, np.ndarray] = {}
        stack: list[tuple[bool, Any, int]] = []
        by_order = {self.orders[k]: k for k in feeds}
        count = [0]

        def pre(m: torch.nn.Module, args: Any) -> Any:
            order = count[0]
            count[0] += 1
            arrived = first_array(args)
            k = by_order.get(order)
            stack.append((False, arrived, order))
            if k is not None and isinstance(args, tuple) and args:
                feed = feeds[k].astype(dtype) if dtype else feeds[k]
                return (_tensor(feed), *args[1:])
            return None

        def post(m: torch.nn.Module, args: Any, out: Any) -> None:
            nested, arrived, order = stack.pop()
            if stack:
                stack[-1] = (True, *stack[-1][1:])
            y = first_array(out)
            if nested or arrived is None or y is None:
                return
            k = by_order.get(order)
            if k is not None:
                fed[k] = _host(y)
            name = names.get(id(m), type(m).__name__) or type(m).__name__
            type_name = (f"torch.nn.{type(m).__name__}" if type(m).__module__.startswith("torch.")
                         else f"{type(m).__module__}.{type(m).__name__}")
            calls.append(Call(name, type_name, _host(arrived), _host(y), Info("") if float64 or feeds
                              else info(m, arrived)))
            if not feeds:
                self.orders.append(order)

        if not feeds:
            self.orders = []
        handles = []
        for m in model.modules():
            handles.append(m.register_forward_pre_hook(pre))
            handles.append(m.register_forward_hook(post))
        xt = _tensor(x.astype(dtype) if dtype else x)
        try:
            with torch.no_grad():
                y = model(xt)
        finally:
            for h in handles:
                h.remove()
        if feeds:
            with torch.no_grad():
                y = model(xt)
        return Run(calls, fed, _host(first_array(y)))
