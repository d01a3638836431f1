"""The reference CNNs as ``equinox.Module``: ONE unbatched example, channels-first (``CHW``), like Equinox's layers
(batch with ``jax.vmap(model)``); the twins of :mod:`convbridge.models.torch`.

Inference only: ``model(x)`` is torch's ``model.eval()(x[None])[0]``. Equinox's own ``eqx.nn.BatchNorm`` threads
a ``State`` through every call, which an inference port does not need, so BatchNorm here is :class:`BatchNorm`: the
leaves ``weight``, ``bias``, ``running_mean``, ``running_var`` (torch's names and shapes) and a static ``eps``
(1e-5, torch's).

Fields mirror torch's attribute paths exactly, an index of an ``nn.Sequential`` becoming a list index: torch
``layer2.0.downsample.0.weight`` is ``model.layer2[0].downsample[0].weight``. Weights keep torch's layouts
(``eqx.nn.Conv2d.weight`` is OIHW, ``eqx.nn.Linear.weight`` is ``(out, in)``), except that a conv bias is
``(out, 1, 1)``; porting is replacing leaves (``eqx.tree_at``)::

    torch ResNet18                        equinox ResNet18
    conv1.weight (w, 3, 7, 7)             conv1.weight (w, 3, 7, 7)
    bn1.running_var                       bn1.running_var
    layer1.0.conv2.weight                 layer1[0].conv2.weight
    layer2.0.downsample.1.weight          layer2[0].downsample[1].weight
    fc.weight (classes, 8w) / fc.bias     fc.weight (classes, 8w) / fc.bias

Fields are declared (and so flattened) in the order torch's forward uses them. Non-parametric steps are modules
(:class:`ReLU`, :class:`ReLU6`, :class:`MaxPool`, :class:`AdaptiveAvgPool`, :class:`Upsample`, :class:`Flatten`);
ResNet's ``relu`` is one module called several times, as torch's. Padding is always torch's explicit pairs
(never ``"SAME"``, except where a planted-bug knob asks for it); reflect padding is ``eqx.nn.Conv2d(...,
padding_mode="REFLECT")`` (``jnp.pad`` with torch's widths, then a VALID conv); the grouped transposed conv is
:class:`convbridge.nn.equinox.ConvTranspose` (torch's weight ``(in, out / groups, kh, kw)``, unflipped).

Planted-bug knobs (the default is the correct port), as in :mod:`convbridge.models.linen`:
``ResNet18(same_padding_in="layer2.0.conv1")`` (that one conv pads ``"SAME"``), ``MobileNetV2Block(bn_eps=...)``,
``UNet(align_corners=...)`` and ``LeNet(flatten="nhwc")`` (flattens in HWC order instead of torch's CHW).

``ResNet18(width=8, key=key)`` draws every weight eagerly, one compiled random op per shape (tens of seconds on
a busy CPU); to port weights into a model, build it abstractly with ``eqx.filter_eval_shape`` and replace every
leaf:

>>> import equinox as eqx, jax, jax.numpy as jnp
>>> from convbridge.models.equinox import ResNet18
>>> model = eqx.filter_eval_shape(ResNet18, width=8, key=jax.random.key(0))  # shapes only, no draws
>>> model.layer2[0].downsample[0].weight.shape
(16, 8, 1, 1)
>>> eqx.filter_eval_shape(lambda m, x: jax.vmap(m)(x), model, jnp.zeros((2, 3, 32, 32))).shape
(2, 10)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax

from convbridge.errors import ShapeError
from convbridge.models._common import (
    RESNET18_BLOCKS,
    adaptive_bins,
    bilinear_taps,
    flatten_order,
    positive,
    resnet18_blocks,
    resnet18_conv,
    upsample_mode,
)
from convbridge.nn import equinox as cbnn

__all__ = ["BatchNorm", "ReLU", "ReLU6", "MaxPool", "AdaptiveAvgPool", "Upsample", "Flatten", "BasicBlock",
           "ResNet18", "MobileNetV2Block", "DoubleConv", "UNet", "LeNet"]

Padding = str | tuple[tuple[int, int], tuple[int, int]]


def _pairs(p: int) -> tuple[tuple[int, int], tuple[int, int]]:
    return ((p, p), (p, p))


def _keys(key: jax.Array, n: int) -> Iterator[jax.Array]:
    return iter(jax.random.split(key, n))


def _check_channels(x: jax.Array, expected: int, model: str) -> None:
    if x.ndim != 3 or x.shape[0] != expected:
        raise ShapeError(f"{model} takes one CHW example with {expected} channels, got shape {tuple(x.shape)}; "
                         "batch with jax.vmap(model)(x)")


# ------------------------------------------------------------------------------------- BatchNorm, non-parametric

class BatchNorm(eqx.Module):
    """Inference BatchNorm with torch's leaves: ``(x - running_mean) * weight / sqrt(running_var + eps) + bias``
    per channel (axis 0).

    Args:
        num_features: channels.
        eps: added to the variance (torch's default 1e-5).

    Attributes:
        weight, bias, running_mean, running_var: ``(num_features,)``; 1, 0, 0, 1 at construction.
    """

    weight: jax.Array
    bias: jax.Array
    running_mean: jax.Array
    running_var: jax.Array
    num_features: int = eqx.field(static=True)
    eps: float = eqx.field(static=True)

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        self.num_features = positive(num_features, "num_features")
        self.eps = float(eps)
        self.weight = jnp.ones(self.num_features)
        self.bias = jnp.zeros(self.num_features)
        self.running_mean = jnp.zeros(self.num_features)
        self.running_var = jnp.ones(self.num_features)

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """``x`` (``C...``) normalised with the running statistics."""
        shape = (-1,) + (1,) * (x.ndim - 1)
        scale = self.weight * lax.rsqrt(self.running_var + self.eps)
        return (x - self.running_mean.reshape(shape)) * scale.reshape(shape) + self.bias.reshape(shape)


class ReLU(eqx.Module):
    """``max(x, 0)``, torch's ``nn.ReLU``."""

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """``max(x, 0)``."""
        return jnp.maximum(x, 0)


class ReLU6(eqx.Module):
    """``min(max(x, 0), 6)``, torch's ``nn.ReLU6``."""

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """``min(max(x, 0), 6)``."""
        return jnp.minimum(jnp.maximum(x, 0), 6)


class MaxPool(eqx.Module):
    """torch's ``nn.MaxPool2d(kernel_size, stride, padding)`` on CHW (``ceil_mode=False``; padding is ``-inf``);
    ``stride=None`` means ``kernel_size``."""

    kernel_size: int = eqx.field(static=True)
    stride: int = eqx.field(static=True)
    padding: int = eqx.field(static=True)

    def __init__(self, kernel_size: int, stride: int | None = None, padding: int = 0) -> None:
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding = padding

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """The pooled ``x``: out = floor((n + 2 padding - kernel_size) / stride) + 1."""
        k, s, p = self.kernel_size, self.stride, self.padding
        return lax.reduce_window(x, -jnp.inf, lax.max, (1, k, k), (1, s, s), ((0, 0), (p, p), (p, p)))


class AdaptiveAvgPool(eqx.Module):
    """torch's ``nn.AdaptiveAvgPool2d(output_size)`` on CHW (torch's bins)."""

    output_size: int = eqx.field(static=True)

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """``(C, H, W) -> (C, o, o)``."""
        o = self.output_size
        if o == 1:
            return jnp.mean(x, axis=(1, 2), keepdims=True)
        rows = [jnp.stack([jnp.mean(x[:, h0:h1, w0:w1], axis=(1, 2)) for w0, w1 in adaptive_bins(x.shape[2], o)],
                          axis=-1) for h0, h1 in adaptive_bins(x.shape[1], o)]
        return jnp.stack(rows, axis=1)


class Upsample(eqx.Module):
    """torch's ``nn.Upsample(scale_factor, mode="bilinear", align_corners)`` on CHW, both ``align_corners``
    exactly; the output is ``floor(n * scale_factor)``."""

    scale_factor: float = eqx.field(static=True, default=2.0)
    mode: str = eqx.field(static=True, default="bilinear")
    align_corners: bool = eqx.field(static=True, default=False)

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """``(C, H, W) -> (C, floor(H s), floor(W s))``; interpolates along W, then H, as torch's kernel rounds."""
        upsample_mode(self.mode)
        for axis in (2, 1):
            n = x.shape[axis]
            i0, i1, lam = bilinear_taps(n, int(n * self.scale_factor), bool(self.align_corners), self.scale_factor)
            shape = [1, 1, 1]
            shape[axis] = lam.size
            w1 = jnp.asarray(lam).reshape(shape)
            x = jnp.take(x, jnp.asarray(i0), axis=axis) * (1 - w1) + jnp.take(x, jnp.asarray(i1), axis=axis) * w1
        return x


class Flatten(eqx.Module):
    """torch's ``nn.Flatten()`` for one example: ``order="nchw"`` flattens ``C, H, W`` (torch's order, the correct
    port); ``order="nhwc"`` flattens ``H, W, C`` (the classic porting bug)."""

    order: str = eqx.field(static=True, default="nchw")

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """``(C, H, W) -> (C H W,)``."""
        if flatten_order(self.order) == "nhwc" and x.ndim == 3:
            x = jnp.transpose(x, (1, 2, 0))
        return x.reshape(-1)


# ------------------------------------------------------------------------------------------------------ ResNet-18

def _conv(c_in: int, c_out: int, k: int, stride: int, padding: Padding, key: jax.Array) -> eqx.nn.Conv2d:
    return eqx.nn.Conv2d(c_in, c_out, k, stride, padding, use_bias=False, key=key)


class BasicBlock(eqx.Module):
    """ResNet's basic block (see ``convbridge.models.torch.BasicBlock``); ``downsample`` is ``[Conv2d, BatchNorm]``
    or None. ``same`` lists the torch-relative names of convs that pad ``"SAME"`` (ResNet18's planted bug)."""

    conv1: eqx.nn.Conv2d
    bn1: BatchNorm
    relu: ReLU
    conv2: eqx.nn.Conv2d
    bn2: BatchNorm
    downsample: list[eqx.nn.Conv2d | BatchNorm] | None

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, same: Sequence[str] = (), *,
                 key: jax.Array) -> None:
        k1, k2, k3 = jax.random.split(key, 3)

        def pad(name: str, p: int) -> Padding:
            return "SAME" if name in same else _pairs(p)

        self.conv1 = _conv(in_ch, out_ch, 3, stride, pad("conv1", 1), k1)
        self.bn1 = BatchNorm(out_ch)
        self.relu = ReLU()
        self.conv2 = _conv(out_ch, out_ch, 3, 1, pad("conv2", 1), k2)
        self.bn2 = BatchNorm(out_ch)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = [_conv(in_ch, out_ch, 1, stride, pad("downsample.0", 0), k3), BatchNorm(out_ch)]

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """The block's output for ``x`` (CHW)."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x
        for layer in self.downsample or ():
            identity = layer(identity)
        return self.relu(out + identity)


class ResNet18(eqx.Module):
    """ResNet-18 (torchvision's) on one CHW example; see ``convbridge.models.torch.ResNet18``.

    Args:
        num_classes, width, pool_output, in_channels: as torch's.
        same_padding_in: ``None`` (correct), or ONE conv's name (``"layer2.0.conv1"``, ``"layer2_0/conv1"``,
            ``"conv1"``, ``"layer2.0.downsample.0"``) that pads ``"SAME"``: the planted one-pixel shift.
        key: a ``jax.random`` key (keyword only).

    Raises:
        ArgumentError: ``same_padding_in`` names no conv of ResNet18.

    Shape:
        ``(in_channels, H, W) -> (num_classes,)``.
    """

    conv1: eqx.nn.Conv2d
    bn1: BatchNorm
    relu: ReLU
    maxpool: MaxPool
    layer1: list[BasicBlock]
    layer2: list[BasicBlock]
    layer3: list[BasicBlock]
    layer4: list[BasicBlock]
    avgpool: AdaptiveAvgPool
    flatten: Flatten
    fc: eqx.nn.Linear
    in_channels: int = eqx.field(static=True)

    def __init__(self, num_classes: int = 10, width: int = 64, pool_output: int = 1, in_channels: int = 3,
                 same_padding_in: str | None = None, *, key: jax.Array) -> None:
        num_classes, width = positive(num_classes, "num_classes"), positive(width, "width")
        pool_output, self.in_channels = positive(pool_output, "pool_output"), positive(in_channels, "in_channels")
        same = None if same_padding_in is None else resnet18_conv(same_padding_in)
        keys = _keys(key, 2 + sum(RESNET18_BLOCKS))
        self.conv1 = _conv(self.in_channels, width, 7, 2, "SAME" if same == "conv1" else _pairs(3), next(keys))
        self.bn1 = BatchNorm(width)
        self.relu = ReLU()
        self.maxpool = MaxPool(3, 2, 1)
        stages: list[list[BasicBlock]] = [[] for _ in RESNET18_BLOCKS]
        blocks = resnet18_blocks(width)
        for stage, b, c_in, c_out, stride in blocks:
            prefix = f"layer{stage}.{b}."
            local = () if same is None or not same.startswith(prefix) else (same.removeprefix(prefix),)
            stages[stage - 1].append(BasicBlock(c_in, c_out, stride, local, key=next(keys)))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = AdaptiveAvgPool(pool_output)
        self.flatten = Flatten("nchw")
        self.fc = eqx.nn.Linear(blocks[-1][3] * pool_output * pool_output, num_classes, key=next(keys))

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """The logits of ``x`` (CHW)."""
        _check_channels(x, self.in_channels, "ResNet18")
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in stage:
                x = block(x)
        out: jax.Array = self.fc(self.flatten(self.avgpool(x)))
        return out


# ----------------------------------------------------------------------------------------------- MobileNetV2 block

class MobileNetV2Block(eqx.Module):
    """MobileNetV2's inverted residual on one CHW example; see ``convbridge.models.torch.MobileNetV2Block``.

    Args:
        in_ch, out_ch, stride, expand: as torch's (``expand_conv``, ``expand_bn``, ``expand_relu`` are None when
            ``expand == 1``).
        bn_eps: every BatchNorm's epsilon (planted-bug knob: torch's is 1e-5).
        key: a ``jax.random`` key (keyword only).
    """

    expand_conv: eqx.nn.Conv2d | None
    expand_bn: BatchNorm | None
    expand_relu: ReLU6 | None
    dw_conv: eqx.nn.Conv2d
    dw_bn: BatchNorm
    dw_relu: ReLU6
    project_conv: eqx.nn.Conv2d
    project_bn: BatchNorm
    use_residual: bool = eqx.field(static=True)

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, expand: int = 6, bn_eps: float = 1e-5, *,
                 key: jax.Array) -> None:
        in_ch, out_ch = positive(in_ch, "in_ch"), positive(out_ch, "out_ch")
        stride, expand = positive(stride, "stride"), positive(expand, "expand")
        k1, k2, k3 = jax.random.split(key, 3)
        hidden = in_ch * expand
        self.use_residual = stride == 1 and in_ch == out_ch
        self.expand_conv = self.expand_bn = self.expand_relu = None
        if expand != 1:
            self.expand_conv = _conv(in_ch, hidden, 1, 1, _pairs(0), k1)
            self.expand_bn = BatchNorm(hidden, bn_eps)
            self.expand_relu = ReLU6()
        self.dw_conv = eqx.nn.Conv2d(hidden, hidden, 3, stride, _pairs(1), groups=hidden, use_bias=False, key=k2)
        self.dw_bn = BatchNorm(hidden, bn_eps)
        self.dw_relu = ReLU6()
        self.project_conv = _conv(hidden, out_ch, 1, 1, _pairs(0), k3)
        self.project_bn = BatchNorm(out_ch, bn_eps)

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """The block's output for ``x`` (CHW)."""
        out = x
        if self.expand_conv is not None and self.expand_bn is not None and self.expand_relu is not None:
            out = self.expand_relu(self.expand_bn(self.expand_conv(out)))
        out = self.dw_relu(self.dw_bn(self.dw_conv(out)))
        out = self.project_bn(self.project_conv(out))
        return x + out if self.use_residual else out


