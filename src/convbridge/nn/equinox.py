"""convbridge's convolution layers as ``equinox.Module``: :class:`Conv` and :class:`ConvTranspose`.

Like ``eqx.nn.Conv`` they take one example (layout ``"C*"``, e.g. ``"CHW"``; batch with ``jax.vmap``), store
``weight`` and a ``(out, 1, ..., 1)`` bias, and take ``key=``. Unlike Equinox's ConvTranspose, :class:`ConvTranspose`
keeps torch's weight ``(in, out / groups, *k)`` unflipped and allows ``output_padding`` up to
``max(stride, dilation) - 1``. Porting into them is replacing leaves (``eqx.tree_at``).

>>> import jax, jax.numpy as jnp
>>> from convbridge.nn.equinox import Conv
>>> layer = Conv(1, 2, 4, 3, padding=1, padding_mode="replicate", key=jax.random.key(0))
>>> jax.vmap(layer)(jnp.zeros((5, 2, 6))).shape
(5, 4, 6)
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax

from convbridge import api
from convbridge._types import IntOrInts, PaddingLike
from convbridge.nn._common import FrozenPadding, LayerConfig, conv_config, transpose_config
from convbridge.nn._jax import draw_bias, draw_kernel, param_dtype

__all__ = ["Conv", "ConvTranspose"]


class _Layer(eqx.Module):
    """The parameters, init and repr of both layers."""

    weight: jax.Array
    bias: jax.Array | None
    num_spatial_dims: int = eqx.field(static=True)
    in_channels: int = eqx.field(static=True)
    out_channels: int = eqx.field(static=True)
    kernel_size: tuple[int, ...] = eqx.field(static=True)
    stride: tuple[int, ...] = eqx.field(static=True)
    padding: FrozenPadding = eqx.field(static=True)
    dilation: tuple[int, ...] = eqx.field(static=True)
    groups: int = eqx.field(static=True)
    use_bias: bool = eqx.field(static=True)
    padding_mode: str = eqx.field(static=True)
    layout: str = eqx.field(static=True)
    kernel_layout: str = eqx.field(static=True)
    init_scheme: str = eqx.field(static=True)

    def _build(self, cfg: LayerConfig, dtype: Any, key: jax.Array) -> None:
        for name, value in vars(cfg).items():
            if name != "op" and (name != "output_padding" or cfg.transposed):
                setattr(self, name, value)
        w_key, b_key = jax.random.split(key)
        dtype = param_dtype(dtype)
        self.weight = draw_kernel(cfg, w_key, dtype)
        self.bias = draw_bias(cfg, b_key, dtype, broadcast=True) if cfg.use_bias else None

    def _bias(self) -> jax.Array | None:
        return None if self.bias is None else self.bias.reshape(-1)

    def __repr__(self) -> str:
        cfg = LayerConfig.of(self, "conv_transpose" if isinstance(self, ConvTranspose) else "conv")
        return f"{type(self).__name__}({cfg.describe('torch')})"


class Conv(_Layer):
    """N-d convolution (cross-correlation, as torch's) computing :func:`convbridge.conv` with JAX's backend.

    Args:
        num_spatial_dims: 1, 2, 3, ...
        in_channels, out_channels: channels of the input and the output.
        kernel_size, stride, dilation: one int, or one per spatial dim.
        padding: anything :func:`convbridge.conv` takes: an int, per-dim ints, per-dim ``(lo, hi)`` pairs,
            ``"valid"``, ``"same"`` (XLA's rule, any stride) or ``"same_lower"``.
        groups: channel groups (must divide both channel counts); ``groups == in_channels`` is depthwise.
        use_bias: add a learned bias.
        padding_mode: ``"zeros"``, ``"reflect"``, ``"replicate"`` or ``"circular"``.
        layout: input and output layout; ``None``: one example, ``"CHW"`` (``"CW"``, ``"CDHW"``); ``"NCHW"``
            for a batch.
        init: ``"torch"`` (torch's default, the default here) or ``"flax"`` (``lecun_normal``, zero bias).
        dtype: the parameters' dtype; ``None``: float32.
        key: a ``jax.random`` key for the init (keyword only).

    Attributes:
        weight: ``(out_channels, in_channels / groups, *kernel_size)``, torch's ``Conv2d.weight``.
        bias: ``(out_channels, 1, ..., 1)`` or None.

    Raises:
        ConvBridgeError: an invalid argument (at construction) or input (at call).

    Shape:
        out = floor((n + lo + hi - dilation * (k - 1) - 1) / stride) + 1 per spatial dim.

    >>> import jax, jax.numpy as jnp
    >>> layer = Conv(1, 2, 4, 3, stride=2, key=jax.random.key(0))
    >>> layer
    Conv(1, 2, 4, kernel_size=(3,), stride=(2,), layout='CW')
    >>> layer(jnp.ones((2, 9))).shape
    (4, 4)
    """

    def __init__(self, num_spatial_dims: int, in_channels: int, out_channels: int, kernel_size: IntOrInts,
                 stride: IntOrInts = 1, padding: PaddingLike = 0, dilation: IntOrInts = 1, groups: int = 1,
                 use_bias: bool = True, padding_mode: str = "zeros", layout: str | None = None, init: str = "torch",
                 dtype: Any = None, *, key: jax.Array) -> None:
        self._build(conv_config("equinox", num_spatial_dims, in_channels, out_channels, kernel_size, stride, padding,
                                dilation, groups, use_bias, padding_mode, layout, init), dtype, key)

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """The convolution of ``x`` (in :attr:`layout`); ``key`` is unused (Equinox's layer signature)."""
        return api.conv(x, self.weight, self._bias(), backend="jax", **LayerConfig.of(self, "conv").kwargs(x.ndim))


class ConvTranspose(_Layer):
    """N-d transposed convolution, torch's (the gradient of conv), computing :func:`convbridge.conv_transpose`.

    Args:
        num_spatial_dims, in_channels, out_channels, kernel_size, stride, dilation, groups, use_bias, layout,
            init, dtype, key: as for :class:`Conv`.
        padding: rows cropped from each end of the full output: an int, per-dim ints, ``(lo, hi)`` pairs,
            ``"valid"``, ``"same"`` (output ``n * stride``) or ``"same_lower"``.
        output_padding: rows added on the high side, ``0 <= output_padding < max(stride, dilation)`` (ATen's rule;
            ``eqx.nn.ConvTranspose`` allows only ``< stride``).
        padding_mode: ``"zeros"`` only.

    Attributes:
        weight: ``(in_channels, out_channels / groups, *kernel_size)``, torch's ``ConvTranspose2d.weight``
            (not ``eqx.nn.ConvTranspose``'s layout, and not flipped).
        bias: ``(out_channels, 1, ..., 1)`` or None.

    Raises:
        ConvBridgeError: an invalid argument (at construction) or input (at call).

    Shape:
        out = (n - 1) * stride - lo - hi + dilation * (k - 1) + output_padding + 1 per spatial dim.

    >>> import jax, jax.numpy as jnp
    >>> layer = ConvTranspose(1, 4, 4, 3, stride=2, padding=1, output_padding=1, groups=2, key=jax.random.key(0))
    >>> layer.weight.shape, layer.bias.shape, layer(jnp.ones((4, 5))).shape
    ((4, 2, 3), (4, 1), (4, 10))
    """

    output_padding: tuple[int, ...] = eqx.field(static=True)

    def __init__(self, num_spatial_dims: int, in_channels: int, out_channels: int, kernel_size: IntOrInts,
                 stride: IntOrInts = 1, padding: PaddingLike = 0, output_padding: IntOrInts = 0,
                 dilation: IntOrInts = 1, groups: int = 1, use_bias: bool = True, padding_mode: str = "zeros",
                 layout: str | None = None, init: str = "torch", dtype: Any = None, *, key: jax.Array) -> None:
        self._build(transpose_config("equinox", num_spatial_dims, in_channels, out_channels, kernel_size, stride,
                                     padding, output_padding, dilation, groups, use_bias, padding_mode, layout, init),
                    dtype, key)

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """The transposed convolution of ``x`` (in :attr:`layout`); ``key`` is unused."""
        return api.conv_transpose(x, self.weight, self._bias(), backend="jax",
                                  **LayerConfig.of(self, "conv_transpose").kwargs(x.ndim))
