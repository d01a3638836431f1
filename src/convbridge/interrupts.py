"""Ctrl-C for the command line: one line, exit status 130, no half-written files, never swallowed.

A command installs the handler once (:func:`install`). From then on SIGINT removes every
path registered with :func:`cleanup_on_interrupt`, prints one line on stderr and ends the
process at once with :func:`os._exit`: no interpreter teardown that could crash inside a
framework's threads, and no ``KeyboardInterrupt`` that a callback could swallow. Inside
:func:`critical` (moving a finished report into place) the interrupt waits until the block
ends. Without :func:`install` (a library user) these helpers change nothing and
``KeyboardInterrupt`` behaves as usual.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager

TYPE_CHECKING = False  # typing, pathlib and the rest load after the handler is in place (see __main__)
if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path
    from types import FrameType

__all__ = ["EXIT_INTERRUPTED", "install", "report_on_stdout", "cleanup_on_interrupt", "critical"]

#: The exit status of an interrupted command (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130

_paths: list[Path] = []
class _State:
    def __init__(self) -> None:
        self.installed = False
        self.critical = 0  # nesting depth of critical() blocks
        self.pending = False  # an interrupt arrived inside one
        self.stdout: str | None = None  # what to print on stdout when interrupted


_state = _State()


def report_on_stdout(text: str | None) -> None:
    """Also print ``text`` on stdout when interrupted (the CLI's JSON error object), or nothing with None."""
    _state.stdout = text


#: The CLI's JSON error object for an interrupt (as ``strict_json(..., indent=2)`` writes it).
INTERRUPTED_JSON = '{\n  "error": {\n    "type": "Interrupted",\n    "message": "interrupted",\n    "exit_code": 130\n  }\n}'


def finished() -> None:
    """The command's output is complete: from now on Ctrl-C is ignored, so its exit status stands. Only in the
    program that :func:`install` set up: a command run in-process (click's test runner, a notebook) leaves the
    caller's handler alone, or every process it starts later would inherit an ignored Ctrl-C."""
    if _state.installed and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def install() -> None:
    """Make SIGINT end the process cleanly with status 130 (from the main thread only; idempotent)."""
    if _state.installed or threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # started with Ctrl-C ignored (nohup, a & job): keep it
        return
    signal.signal(signal.SIGINT, _handler)
    _state.installed = True


def _handler(signum: int, frame: FrameType | None) -> None:
    if _state.critical:
        _state.pending = True
        return
    _die()


def _die() -> None:
    import shutil

    for path in list(_paths):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    try:
        if _state.stdout is not None:
            sys.stdout.write(_state.stdout + "\n")
            sys.stdout.flush()
        sys.stderr.write("\nconvbridge: interrupted (nothing half-written was left behind)\n")
        sys.stderr.flush()
    finally:
        os._exit(EXIT_INTERRUPTED)


@contextmanager
def cleanup_on_interrupt(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Remove ``path`` (a file or folder) if the command is interrupted while the block runs.

    >>> with cleanup_on_interrupt("/tmp/partial") as p:
    ...     p.name
    'partial'
    """
    from pathlib import Path

    entry = Path(path)
    _paths.append(entry)
    try:
        yield entry
    finally:
        _paths.remove(entry)


@contextmanager
def critical() -> Iterator[None]:
    """Hold an interrupt until the block ends (a few renames), then act on it."""
    _state.critical += 1
    try:
        yield
    finally:
        _state.critical -= 1
        if not _state.critical and _state.pending:
            _die()
