"""algorithm='fft': every result judged by the verdict's FFT bound on every backend, the wrap-around geometry
checked exhaustively on small 1-d cases, gradients against the native algorithm's, jit, declines and the models."""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest

import convbridge as cb
from convbridge import bounds
from convbridge.algorithms import fft
from convbridge.arrays import dtype_name, to_numpy
from convbridge.errors import ArgumentError, DTypeError
from convbridge.memory import MemoryLimitError
from convbridge.plan import Plan
from convbridge.spec import ConvAxis, make_conv_spec

from cases import CONV
from conftest import BACKENDS
from _gradients import assert_gradients_match_native

AGREE = ("identical", "equivalent")


def _fft(backend: str, **kw):
    return lambda x, w, b: cb.conv(x, w, b, backend=backend, algorithm="fft", **kw)


def _judged(x, w, b, backend: str, rerun: bool | str, **kw):
    return cb.compare(x, w, b, backends=[(f"fft_{backend}", _fft(backend, **kw))], algorithm="fft", rerun=rerun, **kw)


# Every case of the shared table (layouts, paddings: asymmetric, 'same', modes; strides, dilations, groups:
# depthwise, multipliers; bias, unbatched, 1-d/2-d/3-d) on numpy or torch, alternating; JAX (a compile per case)
# runs the cases that reach each of its ops: the channel product, dilation, a gather of the outputs, a mode, 3-d.
_EAGER = tuple(b for b in BACKENDS if b != "jax")
_GRID = [(name, _EAGER[i % len(_EAGER)]) for i, name in enumerate(CONV)]
_GRID += [(name, "jax") for name in ("groups_asym_dilated", "circular_nhwc", "conv3d_pairs") if "jax" in BACKENDS]


@pytest.mark.parametrize("name, backend", _GRID)
def test_every_case_is_equivalent_under_the_fft_bound(name, backend):
    case = CONV[name]
    x, w, b = case.arrays(seed=3)
    # no re-run: the re-run on exact integer data asks for bitwise equality, which no FFT gives (float32 results
    # are often 'weak' here, as the bound is normwise and ~1000 u ||G||); float64 below runs the default
    report = _judged(x, w, b, backend, False, **case.kwargs)
    assert report.verdict in AGREE, report
    assert report.pairs[0].family == "fft"


@pytest.mark.parametrize("backend", BACKENDS)
def test_float64_is_equivalent_with_the_default_reruns(backend):
    case = CONV["groups_asym_dilated"]
    x, w, b = case.arrays(seed=5, dtype="float64")
    if backend == "jax":
        import jax

        with jax.enable_x64(True):
            report = _judged(x, w, b, backend, "auto", **case.kwargs)
    else:
        report = _judged(x, w, b, backend, "auto", **case.kwargs)
    assert report.verdict in AGREE and not report.pairs[0].weak, report


def test_a_convolution_instead_of_a_correlation_is_a_mismatch():
    """The bound has power: a flipped kernel (the conjugate forgotten) is caught."""
    case = CONV["big_k"]
    x, w, b = case.arrays(seed=1)
    flipped = lambda x, w, b: cb.conv(x, w[..., ::-1, ::-1].copy(), b, algorithm="fft", **case.kwargs)  # noqa: E731
    report = cb.compare(x, w, b, backends=[("flipped", flipped)], algorithm="fft", rerun=False, **case.kwargs)
    assert report.verdict == "mismatch"


def _edge_grid():
    for n, k, lo, hi, s, d in itertools.product((1, 2, 5), (1, 2, 4), (0, 1, 3), (0, 2, 5), (1, 3), (1, 2)):
        if n + lo + hi >= d * (k - 1) + 1:
            yield n, k, lo, hi, s, d, "zeros"
    for n, k, pad, mode in itertools.product((3, 5), (1, 3), (1, 2), ("reflect", "replicate", "circular")):
        yield n, k, pad, pad, 2, 1, mode


def test_wrap_around_geometry_exhaustively_on_small_1d_cases():
    """Large low padding, kernels wider than the input, strides leaving rows unread, every mode: exact in float64
    against the NumPy reference (numpy backend, the circular-shift logic is framework-free)."""
    rng = np.random.default_rng(0)
    for n, k, lo, hi, s, d, mode in _edge_grid():
        x, w = rng.standard_normal((2, 2, n)), rng.standard_normal((3, 2, k))
        kw = dict(padding=((lo, hi),), stride=s, dilation=d, padding_mode=mode)
        got, want = cb.conv(x, w, algorithm="fft", **kw), cb.conv(x, w, **kw)
        scale = cb.conv(np.abs(x), np.abs(w), **kw)
        assert got.shape == want.shape and np.all(np.abs(got - want) <= 1e-13 * (scale + 1)), (n, k, lo, hi, s, d,
                                                                                               mode)


