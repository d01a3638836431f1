"""The error catalogue of conv_transpose, unfold, fold and the convention mapping.

Every bad input is a ConvBridgeError (a ValueError) stating the rule, the values and a fix. The
conv_transpose catalogue runs for every rank through ``cb.output_shape`` (no backend) and
``cb.conv_transpose`` on the numpy backend.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import convbridge as cb
from convbridge.errors import (
    ArgumentError, ArgumentTypeError, ConvBridgeError, DTypeError, LayoutError, PaddingError, ShapeError,
)
from convbridge.transpose import jax_to_torch, torch_to_jax

from conftest import FRAMEWORKS, record

SP = {1: "W", 2: "HW", 3: "DHW"}


def arrays(nsp, c_in=4, c_out_g=3, i=None, n=5, k=3, batch=(2,), dtype="float32"):
    """x (N, C_in, n...) and a torch-convention kernel (C_in, C_out / groups, k...)."""
    x = np.ones((*batch, c_in, *[n] * nsp), dtype)
    w = np.ones((c_in if i is None else i, c_out_g, *[k] * nsp), dtype)
    return x, w


def channels_last(nsp, c=3, n=5, k=3):
    """x (N, n..., C) and lax's default kernel (k..., I, O) for the jax convention."""
    return np.ones((2, *[n] * nsp, c), "float32"), np.ones((*[k] * nsp, c, 2), "float32")


UNREACHABLE = re.escape("output_size 31 is unreachable from input 15 (stride 2, kernel 3, padding 1); "
                        "reachable sizes are 29..30 (output_padding 0..1)")

# name -> function(nsp) -> (x, w, kwargs, exception, match)
CATALOGUE = {
    "output_padding_not_below_stride": lambda s: (*arrays(s), {"stride": 2, "output_padding": 2}, ArgumentError,
                                                  rf"output_padding 2 on axis {SP[s][0]} must be < max\(stride 2, "
                                                  r"dilation 1\) = 2 \(ATen's rule\); allowed: 0..1"),
    "output_padding_not_below_dilation": lambda s: (*arrays(s), {"dilation": 2, "output_padding": 2}, ArgumentError,
                                                    r"must be < max\(stride 1, dilation 2\) = 2"),
    "output_padding_negative": lambda s: (*arrays(s), {"output_padding": -1}, ArgumentError,
                                          "output_padding must be >= 0, got -1"),
    "output_size_above_range": lambda s: (*arrays(s, n=15), {"stride": 2, "padding": 1, "output_size": 31},
                                          ShapeError, UNREACHABLE),
    "output_size_below_range": lambda s: (*arrays(s, n=15), {"stride": 2, "padding": 1, "output_size": 28},
                                          ShapeError, UNREACHABLE.replace("31", "28")),
    "output_size_range_follows_dilation": lambda s: (
        *arrays(s, n=15), {"dilation": 3, "padding": 1, "output_size": 22}, ShapeError,
        re.escape("(stride 1, kernel 3, dilation 3, padding 1); reachable sizes are 19..21 (output_padding 0..2)")),
    "output_size_wrong_length": lambda s: (*arrays(s), {"output_size": [7] * (s + 1)}, ArgumentError,
                                           rf"output_size has {s + 1} entries but the input has {s} spatial dims"),
    "output_size_and_output_padding": lambda s: (*arrays(s), {"stride": 2, "output_padding": 1, "output_size": 11},
                                                 ArgumentError, "both given; output_size chooses output_padding"),
    "same_with_output_padding": lambda s: (*arrays(s), {"stride": 2, "padding": "same", "output_padding": 1},
                                           ArgumentError, "already fixes the output size"),
    "transpose_kernel_with_torch_convention": lambda s: (*arrays(s), {"transpose_kernel": True}, ArgumentError,
                                                         "transpose_kernel=True is lax.conv_transpose's flag and only "
                                                         "means something with convention='jax'"),
    "transpose_kernel_not_bool": lambda s: (*channels_last(s), {"convention": "jax", "transpose_kernel": "yes",
                                                                "padding": "SAME"}, ArgumentError,
                                            "transpose_kernel must be True or False"),
    "unknown_convention": lambda s: (*arrays(s), {"convention": "tf"}, ArgumentError,
                                     "unknown convention 'tf'; choose one of 'torch', 'jax'"),
    "jax_lower_case_same": lambda s: (*channels_last(s), {"convention": "jax", "padding": "same"}, PaddingError,
                                      "lax.conv_transpose reads only 'SAME' and 'VALID' \\(upper case\\)"),
    "jax_int_padding": lambda s: (*channels_last(s), {"convention": "jax", "padding": 1}, PaddingError,
                                  r"takes 'SAME', 'VALID' or one \(a, b\) pair per spatial dim"),
    "jax_groups": lambda s: (*channels_last(s, c=4), {"convention": "jax", "padding": "SAME", "groups": 2},
                             ArgumentError, "lax.conv_transpose has no groups; use convention='torch'"),
    "jax_output_padding": lambda s: (*channels_last(s), {"convention": "jax", "padding": "SAME", "output_padding": 1},
                                     ArgumentError, "lax.conv_transpose has neither"),
    "kernel_in_axis_is_all_input_channels": lambda s: (*arrays(s, c_in=4, i=2), {"groups": 2}, ShapeError,
                                                       "input has 4 channels but the kernel's I axis has 2; a "
                                                       "conv_transpose kernel is \\(C_in, C_out / groups, \\*k\\)"),
    "groups_not_dividing": lambda s: (*arrays(s), {"groups": 3}, ArgumentError,
                                      re.escape("input has 4 channels, which groups (3) does not divide")),
    "groups_zero": lambda s: (*arrays(s), {"groups": 0}, ArgumentError, "groups must be >= 1, got 0"),
    "crops_everything": lambda s: (*arrays(s, n=1, k=1), {"padding": 1}, PaddingError,
                                   f"conv_transpose output on axis {SP[s][0]} would have size -1"),
    "padding_negative": lambda s: (*arrays(s), {"padding": -1}, PaddingError, "padding is -1 but padding must be >= 0"),
    "stride_zero": lambda s: (*arrays(s), {"stride": 0}, ArgumentError, "stride must be >= 1, got 0"),
    "dilation_zero": lambda s: (*arrays(s), {"dilation": 0}, ArgumentError, "dilation must be >= 1, got 0"),
    "bias_shape": lambda s: (*arrays(s), {"bias": np.ones(4, "float32")}, ShapeError,
                             re.escape("bias has shape (4,) but the kernel has 3 out-channels")),
    "mixed_dtypes": lambda s: (arrays(s)[0], arrays(s, dtype="float64")[1], {}, DTypeError, "mixed dtypes"),
    "layout_kernel_rank": lambda s: (*arrays(s), {"layout": "NC" + SP[s] + "X"}, ShapeError,
                                     rf"kernel has {s + 2} dims but kernel layout 'IO{SP[s]}X' describes {s + 3}"),
}


