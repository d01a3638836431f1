"""Sharded convolution over several JAX devices (convbridge.sharding, the jax backend's placement check) and the
CLI's --devices and multi-process runs.

Several CPU devices exist only when XLA_FLAGS asks for them before JAX starts, so the checks that need them run in
one subprocess per kind (the library's in one, each CLI run in its own); the rest runs here on one device.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner

from convbridge.cli import main
from convbridge.data import load_sample
from convbridge.experiment import Aggregate, iter_batches
from convbridge.sharding import ShardingError, divisors, halo_plan
from convbridge.spec import ConvAxis

pytest.importorskip("jax")

FLAG = "--xla_force_host_platform_device_count"


def _env(devices: int | None = None, **extra: str) -> dict[str, str]:
    env = dict(os.environ, **extra)
    if devices is not None:
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {FLAG}={devices}".strip()
    return env


# Every check that needs several devices, in one process with 4 CPU devices.
LIBRARY_CHECKS = textwrap.dedent(r'''
    import re
    import numpy as np, jax, jax.numpy as jnp
    import convbridge as cb
    from convbridge import sharding as sh
    from convbridge.errors import DTypeError
    from convbridge.sharding import ShardingError

    devs = jax.devices()
    assert len(devs) == 4, devs
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 4, 12, 12), dtype=np.float32)
    w = rng.standard_normal((6, 4, 3, 3), dtype=np.float32)
    b = rng.standard_normal(6).astype(np.float32)

    def split_along(y, axis, n=4):
        """y's sharding spans n devices and splits exactly `axis` into n shards."""
        assert len(y.sharding.device_set) == n, y.sharding
        shard = y.sharding.shard_shape(y.shape)
        assert [i for i, (s, f) in enumerate(zip(shard, y.shape)) if s != f] == [axis], (y.sharding, y.shape)
        assert shard[axis] * n == y.shape[axis]

    def same(y, ref, *args, **kw):
        """bitwise, else the verdict (judged as a result of the same call on the same inputs)."""
        y, ref = np.asarray(y), np.asarray(ref)
        if np.array_equal(y, ref):
            return
        rep = cb.compare(*args, backends=[("sharded", lambda *a: y)], rerun=False, **kw)
        assert rep.verdict in ("identical", "equivalent"), rep

    def collectives(fn, *args):
        text = jax.jit(fn).lower(*args).compile().as_text()
        return [c for c in ("all-gather", "all-reduce", "all-to-all", "collective-permute") if c in text]

    # the batch split along N: every op, every algorithm, the result split the same way, the same values
    xs = sh.shard_batch(x)
    split_along(xs, 0)
    for alg in ("native", "matmul", "fft"):
        y = cb.conv(xs, w, b, padding=1, algorithm=alg)
        split_along(y, 0)
        same(y, cb.conv(x, w, b, padding=1, backend="jax", algorithm=alg), x, w, b, padding=1,
             **({"algorithm": "fft"} if alg == "fft" else {}))
    wt = rng.standard_normal((4, 3, 3, 3), dtype=np.float32)
    yt = cb.conv_transpose(xs, wt, stride=2, padding=1)
    split_along(yt, 0)
    same(yt, cb.conv_transpose(x, wt, stride=2, padding=1, backend="jax"), x, wt, op="conv_transpose", stride=2,
         padding=1)
    cols = cb.unfold(xs, 3, stride=2)
    split_along(cols, 0)
    assert np.array_equal(cols, cb.unfold(x, 3, stride=2, backend="numpy"))
    folded = cb.fold(cols, (12, 12), 3, stride=2)
    split_along(folded, 0)
    same(folded, cb.fold(np.asarray(cols), (12, 12), 3, stride=2, backend="jax"), np.asarray(cols), (3, 3),
         op="fold", output_size=(12, 12), stride=2)

    # channels last: N is still the axis that is split; device= a batch sharding places the input itself
    xl, wl = np.moveaxis(x, 1, -1).copy(), np.transpose(w, (2, 3, 1, 0)).copy()
    yl = cb.conv(sh.shard_batch(xl, layout="NHWC"), wl, layout="NHWC")
    split_along(yl, 0)
    assert np.array_equal(yl, cb.conv(xl, wl, layout="NHWC", backend="jax"))
    yd = cb.conv(x, w, backend="jax", device=sh.batch_sharding(ndim=4))
    split_along(yd, 0)
    assert np.array_equal(yd, cb.conv(x, w, backend="jax"))
    ybh = cb.conv(sh.shard_batch(np.moveaxis(x, 0, 2).copy(), layout="CHNW"), w, layout="CHNW")  # N in the middle
    split_along(ybh, 2)

    # under the caller's jit: the result stays split along N over every device, with no collective
    f = jax.jit(lambda a: cb.conv(a, w, b, padding=1))
    y = f(xs)
    split_along(y, 0)
    assert np.array_equal(y, cb.conv(x, w, b, padding=1, backend="jax"))
    assert collectives(lambda a: cb.conv(a, w, b, padding=1), xs) == []
    assert collectives(lambda a: cb.unfold(a, 3), xs) == []
    assert collectives(lambda a: cb.conv_transpose(a, wt, stride=2), xs) == []

    # uneven batches: a clear error naming what divides, or padding that trim removes
    try:
        sh.shard_batch(x[:6])
        raise AssertionError("an uneven batch was accepted")
    except ShardingError as e:
        assert re.search(r"batch of 6 does not split evenly over 4 devices.*4 or 8.*1, 2, 3 device\(s\).*pad=True",
                         str(e)), e
    padded = sh.shard_batch(x[:6], pad=True)
    assert (padded.size, padded.padded, padded.array.shape[0]) == (6, 2, 8)
    split_along(padded.array, 0)
    assert not np.asarray(padded.array)[6:].any()
    yp = cb.conv(padded.array, w, b)
    split_along(yp, 0)
    assert np.array_equal(padded.trim(yp), cb.conv(x[:6], w, b, backend="jax"))
    pl = sh.shard_batch(np.moveaxis(x[:5], 0, 2).copy(), layout="CHNW", pad=True)
    assert (pl.axis, pl.out_axis, pl.array.shape) == (2, 2, (4, 12, 8, 12))
    assert pl.trim(cb.conv(pl.array, w, layout="CHNW")).shape == (6, 10, 5, 10)

    # the kernel split along O: model parallel with a replicated input, or beside a batch-split input
    ws = sh.shard_kernel(rng.standard_normal((8, 4, 3, 3), dtype=np.float32))
    split_along(ws, 0)
    ym = cb.conv(sh.replicate(x), ws)
    split_along(ym, 1)
    assert np.array_equal(ym, cb.conv(x, np.asarray(ws), backend="jax"))
    yo = cb.conv(xs, ws)
    split_along(yo, 0)
    assert np.array_equal(yo, cb.conv(x, np.asarray(ws), backend="jax"))
    wts = sh.shard_kernel(rng.standard_normal((4, 8, 3, 3), dtype=np.float32), op="conv_transpose")
    split_along(wts, 1)
    assert np.array_equal(cb.conv_transpose(sh.replicate(x), wts),
                          cb.conv_transpose(x, np.asarray(wts), backend="jax"))
    try:
        sh.shard_kernel(w)
        raise AssertionError("6 output channels were split over 4 devices")
    except ShardingError as e:
        assert "6 output channels (axis 0) do not split evenly over 4 devices; shard over 1, 2" in str(e), e

    # any other axis: a clear error, never a silent gather
    P, N = jax.sharding.PartitionSpec, jax.sharding.NamedSharding
    cases = [(lambda: cb.conv(jax.device_put(x, N(sh.mesh(), P(None, "devices"))), w),
              r"axis 1 \(C of layout 'NCHW'\)"),
             (lambda: cb.conv(sh.shard_spatial(x), w), r"axis 2 \(H of layout 'NCHW'\).*spatial_conv"),
             (lambda: cb.unfold(sh.shard_spatial(x), 3), r"input of unfold is sharded along axis 2"),
             (lambda: cb.conv(xs, jax.device_put(w, N(sh.mesh(), P(None, "devices")))),
              r"kernel of conv is sharded along axis 1 \(I of kernel layout 'OIHW'\)")]
    for call, pattern in cases:
        try:
            call()
            raise AssertionError(pattern)
        except ShardingError as e:
            assert re.search(pattern, str(e)), (pattern, str(e))

    # spatial sharding with a halo exchange equals the unsharded conv
    big = rng.standard_normal((2, 4, 16, 12), dtype=np.float32)
    for kw in (dict(padding=1), dict(padding="same"), dict(stride=2, padding=((1, 0), (0, 0))),
               dict(stride=2, padding="same"), dict(dilation=2, padding=2), dict(padding=((2, 0), (1, 1)))):
        ys = sh.spatial_conv(big, w, b, **kw)
        split_along(ys, 2)
        same(ys, cb.conv(big, w, b, backend="jax", **kw), big, w, b, **kw)
    bl = np.moveaxis(big, 1, -1).copy()
    ysl = sh.spatial_conv(bl, wl, padding=1, layout="NHWC")
    split_along(ysl, 1)
    same(ysl, cb.conv(bl, wl, padding=1, layout="NHWC", backend="jax"), bl, wl, padding=1, layout="NHWC")
    ysj = jax.jit(lambda a: sh.spatial_conv(a, w, padding=1))(big)
    split_along(ysj, 2)
    assert collectives(lambda a: sh.spatial_conv(a, w, padding=1), sh.shard_spatial(big)) == ["collective-permute"]
    for call, pattern in [(lambda: sh.spatial_conv(big, w, stride=2), r"16 input rows, 7 output rows.*use 1 device"),
                          (lambda: sh.spatial_conv(big, np.ones((6, 4, 11, 3), np.float32), padding=((5, 5), (1, 1))),
                           r"each holds 4 rows of axis H, but its outputs read 5 rows"),
                          (lambda: sh.spatial_conv(big, w, padding=1, padding_mode="reflect"), "zeros only"),
                          (lambda: sh.shard_batch(x, 5), r"5 devices asked for, but JAX has 4"),
                          (lambda: cb.conv(x[:4], w, backend="jax", device=sh.batch_sharding(3)),
                           r"axis 0 of the input \(4 long.*over the 3 devices.*divisible by 3.*1, 2 device"),
                          (lambda: sh.shard_batch(np.float32(3)), r"shard_batch takes a batched input.*shape \(\)"),
                          (lambda: sh.shard_kernel(w[:4], op="bogus"), "op must be 'conv' or 'conv_transpose'")]:
        try:
            call()
            raise AssertionError(pattern)
        except ShardingError as e:
            assert re.search(pattern, str(e)), (pattern, str(e))

    # float64 with JAX's x64 mode off: the jax backend's DTypeError, never a silent float32
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    for call in (lambda: sh.shard_batch(x64), lambda: sh.shard_kernel(w64[:4]), lambda: sh.replicate(w64),
                 lambda: sh.shard_spatial(x64), lambda: sh.spatial_conv(x64, w64, padding=1),
                 lambda: sh.replicate(x64.astype(np.complex128)), lambda: cb.conv(x64, w64, backend="jax")):
        try:
            call()
            raise AssertionError("float64 was placed as float32")
        except DTypeError as e:
            assert re.search(r"(float64|complex128) input on the jax backend, but JAX's x64 mode is off", str(e)), e

    # a kernel split along O on other devices than the input: the input goes whole to the kernel's devices
    w8 = rng.standard_normal((8, 4, 3, 3), dtype=np.float32)
    ref8 = cb.conv(x, w8, backend="jax")
    for xin in (sh.replicate(x), jax.device_put(x, devs[3])):
        ym2 = cb.conv(xin, sh.shard_kernel(w8, 2))
        split_along(ym2, 1, 2)
        assert np.array_equal(ym2, ref8)

    # an unbatched (C, H, W) input with a 4-d kernel is one image, as cb.conv reads it: H is split
    xu = rng.standard_normal((4, 16, 10), dtype=np.float32)
    yu = sh.spatial_conv(xu, w, b, padding=1)
    split_along(yu, 1)
    same(yu, cb.conv(xu, w, b, padding=1, backend="jax"), xu, w, b, padding=1)
    print("ALL CHECKS PASSED")
