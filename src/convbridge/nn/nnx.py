"""convbridge's convolution layers as ``flax.nnx.Module``: :class:`Conv` and :class:`ConvTranspose`.

Like ``nnx.Conv`` they take channels-last input (``"NHWC"``; any layout with ``layout=``), hold ``kernel``
(``*IO``, spatial axes first) and ``bias`` as ``nnx.Param`` and draw from ``rngs.params()`` (kernel, then
bias). The default ``"flax"`` init is ``nnx.Conv``'s: with the same ``Rngs`` a Conv gets ``nnx.Conv``'s kernel.
What they add: ``'replicate'`` padding, true ``'reflect'``/``'circular'`` widths, ``"same"`` with any stride,
and a ConvTranspose with torch's meaning, groups and ``output_padding``.

>>> import jax.numpy as jnp
>>> from flax import nnx
>>> from convbridge.nn.nnx import Conv
>>> Conv(1, 2, 4, 3, padding=1, padding_mode="replicate", rngs=nnx.Rngs(0))(jnp.zeros((1, 6, 2))).shape
(1, 6, 4)
"""

from __future__ import annotations

from typing import Any

import jax
from flax import nnx

from convbridge import api
from convbridge._types import IntOrInts, PaddingLike
from convbridge.nn._common import FrozenPadding, LayerConfig, conv_config, transpose_config
from convbridge.nn._jax import draw_bias, draw_kernel, param_dtype

__all__ = ["Conv", "ConvTranspose"]


class _Layer(nnx.Module):
    """The parameters, init and repr of both layers."""

    _op = "conv"
    kernel: nnx.Param[jax.Array]
    bias: nnx.Param[jax.Array] | None
    num_spatial_dims: int
    in_channels: int
    out_channels: int
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    padding: FrozenPadding
    dilation: tuple[int, ...]
    groups: int
    use_bias: bool
    padding_mode: str
    layout: str
    kernel_layout: str
    init_scheme: str

    def _build(self, cfg: LayerConfig, dtype: Any, rngs: nnx.Rngs) -> None:
        for name, value in vars(cfg).items():
            if name != "op" and (name != "output_padding" or cfg.transposed):
                setattr(self, name, value)
        dtype = param_dtype(dtype)
        self.kernel = nnx.Param(draw_kernel(cfg, rngs.params(), dtype))
        self.bias = nnx.Param(draw_bias(cfg, rngs.params(), dtype)) if cfg.use_bias else nnx.data(None)

    @property
    def config(self) -> LayerConfig:
        """The layer's arguments, validated (see :class:`convbridge.nn._common.LayerConfig`)."""
        return LayerConfig.of(self, self._op)

    def _params(self) -> tuple[jax.Array, jax.Array | None]:
        return self.kernel[...], None if self.bias is None else self.bias[...]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config.describe('flax')})"

    __str__ = __repr__  # nnx prints its attribute tree otherwise (nnx.display still does)