@pytest.mark.parametrize("fn", ["output_shape", "conv_transpose"])
@pytest.mark.parametrize("nsp", [1, 2, 3])
@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_bad_conv_transpose_rejected(name, nsp, fn):
    x, w, kwargs, exc, pattern = CATALOGUE[name](nsp)
    kwargs = dict(kwargs)
    bias = kwargs.pop("bias", None)
    with pytest.raises(exc, match=pattern) as info:
        if fn == "output_shape" and x.dtype == w.dtype:
            cb.output_shape(x.shape, w.shape, op="conv_transpose", bias=bias, **kwargs)
        else:
            cb.conv_transpose(x, w, bias, backend="numpy", **kwargs)
    assert isinstance(info.value, ConvBridgeError) and isinstance(info.value, ValueError)
    record("rejected", name=f"conv_transpose:{name}")


def test_padding_mode_is_not_an_argument_of_conv_transpose():
    x, w = arrays(2)
    with pytest.raises(ArgumentTypeError, match="conv_transpose has no argument 'padding_mode'.*zeros only"):
        cb.compare(x, w, op="conv_transpose", backends=("numpy",), padding_mode="reflect")
    with pytest.raises(ArgumentTypeError, match="conv_transpose has no padding_mode 'reflect': a transposed "
                                                "convolution crops its full output"):
        cb.conv_transpose(x, w, padding_mode="reflect")
    assert cb.conv_transpose(x, w, padding_mode="zeros").shape == cb.conv_transpose(x, w).shape
    record("rejected", name="conv_transpose:padding_mode")


@pytest.mark.skipif("torch" not in FRAMEWORKS, reason="needs torch")
def test_torch_refuses_4d_conv_transpose_with_a_pointer():
    x, w = np.ones((1, 1, 3, 3, 3, 3), "float32"), np.ones((1, 1, 2, 2, 2, 2), "float32")
    with pytest.raises(ArgumentError, match="torch has no 4-d transposed convolution.*backend='jax'"):
        cb.conv_transpose(x, w, backend="torch")
    assert cb.conv_transpose(x, w, backend="numpy").shape == (1, 1, 4, 4, 4, 4)
    record("rejected", name="conv_transpose:torch_4d")


# ---- unfold and fold ------------------------------------------------------------------------------------------

