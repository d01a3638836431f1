"""Training parity for whole models: the gradients of ``sum(y * g)`` with respect to the input and every parameter.

Both models are differentiated by their own framework (torch autograd, ``jax.vjp``) with one seeded cotangent
``g``, in float32 and again in float64. B's parameter gradients are brought into A's names and layouts by
:func:`convbridge.port.state_dict`: every weight conversion is a permutation, a flip or a transpose, so it maps a
gradient exactly as it maps the weight. A gradient's verdict:

- ``identical``: bitwise equal;
- ``mismatch``: the float64 gradients differ by more than ``1e-7`` of the largest float64 gradient of that
  tensor (two correct ports agree to about ``1e-15``; every semantic change we plant moves them by far more);
- ``equivalent`` otherwise (the float32 difference is rounding, shown as ``max_rel``).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from convbridge.arrays import to_host
from convbridge.divergence.report import GradRow

__all__ = ["gradient_rows", "GRAD_RELATIVE_64"]

GRAD_RELATIVE_64 = 1e-7


def _cotangent(shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(20261130).standard_normal(shape)


# ---------------------------------------------------------------------------------------------- per framework

def _torch_grads(model: Any, x: np.ndarray, g: np.ndarray, float64: bool) -> tuple[dict[str, np.ndarray], np.ndarray,
                                                                                     Any]:
    """``(param grads by name, input grad, a copy of the model holding the grads as its parameters)``."""
    import torch

    m = copy.deepcopy(model)
    if float64:
        m = m.double()
    dtype = np.float64 if float64 else x.dtype
    xt = torch.from_numpy(np.ascontiguousarray(x.astype(dtype))).requires_grad_(True)
    for p in m.parameters():
        p.grad = None
        p.requires_grad_(True)
    y = m(xt)
    y.backward(torch.from_numpy(np.ascontiguousarray(g.astype(dtype))))
    grads = {n: to_host(p.grad if p.grad is not None else torch.zeros_like(p), "a gradient")
             for n, p in m.named_parameters()}
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(p.grad if p.grad is not None else torch.zeros_like(p))
    assert xt.grad is not None
    return grads, to_host(xt.grad, "a gradient"), m


def _flat(tree: Any, sep: str) -> dict[str, np.ndarray]:
    import jax

    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if leaf is None or not hasattr(leaf, "shape"):
            continue
        name = sep.join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)
        out[name] = to_host(leaf, "a gradient")
    return out


def _f64(tree: Any) -> Any:
    from convbridge.divergence._jax import _f64 as f64

    return f64(tree)


def _jax_scope(float64: bool) -> Any:
    from convbridge.divergence._jax import _scope

    return _scope(float64)


def _vjp(f: Any, params: Any, x: Any, g: Any) -> Any:
    """``(d params, d x)`` of ``sum(f(params, x) * g)``: one jitted program (eager differentiation compiles every
    operation on its own)."""
    import jax

    return jax.jit(lambda p, xin, gg: jax.vjp(f, p, xin)[1](gg))(params, x, g)


def _linen_grads(module: Any, variables: Any, kwargs: dict[str, Any], x: np.ndarray, g: np.ndarray,
                 float64: bool) -> tuple[dict[str, np.ndarray], np.ndarray, Any]:
    import jax
    import jax.numpy as jnp

    with _jax_scope(float64):
        v = _f64(variables) if float64 else variables
        dtype = np.float64 if float64 else x.dtype
        rest = {k: val for k, val in v.items() if k != "params"}

        def f(params: Any, xin: Any) -> Any:
            return module.apply({**rest, "params": params}, xin, **kwargs)

        dp, dx = _vjp(f, v["params"], jnp.asarray(x.astype(dtype)), jnp.asarray(g.astype(dtype)))
        holder = {**rest, "params": dp}
        return _flat(dp, "/"), to_host(dx, "a gradient"), holder


def _equinox_grads(model: Any, x: np.ndarray, g: np.ndarray, float64: bool) -> tuple[dict[str, np.ndarray],
                                                                                      np.ndarray, Any]:
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    with _jax_scope(float64):
        m = _f64(model) if float64 else model
        dtype = np.float64 if float64 else x.dtype
        params, static = eqx.partition(m, eqx.is_inexact_array)

        def f(p: Any, xin: Any) -> Any:
            return jax.vmap(eqx.combine(p, static))(xin)

        dp, dx = _vjp(f, params, jnp.asarray(x.astype(dtype)), jnp.asarray(g.astype(dtype)))
        holder = eqx.combine(jax.tree_util.tree_map(lambda a: jnp.asarray(np.asarray(a, np.float32)), dp)
                             if not float64 else dp, static)
        return _flat(dp, "."), to_host(dx, "a gradient"), holder


def _nnx_grads(model: Any, x: np.ndarray, g: np.ndarray, float64: bool) -> tuple[dict[str, np.ndarray], np.ndarray,
                                                                                 Any]:
    import jax
    import jax.numpy as jnp
    from flax import nnx

    with _jax_scope(float64):
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)  # type: ignore[misc]
        if float64:
            params, rest = _f64(params), _f64(rest)
        dtype = np.float64 if float64 else x.dtype

        def f(p: Any, xin: Any) -> Any:
            return nnx.merge(graphdef, p, rest)(xin)

        dp, dx = _vjp(f, params, jnp.asarray(x.astype(dtype)), jnp.asarray(g.astype(dtype)))
        return _flat(dp, "."), to_host(dx, "a gradient"), nnx.merge(graphdef, dp, rest)


def _grads(model: Any, x: np.ndarray, g: np.ndarray, float64: bool) -> tuple[dict[str, np.ndarray], np.ndarray, Any]:
    roots = {c.__module__.partition(".")[0] for c in type(model if not isinstance(model, tuple) else model[0]).__mro__}
    if isinstance(model, tuple):
        return _linen_grads(model[0], model[1], dict(model[2]) if len(model) == 3 else {}, x, g, float64)
    if "torch" in roots:
        return _torch_grads(model, x, g, float64)
    if "equinox" in roots:
        return _equinox_grads(model, x, g, float64)
    return _nnx_grads(model, x, g, float64)


def _into_a(model_a: Any, holder_b: Any, model_b: Any, names: dict[str, str] | None = None) -> dict[str, np.ndarray]:
    """B's gradients (held as B's parameters) in A's names and layouts, through :func:`convbridge.port.state_dict`
    (paired as the forward pass paired the layers, when ``names`` is given; else as state_dict pairs them)."""
    from convbridge.errors import ConvBridgeError
    from convbridge.port import state_dict

    src = (model_b[0], holder_b) if isinstance(model_b, tuple) else holder_b

    def port(dst: Any, **kw: Any) -> Any:
        if names:
            try:
                return state_dict(src, dst, name_map=names, **kw)[0]
            except ConvBridgeError:
                pass  # the capture's layer names and state_dict's differ: let state_dict pair them itself
        return state_dict(src, dst, **kw)[0]

    if isinstance(model_a, tuple):
        filled = port(model_a[1], module=model_a[0])
        return _flat(filled["params"], "/")
    filled = port(model_a)
    roots = {c.__module__.partition(".")[0] for c in type(model_a).__mro__}
    if "torch" in roots:
        return {n: to_host(p.detach(), "a gradient") for n, p in filled.named_parameters()}
    if "equinox" in roots:
        import equinox as eqx

        return _flat(eqx.filter(filled, eqx.is_inexact_array), ".")
    from flax import nnx

    return _flat(nnx.state(filled, nnx.Param), ".")


# ---------------------------------------------------------------------------------------------------- judging

def _row(name_a: str, name_b: str, a: np.ndarray, b: np.ndarray, a64: np.ndarray | None,
         b64: np.ndarray | None) -> GradRow:
    if a.shape != b.shape:
        return GradRow(name_a, name_b, tuple(a.shape), "mismatch", np.inf, np.inf, np.inf,
                       f"shapes differ: {a.shape} vs {b.shape}")
    d = np.abs(a.astype(np.float64) - b.astype(np.float64))
    scale = float(np.max(np.abs(a.astype(np.float64)), initial=0.0)) or 1.0
    max_abs, rel = float(np.max(d, initial=0.0)), float(np.max(d, initial=0.0)) / scale
    rel64 = np.nan
    if a64 is not None and b64 is not None and a64.shape == b64.shape:
        scale64 = float(np.max(np.abs(a64), initial=0.0)) or 1.0
        rel64 = float(np.max(np.abs(a64 - b64), initial=0.0)) / scale64
    if np.array_equal(a, b):
        return GradRow(name_a, name_b, tuple(a.shape), "identical", 0.0, 0.0, 0.0 if np.isnan(rel64) else rel64,
                       "bitwise equal")
    if np.isnan(rel64):
        return GradRow(name_a, name_b, tuple(a.shape), "inconclusive", max_abs, rel, rel64, "no float64 re-run")
    differs = rel64 > GRAD_RELATIVE_64
    evidence = (f"float64 gradients differ by {rel64:.2g} of the largest, "
                f"{'beyond' if differs else 'within'} {GRAD_RELATIVE_64:g}")
    return GradRow(name_a, name_b, tuple(a.shape), "mismatch" if differs else "equivalent", max_abs, rel, rel64,
                   evidence)


def gradient_rows(model_a: Any, model_b: Any, x: np.ndarray, conv: Any, out_shape: tuple[int, ...],
                  names: dict[str, str] | None = None) -> list[GradRow]:
    """One :class:`GradRow` for the input and for each of A's parameters (with B's counterpart); ``names``: B's layer
    names -> A's, as the forward pairing found them (the gradients are mapped by the same pairs)."""
    xb = conv.to_b(x)
    g = _cotangent(out_shape)
    gb = conv.to_b(g)
    results: dict[bool, tuple[dict[str, np.ndarray], np.ndarray, dict[str, np.ndarray], np.ndarray]] = {}
    for float64 in (False, True):
        ga, dxa, _ = _grads(model_a, x, g.astype(np.float64 if float64 else x.dtype), float64)
        gbn, dxb, holder = _grads(model_b, xb, gb.astype(np.float64 if float64 else x.dtype), float64)
        converted = (_into_a(model_a, holder, model_b, names) if not float64
                     else _into_a64(model_a, holder, model_b, names))
        results[float64] = (ga, dxa, converted, conv.to_a(dxb))
    ga, dxa, gb32, dxb = results[False]
    ga64, dxa64, gb64, dxb64 = results[True]
    rows = [_row("input", "input", dxa, dxb, dxa64, dxb64)]
    for name, a in ga.items():
        b = gb32.get(name)
        if b is None:
            continue
        rows.append(_row(name, name, a, b, ga64.get(name), gb64.get(name)))
    return rows


def _into_a64(model_a: Any, holder_b: Any, model_b: Any,
              names: dict[str, str] | None = None) -> dict[str, np.ndarray]:
    """As :func:`_into_a`, in float64 (the target's parameters made float64 first, so nothing is rounded)."""
    import jax

    with jax.enable_x64(True):
        if isinstance(model_a, tuple):
            return _into_a((model_a[0], _f64(model_a[1])) + tuple(model_a[2:]), holder_b, model_b, names)
        roots = {c.__module__.partition(".")[0] for c in type(model_a).__mro__}
        if "torch" in roots:
            return _into_a(copy.deepcopy(model_a).double(), holder_b, model_b, names)
        return _into_a(_f64(model_a), holder_b, model_b, names)


