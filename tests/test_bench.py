"""`convbridge bench` and convbridge.bench: the structure of the tables and the JSON on tiny shapes, output files
written safely, Ctrl-C keeping what was measured. Timings are never asserted (benchmarks are not timed tests)."""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import convbridge as cb
from convbridge import bench, bench_report
from convbridge.cli import main
from convbridge.reportdir import strict_json

BACKENDS = cb.available_backends()
STATUSES = {"ok", "declined", "skipped", "failed"}


@pytest.fixture(autouse=True)
def _keep_sigint():
    """The CLI ignores Ctrl-C once its report is out (interrupts.finished); give the rest of the session its handler."""
    before = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, before)


def invoke(*args: str):
    return CliRunner().invoke(main, ["bench", *args], catch_exceptions=False)


def strict(text: str) -> dict:
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")
    return json.loads(text, parse_constant=refuse)


def test_one_tiny_shape_on_every_backend_gives_every_number():
    cases = bench.select(["seed_b512"], quick=True)
    result = bench.run_suite(cases, bench.parse_backends(None), repeats=2, quick=True)
    assert not result.partial and result.peak["flops"] > 0 and len(result.cases) == 1
    res = result.cases[0]
    assert res.out_shape == (16, 4, 8, 8) and res.flops == 2 * 16 * 4 * 3 * 64 * 25
    labels = {(m.method.backend, m.method.label) for m in res.measurements}
    for backend in BACKENDS:
        assert (backend, "cb native") in labels
    if "torch" in BACKENDS:
        assert {("torch", "F.conv2d NCHW"), ("torch", "F.conv2d channels-last"), ("torch", "cb auto")} <= labels
        assert res.reference == "torch F.conv2d NCHW"
    if "jax" in BACKENDS:
        assert {("jax", "lax.conv NCHW/OIHW"), ("jax", "lax.conv NHWC/HWIO"), ("jax", "cb auto")} <= labels
    assert {m.status for m in res.measurements} <= STATUSES - {"failed"}, \
        [(m.method, m.note) for m in res.measurements if m.status == "failed"]
    for m in res.ok():
        assert len(m.times) == 2 and m.first is not None  # repeats=2 caps the timed calls, after one warm-up
        assert m.error is not None and m.error < 1e-5, (m.method, m.error)  # every method computes the same conv

    data = strict(strict_json(bench_report.to_dict(result)))
    assert data["convbridge_bench"] == 1 and data["partial"] is False
    case = data["cases"][0]
    assert case["name"] == "seed_b512" and case["x"] == [16, 3, 12, 12] and case["out"] == [16, 4, 8, 8]
    timed = [r for r in case["results"] if r["status"] == "ok"]
    assert min(r["ratio_best"] for r in timed) == 1.0
    for r in timed:
        assert r["q1_ms"] <= r["median_ms"] <= r["q3_ms"] and r["min_ms"] <= r["max_ms"] and r["calls"] == 2
        assert math.isclose(r["gflops"], case["gflop"] / r["median_ms"] * 1e3)
        assert math.isclose(r["peak_pct"], 100 * r["gflops"] * 1e9 / data["peak"]["flops"])
        assert r["ratio_backend_best"] >= 1.0
    for b in ("torch", "jax"):
        if b in BACKENDS:
            assert set(case["summary"][b]) >= {"baseline_ms", "auto_ms", "auto_vs_baseline", "auto_vs_backend_best"}

    rows = bench_report.case_rows(res, result.peak["flops"])
    declined = [m for m in res.measurements if m.status == "declined"]
    assert len(rows) == len(res.measurements) - len(declined) and all(len(r) == len(bench_report.CASE_COLUMNS) for r in rows)
    assert len(bench_report.declined_lines(res)) <= len(declined)
    assert len(bench_report.summary_rows(result)[0]) == len(bench_report.summary_columns(result)) == 2 + 3 * len(set(BACKENDS) - {"numpy"})
    assert bench_report.markdown(result).count("\n| seed_b512 |") == 1


def test_the_cost_model_budget_skips_instead_of_timing():
    res = bench.run_case(bench.select(["pointwise"], quick=True)[0], ["numpy"], budget=1e-12, repeats=1)
    assert res.measurements and all(m.status in ("skipped", "declined") for m in res.measurements)
    skipped = [m for m in res.measurements if m.status == "skipped"]
    assert skipped and all("s per call > budget 1e-12 s" in m.note and not m.times for m in skipped)


