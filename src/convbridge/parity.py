"""The rounding-bound verdict: do two results agree up to floating-point rounding?

For one output element y = sum of K products, a float computation with unit
roundoff u obeys |fl(y) - y| <= gamma_K G with G = conv(|x|, |w|) + |b| and
gamma_K = K u / (1 - K u) (Higham, *Accuracy and Stability of Numerical
Algorithms*, 3.1). With inputs first rounded to a coarser format (TF32, bf16
passes) the bound becomes (2 u_in + gamma_K(u)) G. convbridge measures
r = |a - b| / (u G) per element, where u is the coarser unit roundoff of the two,
and allows the sum of both results' bounds in those units: K / (1 - K u) against
the float64 reference (plus the reference's own, negligible, bound) and
2K / (1 - K u) between two float32 results. A semantic bug (a shifted tap, a
flipped kernel, padding on the wrong side) gives r of order 1/u.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from convbridge._types import Shape
from convbridge.precision import Precision

_T = TypeVar("_T")

__all__ = ["PairResult", "ParityReport", "judge_pair", "worst_verdict", "VERDICTS", "INCONCLUSIVE_FRACTION"]

VERDICTS = ("identical", "equivalent", "inconclusive", "mismatch")
#: A bound of this fraction of the gauge or more cannot separate rounding from a bug.
INCONCLUSIVE_FRACTION = 0.05


def _quietly(fn: Callable[..., _T]) -> Callable[..., _T]:
    """Run ``fn`` without NumPy's overflow / invalid-value warnings: a result that overflows its dtype is judged
    (an infinity where the reference is finite is a mismatch), not reported twice as console noise."""
    @functools.wraps(fn)
    def quiet(*args: Any, **kwargs: Any) -> _T:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # e.g. nanmax of an all-NaN difference (inf - inf)
            return fn(*args, **kwargs)

    return quiet


@dataclass(frozen=True)
class PairResult:
    """How result ``a`` compares with result ``b`` (``b`` is the reference when it is one)."""

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

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["worst_index"] = list(self.worst_index)
        return {k: (None if isinstance(v, float) and not math.isfinite(v) and k != "max_ratio" else v)
                for k, v in d.items()}


@_quietly
def _ratios(a: np.ndarray, b: np.ndarray, gauge: np.ndarray, u: float) -> np.ndarray:
    """Elementwise r = |a - b| / (u G): 0 where equal (NaN == NaN), inf where G = 0 and they differ."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    same = (a64 == b64) | (np.isnan(a64) & np.isnan(b64))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.abs(a64 - b64) / (u * gauge)
    r = np.where(np.isnan(r), np.inf, r)
    return np.where(same, 0.0, r)


@_quietly
def judge_pair(
    names: tuple[str, str],
    a: np.ndarray,
    b: np.ndarray,
    gauge: np.ndarray,
    terms: int,
    precisions: tuple[Precision, Precision],
    *,
    b_is_reference: bool = False,
) -> tuple[PairResult, np.ndarray]:
    """Judge two results of the same op; return the verdict and the elementwise ratio map.

    Args:
        names: labels of ``a`` and ``b``.
        a, b: the two results, same shape.
        gauge: G = op(|x|, |w|) + |b|, float64, same shape.
        terms: K, the number of products per output element (+1 with a bias).
        precisions: what each result's computation used.
        b_is_reference: ``b`` is the float64 reference; "identical" then means ``a`` equals
            the reference correctly rounded to ``a``'s dtype.
    """
    a, b = np.asarray(a), np.asarray(b)
    pa, pb = precisions
    u = max(pa.u, pb.u)
    r = _ratios(a, b, gauge, u)
    allowed = (pa.bound(terms) + pb.bound(terms)) / u
    rounded_b = b.astype(a.dtype) if b_is_reference else b
    identical = a.dtype == rounded_b.dtype and np.array_equal(a, rounded_b, equal_nan=True)
    exceeding = int(np.count_nonzero(r > allowed))
    if identical:
        verdict = "identical"
    elif exceeding:
        verdict = "mismatch"
    elif not math.isfinite(allowed) or allowed * u >= INCONCLUSIVE_FRACTION:
        verdict = "inconclusive"
    else:
        verdict = "equivalent"
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(diff == 0, 0.0, diff / np.abs(b.astype(np.float64)))
    worst = np.unravel_index(int(np.argmax(r)), r.shape) if r.size else ()
    result = PairResult(
        a=names[0], b=names[1],
        max_abs=float(np.nanmax(diff)) if diff.size else 0.0,
        max_rel=float(np.nanmax(rel)) if rel.size else 0.0,
        array_equiv=bool(np.array_equiv(a, b)),
        max_ratio=float(r.max()) if r.size else 0.0,
        allowed_ratio=float(allowed),
        worst_index=tuple(int(i) for i in worst),
        unit_roundoff=u,
        n_different=int(np.count_nonzero(~((a == rounded_b) | (np.isnan(a) & np.isnan(rounded_b))))),
        n_exceeding=exceeding,
        size=int(a.size),
        verdict=verdict,
    )
    return result, r


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
        terms: K, products per output element (+1 with a bias).
        precisions: what each result's computation used, by name.
        pairs: one :class:`PairResult` per compared pair.
        outputs: the results as NumPy arrays, by name (``"reference"`` is float64).
        gauge: G = op(|x|, |w|) + |b| in float64.
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

    @property
    def verdict(self) -> str:
        """The worst verdict over all pairs."""
        return worst_verdict(p.verdict for p in self.pairs)

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
        return _ratios(self.outputs[a], self.outputs[b], self.gauge, p.unit_roundoff)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no arrays)."""
        return {
            "op": self.op, "description": self.description, "shape": list(self.shape), "dtype": self.dtype,
            "terms": self.terms, "unit_roundoff": self.unit_roundoff, "verdict": self.verdict,
            "precisions": dict(self.precisions), "pairs": [p.to_dict() for p in self.pairs],
        }

    def __str__(self) -> str:
        head = [
            f"{self.op}: {self.description}",
            f"output {self.shape} {self.dtype}; K = {self.terms} terms per element; "
            f"unit roundoff u = {self.unit_roundoff:.3g}",
            "precision: " + "; ".join(f"{k}: {v}" for k, v in self.precisions.items()),
        ]
        cols = ("pair", "max abs", "max rel", "array_equiv", "max r", "allowed r", "worst index", "verdict")
        rows = [cols] + [
            (f"{p.a} vs {p.b}", f"{p.max_abs:.3g}", f"{p.max_rel:.3g}", str(p.array_equiv), f"{p.max_ratio:.3g}",
             f"{p.allowed_ratio:.4g}", str(p.worst_index) if p.max_ratio else "-", p.verdict)
            for p in self.pairs
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(len(cols))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(head + [""] + lines + ["", f"verdict: {self.verdict}"])

    def _repr_html_(self) -> str:
        import html

        return f"<pre>{html.escape(str(self))}</pre>"
