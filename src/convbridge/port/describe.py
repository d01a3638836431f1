"""``convbridge port``: a layer description in one framework, printed as the exact construction in another.

A description is a constructor call with literal arguments, e.g.
``"ConvTranspose2d(64, 32, 4, stride=2, padding=1, groups=4)"`` (torch, read by torch's own rules
through :func:`convbridge.layer_string.read_layer`), ``"flax.linen.Conv(features=8, kernel_size=(3, 3),
strides=2, padding='SAME')"`` (linen needs the input channels: ``in_channels=``), ``"nnx.Conv(3, 8, (3, 3))"``
or ``"eqx.nn.ConvTranspose2d(8, 4, 3, stride=2)"``. The layer is built with placeholder weights (no random
draw) and ported by the same :class:`~convbridge.port.recipe.Recipe` that :mod:`convbridge.port` builds
from, so the printed code is the port.
"""

from __future__ import annotations

import ast
from typing import Any

import numpy as np

from convbridge.errors import ArgumentError, ArgumentTypeError, ConvBridgeError, brief

__all__ = ["source_from_text", "port_code"]

_TORCH_CLASSES = {f"{k}{n}d" for k in ("Conv", "ConvTranspose") for n in (1, 2, 3)}
_TARGET_NAMES = {"flax": "linen", "linen": "linen", "flax.linen": "linen", "nnx": "nnx", "flax.nnx": "nnx",
                 "equinox": "equinox", "eqx": "equinox", "torch": "torch"}


def _framework(func: str) -> str:
    parts = func.split(".")
    name = parts[-1]
    if parts[0] in ("eqx", "equinox"):
        return "equinox"
    if "nnx" in parts:
        return "nnx"
    if name in _TORCH_CLASSES and parts[0] not in ("flax", "linen"):
        return "torch"
    if name in ("Conv", "ConvTranspose"):
        return "linen"
    raise ArgumentError(f"unknown layer {func!r}: describe a torch Conv1d/2d/3d or ConvTranspose1d/2d/3d, a flax "
                        "(linen or nnx) Conv or ConvTranspose, or an equinox Conv / ConvTranspose (Conv1d..3d too)")


def _parse(text: str) -> tuple[str, list[Any], dict[str, Any]]:
    if not isinstance(text, str):
        raise ArgumentTypeError(f"a layer description is a string such as 'Conv2d(3, 4, 5)', got {brief(text)}")
    try:
        call = ast.parse(text.strip(), mode="eval").body
        if not isinstance(call, ast.Call) or any(k.arg is None for k in call.keywords):
            raise ValueError
        func = ast.unparse(call.func)
        args = [ast.literal_eval(a) for a in call.args]
        kwargs = {str(k.arg): ast.literal_eval(k.value) for k in call.keywords}
    except (SyntaxError, ValueError, TypeError, RecursionError, MemoryError):
        raise ArgumentError(f"cannot read layer {brief(text)}: write one constructor call with literal arguments, "
                            "e.g. 'ConvTranspose2d(64, 32, 4, stride=2)' or \"flax.linen.Conv(8, (3, 3), "
                            "in_channels=3)\"") from None
    return func, args, kwargs


def source_from_text(text: str) -> tuple[Any, Any]:
    """``(module, variables)`` for a layer description (placeholder weights: zeros; variables for linen only).

    Raises:
        ConvBridgeError: an unreadable description, an unknown layer, or arguments its framework refuses (with the
            framework's own message).
    """
    func, args, kwargs = _parse(text)
    kind = _framework(func)
    if any(_is_float64(kwargs.get(k)) for k in ("dtype", "param_dtype")) and kind != "torch":
        from convbridge.backends.jax_backend import float64

        with float64():  # a float64 description is built in float64, whatever this process's x64 setting
            return _build(kind, text, func, args, kwargs)
    return _build(kind, text, func, args, kwargs)


def _is_float64(value: object) -> bool:
    return isinstance(value, str) and value.rpartition(".")[2] in ("float64", "double")


_TORCH_DTYPES = {"float16": "float16", "half": "float16", "bfloat16": "bfloat16", "float32": "float32",
                 "float": "float32", "float64": "float64", "double": "float64"}


