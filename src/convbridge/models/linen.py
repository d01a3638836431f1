"""The reference CNNs as ``flax.linen.Module``: channels-last (NHWC) batches, the twins of
:mod:`convbridge.models.torch`.

Call them as ``model.apply(variables, x, train=False)`` with ``variables = model.init(key, x)`` (or, for shapes
only, ``jax.eval_shape(model.init, key, x)``). ``train=False`` is inference, what porting reproduces: BatchNorm
normalises with ``batch_stats``. ``train=True`` uses batch statistics and needs ``mutable=["batch_stats"]``;
BatchNorm is ``nn.BatchNorm(momentum=0.9, epsilon=1e-5)``, torch's ``BatchNorm2d(momentum=0.1, eps=1e-5)``
(torch's momentum weighs the new batch, Flax's the running value).

Naming mirrors torch's attribute paths: a torch index ``.0`` becomes ``_0`` (as Flax names list members), the
other dots ``/``. A torch ``weight`` is a linen ``kernel`` (conv ``OIHW -> HWIO``, Linear ``(out, in) -> (in, out)``)
or, for BatchNorm, ``scale``; ``running_mean`` / ``running_var`` are ``batch_stats`` ``mean`` / ``var``::

    torch ResNet18                        linen ResNet18 variables
    conv1.weight (w, 3, 7, 7)             params/conv1/kernel (7, 7, 3, w)
    bn1.weight / bn1.running_mean         params/bn1/scale / batch_stats/bn1/mean
    layer1.0.conv2.weight                 params/layer1_0/conv2/kernel
    layer2.0.downsample.0.weight          params/layer2_0/downsample_0/kernel (1, 1, w, 2w)
    layer2.0.downsample.1.running_var     batch_stats/layer2_0/downsample_1/var
    fc.weight (classes, 8w)               params/fc/kernel (8w, classes)

Parameters are created in the order torch's forward uses them (``@nn.compact``, explicit names). Non-parametric
steps are modules too (:class:`ReLU`, :class:`ReLU6`, :class:`MaxPool`, :class:`AdaptiveAvgPool`,
:class:`Upsample`, :class:`Flatten`), so ``capture_intermediates`` records them; ResNet's ``relu`` is one module
called several times, as torch's. Padding is always torch's explicit pairs, never ``"SAME"``, except where a
planted-bug knob asks for it. Reflect-padded convs and the grouped transposed conv are
:class:`convbridge.nn.linen.Conv` / :class:`convbridge.nn.linen.ConvTranspose` (kernel ``HWIO``, transposed
``(kh, kw, in, out / groups)``: torch's weight with its spatial axes first).

Planted-bug knobs (the default is the correct port):

- ``ResNet18(same_padding_in=name)``: the one conv named (``"layer2_0/conv1"`` or ``"layer2.0.conv1"``) pads
  ``"SAME"``: the same shape as torch's, shifted one pixel when strided.
- ``MobileNetV2Block(bn_eps=...)``: every BatchNorm's epsilon (torch's is 1e-5; Keras' 1e-3).
- ``UNet(align_corners=...)``: ``up2``'s bilinear ``align_corners``; a port must copy torch's.
- ``LeNet(flatten="nhwc")``: flattens the channels-last activations directly instead of in torch's NCHW order.

>>> import jax, jax.numpy as jnp
>>> from convbridge.models.linen import ResNet18
>>> model, x = ResNet18(width=8), jnp.zeros((1, 32, 32, 3))
>>> shapes = jax.eval_shape(model.init, jax.random.key(0), x)
>>> shapes["params"]["layer2_0"]["downsample_0"]["kernel"].shape
(1, 1, 8, 16)
>>> zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)  # model.init draws, slowly, for real
>>> jax.jit(model.apply, static_argnames="train")(zeros, x, train=False).shape
(1, 10)

(A real ``model.init`` compiles a truncated normal per parameter shape: about 15 s for ResNet18 on a CPU; to port
weights, fill the structure ``jax.eval_shape`` gives.)
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from convbridge.errors import ShapeError
from convbridge.models._common import (
    adaptive_bins,
    bilinear_taps,
    flatten_order,
    positive,
    resnet18_blocks,
    resnet18_conv,
    upsample_mode,
)
from convbridge.nn import linen as cbnn

__all__ = ["ReLU", "ReLU6", "MaxPool", "AdaptiveAvgPool", "Upsample", "Flatten", "BasicBlock", "ResNet18",
           "MobileNetV2Block", "DoubleConv", "UNet", "LeNet"]

Pairs = tuple[tuple[int, int], tuple[int, int]]


def _pairs(p: int) -> Pairs:
    return ((p, p), (p, p))


def _bn(name: str, eps: float = 1e-5) -> nn.BatchNorm:
    return nn.BatchNorm(momentum=0.9, epsilon=eps, name=name)


def _check_channels(x: jax.Array, expected: int, model: str) -> None:
    if x.ndim != 4 or x.shape[-1] != expected:
        raise ShapeError(f"{model} takes NHWC batches with {expected} channels, got shape {tuple(x.shape)}; "
                         "transpose NCHW input with x.transpose(0, 2, 3, 1)")


# ------------------------------------------------------------------------------------------ non-parametric layers

class ReLU(nn.Module):
    """``max(x, 0)``, torch's ``nn.ReLU``."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """``max(x, 0)``."""
        return jnp.maximum(x, 0)


