"""Rigorous floating-point error bounds for fast convolutions: FFT and Winograd.

An honest direct convolution satisfies ``|fl(y) - y| <= gamma_K G`` with ``G = conv(|x|, |w|) + |b|``;
honest FFT and Winograd results exceed that bound, so a verdict must judge them by their own:

- :func:`fft_error_bound`: a 2-norm bound per output slice ``(n, o)``, from Higham, *Accuracy and
  Stability of Numerical Algorithms* (2nd ed., 2002), section 24.1, Theorem 24.2.
- :func:`winograd_gauge` and :func:`winograd_terms`: an elementwise bound ``gamma_n Gw`` for F(m, 3) and
  F(m x m, 3 x 3), after Barabasz, Anderson, Soodhalter and Gregg, "Error analysis and improving the
  accuracy of Winograd convolution for deep neural networks", ACM TOMS 46(4), 2020.

Arrays are canonical and channels-first: ``x (N, C_in, *spatial)`` already padded, ``w (C_out, C_in //
groups, *k)``, output ``(N, C_out, *out)``; ``y[n, o, p] = sum_{c, t} x[n, c, p*s + t*d] w[o, c, t]``
(cross-correlation). Everything is computed in float64 from the data; inputs are taken as exactly
representable in the judged format (round them first, or add the input rounding separately).
"""

from __future__ import annotations

import functools
import itertools
import math
from fractions import Fraction
from types import MappingProxyType
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from convbridge.errors import ArgumentError, ShapeError, brief
from convbridge.spec.geometry import ConvAxis

__all__ = ["gamma", "fft_stages", "fft_error_bound", "WINOGRAD_POINTS", "winograd_matrices", "winograd_terms",
           "winograd_gauge"]

#: Toom-Cook points (besides infinity) of F(m, 3), by output tile size m.
WINOGRAD_POINTS = MappingProxyType({
    2: (0, 1, -1),
    3: (0, 1, -1, 2),
    4: (0, 1, -1, 2, -2),
    5: (0, 1, -1, 2, -2, Fraction(1, 2)),
    6: (0, 1, -1, 2, -2, Fraction(1, 2), Fraction(-1, 2)),
})
#: Significand bits every judged format holds (bfloat16): transform constants wider than this are rounded.
_SAFE_BITS = 8
#: The most float64 elements one oversampled spectrum block may hold (32 MiB); larger slices use ||x||_1.
_SUP_BLOCK = 2**22


def gamma(n: int, u: float) -> float:
    """Higham's ``gamma_n = n u / (1 - n u)``: the bound on ``|theta_n|`` for n roundings.

    Raises:
        ArgumentError: ``n u >= 1`` (no bound exists).

    >>> gamma(2, 2.0**-24) == 2 * 2.0**-24 / (1 - 2 * 2.0**-24)
    True
    """
    if n * u >= 1:
        raise ArgumentError(f"gamma_n needs n u < 1, got n = {n} and u = {u!r}; use a smaller n or unit roundoff")
    return n * u / (1 - n * u)


# ------------------------------------------------------------------------------------------------- FFT


def fft_stages(spatial: tuple[int, ...], kernel: tuple[int, ...], dilation: tuple[int, ...]) -> int:
    """Stage count ``sum_i ceil(log2 L_i)``, ``L_i = n_i + d_i (k_i - 1)`` the full linear length per dim.

    A power-of-two length per dim (the largest a reasonable FFT convolution pads to) has exactly this many
    radix-2 stages. A shorter length ``2**a 3**b`` is covered when ``a + 1.75 b`` is at most this count: a
    radix-3 stage rounds at most ~1.73 radix-2 stages' worth (the argument is in
    :mod:`convbridge.algorithms.fft`, whose lengths obey it); radix-5 stages are not covered.

    >>> fft_stages((65536,), (2,), (1,)), fft_stages((32, 32), (5, 5), (1, 1))
    (17, 12)
    """
    total = 0
    for n, k, d in zip(spatial, kernel, dilation):
        full = n + ConvAxis(n, k, dilation=d).span - 1
        total += (full - 1).bit_length()
    return total


