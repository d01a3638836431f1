"""Precision in one place: float dtypes, unit roundoff, input-rounding formats, and precision policies.

- A *dtype* has a unit roundoff u = eps / 2 (float32: 2**-24).
- An *input-rounding format* is what an accelerator rounds float32 inputs to before a
  float32 accumulation: TF32 (2**-11), one bfloat16 pass (2**-8) or three (about 2**-16).
- A *policy* (``"highest" | "high" | "default"``) is what the caller asks for; each
  framework has its own controls for it (``lax.Precision``, cuDNN's ``allow_tf32``), and
  :func:`model` says what a computation under a policy actually uses on a platform.
- A :class:`Precision` records what a computation used; the verdict's bound reads it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from types import MappingProxyType

import numpy as np

from convbridge._args import choice
from convbridge.errors import ArgumentError, DTypeError, brief

__all__ = ["FLOAT_DTYPES", "COMPLEX_DTYPES", "DTYPES", "POLICIES", "is_complex", "real_dtype", "INPUT_FORMATS", "Precision", "REFERENCE", "unit_roundoff", "policy",
           "lax_precision", "torch_allow_tf32", "model", "candidate"]

#: The real dtypes convbridge computes and judges.
FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
#: The complex dtypes convbridge computes and judges (each component a float32 / float64).
COMPLEX_DTYPES = ("complex64", "complex128")
#: Every dtype convbridge computes and judges.
DTYPES = FLOAT_DTYPES + COMPLEX_DTYPES
#: What a caller may ask for; frameworks honour it on GPUs/TPUs (CPUs compute in the dtype regardless).
POLICIES = ("highest", "high", "default")
#: Formats float32 inputs are rounded to before a float32 accumulation, by unit roundoff.
INPUT_FORMATS = MappingProxyType({"tf32": 2.0**-11, "bf16": 2.0**-8, "bf16_3x": 2.0**-16})

_UNIT_ROUNDOFF = MappingProxyType({"float64": 2.0**-53, "float32": 2.0**-24, "float16": 2.0**-11,
                                   "bfloat16": 2.0**-8, "complex64": 2.0**-24, "complex128": 2.0**-53})
_REAL = MappingProxyType({"complex64": "float32", "complex128": "float64"})
_LAX = MappingProxyType({"highest": "HIGHEST", "high": "HIGH", "default": "DEFAULT"})
#: What a reduced policy rounds float32 inputs to, per accelerator platform (CPUs: nothing).
_ACCELERATOR = MappingProxyType({
    ("gpu", "high"): "tf32", ("gpu", "default"): "tf32",
    ("tpu", "high"): "bf16_3x", ("tpu", "default"): "bf16",
})
_FORMAT_NAMES = MappingProxyType({"tf32": "TF32 inputs", "bf16": "bf16 passes", "bf16_3x": "bf16x3 passes"})
#: How a verdict names each input-rounding format: "equivalent under TF32".
_UNDER = MappingProxyType({2.0**-11: "TF32", 2.0**-8: "bf16", 2.0**-16: "bf16x3"})


def is_complex(dtype: object) -> bool:
    """Whether a dtype name is one of :data:`COMPLEX_DTYPES`.

    >>> is_complex("complex64"), is_complex("float32")
    (True, False)
    """
    return str(dtype) in _REAL


def real_dtype(dtype: str) -> str:
    """The dtype of each component: ``complex64`` -> ``float32``, ``complex128`` -> ``float64``; a real dtype itself.

    >>> real_dtype("complex128"), real_dtype("bfloat16")
    ('float64', 'bfloat16')
    """
    return _REAL.get(str(dtype), str(dtype))


def unit_roundoff(dtype: str) -> float:
    """Unit roundoff u = eps / 2 of a float dtype name (of each component for a complex dtype).

    Raises:
        DTypeError: not a float dtype convbridge knows.

    >>> unit_roundoff("float32") == 2.0**-24
    True
    """
    u = _UNIT_ROUNDOFF.get(str(dtype))
    if u is None:
        raise DTypeError(f"no unit roundoff for dtype {dtype!r}; convbridge judges {', '.join(DTYPES)}")
    return u


@dataclass(frozen=True)
class Precision:
    """What a computation actually used.

    Attributes:
        u: unit roundoff of the accumulation.
        u_in: unit roundoff the inputs were rounded to first (TF32: 2**-11, bf16: 2**-8); 0 if none.
        label: human-readable description, e.g. ``"float32 (IEEE), cpu"``.
        u_out: unit roundoff of a final rounding of the accumulated result to a coarser format (a bfloat16
            result of a float32 accumulation: 2**-8); 0 if the result is stored as accumulated.
        tiny: the smallest normal number of the formats involved (the result's, or the accumulation's if
            larger); ``None`` reads it from ``u`` and ``u_out``. Underflow and flush-to-zero lose at most
            this much per rounding, whatever the magnitudes.
    """

    u: float
    u_in: float = 0.0
    label: str = ""
    u_out: float = 0.0
    tiny: float | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.u, (int, float)) and 0 < self.u < 1):
            raise ArgumentError(f"Precision.u is a unit roundoff in (0, 1), e.g. 2**-24, got {brief(self.u)}")
        if not (isinstance(self.u_in, (int, float)) and 0 <= self.u_in < 1):
            raise ArgumentError(f"Precision.u_in is a unit roundoff in [0, 1) (0: inputs not rounded), got "
                                f"{brief(self.u_in)}")
        if not (isinstance(self.u_out, (int, float)) and 0 <= self.u_out < 1):
            raise ArgumentError(f"Precision.u_out is a unit roundoff in [0, 1) (0: result stored as accumulated), "
                                f"got {brief(self.u_out)}")
        if self.tiny is not None and not (isinstance(self.tiny, (int, float)) and 0 < self.tiny < 1):
            raise ArgumentError(f"Precision.tiny is the smallest normal number, in (0, 1), got {brief(self.tiny)}")

    @property
    def underflow(self) -> float:
        """The smallest normal number that bounds what one rounding can lose to underflow or flush-to-zero.

        >>> Precision.of("float16").underflow == 2.0**-14
        True
        """
        if self.tiny is not None:
            return float(self.tiny)
        found = [_TINY.get(u, _TINY_UNKNOWN) for u in (self.u, self.u_out) if u]
        return max(found)

    @property
    def under(self) -> str:
        """The reduced-precision input format a verdict must name (``"equivalent under TF32"``): ``"TF32"``,
        ``"bf16"``, ``"bf16x3"``, ``"inputs rounded to u=..."`` for another format; ``""`` when the inputs are not
        rounded.

        >>> Precision(2.0**-24, 2.0**-11).under, Precision.of("float32").under
        ('TF32', '')
        """
        if not self.u_in:
            return ""
        return _UNDER.get(float(self.u_in), f"inputs rounded to u={self.u_in:.3g}")

    @classmethod
    def of(cls, dtype: str, label: str | None = None) -> Precision:
        """Full precision of ``dtype`` (no input rounding)."""
        return cls(unit_roundoff(dtype), 0.0, label or f"{dtype} (IEEE)")

    def bound(self, terms: int) -> float:
        """Coefficient beta with |fl(y) - y| <= beta G (+ the underflow term); infinite when K u >= 1.

        beta = 2 u_in + gamma_K + u_out (1 + gamma_K), gamma_K = K u / (1 - K u) (Higham 2002, Lemma 3.1).

        >>> Precision.of("float32").bound(1) == 2.0**-24 / (1 - 2.0**-24)
        True
        """
        if terms < 0:
            raise ArgumentError(f"K, the number of terms, is >= 0, got {terms}")
        return float(self.bounds(np.asarray(float(terms))))

    def bounds(self, terms: np.ndarray) -> np.ndarray:
        """:meth:`bound` elementwise, for a map of per-element term counts K (inf where K u >= 1)."""
        ku = np.asarray(terms, dtype=np.float64) * self.u
        with np.errstate(divide="ignore", invalid="ignore"):
            gamma = np.where(ku < 1, ku / np.where(ku < 1, 1 - ku, 1.0), np.inf)
        return 2 * self.u_in + gamma + self.u_out * (1 + gamma)

    def probable(self, terms: np.ndarray, lam: float) -> np.ndarray:
        """The probabilistic coefficient: |fl(y) - y| <= beta G holds with probability at least
        1 - Q(lam, K) per element (Higham & Mary, "A new approach to probabilistic rounding error analysis",
        SIAM J. Sci. Comput. 41(5), 2019, Theorem 2.4), with gamma_K replaced by
        gamma~_K(lam) = exp(lam sqrt(K) u + K u^2 / (1 - u)) - 1; never above :meth:`bounds`.
        Input rounding (2 u_in) and the final rounding (u_out) keep their worst-case terms.
        """
        k = np.asarray(terms, dtype=np.float64)
        with np.errstate(over="ignore"):
            gamma = np.expm1(lam * np.sqrt(k) * self.u + k * self.u**2 / (1 - self.u))
        return np.minimum(2 * self.u_in + gamma + self.u_out * (1 + gamma), self.bounds(k))


#: The smallest normal number of each format, by unit roundoff (bfloat16 shares float32's exponent range).
_TINY = MappingProxyType({2.0**-53: 2.0**-1022, 2.0**-24: 2.0**-126, 2.0**-11: 2.0**-14, 2.0**-8: 2.0**-126})
#: For a unit roundoff convbridge does not know: float16's, the largest smallest-normal of the formats it judges.
_TINY_UNKNOWN = 2.0**-14

#: The float64 NumPy reference.
REFERENCE = Precision.of("float64", "float64 NumPy reference")


def policy(value: object) -> str:
    """Validate a precision policy: ``"highest" | "high" | "default"`` (case-insensitive).

    >>> policy("HIGHEST")
    'highest'
    """
    return choice(value, "precision", POLICIES)


def lax_precision(policy_name: str) -> str:
    """The name of the ``jax.lax.Precision`` member a policy maps to.

    >>> lax_precision("high")
    'HIGH'
    """
    return _LAX[policy(policy_name)]


def torch_allow_tf32(policy_name: str) -> bool:
    """cuDNN's ``allow_tf32`` under a policy: only ``"highest"`` forbids TF32.

    >>> torch_allow_tf32("highest"), torch_allow_tf32("default")
    (False, True)
    """
    return policy(policy_name) != "highest"


def model(dtype: str, policy_name: str, platform: str, where: str | None = None) -> Precision:
    """What a convolution in ``dtype`` under ``policy_name`` uses on ``platform`` (``cpu | gpu | tpu``).

    CPUs compute in the dtype. GPUs round float32 inputs to TF32 below ``"highest"``; TPUs use
    one bfloat16 pass for ``"default"`` and three for ``"high"``. ``where`` (a device name)
    goes into the label.

    >>> model("float32", "default", "gpu").u_in == 2.0**-11
    True
    >>> model("float32", "default", "cpu").label
    'float32 (IEEE), precision=default, cpu'
    """
    platform = _platform(platform)
    fmt = _ACCELERATOR.get((platform, policy(policy_name))) if real_dtype(dtype) == "float32" else None
    place = where or platform
    if fmt is None:
        return Precision(unit_roundoff(dtype), 0.0, f"{dtype} (IEEE), precision={policy_name}, {place}")
    what = "float32" if dtype == "float32" else f"{dtype} (float32 parts)"
    return Precision(unit_roundoff(dtype), INPUT_FORMATS[fmt],
                     f"{_FORMAT_NAMES[fmt]}, {what} accumulation, precision={policy_name}, {place}")


_PLATFORMS = MappingProxyType({"cpu": "cpu", "gpu": "gpu", "cuda": "gpu", "rocm": "gpu", "tpu": "tpu"})


def _platform(name: str) -> str:
    """``cpu | gpu | tpu`` from a platform or device-type name (``"cuda"``, ``"GPU"``, ...)."""
    key = str(name).lower()
    if key not in _PLATFORMS:
        raise ArgumentError(f"unknown platform {name!r}; convbridge models {', '.join(map(repr, _PLATFORMS))}")
    return _PLATFORMS[key]


def _describe(p: Precision, dtype: str) -> str:
    """A label for an unlabelled :class:`Precision`: its unit roundoffs."""
    parts = [f"{dtype}: accumulation u = {p.u:.3g}"]
    if p.u_in:
        parts.append(f"inputs rounded to u = {p.u_in:.3g}")
    if p.u_out:
        parts.append(f"result rounded to u = {p.u_out:.3g}")
    return ", ".join(parts)


def candidate(precision: object, dtype: str) -> Precision:
    """What produced a candidate result: ``None``/``"highest"`` (its dtype's full precision), an input format
    name (``"tf32"``, ``"bf16"``, ``"bf16_3x"``: inputs rounded first) or a :class:`Precision`.

    Raises:
        ArgumentError: anything else.

    >>> candidate("tf32", "float32").label
    'float32, inputs rounded (tf32)'
    """
    if isinstance(precision, Precision):  # named in the report by what it is when it has no label
        return precision if precision.label else replace(precision, label=_describe(precision, dtype))
    if precision is None or isinstance(precision, str) and precision.lower() == "highest":
        return Precision(unit_roundoff(dtype), 0.0, f"{dtype} (IEEE)")
    if not isinstance(precision, str) or precision.lower() not in INPUT_FORMATS:
        raise ArgumentError(f"unknown candidate precision {brief(precision)}; choose None, 'highest', "
                            f"{', '.join(map(repr, INPUT_FORMATS))} or a convbridge.Precision")
    fmt = precision.lower()
    if real_dtype(dtype) != "float32":
        raise ArgumentError(f"precision={brief(precision)} rounds float32 inputs before a float32 accumulation; a "
                            f"{dtype} candidate is judged by its own dtype: pass precision=None")
    return Precision(unit_roundoff(dtype), INPUT_FORMATS[fmt], f"{dtype}, inputs rounded ({fmt})")
