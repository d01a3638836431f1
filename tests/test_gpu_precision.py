"""The GPU precision suite (issue 13, item 4; benchmarks/gpu_precision.py) as tests.

- On a GPU (torch.cuda, or JAX gpu devices), the script's checks run in-process: float32 under "highest" and
  "default", bfloat16 and float16, each judged against the float64 reference with the precision convbridge records,
  and each float32 default result judged again as strict float32. Skipped where there is no GPU (CI).
- On any machine, the script itself runs on the CPU (``--cpu --quick --json``) through its ``main``, and the host
  simulations of TF32 / bfloat16 input rounding come out "equivalent" under their own precision and never under
  strict float32.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

import convbridge as cb
from convbridge.parity import VERDICTS

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_precision.py"
AGREE = ("identical", "equivalent")


def _load_script():
    spec = importlib.util.spec_from_file_location("gpu_precision", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


GP = _load_script()
INSTALLED = tuple(fw for fw in GP.FRAMEWORKS if fw in cb.available_backends())
#: Each framework's first GPU, by framework; empty without one.
GPUS = {t.framework: t for t in GP.detect(frameworks=INSTALLED)}
needs_gpu = pytest.mark.skipif(not GPUS, reason="no GPU (torch.cuda.is_available() False and jax has no gpu "
                                                "devices)")


def _rows_of(rows, **where):
    return [r for r in rows if all(r[k] == v for k, v in where.items())]


# ---------------------------------------------------------------------------------------------- on a GPU

@pytest.fixture(scope="module")
def gpu_rows():
    """The script's rows for every GPU here (the full shapes), run once for the module's tests."""
    return GP.run_suite(list(GPUS.values()), GP.SHAPES, progress=print)


@needs_gpu
@pytest.mark.parametrize("framework", GP.FRAMEWORKS)
def test_gpu_runs_are_judged_by_what_they_computed(framework, gpu_rows):
    if framework not in GPUS:
        pytest.skip(f"{framework} has no GPU here")
    rows = _rows_of(gpu_rows, framework=framework)
    print(GP.table(rows))
    assert rows and not _rows_of(rows, verdict="error"), GP.table(_rows_of(rows, verdict="error"))
    assert {r["verdict"] for r in rows} <= set(VERDICTS)
    for r in _rows_of(rows, dtype="float32", policy="highest"):
        assert r["verdict"] in AGREE, r
        assert "tf32" not in r["precision"].lower() and "bf16" not in r["precision"].lower(), r
    for r in _rows_of(rows, dtype="float32", policy="default"):
        assert "tf32" in r["precision"].lower(), f"a GPU's default float32 convolution is recorded as TF32: {r}"
        assert r["verdict"] in AGREE, r
    for dtype in ("bfloat16", "float16"):
        for r in _rows_of(rows, dtype=dtype):
            assert r["verdict"] in AGREE, r
    for r in _rows_of(rows, policy=GP.RECORDED):
        assert r["verdict"] in AGREE, f"the default result judged with its recorded precision: {r}"
    for r in _rows_of(rows, policy=GP.STRICT):
        if r["max_r"] > r["allowed_r"]:  # beyond float32's rigorous bound: never silently equivalent
            assert r["verdict"] not in AGREE, r
    assert {r["default_vs_highest"] for r in _rows_of(rows, dtype="float32")} <= {"same", "differs"}


@needs_gpu
@pytest.mark.parametrize("framework", GP.FRAMEWORKS)
def test_gpu_precision_policy_is_restored_after_the_call(framework):
    if framework not in GPUS:
        pytest.skip(f"{framework} has no GPU here")
    import numpy as np

    target = GPUS[framework]
    x, w, _ = (GP._as(a, "float32") for a in GP._inputs(GP.QUICK[1]))
    if framework == "torch":
        import torch

        before = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32,
                  torch.get_float32_matmul_precision())
        for policy in ("highest", "default", "high"):
            cb.conv(torch.from_numpy(x).cuda(), torch.from_numpy(w).cuda(), precision=policy, padding=1)
        assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32,
                torch.get_float32_matmul_precision()) == before
    else:
        import jax

        before = jax.config.jax_default_matmul_precision
        for policy in ("highest", "default", "high"):
            y = cb.conv(jax.device_put(x, target.device), jax.device_put(w, target.device), precision=policy,
                        padding=1)
            assert np.isfinite(np.asarray(y)).all()
        assert jax.config.jax_default_matmul_precision == before


# --------------------------------------------------------------------------------------- anywhere: the CPU

def test_script_runs_on_the_cpu_and_writes_judged_rows(tmp_path, capsys):
    out = tmp_path / "gpu_precision.json"
    assert GP.main(["--cpu", "--quick", "--json", str(out)]) == 0  # in-process: the same main a shell runs
    done = capsys.readouterr()
    assert "max r / allowed" in done.out and "default vs highest" in done.out
    assert "[  1/" in done.err  # progress lines
    doc = json.loads(out.read_text())
    rows = doc["rows"]
    assert rows and {r["verdict"] for r in rows} <= set(VERDICTS), {r["verdict"] for r in rows}
    assert {r["framework"] for r in rows} == set(INSTALLED) | {GP.SIMULATED}
    for fw in INSTALLED:
        mine = _rows_of(rows, framework=fw)
        assert len(mine) == len(GP.QUICK) * (len(GP.RUNS) + 2)
        assert all(r["verdict"] in AGREE for r in mine), GP.table(mine)  # a CPU computes in the dtype
        assert {r["default_vs_highest"] for r in _rows_of(mine, dtype="float32")} == {"same"}
        assert all(r["precision"] for r in mine)
    simulated = _rows_of(rows, framework=GP.SIMULATED)
    assert len(simulated) == 4 * len(GP.QUICK)
    for r in simulated:
        strict = r["policy"].endswith("verify(None)")
        if strict:  # rounded inputs judged as float32: never silently equivalent
            assert r["verdict"] in ("mismatch", "inconclusive"), r
        else:  # judged as what they are: equivalent, with u_in in the bound, and labelled so
            assert r["verdict"] in AGREE and r["max_r"] <= r["allowed_r"], r
            assert r["label"] in ("equivalent under TF32", "equivalent under bf16"), r


@pytest.mark.skipif(bool(GPUS), reason="a GPU is here: the script would run the full suite")
def test_without_a_gpu_the_script_says_so_and_exits_0(capsys):
    assert GP.main([]) == 0
    assert capsys.readouterr().out.strip() == GP.NO_GPU


def test_round_mantissa_rounds_to_nearest_even():
    import numpy as np

    ml_dtypes = pytest.importorskip("ml_dtypes")
    a = np.random.default_rng(0).standard_normal(10_000).astype(np.float32)
    np.testing.assert_array_equal(GP.round_mantissa(a, 7), a.astype(ml_dtypes.bfloat16).astype(np.float32))
    t = GP.round_mantissa(a, 10)
    assert np.all(t.view(np.uint32) & 0x1FFF == 0) and np.max(np.abs(t - a) / np.abs(a)) <= 2.0**-11
