"""Every backend against the independent float64 reference, by the rounding-bound verdict."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import convbridge as cb
from convbridge.errors import ConvBridgeError
from convbridge.spec import make_conv_spec

from cases import CASES
from conftest import BACKENDS, record, record_report

AGREE = ("identical", "equivalent")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_case_table_all_backends(case):
    x, w, b = case.arrays(seed=7)
    report = cb.compare(x, w, b, backends=BACKENDS, **case.kwargs)
    record("config", backends=len(BACKENDS), source="table")
    record_report(report, f"table:{case.name}")
    assert report.shape == cb.output_shape(case.x, case.w, bias=b, **case.kwargs)
    for p in report.pairs:
        assert p.verdict in AGREE, f"{case.name}: {p}"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_native_output(case, backend):
    """The result is the backend's native array, in the input dtype, with the promised shape."""
    x, w, b = case.arrays(seed=3)
    if backend == "torch":
        import torch

        x = torch.from_numpy(x)
        native = torch.Tensor
    elif backend == "jax":
        import jax

        x = jax.numpy.asarray(x)
        native = jax.Array
    else:
        native = np.ndarray
    y = cb.conv(x, w, b, **case.kwargs)  # backend inferred from x; kernel may be numpy
    assert isinstance(y, native)
    assert tuple(y.shape) == cb.output_shape(case.x, case.w, **case.kwargs)
    assert str(y.dtype).endswith("float32")
    verdict = cb.verify(y, x, w, b, **case.kwargs).verdict
    assert verdict in AGREE


@pytest.mark.parametrize("case", [c for c in CASES if c.name in ("bias", "depthwise", "nhwc", "conv1d", "conv3d")],
                         ids=lambda c: c.name)
def test_float64(case):
    """float64 on every backend (JAX with x64 enabled) against the reference, with u = 2**-53."""
    jax = pytest.importorskip("jax")
    x, w, b = case.arrays(seed=11, dtype="float64")
    with jax.enable_x64(True):
        report = cb.compare(x, w, b, backends=BACKENDS, **case.kwargs)
    record_report(report, f"float64:{case.name}")
    assert report.unit_roundoff == 2.0**-53
    assert report.verdict in AGREE, str(report)


# ---- Hypothesis: valid configurations drawn across ranks, strides, dilations, paddings, modes, groups, layouts


@st.composite
def configs(draw, nsp: int):
    g = draw(st.sampled_from([1, 1, 2, 3]))
    depthwise = draw(st.booleans()) and g > 1
    cg_in = 1 if depthwise else draw(st.integers(1, 3))
    cg_out = draw(st.integers(1, 3))
    kernel = draw(st.lists(st.integers(1, 4), min_size=nsp, max_size=nsp))
    stride = draw(st.lists(st.integers(1, 3), min_size=nsp, max_size=nsp))
    dilation = draw(st.lists(st.integers(1, 3), min_size=nsp, max_size=nsp))
    mode = draw(st.sampled_from(["zeros", "zeros", "reflect", "replicate", "circular"]))
    form = draw(st.sampled_from(["int", "ints", "pairs", "valid", "same", "same_lower", "broadcast"]))
    p = st.integers(0, 3)
    padding = {
        "int": draw(p),
        "ints": draw(st.lists(p, min_size=nsp, max_size=nsp)),
        "broadcast": [draw(p)],
        "pairs": [tuple(draw(st.lists(p, min_size=2, max_size=2))) for _ in range(nsp)],
        "valid": "valid", "same": "same", "same_lower": "same_lower",
    }[form]
    span = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
    sizes = [s + draw(st.integers(0, 6)) for s in span]
    if nsp == 3:
        sizes = [min(n, 9) for n in sizes]
    batch = draw(st.sampled_from([1, 2, None]))  # None: unbatched
    last = draw(st.booleans())
    return dict(
        g=g, c_in=g * cg_in, c_out=g * cg_out, kernel=kernel, sizes=sizes, batch=batch, channels_last=last,
        bias=draw(st.booleans()), seed=draw(st.integers(0, 2**16)),
        kwargs=dict(stride=stride, dilation=dilation, padding=padding, padding_mode=mode, groups=g),
    )


def _build(cfg, nsp: int):
    rng = np.random.default_rng(cfg["seed"])
    x_shape = (cfg["c_in"], *cfg["sizes"])
    w_shape = (cfg["c_out"], cfg["c_in"] // cfg["g"], *cfg["kernel"])
    if cfg["batch"] is not None:
        x_shape = (cfg["batch"], *x_shape)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(cfg["c_out"]).astype(np.float32) if cfg["bias"] else None
    kwargs = dict(cfg["kwargs"])
    if cfg["channels_last"]:
        x = np.moveaxis(x, -nsp - 1, -1)
        w = np.moveaxis(w, (0, 1), (-1, -2))
        sp = "DHW"[3 - nsp:]
        kwargs["layout"] = ("N" if cfg["batch"] is not None else "") + sp + "C"
    try:
        make_conv_spec(x.shape, w.shape, None if b is None else b.shape, **kwargs)
    except ConvBridgeError:  # e.g. reflect wider than the input: a valid-config generator skips those
        assume(False)
    return x, w, b, kwargs


def _check_config(cfg, nsp: int):
    x, w, b, kwargs = _build(cfg, nsp)
    report = cb.compare(x, w, b, backends=BACKENDS, **kwargs)
    record("config", backends=len(BACKENDS), source=f"hypothesis-{nsp}d")
    record_report(report, f"hypothesis-{nsp}d")
    assert report.shape == cb.output_shape(x.shape, w.shape, **kwargs)
    assert all(p.verdict in AGREE for p in report.pairs), str(report)
    assert math.isfinite(report.pairs[0].max_ratio)


@settings(max_examples=200)
@given(configs(1))
def test_hypothesis_1d(cfg):
    _check_config(cfg, 1)


@settings(max_examples=220)
@given(configs(2))
def test_hypothesis_2d(cfg):
    _check_config(cfg, 2)


@settings(max_examples=120)
@given(configs(3))
def test_hypothesis_3d(cfg):
    _check_config(cfg, 3)


@pytest.mark.slow
@settings(max_examples=1500)
@given(st.integers(1, 3).flatmap(lambda nsp: st.tuples(st.just(nsp), configs(nsp))))
def test_hypothesis_heavy_sweep(drawn):
    """A larger sweep for release checks (`pytest -m slow`); CI skips it."""
    nsp, cfg = drawn
    _check_config(cfg, nsp)
