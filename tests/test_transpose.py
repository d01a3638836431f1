"""conv_transpose on every backend against the scatter-add reference, by the rounding-bound verdict.

Torch convention: a case table and Hypothesis draws over ranks 1-3, strides, paddings (ints, pairs, same),
output_padding / output_size, dilation, groups (depthwise included), layouts and unbatched input.
Identities: it is the VJP of conv (jax.vjp and torch autograd), and convention="jax" is lax.conv_transpose.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given

import convbridge as cb

from cases import TRANSPOSE
from conftest import BACKENDS, compiling, record, record_report
from oracle import expected_shape
from strategies import build_transpose, transpose_configs

AGREE = ("identical", "equivalent")


@pytest.mark.parametrize("case", TRANSPOSE.values(), ids=lambda c: c.name)
def test_case_table_all_backends(case):
    x, w, b = case.arrays(seed=7)
    report = cb.compare(x, w, b, op="conv_transpose", backends=BACKENDS, **case.kwargs)
    record("config", backends=len(BACKENDS), source="transpose-table")
    record_report(report, f"transpose-table:{case.name}")
    assert report.shape == case.expected_shape
    for p in report.pairs:
        assert p.verdict in AGREE, f"{case.name}: {p}"


@pytest.mark.parametrize("name", ["stride2_pad1_op1", "nhwc", "t1d", "t3d"])
def test_native_output_and_float64(name, backend):
    """The result is the backend's native array in the input dtype; float64 is judged with u = 2**-53."""
    case = TRANSPOSE[name]
    x, w, b = case.arrays(seed=3, dtype="float64")
    if backend == "jax":
        jax = pytest.importorskip("jax")
        with jax.enable_x64(True):
            y = cb.conv_transpose(jax.numpy.asarray(x), w, b, **case.kwargs)
            assert isinstance(y, jax.Array)
            report = cb.verify(y, x, w, b, op="conv_transpose", **case.kwargs)
    else:
        xin = x if backend == "numpy" else pytest.importorskip("torch").from_numpy(x)
        y = cb.conv_transpose(xin, w, b, **case.kwargs)
        assert type(y).__module__.split(".")[0] == ("numpy" if backend == "numpy" else "torch")
        report = cb.verify(y, x, w, b, op="conv_transpose", **case.kwargs)
    assert str(y.dtype).endswith("float64") and tuple(y.shape) == case.expected_shape
    assert report.unit_roundoff == 2.0**-53 and report.verdict in AGREE, str(report)


def test_k_and_gauge_are_conv_transposes():
    """K = C_in / groups * prod(k) (+1 with a bias); the gauge is conv_transpose(|x|, |w|) + |b|."""
    case = TRANSPOSE["groups"]  # C_in 6, groups 3, kernel 3x3, bias
    x, w, b = case.arrays(seed=1)
    report = cb.compare(x, w, b, op="conv_transpose", backends=("numpy",), **case.kwargs)
    # per element: the products that actually reach it (strides and crops remove taps), + 1 for the bias; counted
    # independently by torch's transposed convolution of ones
    pytest.importorskip("torch")
    ones = [np.ones(a.shape) for a in (x, w, b)]
    counts = np.asarray(cb.conv_transpose(*ones, backend="torch", **case.kwargs))
    np.testing.assert_array_equal(np.broadcast_to(report.term_map, counts.shape), counts)
    assert report.terms == counts.max() <= 6 // 3 * 9 + 1  # never more than C_in / groups * prod(k) + 1
    expected = cb.conv_transpose(np.abs(x).astype(np.float64), np.abs(w).astype(np.float64),
                                 np.abs(b).astype(np.float64), **case.kwargs)
    np.testing.assert_array_equal(report.gauge, expected)


# ---- Hypothesis: valid torch-convention configurations -------------------------------------------------


@compiling("conv_transpose")
@given(transpose_configs())
def test_hypothesis_all_ranks(cfg):
    x, w, b, kwargs = build_transpose(cfg)
    report = cb.compare(x, w, b, op="conv_transpose", backends=BACKENDS, **kwargs)
    record("config", backends=len(BACKENDS), source=f"transpose-hypothesis-{cfg['nsp']}d")
    record_report(report, f"transpose-hypothesis-{cfg['nsp']}d")
    assert report.shape == expected_shape("conv_transpose", x.shape, w.shape, kwargs)
    assert all(p.verdict in AGREE for p in report.pairs), str(report)
