"""Tests for convbridge.data: CIFAR-10 reading and download, the embedded sample,
user arrays and image folders, the dispatcher, and normalize.

CIFAR-10 is never downloaded: a few-image archive is built in the published
format (Python 2 cPickle protocol 2 pickles inside ``cifar-10-batches-py/`` in
a tar.gz) and the published MD5 sums are overridden with its own.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import struct
import subprocess
import sys
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from convbridge.data import (
    DataError,
    Dataset,
    download_cifar10,
    load_array,
    load_cifar10,
    load_dataset,
    load_image_folder,
    load_sample,
    normalize,
)
from convbridge.errors import ConvBridgeError

LABEL_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
ARCHIVE = "cifar-10-python.tar.gz"
FOLDER = "cifar-10-batches-py"
N_TEST, N_TRAIN = 4, 2  # images per synthetic batch
PUBLISHED_ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"


# --------------------------------------------------------------------------- synthetic CIFAR-10


class Py2Pickler(pickle._Pickler):
    """Write what Python 2's cPickle wrote at protocol 2: every str as a byte string
    (SHORT_BINSTRING/BINSTRING) and NumPy's ``numpy.core.multiarray`` globals."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_str8(self, obj):
        raw = obj.encode("latin-1") if isinstance(obj, str) else bytes(obj)
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[str] = save_str8
    dispatch[bytes] = save_str8

    def save_global(self, obj, name=None):
        module = {"numpy._core.multiarray": "numpy.core.multiarray"}.get(obj.__module__, obj.__module__)
        self.write(pickle.GLOBAL + f"{module}\n{name or obj.__qualname__}\n".encode())
        self.memoize(obj)


def py2_pickle(obj) -> bytes:
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def batch_data(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 3072), dtype=np.uint8)


def batch_blobs() -> dict[str, bytes]:
    """The seven pickles; batch k's images are batch_data(k, n), label i of batch k is (k + i) % 10."""
    test = batch_data(0, N_TEST)
    test[1, 0 * 1024 + 3 * 32 + 5] = 200  # R plane, row 3, col 5 of image 1
    test[1, 1 * 1024 + 3 * 32 + 5] = 100  # G
    test[1, 2 * 1024 + 3 * 32 + 5] = 50  # B
    blobs = {"test_batch": _batch(test, 0, "testing batch 1 of 1")}
    for k in range(1, 6):
        blobs[f"data_batch_{k}"] = _batch(batch_data(k, N_TRAIN), k, f"training batch {k} of 5")
    meta = {"num_cases_per_batch": N_TEST, "label_names": LABEL_NAMES, "num_vis": 3072}
    blobs["batches.meta"] = py2_pickle(meta)
    return blobs


def _batch(data: np.ndarray, k: int, label: str) -> bytes:
    n = len(data)
    return py2_pickle(
        {
            "batch_label": label,
            "labels": [(k + i) % 10 for i in range(n)],
            "data": data,
            "filenames": [f"img_{k}_{i}.png" for i in range(n)],
        }
    )


@pytest.fixture(scope="module")
def blobs() -> dict[str, bytes]:
    return batch_blobs()


