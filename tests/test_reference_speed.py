"""The fast paths of the reference and the verdict compute the definitions: the BLAS contraction equals the
window-view einsum, the fused gauge equals conv(|x|, |w|) + |b|, the analytic term map equals the count on ones, and
the lean judge gives the verdict of the general one. No timings here (benchmarks are scripts)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import convbridge as cb
from convbridge import judging, parity
from convbridge.ops import build
from convbridge.precision import REFERENCE, Precision
from convbridge.reference import _core, _gemm, conv_and_gauge, conv_and_gauge_canonical, conv_canonical, to_canonical
from convbridge.reference import conv as reference_conv
from convbridge.reference.conv import _einsum, _pad

from cases import CONV

#: Geometries the GEMM path treats differently: strided windows, flat runs (every stride 1), the 1x1 shortcut,
#: depthwise (one output per group), dilation, padding modes, 1-d and 3-d.
NAMES = ["tutorial", "bias", "strided_same_odd", "dilation", "groups", "depthwise", "reflect", "circular", "nhwc",
         "conv1d", "conv1d_reflect", "conv3d", "conv3d_ndhwc", "big_k", "one_by_one", "groups_asym_dilated",
         "depthwise_1d", "unbatched_3d", "replicate_1d", "depthwise_3d"]


def _integer_arrays(case, seed=0):
    """Small integers: every summation order is exact, so any two correct contractions agree bit for bit."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-3, 4, case.x).astype(np.float64)
    w = rng.integers(-3, 4, case.w).astype(np.float64)
    b = rng.integers(-3, 4, case.out_channels).astype(np.float64) if case.bias else None
    return x, w, b


@pytest.mark.parametrize("name", NAMES)
def test_gemm_equals_the_einsum_definition(name):
    case = CONV[name]
    x, w, _ = _integer_arrays(case)
    spec = build("conv", x, w, None, case.kwargs)
    xc = to_canonical(x, spec)
    wc = w.transpose(spec.layout.rhs_perm)
    want = _einsum(_pad(xc, spec), wc, spec)
    np.testing.assert_array_equal(conv_canonical(xc, wc, None, spec), want)
    # random data: within a few ulps of the gauge (another summation order), in float64 and in float32
    rng = np.random.default_rng(1)
    for dtype, tol in ((np.float64, 1e-14), (np.float32, 1e-5)):
        xr, wr = rng.standard_normal(xc.shape).astype(dtype), rng.standard_normal(wc.shape).astype(dtype)
        got = conv_canonical(xr, wr, None, spec)
        assert got.dtype == dtype and got.flags.c_contiguous
        exact = _einsum(_pad(xr.astype(np.float64), spec), wr.astype(np.float64), spec)
        gauge = _einsum(_pad(np.abs(xr.astype(np.float64)), spec), np.abs(wr.astype(np.float64)), spec)
        assert np.all(np.abs(got - exact) <= tol * gauge + 1e-300)


SPLIT = [((2, 4, 9, 11), (4, 1, 5, 5), dict(groups=4, padding=2)),
         ((1, 1, 30, 31), (1, 1, 7, 9), dict(padding=(3, 1), dilation=(2, 1))),
         ((2, 3, 40), (3, 1, 16), dict(groups=3, padding=5)),
         ((2, 2, 50), (4, 1, 36), dict(groups=2, padding=((3, 40),), dilation=2)),
         ((1, 2, 5, 6, 7), (2, 1, 3, 3, 2), dict(groups=2, padding=1)),
         ((2, 6, 8, 8), (4, 3, 5, 5), dict(groups=2, padding=2, padding_mode="reflect"))]


