"""Fetch the CIFAR-10 archive with urllib, safely.

The bytes go to a temporary file next to the target; it is renamed into place
only after its MD5 matches, so an interrupted or altered download never leaves
a file that looks complete. The network call is injectable (``opener``) so
tests never touch the network.
"""

from __future__ import annotations

import hashlib
import os
import socket
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any, BinaryIO

from convbridge.data.cifar10 import ARCHIVE_NAME, CIFAR10_URL, file_md5, merge_md5
from convbridge.data.dataset import DataError

__all__ = ["download_cifar10"]

_CHUNK = 1 << 16


def download_cifar10(
    root: str | os.PathLike[str],
    *,
    url: str = CIFAR10_URL,
    timeout: float = 5.0,
    progress: bool = True,
    opener: Callable[..., Any] | None = None,
    md5: Mapping[str, str] | None = None,
) -> Path:
    """Download ``cifar-10-python.tar.gz`` into ``root`` and check its MD5.

    Does nothing if a file with the right MD5 is already there.

    Args:
        root: Folder to write into (created if missing).
        url: Where to fetch the archive from.
        timeout: Seconds to wait to connect and for each read; a dead network
            fails within this time instead of hanging.
        progress: Show a ``rich`` progress bar on stderr.
        opener: Called as ``opener(url, timeout=timeout)`` and must return a
            file-like response with ``read(n)`` (``urllib.request.urlopen`` by
            default; tests pass a stub).
        md5: Expected sums by file name; only ``"cifar-10-python.tar.gz"`` is used.

    Returns:
        The path of the verified archive.

    Raises:
        DataError: If the server cannot be reached, the transfer breaks, or
            the MD5 differs; no partial file is left behind.
    """
    expected = merge_md5(md5)[ARCHIVE_NAME]
    root = Path(root).expanduser()
    target = root / ARCHIVE_NAME
    if target.is_file() and file_md5(target) == expected:
        return target
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{ARCHIVE_NAME}.", suffix=".part", dir=root)
    except OSError as exc:
        raise DataError(
            f"cannot write into the download folder {root} ({exc}); pass a writable --root DIR"
        ) from None
    tmp, response = Path(tmp_name), None
    try:
        with os.fdopen(fd, "wb") as out:
            response = _connect(opener or urllib.request.urlopen, url, timeout)
            actual = _copy(response, out, url, progress)
        if actual != expected:
            raise DataError(
                f"MD5 mismatch for the download from {url}: expected {expected}, got {actual}; "
                "the transfer was altered or the URL serves another file; try again or download it "
                "elsewhere and pass --root DIR"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
        close = getattr(response, "close", None)
        if close is not None:
            close()
    return target


def _connect(opener: Callable[..., Any], url: str, timeout: float) -> Any:
    try:
        return opener(url, timeout=timeout)
    except (urllib.error.URLError, socket.timeout, TimeoutError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise DataError(
            f"could not reach {url} ({reason}); download it elsewhere and pass --root DIR "
            "(the folder holding cifar-10-python.tar.gz)"
        ) from None


def _copy(response: Any, out: BinaryIO, url: str, progress: bool) -> str:
    """Stream ``response`` into ``out``; return the MD5 of what was written."""
    digest = hashlib.md5(usedforsecurity=False)
    total = _content_length(response)
    with ExitStack() as stack:
        advance = _progress_bar(stack, total) if progress else (lambda n: None)
        try:
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                out.write(chunk)
                digest.update(chunk)
                advance(len(chunk))
        except (urllib.error.URLError, socket.timeout, TimeoutError, OSError) as exc:
            raise DataError(
                f"download from {url} broke off ({exc}); try again, or download it elsewhere "
                "and pass --root DIR"
            ) from None
    return digest.hexdigest()


def _content_length(response: Any) -> int | None:
    headers = getattr(response, "headers", None)
    value = headers.get("Content-Length") if headers is not None else None
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _progress_bar(stack: ExitStack, total: int | None) -> Callable[[int], None]:
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    bar = stack.enter_context(
        Progress(
            TextColumn(f"[bold]{ARCHIVE_NAME}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=Console(stderr=True),
            transient=True,
        )
    )
    task = bar.add_task("download", total=total)
    return lambda n: bar.advance(task, n)
