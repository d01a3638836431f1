"""convbridge: one convolution, the same meaning in PyTorch, JAX and NumPy, proven numerically.

>>> import numpy as np, convbridge as cb
>>> cb.output_shape((32, 3, 32, 32), (4, 3, 5, 5))
(32, 4, 28, 28)
"""

from convbridge.api import compare, conv, verify
from convbridge.backends import available as available_backends
from convbridge.errors import BackendUnavailable, ConvBridgeError
from convbridge.explain import explain
from convbridge.parity import ParityReport, Precision
from convbridge.spec import ConvSpec, output_shape

__version__ = "0.1.0"

__all__ = [
    "conv",
    "compare",
    "verify",
    "output_shape",
    "explain",
    "available_backends",
    "ConvSpec",
    "ParityReport",
    "Precision",
    "ConvBridgeError",
    "BackendUnavailable",
    "__version__",
]
