"""The reference CNNs as ``torch.nn.Module`` (NCHW), written without torchvision.

Use them in ``.eval()``: the JAX twins (:mod:`convbridge.models.linen`, :mod:`convbridge.models.equinox`) reproduce
inference, where BatchNorm normalises with its running statistics. BatchNorm here is torch's: ``eps=1e-5``,
``momentum=0.1`` (the weight of the new batch; linen's equivalent is ``momentum=0.9``).

Every non-parametric step is a module (``nn.ReLU``, ``nn.ReLU6``, ``nn.MaxPool2d``, ``nn.AdaptiveAvgPool2d``,
``nn.Upsample``, ``nn.Flatten``) so that forward hooks see it; only the residual add and the channel concat are
plain code. :class:`ResNet18` keeps torchvision's attribute names and so its ``state_dict`` keys
(``conv1.weight``, ``bn1.running_mean``, ``layer2.0.downsample.0.weight``, ``fc.bias``, ...); like torchvision's,
it calls its one ``relu`` module several times per forward.

>>> import torch
>>> from convbridge.models.torch import ResNet18
>>> model = ResNet18(width=8).eval()
>>> model(torch.zeros(1, 3, 32, 32)).shape
torch.Size([1, 10])
>>> [k for k in model.state_dict() if k.startswith("layer2.0.downsample")][:2]
['layer2.0.downsample.0.weight', 'layer2.0.downsample.1.weight']
"""

from __future__ import annotations

import torch
from torch import nn

from convbridge.errors import ArgumentError
from convbridge.models._common import RESNET18_BLOCKS, flatten_order, positive, resnet18_blocks

__all__ = ["ResNet18", "BasicBlock", "MobileNetV2Block", "UNet", "DoubleConv", "LeNet"]


class BasicBlock(nn.Module):
    """ResNet's basic block: two 3x3 convs with BN, ReLU after each and after the residual add.

    Args:
        in_ch, out_ch: channels in and out.
        stride: the first conv's stride; with ``stride != 1`` or ``in_ch != out_ch`` the identity path is
            ``downsample = nn.Sequential(Conv2d(in_ch, out_ch, 1, stride, bias=False), BatchNorm2d(out_ch))``.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``relu(bn2(conv2(relu(bn1(conv1(x))))) + identity)``."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(out + identity)
        return out


class ResNet18(nn.Module):
    """ResNet-18 (torchvision's layout): 7x7/2 stem, 3x3/2 max pool, four stages of two BasicBlocks with widths
    ``width * (1, 2, 4, 8)``, adaptive average pool, flatten, Linear. All convs are bias-free.

    Args:
        num_classes: outputs of ``fc``.
        width: the first stage's channels (64 is torchvision's; 8 or 16 give a thin net with all 18 layers).
        pool_output: ``avgpool`` pools to ``pool_output x pool_output`` (1 is torchvision's); ``fc`` takes
            ``8 * width * pool_output**2`` features.
        in_channels: the input's channels.

    Shape:
        ``(N, in_channels, H, W) -> (N, num_classes)``; the features are ``H / 32`` (rounded up) before the pool.
    """

    def __init__(self, num_classes: int = 10, width: int = 64, pool_output: int = 1, in_channels: int = 3) -> None:
        super().__init__()
        num_classes, width = positive(num_classes, "num_classes"), positive(width, "width")
        pool_output, in_channels = positive(pool_output, "pool_output"), positive(in_channels, "in_channels")
        self.conv1 = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        blocks = resnet18_blocks(width)
        for stage in range(1, len(RESNET18_BLOCKS) + 1):
            setattr(self, f"layer{stage}", nn.Sequential(*[BasicBlock(c_in, c_out, stride)
                                                            for s, _, c_in, c_out, stride in blocks if s == stage]))
        self.avgpool = nn.AdaptiveAvgPool2d(pool_output)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(blocks[-1][3] * pool_output * pool_output, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The logits of ``x`` (NCHW)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for stage in range(1, len(RESNET18_BLOCKS) + 1):
            x = getattr(self, f"layer{stage}")(x)
        out: torch.Tensor = self.fc(self.flatten(self.avgpool(x)))
        return out


class MobileNetV2Block(nn.Module):
    """MobileNetV2's inverted residual: 1x1 expand conv + BN + ReLU6, 3x3 depthwise conv (``groups=hidden``) + BN +
    ReLU6, 1x1 project conv + BN; ``x +`` that when ``stride == 1`` and ``in_ch == out_ch``.

    Args:
        in_ch, out_ch: channels in and out.
        stride: the depthwise conv's stride (1 or 2).
        expand: ``hidden = in_ch * expand``; with ``expand == 1`` there is no expand conv (as torchvision's).

    Attributes:
        expand_conv, expand_bn, expand_relu (absent when ``expand == 1``), dw_conv, dw_bn, dw_relu,
        project_conv, project_bn, use_residual.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, expand: int = 6) -> None:
        super().__init__()
        in_ch, out_ch = positive(in_ch, "in_ch"), positive(out_ch, "out_ch")
        stride, expand = positive(stride, "stride"), positive(expand, "expand")
        hidden = in_ch * expand
        self.use_residual = stride == 1 and in_ch == out_ch
        if expand != 1:
            self.expand_conv = nn.Conv2d(in_ch, hidden, 1, bias=False)
            self.expand_bn = nn.BatchNorm2d(hidden)
            self.expand_relu = nn.ReLU6()
        self.dw_conv = nn.Conv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, bias=False)
        self.dw_bn = nn.BatchNorm2d(hidden)
        self.dw_relu = nn.ReLU6()
        self.project_conv = nn.Conv2d(hidden, out_ch, 1, bias=False)
        self.project_bn = nn.BatchNorm2d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output for ``x`` (NCHW)."""
        out = x
        if hasattr(self, "expand_conv"):
            out = self.expand_relu(self.expand_bn(self.expand_conv(out)))
        out = self.dw_relu(self.dw_bn(self.dw_conv(out)))
        out = self.project_bn(self.project_conv(out))
        return x + out if self.use_residual else out


class DoubleConv(nn.Module):
    """Two (3x3 reflect-padded conv, BN, ReLU): ``conv1, bn1, relu1, conv2, bn2, relu2``."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1, padding_mode="reflect", bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, padding_mode="reflect", bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``relu2(bn2(conv2(relu1(bn1(conv1(x))))))``."""
        out: torch.Tensor = self.relu2(self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))))
        return out


