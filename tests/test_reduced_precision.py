"""The verdict for every precision a user meets: reduced-precision inputs (TF32, bf16 passes) labelled as such,
complex results judged by their parts, and overflow that rounding explains (not a bug).

Reduced precision is simulated on the CPU: the inputs are rounded to TF32 / bfloat16 before a float32 computation,
which is what a GPU's TF32 or a TPU's bf16 pass does to them.
"""

from __future__ import annotations

import warnings

import ml_dtypes
import numpy as np
import pytest

import convbridge as cb
from convbridge.errors import ArgumentError, ArgumentTypeError, DTypeError
from convbridge.precision import Precision, model

AGREE = ("identical", "equivalent")


def _round_mantissa(a: np.ndarray, bits: int) -> np.ndarray:
    """float32 values rounded to nearest (ties to even) with ``bits`` explicit mantissa bits (TF32: 10)."""
    u = np.asarray(a, np.float32).view(np.uint32).astype(np.uint64)
    drop = 23 - bits
    half, keep = 1 << (drop - 1), ~np.uint64((1 << drop) - 1)
    odd = (u >> np.uint64(drop)) & np.uint64(1)
    return ((u + np.uint64(half - 1) + odd) & keep).astype(np.uint32).view(np.float32)


def tf32(a: np.ndarray) -> np.ndarray:
    return _round_mantissa(a, 10)


def bf16(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, np.float32).astype(ml_dtypes.bfloat16).astype(np.float32)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    return (rng.standard_normal((2, 8, 12, 12)).astype(np.float32), rng.standard_normal((6, 8, 3, 3)).astype(
        np.float32), rng.standard_normal(6).astype(np.float32))


def test_tf32_rounding_matches_the_format() -> None:
    x = np.array([1 + 2.0**-11, 1 + 3 * 2.0**-11, 1 + 2.0**-10 + 2.0**-12], np.float32)
    assert tf32(x).tolist() == [1.0, 1 + 2.0**-9, 1 + 2.0**-10]  # ties to even, then nearest


@pytest.mark.parametrize("fmt, rounder, under", [("tf32", tf32, "TF32"), ("bf16", bf16, "bf16")])
def test_reduced_precision_inputs_are_equivalent_under_their_format(data, fmt, rounder, under) -> None:
    x, w, b = data
    y = cb.conv(rounder(x), rounder(w), b, padding=1, backend="numpy")  # float32 accumulation of rounded inputs
    report = cb.verify(y, x, w, b, padding=1, precision=fmt)
    assert report.verdict == "equivalent", str(report)
    assert report.verdict_label == f"equivalent under {under}"
    assert report.pairs[0].label == f"equivalent under {under}"
    assert str(report).rstrip().endswith(f"verdict: equivalent under {under}")
    assert report.to_dict()["verdict_label"] == f"equivalent under {under}"
    assert report.to_dict()["pairs"][0]["under"] == under
    # the same result held to float32's own bound is not silently equivalent
    strict = cb.verify(y, x, w, b, padding=1)
    assert strict.verdict in ("mismatch", "inconclusive"), str(strict)


def test_the_tf32_bound_still_catches_a_bug(data) -> None:
    x, w, b = data
    y = cb.conv(tf32(x), tf32(w), None, padding=1, backend="numpy")  # the bias dropped
    assert cb.verify(y, x, w, b, padding=1, precision="tf32").verdict == "mismatch"


def test_a_full_precision_result_under_a_tf32_bound_is_labelled_by_what_was_allowed(data) -> None:
    x, w, b = data
    y = cb.conv(x, w, b, padding=1, backend="numpy")
    report = cb.verify(y, x, w, b, padding=1, precision="tf32")
    assert report.verdict in AGREE
    assert cb.verify(y, x, w, b, padding=1).verdict_label in AGREE  # no qualifier without reduced inputs