def _fft_relative(stages: int, u: float) -> float:
    """Relative 2-norm error of one computed (unnormalised) FFT of ``stages`` stages, plus 2u for a scaling
    by a non-power-of-two constant (rounding the constant, then the product)."""
    eta = u + gamma(4, u) * (math.sqrt(2) + u)
    t = stages * eta
    if t >= 1:
        raise ArgumentError(f"the FFT bound needs log2(L) eta < 1, got {stages} stages x eta {eta:.3g}; the unit "
                            f"roundoff {u!r} is too coarse for this size")
    return t / (1 - t) + 2 * u


def _pow2_at_least(n: int) -> int:
    return 1 << (n - 1).bit_length() if n > 1 else 1


def _spectral_sup(xa: np.ndarray) -> np.ndarray:
    """Upper bound on ``sup_omega |sum_p x[n, c, p] exp(-i omega p)|`` per slice, shape (N, C).

    The spectrum is sampled on a grid of M_i >= rank pi (n_i - 1) points per dim; by Bernstein's inequality
    (a trigonometric polynomial of degree n - 1 has ``|p'| <= (n - 1)/2 ||p||`` after a phase shift) the sup
    is at most the grid maximum / (1 - sum_i pi (n_i - 1) / (2 M_i)). Never above ``||x||_1``.
    """
    spatial, lead = xa.shape[2:], xa.shape[:2]
    l1 = np.abs(xa).sum(axis=tuple(range(2, xa.ndim)))
    degrees = [n - 1 for n in spatial]
    grid = tuple(_pow2_at_least(max(math.ceil(len(spatial) * math.pi * deg), n)) for deg, n in zip(degrees, spatial))
    points = math.prod(grid)
    if points > _SUP_BLOCK or l1.size == 0:
        return l1
    slack = sum(math.pi * deg / (2 * m) for deg, m in zip(degrees, grid))
    flat = xa.reshape(-1, *spatial)
    axes = tuple(range(1, flat.ndim))
    per = max(1, _SUP_BLOCK // points)
    transform = np.fft.fftn if np.iscomplexobj(flat) else np.fft.rfftn
    peaks = np.concatenate([np.abs(transform(flat[i:i + per], s=grid, axes=axes)).max(axis=axes)
                            for i in range(0, flat.shape[0], per)])
    sup = peaks.reshape(lead) / (1 - slack) + 2.0**-30 * l1  # + the float64 FFT's own error, generously
    return np.minimum(sup, l1)


def _check_conv(xa: np.ndarray, wa: np.ndarray, groups: int) -> None:
    """Ranks and channel counts of canonical ``x (N, C, *S)`` and ``w (O, C // groups, *k)``."""
    if xa.ndim < 3 or wa.ndim != xa.ndim:
        raise ShapeError(f"input {xa.shape} and kernel {wa.shape} must be (N, C, *spatial) and (O, C/groups, "
                         f"*kernel) with the same number of spatial dims (1 to 3); pass canonical arrays")
    if not isinstance(groups, int) or groups < 1 or wa.shape[0] % groups or xa.shape[1] != groups * wa.shape[1]:
        raise ShapeError(f"input has {xa.shape[1]} channels and the kernel {wa.shape[0]} outputs x "
                         f"{wa.shape[1]} in-channels, which groups = {brief(groups)} does not fit; groups must "
                         f"divide the outputs and groups x kernel in-channels must equal the input channels")


def _per_dim(value: int | tuple[int, ...], rank: int, name: str) -> tuple[int, ...]:
    out = (value,) * rank if isinstance(value, int) else tuple(value)
    if len(out) != rank:
        raise ArgumentError(f"{name} {brief(value)} has {len(out)} entries for {rank} spatial dims; give one "
                            f"int or one per dim")
    return out


def fft_error_bound(x: Any, w: Any, *, groups: int = 1, stride: int | tuple[int, ...] = 1,
                    dilation: int | tuple[int, ...] = 1, u: float) -> np.ndarray:
    """Bound on ``||y_hat[n, o] - y[n, o]||_2`` for any reasonable FFT convolution in unit roundoff ``u``.

    The algorithm judged: per input channel, FFTs of length ``L_i >= n_i + d_i (k_i - 1)`` of ``x`` and the
    (flipped, dilated) kernel; elementwise products; the channel sum in the frequency domain or after the
    inverse; an inverse FFT; then the strided valid samples. Any normalisation (1/L anywhere).

    Derivation (first order, then x2 for second-order terms). Higham (2002) Theorem 24.2: a computed FFT of
    t stages has ``||fl(Fv) - Fv||_2 <= t eta / (1 - t eta) ||Fv||_2``, ``eta = mu + gamma_4 (sqrt 2 + mu)``
    with twiddle error ``mu = u``; here ``t = sum_i ceil(log2 L_i)`` (:func:`fft_stages`, powers of two
    per dim) and ``beta = t eta / (1 - t eta) + 2u`` (a scaling by a non-power-of-two constant). With
    ``||Fv||_2 = sqrt(L) ||v||_2``, ``X = F x_c``, ``W = F w_oc``: the forward errors give
    ``||e_X W|| <= beta sqrt(L) ||x_c||_2 ||w_oc||_1`` (``max|W| <= ||w||_1``) and
    ``||X e_W|| <= beta sqrt(L) M_c ||w_oc||_2`` (``M_c >= sup |X|``, Bernstein-bounded from an oversampled
    float64 spectrum); the complex product rounds by ``sqrt(2) gamma_2`` (Higham Lemma 3.5), the channel sum
    by ``gamma_{C_g - 1}``, each relative to ``||X W|| <= sqrt(L) q_c``, ``q_c = min(||x_c||_2 ||w_oc||_1,
    M_c ||w_oc||_2)``; the inverse adds ``beta sqrt(L) sum_c q_c``. Mapping back multiplies by 1/sqrt(L)
    in norm, so L cancels; the sampled slice's error is at most the full linear result's. Complex data (complex
    FFTs of complex inputs) obey the same theorems: ``x`` and ``w`` may be complex, and the bound is on the
    complex error's 2-norm.

    Args:
        x: padded input ``(N, C_in, *spatial)``, rank 1 to 3.
        w: kernel ``(C_out, C_in // groups, *k)``.
        groups: channel groups.
        stride: per-dim stride (only checked: sampling never raises the error norm).
        dilation: per-dim kernel dilation.
        u: unit roundoff of the judged format, e.g. ``2**-24``.

    Returns:
        float64 bounds, one per output slice.

    Raises:
        ShapeError: shapes that do not fit each other or ``groups``, or a kernel wider than the input.
        ArgumentError: bad stride, dilation or ``u``, or ``u`` too coarse for the FFT length.

    Shape:
        ``(N, C_out)``, with ``sum_c [beta (||x_c||_2 ||w_oc||_1 + M_c ||w_oc||_2) + (beta + sqrt(2)
        gamma_2 + gamma_{C_g - 1}) q_c] x 2`` in each entry.

    >>> b = fft_error_bound(np.ones((1, 1, 8)), np.ones((1, 1, 2)), u=2.0**-24)
    >>> b.shape, bool(0 < b[0, 0] < 1e-4)
    ((1, 1), True)
    """
    if not isinstance(u, (int, float)) or not 0 < u < 1:
        raise ArgumentError(f"u is a unit roundoff in (0, 1), e.g. 2**-24 for float32, got {brief(u)}")
    wide = np.complex128 if np.iscomplexobj(x) or np.iscomplexobj(w) else np.float64
    xa, wa = np.asarray(x, dtype=wide), np.asarray(w, dtype=wide)
    _check_conv(xa, wa, groups)
    rank = xa.ndim - 2
    strides, dilations = _per_dim(stride, rank, "stride"), _per_dim(dilation, rank, "dilation")
    axes = [ConvAxis(n, k, s, d) for n, k, s, d in zip(xa.shape[2:], wa.shape[2:], strides, dilations)]
    if not all(a.fits for a in axes):
        raise ShapeError(f"the dilated kernel {[a.span for a in axes]} is wider than the padded input "
                         f"{xa.shape[2:]}; there is no output to bound")
    beta = _fft_relative(fft_stages(xa.shape[2:], wa.shape[2:], dilations), u)
    cg = wa.shape[1]
    rest = beta + math.sqrt(2) * gamma(2, u) + (gamma(cg - 1, u) if cg > 1 else 0.0)
    space = tuple(range(2, xa.ndim))
    xn, sup = np.sqrt((np.abs(xa) ** 2).sum(axis=space)), _spectral_sup(xa)
    w1, w2 = np.abs(wa).sum(axis=space), np.sqrt((np.abs(wa) ** 2).sum(axis=space))
    xn, sup = (v.reshape(xa.shape[0], groups, 1, cg) for v in (xn, sup))
    w1, w2 = (v.reshape(1, groups, wa.shape[0] // groups, cg) for v in (w1, w2))
    q = np.minimum(xn * w1, sup * w2)
    terms = beta * (xn * w1 + sup * w2) + rest * q
    return 2 * terms.sum(axis=-1).reshape(xa.shape[0], wa.shape[0])


# -------------------------------------------------------------------------------------------- Winograd


def _inverse(rows: list[list[Fraction]]) -> list[list[Fraction]]:
    """Exact Gauss-Jordan inverse of a small invertible rational matrix."""
    n = len(rows)
    aug = [list(r) + [Fraction(int(i == j)) for j in range(n)] for i, r in enumerate(rows)]
    for col in range(n):
        pivot = next(r for r in range(col, n) if aug[r][col] != 0)
        aug[col], aug[pivot] = aug[pivot], aug[col]
        head = aug[col][col]
        aug[col] = [v / head for v in aug[col]]
        for r in range(n):
            if r != col and aug[r][col] != 0:
                factor = aug[r][col]
                aug[r] = [a - factor * b for a, b in zip(aug[r], aug[col])]
    return [r[n:] for r in aug]


def _vandermonde(points: tuple[Fraction, ...], cols: int) -> list[list[Fraction]]:
    """Rows ``[a^0 .. a^(cols-1)]`` per finite point, then infinity's row ``e_(cols-1)``."""
    rows = [[a**i for i in range(cols)] for a in points]
    return rows + [[Fraction(int(i == cols - 1)) for i in range(cols)]]


@functools.cache
def _exact(m: int) -> tuple[tuple[tuple[Fraction, ...], ...], ...]:
    """Exact ``(A^T, G, B^T)`` of F(m, 3): ``A^T = V_m^T``, ``G = diag(1/f) V_3``, ``B^T = diag(f) V_a^-T``."""
    if not isinstance(m, int) or m not in WINOGRAD_POINTS:
        raise ArgumentError(f"Winograd tile size m must be one of {sorted(WINOGRAD_POINTS)}, got {brief(m)}")
    points = tuple(Fraction(p) for p in WINOGRAD_POINTS[m])
    tile = m + 2
    f = [abs(math.prod((a - b for b in points if b != a), start=Fraction(1))) for a in points] + [Fraction(1)]
    vm, vr = _vandermonde(points, m), _vandermonde(points, 3)
    inv_t = [list(col) for col in zip(*_inverse(_vandermonde(points, tile)))]
    at = tuple(zip(*vm))
    g = tuple(tuple(v / f[j] for v in vr[j]) for j in range(tile))
    bt = tuple(tuple(v * f[j] for v in inv_t[j]) for j in range(tile))
    return at, g, bt


def winograd_matrices(m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(A^T, G, B^T)`` of F(m, 3) in float64, built from :data:`WINOGRAD_POINTS` and infinity.

    Toom-Cook for the correlation ``y_i = sum_k d_(i+k) g_k`` (the transpose of polynomial multiplication,
    as in Lavin's wincnn): ``y = A^T [(G g) * (B^T d)]``; in 2-d ``Y = A^T [(G g G^T) * (B^T d B)] A``.

    Raises:
        ArgumentError: ``m`` is not one of 2..6.

    Shape:
        ``A^T (m, m + 2)``, ``G (m + 2, 3)``, ``B^T (m + 2, m + 2)``.

    >>> at, g, bt = winograd_matrices(2)
    >>> bt.tolist()[0], g.tolist()[1]
    ([1.0, 0.0, -1.0, 0.0], [0.5, 0.5, 0.5])
    """
    at, g, bt = (np.array([[float(v) for v in row] for row in mat]) for mat in _exact(m))
    return at, g, bt


def _rounded(mat: tuple[tuple[Fraction, ...], ...]) -> int:
    """1 if some constant is not representable with :data:`_SAFE_BITS` significand bits, else 0."""
    def exact(v: Fraction) -> bool:
        den, num = v.denominator, abs(v.numerator)
        while num and num % 2 == 0:
            num //= 2
        return den & (den - 1) == 0 and num < 2**_SAFE_BITS
    return int(not all(exact(v) for row in mat for v in row))


def winograd_terms(m: int, channels: int, *, rank: int = 2) -> int:
    """Roundings n along any path of an honest Winograd F(m, 3), so ``|y_hat - y| <= gamma_n Gw``.

    Per spatial dim, the input transform is an inner product of m + 2 terms, the kernel transform of 3 and the
    output transform of m + 2, each plus one if its constants need rounding (e.g. 1/6; judged for every
    format down to bfloat16); then one product and ``channels - 1`` additions (any order).

    Args:
        m: output tile size, 2..6.
        channels: input channels per group, summed in the transformed domain.
        rank: spatial dims, 1 or 2 (2 is also a valid, looser count for 1-d).

    Raises:
        ArgumentError: bad ``m``, ``channels`` or ``rank``.

    Shape:
        ``n = rank (2 (m + 2) + 3 + c_A + c_B + c_G) + channels``.

    >>> winograd_terms(2, 1, rank=1), winograd_terms(4, 16)
    (12, 48)
    """
    at, g, bt = _exact(m)
    if not isinstance(channels, int) or channels < 1:
        raise ArgumentError(f"channels must be a positive int (input channels per group), got {brief(channels)}")
    if rank not in (1, 2):
        raise ArgumentError(f"Winograd bounds cover rank 1 or 2, got rank {brief(rank)}")
    per_dim = 2 * (m + 2) + 3 + _rounded(at) + _rounded(bt) + _rounded(g)
    return rank * per_dim + channels


def _contract(arr: np.ndarray, mat: np.ndarray, axis: int) -> np.ndarray:
    """``arr`` with ``axis`` replaced by ``mat @`` it (mat: rows x arr.shape[axis])."""
    return np.moveaxis(np.tensordot(mat, arr, axes=([1], [axis])), 0, axis)


def _check_winograd(xa: np.ndarray, wa: np.ndarray, groups: int) -> None:
    _check_conv(xa, wa, groups)
    if xa.ndim not in (3, 4) or wa.shape[2:] != (3,) * (xa.ndim - 2):
        raise ArgumentError(f"Winograd F(m, 3) bounds need a rank 1 or 2 kernel of size 3 per dim, got kernel "
                            f"{wa.shape}; use fft_error_bound or the direct bound for other convolutions")
    if min(xa.shape[2:]) < 3:
        raise ShapeError(f"the padded input {xa.shape[2:]} is narrower than the 3-wide kernel; no output")


def winograd_gauge(x: Any, w: Any, *, m: int, groups: int = 1) -> np.ndarray:
    """Winograd's analogue ``Gw`` of ``G = conv(|x|, |w|)``, for any tile origin: ``|y_hat - y| <= gamma_n Gw``.

    For an output at position j (per dim) of a tile reading the input tile d (zero past the input),
    ``sum_c |A^T| ((|G| |w_oc| |G^T|) * (|B^T| |d_c| |B|)) |A|`` at row j (Barabasz et al. 2020); the gauge
    takes the max over the m^rank positions, so it holds whatever tiling an implementation uses. Stride 1,
    dilation 1 (the only F(m, 3) there is).

    Args:
        x: padded input ``(N, C_in, *spatial)``, rank 1 or 2.
        w: kernel ``(C_out, C_in // groups, 3[, 3])``.
        m: output tile size, 2..6.
        groups: channel groups.

    Returns:
        float64 gauge, the shape of the convolution's output.

    Raises:
        ArgumentError: bad ``m``, rank or kernel size.
        ShapeError: shapes that do not fit each other or ``groups``.

    Shape:
        ``(N, C_out, *(n_i - 2))``.

    >>> winograd_gauge(np.ones((1, 1, 4)), np.ones((1, 1, 3)), m=2).shape
    (1, 1, 2)
    """
    with np.errstate(over="ignore", invalid="ignore"):  # inf inputs give an inf gauge, judged by equality
        return _winograd_gauge(x, w, m=m, groups=groups)


def _winograd_gauge(x: Any, w: Any, *, m: int, groups: int = 1) -> np.ndarray:
    """:func:`winograd_gauge` itself."""
    xa, wa = np.abs(np.asarray(x, dtype=np.float64)), np.abs(np.asarray(w, dtype=np.float64))
    _check_winograd(xa, wa, groups)
    at, g, bt = (np.abs(v) for v in winograd_matrices(m))
    rank, tile = xa.ndim - 2, m + 2
    out = tuple(ConvAxis(n, 3).out for n in xa.shape[2:])
    v = np.pad(xa, [(0, 0), (0, 0)] + [(m - 1, m - 1)] * rank)
    for i in range(rank):
        v = sliding_window_view(v, tile, axis=2 + i) @ bt.T  # (N, C, *starts, l_1 .. l_i)
    u = wa
    for i in range(rank):
        u = _contract(u, g, 2 + i)  # (O, Cg, *l)
    y = _channel_sum(v, u, groups)  # (N, O, *starts, *l)
    for i in range(rank):
        y = _contract(y, at, 2 + rank + i)  # (N, O, *starts, *j)
    best = np.zeros((xa.shape[0], wa.shape[0], *out))
    for pos in itertools.product(range(m), repeat=rank):
        window = [slice(m - 1 - j, m - 1 - j + n) for j, n in zip(pos, out)]
        where: tuple[Any, ...] = (Ellipsis, *window, *pos)
        np.maximum(best, y[where], out=best)
    return best


def _channel_sum(v: np.ndarray, u: np.ndarray, groups: int) -> np.ndarray:
    """``M[n, o, *s, *l] = sum_{c in group(o)} u[o, c, *l] v[n, c, *s, *l]`` as one batched matmul."""
    rank = (v.ndim - 2) // 2
    n = v.shape[0]
    starts, tiles = v.shape[2:2 + rank], v.shape[2 + rank:]
    o, cg = u.shape[:2]
    vv = v.reshape(n, groups, cg, math.prod(starts), math.prod(tiles)).transpose(1, 4, 0, 3, 2)
    uu = u.reshape(groups, o // groups, cg, math.prod(tiles)).transpose(0, 3, 2, 1)
    mm = (vv.reshape(groups, math.prod(tiles), -1, cg) @ uu)  # (g, L, n * S, o/g)
    mm = mm.reshape(groups, *tiles, n, *starts, o // groups)
    order = (rank + 1, 0, 2 * rank + 2, *range(rank + 2, 2 * rank + 2), *range(1, rank + 1))
    return mm.transpose(order).reshape(n, o, *starts, *tiles)
