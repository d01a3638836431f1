"""How a ported layer is built: one recipe, which both builds the module and prints the code that builds it.

A :class:`Recipe` names the target class, its constructor arguments (literal values, plus a few
framework objects written as code: dtypes, precision, keys), where the kernel goes and in which
layout and convention. :func:`recipe` decides between the target's native layer and convbridge's
own (:mod:`convbridge.nn`) from the data in :mod:`convbridge.frameworks` and the traps of PITFALLS;
``build`` and ``code`` read the same recipe, so the printed code cannot drift from the port.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from convbridge.errors import DTypeError
from convbridge.port.layer import Layer, same_like, torch_same

__all__ = ["Recipe", "recipe", "TARGETS"]

TARGETS = ("torch", "linen", "nnx", "equinox")
_FLAX_MODES = {"circular": "CIRCULAR", "reflect": "REFLECT"}
_NAMESPACE_IMPORTS = {"torch": "torch", "jax": "jax", "jnp": "jax.numpy", "flax": "flax", "equinox": "equinox",
                      "convbridge": "convbridge"}


@dataclass(frozen=True)
class Recipe:
    """A target layer's construction and where its weights go.

    Attributes:
        target: ``"torch" | "linen" | "nnx" | "equinox"``.
        cls: the class's dotted path, e.g. ``"flax.linen.ConvTranspose"`` or ``"convbridge.nn.torch.Conv"``.
        args, kwargs: literal constructor arguments.
        code_kwargs: constructor arguments written as code (``dtype``, ``precision``, ``rngs``, ``key``).
        kernel: ``(layout, convention)`` of the kernel the target stores (torch's layout is ``OI*``/``IO*``).
        reason: why convbridge's layer is used (``""``: the target's native layer).
        layer: the configuration.
    """

    target: str
    cls: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    code_kwargs: dict[str, str]
    kernel: tuple[str, str]
    reason: str
    layer: Layer
    notes: tuple[str, ...] = field(default=())

    @property
    def native(self) -> bool:
        return not self.reason

    def constructor(self) -> str:
        """The constructor call as code."""
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        parts += [f"{k}={v}" for k, v in self.code_kwargs.items()]
        return f"{self.cls}({', '.join(parts)})"

    def instantiate(self, *, abstract: bool = False) -> Any:
        """The module, with the target's default weights; with ``abstract``, an nnx or Equinox module whose
        weights are shapes only (no random draw, no XLA compile), to be replaced."""
        ns = _namespace()
        module, _, name = self.cls.rpartition(".")
        cls = getattr(importlib.import_module(module), name)
        def extra() -> dict[str, Any]:
            return {k: eval(v, ns) for k, v in self.code_kwargs.items()}  # noqa: S307 - our own literals

        if abstract and self.target == "nnx":
            from flax import nnx

            return nnx.eval_shape(lambda: cls(*self.args, **self.kwargs, **extra()))
        if abstract and self.target == "equinox":
            import equinox as eqx

            return eqx.filter_eval_shape(cls, *self.args, **self.kwargs, **extra())
        return cls(*self.args, **self.kwargs, **extra())

    def kernel_call(self, src: tuple[str, str], var: str = "w") -> str:
        """``cb.port.kernel(...)`` turning the source's stored kernel ``var`` into this target's, as code."""
        (s_lay, s_conv), (d_lay, d_conv) = src, self.kernel
        if s_lay == d_lay and (self.layer.op == "conv" or s_conv == d_conv):
            return var
        extra = ""
        if self.layer.op == "conv_transpose":
            extra = f", op='conv_transpose', groups={self.layer.groups}"
            if s_conv != "torch":
                extra += f", src_convention={s_conv!r}"
            if d_conv != "torch":
                extra += f", dst_convention={d_conv!r}"
        return f"cb.port.kernel({var}, {s_lay!r}, {d_lay!r}{extra})"


def _namespace() -> dict[str, Any]:
    ns: dict[str, Any] = {}
    for name, module in _NAMESPACE_IMPORTS.items():
        try:
            ns[name] = importlib.import_module(module)
        except ImportError:  # a framework the recipe does not use
            pass
    if "flax" in ns:
        importlib.import_module("flax.linen")
        importlib.import_module("flax.nnx")
    if "convbridge" in ns:
        importlib.import_module("convbridge.nn")
    return ns


def _pairs(p: Any) -> Any:
    return p if isinstance(p, str) else [tuple(x) for x in p]


def recipe(layer: Layer, target: str, layout: str, dtype: Any = np.float32) -> Recipe:
    """The recipe of ``layer`` for ``target`` taking input ``layout``: native when exact, else convbridge's."""
    dt = np.dtype(dtype).name
    reason = native_reason(layer, target, layout)
    sp = layer.spatial
    torch_kernel = (("OI" if layer.op == "conv" else "IO") + sp, "torch")
    if reason:
        return _own(layer, target, layout, dt, reason, torch_kernel)
    if target == "torch":
        return _torch(layer, dt, torch_kernel)
    if target in ("linen", "nnx"):
        return _flax(layer, target, dt)
    return _equinox(layer, dt, torch_kernel)


