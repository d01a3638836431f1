"""The Equinox side of porting: read ``eqx.nn.Conv`` / ``ConvTranspose`` (and convbridge's Equinox layers), build
them by replacing leaves, and run them with given weights."""

from __future__ import annotations

from typing import Any, Callable

import equinox as eqx
import numpy as np

from convbridge.arrays import to_host
from convbridge.errors import ArgumentError, ArgumentTypeError, describe_value
from convbridge.port.kernels import kernel as convert, to_jax
from convbridge.port.layer import Layer, resolve_conv_padding, span, transpose_crops
from convbridge.spec.layout import default_spatial_letters

__all__ = ["read", "runner", "kernel_format"]

_MODES = {"ZEROS": "zeros", "REFLECT": "reflect", "REPLICATE": "replicate", "CIRCULAR": "circular"}


def _cb() -> Any:
    from convbridge.nn import equinox as cbe

    return cbe


def read(m: Any) -> tuple[Layer, np.ndarray, np.ndarray | None]:
    """The layer, its kernel in torch's layout and its bias (``(C_out,)``), as NumPy arrays."""
    if type(m).__module__.startswith("convbridge.nn"):
        cbe = _cb()
        if not isinstance(m, (cbe.Conv, cbe.ConvTranspose)):
            raise ArgumentTypeError(f"cannot port {describe_value(m)}: not a convolution layer")
        return _read_cb(m, "conv" if isinstance(m, cbe.Conv) else "conv_transpose")
    if not isinstance(m, (eqx.nn.Conv, eqx.nn.ConvTranspose)):
        raise ArgumentTypeError(f"cannot port {describe_value(m)}: convbridge ports equinox.nn.Conv and "
                                "ConvTranspose (any rank) and convbridge.nn.equinox layers")
    n = m.num_spatial_dims
    letters = default_spatial_letters(n)
    w = to_host(m.weight, "the weight")
    bias = None if m.bias is None else to_host(m.bias, "the bias").reshape(-1)
    k, s, d = tuple(m.kernel_size), tuple(m.stride), tuple(m.dilation)
    mode = _MODES[m.padding_mode]
    if isinstance(m, eqx.nn.Conv):
        pads = resolve_conv_padding(m.padding.lower() if isinstance(m.padding, str) else m.padding, k, s, d)
        layer = Layer("conv", m.in_channels, m.out_channels, k, s, pads, d, m.groups, m.use_bias, mode, (0,) * n,
                      "C" + letters, dtype=str(w.dtype))
        return layer.validate(), w, bias
    if mode != "zeros":
        raise ArgumentError(f"ConvTranspose(padding_mode={m.padding_mode!r}) wraps its output around, which no torch "
                            "layer does; convbridge cannot port it")
    crops, out_pad = _transpose_padding(m.padding, m.output_padding, k, s, d)
    layer = Layer("conv_transpose", m.in_channels, m.out_channels, k, s, crops, d, m.groups, m.use_bias, "zeros",
                  out_pad, "C" + letters, dtype=str(w.dtype))
    torch_w = convert(w, "OI" + letters, "IO" + letters, op="conv_transpose", groups=m.groups, src_convention="jax")
    return layer.validate(), np.asarray(torch_w), bias


def _transpose_padding(padding: Any, output_padding: Any, k: tuple[int, ...], s: tuple[int, ...],
                       d: tuple[int, ...]) -> tuple[Any, tuple[int, ...]]:
    """Equinox's own reading (``ConvTranspose._padding_transpose``) as torch crops and output_padding."""
    a = tuple(int(v) for v in output_padding)
    if not isinstance(padding, str):
        return tuple((int(lo), int(hi)) for lo, hi in padding), a
    if padding == "VALID":
        return ((0, 0),) * len(k), a
    pairs, out = [], []
    for kk, ss, dd, aa in zip(k, s, d, a):
        total = span(kk, dd) - ss + aa
        aa, total = max(-total, 0), max(total, 0)  # Equinox then replaces output_padding by this
        lo = (total + (padding == "SAME_LOWER")) // 2
        pairs.append((lo, total - lo))
        out.append(aa)
    return tuple(pairs), tuple(out)


def _read_cb(m: Any, op: str) -> tuple[Layer, np.ndarray, np.ndarray | None]:
    k, s, d = tuple(m.kernel_size), tuple(m.stride), tuple(m.dilation)
    if op == "conv":
        pads: Any = resolve_conv_padding(m.padding, k, s, d)
        out_pad = (0,) * m.num_spatial_dims
    else:
        pads, out_pad = transpose_crops(m.padding, m.output_padding, k, s, d)
    w = to_host(m.weight, "the weight")
    layer = Layer(op, m.in_channels, m.out_channels, k, s, pads, d, m.groups, m.use_bias, m.padding_mode, out_pad,
                  m.layout, dtype=str(w.dtype))
    bias = None if m.bias is None else to_host(m.bias, "the bias").reshape(-1)
    return layer.validate(), w, bias


def kernel_format(m: Any, layer: Layer) -> tuple[str, str]:
    """The module's stored kernel layout and transposed convention."""
    sp = layer.spatial
    if layer.op == "conv_transpose" and not type(m).__module__.startswith("convbridge.nn"):
        return "OI" + sp, "jax"
    return layer.torch_kernel_layout, "torch"


def runner(m: Any, layer: Layer) -> Callable[[Any, Any, Any], Any]:
    """``fn(x, w, b) -> y`` running ``m`` (one example, or ``jax.vmap`` over a batch) with torch-layout weights."""
    native_t = isinstance(m, eqx.nn.ConvTranspose) and not type(m).__module__.startswith("convbridge.nn")
    sp, n = layer.spatial, layer.nsp

    def run(x: Any, w: Any, b: Any) -> Any:
        if native_t:  # NumPy stays NumPy: no XLA compile to permute
            w = convert(w, "IO" + sp, "OI" + sp, op="conv_transpose", groups=layer.groups, dst_convention="jax")
        m2 = eqx.tree_at(lambda t: t.weight, m, to_jax(w))
        if b is not None:
            m2 = eqx.tree_at(lambda t: t.bias, m2, to_jax(b).reshape((-1,) + (1,) * n))
        return m2(to_jax(x))

    return run