def test_without_autotune_auto_is_n_a(monkeypatch):
    monkeypatch.setitem(sys.modules, "convbridge.autotune", None)  # import convbridge.autotune raises ImportError
    case = bench.select(["seed"], quick=True)[0]
    choice = bench._auto_choice(case, "numpy", bench._arrays(case, ["numpy"]), tune=False)
    assert choice["algorithm"] is None and bench_report.describe_choice(choice) == "auto: n/a"


def test_the_suite_lists_every_shape_of_the_issue():
    names = [c.name for c in bench.SUITE]
    assert len(names) == 14 == len(set(names)) and [c.name for c in bench.QUICK] == names
    for full, quick in zip(bench.SUITE, bench.QUICK):
        assert full.op == quick.op and (full.spec().groups == full.x[1]) == (quick.spec().groups == quick.x[1])
    assert bench.select(["transposed"])[0].spec().out_shape == (8, 32, 112, 112)
    assert [c.name for c in bench.select(["resnet"])] == ["resnet3x3", "resnet3x3s2", "resnet512"]
    result = invoke("--list")
    assert result.exit_code == 0 and all(n in result.output for n in names)


@pytest.mark.parametrize("args, pattern", [
    (("--shapes", "nope"), "no benchmark shape matches 'nope'; the shapes are large2d_k51"),
    (("--backends", "tensorflow"), "unknown backend 'tensorflow'"),
    (("--algorithms", "winograd7"), "unknown algorithm 'winograd7' for --algorithms; choose from"),
    (("--repeats", "0"), "Invalid value for '--repeats'"),
    (("--budget", "0"), "Invalid value for '--budget'"),
])
def test_bad_arguments_are_one_line_and_exit_2(args, pattern):
    result = invoke("--quick", "--backends", "numpy", *args) if args[0] != "--backends" else invoke("--quick", *args)
    assert result.exit_code == 2 and pattern in result.output, result.output
    assert "Traceback" not in result.output


def test_files_are_written_and_json_is_on_stdout(tmp_path):
    args = ("--quick", "--shapes", "pointwise", "--backends", "numpy", "--repeats", "1", "--json",
            str(tmp_path / "r.json"), "--markdown", str(tmp_path / "r.md"))
    result = invoke(*args, "--format", "json")
    assert result.exit_code == 0, result.output
    data = strict(result.stdout)
    assert data == strict((tmp_path / "r.json").read_text()) and data["partial"] is False
    assert [r["method"] for r in data["cases"][0]["results"]][0] == "cb native"
    assert (tmp_path / "r.md").read_text().startswith("<!-- written by convbridge bench -->")
    again = invoke(*args)  # its own files are replaced; the tables go to stdout
    assert again.exit_code == 0 and "pointwise" in again.stdout and f"wrote {tmp_path / 'r.json'}" in again.stdout
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


@pytest.mark.parametrize("make, pattern", [
    (lambda p: p.write_text('{"mine": 1}'), "did not write; convbridge never overwrites it"),
    (lambda p: p.mkdir(), "is a folder"),
    (lambda p: p.symlink_to(p.parent / "elsewhere.json"), "is a symbolic link"),
])
def test_a_file_convbridge_did_not_write_is_refused_before_any_work(tmp_path, make, pattern, monkeypatch):
    target = tmp_path / "r.json"
    make(target)
    monkeypatch.setattr(bench, "run_suite", lambda *a, **k: pytest.fail("ran before checking --json"))
    result = invoke("--quick", "--backends", "numpy", "--json", str(target))
    assert result.exit_code == 2 and pattern in result.output, result.output
    assert not target.is_file() or target.read_text() == '{"mine": 1}'


