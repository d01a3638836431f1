"""`convbridge compare` end to end: the experiment, its figures and report, and clean failures."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import urllib.error
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from convbridge.cli import main
from convbridge.reportdir import FIGURES

from test_data import batch_blobs

pytest.importorskip("matplotlib")
PNG = b"\x89PNG\r\n\x1a\n"


def run(*args):
    return CliRunner().invoke(main, ["compare", *args], catch_exceptions=False)


class _Checker(HTMLParser):
    def __init__(self):
        super().__init__()
        self.stack, self.images, self.tags = [], 0, set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        if tag == "img":
            src = dict(attrs)["src"]
            assert src.startswith("data:image/png;base64,")  # self-contained
            self.images += 1
        elif tag not in ("meta", "br"):
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"unbalanced </{tag}>"
        self.stack.pop()


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_default_run_on_the_embedded_sample(isolated):
    result = run()
    assert result.exit_code == 0, result.output
    out = result.output
    assert "using the embedded sample" in out  # the one-line notice
    for needle in ("(32, 3, 32, 32) float32", "(32,) int64", "(4, 3, 5, 5) float32",
                   "jax.random.normal(PRNGKey(42), (4, 3, 5, 5))", "torch output", "jax output",
                   "(32, 4, 28, 28) float32", "max |torch - jax|", "array_equiv", "verdict:", "unit roundoff"):
        assert needle in out, needle
    assert any(v in out for v in ("identical", "equivalent"))
    folder = isolated / "convbridge-report"
    for name in FIGURES:
        w, h = _png_size(folder / name)
        assert 200 < w < 3000 and 150 < h < 3000, (name, w, h)
    checker = _Checker()
    checker.feed((folder / "index.html").read_text())
    assert checker.images == len(FIGURES) and {"html", "table", "figure"} <= checker.tags
    assert not checker.stack or checker.stack == []
    assert not [p for p in isolated.iterdir() if p.name.startswith(".convbridge-report")]  # no temporaries left


def test_json_holds_the_same_numbers(isolated):
    result = run("--data", "sample", "--format", "json", "--no-plots", "--out", "rep")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    saved = json.loads((isolated / "rep" / "report.json").read_text())
    for key in ("verdict", "max_abs_diff", "array_equiv", "shapes", "dtypes", "worst", "unit_roundoff"):
        assert data[key] == saved[key], key
    assert data["shapes"]["torch"] == [32, 4, 28, 28] and data["dtypes"]["jax"] == "float32"
    assert data["verdict"] in ("identical", "equivalent")
    assert data["report"]["pairs"][0]["allowed_ratio"] == pytest.approx(75 / (1 - 75 * 2.0**-24), rel=1e-6)
    assert not (isolated / "rep" / "side_by_side.png").exists()


def test_flags_change_the_experiment(isolated):
    result = run("--data", "sample", "--format", "json", "--no-plots", "--batch-size", "8", "--filters", "6",
                 "--kernel-size", "3", "--stride", "2", "--padding", "same", "--groups", "3", "--layout", "NHWC",
                 "--backends", "torch,jax,numpy", "--seed", "1", "--image-index", "7", "--channel", "5")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["shapes"]["numpy"] == [8, 16, 16, 6]  # NHWC, ceil(32 / 2)
    assert data["shapes"]["kernel"] == [6, 1, 3, 3]
    assert len(data["report"]["pairs"]) == 6 and data["verdict"] in ("identical", "equivalent")


def test_all_runs_the_whole_split(isolated):
    result = run("--data", "sample", "--all", "--batch-size", "10", "--no-plots", "--format", "json")
    assert result.exit_code == 0, result.output
    agg = json.loads(result.stdout)["all"]
    assert agg["images"] == 32 and agg["batches"] == 4
    assert set(agg["seconds_per_backend"]) == {"torch", "jax"}
    assert agg["verdict"] in ("identical", "equivalent")
    assert agg["elements"] == 32 * 4 * 28 * 28
    assert all(v["non_identical_elements"] <= agg["elements"] for v in agg["pairs"].values())


def test_synthetic_cifar10_archive(isolated, monkeypatch):
    from convbridge.data import cifar10

    blobs = batch_blobs()
    archive = isolated / "cifar" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        for name, blob in blobs.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    import hashlib

    sums = dict(cifar10.CIFAR10_MD5, **{"cifar-10-python.tar.gz": hashlib.md5(archive.read_bytes()).hexdigest()})
    monkeypatch.setattr(cifar10, "CIFAR10_MD5", sums)  # the published sums, with the synthetic archive's
    result = run("--data", "cifar10", "--root", str(archive.parent), "--format", "json", "--out", "rep")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["shapes"]["images"] == [4, 3, 32, 32]  # the synthetic test batch holds 4 images
    assert data["class_names"][:2] == ["airplane", "automobile"]
    assert (isolated / "rep" / "inputs.png").exists()


def _assert_clean_failure(result, pattern: str, out: Path | None = None):
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert pattern in result.output, result.output
    if out is not None:
        assert not out.exists()  # never a half-written report


@pytest.mark.parametrize("content", [b"not a tarball at all", b""])
def test_corrupted_archive(isolated, content):
    (isolated / "cifar-10-python.tar.gz").write_bytes(content)
    result = run("--data", "cifar10", "--root", str(isolated), "--out", "rep")
    _assert_clean_failure(result, "MD5", isolated / "rep")


def test_truncated_pickle(isolated, monkeypatch):
    from convbridge.data import cifar10

    folder = isolated / "cifar-10-batches-py"
    folder.mkdir()
    blobs = batch_blobs()
    for name, blob in blobs.items():
        (folder / name).write_bytes(blob[: len(blob) // 2] if name == "test_batch" else blob)
    import hashlib

    sums = {name: hashlib.md5((folder / name).read_bytes()).hexdigest() for name in blobs}
    monkeypatch.setattr(cifar10, "CIFAR10_MD5", dict(cifar10.CIFAR10_MD5, **sums))
    result = run("--data", "cifar10", "--root", str(isolated), "--out", "rep")
    _assert_clean_failure(result, "test_batch", isolated / "rep")


def test_missing_cifar10(isolated):
    result = run("--data", "cifar10", "--root", str(isolated / "nowhere"), "--out", "rep")
    _assert_clean_failure(result, "--download", isolated / "rep")


def test_download_without_network_fails_fast(isolated, monkeypatch):
    import urllib.request

    def refuse(*args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    result = run("--data", "cifar10", "--download", "--root", str(isolated / "dl"), "--out", "rep")
    _assert_clean_failure(result, "could not reach", isolated / "rep")


@pytest.mark.parametrize("args,pattern", [
    (("--backends", "torch,tensorflow"), "unknown backend 'tensorflow'"),
    (("--kernel-size", "40"), "effective kernel size 40"),
    (("--groups", "2"), "groups (2)"),
    (("--stride", "0"), "stride must be >= 1, got 0"),
    (("--padding", "full"), "unknown padding 'full'"),
    (("--image-index", "99"), "image-index 99 is outside the batch"),
    (("--channel", "4"), "channel 4 is outside the 4 output channels"),
    (("--batch-size", "0"), "batch-size must be a positive int"),
    (("--stride", "x"), "Invalid value for --stride"),
])
def test_bad_arguments(isolated, args, pattern):
    result = run("--data", "sample", "--out", "rep", *args)
    _assert_clean_failure(result, pattern, isolated / "rep")


def test_out_path_under_a_regular_file(isolated):
    (isolated / "afile").write_text("x")
    result = run("--data", "sample", "--out", str(isolated / "afile" / "report"))
    _assert_clean_failure(result, "which is a file")
    assert (isolated / "afile").read_text() == "x"


def test_a_previous_report_is_replaced_but_nothing_else(isolated):
    """Replacing a report replaces its own files and removes its stale ones; a file the user put there stays."""
    import json as _json

    from convbridge.reportdir import MARKER, write_folder

    def fill(*names):
        return lambda tmp: [(tmp / n).write_text(n) for n in names]

    write_folder("rep", fill("side_by_side.png", "index.html"))
    assert sorted(_json.loads((isolated / "rep" / MARKER).read_text())["files"]) == ["index.html", "side_by_side.png"]
    (isolated / "rep" / "my_notes.txt").write_text("mine")
    assert run("--data", "sample", "--no-plots", "--out", "rep").exit_code == 0
    assert (isolated / "rep" / "my_notes.txt").read_text() == "mine"
    assert not (isolated / "rep" / "side_by_side.png").exists()  # the earlier report's figure, now stale
    assert sorted(p.name for p in (isolated / "rep").iterdir()) == sorted(
        ["my_notes.txt", MARKER, "report.json", "index.html"])
    assert (isolated / "rep" / "index.html").read_text().startswith("<!DOCTYPE html>")
    assert not [p for p in isolated.iterdir() if p.name.startswith(".rep")]


def test_help_and_module_entry_point():
    out = subprocess.run([sys.executable, "-m", "convbridge", "--help"], capture_output=True, text=True, check=True)
    assert "compare" in out.stdout
    sub = CliRunner().invoke(main, ["compare", "--help"])
    assert sub.exit_code == 0 and "--backends" in sub.output and "--format" in sub.output


def test_import_of_cli_loads_no_framework_or_matplotlib():
    code = "import sys, convbridge.cli; print([m for m in ('torch','jax','matplotlib') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_data_from_an_npz_array(isolated):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(6, 32, 32, 3), dtype=np.uint8)
    np.savez(isolated / "mine.npz", images=images, labels=np.arange(6) % 2, class_names=np.array(["a", "b"]))
    result = run("--data", str(isolated / "mine.npz"), "--format", "json", "--no-plots", "--out", "rep")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["shapes"]["images"] == [6, 3, 32, 32] and data["class_names"][:3] == ["a", "b", "a"]



def test_data_arrays_in_either_layout_and_any_scale(isolated):
    rng = np.random.default_rng(0)
    normed = ((rng.random((3, 3, 9, 9)) - 0.5) / 0.5).astype(np.float32)  # NCHW, already normalised
    np.save(isolated / "n.npy", normed)
    np.save(isolated / "wide.npy", normed * 3)
    result = run("--data", "n.npy", "--backends", "numpy,torch", "--format", "json", "--no-plots", "--out", "a")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["shapes"]["images"] == [3, 3, 9, 9]
    result = run("--data", "wide.npy", "--backends", "numpy,torch", "--format", "json", "--no-plots", "--out", "b")
    assert result.exit_code == 2 and not (isolated / "b").exists()
    assert "pass --data-scale normalized" in json.loads(result.stdout)["error"]["message"]
    result = run("--data", "wide.npy", "--data-scale", "normalized", "--data-layout", "NCHW", "--backends",
                 "numpy,torch", "--format", "json", "--no-plots", "--out", "b")
    assert result.exit_code == 0, result.output
    result = run("--data", "sample", "--data-layout", "NHWC", "--out", "c")
    assert result.exit_code == 2 and "describe a .npy/.npz array" in result.output
    result = run("--data", "sample", "--split", "train", "--out", "c")
    assert result.exit_code == 2 and "--split train is a CIFAR-10 split" in result.output


def test_figures_of_outputs_that_overflowed(tmp_path, recwarn):
    """A feature map with inf or NaN (float32 overflow) is drawn, with them in the 'bad' colour, and quietly."""
    from convbridge.viz import figures

    m = np.arange(16.0).reshape(4, 4)
    m[0, 0], m[1, 1] = np.inf, np.nan
    paths = [figures.side_by_side({"a": m, "b": np.full((4, 4), np.inf)}, "t", tmp_path / "s.png"),
             figures.rows({"a": np.stack([m, m])}, ["x", "y"], "t", tmp_path / "r.png"),
             figures.heatmap(m, "t", tmp_path / "h.png", label="r", log=True, limit=3.0),
             figures.heatmap(np.full((3, 3), np.nan), "t", tmp_path / "n.png", label="d"),
             figures.filters(np.full((2, 1, 3, 3), np.inf), "t", tmp_path / "f.png")]
    assert all(p.read_bytes()[:8] == PNG for p in paths)
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)], [str(w.message) for w in recwarn]


@pytest.mark.parametrize("dtype, label", [("bfloat16", "computed in float32 and rounded to bfloat16"),
                                          ("float64", "float64 (IEEE)")])
def test_compare_in_another_dtype_under_a_policy(isolated, dtype, label):
    import jax

    result = run("--dtype", dtype, "--precision", "default", "--batch-size", "4", "--no-plots", "--format", "json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["dtypes"]["images"] == summary["dtypes"]["torch"] == summary["dtypes"]["jax"] == dtype
    assert summary["verdict"] in ("identical", "equivalent") and summary["verdict_label"] == summary["verdict"]
    for name in ("torch", "jax"):
        assert label in summary["precision"][name] and "precision=default, cpu" in summary["precision"][name]
    assert summary["report"]["verdict_label"] == summary["verdict"]
    assert not jax.config.read("jax_enable_x64")  # the float64 run's x64 mode was scoped to it


def test_compare_refuses_a_dtype_it_cannot_use(isolated):
    result = CliRunner().invoke(main, ["compare", "--dtype", "complex64"])
    assert result.exit_code == 2 and "'complex64' is not one of" in result.output
