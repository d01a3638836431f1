"""The differential suite on an accelerator (issue 13, item 4): which dtype and precision combinations differ on a
GPU, and whether convbridge's verdict says why.

For each framework with a GPU (torch: ``torch.cuda``; JAX: ``jax.devices("gpu")``) and a handful of realistic
convolutions (the tutorial's (32, 3, 32, 32) x (4, 3, 5, 5); a ResNet 3x3 64->64 layer at 56x56, batch 8; a
depthwise 3x3; a 1x1 128->256 with bias), it runs ``cb.compare`` against the float64 reference for

- float32 under ``precision="highest"`` and ``precision="default"`` (TF32 inputs on Ampere and later),
- bfloat16 and float16 (under the framework's default),

and records the verdict, the largest r and the allowed r, the precision convbridge records for the run, and
whether the default result differs bitwise from the highest one. Two checks judge the same numbers twice:

- each float32 "default" result judged by ``cb.verify`` as strict float32 (``precision=None``) and with the
  precision convbridge records for it: a TF32 result must pass the second and not silently pass the first;
- simulated on the host (always, no GPU needed): float32 convolutions of inputs rounded to TF32 and to bfloat16
  first, judged as strict float32 and as ``precision="tf32"`` / ``"bf16"``.

It prints one table and writes the same rows as JSON (``--json PATH``). Without a GPU it says so and exits 0, unless
``--cpu`` runs the same suite on the CPU (to test the script anywhere). ``--quick`` uses small shapes.

Run: ``.venv/bin/python benchmarks/gpu_precision.py [--cpu] [--quick] [--json out.json] [--frameworks torch,jax]``.
Exit status: 0, or 1 when a run raised (its row says what).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

NO_GPU = "no GPU (torch.cuda.is_available() False and jax has no gpu devices): nothing to run"
FRAMEWORKS = ("torch", "jax")
#: (dtype, policy) of every compared run; the 16-bit dtypes run under the framework's default.
RUNS = (("float32", "highest"), ("float32", "default"), ("bfloat16", "default"), ("float16", "default"))
#: Rows that judge results (or simulations) a second way: what their "policy" column says.
STRICT, RECORDED = "default, verify(None)", "default, verify(recorded)"
SIMULATED = "simulated (host)"


@dataclass(frozen=True)
class Shape:
    """One convolution: input and kernel shapes, a bias or not, and cb.conv's keyword arguments."""

    name: str
    x: tuple[int, ...]
    w: tuple[int, ...]
    bias: bool = False
    kwargs: dict = field(default_factory=dict)

    def describe(self) -> str:
        extra = "".join(f", {k}={v}" for k, v in self.kwargs.items()) + (", bias" if self.bias else "")
        return f"{self.x} x {self.w}{extra}"


SHAPES = (
    Shape("tutorial", (32, 3, 32, 32), (4, 3, 5, 5)),
    Shape("resnet3x3", (8, 64, 56, 56), (64, 64, 3, 3), kwargs={"padding": 1}),
    Shape("depthwise3x3", (8, 128, 56, 56), (128, 1, 3, 3), kwargs={"padding": 1, "groups": 128}),
    Shape("pointwise1x1", (8, 128, 28, 28), (256, 128, 1, 1), bias=True),
)
#: The same convolutions, small: a smoke test of the whole script (seconds on a CPU).
QUICK = (
    Shape("tutorial", (2, 3, 32, 32), (4, 3, 5, 5)),
    Shape("resnet3x3", (1, 16, 12, 12), (16, 16, 3, 3), kwargs={"padding": 1}),
    Shape("depthwise3x3", (1, 16, 12, 12), (16, 1, 3, 3), kwargs={"padding": 1, "groups": 16}),
    Shape("pointwise1x1", (1, 32, 7, 7), (64, 32, 1, 1), bias=True),
)


@dataclass(frozen=True)
class Target:
    """A framework and the device it computes on (a string for torch, a ``jax.Device`` for JAX)."""

    framework: str
    device: Any
    name: str

    @property
    def where(self) -> str:
        return f"{self.framework} on {self.name}"


