"""Reference CNNs defined identically in PyTorch, Flax linen and Equinox, without torchvision: the test bed of
whole-model porting (:func:`convbridge.port.state_dict`) and of layer-by-layer divergence finding
(:mod:`convbridge.divergence`).

=====================  =================================================================================
``ResNet18``           torchvision's ResNet-18 (BasicBlock x [2, 2, 2, 2]); ``width`` thins it for tests
``MobileNetV2Block``   one inverted residual (1x1 expand, 3x3 depthwise, 1x1 project, ReLU6)
``UNet``               a two-level U-Net: reflect padding, grouped transposed conv, bilinear upsampling
``LeNet``              the CIFAR-10 tutorial's CNN (flatten before the Linear layers)
=====================  =================================================================================

Each class exists in ``convbridge.models.torch`` (NCHW batches, use ``.eval()``), ``convbridge.models.linen``
(NHWC batches, ``model.apply(variables, x, train=False)``) and ``convbridge.models.equinox`` (one CHW example,
``jax.vmap(model)(x)``), with the same architecture, the same parameter shapes up to layout and parameters
created in the order torch's forward uses them. The JAX models carry a few planted-bug knobs, correct by default:
``ResNet18(same_padding_in=...)``, ``MobileNetV2Block(bn_eps=...)``, ``UNet(align_corners=...)`` and
``LeNet(flatten="nhwc")``. Each submodule documents its parameter paths.

Importing :mod:`convbridge.models` imports no framework; the submodules load on first use.

>>> import convbridge.models
>>> convbridge.models.MODELS
('ResNet18', 'MobileNetV2Block', 'UNet', 'LeNet')
"""

from __future__ import annotations

from types import ModuleType

from convbridge.errors import BackendUnavailable  # noqa: F401  (what a missing framework raises)
from convbridge.frameworks import load_submodule
from convbridge.models._common import MODELS

#: The framework submodules, loaded on first use, and the extra installing each.
SUBMODULES = {"torch": "torch", "linen": "flax", "equinox": "equinox"}

__all__ = ["MODELS", "SUBMODULES"]


def __getattr__(name: str) -> ModuleType:
    return load_submodule("convbridge.models", name, SUBMODULES)


def __dir__() -> list[str]:
    return sorted({*globals(), *SUBMODULES})
