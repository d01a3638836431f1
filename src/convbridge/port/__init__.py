"""Exact porting of convolution layers and kernels between PyTorch, Flax (linen, nnx) and Equinox.

- :func:`kernel` converts a kernel between layouts and transposed-convolution conventions (the flip,
  the in/out swap and the regroup of grouped transposed kernels), bitwise exactly.
- :func:`to_flax`, :func:`to_equinox` and :func:`to_torch` port a layer, any direction; the result is
  the target's native layer when it expresses the configuration exactly, otherwise convbridge's own
  (:mod:`convbridge.nn`) with a :class:`PortWarning`. Never an approximation.
- :func:`check` judges a port with :func:`convbridge.compare` (float64 and exact re-runs included).
- :func:`state_dict` ports a whole model's weights (torch <-> Flax linen/nnx, Equinox), every pair in a table.

Importing this package imports no framework; each side loads its framework on first use.

>>> import numpy as np, convbridge as cb
>>> w = np.zeros((8, 3, 5, 5), np.float32)  # torch Conv2d(3, 8, 5)
>>> cb.port.kernel(w, "torch.nn", "flax.linen").shape
(5, 5, 3, 8)
"""

from __future__ import annotations

from convbridge.port.kernels import kernel, kernel_format
from convbridge.port.layer import Layer, PortWarning
from convbridge.port.modules import Side, check, read, to_equinox, to_flax, to_torch
from convbridge.port.state_dict import PortRow, PortTable, StateDictPort, state_dict

__all__ = ["kernel", "kernel_format", "to_flax", "to_equinox", "to_torch", "check", "read", "state_dict", "Layer",
           "Side", "PortWarning", "StateDictPort", "PortTable", "PortRow"]