# ------------------------------------------------------------------------------------------------ devices

def _torch_gpu() -> Target | None:
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    return Target("torch", "cuda:0", f"cuda:0 ({torch.cuda.get_device_name(0)})")


def _jax_gpu() -> Target | None:
    try:
        import jax
    except ImportError:
        return None
    try:
        gpus = jax.devices("gpu")
    except RuntimeError:  # no GPU backend in this jaxlib, or no device
        return None
    if not gpus:
        return None
    return Target("jax", gpus[0], f"{gpus[0].platform}:{gpus[0].id} ({gpus[0].device_kind})")


def _installed(framework: str) -> bool:
    try:
        __import__(framework)
    except ImportError:
        return False
    return True


def detect(cpu: bool = False, frameworks: Sequence[str] = FRAMEWORKS) -> list[Target]:
    """The targets to run: each framework's first GPU, or with ``cpu`` every installed framework on the CPU."""
    if cpu:
        found: list[Target] = []
        for fw in frameworks:
            if _installed(fw):
                found.append(Target(fw, _cpu_device(fw), "cpu"))
        return found
    probes: dict[str, Callable[[], Target | None]] = {"torch": _torch_gpu, "jax": _jax_gpu}
    return [t for t in (probes[fw]() for fw in frameworks) if t is not None]


def _cpu_device(framework: str) -> Any:
    if framework == "jax":
        import jax

        return jax.devices("cpu")[0]
    return "cpu"


# --------------------------------------------------------------------------------------------------- data