class ReLU6(nn.Module):
    """``min(max(x, 0), 6)``, torch's ``nn.ReLU6``."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """``min(max(x, 0), 6)``."""
        return jnp.minimum(jnp.maximum(x, 0), 6)


class MaxPool(nn.Module):
    """torch's ``nn.MaxPool2d(kernel_size, stride, padding)`` on NHWC (``ceil_mode=False``; padding is ``-inf``).

    ``stride=None`` means ``kernel_size``, as torch's.
    """

    kernel_size: int
    stride: int | None = None
    padding: int = 0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """The pooled ``x``: out = floor((n + 2 padding - kernel_size) / stride) + 1."""
        k, s, p = self.kernel_size, self.stride or self.kernel_size, self.padding
        return lax.reduce_window(x, -jnp.inf, lax.max, (1, k, k, 1), (1, s, s, 1), ((0, 0), (p, p), (p, p), (0, 0)))


class AdaptiveAvgPool(nn.Module):
    """torch's ``nn.AdaptiveAvgPool2d(output_size)`` on NHWC: output ``(i, j)`` averages torch's bin
    ``[floor(i H / o), ceil((i + 1) H / o))`` x the same along W."""

    output_size: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """``(N, H, W, C) -> (N, o, o, C)``."""
        o = self.output_size
        if o == 1:
            return jnp.mean(x, axis=(1, 2), keepdims=True)
        rows = [jnp.stack([jnp.mean(x[:, h0:h1, w0:w1], axis=(1, 2)) for w0, w1 in adaptive_bins(x.shape[2], o)],
                          axis=1) for h0, h1 in adaptive_bins(x.shape[1], o)]
        return jnp.stack(rows, axis=1)


class Upsample(nn.Module):
    """torch's ``nn.Upsample(scale_factor, mode="bilinear", align_corners)`` on NHWC, both ``align_corners``
    exactly (``jax.image.resize`` has only ``align_corners=False``'s half-pixel rule).

    The output is ``floor(n * scale_factor)``; interpolating along W, then H, rounds as torch's kernel does.
    """

    scale_factor: float = 2.0
    mode: str = "bilinear"
    align_corners: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """``(N, H, W, C) -> (N, floor(H s), floor(W s), C)``."""
        upsample_mode(self.mode)
        for axis in (2, 1):
            n = x.shape[axis]
            i0, i1, lam = bilinear_taps(n, int(n * self.scale_factor), bool(self.align_corners), self.scale_factor)
            shape = [1, 1, 1, 1]
            shape[axis] = lam.size
            w1 = jnp.asarray(lam).reshape(shape)
            x = jnp.take(x, jnp.asarray(i0), axis=axis) * (1 - w1) + jnp.take(x, jnp.asarray(i1), axis=axis) * w1
        return x


class Flatten(nn.Module):
    """torch's ``nn.Flatten()`` for NHWC activations: ``order="nchw"`` (the correct port) transposes to NCHW first
    so the features come in torch's order; ``order="nhwc"`` flattens channels-last (the classic porting bug)."""

    order: str = "nchw"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """``(N, H, W, C) -> (N, C H W)``."""
        if flatten_order(self.order) == "nchw" and x.ndim == 4:
            x = jnp.transpose(x, (0, 3, 1, 2))
        return x.reshape(x.shape[0], -1)


# ------------------------------------------------------------------------------------------------------ ResNet-18

class BasicBlock(nn.Module):
    """ResNet's basic block (see ``convbridge.models.torch.BasicBlock``); submodules ``conv1``, ``bn1``, ``relu``,
    ``conv2``, ``bn2`` and, when ``stride != 1`` or ``in_ch != out_ch``, ``downsample_0`` (1x1 conv) and
    ``downsample_1`` (BatchNorm).

    ``same`` lists the torch-relative names of convs that pad ``"SAME"`` (``"conv1"``, ``"conv2"``,
    ``"downsample.0"``): ResNet18's planted bug.
    """

    in_ch: int
    out_ch: int
    stride: int = 1
    same: tuple[str, ...] = ()

    def _pad(self, name: str, p: int) -> Pairs | str:
        return "SAME" if name in self.same else _pairs(p)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """The block's output for ``x`` (NHWC)."""
        s, c, avg = self.stride, self.out_ch, not train
        relu = ReLU(name="relu")
        out = nn.Conv(c, (3, 3), (s, s), self._pad("conv1", 1), use_bias=False, name="conv1")(x)
        out = relu(_bn("bn1")(out, use_running_average=avg))
        out = nn.Conv(c, (3, 3), (1, 1), self._pad("conv2", 1), use_bias=False, name="conv2")(out)
        out = _bn("bn2")(out, use_running_average=avg)
        identity = x
        if s != 1 or self.in_ch != c:
            identity = nn.Conv(c, (1, 1), (s, s), self._pad("downsample.0", 0), use_bias=False,
                               name="downsample_0")(x)
            identity = _bn("downsample_1")(identity, use_running_average=avg)
        out = relu(out + identity)
        return out


class ResNet18(nn.Module):
    """ResNet-18 (torchvision's) on NHWC batches; see ``convbridge.models.torch.ResNet18``.

    Args:
        num_classes, width, pool_output, in_channels: as torch's.
        same_padding_in: ``None`` (correct), or the name of ONE conv that pads ``"SAME"`` instead of torch's
            explicit pairs, as a linen path (``"layer2_0/conv1"``, ``"layer2_0/downsample_0"``, ``"conv1"``) or a
            torch path (``"layer2.0.conv1"``): the planted one-pixel shift of a strided conv.

    Submodules:
        ``conv1``, ``bn1``, ``relu``, ``maxpool``, ``layer{1..4}_{0,1}`` (:class:`BasicBlock`), ``avgpool``,
        ``flatten``, ``fc``.

    Raises:
        ArgumentError: ``same_padding_in`` names no conv of ResNet18.
        ShapeError: the input is not NHWC with ``in_channels`` channels.

    Shape:
        ``(N, H, W, in_channels) -> (N, num_classes)``.
    """

    num_classes: int = 10
    width: int = 64
    pool_output: int = 1
    in_channels: int = 3
    same_padding_in: str | None = None

    def __post_init__(self) -> None:
        if self.same_padding_in is not None:
            resnet18_conv(self.same_padding_in)  # an unknown name fails at construction
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """The logits of ``x`` (NHWC); ``train`` normalises with batch statistics."""
        width, pool = positive(self.width, "width"), positive(self.pool_output, "pool_output")
        _check_channels(x, positive(self.in_channels, "in_channels"), "ResNet18")
        same = None if self.same_padding_in is None else resnet18_conv(self.same_padding_in)
        stem_pad = "SAME" if same == "conv1" else _pairs(3)
        relu = ReLU(name="relu")
        x = nn.Conv(width, (7, 7), (2, 2), stem_pad, use_bias=False, name="conv1")(x)
        x = relu(_bn("bn1")(x, use_running_average=not train))
        x = MaxPool(3, 2, 1, name="maxpool")(x)
        for stage, b, c_in, c_out, stride in resnet18_blocks(width):
            prefix = f"layer{stage}.{b}."
            local = () if same is None or not same.startswith(prefix) else (same.removeprefix(prefix),)
            x = BasicBlock(c_in, c_out, stride, local, name=f"layer{stage}_{b}")(x, train)
        x = Flatten("nchw", name="flatten")(AdaptiveAvgPool(pool, name="avgpool")(x))
        out: jax.Array = nn.Dense(positive(self.num_classes, "num_classes"), name="fc")(x)
        return out


# ----------------------------------------------------------------------------------------------- MobileNetV2 block

class MobileNetV2Block(nn.Module):
    """MobileNetV2's inverted residual on NHWC; see ``convbridge.models.torch.MobileNetV2Block``.

    Args:
        in_ch, out_ch, stride, expand: as torch's.
        bn_eps: every BatchNorm's epsilon (planted-bug knob: torch's is 1e-5).

    Submodules:
        ``expand_conv``, ``expand_bn``, ``expand_relu`` (without them when ``expand == 1``), ``dw_conv``
        (``feature_group_count=hidden``, kernel ``(3, 3, 1, hidden)``), ``dw_bn``, ``dw_relu``, ``project_conv``,
        ``project_bn``.
    """

    in_ch: int
    out_ch: int
    stride: int = 1
    expand: int = 6
    bn_eps: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """The block's output for ``x`` (NHWC)."""
        in_ch, out_ch = positive(self.in_ch, "in_ch"), positive(self.out_ch, "out_ch")
        s, expand, avg, eps = positive(self.stride, "stride"), positive(self.expand, "expand"), not train, self.bn_eps
        _check_channels(x, in_ch, "MobileNetV2Block")
        hidden = in_ch * expand
        out = x
        if expand != 1:
            out = nn.Conv(hidden, (1, 1), padding=_pairs(0), use_bias=False, name="expand_conv")(out)
            out = ReLU6(name="expand_relu")(_bn("expand_bn", eps)(out, use_running_average=avg))
        out = nn.Conv(hidden, (3, 3), (s, s), _pairs(1), feature_group_count=hidden, use_bias=False,
                      name="dw_conv")(out)
        out = ReLU6(name="dw_relu")(_bn("dw_bn", eps)(out, use_running_average=avg))
        out = nn.Conv(out_ch, (1, 1), padding=_pairs(0), use_bias=False, name="project_conv")(out)
        out = _bn("project_bn", eps)(out, use_running_average=avg)
        return x + out if s == 1 and in_ch == out_ch else out


# ----------------------------------------------------------------------------------------------------------- U-Net

class DoubleConv(nn.Module):
    """Two (3x3 reflect-padded :class:`convbridge.nn.linen.Conv`, BatchNorm, ReLU): ``conv1, bn1, relu1, conv2,
    bn2, relu2``."""

    in_ch: int
    out_ch: int

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """The two convs' output for ``x`` (NHWC)."""
        c, avg = self.out_ch, not train
        x = cbnn.Conv(2, self.in_ch, c, 3, padding=1, padding_mode="reflect", use_bias=False, name="conv1")(x)
        x = ReLU(name="relu1")(_bn("bn1")(x, use_running_average=avg))
        x = cbnn.Conv(2, c, c, 3, padding=1, padding_mode="reflect", use_bias=False, name="conv2")(x)
        return ReLU(name="relu2")(_bn("bn2")(x, use_running_average=avg))


class UNet(nn.Module):
    """A two-level U-Net on NHWC; see ``convbridge.models.torch.UNet``.

    Args:
        in_ch, num_classes, width: as torch's.
        align_corners: ``up2``'s bilinear ``align_corners`` (planted-bug knob: it must equal torch's).

    Submodules:
        ``inc``, ``pool1``, ``down1``, ``pool2``, ``down2`` (:class:`DoubleConv`), ``up1``
        (:class:`convbridge.nn.linen.ConvTranspose`, groups 2, kernel ``(2, 2, 4w, 2w)``), ``conv_up1``, ``up2``
        (:class:`Upsample`), ``conv_up2``, ``outc`` (``nn.Conv`` 1x1 with bias).
    """

    in_ch: int = 3
    num_classes: int = 2
    width: int = 8
    align_corners: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """The per-pixel logits of ``x`` (NHWC)."""
        in_ch, w = positive(self.in_ch, "in_ch"), positive(self.width, "width")
        _check_channels(x, in_ch, "UNet")
        x1 = DoubleConv(in_ch, w, name="inc")(x, train)
        x2 = DoubleConv(w, 2 * w, name="down1")(MaxPool(2, name="pool1")(x1), train)
        x3 = DoubleConv(2 * w, 4 * w, name="down2")(MaxPool(2, name="pool2")(x2), train)
        u = cbnn.ConvTranspose(2, 4 * w, 4 * w, 2, stride=2, groups=2, name="up1")(x3)
        u = DoubleConv(6 * w, 2 * w, name="conv_up1")(jnp.concatenate([x2, u], axis=-1), train)
        u = Upsample(2.0, "bilinear", self.align_corners, name="up2")(u)
        u = DoubleConv(3 * w, w, name="conv_up2")(jnp.concatenate([x1, u], axis=-1), train)
        out: jax.Array = nn.Conv(positive(self.num_classes, "num_classes"), (1, 1), padding=_pairs(0),
                                 name="outc")(u)
        return out


# ----------------------------------------------------------------------------------------------------------- LeNet

class LeNet(nn.Module):
    """The CIFAR-10 tutorial's CNN on NHWC; see ``convbridge.models.torch.LeNet``.

    Args:
        num_classes: outputs of ``fc3``.
        flatten: ``"nchw"`` (correct: transposes to torch's order before ``fc1``) or ``"nhwc"`` (the planted bug).

    Submodules:
        ``conv1``, ``relu1``, ``pool1``, ``conv2``, ``relu2``, ``pool2``, ``flatten``, ``fc1``, ``relu3``, ``fc2``,
        ``relu4``, ``fc3``; ``train`` is accepted (and ignored) for the same call as the other models.
    """

    num_classes: int = 10
    flatten: str = "nchw"

    def __post_init__(self) -> None:
        flatten_order(self.flatten)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """The logits of ``x`` (NHWC, 32x32x3)."""
        _check_channels(x, 3, "LeNet")
        order = flatten_order(self.flatten)
        x = MaxPool(2, 2, name="pool1")(ReLU(name="relu1")(nn.Conv(6, (5, 5), padding=_pairs(0), name="conv1")(x)))
        x = MaxPool(2, 2, name="pool2")(ReLU(name="relu2")(nn.Conv(16, (5, 5), padding=_pairs(0), name="conv2")(x)))
        x = Flatten(order, name="flatten")(x)
        x = ReLU(name="relu3")(nn.Dense(120, name="fc1")(x))
        x = ReLU(name="relu4")(nn.Dense(84, name="fc2")(x))
        out: jax.Array = nn.Dense(positive(self.num_classes, "num_classes"), name="fc3")(x)
        return out