def _build(kind: str, text: str, func: str, args: list[Any], kwargs: dict[str, Any]) -> tuple[Any, Any]:
    try:
        if kind == "torch":
            return _torch(text, kwargs.get("dtype")), None
        if kind == "linen":
            return _linen(func, args, kwargs)
        if kind == "nnx":
            return _nnx(func, args, kwargs), None
        return _equinox(func, args, kwargs), None
    except (TypeError, ValueError, NotImplementedError, AssertionError, RuntimeError, OverflowError) as e:
        if isinstance(e, ConvBridgeError):
            raise
        if kind in ("linen", "nnx") and kwargs.get("input_dilation", 1) not in (1, (1,), (1, 1), (1, 1, 1)):
            raise ArgumentError(f"cannot port {brief(text)}: a Conv with input_dilation={kwargs['input_dilation']} "
                                "ports (as a transposed convolution) only with stride 1 and explicit padding pairs, "
                                "e.g. padding=((1, 2), (1, 2))") from None
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__  # no C++ frames
        raise ArgumentError(f"{kind} refuses {brief(text)}: {first}") from None


def _torch(text: str, dtype: object = None) -> Any:
    import torch

    from convbridge.layer_string import read_layer

    layer = read_layer(text)  # torch's own rules, with convbridge's messages
    name = "float32" if dtype is None else _TORCH_DTYPES.get(str(dtype).removeprefix("torch."))
    if name is None:
        raise ArgumentError(f"dtype={dtype!r}: convbridge ports float16, bfloat16, float32 and float64 layers; write "
                            "e.g. dtype='float64' (a string: the description is read as literals)")
    cls = getattr(torch.nn, f"{layer.kind}{layer.num_spatial_dims}d")
    kw: dict[str, Any] = dict(stride=layer.stride, padding=layer.padding, dilation=layer.dilation,
                              groups=layer.groups, bias=layer.bias)
    if layer.kind == "Conv":
        kw["padding_mode"] = layer.padding_mode
    else:
        kw["output_padding"] = layer.output_padding
    m = cls(layer.in_channels, layer.out_channels, layer.kernel_size, device="meta", **kw)  # no memory, no draw
    np_dtype = np.float32 if name == "bfloat16" else np.dtype(name)
    with torch.no_grad():
        m.weight = torch.nn.Parameter(torch.from_numpy(_placeholder(tuple(m.weight.shape), np_dtype)).to(
            getattr(torch, name)))
        if m.bias is not None:
            m.bias = torch.nn.Parameter(torch.from_numpy(_placeholder(tuple(m.bias.shape), np_dtype)).to(
                getattr(torch, name)))
    return m


