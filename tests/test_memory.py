"""The memory guard: sizes read as written, a limit from a block, the environment or the machine, estimates that
cover what runs, refusals before any work, and a reference that computes in blocks."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from click.testing import CliRunner

import convbridge as cb
from convbridge import memory
from convbridge.errors import ArgumentError
from convbridge.memory import MemoryLimitError
from convbridge.ops import build
from convbridge.reference import _core

from cases import CONV, TRANSPOSE


def test_sizes_and_the_limit_in_force(monkeypatch):
    assert memory.parse_size("8GiB") == 8 * 2**30 and memory.parse_size("1.5 kb") == 1500
    assert memory.parse_size(" 500MB ") == 500 * 10**6 and memory.parse_size(2**20) == 2**20
    assert 0 < memory.parse_size("50%") <= (memory.available() or 2**40)
    for bad in ("lots", "-1GB", "0", 0, float("inf"), True, "5 parsecs", "", "1e400", "1e308GiB", "200%", "inf%"):
        with pytest.raises(ArgumentError, match="memory"):
            memory.parse_size(bad)
    monkeypatch.setenv(memory.ENV, "3GiB")
    assert memory.current_limit() == 3 * 2**30
    with memory.limit("1MiB"):
        assert memory.current_limit() == 2**20
        with memory.limit(2048):
            assert memory.current_limit() == 2048
    assert memory.current_limit() == 3 * 2**30
    monkeypatch.delenv(memory.ENV)
    assert memory.current_limit() == int((memory.available() or 8 * 2**30) * 0.5)


@pytest.mark.parametrize("call", [
    lambda x, w: cb.conv(x, w, padding=5),
    lambda x, w: cb.conv(x, w, padding=5, backend="torch"),
    lambda x, w: cb.conv(x, w, padding=5, algorithm="matmul"),
    lambda x, w: cb.compare(x, w, padding=5, backends=("numpy",)),
    lambda x, w: cb.verify(np.zeros((2, 8, 40, 40), "float32"), x, w, padding=5),
    lambda x, w: cb.as_matmul(x, w, padding=5),
    lambda x, w: cb.unfold(x, (11, 11), padding=5),
])
def test_work_past_the_limit_is_refused_before_it_starts(call):
    pytest.importorskip("torch")
    x, w = np.ones((2, 8, 40, 40), "float32"), np.ones((8, 8, 11, 11), "float32")
    with memory.limit("64KiB"):
        with pytest.raises(MemoryLimitError, match=r"needs about [0-9.]+ [KMG]iB, more than the memory limit of "
                                                   r"64 KiB; .*CONVBRIDGE_MEMORY_LIMIT=16GiB"):
            call(x, w)


def test_the_command_line_takes_a_limit(tmp_path, monkeypatch):
    from convbridge.cli import main

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["compare", "--data", "sample", "--no-plots", "--memory-limit", "1MB"])
    assert result.exit_code == 2 and "more than the memory limit of 977 KiB" in result.output
    result = CliRunner().invoke(main, ["compare", "--data", "sample", "--memory-limit", "plenty"])
    assert result.exit_code == 2 and "cannot read the memory size 'plenty'" in result.output
    result = CliRunner().invoke(main, ["compare", "--data", "sample", "--memory-limit", ""])  # not silently ignored
    assert result.exit_code == 2 and "cannot read the memory size ''" in result.output
    result = CliRunner().invoke(main, ["compare", "--data", "sample", "--filters", "100000000", "--out", "r"])
    assert result.exit_code == 2 and "with (100000000, 3, 5, 5) on 2 backend(s) needs about" in result.output
    from convbridge.experiment import make_filters

    with pytest.raises(MemoryLimitError, match="drawing 7,500,000,000 filter weights"):
        make_filters(0, (10**8, 3, 5, 5))
    with memory.limit("64MiB"):  # the verdict's memory, checked before any backend runs
        result = CliRunner().invoke(main, ["compare", "--data", "sample", "--filters", "300", "--kernel-size", "9",
                                           "--padding", "same", "--out", "r"])
    assert result.exit_code == 2 and "judging the conv of (32, 3, 32, 32) with (300, 3, 9, 9)" in result.output
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("name", ["tutorial", "groups_asym_dilated", "big_k", "conv3d"])
def test_the_reference_in_small_blocks_gives_the_same_bits(monkeypatch, name):
    """Small-integer data make every summation order exact, so blocking cannot change a bit."""
    case = CONV[name]
    rng = np.random.default_rng(0)
    x = rng.integers(-3, 4, case.x).astype("float64")
    w = rng.integers(-3, 4, case.w).astype("float64")
    whole = cb.conv(x, w, backend="numpy", **case.kwargs)
    monkeypatch.setattr(_core, "BLOCK_ELEMENTS", 97)  # blocks of single output rows, or a few images
    assert list(_core.blocks(3, 5, 40)) != [(slice(0, 3), slice(0, 5))]
    np.testing.assert_array_equal(cb.conv(x, w, backend="numpy", **case.kwargs), whole)


@pytest.mark.parametrize("op, case", [("conv", CONV["tutorial"]), ("conv", CONV["big_k"]),
                                      ("conv_transpose", TRANSPOSE["stride2_pad1_op1"])])
def test_estimates_cover_the_measured_peak(op, case):
    """The numpy backend's estimate is not below what tracemalloc measures (NumPy reports its allocations)."""
    x, w, b = case.arrays(seed=1)
    spec = build(op, x, w, b, case.kwargs)
    run = cb.conv if op == "conv" else cb.conv_transpose
    tracemalloc.start()
    run(x, w, b, backend="numpy", **case.kwargs)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak <= memory.reference_bytes(spec) * 1.1, (memory.describe(peak), memory.describe(
        memory.reference_bytes(spec)))
