"""Regenerate ``src/convbridge/data/sample_images.npz`` from scikit-image's sample photographs.

One-off generator, kept so the embedded sample can be rebuilt and audited. It
needs scikit-image (not a convbridge dependency); the package only reads the
resulting ``.npz``. Every crop is a square box ``[top:top+side, left:left+side]``
of an image bundled with scikit-image, resized to 32x32 with
``skimage.transform.resize(order=1, anti_aliasing=True)`` and rounded to uint8.
Grey images are replicated to RGB. The images are stored class by class in
round-robin order, so any prefix spans many classes (as CIFAR-10's does).

Usage::

    python scripts/make_sample.py [--out src/convbridge/data/sample_images.npz] [--preview sheet.png]

Licences of the source photographs: see ``src/convbridge/data/SAMPLE_PROVENANCE.md``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import skimage
from skimage import data as skdata
from skimage.transform import resize

CLASS_NAMES = ("person", "cat", "coffee", "rocket", "space", "microscopy", "retina", "texture")

# (class, skimage.data function, top, left, side): a square crop in source pixels.
CROPS = (
    ("person", "astronaut", 0, 0, 512),  # whole portrait
    ("person", "astronaut", 10, 145, 170),  # face
    ("person", "astronaut", 0, 40, 420),  # head and shoulders in the suit
    ("person", "camera", 0, 0, 512),  # whole photo (grey)
    ("person", "camera", 50, 150, 190),  # head and video camera (grey)
    ("cat", "chelsea", 0, 75, 300),  # centre square
    ("cat", "chelsea", 70, 120, 100),  # left eye
    ("cat", "chelsea", 170, 200, 120),  # nose and mouth
    ("cat", "chelsea", 30, 190, 220),  # right half of the face
    ("coffee", "coffee", 0, 100, 400),  # cup on saucer
    ("coffee", "coffee", 10, 170, 240),  # cup from above
    ("coffee", "coffee", 215, 310, 120),  # spoon
    ("rocket", "rocket", 0, 109, 427),  # launch pad, rocket centred
    ("rocket", "rocket", 110, 262, 120),  # rocket nose
    ("rocket", "rocket", 100, 172, 300),  # rocket between towers
    ("rocket", "astronaut", 40, 300, 212),  # space-shuttle model behind the astronaut
    ("space", "hubble_deep_field", 0, 64, 872),  # whole field
    ("space", "hubble_deep_field", 400, 650, 150),  # bright orange galaxy, right
    ("space", "hubble_deep_field", 330, 50, 140),  # bright white galaxy, left
    ("space", "hubble_deep_field", 0, 200, 250),  # many small galaxies, top
    ("microscopy", "immunohistochemistry", 0, 0, 512),  # whole slide crop
    ("microscopy", "immunohistochemistry", 300, 240, 190),  # one gland
    ("microscopy", "immunohistochemistry", 195, 190, 100),  # stroma nuclei
    ("microscopy", "immunohistochemistry", 0, 0, 256),  # top-left glands
    ("retina", "retina", 0, 0, 1411),  # whole fundus
    ("retina", "retina", 500, 100, 270),  # optic disc
    ("retina", "retina", 560, 560, 270),  # macula
    ("retina", "retina", 230, 350, 350),  # upper vessels
    ("texture", "brick", 0, 0, 256),  # brick wall (grey)
    ("texture", "grass", 0, 0, 256),  # grass (grey)
    ("texture", "gravel", 0, 0, 256),  # gravel (grey)
    ("texture", "coffee", 0, 450, 150),  # wooden table top
)

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src" / "convbridge" / "data" / "sample_images.npz"


def crop_to_32(name: str, top: int, left: int, side: int) -> np.ndarray:
    """Cut one square box from ``skimage.data.<name>()`` and shrink it to 32x32x3 uint8."""
    image = getattr(skdata, name)()
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    box = image[top : top + side, left : left + side, :3]
    if box.shape[:2] != (side, side):
        box_text = f"{name}[{top}:{top + side}, {left}:{left + side}]"
        raise ValueError(f"crop {box_text} leaves the {image.shape} image; fix its CROPS entry")
    small = resize(box, (32, 32, 3), order=1, anti_aliasing=True, preserve_range=True)
    return np.clip(np.rint(small), 0, 255).astype(np.uint8)


def round_robin(crops: tuple) -> list:
    """Order crops class by class in turn: first of each class, then second of each, ..."""
    by_class = [[c for c in crops if c[0] == name] for name in CLASS_NAMES]
    longest = max(len(group) for group in by_class)
    return [group[i] for i in range(longest) for group in by_class if i < len(group)]


def build() -> dict[str, np.ndarray]:
    """Return the arrays stored in the npz."""
    ordered = round_robin(CROPS)
    images = np.stack([crop_to_32(name, top, left, side) for _, name, top, left, side in ordered])
    labels = np.array([CLASS_NAMES.index(c[0]) for c in ordered], dtype=np.int64)
    sources = np.array(
        [f"skimage.data.{n}() [{t}:{t + s}, {l}:{l + s}]" for _, n, t, l, s in ordered]  # noqa: E741
    )
    return {"images": images, "labels": labels, "class_names": np.array(CLASS_NAMES), "sources": sources}


def save_preview(images: np.ndarray, path: Path, scale: int = 4) -> None:
    """Write a 4x8 contact sheet of the images, enlarged ``scale`` times."""
    from PIL import Image

    sheet = images.reshape(4, 8, 32, 32, 3).transpose(0, 2, 1, 3, 4).reshape(128, 256, 3)
    Image.fromarray(sheet).resize((256 * scale, 128 * scale), Image.Resampling.NEAREST).save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--preview", type=Path, help="also write a contact sheet PNG here")
    args = parser.parse_args()
    arrays = build()
    np.savez_compressed(args.out, **arrays)
    counts = np.bincount(arrays["labels"], minlength=len(CLASS_NAMES))
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes) with scikit-image {skimage.__version__}")
    print(", ".join(f"{name}: {count}" for name, count in zip(CLASS_NAMES, counts)))
    if args.preview:
        save_preview(arrays["images"], args.preview)


if __name__ == "__main__":
    main()