def test_a_gpu_policy_is_recorded_and_named_on_the_result(data, monkeypatch) -> None:
    """A simulated GPU: torch's float32 conv rounds its inputs to TF32 unless precision='highest', and the backend
    reports what its platform's policy uses. compare labels the result by the precision recorded for it."""
    torch = pytest.importorskip("torch")
    from convbridge.backends import torch_backend

    real_conv = torch.nn.functional.conv2d

    def gpu_conv(x, w, *args, **kwargs):
        if torch.backends.cudnn.allow_tf32:
            x, w = (torch.from_numpy(tf32(a.numpy())) for a in (x, w))
        return real_conv(x, w, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "conv2d", gpu_conv)
    monkeypatch.setattr(torch_backend, "_on_gpu", lambda x: True)  # the policy's switches apply as on a GPU
    monkeypatch.setattr(torch_backend, "precision",
                        lambda spec, plan, x: model(str(spec.dtype), plan.precision, "gpu", where="cuda:0"))
    tx, tw, tb = (torch.from_numpy(a) for a in data)
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    default = cb.compare(tx, tw, tb, padding=1, backends=("torch",), precision="default", rerun=False)
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == before  # restored
    assert default.verdict_label == "equivalent under TF32", str(default)
    assert "TF32 inputs" in default.precisions["torch"] and "cuda:0" in default.precisions["torch"]
    highest = cb.compare(tx, tw, tb, padding=1, backends=("torch",), precision="highest", rerun=False)
    assert highest.verdict_label in AGREE and "under" not in highest.verdict_label, str(highest)
    assert "IEEE" in highest.precisions["torch"]


def test_complex64_on_a_gpu_policy_rounds_its_parts_to_tf32() -> None:
    p = model("complex64", "default", "gpu")
    assert p.u_in == 2.0**-11 and p.under == "TF32" and "complex64" in p.label
    assert model("complex128", "default", "gpu").u_in == 0


def test_a_custom_input_format_is_named_by_its_unit_roundoff() -> None:
    assert Precision(2.0**-24, 2.0**-13).under == "inputs rounded to u=0.000122"


# ----------------------------------------------------------------------------------------------- complex


def _complex(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape) + 1j * rng.standard_normal(shape)


@pytest.fixture(scope="module")
def cdata() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    return _complex(rng, 2, 3, 9, 9), _complex(rng, 4, 3, 3, 3), _complex(rng, 4)


def _parts_conv(x, w, b, dtype, **kw):
    """The complex conv from real convs in ``dtype`` (float32 for Gauss's trick as torch computes it)."""
    def conv(a, k, bias=None):
        return cb.conv(a.astype(dtype), k.astype(dtype), None if bias is None else bias.astype(dtype),
                       backend="numpy", **kw)
    xr, xi, wr, wi = x.real, x.imag, w.real, w.imag
    a, c = conv(xr, wr, b.real), conv(xr.astype(dtype) + xi.astype(dtype), wr.astype(dtype) + wi.astype(dtype),
                                       (b.real.astype(dtype) + b.imag.astype(dtype)))
    bb = conv(xi, wi)
    return (a - bb) + 1j * (c - a - bb)


def test_gauss_trick_in_float32_is_equivalent_for_complex64(cdata) -> None:
    x, w, b = cdata
    y = _parts_conv(x, w, b, np.float32, stride=2, padding=1).astype(np.complex64)
    report = cb.verify(y, x.astype(np.complex64), w.astype(np.complex64), b.astype(np.complex64), stride=2,
                       padding=1)
    assert report.verdict == "equivalent", str(report)
    assert len(report.pairs[0].worst_index) == 5  # the output's 4 indices, then 0 real / 1 imaginary
    assert "real and imaginary parts" in report.precisions["reference"]
    assert report.ratio_map("candidate").shape == y.shape


@pytest.mark.parametrize("bug", ["conjugated kernel", "imaginary part dropped", "parts swapped"])
def test_complex_bugs_are_mismatches(cdata, bug) -> None:
    x, w, b = (a.astype(np.complex64) for a in cdata)
    right = cb.conv(x.astype(np.complex128), w.astype(np.complex128), b.astype(np.complex128), backend="numpy")
    wrong = {"conjugated kernel": lambda: cb.conv(x.astype(np.complex128), np.conj(w).astype(np.complex128),
                                                  b.astype(np.complex128), backend="numpy"),
             "imaginary part dropped": lambda: right.real + 0j,
             "parts swapped": lambda: right.imag + 1j * right.real}[bug]()
    assert cb.verify(wrong.astype(np.complex64), x, w, b).verdict == "mismatch"


def test_complex_compare_reruns_in_complex128_and_on_complex_integers(cdata) -> None:
    x, w, b = (a.astype(np.complex64) for a in cdata)
    report = cb.compare(x, w, b, backends=("numpy",), rerun=True)
    assert report.verdict in AGREE, str(report)
    assert report.rerun is not None and report.rerun.dtype == "complex128"
    assert report.exact_rerun is not None and report.exact_rerun.verdict == "identical", str(report.exact_rerun)
    exact = cb.compare(x, w, b, backends=("numpy",), exact=True)
    assert exact.verdict == "identical" and np.iscomplexobj(exact.outputs["reference"])
    assert np.any(exact.outputs["reference"].imag != 0)