@pytest.fixture
def cifar(tmp_path, blobs):
    """tmp_path/tar/cifar-10-python.tar.gz, tmp_path/folder/cifar-10-batches-py/*, and their MD5 sums."""
    folder = tmp_path / "folder" / FOLDER
    folder.mkdir(parents=True)
    (tmp_path / "tar").mkdir()
    archive = tmp_path / "tar" / ARCHIVE
    with tarfile.open(archive, "w:gz") as tar:
        for name, blob in {"readme.html": b"<html/>", **blobs}.items():
            (folder / name).write_bytes(blob)
            info = tarfile.TarInfo(f"{FOLDER}/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    md5 = {name: hashlib.md5(blob).hexdigest() for name, blob in blobs.items()}
    md5[ARCHIVE] = hashlib.md5(archive.read_bytes()).hexdigest()
    return {"archive": archive, "folder": folder, "md5": md5, "tmp": tmp_path}


# --------------------------------------------------------------------------- CIFAR-10 loading


@pytest.mark.parametrize("where", ["archive file", "root with archive", "root with folder", "folder itself"])
def test_load_cifar10_from_every_location(cifar, where):
    root = {
        "archive file": cifar["archive"],
        "root with archive": cifar["archive"].parent,
        "root with folder": cifar["folder"].parent,
        "folder itself": cifar["folder"],
    }[where]
    ds = load_cifar10(root, md5=cifar["md5"])
    assert ds.images.shape == (N_TEST, 32, 32, 3) and ds.images.dtype == np.uint8
    assert ds.labels.tolist() == [0, 1, 2, 3] and ds.labels.dtype == np.int64
    assert ds.class_names == tuple(LABEL_NAMES)
    assert ds.items == tuple(f"img_0_{i}.png" for i in range(N_TEST))
    assert "CIFAR-10 test split" in ds.source


def test_cifar10_pixel_layout(cifar):
    ds = load_cifar10(cifar["archive"], md5=cifar["md5"])
    assert ds.images[1, 3, 5].tolist() == [200, 100, 50]
    data = pickle.loads(batch_blobs()["test_batch"], encoding="bytes")[b"data"]
    i, y, x, c = np.indices(ds.images.shape)
    np.testing.assert_array_equal(ds.images, data[i, c * 1024 + y * 32 + x])


def test_cifar10_train_split_concatenates_batches_in_order(cifar):
    ds = load_cifar10(cifar["folder"], "train", md5=cifar["md5"])
    assert ds.images.shape == (5 * N_TRAIN, 32, 32, 3)
    for k in range(1, 6):
        rows = slice((k - 1) * N_TRAIN, k * N_TRAIN)
        expected = batch_data(k, N_TRAIN).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        np.testing.assert_array_equal(ds.images[rows], expected)
        assert ds.labels[rows].tolist() == [k % 10, (k + 1) % 10]
    assert ds.items[:3] == ("img_1_0.png", "img_1_1.png", "img_2_0.png")


def test_cifar10_tar_and_folder_agree(cifar):
    a = load_cifar10(cifar["archive"], "train", md5=cifar["md5"])
    b = load_cifar10(cifar["folder"], "train", md5=cifar["md5"])
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)


def test_archive_md5_mismatch_names_both_sums(cifar):
    actual = cifar["md5"][ARCHIVE]
    message = f"MD5 mismatch for .*{ARCHIVE}: expected {PUBLISHED_ARCHIVE_MD5}, got {actual}; .*download again"
    with pytest.raises(DataError, match=message):
        load_cifar10(cifar["archive"])  # the published sum, not the synthetic one


def test_folder_md5_mismatch_names_the_batch(cifar):
    sums = {**cifar["md5"], "test_batch": "0" * 32}
    message = f"MD5 mismatch for .*test_batch: expected {'0' * 32}, got {cifar['md5']['test_batch']}"
    with pytest.raises(DataError, match=message):
        load_cifar10(cifar["folder"], md5=sums)
    load_cifar10(cifar["folder"], md5=sums, verify=False)  # verify=False skips the check


def test_truncated_pickle_raises_data_error(cifar):
    path = cifar["folder"] / "test_batch"
    path.write_bytes(path.read_bytes()[:5000])
    sums = {**cifar["md5"], "test_batch": hashlib.md5(path.read_bytes()).hexdigest()}
    message = r"cannot unpickle .*test_batch \(.*\); the file is truncated or corrupt; delete it and download again"
    with pytest.raises(DataError, match=message):
        load_cifar10(cifar["folder"], md5=sums)


def test_truncated_archive_raises_data_error(cifar):
    archive = cifar["archive"]
    archive.write_bytes(archive.read_bytes()[:300])
    with pytest.raises(DataError, match=r"cannot read the archive .*truncated or not a tar.gz"):
        load_cifar10(archive, verify=False)


def test_pickle_with_foreign_global_is_refused(cifar):
    path = cifar["folder"] / "test_batch"
    path.write_bytes(b"cos\nsystem\n(S'echo pwned'\ntR.")
    with pytest.raises(DataError, match=r"cannot unpickle .*global os.system is not allowed"):
        load_cifar10(cifar["folder"], verify=False)


def test_missing_cifar10_says_where_it_looked(tmp_path):
    message = rf"no CIFAR-10 found under {tmp_path} \(looked for .*{FOLDER}, .*{ARCHIVE}\); run .*--download"
    with pytest.raises(DataError, match=message):
        load_cifar10(tmp_path)


