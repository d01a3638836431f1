"""The verdict: do two results agree up to floating-point rounding, and on what evidence?

Per output element e, a result computed with unit roundoff u obeys the rigorous bound

    |fl(y_e) - y_e| <= beta(K_e) G_e + A_e

with G = op(|x|, |w|) + |b| (the gauge), K_e the number of products that actually reach e
(padding, dilation holes and transposed strides remove terms; +1 for a bias),
beta(K) = 2 u_in + gamma_K + u_out (1 + gamma_K), gamma_K = K u / (1 - K u) (Higham, *Accuracy and
Stability of Numerical Algorithms*, 2nd ed., Lemma 3.1) and an absolute underflow term
A_e = 2 K_e tiny + F_e: each product and each sum loses at most the smallest normal number
``tiny`` to underflow or flush-to-zero, and F_e is the sum of |x||w| over products with a subnormal
input (which flush-to-zero drops). Two results are judged by the sum of their bounds.

The worst-case bound grows like K; honest errors grow like sqrt(K), and a semantic bug's
r = |a - b| / (u G) shrinks like 1 / (u sqrt(K)). So there are three zones per element:

- below the probabilistic threshold (Higham & Mary, SIAM J. Sci. Comput. 41(5), 2019: gamma_K
  replaced by exp(lambda sqrt(K) u + K u^2 / (1 - u)) - 1, lambda chosen so that the chance of any
  honest element of the output exceeding it is below :data:`FAILURE_PROBABILITY`): **equivalent**;
- above the rigorous bound: **mismatch**, proven;
- in between: **inconclusive**, with the reason; :func:`convbridge.compare` then re-runs in float64,
  where the bound is ~1e-16 and no bug can hide.

A bound that would accept an all-zeros output for most elements, or that allows differences of
:data:`INCONCLUSIVE_FRACTION` of the gauge, has no power: never "equivalent" on its own.

FFT results are judged normwise per output slice (:func:`convbridge.bounds.fft_error_bound`) and
Winograd results by a bound through the transforms (:func:`convbridge.bounds.winograd_gauge`).
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar, cast

import numpy as np

from convbridge._types import Shape
from convbridge.precision import Precision

_T = TypeVar("_T")

__all__ = ["PairResult", "ParityReport", "Gauges", "judge_pair", "worst_verdict", "VERDICTS",
           "INCONCLUSIVE_FRACTION", "FAILURE_PROBABILITY", "FAMILIES", "NO_POWER_FRACTION"]

VERDICTS = ("identical", "equivalent", "inconclusive", "mismatch")
#: A threshold of this fraction of the gauge or more cannot separate rounding from a bug.
INCONCLUSIVE_FRACTION = 0.05
#: The test has no power when an all-zeros output would pass on more than this fraction of the elements.
NO_POWER_FRACTION = 0.5
#: The test has no power when its threshold cannot see a relative change of this size on most elements (a kernel
#: off by 1e-3, a bias dropped at large K): then only a re-run in float64 can tell such a bug from rounding.
POWER_RELATIVE = 1e-4
#: The chance that an honest result exceeds the probabilistic threshold anywhere in its output.
FAILURE_PROBABILITY = 1e-6
#: Algorithm families with their own error bounds.
FAMILIES = ("direct", "fft", "winograd")


def _quietly(fn: Callable[..., _T]) -> Callable[..., _T]:
    """Run ``fn`` without NumPy's overflow / invalid-value warnings: a result that overflows its dtype is judged
    (an infinity where the reference is finite is a mismatch), not reported twice as console noise."""
    @functools.wraps(fn)
    def quiet(*args: Any, **kwargs: Any) -> _T:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # e.g. nanmax of an all-NaN difference (inf - inf)
            return fn(*args, **kwargs)

    return quiet


def lam(terms: float, elements: int, failure: float = FAILURE_PROBABILITY, u: float = 2.0**-24) -> float:
    """lambda such that no honest element of ``elements`` exceeds the probabilistic threshold, except with
    probability ``failure``: elements * Q(lambda, K) <= failure with Q <= 2 K exp(-lambda^2 (1 - u)^2 / 2).

    >>> round(lam(262144, 10**6), 2)
    9.03
    """
    n = max(float(terms), 1.0) * max(int(elements), 1)
    return math.sqrt(2 * math.log(2 * n / failure)) / (1 - u)


@dataclass(frozen=True)
class Gauges:
    """What the bounds read, computed once per judged op from its inputs (float64).

    Attributes:
        gauge: G = op(|x|, |w|) + |b|.
        terms: K_e, products that reach each element (+1 with a bias), broadcastable to the output.
        reference: the float64 reference values (for the power check), or None.
        flushed: F_e, sum of |x||w| over products with a subnormal input (0 when there are none).
        fft: ``u -> per-slice bound`` on ||fl(y) - y||_2, broadcastable to the output (spatial axes size 1).
        winograd: ``u -> elementwise bound`` on |fl(y) - y| for F(m, 3), m = 2..6.
        spatial_axes: the output's spatial axes (the FFT's norms run over them).
        parts: for a complex op, each part's gauge on a trailing axis of 2 (real: op(|Re x|, |Re w|) +
            op(|Im x|, |Im w|) + |Re b|; imaginary: ``gauge``, which Gauss's trick needs), else None.
    """

    gauge: np.ndarray
    terms: np.ndarray
    reference: np.ndarray | None = None
    flushed: np.ndarray | float = 0.0
    fft: Callable[[float], np.ndarray] | None = None
    winograd: Callable[[float], np.ndarray] | None = None
    spatial_axes: tuple[int, ...] = ()
    parts: np.ndarray | None = None
    #: What the judge derives from these gauges for one pair of precisions (:class:`_Limits`), kept for the next pair.
    memo: dict[Any, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    @classmethod
    def uniform(cls, gauge: np.ndarray, terms: int | np.ndarray) -> Gauges:
        """Every element has the same K."""
        return cls(np.asarray(gauge, np.float64), np.asarray(terms, np.float64))


@dataclass(frozen=True)
class PairResult:
    """How result ``a`` compares with result ``b`` (``b`` is the reference when it is one).

    ``max_ratio`` is the largest r = |a - b| / (u G + A) over the elements; ``allowed_ratio`` the
    rigorous bound and ``threshold_ratio`` the probabilistic one, both in units of r at the element
    with the largest r (they vary with K_e). ``evidence`` says what decided; ``reason`` why a result
    is inconclusive (and what would decide it).
    """

    a: str
    b: str
    max_abs: float
    max_rel: float
    array_equiv: bool
    max_ratio: float
    allowed_ratio: float
    worst_index: tuple[int, ...]
    unit_roundoff: float
    n_different: int  # elements not bitwise equal (to the reference rounded to a's dtype, for the reference)
    n_exceeding: int
    size: int
    verdict: str
    threshold_ratio: float = math.nan
    n_middle: int = 0  # elements between the probabilistic threshold and the rigorous bound
    zero_pass_fraction: float = 0.0  # elements where an all-zeros output would pass the threshold
    weak: bool = False  # equivalent, but blind to a relative change of POWER_RELATIVE on most elements
    evidence: str = ""
    reason: str = ""
    family: str = "direct"
    #: The reduced-precision input format the bound allowed (``"TF32"``, ``"bf16"``, ``"bf16x3"``), else ``""``.
    under: str = ""
    #: Elements that are inf or NaN where the other result is not, explained by overflow (then "inconclusive").
    overflowed: int = 0

    @property
    def label(self) -> str:
        """The verdict in words: ``"equivalent under TF32"`` when the bound allowed reduced-precision inputs.

        >>> PairResult("a", "b", 0, 0, False, 1, 2, (), 2.0**-24, 1, 0, 1, "equivalent", under="TF32").label
        'equivalent under TF32'
        """
        return f"{self.verdict} under {self.under}" if self.under and self.verdict == "equivalent" else self.verdict

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["label"] = self.label
        d["worst_index"] = list(self.worst_index)
        return {k: (None if isinstance(v, float) and not math.isfinite(v) and k != "max_ratio" else v)
                for k, v in d.items()}


@_quietly
def _ratios(a: np.ndarray, b: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Elementwise |a - b| / scale: 0 where equal (NaN == NaN), inf where scale = 0 and they differ."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    same = (a64 == b64) | (np.isnan(a64) & np.isnan(b64))
    r = np.abs(a64 - b64) / scale
    r = np.where(np.isnan(r), np.inf, r)
    return np.where(same, 0.0, r)


def _model(p: Precision, g: Gauges, family: str, lam_: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rigorous, probabilistic, absolute part) bounds on |fl(y) - y| of one result, elementwise."""
    k = g.terms
    absolute = (2 * k + (1 if p.u_out else 0)) * p.underflow + (g.flushed if p.u > 2.0**-53 else 0.0)
    if family == "winograd":
        if g.winograd is None:
            raise ValueError("no Winograd gauge was computed")
        rigorous = g.winograd(p.u) + 2 * p.u_in * g.gauge + absolute
        return rigorous, rigorous, absolute
    rigorous = p.bounds(k) * g.gauge + absolute
    return rigorous, p.probable(k, lam_) * g.gauge + absolute, absolute