class UNet(nn.Module):
    """A small U-Net with two down levels: reflect-padded 3x3 convs, max-pool downsampling, one up path through a
    grouped transposed conv (``ConvTranspose2d(4w, 4w, 2, stride=2, groups=2)``), the other through bilinear
    upsampling, channel-concat skips (skip first), and a 1x1 conv head with bias.

    Args:
        in_ch: the input's channels.
        num_classes: the output's channels.
        width: ``w``, the first level's channels (levels: ``w, 2w, 4w``).
        align_corners: ``up2``'s ``nn.Upsample(scale_factor=2, mode="bilinear", align_corners=...)``.

    Attributes:
        inc, pool1, down1, pool2, down2, up1, conv_up1, up2, conv_up2, outc.

    Shape:
        ``(N, in_ch, H, W) -> (N, num_classes, H, W)``, ``H`` and ``W`` multiples of 4 (at least 8: reflect padding
        needs 2 rows at the bottom level).
    """

    def __init__(self, in_ch: int = 3, num_classes: int = 2, width: int = 8, align_corners: bool = False) -> None:
        super().__init__()
        in_ch, num_classes, w = positive(in_ch, "in_ch"), positive(num_classes, "num_classes"), positive(width, "width")
        self.inc = DoubleConv(in_ch, w)
        self.pool1 = nn.MaxPool2d(2)
        self.down1 = DoubleConv(w, 2 * w)
        self.pool2 = nn.MaxPool2d(2)
        self.down2 = DoubleConv(2 * w, 4 * w)
        self.up1 = nn.ConvTranspose2d(4 * w, 4 * w, 2, stride=2, groups=2)
        self.conv_up1 = DoubleConv(6 * w, 2 * w)
        self.up2 = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=bool(align_corners))
        self.conv_up2 = DoubleConv(3 * w, w)
        self.outc = nn.Conv2d(w, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The per-pixel logits of ``x`` (NCHW)."""
        x1 = self.inc(x)
        x2 = self.down1(self.pool1(x1))
        x3 = self.down2(self.pool2(x2))
        u = self.conv_up1(torch.cat([x2, self.up1(x3)], dim=1))
        u = self.conv_up2(torch.cat([x1, self.up2(u)], dim=1))
        out: torch.Tensor = self.outc(u)
        return out


class LeNet(nn.Module):
    """The CIFAR-10 tutorial's CNN: conv 3->6 5x5, ReLU, max pool 2, conv 6->16 5x5, ReLU, max pool 2, flatten
    (channels-first, torch's order), Linear 400->120, ReLU, Linear 120->84, ReLU, Linear 84->num_classes.

    Args:
        num_classes: outputs of ``fc3``.
        flatten: ``"nchw"`` only (accepted for the same signature as the JAX models', where ``"nhwc"`` is the
            planted bug).

    Attributes:
        conv1, relu1, pool1, conv2, relu2, pool2, flatten, fc1, relu3, fc2, relu4, fc3.

    Shape:
        ``(N, 3, 32, 32) -> (N, num_classes)``.
    """

    def __init__(self, num_classes: int = 10, flatten: str = "nchw") -> None:
        super().__init__()
        if flatten_order(flatten) != "nchw":
            raise ArgumentError(f"torch's LeNet flattens NCHW activations in torch's order; flatten={flatten!r} "
                                "exists only on the JAX models (channels-last); use 'nchw'")
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2, 2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(120, 84)
        self.relu4 = nn.ReLU()
        self.fc3 = nn.Linear(84, positive(num_classes, "num_classes"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The logits of ``x`` (NCHW, 32x32)."""
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.flatten(self.pool2(self.relu2(self.conv2(x))))
        x = self.relu4(self.fc2(self.relu3(self.fc1(x))))
        out: torch.Tensor = self.fc3(x)
        return out
