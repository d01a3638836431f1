"""The verdict: rounding is 'equivalent' or 'identical'; semantic bugs are 'mismatch', by orders of magnitude."""

from __future__ import annotations

import json

import numpy as np
import pytest

import convbridge as cb
from convbridge.parity import judge_pair
from convbridge.precision import REFERENCE, Precision

from cases import CONV
from conftest import BACKENDS, FRAMEWORKS, record


def _planted(case, bug):
    """A wrong answer of the right shape, as a porting bug would produce it."""
    x, w, b = case.arrays(seed=1)
    kw = dict(case.kwargs)
    y = np.asarray(cb.conv(x, w, b, backend="numpy", **kw))
    if bug == "shift":
        return np.roll(y, 1, axis=-1), (x, w, b, kw)
    if bug == "flipped_kernel":
        flipped = np.flip(w, axis=tuple(range(2, w.ndim))).copy()
        return np.asarray(cb.conv(x, flipped, b, backend="numpy", **kw)), (x, w, b, kw)
    if bug == "padding_wrong_side":  # ((0, 2),) instead of ((2, 0),): same shape, values shifted
        pads = [(0, 2)] * (w.ndim - 2)
        kw_bug = dict(kw, padding=pads)
        kw_ok = dict(kw, padding=[(2, 0)] * (w.ndim - 2))
        return np.asarray(cb.conv(x, w, b, backend="numpy", **kw_bug)), (x, w, b, kw_ok)
    raise AssertionError(bug)


BUGGY = [CONV[n] for n in ("tutorial", "bias", "dilation", "groups", "conv1d", "conv3d", "big_k")]


@pytest.mark.parametrize("bug", ["shift", "flipped_kernel", "padding_wrong_side"])
@pytest.mark.parametrize("case", BUGGY, ids=lambda c: c.name)
def test_planted_bugs_are_mismatches(case, bug):
    if bug == "padding_wrong_side":
        case = case.without("padding", "stride")
    y, (x, w, b, kw) = _planted(case, bug)
    report = cb.verify(y, x, w, b, **kw)
    p = report.pairs[0]
    record("mismatch", r=p.max_ratio, test=f"{case.name}:{bug}")
    assert report.verdict == "mismatch", str(report)
    assert p.max_ratio > 1e4 * p.allowed_ratio  # four orders of magnitude above the rounding bound
    assert p.n_exceeding > 0


def test_framework_rounding_is_equivalent_or_identical():
    x, w, b = CONV["tutorial"].arrays(seed=0)
    report = cb.compare(x, w, b, backends=BACKENDS, padding="valid")
    assert report.verdict in ("identical", "equivalent")
    for p in report.pairs:
        assert p.max_ratio <= p.allowed_ratio


def test_identical_means_bitwise_and_nan_equal():
    a = np.array([1.0, np.nan, 3.0], np.float32)
    g = np.ones(3)
    f32 = Precision.of("float32")
    res, r = judge_pair(("a", "b"), a, a.copy(), g, 10, (f32, f32))
    assert res.verdict == "identical" and res.max_ratio == 0 and not res.array_equiv  # NaN != NaN for array_equiv
    b = a.copy()
    b[1] = 2.0
    res, r = judge_pair(("a", "b"), a, b, g, 10, (f32, f32))
    assert res.verdict == "mismatch" and np.isinf(r[1])


def test_zero_gauge_rule():
    f32 = Precision.of("float32")
    a = np.array([0.0, 1.0], np.float32)
    b = np.array([1e-30, 1.0], np.float32)
    res, r = judge_pair(("a", "b"), a, b, np.array([0.0, 1.0]), 5, (f32, f32))
    assert res.verdict == "mismatch" and res.worst_index == (0,)
    res, _ = judge_pair(("a", "b"), a, a.copy(), np.array([0.0, 1.0]), 5, (f32, f32))
    assert res.verdict == "identical"


def test_thresholds_follow_the_design():
    """Against the reference: K / (1 - K u) (+ the reference's own tiny bound); between results: 2K / (1 - K u)."""
    u, K = 2.0**-24, 75
    f32 = Precision.of("float32")
    g = np.ones(1)
    vs_ref, _ = judge_pair(("a", "ref"), np.zeros(1, np.float32), np.zeros(1), g, K, (f32, REFERENCE))
    assert vs_ref.allowed_ratio == pytest.approx(K / (1 - K * u), rel=1e-6)
    pair, _ = judge_pair(("a", "b"), np.zeros(1, np.float32), np.zeros(1, np.float32), g, K, (f32, f32))
    assert pair.allowed_ratio == pytest.approx(2 * K / (1 - K * u), rel=1e-12)
    # just inside the rigorous bound but above the probabilistic threshold: undecided, never equivalent
    inside = np.array([0.99 * 2 * K * u], np.float32)
    res, _ = judge_pair(("a", "b"), inside, np.zeros(1, np.float32), g, K, (f32, f32))
    assert res.verdict == "inconclusive" and res.threshold_ratio < 0.99 * 2 * K < res.allowed_ratio
    assert "between the probabilistic threshold and the rigorous bound" in res.reason
    # below the probabilistic threshold: equivalent, on that evidence
    below = np.array([0.99 * res.threshold_ratio * u], np.float32)
    res, _ = judge_pair(("a", "b"), below, np.zeros(1, np.float32), g, K, (f32, f32))
    assert res.verdict == "equivalent" and res.evidence.startswith("probabilistic bound")
    outside = np.array([1.01 * 2 * K / (1 - K * u) * u], np.float32)
    res, _ = judge_pair(("a", "b"), outside, np.zeros(1, np.float32), g, K, (f32, f32))
    assert res.verdict == "mismatch"


