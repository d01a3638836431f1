"""The Flax side of porting (linen and nnx): read ``Conv`` / ``ConvTranspose`` (and convbridge's Flax layers),
build them, and run them with given weights."""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as linen
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from convbridge.arrays import to_host
from convbridge.errors import ArgumentError, ArgumentTypeError, PaddingError, ShapeError, describe_value
from convbridge.port.kernels import kernel as convert, to_jax
from convbridge.port.layer import Layer, resolve_conv_padding, same_like, span, transpose_crops
from convbridge.spec.layout import default_spatial_letters
from convbridge.transpose import jax_to_torch

__all__ = ["read", "runner", "kernel_format", "is_linen"]

_MODES = {"CIRCULAR": "circular", "REFLECT": "reflect"}


def _cb(api: str) -> Any:
    import importlib

    return importlib.import_module(f"convbridge.nn.{api}")


def is_linen(obj: object) -> bool:
    return isinstance(obj, linen.Module)


def _tuple(value: Any, n: int, default: int = 1) -> tuple[int, ...]:
    if value is None:
        return (default,) * n
    if isinstance(value, int):
        return (value,) * n
    return tuple(int(v) for v in value)


def _params(variables: Any) -> Any:
    from collections.abc import Mapping

    if variables is None:
        raise ArgumentError("a flax.linen module holds no weights: pass its variables too, e.g. "
                            "cb.port.to_torch(module, variables)")
    params = variables.get("params", variables) if isinstance(variables, Mapping) else None
    if not isinstance(params, Mapping):
        raise ArgumentTypeError(f"a linen module's variables are a dict such as {{'params': {{'kernel': ..., "
                                f"'bias': ...}}}} (what module.init returns), got {describe_value(variables)}")
    return params


# ----------------------------------------------------------------------------------------------------------- read

def read(m: Any, variables: Any = None) -> tuple[Layer, np.ndarray, np.ndarray | None]:
    """The layer, its kernel in torch's layout and its bias, as NumPy arrays (linen needs ``variables``)."""
    api = "linen" if is_linen(m) else "nnx"
    if type(m).__module__.startswith("convbridge.nn"):
        cb = _cb(api)
        if not isinstance(m, (cb.Conv, cb.ConvTranspose)):
            raise ArgumentTypeError(f"cannot port {describe_value(m)}: not a convolution layer")
        return _read_cb(m, variables, api)
    native = (linen.Conv, linen.ConvTranspose, nnx.Conv, nnx.ConvTranspose)
    if type(m) not in native and not isinstance(m, native):
        raise ArgumentTypeError(f"cannot port {describe_value(m)}: convbridge ports flax Conv and ConvTranspose (linen "
                                "and nnx) and convbridge.nn.linen / convbridge.nn.nnx layers")
    if api == "linen":
        p = _params(variables)
        k, b = p.get("kernel"), p.get("bias")
    else:
        k = None if getattr(m, "kernel", None) is None else m.kernel.get_value()
        b = None if getattr(m, "bias", None) is None else m.bias.get_value()
    b = _declared_bias(m, b)
    _compute_dtype(m, k)
    if k is None:
        raise ArgumentError(f"{type(m).__name__} has no 'kernel' parameter in the variables given")
    if getattr(m, "mask", None) is not None:
        raise ArgumentError(f"{type(m).__name__} has a mask: the kernel it applies is kernel * mask; port a module "
                            "without one (multiply the mask into the kernel first)")
    k = to_host(k, "the kernel")
    _check_declared(m, k)
    nsp = k.ndim - 2
    letters = default_spatial_letters(nsp)
    strides = _tuple(m.strides, nsp)
    dilation = _tuple(m.kernel_dilation, nsp)
    bias = None if b is None else to_host(b, "the bias")
    if isinstance(m, (linen.Conv, nnx.Conv)):
        if any(v != 1 for v in _tuple(m.input_dilation, nsp)):
            return _read_dilated_input(m, k, bias, strides, dilation)
        if not getattr(m, "shared_weights", True):
            raise ArgumentTypeError("ConvLocal (unshared weights) is not a convolution torch can run")
        groups = int(m.feature_group_count)
        pads, mode = _conv_padding(m.padding, k.shape[:nsp], strides, dilation)
        if not isinstance(pads, str) and any(lo < 0 or hi < 0 for lo, hi in pads):
            raise PaddingError(f"{type(m).__name__}(padding={m.padding!r}) crops its input (negative padding), which "
                               "torch's and Equinox's layers cannot; convbridge cannot port it: crop the input "
                               "yourself and port the layer with the remaining padding")
        layer = Layer("conv", k.shape[-2] * groups, k.shape[-1], tuple(k.shape[:nsp]), strides, pads, dilation,
                      groups, bias is not None, mode, (0,) * nsp, "N" + letters + "C", dtype=str(k.dtype))
        return layer.validate(), convert(k, letters + "IO", "OI" + letters), bias
    padding = m.padding
    if isinstance(padding, str) and padding.upper() == "CIRCULAR":
        raise ArgumentError("ConvTranspose(padding='CIRCULAR') wraps its output around, which no torch layer does; "
                            "convbridge cannot port it")
    if isinstance(padding, int):
        padding = ((padding, padding),) * nsp
    elif not isinstance(padding, str):
        padding = tuple((p, p) if isinstance(p, int) else tuple(p) for p in padding)
    try:
        call = jax_to_torch(k, strides=strides, padding=padding, rhs_dilation=dilation,
                            transpose_kernel=bool(m.transpose_kernel))
    except PaddingError as e:
        raise PaddingError(f"{type(m).__name__}(padding={m.padding!r}) pads the stride-dilated input beyond the "
                           f"kernel's reach, which a transposed convolution in torch's meaning (crops of the full "
                           f"output) cannot state, so convbridge cannot port it: {str(e).split(';')[0]}") from None
    layer = Layer("conv_transpose", call.kernel.shape[0], call.kernel.shape[1], tuple(call.kernel.shape[2:]),
                  strides, call.padding, dilation, 1, bias is not None, "zeros", call.output_padding,
                  "N" + letters + "C", dtype=str(k.dtype))
    return layer.validate(), call.kernel, bias