def test_missing_batch_in_folder(cifar):
    (cifar["folder"] / "data_batch_3").unlink()
    with pytest.raises(DataError, match="lacks data_batch_3; the extraction is incomplete"):
        load_cifar10(cifar["folder"], "train", md5=cifar["md5"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"split": "valid"}, r"split must be one of 'test', 'train'; got 'valid'"),
        ({"md5": {"test.bin": "0" * 32}}, r"md5 override for unknown file 'test.bin'; known files: cifar-10-"),
        ({"md5": {"test_batch": "xyz"}}, r"md5 override for 'test_batch' must be 32 hex digits; got 'xyz'"),
    ],
)
def test_bad_arguments(cifar, kwargs, message):
    with pytest.raises(DataError, match=message):
        load_cifar10(cifar["folder"], **kwargs)


def test_data_error_is_a_convbridge_error():
    assert issubclass(DataError, ConvBridgeError) and issubclass(DataError, ValueError)


# --------------------------------------------------------------------------- download


class StubResponse(io.BytesIO):
    def __init__(self, payload: bytes, fail_after: int | None = None):
        super().__init__(payload)
        self.headers = {"Content-Length": str(len(payload))}
        self.fail_after = fail_after

    def read(self, n=-1):
        if self.fail_after is not None and self.tell() >= self.fail_after:
            raise TimeoutError("timed out")
        return super().read(n)


def test_download_writes_verified_archive(cifar):
    payload, calls = cifar["archive"].read_bytes(), []

    def opener(url, timeout):
        calls.append((url, timeout))
        return StubResponse(payload)

    root = cifar["tmp"] / "dl"
    path = download_cifar10(root, opener=opener, md5=cifar["md5"], progress=True, timeout=1.5)
    assert path == root / ARCHIVE and path.read_bytes() == payload
    assert calls == [("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", 1.5)]
    assert sorted(p.name for p in root.iterdir()) == [ARCHIVE]
    assert load_cifar10(root, md5=cifar["md5"]).images.shape == (N_TEST, 32, 32, 3)
    download_cifar10(root, opener=None, md5=cifar["md5"])  # already there: no network call


def test_download_without_network_leaves_nothing(tmp_path):
    def opener(url, timeout):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    message = (
        r"could not reach https://www.cs.toronto.edu/.* \(\[Errno -3\] Temporary failure in name resolution\); "
        r"download it elsewhere and pass --root DIR"
    )
    with pytest.raises(DataError, match=message):
        download_cifar10(tmp_path, opener=opener, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_download_broken_transfer_leaves_nothing(cifar):
    payload, root = cifar["archive"].read_bytes(), cifar["tmp"] / "dl"
    with pytest.raises(DataError, match=r"download from .* broke off \(timed out\); try again"):
        download_cifar10(
            root, opener=lambda url, timeout: StubResponse(payload, 100), md5=cifar["md5"], progress=False
        )
    assert list(root.iterdir()) == []


def test_download_md5_mismatch_leaves_nothing(tmp_path):
    bad = hashlib.md5(b"<html>moved</html>").hexdigest()
    message = f"MD5 mismatch for the download .*: expected {PUBLISHED_ARCHIVE_MD5}, got {bad}"
    with pytest.raises(DataError, match=message):
        download_cifar10(tmp_path, opener=lambda url, timeout: StubResponse(b"<html>moved</html>"))
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- embedded sample


def test_sample_shape_labels_and_content():
    ds = load_sample()
    assert ds.images.shape == (32, 32, 32, 3) and ds.images.dtype == np.uint8
    assert ds.labels.shape == (32,) and ds.labels.dtype == np.int64
    assert ds.class_names and all(ds.class_names)
    assert set(ds.labels.tolist()) == set(range(len(ds.class_names)))  # every class used
    assert ds.source == "embedded sample (32 images from scikit-image sample photographs)"
    assert len(ds.items) == 32 and all(item.startswith("skimage.data.") for item in ds.items)
    flat = ds.images.reshape(32, -1)
    assert len({row.tobytes() for row in flat}) == 32  # no two images alike
    assert (flat.std(axis=1) > 5).all()  # none is blank
    assert (ds.images.max(axis=(1, 2)) > ds.images.min(axis=(1, 2))).any(axis=1).all()


def test_sample_known_pixels():
    ds = load_sample()
    assert ds.class_names[ds.labels[0]] == "person" and ds.items[0].startswith("skimage.data.astronaut()")
    assert ds.class_names[ds.labels[4]] == "space"
    assert ds.images[4].mean() < 60  # the deep field is mostly black
    red, green, blue = ds.images[6].reshape(-1, 3).mean(axis=0)  # retina: red-orange
    assert red > green > blue


# --------------------------------------------------------------------------- normalize


def test_normalize_matches_totensor_normalize_exactly():
    x = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)
    t = (x.astype(np.float64) / 255).astype(np.float32)  # float64 then one rounding == float32 division
    expected = ((t.astype(np.float64) - 0.5) / 0.5).astype(np.float32).transpose(0, 3, 1, 2)
    out = normalize(x)
    assert out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, expected)
    assert out[0, 0, 0, 0] == -1.0 and out[0, 0, 15, 15] == 1.0