class Conv(_Layer):
    """N-d convolution (cross-correlation, as torch's) computing :func:`convbridge.conv` with JAX's backend.

    Args:
        num_spatial_dims: 1, 2, 3, ...
        in_channels, out_channels: channels of the input and the output.
        kernel_size, stride, dilation: one int, or one per spatial dim.
        padding: anything :func:`convbridge.conv` takes: an int, per-dim ints, per-dim ``(lo, hi)`` pairs,
            ``"valid"``, ``"same"`` (XLA's rule, any stride) or ``"same_lower"``. The default is 0 (torch's), not
            Flax's ``"SAME"``.
        groups: channel groups (must divide both channel counts); ``groups == in_channels`` is depthwise.
        use_bias: add a learned bias.
        padding_mode: ``"zeros"``, ``"reflect"``, ``"replicate"`` or ``"circular"``.
        layout: input and output layout; ``None``: ``"NHWC"`` (``"NWC"``, ``"NDHWC"``).
        init: ``"flax"`` (``lecun_normal``, zero bias; the default here) or ``"torch"`` (U(-b, b)).
        dtype: the parameters' dtype; ``None``: float32.
        rngs: ``nnx.Rngs`` with a ``params`` stream (keyword only).

    Attributes:
        kernel: ``nnx.Param`` of shape ``(*kernel_size, in_channels / groups, out_channels)``.
        bias: ``nnx.Param`` of shape ``(out_channels,)``, or None.

    Raises:
        ConvBridgeError: an invalid argument (at construction) or input (at call).

    Shape:
        out = floor((n + lo + hi - dilation * (k - 1) - 1) / stride) + 1 per spatial dim.

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> layer = Conv(1, 2, 4, 3, stride=2, rngs=nnx.Rngs(0))
    >>> layer
    Conv(1, 2, 4, kernel_size=(3,), stride=(2,), layout='NWC')
    >>> layer(jnp.ones((1, 9, 2))).shape
    (1, 4, 4)
    """

    def __init__(self, num_spatial_dims: int, in_channels: int, out_channels: int, kernel_size: IntOrInts,
                 stride: IntOrInts = 1, padding: PaddingLike = 0, dilation: IntOrInts = 1, groups: int = 1,
                 use_bias: bool = True, padding_mode: str = "zeros", layout: str | None = None, init: str = "flax",
                 dtype: Any = None, *, rngs: nnx.Rngs) -> None:
        self._build(conv_config("nnx", num_spatial_dims, in_channels, out_channels, kernel_size, stride, padding,
                                dilation, groups, use_bias, padding_mode, layout, init), dtype, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """The convolution of ``x`` (in :attr:`layout`)."""
        return api.conv(x, *self._params(), backend="jax", **self.config.kwargs(x.ndim))


class ConvTranspose(_Layer):
    """N-d transposed convolution, torch's (the gradient of conv; kernel not flipped), computing
    :func:`convbridge.conv_transpose`.

    Args:
        num_spatial_dims, in_channels, out_channels, kernel_size, stride, dilation, groups, use_bias, layout,
            init, dtype, rngs: as for :class:`Conv`.
        padding: rows cropped from each end of the full output: an int, per-dim ints, ``(lo, hi)`` pairs,
            ``"valid"``, ``"same"`` (output ``n * stride``) or ``"same_lower"``.
        output_padding: rows added on the high side, ``0 <= output_padding < max(stride, dilation)`` (ATen's rule).
        padding_mode: ``"zeros"`` only.

    Attributes:
        kernel: ``nnx.Param`` of shape ``(*kernel_size, in_channels, out_channels / groups)``: torch's weight with
            its spatial axes first (``I`` is all of the input's channels).
        bias: ``nnx.Param`` of shape ``(out_channels,)``, or None.

    Raises:
        ConvBridgeError: an invalid argument (at construction) or input (at call).

    Shape:
        out = (n - 1) * stride - lo - hi + dilation * (k - 1) + output_padding + 1 per spatial dim.

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> layer = ConvTranspose(1, 2, 8, 3, stride=2, groups=2, rngs=nnx.Rngs(0))
    >>> layer.kernel.shape, layer(jnp.ones((1, 5, 2))).shape
    ((3, 2, 4), (1, 11, 8))
    """

    _op = "conv_transpose"
    output_padding: tuple[int, ...]

    def __init__(self, num_spatial_dims: int, in_channels: int, out_channels: int, kernel_size: IntOrInts,
                 stride: IntOrInts = 1, padding: PaddingLike = 0, output_padding: IntOrInts = 0,
                 dilation: IntOrInts = 1, groups: int = 1, use_bias: bool = True, padding_mode: str = "zeros",
                 layout: str | None = None, init: str = "flax", dtype: Any = None, *, rngs: nnx.Rngs) -> None:
        self._build(transpose_config("nnx", num_spatial_dims, in_channels, out_channels, kernel_size, stride,
                                     padding, output_padding, dilation, groups, use_bias, padding_mode, layout, init),
                    dtype, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """The transposed convolution of ``x`` (in :attr:`layout`)."""
        return api.conv_transpose(x, *self._params(), backend="jax", **self.config.kwargs(x.ndim))