def _read_dilated_input(m: Any, k: np.ndarray, bias: np.ndarray | None, strides: tuple[int, ...],
                        dilation: tuple[int, ...]) -> tuple[Layer, np.ndarray, np.ndarray | None]:
    """A Flax Conv over its stride-dilated input (``input_dilation``, stride 1) is a transposed convolution: its
    kernel is the 'jax' convention's, its paddings lax's pairs."""
    from convbridge.spec.transpose import lax_axes
    from convbridge.transpose import torch_crops

    nsp = k.ndim - 2
    letters = default_spatial_letters(nsp)
    s = _tuple(m.input_dilation, nsp)
    if any(v != 1 for v in strides) or isinstance(m.padding, str):
        raise ArgumentError(f"{type(m).__name__}(input_dilation={m.input_dilation}, strides={m.strides}, "
                            f"padding={m.padding!r}): a convolution of a dilated input is a transposed convolution "
                            "only with stride 1 and explicit padding pairs; no torch layer computes this one")
    pads = [(p, p) if isinstance(p, int) else tuple(p) for p in ([m.padding] * nsp if isinstance(m.padding, int)
                                                                   else m.padding)]
    g = int(m.feature_group_count)
    crops, out_pad = [], []
    for letter, axis in zip(letters, lax_axes(tuple(pads), (1,) * nsp, k.shape[:nsp], s, dilation)):
        lo, hi = axis.crops
        found = torch_crops(lo, hi, axis.room)
        if found is None:
            side = (f"adds {-lo} zero rows before the first output the kernel reaches (low side)" if lo < 0 else
                    f"adds {-hi} rows after the full output (high side), more than torch's output_padding < "
                    f"max(stride, dilation) = {axis.room} allows")
            raise PaddingError(f"{type(m).__name__}(padding={m.padding!r}) read as a transposed convolution "
                               f"{side} on axis {letter}; torch's transposed convolution only crops, so convbridge "
                               "cannot port it")
        crops.append(found[0])
        out_pad.append(found[1])
    layer = Layer("conv_transpose", k.shape[-2] * g, k.shape[-1], tuple(k.shape[:nsp]), s, tuple(crops), dilation, g,
                  bias is not None, "zeros", tuple(out_pad), "N" + letters + "C", dtype=str(k.dtype))
    torch_k = convert(k, letters + "IO", "IO" + letters, op="conv_transpose", groups=g, src_convention="jax")
    return layer.validate(), np.asarray(torch_k), bias


def _declared_bias(m: Any, b: Any) -> Any:
    """The bias the module applies: none when ``use_bias=False`` (Flax ignores a stray one); required otherwise."""
    if not m.use_bias:
        return None
    if b is None:
        raise ArgumentError(f"this {type(m).__name__} has use_bias=True but no 'bias' parameter: it cannot run as "
                            "given; pass the variables module.init made")
    return b


def _compute_dtype(m: Any, k: Any) -> None:
    """Flax's ``dtype=`` computes in another dtype than the parameters'; no other framework's layer does."""
    dtype = getattr(m, "dtype", None)
    if dtype is not None and k is not None and hasattr(k, "dtype") and jnp.dtype(dtype) != jnp.dtype(k.dtype):
        raise ArgumentError(f"this {type(m).__name__} computes in dtype={jnp.dtype(dtype)} on {jnp.dtype(k.dtype)} "
                            "parameters; torch's and Equinox's layers compute in their parameters' dtype, so no port "
                            "is exact: port a module with dtype=None (or equal to param_dtype), or cast its "
                            "parameters to that dtype first")