def test_lengths_are_smooth_and_the_bound_covers_them():
    """The verdict's bound counts sum_i ceil(log2 (P_i + S_i - 1)) radix-2 stages; our lengths 2**a 3**b count
    a + 1.75 b (a radix-3 stage rounds at most ~1.73 radix-2 stages) and never exceed it."""
    specs = [make_conv_spec(c.x, c.w, **c.kwargs) for c in CONV.values()]
    specs += [make_conv_spec((1, 1, n), (1, 1, k), padding=((lo, hi),), stride=s, dilation=d, padding_mode=m)
              for n, k, lo, hi, s, d, m in _edge_grid()]
    for spec in specs:
        lengths = fft.fft_lengths(spec)
        counted = 0.0
        for n in lengths:
            b = 0
            while n % 3 == 0:
                n, b = n // 3, b + 1
            assert n & (n - 1) == 0, lengths  # 2**a 3**b, no other factor
            counted += n.bit_length() - 1 + fft.RADIX3_STAGES * b
        padded = tuple(a.padded for a in spec.axes)
        assert counted <= bounds.fft_stages(padded, spec.kernel_spatial, spec.dilation), spec.describe()
    assert fft.fft_lengths(make_conv_spec((8, 64, 16384), (64, 1, 1024), padding="same", groups=64)) == (18432,)
    assert fft.fft_lengths(make_conv_spec((1, 1, 512, 512), (1, 1, 51, 51), padding="same")) == (576, 576)
    assert fft.fft_lengths(make_conv_spec((1, 1, 512, 512), (1, 1, 51, 51))) == (512, 512)  # valid: no padding
    assert [fft.smooth_at_least(n, (n - 1).bit_length()) for n in (2, 3, 5, 7, 9, 100, 70)] == [2, 3, 6, 8, 9, 128, 72]


def test_gradients_match_the_native_algorithm(backend):
    if backend == "numpy":
        pytest.skip("NumPy has no autodiff")
    x, w, b = (np.random.default_rng(2).standard_normal(s).astype(np.float32) for s in ((2, 4, 11), (6, 2, 3), (6,)))
    kw = dict(groups=2, stride=2, dilation=2, padding=((3, 1),), padding_mode="reflect")
    assert_gradients_match_native(backend, "fft", (x, w, b), kw)


def test_jax_jit_compiles_the_fft_convolution():
    jax = pytest.importorskip("jax")
    x, w, _ = CONV["depthwise_1d"].arrays(seed=4)
    kw = CONV["depthwise_1d"].kwargs
    y = jax.jit(lambda x, w: cb.conv(x, w, algorithm="fft", **kw))(x, w)
    want = cb.conv(x.astype(np.float64), w.astype(np.float64), **kw)
    assert np.linalg.norm(np.asarray(y) - want) <= 1e-5 * np.linalg.norm(want)


@pytest.mark.parametrize("backend, dtype", [(b, d) for b in BACKENDS for d in ("float16", "bfloat16")
                                            if (b, d) != ("numpy", "bfloat16")])
def test_half_precision_is_computed_in_float32_and_rounded_once(backend, dtype):
    """Each output within half an ulp of its dtype of the exact result (plus float32's FFT error): a 16-bit
    computation would be off by many ulps where the output cancels."""
    import ml_dtypes

    case = CONV["groups_strided"]
    x, w, b = (a.astype(ml_dtypes.bfloat16 if dtype == "bfloat16" else np.float16) for a in case.arrays(seed=6))
    y = cb.conv(x, w, b, backend=backend, algorithm="fft", **case.kwargs)
    assert dtype_name(y) == dtype
    got = to_numpy(y).astype(np.float64)
    x64, w64, b64 = (a.astype(np.float64) for a in (x, w, b))
    want, gauge = cb.conv(x64, w64, b64, **case.kwargs), cb.conv(np.abs(x64), np.abs(w64), np.abs(b64), **case.kwargs)
    u = 2.0**-8 if dtype == "bfloat16" else 2.0**-11
    assert np.all(np.abs(got - want) <= u * np.abs(want) + 1e-5 * gauge.max())


