"""Bring your own images: a ``.npy``/``.npz`` array or a folder of PNG/JPEG files.

Arrays are taken as they are (no resizing, no guessing of the channel axis);
folders are centre-cropped and resized to 32x32 with Pillow, imported only
when a folder is read.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from convbridge.data.dataset import DataError, Dataset

__all__ = ["IMAGE_SUFFIXES", "load_array", "load_image_folder", "to_uint8_rgb"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_UNLABELLED = ("image",)


def load_array(path: str | os.PathLike[str]) -> Dataset:
    """Load images (and optionally labels) from a ``.npy`` or ``.npz`` file.

    A ``.npy`` holds the images. A ``.npz`` holds ``images`` (or a single
    array of any name) and optionally ``labels`` (ints) and ``class_names``
    (strings). Without labels every image gets label 0 of the one class
    ``"image"``; without class names they are ``"class 0"``, ``"class 1"``, ...

    Images must be channels-last: ``(N, H, W, 3)``, ``(N, H, W, 1)`` or
    ``(N, H, W)`` (grey is replicated to RGB), of any ``H`` and ``W``. Values
    are either integers in 0..255 or floats ``k / 255`` in [0, 1] (what
    ``ToTensor`` produces); other floats are refused rather than rounded.

    Args:
        path: The ``.npy`` or ``.npz`` file.

    Returns:
        A ``Dataset`` with uint8 NHWC RGB images.

    Shape:
        ``(N, H, W[, C]) -> images (N, H, W, 3)``.

    Raises:
        DataError: If the file is missing, unreadable, or its arrays break the rules.
    """
    path = Path(path).expanduser()
    if path.suffix not in (".npy", ".npz") or not path.is_file():
        raise DataError(f"load_array needs an existing .npy or .npz file; got {path}; check the path")
    arrays = _read_arrays(path)
    images = to_uint8_rgb(arrays["images"], str(path))
    n = images.shape[0]
    if "labels" not in arrays:
        return Dataset(images, np.zeros(n, np.int64), _UNLABELLED, f"array file {path}")
    labels = arrays["labels"]
    if "class_names" in arrays:
        names = tuple(str(c) for c in arrays["class_names"].ravel())
    else:
        integral = labels.size and np.issubdtype(labels.dtype, np.integer)
        names = tuple(f"class {i}" for i in range(int(labels.max()) + 1 if integral else 1))
    return Dataset(images, labels, names, f"array file {path}")


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        if path.suffix == ".npy":
            return {"images": np.load(path, allow_pickle=False)}
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(
            f"cannot read {path} ({exc}); save it with np.save/np.savez (no object arrays)"
        ) from None
    if "images" not in arrays:
        others = [k for k in arrays if k not in ("labels", "class_names")]
        if len(others) != 1:
            raise DataError(
                f"{path} must hold an array named 'images' (or exactly one array); "
                f"it holds {sorted(arrays) or 'nothing'}; save with np.savez(path, images=...)"
            )
        arrays["images"] = arrays.pop(others[0])
    return arrays


def to_uint8_rgb(array: np.ndarray, where: str) -> np.ndarray:
    """Convert a channels-last image array to uint8 RGB without losing information.

    Args:
        array: ``(N, H, W)``, ``(N, H, W, 1)`` or ``(N, H, W, 3)``; integers in
            0..255 or floats on the ``k / 255`` grid in [0, 1].
        where: Named in error messages.

    Returns:
        ``uint8`` array ``(N, H, W, 3)``.

    Raises:
        DataError: For other shapes, out-of-range values, or floats off the grid.

    >>> to_uint8_rgb(np.array([[[0.0, 1.0]]]), "demo")[0, 0]
    array([[  0,   0,   0],
           [255, 255, 255]], dtype=uint8)
    """
    a = np.asarray(array)
    if a.ndim == 3:
        a = a[..., None]
    if a.ndim != 4 or a.shape[-1] not in (1, 3):
        hint = " (channels first? use np.moveaxis(a, 1, -1))" if a.ndim == 4 and a.shape[1] in (1, 3) else ""
        raise DataError(
            f"{where}: images must be channels-last (N, H, W, 3), (N, H, W, 1) or (N, H, W); "
            f"got shape {np.shape(array)}{hint}"
        )
    if a.size == 0:
        raise DataError(f"{where}: images has an empty axis {a.shape}; give at least one image")
    a = np.repeat(a, 3, axis=-1) if a.shape[-1] == 1 else a
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    if np.issubdtype(a.dtype, np.integer) or a.dtype == np.bool_:
        return _from_ints(a, where)
    if np.issubdtype(a.dtype, np.floating):
        return _from_floats(a, where)
    raise DataError(f"{where}: images must be integers in 0..255 or floats in [0, 1]; got dtype {a.dtype}")


def _from_ints(a: np.ndarray, where: str) -> np.ndarray:
    lo, hi = int(a.min()), int(a.max())
    if lo < 0 or hi > 255:
        raise DataError(
            f"{where}: integer images must lie in 0..255; got {lo}..{hi}; rescale them to 8 bits first"
        )
    return a.astype(np.uint8)


def _from_floats(a: np.ndarray, where: str) -> np.ndarray:
    wide = a.astype(np.float64)
    if not np.isfinite(wide).all() or wide.min() < 0 or wide.max() > 1:
        raise DataError(
            f"{where}: float images must lie in [0, 1] (ToTensor scale); "
            f"got {np.nanmin(wide)}..{np.nanmax(wide)}; "
            "pass uint8 images instead"
        )
    k = np.rint(wide * 255)
    off_grid = int(np.count_nonzero((k / 255).astype(a.dtype) != a))
    if off_grid:
        raise DataError(
            f"{where}: float images must be exact multiples of 1/255 (as ToTensor makes them), so the "
            f"conversion to uint8 loses nothing; {off_grid} of {a.size} values are not; "
            "round them yourself with (x * 255).round().astype(np.uint8)"
        )
    return k.astype(np.uint8)


def load_image_folder(path: str | os.PathLike[str], *, size: int = 32) -> Dataset:
    """Load every ``.png``/``.jpg``/``.jpeg`` file in a folder (not its subfolders).

    Files are read in sorted name order with Pillow and converted to RGB
    (alpha is dropped, grey is replicated). Each is centre-cropped to the
    largest square, then resized to ``size x size`` with Pillow's bilinear
    filter (antialiased when shrinking, like torchvision's ``Resize`` on PIL
    images). All images get label 0 of the one class ``"image"``;
    ``items`` holds the file names.

    Args:
        path: The folder.
        size: Output side length in pixels.

    Returns:
        A ``Dataset`` of ``(N, size, size, 3)`` uint8 images.

    Raises:
        DataError: If the folder is missing, holds no images, a file cannot be
            decoded, or Pillow is not installed.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise DataError(f"size must be a positive integer number of pixels; got {size!r}; pass e.g. 32")
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise DataError(f"image folder {folder} does not exist or is not a folder; check --data")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        count = sum(1 for _ in folder.iterdir())
        raise DataError(
            f"image folder {folder} holds no {'/'.join(IMAGE_SUFFIXES)} files ({count} other entries); "
            "put PNG or JPEG images directly in it"
        )
    images = np.stack([_read_image(p, size) for p in files])
    labels = np.zeros(len(files), np.int64)
    return Dataset(images, labels, _UNLABELLED, f"image folder {folder}", tuple(p.name for p in files))


def _read_image(path: Path, size: int) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError:
        raise DataError("reading an image folder needs Pillow; run `pip install pillow`") from None
    try:
        with Image.open(path) as im:
            rgb = im.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot decode {path} ({exc}); remove it or re-save it as PNG") from None
    w, h = rgb.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    square = rgb.crop((left, top, left + side, top + side))
    return np.asarray(square.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)