def _placeholder(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """Zeros for a description's weights: refused past the memory limit; NumPy's zeros are never written, so the
    pages they span are not touched until something reads them."""
    from convbridge import memory

    nbytes = int(np.prod(shape, dtype=np.float64) * np.dtype(dtype).itemsize)
    memory.check(nbytes, f"a placeholder {shape} weight for this layer description", "describe a smaller layer")
    try:
        return np.zeros(shape, dtype)
    except MemoryError:
        raise ArgumentError(f"this machine cannot hold a {shape} weight ({nbytes / 2**30:.3g} GiB); describe a "
                            "smaller layer") from None


def _zeros(tree: Any) -> Any:
    import jax

    return jax.tree.map(lambda s: jax.device_put(_placeholder(tuple(s.shape), s.dtype)), tree)


def _linen(func: str, args: list[Any], kwargs: dict[str, Any]) -> tuple[Any, Any]:
    import flax.linen as linen
    import jax

    cin = kwargs.pop("in_channels", None)
    if isinstance(cin, bool) or not isinstance(cin, int) or cin < 1:
        raise ArgumentError("a flax.linen layer learns its input channels from its first input: add in_channels=N "
                            f"to the description, e.g. \"flax.linen.Conv(8, (3, 3), in_channels=3)\"; got {brief(cin)}")
    m = getattr(linen, func.split(".")[-1])(*args, **kwargs)
    ks = m.kernel_size if isinstance(m.kernel_size, (tuple, list)) else (m.kernel_size,)
    x = jax.ShapeDtypeStruct((1, *(8 for _ in ks), cin), np.float32)
    return m, _zeros(jax.eval_shape(m.init, jax.random.PRNGKey(0), x))


def _nnx(func: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    from flax import nnx

    cls = getattr(nnx, func.split(".")[-1])
    m = nnx.eval_shape(lambda: cls(*args, rngs=nnx.Rngs(0), **kwargs))
    graphdef, state = nnx.split(m)
    return nnx.merge(graphdef, _zeros(state))


def _equinox(func: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    import equinox as eqx
    import jax

    name = func.split(".")[-1]
    cls = getattr(eqx.nn, name, None)
    if cls is None or not name.startswith(("Conv", "ConvTranspose")):
        raise ArgumentError(f"unknown equinox layer {name!r}; use Conv, Conv1d..3d, ConvTranspose, "
                            "ConvTranspose1d..3d")
    m = eqx.filter_eval_shape(cls, *args, key=jax.random.PRNGKey(0), **kwargs)
    return jax.tree.map(lambda s: jax.device_put(_placeholder(tuple(s.shape), s.dtype))
                        if isinstance(s, jax.ShapeDtypeStruct) else s, m)


def port_code(text: str, to: str, *, layout: str | None = None) -> str:
    """The code that builds ``text``'s layer in framework ``to`` (``"torch" | "flax" | "linen" | "nnx" |
    "equinox"``) from the source's weights ``w`` and ``b``; it runs as printed."""
    from convbridge.port.modules import plan

    target = _TARGET_NAMES.get(to)
    if target is None:
        raise ArgumentError(f"--to must be one of {', '.join(sorted(_TARGET_NAMES))}, got {brief(to)}")
    module, variables = source_from_text(text)
    side, r = plan(module, variables, target=target, layout=layout)
    src_api = {"torch": "torch.nn", "equinox": "equinox.nn"}.get(side.framework, side.framework)
    to_np = ".float().numpy()" if side.layer.dtype == "bfloat16" else ".numpy()"  # NumPy has no bfloat16
    where = {"torch": f"w = layer.weight.detach(){to_np}; b = layer.bias.detach(){to_np}",
             "flax.linen": "w = np.asarray(variables['params']['kernel']); b = np.asarray(variables['params']['bias'])",
             "flax.nnx": "w = np.asarray(layer.kernel[...]); b = np.asarray(layer.bias[...])",
             "equinox": "w = np.asarray(layer.weight); b = np.asarray(layer.bias)"}[side.framework]
    dst_api = {"torch": "torch.nn", "linen": "flax.linen", "nnx": "flax.nnx", "equinox": "equinox.nn"}[target]
    lines = [f"# {text.strip()}  ({src_api})  ->  {dst_api}"]
    if r.reason:
        lines.append(f"# {r.reason}: convbridge's own layer computes exactly the same thing")
    from convbridge.port.recipe import code

    body = code(r, side.stored, bias_broadcast=side.framework == "equinox")
    lines += ["import numpy as np", {"torch": "import torch", "linen": "import jax, jax.numpy as jnp, flax.linen",
                                     "nnx": "import jax, jax.numpy as jnp, flax.nnx",
                                     "equinox": "import jax, jax.numpy as jnp, equinox"}[target]]
    if any("cb.port" in line for line in body) or r.reason:
        lines.append("import convbridge as cb" + (f", convbridge.nn.{target}" if r.reason else ""))
    if side.layer.use_bias:
        lines.append(f"# w, b: the {src_api} layer's weight and bias as NumPy arrays: {where}")
    else:
        lines.append(f"# w: the {src_api} layer's weight as a NumPy array (it has no bias): {where.split(';')[0]}")
    if r.target != "torch" and side.layer.dtype == "float64":
        lines.append("jax.config.update('jax_enable_x64', True)  # float64 weights: without x64 JAX rounds them")
    lines += body
    lay = _layout_name(r, side.layer)
    lines.append(f"# input layout: {lay}; " + {
        "torch": "y = m(x)", "linen": "y = m.apply(variables, x)", "nnx": "y = m(x)",
        "equinox": "y = m(x)" if "N" in lay else "y = m(x) for one example (jax.vmap(m)(x) for a batch)"}[target])
    return "\n".join(lines)


def _layout_name(r: Any, layer: Any) -> str:
    if "layout" in r.kwargs:
        return str(r.kwargs["layout"])
    sp = layer.spatial
    return {"torch": "NC" + sp, "linen": "N" + sp + "C", "nnx": "N" + sp + "C", "equinox": "C" + sp}[r.target]