def _torch_same(layer: Layer) -> bool:
    """torch's own ``padding='same'`` (stride 1 only; the odd pixel high) gives exactly these pads."""
    return (layer.op == "conv" and all(s == 1 for s in layer.stride) and not layer.symmetric
            and layer.padding == torch_same(layer.kernel_size, layer.dilation))


def _torch(layer: Layer, dt: str, kernel: tuple[str, str]) -> Recipe:
    n = layer.nsp
    padding: Any = "same" if _torch_same(layer) else tuple(lo for lo, _ in layer.pairs)
    kw: dict[str, Any] = dict(stride=layer.stride, padding=padding)
    if layer.op == "conv":
        cls = f"torch.nn.Conv{n}d"
        kw |= dict(dilation=layer.dilation, groups=layer.groups, bias=layer.use_bias, padding_mode=layer.padding_mode)
    else:
        cls = f"torch.nn.ConvTranspose{n}d"
        kw |= dict(output_padding=layer.output_padding, groups=layer.groups, bias=layer.use_bias,
                   dilation=layer.dilation)
    return Recipe("torch", cls, (layer.in_channels, layer.out_channels, layer.kernel_size), kw,
                  {"dtype": f"torch.{dt}"}, kernel, "", layer)


def _flax(layer: Layer, api: str, dt: str) -> Recipe:
    sp = layer.spatial
    code = {"param_dtype": f"jnp.{dt}", "precision": "jax.lax.Precision.HIGHEST"}
    if api == "nnx":
        code["rngs"] = "flax.nnx.Rngs(0)"
    kw: dict[str, Any] = dict(kernel_size=layer.kernel_size, strides=layer.stride)
    if layer.op == "conv":
        if layer.padding_mode != "zeros":
            padding: Any = _FLAX_MODES[layer.padding_mode]
        else:
            padding = layer.padding.upper() if isinstance(layer.padding, str) else _pairs(layer.padding)
        kw |= dict(padding=padding, kernel_dilation=layer.dilation, feature_group_count=layer.groups,
                   use_bias=layer.use_bias)
        kernel = (sp + "IO", "torch")
        cls = "Conv"
    elif layer.groups == 1:  # (grouped at stride 1: convbridge's layer, see native_reason)
        kw |= dict(padding=_pairs(layer.lax_pairs()), kernel_dilation=layer.dilation, use_bias=layer.use_bias,
                   transpose_kernel=False)
        kernel = (sp + "IO", "jax")
        cls = "ConvTranspose"
    else:  # Flax's ConvTranspose has no groups; its Conv over the stride-dilated input is the same op, exactly
        kw |= dict(strides=(1,) * layer.nsp, padding=_pairs(layer.lax_pairs()), input_dilation=layer.stride,
                   kernel_dilation=layer.dilation, feature_group_count=layer.groups, use_bias=layer.use_bias)
        kernel = (sp + "IO", "jax")
        cls = "Conv"
    args = (layer.out_channels,) if api == "linen" else (layer.in_channels, layer.out_channels)
    return Recipe(api, f"flax.{api}.{cls}", args, kw, code, kernel, "", layer)


