"""Bring your own images: a ``.npy``/``.npz`` array or a folder of PNG/JPEG files.

Arrays are used at their own size, NHWC or NCHW, as 8-bit pixels, ``ToTensor``-scale
floats or already-normalised floats (:func:`load_array`); folders are centre-cropped
and resized to 32x32 with Pillow (their files differ in size), imported only when a
folder is read.
"""

from __future__ import annotations

import math
import os
import warnings
import zipfile
from pathlib import Path
from typing import IO

import numpy as np

from convbridge import memory
from convbridge.data.dataset import DataError, Dataset

__all__ = ["IMAGE_SUFFIXES", "LAYOUTS", "SCALES", "load_array", "load_image_folder", "to_rgb", "to_uint8_rgb"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_UNLABELLED = ("image",)


#: How ``--data-layout`` reads an array's axes.
LAYOUTS = ("auto", "NHWC", "NCHW")
#: How ``--data-scale`` reads an array's values.
SCALES = ("auto", "uint8", "unit", "normalized")


def load_array(path: str | os.PathLike[str], *, layout: str = "auto", scale: str = "auto") -> Dataset:
    """Load images (and optionally labels) from a ``.npy`` or ``.npz`` file, at their own size.

    A ``.npy`` holds the images. A ``.npz`` holds ``images`` (or a single
    array of any name) and optionally ``labels`` (ints) and ``class_names``
    (strings). Without labels every image gets label 0 of the one class
    ``"image"``; without class names they are ``"class 0"``, ``"class 1"``, ...

    Layout (``layout``): ``(N, H, W, C)`` (``"NHWC"``) or ``(N, C, H, W)`` (``"NCHW"``) with 1 or 3
    channels, or ``(N, H, W)`` grey (replicated to RGB); ``"auto"`` reads the channel axis from the shape and
    asks when both readings fit. Arrays are not resized (image folders are: their files differ in size).

    Values (``scale``):

    - ``"uint8"``: integers in 0..255, or floats ``k / 255`` in [0, 1] (what ``ToTensor`` makes), converted to
      uint8 exactly; the experiment then applies ``ToTensor`` and ``Normalize(0.5, 0.5)`` bit for bit.
    - ``"unit"``: any floats in [0, 1] (``ToTensor`` scale); the experiment applies ``Normalize(0.5, 0.5)``.
    - ``"normalized"``: values already normalised, used as they are.
    - ``"auto"``: integers as ``"uint8"``; floats on the 1/255 grid as ``"uint8"``, other floats in [0, 1] as
      ``"unit"``, floats in [-1, 1] with negatives as ``"normalized"``; anything else is refused (say which).

    Args:
        path: The ``.npy`` or ``.npz`` file.
        layout: ``"auto"``, ``"NHWC"`` or ``"NCHW"``.
        scale: ``"auto"``, ``"uint8"``, ``"unit"`` or ``"normalized"``.

    Returns:
        A ``Dataset`` with uint8 NHWC RGB images (for float data, their 8-bit preview plus the exact float32
        model input in ``values``).

    Shape:
        ``(N, H, W[, C])`` or ``(N, C, H, W) -> images (N, H, W, 3)``.

    Raises:
        DataError: If the file is missing, unreadable, or its arrays break the rules.
    """
    path = Path(path).expanduser()
    if path.suffix not in (".npy", ".npz") or not path.is_file():
        raise DataError(f"load_array needs an existing .npy or .npz file; got {path}; check the path")
    if layout not in LAYOUTS or scale not in SCALES:
        raise DataError(f"--data-layout is one of {', '.join(LAYOUTS)} and --data-scale one of {', '.join(SCALES)}; "
                        f"got {layout!r} and {scale!r}")
    arrays = _read_arrays(path)
    images, values = to_rgb(arrays["images"], str(path), layout, scale)
    n = images.shape[0]
    source = f"array file {path}"
    if "labels" not in arrays:
        return Dataset(images, np.zeros(n, np.int64), _UNLABELLED, source, values=values)
    labels = arrays["labels"]
    if "class_names" in arrays:
        names = tuple(str(c) for c in arrays["class_names"].ravel())
    else:
        integral = labels.size and np.issubdtype(labels.dtype, np.integer)
        names = tuple(f"class {i}" for i in range(int(labels.max()) + 1 if integral else 1))
    return Dataset(images, labels, names, source, values=values)


def _headers(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype, int]]:
    """Name -> (shape, dtype, bytes stored) of each array in a .npy/.npz, read from the headers alone."""
    def header(f: IO[bytes]) -> tuple[tuple[int, ...], np.dtype]:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(f)
        return tuple(shape), dtype

    if path.suffix == ".npy":
        with path.open("rb") as f:
            shape, dtype = header(f)
            return {"images": (shape, dtype, path.stat().st_size - f.tell())}
    found = {}
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            if info.filename.endswith(".npy"):
                with z.open(info) as member:
                    shape, dtype = header(member)
                    found[info.filename[:-4]] = (shape, dtype, info.file_size - member.tell())
    return found


