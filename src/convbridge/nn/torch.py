"""convbridge's convolution layers as ``torch.nn.Module``: :class:`Conv` and :class:`ConvTranspose`.

Their ``weight`` has torch's own shape (``(out, in / groups, *k)``, ``(in, out / groups, *k)`` for
ConvTranspose) and meaning, so ``load_state_dict`` from a ``torch.nn.Conv2d`` works unchanged; what they add is
any rank, any layout (``layout="NHWC"``), ``padding="same"`` with any stride, ``(lo, hi)`` pairs and
``output_padding`` up to ATen's ``max(stride, dilation) - 1``. The default init is torch's own, drawn from
torch's global RNG in torch's order: with the same seed a layer gets the weights ``torch.nn.Conv2d`` would.

>>> import torch
>>> from convbridge.nn.torch import Conv
>>> Conv(2, 3, 8, 3, stride=2, padding="same", layout="NHWC")(torch.zeros(1, 9, 9, 3)).shape
torch.Size([1, 5, 5, 8])
"""

from __future__ import annotations

import math
from typing import Any

import torch

from convbridge import api
from convbridge._types import IntOrInts, PaddingLike
from convbridge.errors import ArgumentTypeError, DTypeError, describe_value
from convbridge.nn._common import FrozenPadding, LayerConfig, conv_config, transpose_config

__all__ = ["Conv", "ConvTranspose"]


class _Layer(torch.nn.Module):
    """The parameters, init and repr of both layers."""

    _op: str = "conv"
    weight: torch.nn.Parameter
    bias: torch.nn.Parameter | None
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

    def _build(self, cfg: LayerConfig, dtype: torch.dtype | None) -> None:
        for name, value in vars(cfg).items():
            if name != "op" and (name != "output_padding" or cfg.transposed):
                setattr(self, name, value)
        self.weight = torch.nn.Parameter(torch.empty(cfg.kernel_shape, dtype=_dtype(dtype)))
        if cfg.use_bias:
            self.bias = torch.nn.Parameter(torch.empty(cfg.out_channels, dtype=_dtype(dtype)))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    @property
    def config(self) -> LayerConfig:
        """The layer's arguments, validated (see :class:`convbridge.nn._common.LayerConfig`)."""
        return LayerConfig.of(self, self._op)

    def reset_parameters(self) -> None:
        """Draw the parameters again with the layer's init scheme, from torch's global RNG."""
        cfg = self.config
        with torch.no_grad():
            if cfg.init_scheme == "torch":
                # torch.nn.ConvNd.reset_parameters, call for call: the same draws for the same seed (the weight has
                # torch's shape, so kaiming_uniform_'s fan-in is cfg.fan_in("torch"), ConvTranspose's quirk included)
                torch.nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
                if self.bias is not None:
                    bound = cfg.uniform_bound()
                    torch.nn.init.uniform_(self.bias, -bound, bound)
            else:
                std = cfg.normal_std()
                drawn = torch.nn.init.trunc_normal_(torch.empty(cfg.flax_kernel_shape, dtype=self.weight.dtype),
                                                    std=std, a=-2 * std, b=2 * std)
                self.weight.copy_(drawn.permute(*cfg.from_flax))
                if self.bias is not None:
                    torch.nn.init.zeros_(self.bias)

    def extra_repr(self) -> str:
        return self.config.describe("torch")