def test_the_plot_is_a_png_that_can_be_replaced(tmp_path):
    pytest.importorskip("matplotlib")
    args = ("--quick", "--shapes", "dw7", "--backends", "numpy", "--repeats", "1", "--plot", str(tmp_path / "p.png"))
    for _ in range(2):
        result = invoke(*args)
        assert result.exit_code == 0, result.output
        assert (tmp_path / "p.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    (tmp_path / "other.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    result = invoke("--quick", "--backends", "numpy", "--plot", str(tmp_path / "other.png"))
    assert result.exit_code == 2 and "did not write" in result.output


def test_an_interrupt_keeps_what_was_measured_and_exits_130(tmp_path, monkeypatch):
    timed = []
    real = bench._time

    def interrupted_on_the_second(call, repeats):
        if timed:
            raise KeyboardInterrupt
        timed.append(1)
        return real(call, repeats)

    monkeypatch.setattr(bench, "_time", interrupted_on_the_second)
    result = invoke("--quick", "--backends", "numpy", "--repeats", "1", "--json", str(tmp_path / "r.json"),
                    "--format", "json")
    assert result.exit_code == 130, result.output
    data = strict((tmp_path / "r.json").read_text())
    assert data == strict(result.stdout) and data["partial"] is True and len(data["cases"]) == 1
    assert [r["status"] for r in data["cases"][0]["results"]] == ["ok"]
    assert "interrupted: writing what was measured so far" in result.stderr


def test_ctrl_c_in_a_real_run_writes_a_partial_json(tmp_path):
    """A real SIGINT while the first shape is being timed (full-size shapes on the NumPy reference: seconds each)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "convbridge", "bench", "--shapes", "resnet3x3,dw31,conv3d", "--backends", "numpy",
         "--algorithms", "native", "--budget", "1000", "--json", "r.json"], cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=dict(os.environ, HOME=str(tmp_path)))
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith("[1/"):
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    data = strict((tmp_path / "r.json").read_text())
    assert proc.returncode == 130 and data["partial"] is True, err[-2000:]
    assert "Traceback" not in err and "PARTIAL: interrupted" in out
    assert sorted(p.name for p in Path(tmp_path).iterdir()) == ["r.json"]


@pytest.mark.parametrize("args, env, pattern", [
    (("--json", "-"), {}, "would write a file named '-'.*--format json"),
    (("--json", "a" * 300 + ".json"), {}, "longer than the file system allows"),
    ((), {"CONVBRIDGE_AUTOTUNE": "bogus"}, "CONVBRIDGE_AUTOTUNE='bogus'"),
])
def test_bad_outputs_and_settings_exit_2_before_any_work(args, env, pattern, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    result = invoke("--quick", "--backends", "numpy", "--shapes", "seed", "--repeats", "1", *args)
    assert result.exit_code == 2
    assert re.search(pattern, result.output), result.output
    assert list(tmp_path.iterdir()) == []


def test_a_swallowed_ctrl_c_still_stops_the_run(monkeypatch):
    """Python drops a KeyboardInterrupt raised inside a GC callback (JAX has one); the flag the handler sets
    stops the run at the next measurement all the same, and the result is partial."""
    monkeypatch.setattr(bench, "_STOP", [True])
    result = bench.run_suite(bench.select(["seed"], quick=True), ["numpy"], repeats=1, quick=True)
    assert result.partial and not any(m.times for r in result.cases for m in r.measurements)


def test_auto_is_timed_on_numpy_too():
    res = bench.run_case(bench.select(["seed"], quick=True)[0], ["numpy"], repeats=1)
    assert [m.status for m in res.measurements if m.method.kind == bench.AUTO] == ["ok"]


def test_a_mismatch_found_by_verify_exits_1(monkeypatch, tmp_path):
    """A method whose result differs in meaning (here fft made to flip the kernel) is judged a mismatch by
    --verify, and the command says so in its exit status."""
    from convbridge import dispatch
    from convbridge.algorithms import fft

    def flipped(spec, plan, x, w, b):
        return fft.conv_fft(spec, plan, x, w[..., ::-1, ::-1].copy(), b)

    impl = next(i for i in cb.implementations("conv", "numpy") if i.algorithm == "fft")
    monkeypatch.setitem(dispatch._REGISTRY, ("conv", "numpy", "fft"), replace(impl, run=flipped))
    result = invoke("--quick", "--backends", "numpy", "--shapes", "seed", "--repeats", "1", "--verify",
                    "--algorithms", "native,fft")
    assert result.exit_code == 1, result.output
    assert "mismatch" in result.output