def test_declined_cases_say_what_to_use_instead():
    import ml_dtypes

    x, w, _ = CONV["bias"].arrays()
    with pytest.raises(DTypeError, match="NumPy has no bfloat16 arithmetic, so the 'fft' algorithm cannot run it"):
        cb.conv(x.astype(ml_dtypes.bfloat16), w.astype(ml_dtypes.bfloat16), algorithm="fft", backend="numpy")
    with pytest.raises(ArgumentError, match="no algorithm 'fft' for conv_transpose on the numpy backend"):
        cb.conv_transpose(x, w.transpose(1, 0, 2, 3), algorithm="fft")
    spec = make_conv_spec((1, 1, 8), (1, 1, 3))
    ints = dataclasses.replace(spec, dtype="int32")
    assert isinstance(fft.supports(ints, Plan("numpy", "fft")), DTypeError)
    with pytest.raises(DTypeError, match="algorithm='fft' computes float convolutions .* not int32; use "
                                         "algorithm='native'"):
        raise fft.supports(ints, Plan("numpy", "fft"))
    cropped = dataclasses.replace(spec, axes=(ConvAxis(8, 3, lo=-1),))
    with pytest.raises(ArgumentError, match=r"non-negative padding, got \(\(-1, 0\),\); crop the input first"):
        raise fft.supports(cropped, Plan("torch", "fft"))
    with cb.memory.limit("1MB"), pytest.raises(MemoryLimitError):
        cb.conv(np.ones((1, 1, 512, 512), np.float32), np.ones((1, 1, 51, 51), np.float32), padding="same",
                algorithm="fft")


def test_empty_batches_and_unbatched_inputs(backend):
    x = np.zeros((0, 3, 5), np.float32)
    w, b = np.ones((2, 3, 3), np.float32), np.ones(2, np.float32)
    assert tuple(cb.conv(x, w, b, backend=backend, algorithm="fft", padding=1).shape) == (0, 2, 5)
    x1 = np.arange(15.0, dtype=np.float32).reshape(3, 5)
    got = np.asarray(cb.conv(x1, w, b, backend=backend, algorithm="fft", padding=1), np.float64)
    assert np.allclose(got, cb.conv(x1.astype(np.float64), w.astype(np.float64), b.astype(np.float64), padding=1),
                       rtol=0, atol=1e-4)


def test_cost_model_orders_shapes_and_registers_everywhere():
    small = make_conv_spec((1, 3, 32, 32), (4, 3, 5, 5))
    large = make_conv_spec((1, 1, 512, 512), (1, 1, 51, 51), padding="same")
    depthwise = make_conv_spec((8, 64, 16384), (64, 1, 1024), padding="same", groups=64)
    for backend in BACKENDS:
        impl = cb.dispatch.find(large, Plan(backend, "fft"))
        assert impl.composite and impl.cost is not None and impl.memory is fft.fft_bytes
        c = [impl.cost(s, Plan(backend, "fft")) for s in (small, large, depthwise)]
        assert 0 < c[0] < c[1] < c[2] and math.isfinite(c[2])
        assert impl.cost(dataclasses.replace(large, dtype="float64"), Plan(backend, "fft")) > c[1]


def test_the_verdict_with_its_default_reruns_and_non_finite_inputs():
    """The exact-data re-run cannot demand bitwise equality of an FFT (its transforms round integer data too), so
    a correct float32 FFT stays equivalent under the default re-runs; a NaN input spreads over its FFT slice,
    where the definition keeps it local: judged by equality, not by an inf bound, it is never agreement, and it is
    not a difference of meaning either (the algorithm, not the port, spreads it): inconclusive, saying why."""
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal((2, 3, 16, 16)).astype(np.float32), rng.standard_normal((4, 3, 5, 5)).astype(np.float32)

    def fft(a, k, b):
        return cb.conv(a, k, b, padding=2, algorithm="fft")

    assert cb.compare(x, w, backends=[("fft", fft)], algorithm="fft", padding=2).verdict == "equivalent"
    assert cb.compare(x, w, backends=[("fft", fft)], algorithm="fft", padding=2, exact=True).verdict in (
        "equivalent", "identical")
    x[0, 0, 3, 3] = np.nan
    report = cb.compare(x, w, backends=[("fft", fft)], algorithm="fft", padding=2, rerun=False)
    assert report.verdict == "inconclusive" and "spreads over the whole slice" in report.pair("fft", "reference").reason
    assert cb.compare(x, w, backends=[("fft", fft)], algorithm="fft", padding=2).verdict == "inconclusive"
