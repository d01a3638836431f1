"""What every framework side of :func:`convbridge.divergence` records, framework-free."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Protocol

import numpy as np

from convbridge.divergence.layers import Info

__all__ = ["Call", "Side", "Run", "to_channels_first", "to_channels_last"]


@dataclass
class Call:
    """One leaf layer's call in a model's run: its path, class, input and output (the side's layout, batched)."""

    name: str
    type_name: str
    x: np.ndarray
    y: np.ndarray
    info: Info


@dataclass
class Run:
    """A model's run: every leaf call in execution order, the layers evaluated on fed inputs, and the output."""

    calls: list[Call]
    fed: dict[int, np.ndarray]
    output: np.ndarray


class Side(Protocol):
    """One model, as :func:`convbridge.divergence` drives it."""

    framework: str
    description: str
    channels_last: bool

    def run(self, x: np.ndarray, feeds: Mapping[int, np.ndarray], float64: bool) -> Run:
        """Run the model on ``x`` (its layout, batched), recording every leaf call; evaluate call ``k`` also on
        ``feeds[k]``; in float64 (parameters and input) when asked."""
        ...

    def structure(self, x: np.ndarray) -> list[Call]:
        """The leaf calls in order (names, kinds, configurations); values may be placeholders."""
        ...


def to_channels_last(a: np.ndarray) -> np.ndarray:
    """``NC*`` -> ``N*C`` (arrays of rank 3 or more; others unchanged)."""
    return np.moveaxis(a, 1, -1) if a.ndim >= 3 else a


def to_channels_first(a: np.ndarray) -> np.ndarray:
    """``N*C`` -> ``NC*`` (arrays of rank 3 or more; others unchanged)."""
    return np.moveaxis(a, -1, 1) if a.ndim >= 3 else a


def first_array(value: Any) -> Any:
    """A layer's input or output: the value, or the first array of a tuple/list."""
    if isinstance(value, (tuple, list)):
        for v in value:
            if hasattr(v, "shape"):
                return v
        return None
    return value if hasattr(value, "shape") else None


def conv_info(layer: Any, weight: np.ndarray, bias: np.ndarray | None, channels_last: bool,
              spatial: tuple[int, ...] = ()) -> Info:
    """A convolution layer read by :func:`convbridge.port.read` (any framework) as an :class:`Info`, with its gauge
    computed by convbridge's NumPy convolution in float64; ``spatial`` (the input's spatial size) resolves a strided
    ``"same"`` into the pairs it pads on this input."""
    from convbridge.api import conv, conv_transpose

    lay = layer.layout if "N" in layer.layout else "N" + layer.layout
    kw = layer.op_kwargs(lay)
    aw = np.abs(np.asarray(weight, np.float64))
    ab = None if bias is None else np.abs(np.asarray(bias, np.float64))
    op = conv if layer.op == "conv" else conv_transpose

    def gauge(ax: np.ndarray) -> np.ndarray:
        return np.asarray(op(ax, aw, ab, backend="numpy", **kw))

    k = int(np.prod(layer.kernel_size))
    terms = layer.in_channels // layer.groups * k
    params = {"weight": np.asarray(weight)}
    if bias is not None:
        params["bias"] = np.asarray(bias)
    padding = layer.padding
    if isinstance(padding, str) and spatial and layer.op == "conv":
        from convbridge.spec.geometry import ConvAxis

        padding = tuple(ConvAxis.same(n, k, s, d, lower=padding == "same_lower").padding
                        for n, k, s, d in zip(spatial, layer.kernel_size, layer.stride, layer.dilation))
        padding = f"{padding} (XLA's {layer.padding!r} on this input)"
    config = {"stride": layer.stride, "padding": padding, "dilation": layer.dilation, "groups": layer.groups}
    if layer.op == "conv":
        config["padding_mode"] = layer.padding_mode
    else:
        config["output_padding"] = layer.output_padding
    return Info(layer.op, params, config, terms, gauge, -1 if channels_last else 1)


def linear_info(weight: np.ndarray, bias: np.ndarray | None) -> Info:
    """A linear layer with torch's ``(out, in)`` weight as an :class:`Info` (features on the last axis)."""
    aw = np.abs(np.asarray(weight, np.float64))
    ab = None if bias is None else np.abs(np.asarray(bias, np.float64))

    def gauge(ax: np.ndarray) -> np.ndarray:
        g = ax @ aw.T
        return g if ab is None else g + ab

    params = {"weight": np.asarray(weight)}
    if bias is not None:
        params["bias"] = np.asarray(bias)
    return Info("linear", params, {}, int(weight.shape[1]), gauge, -1)


#: Attribute names read into a layer's configuration (the semantic ones), with the key they are stored under.
CONFIG_ATTRS = {"eps": "eps", "epsilon": "eps", "align_corners": "align_corners", "count_include_pad":
                "count_include_pad", "ceil_mode": "ceil_mode", "approximate": "approximate", "mode": "mode",
                "method": "mode", "negative_slope": "negative_slope", "kernel_size": "kernel_size", "window_shape":
                "kernel_size", "stride": "stride", "strides": "stride", "padding": "padding", "scale_factor":
                "scale_factor", "scale": "scale_factor", "output_size": "output_size", "start_dim": "start_dim",
                "order": "order", "num_groups": "num_groups", "min_val": "min_val", "max_val": "max_val"}


def plain_config(obj: Any) -> dict[str, Any]:
    """The semantic attributes of a (non-convolution) layer, normalised: tuples for sequences, floats for numbers."""
    out: dict[str, Any] = {}
    for attr, key in CONFIG_ATTRS.items():
        v = getattr(obj, attr, None)
        if v is None or callable(v) or key in out:
            continue
        if isinstance(v, (list, tuple)):
            v = tuple(_plain(i) for i in v)
        out[key] = _plain(v)
    return out


def _plain(v: Any) -> Any:
    if isinstance(v, (bool, str)):
        return v
    if isinstance(v, (int, float)):
        return v
    if isinstance(v, (list, tuple)):
        return tuple(_plain(i) for i in v)
    try:
        return float(v)
    except (TypeError, ValueError):
        return str(v)


def window_terms(kernel_size: Any) -> int:
    """Elements per pooling window from a kernel size (int or sequence); 0 when unknown."""
    if isinstance(kernel_size, int):
        return kernel_size * kernel_size
    if isinstance(kernel_size, (tuple, list)) and all(isinstance(k, int) for k in kernel_size):
        return int(np.prod(kernel_size))
    return 0