def test_a_complex_candidate_for_real_inputs_is_refused(data) -> None:
    x, w, _ = data
    y = cb.conv(x, w, backend="numpy").astype(np.complex64)
    with pytest.raises(DTypeError, match="complex result of real inputs .* is not this computation"):
        cb.verify(y, x, w)


def test_complex_results_are_not_judged_by_the_winograd_bound(cdata) -> None:
    x, w, b = (a.astype(np.complex64) for a in cdata)
    y = cb.conv(x, w, b, backend="numpy")
    with pytest.raises(ArgumentError, match="complex results are judged by the direct or the FFT bound"):
        cb.verify(y, x, w, b, algorithm="winograd")


@pytest.mark.parametrize("backend", ["numpy", "torch", "jax"])
def test_complex_fft_results_are_judged_by_the_fft_bound(cdata, backend) -> None:
    x, w, b = (a.astype(np.complex64) for a in cdata)
    report = cb.compare(x, w, b, padding="same", backends=(backend,), algorithm="fft")
    assert report.verdict in AGREE and report.pairs[0].family == "fft", str(report)
    flipped = cb.conv(x, np.conj(w), b, padding="same", backend="numpy", algorithm="fft")
    assert cb.verify(flipped, x, w, b, padding="same", algorithm="fft").verdict == "mismatch"


def test_complex_unfold_and_fold_are_judged(cdata) -> None:
    x = cdata[0].astype(np.complex64)
    cols = cb.unfold(x, (3, 3), backend="numpy")
    assert cb.verify(cols, x, (3, 3), op="unfold").verdict == "identical"
    assert cb.verify(cols.real + 0j, x, (3, 3), op="unfold").verdict == "mismatch"
    folded = cb.fold(cols, (9, 9), (3, 3), backend="numpy")
    assert cb.verify(folded, cols, (3, 3), op="fold", output_size=(9, 9)).verdict in AGREE


# ----------------------------------------------------------------------------------------------- overflow


