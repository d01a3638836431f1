"""convbridge: one convolution, the same meaning in PyTorch, JAX and NumPy, proven numerically.

>>> import numpy as np, convbridge as cb
>>> cb.output_shape((32, 3, 32, 32), (4, 3, 5, 5))
(32, 4, 28, 28)
>>> cb.output_shape((32, 4, 28, 28), (4, 3, 5, 5), op="conv_transpose")
(32, 3, 32, 32)
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # no typing import at run time: `convbridge` starts in a few milliseconds

# The public names load on first use (PEP 562), so that ``convbridge.cli`` starts, and takes over Ctrl-C,
# before NumPy and the rest are imported.
_WHERE = {
    "compare": "judging", "conv": "api", "conv_transpose": "api", "fold": "api", "unfold": "api", "verify": "judging",
    "available_backends": "backends", "implementations": "dispatch", "BackendUnavailable": "errors",
    "ConvBridgeError": "errors", "explain": "explain", "MatmulView": "lowering", "as_matmul": "lowering",
    "conv_matrix": "lowering", "output_shape": "ops", "ParityReport": "parity", "Plan": "plan",
    "Precision": "precision", "ConvSpec": "spec", "ConvTransposeSpec": "spec", "FoldSpec": "spec",
    "UnfoldSpec": "spec", "shard_batch": "sharding", "diff": "divergence", "DiffReport": "divergence",
}
_RENAMED = {"available_backends": "available"}
_MODULES = ("memory", "transpose", "port", "nn", "autotune", "sharding", "models", "divergence")

if TYPE_CHECKING:
    from typing import Any

    from convbridge import autotune, divergence, memory, models, nn, port, sharding, transpose
    from convbridge.divergence import DiffReport, diff
    from convbridge.api import conv, conv_transpose, fold, unfold
    from convbridge.judging import compare, verify
    from convbridge.backends import available as available_backends
    from convbridge.dispatch import implementations
    from convbridge.errors import BackendUnavailable, ConvBridgeError
    from convbridge.explain import explain
    from convbridge.lowering import MatmulView, as_matmul, conv_matrix
    from convbridge.ops import output_shape
    from convbridge.parity import ParityReport
    from convbridge.plan import Plan
    from convbridge.precision import Precision
    from convbridge.sharding import shard_batch
    from convbridge.spec import ConvSpec, ConvTransposeSpec, FoldSpec, UnfoldSpec


def __getattr__(name: str) -> Any:
    if name in _MODULES:  # cb.memory.limit(...); cb.port.to_flax(...); cb.nn.torch.Conv; cb.autotune.choose(...)
        return importlib.import_module(f"convbridge.{name}")
    if name not in _WHERE:
        raise AttributeError(f"module 'convbridge' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"convbridge.{_WHERE[name]}"), _RENAMED.get(name, name))
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


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
    "port",
    "nn",
    "memory",
    "autotune",
    "sharding",
    "shard_batch",
    "diff",
    "DiffReport",
    "models",
    "divergence",
    "ParityReport",
    "Precision",
    "ConvBridgeError",
    "BackendUnavailable",
    "__version__",
]
