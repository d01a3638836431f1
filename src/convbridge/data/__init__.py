"""Images for ``convbridge compare``: CIFAR-10, the embedded sample, or your own.

The tutorial being reproduced feeds the first 32 CIFAR-10 test images through
``ToTensor()`` and ``Normalize((0.5,) * 3, (0.5,) * 3)``. :func:`load_dataset`
finds the images (falling back to a packaged sample when CIFAR-10 is absent)
and :func:`normalize` turns them into the same float32 NCHW tensor values,
bit for bit. Only NumPy and the standard library are imported here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from convbridge.data.cifar10 import CIFAR10_MD5, CIFAR10_URL, find_cifar10, load_cifar10
from convbridge.data.dataset import DataError, Dataset
from convbridge.data.download import download_cifar10
from convbridge.data.images import load_array, load_image_folder
from convbridge.data.sample import SAMPLE_SOURCE, load_sample

__all__ = [
    "CIFAR10_MD5",
    "CIFAR10_URL",
    "DATA_CHOICES",
    "DataError",
    "Dataset",
    "default_roots",
    "download_cifar10",
    "load_array",
    "load_cifar10",
    "load_dataset",
    "load_image_folder",
    "load_sample",
    "normalize",
]

#: The keywords ``load_dataset(data=...)`` accepts besides a path.
DATA_CHOICES = ("auto", "cifar10", "sample")


def default_roots() -> tuple[Path, ...]:
    """Where CIFAR-10 is looked for when no root is given, in order.

    The current folder, ``./data`` (the tutorial's ``root``, and where
    ``download=True`` writes) and ``~/.cache/convbridge``.
    """
    return (Path("."), Path("data"), Path.home() / ".cache" / "convbridge")


def load_dataset(
    data: str | os.PathLike[str] | None = None,
    *,
    root: str | os.PathLike[str] | None = None,
    split: str = "test",
    md5: Mapping[str, str] | None = None,
    download: bool = False,
    notice: Callable[[str], Any] = print,
    progress: bool = True,
    opener: Callable[..., Any] | None = None,
    layout: str = "auto",
    scale: str = "auto",
) -> Dataset:
    """Load the images ``convbridge compare`` runs on.

    ``data`` selects the source:

    - ``None`` or ``"auto"``: CIFAR-10 if found under any of :func:`default_roots`,
      else the embedded sample, announced with one ``notice(...)`` line. A
      CIFAR-10 copy that is found but fails its MD5 check raises instead of
      falling back. With ``root`` or ``download=True`` it behaves like
      ``"cifar10"`` (asking for CIFAR-10 somewhere never falls back silently).
    - ``"cifar10"``: CIFAR-10 from ``root``; downloaded first when absent and
      ``download=True`` (into ``root``, or ``./data``).
    - ``"sample"``: the embedded sample (see :func:`load_sample`).
    - a path: a ``.npy``/``.npz`` file (:func:`load_array`), the CIFAR-10
      archive or folder, or a folder of images (:func:`load_image_folder`).
      The keywords win over same-named folders; write ``./sample`` for those.

    Args:
        data: The source, as above.
        root: Folder holding CIFAR-10 (see :func:`load_cifar10`).
        split: CIFAR-10 split, ``"test"`` or ``"train"``.
        md5: Expected MD5 sums overriding the published ones (for tests).
        download: Fetch CIFAR-10 when it is not found.
        layout, scale: How an array file's axes and values read (see :func:`load_array`).
        notice: Called with a one-line message when falling back to the sample.
        progress: Show a progress bar while downloading.
        opener: Network call for the download (``urllib.request.urlopen``); tests stub it.

    Returns:
        A ``Dataset``; take ``.head(32)`` for the tutorial's batch.

    Raises:
        DataError: If the chosen source is missing, corrupt or malformed.

    >>> load_dataset("sample").source
    'embedded sample (32 images from scikit-image sample photographs)'
    """
    key = "auto" if data is None else data
    if isinstance(key, str) and not key.strip():
        raise DataError("--data is empty; pass auto, cifar10, sample, a .npy/.npz file or a folder of images "
                        "(write . for the current folder)")
    if root is not None and not download and not Path(root).expanduser().exists():
        raise DataError(f"--root {str(root)!r} does not exist; pass the folder that holds cifar-10-python.tar.gz "
                        "or cifar-10-batches-py/, or add --download to fetch CIFAR-10 into it")
    if isinstance(key, str) and key in DATA_CHOICES:
        if (layout, scale) != ("auto", "auto"):
            raise DataError("--data-layout and --data-scale describe a .npy/.npz array; CIFAR-10 and the sample are "
                            "8-bit RGB pixels already")
        if key == "sample":
            return _sample(split)
        if key == "auto" and root is not None:
            key = "cifar10"
        roots = (Path(root).expanduser(),) if root is not None else default_roots()
        found = _first_cifar10(roots)
        if found is None and download:
            target = roots[0] if root is not None else roots[1]
            found = download_cifar10(target, md5=md5, progress=progress, opener=opener)
        if found is not None:
            return load_cifar10(found, split, md5=md5)
        looked = ", ".join(str(r) for r in roots)
        if key == "cifar10":
            raise DataError(
                f"CIFAR-10 not found under {looked}; pass --download to fetch it ({CIFAR10_URL}, "
                "163 MB), or --root DIR where cifar-10-python.tar.gz or cifar-10-batches-py/ is"
            )
        if split != "test":
            raise DataError(f"--split {split} needs CIFAR-10, which is not found under {looked}; pass --download "
                            f"or --root DIR (the embedded sample has one split)")
        notice(f"CIFAR-10 not found under {looked}; using the {SAMPLE_SOURCE}; pass --download for CIFAR-10")
        return load_sample()
    return _load_path(Path(key).expanduser(), split, md5, layout, scale)


def _sample(split: str) -> Dataset:
    if split != "test":
        raise DataError(f"--split {split} is a CIFAR-10 split; the embedded sample has one set of images: drop "
                        "--split, or pass --data cifar10")
    return load_sample()


def _first_cifar10(roots: tuple[Path, ...]) -> Path | None:
    for candidate in roots:
        try:
            return find_cifar10(candidate)[1]
        except DataError:
            continue
    return None


def _load_path(path: Path, split: str, md5: Mapping[str, str] | None, layout: str, scale: str) -> Dataset:
    array = path.is_file() and path.suffix in (".npy", ".npz")
    cifar = not array and (path.name.endswith(".tar.gz") or path.is_dir() and _first_cifar10((path,)) is not None)
    if split != "test" and not cifar:
        raise DataError(f"--split {split} is a CIFAR-10 split; {path} has one set of images: drop --split")
    if array:
        return load_array(path, layout=layout, scale=scale)
    if (layout, scale) != ("auto", "auto"):
        raise DataError("--data-layout and --data-scale describe a .npy/.npz array; images from CIFAR-10 or a "
                        "folder are 8-bit RGB pixels already")
    if path.is_file():
        if path.name.endswith(".tar.gz"):
            return load_cifar10(path, split, md5=md5)
        raise DataError(
            f"--data file {path} is neither .npy, .npz nor the CIFAR-10 .tar.gz; "
            "pass one of those, or a folder of PNG/JPEG images"
        )
    if path.is_dir():
        if _first_cifar10((path,)) is not None:
            return load_cifar10(path, split, md5=md5)
        return load_image_folder(path)
    raise DataError(
        f"--data {str(path)!r} is not one of {', '.join(DATA_CHOICES)} and no such file or folder exists; "
        "pass a keyword, a .npy/.npz file, or a folder of images"
    )


def normalize(images: np.ndarray) -> np.ndarray:
    """Apply ``ToTensor()`` then ``Normalize(0.5, 0.5)`` to uint8 NHWC images.

    Computed in float32 with the same operations, in the same order, as
    torchvision on CPU: ``t = x.float().div(255)`` then ``(t - 0.5) / 0.5``.
    Each step is one correctly rounded IEEE float32 operation, so the result
    equals torchvision's bit for bit (``x / 127.5 - 1`` happens to give the
    same values; multiplying by a precomputed ``1 / 255`` or ``2 / 255`` does
    not, for about half of the 256 pixel values).

    Args:
        images: ``uint8`` array ``(N, H, W, C)``.

    Returns:
        C-contiguous ``float32`` array ``(N, C, H, W)`` in [-1, 1].

    Shape:
        ``(N, H, W, C) -> (N, C, H, W)``; ``out[n, c, h, w] = (x[n, h, w, c] / 255 - 0.5) / 0.5``.

    Raises:
        DataError: If ``images`` is not a 4-d uint8 array.

    >>> normalize(np.array([0, 128, 255], np.uint8).reshape(1, 1, 1, 3)).ravel()
    array([-1.        ,  0.00392163,  1.        ], dtype=float32)
    """
    a = np.asarray(images)
    if a.dtype != np.uint8 or a.ndim != 4:
        raise DataError(
            f"normalize needs uint8 images of shape (N, H, W, C); got {a.dtype} of shape {a.shape}; "
            "pass Dataset.images"
        )
    t = np.ascontiguousarray(a.transpose(0, 3, 1, 2)).astype(np.float32)
    t = t / np.float32(255)
    return (t - np.float32(0.5)) / np.float32(0.5)