@_quietly
def judge_pair(
    names: tuple[str, str],
    a: np.ndarray,
    b: np.ndarray,
    gauge: np.ndarray | Gauges,
    terms: int | np.ndarray | None,
    precisions: tuple[Precision, Precision],
    *,
    b_is_reference: bool = False,
    families: tuple[str, str] = ("direct", "direct"),
    failure: float = FAILURE_PROBABILITY,
) -> tuple[PairResult, np.ndarray]:
    """Judge two results of the same op; return the verdict and the elementwise ratio map r.

    Args:
        names: labels of ``a`` and ``b``.
        a, b: the two results, same shape.
        gauge: a :class:`Gauges`, or G = op(|x|, |w|) + |b| in float64 (then ``terms`` gives K).
        terms: K per element (an int, or a map broadcastable to the output); ignored with a :class:`Gauges`.
        precisions: what each result's computation used.
        b_is_reference: ``b`` is the float64 reference; "identical" then means ``a`` equals
            the reference correctly rounded to ``a``'s dtype.
        families: each result's algorithm family (``"direct" | "fft" | "winograd"``).
        failure: the probabilistic threshold's failure probability over the whole output.
    """
    g = gauge if isinstance(gauge, Gauges) else Gauges.uniform(gauge, 0 if terms is None else terms)
    if g.reference is None and b_is_reference:
        g = replace(g, reference=np.asarray(b, np.float64))
    a, b = np.asarray(a), np.asarray(b)
    pa, pb = precisions
    u = max(pa.u, pb.u, pa.u_out, pb.u_out)
    kmax = float(np.max(g.terms)) if np.size(g.terms) else 0.0
    lam_ = lam(kmax, a.size, failure, u)
    if "fft" in families:
        rounded_b = rounded(b, a.dtype) if b_is_reference else b
        common, identical = _differences(names, a, b, rounded_b, u)
        return _normwise(common, a, b, g, (pa, pb), families, lam_, identical, rounded_b if b_is_reference else None)
    fam = "winograd" if "winograd" in families else "direct"
    lim = _limits(g, (pa, pb), families, lam_, u, a.shape)
    excused = _overflowed(a, b, g, (pa, pb), lim, b_is_reference)
    n_over = _count_overflowed(excused, a, rounded(b, a.dtype) if b_is_reference and excused is not False else b)
    st = _fast_stats(names, a, b, u, lim, b_is_reference) or _stats(names, a, b, u, lim, b_is_reference, excused)
    r, worst, exceeding, middle = st.r, st.worst, st.exceeding, st.middle
    zero_pass, coarse, blind = lim.power
    allowed_w = float(lim.allowed[worst]) if r.size else 0.0
    threshold_w = float(lim.threshold[worst]) if r.size else 0.0
    if st.identical and not exceeding:
        verdict, evidence, reason = "identical", "bitwise equal" + (" to the correctly rounded reference"
                                                                    if b_is_reference else ""), ""
    elif exceeding:
        verdict, evidence, reason = "mismatch", "rigorous bound" + (" (Winograd)" if fam == "winograd" else ""), ""
    elif n_over:
        verdict, evidence, reason = "inconclusive", "", _overflow_reason(n_over)
    elif middle:
        verdict, evidence = "inconclusive", ""
        reason = (f"{middle} element(s) lie between the probabilistic threshold and the rigorous bound (largest r "
                  f"{st.max_ratio:.3g}; equivalent below {threshold_w:.4g}, mismatch above "
                  f"{allowed_w:.4g} there): a re-run in float64 or on exact integer data decides")
    elif coarse or zero_pass > NO_POWER_FRACTION:
        verdict, evidence = "inconclusive", ""
        reason = (f"the threshold would accept an all-zeros output on {zero_pass:.0%} of the elements"
                  if zero_pass > NO_POWER_FRACTION else
                  f"the threshold allows differences of {coarse:.2g} of the gauge G" if math.isfinite(coarse) else
                  "the bound is infinite (K u >= 1: this dtype cannot bound a sum of so many terms)")
        reason += ": the test has no power here; a re-run in float64 or on exact integer data decides"
    else:
        verdict, reason = "equivalent", ""
        if fam == "winograd":
            evidence = "rigorous bound (Winograd)"
        elif _rigorous_everywhere(lim, r, st.max_ratio):
            evidence = "rigorous bound"
        else:
            evidence = f"probabilistic bound (failure probability {failure:g})"
        if blind > NO_POWER_FRACTION:  # compare re-runs such results in float64
            weak = (f"weak: the threshold cannot see a relative change of {POWER_RELATIVE:g} on {blind:.0%} of the "
                    "elements")
            evidence += f" ({weak})"
    result = PairResult(
        **st.common,
        max_ratio=st.max_ratio,
        allowed_ratio=allowed_w,
        worst_index=tuple(int(i) for i in worst),
        n_exceeding=exceeding,
        verdict=verdict,
        threshold_ratio=threshold_w,
        n_middle=middle,
        zero_pass_fraction=zero_pass,
        weak=bool(blind > NO_POWER_FRACTION) and verdict == "equivalent",
        evidence=evidence,
        reason=reason,
        family=fam,
        under=_under(precisions),
        overflowed=n_over,
    )
    return result, r