def _quiet_verify(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return cb.verify(*args, **kwargs)


def test_a_result_that_rounds_to_inf_within_its_bound_is_inconclusive_not_a_mismatch() -> None:
    # the sum is just below float16's overflow threshold 65520; a float16 result within its bound may round to inf
    x = np.array([[[32759.0, 32759.0]]], np.float16)
    w = np.ones((1, 1, 2), np.float16)
    assert float(cb.conv(x.astype(np.float64), w.astype(np.float64), backend="numpy")[0, 0, 0]) < 65520
    for accumulation in (None, Precision(2.0**-24, u_out=2.0**-11, label="float32, rounded to float16")):
        report = _quiet_verify(np.array([[[np.inf]]], np.float16), x, w, precision=accumulation)
        assert report.verdict == "inconclusive" and report.pairs[0].overflowed == 1, str(report)
        assert "passes the format's range, so rounding can explain them" in report.pairs[0].reason
        for wrong in (-np.inf, np.nan):  # no partial sum can overflow downward
            assert _quiet_verify(np.array([[[wrong]]], np.float16), x, w, precision=accumulation).verdict == \
                "mismatch"
    small = np.array([[[1000.0, 1000.0]]], np.float16)
    assert _quiet_verify(np.array([[[np.inf]]], np.float16), small, w).verdict == "mismatch"  # far from the range


def test_a_partial_sum_past_the_accumulation_range_explains_inf_and_nan() -> None:
    # bfloat16 accumulates in float32, whose range bfloat16 shares: 3e38 + 3e38 - 3e38 may overflow midway
    x = np.array([[[3e38, 3e38, -3e38, -3e38, 1.0]]]).astype(ml_dtypes.bfloat16)
    w = np.ones((1, 1, 5)).astype(ml_dtypes.bfloat16)
    for honest in (np.inf, -np.inf, np.nan):
        y = np.array([[[honest]]]).astype(ml_dtypes.bfloat16)
        assert _quiet_verify(y, x, w).verdict == "inconclusive"
    up = np.array([[[3e38, 3e38, -3e38, 1.0, 1.0]]]).astype(ml_dtypes.bfloat16)  # only upward
    assert _quiet_verify(np.array([[[np.inf]]]).astype(ml_dtypes.bfloat16), up, w).verdict == "inconclusive"
    for wrong in (-np.inf, np.nan):
        assert _quiet_verify(np.array([[[wrong]]]).astype(ml_dtypes.bfloat16), up, w).verdict == "mismatch"
    tame = np.array([[[3.0, 3.0, -3.0, 1.0, 1.0]]]).astype(ml_dtypes.bfloat16)
    assert _quiet_verify(np.array([[[np.nan]]]).astype(ml_dtypes.bfloat16), tame, w).verdict == "mismatch"


def test_float16_overflow_across_backends_is_judged_without_warnings() -> None:
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((2, 3, 12, 12)) * 300).astype(np.float16)
    w = (rng.standard_normal((4, 3, 3, 3)) * 30).astype(np.float16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = cb.compare(x, w, backends=("numpy", "torch", "jax"), rerun=False)
        assert np.isinf(report.outputs["torch"]).any()
        assert all(p.verdict in AGREE for p in report.pairs), str(report)
        fft = cb.compare(x, w, backends=("numpy", "torch", "jax"), algorithm="fft")
        assert fft.verdict != "mismatch", str(fft)
        # the correctly rounded reference overflows too: those infinities are equal, the rest is judged
        assert all(p.overflowed == 0 for p in report.pairs)


def test_overflow_inside_the_accumulation_stays_inconclusive_after_reruns() -> None:
    """bfloat16 outputs near the top of the range: FFT's float32 transforms overflow to NaN. Rounding explains
    it, but a float64 re-run (where nothing overflows) must not turn it into agreement."""
    x = np.full((1, 1, 16), 2.0**62).astype(ml_dtypes.bfloat16)
    w = np.full((1, 1, 4), 2.0**62).astype(ml_dtypes.bfloat16)  # outputs 2**126, finite; spectra reach 2**130
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = cb.compare(x, w, backends=("torch", "jax"), algorithm="fft")
    for name in ("torch", "jax"):
        assert not np.isfinite(report.outputs[name].astype(np.float64)).all()
        pair = report.pair(name, "reference")
        assert pair.verdict == "inconclusive" and pair.overflowed, str(report)


@pytest.mark.parametrize("algorithm", ["native", "matmul"])
@pytest.mark.parametrize("policy, lax_name", [("highest", "HIGHEST"), ("default", "DEFAULT")])
def test_jax_programs_carry_the_policy(algorithm, policy, lax_name) -> None:
    """The policy reaches XLA as the operands' precision config, for the matrix product of the matmul algorithm
    too (which would otherwise follow jax_default_matmul_precision, whatever the plan says)."""
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    x, w = jnp.ones((1, 2, 6, 6)), jnp.ones((3, 2, 3, 3))
    text = jax.jit(lambda a, k: cb.conv(a, k, algorithm=algorithm, precision=policy)).lower(x, w).as_text()
    assert (f"[{lax_name}, {lax_name}]" in text  # dot_general
            or f"[#stablehlo<precision {lax_name}>, #stablehlo<precision {lax_name}>]" in text)  # convolution


# ----------------------------------------------------------------------------------------------- found by a hostile user


def test_an_infinite_imaginary_part_stays_in_the_complex_reference() -> None:
    x, w = np.array([[[np.inf + 0j]]], np.complex64), np.array([[[1 + 1j]]], np.complex64)
    # complex(inf, inf), not inf + 1j * inf: Python's 1j * inf is nan + inf j, the very trap being tested
    assert _quiet_verify(np.array([[[complex(np.inf, np.inf)]]], np.complex64), x, w).verdict == "identical"
    assert _quiet_verify(np.array([[[complex(np.nan, np.inf)]]], np.complex64), x, w).verdict == "mismatch"


def test_a_nan_in_the_imaginary_bias_leaves_the_real_parts_judged() -> None:
    rng = np.random.default_rng(5)
    x, w = (_complex(rng, 1, 2, 6, 6).astype(np.complex64), _complex(rng, 3, 2, 3, 3).astype(np.complex64))
    b = np.array([0.5 + 1j * np.nan, 1 + 1j, -1j], np.complex64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = cb.compare(x, w, b, backends=("numpy", "jax"))
    assert report.verdict in AGREE, str(report)


@pytest.mark.parametrize("dtype", [ml_dtypes.bfloat16, np.float16])
def test_exact_data_never_hides_a_dropped_bias(dtype) -> None:
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((1, 8, 5, 5)).astype(dtype), rng.standard_normal((1, 8, 3, 3)).astype(dtype)
    b = np.array([2.0 if dtype is ml_dtypes.bfloat16 else 0.25]).astype(dtype)
    drop = ("bias_dropped", lambda x, w, b: cb.conv(x, w, None, padding=1))
    assert cb.compare(x, w, b, padding=1, backends=(drop,)).verdict == "mismatch"
    assert cb.compare(x, w, b, padding=1, backends=(drop,), exact=True).verdict == "mismatch"


def test_highest_overrides_torchs_global_bf16_setting_on_a_cpu(data) -> None:
    torch = pytest.importorskip("torch")
    x, w, b = (torch.from_numpy(a) for a in data)
    before = torch.get_float32_matmul_precision(), torch.backends.mkldnn.conv.fp32_precision
    try:
        torch.set_float32_matmul_precision("medium")  # the matmul algorithm's products in bf16
        torch.backends.mkldnn.conv.fp32_precision = "bf16"  # oneDNN's convolutions too (AMX CPUs honour it)
        for algorithm in ("native", "matmul"):
            strict = cb.compare(x, w, b, padding=1, backends=("torch",), algorithm=algorithm, rerun=False)
            assert strict.verdict in AGREE and "IEEE" in strict.precisions["torch"], str(strict)
            loose = cb.compare(x, w, b, padding=1, backends=("torch",), algorithm=algorithm, precision="default",
                               rerun=False)
            assert "bf16 inputs (torch's fp32_precision setting)" in loose.precisions["torch"]
            assert loose.verdict in AGREE, str(loose)
        assert torch.backends.mkldnn.conv.fp32_precision == "bf16"  # restored after each call
    finally:
        torch.set_float32_matmul_precision(before[0])
        torch.backends.mkldnn.conv.fp32_precision = before[1]


def test_a_gauge_past_float64s_range_decides_nothing() -> None:
    x, w = np.array([[[1e308, 1e308, 1.0]]]), np.array([[[1.0, -1.0, 1.0]]])
    assert _quiet_verify(np.array([[[1.0]]]), x, w).verdict == "identical"
    for impossible in (0.0, -5.0, 1e300, np.inf):
        assert _quiet_verify(np.array([[[impossible]]]), x, w).verdict == "inconclusive"


def test_bfloat16_identical_means_correctly_rounded_not_double_rounded() -> None:
    x = np.array([[[1.0, 2.0**-8, 2.0**-30]]]).astype(ml_dtypes.bfloat16)
    w = np.ones((1, 1, 3)).astype(ml_dtypes.bfloat16)
    x64 = x.astype(np.float64)
    assert x64[0, 0, 2] == 2.0**-30  # representable: the exact sum 1 + 2**-8 + 2**-30 rounds up to 1 + 2**-7
    right = np.array([[[1 + 2.0**-7]]]).astype(ml_dtypes.bfloat16)
    assert _quiet_verify(right, x, w).verdict == "identical"
    assert _quiet_verify(np.array([[[1.0]]]).astype(ml_dtypes.bfloat16), x, w).verdict != "identical"


def test_no_warning_leaks_from_shifted_float16_or_winograd_with_inf() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x = np.full((1, 2, 6, 6), 30000.0, np.float16)
        w = np.ones((2, 1, 3, 3), np.float16)
        y = cb.conv(x, w, groups=2, algorithm="shifted", backend="numpy")
        assert np.isinf(y).all()
        xi = np.ones((1, 1, 6, 6), np.float32)
        xi[0, 0, 2, 2] = np.inf
        k = np.ones((1, 1, 3, 3), np.float32)
        cb.verify(cb.conv(xi, k, backend="numpy"), xi, k, algorithm="winograd")


def test_fft_with_a_nan_input_is_inconclusive_not_a_mismatch() -> None:
    x = np.ones((1, 1, 12, 12), np.float32)
    x[0, 0, 0, 0] = np.nan
    w = np.ones((1, 1, 3, 3), np.float32)
    report = cb.compare(x, w, backends=("numpy",), algorithm="fft")
    pair = report.pair("numpy", "reference")
    assert pair.verdict == "inconclusive" and "spreads over the whole slice" in pair.reason, str(report)


def test_odd_candidates_and_arguments_get_convbridge_errors() -> None:
    torch = pytest.importorskip("torch")
    x, w = np.ones((1, 1, 4, 4), np.float32), np.ones((1, 1, 3, 3), np.float32)
    with pytest.raises(DTypeError, match="candidate dtype float8_e4m3fn is not a float dtype"):
        cb.verify(torch.ones(1, 1, 2, 2).to(torch.float8_e4m3fn), x, w)
    with pytest.raises(ArgumentTypeError, match="unfold has no argument 'preferred_element_type'"):
        cb.compare(x, (3, 3), op="unfold", preferred_element_type="float64")
    with pytest.raises(ArgumentTypeError, match="preferred_element_type must be a dtype .* got \\[\\]"):
        cb.conv(x, w, preferred_element_type=[])
    report = cb.verify(cb.conv(x, w), x, w, precision=Precision(2.0**-24, 2.0**-11))
    assert report.precisions["candidate"] == "float32: accumulation u = 5.96e-08, inputs rounded to u = 0.000488"
