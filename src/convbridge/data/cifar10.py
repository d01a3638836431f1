"""Read the CIFAR-10 "python version" without torchvision.

The published archive ``cifar-10-python.tar.gz`` holds a folder
``cifar-10-batches-py/`` with six pickled batches and ``batches.meta``. The
pickles were written by Python 2's cPickle (protocol 2), so their keys load as
``bytes`` with ``encoding="bytes"``:

- ``b"data"``: ``uint8`` array ``(n, 3072)``; each row is the red plane, then
  green, then blue, each 32x32 in row-major order.
- ``b"labels"``: list of ``n`` ints in 0..9; ``b"filenames"``: list of bytes;
  ``b"batch_label"``: bytes.
- ``batches.meta``: ``b"label_names"`` (list of 10 bytes), ``b"num_cases_per_batch"``, ``b"num_vis"``.

Only the globals a NumPy array pickle needs are allowed while unpickling, so a
tampered file cannot run code even with ``verify=False``.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import os
import pickle
import tarfile
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import cast

import numpy as np

from convbridge.data.dataset import DataError, Dataset

__all__ = [
    "ARCHIVE_NAME",
    "CIFAR10_MD5",
    "CIFAR10_URL",
    "FOLDER_NAME",
    "SPLITS",
    "file_md5",
    "find_cifar10",
    "load_cifar10",
    "merge_md5",
]

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE_NAME = "cifar-10-python.tar.gz"
FOLDER_NAME = "cifar-10-batches-py"
META_NAME = "batches.meta"

#: Published MD5 sums (the same ones torchvision checks).
CIFAR10_MD5: Mapping[str, str] = MappingProxyType(
    {
        ARCHIVE_NAME: "c58f30108f718f92721af3b95e74349a",
        "data_batch_1": "c99cafc152244af753f735de768cd75f",
        "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
        "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
        "data_batch_4": "634d18415352ddfa80567beed471001a",
        "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
        "test_batch": "40351d587109b95175f43aff81a1287e",
        META_NAME: "5ff9c542aee3614f3951f8cda6e48888",
    }
)

#: Batch files per split, in the order their images are concatenated.
SPLITS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "test": ("test_batch",),
        "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    }
)

_CHUNK = 1 << 20
_HOW_TO_GET = (
    f"run `convbridge compare --download`, or download {CIFAR10_URL} "
    "elsewhere and pass --root DIR (the folder holding it)"
)


def load_cifar10(
    root: str | os.PathLike[str],
    split: str = "test",
    *,
    md5: Mapping[str, str] | None = None,
    verify: bool = True,
) -> Dataset:
    """Load one CIFAR-10 split from the archive or the extracted folder.

    ``root`` may be a folder holding ``cifar-10-batches-py/`` or
    ``cifar-10-python.tar.gz`` (the extracted folder wins when both exist),
    the ``cifar-10-batches-py`` folder itself, or the ``.tar.gz`` file. The
    archive is read in memory; nothing is extracted to disk.

    Args:
        root: Where to look (see above).
        split: ``"test"`` (``test_batch``) or ``"train"`` (``data_batch_1`` ..
            ``data_batch_5`` concatenated in that order).
        md5: Expected sums by file name, overriding ``CIFAR10_MD5`` entries.
        verify: Check the MD5 of the archive, or of each batch file read from
            the folder, before unpickling anything.

    Returns:
        A ``Dataset`` with the images in file order.

    Shape:
        ``images``: ``(N, 32, 32, 3)`` uint8 with ``N = 10000`` per batch;
        ``images[i, y, x, c] = data[i, c * 1024 + y * 32 + x]``.

    Raises:
        DataError: If nothing is found, a sum differs, or a pickle is corrupt.

    >>> load_cifar10("/nonexistent")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    convbridge.data.dataset.DataError: no CIFAR-10 found ...
    """
    names = _split_files(split)
    sums = merge_md5(md5)
    kind, path = find_cifar10(root)
    if kind == "archive":
        if verify:
            check_md5(path, sums[ARCHIVE_NAME])
        blobs = _read_archive(path, (*names, META_NAME))
    else:
        blobs = _read_folder(path, (*names, META_NAME), sums if verify else None)
    class_names = _parse_meta(blobs[META_NAME], f"{path}: {META_NAME}")
    parts = [_parse_batch(blobs[name], name, f"{path}: {name}") for name in names]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    items = tuple(item for p in parts for item in p[2])
    return Dataset(images, labels, class_names, f"CIFAR-10 {split} split from {path}", items)


def find_cifar10(root: str | os.PathLike[str]) -> tuple[str, Path]:
    """Locate CIFAR-10 under ``root``.

    Args:
        root: A folder, the ``cifar-10-batches-py`` folder, or the archive.

    Returns:
        ``("folder", path)`` or ``("archive", path)``.

    Raises:
        DataError: Saying where it looked and how to get the data.
    """
    root = Path(root).expanduser()
    if root.is_file():
        return "archive", root
    candidates = [root, root / FOLDER_NAME]
    for folder in candidates:
        if (folder / META_NAME).is_file():
            return "folder", folder
    if (root / ARCHIVE_NAME).is_file():
        return "archive", root / ARCHIVE_NAME
    looked = ", ".join(str(p) for p in (root / FOLDER_NAME, root / ARCHIVE_NAME))
    raise DataError(f"no CIFAR-10 found under {root} (looked for {looked}); {_HOW_TO_GET}")


def merge_md5(md5: Mapping[str, str] | None) -> dict[str, str]:
    """Return ``CIFAR10_MD5`` updated with ``md5``, after checking the overrides.

    Raises:
        DataError: If a key is not a CIFAR-10 file name or a value is not 32 hex digits.
    """
    sums = dict(CIFAR10_MD5)
    for name, value in (md5 or {}).items():
        if name not in CIFAR10_MD5:
            raise DataError(f"md5 override for unknown file {name!r}; known files: {', '.join(CIFAR10_MD5)}")
        text = str(value).lower()
        if len(text) != 32 or any(ch not in "0123456789abcdef" for ch in text):
            raise DataError(f"md5 override for {name!r} must be 32 hex digits; got {value!r}")
        sums[name] = text
    return sums


def file_md5(path: str | os.PathLike[str]) -> str:
    """Return the hex MD5 of a file, read in 1 MiB chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_md5(path: Path, expected: str) -> None:
    """Raise ``DataError`` unless ``path`` has MD5 ``expected``."""
    actual = file_md5(path)
    if actual != expected:
        raise DataError(
            f"MD5 mismatch for {path}: expected {expected}, got {actual}; the file is "
            f"incomplete or altered; delete it and download again ({CIFAR10_URL})"
        )


