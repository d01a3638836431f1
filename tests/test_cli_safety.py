"""The command line is safe to run anywhere: it never touches the user's files, its exit status says the verdict,
--format json is always one strict JSON object, bad input is one line (never a traceback), and Ctrl-C is 130."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from convbridge import dispatch
from convbridge.cli import EXIT_CODES, main
from convbridge.reportdir import MARKER

pytest.importorskip("matplotlib")


def invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def strict(text: str):
    """json.loads that refuses NaN and Infinity, as JavaScript's JSON.parse does."""
    def refuse(name):
        raise ValueError(f"non-strict JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


# ---- the user's files --------------------------------------------------------------------------------------

def test_a_folder_of_other_files_is_refused_and_left_alone(isolated):
    (isolated / "u" / "sub").mkdir(parents=True)
    (isolated / "u" / "thesis.txt").write_text("precious")
    result = invoke("compare", "--data", "sample", "--no-plots", "--out", "u")
    assert result.exit_code == EXIT_CODES["usage"] == 2
    assert "holds files convbridge did not write (sub/, thesis.txt)" in result.output
    assert (isolated / "u" / "thesis.txt").read_text() == "precious" and (isolated / "u" / "sub").is_dir()
    assert sorted(p.name for p in isolated.iterdir()) == ["u"]  # no temporaries either


@pytest.mark.parametrize("out, pattern", [(".", "holds files convbridge did not write"),
                                          ("", "--out is empty")])
def test_the_current_folder_and_an_empty_path_are_refused(isolated, out, pattern):
    (isolated / "project.py").write_text("print('mine')")
    result = invoke("compare", "--data", "sample", "--no-plots", "--out", out)
    assert result.exit_code == 2 and pattern in result.output and "Traceback" not in result.output
    assert (isolated / "project.py").read_text() == "print('mine')"


def test_an_empty_folder_becomes_a_marked_report(isolated):
    (isolated / "empty").mkdir()
    assert invoke("compare", "--data", "sample", "--no-plots", "--out", "empty").exit_code == 0
    assert sorted(json.loads((isolated / "empty" / MARKER).read_text())["files"]) == ["index.html", "report.json"]


def _compare_into(out):
    return invoke("compare", "--data", "sample", "--no-plots", "--backends", "numpy,torch", "--out", out)


@pytest.mark.parametrize("marker, pattern", [
    ({"convbridge_report": 1, "files": ["thesis.txt"]}, "holds a .convbridge-report.json that this convbridge "
                                                        "cannot read"),  # an old or forged marker
    ({"convbridge_report": 2, "files": {"thesis.txt": "0" * 64}},  # listed, but not with the content it has
     "holds index.html, which convbridge did not write"),
    ({}, "cannot read"),
])
def test_a_forged_marker_never_costs_a_file(isolated, marker, pattern):
    (isolated / "f").mkdir()
    (isolated / "f" / "thesis.txt").write_text("precious")
    (isolated / "f" / "index.html").write_text("<p>my page</p>")
    (isolated / "f" / MARKER).write_text(json.dumps(marker))
    result = _compare_into("f")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert pattern in result.output and "never" in result.output
    assert (isolated / "f" / "thesis.txt").read_text() == "precious"
    assert (isolated / "f" / "index.html").read_text() == "<p>my page</p>"
    (isolated / "f" / "index.html").unlink()
    if marker.get("convbridge_report") == 2:  # now nothing clashes: the report lands, thesis.txt stays
        assert _compare_into("f").exit_code == 0 and _compare_into("f").exit_code == 0
        assert (isolated / "f" / "thesis.txt").read_text() == "precious"


def test_only_unchanged_files_of_convbridge_are_replaced_or_removed(isolated):
    from convbridge.reportdir import OutputError, write_folder

    calls = []

    def fill(*names):
        return lambda tmp: calls.append([(tmp / n).write_text(n) for n in names])

    write_folder("d", fill("a.txt", "b.txt"), will_write=("a.txt", "b.txt"))
    (isolated / "d" / "b.txt").write_text("edited by hand")  # b is the user's now
    (isolated / "d" / "c.txt").write_text("added by hand")
    with pytest.raises(OutputError, match=r"holds c.txt, which convbridge did not write \(or which changed"):
        write_folder("d", fill("c.txt"), will_write=("c.txt",))
    assert len(calls) == 1  # refused before any work
    with pytest.raises(OutputError, match="holds c.txt"):  # what fill wrote is checked again before moving
        write_folder("d", fill("c.txt"))
    write_folder("d", fill("a.txt"))  # b.txt is stale but edited: it stays
    assert {p.name: p.read_text() for p in (isolated / "d").iterdir() if p.name != MARKER} == {
        "a.txt": "a.txt", "b.txt": "edited by hand", "c.txt": "added by hand"}
    assert not [p for p in isolated.iterdir() if p.name != "d"]


def test_links_dots_and_long_names(isolated):
    (isolated / "real").mkdir()
    (isolated / "link").symlink_to(isolated / "real")
    assert _compare_into("link").exit_code == 0 and (isolated / "real" / "index.html").is_file()
    (isolated / "dangling").symlink_to(isolated / "nowhere")
    result = _compare_into("dangling")
    assert result.exit_code == 2 and "symbolic link to nothing" in result.output
    result = _compare_into("x" * 256)
    assert result.exit_code == 2 and "longer than the file system allows" in result.output
    assert _compare_into("y" * 250).exit_code == 0  # the longest legal name; the temporary folder's is short
    (isolated / "here").mkdir()
    result = invoke("compare", "--data", "sample", "--no-plots", "--backends", "numpy,torch", "--out", ".")
    assert result.exit_code == 2  # the current folder holds other things
    os.chdir(isolated / "here")
    assert _compare_into(".").exit_code == 0 and (isolated / "here" / "index.html").is_file()
    assert not [p for p in isolated.rglob(".convbridge-tmp-*")]


# ---- exit status and JSON ----------------------------------------------------------------------------------

@pytest.fixture
def shifted_numpy():
    """A numpy 'native' conv that shifts its result by one pixel: a real semantic bug, for the exit status."""
    import convbridge as cb

    cb.implementations()
    saved = dict(dispatch._REGISTRY)

    def shifted(spec, plan, x, w, b):
        return np.roll(cb.reference.conv(x, w, b, spec, dtype=x.dtype), 1, axis=-1)

    dispatch.register(dispatch.Impl("conv", "numpy", "native", shifted))
    yield
    dispatch._REGISTRY.clear()
    dispatch._REGISTRY.update(saved)


def test_a_mismatch_exits_1_in_text_and_json(isolated, shifted_numpy):
    result = invoke("compare", "--data", "sample", "--no-plots", "--backends", "numpy,torch")
    assert result.exit_code == EXIT_CODES["mismatch"] == 1 and "mismatch" in result.output
    result = invoke("compare", "--data", "sample", "--no-plots", "--backends", "numpy,torch", "--format", "json")
    data = strict(result.stdout)
    assert result.exit_code == 1 and data["verdict"] == "mismatch" and data["exit_code"] == 1


def test_inconclusive_exits_3(isolated, monkeypatch):
    from convbridge import parity

    monkeypatch.setattr(parity, "INCONCLUSIVE_FRACTION", 0.0)  # every bound now counts as too coarse
    result = invoke("compare", "--data", "sample", "--no-plots", "--backends", "numpy,torch", "--format", "json",
                    "--rerun", "never")  # a float64 re-run would decide it
    assert strict(result.stdout)["verdict"] == "inconclusive" and result.exit_code == EXIT_CODES["inconclusive"] == 3


def test_json_is_strict_even_with_infinite_ratios(isolated):
    from convbridge.reportdir import strict_json

    assert strict(strict_json({"r": float("inf"), "m": [float("nan"), -float("inf")]})) == {
        "r": "inf", "m": ["nan", "-inf"]}
    result = invoke("compare", "--data", "sample", "--no-plots", "--format", "json", "--out", "rep")
    assert result.exit_code == 0
    strict(result.stdout)
    strict((isolated / "rep" / "report.json").read_text())


@pytest.mark.parametrize("args, kind, pattern", [
    (("compare", "--groups", "0"), "ArgumentError", "groups must be a positive int, got 0"),
    (("compare", "--groups", "-3"), "ArgumentError", "groups must be a positive int, got -3"),
    (("compare", "--seed", "99999999999999999999"), "UsageError", "is not in the range 0<=x<=4294967295"),
    (("compare", "--stride", "x"), "UsageError", "Invalid value for --stride"),
    (("compare", "--padding", "1:2:3"), "UsageError", "lo:hi pairs like 1:2,0:1"),
    (("compare", "--out", ""), "OutputError", "--out is empty"),
    (("compare", "--kernel-size", "40", "--data", "sample"), "PaddingError", "effective kernel size 40"),
    (("compare", "--nonsense"), "UsageError", "No such option '--nonsense'"),
    (("explain", "1,6,8,8", "--layer", "Conv2d('6', 8, 3)"), "ArgumentError", "in_channels must be a positive int"),
    (("explain", "1,3,8,8", "--kernel", "4,3,3,3", "--draw", "/proc/nope"), "OutputError",
     "cannot create the output folder '/proc/nope'"),
    (("explain", "1,3,8,8", "--kernel", "4,3,3,3", "--max-frames", "0"), "UsageError", "0 is not in the range"),
    (("explain", "-2,3,8,8", "--kernel", "4,3,3,3"), "UsageError", "No such option '-2'"),
])
@pytest.mark.parametrize("fmt", ["text", "json"])
def test_bad_input_is_one_message_and_exit_2(isolated, args, kind, pattern, fmt):
    extra = ("--format", "json") if fmt == "json" and args[0] == "compare" else ()
    result = invoke(*args, *extra)
    assert result.exit_code == EXIT_CODES["usage"] == 2, result.output
    assert "Traceback" not in result.output
    if extra:
        error = strict(result.stdout)["error"]
        assert error["type"] == kind and pattern in error["message"] and error["exit_code"] == 2
    else:
        assert pattern in result.output
    assert not [p for p in isolated.iterdir() if p.name != ".cache"]  # nothing written (HOME's caches aside)


def test_exit_codes_are_documented():
    for command in (("--help",), ("compare", "--help"), ("explain", "--help")):
        text = invoke(*command).output
        assert "Exit status: 0 identical or equivalent" in text and "130 interrupted" in text, command


def test_piped_text_never_splits_a_number(isolated):
    result = invoke("compare", "--data", "sample", "--no-plots")
    line = next(ln for ln in result.output.splitlines() if ln.startswith("verdict:"))
    assert "unit roundoff u = 5.96e-08" in line


# ---- Ctrl-C ---------------------------------------------------------------------------------------------------

def _interrupt_after(seconds: float, folder, *extra: str) -> subprocess.CompletedProcess:
    proc = subprocess.Popen([sys.executable, "-m", "convbridge", "compare", "--data", "sample", "--out", "rep",
                             *extra], cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, HOME=str(folder)))
    time.sleep(seconds)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _check_interrupted(done, folder, fmt):
    if done.returncode == 0:  # finished before the signal: a whole report
        assert (folder / "rep" / MARKER).is_file()
        if fmt == "json":
            assert "verdict" in strict(done.stdout)
        return
    assert done.returncode == 130, done.stderr[-2000:]
    assert "interrupted" in done.stderr and "Traceback" not in done.stderr and "Aborted" not in done.stderr
    if fmt == "json":  # one object on stdout, still
        assert strict(done.stdout) == {"error": {"type": "Interrupted", "message": "interrupted", "exit_code": 130}}
    leftovers = [p.name for p in folder.iterdir() if p.name not in ("rep",)]
    # no temporary report folder (HOME is this folder: matplotlib's .config and .cache may appear, and are not ours)
    assert not [n for n in leftovers if n.startswith(".") and n not in (".cache", ".config")], leftovers
    assert not (folder / "rep").exists() or (folder / "rep" / MARKER).is_file()  # never half a report


