"""Fuzzing: hostile argument combinations for every public function and every CLI flag.

A call may end in exactly two ways: a correct result (output shape from the independent
oracle, values judged against the float64 reference) or a ``ConvBridgeError`` with a short
message. The CLI: exit 0/1/3 with a whole report, or exit 2 with one message; never a
traceback, never exit 70, never a touched file that is not its own. Each drawn call starts
from a valid one and is mutated 0-3 times (a hostile value for a keyword, an unknown
keyword, a hostile positional, a dropped positional), so results and refusals both occur.
Counts go to the summary line "fuzzed calls"; `make sweep` draws 1500 per test.
"""

from __future__ import annotations

import json
import math
import os
import urllib.error
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import BACKENDS, record
from hypothesis import given
from hypothesis import strategies as st
from oracle import expected_shape

import convbridge as cb
from convbridge.arrays import to_numpy
from convbridge.cli import main
from convbridge.errors import ConvBridgeError, ConvBridgeWarning

LIBRARY = ("conv", "conv_transpose", "unfold", "fold", "compare", "verify", "explain", "conv_matrix", "as_matmul")
NAMED = dict(
    conv=("stride", "padding", "dilation", "groups", "padding_mode", "layout", "backend", "algorithm", "precision",
          "device"),
    conv_transpose=("stride", "padding", "output_padding", "dilation", "groups", "layout", "backend", "precision",
                    "output_size", "convention", "transpose_kernel", "algorithm", "device", "padding_mode"),
    unfold=("dilation", "padding", "stride", "layout", "backend", "device"),
    fold=("dilation", "padding", "stride", "backend", "device"),
    compare=("op", "backends", "stride", "padding", "dilation", "groups", "padding_mode", "layout"),
    verify=("op", "precision", "name", "stride", "padding", "dilation", "groups", "padding_mode", "layout"),
    explain=("layer", "bias", "stride", "padding", "dilation", "groups", "padding_mode", "layout"),
    conv_matrix=("dense", "stride", "padding", "dilation", "groups", "padding_mode", "layout"),
    as_matmul=("op", "backend", "stride", "padding", "dilation", "groups", "padding_mode", "layout"),
)
TYPOS = ("strides", "strde", "pading", "kernel", "groups_", "dilations", "mode", "data_format", "padding_modes")

_SCALARS = st.sampled_from([
    -2, -1, 0, 1, 2, 3, 7, 2**31, 2**63, True, False, None, 1.5, float("nan"), float("inf"), "", "same", "valid",
    "same_lower", "full", "reflect", "zeros", "circular", "replicate", "NCHW", "NHWC", "NCW", "OIHW", "abc",
    "torch", "jax", "numpy", "cuda", "cpu", "native", "im2col", "fft", "winograd", "highest", "default", "tf32",
    "conv", "fold", "conv_transpose", "Conv2d(3, 4, 3)", "Conv2d('6', 8, 3)", b"x", (), [], {}, {"a": 1},
])
VALUES = st.one_of(
    _SCALARS,
    st.lists(st.integers(-2, 4), max_size=4).map(tuple),
    st.lists(st.tuples(st.integers(-2, 3), st.integers(-2, 3)), max_size=3),
    st.tuples(st.integers(0, 3), st.text(max_size=2)),
)


