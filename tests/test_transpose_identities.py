"""Identities of the transposed convolution.

- torch convention: conv_transpose(x, W) is the VJP of conv(., W) at cotangent x, as jax.vjp and torch
  autograd compute it with the frameworks' own convolutions (and, in float64, the reference is conv's adjoint);
- convention="jax" is lax.conv_transpose, for both transpose_kernel values;
- convbridge.transpose.torch_to_jax / jax_to_torch round-trip and give equal values.
"""

from __future__ import annotations

import numpy as np
import pytest

import convbridge as cb
from convbridge.spec import lax_transpose_padding as lax_padding, make_conv_transpose_spec
from convbridge.transpose import jax_to_torch, torch_to_jax

from conftest import BACKENDS, record, record_report

jax = pytest.importorskip("jax")
torch = pytest.importorskip("torch")
import jax.numpy as jnp  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from jax import lax  # noqa: E402

AGREE = ("identical", "equivalent")

VJP_CONFIGS = [
    dict(x=(2, 4, 5), w=(4, 3, 3), stride=2, padding=((1, 0),), output_padding=1),
    dict(x=(1, 6, 4, 5), w=(6, 2, 3, 2), stride=(2, 3), padding=((0, 1), (1, 1)), output_padding=(1, 2),
         dilation=(1, 2), groups=3),
    dict(x=(2, 4, 5, 5), w=(4, 1, 3, 3), stride=2, padding=1, output_padding=1, groups=4),
    dict(x=(1, 2, 3, 4, 3), w=(2, 2, 2, 3, 2), stride=(1, 2, 2), padding=(0, 1, 0), output_padding=(0, 1, 1),
         dilation=(2, 1, 1)),
    dict(x=(2, 3, 6, 6), w=(3, 2, 4, 4), stride=2, padding="same"),
    dict(x=(1, 2, 7), w=(2, 2, 3), stride=3, dilation=2, padding=2, output_padding=2),
    dict(x=(1, 2, 4), w=(2, 3, 2), stride=4, padding="same"),
]


def _split(cfg):
    kw = {k: v for k, v in cfg.items() if k not in ("x", "w")}
    rng = np.random.default_rng(len(cfg["x"]) * 10 + cfg["w"][1])
    x = rng.standard_normal(cfg["x"]).astype(np.float32)
    w = rng.standard_normal(cfg["w"]).astype(np.float32)
    return x, w, kw, make_conv_transpose_spec(x.shape, w.shape, **kw)


def _jax_vjp(x, w, spec):
    z = np.zeros(spec.canonical_out_shape, np.float32)
    pads = "SAME" if isinstance(spec.padding, str) else list(spec.padding)
    f = lambda z: lax.conv_general_dilated(z, jnp.asarray(w), spec.stride, pads, rhs_dilation=spec.dilation,  # noqa
                                           feature_group_count=spec.groups, precision=lax.Precision.HIGHEST)
    pullback = jax.jit(lambda z, t: jax.vjp(f, z)[1](t)[0])  # one XLA program, not one per eager op
    return np.asarray(pullback(z, jnp.asarray(x)))


def _torch_vjp(x, w, spec):
    z = torch.zeros(spec.canonical_out_shape, requires_grad=True)
    conv = getattr(F, f"conv{spec.nsp}d")
    y = conv(F.pad(z, [p for pair in reversed(spec.padding) for p in pair]), torch.from_numpy(w), None,
             spec.stride, 0, spec.dilation, spec.groups)
    y.backward(torch.from_numpy(x))
    return z.grad.numpy()


@pytest.mark.parametrize("cfg", VJP_CONFIGS, ids=lambda c: f"{len(c['x']) - 2}d-{c['padding']}")
def test_conv_transpose_is_the_vjp_of_conv(cfg):
    x, w, kw, spec = _split(cfg)
    if kw["padding"] == "same":  # the gradient of conv's "same" on n * stride: the same widths
        assert spec.padding == tuple(cb.spec.ConvAxis.same(n, k, s, d).padding for n, k, s, d in zip(
            spec.out_spatial, spec.kernel_spatial, spec.stride, spec.dilation))
        assert spec.out_spatial == tuple(n * s for n, s in zip(spec.in_spatial, spec.stride))
    for name, grad in (("jax.vjp", _jax_vjp(x, w, spec)), ("torch.autograd", _torch_vjp(x, w, spec))):
        report = cb.verify(grad, x, w, op="conv_transpose", name=name, **kw)
        record_report(report, f"vjp:{name}")
        assert report.verdict in AGREE, str(report)
    report = cb.compare(x, w, op="conv_transpose", backends=BACKENDS, **kw)
    assert report.verdict in AGREE, str(report)


