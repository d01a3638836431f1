"""``preferred_element_type``: 16-bit (and float32, complex64) inputs accumulated in, and returned as, a wider dtype
on every backend, as lax's keyword does."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import convbridge as cb
from convbridge.arrays import dtype_name, to_numpy
from convbridge.errors import ArgumentError, ArgumentTypeError, DTypeError

BACKENDS = ("numpy", "torch", "jax")


def _data(dtype):
    rng = np.random.default_rng(11)
    x, w, b = rng.standard_normal((2, 4, 10, 10)), rng.standard_normal((6, 2, 3, 3)), rng.standard_normal(6)
    return tuple(a.astype(dtype) for a in (x, w, b))


def _on(backend, arrays):
    from convbridge import dispatch
    from convbridge.plan import make_plan

    return dispatch.place(make_plan(backend, arrays[0]), arrays)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16])
def test_16_bit_inputs_accumulate_in_float32(backend, dtype):
    x, w, b = _on(backend, _data(dtype))
    kw = dict(groups=2, stride=2, padding=1)
    wide = cb.conv(x, w, b, preferred_element_type="float32", **kw)
    assert dtype_name(wide) == "float32"
    x32, w32, b32 = _on(backend, tuple(a.astype(np.float32) for a in _data(dtype)))
    np.testing.assert_array_equal(to_numpy(wide), to_numpy(cb.conv(x32, w32, b32, **kw)))  # the same computation
    narrow = to_numpy(cb.conv(x, w, b, **kw)).astype(np.float64)
    exact = cb.conv(*(a.astype(np.float64) for a in _data(dtype)), backend="numpy", **kw)
    assert np.max(np.abs(to_numpy(wide) - exact)) < np.max(np.abs(narrow - exact))  # no final 16-bit rounding
    report = cb.compare(*_data(dtype), backends=(backend,), preferred_element_type="float32", **kw)
    assert report.dtype == "float32" and report.verdict in ("identical", "equivalent"), str(report)


def test_jax_matches_lax_preferred_element_type():
    import jax.numpy as jnp
    from jax import lax

    x, w, _ = _on("jax", _data(ml_dtypes.bfloat16))
    theirs = lax.conv_general_dilated(x, w, (1, 1), [(1, 1), (1, 1)], feature_group_count=2,
                                      preferred_element_type=jnp.float32)
    with pytest.raises(ValueError):  # the kernel has 2 input channels per group: groups=2 was meant
        lax.conv_general_dilated(x, w, (1, 1), [(1, 1), (1, 1)], preferred_element_type=jnp.float32)
    ours = cb.conv(x, w, padding=1, groups=2, preferred_element_type=jnp.float32)
    np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), rtol=2e-6, atol=1e-5)
    assert ours.dtype == theirs.dtype == jnp.float32


def test_conv_transpose_and_torch_dtypes():
    torch = pytest.importorskip("torch")
    x = torch.from_numpy(_data(np.float32)[0]).half()
    w = torch.randn(4, 3, 3, 3, generator=torch.Generator().manual_seed(0)).half()  # (C_in, C_out / groups, k, k)
    y = cb.conv_transpose(x, w, stride=2, groups=2, preferred_element_type=torch.float32)
    assert y.dtype == torch.float32 and y.shape == (2, 6, 21, 21)
    same = cb.conv_transpose(x.float(), w.float(), stride=2, groups=2)
    torch.testing.assert_close(y, same, rtol=0, atol=0)


def test_float32_to_float64_and_complex64_to_complex128_on_numpy():
    x, w, b = _data(np.float32)
    assert cb.conv(x, w, b, groups=2, preferred_element_type=np.float64).dtype == np.float64
    c = x + 1j * x[::-1]
    k = (w - 1j * w).astype(np.complex64)
    assert cb.conv(c.astype(np.complex64), k, groups=2, preferred_element_type="complex128").dtype == np.complex128


@pytest.mark.parametrize("preferred, error, match", [
    ("float16", ArgumentError, r"preferred_element_type='float16' for bfloat16 inputs: it names a wider "
                               r"accumulation dtype, one of 'float32', 'float64'"),
    ("complex64", ArgumentError, "one of 'float32', 'float64' for bfloat16"),
    ("floaty", ArgumentTypeError, "preferred_element_type must be a dtype such as 'float32'"),
])
def test_a_narrower_or_unknown_accumulation_is_refused(preferred, error, match):
    x, w, _ = _data(ml_dtypes.bfloat16)
    with pytest.raises(error, match=match):
        cb.conv(x, w, groups=2, preferred_element_type=preferred)


def test_mixed_dtypes_are_still_refused_not_widened():
    x, w, _ = _data(np.float16)
    with pytest.raises(DTypeError, match="mixed dtypes"):
        cb.conv(x, w.astype(np.float32), groups=2, preferred_element_type="float32")


def test_jax_float64_accumulation_needs_x64():
    import jax.numpy as jnp

    x, w, _ = _on("jax", _data(np.float32))
    with pytest.raises(DTypeError, match="preferred_element_type='float64' on JAX needs its x64 mode"):
        cb.conv(x, w, groups=2, preferred_element_type=jnp.float64)


def test_verify_judges_a_widened_result_in_its_own_dtype():
    x, w, b = _data(ml_dtypes.bfloat16)
    y = cb.conv(x, w, b, groups=2, preferred_element_type="float32")
    assert cb.verify(y, x, w, b, groups=2, preferred_element_type="float32").verdict in ("identical", "equivalent")
    bad = y.copy()
    bad[0, 0, 0, 0] *= 1.05
    assert cb.verify(bad, x, w, b, groups=2, preferred_element_type="float32").verdict == "mismatch"
