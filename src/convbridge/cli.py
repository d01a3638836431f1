"""The ``convbridge`` command: a thin layer over the public API.

``convbridge compare`` with no arguments runs the tutorial experiment: 32 images,
4 random 5x5 filters, torch vs JAX, then says what the tutorial could not: whether
the two agree up to floating-point rounding, and where they differ most.

Every command ends with one of the exit statuses in :data:`EXIT_CODES`; bad arguments or data
are a one-line error (or, with ``--format json``, one strict JSON error object on stdout),
never a traceback; Ctrl-C ends the run with status 130 and leaves nothing half-written.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from convbridge import interrupts
from convbridge._types import PaddingLike
from convbridge.errors import ConvBridgeError

if TYPE_CHECKING:
    import numpy as np
    from rich.console import Console
    from rich.table import Table

    from convbridge.data import Dataset
    from convbridge.experiment import Aggregate, ExperimentConfig, ExperimentResult
    from convbridge.parity import ParityReport

CONTEXT = dict(help_option_names=["-h", "--help"], max_content_width=100)

#: The exit status of every command, by outcome.
EXIT_CODES = {"identical": 0, "equivalent": 0, "mismatch": 1, "usage": 2, "inconclusive": 3, "internal": 70,
              "interrupted": interrupts.EXIT_INTERRUPTED}
EXIT_HELP = ("Exit status: 0 identical or equivalent (or success), 1 mismatch, 2 bad arguments or data, "
             "3 inconclusive, 70 an internal error (a bug: please report it), 130 interrupted.")

CALLS = {
    "torch": "torch.nn.functional.conv2d",
    "jax": "jax.lax.conv_general_dilated",
    "numpy": "convbridge NumPy reference (einsum, input dtype)",
}


def _console(stderr: bool = False) -> Console:
    from rich.console import Console

    con = Console(stderr=stderr, highlight=False, soft_wrap=True)  # a number is never split across lines
    if not con.is_terminal:
        con.width = 120  # pipes and CI logs: no terminal width to respect, keep tables readable
    return con


def _ints(text: str, name: str) -> int | tuple[int, ...]:
    """'2' -> 2; '1,2' -> (1, 2). Values are validated by the spec, not here."""
    try:
        parts = [int(p) for p in text.split(",")]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not an int or comma-separated ints, e.g. 2 or 1,2",
                                 param_hint=name) from None
    return parts[0] if len(parts) == 1 else tuple(parts)


def _padding(text: str) -> PaddingLike:
    """'valid' | 'same' | 'same_lower' | '1' | '1,2' | '1:2,0:1' (lo:hi per dim)."""
    if not any(ch.isdigit() for ch in text):
        return text
    try:
        if ":" in text:
            pairs = [tuple(int(v) for v in pair.split(":")) for pair in text.split(",")]
            if any(len(p) != 2 for p in pairs):
                raise ValueError(text)
            return tuple((p[0], p[1]) for p in pairs)
        return _ints(text, "--padding")
    except ValueError:
        raise click.BadParameter(f"{text!r}: use valid, same, same_lower, an int, ints like 1,2, "
                                 "or lo:hi pairs like 1:2,0:1", param_hint="--padding") from None


def _wants_json(argv: Sequence[str]) -> bool:
    """Whether the command line asks for --format json (the value of another option, as in
    ``--out --format``, does not count)."""
    takes_value = {name for command in main.commands.values() for p in command.params
                   if isinstance(p, click.Option) and not p.is_flag for name in p.opts}
    i = 0
    while i < len(argv):
        if argv[i] == "--format=json" or argv[i] == "--format" and argv[i + 1:i + 2] == ["json"]:
            return True
        if argv[i] == "--":
            break
        i += 2 if argv[i] in takes_value else 1
    return False


def _error_json(kind: str, message: str, code: int) -> str:
    from convbridge.reportdir import strict_json

    return strict_json({"error": {"type": kind, "message": message, "exit_code": code}}, indent=2)


class _Command(click.Group):
    """The ``convbridge`` group: every outcome becomes an exit status and one message, never a traceback."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        try:
            rv = super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
            code = rv if isinstance(rv, int) else 0
        except click.exceptions.Abort:
            code = _fail(argv, "Interrupted", "interrupted", EXIT_CODES["interrupted"])
        except KeyboardInterrupt:
            code = _fail(argv, "Interrupted", "interrupted", EXIT_CODES["interrupted"])
        except click.ClickException as exc:
            code = _fail(argv, "UsageError", exc.format_message(), EXIT_CODES["usage"], click_error=exc)
        except ConvBridgeError as exc:
            code = _fail(argv, type(exc).__name__, str(exc), EXIT_CODES["usage"])
        except Exception as exc:  # a bug: one line, and the traceback only on request
            if os.environ.get("CONVBRIDGE_DEBUG"):
                raise
            code = _fail(argv, "InternalError", f"{type(exc).__name__}: {exc} (a bug in convbridge: please report "
                         "it; CONVBRIDGE_DEBUG=1 shows the traceback)", EXIT_CODES["internal"])
        if standalone_mode:
            sys.exit(code)
        return code


def _fail(argv: Sequence[str], kind: str, message: str, code: int,
          click_error: click.ClickException | None = None) -> int:
    """Say what went wrong once: a JSON error object on stdout with --format json, else a line on stderr."""
    if _wants_json(argv):
        with interrupts.critical():  # this error object, or the interrupt's: one JSON object either way
            interrupts.report_on_stdout(None)
            click.echo(_error_json(kind, message, code))
    elif click_error is not None:
        click_error.show()
    else:
        _console(stderr=True).print(f"[bold red]error:[/] {message}", markup=True, highlight=False)
    return code


@click.group(cls=_Command, context_settings=CONTEXT, epilog=EXIT_HELP)
@click.version_option(package_name="convbridge")
def main() -> None:
    """convbridge: one convolution, the same meaning in PyTorch, JAX and NumPy, proven numerically."""