def _split_files(split: str) -> tuple[str, ...]:
    if split not in SPLITS:
        raise DataError(f"split must be one of {', '.join(map(repr, SPLITS))}; got {split!r}")
    return SPLITS[split]


def _read_folder(folder: Path, names: tuple[str, ...], sums: Mapping[str, str] | None) -> dict[str, bytes]:
    blobs = {}
    for name in names:
        path = folder / name
        if not path.is_file():
            raise DataError(
                f"CIFAR-10 folder {folder} lacks {name}; the extraction is incomplete; {_HOW_TO_GET}"
            )
        if sums is not None:
            check_md5(path, sums[name])
        blobs[name] = path.read_bytes()
    return blobs


def _read_archive(path: Path, names: tuple[str, ...]) -> dict[str, bytes]:
    wanted = {f"{FOLDER_NAME}/{name}": name for name in names}
    blobs: dict[str, bytes] = {}
    try:
        with tarfile.open(path, mode="r|gz") as tar:
            for member in tar:
                name = wanted.get(member.name.removeprefix("./"))
                if name is not None and member.isfile():
                    file = tar.extractfile(member)
                    assert file is not None  # a regular file member always has one
                    blobs[name] = file.read()
                    if len(blobs) == len(wanted):
                        break
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise DataError(
            f"cannot read the archive {path} ({exc}); it is truncated or not a tar.gz; "
            f"delete it and download again ({CIFAR10_URL})"
        ) from None
    missing = [f"{FOLDER_NAME}/{n}" for n in names if n not in blobs]
    if missing:
        raise DataError(
            f"archive {path} lacks {', '.join(missing)}; it is not the CIFAR-10 python archive; "
            f"download {CIFAR10_URL}"
        )
    return blobs


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals a NumPy array pickle uses."""

    _RECONSTRUCT = np.empty(0).__reduce__()[0]
    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
        ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,  # bytes pickled by Python 3 at protocol 2
    }

    def find_class(self, module: str, name: str) -> object:
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed") from None


def _unpickle(blob: bytes, where: str) -> dict:
    try:
        obj = _ArrayUnpickler(io.BytesIO(blob), encoding="bytes").load()
    except Exception as exc:  # any failure inside pickle means a corrupt file
        raise DataError(
            f"cannot unpickle {where} ({type(exc).__name__}: {exc}); the file is truncated "
            f"or corrupt; delete it and download again ({CIFAR10_URL})"
        ) from None
    if not isinstance(obj, dict):
        raise DataError(f"{where} holds a {type(obj).__name__}, not a dict; it is not a CIFAR-10 batch")
    return obj


def _field(obj: dict, key: bytes, where: str) -> object:
    for k in (key, key.decode()):
        if k in obj:
            return obj[k]
    keys = sorted(map(repr, obj))
    raise DataError(f"{where} has no {key!r} entry (keys: {keys}); it is not a CIFAR-10 batch")


def _parse_meta(blob: bytes, where: str) -> tuple[str, ...]:
    names = cast("Iterable[object]", _field(_unpickle(blob, where), b"label_names", where))
    return tuple(n.decode("ascii") if isinstance(n, bytes) else str(n) for n in names)


def _parse_batch(blob: bytes, name: str, where: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    obj = _unpickle(blob, where)
    data = np.asarray(_field(obj, b"data", where))
    labels = np.asarray(_field(obj, b"labels", where))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{where}: data must be uint8 of shape (n, 3072); got {data.dtype} {data.shape}")
    if labels.shape != (data.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"{where}: labels must be {data.shape[0]} integers, one per image; "
            f"got {labels.dtype} {labels.shape}"
        )
    files = obj.get(b"filenames", obj.get("filenames", ()))
    items = tuple(f.decode("ascii", "replace") if isinstance(f, bytes) else str(f) for f in files)
    if len(items) != data.shape[0]:
        items = tuple(f"{name}[{i}]" for i in range(data.shape[0]))
    images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return images, labels.astype(np.int64), items