def _check_size(path: Path) -> None:
    """Refuse, before reading, an array file whose headers declare more than it holds or than memory allows."""
    try:
        headers = _headers(path)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return  # np.load says what is wrong
    need = 0
    for name, (shape, dtype, stored) in headers.items():
        size = math.prod(shape) * dtype.itemsize
        if dtype.hasobject:
            continue
        if size > stored:
            raise DataError(f"{path}: {name} declares shape {shape} {dtype} ({memory.describe(size)}) but holds "
                            f"{memory.describe(max(stored, 0))}; the file is truncated or corrupt")
        need += size
        if name == "images" or len(headers) == 1:  # the working copies: uint8 RGB, or float64 and float32 ones
            rgb = math.prod(shape) * (1 if len(shape) == 4 and 3 in (shape[1], shape[-1]) else 3)
            need += rgb * (2 if dtype.kind in "biu" else 40)
    memory.check(need, f"reading {path} ({', '.join(f'{n} {s[0]}' for n, s in headers.items())})",
                 "use a file with fewer images (compare uses the first --batch-size of them unless --all)")


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    _check_size(path)
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


def to_rgb(array: np.ndarray, where: str, layout: str = "auto",
           scale: str = "auto") -> tuple[np.ndarray, np.ndarray | None]:
    """An image array as uint8 RGB NHWC, and for float data 8 bits cannot hold, the float32 NCHW model input.

    See :func:`load_array` for the layouts and scales.

    >>> images, values = to_rgb(np.array([[[0.0, 1.0]]]), "demo")
    >>> images[0, 0].tolist(), values
    ([[0, 0, 0], [255, 255, 255]], None)
    >>> values = to_rgb(np.full((1, 3, 2, 2), 0.3), "demo")[1]  # off the 1/255 grid: unit scale
    >>> values.dtype, values.shape, round(float(values[0, 0, 0, 0]), 6)  # normalised: (0.3 - 0.5) / 0.5
    (dtype('float32'), (1, 3, 2, 2), -0.4)
    """
    a = _channels_last(np.asarray(array), where, layout)
    if np.issubdtype(a.dtype, np.integer) or a.dtype == np.bool_:
        if scale not in ("auto", "uint8"):
            raise DataError(f"{where}: integer images are 8-bit pixels; --data-scale {scale} is for floats")
        return (np.ascontiguousarray(a) if a.dtype == np.uint8 else _from_ints(a, where)), None
    if not np.issubdtype(a.dtype, np.floating):
        raise DataError(f"{where}: images must be integers in 0..255 or floats; got dtype {a.dtype}")
    wide = a.astype(np.float64)
    bad = int(np.count_nonzero(~np.isfinite(wide)))
    if bad:
        raise DataError(f"{where}: images hold {bad} NaN or infinite values of {wide.size}; clean them first")
    lo, hi = float(wide.min()), float(wide.max())
    if scale == "auto":
        on_grid = lo >= 0 and hi <= 1 and np.array_equal((np.rint(wide * 255) / 255).astype(a.dtype), a)
        scale = "uint8" if on_grid else "unit" if lo >= 0 and hi <= 1 else "normalized" if lo >= -1 and hi <= 1 \
            else ""
        if not scale:
            raise DataError(f"{where}: float images in {lo:.4g}..{hi:.4g} fit no scale convbridge can tell: pass "
                            "--data-scale normalized to use them as they are, or rescale them to [0, 1]")
    if scale == "uint8":
        return _from_floats(a, where), None
    if scale == "unit" and (lo < 0 or hi > 1):
        raise DataError(f"{where}: --data-scale unit needs floats in [0, 1]; got {lo:.4g}..{hi:.4g}")
    if scale not in ("unit", "normalized"):
        raise DataError(f"{where}: --data-scale is one of {', '.join(SCALES)}; got {scale!r}")
    big = max(abs(lo), abs(hi))
    if big > float(np.finfo(np.float32).max):
        raise DataError(f"{where}: values up to {big:.3g} do not fit float32, the experiment's dtype (largest "
                        f"{float(np.finfo(np.float32).max):.3g}); rescale them")
    values = wide.transpose(0, 3, 1, 2).astype(np.float32)
    if scale == "unit":
        values = (values - np.float32(0.5)) / np.float32(0.5)
    preview = np.clip(np.rint((values.transpose(0, 2, 3, 1).astype(np.float64) * 0.5 + 0.5) * 255), 0, 255)
    return preview.astype(np.uint8), np.ascontiguousarray(values)