def _count_overflowed(excused: np.ndarray | bool, a: np.ndarray, b: np.ndarray) -> int:
    """Excused overflows that differ from the other result (or the correctly rounded reference)."""
    if excused is False:
        return 0
    return int(np.count_nonzero(excused & ~((a == b) | (np.isnan(a) & np.isnan(b)))))


def _overflow_reason(n: int) -> str:
    return (f"{n} element(s) are inf or NaN where the other result (or the correctly rounded reference) is not: a "
            "partial sum, or a value within the rounding bound, passes the format's range, so rounding can explain "
            "them, but they carry no evidence either way (a re-run cannot decide a question of range); rescale the "
            "inputs, or accumulate in a wider dtype (preferred_element_type), to judge them")


def _under(precisions: tuple[Precision, Precision]) -> str:
    """The reduced-precision input formats of a pair's results, for its verdict's label."""
    return " and ".join(dict.fromkeys(p.under for p in precisions if p.under))


@dataclass(frozen=True)
class _Limits:
    """What a pair's ratio map r = |a - b| / scale is held against, elementwise in units of r: the sum of both
    results' rigorous bounds (``allowed``) and probabilistic thresholds (``threshold``), 0 where the gauge is not
    finite. They depend on the gauges and the two precisions only, so the pairs of a report share them.

    ``floor`` is the smallest threshold when no threshold exceeds its bound (then r <= floor decides every element
    at once), else NaN; ``evidence`` says where the probabilistic threshold is the rigorous bound (True or False
    everywhere, or a mask); ``power`` is :func:`_power`'s triple; ``finite``: the gauge is finite everywhere;
    ``positive``: so is the scale."""

    scale: np.ndarray
    allowed: np.ndarray
    threshold: np.ndarray
    floor: float
    evidence: np.ndarray | bool
    power: tuple[float, float, float]
    finite: bool
    positive: bool
    same: np.ndarray | None = None  # the lean path's probable >= rigorous (its evidence, or spare memory)

    def spare(self, shape: Shape) -> tuple[np.ndarray, ...] | None:
        """The lean path's own maps, to be overwritten by the next pair's (None for the general path's)."""
        maps = (self.scale, self.allowed, self.threshold)
        if self.same is None or any(m.shape != tuple(shape) or not m.flags.writeable for m in maps):
            return None
        return (*maps, self.same)


def _limits(g: Gauges, precisions: tuple[Precision, Precision], families: tuple[str, str], lam_: float, u: float,
            shape: Shape) -> _Limits:
    """:class:`_Limits` of a pair, computed once per gauges and pair of precisions (the last one is kept)."""
    key = (tuple((p.u, p.u_in, p.u_out, p.underflow) for p in precisions), families, lam_, u, shape)
    kept = g.memo.get("limits")
    if kept is not None and kept[0] == key:
        return cast(_Limits, kept[1])
    last = g.memo.pop("limits", None)  # free the last pair's maps before making new ones, or reuse them
    spare = last[1].spare(shape) if last is not None else None
    del last
    lim = None
    if families == ("direct", "direct") and _plain(g, shape):
        lim = _lean_limits(g, precisions, lam_, u, shape, spare)
    if lim is None:
        lim = _general_limits(g, precisions, families, lam_, u, shape)
    g.memo["limits"] = (key, lim)
    return lim


def _general_limits(g: Gauges, precisions: tuple[Precision, Precision], families: tuple[str, str], lam_: float,
                    u: float, shape: Shape) -> _Limits:
    """:class:`_Limits` from the definitions, for any gauge (inf, NaN, zeros) and family."""
    (ra, pra, aa), (rb, prb, ab) = (_model(p, g, f, lam_) for p, f in zip(precisions, families))
    rigorous, probable = ra + rb, pra + prb
    del ra, pra, rb, prb
    scale = np.broadcast_to(u * g.gauge + aa + ab, shape)
    finite = _plain(g, shape)
    positive = bool(scale.size == 0 or np.min(scale) > 0)
    allowed, threshold = (np.broadcast_to(_over(bound, scale) if not positive else bound / scale, shape)
                          for bound in (rigorous, probable))
    if not finite:
        keep = np.isfinite(np.broadcast_to(g.gauge, shape))
        allowed, threshold = np.where(keep, allowed, 0.0), np.where(keep, threshold, 0.0)
    ordered = bool(np.all(threshold <= allowed))
    floor = float(np.min(threshold)) if ordered and threshold.size else math.nan
    same = np.broadcast_to(probable >= rigorous, shape)
    evidence: np.ndarray | bool = bool(same.all()) if same.all() or not same.any() else same
    return _Limits(scale, allowed, threshold, floor, evidence, _power(g, np.broadcast_to(probable, shape), shape),
                   finite, positive)


def _lean_limits(g: Gauges, precisions: tuple[Precision, Precision], lam_: float, u: float, shape: Shape,
                 spare: tuple[np.ndarray, ...] | None = None) -> _Limits | None:
    """:class:`_Limits` of two direct results in one sweep over cache-sized rows of the output: the coefficients of
    G are summed on the (small) term map first, (beta_a + beta_b) G + (A_a + A_b) (Higham's bound, term by term).
    None when a coefficient is infinite (K u >= 1), the scale has zeros, or the gauge is not finite and >= 0 (what
    :func:`_general_limits` handles)."""
    k = g.terms
    coef_r = precisions[0].bounds(k) + precisions[1].bounds(k)
    coef_p = precisions[0].probable(k, lam_) + precisions[1].probable(k, lam_)
    absolute = sum((2 * k + (1 if p.u_out else 0)) * p.underflow + (g.flushed if p.u > 2.0**-53 else 0.0)
                   for p in precisions)
    gauge = np.broadcast_to(g.gauge, shape)
    if not (np.all(np.isfinite(coef_r)) and gauge.size and gauge.flags.c_contiguous and _plain(g, shape)):
        return None
    rows = _Rows(shape, gauge, coef_r, coef_p, absolute, g.reference)
    # the last pair's maps, when there were any, save touching fresh pages
    scale, allowed, threshold, same = spare or (*(np.empty(shape) for _ in range(3)), np.empty(shape, bool))
    sweep = _Sweep(_positive(g, shape))
    floor = math.inf
    for i in range(0, rows.count, rows.step):
        gc, cr, cp, ac, ref = rows.at(i)
        sc, al, th = (a.reshape(rows.count, -1)[i: i + rows.step] for a in (scale, allowed, threshold))
        for coef, out in ((u, sc), (cr, al), (cp, th)):  # coef G + A, with no temporaries
            np.multiply(gc, coef, out=out)
            np.add(out, ac, out=out)
        np.greater_equal(th, al, out=same.reshape(rows.count, -1)[i: i + rows.step])
        sweep.power(gc, th, ref)
        if not sweep.scale(sc):
            return None
        np.divide(al, sc, out=al)
        np.divide(th, sc, out=th)
        floor = min(floor, float(np.min(th)))
    evidence: np.ndarray | bool = bool(same.all()) if same.all() or not same.any() else same
    if not np.all(coef_p <= coef_r):  # else threshold <= allowed everywhere (G >= 0, rounding is monotone)
        floor = math.nan
    return _Limits(scale, allowed, threshold, floor, evidence, sweep.result(g.reference is not None), True, True,
                   same)