def run() -> None:
    """The ``convbridge`` program: Ctrl-C handled (status 130, nothing half-written), then the command."""
    interrupts.install()
    if _wants_json(sys.argv[1:]):  # Ctrl-C still prints one JSON object
        interrupts.report_on_stdout(_error_json("Interrupted", "interrupted", EXIT_CODES["interrupted"]))
    else:  # __main__'s early guess saw a --format json that is another option's value
        interrupts.report_on_stdout(None)
    main(prog_name="convbridge")


@main.command(context_settings=CONTEXT, epilog=EXIT_HELP)
@click.option("--data", default="auto", show_default=True,
              help="auto (CIFAR-10 if found, else the embedded sample), cifar10, sample, or a path: a .npy/.npz "
                   "array (used at its own size) or a folder of PNG/JPEG images (centre-cropped and resized to "
                   "32x32).")
@click.option("--root", type=click.Path(file_okay=True), default=None,
              help="Folder with cifar-10-python.tar.gz or cifar-10-batches-py/.")
@click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True)
@click.option("--download", is_flag=True, help="Fetch CIFAR-10 (163 MB) if it is not found.")
@click.option("--data-layout", type=click.Choice(["auto", "NHWC", "NCHW"]), default="auto", show_default=True,
              help="Axes of a --data array: (N, H, W, C) or (N, C, H, W), 1 or 3 channels, or grey (N, H, W); auto "
                   "reads them from the shape and asks when both fit.")
@click.option("--data-scale", type=click.Choice(["auto", "uint8", "unit", "normalized"]), default="auto",
              show_default=True,
              help="Values of a --data array: uint8 (0..255, or floats k/255), unit (floats in [0, 1], then "
                   "Normalize(0.5, 0.5)), normalized (used as they are); auto: integers as uint8, floats by "
                   "their range.")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--filters", "filters", type=int, default=4, show_default=True, help="Number of random filters.")
@click.option("--kernel-size", type=int, default=5, show_default=True)
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=42, show_default=True,
              help="jax.random.PRNGKey seed of the filters.")
@click.option("--stride", default="1", show_default=True, help="An int or per-dim ints such as 1,2.")
@click.option("--padding", default="valid", show_default=True,
              help="valid, same, same_lower, an int, ints like 1,2, or lo:hi pairs like 1:2,0:1.")
@click.option("--dilation", default="1", show_default=True)
@click.option("--groups", type=int, default=1, show_default=True)
@click.option("--layout", type=click.Choice(["NCHW", "NHWC"]), default="NCHW", show_default=True)
@click.option("--backends", default="torch,jax", show_default=True,
              help="Comma-separated, two or more of torch, jax, numpy (one is compared with the reference).")