def _inputs(shape: Shape, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """float64 standard normal input, kernel and bias (the same values for every run of a shape)."""
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal(shape.x), rng.standard_normal(shape.w)
    b = rng.standard_normal(shape.w[0]) if shape.bias else None
    return x, w, b


def _as(a: np.ndarray | None, dtype: str) -> np.ndarray | None:
    if a is None:
        return None
    if dtype == "bfloat16":
        import ml_dtypes

        return a.astype(ml_dtypes.bfloat16)
    return a.astype(dtype)


def round_mantissa(a: np.ndarray, keep: int) -> np.ndarray:
    """float32 values rounded to ``keep`` explicit mantissa bits, to nearest even (TF32: 10, bfloat16: 7), as an
    accelerator rounds its inputs before a float32 accumulation.

    >>> round_mantissa(np.float32([1 + 2**-11, 1 + 3 * 2**-11]), 10).tolist() == [1.0, 1 + 2**-9]
    True
    """
    drop = 23 - keep
    bits = np.asarray(a, np.float32).view(np.uint32).astype(np.uint64)
    bits = bits + ((1 << (drop - 1)) - 1) + ((bits >> drop) & 1)
    return (bits & ~np.uint64((1 << drop) - 1)).astype(np.uint32).view(np.float32)


# ---------------------------------------------------------------------------------------------------- rows

def _row(target: str, device: str, dtype: str, policy: str, shape: Shape, report: Any, seconds: float,
         differs: str = "-") -> dict[str, Any]:
    """One table row from a ParityReport: its verdict, and the candidate's pair against the reference."""
    pair = next(p for p in report.pairs if p.b == "reference")
    return {
        "framework": target, "device": device, "dtype": dtype, "policy": policy, "shape": shape.name,
        "arguments": shape.describe(), "verdict": report.verdict, "label": report.verdict_label,
        "max_r": float(pair.max_ratio),
        "allowed_r": float(pair.allowed_ratio), "unit_roundoff": float(pair.unit_roundoff),
        "precision": report.precisions.get(pair.a, ""), "default_vs_highest": differs,
        "evidence": pair.evidence or pair.reason, "notes": list(report.notes), "seconds": round(seconds, 3),
    }


def _error_row(target: str, device: str, dtype: str, policy: str, shape: Shape, exc: BaseException) -> dict[str, Any]:
    return {"framework": target, "device": device, "dtype": dtype, "policy": policy, "shape": shape.name,
            "arguments": shape.describe(), "verdict": "error", "max_r": None, "allowed_r": None,
            "unit_roundoff": None, "precision": "", "default_vs_highest": "-",
            "evidence": f"{type(exc).__name__}: {exc}", "notes": [], "seconds": None}


def _recorded(target: Target, policy: str, x: Any, w: Any, b: Any, kwargs: dict) -> Any:
    """The :class:`convbridge.Precision` convbridge records for this run (what ``cb.compare`` judges it by)."""
    from convbridge import backends, dispatch
    from convbridge.ops import build
    from convbridge.plan import make_plan

    spec = build("conv", x, w, b, dict(kwargs))
    plan = make_plan(target.framework, x, precision=policy, device=target.device)
    native = dispatch.place(plan, (x, w, b))
    return backends.get(target.framework).precision(spec, plan, native[0])


def _framework_rows(target: Target, shape: Shape, progress: Callable[[str], None]) -> list[dict[str, Any]]:
    """The compared runs of one shape on one target, then the float32 default result judged twice."""
    import convbridge as cb

    x64, w64, b64 = _inputs(shape)
    rows, outputs, reports = [], {}, {}
    for dtype, policy in RUNS:
        x, w, b = _as(x64, dtype), _as(w64, dtype), _as(b64, dtype)
        start = time.perf_counter()
        try:
            report = cb.compare(x, w, b, backends=(target.framework,), precision=policy, device=target.device,
                                **shape.kwargs)
        except Exception as exc:  # noqa: BLE001 - a row says what went wrong; the suite goes on
            rows.append(_error_row(target.framework, target.name, dtype, policy, shape, exc))
            progress(f"{target.where} {dtype} {policy} {shape.name}: error: {exc}")
            continue
        outputs[(dtype, policy)], reports[(dtype, policy)] = report.outputs[target.framework], report
        rows.append(_row(target.framework, target.name, dtype, policy, shape, report, time.perf_counter() - start))
        progress(f"{target.where} {dtype} {policy} {shape.name}: {report.verdict} "
                 f"({time.perf_counter() - start:.2f} s)")
    pair = outputs.get(("float32", "default")), outputs.get(("float32", "highest"))
    if pair[0] is not None and pair[1] is not None:
        differs = "same" if np.array_equal(pair[0], pair[1]) else "differs"
        for row in rows:
            if row["dtype"] == "float32" and row["verdict"] != "error":
                row["default_vs_highest"] = differs
        rows += _judged_twice(target, shape, pair[0], differs, progress)
    return rows


def _judged_twice(target: Target, shape: Shape, y: np.ndarray, differs: str,
                  progress: Callable[[str], None]) -> list[dict[str, Any]]:
    """The float32 default result judged as strict float32, and with the precision convbridge records."""
    import convbridge as cb

    x, w, b = (_as(a, "float32") for a in _inputs(shape))
    rows = []
    try:
        recorded = _recorded(target, "default", x, w, b, shape.kwargs)
    except Exception as exc:  # noqa: BLE001 - recorded in the row
        return [_error_row(target.framework, target.name, "float32", RECORDED, shape, exc)]
    for policy, precision in ((STRICT, None), (RECORDED, recorded)):
        start = time.perf_counter()
        try:
            report = cb.verify(y, x, w, b, precision=precision, name=target.framework, **shape.kwargs)
        except Exception as exc:  # noqa: BLE001 - recorded in the row
            rows.append(_error_row(target.framework, target.name, "float32", policy, shape, exc))
            continue
        rows.append(_row(target.framework, target.name, "float32", policy, shape, report,
                         time.perf_counter() - start, differs))
        progress(f"{target.where} float32 {policy} {shape.name}: {report.verdict_label}")
    return rows


def _simulated_rows(shape: Shape, progress: Callable[[str], None]) -> list[dict[str, Any]]:
    """Host float32 convolutions of inputs rounded to TF32 / bfloat16 first, judged strictly and as what they are."""
    import convbridge as cb

    x, w, b = (_as(a, "float32") for a in _inputs(shape))
    assert x is not None and w is not None
    rows = []
    for fmt, keep in (("tf32", 10), ("bf16", 7)):
        start = time.perf_counter()
        try:
            y = cb.conv(round_mantissa(x, keep), round_mantissa(w, keep), b, backend="numpy", **shape.kwargs)
            for precision in (None, fmt):
                report = cb.verify(y, x, w, b, precision=precision, name=f"{fmt} inputs", **shape.kwargs)
                policy = f"{fmt} inputs, verify({precision!r})"
                rows.append(_row(SIMULATED, "cpu", "float32", policy, shape, report, time.perf_counter() - start))
                progress(f"{SIMULATED} {policy} {shape.name}: {report.verdict_label}")
        except Exception as exc:  # noqa: BLE001 - recorded in the row
            rows.append(_error_row(SIMULATED, "cpu", "float32", f"{fmt} inputs", shape, exc))
    return rows


def run_suite(targets: Sequence[Target], shapes: Sequence[Shape] = SHAPES,
              progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Every row: each target's compared and twice-judged runs per shape, then the host simulations."""
    say = progress or (lambda line: None)
    rows: list[dict[str, Any]] = []
    for target in targets:
        for shape in shapes:
            rows += _framework_rows(target, shape, say)
    for shape in shapes:
        rows += _simulated_rows(shape, say)
    return rows


# ------------------------------------------------------------------------------------------------- output

COLUMNS = ("framework", "dtype", "policy", "shape", "verdict", "max r / allowed", "precision recorded",
           "default vs highest")


def _cells(row: dict[str, Any]) -> tuple[str, ...]:
    ratio = "-" if row["max_r"] is None else f"{row['max_r']:.3g} / {row['allowed_r']:.4g}"
    verdict = row.get("label", row["verdict"]) if row["verdict"] != "error" else f"error: {row['evidence'][:60]}"
    return (row["framework"], row["dtype"], row["policy"], row["shape"], verdict, ratio, row["precision"],
            row["default_vs_highest"])


def table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as one aligned text table."""
    cells = [COLUMNS, *(_cells(r) for r in rows)]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(c, widths)).rstrip() for c in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _versions() -> dict[str, str]:
    import convbridge

    found = {"python": platform.python_version(), "numpy": np.__version__,
             "convbridge": getattr(convbridge, "__version__", "?")}
    for fw in FRAMEWORKS:
        if fw in sys.modules:
            found[fw] = getattr(sys.modules[fw], "__version__", "?")
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu", action="store_true", help="run the suite on the CPU (no GPU needed)")
    parser.add_argument("--quick", action="store_true", help="small shapes: a smoke test")
    parser.add_argument("--json", metavar="PATH", help="write the rows (and the devices, versions) as JSON")
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS),
                        help="comma-separated subset of torch,jax (default: both)")
    args = parser.parse_args(argv)
    frameworks = tuple(f.strip() for f in args.frameworks.split(",") if f.strip())
    unknown = sorted(set(frameworks) - set(FRAMEWORKS))
    if unknown:
        parser.error(f"unknown framework(s) {', '.join(unknown)}; choose from {', '.join(FRAMEWORKS)}")
    targets = detect(cpu=args.cpu, frameworks=frameworks)
    if not targets:
        print(NO_GPU if not args.cpu else f"none of {', '.join(frameworks)} is installed: nothing to run")
        return 0
    shapes = QUICK if args.quick else SHAPES
    runs = len(targets) * len(shapes) * (len(RUNS) + 2) + len(shapes) * 4
    print(f"running {runs} judged results on {', '.join(t.where for t in targets)} "
          f"({'quick' if args.quick else 'full'} shapes)", file=sys.stderr, flush=True)
    count = [0]

    def progress(line: str) -> None:
        count[0] += 1
        print(f"[{count[0]:>3}/{runs}] {line}", file=sys.stderr, flush=True)

    rows = run_suite(targets, shapes, progress)
    print(table(rows))
    if args.json:
        doc = {"devices": [t.where for t in targets], "cpu": args.cpu, "quick": args.quick,
               "versions": _versions(), "rows": rows}
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
    return 1 if any(r["verdict"] == "error" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
