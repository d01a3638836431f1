"""The verdict has power at every K and never calls rounding a bug: the verdict issue's regression table,
a sensitivity sweep of planted bugs and honest results through callables, and exact mode on every op."""

from __future__ import annotations

import numpy as np
import pytest

import convbridge as cb
from convbridge.errors import ShapeError

from _honest import fft_conv, winograd_conv
from conftest import BACKENDS, record

torch = pytest.importorskip("torch")
F = torch.nn.functional
AGREE = ("identical", "equivalent")


def _t(*arrays):
    return tuple(None if a is None else torch.from_numpy(np.ascontiguousarray(a)) for a in arrays)


def _conv(**kw):
    """An honest callable: torch's own convolution, in whatever dtype it is given."""
    def honest(x, w, b):
        return getattr(F, f"conv{x.ndim - 2}d")(x, w, b, **kw)
    return honest


# ---- the regression table ------------------------------------------------------------------------------------

def _k262144():
    rng = np.random.default_rng(0)
    return _t(rng.standard_normal((1, 64, 4096 + 15)).astype(np.float32),
              rng.standard_normal((2, 64, 4096)).astype(np.float32))


BUGS_1D = {
    "zeros": lambda x, w, b: 0 * F.conv1d(x, w, b),
    "flipped_kernel": lambda x, w, b: F.conv1d(x, torch.flip(w, (-1,)), b),
    "shift": lambda x, w, b: torch.roll(F.conv1d(x, w, b), 1, -1),
    "twice": lambda x, w, b: 2 * F.conv1d(x, w, b),
    "negated": lambda x, w, b: -F.conv1d(x, w, b),
}


def test_k_262144_bugs_are_mismatches():
    x, w = _k262144()
    report = cb.compare(x, w, backends=tuple(BUGS_1D.items()))  # one reference for all five
    assert report.terms == 262144
    for bug, fn in BUGS_1D.items():
        p = report.pair(bug, "reference")
        record("mismatch", r=p.max_ratio, test=f"k262144:{bug}")
        assert p.verdict == "mismatch", (bug, str(report))
        assert cb.verify(fn(x, w, None), x, w).verdict != "equivalent", bug  # verify cannot re-run: never equivalent


def test_k_262144_honest_is_equivalent_on_random_and_constant_data():
    x, w = _k262144()
    assert cb.compare(x, w, backends=("torch", ("honest", _conv()))).verdict in AGREE
    xc, wc = torch.full((1, 64, 4096 + 3), 0.1), torch.full((2, 64, 4096), 0.3)  # correlated errors: 1e4 sqrt(K)
    p = cb.verify(F.conv1d(xc, wc), xc, wc).pairs[0]
    assert p.verdict == "inconclusive" and "re-run" in p.reason  # between the thresholds, never equivalent alone
    report = cb.compare(xc, wc, backends=(("honest", _conv()),))
    assert report.verdict in AGREE and report.pairs[0].evidence.startswith("re-run in float64"), str(report)


def test_3d_512_channels_7x7x7():
    rng = np.random.default_rng(1)
    x, w = _t(rng.standard_normal((1, 512, 7, 7, 7)).astype(np.float32),
              rng.standard_normal((2, 512, 7, 7, 7)).astype(np.float32))
    bugs = {"zeros": lambda x, w, b: 0 * F.conv3d(x, w), "flipped": lambda x, w, b: F.conv3d(x, torch.flip(w, (2, 3, 4)))}
    report = cb.compare(x, w, backends=(("honest", _conv()), *bugs.items()))
    assert report.terms == 175616
    assert report.pair("honest", "reference").verdict in AGREE
    assert report.pair("zeros", "reference").verdict == report.pair("flipped", "reference").verdict == "mismatch"


def test_vgg_fc6_as_a_conv():
    rng = np.random.default_rng(2)
    x = np.maximum(rng.standard_normal((1, 512, 7, 7)), 0).astype(np.float32)
    w = (rng.standard_normal((4, 512, 7, 7)) * 0.01).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    x, w, b = _t(x, w, b)
    bugs = {"scaled": lambda x, w, b: F.conv2d(x, w * 1.03, b), "bias_dropped": lambda x, w, b: F.conv2d(x, w),
            "bias_twice": lambda x, w, b: F.conv2d(x, w, b) + b[:, None, None]}
    report = cb.compare(x, w, b, backends=(("honest", _conv()), *bugs.items()))
    assert report.terms == 25089 and report.pair("honest", "reference").verdict in AGREE
    for name in bugs:
        assert report.pair(name, "reference").verdict == "mismatch", name


