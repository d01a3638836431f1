"""convbridge: one convolution, the same meaning in PyTorch, JAX and NumPy, proven numerically.

>>> import numpy as np, convbridge as cb
>>> cb.output_shape((32, 3, 32, 32), (4, 3, 5, 5))
(32, 4, 28, 28)
>>> cb.output_shape((32, 4, 28, 28), (4, 3, 5, 5), op="conv_transpose")
(32, 3, 32, 32)
"""

from convbridge import memory, transpose  # convbridge.memory.limit(...); convbridge.transpose.torch_to_jax(...)
from convbridge.api import compare, conv, conv_transpose, fold, unfold, verify
from convbridge.backends import available as available_backends
from convbridge.dispatch import implementations
from convbridge.errors import BackendUnavailable, ConvBridgeError
from convbridge.explain import explain
from convbridge.lowering import MatmulView, as_matmul, conv_matrix
from convbridge.ops import output_shape
from convbridge.parity import ParityReport
from convbridge.plan import Plan
from convbridge.precision import Precision
from convbridge.spec import ConvSpec, ConvTransposeSpec, FoldSpec, UnfoldSpec

__version__ = "0.1.0"

__all__ = [
    "conv",
    "conv_transpose",
    "unfold",
    "fold",
    "compare",
    "verify",
    "output_shape",
    "explain",
    "as_matmul",
    "conv_matrix",
    "MatmulView",
    "available_backends",
    "implementations",
    "Plan",
    "ConvSpec",
    "ConvTransposeSpec",
    "UnfoldSpec",
    "FoldSpec",
    "transpose",
    "memory",
    "ParityReport",
    "Precision",
    "ConvBridgeError",
    "BackendUnavailable",
    "__version__",
]