@pytest.mark.parametrize("cfg", VJP_CONFIGS[:4], ids=lambda c: f"{len(c['x']) - 2}d")
def test_reference_is_the_adjoint_of_conv_in_float64(cfg):
    """<conv(z, W), x> = <z, conv_transpose(x, W)>: two independent reference definitions agree."""
    x, w, kw, spec = _split(cfg)
    x, w = x.astype(np.float64), w.astype(np.float64)
    z = np.random.default_rng(3).standard_normal(spec.canonical_out_shape)
    conv_kw = dict(stride=spec.stride, padding=spec.padding, dilation=spec.dilation, groups=spec.groups)
    lhs = np.vdot(cb.conv(z, w, backend="numpy", **conv_kw), x)
    rhs = np.vdot(z, cb.conv_transpose(x, w, backend="numpy", **kw))
    assert lhs == pytest.approx(rhs, rel=1e-12, abs=1e-12)


# ---- convention="jax" is lax.conv_transpose --------------------------------------------------------------

LAX_CONFIGS = [
    dict(x=(2, 7, 3), w=(3, 3, 2), strides=(2,), padding="SAME"),
    dict(x=(2, 7, 3), w=(4, 3, 2), strides=(3,), padding="VALID", rhs_dilation=(2,)),
    dict(x=(1, 6, 2), w=(2, 2, 3), strides=(1,), padding="SAME"),
    dict(x=(2, 5, 2), w=(3, 2, 2), strides=(2,), padding=((0, 3),)),
    dict(x=(2, 5, 2), w=(3, 2, 2), strides=(2,), padding=((-1, 1),)),
    dict(x=(2, 5, 6, 3), w=(3, 2, 3, 4), strides=(2, 2), padding="SAME"),
    dict(x=(1, 4, 5, 2), w=(2, 3, 2, 3), strides=(3, 1), padding="VALID", rhs_dilation=(1, 2)),
    dict(x=(1, 4, 5, 2), w=(2, 3, 2, 3), strides=(2, 2), padding="SAME", rhs_dilation=(2, 1)),
    dict(x=(2, 5, 4, 3), w=(3, 3, 3, 2), strides=(2, 3), padding=((1, 2), (3, 0))),
    dict(x=(1, 4, 4, 2), w=(1, 1, 2, 2), strides=(4, 4), padding="SAME"),
    dict(x=(1, 3, 5, 4), w=(2, 3, 3, 3), strides=(2, 1), padding="SAME", dimension_numbers=("NCHW", "OIHW", "NCHW")),
]


def _lax_case(cfg, transpose_kernel: bool, seed: int = 0):
    rhs = (cfg.get("dimension_numbers") or (None, "WIO" if len(cfg["w"]) == 3 else "HWIO", None))[1]
    shape = list(cfg["w"])
    if transpose_kernel:  # lax swaps I and O: the array holds them the other way round
        i, o = rhs.index("I"), rhs.index("O")
        shape[i], shape[o] = shape[o], shape[i]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(cfg["x"]).astype(np.float32)
    w = rng.standard_normal(shape).astype(np.float32)
    lax_kw = dict(strides=cfg["strides"], padding=cfg["padding"], rhs_dilation=cfg.get("rhs_dilation"),
                  dimension_numbers=cfg.get("dimension_numbers"), transpose_kernel=transpose_kernel)
    cb_kw = dict(convention="jax", stride=cfg["strides"], padding=cfg["padding"],
                 dilation=cfg.get("rhs_dilation") or 1, layout=cfg.get("dimension_numbers"),
                 transpose_kernel=transpose_kernel)
    return x, w, lax_kw, cb_kw


@pytest.mark.parametrize("transpose_kernel", [False, True])
@pytest.mark.parametrize("cfg", LAX_CONFIGS, ids=lambda c: f"{len(c['x']) - 2}d-{c['padding']}")
def test_jax_convention_is_lax_conv_transpose(cfg, transpose_kernel):
    x, w, lax_kw, cb_kw = _lax_case(cfg, transpose_kernel)
    expected = np.asarray(lax.conv_transpose(x, w, precision=lax.Precision.HIGHEST, **lax_kw))
    assert cb.output_shape(x.shape, w.shape, op="conv_transpose", **cb_kw) == expected.shape
    report = cb.verify(expected, x, w, op="conv_transpose", name="lax.conv_transpose", **cb_kw)
    record_report(report, "lax.conv_transpose")
    assert report.verdict in AGREE, str(report)
    report = cb.compare(x, w, op="conv_transpose", backends=BACKENDS, **cb_kw)
    record("config", backends=len(BACKENDS), source="jax-convention")
    record_report(report, "jax-convention")
    assert report.verdict in AGREE, str(report)