def test_default_init_conv_kernel_off_by_one_in_a_thousand():
    torch.manual_seed(0)
    layer = torch.nn.Conv2d(512, 16, 3)  # nn.Conv2d(512, 512, 3)'s init and K; 16 output channels keep it quick
    x = torch.relu(torch.randn(1, 512, 6, 6))
    w, b = layer.weight.detach(), layer.bias.detach()
    report = cb.compare(x, w, b, backends=(("honest", _conv()),
                                           ("scaled", lambda x, w, b: F.conv2d(x, w * (1 + 1e-3), b))))
    assert report.terms == 4609
    assert report.pair("honest", "reference").verdict in AGREE
    assert report.pair("scaled", "reference").verdict == "mismatch"


def test_transposed_term_counts_are_per_element():
    rng = np.random.default_rng(3)
    x, w, b = _t(rng.standard_normal((1, 512, 4, 4)).astype(np.float32),
                 rng.standard_normal((512, 8, 4, 4)).astype(np.float32), rng.standard_normal(8).astype(np.float32))
    report = cb.compare(x, w, b, op="conv_transpose", backends=("torch",), stride=2, padding=1)
    assert report.terms == 512 * 2 * 2 + 1  # not 512 * 16 + 1: stride 2 lets 2 x 2 taps reach each output
    assert report.verdict in AGREE


def test_subnormal_products_are_rounding():
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((2, 2, 6, 6)) * 1e-23).astype(np.float32)
    w = rng.standard_normal((2, 2, 3, 3)).astype(np.float32)
    assert cb.compare(x, w, backends=BACKENDS).verdict in AGREE


def test_flush_to_zero_is_rounding_and_identical_never_sits_beside_an_excess():
    x, w = np.array([[[1e-20, 2e-20, 3e-19]]], np.float32), np.array([[[1e-20]]], np.float32)
    report = cb.compare(x, w, backends=BACKENDS)
    assert report.verdict in AGREE, str(report)
    for p in report.pairs + (report.rerun.pairs if report.rerun else ()):
        assert p.verdict != "identical" or p.n_exceeding == 0, p


def test_winograd_and_fft_results_are_judged_by_their_own_bounds():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 1, 34, 34)).astype(np.float32)
    w = rng.standard_normal((1, 1, 3, 3)).astype(np.float32)
    y = winograd_conv(x, w, m=4)
    assert cb.verify(y, x, w).verdict == "mismatch"  # the direct bound does not cover Winograd (r 65-230 vs 9)
    p = cb.verify(y, x, w, algorithm="winograd").pairs[0]
    assert p.verdict == "equivalent" and "Winograd" in p.evidence
    assert cb.verify(np.roll(y, 1, -1), x, w, algorithm="winograd").verdict == "mismatch"
    x1 = rng.standard_normal((1, 1, 65536)).astype(np.float32)
    w1 = rng.standard_normal((1, 1, 2)).astype(np.float32)
    y1 = fft_conv(x1, w1)
    assert cb.verify(y1, x1, w1).verdict == "mismatch"
    p = cb.verify(y1, x1, w1, algorithm="fft").pairs[0]
    assert p.verdict == "equivalent" and p.evidence.startswith("FFT normwise")
    assert cb.verify(fft_conv(x1, np.flip(w1, -1).copy()), x1, w1, algorithm="fft").verdict == "mismatch"
    with pytest.raises(cb.ConvBridgeError, match="Winograd bound covers F"):
        cb.verify(y1, x1, w1, algorithm="winograd")  # kernel 2


def test_float16_3d_overall_verdict_follows_the_reference_pairs():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 4, 6, 6, 6)).astype(np.float16)
    w = rng.standard_normal((3, 4, 3, 3, 3)).astype(np.float16)
    report = cb.compare(x, w, backends=BACKENDS, padding=1, rerun=False)
    against = [p.verdict for p in report.pairs if p.b == "reference"]
    assert report.verdict == max(against, key=cb.parity.VERDICTS.index)  # pairs between results do not downgrade


