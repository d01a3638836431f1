"""float16 and bfloat16 keep their dtype on every backend, from every framework, and the precision each backend
reports says what it computed (measured here: a float32 accumulation rounded once gives the correctly rounded
value almost everywhere, an accumulation in the 16-bit dtype does not)."""

from __future__ import annotations

import numpy as np
import pytest

import convbridge as cb
from convbridge.arrays import dtype_name, framework_of, to_numpy

ml_dtypes = pytest.importorskip("ml_dtypes")

BACKENDS = cb.available_backends()
DTYPES = ("bfloat16", "float16")
OPS = ("conv", "conv_transpose", "unfold", "fold")
ROUNDED_ONCE = "computed in float32 and rounded to"


def _numpy_dtype(dtype: str) -> np.dtype:
    return np.dtype(ml_dtypes.bfloat16 if dtype == "bfloat16" else np.float16)


def _as(framework: str, a: np.ndarray, dtype: str):
    """``a`` (float64) rounded to ``dtype``, as ``framework``'s array."""
    if framework == "torch":
        torch = pytest.importorskip("torch")
        return torch.from_numpy(a.astype(np.float32)).to(getattr(torch, dtype))
    if framework == "jax":
        jnp = pytest.importorskip("jax.numpy")
        return jnp.asarray(a.astype(np.float32), dtype=getattr(jnp, dtype))
    return a.astype(_numpy_dtype(dtype))


def _inputs(op: str, rng: np.random.Generator, channels: int = 3) -> tuple[tuple[np.ndarray, ...], dict]:
    """float64 arrays and keywords of one small case of ``op`` (bias included where the op takes one)."""
    if op == "conv":
        arrays = (rng.standard_normal((2, channels, 6, 5)), rng.standard_normal((4, channels, 3, 2)),
                  rng.standard_normal(4))
        return arrays, dict(padding=1, stride=(1, 2))
    if op == "conv_transpose":
        arrays = (rng.standard_normal((2, channels, 4, 5)), rng.standard_normal((channels, 2, 3, 3)),
                  rng.standard_normal(2))
        return arrays, dict(stride=2, padding=1)
    if op == "unfold":
        return (rng.standard_normal((2, channels, 5, 6)),), dict(kernel_size=(2, 3), padding=1)
    return (rng.standard_normal((2, channels * 4, 12)),), dict(output_size=(5, 6), kernel_size=(2, 2), stride=(1, 2))


def _call(op: str, arrays, kw: dict, backend: str):
    return getattr(cb, op)(*arrays, backend=backend, **kw)


def _reference(op: str, arrays, kw: dict) -> tuple[np.ndarray, np.ndarray]:
    """The float64 result and the gauge (the op on absolute values), from the NumPy backend."""
    ref = _call(op, arrays, kw, "numpy")
    gauge = _call(op, [np.abs(a) for a in arrays], kw, "numpy")
    return np.asarray(ref), np.asarray(gauge)


