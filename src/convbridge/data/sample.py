"""The embedded sample: 32 small photographs shipped inside the package.

Used when CIFAR-10 is not on disk, so ``convbridge compare`` always has real
images to run on. The images are 32x32 crops of scikit-image's bundled sample
photographs (public domain / CC0; see ``SAMPLE_PROVENANCE.md``), made by
``scripts/make_sample.py``. scikit-image is not needed to read them.
"""

from __future__ import annotations

from importlib import resources

import numpy as np

from convbridge.data.dataset import DataError, Dataset

__all__ = ["SAMPLE_FILE", "SAMPLE_SOURCE", "load_sample"]

SAMPLE_FILE = "sample_images.npz"
SAMPLE_SOURCE = "embedded sample (32 images from scikit-image sample photographs)"


def load_sample() -> Dataset:
    """Load the embedded sample.

    Returns:
        A ``Dataset`` of 32 RGB images with labels into the sample's own class
        names (``person``, ``cat``, ``coffee``, ...); ``items`` names the
        source photograph and crop box of each image.

    Shape:
        ``images``: ``(32, 32, 32, 3)`` uint8; ``labels``: ``(32,)`` int64.

    Raises:
        DataError: If the packaged file is missing or damaged.

    >>> ds = load_sample()
    >>> ds.images.shape, ds.class_names[:2]
    ((32, 32, 32, 3), ('person', 'cat'))
    """
    resource = resources.files(__package__).joinpath(SAMPLE_FILE)
    try:
        with resource.open("rb") as f, np.load(f, allow_pickle=False) as npz:
            images, labels = npz["images"], npz["labels"]
            class_names = tuple(str(c) for c in npz["class_names"])
            items = tuple(str(s) for s in npz["sources"])
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(
            f"the embedded sample {resource} is missing or damaged ({exc}); "
            "reinstall convbridge, or rebuild it with scripts/make_sample.py"
        ) from None
    return Dataset(images, labels, class_names, SAMPLE_SOURCE, items)
