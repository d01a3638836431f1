"""Autodiff: jax.grad and torch autograd of sum(conv * t) agree with each other and with the reference VJP.

Each gradient is judged with the gauge of its adjoint: dx = conv^T(t, w) has gauge conv^T(|t|, |w|) and
K = C_out/g * prod(k) terms; dw has gauge corr(|x|, |t|) and K = N * prod(out) terms; db has gauge
sum |t| and the same K.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import convbridge as cb
from convbridge import reference
from convbridge.parity import judge_pair
from convbridge.precision import REFERENCE, Precision
from convbridge.spec import make_conv_spec

from cases import CONV
from conftest import record

jax = pytest.importorskip("jax")
torch = pytest.importorskip("torch")
import jax.numpy as jnp  # noqa: E402

# CI differentiates the widest cases; `make sweep` all of them.
GRAD_CASES = [CONV[n] for n in ("bias", "strided_same_odd", "groups", "reflect", "nhwc", "unbatched", "conv1d",
                                "conv3d")] + [
    pytest.param(CONV[n], marks=pytest.mark.slow) for n in ("dilation", "asymmetric_pairs", "depthwise", "circular",
                                                             "full_layout")]


def _jax_grads(x, w, b, t, kw):
    def loss(x, w, b):
        return jnp.sum(cb.conv(x, w, b, backend="jax", **kw) * t)

    argnums = (0, 1, 2) if b is not None else (0, 1)
    # under jit: one XLA program for the forward and backward pass, rather than one per eager op
    grads = jax.jit(jax.grad(loss, argnums=argnums))(jnp.asarray(x), jnp.asarray(w),
                                                     None if b is None else jnp.asarray(b))
    return [np.asarray(g) for g in grads]


def _torch_grads(x, w, b, t, kw):
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    bt = None if b is None else torch.tensor(b, requires_grad=True)
    (cb.conv(xt, wt, bt, backend="torch", **kw) * torch.from_numpy(t)).sum().backward()
    return [a.grad.numpy() for a in (xt, wt, bt) if a is not None]


def _reference_grads(spec, x, w, t, absolute=False):
    """Reference VJP in the user's layouts; with absolute=True, the gauges."""
    f = np.abs if absolute else (lambda a: a)
    lay = spec.layout
    xc = reference.to_canonical(f(x.astype(np.float64)), spec)
    wc = f(w.astype(np.float64)).transpose(lay.rhs_perm)
    tc = reference.to_canonical(f(t.astype(np.float64)), _as_out(spec))
    dx, dw, db = reference.conv_vjp_canonical(tc, xc, wc, spec)
    dx = dx.transpose(_inv(lay.lhs_perm))
    dx = dx if lay.batched else dx[0]
    dw = dw.transpose(_inv(lay.rhs_perm))
    return dx, dw, db


def _inv(p):
    return tuple(np.argsort(p))


def _as_out(spec):
    """A spec view whose 'input' layout is the output layout (to canonicalise t)."""
    from dataclasses import replace

    return replace(spec, layout=replace(spec.layout, lhs=spec.layout.out))


@pytest.mark.parametrize("case", GRAD_CASES, ids=lambda c: getattr(c, "name", str(c)))
def test_gradients_agree(case):
    x, w, b = case.arrays(seed=5)
    kw = case.kwargs
    spec = make_conv_spec(x.shape, w.shape, None if b is None else b.shape, **kw)
    t = np.random.default_rng(9).standard_normal(spec.out_shape).astype(np.float32)
    ref = _reference_grads(spec, x, w, t)
    gauge = _reference_grads(spec, x, w, t, absolute=True)
    out_pixels = spec.batch * math.prod(spec.out_spatial)
    terms = (spec.out_channels // spec.groups * math.prod(spec.kernel_spatial), out_pixels, out_pixels)
    jg, tg = _jax_grads(x, w, b, t, kw), _torch_grads(x, w, b, t, kw)
    f32 = Precision.of("float32")
    for name, r, gj, gt, gg, k in zip(("dx", "dw", "db"), ref, jg, tg, gauge, terms):
        assert gj.shape == gt.shape == r.shape, name
        for label, got in (("jax", gj), ("torch", gt)):
            res, _ = judge_pair((label, "reference"), got, r, gg, k, (f32, REFERENCE), b_is_reference=True)
            assert res.verdict in ("identical", "equivalent"), f"{case.name} {name} {res}"
        res, _ = judge_pair(("jax", "torch"), gj, gt, gg, k, (f32, f32))
        if res.verdict == "equivalent":
            record("equivalent", r=res.max_ratio, allowed=res.allowed_ratio, pair="jax/torch", test=f"grad:{name}")
        assert res.verdict in ("identical", "equivalent"), f"{case.name} {name} {res}"


def test_reference_vjp_matches_finite_differences():
    """The reference VJP is itself checked, in float64, against central differences."""
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((1, 2, 6, 5)), rng.standard_normal((2, 2, 3, 2))
    kw = dict(stride=(2, 1), padding=((1, 2), (0, 1)), padding_mode="reflect")
    spec = make_conv_spec(x.shape, w.shape, **kw)
    t = rng.standard_normal(spec.out_shape)
    dx, dw, _ = reference.conv_vjp_canonical(t, x, w, spec)
    eps = 1e-6
    for arr, grad in ((x, dx), (w, dw)):
        for idx in [tuple(rng.integers(s) for s in arr.shape) for _ in range(6)]:
            plus, minus = arr.copy(), arr.copy()
            plus[idx] += eps
            minus[idx] -= eps
            args = (plus, w) if arr is x else (x, plus)
            args_m = (minus, w) if arr is x else (x, minus)
            fd = (np.sum(reference.conv(*args, None, spec) * t) - np.sum(reference.conv(*args_m, None, spec) * t))
            assert abs(fd / (2 * eps) - grad[idx]) < 1e-6


def test_jit_and_vmap():
    x, w, b = CONV["bias"].arrays(seed=2)
    kw = dict(stride=2, padding="same", padding_mode="reflect")
    eager = cb.conv(jnp.asarray(x), w, b, **kw)
    jitted = jax.jit(lambda x, w, b: cb.conv(x, w, b, **kw))(jnp.asarray(x), jnp.asarray(w), jnp.asarray(b))
    np.testing.assert_array_equal(np.asarray(eager), np.asarray(jitted))
    per_example = jax.vmap(lambda xi: cb.conv(xi, jnp.asarray(w), jnp.asarray(b), **kw))(jnp.asarray(x))
    np.testing.assert_array_equal(np.asarray(per_example), np.asarray(eager))
    assert cb.verify(per_example, x, w, b, **kw).verdict in ("identical", "equivalent")