# ----------------------------------------------------------------------------------------------------------- U-Net

class DoubleConv(eqx.Module):
    """Two (3x3 reflect-padded conv, BatchNorm, ReLU): ``conv1, bn1, relu1, conv2, bn2, relu2``."""

    conv1: eqx.nn.Conv2d
    bn1: BatchNorm
    relu1: ReLU
    conv2: eqx.nn.Conv2d
    bn2: BatchNorm
    relu2: ReLU

    def __init__(self, in_ch: int, out_ch: int, *, key: jax.Array) -> None:
        k1, k2 = jax.random.split(key)
        self.conv1 = eqx.nn.Conv2d(in_ch, out_ch, 3, 1, _pairs(1), use_bias=False, padding_mode="REFLECT", key=k1)
        self.bn1 = BatchNorm(out_ch)
        self.relu1 = ReLU()
        self.conv2 = eqx.nn.Conv2d(out_ch, out_ch, 3, 1, _pairs(1), use_bias=False, padding_mode="REFLECT", key=k2)
        self.bn2 = BatchNorm(out_ch)
        self.relu2 = ReLU()

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """The two convs' output for ``x`` (CHW)."""
        return self.relu2(self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))))


class UNet(eqx.Module):
    """A two-level U-Net on one CHW example; see ``convbridge.models.torch.UNet``.

    Args:
        in_ch, num_classes, width: as torch's.
        align_corners: ``up2``'s bilinear ``align_corners`` (planted-bug knob: it must equal torch's).
        key: a ``jax.random`` key (keyword only).

    Attributes:
        inc, pool1, down1, pool2, down2, up1 (:class:`convbridge.nn.equinox.ConvTranspose`, groups 2, torch's
        weight ``(4w, 2w, 2, 2)``, bias ``(4w, 1, 1)``), conv_up1, up2, conv_up2, outc (``eqx.nn.Conv2d`` 1x1).
    """

    inc: DoubleConv
    pool1: MaxPool
    down1: DoubleConv
    pool2: MaxPool
    down2: DoubleConv
    up1: cbnn.ConvTranspose
    conv_up1: DoubleConv
    up2: Upsample
    conv_up2: DoubleConv
    outc: eqx.nn.Conv2d
    in_ch: int = eqx.field(static=True)

    def __init__(self, in_ch: int = 3, num_classes: int = 2, width: int = 8, align_corners: bool = False, *,
                 key: jax.Array) -> None:
        self.in_ch, w = positive(in_ch, "in_ch"), positive(width, "width")
        keys = _keys(key, 7)
        self.inc = DoubleConv(self.in_ch, w, key=next(keys))
        self.pool1 = MaxPool(2)
        self.down1 = DoubleConv(w, 2 * w, key=next(keys))
        self.pool2 = MaxPool(2)
        self.down2 = DoubleConv(2 * w, 4 * w, key=next(keys))
        self.up1 = cbnn.ConvTranspose(2, 4 * w, 4 * w, 2, stride=2, groups=2, key=next(keys))
        self.conv_up1 = DoubleConv(6 * w, 2 * w, key=next(keys))
        self.up2 = Upsample(2.0, "bilinear", bool(align_corners))
        self.conv_up2 = DoubleConv(3 * w, w, key=next(keys))
        self.outc = eqx.nn.Conv2d(w, positive(num_classes, "num_classes"), 1, 1, _pairs(0), key=next(keys))

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """The per-pixel logits of ``x`` (CHW)."""
        _check_channels(x, self.in_ch, "UNet")
        x1 = self.inc(x)
        x2 = self.down1(self.pool1(x1))
        x3 = self.down2(self.pool2(x2))
        u = self.conv_up1(jnp.concatenate([x2, self.up1(x3)], axis=0))
        u = self.conv_up2(jnp.concatenate([x1, self.up2(u)], axis=0))
        out: jax.Array = self.outc(u)
        return out