''')


def test_sharded_ops_on_four_devices():
    out = subprocess.run([sys.executable, "-c", LIBRARY_CHECKS], capture_output=True, text=True, timeout=240,
                         env=_env(4), check=False)
    assert out.returncode == 0 and "ALL CHECKS PASSED" in out.stdout, out.stdout[-3000:] + out.stderr[-6000:]


def _compare(*args: str, devices: int | None = None, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "convbridge", "compare", "--data", "sample", "--no-plots",
                             "--format", "json", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(devices, **env))


def _finish(p: subprocess.Popen) -> tuple[int, dict, str]:
    stdout, stderr = p.communicate(timeout=240)
    assert stdout.strip().startswith("{"), stdout[-2000:] + stderr[-4000:]
    return p.returncode, json.loads(stdout), stderr


def test_compare_all_on_two_devices(tmp_path):
    """The CLI asks for its own devices (XLA_FLAGS, before JAX starts); every batch is split over them."""
    p = _compare("--all", "--devices", "2", "--batch-size", "10", "--out", str(tmp_path / "rep"), HOME=str(tmp_path))
    code, data, stderr = _finish(p)
    assert code == 0, stderr[-4000:]
    agg = data["all"]
    assert (agg["images"], agg["batches"], agg["elements"]) == (32, 4, 32 * 4 * 28 * 28)  # 10, 10, 10, 2
    assert agg["verdict"] in ("identical", "equivalent") and set(agg["seconds_per_backend"]) == {"torch", "jax"}
    assert "whole split on 2 devices" in stderr
    assert (data["devices"], data["num_processes"]) == (2, 1)
    written = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert (written["devices"], written["num_processes"]) == (2, 1)


def test_two_processes_share_the_split(tmp_path):
    """Two processes on localhost (jax.distributed.initialize), each with 2 CPU devices and half of the batches;
    both know the whole split's statistics, only process 0 writes the report, and they equal one process's."""
    port = _free_port()
    common = ("--all", "--devices", "2", "--batch-size", "8", "--backends", "jax,numpy", "--out",
              str(tmp_path / "rep"), "--coordinator", f"localhost:{port}", "--num-processes", "2")
    procs = [_compare(*common, "--process-id", str(i), HOME=str(tmp_path)) for i in (0, 1)]
    results = [_finish(p) for p in procs]
    (code0, first, err0), (code1, second, err1) = results
    assert code0 == code1 == 0, err0[-3000:] + err1[-3000:]
    assert "process 0 of 2" in err0 and "process 1 of 2" in err1
    assert second["process_id"] == 1 and second["num_processes"] == 2 and second["exit_code"] == 0
    assert first["all"]["images"] == second["all"]["images"] == 32 and first["all"]["batches"] == 4
    for key in ("pairs", "elements", "verdict"):
        assert first["all"][key] == second["all"][key], key
    assert json.loads((tmp_path / "rep" / "report.json").read_text())["all"]["images"] == 32
    numpy_pair = first["all"]["pairs"]["numpy vs reference"]
    assert numpy_pair["verdict"] in ("identical", "equivalent") and numpy_pair["non_identical_elements"] >= 0


def test_processes_that_differ_or_never_come_end_with_status_2(tmp_path):
    """Each process exchanges its settings at start: different ones end every process with status 2, naming them
    (not a silently wrong aggregate). A process whose partner never starts: a stated, bounded wait, then status 2
    and one JSON error (not a silent hang and XLA's abort minutes later). Both runs at once."""
    port = _free_port()
    common = ("--all", "--devices", "1", "--backends", "jax,numpy", "--num-processes", "2")
    procs = [_compare(*common, "--coordinator", f"localhost:{port}", "--process-id", str(i), "--batch-size",
                      str(8 * (1 + 3 * i)), "--out", str(tmp_path / f"rep{i}"), HOME=str(tmp_path)) for i in (0, 1)]
    alone = _compare(*common, "--coordinator", f"localhost:{_free_port()}", "--process-id", "0", "--timeout", "3",
                     "--out", str(tmp_path / "alone"), HOME=str(tmp_path))
    for p in procs:
        code, data, stderr = _finish(p)
        assert code == 2 and data["error"]["exit_code"] == 2, stderr[-3000:]
        assert "different settings: --batch-size (process 0: 8, process 1: 32)" in data["error"]["message"]
    code, data, stderr = _finish(alone)
    assert code == 2 and data["error"]["type"] == "TimeoutError", stderr[-3000:]
    assert re.search(r"waited 3 s for 2 processes at localhost:\d+ \(this is process 0\), and not all of them "
                     r"joined.*--timeout", data["error"]["message"])
    assert "waiting up to 3 s for 2 processes at localhost:" in stderr
    assert not any((tmp_path / name).exists() for name in ("rep0", "alone"))


# Each of two processes holds 4 images on its 2 devices: one global batch of 8 over 4 devices.
GLOBAL_BATCH = textwrap.dedent(r'''
    import re
    import sys
    import numpy as np
    from convbridge import sharding as sh

    pid, port = int(sys.argv[1]), sys.argv[2]
    sh.start(2, coordinator=f"localhost:{port}", num_processes=2, process_id=pid)  # sets XLA_FLAGS, then JAX starts
    import jax
    import convbridge as cb

    x = np.random.default_rng(pid).standard_normal((4, 3, 10, 10), dtype=np.float32)
    w = np.random.default_rng(9).standard_normal((5, 3, 3, 3), dtype=np.float32)
    xg = sh.shard_batch(x)  # this process's rows of the global array
    assert xg.shape == (8, 3, 10, 10) and not xg.is_fully_addressable
    ref = np.asarray(cb.conv(x, w, padding=1, backend="jax"))
    for y in (cb.conv(xg, w, padding=1), jax.jit(lambda a: cb.conv(a, w, padding=1))(xg)):
        assert y.shape == (8, 5, 10, 10) and len(y.sharding.device_set) == 4
        assert y.sharding.shard_shape(y.shape) == (2, 5, 10, 10)
        mine = sorted(y.addressable_shards, key=lambda s: s.index[0].start)
        assert np.array_equal(np.concatenate([np.asarray(s.data) for s in mine]), ref)
    assert sh.gather_processes(f"from {pid}".encode()) == [b"from 0", b"from 1"]

    def refused(call, pattern):
        try:
            call()
        except sh.ShardingError as e:
            assert re.search(pattern, str(e)), (pattern, str(e))
        else:
            raise AssertionError(pattern)

    # single-process features refuse a mesh spanning processes (they would compute the wrong global shape)
    refused(lambda: sh.spatial_conv(x, w, padding=1), rf"spatial sharding.*devices of process\(es\) {1 - pid}")
    refused(lambda: sh.shard_kernel(np.zeros((4, 3, 3, 3), np.float32)), r"kernel sharding.*local_devices")
    ys = sh.spatial_conv(x, w, padding=1, devices=sh.local_devices())  # within this process: correct
    assert np.array_equal(ys, ref)
    # parts of different sizes: refused in every process, naming each size
    refused(lambda: sh.shard_batch(x[:4 - 2 * pid]), r"process 0: 4 \(shape \(4, 3, 10, 10\)\), process 1: 2")
    if pid == 1:  # a count names the first devices of jax.devices(): process 0's
        refused(lambda: sh.shard_batch(x, devices=2), r"none of the 2 device\(s\) asked for belong to this process")
    print("GLOBAL BATCH OK")