def test_reduced_precision_rule_and_inconclusive():
    """TF32 inputs widen the bound by 2 u_in; bf16 with large K is inconclusive, never equivalent."""
    x, w, _ = CONV["tutorial"].arrays(seed=0)
    y = np.asarray(cb.conv(x, w, backend="numpy"))
    tf32 = cb.verify(y, x, w, precision="tf32")
    full = cb.verify(y, x, w)
    assert tf32.pairs[0].allowed_ratio == pytest.approx(full.pairs[0].allowed_ratio + 2 * 2.0**-11 / 2.0**-24)
    assert full.verdict == tf32.verdict == "equivalent"  # 2 u_in = 2**-10 of G is still far below 5 %
    # bf16 inputs, K = 75: bound ~ 75 * 2**-8 ~ 0.3 G, cannot separate rounding from a bug
    coarse = cb.verify(y, x, w, precision=Precision(2.0**-8, 0.0, "bf16 accumulate"))
    assert coarse.verdict == "inconclusive"
    # a shift exceeds even that coarse bound somewhere: a proven difference is a mismatch, not inconclusive
    shifted = np.roll(y, 1, axis=-1)
    assert cb.verify(shifted, x, w, precision=Precision(2.0**-8, 0.0, "bf16")).verdict == "mismatch"


@pytest.mark.skipif("torch" not in FRAMEWORKS, reason="needs torch")
def test_bfloat16_torch_is_not_called_equivalent_blindly():
    """torch on a CPU accumulates bfloat16 in float32 and rounds once: judged by that model, tightly; a bfloat16
    accumulation (u = 2**-8 per sum) has no power at K = 27 and is never equivalent on its own."""
    import torch

    x, w, _ = CONV["bias"].arrays(seed=0)
    xt, wt = torch.from_numpy(x).to(torch.bfloat16), torch.from_numpy(w).to(torch.bfloat16)
    report = cb.compare(xt, wt, backends=("torch",), padding=1, rerun=False)
    assert report.dtype == "bfloat16" and report.unit_roundoff == 2.0**-8
    p = report.pairs[0]
    assert p.n_exceeding == 0 and p.allowed_ratio < 2  # one final rounding, not K of them
    # judged in bfloat16 (the result stays bfloat16 on the host): the float32 sum rounded once is the correctly
    # rounded reference on (nearly) every element
    assert report.verdict in ("identical", "equivalent") and p.n_different <= p.size // 100, str(report)
    y = torch.nn.functional.conv2d(xt, wt, padding=1)
    assert cb.verify(torch.roll(y, 1, -1), xt, wt, padding=1).verdict == "mismatch"
    coarse = Precision(2.0**-8, 0.0, "bf16 accumulation")
    off = y.clone()
    off.view(torch.int16)[0, 0, 0, 0] += 1  # one bfloat16 ulp away from the correctly rounded value
    p = cb.verify(off, xt, wt, padding=1, precision=coarse).pairs[0]
    assert p.verdict == "inconclusive" and "no power" in p.reason  # K u = 27 / 256 of G: too coarse to call
    # compare's automatic float64 re-run decides an undecided result, and says so: a callable that really adds in
    # bfloat16 (each partial sum rounded), judged by a bfloat16 accumulation's bound, has no power on its own

    def bf16_accumulation(x, w, b):
        if x.dtype != torch.bfloat16:
            return torch.nn.functional.conv2d(x, w, b, padding=1)
        cols = torch.nn.functional.unfold(x.float(), 3, padding=1)  # (N, C * 9, L)
        flat = w.float().reshape(w.shape[0], -1)
        acc = torch.zeros(x.shape[0], w.shape[0], cols.shape[-1], dtype=torch.bfloat16)
        for t in range(flat.shape[1]):  # products of bfloat16 values are exact in float32; each sum rounds
            acc = (acc.float() + cols[:, t, None, :] * flat[None, :, t, None]).to(torch.bfloat16)
        return acc.reshape(x.shape[0], w.shape[0], *x.shape[2:])

    report = cb.compare(xt, wt, backends=(("bf16 accumulation", bf16_accumulation),), padding=1)
    p = report.pairs[0]
    assert report.verdict == "equivalent" and report.rerun is not None and report.rerun.dtype == "float64"
    assert p.evidence.startswith("re-run in float64") and p.a == "bf16 accumulation"


def test_report_prints_a_table_and_serialises():
    x, w, b = CONV["bias"].arrays(seed=0)
    report = cb.compare(x, w, b, backends=BACKENDS, padding=1)
    text = str(report)
    for needle in ("max abs", "max rel", "array_equiv", "max r", "allowed r", "worst index", "verdict:",
                   "unit roundoff", "precision:", "vs reference"):
        assert needle in text
    d = json.loads(json.dumps(report.to_dict()))
    assert d["verdict"] == report.verdict and len(d["pairs"]) == len(report.pairs)
    assert report.ratio_map(BACKENDS[0]).shape == report.outputs["reference"].shape == CONV["bias"].expected_shape
    assert "<pre>" in report._repr_html_()


def test_verify_accepts_candidates_from_any_framework():
    x, w, b = CONV["bias"].arrays(seed=0)
    for name in FRAMEWORKS:
        y = cb.conv(x, w, b, padding=1, backend=name)
        assert cb.verify(y, x, w, b, padding=1, name=name).verdict in ("identical", "equivalent")