def test_wrong_rank_or_dtype_from_a_backend_is_a_clear_error():
    x, w = _t(np.ones((1, 2, 5, 5), np.float32), np.ones((3, 2, 3, 3), np.float32))
    with pytest.raises(ShapeError, match=r"returned shape \(1, 1, 3, 3, 3\) but this conv gives \(1, 3, 3, 3\)"):
        cb.compare(x, w, backends=(("extra_axis", lambda x, w, b: F.conv2d(x, w)[None]),))
    with pytest.raises(cb.ConvBridgeError, match="returned float64 for float32 inputs"):
        cb.compare(x, w, backends=(("upcast", lambda x, w, b: F.conv2d(x, w).double()),))
    with pytest.raises(ShapeError, match="candidate has shape"):
        cb.verify(np.ones((1, 1, 3, 3, 3), np.float32), x, w)


def test_bfloat16_keeps_its_dtype_across_backends():
    x, w = torch.ones(1, 2, 5, 5, dtype=torch.bfloat16), torch.ones(3, 2, 3, 3, dtype=torch.bfloat16)
    assert str(cb.conv(x, w, backend="jax").dtype) == "bfloat16"
    jnp = pytest.importorskip("jax.numpy")
    assert str(cb.conv(jnp.asarray(x.float().numpy(), jnp.bfloat16), jnp.ones((3, 2, 3, 3), jnp.bfloat16),
                       backend="numpy").dtype) == "bfloat16"


def test_callables_are_named_and_checked():
    x, w = _t(np.ones((1, 2, 5, 5), np.float32), np.ones((3, 2, 3, 3), np.float32))

    def my_port(x, w, b):
        return F.conv2d(x, w, b)

    report = cb.compare(x, w, backends=("torch", my_port))
    assert {p.a for p in report.pairs} == {"torch", "my_port"}
    with pytest.raises(cb.ConvBridgeError, match="repeats a name"):
        cb.compare(x, w, backends=(my_port, my_port))
    with pytest.raises(cb.ConvBridgeError, match="returned NoneType None, not an array"):
        cb.compare(x, w, backends=(lambda x, w, b: None,))


# ---- sensitivity: planted bugs and honest results through callables, K from 10 to 250,000 -------------------