@pytest.mark.parametrize("shapes", SPLIT, ids=lambda s: f"{s[0]}x{s[1]}")
def test_split_kernels_equal_the_definition(monkeypatch, shapes):
    """Depthwise and large kernels move the first axis' taps to the outputs (1-d: blocks of taps)."""
    from convbridge.reference._split import use_split
    from convbridge.spec import make_conv_spec

    xs, ws, kw = shapes
    spec = make_conv_spec(xs, ws, (ws[0],), **kw)
    assert use_split(spec)
    rng = np.random.default_rng(5)
    x, w = rng.integers(-3, 4, xs).astype(np.float64), rng.integers(-3, 4, ws).astype(np.float64)
    b = rng.integers(-3, 4, spec.out_channels).astype(np.float64)
    want = _einsum(_pad(x, spec), w, spec) + b.reshape(-1, *[1] * spec.nsp)
    y, g = conv_and_gauge_canonical(x, w, b, spec)
    np.testing.assert_array_equal(y, want)
    np.testing.assert_array_equal(g, _einsum(_pad(np.abs(x), spec), np.abs(w), spec) + np.abs(b).reshape(
        -1, *[1] * spec.nsp))
    monkeypatch.setattr(_gemm, "CACHE_ELEMENTS", 1)  # a block per row of positions
    monkeypatch.setattr(_core, "BLOCK_ELEMENTS", 50)
    np.testing.assert_array_equal(conv_canonical(x, w, b, spec), want)


@pytest.mark.parametrize("shapes", [((2, 4, 5, 6), (4, 3, 3, 2), dict(stride=2, padding=1, groups=2, dilation=(1, 2))),
                                    ((1, 3, 7), (3, 2, 4), dict(stride=3, output_padding=1)),
                                    ((2, 2, 3, 4, 5), (2, 3, 2, 2, 3), dict(stride=(1, 2, 1), padding=1)),
                                    ((2, 6, 5, 5), (6, 1, 3, 3), dict(groups=6, stride=2, padding=1))],
                         ids=lambda s: f"{s[0]}x{s[1]}")
