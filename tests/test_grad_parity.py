"""Training parity: ``compare(..., grad=True)`` judges each backend's gradients (x, weight, bias) like its output.

Independent checks: the float64 reference VJP against torch's float64 autograd (another implementation); torch
autograd and ``jax.vjp`` judged equivalent in float32; and planted wrong backward passes (a kernel flipped in dx, a
padding on the wrong side in dw) caught as a mismatch in exactly their gradient's section.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

import convbridge as cb
from convbridge import gradparity
from convbridge.errors import ArgumentError, ArgumentTypeError, DTypeError
from convbridge.ops import build

torch = pytest.importorskip("torch")
jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

AGREE = ("identical", "equivalent")


def _arrays(x_shape, w_shape, b_len, seed=0, dtype="float32"):
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal(x_shape).astype(dtype), rng.standard_normal(w_shape).astype(dtype)
    return x, w, None if b_len is None else rng.standard_normal(b_len).astype(dtype)


def _text(report, pattern):
    """``pattern`` is found in the printed report (shown on failure)."""
    text = str(report)
    assert re.search(pattern, text, re.S), text


# ----------------------------------------------------------------------------------------------- the reference


REFERENCE_CASES = [  # (op, x shape, kernel shape, bias, keywords)
    ("conv", (2, 7, 9, 4), (3, 2, 2, 6), 6, dict(layout="NHWC", groups=2, stride=(2, 1), dilation=(1, 2),
                                                 padding=((1, 2), (0, 1)))),
    ("conv", (2, 3, 11), (4, 3, 3), None, dict(padding=((2, 1),), padding_mode="reflect", stride=2)),
    ("conv", (3, 5, 4, 6), (2, 3, 2, 2, 3), 2, dict(padding=1, padding_mode="circular", dilation=(1, 2, 1))),
    ("conv_transpose", (2, 4, 5, 3), (4, 3, 3, 2), 6, dict(stride=2, padding=0, output_padding=1, groups=2)),
    ("conv_transpose", (1, 5, 6, 2), (3, 2, 2, 3), None, dict(convention="jax", padding="SAME", stride=2)),
]


@pytest.mark.parametrize("op, xs, ws, bl, kw", REFERENCE_CASES, ids=lambda v: str(v))
def test_reference_vjp_is_torch_float64_autograd(op, xs, ws, bl, kw):
    """The float64 reference VJP (conv_transpose for dx, a per-tap correlation for dw) against torch autograd."""
    x, w, b = _arrays(xs, ws, bl, dtype="float64")
    spec = build(op, x, w, b, kw)
    g = np.random.default_rng(1).standard_normal(spec.out_shape)
    ours = gradparity.reference_vjp(spec, x, w, g)
    leaves = [None if a is None else torch.tensor(a, requires_grad=True) for a in (x, w, b)]
    y = getattr(cb, op)(*leaves, backend="torch", **kw)
    theirs = torch.autograd.grad(y, [t for t in leaves if t is not None], torch.tensor(g))
    assert sorted(ours) == sorted(["x", "weight"] + (["bias"] if b is not None else []))
    for key, t in zip(gradparity.GRADIENTS, theirs):
        np.testing.assert_allclose(ours[key], t.numpy(), rtol=1e-12, atol=1e-12, err_msg=key)
    counts = gradparity.gradient_gauges(spec, x, w, g)
    assert int(np.max(counts["weight"].terms)) <= spec.batch * np.prod(spec.out_spatial)


def test_term_counts_are_the_products_that_reach_each_element():
    """K_e by hand: a 1-d conv of 5 inputs, kernel 3, stride 2, padding (1, 1), 2 images, 1 -> 1 channels."""
    spec = build("conv", np.zeros((2, 1, 5)), np.zeros((1, 1, 3)), np.zeros(1), dict(stride=2, padding=1))
    gauges = gradparity.gradient_gauges(spec, np.ones((2, 1, 5)), np.ones((1, 1, 3)), np.ones((2, 1, 3)))
    # output p reads inputs 2p - 1 .. 2p + 1: p = 0 reads 0, 1; p = 1 reads 1, 2, 3; p = 2 reads 3, 4
    np.testing.assert_array_equal(np.broadcast_to(gauges["x"].terms, (2, 1, 5))[0, 0], [1, 2, 1, 2, 1])
    # tap k of output p reads input 2p + k - 1: tap 0 misses p = 0 (padding), tap 2 misses p = 2; times 2 images
    np.testing.assert_array_equal(gauges["weight"].terms[0, 0], [2 * 2, 2 * 3, 2 * 2])
    assert float(gauges["bias"].terms) == 2 * 3


# ----------------------------------------------------------------------------------------------- torch vs JAX


def test_torch_and_jax_gradients_are_equivalent():
    x, w, b = _arrays((2, 9, 8, 6), (3, 2, 2, 6), 6, seed=3)
    kw = dict(layout="NHWC", groups=3, stride=(2, 1), dilation=(1, 2), padding=((1, 2), (0, 1)))
    report = cb.compare(x, w, b, grad=True, **kw)
    assert report.verdict in AGREE and report.output_verdict in AGREE, str(report)
    assert list(report.gradients) == ["x", "weight", "bias"]
    for key, shape in (("x", x.shape), ("weight", w.shape), ("bias", b.shape)):
        r = report.gradients[key]
        assert r.shape == shape and r.verdict in AGREE, str(r)
        assert r.pair("torch", "jax").verdict in AGREE and r.pair("torch", "jax").max_ratio <= 50
    g = gradparity.cotangent(build("conv", x, w, b, kw))  # the same cotangent for both: their dx is its VJP
    ref = gradparity.reference_vjp(build("conv", x, w, b, kw), x, w, g)
    np.testing.assert_allclose(report.gradients["x"].outputs["jax"], ref["x"], rtol=1e-4, atol=1e-4)
    _text(report, r"gradient with respect to x:\n  conv_transpose: gradient of the conv.*"
                  r"gradient with respect to bias:.*\nverdict: (identical|equivalent) \(output \w+; x \w+; "
                  r"weight \w+; bias \w+\)$")
    d = json.loads(json.dumps(report.to_dict()))
    assert d["verdict"] == report.verdict and set(d["gradients"]) == {"x", "weight", "bias"}
    assert d["gradients"]["weight"]["shape"] == list(w.shape)


@pytest.mark.parametrize("backends", [("torch",), pytest.param(("torch", "jax"), marks=pytest.mark.slow)])
def test_conv_transpose_gradients_rank_3(backends):
    x, w, b = _arrays((1, 4, 3, 4, 2), (4, 1, 2, 3, 2), 2, seed=4)
    report = cb.compare(x, w, b, op="conv_transpose", backends=backends, grad=True, stride=(2, 1, 2),
                        padding=(0, 1, 1), output_padding=(1, 0, 1), groups=2)
    assert report.verdict in AGREE, str(report)
    assert report.gradients["x"].op == "conv" and report.gradients["weight"].shape == w.shape


def test_rank_1_reflect_and_unbatched_on_torch():
    x, w, b = _arrays((3, 17), (4, 3, 5), 4, seed=5)  # unbatched (C, W)
    report = cb.compare(x, w, b, backends=("torch",), grad=True, padding=((3, 1),), padding_mode="reflect",
                        stride=2)
    assert report.verdict in AGREE, str(report)
    assert report.gradients["x"].shape == (3, 17)
    assert int(np.max(report.gradients["x"].term_map)) > 4 * 5 // 2  # reflected rows add their copies' terms


def test_exact_mode_is_bitwise():
    x, w, b = _arrays((2, 3, 6, 6), (4, 3, 3, 3), 4, seed=6)
    report = cb.compare(x, w, b, backends=("torch",), grad=True, exact=True, padding=1)
    for r in report.gradients.values():
        assert r.exact and r.verdict == "identical", str(r)


def test_undecided_gradients_rerun_and_rerun_false_does_not():
    x, w, b = _arrays((8, 3, 12, 12), (2, 3, 3, 3), 2, seed=7)  # db sums 8 * 100 terms: weak in float32
    quick = cb.compare(x, w, b, backends=("torch",), grad=True, rerun=False)
    assert quick.gradients["bias"].pairs[0].weak and quick.gradients["bias"].rerun is None
    settled = cb.compare(x, w, b, backends=("torch",), grad=True)
    p = settled.gradients["bias"].pairs[0]
    assert not p.weak and p.verdict == "equivalent" and p.evidence.startswith("re-run in float64")
    assert settled.gradients["bias"].rerun is not None and settled.gradients["bias"].exact_rerun is not None


# ----------------------------------------------------------------------------------------------- planted bugs


class _FlippedDx(torch.autograd.Function):
    """conv2d whose backward computes dx with the kernel flipped (dw and db right)."""

    @staticmethod
    def forward(ctx, x, w, b):
        ctx.save_for_backward(x, w)
        return torch.nn.functional.conv2d(x, w, b, padding=1)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        dx = torch.nn.grad.conv2d_input(x.shape, w.flip(-1, -2), g, padding=1)
        dw = torch.nn.grad.conv2d_weight(x, w.shape, g, padding=1)
        return dx, dw, g.sum(dim=(0, 2, 3))


def test_planted_flipped_kernel_in_dx_is_a_mismatch_in_x_only():
    x, w, b = (torch.from_numpy(a) for a in _arrays((2, 3, 7, 7), (4, 3, 3, 3), 4, seed=8))
    report = cb.compare(x, w, b, backends=(("flipped_dx", _FlippedDx.apply),), grad=True, padding=1)
    assert report.output_verdict in AGREE
    assert report.gradients["x"].verdict == "mismatch", str(report)
    assert report.gradients["weight"].verdict in AGREE and report.gradients["bias"].verdict in AGREE
    assert report.verdict == "mismatch" and report.to_dict()["verdict"] == "mismatch"
    _text(report, r"gradient with respect to x:.*flipped_dx vs reference +.*mismatch.*"
                  r"verdict: mismatch \(output (identical|equivalent); x mismatch; weight (identical|equivalent); "
                  r"bias (identical|equivalent)\)$")


def _jax_conv(x, w, b, padding):
    y = jax.lax.conv_general_dilated(x, w, (2, 2), padding, precision=jax.lax.Precision.HIGHEST)
    return y + b[None, :, None, None]


@jax.custom_vjp
def _same_padding_dw_swapped(x, w, b):
    """A stride-2 'SAME' conv (XLA pads (0, 1)) whose backward computes dw with torch's side (1, 0)."""
    return _jax_conv(x, w, b, ((0, 1), (0, 1)))


