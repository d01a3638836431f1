"""Error bounds for fast convolutions: honest float32 FFT and Winograd results stay inside them, planted bugs
land far outside, and the bounds are not absurdly loose.

Ratios (actual error / bound) measured when this was written (seeded data, float32, u = 2**-24):

- Winograd, elementwise max of |y_hat - y| / (gamma_n Gw): 1-d F(m, 3) 0.0096 .. 0.11, 2-d F(m x m, 3 x 3)
  0.00065 .. 0.025 (largest for m = 2 and one channel, smallest for m = 6 and 16 channels); the issue's
  F(4 x 4, 3 x 3) with one channel: 0.0077; shifted tile origins: 0.002 .. 0.0044.
- FFT, max over slices of ||y_hat - y||_2 / bound: 1-d n = 65536, k = 2: 0.0043 .. 0.0045 (N(0, 1) data),
  0.00014 (non-negative: there ``sup|FFT(x)| = ||x||_1`` and that term is ~sqrt(n) loose); 2-d 32 x 32 k5 and
  groups = 2: 0.00046 .. 0.0011; strided + dilated and 3-d: 0.00037 .. 0.0007.
- Planted bugs (flipped kernel, 1-pixel shift): Winograd 650x .. 9e4x, FFT 3.8e3x .. 1e4x beyond the bound.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from _honest import fft_conv, winograd_conv

from convbridge.bounds import fft_error_bound, fft_stages, gamma, winograd_gauge, winograd_matrices, winograd_terms
from convbridge.errors import ArgumentError, ShapeError
from convbridge.reference.conv import conv_canonical
from convbridge.spec import make_conv_spec

U32 = 2.0**-24


def _ref(x, w, **kw):
    return conv_canonical(x, w, None, make_conv_spec(x.shape, w.shape, **kw))


def _data(seed, x_shape, w_shape, kind="normal"):
    """float32-representable float64 data: N(0, 1) or its absolute value."""
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    if kind == "nonneg":
        x, w = np.abs(x), np.abs(w)
    return x.astype(np.float32).astype(np.float64), w.astype(np.float32).astype(np.float64)


def _slice_norms(a):
    return np.sqrt((a * a).sum(axis=tuple(range(2, a.ndim))))


def _winograd_bound(x, w, m):
    return gamma(winograd_terms(m, w.shape[1], rank=x.ndim - 2), U32) * winograd_gauge(x, w, m=m)


def _winograd_ratio(x, w, m, y_hat=None):
    y_hat = winograd_conv(x, w, m=m) if y_hat is None else y_hat
    return float((np.abs(y_hat - _ref(x, w)) / _winograd_bound(x, w, m)).max())


def _fft_ratios(x, w, y_hat=None, **kw):
    y_hat = fft_conv(x, w, **kw) if y_hat is None else y_hat
    return _slice_norms(y_hat - _ref(x, w, **kw)) / fft_error_bound(x, w, u=U32, **kw)


# ------------------------------------------------------------------------------------------ Winograd


@pytest.mark.parametrize("m", [2, 3, 4, 5, 6])
def test_winograd_matrices_compute_f_m3_exactly(m):
    at, g, bt = winograd_matrices(m)
    assert at.shape == (m, m + 2) and g.shape == (m + 2, 3) and bt.shape == (m + 2, m + 2)
    rng = np.random.default_rng(m)
    d, k = rng.standard_normal(m + 2), rng.standard_normal(3)
    np.testing.assert_allclose(at @ ((g @ k) * (bt @ d)), np.correlate(d, k, "valid"), rtol=0, atol=1e-12)
    d2, k2 = rng.standard_normal((m + 2, m + 2)), rng.standard_normal((3, 3))
    y2 = at @ ((g @ k2 @ g.T) * (bt @ d2 @ bt.T)) @ at.T
    np.testing.assert_allclose(y2, _ref(d2[None, None], k2[None, None])[0, 0], rtol=0, atol=1e-12)


def test_winograd_matrices_are_the_standard_f23():
    at, g, bt = winograd_matrices(2)
    assert at.tolist() == [[1, 1, 1, 0], [0, 1, -1, 1]]
    assert g.tolist() == [[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]]
    assert bt.tolist() == [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, -1, 0, 1]]


def test_winograd_terms_count_every_rounding():
    # 1-d F(2, 3): input 4, kernel 3, output 4 (all constants dyadic), product 1, no channel sum.
    assert winograd_terms(2, 1, rank=1) == 12
    # F(6, 3): G holds 1/90 and B^T is dyadic but wide; A^T holds (1/2)^5: +1 for G only.
    assert winograd_terms(6, 16, rank=2) == 2 * (2 * 8 + 3 + 1) + 16


@pytest.mark.parametrize("kind", ["normal", "nonneg"])
@pytest.mark.parametrize("channels", [1, 16])
@pytest.mark.parametrize("rank", [1, 2])
@pytest.mark.parametrize("m", [2, 4, 6])
def test_honest_winograd_stays_within_the_bound(m, rank, channels, kind):
    spatial = (203,) if rank == 1 else (19, 17)  # tiles overhang the input
    x, w = _data(m * 100 + channels, (2, channels, *spatial), (3, channels, *(3,) * rank), kind)
    ratio = _winograd_ratio(x, w, m)
    print(f"F({m}, 3) rank {rank}, {channels} channels, {kind}: max error / bound = {ratio:.3g}")
    assert ratio <= 1


@pytest.mark.parametrize("origin", range(4))
def test_the_gauge_holds_for_every_tile_origin(origin):
    """Tiles starting ``origin`` rows before the input (zero-filled): the same gauge still bounds them."""
    x, w = _data(7, (1, 4, 18, 18), (2, 4, 3, 3))
    shifted = np.pad(x, [(0, 0), (0, 0), (origin, 0), (origin, 0)])
    y_hat = winograd_conv(shifted, w, m=4)[..., origin:, origin:]
    assert _winograd_ratio(x, w, 4, y_hat) <= 1


def test_issue_reference_winograd_f4x4_one_channel_is_within_the_bound():
    x, w = _data(44, (1, 1, 64, 64), (1, 1, 3, 3))
    assert _winograd_ratio(x, w, 4) <= 1


def test_winograd_bound_is_not_absurdly_loose():
    x, w = _data(2, (2, 1, 203), (3, 1, 3))
    ratio = _winograd_ratio(x, w, 2)
    print(f"F(2, 3) 1-d, 1 channel: max error / bound = {ratio:.3g}")  # 0.098 when written
    assert 1e-3 <= ratio <= 1


@pytest.mark.parametrize("bug", ["flipped kernel", "one-pixel shift"])
@pytest.mark.parametrize("m", [2, 4, 6])
def test_planted_winograd_bugs_exceed_the_bound(m, bug):
    x, w = _data(3, (1, 4, 20, 20), (2, 4, 3, 3))
    y = winograd_conv(x, w, m=m)
    y_bad = winograd_conv(x, w[..., ::-1, :], m=m) if bug == "flipped kernel" else np.roll(y, 1, axis=-1)
    assert _winograd_ratio(x, w, m, y_bad) > 100


# ----------------------------------------------------------------------------------------------- FFT

FFT_CASES = {
    "1-d n=65536 k2": ((1, 1, 65536), (1, 1, 2), {}),
    "2-d 32x32 k5, 8 channels": ((2, 8, 32, 32), (6, 8, 5, 5), {}),
    "2-d groups=2": ((2, 8, 32, 32), (6, 4, 5, 5), {"groups": 2}),
    "2-d stride 2 dilation 2": ((1, 4, 40, 40), (4, 4, 3, 3), {"stride": 2, "dilation": 2}),
    "3-d": ((1, 2, 12, 12, 12), (2, 2, 3, 3, 3), {}),
}


@pytest.mark.parametrize("kind", ["normal", "nonneg"])
@pytest.mark.parametrize("case", list(FFT_CASES))
def test_honest_fft_stays_within_the_bound(case, kind):
    x_shape, w_shape, kw = FFT_CASES[case]
    x, w = _data(len(case), x_shape, w_shape, kind)
    ratios = _fft_ratios(x, w, **kw)
    print(f"FFT {case}, {kind}: max error / bound = {ratios.max():.3g}")
    assert ratios.shape == (x_shape[0], w_shape[0]) and ratios.max() <= 1


def test_issue_reference_fft_n65536_kernel2_is_within_the_bound_and_not_loose():
    x, w = _data(65536, (1, 1, 65536), (1, 1, 2))
    ratio = float(_fft_ratios(x, w).max())
    print(f"FFT 1-d n=65536 k2: max error / bound = {ratio:.3g}")  # 0.0044 when written
    assert 1e-3 <= ratio <= 1


@pytest.mark.parametrize("bug", ["flipped kernel", "one-pixel shift"])
@pytest.mark.parametrize("case", ["1-d n=65536 k2", "2-d groups=2"])
def test_planted_fft_bugs_exceed_the_bound(case, bug):
    x_shape, w_shape, kw = FFT_CASES[case]
    x, w = _data(5, x_shape, w_shape)
    y = fft_conv(x, w, **kw)
    y_bad = fft_conv(x, np.flip(w, axis=-1), **kw) if bug == "flipped kernel" else np.roll(y, 1, axis=-1)
    assert _fft_ratios(x, w, y_bad, **kw).min() > 100


def test_fft_stages_pad_each_dim_to_a_power_of_two():
    assert fft_stages((65536,), (2,), (1,)) == 17
    assert fft_stages((30, 7), (3, 2), (2, 1)) == 6 + 3  # 34 -> 64, 8 -> 8
    half = fft_error_bound(np.ones((1, 1, 64)), np.ones((1, 1, 1)), u=U32)[0, 0] / 2
    eta = U32 + gamma(4, U32) * (math.sqrt(2) + U32)
    b6 = 6 * eta / (1 - 6 * eta) + 2 * U32  # L = 64: 6 stages
    # ||x||_2 ||w||_1 + sup|X| ||w||_2 = 8 + 64 and q = min(8, 64) = 8; one channel: no channel-sum term
    assert half == pytest.approx(72 * b6 + 8 * (b6 + math.sqrt(2) * gamma(2, U32)), rel=1e-9)


# -------------------------------------------------------------------------------------------- errors


def test_bad_arguments_are_refused_with_the_rule():
    x, w = np.ones((1, 2, 8, 8)), np.ones((1, 2, 3, 3))
    with pytest.raises(ArgumentError, match=r"size 3 per dim, got kernel \(1, 2, 5, 5\)"):
        winograd_gauge(x, np.ones((1, 2, 5, 5)), m=2)
    with pytest.raises(ArgumentError, match=r"rank 1 or 2"):
        winograd_gauge(np.ones((1, 2, 8, 8, 8)), np.ones((1, 2, 3, 3, 3)), m=2)
    with pytest.raises(ArgumentError, match=r"m must be one of \[2, 3, 4, 5, 6\], got 7"):
        winograd_gauge(x, w, m=7)
    with pytest.raises(ShapeError, match=r"input has 2 channels .* groups = 2"):
        winograd_gauge(x, w, m=2, groups=2)
    with pytest.raises(ShapeError, match=r"wider than the padded input"):
        fft_error_bound(np.ones((1, 1, 4)), np.ones((1, 1, 3)), dilation=2, u=U32)
    with pytest.raises(ArgumentError, match=r"unit roundoff in \(0, 1\)"):
        fft_error_bound(x, w, u=0.0)
    with pytest.raises(ArgumentError, match=r"stride .* has 1 entries for 2 spatial dims"):
        fft_error_bound(x, w, stride=(1,), u=U32)
    with pytest.raises(ValueError, match=r"n u < 1"):
        gamma(2**24, U32)


def _gauge_by_tiles(x, w, m):
    """Gw by brute force: every tile origin, every tile, the formula of Barabasz et al. written out (2-d)."""
    at, g, bt = (np.abs(v) for v in winograd_matrices(m))
    ax, aw = np.abs(x), np.abs(w)
    out = tuple(n - 2 for n in x.shape[2:])
    best = np.zeros((x.shape[0], w.shape[0], *out))
    for j0 in range(m):
        for j1 in range(m):
            gw = np.zeros((x.shape[0], w.shape[0], out[0] + 2 * m, out[1] + 2 * m))
            xp = np.pad(ax, [(0, 0), (0, 0), (j0, 2 * m), (j1, 2 * m)])
            for t0 in range(0, out[0] + j0, m):
                for t1 in range(0, out[1] + j1, m):
                    d = xp[:, :, t0:t0 + m + 2, t1:t1 + m + 2]
                    prod = np.einsum("ab,ocbe,fe->ocaf", g, aw, g)[None] * np.einsum(
                        "ab,ncbe,fe->ncaf", bt, d, bt)[:, None]
                    gw[:, :, t0:t0 + m, t1:t1 + m] = np.einsum("ab,nocbe,fe->noaf", at, prod, at)
            best = np.maximum(best, gw[:, :, j0:j0 + out[0], j1:j1 + out[1]])
    return best


@pytest.mark.parametrize("m", [2, 3, 5])
def test_the_gauge_is_the_max_over_tile_origins_of_the_published_formula(m):
    x, w = _data(m, (2, 3, 11, 9), (2, 3, 3, 3))
    np.testing.assert_allclose(winograd_gauge(x, w, m=m), _gauge_by_tiles(x, w, m), rtol=1e-12)
