"""conv_transpose on every backend against the scatter-add reference, by the rounding-bound verdict.

Torch convention: a case table and Hypothesis draws over ranks 1-3, strides, paddings (ints, pairs, same),
output_padding / output_size, dilation, groups (depthwise included), layouts and unbatched input.
Identities: it is the VJP of conv (jax.vjp and torch autograd), and convention="jax" is lax.conv_transpose.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import convbridge as cb
from convbridge.errors import ConvBridgeError
from convbridge.spec_transpose import make_conv_transpose_spec

from cases import Case
from conftest import BACKENDS, record, record_report

AGREE = ("identical", "equivalent")


TCase = functools.partial(Case, op="conv_transpose")


CASES = [
    TCase("plain_2d", (2, 3, 5, 5), (3, 4, 3, 3)),
    TCase("stride2_pad1_op1", (2, 4, 7, 6), (4, 2, 3, 3), True, dict(stride=2, padding=1, output_padding=1)),
    TCase("pairs", (1, 2, 6, 5), (2, 3, 3, 2), False, dict(stride=(2, 3), padding=((0, 2), (1, 0)))),
    TCase("same", (2, 3, 7, 8), (3, 2, 4, 3), False, dict(stride=2, padding="same")),
    TCase("same_stride_beyond_kernel", (1, 2, 5), (2, 2, 2), True, dict(stride=4, padding="same")),
    TCase("same_lower", (1, 2, 6, 5), (2, 2, 4, 4), False, dict(stride=(1, 2), padding="same_lower")),
    TCase("valid", (1, 2, 4, 4), (2, 2, 2, 3), False, dict(stride=3, padding="valid")),
    TCase("output_padding_below_dilation", (1, 2, 6, 6), (2, 2, 3, 3), False,
          dict(dilation=3, output_padding=2, padding=1)),
    TCase("groups", (2, 6, 5, 5), (6, 2, 3, 3), True, dict(groups=3, stride=2)),
    TCase("depthwise", (2, 4, 6, 6), (4, 1, 3, 3), False, dict(groups=4, stride=2, padding=1, output_padding=1)),
    TCase("depthwise_multiplier", (1, 3, 5, 5), (3, 2, 3, 3), True, dict(groups=3, padding=(0, 1))),
    TCase("nhwc", (2, 5, 6, 3), (3, 3, 3, 4), True, dict(layout="NHWC", stride=2, padding=1)),
    TCase("full_layout", (2, 5, 3, 6), (4, 3, 3, 3), False, dict(layout="NHCW,OIHW->NCHW", stride=(1, 2))),
    TCase("jax_tuple_layout", (5, 6, 2, 3), (3, 3, 3, 4), False, dict(layout=("HWNC", "HWIO", "NHWC"), stride=2)),
    TCase("unbatched", (3, 6, 6), (3, 2, 3, 3), True, dict(stride=2)),
    TCase("unbatched_hwc", (6, 6, 3), (3, 3, 3, 2), False, dict(layout="HWC", stride=2, padding="same")),
    TCase("empty_batch", (0, 3, 5), (3, 2, 3), True, dict(stride=2, padding=1)),
    TCase("t1d", (2, 3, 9), (3, 4, 5), True, dict(stride=3, padding=2, output_padding=2, dilation=2)),
    TCase("t1d_pairs", (2, 2, 7), (2, 2, 4), False, dict(padding=((3, 0),), stride=2)),
    TCase("t1d_output_size", (1, 4, 15), (4, 2, 3), False, dict(stride=2, padding=1, output_size=30)),
    TCase("t3d", (1, 2, 4, 5, 3), (2, 3, 3, 2, 3), True,
          dict(stride=(2, 1, 2), padding=(1, 0, 1), output_padding=(1, 0, 0))),
    TCase("t3d_ndhwc_groups", (1, 3, 5, 4, 4), (2, 2, 2, 4, 1), False,
          dict(layout="NDHWC", groups=2, dilation=2, stride=2)),
    TCase("jax_same", (2, 5, 6, 3), (3, 2, 3, 4), False, dict(convention="jax", stride=2, padding="SAME")),
    TCase("jax_valid_transpose_kernel", (2, 5, 6, 3), (3, 2, 4, 3), True,
          dict(convention="jax", stride=(2, 3), padding="VALID", transpose_kernel=True, dilation=(1, 2))),
    TCase("jax_negative_pairs_1d", (2, 7, 3), (3, 3, 2), False, dict(convention="jax", stride=2, padding=((-1, 4),))),
    TCase("jax_nchw", (1, 3, 5, 4), (2, 3, 3, 3), True,
          dict(convention="jax", stride=2, padding=((1, 2), (0, 0)), layout=("NCHW", "OIHW", "NCHW"))),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_case_table_all_backends(case):
    x, w, b = case.arrays(seed=7)
    report = cb.compare(x, w, b, op="conv_transpose", backends=BACKENDS, **case.kwargs)
    record("config", backends=len(BACKENDS), source="transpose-table")
    record_report(report, f"transpose-table:{case.name}")
    assert report.shape == cb.output_shape(case.x, case.w, op="conv_transpose", bias=b, **case.kwargs)
    for p in report.pairs:
        assert p.verdict in AGREE, f"{case.name}: {p}"


@pytest.mark.parametrize("case", [c for c in CASES if c.name in ("stride2_pad1_op1", "nhwc", "t1d", "t3d")],
                         ids=lambda c: c.name)
def test_native_output_and_float64(case, backend):
    """The result is the backend's native array in the input dtype; float64 is judged with u = 2**-53."""
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
    assert str(y.dtype).endswith("float64") and tuple(y.shape) == report.shape
    assert report.unit_roundoff == 2.0**-53 and report.verdict in AGREE, str(report)