def _fwd(x, w, b):
    return _same_padding_dw_swapped(x, w, b), (x, w, b)


def _bwd(res, g):
    x, w, b = res
    dx, _, db = jax.vjp(lambda *a: _jax_conv(*a, ((0, 1), (0, 1))), x, w, b)[1](g)
    _, dw, _ = jax.vjp(lambda *a: _jax_conv(*a, ((1, 0), (1, 0))), x, w, b)[1](g)
    return dx, dw, db


_same_padding_dw_swapped.defvjp(_fwd, _bwd)


def test_planted_padding_side_in_dw_is_a_mismatch_in_weight_only():
    x, w, b = (jnp.asarray(a) for a in _arrays((2, 3, 8, 8), (4, 3, 2, 2), 4, seed=9))
    report = cb.compare(x, w, b, backends=("torch", ("ported", _same_padding_dw_swapped)), grad=True, stride=2,
                        padding=((0, 1), (0, 1)), rerun=False)  # the bug needs no re-run: it is far above the bound
    assert report.output_verdict in AGREE, str(report)
    assert report.gradients["weight"].verdict == "mismatch", str(report)
    assert report.gradients["x"].verdict in AGREE and report.gradients["bias"].verdict in AGREE
    assert report.gradients["weight"].pair("torch", "ported").verdict == "mismatch"
    _text(report, r"gradient with respect to weight:\n  conv: .*ported vs reference +.*mismatch.*"
                  r"verdict: mismatch \(output \w+; x \w+; weight mismatch; bias \w+\)$")


