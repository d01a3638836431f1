"""Shared fixtures: installed backends, Hypothesis profiles, and a tally of verdict ratios."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import convbridge as cb

# torch's OpenMP threads and NumPy's OpenBLAS threads (loaded before this file, by a pytest plugin) contend for
# these small CPUs: a float64 reference product that takes 0.4 s alone took 4-13 s after a torch convolution
# (test_verdict_power). One torch thread per process ends it; set before any test imports torch, and inherited by
# the CLI subprocesses. An explicit OMP_NUM_THREADS wins.
os.environ.setdefault("OMP_NUM_THREADS", "1")

# Example counts live here, never in decorators. Each example of a differential test compiles a new
# XLA program (~0.15 s on these CPUs), so CI draws few but wide ones (every rank, layout, padding form
# and mode in one test per op); `make sweep` runs the 'sweep' profile on the same tests and the slow ones.
_QUIET = [HealthCheck.too_slow, HealthCheck.filter_too_much]
settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True, print_blob=True,
                          suppress_health_check=_QUIET)
settings.register_profile("dev", max_examples=100, deadline=None, suppress_health_check=_QUIET)
settings.register_profile("sweep", max_examples=1500, deadline=None, print_blob=True, suppress_health_check=_QUIET)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
settings.load_profile(PROFILE)
#: The all-ranks properties of test_differential, test_transpose and test_unfold run every backend on each drawn
#: configuration, compiling one to three XLA programs per example: CI draws fewer of them than the profile's 25.
#: conv's and unfold's first 12 are the first 12 of those 25 and reach every rank, padding form and mode, groups kind
#: (depthwise too), batch form, layout, bias, stride and dilation the 25 did, but conv's 'same_lower' (which the case
#: table has); conv_transpose's 20 reach all of them, output_padding and output_size included (with fewer, its draws
#: have no 'same' or 'valid' padding). Every other profile keeps its count ('sweep': 1500).
_CI_EXAMPLES = {"conv": 12, "unfold": 12, "conv_transpose": 20}


def compiling(op: str) -> settings:
    """The settings of ``op``'s all-ranks property: CI's smaller count, or the loaded profile's."""
    return settings(max_examples=_CI_EXAMPLES[op]) if PROFILE == "ci" else settings()


BACKENDS = cb.available_backends()
FRAMEWORKS = tuple(b for b in BACKENDS if b != "numpy")


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    """Every installed backend, one at a time."""
    return request.param


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """A working folder and HOME without CIFAR-10, so 'auto' falls back to the embedded sample."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


# --- a tally of verdict ratios, gathered across xdist workers and printed at the end ---------------

def pytest_configure(config):
    if "CONVBRIDGE_STATS_DIR" not in os.environ:
        os.environ["CONVBRIDGE_STATS_DIR"] = tempfile.mkdtemp(prefix="convbridge-stats-")


def record(kind: str, **values) -> None:
    """Append one observation (kind: 'config', 'equivalent', 'mismatch', 'rejected') for the summary."""
    path = Path(os.environ["CONVBRIDGE_STATS_DIR"]) / f"{os.getpid()}.jsonl"
    with path.open("a") as f:
        f.write(json.dumps({"kind": kind, **values}) + "\n")


def record_report(report, test: str) -> None:
    """Tally every pair of a ParityReport: the largest r seen among non-identical agreeing results, per op."""
    for p in report.pairs:
        if p.verdict == "equivalent":
            record("equivalent", r=p.max_ratio, allowed=p.allowed_ratio, pair=f"{p.a}/{p.b}", test=test, op=report.op)
        elif p.verdict == "identical":
            record("identical", op=report.op)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if hasattr(config, "workerinput"):
        return
    rows = []
    for path in Path(os.environ["CONVBRIDGE_STATS_DIR"]).glob("*.jsonl"):
        rows += [json.loads(line) for line in path.read_text().splitlines()]
    if not rows:
        return
    tr = terminalreporter
    tr.section("convbridge verdict statistics")
    configs = [r for r in rows if r["kind"] == "config"]
    tr.write_line(f"differential configurations run: {len(configs)} "
                  f"({sum(r.get('backends', 0) for r in configs)} backend runs)")
    eq = [r for r in rows if r["kind"] == "equivalent"]
    if eq:
        worst = max(eq, key=lambda r: r["r"])
        frac = max(_fraction(r) for r in eq)
        tr.write_line(f"largest r among equivalent results: {worst['r']:.3g} (allowed {worst['allowed']:.4g}, "
                      f"{worst['pair']}, {worst['test']}); largest r/allowed: {frac:.3g}")
    for op in sorted({r.get("op", "conv") for r in rows if r["kind"] in ("equivalent", "identical")}):
        same = sum(r["kind"] == "identical" and r.get("op", "conv") == op for r in rows)
        eq_op = [r for r in eq if r.get("op", "conv") == op]
        top = max(eq_op, key=lambda r: r["r"], default=None)
        worst_text = (f"largest r {top['r']:.3g} (allowed {top['allowed']:.4g}, {top['pair']}, {top['test']}), "
                      f"largest r/allowed {max(_fraction(r) for r in eq_op):.3g}"
                      if top else "no rounding differences")
        tr.write_line(f"  {op}: {same} identical pairs, {len(eq_op)} equivalent; {worst_text}")
    mm = [r for r in rows if r["kind"] == "mismatch"]
    if mm:
        best = min(mm, key=lambda r: r["r"])
        tr.write_line(f"planted mismatches: {len(mm)}, smallest r: {best['r']:.3g} ({best['test']})")
    rej = [r for r in rows if r["kind"] == "rejected"]
    if rej:
        tr.write_line(f"bad inputs rejected with the expected error: {len(rej)}")
    fuzz = [r for r in rows if r["kind"] == "fuzz"]
    for surface in ("library", "cli"):
        calls = [r for r in fuzz if r["surface"] == surface]
        if calls:
            refused = sum(r["outcome"] == "refused" for r in calls)
            per_fn = ", ".join(f"{fn} {sum(r['fn'] == fn for r in calls)}" for fn in dict.fromkeys(r["fn"] for r in calls))
            tr.write_line(f"fuzzed {surface} calls: {len(calls)} ({len(calls) - refused} results, {refused} refused "
                          f"cleanly; {per_fn})")


def _fraction(row: dict) -> float:
    """r / allowed of a recorded equivalent pair (0 when both are 0: equal values in different dtypes)."""
    return row["r"] / row["allowed"] if row["allowed"] else (0.0 if not row["r"] else float("inf"))