def test_the_two_conventions_differ_by_a_flip():
    """PITFALLS trap 2: the same kernel and padding mean different ops; flipping the kernel reconciles them."""
    x, w, lax_kw, cb_kw = _lax_case(dict(x=(2, 5, 6, 3), w=(3, 3, 3, 4), strides=(2, 2), padding="SAME"), False)
    y = lax.conv_transpose(x, w, precision=lax.Precision.HIGHEST, **lax_kw)
    torch_kw = dict(stride=2, padding="same", layout="NHWC")
    assert cb.verify(y, x, w, op="conv_transpose", **torch_kw).verdict == "mismatch"
    assert cb.verify(y, x, np.flip(w, (0, 1)), op="conv_transpose", **torch_kw).verdict in AGREE
    # and torch's habitual "same" upsampling (padding=1, output_padding=1, k=3, s=2) is 'SAME' shifted a pixel
    habit = dict(stride=2, padding=1, output_padding=1, layout="NHWC")
    assert cb.output_shape(x.shape, w.shape, op="conv_transpose", **habit) == y.shape
    assert cb.verify(y, x, np.flip(w, (0, 1)), op="conv_transpose", **habit).verdict == "mismatch"


# ---- the mapping between conventions -----------------------------------------------------------------------

TORCH_CONFIGS = [
    dict(x=(2, 3, 6), w=(3, 2, 3), stride=2, padding=1, output_padding=1),
    dict(x=(1, 2, 5, 4), w=(2, 3, 3, 2), stride=(2, 3), padding=((0, 2), (1, 0)), dilation=(1, 2)),
    dict(x=(2, 2, 4, 5), w=(2, 2, 4, 4), stride=2, padding="same"),
    dict(x=(1, 5, 4, 3), w=(3, 3, 3, 2), stride=2, padding=1, output_padding=(1, 0), layout="NHWC"),
    dict(x=(1, 2, 3, 4, 3), w=(2, 2, 2, 3, 2), stride=(1, 2, 2), padding=(0, 1, 1), output_padding=(0, 1, 0),
         dilation=(2, 1, 1)),
]


@pytest.mark.parametrize("transpose_kernel", [False, True])
@pytest.mark.parametrize("cfg", TORCH_CONFIGS, ids=lambda c: f"{len(c['x']) - 2}d-{c['padding']}")
def test_torch_to_jax_round_trips_with_equal_values(cfg, transpose_kernel):
    rng = np.random.default_rng(5)
    x = rng.standard_normal(cfg["x"]).astype(np.float32)
    w = rng.standard_normal(cfg["w"]).astype(np.float32)
    kw = {k: v for k, v in cfg.items() if k not in ("x", "w")}
    spec = make_conv_transpose_spec(x.shape, w.shape, **kw)
    call = torch_to_jax(w, transpose_kernel=transpose_kernel, **kw)
    y_lax = lax.conv_transpose(x, call.kernel, precision=lax.Precision.HIGHEST, **call.lax_kwargs())
    report = cb.verify(y_lax, x, w, op="conv_transpose", name="lax via torch_to_jax", **kw)
    record_report(report, "torch_to_jax")
    assert report.verdict in AGREE, str(report)
    np.testing.assert_array_equal(cb.conv_transpose(x, call.kernel, backend="numpy", **call.kwargs),
                                  cb.conv_transpose(x, w, backend="numpy", **kw))
    back = jax_to_torch(call.kernel, **call.lax_kwargs())
    perm = spec.layout.rhs_perm
    np.testing.assert_array_equal(back.kernel, w.transpose((perm[1], perm[0], *perm[2:])))
    assert tuple((lo, hi - op) for (lo, hi), op in zip(back.padding, back.output_padding)) == spec.crops
    if all(lo == hi for lo, hi in spec.padding):
        assert (back.padding, back.output_padding) == (spec.padding, spec.output_padding)
    if back.layout[0].startswith("NC"):  # channels-first: F.conv_transposeNd runs it directly
        conv_t = getattr(F, f"conv_transpose{spec.nsp}d")
        try:
            tkw = back.torch_kwargs()
        except cb.ConvBridgeError:
            assert any(lo != hi for lo, hi in back.padding)
        else:
            y = conv_t(torch.from_numpy(x), torch.from_numpy(back.kernel), **tkw)
            assert cb.verify(y, x, w, op="conv_transpose", **kw).verdict in AGREE


