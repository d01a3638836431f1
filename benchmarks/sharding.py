"""Sharding the batch over forced CPU devices (issue 14, item 5): the speedup of 2 devices over 1, measured in one run.

On a CPU, XLA makes N devices with ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` (set before JAX starts),
so each device count runs in its own worker process. The workers stay up, each warm (compiled), and take turns: in
every round each shape is timed on each device count, in alternating order, while the other worker waits, so that
both see the same machine. Timed: ``jax.jit(lambda x: cb.conv(x, w, **kw))`` on the batch split along N over the
devices (``cb.shard_batch``; one device: the plain array), the kernel replicated, ``block_until_ready`` each call.
Every result is checked against the one-device result (bitwise, else the verdict) before any timing.

Shapes: the tutorial's at batch 512, (512, 3, 32, 32) x (4, 3, 5, 5) valid, and a ResNet-50 3x3 layer,
(32, 64, 56, 56) x (64, 64, 3, 3) padding 1.

Run: ``.venv/bin/python benchmarks/sharding.py [--devices 1,2] [--rounds 9] [--calls 5]`` (prints a Markdown
table: medians of every timed call, and the speedup over the first device count).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

SHAPES = {
    "tutorial_b512": ("the tutorial at batch 512, 4 filters 5x5, valid", (512, 3, 32, 32), (4, 3, 5, 5), {}),
    "resnet3x3_b32": ("ResNet-50 3x3 64->64 @56, batch 32, pad 1", (32, 64, 56, 56), (64, 64, 3, 3), {"padding": 1}),
}
FLAG = "--xla_force_host_platform_device_count"
PINNED = "(1 core)"


def worker(count: int, pinned: bool = False) -> None:
    """Serve timing requests on stdin ("NAME CALLS", one per line) with one JSON list of seconds per line;
    ``pinned``: on CPU core 0 alone (XLA:CPU otherwise spreads one device's convolution over every core)."""
    if pinned:
        os.sched_setaffinity(0, {0})
    import jax
    import numpy as np

    import convbridge as cb
    from convbridge import sharding

    devices = jax.devices()[:count]
    assert len(devices) == count, f"asked for {count} devices, JAX has {jax.devices()}"
    calls = {}
    for name, (_, xs, ws, kw) in SHAPES.items():
        rng = np.random.default_rng(0)
        x, w = rng.standard_normal(xs, dtype=np.float32), rng.standard_normal(ws, dtype=np.float32)
        xd = sharding.shard_batch(x, devices) if count > 1 else jax.device_put(x, devices[0])
        wd = sharding.replicate(w, devices) if count > 1 else jax.device_put(w, devices[0])
        fn = jax.jit(lambda a, b, kw=kw: cb.conv(a, b, **kw))
        y = fn(xd, wd).block_until_ready()  # compiles
        assert len(y.sharding.device_set) == count
        ref = np.asarray(cb.conv(x, w, backend="jax", **kw))
        if not np.array_equal(np.asarray(y), ref):
            verdict = cb.compare(x, w, backends=[("sharded", lambda *a, y=y: np.asarray(y))], rerun=False, **kw)
            assert verdict.verdict in ("identical", "equivalent"), verdict
        calls[name] = (fn, xd, wd)
    print("ready", flush=True)
    for line in sys.stdin:
        name, n = line.split()
        fn, xd, wd = calls[name]
        times = []
        for _ in range(int(n)):
            t0 = time.perf_counter()
            fn(xd, wd).block_until_ready()
            times.append(time.perf_counter() - t0)
        print(json.dumps(times), flush=True)


def _start(label: str) -> subprocess.Popen:
    count = int(label.split()[0])
    flags = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith(FLAG))
    env = dict(os.environ, XLA_FLAGS=f"{flags} {FLAG}={count}".strip())
    pinned = ["--pinned"] if label.endswith(PINNED) else []
    proc = subprocess.Popen([sys.executable, __file__, "--worker", str(count), *pinned], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    ready = proc.stdout.readline().strip()
    if ready != "ready":
        raise SystemExit(f"the {count}-device worker did not start (it said {ready!r})")
    return proc


def _ask(proc: subprocess.Popen, name: str, calls: int) -> list[float]:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(f"{name} {calls}\n")
    proc.stdin.flush()
    return json.loads(proc.stdout.readline())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", default="1,2", help="device counts, the first the baseline (default 1,2)")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds (default 9)")
    parser.add_argument("--calls", type=int, default=5, help="timed calls per shape, count and round (default 5)")
    parser.add_argument("--pinned", action="store_true",
                        help="also time 1 device on one CPU core (what 'one device uses one core' would give)")
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        worker(args.worker, args.pinned)
        return
    counts = [c.strip() for c in args.devices.split(",")] + ([f"1 {PINNED}"] if args.pinned else [])
    workers = {c: _start(c) for c in counts}
    times: dict[tuple[str, str], list[float]] = {(n, c): [] for n in SHAPES for c in counts}
    for r in range(args.rounds):
        for name in SHAPES:
            for c in counts if r % 2 == 0 else counts[::-1]:  # alternate who goes first
                times[name, c] += _ask(workers[c], name, args.calls)
    for proc in workers.values():
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=60)
    import jax

    print(f"machine: {os.cpu_count()} CPUs, jax {jax.__version__}, XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; "
          f"{args.rounds} interleaved rounds x {args.calls} calls per shape and device count\n")
    print("| shape | x | w | " + " | ".join(f"{c} device(s) (median ms)" for c in counts) +
          " | " + " | ".join(f"speedup {c} vs {counts[0]}" for c in counts[1:]) + " |")
    print("|---|---|---|" + "---|" * (2 * len(counts) - 1))
    for name, (title, xs, ws, _) in SHAPES.items():
        med = {c: statistics.median(times[name, c]) for c in counts}
        cells = [f"{med[c] * 1e3:.2f}" for c in counts] + [f"{med[counts[0]] / med[c]:.2f}x" for c in counts[1:]]
        print(f"| {title} | {xs} | {ws} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