def _hostile_positional(draw):
    kind = draw(st.sampled_from(["array", "array", "object", "list", "torch", "nonfinite"]))
    if kind == "array":
        shape = tuple(draw(st.lists(st.integers(0, 5), max_size=5)))
        dtype = draw(st.sampled_from(["float32", "float64", "float16", "int32", "int64", "bool", "complex64",
                                      "uint8"]))
        return np.ones(shape, dtype)
    if kind == "object":
        return draw(st.sampled_from(["abc", None, 3.0, 7, {"x": 1}, np.array([1.0, None], dtype=object),
                                     np.array(["a", "b"])]))
    if kind == "list":
        return draw(st.sampled_from([[1, [2, 3]], [[1.0, 2.0], [3.0, 4.0]], [[[1.0]]], [], [[]]]))
    if kind == "nonfinite":
        return np.full((1, 2, 4, 4), draw(st.sampled_from([np.nan, np.inf, 3e38])), np.float32)
    if "torch" not in BACKENDS:
        return None
    import torch

    return draw(st.sampled_from([
        lambda: torch.ones(1, 2, 4, 4, requires_grad=True),
        lambda: torch.ones(1, 2, 4, 4, dtype=torch.int64),
        lambda: torch.ones(1, 2, 4, 4).to_sparse(),
        lambda: torch.ones(1, 2, 4, 4, device="meta"),
        lambda: torch.ones(1, 2, 4, 4, dtype=torch.complex64),
        lambda: torch.ones(2, 3, 4, 4).permute(0, 2, 3, 1),
    ]))()


