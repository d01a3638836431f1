"""The JAX layers' parameter draws and dtypes, shared by convbridge.nn.nnx, .linen and .equinox (JAX only)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from convbridge.errors import DTypeError, brief
from convbridge.nn._common import LayerConfig

__all__ = ["draw_kernel", "draw_bias", "param_dtype"]


def draw_kernel(cfg: LayerConfig, key: jax.Array, dtype: Any) -> jax.Array:
    """A layer's kernel, in ``cfg.kernel_layout``, drawn with ``key``: ``"torch"`` U(-b, b), ``b = 1 / sqrt(fan_in)``;
    ``"flax"`` ``jax.nn.initializers.lecun_normal()`` on the kernel laid out as Flax's ``*IO``, then permuted.

    >>> import jax
    >>> from convbridge.nn._common import conv_config
    >>> draw_kernel(conv_config("nnx", 1, 2, 4, 3), jax.random.key(0), "float32").shape
    (3, 2, 4)
    """
    if cfg.init_scheme == "torch":
        bound = cfg.uniform_bound()
        return jax.random.uniform(key, cfg.kernel_shape, dtype, -bound, bound)
    return jnp.transpose(jax.nn.initializers.lecun_normal()(key, cfg.flax_kernel_shape, dtype), cfg.from_flax)


def draw_bias(cfg: LayerConfig, key: jax.Array, dtype: Any, *, broadcast: bool = False) -> jax.Array:
    """A layer's bias, ``(out,)`` or with ``broadcast`` ``(out, 1, ..., 1)`` as Equinox keeps it: ``"torch"``
    U(-b, b) with the kernel's ``b`` (drawn in that shape, as ``eqx.nn.Conv`` draws it); ``"flax"`` zeros.

    >>> import jax
    >>> from convbridge.nn._common import conv_config
    >>> draw_bias(conv_config("nnx", 1, 2, 3, 3), jax.random.key(0), "float32").tolist()
    [0.0, 0.0, 0.0]
    >>> draw_bias(conv_config("equinox", 1, 2, 3, 3, init="flax"), jax.random.key(0), "float32", broadcast=True).shape
    (3, 1)
    """
    shape = (cfg.out_channels,) + ((1,) * cfg.num_spatial_dims if broadcast else ())
    if cfg.init_scheme == "torch":
        bound = cfg.uniform_bound()
        return jax.random.uniform(key, shape, dtype, -bound, bound)
    return jnp.zeros(shape, dtype)


def param_dtype(dtype: Any) -> Any:
    """The parameters' dtype: a JAX floating dtype (``None``: float32).

    Raises:
        DTypeError: not a dtype, or not a floating one.

    >>> param_dtype(None), param_dtype("bfloat16")
    (dtype('float32'), dtype(bfloat16))
    """
    try:
        resolved = jnp.dtype(jnp.float32 if dtype is None else dtype)
    except TypeError:
        raise DTypeError(f"dtype {brief(dtype)} is not a dtype; use e.g. jnp.float32 or 'float32'") from None
    if not jnp.issubdtype(resolved, jnp.floating):
        raise DTypeError(f"dtype {resolved} is not a floating-point dtype; parameters are float16, bfloat16, "
                         "float32 or float64")
    return resolved
