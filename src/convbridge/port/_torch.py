"""The torch side of porting: read ``torch.nn.Conv*`` / ``ConvTranspose*`` (and convbridge's torch layers), build
them, and run them with given weights."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from convbridge.arrays import to_host
from convbridge.errors import ArgumentError, ArgumentTypeError, describe_value
from convbridge.port.layer import Layer
from convbridge.spec.layout import default_spatial_letters

__all__ = ["read", "runner", "kernel_format"]


def _cb() -> Any:
    from convbridge.nn import torch as cbt

    return cbt


def read(m: Any) -> tuple[Layer, np.ndarray, np.ndarray | None]:
    """The layer, its kernel in torch's layout and its bias, as NumPy arrays."""
    if type(m).__module__.startswith("convbridge.nn"):
        cbt = _cb()
        if not isinstance(m, (cbt.Conv, cbt.ConvTranspose)):
            raise ArgumentTypeError(f"cannot port {describe_value(m)}: not a convolution layer")
        layer = _read_cb(m, "conv" if isinstance(m, cbt.Conv) else "conv_transpose")
    elif isinstance(m, torch.nn.modules.conv._ConvNd):
        if isinstance(m, torch.nn.modules.lazy.LazyModuleMixin) and m.has_uninitialized_params():
            raise ArgumentError(f"{type(m).__name__} has not seen an input yet, so its weights do not exist; run it "
                                "once (or build the non-lazy layer) before porting")
        layer = _read_native(m)
    else:
        raise ArgumentTypeError(f"cannot port {describe_value(m)}: convbridge ports torch.nn.Conv1d/2d/3d, "
                                "ConvTranspose1d/2d/3d and convbridge.nn.torch layers")
    weight = to_host(m.weight.detach(), "the weight")  # bfloat16 stays bfloat16 (ml_dtypes)
    bias = None if m.bias is None else to_host(m.bias.detach(), "the bias")
    return layer.validate(), weight, bias


def _read_native(m: Any) -> Layer:
    n = len(m.kernel_size)
    letters = default_spatial_letters(n)
    if m.transposed:
        op = "conv_transpose"
        pads = tuple((p, p) for p in m.padding)
        out_pad = tuple(m.output_padding)
    else:
        op, out_pad = "conv", (0,) * n
        flat = list(m._reversed_padding_repeated_twice)  # last dim first, (lo, hi) each: torch's own resolution
        pads = tuple((flat[2 * i], flat[2 * i + 1]) for i in reversed(range(n)))
    return Layer(op, m.in_channels, m.out_channels, tuple(m.kernel_size), tuple(m.stride), pads, tuple(m.dilation),
                 m.groups, m.bias is not None, m.padding_mode if op == "conv" else "zeros", out_pad,
                 "NC" + letters, dtype=str(m.weight.dtype).removeprefix("torch."))


def _read_cb(m: Any, op: str) -> Layer:
    from convbridge.port.layer import resolve_conv_padding, transpose_crops

    if op == "conv":
        pads: Any = resolve_conv_padding(m.padding, m.kernel_size, m.stride, m.dilation)
        out_pad = (0,) * m.num_spatial_dims
    else:
        pads, out_pad = transpose_crops(m.padding, m.output_padding, m.kernel_size, m.stride, m.dilation)
    return Layer(op, m.in_channels, m.out_channels, tuple(m.kernel_size), tuple(m.stride), pads, tuple(m.dilation),
                 m.groups, m.use_bias, m.padding_mode, out_pad, m.layout,
                 dtype=str(m.weight.dtype).removeprefix("torch."))


def kernel_format(m: Any, layer: Layer) -> tuple[str, str]:
    """The module's stored kernel layout (torch's own) and convention."""
    return layer.torch_kernel_layout, "torch"


def runner(m: Any) -> Callable[[Any, Any, Any], Any]:
    """``fn(x, w, b) -> y`` running ``m`` on ``x`` with weight ``w`` (torch's layout) and bias ``b``."""

    def run(x: Any, w: Any, b: Any) -> Any:
        params = {"weight": _tensor(w)}
        if b is not None:
            params["bias"] = _tensor(b)
        return torch.func.functional_call(m, params, (_tensor(x),))

    return run


def _tensor(a: Any) -> Any:
    from convbridge.backends.torch_backend import _tensor as tensor  # bfloat16 included

    return a if isinstance(a, torch.Tensor) else tensor(np.array(a))  # a copy: JAX's host arrays are read-only