# ----------------------------------------------------------------------------------------------- who is judged


def test_numpy_and_numpy_callables_are_left_out_with_a_note():
    x, w, b = _arrays((1, 2, 5, 5), (2, 2, 3, 3), None, seed=10)

    def numpy_conv(x, w, b):
        return np.asarray(cb.conv(x, w, b, backend="numpy"))

    def torch_conv(x, w, b):  # given NumPy arrays it converts them; given tensors that require grad, it keeps them
        return cb.conv(torch.as_tensor(x), torch.as_tensor(w), backend="torch")

    report = cb.compare(x, w, b, backends=("numpy", numpy_conv, torch_conv), grad=True)
    assert [p.a for p in report.gradients["x"].pairs if p.b == "reference"] == ["torch_conv"]
    assert list(report.gradients) == ["x", "weight"]  # no bias given, none judged
    _text(report, r"note: numpy has no autodiff: its gradients are not judged.*"
                  r"note: numpy_conv returns ndarray arrays, which no autodiff differentiates")
    with pytest.raises(ArgumentError, match=r"grad=True needs a backend with autodiff.*\('numpy',\)"):
        cb.compare(x, w, backends=("numpy",), grad=True)


def test_grad_false_is_unchanged():
    x, w, b = _arrays((1, 2, 6, 6), (3, 2, 3, 3), 3, seed=11)
    plain = cb.compare(x, w, b, backends=("torch",), padding=1)
    assert plain.gradients == {} and "gradients" not in plain.to_dict() and "gradient with" not in str(plain)
    assert plain.verdict == plain.output_verdict and str(plain).endswith(f"verdict: {plain.verdict_label}")


def test_errors_say_what_to_do():
    x, w, b = _arrays((1, 2, 5, 5), (2, 2, 3, 3), 2)
    with pytest.raises(ArgumentTypeError, match="grad is True or False, got str"):
        cb.compare(x, w, b, backends=("torch",), grad="yes")
    with pytest.raises(ArgumentError, match="gradients of 'conv' and 'conv_transpose', not of 'unfold'"):
        cb.compare(x, (2, 2), op="unfold", backends=("torch",), grad=True)
    with pytest.raises(ArgumentError, match="direct bound; algorithm='fft'"):
        cb.compare(x, w, b, backends=("torch",), grad=True, algorithm="fft")
    with pytest.raises(DTypeError, match="complex64 inputs have conjugate"):
        cb.compare(x.astype("complex64"), w.astype("complex64"), backends=("torch",), grad=True)

    def leaves_torch(x, w, b):  # a torch result computed off the graph
        return torch.as_tensor(np.asarray(cb.conv(np.asarray(x.detach() if hasattr(x, "detach") else x),
                                                   np.asarray(w.detach() if hasattr(w, "detach") else w),
                                                   backend="numpy")))

    with pytest.raises(ArgumentError, match="leaves_torch could not be differentiated with torch's autodiff"):
        cb.compare(x, w, backends=(leaves_torch,), grad=True)