def _case(k_total, seed=0, data="random", groups=1):
    """A 1-d conv with K = C * k products per element, C up to 64 channels and a kernel of k taps."""
    c = 64 if k_total >= 640 else 2
    k = max(1, k_total // c)
    rng = np.random.default_rng(seed)
    n = k + 7
    if data == "random":
        x = rng.standard_normal((1, c, n))
    elif data == "nonneg":
        x = rng.random((1, c, n))
    elif data == "constant":
        x = np.full((1, c, n), 0.1)
    else:  # wide dynamic range: magnitudes over 30 binades
        x = rng.standard_normal((1, c, n)) * 2.0 ** rng.integers(-15, 15, (1, c, n))
    w = rng.standard_normal((4, c // groups, k)) * (0.3 if data == "constant" else 1)
    if data == "constant":
        w = np.full_like(w, 0.3)
    b = rng.standard_normal(4)
    return _t(x.astype(np.float32), w.astype(np.float32), b.astype(np.float32))


PLANTED = {
    "shift": lambda x, w, b: torch.roll(F.conv1d(x, w, b, padding=1), 1, -1),
    "flip": lambda x, w, b: F.conv1d(x, torch.flip(w, (-1,)), b, padding=1),
    "padding_sides_swapped": lambda x, w, b: F.conv1d(F.pad(x, (2, 0)), w, b),
    "bias_dropped": lambda x, w, b: F.conv1d(x, w, None, padding=1),
    "bias_doubled": lambda x, w, b: F.conv1d(x, w, 2 * b, padding=1),
    "kernel_1e-3": lambda x, w, b: F.conv1d(x, w * (1 + 1e-3), b, padding=1),
    "group_mapping": lambda x, w, b: F.conv1d(x, torch.roll(w, 1, 0), b, padding=1, groups=1),
}


def _transposed_without_flip(x, w, b):
    return F.conv1d(x, torch.flip(w.transpose(0, 1), (-1,)), b, padding=w.shape[-1] - 1 - 1)


@pytest.mark.parametrize("k_total", [10, 1000, pytest.param(25000, marks=pytest.mark.slow),
                                     pytest.param(250000, marks=pytest.mark.slow)])
def test_sensitivity_planted_bugs_are_mismatches(k_total):
    x, w, b = _case(k_total, seed=k_total)
    if w.shape[-1] < 3:
        pytest.skip("needs a kernel of 3 taps or more")
    report = cb.compare(x, w, b, backends=tuple(PLANTED.items()), padding=1)
    for name in PLANTED:
        p = report.pair(name, "reference")
        record("mismatch", r=p.max_ratio, test=f"sensitivity:{name}:K={k_total}")
        assert p.verdict == "mismatch", (name, str(report))
    xt, wt = x, torch.flip(w, (-1,)).transpose(0, 1).contiguous()  # a transposed conv, ported without the flip
    bug = ("transposed_no_flip", lambda x, w, b: F.conv_transpose1d(x, torch.flip(w, (-1,)), b, padding=1))
    report = cb.compare(xt, wt, b, op="conv_transpose", backends=(bug,), padding=1)
    assert report.verdict == "mismatch", str(report)


@pytest.mark.parametrize("data", ["random", "nonneg", "constant", "wide"])
@pytest.mark.parametrize("k_total", [10, 1000, pytest.param(25000, marks=pytest.mark.slow),
                                     pytest.param(250000, marks=pytest.mark.slow)])
def test_sensitivity_honest_results_agree(k_total, data):
    x, w, b = _case(k_total, seed=k_total, data=data)
    report = cb.compare(x, w, b, backends=("torch", ("honest", _conv(padding=1))), padding=1)
    for p in report.pairs:
        if p.verdict in AGREE and p.b == "reference":
            record("equivalent", r=p.max_ratio, allowed=p.allowed_ratio, pair=f"{p.a}/reference",
                   test=f"sensitivity:{data}:K={k_total}", op="conv")
    assert report.verdict in AGREE, str(report)


# ---- exact mode -----------------------------------------------------------------------------------------------

EXACT = [
    ("conv", (2, 6, 9, 9), (4, 3, 3, 3), dict(groups=2, padding=1, stride=2)),
    ("conv", (1, 64, 300), (2, 64, 300), {}),  # K = 19,200: the kernel is thinned
    ("conv_transpose", (2, 4, 5, 5), (4, 3, 3, 3), dict(stride=2, padding=1)),
    ("conv_transpose", (1, 4, 6), (4, 1, 4), dict(groups=2, stride=3)),
]


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("op, xs, ws, kw", EXACT, ids=lambda v: v if isinstance(v, str) else None)
def test_exact_mode_every_backend(op, xs, ws, kw, dtype):
    rng = np.random.default_rng(7)
    x, w = rng.standard_normal(xs).astype(dtype), rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0] if op == "conv" else ws[1] * kw.get("groups", 1)).astype(dtype)
    report = cb.compare(x, w, b, op=op, backends=BACKENDS, exact=True, **kw)
    assert report.exact and report.verdict == "identical", str(report)
    assert all(p.evidence.startswith("exact") for p in report.pairs)
    out = report.outputs["reference"]
    assert np.array_equal(out, np.round(out)) and np.abs(out).max() > 0  # integer data, not all zero
    def shifted(x, w, b):  # one position along the last axis (off by one where there is only one)
        y = np.asarray((cb.conv if op == "conv" else cb.conv_transpose)(x, w, b, backend="numpy", **kw))
        return np.roll(y, 1, -1) if y.shape[-1] > 1 else y + 1

    buggy = {"shift": shifted}
    report = cb.compare(x, w, b, op=op, backends=tuple(buggy.items()), exact=True, **kw)
    assert report.verdict == "mismatch" and "a bug, not rounding" in report.pairs[0].evidence


@pytest.mark.parametrize("op, args", [("unfold", ((2, 3, 6, 6), (3, 3), {})),
                                      ("fold", ((2, 12, 9), (2, 2), dict(output_size=(4, 4))))])
def test_exact_mode_unfold_and_fold(op, args):
    shape, k, kw = args
    x = np.random.default_rng(8).standard_normal(shape).astype(np.float32)
    report = cb.compare(x, k, op=op, backends=BACKENDS, exact=True, **kw)
    assert report.verdict == "identical" and report.exact


def test_exact_mode_flags_mostly_zero_outputs_as_weak():
    x, w = np.ones((1, 1, 4), np.float32), np.ones((1, 1, 1), np.float32)
    report = cb.compare(x, w, backends=("numpy",), exact=True, padding=20)  # 40 of 44 outputs read only padding
    assert report.verdict == "identical" and "weak evidence: 91% of the outputs are zero" in report.pairs[0].evidence
    dense = cb.compare(x, w, backends=("numpy",), exact=True)
    assert dense.verdict == "identical" and "weak" not in dense.pairs[0].evidence


# ---- found by trying to break it ------------------------------------------------------------------------------

def test_fft_bound_has_a_power_check():
    rng = np.random.default_rng(9)
    x, w = rng.standard_normal((2, 8, 32, 32)).astype(np.float16), rng.standard_normal((4, 8, 5, 5)).astype(np.float16)
    y = np.asarray(cb.conv(x, w, backend="numpy"))
    p = cb.verify(np.zeros_like(y), x, w, algorithm="fft").pairs[0]
    assert p.verdict == "inconclusive" and "no power" in p.reason
    x32, w32 = rng.standard_normal((1, 16, 40, 40)).astype(np.float32), rng.standard_normal((2, 16, 36, 36)).astype(
        np.float32)  # K = 20,736
    y32 = np.asarray(cb.conv(x32, w32, backend="numpy"))
    p = cb.verify(y32 * np.float32(1.001), x32, w32, algorithm="fft").pairs[0]
    assert p.verdict != "equivalent" or p.weak  # never a plain equivalent for a kernel off by 1e-3


def test_a_callable_that_cannot_rerun_in_float64_is_decided_on_exact_data():
    torch.manual_seed(0)
    x, w, b = torch.randn(1, 64, 4100), torch.randn(2, 64, 4096), torch.randn(2)
    bug = ("bug", lambda x, w, b: F.conv1d(x.float(), w.float() * 1.001, b.float() * 0))  # always float32 out
    report = cb.compare(x, w, b, backends=("torch", bug))
    assert report.pair("bug", "reference").verdict == "mismatch", str(report)
    assert any("could not re-run in float64" in n for n in report.notes)


def test_a_bug_only_in_the_16_bit_path_is_caught():
    torch.manual_seed(1)
    x, w, b = (torch.randn(*s).to(torch.bfloat16) for s in ((2, 3, 16, 16), (4, 3, 3, 3), (4,)))
    half = (torch.float16, torch.bfloat16)
    bug = ("bias_dropped_in_16_bit", lambda x, w, b: F.conv2d(x, w, None if x.dtype in half else b))
    report = cb.compare(x, w, b, backends=("torch", bug))
    assert report.pair("bias_dropped_in_16_bit", "reference").verdict == "mismatch", str(report)
    assert report.pair("torch", "reference").verdict in AGREE


def test_an_honest_callable_that_accumulates_in_float32_is_not_a_bug():
    torch.manual_seed(2)
    x, w, b = (torch.randn(*s).to(torch.bfloat16) for s in ((2, 3, 16, 16), (4, 3, 3, 3), (4,)))
    honest = ("float32_inside", lambda x, w, b: F.conv2d(x.float(), w.float(), b.float()).to(x.dtype))
    report = cb.compare(x, w, b, backends=("torch", honest), rerun=True)
    assert report.verdict in AGREE, str(report)


def test_inf_inputs_are_not_decided_on_integer_data():
    torch.manual_seed(3)
    x, w = torch.randn(1, 2, 6, 6), torch.randn(3, 2, 3, 3)
    x[0, 0, 0, 0] = float("inf")
    bad = ("nan_to_num", lambda x, w, b: torch.nan_to_num(F.conv2d(x, w)))
    report = cb.compare(x, w, backends=(bad,))
    assert report.verdict not in AGREE, str(report)


def test_overflow_to_the_correctly_rounded_inf_is_not_a_mismatch():
    x, w = np.array([[[3e38, 3e38]]], np.float32), np.ones((1, 1, 2), np.float32)
    assert cb.verify(np.array([[[np.inf]]], np.float32), x, w).verdict == "identical"
    assert cb.verify(np.array([[[np.float32(3.4e38)]]], np.float32), x, w).verdict == "mismatch"
    xh = np.array([[[60000.0, 60000.0]]], np.float16)
    assert cb.compare(xh, np.ones((1, 1, 2), np.float16), backends=BACKENDS).verdict in AGREE
