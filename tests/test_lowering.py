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