@st.composite
def valid_calls(draw, fn: str):
    """A small correct call of ``fn``: (positional args, keyword args)."""
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    nsp = draw(st.sampled_from([1, 2, 2, 3]))
    g = draw(st.sampled_from([1, 1, 2]))
    c_in, c_out = g * draw(st.integers(1, 2)), g * draw(st.integers(1, 2))
    k = [draw(st.integers(1, 3)) for _ in range(nsp)]
    sizes = [draw(st.integers(3, 6 if nsp < 3 else 4)) for _ in range(nsp)]
    n = draw(st.integers(1, 2))
    x = rng.standard_normal((n, c_in, *sizes)).astype(np.float32)
    w = rng.standard_normal((c_out, c_in // g, *k)).astype(np.float32)
    kw = dict(stride=draw(st.sampled_from([1, 2])), padding=draw(st.sampled_from([0, 1, "valid", "same"])))
    if kw["padding"] == "same":
        kw["stride"] = 1
    conv_kw = dict(kw, groups=g)
    if fn in ("conv", "compare", "as_matmul", "verify", "explain", "conv_matrix"):
        if fn == "explain":
            return [x.shape, w.shape], conv_kw
        if fn == "conv_matrix":
            return [x.shape, w], conv_kw
        if fn == "verify":
            y = cb.conv(x, w, backend="numpy", **conv_kw)
            return [y, x, w], conv_kw
        if fn == "compare":
            backends = draw(st.sampled_from([("numpy",), ("numpy", "torch"), BACKENDS]))
            return [x, w], dict(conv_kw, backends=tuple(b for b in backends if b in BACKENDS))
        return [x, w], conv_kw
    if fn == "conv_transpose":
        wt = rng.standard_normal((c_in, c_out // g, *k)).astype(np.float32)
        return [x, wt], dict(stride=kw["stride"], padding=draw(st.sampled_from([0, 1])), groups=g)
    if fn == "unfold":
        return [x, tuple(k)], dict(stride=kw["stride"], padding=draw(st.sampled_from([0, 1])))
    blocks = math.prod(s - kk + 1 for s, kk in zip(sizes, k))  # fold, stride 1, no padding
    cols = rng.standard_normal((n, c_in * math.prod(k), blocks)).astype(np.float32)
    return [cols, tuple(sizes), tuple(k)], {}


@st.composite
def fuzzed_calls(draw, fn: str):
    args, kw = draw(valid_calls(fn))
    mutations = draw(st.sampled_from([0, 0, 1, 1, 2, 3]))
    for _ in range(mutations):
        what = draw(st.sampled_from(["keyword", "keyword", "typo", "positional", "drop", "extra"]))
        if what == "keyword":
            kw[draw(st.sampled_from(NAMED[fn]))] = draw(VALUES)
        elif what == "typo":
            kw[draw(st.sampled_from(TYPOS))] = draw(VALUES)
        elif what == "positional" and args:
            args[draw(st.integers(0, len(args) - 1))] = _hostile_positional(draw)
        elif what == "drop" and args:
            args.pop(draw(st.integers(0, len(args) - 1)))
        elif what == "extra":
            args.append(_hostile_positional(draw))
    return args, kw, mutations


def _finite(*arrays) -> bool:
    """Whether the verdict can judge results of these inputs: finite, and far from overflow (a float32 sum
    that overflows to inf is outside the rounding model; how the verdict should word it is the verdict's
    business, not this test's)."""
    try:
        return all(np.all(np.abs(to_numpy(a).astype(np.float64)) < 1e30) for a in arrays if isinstance(a, np.ndarray))
    except Exception:
        return False


def _oracle(op: str, x, second, kw):
    """The independent output shape, or None where the oracle cannot state this call."""
    try:
        return expected_shape(op, tuple(np.shape(x)) if not isinstance(x, tuple) else x, second, kw)
    except Exception:
        return None


def _judge(op: str, y, x, second, bias, kw) -> None:
    """A returned array must have the oracle's shape and agree with the float64 reference."""
    plain = {k: v for k, v in kw.items() if k not in ("backend", "device", "algorithm", "precision")}
    out = to_numpy(y)
    want = _oracle(op, x, np.shape(second) if op in ("conv", "conv_transpose") else second, plain)
    if want is not None:
        assert tuple(out.shape) == want, (out.shape, want)
    if not _finite(x, second if not isinstance(second, tuple) else None, bias):
        return
    rep = cb.verify(y, x, second, bias, op=op, precision=kw.get("precision"), **plain)
    assert rep.verdict in ("identical", "equivalent"), rep


def _call(fn: str, args, kw):
    f = getattr(cb, fn)
    result = f(*args, **kw)
    if fn in ("conv", "conv_transpose", "unfold", "fold"):
        second = args[1] if fn != "fold" else args[2]
        if fn == "fold":
            kw = dict(kw, output_size=args[1])
            _judge(fn, result, args[0], second, None, kw)
        else:
            _judge(fn, result, args[0], second, args[2] if len(args) > 2 else kw.get("bias"), kw)
    elif fn == "compare":
        assert isinstance(result, cb.ParityReport)
        if _finite(*args):
            assert result.verdict in ("identical", "equivalent"), result
    elif fn == "verify":
        assert isinstance(result, cb.ParityReport)
    elif fn == "explain":
        layer = kw.get("layer")
        if layer is None and len(args) == 2:
            plain = {k: v for k, v in kw.items() if k != "bias"}
            want = _oracle("conv", tuple(args[0]), tuple(args[1]), plain)
            assert want is None or tuple(result.output_shape) == want, (result.output_shape, want)
    elif fn == "conv_matrix":
        x_shape = tuple(args[0])
        if math.prod(x_shape) <= 10**5 and _finite(args[1]):
            rng = np.random.default_rng(0)
            x = rng.standard_normal(x_shape)
            matrix = np.asarray(result.todense()) if hasattr(result, "todense") else np.asarray(result)
            conv_kw = {k: v for k, v in kw.items() if k != "dense"}
            direct = cb.conv(x, np.asarray(args[1], np.float64), backend="numpy", **conv_kw)
            np.testing.assert_allclose(matrix @ x.ravel(), to_numpy(direct).ravel(), rtol=1e-9, atol=1e-9)
    elif fn == "as_matmul":
        y = result()
        op = kw.get("op", "conv")
        _judge(op, y, args[0], args[1], args[2] if len(args) > 2 else None,
               {k: v for k, v in kw.items() if k != "op"})


@pytest.mark.parametrize("fn", LIBRARY)
def test_library_calls_end_in_a_result_or_a_convbridge_error(fn):
    @given(fuzzed_calls(fn))
    def check(call):
        args, kw, mutations = call
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                _call(fn, args, kw)
                outcome = "result"
            except ConvBridgeError as e:
                message = str(e)
                assert message and len(message) < 1500, message  # one message, never a whole array
                outcome = "refused"
        loud = [w for w in caught if issubclass(w.category, RuntimeWarning) and "numpy" in w.filename]
        assert not loud, [str(w.message) for w in loud]
        assert all(w.category is not ConvBridgeWarning or str(w.message) for w in caught)
        assert mutations or outcome == "result", "an unmutated valid call was refused"
        record("fuzz", surface="library", fn=fn, outcome=outcome)

    check()


# --------------------------------------------------------------------------- the CLI


@pytest.fixture(scope="module")
def playground(tmp_path_factory):
    """Data files of every kind, a folder of someone else's files, and a regular file."""
    root = tmp_path_factory.mktemp("fuzz-cli")
    rng = np.random.default_rng(0)
    np.save(root / "pixels.npy", rng.integers(0, 256, (3, 10, 10, 3), np.uint8))
    np.save(root / "nchw.npy", ((rng.random((3, 3, 10, 10)) - 0.5) / 0.5).astype(np.float32))
    np.save(root / "wide.npy", (rng.random((3, 10, 10, 3)) * 3).astype(np.float32))
    np.save(root / "nan.npy", np.full((2, 8, 8, 3), np.nan, np.float32))
    np.save(root / "ambiguous.npy", np.zeros((2, 3, 8, 3), np.uint8))
    (root / "notes.txt").write_text("not an image")
    (root / "empty").mkdir()
    (root / "occupied").mkdir()
    (root / "occupied" / "thesis.txt").write_text("precious")
    return root


def _flag_values(root: Path) -> dict[str, list]:
    files = [str(root / n) for n in ("pixels.npy", "nchw.npy", "wide.npy", "nan.npy", "ambiguous.npy", "notes.txt")]
    return {
        "--data": ["sample", "sample", "auto", "cifar10", "nowhere", "", str(root / "empty"), *files],
        "--root": ["nowhere", str(root / "empty"), str(root / "notes.txt")],
        "--split": ["test", "train", "val"],
        "--data-layout": ["auto", "NHWC", "NCHW", "CHW"],
        "--data-scale": ["auto", "uint8", "unit", "normalized", "bogus"],
        "--batch-size": ["32", "1", "0", "-1", "x", "99999999999999999999"],
        "--filters": ["4", "1", "0", "-2", "100000000"],
        "--kernel-size": ["5", "1", "3", "0", "-1", "33", "40"],
        "--seed": ["0", "42", "-1", "4294967296", "x"],
        "--stride": ["1", "2", "1,2", "0", "-1", "1,2,3", "x", ""],
        "--padding": ["valid", "same", "same_lower", "0", "2", "1,2", "1:2,0:1", "1:2:3", "-1", "full", ""],
        "--dilation": ["1", "2", "0", "1,2,3", "99"],
        "--groups": ["1", "3", "2", "0", "-3", "x"],
        "--layout": ["NCHW", "NHWC", "HWCN"],
        "--backends": ["numpy,torch", "numpy,torch", "torch,jax", "numpy", "numpy,numpy", "tf", "", ",,"],
        "--image-index": ["0", "2", "31", "32", "-1", "999"],
        "--channel": ["0", "3", "4", "-1"],
        "--format": ["text", "json", "xml"],
        "--out": ["rep", "rep", "", ".", str(root / "occupied"), str(root / "notes.txt"), "/proc/nope/x"],
        "--memory-limit": ["8GiB", "1KB", "50%", "0", "abc", "-5", "200%"],
    }


FLAGS = ("--download", "--all", "--no-plots")
#: Figures cost seconds per run: CI fuzzes with --no-plots (the figures' own flags, --image-index and
#: --channel, are checked before any work), `make sweep` draws them in one run of ten.
PLOTS = os.environ.get("HYPOTHESIS_PROFILE") == "sweep"


@st.composite
def compare_argv(draw, root: Path):
    values = _flag_values(root)
    chosen = draw(st.lists(st.sampled_from(sorted(values)), max_size=6, unique=True))
    argv = ["compare"] if PLOTS and not draw(st.integers(0, 9)) else ["compare", "--no-plots"]
    for flag in chosen:
        argv += [flag, draw(st.sampled_from(values[flag]))]
    argv += draw(st.lists(st.sampled_from(FLAGS), max_size=2, unique=True))
    if "--out" not in chosen:
        argv += ["--out", "rep"]
    if "--backends" not in chosen:
        argv += ["--backends", "numpy,torch"]  # the default, torch,jax, compiles each new shape (tested elsewhere)
    return argv


@st.composite
def explain_argv(draw, root: Path):
    shape = draw(st.sampled_from(["1,3,8,8", "3,8,8", "2,3,9,7", "0,3,8,8", "1,3,-8,8", "x", "1,3,8",
                                  "1,3,100000,100000", "1,2,5"]))
    options = {
        "--kernel": ["4,3,3,3", "4,3,5,5", "4,1,3,3", "2,3,3", "4,3,9,9", "4,3,0,3", "a", ""],
        "--layer": ["Conv2d(3, 4, 3)", "Conv2d('6', 8, 3)", "Conv1d(2, 4, 3)", "Linear(3, 4)",
                    "Conv2d(3, 4, 3, stride=0)", "__import__('os')", "Conv2d(3, 4, 3, padding='same')"],
        "--stride": ["1", "2", "0", "1,2,3", "x"],
        "--padding": ["0", "1", "same", "valid", "1:2,0:1", "-1", "1:2:3"],
        "--dilation": ["1", "2", "0"],
        "--groups": ["1", "3", "0", "-1"],
        "--padding-mode": ["zeros", "reflect", "circular", "replicate", "bogus"],
        "--layout": ["NHWC", "NCHW", "NHWC,HWIO->NHWC", "xyz", "NWC"],
        "--draw": ["/proc/nope", str(root / "notes.txt"), str(root / "occupied"), "pics"],
        "--max-frames": ["1", "2", "0", "-1"],
    }
    chosen = draw(st.lists(st.sampled_from(sorted(options)), max_size=4, unique=True))
    argv = ["explain", shape]
    for flag in chosen:
        argv += [flag, draw(st.sampled_from(options[flag]))]
    if "--draw" in chosen and "--max-frames" not in chosen:
        argv += ["--max-frames", "2"]
    if draw(st.booleans()):
        argv.append("--bias")
    return argv


def _invoke_safely(root: Path, argv: list[str]):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("network is unreachable (fuzz test)")

    work = root / "work"
    work.mkdir(exist_ok=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        mp.setenv("HOME", str(work))
        mp.setattr("urllib.request.urlopen", offline)
        return CliRunner().invoke(main, argv, catch_exceptions=False)


def _check_cli(root: Path, argv: list[str], surface: str) -> None:
    result = _invoke_safely(root, argv)
    out = result.output
    assert "Traceback" not in out, (argv, out)
    assert result.exit_code in (0, 1, 2, 3), (argv, result.exit_code, out[-2000:])
    json_mode = "--format" in argv and argv[argv.index("--format") + 1] == "json"
    if result.exit_code == 2:
        if json_mode:
            error = json.loads(result.stdout)["error"]
            assert error["exit_code"] == 2 and error["message"], (argv, error)
        else:
            assert "rror" in out, (argv, out)  # click's "Error: ..." or our "error: ..."
    elif json_mode:
        assert json.loads(result.stdout, parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))
    assert (root / "occupied" / "thesis.txt").read_text() == "precious"
    assert (root / "notes.txt").read_text() == "not an image"
    assert not [p for p in (root / "occupied").iterdir() if p.name != "thesis.txt"], argv
    record("fuzz", surface="cli", fn=surface, outcome="result" if result.exit_code != 2 else "refused")


def test_compare_flags_end_in_a_report_or_exit_2(playground):
    @given(compare_argv(playground))
    def check(argv):
        _check_cli(playground, argv, "compare")

    check()


def test_explain_flags_end_in_a_report_or_exit_2(playground):
    @given(explain_argv(playground))
    def check(argv):
        _check_cli(playground, argv, "explain")

    check()