''')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_one_global_batch():
    """jax.distributed across two processes: shard_batch builds one global array from each process's rows, and
    cb.conv (eager and under jit) computes it where it lies; each process reads its own rows of the result."""
    port = str(_free_port())
    procs = [subprocess.Popen([sys.executable, "-c", GLOBAL_BATCH, str(i), port], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=_env()) for i in (0, 1)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0 and "GLOBAL BATCH OK" in out, out[-2000:] + err[-4000:]


# ----------------------------------------------------------------------------------- in this process (1 device)

def _run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.mark.parametrize("args, pattern", [
    (("--devices", "3", "--batch-size", "8"), ("batch-size 8 does not split evenly over 3 devices; use a multiple "
                                               "of 3 such as 6 or 9")),
    (("--devices", "2", "--backends", "torch,numpy"), "add jax to --backends"),
    (("--devices", "0"), "give a number of devices such as 2, or all"),
    (("--devices", "100000", "--batch-size", "100000"), ("100000 devices is more than convbridge splits a batch "
                                                         "over (at most 1024)")),
    (("--coordinator", "localhost:1", "--num-processes", "2", "--process-id", "0"), "add --all"),
    (("--all", "--coordinator", "localhost:1", "--num-processes", "2"), "missing --process-id"),
    (("--all", "--coordinator", "nowhere", "--num-processes", "2", "--process-id", "0"), "is host:port"),
    (("--all", "--coordinator", "localhost:1", "--num-processes", "2", "--process-id", "2"),
     "process ids run 0..1 for 2 processes"),
])
def test_device_options_refused_before_any_work(isolated, args, pattern):
    result = _run("compare", "--data", "sample", *args)
    assert result.exit_code == 2
    assert pattern in " ".join(result.output.split()), result.output
    assert not (isolated / "convbridge-report").exists()


def test_more_devices_than_jax_started_with_is_refused(isolated):
    import jax

    more = jax.local_device_count() + 1  # JAX runs in this process already: XLA_FLAGS can no longer help
    result = _run("compare", "--data", "sample", "--all", "--devices", str(more), "--batch-size", str(2 * more))
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert f"{more} devices asked for, but JAX already started in this process with {more - 1} CPU device" in text
    assert f"XLA_FLAGS={FLAG}=N" in text and "start a fresh process" in text


def test_bench_devices_need_the_jax_backend():
    result = _run("bench", "--quick", "--shapes", "seed", "--backends", "numpy", "--devices", "2")
    assert result.exit_code == 2 and "add jax to --backends" in result.output


def test_halo_plan_names_what_each_device_reads():
    for axis, shards in [(ConvAxis(16, 3, lo=1, hi=1), 4), (ConvAxis(16, 3), 2), (ConvAxis(16, 3, 2, 1, 1, 0), 4),
                         (ConvAxis(24, 5, dilation=2, lo=4, hi=4), 4), (ConvAxis(12, 1), 3)]:
        plan = halo_plan(axis, shards)
        for i, start in enumerate(plan.starts):  # the window starts where the device's first output reads
            lo, hi = axis.halo(i * plan.out_rows, (i + 1) * plan.out_rows)
            assert i * plan.rows - plan.left + start == lo and hi - lo == plan.window
            assert 0 <= start and start + plan.window <= plan.left + plan.rows + plan.right
    with pytest.raises(ShardingError, match=r"axis H \(10 input rows, 8 output rows\).*use 1, 2 device"):
        halo_plan(ConvAxis(10, 3), 4)
    with pytest.raises(ShardingError, match=r"each holds 2 rows of axis W, but its outputs read 4 rows"):
        halo_plan(ConvAxis(8, 9, lo=4, hi=4), 4, "W")
    assert divisors(12, 5) == [1, 2, 3, 4]
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ShardingError, match="shards is a number of devices, a positive int"):
            halo_plan(ConvAxis(8, 3), bad)


def test_process_shares_cover_the_split_once_and_aggregates_merge():
    ds = load_sample()
    for count in (1, 2, 3, 5):
        parts = [[(b.items, len(b)) for b in iter_batches(ds, 7, (i, count))] for i in range(count)]
        assert [p for part in parts for p in part] == [(b.items, len(b)) for b in iter_batches(ds, 7)]
    a = Aggregate(images=16, batches=2, worst={"x vs y": (2.0, 75.0, "equivalent")}, different={"x vs y": 5},
                  elements=100, seconds={"jax": 0.5}, verdict="equivalent")
    b = Aggregate.from_dict(json.loads(json.dumps(a.to_dict())))
    assert b.to_dict() == a.to_dict()
    b.worst["x vs y"] = (9.0, 75.0, "identical")
    a.merge(b)
    assert a.to_dict()["pairs"]["x vs y"] == {"max_ratio": 9.0, "allowed_ratio": 75.0, "verdict": "equivalent",
                                              "non_identical_elements": 10}
    assert (a.images, a.batches, a.elements, a.seconds, a.verdict) == (32, 4, 200, {"jax": 1.0}, "equivalent")


def test_start_sets_xla_flags_only_before_jax_starts(monkeypatch):
    """XLA_FLAGS asks for the devices when JAX has not been imported (here it has: nothing changes)."""
    from convbridge import sharding

    monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=0")
    sharding._force_host_devices(3)
    assert os.environ["XLA_FLAGS"] == f"--xla_backend_optimization_level=0 {FLAG}=3"
    sharding._force_host_devices(2)  # already asks for more
    assert os.environ["XLA_FLAGS"].endswith(f"{FLAG}=3")
    sharding._force_host_devices(8)
    assert os.environ["XLA_FLAGS"] == f"--xla_backend_optimization_level=0 {FLAG}=8"
    for bad in (0, True, "2", 2.5, [0, 1]):
        with pytest.raises(ShardingError, match="devices must be >= 1 or 'all', got"):
            sharding.start(bad)  # type: ignore[arg-type]