def test_normalize_moves_channels_first():
    x = np.zeros((2, 4, 6, 3), np.uint8)
    x[1, 3, 5, 2] = 255
    out = normalize(x)
    assert out.shape == (2, 3, 4, 6)
    assert out[1, 2, 3, 5] == 1.0 and np.count_nonzero(out == 1.0) == 1


def test_normalize_rejects_floats():
    message = r"normalize needs uint8 images of shape \(N, H, W, C\); got float32 of shape \(1, 2, 2, 3\)"
    with pytest.raises(DataError, match=message):
        normalize(np.zeros((1, 2, 2, 3), np.float32))


# --------------------------------------------------------------------------- arrays and folders


def test_load_array_npy_and_npz(tmp_path):
    images = np.random.default_rng(1).integers(0, 256, (3, 8, 9, 3), dtype=np.uint8)
    np.save(tmp_path / "a.npy", images)
    ds = load_array(tmp_path / "a.npy")
    np.testing.assert_array_equal(ds.images, images)
    assert ds.labels.tolist() == [0, 0, 0] and ds.class_names == ("image",)
    names = np.array(["x", "y", "z"])
    np.savez(tmp_path / "b.npz", images=images, labels=np.array([2, 0, 1]), class_names=names)
    ds = load_array(tmp_path / "b.npz")
    assert ds.labels.tolist() == [2, 0, 1] and ds.class_names == ("x", "y", "z")
    np.savez(tmp_path / "c.npz", pics=images, labels=np.array([0, 4, 1]))
    assert load_array(tmp_path / "c.npz").class_names == tuple(f"class {i}" for i in range(5))


def test_load_array_converts_grey_and_totensor_floats(tmp_path):
    grey = np.array([[[0, 255], [17, 128]]], np.uint8)
    np.save(tmp_path / "g.npy", grey)
    assert load_array(tmp_path / "g.npy").images[0, 1, 0].tolist() == [17, 17, 17]
    floats = (np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1) / np.float32(255)).astype(np.float32)
    np.save(tmp_path / "f.npy", floats)
    images = load_array(tmp_path / "f.npy").images
    np.testing.assert_array_equal(images[..., 0], np.arange(256).reshape(1, 16, 16))


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.full((1, 2, 2, 3), 2.0), r"float images in 2..2 fit no scale .*pass --data-scale normalized"),
        (np.full((1, 2, 2, 3), 300, np.int16), r"integer images must lie in 0..255; got 300..300"),
        (
            np.where(np.arange(12).reshape(1, 2, 2, 3) == 4, np.nan, 0.5),
            r"images hold 1 NaN or infinite values of 12; clean them first",
        ),
        (np.zeros((2, 3, 8, 3), np.uint8), r"images of shape \(2, 3, 8, 3\) read as NHWC or as NCHW; say which"),
        (np.zeros((2, 5, 8, 8), np.uint8), r"images must be \(N, H, W, C\) or \(N, C, H, W\) with 1 or 3"),
        (np.array([[["a"]]]), r"images must be integers in 0..255 or floats; got dtype <U1"),
    ],
)
def test_load_array_rejects(tmp_path, array, message):
    np.save(tmp_path / "x.npy", array)
    with pytest.raises(DataError, match=message):
        load_array(tmp_path / "x.npy")


