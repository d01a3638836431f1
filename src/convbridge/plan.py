"""How an op runs: a frozen plan of backend, algorithm, precision policy and device.

A spec (:mod:`convbridge.spec`) says *what* is computed; a :class:`Plan` says *how*. The
dispatcher (:mod:`convbridge.dispatch`) looks up the implementation registered for
``(op, plan.backend, plan.algorithm)`` and runs it. Adding an algorithm (FFT, Winograd, a
direct depthwise method) or a device mesh is one registration, not a new keyword threaded
through every function.

>>> make_plan("numpy", None).algorithm
'native'
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

from convbridge import backends
from convbridge._types import ArrayLike
from convbridge.errors import ArgumentError, ArgumentTypeError, brief
from convbridge.precision import policy

__all__ = ["Plan", "make_plan", "check_plan_keywords", "PLAN_KEYWORDS", "DEFAULT_ALGORITHM"]

#: Keyword arguments that belong to the plan rather than to an op's spec.
PLAN_KEYWORDS = ("algorithm", "precision", "device")
#: The framework's own convolution (``F.convNd``, ``lax.conv_general_dilated``, the NumPy definition).
DEFAULT_ALGORITHM = "native"


@dataclass(frozen=True)
class Plan:
    """How one op runs.

    Attributes:
        backend: ``"numpy" | "jax" | "torch"``.
        algorithm: the registered implementation to use, e.g. ``"native"`` or ``"matmul"`` (im2col + one
            matrix product per group); :func:`convbridge.dispatch.implementations` lists them.
        precision: the policy ``"highest" | "high" | "default"`` (matters on GPUs/TPUs; see
            :mod:`convbridge.precision`).
        device: where to compute: ``None`` (where the input lives), or the backend's device
            (``"cpu"``, ``"cuda:0"``, a ``torch.device``, a ``jax.Device``).
    """

    backend: str
    algorithm: str = DEFAULT_ALGORITHM
    precision: str = "highest"
    device: Hashable | None = None

    def __post_init__(self) -> None:
        backends.validate(self.backend)
        if _algorithm(self.algorithm) != self.algorithm:
            raise ArgumentError(f"algorithm names are lower case: {self.algorithm!r}; write "
                                f"{self.algorithm.lower()!r}")
        if policy(self.precision) != self.precision:
            raise ArgumentError(f"precision policies are lower case: {self.precision!r}; write "
                                f"{self.precision.lower()!r}")
        _device(self.device)

    def describe(self) -> str:
        where = "" if self.device is None else f" on {self.device}"
        return f"{self.backend}, algorithm {self.algorithm}, precision {self.precision}{where}"


def _algorithm(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ArgumentTypeError(f"algorithm must be a name such as 'native' or 'matmul', got {brief(value)}")
    return value.lower()


def _device(value: object) -> Hashable | None:
    if isinstance(value, str):
        if not value.strip():
            raise ArgumentError("device is an empty string; pass None (where the input lives) or e.g. 'cpu'")
        return value.strip().lower()
    if value is None:
        return value
    if not isinstance(value, Hashable):
        raise ArgumentTypeError(f"device must be None, a string such as 'cpu', or a framework device; got "
                                f"{type(value).__name__} {brief(value)}")
    return value


def check_plan_keywords(algorithm: object = DEFAULT_ALGORITHM, precision: object = "highest",
                        device: object = None) -> None:
    """Check plan keywords for form without choosing a backend (for calls that compute nothing): an algorithm
    name, a precision policy, a device value. Whether the algorithm is registered and the device exists is
    the chosen backend's to say."""
    _algorithm(algorithm)
    policy(precision)
    _device(device)


def make_plan(backend: object, x: ArrayLike, *, algorithm: object = DEFAULT_ALGORITHM,
              precision: object = "highest", device: object = None) -> Plan:
    """A validated plan; ``backend=None`` infers the backend from ``x``'s type (importing nothing).

    Raises:
        ArgumentError: unknown backend or precision policy.
        ArgumentTypeError: an algorithm or device of the wrong type.
    """
    if x is None and backend is None:
        raise ArgumentError("no input to infer the backend from; pass backend='numpy', 'jax' or 'torch'")
    name = backends.validate(backend) if backend is not None else backends.infer(x)
    return Plan(name, _algorithm(algorithm), policy(precision), _device(device))