class _Rows:
    """The output as ``(count, rest)`` rows, ``rest`` spanning the axes the small maps (K, A) vary over, handed out
    ``step`` rows at a time (about :data:`CHUNK` elements)."""

    def __init__(self, shape: Shape, gauge: np.ndarray, *small: Any) -> None:
        maps = [np.asarray(m, np.float64) for m in small[:3]]
        lead = 0
        while lead < len(shape) and all(m.ndim < len(shape) - lead or m.shape[m.ndim - len(shape) + lead] == 1
                                        for m in maps):
            lead += 1
        self.count = math.prod(shape[:lead])
        rest = math.prod(shape[lead:])
        self.step = max(1, CHUNK // max(rest, 1))
        self.gauge = gauge.reshape(self.count, rest)
        tail = len(shape) - lead  # the maps' leading axes (size 1) drop, the rest broadcast to the output's
        self.maps = [np.broadcast_to(m.reshape(m.shape[max(m.ndim - tail, 0):]), shape[lead:]).reshape(1, rest)
                     for m in maps]
        ref = small[3]
        self.ref = None if ref is None else np.broadcast_to(ref, shape).reshape(self.count, rest)

    def at(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """Rows ``i .. i + step``: the gauge, the two coefficients and the absolute term, the reference (or None)."""
        block = slice(i, i + self.step)
        coef_r, coef_p, absolute = self.maps
        return self.gauge[block], coef_r, coef_p, absolute, None if self.ref is None else self.ref[block]


class _Sweep:
    """The reductions of :func:`_lean_limits`: the smallest scale, and :func:`_power`'s counts over the elements
    with G > 0."""

    def __init__(self, positive: bool) -> None:
        self.tested = self.zero = self.blind = 0
        self.coef = -math.inf
        self.positive = positive  # G > 0 everywhere: every element is tested

    def scale(self, sc: np.ndarray) -> bool:
        return bool(np.min(sc) > 0)

    def power(self, gc: np.ndarray, th: np.ndarray, ref: np.ndarray | None) -> None:
        if self.positive or np.min(gc) > 0:
            self.tested += gc.size
            self.coef = max(self.coef, float(np.max(th / gc)))
            if ref is not None:
                mag = np.abs(ref)
                self.zero += int(np.count_nonzero(mag <= th))
                self.blind += int(np.count_nonzero(np.multiply(mag, POWER_RELATIVE, out=mag) <= th))
            return
        positive = gc > 0
        self.tested += int(np.count_nonzero(positive))
        if positive.any():
            t = th[positive]
            self.coef = max(self.coef, float(np.max(t / gc[positive])))
            if ref is not None:
                mag = np.abs(ref[positive])
                self.zero += int(np.count_nonzero(mag <= t))
                self.blind += int(np.count_nonzero(POWER_RELATIVE * mag <= t))

    def result(self, has_reference: bool) -> tuple[float, float, float]:
        if not self.tested:
            return 0.0, 0.0, 0.0
        coarse = self.coef if not math.isfinite(self.coef) or self.coef >= INCONCLUSIVE_FRACTION else 0.0
        if not has_reference:
            return 0.0, coarse, 0.0
        return self.zero / self.tested, coarse, self.blind / self.tested


def _positive(g: Gauges, shape: Shape) -> bool:
    """Whether the gauge is > 0 everywhere (kept with the gauges)."""
    if "positive" not in g.memo:
        gauge = np.broadcast_to(g.gauge, shape)
        g.memo["positive"] = bool(gauge.size and float(np.min(gauge)) > 0)
    return bool(g.memo["positive"])


def _plain(g: Gauges, shape: Shape) -> bool:
    """Whether the gauge is finite and >= 0 everywhere and the flushed products finite (kept with the gauges)."""
    if "plain" not in g.memo:
        gauge = np.broadcast_to(g.gauge, shape)
        plain = gauge.size == 0 or (math.isfinite(float(np.max(gauge))) and float(np.min(gauge)) >= 0)
        g.memo["plain"] = bool(plain and np.all(np.isfinite(g.flushed)))
    return bool(g.memo["plain"])


def _rigorous_everywhere(lim: _Limits, r: np.ndarray, max_ratio: float) -> bool:
    """Whether the rigorous bound alone decided: where the probabilistic threshold is below it, nothing differs."""
    if max_ratio == 0:
        return True
    if isinstance(lim.evidence, bool):
        return lim.evidence
    return bool(np.all(lim.evidence | (r == 0)))


@dataclass(frozen=True)
class _Stats:
    """One pair's differences: the common fields of its :class:`PairResult`, whether it is bitwise identical
    (to the rounded reference), its ratio map r, the largest r and where, and how many elements exceed the rigorous
    bound (``exceeding``) or lie between threshold and bound (``middle``)."""

    common: dict[str, Any]
    identical: bool
    r: np.ndarray
    max_ratio: float
    worst: tuple[int, ...]
    exceeding: int
    middle: int


def _differences(names: tuple[str, str], a: np.ndarray, b: np.ndarray, rounded_b: np.ndarray,
                 u: float) -> tuple[dict[str, Any], bool]:
    """The common fields of a :class:`PairResult` and whether ``a`` is bitwise ``rounded_b`` (any values)."""
    identical = a.dtype == rounded_b.dtype and np.array_equal(a, rounded_b, equal_nan=True)
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    common: dict[str, Any] = dict(
        a=names[0], b=names[1],
        max_abs=float(np.nanmax(diff)) if diff.size else 0.0,
        max_rel=_max_rel(diff, b),
        array_equiv=bool(np.array_equiv(a, b)),
        unit_roundoff=u,
        n_different=int(np.count_nonzero(~((a == rounded_b) | (np.isnan(a) & np.isnan(rounded_b))))),
        size=int(a.size),
    )
    return common, bool(identical)


def _stats(names: tuple[str, str], a: np.ndarray, b: np.ndarray, u: float, lim: _Limits,
           b_is_reference: bool, excused: np.ndarray | bool = False) -> _Stats:
    """:class:`_Stats` for any values (inf, NaN, a zero scale), from the definitions."""
    rounded_b = rounded(b, a.dtype) if b_is_reference else b
    common, identical = _differences(names, a, b, rounded_b, u)
    r = _ratios(a, b, lim.scale)
    if b_is_reference:  # the correctly rounded reference is always right, even where it overflows to inf
        r = np.where((a == rounded_b) | (np.isnan(a) & np.isnan(rounded_b)), 0.0, r)
    if excused is not False:
        r = np.where(excused, 0.0, r)
    exceeding = int(np.count_nonzero(r > lim.allowed))
    middle = int(np.count_nonzero((r > lim.threshold) & (r <= lim.allowed)))
    worst = np.unravel_index(int(np.argmax(r)), r.shape) if r.size else ()
    return _Stats(common, identical, r, float(r.max()) if r.size else 0.0, tuple(int(i) for i in worst), exceeding,
                  middle)


def _overflowed(a: np.ndarray, b: np.ndarray, g: Gauges, precisions: tuple[Precision, Precision],
                lim: _Limits, b_is_reference: bool) -> np.ndarray | bool:
    """Elements where a non-finite result is an honest overflow, not a bug (False when there are none):

    - the final rounding: a result is +-inf where a value within its bound rounds to that infinity in its dtype
      (:func:`_may_overflow`; the correctly rounded reference itself may be inf);
    - the accumulation: a result is +inf (-inf) where a partial sum may exceed the range of the format it
      accumulates in upward (downward): the positive (negative) terms sum to P = (G + y) / 2 (N = (G - y) / 2),
      and P (1 + beta) reaches the format's overflow threshold; NaN (inf - inf) where both may. The rounding
      bound holds only for a computation that does not overflow;
    - no bound at all: the gauge itself overflows float64 while the reference is finite (finite inputs whose
      products pass float64's range), whatever the results are there.
    """
    finite_gauge = lim.finite
    if np.isfinite(a).all() and np.isfinite(b).all() and finite_gauge:
        return False
    out = _may_overflow(a, b, lim) | (False if b_is_reference else _may_overflow(b, a, lim))
    if not finite_gauge:  # inf inputs give an infinite gauge and a non-finite reference: judged by equality
        ref = b if g.reference is None and b_is_reference else g.reference
        known = np.ones(a.shape, bool) if ref is None else np.isfinite(np.broadcast_to(ref, a.shape))
        out = out | (~np.isfinite(np.broadcast_to(g.gauge, a.shape)) & known)
    for res, p in zip((a, b)[:1 if b_is_reference else 2], precisions):
        if _floating(res.dtype) and not np.isfinite(res).all():
            top = _ACCUMULATION_TOP.get(float(p.u), _overflow_threshold(res.dtype))
            grow = 1 + p.bounds(g.terms)
            gauge = np.broadcast_to(g.gauge, res.shape)
            ref = gauge if g.reference is None else np.broadcast_to(g.reference, res.shape)
            # the positive and the negative terms sum to P = (G + y) / 2 and N = (G - y) / 2: partial sums lie in
            # [-N (1 + beta), P (1 + beta)]; an infinite gauge (inf inputs) is judged by equality
            up = np.isfinite(gauge) & ((gauge + ref) / 2 * grow >= top)
            down = np.isfinite(gauge) & ((gauge - ref) / 2 * grow >= top)
            out = out | (res == np.inf) & up | (res == -np.inf) & down | np.isnan(res) & up & down
    return out


def rounded(b: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``b`` (float64) correctly rounded to ``dtype``. NumPy's casts round correctly; ml_dtypes' bfloat16 goes
    through float32 and would round twice (1 + 2**-8 + 2**-30 became 1.0, not 1 + 2**-7), so for it the float32
    step rounds to odd first, which makes the second rounding the correct one.

    >>> import ml_dtypes
    >>> float(rounded(np.array(1 + 2.0**-8 + 2.0**-30), np.dtype(ml_dtypes.bfloat16)))
    1.0078125
    """
    if dtype.name != "bfloat16" or b.dtype != np.float64:
        return b.astype(dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        t = b.astype(np.float32)
        inexact = np.isfinite(b) & (t.astype(np.float64) != b) & np.isfinite(t)
        if inexact.any():  # round to odd: toward zero, then the last bit set
            toward = np.where(np.abs(t.astype(np.float64)) > np.abs(b), np.nextafter(t, np.float32(0)), t)
            t = np.where(inexact, (toward.view(np.uint32) | np.uint32(1)).view(np.float32), t)
        return t.astype(dtype)


def _may_overflow(a: np.ndarray, b: np.ndarray, lim: _Limits) -> np.ndarray | bool:
    """Where ``a`` is +-inf, ``b`` finite, and a value within the allowed difference of ``b`` (toward ``a``'s sign)
    rounds to that infinity in ``a``'s dtype: an honest overflow, as the correctly rounded value of a result within
    its bound would be (|b| + allowed >= the dtype's overflow threshold, max (2 - u) / (2 - 2u))."""
    if not _floating(a.dtype) or not np.isinf(a).any():
        return False
    top = _overflow_threshold(a.dtype)
    b64 = b.astype(np.float64)
    reach = np.abs(b64) + np.where(np.isfinite(lim.allowed), lim.allowed * lim.scale, 0.0)
    return np.isinf(a) & np.isfinite(b64) & (np.sign(a) * b64 >= 0) & (reach >= top)


def _floating(dtype: np.dtype) -> bool:
    """A real float dtype, the ml_dtypes formats (kind "V") included."""
    return dtype.kind == "f" or dtype.name in ("bfloat16", "float8_e4m3fn", "float8_e5m2")


def _bfloat16() -> Any:
    import ml_dtypes

    return ml_dtypes.bfloat16


def _overflow_threshold(dtype: np.dtype) -> float:
    """The smallest magnitude that rounds to inf in ``dtype`` (round to nearest): max + half an ulp of max."""
    try:
        info: Any = np.finfo(dtype)
    except ValueError:  # bfloat16 and the other ml_dtypes formats
        import ml_dtypes

        info = ml_dtypes.finfo(dtype)
    big, u = float(info.max), float(info.eps) / 2
    return big * (2 - u) / (2 - 2 * u)


#: The overflow threshold of each accumulation format, by unit roundoff (bfloat16 has float32's range).
_ACCUMULATION_TOP = {2.0**-53: _overflow_threshold(np.dtype(np.float64)),
                     2.0**-24: _overflow_threshold(np.dtype(np.float32)),
                     2.0**-11: _overflow_threshold(np.dtype(np.float16)),
                     2.0**-8: _overflow_threshold(np.dtype(_bfloat16()))}

_NATIVE = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
#: Elements per step of :func:`_fast_stats`: its dozen temporaries stay in cache.
CHUNK = 2**15


def _fast_stats(names: tuple[str, str], a: np.ndarray, b: np.ndarray, u: float, lim: _Limits,
                b_is_reference: bool) -> _Stats | None:
    """:class:`_Stats` in one sweep over cache-sized chunks, when both results and the gauge are finite, the scale
    positive and the arrays contiguous (what :func:`_stats` computes then, with the NaN and inf cases left out);
    None otherwise."""
    if not (lim.finite and lim.positive and a.size and a.shape == b.shape and a.dtype in _NATIVE
            and b.dtype in _NATIVE and a.flags.c_contiguous and b.flags.c_contiguous
            and lim.scale.flags.c_contiguous):
        return None
    af, bf, sf = a.reshape(-1), b.reshape(-1), lim.scale.reshape(-1)
    r = np.empty(a.size)
    d, rel = np.empty(min(CHUNK, a.size)), np.empty(min(CHUNK, a.size))
    max_abs, max_rel, max_ratio, flat, n_same = 0.0, 0.0, -math.inf, 0, 0
    for start in range(0, a.size, CHUNK):
        ac, bc = af[start: start + CHUNK], bf[start: start + CHUNK]
        dc, rc = np.subtract(ac, bc, out=d[: ac.size], dtype=np.float64), r[start: start + ac.size]
        np.abs(dc, out=dc)
        m = float(np.max(dc))
        if not math.isfinite(m):  # an inf or NaN somewhere: the definitions handle it
            return None
        if m:
            max_abs = max(max_abs, m)
            q = np.divide(dc, np.abs(bc, out=rel[: ac.size]), out=rel[: ac.size])  # 0 / 0 where d = b = 0: ignored
            max_rel = max(max_rel, float(np.nanmax(q)))
        np.divide(dc, sf[start: start + ac.size], out=rc)  # 0 where a = b (scale > 0)
        if b_is_reference:
            same = ac == bc.astype(a.dtype)  # no NaN: bitwise equal to the reference rounded to a's dtype
            n_same += int(np.count_nonzero(same))
            np.copyto(rc, 0.0, where=same)
        else:
            n_same += ac.size - int(np.count_nonzero(dc))
        i = int(np.argmax(rc))
        if rc[i] > max_ratio:  # the first of the largest, as argmax over the whole map
            max_ratio, flat = float(rc[i]), start + i
    ratios = r.reshape(a.shape)
    n_different = a.size - n_same
    common = dict(a=names[0], b=names[1], max_abs=max_abs, max_rel=max_rel, array_equiv=max_abs == 0,
                  unit_roundoff=u, n_different=n_different, size=int(a.size))
    if max_ratio <= lim.floor:  # below every threshold (NaN floor: never)
        exceeding = middle = 0
    else:
        exceeding = int(np.count_nonzero(ratios > lim.allowed))
        middle = int(np.count_nonzero((ratios > lim.threshold) & (ratios <= lim.allowed)))
    worst = tuple(int(i) for i in np.unravel_index(flat, a.shape))
    identical = n_different == 0 and (a.dtype == b.dtype or b_is_reference)
    return _Stats(common, identical, ratios, max_ratio, worst, exceeding, middle)


def _over(bound: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """bound / scale in units of r: 0 where both are 0 (nothing may differ), inf where only the scale is."""
    return np.where(bound == 0, 0.0, bound / np.where(scale == 0, 1.0, scale) + np.where(scale == 0, np.inf, 0.0))


def _max_rel(diff: np.ndarray, b: np.ndarray) -> float:
    if not diff.size:
        return 0.0
    rel = np.where(diff == 0, 0.0, diff / np.abs(b.astype(np.float64)))
    return float(np.nanmax(rel))


def _power(g: Gauges, threshold: np.ndarray, shape: Shape) -> tuple[float, float, float]:
    """(fraction of tested elements an all-zeros output would pass, the threshold's largest fraction of G when
    that is coarse (else 0), fraction of tested elements where it cannot see a relative change of POWER_RELATIVE)."""
    gauge = np.broadcast_to(g.gauge, shape)
    if _plain(g, shape) and gauge.size and float(np.min(gauge)) > 0:  # every element is tested: no gathers
        return _power_all(g, threshold, gauge, shape)
    tested = (gauge > 0) & np.isfinite(gauge)  # non-finite elements are judged by equality alone
    n = int(np.count_nonzero(tested))
    if not n:
        return 0.0, 0.0, 0.0
    coef = float(np.max(threshold[tested] / gauge[tested]))
    coarse = coef if not math.isfinite(coef) or coef >= INCONCLUSIVE_FRACTION else 0.0
    if g.reference is None:
        return 0.0, coarse, 0.0
    ref = np.broadcast_to(np.abs(g.reference), shape)[tested]
    t = threshold[tested]
    return (float(np.count_nonzero(ref <= t)) / n, coarse,
            float(np.count_nonzero(POWER_RELATIVE * ref <= t)) / n)


def _power_all(g: Gauges, threshold: np.ndarray, gauge: np.ndarray, shape: Shape) -> tuple[float, float, float]:
    """:func:`_power` where every element is tested (a finite, positive gauge)."""
    n = gauge.size
    coef = float(np.max(threshold / gauge))
    coarse = coef if not math.isfinite(coef) or coef >= INCONCLUSIVE_FRACTION else 0.0
    if g.reference is None:
        return 0.0, coarse, 0.0
    if "absolute reference" not in g.memo:
        g.memo["absolute reference"] = np.abs(g.reference)
    ref = np.broadcast_to(g.memo["absolute reference"], shape)
    return (float(np.count_nonzero(ref <= threshold)) / n, coarse,
            float(np.count_nonzero(POWER_RELATIVE * ref <= threshold)) / n)


def _normwise(common: dict[str, Any], a: np.ndarray, b: np.ndarray, g: Gauges, precisions: tuple[Precision, Precision],
              families: tuple[str, str], lam_: float, identical: bool,
              rounded_b: np.ndarray | None) -> tuple[PairResult, np.ndarray]:
    """FFT results: ||a - b||_2 per output slice against the sum of both results' normwise bounds, with the same
    power checks as elementwise (per slice: would an all-zeros slice pass, would a 1e-4 relative change show)."""
    axes = g.spatial_axes
    bounds = []
    for p, fam in zip(precisions, families):
        if fam == "fft":
            if g.fft is None:
                raise ValueError("no FFT bound was computed")
            # the bias addition (u G), underflow, and a final rounding to a 16-bit dtype (u_out (1 + u) |y|)
            final = p.u_out * (1 + p.u) * (np.abs(g.reference) + p.u * g.gauge) if p.u_out and g.reference is \
                not None else 0.0
            bounds.append(np.asarray(g.fft(p.u)) * (1 + 2 * p.u_in / p.u) * (1 + p.u_out) + np.sqrt(np.sum(
                np.broadcast_to(((2 * g.terms + 1) * p.underflow + g.flushed + p.u * g.gauge + final) ** 2, a.shape),
                axis=axes, keepdims=True)))
        else:
            rig = _model(p, g, fam, lam_)[0]
            bounds.append(np.sqrt(np.sum(np.broadcast_to(rig, a.shape) ** 2, axis=axes, keepdims=True)))
    bound = bounds[0] + bounds[1]
    d = np.abs(a.astype(np.float64) - b.astype(np.float64))
    if rounded_b is not None:
        d = np.where((a == rounded_b) | (np.isnan(a) & np.isnan(rounded_b)), 0.0, d)
    excused = _fft_overflowed(a, b, g, precisions, bound, axes, rounded_b is not None)
    if excused is not False:
        d = np.where(excused, 0.0, d)
    dn = np.sqrt(np.sum(np.where(np.isnan(d), np.inf, d) ** 2, axis=axes, keepdims=True))
    u = common["unit_roundoff"]
    gn = np.sqrt(np.sum(np.broadcast_to(g.gauge, a.shape) ** 2, axis=axes, keepdims=True))
    scale = u * gn
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(dn == 0, 0.0, dn / scale)
        allowed = bound / scale
    r = np.where(np.isnan(r), np.inf, r)
    # a slice whose bound is not finite (inf or NaN in the inputs) is judged by equality, NaN equal to NaN: an FFT
    # spreads a non-finite input over its whole slice, where the definition keeps it in the windows that read it
    unequal = (a != b) & ~(np.isnan(a) & np.isnan(b)) & ~np.asarray(excused, bool)
    lost = ~np.isfinite(bound) & np.any(unequal, axis=axes, keepdims=True)
    n_lost = int(np.count_nonzero(lost))  # slices an inf or NaN input reaches: no bound there, only equality
    exceeding = int(np.count_nonzero((dn > bound) & ~lost))
    worst = np.unravel_index(int(np.argmax(r)), r.shape) if r.size else ()
    zero_pass = blind = 0.0
    if g.reference is not None:
        refn = np.broadcast_to(np.sqrt(np.sum(np.broadcast_to(g.reference, a.shape) ** 2, axis=axes, keepdims=True)),
                               bound.shape)
        tested = np.broadcast_to(gn, bound.shape) > 0
        if tested.any():
            zero_pass = float(np.count_nonzero((refn <= bound)[tested])) / int(np.count_nonzero(tested))
            blind = float(np.count_nonzero((POWER_RELATIVE * refn <= bound)[tested])) / int(np.count_nonzero(tested))
    source = "FFT normwise bound (Higham 2002, §24.1)"
    reason, weak = "", False
    n_over = _count_overflowed(excused, a, rounded_b if rounded_b is not None else b)
    if identical and not exceeding:
        verdict, evidence = "identical", "bitwise equal"
    elif exceeding:
        verdict, evidence = "mismatch", source
    elif n_over:
        verdict, evidence, reason = "inconclusive", "", _overflow_reason(n_over)
    elif n_lost:
        verdict, evidence = "inconclusive", ""
        reason = (f"{n_lost} output slice(s) read an inf or NaN input, which an FFT spreads over the whole slice "
                  "(the definition keeps it in the windows that read it), and the results differ there: the FFT "
                  "bound cannot judge them; compare with algorithm='native', or without the non-finite inputs")
    elif zero_pass > NO_POWER_FRACTION:
        verdict, evidence = "inconclusive", ""
        reason = (f"the FFT bound would accept an all-zeros output on {zero_pass:.0%} of the output slices: the test "
                  "has no power here; a re-run in float64 or on exact integer data decides")
    else:
        verdict, evidence, weak = "equivalent", source, blind > NO_POWER_FRACTION
        if weak:
            evidence += (f" (weak: the bound cannot see a relative change of {POWER_RELATIVE:g} on {blind:.0%} of the "
                         "output slices)")
    result = PairResult(**common, max_ratio=float(r.max()) if r.size else 0.0,
                        allowed_ratio=float(allowed[worst]) if r.size else 0.0,
                        worst_index=tuple(int(i) for i in worst), n_exceeding=exceeding, verdict=verdict,
                        threshold_ratio=float(allowed[worst]) if r.size else 0.0, zero_pass_fraction=zero_pass,
                        weak=weak, evidence=evidence, reason=reason, family="fft", under=_under(precisions),
                        overflowed=n_over)
    return result, np.broadcast_to(r, a.shape)


def _fft_overflowed(a: np.ndarray, b: np.ndarray, g: Gauges, precisions: tuple[Precision, Precision],
                    bound: np.ndarray, axes: tuple[int, ...], reference: bool) -> np.ndarray | bool:
    """:func:`_overflowed` for FFT results: a transform's intermediate values are bounded by sums over the whole
    slice, so a non-finite element is excused where the slice's total gauge may exceed the accumulation format's
    range, and a +-inf where a value within the slice's bound (which bounds each element) rounds to it."""
    if np.isfinite(a).all() and np.isfinite(b).all():
        return False
    out = np.zeros(a.shape, bool)
    total = np.sum(np.broadcast_to(g.gauge, a.shape), axis=axes, keepdims=True)
    for res, other, p in list(zip((a, b), (b, a), precisions))[:1 if reference else 2]:
        if not _floating(res.dtype) or np.isfinite(res).all():
            continue
        top = _ACCUMULATION_TOP.get(float(p.u), _overflow_threshold(res.dtype))
        reach = total * (1 + p.bounds(np.max(g.terms, initial=0)))
        out |= ~np.isfinite(res) & np.broadcast_to((reach >= top) & np.isfinite(reach), a.shape)
        o64 = other.astype(np.float64)
        reach = np.abs(o64) + np.where(np.isfinite(bound), bound, 0.0)
        out |= np.isinf(res) & np.isfinite(o64) & (np.sign(res) * o64 >= 0) & (reach >= _overflow_threshold(res.dtype))
    return out


def worst_verdict(verdicts: Iterable[str]) -> str:
    """The worst of several verdicts (identical < equivalent < inconclusive < mismatch)."""
    return max(verdicts, key=VERDICTS.index, default="identical")


@dataclass(frozen=True)
class ParityReport:
    """The outcome of :func:`convbridge.compare` or :func:`convbridge.verify`.

    Attributes:
        op: the op compared (``"conv"``).
        description: the resolved arguments, in words.
        shape: output shape; dtype: output dtype name.
        terms: K, the most products that reach one output element (+1 with a bias); the verdict reads
            each element's own count (:attr:`term_map`).
        precisions: what each result's computation used, by name.
        pairs: one :class:`PairResult` per compared pair.
        outputs: the results as NumPy arrays, by name (``"reference"`` is float64).
        gauge: G = op(|x|, |w|) + |b| in float64.
        term_map: K per element (broadcastable to the output).
        rerun: the same comparison re-run in float64 when a result landed between the thresholds.
        exact: the comparison ran on integer-valued data where every partial sum is exact.
        notes: what the reader should know (weak evidence, re-runs that could not run).
        gradients: with ``compare(..., grad=True)``, one report per gradient (``"x"``, ``"weight"``, ``"bias"``);
            :attr:`verdict` is then the worst of the output's (:attr:`output_verdict`) and theirs.
    """

    op: str
    description: str
    shape: Shape
    dtype: str
    terms: int
    precisions: Mapping[str, str]
    pairs: tuple[PairResult, ...]
    outputs: Mapping[str, np.ndarray] = field(repr=False, compare=False)
    gauge: np.ndarray = field(repr=False, compare=False)
    term_map: np.ndarray | None = field(default=None, repr=False, compare=False)
    rerun: ParityReport | None = field(default=None, repr=False, compare=False)
    exact: bool = False
    exact_rerun: ParityReport | None = field(default=None, repr=False, compare=False)
    notes: tuple[str, ...] = ()
    gradients: Mapping[str, ParityReport] = field(default_factory=dict, repr=False, compare=False)

    @property
    def output_verdict(self) -> str:
        """The worst verdict of the results against the reference (pairs between results inform, but do not
        downgrade two certified results); the worst of all pairs when no reference was judged."""
        against = [p.verdict for p in self.pairs if p.b == "reference"]
        return worst_verdict(against or [p.verdict for p in self.pairs])

    @property
    def verdict(self) -> str:
        """:attr:`output_verdict`, or with :attr:`gradients` the worst of it and the gradients' verdicts."""
        return worst_verdict([self.output_verdict, *(r.verdict for r in self.gradients.values())])

    @property
    def verdict_label(self) -> str:
        """:attr:`verdict` in words: ``"equivalent under TF32"`` when a decisive result was equivalent only with the
        bound of reduced-precision inputs (what a GPU's TF32 or a TPU's bf16 passes compute); else the verdict."""
        verdict = self.verdict
        if verdict != "equivalent":
            return verdict
        unders = []
        for report in (self, *self.gradients.values()):
            against = [p for p in report.pairs if p.b == "reference"] or list(report.pairs)
            unders += [p.under for p in against if p.under and p.verdict == "equivalent"]
        under = " and ".join(dict.fromkeys(unders))
        return f"{verdict} under {under}" if under else verdict

    @property
    def unit_roundoff(self) -> float:
        """The coarsest unit roundoff used by any compared result."""
        return max(p.unit_roundoff for p in self.pairs)

    def pair(self, a: str, b: str) -> PairResult:
        """The result for the pair ``(a, b)`` in either order."""
        for p in self.pairs:
            if {p.a, p.b} == {a, b}:
                return p
        raise KeyError(f"no pair ({a}, {b}); pairs are {[(p.a, p.b) for p in self.pairs]}")

    def ratio_map(self, a: str, b: str = "reference") -> np.ndarray:
        """Elementwise r = |a - b| / (u G) for a compared pair."""
        p = self.pair(a, b)
        x, y = self.outputs[a], self.outputs[b]
        with np.errstate(divide="ignore", invalid="ignore"):
            if np.iscomplexobj(x) or np.iscomplexobj(y):  # the larger of the real and imaginary parts' ratios
                parts = [_ratios(np.asarray(f(x)), np.asarray(f(y)), np.broadcast_to(p.unit_roundoff * self.gauge,
                                                                                     x.shape))
                         for f in (np.real, np.imag)]
                return np.maximum(*parts)
            return _ratios(x, y, np.broadcast_to(p.unit_roundoff * self.gauge, x.shape))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no arrays)."""
        d = {
            "op": self.op, "description": self.description, "shape": list(self.shape), "dtype": self.dtype,
            "terms": self.terms, "unit_roundoff": self.unit_roundoff, "verdict": self.verdict,
            "verdict_label": self.verdict_label,
            "precisions": dict(self.precisions), "pairs": [p.to_dict() for p in self.pairs],
            "exact": self.exact, "notes": list(self.notes),
        }
        if self.rerun is not None:
            d["rerun"] = self.rerun.to_dict()
        if self.exact_rerun is not None:
            d["exact_rerun"] = self.exact_rerun.to_dict()
        if self.gradients:
            d["output_verdict"] = self.output_verdict
            d["gradients"] = {k: r.to_dict() for k, r in self.gradients.items()}
        return d

    def __str__(self) -> str:
        head = [
            f"{self.op}: {self.description}" + (" (exact mode: integer-valued data)" if self.exact else ""),
            f"output {self.shape} {self.dtype}; K <= {self.terms} terms per element; "
            f"unit roundoff u = {self.unit_roundoff:.3g}",
            "precision: " + "; ".join(f"{k}: {v}" for k, v in self.precisions.items()),
        ]
        cols = ("pair", "max abs", "max rel", "array_equiv", "max r", "allowed r", "worst index", "verdict")
        rows = [cols] + [
            (f"{p.a} vs {p.b}", f"{p.max_abs:.3g}", f"{p.max_rel:.3g}", str(p.array_equiv), f"{p.max_ratio:.3g}",
             f"{p.allowed_ratio:.4g}", str(p.worst_index) if p.max_ratio else "-", p.label)
            for p in self.pairs
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(len(cols))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        why = [f"  {p.a} vs {p.b}: {p.label}, " + (p.evidence or p.reason) for p in self.pairs]
        tail = ["", "evidence:", *why, *(f"note: {n}" for n in self.notes)]
        for label, again in (("re-run in float64", self.rerun), ("re-run on exact integer data", self.exact_rerun)):
            if again is not None:
                tail += ["", f"{label}:", *("  " + line for line in str(again).splitlines())]
        verdict = f"verdict: {self.verdict_label}"
        for key, r in self.gradients.items():
            tail += ["", f"gradient with respect to {key}:", *("  " + line for line in str(r).splitlines())]
        if self.gradients:
            parts = [f"output {self.output_verdict}"] + [f"{k} {r.verdict_label}" for k, r in self.gradients.items()]
            verdict += f" ({'; '.join(parts)})"
        return "\n".join(head + [""] + lines + tail + ["", verdict])

    def _repr_html_(self) -> str:
        """The report as HTML tables in a notebook: the setting, one row per pair with its evidence, the verdict,
        the re-runs and gradients folded under ``<details>``, and the plain text last (folded, for copying)."""
        from convbridge.spec._html import box, details, pre

        return box(self._html(), details("as text", pre(str(self))))

    def _html(self) -> str:
        from convbridge.spec._html import Html, details, esc, table, verdict_html

        about: list[tuple[str, object]] = [
            ("op", self.op + (" (exact mode: integer-valued data)" if self.exact else "")),
            ("arguments", self.description), ("output", f"{self.shape} {self.dtype}"),
            ("K (most terms per element)", self.terms), ("unit roundoff u", f"{self.unit_roundoff:.3g}"),
            *((f"precision: {k}", v) for k, v in self.precisions.items())]
        cols = ("pair", "max abs", "max rel", "array_equiv", "max r", "allowed r", "worst index", "verdict", "evidence")
        rows = [(f"{p.a} vs {p.b}", f"{p.max_abs:.3g}", f"{p.max_rel:.3g}", str(p.array_equiv), f"{p.max_ratio:.3g}",
                 f"{p.allowed_ratio:.4g}", str(p.worst_index) if p.max_ratio else "-", verdict_html(p.verdict, p.label),
                 p.evidence or p.reason) for p in self.pairs]
        parts = [table(about, caption=f"ParityReport: {self.op}"), table(rows, cols, right=range(1, 6)),
                 *(f"<p>note: {esc(n)}</p>" for n in self.notes)]
        for label, again in (("re-run in float64", self.rerun), ("re-run on exact integer data", self.exact_rerun)):
            if again is not None:
                parts.append(details(Html(f"{esc(label)}: {verdict_html(again.verdict, again.verdict_label)}"),
                                     again._html()))
        for key, r in self.gradients.items():
            head = f"gradient with respect to {esc(key)}: {verdict_html(r.verdict, r.verdict_label)}"
            parts.append(details(Html(head), r._html()))
        each = [f"output {self.output_verdict}"] + [f"{k} {r.verdict_label}" for k, r in self.gradients.items()]
        detail = f" ({'; '.join(each)})" if self.gradients else ""
        parts.append(f"<p>verdict: {verdict_html(self.verdict, self.verdict_label)}{esc(detail)}</p>")
        return "".join(parts)