def _check_declared(m: Any, k: np.ndarray) -> None:
    """The kernel given fits the module's declared kernel_size and features (variables of another module do not)."""
    ks = m.kernel_size
    declared = (ks,) if isinstance(ks, int) else tuple(ks)
    out = getattr(m, "features", None) or getattr(m, "out_features", None)
    transposed_swapped = isinstance(m, (linen.ConvTranspose, nnx.ConvTranspose)) and m.transpose_kernel
    k_out = k.shape[-2] if transposed_swapped else k.shape[-1]
    if k.ndim < 3 or tuple(k.shape[:-2]) != declared or k_out != out:
        raise ShapeError(f"the kernel has shape {k.shape}, but this {type(m).__name__} declares kernel_size "
                         f"{declared} and {out} output features: the variables belong to another module")


def _conv_padding(padding: Any, kernel_size: tuple[int, ...], stride: tuple[int, ...],
                  dilation: tuple[int, ...]) -> tuple[Any, str]:
    if isinstance(padding, str):
        word = padding.upper()
        if word in _MODES:
            return same_like(kernel_size, dilation), _MODES[word]
        if word == "CAUSAL":
            return ((span(kernel_size[0], dilation[0]) - 1, 0),), "zeros"
        return resolve_conv_padding(padding, kernel_size, stride, dilation), "zeros"
    return resolve_conv_padding(padding, kernel_size, stride, dilation), "zeros"


def _read_cb(m: Any, variables: Any, api: str) -> tuple[Layer, np.ndarray, np.ndarray | None]:
    if api == "linen":
        p = _params(variables)
        k, b = p["kernel"], p.get("bias")
    else:
        k, b = m.kernel.get_value(), None if m.bias is None else m.bias.get_value()
    k = to_host(k, "the kernel")
    op = "conv" if isinstance(m, _cb(api).Conv) else "conv_transpose"
    n = m.num_spatial_dims
    if op == "conv":
        pads: Any = resolve_conv_padding(m.padding, tuple(m.kernel_size), tuple(m.stride), tuple(m.dilation))
        out_pad = (0,) * n
    else:
        pads, out_pad = transpose_crops(m.padding, m.output_padding, tuple(m.kernel_size), tuple(m.stride),
                                        tuple(m.dilation))
    layer = Layer(op, m.in_channels, m.out_channels, tuple(m.kernel_size), tuple(m.stride), pads, tuple(m.dilation),
                  m.groups, m.use_bias, m.padding_mode, out_pad, m.layout, dtype=str(k.dtype))
    letters = "".join(c for c in m.layout if c not in "NC")
    torch_k = convert(k, letters + "IO", ("OI" if op == "conv" else "IO") + letters)
    return layer.validate(), np.asarray(torch_k), None if b is None else to_host(b, "the bias")


# --------------------------------------------------------------------------------------------------------- runner

def kernel_format(m: Any, layer: Layer) -> tuple[str, str]:
    """The module's kernel layout and transposed convention."""
    sp = layer.spatial
    if layer.op == "conv":
        return sp + "IO", "torch"
    if type(m) in (linen.Conv, nnx.Conv):  # a grouped transposed convolution as a Conv with input_dilation
        return sp + "IO", "jax"
    if isinstance(m, (linen.ConvTranspose, nnx.ConvTranspose)):
        return (sp + "OI", "torch") if m.transpose_kernel else (sp + "IO", "jax")
    return sp + "IO", "torch"


def runner(m: Any, variables: Any, layer: Layer) -> Callable[[Any, Any, Any], Any]:
    """``fn(x, w, b) -> y`` running the module with torch-layout weight ``w`` and bias ``b``."""
    layout, convention = kernel_format(m, layer)
    torch_layout = ("OI" if layer.op == "conv" else "IO") + layer.spatial

    def params(w: Any, b: Any) -> dict[str, Any]:  # NumPy stays NumPy until the end: no XLA compile to permute
        k = convert(w if isinstance(w, np.ndarray) else to_jax(w), torch_layout, layout, op=layer.op,
                    groups=layer.groups, dst_convention=convention)
        k = to_jax(k)
        return {"kernel": k} if b is None else {"kernel": k, "bias": to_jax(b)}

    if is_linen(m):
        rest = {k: v for k, v in (variables or {}).items() if k != "params"}

        def run(x: Any, w: Any, b: Any) -> Any:
            return m.apply({**rest, "params": params(w, b)}, to_jax(x))

        return run
    graphdef, state = nnx.split(m)

    def run_nnx(x: Any, w: Any, b: Any) -> Any:  # functional: works under jax.jit and grad
        pure = nnx.to_pure_dict(state)
        pure.update(params(w, b))
        fresh = jax.tree.map(lambda a: a, state)
        nnx.replace_by_pure_dict(fresh, pure)
        return nnx.merge(graphdef, fresh)(to_jax(x))

    return run_nnx