@pytest.mark.parametrize("seconds, fmt", [(2.5, "json"), pytest.param(0.05, "text", marks=pytest.mark.slow),
                                          pytest.param(0.3, "text", marks=pytest.mark.slow),
                                          pytest.param(1.5, "json", marks=pytest.mark.slow),
                                          pytest.param(4.0, "text", marks=pytest.mark.slow)])
def test_ctrl_c_exits_130_and_leaves_nothing_half_written(tmp_path, seconds, fmt):
    _check_interrupted(_interrupt_after(seconds, tmp_path, "--format", fmt), tmp_path, fmt)


def test_json_is_asked_for_by_the_format_option_only(isolated):
    result = invoke("compare", "--out", "--format", "json")  # --format is --out's value here; json is stray
    assert result.exit_code == 2 and "unexpected extra argument (json)" in result.output
    assert not result.stdout.lstrip().startswith("{")
    result = invoke("compare", "--format=json", "--groups", "0")
    assert strict(result.stdout)["error"]["exit_code"] == 2


def test_a_deeply_nested_marker_is_refused_not_a_crash(isolated):
    (isolated / "f").mkdir()
    (isolated / "f" / MARKER).write_text("[" * 100_000)
    result = _compare_into("f")
    assert result.exit_code == 2 and "cannot read" in result.output and "RecursionError" not in result.output