def _channels_last(a: np.ndarray, where: str, layout: str) -> np.ndarray:
    """``(N, H, W, 3)`` from NHWC, NCHW or grey ``(N, H, W)`` (grey channels replicated)."""
    if a.ndim == 3:  # grey (N, H, W): the channel axis is added last, so there is nothing to ask
        a, layout = a[..., None], "NHWC"
    last, first = a.ndim == 4 and a.shape[-1] in (1, 3), a.ndim == 4 and a.shape[1] in (1, 3)
    if layout == "auto":
        if last and first:
            raise DataError(f"{where}: images of shape {a.shape} read as NHWC or as NCHW; say which with "
                            "--data-layout NHWC or --data-layout NCHW")
        layout = "NHWC" if last else "NCHW" if first else ""
    if layout == "NCHW" and first:
        a = a.transpose(0, 2, 3, 1)
    elif layout != "NHWC" or not last:
        raise DataError(f"{where}: images must be (N, H, W, C) or (N, C, H, W) with 1 or 3 channels, or (N, H, W); "
                        f"got shape {a.shape}" + (f" for --data-layout {layout}" if layout else ""))
    if a.size == 0:
        raise DataError(f"{where}: images has an empty axis {a.shape}; give at least one image")
    return np.repeat(a, 3, axis=-1) if a.shape[-1] == 1 else a


def to_uint8_rgb(array: np.ndarray, where: str) -> np.ndarray:
    """8-bit images from an array on the uint8 scale (see :func:`to_rgb`, ``scale="uint8"``).

    >>> to_uint8_rgb(np.array([[[0.0, 1.0]]]), "demo")[0, 0].tolist()
    [[0, 0, 0], [255, 255, 255]]
    """
    return to_rgb(array, where, "auto", "uint8")[0]


def _from_ints(a: np.ndarray, where: str) -> np.ndarray:
    lo, hi = int(a.min()), int(a.max())
    if lo < 0 or hi > 255:
        raise DataError(
            f"{where}: integer images must lie in 0..255; got {lo}..{hi}; rescale them to 8 bits first"
        )
    return a.astype(np.uint8)


def _from_floats(a: np.ndarray, where: str) -> np.ndarray:
    wide = a.astype(np.float64)
    if wide.min() < 0 or wide.max() > 1:
        raise DataError(
            f"{where}: uint8-scale float images must lie in [0, 1] (ToTensor scale); got {wide.min()}..{wide.max()}; "
            "pass --data-scale normalized for normalised data"
        )
    k = np.rint(wide * 255)
    off_grid = int(np.count_nonzero((k / 255).astype(a.dtype) != a))
    if off_grid:
        raise DataError(
            f"{where}: float images must be exact multiples of 1/255 (as ToTensor makes them), so the "
            f"conversion to uint8 loses nothing; {off_grid} of {a.size} values are not; "
            "pass --data-scale unit to use them as they are"
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
        with warnings.catch_warnings():  # a large photo is fine (it becomes 32x32); PIL refuses real bombs
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                rgb = im.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot decode {path} ({exc}); remove it or re-save it as PNG") from None
    w, h = rgb.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    square = rgb.crop((left, top, left + side, top + side))
    return np.asarray(square.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)