UNFOLD_FOLD = {
    "fold_rows_not_multiple_of_kernel": (lambda: cb.fold(np.ones((2, 10, 16), "float32"), (5, 5), 2), ShapeError,
                                         r"fold input has 10 rows \(its channel axis\), which is not a positive "
                                         r"multiple of prod\(kernel_size\) = 4"),
    "fold_block_count_mismatch": (lambda: cb.fold(np.ones((2, 12, 15), "float32"), (5, 5), (2, 2)), ShapeError,
                                  r"fold input has 15 blocks \(its last axis\) but output_size \(5, 5\) .* has "
                                  r"4 x 4 = 16 blocks"),
    "fold_block_count_1d": (lambda: cb.fold(np.ones((1, 6, 3), "float32"), (9,), (3,), stride=2), ShapeError,
                            r"fold input has 3 blocks .* has 4 = 4 blocks"),
    "fold_rank_from_ints": (lambda: cb.fold(np.ones((2, 12, 16), "float32"), 5, 2), ArgumentError,
                            "fold cannot tell the number of spatial dims"),
    "fold_input_rank": (lambda: cb.fold(np.ones((2, 2, 12, 16), "float32"), (5, 5), 2), ShapeError,
                        "fold input has 4 dims"),
    "fold_kernel_larger_than_output": (lambda: cb.fold(np.ones((1, 9, 1), "float32"), (2, 2), 3), PaddingError,
                                       "effective kernel size 3"),
    "fold_missing_output_size": (lambda: cb.compare(np.ones((1, 4, 4), "float32"), (2, 2), op="fold",
                                                    backends=("numpy",)), ArgumentError, "fold needs output_size="),
    "unfold_ambiguous_rank": (lambda: cb.unfold(np.ones((3, 6, 6), "float32"), 3), ShapeError,
                              r"is ambiguous: torch reads it as an unbatched 2-d .* kernel_size=\(3, 3\)"),
    "unfold_kernel_size_vs_rank": (lambda: cb.unfold(np.ones((2, 3, 6, 6), "float32"), (2,)), ShapeError,
                                   r"input has 4 dims but kernel_size \(2,\) has 1 entries; the input must be "
                                   r"\(N, C, 1 spatial\) or unbatched \(C, 1 spatial\)"),
    "unfold_full_layout": (lambda: cb.unfold(np.ones((2, 6, 6, 3), "float32"), 2, layout="NHWC,HWIO->NHWC"),
                           LayoutError, "unfold takes an input layout only"),
    "unfold_kernel_larger_than_input": (lambda: cb.unfold(np.ones((1, 1, 4, 4), "float32"), 5), PaddingError,
                                        r"effective kernel size 5 .* larger than the padded input 4"),
    "unfold_kernel_zero": (lambda: cb.unfold(np.ones((1, 1, 4, 4), "float32"), 0), ArgumentError,
                           "kernel_size must be >= 1, got 0"),
    "unfold_bias": (lambda: cb.compare(np.ones((1, 1, 4, 4), "float32"), 2, np.ones(1), op="unfold",
                                       backends=("numpy",)), ArgumentError, "unfold takes no bias"),
    "unfold_integer_dtype": (lambda: cb.unfold(np.ones((1, 1, 4, 4), "int32"), 2), DTypeError,
                             "dtype int32 is not supported"),
    "unknown_op": (lambda: cb.compare(np.ones((1, 1, 4)), np.ones((1, 1, 2)), op="deconv", backends=("numpy",)),
                   ArgumentError, "unknown op 'deconv'; choose one of 'conv', 'conv_transpose', 'unfold', 'fold'"),
    "unknown_op_output_shape": (lambda: cb.output_shape((1, 1, 4), (1, 1, 2), op="im2col"), ArgumentError,
                                "unknown op 'im2col'"),
}


@pytest.mark.parametrize("name", sorted(UNFOLD_FOLD))
def test_bad_unfold_fold_rejected(name):
    call, exc, pattern = UNFOLD_FOLD[name]
    with pytest.raises(exc, match=pattern) as info:
        call()
    assert isinstance(info.value, ConvBridgeError)
    record("rejected", name=name)


# ---- the mapping between conventions --------------------------------------------------------------------------


def test_mapping_refuses_what_the_other_convention_cannot_say():
    w = np.ones((3, 3, 2), "float32")  # lax WIO: k 3, so d(k - 1) = 2
    with pytest.raises(PaddingError, match="adds 1 zero rows before the first output the kernel reaches on axis W"):
        jax_to_torch(w, strides=(2,), padding=((3, 0),))
    with pytest.raises(PaddingError, match=r"adds 3 rows after the full output .* < max\(stride 2, dilation 1\) = 2"):
        jax_to_torch(w, strides=(2,), padding=((0, 5),))
    with pytest.raises(ArgumentError, match="lax.conv_transpose has no groups"):
        torch_to_jax(np.ones((4, 1, 3), "float32"), groups=2)
    asym = torch_to_jax(np.ones((2, 3, 3), "float32"), padding=((0, 1),))
    with pytest.raises(ArgumentError, match="lax_kwargs\\(\\) needs a jax-convention call"):
        jax_to_torch(asym.kernel, **asym.lax_kwargs()).lax_kwargs()
    with pytest.raises(ArgumentError, match="F.conv_transposeNd crops symmetrically"):
        jax_to_torch(asym.kernel, **asym.lax_kwargs()).torch_kwargs()
    for _ in range(5):
        record("rejected", name="mapping")