def test_k_and_gauge_are_conv_transposes():
    """K = C_in / groups * prod(k) (+1 with a bias); the gauge is conv_transpose(|x|, |w|) + |b|."""
    x, w, b = CASES[8].arrays(seed=1)  # groups: C_in 6, groups 3, kernel 3x3, bias
    report = cb.compare(x, w, b, op="conv_transpose", backends=("numpy",), **CASES[8].kwargs)
    assert report.terms == 6 // 3 * 9 + 1
    expected = cb.conv_transpose(np.abs(x).astype(np.float64), np.abs(w).astype(np.float64),
                                 np.abs(b).astype(np.float64), **CASES[8].kwargs)
    np.testing.assert_array_equal(report.gauge, expected)


# ---- Hypothesis: valid torch-convention configurations ---------------------------------------------------


@st.composite
def configs(draw, nsp: int):
    g = draw(st.sampled_from([1, 1, 2, 3]))
    depthwise = draw(st.booleans()) and g > 1
    cg_in = 1 if depthwise else draw(st.integers(1, 3))
    kernel = draw(st.lists(st.integers(1, 4), min_size=nsp, max_size=nsp))
    stride = draw(st.lists(st.integers(1, 3), min_size=nsp, max_size=nsp))
    dilation = draw(st.lists(st.integers(1, 3), min_size=nsp, max_size=nsp))
    form = draw(st.sampled_from(["int", "ints", "pairs", "valid", "same", "same_lower", "broadcast"]))
    p = st.integers(0, 3)
    padding = {
        "int": draw(p), "ints": draw(st.lists(p, min_size=nsp, max_size=nsp)), "broadcast": [draw(p)],
        "pairs": [tuple(draw(st.lists(p, min_size=2, max_size=2))) for _ in range(nsp)],
        "valid": "valid", "same": "same", "same_lower": "same_lower",
    }[form]
    kwargs = dict(stride=stride, dilation=dilation, padding=padding, groups=g)
    if not isinstance(padding, str) or padding == "valid":
        kwargs["output_padding"] = [draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation)]
    return dict(
        g=g, c_in=g * cg_in, c_out_g=draw(st.integers(1, 3)), kernel=kernel, batch=draw(st.sampled_from([1, 2, None])),
        sizes=draw(st.lists(st.integers(1, 6 if nsp < 3 else 4), min_size=nsp, max_size=nsp)),
        channels_last=draw(st.booleans()), bias=draw(st.booleans()), seed=draw(st.integers(0, 2**16)),
        by_size=draw(st.booleans()), kwargs=kwargs,
    )


def _build(cfg, nsp: int):
    rng = np.random.default_rng(cfg["seed"])
    x_shape = (cfg["c_in"], *cfg["sizes"])
    if cfg["batch"] is not None:
        x_shape = (cfg["batch"], *x_shape)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal((cfg["c_in"], cfg["c_out_g"], *cfg["kernel"])).astype(np.float32)
    b = rng.standard_normal(cfg["g"] * cfg["c_out_g"]).astype(np.float32) if cfg["bias"] else None
    kwargs = dict(cfg["kwargs"])
    if cfg["channels_last"]:
        x = np.moveaxis(x, -nsp - 1, -1)
        w = np.moveaxis(w, (0, 1), (-2, -1))  # (C_in, C_out/g, *k) -> (*k, I, O)
        kwargs["layout"] = ("N" if cfg["batch"] is not None else "") + "DHW"[3 - nsp:] + "C"
    try:
        spec = make_conv_transpose_spec(x.shape, w.shape, None if b is None else b.shape, **kwargs)
    except ConvBridgeError:  # e.g. padding that crops the whole output: a valid-config generator skips those
        assume(False)
    if cfg["by_size"] and "output_padding" in kwargs:  # the same call, stated through output_size
        kwargs.pop("output_padding")
        kwargs["output_size"] = spec.out_spatial
    return x, w, b, kwargs


def _check_config(cfg, nsp: int):
    x, w, b, kwargs = _build(cfg, nsp)
    report = cb.compare(x, w, b, op="conv_transpose", backends=BACKENDS, **kwargs)
    record("config", backends=len(BACKENDS), source=f"transpose-hypothesis-{nsp}d")
    record_report(report, f"transpose-hypothesis-{nsp}d")
    assert report.shape == cb.output_shape(x.shape, w.shape, op="conv_transpose", **kwargs)
    assert all(p.verdict in AGREE for p in report.pairs), str(report)


@settings(max_examples=50)
@given(configs(1))
def test_hypothesis_1d(cfg):
    _check_config(cfg, 1)


@settings(max_examples=50)
@given(configs(2))
def test_hypothesis_2d(cfg):
    _check_config(cfg, 2)


@settings(max_examples=25)
@given(configs(3))
def test_hypothesis_3d(cfg):
    _check_config(cfg, 3)
