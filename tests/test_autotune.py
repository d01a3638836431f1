"""algorithm='auto': the choice by cost model, by measurement, the caches (memory and JSON file), and tracing."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import convbridge as cb
from convbridge import autotune, dispatch
from convbridge.errors import ArgumentError, ArgumentTypeError
from convbridge.plan import Plan
from convbridge.spec import make_conv_spec


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVBRIDGE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("CONVBRIDGE_AUTOTUNE", raising=False)
    autotune.clear()
    yield
    autotune.clear()


def _data(shape=(2, 3, 9, 9), kshape=(4, 3, 3, 3), seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape).astype(np.float32), rng.standard_normal(kshape).astype(np.float32)


@pytest.mark.parametrize("backend", ["numpy", "jax", "torch"])
def test_auto_equals_the_reference_on_every_backend(backend):
    x, w = _data()
    y = cb.conv(x, w, padding=1, stride=2, backend=backend, algorithm="auto")
    report = cb.compare(x, w, padding=1, stride=2, backends=[("auto", lambda a, k, b: np.asarray(
        cb.conv(a, k, b, padding=1, stride=2, backend=backend, algorithm="auto")))])
    assert report.verdict in ("identical", "equivalent")
    assert tuple(y.shape) == (2, 4, 5, 5)


def test_model_choice_lists_every_candidate_and_what_declines():
    x, w = _data()
    choice = autotune.choose(x, w, backend="numpy", padding=1)
    assert choice.source == "model" and choice.timings is None
    supported = {i.algorithm for i in dispatch.implementations("conv", "numpy")} - set(choice.declined)
    assert set(choice.costs) == supported
    assert choice.algorithm == min(choice.costs, key=lambda a: (choice.costs[a], a != "native", a))
    assert "auto chose" in str(choice)


def test_measuring_times_the_candidates_and_persists_the_decision():
    x, w = _data()
    first = autotune.choose(x, w, backend="numpy", padding=1, measure=True)
    assert first.source == "measured"
    assert first.timings and first.algorithm == min(first.timings, key=first.timings.get)
    assert "native" in first.timings and len(first.timings) <= autotune.MAX_CANDIDATES
    data = json.loads(autotune.cache_path().read_text())
    assert data["version"] == autotune.CACHE_VERSION
    [entry] = data["entries"].values()
    assert entry["algorithm"] == first.algorithm and entry["backend"] == "numpy"
    assert autotune.choose(x, w, backend="numpy", padding=1, measure=True).source == "cache"
    autotune.clear()  # a new process: memory empty, the file remembers
    again = autotune.choose(x, w, backend="numpy", padding=1)
    assert (again.source, again.algorithm) == ("cache", first.algorithm)


def test_a_different_argument_is_a_different_key():
    x, w = _data()
    autotune.choose(x, w, backend="numpy", padding=1, measure=True)
    assert autotune.choose(x, w, backend="numpy", padding=0).source == "model"
    assert autotune.choose(x[:1], w, backend="numpy", padding=1).source == "model"


@pytest.mark.parametrize("content", ["{not json", '{"version": 999, "entries": {}}', '[1, 2]',
                                     '{"version": 1, "entries": {"k": 3}}', "\x00\xff"])
def test_a_corrupted_or_foreign_cache_is_ignored_and_rebuilt(content):
    path = autotune.cache_path()
    path.parent.mkdir(parents=True)
    path.write_bytes(content.encode("latin-1"))
    x, w = _data()
    choice = autotune.choose(x, w, backend="numpy", measure=True)
    assert choice.source == "measured"
    data = json.loads(path.read_text())
    assert data["version"] == autotune.CACHE_VERSION and len(data["entries"]) == 1
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".autotune-")]  # no temporary left


def test_an_unwritable_cache_costs_persistence_not_the_call(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("CONVBRIDGE_CACHE_DIR", str(blocker / "sub"))
    x, w = _data()
    assert autotune.choose(x, w, backend="numpy", measure=True).source == "measured"


def test_concurrent_processes_keep_each_others_entries(tmp_path):
    script = textwrap.dedent("""
        import sys, numpy as np
        from convbridge import autotune
        n = int(sys.argv[1])
        for size in range(6, 10):
            x = np.ones((1, 1, size + 10 * n), np.float32)
            autotune.choose(x, np.ones((1, 1, 3), np.float32), backend="numpy", measure=True)
    """)
    env = {**os.environ, "CONVBRIDGE_CACHE_DIR": str(tmp_path / "shared")}
    procs = [subprocess.Popen([sys.executable, "-c", script, str(n)], env=env) for n in range(3)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    entries = json.loads((tmp_path / "shared" / "autotune.json").read_text())["entries"]
    assert len(entries) == 12


def test_measuring_switch_and_environment(monkeypatch):
    x, w = _data()
    with autotune.measuring():
        cb.conv(x, w, backend="numpy", algorithm="auto")
    assert autotune.choose(x, w, backend="numpy").source == "cache"
    monkeypatch.setenv("CONVBRIDGE_AUTOTUNE", "sometimes")
    with pytest.raises(ArgumentError, match="CONVBRIDGE_AUTOTUNE='sometimes'.*'measure'"):
        cb.conv(x[:1], w, backend="numpy", algorithm="auto")
    with pytest.raises(ArgumentTypeError, match="measuring takes True or False"):
        with autotune.measuring("yes"):  # type: ignore[arg-type]
            pass


def test_choose_rejects_bad_arguments():
    x, w = _data()
    with pytest.raises(ArgumentError, match="choose is algorithm='auto' itself"):
        autotune.choose(x, w, algorithm="fft")
    with pytest.raises(ArgumentError, match="'conv' and 'conv_transpose', not 'unfold'"):
        autotune.choose(x, (3, 3), op="unfold")
    with pytest.raises(ArgumentTypeError, match="measure is True or False"):
        autotune.choose(x, w, measure="yes")


def test_no_measurement_inside_a_jax_trace_and_gradients_flow():
    jax = pytest.importorskip("jax")
    x, w = _data()
    xj, wj = jax.numpy.asarray(x), jax.numpy.asarray(w)
    with autotune.measuring():
        f = jax.jit(lambda a, k: cb.conv(a, k, padding=1, algorithm="auto"))
        y = f(xj, wj)
    assert not autotune.cache_path().exists()  # traced: decided by the model, nothing timed or written
    np.testing.assert_allclose(np.asarray(y), np.asarray(cb.conv(x, w, padding=1)), rtol=1e-5, atol=1e-5)
    g = jax.grad(lambda k: cb.conv(xj, k, padding=1, algorithm="auto").sum())(wj)
    g0 = jax.grad(lambda k: cb.conv(xj, k, padding=1).sum())(wj)
    np.testing.assert_allclose(np.asarray(g), np.asarray(g0), rtol=1e-4, atol=1e-4)


def test_jit_uses_the_decision_an_eager_call_measured():
    jax = pytest.importorskip("jax")
    x, w = _data()
    xj, wj = jax.numpy.asarray(x), jax.numpy.asarray(w)
    measured = autotune.choose(xj, wj, padding=1, measure=True)
    seen = []
    real = autotune.resolve

    def spy(*args, **kwargs):
        seen.append(real(*args, **kwargs))
        return seen[-1]

    autotune.resolve = spy
    try:
        jax.jit(lambda a, k: cb.conv(a, k, padding=1, algorithm="auto"))(xj, wj)
    finally:
        autotune.resolve = real
    assert [(c.source, c.algorithm) for c in seen] == [("cache", measured.algorithm)]


def test_torch_gradients_flow_through_auto():
    torch = pytest.importorskip("torch")
    x, w = _data()
    wt = torch.tensor(w, requires_grad=True)
    with autotune.measuring():
        cb.conv(torch.from_numpy(x), wt, padding=1, algorithm="auto").sum().backward()
    expected = torch.tensor(w, requires_grad=True)
    torch.nn.functional.conv2d(torch.from_numpy(x), expected, padding=1).sum().backward()
    torch.testing.assert_close(wt.grad, expected.grad, rtol=1e-4, atol=1e-4)


def test_measuring_is_bounded_to_the_cheapest_candidates():
    spec = make_conv_spec((2, 3, 9, 9), (4, 3, 3, 3), dtypes=("float32", "float32"))
    costs = {"native": 1.0, "a": 0.5, "b": 2.0, "c": 3.0, "d": 100.0, "e": math.inf}
    calls = []

    def fake_find(s, plan):
        calls.append(plan.algorithm)
        return dispatch.Impl("conv", "numpy", plan.algorithm, lambda *a: None)

    import convbridge.dispatch as d
    real_find, real_exec = d.find, d.execute
    d.find, d.execute = fake_find, lambda impl, s, p, arrays: None
    try:
        timings = autotune._measure(spec, Plan("numpy"), (None,), costs)
    finally:
        d.find, d.execute = real_find, real_exec
    assert list(timings) == ["a", "native", "b", "c"][:autotune.MAX_CANDIDATES]
    assert "d" not in timings and "e" not in timings  # 100x the best, no model


def test_auto_passes_over_fft_for_non_finite_inputs(monkeypatch):
    """An FFT spreads one NaN over its whole output slice; auto keeps the definition's local result."""
    x = np.zeros((1, 1, 64, 64), np.float32)
    w = np.ones((1, 1, 31, 31), np.float32)
    fft_first = autotune.Choice("fft", "model", {"fft": 1e-6, "native": 1.0, "matmul": 2.0})
    monkeypatch.setattr(autotune, "_resolve", lambda *a: fft_first)
    assert autotune.choose(x, w, backend="numpy").algorithm == "fft"
    x[0, 0, 0, 0] = np.nan
    choice = autotune.choose(x, w, backend="numpy")
    assert choice.algorithm == "native" and "inf or NaN" in choice.declined["fft"]
    assert np.isnan(cb.conv(x, w, algorithm="auto")).sum() == 1


def test_an_empty_batch_is_computed_but_never_measured():
    x, w = np.zeros((0, 3, 8, 8), np.float32), np.ones((4, 3, 3, 3), np.float32)
    with autotune.measuring():
        assert cb.conv(x, w, algorithm="auto").shape == (0, 4, 6, 6)
    assert not autotune.cache_path().exists()