@pytest.mark.parametrize("transpose_kernel", [False, True])
@pytest.mark.parametrize("cfg", [c for c in LAX_CONFIGS if c["padding"] != ((1, 2), (3, 0))],  # a > d(k-1): no torch
                         ids=lambda c: f"{len(c['x']) - 2}d-{c['padding']}")
def test_jax_to_torch_round_trips_with_equal_values(cfg, transpose_kernel):
    x, w, lax_kw, cb_kw = _lax_case(cfg, transpose_kernel, seed=4)
    expected = lax.conv_transpose(x, w, precision=lax.Precision.HIGHEST, **lax_kw)
    call = jax_to_torch(w, **lax_kw)
    torch_kw = {k: v for k, v in call.kwargs.items()}
    report = cb.verify(expected, x, call.kernel, op="conv_transpose", name="lax vs jax_to_torch", **torch_kw)
    assert report.verdict in AGREE, str(report)
    back = torch_to_jax(call.kernel, transpose_kernel=transpose_kernel,
                        **{k: v for k, v in torch_kw.items() if k != "convention"})
    dims = cfg.get("dimension_numbers")
    if dims is None:  # lax's default letters: the kernel comes back bit for bit
        np.testing.assert_array_equal(back.kernel, w)
    pads = cfg["padding"]
    if isinstance(pads, str):
        k_eff = [d * (k - 1) + 1 for k, d in zip(make_conv_transpose_spec(x.shape, w.shape, **cb_kw).kernel_spatial,
                                                 cfg.get("rhs_dilation") or (1,) * len(cfg["strides"]))]
        pads = tuple(lax_padding(k, s, pads) for k, s in zip(k_eff, cfg["strides"]))
    assert back.padding == tuple(pads)
    again = lax.conv_transpose(x, back.kernel, precision=lax.Precision.HIGHEST, **back.lax_kwargs())
    assert cb.verify(again, x, w, op="conv_transpose", **cb_kw).verdict in AGREE


# ---- transformations: jit, grad, vmap (JAX) and autograd (torch) ---------------------------------------------


def test_jax_conv_transpose_under_jit_grad_vmap():
    """jit gives the eager bits; grad w.r.t. x is conv (the adjoint) with padding = the crops; vmap over
    unbatched examples is the batched op."""
    x, w, kw, spec = _split(dict(x=(1, 6, 4, 5), w=(6, 2, 3, 2), stride=(2, 3), padding=((0, 1), (2, 2)),
                                 output_padding=(1, 2), dilation=(1, 2), groups=3))  # crops >= 0: conv pads
    b = np.random.default_rng(2).standard_normal(spec.out_channels).astype(np.float32)
    xj, wj, bj = jnp.asarray(x), jnp.asarray(w), jnp.asarray(b)
    eager = cb.conv_transpose(xj, wj, bj, **kw)
    jitted = jax.jit(lambda x, w, b: cb.conv_transpose(x, w, b, **kw))(xj, wj, bj)
    np.testing.assert_array_equal(np.asarray(eager), np.asarray(jitted))
    t = np.random.default_rng(3).standard_normal(spec.out_shape).astype(np.float32)
    dx = jax.grad(lambda x: jnp.sum(cb.conv_transpose(x, wj, bj, **kw) * t))(xj)
    conv_kw = dict(stride=spec.stride, padding=spec.crops, dilation=spec.dilation, groups=spec.groups)
    assert cb.verify(dx, t, w, **conv_kw).verdict in AGREE
    per_example = jax.vmap(lambda xi: cb.conv_transpose(xi, wj, bj, **kw))(xj)
    assert cb.verify(per_example, x, w, b, op="conv_transpose", **kw).verdict in AGREE