# ----------------------------------------------------------------------------------------------------------- LeNet

class LeNet(eqx.Module):
    """The CIFAR-10 tutorial's CNN on one CHW example; see ``convbridge.models.torch.LeNet``.

    Args:
        num_classes: outputs of ``fc3``.
        flatten: ``"nchw"`` (correct: C, H, W order, torch's) or ``"nhwc"`` (the planted bug: H, W, C order).
        key: a ``jax.random`` key (keyword only).
    """

    conv1: eqx.nn.Conv2d
    relu1: ReLU
    pool1: MaxPool
    conv2: eqx.nn.Conv2d
    relu2: ReLU
    pool2: MaxPool
    flatten: Flatten
    fc1: eqx.nn.Linear
    relu3: ReLU
    fc2: eqx.nn.Linear
    relu4: ReLU
    fc3: eqx.nn.Linear

    def __init__(self, num_classes: int = 10, flatten: str = "nchw", *, key: jax.Array) -> None:
        keys = _keys(key, 5)
        self.conv1 = eqx.nn.Conv2d(3, 6, 5, 1, _pairs(0), key=next(keys))
        self.relu1 = ReLU()
        self.pool1 = MaxPool(2, 2)
        self.conv2 = eqx.nn.Conv2d(6, 16, 5, 1, _pairs(0), key=next(keys))
        self.relu2 = ReLU()
        self.pool2 = MaxPool(2, 2)
        self.flatten = Flatten(flatten_order(flatten))
        self.fc1 = eqx.nn.Linear(16 * 5 * 5, 120, key=next(keys))
        self.relu3 = ReLU()
        self.fc2 = eqx.nn.Linear(120, 84, key=next(keys))
        self.relu4 = ReLU()
        self.fc3 = eqx.nn.Linear(84, positive(num_classes, "num_classes"), key=next(keys))

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """The logits of ``x`` (CHW, 3x32x32)."""
        _check_channels(x, 3, "LeNet")
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.flatten(self.pool2(self.relu2(self.conv2(x))))
        x = self.relu4(self.fc2(self.relu3(self.fc1(x))))
        out: jax.Array = self.fc3(x)
        return out
