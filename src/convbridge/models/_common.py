"""What the reference models share across frameworks, framework-free: ResNet-18's conv names, the planted-bug
knobs' validation, and the index tables of adaptive average pooling and bilinear upsampling (computed once in
NumPy, at trace time, so that both JAX modules sample exactly where torch does).

>>> RESNET18_CONVS[:3]
('conv1', 'layer1.0.conv1', 'layer1.0.conv2')
>>> resnet18_conv("layer2_0/downsample_0"), resnet18_conv("layer2.0.conv1")
('layer2.0.downsample.0', 'layer2.0.conv1')
>>> adaptive_bins(5, 3)
((0, 2), (1, 4), (3, 5))
"""

from __future__ import annotations

import math
import re

import numpy as np

from convbridge._args import as_int, choice
from convbridge.errors import ArgumentError, ArgumentTypeError, brief, describe_value

__all__ = ["MODELS", "RESNET18_BLOCKS", "RESNET18_WIDTHS", "resnet18_blocks", "RESNET18_CONVS", "FLATTEN_ORDERS", "resnet18_conv", "flatten_order",
           "positive", "adaptive_bins", "bilinear_taps", "upsample_mode"]

#: The reference models, the same class names in ``convbridge.models.torch``, ``.linen`` and ``.equinox``.
MODELS = ("ResNet18", "MobileNetV2Block", "UNet", "LeNet")
#: BasicBlocks per stage of ResNet-18, and each stage's channels as multiples of ``width``.
RESNET18_BLOCKS = (2, 2, 2, 2)
RESNET18_WIDTHS = (1, 2, 4, 8)
#: ``Flatten`` orders: ``"nchw"`` flattens channels-first (torch's order), ``"nhwc"`` channels-last.
FLATTEN_ORDERS = ("nchw", "nhwc")
#: ``Upsample`` modes the JAX modules implement.
UPSAMPLE_MODES = ("bilinear",)


def _resnet18_convs() -> tuple[str, ...]:
    names = ["conv1"]
    for stage, blocks in enumerate(RESNET18_BLOCKS, 1):
        for b in range(blocks):
            names += [f"layer{stage}.{b}.conv1", f"layer{stage}.{b}.conv2"]
            if b == 0 and stage > 1:
                names.append(f"layer{stage}.{b}.downsample.0")
    return tuple(names)


#: ResNet-18's convolutions, as torch's attribute paths, in execution order.
RESNET18_CONVS = _resnet18_convs()


def resnet18_blocks(width: int) -> tuple[tuple[int, int, int, int, int], ...]:
    """ResNet-18's BasicBlocks in order: ``(stage, index, in_ch, out_ch, stride)``, stage 1..4, torch's
    ``layer{stage}[index]``.

    >>> resnet18_blocks(8)[1:3]
    ((1, 1, 8, 8, 1), (2, 0, 8, 16, 2))
    """
    out, c_in = [], width
    for stage, (blocks, times) in enumerate(zip(RESNET18_BLOCKS, RESNET18_WIDTHS), 1):
        c_out = width * times
        for b in range(blocks):
            out.append((stage, b, c_in if b == 0 else c_out, c_out, 2 if b == 0 and stage > 1 else 1))
        c_in = c_out
    return tuple(out)


def resnet18_conv(name: object) -> str:
    """The torch path of one of ResNet-18's convs, from a torch path (``"layer2.0.conv1"``) or a linen one
    (``"layer2_0/conv1"``, ``"layer2_0/downsample_0"``).

    Raises:
        ArgumentTypeError: ``name`` is not a string.
        ArgumentError: no conv has that name.
    """
    if not isinstance(name, str):
        raise ArgumentTypeError(f"same_padding_in must be a conv's name such as 'layer2.0.conv1' or None, "
                                f"got {describe_value(name)}")
    torch_path = re.sub(r"_(\d+)(?=/|$)", r".\1", name.strip()).replace("/", ".")
    if torch_path not in RESNET18_CONVS:
        raise ArgumentError(f"same_padding_in {name!r} names no convolution of ResNet18; use a torch path such as "
                            f"'layer2.0.conv1' or a linen path such as 'layer2_0/conv1'; the convs are: "
                            + ", ".join(RESNET18_CONVS))
    return torch_path


def flatten_order(order: object) -> str:
    """``order`` validated: ``"nchw"`` or ``"nhwc"`` (case-insensitive)."""
    return choice(order, "flatten order", FLATTEN_ORDERS)


def upsample_mode(mode: object) -> str:
    """``mode`` validated: only ``"bilinear"`` is implemented by the JAX ``Upsample`` modules."""
    return choice(mode, "upsample mode", UPSAMPLE_MODES)


def positive(value: object, name: str) -> int:
    """``value`` as a positive int, else an error naming ``name``."""
    n = as_int(value, name)
    if n < 1:
        raise ArgumentError(f"{name} must be a positive int, got {brief(value)}")
    return n


def adaptive_bins(n_in: int, n_out: int) -> tuple[tuple[int, int], ...]:
    """torch's adaptive pooling bins along one axis: bin ``i`` covers ``[floor(i n / o), ceil((i + 1) n / o))``."""
    return tuple((math.floor(i * n_in / n_out), math.ceil((i + 1) * n_in / n_out)) for i in range(n_out))


def bilinear_taps(n_in: int, n_out: int, align_corners: bool,
                  scale_factor: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """torch's linear-interpolation taps along one axis (``upsample_bilinear2d``): output ``j`` is
    ``(1 - lam[j]) * x[i0[j]] + lam[j] * x[i1[j]]``.

    ``align_corners=True`` maps the corner pixels' centres onto each other: source ``j (n_in - 1) / (n_out - 1)``.
    ``align_corners=False`` maps pixel areas: source ``(j + 0.5) / scale - 0.5`` clamped at 0, where ``scale`` is
    the ``scale_factor`` given (torch uses it when one is given) or ``n_out / n_in``.

    Returns:
        ``i0``, ``i1`` (int32) and ``lam`` (float32), each of length ``n_out``.
    """
    j = np.arange(n_out, dtype=np.float32)
    if align_corners:
        ratio = np.float32(n_in - 1) / np.float32(n_out - 1) if n_out > 1 else np.float32(0)  # float32, as torch
        src = ratio * j
    else:
        ratio = np.float32(1.0 / scale_factor if scale_factor else n_in / n_out)
        src = np.maximum(ratio * (j + np.float32(0.5)) - np.float32(0.5), np.float32(0))
    i0 = np.minimum(src.astype(np.int32), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    lam = (src - i0.astype(np.float32)).astype(np.float32)
    return i0, i1.astype(np.int32), lam