class Conv(_Layer):
    """N-d convolution (cross-correlation, as torch's) computing :func:`convbridge.conv` with torch's backend.

    Args:
        num_spatial_dims: 1, 2, 3, ...
        in_channels, out_channels: channels of the input and the output.
        kernel_size, stride, dilation: one int, or one per spatial dim.
        padding: anything :func:`convbridge.conv` takes: an int, per-dim ints, per-dim ``(lo, hi)`` pairs,
            ``"valid"``, ``"same"`` (XLA's rule, any stride) or ``"same_lower"``.
        groups: channel groups (must divide both channel counts); ``groups == in_channels`` is depthwise.
        use_bias: add a learned bias.
        padding_mode: ``"zeros"``, ``"reflect"``, ``"replicate"`` or ``"circular"``.
        layout: input and output layout, e.g. ``"NHWC"``; ``None``: ``"NCHW"`` (``"NCW"``, ``"NCDHW"``).
        init: ``"torch"`` (torch's default, the default here) or ``"flax"`` (``lecun_normal``, zero bias).
        dtype: the parameters' dtype; ``None``: torch's default dtype.

    Attributes:
        weight: ``(out_channels, in_channels / groups, *kernel_size)``, torch's ``Conv2d.weight``.
        bias: ``(out_channels,)`` or None.

    Raises:
        ConvBridgeError: an invalid argument (at construction) or input (at call).

    Shape:
        out = floor((n + lo + hi - dilation * (k - 1) - 1) / stride) + 1 per spatial dim.

    >>> import torch
    >>> layer = Conv(1, 2, 4, 3, padding_mode="replicate", padding=1)
    >>> layer
    Conv(1, 2, 4, kernel_size=(3,), stride=(1,), padding=1, padding_mode='replicate', layout='NCW')
    >>> layer(torch.ones(5, 2, 7)).shape
    torch.Size([5, 4, 7])
    """

    def __init__(self, num_spatial_dims: int, in_channels: int, out_channels: int, kernel_size: IntOrInts,
                 stride: IntOrInts = 1, padding: PaddingLike = 0, dilation: IntOrInts = 1, groups: int = 1,
                 use_bias: bool = True, padding_mode: str = "zeros", layout: str | None = None, init: str = "torch",
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self._build(conv_config("torch", num_spatial_dims, in_channels, out_channels, kernel_size, stride, padding,
                                dilation, groups, use_bias, padding_mode, layout, init), dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The convolution of ``x`` (in :attr:`layout`)."""
        out: torch.Tensor = api.conv(x, self.weight, self.bias, backend="torch", **self.config.kwargs(x.ndim))
        return out


class ConvTranspose(_Layer):
    """N-d transposed convolution, torch's (the gradient of conv), computing :func:`convbridge.conv_transpose`.

    Args:
        num_spatial_dims, in_channels, out_channels, kernel_size, stride, dilation, groups, use_bias, layout,
            init, dtype: as for :class:`Conv`.
        padding: rows cropped from each end of the full output: an int, per-dim ints, ``(lo, hi)`` pairs,
            ``"valid"``, ``"same"`` (output ``n * stride``) or ``"same_lower"``.
        output_padding: rows added on the high side, ``0 <= output_padding < max(stride, dilation)`` (ATen's rule;
            ``torch.nn.ConvTranspose2d`` allows only ``< stride``).
        padding_mode: ``"zeros"`` only (torch's ConvTranspose takes nothing else).

    Attributes:
        weight: ``(in_channels, out_channels / groups, *kernel_size)``, torch's ``ConvTranspose2d.weight``.
        bias: ``(out_channels,)`` or None.

    Raises:
        ConvBridgeError: an invalid argument (at construction) or input (at call).

    Shape:
        out = (n - 1) * stride - lo - hi + dilation * (k - 1) + output_padding + 1 per spatial dim.

    >>> import torch
    >>> layer = ConvTranspose(2, 4, 2, 3, stride=1, dilation=2, output_padding=1)
    >>> layer(torch.ones(1, 4, 5, 5)).shape
    torch.Size([1, 2, 10, 10])
    """

    _op = "conv_transpose"
    output_padding: tuple[int, ...]

    def __init__(self, num_spatial_dims: int, in_channels: int, out_channels: int, kernel_size: IntOrInts,
                 stride: IntOrInts = 1, padding: PaddingLike = 0, output_padding: IntOrInts = 0,
                 dilation: IntOrInts = 1, groups: int = 1, use_bias: bool = True, padding_mode: str = "zeros",
                 layout: str | None = None, init: str = "torch", dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self._build(transpose_config("torch", num_spatial_dims, in_channels, out_channels, kernel_size, stride,
                                     padding, output_padding, dilation, groups, use_bias, padding_mode, layout, init),
                    dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The transposed convolution of ``x`` (in :attr:`layout`)."""
        out: torch.Tensor = api.conv_transpose(x, self.weight, self.bias, backend="torch", **self.config.kwargs(x.ndim))
        return out


def _dtype(dtype: Any) -> torch.dtype:
    if dtype is None:
        return torch.get_default_dtype()
    if not isinstance(dtype, torch.dtype):
        raise ArgumentTypeError(f"dtype must be a torch.dtype such as torch.float32 (or None), got "
                                f"{describe_value(dtype)}")
    if not dtype.is_floating_point:
        raise DTypeError(f"dtype {dtype} is not a floating-point dtype; parameters are float16, bfloat16, float32 "
                         "or float64")
    return dtype
