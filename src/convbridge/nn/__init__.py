"""convbridge's own convolution layers, one set per framework: thin modules over :func:`convbridge.conv` and
:func:`convbridge.conv_transpose`.

:mod:`convbridge.port` falls back to them when a framework's native layer cannot state a configuration exactly
(Flax has no ``'replicate'`` padding mode, Flax's ConvTranspose no groups, Equinox's ConvTranspose needs
``output_padding < stride``, ...). Every framework gets ``Conv`` and ``ConvTranspose`` with the same arguments,
in torch's order::

    Conv(num_spatial_dims, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
         use_bias=True, padding_mode="zeros", layout=None, init=<framework's>, dtype=None)
    ConvTranspose(num_spatial_dims, in_channels, out_channels, kernel_size, stride=1, padding=0,
                  output_padding=0, dilation=1, groups=1, use_bias=True, padding_mode="zeros", layout=None,
                  init=<framework's>, dtype=None)

plus the framework's randomness (Equinox ``key=``, nnx ``rngs=``; torch draws from its global RNG, linen from
``module.init(rng, x)``). ``Conv`` computes :func:`convbridge.conv` exactly and ``ConvTranspose``
:func:`convbridge.conv_transpose` with ``convention="torch"``: PyTorch's meaning, the gradient of conv.

The kernel always holds PyTorch's meaning (never flipped); only the order of its axes follows the framework
(``I`` is the input's channels, ``O`` the output's, ``*`` the spatial axes, in the layout's order):

============  ===============  ======================  ==========================  ======================  =======
submodule     input layout     Conv kernel             ConvTranspose kernel        bias                    init
============  ===============  ======================  ==========================  ======================  =======
``torch``     ``NC*``          ``weight`` ``OI*``      ``weight`` ``IO*``          ``bias`` ``(out,)``     torch
``linen``     ``N*C``          ``kernel`` ``*IO``      ``kernel`` ``*IO``          ``bias`` ``(out,)``     flax
``nnx``       ``N*C``          ``kernel`` ``*IO``      ``kernel`` ``*IO``          ``bias`` ``(out,)``     flax
``equinox``   ``C*`` (one      ``weight`` ``OI*``      ``weight`` ``IO*``          ``bias``                torch
              example: vmap)                                                       ``(out, 1, ..., 1)``
============  ===============  ======================  ==========================  ======================  =======

A Conv kernel's ``I`` axis holds one group's input channels (``in / groups``); a ConvTranspose kernel's ``I``
axis holds all of them and its ``O`` axis one group's outputs (``out / groups``), as torch's weight does. Any
layout with the same letters may be asked for (``layout="NCHW"`` for a channels-first Flax layer).

``init="torch"`` is PyTorch's default: weight and bias ~ U(-b, b), ``b = 1 / sqrt(fan_in)``, ``fan_in`` torch's
weight axis 1 times the taps (``out / groups * prod(k)`` for ConvTranspose: pytorch#30079, kept).
``init="flax"`` is Flax's: ``lecun_normal`` (truncated normal, variance ``1 / fan_in``) on the kernel laid out
as Flax's ``*IO``, and a zero bias.

Importing :mod:`convbridge.nn` imports no framework; ``convbridge.nn.torch``, ``convbridge.nn.linen``,
``convbridge.nn.nnx`` and ``convbridge.nn.equinox`` are submodules loaded on first use.

>>> import convbridge.nn
>>> sorted(convbridge.nn.STORAGE), convbridge.nn.STORAGE["linen"].conv_kernel
(['equinox', 'linen', 'nnx', 'torch'], '*IO')
"""

from __future__ import annotations

from types import ModuleType

from convbridge.errors import BackendUnavailable  # noqa: F401  (what a missing framework raises)
from convbridge.frameworks import load_submodule
from convbridge.nn._common import INITS, STORAGE

#: The framework submodules, loaded on first use (star-imports load none of them), and the extra installing each.
SUBMODULES = {"torch": "torch", "linen": "flax", "nnx": "flax", "equinox": "equinox"}

__all__ = ["INITS", "STORAGE", "SUBMODULES"]


def __getattr__(name: str) -> ModuleType:
    return load_submodule("convbridge.nn", name, SUBMODULES)


def __dir__() -> list[str]:
    return sorted({*globals(), *SUBMODULES})
