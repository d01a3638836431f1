"""JAX backend: ``lax.conv_general_dilated`` with the spec's permutations as dimension numbers.

Works under ``jax.jit``, ``jax.grad`` and ``jax.vmap``: it only reads static
shapes from the spec and calls lax.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from convbridge.errors import DTypeError
from convbridge.padding import gather_indices
from convbridge.parity import Precision, unit_roundoff
from convbridge.spec import ConvSpec

NAME = "jax"
_LAX_PRECISION = {"highest": lax.Precision.HIGHEST, "high": lax.Precision.HIGH, "default": lax.Precision.DEFAULT}


def asarray(a):
    """Any array -> jax array of the same dtype (torch tensors go through host memory)."""
    if a is None or isinstance(a, jax.Array):
        return a
    if type(a).__module__.startswith("torch"):
        from convbridge.backends.torch_backend import to_numpy as torch_to_numpy

        a = torch_to_numpy(a)
    return jnp.asarray(a)


def to_numpy(a) -> np.ndarray:
    return np.asarray(a)


def check(spec: ConvSpec) -> None:
    """Reject float64 when JAX's x64 mode is off (it would silently compute in float32)."""
    if spec.dtype == "float64" and not jax.config.jax_enable_x64:
        raise DTypeError(
            "float64 input on the jax backend, but JAX's x64 mode is off and would silently use float32; "
            "enable it with jax.config.update('jax_enable_x64', True) or JAX_ENABLE_X64=1, or cast to float32"
        )


def precision(spec: ConvSpec, x=None) -> Precision:
    """Model of what XLA uses: CPU computes in the dtype; GPUs use TF32 and TPUs bf16 passes below 'highest'."""
    platform = jax.default_backend()
    u = unit_roundoff(spec.dtype)
    if spec.dtype != "float32" or spec.precision == "highest" or platform == "cpu":
        return Precision(u, 0.0, f"{spec.dtype} (IEEE), precision={spec.precision}, {platform}")
    if platform == "tpu":
        u_in, name = (2.0**-8, "bf16 passes") if spec.precision == "default" else (2.0**-16, "bf16x3 passes")
    else:
        u_in, name = 2.0**-11, "TF32 inputs"
    return Precision(u, u_in, f"{name}, float32 accumulation, precision={spec.precision}, {platform}")


def conv(spec: ConvSpec, x, w, b):
    lay = spec.layout
    if not lay.batched:
        x = x[None]
    pads = spec.padding
    if spec.padding_mode != "zeros":
        for i, (n, (lo, hi)) in enumerate(zip(spec.in_spatial, spec.padding)):
            idx = gather_indices(n, lo, hi, spec.padding_mode)
            x = jnp.take(x, idx, axis=lay.lhs_perm[2 + i])
        pads = ((0, 0),) * spec.nsp
    dn = lax.ConvDimensionNumbers(lay.lhs_perm, lay.rhs_perm, lay.out_perm)
    y = lax.conv_general_dilated(
        x, w, spec.stride, pads, rhs_dilation=spec.dilation, dimension_numbers=dn,
        feature_group_count=spec.groups, precision=_LAX_PRECISION[spec.precision],
    )
    if b is not None:
        shape = [1] * y.ndim
        shape[lay.out_perm[1]] = -1
        y = y + b.reshape(shape)
    return y if lay.batched else y[0]