def _equinox(layer: Layer, dt: str, torch_kernel: tuple[str, str]) -> Recipe:
    sp = layer.spatial
    kw: dict[str, Any] = dict(num_spatial_dims=layer.nsp, in_channels=layer.in_channels,
                              out_channels=layer.out_channels, kernel_size=layer.kernel_size, stride=layer.stride)
    if layer.op == "conv":
        padding = layer.padding.upper() if isinstance(layer.padding, str) else _pairs(layer.padding)
        kw |= dict(padding=padding, dilation=layer.dilation, groups=layer.groups, use_bias=layer.use_bias,
                   padding_mode=layer.padding_mode.upper())
        cls, kernel = "equinox.nn.Conv", torch_kernel
    else:
        # Equinox needs output_padding < stride; an output_padding it refuses moves into the high crop (negative:
        # rows added), which its padding arithmetic d (k - 1) - hi + output_padding reads the same way
        keep = [op < s for op, s in zip(layer.output_padding, layer.stride)]
        pads = [(lo, hi) if k else (lo, hi - op) for (lo, hi), op, k in zip(layer.pairs, layer.output_padding, keep)]
        out_pad = tuple(op if k else 0 for op, k in zip(layer.output_padding, keep))
        kw |= dict(padding=pads, output_padding=out_pad, dilation=layer.dilation, groups=layer.groups,
                   use_bias=layer.use_bias)
        cls, kernel = "equinox.nn.ConvTranspose", ("OI" + sp, "jax")
    return Recipe("equinox", cls, (), kw, {"dtype": f"jnp.{dt}", "key": "jax.random.PRNGKey(0)"}, kernel, "", layer)


def _own(layer: Layer, target: str, layout: str, dt: str, reason: str, torch_kernel: tuple[str, str]) -> Recipe:
    sp = layer.spatial
    kw: dict[str, Any] = dict(num_spatial_dims=layer.nsp, in_channels=layer.in_channels,
                              out_channels=layer.out_channels, kernel_size=layer.kernel_size, stride=layer.stride,
                              padding=_pairs(layer.padding) if not isinstance(layer.padding, str) else layer.padding,
                              dilation=layer.dilation, groups=layer.groups, use_bias=layer.use_bias)
    if layer.op == "conv":
        kw["padding_mode"] = layer.padding_mode
    else:
        kw["output_padding"] = layer.output_padding
    kw["layout"] = layout
    code = {"dtype": f"torch.{dt}" if target == "torch" else f"jnp.{dt}"}
    if target == "nnx":
        code["rngs"] = "flax.nnx.Rngs(0)"
    elif target == "equinox":
        code["key"] = "jax.random.PRNGKey(0)"
    kernel = (sp + "IO", "torch") if target in ("linen", "nnx") else torch_kernel
    cls = f"convbridge.nn.{target}.{'Conv' if layer.op == 'conv' else 'ConvTranspose'}"
    return Recipe(target, cls, (), kw, code, kernel, reason, layer)


# ------------------------------------------------------------------------------------------- weights, built or code

def build(r: Recipe, weight: np.ndarray, bias: np.ndarray | None) -> tuple[Any, Any]:
    """``(module, variables)``: the module with ``weight`` (torch's layout) and ``bias`` loaded; ``variables`` is
    the linen variables dict (None for the other targets, whose modules hold their weights)."""
    from convbridge.port.kernels import kernel as convert, to_jax

    layer = r.layer
    if r.target != "torch" and np.dtype(weight.dtype) == np.float64:
        import jax

        if not jax.config.read("jax_enable_x64"):
            raise DTypeError(f"the layer's weights are float64, but JAX's x64 mode is off, so a {r.target} port would "
                             "round them to float32 (not exact): enable it with jax.config.update('jax_enable_x64', "
                             "True) or JAX_ENABLE_X64=1, or cast the source to float32 first")
    m = r.instantiate(abstract=True)  # every weight is replaced below
    k = convert(np.array(weight), layer.torch_kernel_layout, r.kernel[0], op=layer.op, groups=layer.groups,
                dst_convention=r.kernel[1])
    if r.target == "torch":
        import torch

        from convbridge.backends.torch_backend import _tensor

        with torch.no_grad():  # _tensor: NumPy (ml_dtypes) bfloat16 included
            m.weight.copy_(_tensor(np.array(k)))
            if bias is not None:
                m.bias.copy_(_tensor(np.array(bias)))
        return m, None
    if r.target == "linen":
        params = {"kernel": to_jax(k)} | ({} if bias is None else {"bias": to_jax(bias)})
        return m, {"params": params}
    if r.target == "nnx":
        m.kernel.set_value(to_jax(k))
        if bias is not None:
            m.bias.set_value(to_jax(bias))
        return m, None
    import equinox as eqx

    m = eqx.tree_at(lambda t: t.weight, m, to_jax(k))
    if bias is not None:
        m = eqx.tree_at(lambda t: t.bias, m, to_jax(np.reshape(bias, (-1,) + (1,) * layer.nsp)))
    return m, None


