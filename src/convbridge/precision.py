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

import math
from dataclasses import dataclass
from types import MappingProxyType

from convbridge._args import choice
from convbridge.errors import ArgumentError, DTypeError, brief

__all__ = ["FLOAT_DTYPES", "POLICIES", "INPUT_FORMATS", "Precision", "REFERENCE", "unit_roundoff", "policy",
           "lax_precision", "torch_allow_tf32", "model", "candidate"]

#: The dtypes convbridge computes and judges.
FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
#: What a caller may ask for; frameworks honour it on GPUs/TPUs (CPUs compute in the dtype regardless).
POLICIES = ("highest", "high", "default")
#: Formats float32 inputs are rounded to before a float32 accumulation, by unit roundoff.
INPUT_FORMATS = MappingProxyType({"tf32": 2.0**-11, "bf16": 2.0**-8, "bf16_3x": 2.0**-16})

_UNIT_ROUNDOFF = MappingProxyType({"float64": 2.0**-53, "float32": 2.0**-24, "float16": 2.0**-11,
                                   "bfloat16": 2.0**-8})
_LAX = MappingProxyType({"highest": "HIGHEST", "high": "HIGH", "default": "DEFAULT"})
#: What a reduced policy rounds float32 inputs to, per accelerator platform (CPUs: nothing).
_ACCELERATOR = MappingProxyType({
    ("gpu", "high"): "tf32", ("gpu", "default"): "tf32",
    ("tpu", "high"): "bf16_3x", ("tpu", "default"): "bf16",
})
_FORMAT_NAMES = MappingProxyType({"tf32": "TF32 inputs", "bf16": "bf16 passes", "bf16_3x": "bf16x3 passes"})


def unit_roundoff(dtype: str) -> float:
    """Unit roundoff u = eps / 2 of a float dtype name.

    Raises:
        DTypeError: not a float dtype convbridge knows.

    >>> unit_roundoff("float32") == 2.0**-24
    True
    """
    u = _UNIT_ROUNDOFF.get(str(dtype))
    if u is None:
        raise DTypeError(f"no unit roundoff for dtype {dtype!r}; convbridge judges {', '.join(FLOAT_DTYPES)}")
    return u


@dataclass(frozen=True)
class Precision:
    """What a computation actually used.

    Attributes:
        u: unit roundoff of the accumulation and result.
        u_in: unit roundoff the inputs were rounded to first (TF32: 2**-11, bf16: 2**-8); 0 if none.
        label: human-readable description, e.g. ``"float32 (IEEE), cpu"``.
    """

    u: float
    u_in: float = 0.0
    label: str = ""

    def __post_init__(self) -> None:
        if not (isinstance(self.u, (int, float)) and 0 < self.u < 1):
            raise ArgumentError(f"Precision.u is a unit roundoff in (0, 1), e.g. 2**-24, got {brief(self.u)}")
        if not (isinstance(self.u_in, (int, float)) and 0 <= self.u_in < 1):
            raise ArgumentError(f"Precision.u_in is a unit roundoff in [0, 1) (0: inputs not rounded), got "
                                f"{brief(self.u_in)}")

    @classmethod
    def of(cls, dtype: str, label: str | None = None) -> Precision:
        """Full precision of ``dtype`` (no input rounding)."""
        return cls(unit_roundoff(dtype), 0.0, label or f"{dtype} (IEEE)")

    def bound(self, terms: int) -> float:
        """Coefficient beta with |fl(y) - y| <= beta G; infinite when K u >= 1.

        >>> Precision.of("float32").bound(1) == 2.0**-24 / (1 - 2.0**-24)
        True
        """
        if terms < 0:
            raise ArgumentError(f"K, the number of terms, is >= 0, got {terms}")
        ku = terms * self.u
        return math.inf if ku >= 1 else 2 * self.u_in + ku / (1 - ku)


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
    fmt = _ACCELERATOR.get((platform, policy(policy_name))) if dtype == "float32" else None
    place = where or platform
    if fmt is None:
        return Precision(unit_roundoff(dtype), 0.0, f"{dtype} (IEEE), precision={policy_name}, {place}")
    return Precision(unit_roundoff(dtype), INPUT_FORMATS[fmt],
                     f"{_FORMAT_NAMES[fmt]}, float32 accumulation, precision={policy_name}, {place}")


_PLATFORMS = MappingProxyType({"cpu": "cpu", "gpu": "gpu", "cuda": "gpu", "rocm": "gpu", "tpu": "tpu"})


def _platform(name: str) -> str:
    """``cpu | gpu | tpu`` from a platform or device-type name (``"cuda"``, ``"GPU"``, ...)."""
    key = str(name).lower()
    if key not in _PLATFORMS:
        raise ArgumentError(f"unknown platform {name!r}; convbridge models {', '.join(map(repr, _PLATFORMS))}")
    return _PLATFORMS[key]


def candidate(precision: object, dtype: str) -> Precision:
    """What produced a candidate result: ``None``/``"highest"`` (its dtype's full precision), an input format
    name (``"tf32"``, ``"bf16"``, ``"bf16_3x"``: inputs rounded first) or a :class:`Precision`.

    Raises:
        ArgumentError: anything else.

    >>> candidate("tf32", "float32").label
    'float32, inputs rounded (tf32)'
    """
    if isinstance(precision, Precision):
        return precision
    if precision is None or isinstance(precision, str) and precision.lower() == "highest":
        return Precision(unit_roundoff(dtype), 0.0, f"{dtype} (IEEE)")
    if not isinstance(precision, str) or precision.lower() not in INPUT_FORMATS:
        raise ArgumentError(f"unknown candidate precision {brief(precision)}; choose None, 'highest', "
                            f"{', '.join(map(repr, INPUT_FORMATS))} or a convbridge.Precision")
    fmt = precision.lower()
    if dtype != "float32":
        raise ArgumentError(f"precision={brief(precision)} rounds float32 inputs before a float32 accumulation; a "
                            f"{dtype} candidate is judged by its own dtype: pass precision=None")
    return Precision(unit_roundoff(dtype), INPUT_FORMATS[fmt], f"{dtype}, inputs rounded ({fmt})")