def test_load_array_reads_nchw_and_every_scale(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (2, 5, 6, 3), np.uint8)
    np.save(tmp_path / "nchw.npy", pixels.transpose(0, 3, 1, 2))  # the library's own default layout
    ds = load_array(tmp_path / "nchw.npy")
    np.testing.assert_array_equal(ds.images, pixels)
    np.save(tmp_path / "tt.npy", (pixels / np.float32(255)).astype(np.float32).transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(load_array(tmp_path / "tt.npy").images, pixels)  # ToTensor output, exact
    unit = rng.random((2, 3, 5, 6)).astype(np.float32)  # off the 1/255 grid: ToTensor scale, not pixels
    np.save(tmp_path / "unit.npy", unit)
    ds = load_array(tmp_path / "unit.npy")
    np.testing.assert_allclose(ds.values, (unit - 0.5) / 0.5, rtol=0, atol=1e-7)
    normed = (unit - 0.5) / 0.5
    np.save(tmp_path / "norm.npy", normed)
    np.testing.assert_array_equal(load_array(tmp_path / "norm.npy").values, normed)  # used as they are
    np.save(tmp_path / "wide.npy", normed * 3)
    np.testing.assert_array_equal(load_array(tmp_path / "wide.npy", scale="normalized").values, normed * 3)
    with pytest.raises(DataError, match=r"--data-scale unit needs floats in \[0, 1\]; got -0.9\d+..0.9\d+"):
        load_array(tmp_path / "norm.npy", scale="unit")
    with pytest.raises(DataError, match=r"integer images are 8-bit pixels; --data-scale unit is for floats"):
        load_array(tmp_path / "nchw.npy", scale="unit")
    np.testing.assert_array_equal(load_array(tmp_path / "nchw.npy", layout="NCHW").images, pixels)


def test_load_array_layout_settles_ambiguous_shapes(tmp_path):
    a = np.arange(2 * 3 * 4 * 3, dtype=np.uint8).reshape(2, 3, 4, 3)
    np.save(tmp_path / "a.npy", a)
    np.testing.assert_array_equal(load_array(tmp_path / "a.npy", layout="NHWC").images, a)
    np.testing.assert_array_equal(load_array(tmp_path / "a.npy", layout="NCHW").images, a.transpose(0, 2, 3, 1))
    with pytest.raises(DataError, match=r"--data-layout is one of auto, NHWC, NCHW and --data-scale one of"):
        load_array(tmp_path / "a.npy", layout="CHW")


def test_array_files_are_sized_from_their_headers_before_reading(tmp_path):
    from convbridge.memory import MemoryLimitError, limit

    with (tmp_path / "huge.npy").open("wb") as f:  # 128 bytes that claim 279 TiB
        np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False,
                                                 "shape": (100_000_000_000, 3, 32, 32)})
    with pytest.raises(DataError, match=r"declares shape \(100000000000, 3, 32, 32\) uint8 \(279 TiB\) but holds"):
        load_array(tmp_path / "huge.npy")
    np.savez_compressed(tmp_path / "many.npz", images=np.zeros((2000, 3, 32, 32), np.uint8))  # 18 KB on disk
    with limit("8MiB"), pytest.raises(MemoryLimitError, match=r"reading .*many.npz \(images \(2000, 3, 32, 32\)\)"):
        load_array(tmp_path / "many.npz")
    assert len(load_array(tmp_path / "many.npz")) == 2000
    np.save(tmp_path / "f64.npy", np.full((2, 3, 4, 4), 1e300))
    with pytest.raises(DataError, match=r"values up to 1e\+300 do not fit float32"):
        load_array(tmp_path / "f64.npy", scale="normalized")
    with pytest.raises(DataError, match="--data is empty"):
        load_dataset("  ")


def test_load_image_folder(tmp_path):
    from PIL import Image

    wide = np.zeros((32, 48, 3), np.uint8)
    wide[:, 8:40] = (10, 200, 30)  # centre square is uniform green; the side bands get cropped away
    Image.fromarray(wide).save(tmp_path / "b_wide.png")
    Image.fromarray(np.full((64, 64), 77, np.uint8), mode="L").save(tmp_path / "a_grey.PNG")
    (tmp_path / "notes.txt").write_text("not an image")
    ds = load_image_folder(tmp_path)
    assert ds.items == ("a_grey.PNG", "b_wide.png")
    assert ds.images.shape == (2, 32, 32, 3) and ds.class_names == ("image",)
    assert (ds.images[0] == 77).all()
    assert (ds.images[1] == (10, 200, 30)).all()


