"""Convolution as matrix multiplication: the Toeplitz matrix C and the im2col product equal the convolution."""

from __future__ import annotations

import numpy as np
import pytest

import convbridge as cb
from convbridge.errors import ArgumentError
from convbridge.lowering import conv_matrix

from cases import CONV, TRANSPOSE
from conftest import BACKENDS

pytest.importorskip("scipy")

MATRIX = ["tutorial_small", "groups_asym_dilated", "same_stride2", "reflect", "circular_nhwc", "replicate_1d",
          "unbatched", "depthwise_3d"]


@pytest.mark.parametrize("name", MATRIX)
@pytest.mark.parametrize("dense", [False, True])
def test_conv_matrix_reproduces_conv(name, dense):
    case = CONV[name]
    x, w, _ = case.arrays(seed=3, dtype="float64")
    kw = case.kwargs
    C = conv_matrix(case.x, w, dense=dense, **kw)
    y = cb.conv(x, w, **kw)
    assert C.shape == (y.size, x.size)
    got = (C @ x.ravel()).reshape(y.shape)
    assert cb.verify(got, x, w, **kw).verdict in ("identical", "equivalent")
    np.testing.assert_allclose(got, y, rtol=1e-12, atol=1e-12)


def test_conv_matrix_structure_and_sparsity():
    w = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    C = conv_matrix((1, 1, 5, 5), w, padding=1)
    assert C.shape == (25, 25)
    assert C.nnz == 9 * 9 + 4 * 6 * 3 + 4 * 4  # interior rows see 9 taps, edges 6, corners 4
    dense = C.toarray()
    assert dense[12].reshape(5, 5)[1:4, 1:4].tolist() == w[0, 0].tolist()  # the centre output reads the 3x3 block


def test_conv_matrix_refuses_large_inputs():
    with pytest.raises(cb.memory.MemoryLimitError, match=r"conv_matrix \(205520896 x 205520896, sparse\) needs "
                                                         r"about 7.75 TiB.*meant for small inputs"):
        conv_matrix((64, 64, 224, 224), np.ones((64, 64, 3, 3)), padding=1)
    C = conv_matrix((1, 16, 64, 64), np.ones((16, 16, 3, 3), "float32"), padding=1)  # counted by nonzeros, not
    assert C.shape == (65536, 65536) and C.nnz == 9_241_600  # by its 4.3e9 dense entries


# ---- im2col / col2im through every backend


def _to(backend, a):
    if a is None or backend == "numpy":
        return a
    if backend == "torch":
        import torch

        return torch.from_numpy(a)
    import jax.numpy as jnp

    return jnp.asarray(a)


def _every_backend(names, jax_in_ci):
    """(backend, name) for every installed backend and case. On JAX the view runs eagerly, one XLA compile per op
    (a dozen per case): CI runs ``jax_in_ci`` there, the rest with `make sweep` (the same cases through the
    dispatcher, jitted on every backend: test_differential's and test_dispatch's matmul-algorithm tests)."""
    return [pytest.param(backend, name, id=f"{backend}-{name}",
                         marks=pytest.mark.slow if backend == "jax" and name not in jax_in_ci else ())
            for backend in BACKENDS for name in names]


@pytest.mark.parametrize("backend,name", _every_backend(
    ["tutorial", "groups_asym_dilated", "reflect_nhwc", "depthwise_1d", "unbatched_3d"],
    jax_in_ci=["groups_asym_dilated", "unbatched_3d"]))
