"""Writing a picture: the exact path asked for, parents created, never a half-written file left behind."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from convbridge.errors import ArgumentError, ArgumentTypeError

__all__ = ["save"]


def save(path: str | os.PathLike[str], write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then move it to ``path`` (atomic on one disk).

    Parent folders are created. ``path`` is used as given: no suffix is added or inferred.

    Raises:
        ArgumentTypeError: ``path`` is not a str or a path.
        ArgumentError: ``path`` is an existing folder, or its folder cannot be created or written.

    >>> import tempfile
    >>> p = save(Path(tempfile.mkdtemp()) / "a" / "b.txt", lambda tmp: tmp.write_text("hi"))
    >>> p.read_text(), p.parent.name
    ('hi', 'a')
    """
    if not isinstance(path, (str, os.PathLike)):
        raise ArgumentTypeError(f"a picture's path is a str or a pathlib.Path, got {type(path).__name__} {path!r}")
    target = Path(path)
    if target.is_dir():
        raise ArgumentError(f"{str(target)!r} is a folder; give the path of the picture to write, e.g. "
                            f"{str(target / 'picture.png')!r}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    except OSError as exc:
        raise ArgumentError(f"cannot write {str(target)!r}: {exc.strerror or exc}") from None
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # an ordinary file's mode, not the temporary file's private 0600
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target