def test_the_cli_guesses_json_before_it_has_read_its_options(monkeypatch):
    """An interrupt before click has parsed anything still prints the JSON error object (python -m convbridge)."""
    from convbridge import __main__, cli, interrupts

    seen = []
    monkeypatch.setattr(interrupts, "report_on_stdout", seen.append)
    monkeypatch.setattr(cli, "run", lambda: None)
    monkeypatch.setattr(sys, "argv", ["convbridge", "compare", "--format", "json"])
    __main__.main()
    assert seen == [interrupts.INTERRUPTED_JSON]
    assert json.loads(interrupts.INTERRUPTED_JSON) == {"error": {"type": "Interrupted", "message": "interrupted",
                                                                 "exit_code": 130}}


def test_an_in_process_run_leaves_the_callers_ctrl_c_alone(tmp_path, monkeypatch):
    """A command run through click's runner (or from a notebook) must not leave SIGINT ignored in the caller: every
    process started afterwards would inherit the ignored Ctrl-C (a later test's SIGINT was lost that way)."""
    from convbridge import interrupts

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(interrupts._state, "installed", False)  # a caller that never ran the program (a notebook)
    before = signal.getsignal(signal.SIGINT)
    result = CliRunner().invoke(main, ["compare", "--batch-size", "2", "--no-plots", "--backends", "numpy,torch"])
    assert result.exit_code == 0, result.output
    assert signal.getsignal(signal.SIGINT) is before