def test_im2col_product_equals_conv(backend, name):
    case = CONV[name]
    x, w, b = case.arrays(seed=5)
    kw = case.kwargs
    spec = cb.explain(case.x, case.w, bias=case.bias, **kw).spec
    view = cb.as_matmul(_to(backend, x), w, b, **kw)
    g = spec.groups
    assert tuple(view.lhs.shape) == (g, spec.batch * int(np.prod(spec.out_spatial)),
                                     spec.in_channels // g * int(np.prod(spec.kernel_spatial)))
    assert tuple(view.rhs.shape) == (g, view.lhs.shape[2], spec.out_channels // g)
    y = view()
    assert type(y).__module__.split(".")[0] == type(cb.conv(_to(backend, x), w, b, **kw)).__module__.split(".")[0]
    assert cb.verify(y, x, w, b, **kw).verdict in ("identical", "equivalent")


def test_tutorial_is_one_product_per_image():
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    w = np.random.default_rng(1).standard_normal((4, 3, 5, 5)).astype(np.float32)
    view = cb.as_matmul(x, w)
    assert view.lhs.shape == (1, 784, 75) and view.rhs.shape == (1, 75, 4)
    np.testing.assert_allclose(view()[0].transpose(1, 2, 0).reshape(784, 4), view.product()[0], rtol=0, atol=0)


@pytest.mark.parametrize("backend,name", _every_backend(["k3s2p1op1", "groups_dilated", "nwc_1d"],
                                                         jax_in_ci=["k3s2p1op1"]))
def test_col2im_product_equals_conv_transpose(backend, name):
    case = TRANSPOSE[name]
    x, w, b = case.arrays(seed=6)
    kw = case.kwargs
    view = cb.as_matmul(_to(backend, x), w, b, op="conv_transpose", **kw)
    y = view()
    assert tuple(y.shape) == case.expected_shape
    assert cb.verify(y, x, w, b, op="conv_transpose", **kw).verdict in ("identical", "equivalent")


@pytest.mark.parametrize("name", ["tutorial_small", "groups_asym_dilated", "same_stride2", "unbatched",
                                  "depthwise_3d"])
def test_conv_matrix_transpose_is_conv_transpose(name):
    case = CONV[name]
    kw = case.kwargs
    _, w, _ = case.arrays(seed=8, dtype="float64")
    C = conv_matrix(case.x, w, **kw)
    rng = np.random.default_rng(8)
    spec = cb.explain(case.x, case.w, **kw).spec
    y = rng.standard_normal(spec.out_shape)
    spatial = spec.in_spatial
    kt = dict(stride=spec.stride, padding=spec.padding, dilation=spec.dilation, groups=spec.groups,
              output_size=spatial)
    xt = cb.conv_transpose(y, w, **kt)  # the conv kernel (O, I/g, k) read as torch's (in, out/g, k)
    got = (C.T @ y.ravel()).reshape(xt.shape)
    np.testing.assert_allclose(got, xt, rtol=1e-12, atol=1e-12)
    assert cb.verify(got, y, w, op="conv_transpose", **kt).verdict in ("identical", "equivalent")


def test_gradients_flow_through_the_lowering():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    x = torch.tensor(rng.standard_normal((1, 2, 6, 6)), requires_grad=True)
    w = torch.tensor(rng.standard_normal((3, 2, 3, 3)), requires_grad=True)
    cb.as_matmul(x, w, padding=1)().sum().backward()
    x2, w2 = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    torch.nn.functional.conv2d(x2, w2, padding=1).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)
    torch.testing.assert_close(w.grad, w2.grad)


def test_as_matmul_errors():
    x, w = np.ones((1, 2, 4, 4), np.float32), np.ones((2, 3, 3, 3), np.float32)
    with pytest.raises(ArgumentError, match="as_matmul lowers 'conv' or 'conv_transpose', not 'fold'"):
        cb.as_matmul(x, w, op="fold")
    with pytest.raises(ArgumentError, match="col2im cannot express output_padding"):
        cb.as_matmul(x, w, op="conv_transpose", stride=2, output_padding=1)


def test_conv_matrix_of_16_bit_kernels_and_its_arguments():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    w = np.array([[[0.1, -2.5]]])
    for dtype in (np.float16, ml_dtypes.bfloat16):
        C = conv_matrix((1, 1, 4), w.astype(dtype))
        assert C.dtype == np.float32  # scipy.sparse has no 16-bit floats; float32 holds the values exactly
        np.testing.assert_array_equal(C.toarray(), conv_matrix((1, 1, 4), w.astype(dtype), dense=True))
    with pytest.raises(cb.ConvBridgeError, match="conv has no argument 'algorithm'"):
        conv_matrix((1, 1, 4), w, algorithm="matmul")
