"""The one data type every loader returns, and the one error every loader raises.

Kept apart from ``convbridge.data.__init__`` so the loader modules can import
it without a circular import.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from convbridge.errors import ConvBridgeError

__all__ = ["DataError", "Dataset"]


class DataError(ConvBridgeError):
    """A data set is missing, corrupt, or has the wrong shape or type.

    The message states the rule, the values (paths, checksums, shapes) and a fix.
    """


@dataclass(frozen=True, eq=False)
class Dataset:
    """A small labelled image set in the layout CIFAR-10 uses on disk.

    Attributes:
        images: ``uint8`` array of shape ``(N, H, W, 3)`` (NHWC, RGB, 0..255).
        labels: ``int64`` array of shape ``(N,)``; each value indexes ``class_names``.
        class_names: One name per class, e.g. ``("airplane", ..., "truck")``.
        source: One line saying where the images came from.
        items: Optional per-image descriptions (file names, crop boxes);
            empty, or one string per image.
        values: Optional float32 ``(N, 3, H, W)``: the model input itself, for float data that 8-bit images
            cannot hold (``images`` is then its 8-bit preview for pictures); ``None`` means
            ``normalize(images)``.

    Shape:
        ``images``: ``(N, H, W, 3)``; ``labels``: ``(N,)`` with ``N >= 1``.

    Raises:
        DataError: If the arrays break any of the rules above.

    >>> import numpy as np
    >>> ds = Dataset(np.zeros((2, 32, 32, 3), np.uint8), np.array([0, 1]), ("a", "b"), "demo")
    >>> len(ds), ds.head(1).images.shape
    (2, (1, 32, 32, 3))
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    source: str
    items: tuple[str, ...] = ()
    values: np.ndarray | None = None

    def __post_init__(self) -> None:
        _check_images(self.images, self.source)
        n = self.images.shape[0]
        if self.values is not None and (self.values.dtype != np.float32 or self.values.shape != (
                n, 3, *self.images.shape[1:3])):
            raise DataError(f"{self.source}: values must be float32 of shape {(n, 3, *self.images.shape[1:3])} "
                            f"(NCHW, matching images); got {self.values.dtype} {self.values.shape}")
        names = tuple(str(name) for name in self.class_names)
        if not names:
            raise DataError(f"{self.source}: class_names is empty; give at least one class name")
        object.__setattr__(self, "class_names", names)
        object.__setattr__(self, "labels", _check_labels(self.labels, n, names, self.source))
        items = tuple(str(item) for item in self.items)
        if items and len(items) != n:
            raise DataError(
                f"{self.source}: items has {len(items)} entries but there are {n} images; "
                "give one description per image or none"
            )
        object.__setattr__(self, "items", items)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def head(self, n: int) -> Dataset:
        """Return the first ``n`` images (all of them if there are fewer).

        Args:
            n: How many images to keep; at least 1.

        Returns:
            A new ``Dataset`` sharing memory with this one.

        Raises:
            DataError: If ``n`` is not a positive integer.
        """
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise DataError(f"head(n) needs a positive integer n; got {n!r}; pass e.g. 32")
        n = int(n)
        return self.slice(0, n)

    def slice(self, start: int, stop: int) -> Dataset:
        """Images ``start:stop`` (labels, items and values along), sharing memory with this set."""
        return replace(self, images=self.images[start:stop], labels=self.labels[start:stop],
                       items=self.items[start:stop], values=None if self.values is None else self.values[start:stop])


def _check_images(images: object, source: str) -> None:
    if not isinstance(images, np.ndarray):
        raise DataError(f"{source}: images must be a numpy array; got {type(images).__name__}")
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise DataError(
            f"{source}: images must be uint8 of shape (N, H, W, 3); "
            f"got {images.dtype} of shape {images.shape}; convert to RGB uint8 NHWC"
        )
    if min(images.shape) == 0:
        raise DataError(f"{source}: images has an empty axis {images.shape}; give at least one 1x1 image")


def _check_labels(labels: object, n: int, names: tuple[str, ...], source: str) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.shape != (n,) or not np.issubdtype(arr.dtype, np.integer):
        raise DataError(
            f"{source}: labels must be integers of shape ({n},), one per image; "
            f"got {arr.dtype} of shape {arr.shape}"
        )
    arr = arr.astype(np.int64, copy=False)
    if arr.min() < 0 or arr.max() >= len(names):
        raise DataError(
            f"{source}: labels must lie in 0..{len(names) - 1} ({len(names)} class names); "
            f"got values in {arr.min()}..{arr.max()}; fix the labels or the class names"
        )
    return arr