@click.option("--image-index", type=int, default=0, show_default=True, help="Image shown in the figures.")
@click.option("--channel", type=int, default=0, show_default=True, help="Output channel shown in the figures.")
@click.option("--no-plots", is_flag=True, help="Skip the figures and the interactive view that comes with them (the "
              "HTML report is still written).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="json: a machine-readable report on stdout.")
@click.option("--all", "run_all", is_flag=True, help="Also run the whole split batch by batch, with aggregates.")
@click.option("--out", type=click.Path(), default="convbridge-report", show_default=True,
              help="Folder for the figures and index.html: a new or empty folder, or a previous report.")
@click.option("--memory-limit", default=None,
              help="Refuse work that would need more memory: 8GiB, 500MB, 50% (of what is available). Default: "
                   "$CONVBRIDGE_MEMORY_LIMIT, else half of the available memory.")
@click.option("--exact", is_flag=True,
              help="Also run the conv on integer data of the same shapes, where every partial sum is exact: any "
                   "difference is then a bug.")
@click.option("--rerun", type=click.Choice(["auto", "always", "never"]), default="auto", show_default=True,
              help="Re-run in float64 when a result lies between the probabilistic threshold and the rigorous "
                   "bound (auto), always, or never.")
@click.option("--dtype", type=click.Choice(["float32", "float16", "bfloat16", "float64"]), default="float32",
              show_default=True, help="The dtype the images and filters are cast to; each framework computes in it, "
                                      "and the verdict uses its unit roundoff.")
@click.option("--precision", type=click.Choice(["highest", "high", "default"]), default="highest", show_default=True,
              help="The precision policy (lax.Precision; cuDNN/matmul TF32 switches): on a GPU or TPU, below "
                   "highest rounds float32 inputs to TF32 or bf16 passes, and the verdict then says 'equivalent "
                   "under TF32'. CPUs compute in the dtype.")
@click.option("--devices", default=None, metavar="N|all",
              help="Split every batch of the jax backend along N over this many JAX devices (all: every one; on a "
                   "CPU, one per core). On a CPU, N devices need XLA_FLAGS=--xla_force_host_platform_device_count=N "
                   "before JAX starts: convbridge sets it itself (JAX starts after it). --batch-size must be a "
                   "multiple of N.")
@click.option("--coordinator", default=None, envvar="CONVBRIDGE_COORDINATOR", metavar="HOST:PORT",
              help="Multi-process run (with --all): process 0's address; start the same command on every process, "
                   "each with its own --process-id (jax.distributed.initialize). Each process judges its share of "
                   "the split on its own devices; process 0 writes the report. Also $CONVBRIDGE_COORDINATOR.")
@click.option("--num-processes", type=click.IntRange(min=1), default=None, envvar="CONVBRIDGE_NUM_PROCESSES",
              help="The number of processes of a multi-process run. Also $CONVBRIDGE_NUM_PROCESSES.")
@click.option("--process-id", type=click.IntRange(min=0), default=None, envvar="CONVBRIDGE_PROCESS_ID",
              help="This process's id, 0..N-1 (0 writes the report). Also $CONVBRIDGE_PROCESS_ID.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=60.0, show_default=True,
              envvar="CONVBRIDGE_TIMEOUT",
              help="Multi-process run: the longest wait, in seconds, for the other processes at each meeting point "
                   "(joining, the settings check, the final statistics); past it the process ends with status 2 "
                   "and says so. Also $CONVBRIDGE_TIMEOUT.")
def compare(**opts: Any) -> int:
    """Run the tutorial experiment: the same conv in several frameworks, judged by the rounding bound.

    With no arguments: the first 32 CIFAR-10 test images (or the embedded sample), 4 filters from
    jax.random.normal(PRNGKey(42), (4, 3, 5, 5)), torch.nn.functional.conv2d vs
    jax.lax.conv_general_dilated with ('NCHW', 'OIHW', 'NCHW'), valid padding.

    --out must be a new or empty folder, or a previous report (replacing it touches only its own files).
    With --format json, stdout holds one strict JSON object (non-finite numbers as "inf", "-inf", "nan"),
    an {"error": ...} object on failure.

    With --devices N the jax backend computes every batch split along N over N devices (jax.sharding); with
    --coordinator, --num-processes and --process-id (and --all), several processes share the split, each on its own
    devices, and process 0 writes the report of the whole split (docs/sharding.md).
    """
    from convbridge import memory

    with memory.limit(opts["memory_limit"]) if opts["memory_limit"] is not None else contextlib.nullcontext():
        return _compare(opts)


_RERUN: dict[str, bool | str] = {"auto": "auto", "always": True, "never": False}


def _config(opts: dict[str, Any], devices: int | None = None) -> ExperimentConfig:
    from convbridge.experiment import ExperimentConfig

    backends = tuple(b.strip() for b in opts["backends"].split(",") if b.strip())
    return ExperimentConfig(
        data=opts["data"], root=opts["root"], split=opts["split"], download=opts["download"],
        data_layout=opts["data_layout"], data_scale=opts["data_scale"],
        batch_size=opts["batch_size"], filters=opts["filters"], kernel_size=opts["kernel_size"], seed=opts["seed"],
        stride=_ints(opts["stride"], "--stride"), padding=_padding(opts["padding"]),
        dilation=_ints(opts["dilation"], "--dilation"), groups=opts["groups"], layout=opts["layout"],
        backends=backends, image_index=opts["image_index"], channel=opts["channel"], exact=opts["exact"],
        rerun=_RERUN[opts["rerun"]], dtype=opts["dtype"], precision=opts["precision"], devices=devices,
    )


#: The most devices --devices may ask for (XLA would try to create each of them, on a CPU at any count).
MAX_DEVICES = 1024


def _device_count(text: str) -> int | str:
    """'all' or a positive int up to :data:`MAX_DEVICES` (--devices)."""
    if text.strip().lower() == "all":
        return "all"
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise click.BadParameter(f"{text!r}: give a number of devices such as 2, or all", param_hint="--devices")
    if count > MAX_DEVICES:
        raise click.BadParameter(f"{count} devices is more than convbridge splits a batch over (at most "
                                 f"{MAX_DEVICES}); give the number of devices the machine has, or all",
                                 param_hint="--devices")
    return count


_PROCESS_OPTIONS = {"coordinator": "--coordinator", "num_processes": "--num-processes", "process_id": "--process-id"}


def _start_devices(opts: dict[str, Any]) -> tuple[int | None, tuple[int, int]]:
    """Start JAX's devices (and join the other processes) before anything imports JAX: the device count for
    --devices (None without it) and this process's (index, count)."""
    given = [flag for key, flag in _PROCESS_OPTIONS.items() if opts.get(key) is not None]
    if opts.get("devices") is None and not given:
        return None, (0, 1)
    if given and len(given) < len(_PROCESS_OPTIONS):
        missing = [flag for flag in _PROCESS_OPTIONS.values() if flag not in given]
        raise click.UsageError(f"a multi-process run needs {', '.join(_PROCESS_OPTIONS.values())}; missing "
                               f"{', '.join(missing)}")
    if given and not opts["run_all"]:
        raise click.UsageError("the processes share the whole split between them: add --all")
    from convbridge import sharding

    count = _device_count(opts.get("devices") or "all")
    if not given:
        return len(sharding.start(count)), (0, 1)
    seconds, where, n = opts["timeout"], opts["coordinator"], opts["num_processes"]
    _console(stderr=True).print(f"waiting up to {seconds:g} s for {n} processes at {where} (this is process "
                                f"{opts['process_id']})", markup=False, highlight=False)
    stuck = (f"waited {seconds:g} s for {n} processes at {where} (this is process {opts['process_id']}), and not "
             f"all of them joined: start the same command on every process, with the same --coordinator and "
             f"--num-processes and each its own --process-id 0..{n - 1}, check that {where} is reachable from here "
             "and its port free, or wait longer with --timeout")
    with _deadline(seconds, opts["fmt"], stuck):  # XLA's own end of a stuck start is a fatal abort, minutes later
        devices = sharding.start(count, coordinator=where, num_processes=n, process_id=opts["process_id"],
                                 timeout=seconds + 30)
    import jax

    return len(devices), (jax.process_index(), jax.process_count())


@contextlib.contextmanager
def _deadline(seconds: float, fmt: str, message: str) -> Iterator[None]:
    """End the process with status 2 and ``message`` (one JSON error object on stdout with --format json, else an
    ``error:`` line on stderr) unless the block finishes within ``seconds``: a multi-process run waiting for a
    process that never comes would otherwise hang until XLA aborts it."""
    try:
        out = os.dup(1)  # the real stdout, even while the collectives send file descriptor 1 to stderr
    except OSError:
        out = 2

    def expire() -> None:
        try:
            if fmt == "json":
                os.write(out, (_error_json("TimeoutError", message, EXIT_CODES["usage"]) + "\n").encode())
            else:
                os.write(2, f"error: {message}\n".encode())
        finally:
            os._exit(EXIT_CODES["usage"])

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        if out != 2:
            os.close(out)


#: The options every process of a multi-process run must share (all but --process-id and the outputs).
_SHARED = ("data", "root", "split", "data_layout", "data_scale", "batch_size", "filters", "kernel_size", "seed",
           "stride", "padding", "dilation", "groups", "layout", "backends", "dtype", "precision", "rerun", "devices",
           "coordinator", "num_processes")


def _same_settings(opts: dict[str, Any], devices: int | None, part: tuple[int, int], problem: str | None) -> None:
    """Exchange the settings that must match between the processes, and refuse (in every process) a run whose
    processes differ, or whose process 0 cannot write its report (``problem``)."""
    import json

    from convbridge import sharding

    mine = {key: opts.get(key) for key in _SHARED}
    mine["devices"], mine["problem"] = devices, problem
    stuck = (f"waited {opts['timeout']:g} s for the other processes to check their settings (this is process "
             f"{part[0]} of {part[1]}): one of them stopped; see its output, or wait longer with --timeout")
    with _deadline(opts["timeout"], opts["fmt"], stuck):
        everyone = [json.loads(b) for b in sharding.gather_processes(json.dumps(mine, sort_keys=True).encode())]
    differ = [f"--{key.replace('_', '-')} (" + ", ".join(f"process {i}: {all_[key]}" for i, all_ in
                                                           enumerate(everyone)) + ")"
              for key in _SHARED if len({json.dumps(all_.get(key)) for all_ in everyone}) > 1]
    if differ:
        raise click.UsageError(f"the {len(everyone)} processes were started with different settings: "
                               f"{'; '.join(differ)}; start every process with the same options (only --process-id "
                               "differs), or their statistics would not add up to one run")
    if everyone[0].get("problem") and part[0] != 0:
        raise click.UsageError(f"process 0 cannot write the report: {everyone[0]['problem']}")


def _compare(opts: dict[str, Any]) -> int:
    from convbridge import experiment
    from convbridge.reportdir import REPORT_FILES, check_out_dir, write_report

    asked = None if opts.get("devices") is None else _device_count(opts["devices"])
    experiment.check_config(_config(opts, asked if isinstance(asked, int) else None))  # before JAX starts
    devices, part = _start_devices(opts)
    cfg = _config(opts, devices)
    experiment.check_config(cfg)
    if part[1] > 1:  # every process learns whether the others run the same experiment, and can write its report
        problem = None
        if part[0] == 0:
            try:
                check_out_dir(opts["out"], will_write=REPORT_FILES)
            except click.ClickException as exc:
                problem = exc.format_message()
        _same_settings(opts, devices, part, problem)
    if part[0] == 0:  # only process 0 writes
        check_out_dir(opts["out"], will_write=REPORT_FILES)  # before any work
    out = Path(opts["out"]).expanduser()
    err = _console(stderr=True)
    notice = (lambda msg: err.print(f"note: {msg}", markup=False))
    t0 = time.perf_counter()
    dataset = experiment.load_images(cfg, notice, progress=True)
    if part[0] != 0:
        return _share(cfg, dataset, part, opts["fmt"], err, notice, opts["timeout"])
    result = experiment.run_experiment(cfg, dataset=dataset, notice=notice)
    if opts["run_all"]:
        result.aggregate = _run_all(cfg, dataset, result.kernel, err, part, opts["timeout"], opts["fmt"])
    summary = _summary(result, time.perf_counter() - t0)
    summary["devices"], summary["num_processes"] = cfg.devices, part[1]  # None: the jax backend's default device
    summary["exit_code"] = EXIT_CODES[summary["verdict"]]
    files = write_report(result, out, plots=not opts["no_plots"], extra=summary)
    summary["files"] = [str(f) for f in files]
    if opts["fmt"] == "json":
        from convbridge.reportdir import strict_json

        text = strict_json(summary, indent=2)
        with interrupts.critical():  # the report, or the interrupt's error object: one JSON object either way
            interrupts.report_on_stdout(None)
            click.echo(text)
    else:
        _print_text(result, summary, out)
    interrupts.finished()  # the report is out: a Ctrl-C now must not turn its exit status into 130
    return int(summary["exit_code"])


def _run_all(cfg: ExperimentConfig, dataset: Dataset, kernel: np.ndarray, err: Console,
             part: tuple[int, int] = (0, 1), timeout: float = 60.0, fmt: str = "text") -> Aggregate:
    """Every batch of this process's share of the split, with a progress bar; in a multi-process run, the
    aggregate of every process's share (gathered in each)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from convbridge import experiment

    label = "whole split" + (f" on {cfg.devices} devices" if cfg.devices else "") + \
        (f", process {part[0]} of {part[1]}" if part[1] > 1 else "")
    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err, transient=False) as bar:
        task = bar.add_task("images", total=experiment.part_size(dataset, cfg.batch_size, part))
        agg = experiment.run_all(cfg, dataset, kernel, on_batch=lambda n: bar.advance(task, n), part=part)
    if part[1] == 1:
        return agg
    import json

    from convbridge import sharding

    stuck = (f"waited {timeout:g} s at the end of the split for the other processes' statistics (this is process "
             f"{part[0]} of {part[1]}): one of them stopped, or is that much slower; see its output, or wait longer "
             "with --timeout")
    with _deadline(timeout, fmt, stuck):
        shares = [json.loads(b) for b in sharding.gather_processes(json.dumps(agg.to_dict()).encode())]
    total = experiment.Aggregate.from_dict(shares[0])
    for share in shares[1:]:
        total.merge(experiment.Aggregate.from_dict(share))
    return total


def _share(cfg: ExperimentConfig, dataset: Dataset, part: tuple[int, int], fmt: str, err: Console,
           notice: Any, timeout: float = 60.0) -> int:
    """A process other than 0 of a multi-process run: judge its share of the split, hand the statistics to every
    process, and say the verdict of the whole split (process 0 writes the report)."""
    from convbridge import experiment

    kernel, _ = experiment.make_filters(cfg.seed, experiment.filter_shape(cfg), notice)
    agg = _run_all(cfg, dataset, kernel, err, part, timeout, fmt)
    code = EXIT_CODES[agg.verdict]
    if fmt == "json":
        from convbridge.reportdir import strict_json

        text = strict_json({"process_id": part[0], "num_processes": part[1], "devices": cfg.devices,
                            "verdict": agg.verdict,
                            "exit_code": code, "all": agg.to_dict()}, indent=2)
        with interrupts.critical():
            interrupts.report_on_stdout(None)
            click.echo(text)
    else:
        err.print(f"process {part[0]} of {part[1]}: whole split {agg.verdict} ({agg.images} images in "
                  f"{agg.batches} batches); process 0 writes the report", markup=False, highlight=False)
    interrupts.finished()
    return code


def _kernel_fact(result: ExperimentResult) -> str:
    """The kernel as the backends received it: its shape in the run's kernel layout, and the run's dtype."""
    from convbridge.spec import permutation, resolve_layout

    cfg = result.config
    lay = resolve_layout(None if cfg.layout == "NCHW" else cfg.layout, 4, 4)
    shape = tuple(result.kernel.shape[i] for i in permutation("OIHW", lay.rhs))
    return f"{shape} {result.x.dtype} ({lay.rhs}) = {result.kernel_source}"


def _summary(result: ExperimentResult, seconds: float) -> dict[str, Any]:
    from convbridge.parity import worst_verdict

    rep, cfg = result.report, result.config
    names = list(cfg.backends)
    first = rep.pair(names[0], names[1]) if len(names) > 1 else rep.pair(names[0], "reference")
    worst = max(rep.pairs, key=lambda p: p.max_ratio / p.allowed_ratio if p.allowed_ratio else 0.0)
    facts = {
        "data": f"{result.dataset.source}, split {cfg.split}" if "CIFAR" in result.dataset.source
        else result.dataset.source,
        "images": f"{tuple(result.x.shape)} {result.x.dtype}",
        "labels": f"{tuple(result.dataset.labels.shape)} {result.dataset.labels.dtype}",
        "kernel": _kernel_fact(result),
    }
    for n in names:
        facts[f"{n} output"] = f"{tuple(result.outputs[n].shape)} {result.outputs[n].dtype} ({CALLS[n]})"
    facts[f"max |{first.a} - {first.b}|"] = f"{first.max_abs:.4g}"
    facts["array_equiv"] = str(first.array_equiv)
    verdict = worst_verdict([rep.verdict] + ([result.aggregate.verdict] if result.aggregate else [])
                            + ([result.exact.verdict] if result.exact else []))
    return {
        "facts": facts,
        "shapes": {"images": list(result.x.shape), "labels": list(result.dataset.labels.shape),
                   "kernel": list(result.kernel.shape),
                   **{n: list(result.outputs[n].shape) for n in names}},
        "dtypes": {"images": str(result.x.dtype), "labels": str(result.dataset.labels.dtype),
                   "kernel": str(result.kernel.dtype), **{n: str(result.outputs[n].dtype) for n in names}},
        "class_names": [result.dataset.class_names[k] for k in result.dataset.labels],
        "max_abs_diff": first.max_abs, "array_equiv": first.array_equiv, "compared": [first.a, first.b],
        "verdict": verdict,
        "verdict_label": rep.verdict_label if verdict == rep.verdict else verdict,
        "worst": {"pair": f"{worst.a} vs {worst.b}", "ratio": worst.max_ratio, "allowed": worst.allowed_ratio,
                  "index": list(worst.worst_index)},
        "precision": dict(rep.precisions), "unit_roundoff": rep.unit_roundoff,
        "timings_ms": {k: v * 1e3 for k, v in result.timings.items()},
        "report": rep.to_dict(),
        "exact": result.exact.to_dict() if result.exact else None,
        "all": result.aggregate.to_dict() if result.aggregate else None,
        "seconds": seconds,
    }


def _print_text(result: ExperimentResult, summary: dict[str, Any], out: Path) -> None:
    from rich.table import Table

    con = _console()
    facts = Table(title="The experiment", show_header=False, title_justify="left")
    for k, v in summary["facts"].items():
        facts.add_row(k, v)
    for k, v in summary["timings_ms"].items():
        facts.add_row(f"{k} time", f"{v:.3g} ms (median)")
    con.print(facts)
    con.print(_pairs_table(result.report))
    for p in result.report.pairs:
        con.print(f"  {p.a} vs {p.b}: {p.label}, {p.evidence or p.reason}", markup=False)
    if result.exact is not None:
        con.print(f"exact mode (integer data, every partial sum exact): [bold]{result.exact.verdict}[/]")
        for p in result.exact.pairs:
            con.print(f"  {p.a} vs {p.b}: {p.verdict}, {p.evidence}", markup=False)
    a, b = summary["compared"]
    pair = result.report.pair(a, b)
    con.print(f"{a} vs {b}: [bold]{pair.label}[/]" + (" (bitwise equal)" if pair.verdict == "identical" else
              f" (max r {pair.max_ratio:.3g}, allowed {pair.allowed_ratio:.4g})"))
    w = summary["worst"]
    style = {"identical": "green", "equivalent": "green", "inconclusive": "yellow"}.get(summary["verdict"], "red")
    con.print(f"verdict: [bold {style}]{summary['verdict_label']}[/] - worst r = {w['ratio']:.3g} "
              f"(allowed {w['allowed']:.4g}) at index {tuple(w['index'])} for {w['pair']}; "
              f"unit roundoff u = {summary['unit_roundoff']:.3g}")
    for name, label in summary["precision"].items():
        con.print(f"  precision {name}: {label}")
    if summary["all"]:
        _print_all(con, summary["all"])
    con.print(f"report: {out / 'index.html'} ({len(summary['files'])} files) in {summary['seconds']:.1f} s")


def _pairs_table(rep: ParityReport) -> Table:
    from rich.table import Table

    t = Table(title=f"Rounding-bound check (K = {rep.terms} terms per element)", title_justify="left")
    for col in ("pair", "max abs", "max rel", "array_equiv", "max r", "allowed r", "worst index", "verdict"):
        t.add_column(col)
    for p in rep.pairs:
        t.add_row(f"{p.a} vs {p.b}", f"{p.max_abs:.3g}", f"{p.max_rel:.3g}", str(p.array_equiv),
                  f"{p.max_ratio:.3g}", f"{p.allowed_ratio:.4g}", str(p.worst_index) if p.max_ratio else "-",
                  p.label)
    return t


def _print_all(con: Console, agg: dict[str, Any]) -> None:
    from rich.table import Table

    t = Table(title=f"Whole split: {agg['images']} images in {agg['batches']} batches, "
                    f"{agg['elements']} output elements", title_justify="left")
    for col in ("pair", "worst r", "allowed r", "non-identical elements", "verdict"):
        t.add_column(col)
    for k, v in agg["pairs"].items():
        t.add_row(k, f"{v['max_ratio']:.3g}", f"{v['allowed_ratio']:.4g}", str(v["non_identical_elements"]),
                  v["verdict"])
    con.print(t)
    times = ", ".join(f"{k} {v:.3f} s" for k, v in agg["seconds_per_backend"].items())
    con.print(f"conv time per backend over the split: {times}")


def _shape(text: str, name: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split("," if "," in text else "x"))
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a shape; write e.g. 32,3,32,32", param_hint=name) from None


@main.command(context_settings=CONTEXT, epilog=EXIT_HELP)
@click.argument("input_shape")
@click.option("--kernel", "kernel_shape", default=None,
              help="Kernel shape, e.g. 4,3,5,5 (OIHW by default; with --op conv_transpose torch's IOHW, "
                   "(C_in, C_out/groups, *k)).")
@click.option("--layer", default=None,
              help="A torch layer instead of --kernel, e.g. \"Conv2d(3, 4, 5)\" or \"ConvTranspose2d(64, 32, 4, "
                   "stride=2, padding=1)\"; other options must agree with it.")
@click.option("--op", type=click.Choice(["conv", "conv_transpose"]), default=None,
              help="conv (default) or conv_transpose (torch's convention, the gradient of conv); a --layer sets it.")
@click.option("--stride", default="1", show_default=True)
@click.option("--padding", default="0", show_default=True,
              help="valid, same, same_lower, an int, ints like 1,2, or lo:hi pairs like 1:2,0:1.")
@click.option("--output-padding", default="0", show_default=True,
              help="conv_transpose only: rows added on the high side, an int or ints like 1,0.")
@click.option("--dilation", default="1", show_default=True)
@click.option("--groups", type=int, default=1, show_default=True)
@click.option("--padding-mode", type=click.Choice(["zeros", "reflect", "replicate", "circular"]), default="zeros",
              show_default=True)
@click.option("--layout", default=None, help="Input layout such as NHWC, or a full NHWC,HWIO->NHWC.")
@click.option("--bias", is_flag=True, help="The convolution adds a bias.")
@click.option("--draw", "draw", type=click.Path(), default=None,
              help="Folder to write the pictures into (im2col product, Toeplitz matrix, sliding-window GIFs): a new "
                   "or empty folder, or one convbridge wrote before (only its own files are replaced).")
@click.option("--max-frames", type=click.IntRange(min=1), default=60, show_default=True,
              help="The most frames per GIF (evenly spaced steps when there are more).")
def explain(input_shape: str, kernel_shape: str | None, layer: str | None, op: str | None, stride: str,
            padding: str, output_padding: str, dilation: str, groups: int, padding_mode: str, layout: str | None,
            bias: bool, draw: str | None, max_frames: int) -> int:
    """Explain a convolution or a transposed convolution: output-size arithmetic, matmul view, and the equivalent
    call in every framework.

    INPUT_SHAPE is the input's shape, e.g. 32,3,32,32. Examples: convbridge explain 32,3,32,32 --kernel 4,3,5,5;
    convbridge explain 8,64,16,16 --layer "ConvTranspose2d(64, 32, 4, stride=2, padding=1, output_padding=1)"
    """
    kwargs: dict[str, Any] = {} if op is None else {"op": op}
    if layer is None or stride != "1":  # with a layer, only what the command line changes (the rest must agree)
        kwargs["stride"] = _ints(stride, "--stride")
    if layer is None or padding != "0":
        kwargs["padding"] = _padding(padding)
    if layer is None or dilation != "1":
        kwargs["dilation"] = _ints(dilation, "--dilation")
    if layer is None or groups != 1:
        kwargs["groups"] = groups
    if padding_mode != "zeros" or layer is None and op != "conv_transpose":
        kwargs["padding_mode"] = padding_mode
    if output_padding != "0" or layer is None and op == "conv_transpose":
        kwargs["output_padding"] = _ints(output_padding, "--output-padding")
    if layout:
        kwargs["layout"] = layout
    _explain(input_shape, kernel_shape, layer, bias, kwargs, draw, max_frames)
    return 0


def _explain(input_shape: str, kernel_shape: str | None, layer: str | None, bias: bool, kwargs: dict[str, Any],
             draw: str | None, max_frames: int) -> None:
    import convbridge as cb

    kernel = None if kernel_shape is None else _shape(kernel_shape, "--kernel")
    e = cb.explain(_shape(input_shape, "INPUT_SHAPE"), kernel, layer=layer, bias=bias or None, **kwargs)
    if draw is None:
        click.echo(str(e))
        return
    from convbridge.explain import Explanation
    from convbridge.reportdir import check_out_dir, write_folder
    from convbridge.viz.explanation import DRAWINGS, draw_explanation

    if not isinstance(e, Explanation):
        raise click.BadParameter(f"the pictures draw convolutions, not transposed ones; {_adjoint_hint(e.spec)}",
                                 param_hint="--draw")
    check_out_dir(draw, "--draw", DRAWINGS)  # before any drawing
    click.echo(str(e))
    conv = e
    for path in write_folder(draw, lambda tmp: draw_explanation(conv, tmp, max_frames=max_frames), flag="--draw",
                             will_write=DRAWINGS):
        click.echo(f"wrote {path}")


def _adjoint_hint(spec: object) -> str:
    """The command that draws the convolution a transposed one is the gradient of (its GIF animates the scatter)."""
    from convbridge.spec import ConvTransposeSpec

    if not isinstance(spec, ConvTransposeSpec):  # pragma: no cover - only transposed explanations get here
        return ""
    try:
        conv = spec.adjoint()
    except ConvBridgeError:
        return "and its output_padding exceeds its high crop, so no convolution has it as its gradient"
    x = (conv.batch, conv.in_channels, *conv.in_spatial)[0 if spec.layout.batched else 1:]  # the transposed output
    w = (conv.out_channels, conv.in_channels // conv.groups, *conv.kernel_spatial)

    def ints(values: Sequence[int]) -> str:
        return ",".join(map(str, values))

    pads = ",".join(f"{lo}:{hi}" for lo, hi in conv.padding)
    return (f"draw the convolution it is the gradient of (its conv_transpose.gif animates this scatter): convbridge "
            f"explain {ints(x)} --kernel {ints(w)} --stride {ints(conv.stride)} --padding {pads} --dilation "
            f"{ints(conv.dilation)} --groups {conv.groups} --draw DIR")


@main.command(context_settings=CONTEXT, epilog=EXIT_HELP)
@click.argument("layer")
@click.option("--to", "to", required=True, type=click.Choice(["flax", "linen", "nnx", "equinox", "torch"]),
              help="The framework to port to (flax = flax.linen).")
@click.option("--layout", default=None,
              help="The input layout the ported layer takes, e.g. NCHW for a channels-first Flax layer (default: "
                   "the framework's own: torch NC.., Flax N..C, Equinox one unbatched C.. example).")
@click.option("--memory-limit", default=None,
              help="Refuse a layer whose placeholder weights would need more memory: 8GiB, 500MB, 50%.")
def port(layer: str, to: str, layout: str | None, memory_limit: str | None) -> int:
    """Print the exact construction of LAYER in another framework, with the weight conversion.

    LAYER is a constructor call with literal arguments: "ConvTranspose2d(64, 32, 4, stride=2, padding=1, groups=4)"
    (torch), "flax.linen.Conv(8, (3, 3), strides=2, padding='SAME', in_channels=3)" (linen needs in_channels),
    "nnx.Conv(3, 8, (3, 3))" or "eqx.nn.Conv2d(3, 8, 3)". The printed code runs as it is: it reads the source
    layer's weight w and bias b (NumPy) and builds m, the framework's own layer when it expresses the configuration
    exactly (explicit padding pairs), else convbridge.nn's.
    """
    from convbridge import memory
    from convbridge.port.describe import port_code

    with memory.limit(memory_limit) if memory_limit is not None else contextlib.nullcontext():
        click.echo(port_code(layer, to, layout=layout))
    return 0


def _names(text: str | None) -> list[str] | None:
    """'a, b' -> ['a', 'b']; None or '' -> None."""
    names = [n.strip() for n in (text or "").split(",") if n.strip()]
    return names or None


@main.command("bench", context_settings=CONTEXT, epilog=EXIT_HELP)
@click.option("--shapes", default=None,
              help="Comma-separated shape names, or parts of names (resnet: every ResNet layer); default: all. "
                   "--list shows them.")
@click.option("--list", "list_shapes", is_flag=True, help="List the suite's shapes and exit.")
@click.option("--backends", default=None, help="Comma-separated, of numpy, jax, torch; default: every installed one.")
@click.option("--algorithms", default=None,
              help="Comma-separated registered algorithms (native, matmul, fft, ...), auto, and baseline (the "
                   "framework calls written by hand); default: all.")
@click.option("--repeats", type=click.IntRange(min=1), default=20, show_default=True,
              help="The most timed calls per combination; at least 3 (or this many if fewer) after one warm-up, "
                   "more until about 0.5 s.")
@click.option("--budget", type=click.FloatRange(min=0, min_open=True), default=2.0, show_default=True,
              help="Seconds per call: an algorithm whose cost model predicts more is skipped, not timed.")
@click.option("--json", "json_path", type=click.Path(), default=None,
              help="Write every number to this JSON file (a new file, or one convbridge bench wrote before).")
@click.option("--plot", "plot_path", type=click.Path(), default=None,
              help="Draw the time / best time of every method per shape into this PNG file (needs matplotlib).")
@click.option("--markdown", "markdown_path", type=click.Path(), default=None,
              help="Write the summary and the tables as Markdown to this file.")
@click.option("--tune", is_flag=True, help="auto times its candidates first (choose(..., measure=True)).")
@click.option("--verify", is_flag=True, help="judge every result with the verdict against the float64 reference "
              "(the FFT bound for FFT results): slower, as the reference runs once per shape and bound.")
@click.option("--quick", is_flag=True,
              help="Tiny versions of every shape, at most 3 timed calls each: a smoke test (JAX compiles most of "
                   "its time).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="json: the JSON report on stdout instead of the tables.")
@click.option("--devices", default=None, metavar="N|all",
              help="Split each shape's batch along N over this many JAX devices for the jax methods (all: every "
                   "one; on a CPU one per core, set through XLA_FLAGS before JAX starts); a batch the count does "
                   "not divide runs on the largest count that divides it.")
def bench_command(shapes: str | None, list_shapes: bool, backends: str | None, algorithms: str | None, repeats: int,
                  budget: float, json_path: str | None, plot_path: str | None, markdown_path: str | None, tune: bool,
                  verify: bool, quick: bool, fmt: str, devices: str | None) -> int:
    """Time every algorithm on every backend, the framework calls written by hand, and algorithm="auto", on a
    suite of real convolution shapes: median ms with spread, GFLOP/s, % of the float32 GEMM peak measured in the
    same run, ratios to the best, and what auto chose.

    Every method starts from the same channels-first float32 arrays and returns a channels-first result; layout
    changes (torch channels-last, JAX NHWC) count. Progress goes to stderr. Ctrl-C stops the run, prints and
    writes what was measured (marked partial) and exits 130; a second Ctrl-C quits at once. Exit status: 0, or 1
    when --verify judges a result a mismatch (3 inconclusive), 70 when a method raised, 130 interrupted.
    Examples: convbridge bench --quick; convbridge bench --shapes resnet --backends torch,jax --json r.json
    """
    from convbridge import bench, bench_report

    if list_shapes:
        for quick_case, case in zip(bench.QUICK, bench.SUITE):
            click.echo(f"{case.name:12} {case.title}: {case.describe()} (quick: {quick_case.x} x {quick_case.w})")
        return 0
    cases = bench.select(_names(shapes), quick=quick)
    names = bench.parse_backends(_names(backends))
    count = None
    if devices is not None:  # before anything starts JAX (listing the algorithms does)
        if "jax" not in names:
            raise click.UsageError("--devices splits the jax methods' batches over devices; add jax to --backends")
        from convbridge import sharding

        count = len(sharding.start(_device_count(devices)))
    chosen = bench.parse_algorithms(_names(algorithms), names)
    from convbridge.autotune import measure_setting

    try:
        measure_setting()  # CONVBRIDGE_AUTOTUNE, checked before any work
    except ConvBridgeError as exc:
        raise click.UsageError(str(exc)) from None
    outputs = {"--json": json_path, "--markdown": markdown_path, "--plot": plot_path}
    targets = {flag: bench_report.check_output(path, flag) for flag, path in outputs.items() if path is not None}
    if len(set(targets.values())) < len(targets):  # checked before any work, as the paths themselves
        raise click.UsageError(f"{' and '.join(targets)} name the same file; give each its own path")
    if plot_path is not None:
        import importlib.util

        if importlib.util.find_spec("matplotlib") is None:
            raise click.UsageError("--plot needs matplotlib: pip install 'convbridge[viz]'")
    err = _console(stderr=True)
    with bench.stoppable():
        if count is not None:
            err.print(f"jax methods: each batch split along N over up to {count} devices (the most that divide "
                      "it; the JSON records each case's count as jax_devices)", markup=False)
        result = bench.run_suite(cases, names, algorithms=chosen, repeats=repeats, budget=budget, tune=tune,
                                 verify=verify, quick=quick, progress=_bench_progress(err), devices=count)
    if result.partial:
        err.print("interrupted: writing what was measured so far (marked partial); Ctrl-C again quits at once",
                  markup=False)
    _bench_report(result, outputs, fmt, err)
    interrupts.finished()  # the report is out: a Ctrl-C now must not change the exit status
    return EXIT_CODES["interrupted"] if result.partial else _bench_status(result)


def _bench_status(result: Any) -> int:
    """1 when --verify judged a result a mismatch, 3 when one stayed inconclusive, 70 when a method raised (a bug
    the table reports), else 0."""
    from convbridge.parity import worst_verdict

    measured = [m for res in result.cases for m in res.measurements]
    verdicts = [m.verdict for m in measured if m.verdict in EXIT_CODES]
    worst = worst_verdict(verdicts) if verdicts else "identical"
    if EXIT_CODES[worst]:
        return EXIT_CODES[worst]
    return EXIT_CODES["internal"] if any(m.status == "failed" for m in measured) else 0


def _bench_progress(err: Console) -> Any:
    from convbridge import bench_report

    def show(index: int, total: int, res: Any, m: Any) -> None:
        if m is None:
            err.print(f"[{index + 1}/{total}] {res.case.name}: {res.case.title} ({res.flops / 1e9:.3g} GFLOP)",
                      markup=False, highlight=False)
            return
        what = f"{m.median * 1e3:.3g} ms ({len(m.times)} calls)" if m.status == "ok" else \
            f"{m.status}: {' '.join(m.note.split())[:100]}"
        if m.method.kind == "auto" and m.method.backend in res.auto:
            what += f"; chose {bench_report.describe_choice(res.auto[m.method.backend])}"
        err.print(f"    {m.method.backend} {m.method.label}: {what}", markup=False, highlight=False)
    return show


def _bench_report(result: Any, outputs: dict[str, str | None], fmt: str, err: Console) -> None:
    """Write the files, then the tables (text) or the JSON object (json) on stdout."""
    from convbridge import bench_report
    from convbridge.reportdir import strict_json
    from convbridge.viz.bench import plot

    writers = {"--json": bench_report.write_json, "--markdown": bench_report.write_markdown, "--plot": plot}
    written = [writers[flag](result, path) for flag, path in outputs.items() if path is not None]
    if fmt == "json":
        text = strict_json(bench_report.to_dict(result), indent=2)
        with interrupts.critical():  # the report, or the interrupt's error object: one JSON object either way
            interrupts.report_on_stdout(None)
            click.echo(text)
    else:
        bench_report.print_tables(result, _console())
    for path in written:
        (err if fmt == "json" else _console()).print(f"wrote {path}", markup=False, highlight=False)


if __name__ == "__main__":  # pragma: no cover
    run()
