"""Packaging promises: importing convbridge loads no framework and is fast; the doctests run."""

from __future__ import annotations

import json
import subprocess
import sys


import convbridge

HEAVY = ("torch", "jax", "jaxlib", "matplotlib", "flax", "equinox", "scipy")


def test_import_loads_no_framework_and_is_fast():
    code = (
        "import sys, time, json; t = time.perf_counter(); import convbridge; dt = time.perf_counter() - t;"
        "import numpy as np; convbridge.output_shape((1, 3, 8, 8), (4, 3, 3, 3));"
        "convbridge.backends.infer(np.zeros(1));"
        f"print(json.dumps({{'dt': dt, 'loaded': [m for m in {HEAVY!r} if m in sys.modules]}}))"
    )
    times = []
    for _ in range(3):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        info = json.loads(out)
        assert info["loaded"] == [], f"import convbridge loaded {info['loaded']}"
        times.append(info["dt"])
    assert min(times) < 0.3, f"import took {min(times):.3f} s"


def test_inferring_a_backend_imports_nothing():
    code = ("import sys, numpy as np, convbridge as cb; cb.conv(np.ones((1, 1, 4)), np.ones((1, 1, 2)));"
            f"print([m for m in {HEAVY!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_public_names():
    for name in ("conv", "conv_transpose", "unfold", "fold", "compare", "verify", "output_shape", "ConvBridgeError",
                 "BackendUnavailable"):
        assert hasattr(convbridge, name)
    assert issubclass(convbridge.ConvBridgeError, ValueError)
    assert issubclass(convbridge.BackendUnavailable, ImportError)
    assert callable(convbridge.transpose.torch_to_jax) and callable(convbridge.transpose.jax_to_torch)