def code(r: Recipe, src_kernel: tuple[str, str], *, bias_broadcast: bool = False) -> list[str]:
    """Lines that build the target from the source's stored weights ``w`` and ``b`` (NumPy arrays)."""
    dt = _dtype_name(r)
    wide = "np.float64" if dt == "float64" else "np.float32"  # holds every float16 / bfloat16 value exactly

    def torch_cast(expr: str) -> str:
        return f"torch.from_numpy(np.array({expr}, {wide})).to(torch.{dt})"  # a copy: JAX arrays are read-only

    def jax_cast(expr: str) -> str:
        return f"jnp.asarray({expr}, jnp.{dt})"

    k = r.kernel_call(src_kernel)
    b = "b.reshape(-1)" if bias_broadcast else "b"
    lines = [f"m = {r.constructor()}"]
    if r.target == "torch":
        lines += ["with torch.no_grad():  # the port's weights", f"    m.weight.copy_({torch_cast(k)})"]
        if r.layer.use_bias:
            lines.append(f"    m.bias.copy_({torch_cast(b)})")
    elif r.target == "linen":
        bias = f", 'bias': {jax_cast(b)}" if r.layer.use_bias else ""
        lines.append(f"variables = {{'params': {{'kernel': {jax_cast(k)}{bias}}}}}")
    elif r.target == "nnx":
        lines.append(f"m.kernel.set_value({jax_cast(k)})")
        if r.layer.use_bias:
            lines.append(f"m.bias.set_value({jax_cast(b)})")
    else:
        lines.append(f"m = equinox.tree_at(lambda t: t.weight, m, {jax_cast(k)})")
        if r.layer.use_bias:
            shape = (-1,) + (1,) * r.layer.nsp
            lines.append(f"m = equinox.tree_at(lambda t: t.bias, m, {jax_cast(b)}.reshape({shape}))")
    return lines


def _dtype_name(r: Recipe) -> str:
    """The parameters' dtype of a recipe, e.g. ``"bfloat16"``."""
    text = r.code_kwargs.get("dtype") or r.code_kwargs.get("param_dtype") or "float32"
    return text.rpartition(".")[2]


# ------------------------------------------------------------------------------------------------- native or not

def native_reason(layer: Layer, target: str, layout: str) -> str:
    """Why ``target``'s own layer cannot express ``layer`` taking ``layout`` exactly (``""`` when it can)."""
    sp = layer.spatial
    if target == "torch":
        return _torch_reason(layer, layout)
    if target == "equinox":
        if layout != "C" + sp:
            return f"equinox.nn layers take one unbatched example ({'C' + sp}), not {layout}"
        if layer.op == "conv_transpose" and isinstance(layer.padding, str):
            return "equinox.nn.ConvTranspose reads 'SAME' its own way"
        return ""
    want = "N" + sp + "C"
    if layout != want:
        return f"flax.{target} layers take channels-last input ({want}), not {layout}"
    if layer.op == "conv_transpose":
        if layer.groups != 1 and all(v == 1 for v in layer.stride):
            return (f"flax.{target}.ConvTranspose has no groups, and at stride 1 a Conv over the undilated input "
                    "would read back as a plain convolution")
        return ""  # groups at a stride > 1: a Conv with input_dilation (see _flax)
    if layer.padding_mode == "zeros":
        return ""
    if layer.padding_mode == "replicate":
        return f"flax.{target}.Conv has no 'replicate' padding mode"
    widths = same_like(layer.kernel_size, layer.dilation)
    if isinstance(layer.padding, str) or layer.padding != widths:
        return (f"flax.{target}.Conv pads {layer.padding_mode!r} only by ((k'-1)//2, k'//2) per dim, here {widths}, "
                f"but this layer pads {layer.padding}")
    return ""


def _torch_reason(layer: Layer, layout: str) -> str:
    if layout != "NC" + layer.spatial:
        return f"torch.nn layers take channels-first input ({'NC' + layer.spatial}), not {layout}"
    if layer.nsp > 3:
        return f"torch.nn has no {layer.nsp}-d convolution"
    if isinstance(layer.padding, str):
        return f"torch.nn has no strided padding={layer.padding!r} (XLA's rule, which depends on the input's size)"
    if not layer.symmetric and not _torch_same(layer):
        what = "pads" if layer.op == "conv" else "crops"
        return f"torch.nn {what} each dim symmetrically, but this layer's are {layer.padding}"
    if layer.op == "conv_transpose" and any(lo < 0 for lo, _ in layer.padding):
        return "torch.nn ConvTranspose crops only"
    return ""