def test_torch_conv_transpose_autograd():
    x, w, kw, spec = _split(dict(x=(1, 2, 3, 4, 3), w=(2, 2, 2, 3, 2), stride=(1, 2, 2), dilation=(2, 1, 1),
                                 padding=((0, 0), (1, 2), (0, 1)), output_padding=(0, 1, 1)))
    xt = torch.from_numpy(x).requires_grad_(True)
    t = np.random.default_rng(3).standard_normal(spec.out_shape).astype(np.float32)
    (cb.conv_transpose(xt, w, **kw) * torch.from_numpy(t)).sum().backward()
    conv_kw = dict(stride=spec.stride, padding=spec.crops, dilation=spec.dilation, groups=spec.groups)
    assert cb.verify(xt.grad, t, w, **conv_kw).verdict in AGREE


@pytest.mark.parametrize("nsp", [1, 3])
def test_unfold_fold_under_jit_grad_vmap_and_autograd(nsp):
    """The gradient of <unfold(x), y> is fold(y) (JAX grad and torch autograd); jit and vmap keep the bits."""
    rng = np.random.default_rng(nsp)
    kernel, kw = (2, 3, 2)[:nsp], dict(stride=(2, 1, 2)[:nsp], padding=(1, 0, 1)[:nsp], dilation=(1, 2, 1)[:nsp])
    x = rng.standard_normal((2, 3, *(7, 6, 5)[:nsp])).astype(np.float32)
    cols = cb.unfold(x, kernel, **kw)
    y = rng.standard_normal(cols.shape).astype(np.float32)
    xj = jnp.asarray(x)
    np.testing.assert_array_equal(np.asarray(jax.jit(lambda a: cb.unfold(a, kernel, **kw))(xj)), cols)
    np.testing.assert_array_equal(np.asarray(jax.vmap(lambda a: cb.unfold(a, kernel, **kw))(xj)), cols)
    fold_kw = dict(kw, output_size=x.shape[2:])
    dx = jax.grad(lambda a: jnp.vdot(cb.unfold(a, kernel, **kw), y))(xj)
    assert cb.verify(dx, y, kernel, op="fold", **fold_kw).verdict in AGREE
    xt = torch.from_numpy(x).requires_grad_(True)
    (cb.unfold(xt, kernel, **kw) * torch.from_numpy(y)).sum().backward()
    assert cb.verify(xt.grad, y, kernel, op="fold", **fold_kw).verdict in AGREE
    folded = jax.jit(lambda c: cb.fold(c, x.shape[2:], kernel, **kw))(jnp.asarray(y))
    assert cb.verify(folded, y, kernel, op="fold", **fold_kw).verdict in AGREE


def test_planted_porting_bugs_are_mismatches():
    """PITFALLS traps 2 and 3 and a wrong im2col order give r of order 1/u, not rounding."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 4, 6)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3)).astype(np.float32)  # torch (C_in 4, C_out/g 3, k 3), groups 2
    kw = dict(stride=2, padding=1, output_padding=1, groups=2)
    spec = make_conv_transpose_spec(x.shape, w.shape, **kw)
    span = spec.dilation[0] * (spec.kernel_spatial[0] - 1)
    pads = [(span - lo, span - hi) for lo, hi in spec.crops]
    wrong = np.flip(w.reshape(6, 2, 3), -1)  # trap 3: a reshape where a regroup belongs
    right = np.flip(w.reshape(2, 2, 3, 3).swapaxes(1, 2).reshape(6, 2, 3), -1)
    bugs = {"reshape_not_regroup": wrong, "unflipped": np.flip(right, -1)}
    for name, kernel in bugs.items():
        y = lax.conv_general_dilated(x, kernel, (1,), pads, lhs_dilation=spec.stride, feature_group_count=2)
        p = cb.verify(y, x, w, op="conv_transpose", **kw).pairs[0]
        record("mismatch", r=p.max_ratio, test=f"conv_transpose:{name}")
        assert p.verdict == "mismatch" and p.max_ratio > 1e4 * p.allowed_ratio, name
    y = lax.conv_general_dilated(x, right, (1,), pads, lhs_dilation=spec.stride, feature_group_count=2)
    assert cb.verify(y, x, w, op="conv_transpose", **kw).verdict in AGREE
    x2 = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    cols = np.asarray(cb.unfold(x2, (2, 2)))
    swapped = cols.reshape(2, 3, 4, 16).swapaxes(1, 2).reshape(2, 12, 16)  # offset-major rows: (t, c) not (c, t)
    p = cb.verify(swapped, x2, (2, 2), op="unfold").pairs[0]
    record("mismatch", r=p.max_ratio, test="unfold:row_order")
    assert p.verdict == "mismatch" and p.allowed_ratio == 0
