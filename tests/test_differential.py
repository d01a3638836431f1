"""Every backend against the independent float64 reference, by the rounding-bound verdict."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given

import convbridge as cb

from cases import CONV
from conftest import BACKENDS, compiling, record, record_report
from oracle import expected_shape
from strategies import build_conv, conv_configs

AGREE = ("identical", "equivalent")


@pytest.mark.parametrize("case", CONV.values(), ids=lambda c: c.name)
def test_case_table_all_backends(case):
    x, w, b = case.arrays(seed=7)
    report = cb.compare(x, w, b, backends=BACKENDS, **case.kwargs)
    record("config", backends=len(BACKENDS), source="table")
    record_report(report, f"table:{case.name}")
    assert report.shape == case.expected_shape
    for p in report.pairs:
        assert p.verdict in AGREE, f"{case.name}: {p}"


@pytest.mark.parametrize("name", ["tutorial", "bias", "reflect", "nhwc", "jax_tuple", "unbatched", "conv1d",
                                  "conv3d_ndhwc", "explain_odd_layouts"])
def test_native_output(name, backend):
    """The result is the backend's native array, in the input dtype, with the shape torch or the oracle gives."""
    case = CONV[name]
    x, w, b = case.arrays(seed=3)
    if backend == "torch":
        import torch

        x, native = torch.from_numpy(x), torch.Tensor
    elif backend == "jax":
        import jax

        x, native = jax.numpy.asarray(x), jax.Array
    else:
        native = np.ndarray
    y = cb.conv(x, w, b, **case.kwargs)  # backend inferred from x; kernel may be numpy
    assert isinstance(y, native)
    assert tuple(y.shape) == case.expected_shape
    assert str(y.dtype).endswith("float32")
    assert cb.verify(y, x, w, b, **case.kwargs).verdict in AGREE


@pytest.mark.parametrize("name", ["bias", "depthwise", "nhwc", "conv1d", "conv3d"])
def test_float64(name):
    """float64 on every backend (JAX with x64 enabled) against the reference, with u = 2**-53."""
    jax = pytest.importorskip("jax")
    case = CONV[name]
    x, w, b = case.arrays(seed=11, dtype="float64")
    with jax.enable_x64(True):
        report = cb.compare(x, w, b, backends=BACKENDS, **case.kwargs)
    record_report(report, f"float64:{case.name}")
    assert report.unit_roundoff == 2.0**-53
    assert report.verdict in AGREE, str(report)


@pytest.mark.parametrize("name", ["tutorial", "groups_asym_dilated", "reflect_nhwc", "depthwise_1d", "unbatched_3d",
                                  "circular"])
def test_matmul_algorithm_through_the_dispatcher(name, backend):
    """``algorithm="matmul"`` (im2col + one product per group) runs through cb.conv on every backend and agrees
    with the reference; its result is the backend's array like the native algorithm's."""
    case = CONV[name]
    x, w, b = case.arrays(seed=4)
    y = cb.conv(x, w, b, backend=backend, algorithm="matmul", **case.kwargs)
    native = cb.conv(x, w, b, backend=backend, **case.kwargs)
    assert type(y) is type(native) and tuple(y.shape) == case.expected_shape
    report = cb.verify(y, x, w, b, name=f"{backend} matmul", **case.kwargs)
    record_report(report, f"matmul:{name}")
    assert report.verdict in AGREE, str(report)


def test_matmul_runs_what_torch_has_no_function_for():
    """4 spatial dims: torch's native algorithm refuses (no conv4d), the matmul algorithm runs."""
    pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((1, 2, 4, 3, 4, 3)).astype("float32"), rng.standard_normal((3, 2, 2, 2, 1, 2))
    w = w.astype("float32")
    with pytest.raises(cb.ConvBridgeError, match="torch has no 4-d convolution.*algorithm='matmul'"):
        cb.conv(x, w, backend="torch")
    y = cb.conv(x, w, backend="torch", algorithm="matmul", padding=1)
    assert cb.verify(y, x, w, padding=1).verdict in AGREE


@compiling("conv")
@given(conv_configs())
def test_hypothesis_all_ranks(cfg):
    x, w, b, kwargs = build_conv(cfg)
    report = cb.compare(x, w, b, backends=BACKENDS, **kwargs)
    record("config", backends=len(BACKENDS), source=f"hypothesis-{cfg['nsp']}d")
    record_report(report, f"hypothesis-{cfg['nsp']}d")
    assert report.shape == expected_shape("conv", x.shape, w.shape, kwargs)
    assert all(p.verdict in AGREE for p in report.pairs), str(report)
    assert math.isfinite(report.pairs[0].max_ratio)


@pytest.mark.slow
@given(conv_configs())
def test_hypothesis_matmul_sweep(cfg):
    """The matmul algorithm over the same configurations (`make sweep`)."""
    x, w, b, kwargs = build_conv(cfg)
    for backend in BACKENDS:
        y = cb.conv(x, w, b, backend=backend, algorithm="matmul", **kwargs)
        assert cb.verify(y, x, w, b, **kwargs).verdict in AGREE
