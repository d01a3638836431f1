"""Convolution as matrix multiplication: the Toeplitz matrix C and the im2col product equal the convolution."""

from __future__ import annotations

import numpy as np
import pytest

import convbridge as cb
from convbridge.errors import ArgumentError
from convbridge.lowering import conv_matrix

pytest.importorskip("scipy")

CASES = {
    "tutorial_small": ((1, 3, 8, 8), (4, 3, 5, 5), {}),
    "strided_asym_dilated_groups": ((2, 4, 7, 8), (6, 2, 3, 2), dict(stride=2, padding=((1, 2), (0, 1)),
                                                                       dilation=(1, 2), groups=2)),
    "same_stride2": ((1, 2, 9, 7), (3, 2, 3, 3), dict(stride=2, padding="same")),
    "reflect": ((1, 2, 5, 6), (3, 2, 3, 3), dict(padding=2, padding_mode="reflect")),
    "circular_nhwc": ((2, 5, 6, 2), (3, 3, 2, 4), dict(padding=(3, 1), padding_mode="circular", layout="NHWC")),
    "replicate_1d": ((2, 3, 9), (2, 3, 4), dict(padding=((3, 0),), padding_mode="replicate")),
    "unbatched": ((3, 9, 9), (4, 3, 3, 3), dict(padding=1)),
    "depthwise_3d": ((1, 2, 5, 4, 6), (4, 1, 3, 2, 3), dict(stride=(1, 2, 1), padding="same", groups=2)),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("dense", [False, True])
def test_conv_matrix_reproduces_conv(name, dense):
    x_shape, w_shape, kw = CASES[name]
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    C = conv_matrix(x_shape, w, dense=dense, **kw)
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
    with pytest.raises(ArgumentError, match="meant for small inputs"):
        conv_matrix((64, 64, 224, 224), np.ones((64, 64, 3, 3)), padding=1)


# ---- im2col / col2im through every backend


MATMUL_CONV = {
    "tutorial": ((2, 3, 32, 32), (4, 3, 5, 5), False, {}),
    "groups_asym": ((2, 4, 7, 8), (6, 2, 3, 2), True, dict(stride=2, padding=((1, 2), (0, 1)), dilation=(1, 2),
                                                             groups=2)),
    "reflect_nhwc": ((2, 6, 7, 3), (3, 3, 3, 4), True, dict(layout="NHWC", padding=1, padding_mode="reflect")),
    "depthwise_1d": ((2, 4, 17), (4, 1, 5), False, dict(groups=4, padding="same", stride=3)),
    "unbatched_3d": ((2, 5, 4, 6), (3, 2, 2, 3, 2), True, dict(padding="same")),
}
MATMUL_TRANSPOSE = {
    "k3s2p1op1": ((2, 4, 5, 6), (4, 3, 3, 3), True, dict(stride=2, padding=1, output_padding=1)),
    "groups_dilated": ((1, 4, 5, 6), (4, 3, 3, 2), False, dict(stride=2, padding=(2, 1), groups=2,
                                                                dilation=(1, 2))),
    "nhwc_1d": ((2, 9, 3), (4, 3, 2), True, dict(layout="NWC", stride=3, padding=((1, 2),))),
}


def _to(backend, a):
    if a is None or backend == "numpy":
        return a
    if backend == "torch":
        import torch

        return torch.from_numpy(a)
    import jax.numpy as jnp

    return jnp.asarray(a)


@pytest.mark.parametrize("name", sorted(MATMUL_CONV))
def test_im2col_product_equals_conv(backend, name):
    x_shape, w_shape, bias, kw = MATMUL_CONV[name]
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal(x_shape).astype(np.float32), rng.standard_normal(w_shape).astype(np.float32)
    spec = cb.explain(x_shape, w_shape, bias=bias, **kw).spec
    b = rng.standard_normal(spec.out_channels).astype(np.float32) if bias else None
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


@pytest.mark.parametrize("name", sorted(MATMUL_TRANSPOSE))
def test_col2im_product_equals_conv_transpose(backend, name):
    x_shape, w_shape, bias, kw = MATMUL_TRANSPOSE[name]
    rng = np.random.default_rng(6)
    x, w = rng.standard_normal(x_shape).astype(np.float32), rng.standard_normal(w_shape).astype(np.float32)
    out_c = cb.output_shape(x_shape, w_shape, op="conv_transpose", **kw)
    out_channels = cb.as_matmul(x, w, op="conv_transpose", **kw).spec.out_channels
    b = rng.standard_normal(out_channels).astype(np.float32) if bias else None
    view = cb.as_matmul(_to(backend, x), w, b, op="conv_transpose", **kw)
    y = view()
    assert tuple(y.shape) == out_c
    assert cb.verify(y, x, w, b, op="conv_transpose", **kw).verdict in ("identical", "equivalent")


@pytest.mark.parametrize("name", ["tutorial_small", "strided_asym_dilated_groups", "same_stride2", "unbatched",
                                  "depthwise_3d"])
def test_conv_matrix_transpose_is_conv_transpose(name):
    x_shape, w_shape, kw = CASES[name]
    rng = np.random.default_rng(8)
    w = rng.standard_normal(w_shape)
    C = conv_matrix(x_shape, w, **kw)
    spec = cb.explain(x_shape, w_shape, **kw).spec
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