def test_transposed_products_equal_the_per_tap_definition(monkeypatch, shapes):
    from convbridge.reference import conv_transpose_canonical
    from convbridge.reference._core import crop, index, scatter_taps
    from convbridge.spec import make_conv_transpose_spec

    xs, ws, kw = shapes
    spec = make_conv_transpose_spec(xs, ws, (ws[1] * kw.get("groups", 1),), **kw)
    rng = np.random.default_rng(6)
    x, w = rng.integers(-3, 4, xs).astype(np.float64), rng.integers(-3, 4, ws).astype(np.float64)
    g, n = spec.groups, xs[0]
    xg = x.reshape(n, g, spec.in_channels // g, *spec.in_spatial)
    wg = w.reshape(g, spec.in_channels // g, spec.out_channels // g, *spec.kernel_spatial)
    buf = np.zeros((n, g, spec.out_channels // g, *spec.full_spatial))
    scatter_taps(buf, spec.axes, spec.in_spatial,
                 lambda tap: np.einsum("ngc...,gco->ngo...", xg, wg[index(Ellipsis, *tap)]))
    want = crop(buf.reshape(n, spec.out_channels, *spec.full_spatial), spec.crops)
    np.testing.assert_array_equal(conv_transpose_canonical(x, w, None, spec), want)
    monkeypatch.setattr(_core, "BLOCK_ELEMENTS", 10)  # one image per product
    monkeypatch.setattr(_gemm, "CACHE_ELEMENTS", 1)
    got = conv_transpose_canonical(x.astype(np.float32), w.astype(np.float32), None, spec)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)


def test_float16_keeps_the_einsum():
    case = CONV["bias"]
    x, w, b = (a.astype(np.float16) for a in _integer_arrays(case))
    spec = build("conv", x, w, b, case.kwargs)
    got = conv_canonical(x, w, b, spec)
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, _einsum(_pad(x, spec), w, spec) + b.reshape(-1, 1, 1))


@pytest.mark.parametrize("name", ["tutorial", "conv3d", "depthwise", "strided_same_odd", "big_k", "one_by_one"])
def test_blocks_do_not_change_a_bit(monkeypatch, name):
    case = CONV[name]
    x, w, b = _integer_arrays(case)
    whole = cb.conv(x, w, b, backend="numpy", **case.kwargs)
    monkeypatch.setattr(_core, "BLOCK_ELEMENTS", 97)  # single output rows, or a few images per block
    monkeypatch.setattr(_gemm, "CACHE_ELEMENTS", 1)
    np.testing.assert_array_equal(cb.conv(x, w, b, backend="numpy", **case.kwargs), whole)


@pytest.mark.parametrize("name", ["bias", "reflect", "groups", "nhwc", "unbatched", "conv3d_circular", "one_by_one"])
def test_fused_gauge_is_the_gauge(name):
    case = CONV[name]
    x, w, b = (a.astype(np.float64) if a is not None else None for a in case.arrays(seed=2))
    spec = build("conv", x, w, b, case.kwargs)
    y, g = conv_and_gauge(x, w, b, spec)
    np.testing.assert_allclose(y, reference_conv(x, w, b, spec), rtol=0, atol=1e-13)
    want = reference_conv(np.abs(x), np.abs(w), None if b is None else np.abs(b), spec)
    np.testing.assert_allclose(g, want, rtol=1e-14, atol=0)
    assert y.shape == g.shape == spec.out_shape


def test_fused_gauge_in_canonical_order_matches_separate_calls():
    case = CONV["groups_asym_dilated"]
    x, w, b = _integer_arrays(case)
    spec = build("conv", x, w, b, case.kwargs)
    y, g = conv_and_gauge_canonical(x, w, b, spec)
    np.testing.assert_array_equal(y, conv_canonical(x, w, b, spec))
    np.testing.assert_array_equal(g, conv_canonical(np.abs(x), np.abs(w), np.abs(b), spec))


@pytest.mark.parametrize("name", ["bias", "dilation", "asymmetric_pairs", "reflect", "replicate", "circular",
                                  "nhwc", "unbatched", "unbatched_nhwc", "conv1d", "conv3d_pairs",
                                  "groups_asym_dilated", "depthwise_3d", "jax_tuple"])
def test_term_map_counts_what_reaches_each_element(name):
    case = CONV[name]
    x, w, b = case.arrays()
    spec = build("conv", x, w, b, case.kwargs)
    ones = np.ones(x.shape)
    if spec.layout.batched:  # one image, in the input's layout
        axis = spec.layout.lhs.index("N")
        ones = np.ones(tuple(1 if i == axis else n for i, n in enumerate(x.shape)))
    counted = reference_conv(ones, np.ones(w.shape), None if b is None else np.ones(b.shape), spec)
    k = judging.term_map(spec, (x, w, b))
    np.testing.assert_array_equal(np.broadcast_to(k, counted.shape), counted)


def _pairs(seed):
    """(a, b, gauges, precisions, b_is_reference) of every kind the judge sees: honest rounding, planted bugs,
    float16, reduced precision, zero and infinite gauges, NaN and inf results."""
    rng = np.random.default_rng(seed)
    shape = (3, 4, 5, 6)
    f32, f16 = Precision.of("float32"), Precision.of("float16")
    tf32 = Precision(2.0**-24, 2.0**-11, "tf32")
    for trial in range(60):
        gauge = np.abs(rng.standard_normal(shape)) * 10
        terms = (rng.integers(1, 400, (1, 1, 5, 6)).astype(float) if trial % 2
                 else np.asarray(float(rng.integers(1, 5000))))
        if trial % 7 == 0:
            gauge[0, 0, 0, 0] = 0.0
        if trial % 13 == 0:
            gauge[1, 1, 1, 1] = np.inf
        if trial % 17 == 0:
            terms = np.zeros((1, 1, 5, 6))
        ref = rng.standard_normal(shape) * gauge / 3
        noise = gauge * 2.0**-24 * rng.standard_normal(shape) * [1, 30, 1e3, 1e5][trial % 4]
        a = (ref + np.nan_to_num(noise)).astype(np.float16 if trial % 5 == 3 else np.float32)
        if trial % 11 == 5:
            a[0, 1, 2, 3] = [np.nan, np.inf, -np.inf][trial % 3]
        prec = f16 if a.dtype == np.float16 else (tf32 if trial % 9 == 4 else f32)
        yield a, ref, parity.Gauges(gauge, terms, reference=ref), (prec, REFERENCE), True
        other = (ref + np.nan_to_num(gauge * 2.0**-24 * rng.standard_normal(shape))).astype(a.dtype)
        yield a, other, parity.Gauges(gauge, terms, reference=ref), (prec, prec), False


def _same(r1, m1, r2, m2):
    d1, d2 = dataclasses.asdict(r1), dataclasses.asdict(r2)
    for key, v1 in d1.items():
        v2 = d2[key]
        if isinstance(v1, float) and isinstance(v2, float) and not (np.isnan(v1) and np.isnan(v2)):
            assert v1 == pytest.approx(v2, rel=1e-12, abs=0), key
        elif not (isinstance(v1, float) and np.isnan(v1)):
            assert v1 == v2, key
    np.testing.assert_allclose(np.broadcast_to(m1, m2.shape), m2, rtol=1e-13, atol=0)


def test_lean_judge_gives_the_verdict_of_the_definitions(monkeypatch):
    with np.errstate(invalid="ignore", over="ignore"):
        cases = list(_pairs(0))
    lean = [parity.judge_pair(("a", "b"), a, b, g, None, p, b_is_reference=ref) for a, b, g, p, ref in cases]
    monkeypatch.setattr(parity, "_fast_stats", lambda *args: None)
    monkeypatch.setattr(parity, "_lean_limits", lambda *args: None)
    verdicts = set()
    for (a, b, g, p, ref), (r1, m1) in zip(cases, lean):
        fresh = dataclasses.replace(g)  # no kept limits
        r2, m2 = parity.judge_pair(("a", "b"), a, b, fresh, None, p, b_is_reference=ref)
        _same(r1, m1, r2, m2)
        verdicts.add(r1.verdict)
    assert verdicts >= {"identical", "equivalent", "inconclusive", "mismatch"}


def test_pairs_of_a_report_share_their_limits():
    rng = np.random.default_rng(3)
    gauge = np.abs(rng.standard_normal((2, 3, 4))) + 0.1
    ref = rng.standard_normal((2, 3, 4)) * 0.1
    g = parity.Gauges(gauge, np.asarray(30.0), reference=ref)
    f32 = Precision.of("float32", "one label")
    same = Precision.of("float32", "another label")
    parity.judge_pair(("a", "r"), ref.astype(np.float32), ref, g, None, (f32, REFERENCE), b_is_reference=True)
    kept = g.memo["limits"][1]
    parity.judge_pair(("c", "r"), ref.astype(np.float32), ref, g, None, (same, REFERENCE), b_is_reference=True)
    assert g.memo["limits"][1] is kept  # the same numbers under another label
    assert dataclasses.replace(g).memo == {}


def test_exact_inputs_keep_every_partial_sum_exact():
    case = CONV["bias"]
    x, w, b = case.arrays()
    spec = build("conv", x, w, b, case.kwargs)
    xe, we, be = judging.exact_inputs(spec, (x, w, b))
    g = reference_conv(np.abs(xe), np.abs(we), np.abs(be), spec)
    assert g.max() <= 2.0**24
    assert np.all(xe == np.round(xe)) and np.all(we == np.round(we))


def test_compare_still_judges_a_real_layer():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 8, 12, 12)).astype(np.float32)
    w = rng.standard_normal((8, 8, 3, 3)).astype(np.float32)
    report = cb.compare(x, w, backends=("numpy",), padding=1)
    assert report.verdict in ("identical", "equivalent")
    assert report.term_map.shape == (1, 1, 12, 12) and report.terms == 72
    bad = lambda x, w, b: np.asarray(cb.conv(x, w, b, backend="numpy", padding=1)) * np.float32(1 + 1e-3)  # noqa
    assert cb.compare(x, w, backends=(("bad", bad),), padding=1).verdict == "mismatch"


def test_exact_data_gauges_in_float32_are_the_float64_ones():
    """On exact_inputs' integers every partial sum fits float32's 24 bits: float32 gives the float64 numbers."""
    case = CONV["bias"]
    x, w, b = case.arrays()
    spec = build("conv", x, w, b, case.kwargs)
    values = judging.exact_inputs(spec, (x, w, b))
    fast, slow = judging.gauges(spec, values, exact=True), judging.gauges(spec, values)
    assert fast.reference.dtype == fast.gauge.dtype == np.float64
    np.testing.assert_array_equal(fast.reference, slow.reference)
    np.testing.assert_array_equal(fast.gauge, slow.gauge)
    halves = tuple(None if v is None else v + 0.5 for v in values)  # not integers: float64 as before
    np.testing.assert_array_equal(judging.gauges(spec, halves, exact=True).reference,
                                  judging.gauges(spec, halves).reference)