def _rounded(arrays: tuple[np.ndarray, ...], dtype: str) -> tuple[np.ndarray, ...]:
    """The float64 values the 16-bit inputs really hold."""
    return tuple(a.astype(_numpy_dtype(dtype)).astype(np.float64) for a in arrays)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("framework", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", OPS)
def test_dtype_kept_and_values_close(op, dtype, framework, backend):
    arrays, kw = _inputs(op, np.random.default_rng(OPS.index(op)))
    exact = _rounded(arrays, dtype)
    y = _call(op, [_as(framework, a, dtype) for a in exact], kw, backend)
    assert framework_of(y) == backend
    assert dtype_name(y) == dtype, f"{framework} {dtype} on the {backend} backend gave {dtype_name(y)}"
    if backend == "numpy":
        assert y.dtype == _numpy_dtype(dtype)
    ref, gauge = _reference(op, exact, kw)
    got = to_numpy(y).astype(np.float64)
    if op == "unfold":  # copies only: bit for bit
        np.testing.assert_array_equal(got, ref)
    else:
        excess = np.abs(got - ref) - 2e-2 * gauge
        assert excess.max() <= 0, f"worst excess {excess.max():.3g} over 2e-2 of the gauge"


def test_torch_bfloat16_on_jax_stays_bfloat16():
    torch = pytest.importorskip("torch")
    jnp = pytest.importorskip("jax.numpy")
    (x, w, _), _ = _inputs("conv", np.random.default_rng(7))
    x, w = _rounded((x, w), "bfloat16")
    y = cb.conv(torch.from_numpy(x).to(torch.bfloat16), torch.from_numpy(w).to(torch.bfloat16), backend="jax")
    assert framework_of(y) == "jax" and y.dtype == jnp.bfloat16
    want = cb.conv(x.astype(np.float32), w.astype(np.float32)).astype(ml_dtypes.bfloat16)
    assert np.mean(np.asarray(y) == want) > 0.9  # float32 sums rounded once: the same bits, but for rare ties
    np.testing.assert_allclose(np.asarray(y, np.float64), cb.conv(x, w), rtol=2**-7, atol=1e-2)


def test_jax_bfloat16_on_numpy_gives_ml_dtypes_bfloat16_computed_in_float32():
    jnp = pytest.importorskip("jax.numpy")
    (x, w, _), _ = _inputs("conv", np.random.default_rng(8))
    x, w = _rounded((x, w), "bfloat16")
    y = cb.conv(jnp.asarray(x, jnp.bfloat16), jnp.asarray(w, jnp.bfloat16), backend="numpy")
    assert type(y) is np.ndarray and y.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(y, cb.conv(x.astype(np.float32), w.astype(np.float32)).astype(ml_dtypes.bfloat16))


@pytest.mark.parametrize("framework", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_compare_runs_on_16_bit_inputs(dtype, framework):
    arrays, kw = _inputs("conv", np.random.default_rng(9))
    x, w, b = (_as(framework, a, dtype) for a in _rounded(arrays, dtype))
    report = cb.compare(x, w, b, backends=BACKENDS, **kw)
    assert report.dtype == dtype and set(BACKENDS) <= set(report.precisions)


def _expected_label(backend: str, dtype: str, op: str) -> str:
    """What each backend computes on a CPU (see convbridge.backends._common.accumulates_in_float32)."""
    if backend == "numpy":
        wide = dtype == "bfloat16" and op != "unfold"
    else:
        wide = op in ("conv", "conv_transpose")
    return f"{ROUNDED_ONCE} {dtype}" if wide else f"{dtype} (IEEE)"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", OPS)
def test_precision_labels_on_cpu(op, dtype):
    arrays, kw = _inputs(op, np.random.default_rng(10))
    x = _rounded(arrays, dtype)[0].astype(_numpy_dtype(dtype))
    rest = [a.astype(_numpy_dtype(dtype)) for a in arrays[1:]]
    if op in ("unfold", "fold"):
        rest = [kw.pop("kernel_size")]  # compare's kernel argument is unfold's and fold's kernel size
    report = cb.compare(x, *rest, op=op, backends=BACKENDS, **kw)
    for backend in BACKENDS:
        label = report.precisions[backend]
        assert label.startswith(_expected_label(backend, dtype, op)), f"{backend}: {label!r}"
        assert "cpu" in label or backend == "numpy"


def _heavy(op: str, rng: np.random.Generator, dtype: str) -> tuple[tuple[np.ndarray, ...], dict]:
    """Many positive terms per output (K = 64 * 9 + 1 or 16 overlapping blocks): a sum kept in the 16-bit dtype
    drifts from the correctly rounded value, one in float32 almost never does."""
    if op == "fold":
        return _rounded((rng.uniform(0.5, 1, (1, 2 * 16, 25)),), dtype), dict(output_size=(8, 8), kernel_size=(4, 4))
    kernel = (4, 64, 3, 3) if op == "conv" else (64, 4, 3, 3)
    arrays = (rng.uniform(0.5, 1, (1, 64, 6, 6)), rng.uniform(0.5, 1, kernel), rng.uniform(0.5, 8, 4))
    return _rounded(arrays, dtype), {}


ROUNDING_ONCE = [(b, op, d) for b in BACKENDS for op in ("conv", "conv_transpose", "fold") for d in DTYPES
                 if _expected_label(b, d, op).startswith(ROUNDED_ONCE)]


@pytest.mark.parametrize(("backend", "op", "dtype"), ROUNDING_ONCE)
def test_rounded_once_where_the_label_says_so(backend, op, dtype):
    arrays, kw = _heavy(op, np.random.default_rng(11), dtype)
    y = _call(op, [a.astype(_numpy_dtype(dtype)) for a in arrays], kw, backend)
    ref, _ = _reference(op, arrays, kw)
    correctly_rounded = ref.astype(_numpy_dtype(dtype)).astype(np.float64)
    assert np.mean(to_numpy(y).astype(np.float64) == correctly_rounded) > 0.97


def test_accumulating_in_the_dtype_is_told_apart():
    """The check above has teeth: NumPy's float16 conv_transpose adds tap by tap in float16."""
    arrays, kw = _heavy("conv_transpose", np.random.default_rng(11), "float16")
    y = cb.conv_transpose(*(a.astype(np.float16) for a in arrays), backend="numpy")
    ref, _ = _reference("conv_transpose", arrays, kw)
    assert np.mean(y.astype(np.float64) == ref.astype(np.float16).astype(np.float64)) < 0.9
