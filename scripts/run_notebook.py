"""Execute a notebook top to bottom in a kernel of this Python (the project's venv); fail on the first error.

    .venv/bin/python scripts/run_notebook.py examples/convolutions_in_jax_and_pytorch.ipynb

What `make notebook` runs (CI included). The kernel is ipykernel on *this* interpreter: the script writes a private
kernelspec named ``python3`` whose command is ``sys.executable``, so neither a ``python`` on PATH nor a kernel
installed elsewhere can stand in, and the first thing it runs in the kernel checks that ``sys.prefix`` is this
one's. The kernel starts in the notebook's folder and inherits the environment (``XLA_FLAGS`` and the rest).

Before the notebook's cells the kernel refuses network connections to anything but the loopback interface (the
kernel's own channels go through ZeroMQ, not Python sockets): a notebook that reaches for the network fails here
as it would in CI, instead of hanging. ``--allow-network`` turns that off.

Exit status 0 when every code cell ran; 1 when a cell raised or timed out (the cell's number, its first line and
the error with its traceback are printed), or the kernel died or is not this Python's; 2 for bad arguments.
The notebook file is read, never written, unless ``--write`` (execute in place: outputs and execution counts
saved) or ``--output PATH`` (the executed copy written there) is given.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROBE = "import json as _j, sys as _s\nprint(_j.dumps({'executable': _s.executable, 'prefix': _s.prefix}))\ndel _j, _s"

NO_NETWORK = '''
def _convbridge_no_network():
    import ipaddress, socket

    def local(address):
        if not isinstance(address, tuple):  # AF_UNIX paths, abstract sockets
            return True
        host = str(address[0]).split("%")[0]
        if host in ("localhost", ""):
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    def refuse(what):
        raise OSError(f"network access refused while running the notebook ({what}); the notebook must run offline "
                      "(scripts/run_notebook.py --allow-network lifts this)")

    connect, connect_ex, resolve = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo

    def guarded_connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not local(address):
            refuse(f"connect to {address!r}")
        return connect(self, address)

    def guarded_connect_ex(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not local(address):
            refuse(f"connect to {address!r}")
        return connect_ex(self, address)

    def guarded_getaddrinfo(host, *args, **kwargs):
        if host is not None and not local((host.decode() if isinstance(host, bytes) else host, 0)):
            refuse(f"resolve {host!r}")
        return resolve(host, *args, **kwargs)

    socket.socket.connect, socket.socket.connect_ex = guarded_connect, guarded_connect_ex
    socket.getaddrinfo = guarded_getaddrinfo


_convbridge_no_network()
del _convbridge_no_network
'''


@dataclass
class Run:
    """What executing the notebook produced: per code cell (index, first line, seconds), the kernel start time and
    the first failure (as printable text), if any."""

    cells: list[tuple[int, str, float]] = field(default_factory=list)
    start_seconds: float = 0.0
    failure: str | None = None


def _plain(text: str) -> str:
    """``text`` without terminal colour codes (IPython colours its tracebacks)."""
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def _first_line(source: str) -> str:
    lines = [line for line in source.splitlines() if line.strip()]
    return (lines[0][:70] + ("..." if len(lines[0]) > 70 else "")) if lines else "(empty)"


def _kernelspec(folder: Path) -> Path:
    """A kernelspec directory holding ``python3`` = ipykernel on this interpreter; returns the kernels folder."""
    spec = folder / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"Python 3 ({sys.prefix})", "language": "python"}))
    return folder / "kernels"


def _stream_text(cell: Any) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")


def _check_kernel(cell: Any) -> str | None:
    """None when the probe cell shows the kernel runs this interpreter's environment, else why not."""
    try:
        seen = json.loads(_stream_text(cell).strip().splitlines()[-1])
    except (ValueError, IndexError):
        return f"the kernel's interpreter could not be read: the probe printed {_stream_text(cell)!r}"
    if Path(seen["prefix"]).resolve() != Path(sys.prefix).resolve():
        return (f"the kernel runs {seen['executable']} (prefix {seen['prefix']}), not this Python ({sys.executable}, "
                f"prefix {sys.prefix}); install ipykernel into this environment")
    return None


