"""NumPy backend: the reference definitions (conv, conv_transpose, unfold, fold), computed in the input's dtype."""

from __future__ import annotations

import numpy as np

from convbridge import reference
from convbridge.parity import Precision
from convbridge.spec import ConvSpec

NAME = "numpy"


def asarray(a):
    """Any array (numpy, jax, torch, list) -> numpy array, without changing its dtype."""
    if a is None:
        return None
    if type(a).__module__.startswith("torch"):
        a = a.detach().cpu()
        return a.float().numpy() if str(a.dtype) == "torch.bfloat16" else a.numpy()
    return np.asarray(a)


to_numpy = asarray


def check(spec: ConvSpec) -> None:
    """NumPy computes every float dtype it has; bfloat16 needs ml_dtypes' numpy type."""


def precision(spec: ConvSpec, x=None) -> Precision:
    how = "NumPy einsum" if spec.op in ("conv", "conv_transpose") else "NumPy"
    return Precision.of(spec.dtype, f"{spec.dtype} (IEEE), {how}")


def conv(spec: ConvSpec, x, w, b):
    return reference.conv(x, w, b, spec, dtype=np.asarray(x).dtype)


def conv_transpose(spec, x, w, b):
    return reference.conv_transpose(x, w, b, spec, dtype=np.asarray(x).dtype)


def unfold(spec, x):
    return reference.unfold(x, spec, dtype=np.asarray(x).dtype)


def fold(spec, cols):
    return reference.fold(cols, spec, dtype=np.asarray(cols).dtype)