def test_load_image_folder_errors(tmp_path):
    with pytest.raises(DataError, match=r"holds no .png/.jpg/.jpeg files \(0 other entries\)"):
        load_image_folder(tmp_path)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match=r"cannot decode .*broken.png"):
        load_image_folder(tmp_path)


def test_dataset_validates_labels():
    with pytest.raises(DataError, match=r"labels must lie in 0..1 \(2 class names\); got values in 0..2"):
        Dataset(np.zeros((3, 2, 2, 3), np.uint8), np.array([0, 1, 2]), ("a", "b"), "demo")


# --------------------------------------------------------------------------- load_dataset


def test_load_dataset_auto_falls_back_to_sample_with_one_notice(tmp_path, monkeypatch):
    import convbridge.data as data

    monkeypatch.setattr(data, "default_roots", lambda: (tmp_path, tmp_path / "data"))
    notes = []
    ds = load_dataset(notice=notes.append)
    assert ds.source.startswith("embedded sample") and len(notes) == 1
    assert notes[0].startswith(f"CIFAR-10 not found under {tmp_path}, {tmp_path / 'data'}; using the embedded sample")


def test_an_explicit_root_never_falls_back_to_the_sample(tmp_path):
    notes = []
    with pytest.raises(DataError, match=r"CIFAR-10 not found under .*; pass --download"):
        load_dataset(root=tmp_path, notice=notes.append)
    with pytest.raises(DataError, match=r"--root '.*nowhere' does not exist; pass the folder that holds"):
        load_dataset(root=tmp_path / "nowhere", notice=notes.append)
    assert notes == []


def test_split_train_needs_cifar10(tmp_path, monkeypatch):
    import convbridge.data as data

    with pytest.raises(DataError, match=r"--split train is a CIFAR-10 split; the embedded sample has one set"):
        load_dataset("sample", split="train")
    monkeypatch.setattr(data, "default_roots", lambda: (tmp_path,))
    with pytest.raises(DataError, match=r"--split train needs CIFAR-10, which is not found under"):
        load_dataset(split="train", notice=print)
    np.save(tmp_path / "x.npy", np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(DataError, match=r"--split train is a CIFAR-10 split; .*x.npy has one set of images"):
        load_dataset(tmp_path / "x.npy", split="train")


def test_load_dataset_auto_prefers_cifar10(cifar):
    notes = []
    ds = load_dataset("auto", root=cifar["archive"].parent, md5=cifar["md5"], notice=notes.append)
    assert "CIFAR-10" in ds.source and notes == []


def test_load_dataset_cifar10_missing_or_downloaded(cifar):
    root = cifar["tmp"] / "empty"
    root.mkdir()
    with pytest.raises(DataError, match=r"CIFAR-10 not found under .*empty; pass --download"):
        load_dataset("cifar10", root=root)
    root.rmdir()  # --download creates the root
    payload = cifar["archive"].read_bytes()
    opener = lambda url, timeout: StubResponse(payload)  # noqa: E731
    ds = load_dataset("cifar10", root=root, md5=cifar["md5"], download=True, progress=False, opener=opener)
    assert len(ds) == N_TEST and (root / ARCHIVE).is_file()


def test_load_dataset_paths(cifar):
    tmp = cifar["tmp"]
    np.save(tmp / "x.npy", np.zeros((2, 4, 4, 3), np.uint8))
    assert load_dataset(tmp / "x.npy").source == f"array file {tmp / 'x.npy'}"
    assert "CIFAR-10" in load_dataset(str(cifar["folder"]), md5=cifar["md5"]).source
    assert "CIFAR-10" in load_dataset(cifar["archive"], md5=cifar["md5"]).source
    with pytest.raises(DataError, match=r"--data 'nope' is not one of auto, cifar10, sample and no such"):
        load_dataset("nope")
    assert len(load_dataset("sample").head(5)) == 5


# --------------------------------------------------------------------------- import hygiene


def test_import_loads_no_heavy_modules():
    code = (
        "import sys, convbridge.data; "
        "bad = sorted({m.split('.')[0] for m in sys.modules} & "
        "{'torch', 'jax', 'matplotlib', 'PIL', 'skimage', 'torchvision'}); print(bad)"
    )
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": src}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "[]"