async def _execute(client: Any, nb: Any, setup: list[Any], run: Run) -> None:
    t0 = time.perf_counter()
    async with client.async_setup_kernel():
        info = await client.async_wait_for_reply(client.kc.kernel_info())
        if info is not None and "language_info" in info["content"]:
            nb.metadata["language_info"] = info["content"]["language_info"]
        run.start_seconds = time.perf_counter() - t0
        own_cells = nb.cells
        work = list(setup) + list(own_cells)
        nb.cells = work  # nbclient stores each executed cell back into its notebook by index
        try:
            await _cells(client, work, len(setup), run)
        finally:
            nb.cells = own_cells
            if client.km is not None and await client.km.is_alive():  # a km we pass in is ours to shut down
                await client.km.shutdown_kernel(now=run.failure is not None)


async def _cells(client: Any, work: list[Any], setup: int, run: Run) -> None:
    """Execute ``work`` (``setup`` runner cells, then the notebook's) until the first failure."""
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    count = 0
    for index, cell in enumerate(work):
        own = index - setup  # the notebook's own cell index (negative: a runner cell)
        if cell.cell_type != "code":
            continue
        count += own >= 0
        started = time.perf_counter()
        try:
            await client.async_execute_cell(cell, index, execution_count=count if own >= 0 else None,
                                            store_history=own >= 0)
        except (CellExecutionError, CellTimeoutError, DeadKernelError) as exc:
            where = f"cell {own} ({_first_line(cell.source)})" if own >= 0 else "the runner's setup cell"
            run.failure = f"{where} failed after {time.perf_counter() - started:.1f} s:\n{_plain(str(exc))}"
            return
        if index == 0:
            run.failure = _check_kernel(cell)
            if run.failure:
                return
        if own >= 0:
            run.cells.append((own, _first_line(cell.source), time.perf_counter() - started))


def execute(path: Path, *, timeout: float, allow_network: bool) -> tuple[Any, Run]:
    """Execute the notebook at ``path`` in a kernel of this interpreter; returns the executed notebook and the run."""
    import nbformat
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    setup = [nbformat.v4.new_code_cell(PROBE)]
    if not allow_network:
        setup.append(nbformat.v4.new_code_cell(NO_NETWORK))
    run = Run()
    with tempfile.TemporaryDirectory(prefix="run_notebook-") as tmp:
        specs = KernelSpecManager(kernel_dirs=[str(_kernelspec(Path(tmp)))], ensure_native_kernel=False)
        # The kernel's channels are Unix sockets in the temporary folder: no TCP port, nothing in the repository.
        km = AsyncKernelManager(kernel_name="python3", kernel_spec_manager=specs, transport="ipc",
                                ip=str(Path(tmp) / "kernel"), connection_file=str(Path(tmp) / "kernel.json"))
        client = NotebookClient(nb, km=km, kernel_name="python3", timeout=timeout, allow_errors=False,
                                force_raise_errors=True, resources={"metadata": {"path": str(path.parent.resolve())}})
        asyncio.run(_execute(client, nb, setup, run))
    return nb, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebook", type=Path)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per cell before it fails (default 300)")
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--write", action="store_true", help="save the outputs into the notebook itself")
    out.add_argument("--output", type=Path, help="write the executed notebook to this file (the source is untouched)")
    parser.add_argument("--allow-network", action="store_true", help="let the notebook open network connections")
    args = parser.parse_args(argv)
    if not args.notebook.is_file():
        parser.error(f"no notebook at {args.notebook}")
    if not args.timeout > 0:
        parser.error(f"--timeout must be > 0 seconds, got {args.timeout}")
    print(f"executing {args.notebook} with {sys.executable} (cell timeout {args.timeout:g} s)", flush=True)
    t0 = time.perf_counter()
    try:
        nb, run = execute(args.notebook, timeout=args.timeout, allow_network=args.allow_network)
    except Exception as exc:  # noqa: BLE001 - the kernel could not start, the notebook is invalid, ...
        print(f"FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    total = time.perf_counter() - t0
    for index, first, seconds in run.cells:
        print(f"  cell {index:3d}  {seconds:7.2f} s  {first}")
    if run.failure:
        print(f"FAILED: {run.failure}", file=sys.stderr)
        print(f"(after {total:.1f} s)", file=sys.stderr)
        return 1
    code = sum(seconds for _, _, seconds in run.cells)
    print(f"ok: {len(run.cells)} code cells in {total:.1f} s total (kernel start {run.start_seconds:.1f} s, "
          f"cells {code:.1f} s)")
    if args.write or args.output:
        import nbformat

        target = args.notebook if args.write else args.output
        nbformat.write(nb, target)
        print(f"wrote the executed notebook to {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
