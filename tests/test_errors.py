"""The error catalogue: every bad input is a ConvBridgeError with the rule, the values and a fix.

Each case runs for every rank (1-d, 2-d, 3-d) where it makes sense, through ``cb.output_shape``
(no backend at all) and ``cb.conv`` on the numpy backend.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import convbridge as cb
from convbridge.errors import (
    ArgumentError, ArgumentTypeError, BackendUnavailable, ConvBridgeError, DTypeError, LayoutError, PaddingError,
    ShapeError,
)

from conftest import record

SP = {1: "W", 2: "HW", 3: "DHW"}


def arrays(nsp, c_in=4, c_out=6, i=None, n=8, k=3, batch=(2,), dtype="float32"):
    x = np.ones((*batch, c_in, *[n] * nsp), dtype)
    w = np.ones((c_out, c_in if i is None else i, *[k] * nsp), dtype)
    return x, w


def E(exc, pattern, nsp=None, **over):
    return (exc, pattern, nsp, over)


# name -> function(nsp) -> (x, w, kwargs, exception, match)
CATALOGUE = {
    "input_rank_too_low": lambda s: (*arrays(s, batch=(2, 3))[:1], arrays(s)[1], {}, ShapeError,
                                     rf"input has {s + 3} dims but a kernel with {s + 2} dims"),
    "kernel_rank_vs_layout": lambda s: (*arrays(s), {"layout": "NC" + SP[s] + "X"}, ShapeError,
                                        rf"kernel has {s + 2} dims but kernel layout 'OI{SP[s]}X' describes {s + 3}"),
    "input_rank_vs_layout": lambda s: (arrays(s, batch=())[0], arrays(s)[1], {"layout": "NC" + SP[s]}, ShapeError,
                                       rf"input has {s + 1} dims but input layout 'NC{SP[s]}' describes {s + 2}"),
    "kernel_without_spatial": lambda s: (np.ones((2, 3)), np.ones((4, 3)), {}, ShapeError, "needs at least 3"),
    "channels_vs_groups": lambda s: (*arrays(s, c_in=6, c_out=6, i=1), {"groups": 3}, ShapeError,
                                     re.escape("input has 6 channels but groups (3) x kernel in-channels (1) = 3")),
    "groups_zero": lambda s: (*arrays(s), {"groups": 0}, ArgumentError, "groups must be >= 1, got 0"),
    "groups_negative": lambda s: (*arrays(s), {"groups": -2}, ArgumentError, "groups must be >= 1, got -2"),
    "groups_float": lambda s: (*arrays(s), {"groups": 2.0}, ArgumentTypeError, "groups must be an int.*use 2"),
    "groups_bool": lambda s: (*arrays(s), {"groups": True}, ArgumentTypeError, "groups must be an int, got the bool"),
    "groups_not_dividing_in": lambda s: (*arrays(s, c_in=6, i=2), {"groups": 4}, ArgumentError,
                                         re.escape("input has 6 channels, which groups (4) does not divide")),
    "groups_not_dividing_out": lambda s: (*arrays(s, c_in=4, c_out=5, i=2), {"groups": 2}, ArgumentError,
                                          re.escape("kernel has 5 out-channels, which groups (2) does not divide")),
    "stride_zero": lambda s: (*arrays(s), {"stride": 0}, ArgumentError, "stride must be >= 1, got 0"),
    "stride_negative_entry": lambda s: (*arrays(s), {"stride": [1] * (s - 1) + [-1]}, ArgumentError,
                                        r"stride(\[\d\])? must be >= 1, got -1"),
    "stride_wrong_length": lambda s: (*arrays(s), {"stride": [1] * (s + 1)}, ArgumentError,
                                      rf"stride has {s + 1} entries but the input has {s} spatial dims"),
    "stride_float": lambda s: (*arrays(s), {"stride": 1.5}, ArgumentTypeError, "stride must be an int, got float 1.5"),
    "stride_bool": lambda s: (*arrays(s), {"stride": True}, ArgumentTypeError, "stride must be an int, got the bool"),
    "dilation_zero": lambda s: (*arrays(s), {"dilation": 0}, ArgumentError, "dilation must be >= 1, got 0"),
    "dilation_negative": lambda s: (*arrays(s), {"dilation": -2}, ArgumentError, "dilation must be >= 1, got -2"),
    "padding_negative": lambda s: (*arrays(s), {"padding": -1}, PaddingError, "padding is -1 but padding must be >= 0"),
    "padding_pair_negative": lambda s: (*arrays(s), {"padding": [(0, -1)] * s}, PaddingError,
                                        r"padding\[0\]\[1\] is -1 but padding must be >= 0"),
    "padding_pair_malformed": lambda s: (*arrays(s), {"padding": [(1, 2, 3)] * s}, PaddingError,
                                         r"padding\[0\] = \(1, 2, 3\) is not a \(lo, hi\) pair"),
    "padding_pairs_count": lambda s: (*arrays(s), {"padding": [(1, 1)] * (s + 1)}, PaddingError,
                                      rf"padding has {s + 1} entries but the input has {s} spatial dims"),
    "padding_flat_length": lambda s: (*arrays(s), {"padding": [1] * (s + 1)}, PaddingError,
                                      rf"has {s + 1} ints but the input has {s} spatial dims"),
    "padding_float": lambda s: (*arrays(s), {"padding": 1.5}, PaddingError, "padding must be an int, got float"),
    "padding_unknown_string": lambda s: (*arrays(s), {"padding": "full"}, PaddingError,
                                         "unknown padding 'full'.*'valid', 'same', 'same_lower'"),
    "padding_mode_unknown": lambda s: (*arrays(s), {"padding_mode": "mirror"}, ArgumentError,
                                       "unknown padding_mode 'mirror'; choose one of 'zeros', 'reflect'"),
    "kernel_larger_than_input": lambda s: (*arrays(s, n=4, k=5), {}, PaddingError,
                                           "effective kernel size 5 .* larger than the padded input 4"),
    "dilated_kernel_larger": lambda s: (*arrays(s, n=6, k=3), {"dilation": 3, "padding": "valid"}, PaddingError,
                                        r"effective kernel size 7 \(kernel 3, dilation 3\)"),
    "zero_size_kernel": lambda s: (arrays(s)[0], np.ones((6, 4, *[0] * s), "float32"), {}, ShapeError,
                                   "kernel has a zero-size spatial"),
    "zero_out_channels": lambda s: (arrays(s)[0], np.ones((0, 4, *[3] * s), "float32"), {}, ShapeError,
                                    "kernel has a zero-size out-channel axis"),
    "zero_channel_input": lambda s: (*arrays(s, c_in=0, i=0), {}, ShapeError, "zero-size in-channel axis"),
    "reflect_too_wide": lambda s: (*arrays(s, n=3, k=3), {"padding": 3, "padding_mode": "reflect"}, PaddingError,
                                   r"reflect padding \(3, 3\) on axis .* needs each width < the input size 3"),
    "circular_too_wide": lambda s: (*arrays(s, n=3, k=3), {"padding": 4, "padding_mode": "circular"}, PaddingError,
                                    r"circular padding \(4, 4\) .* <= the input size 3"),
    "layout_repeats_letter": lambda s: (*arrays(s), {"layout": "NC" + SP[s] + SP[s][0]}, LayoutError,
                                        f"input layout 'NC{SP[s]}{SP[s][0]}' repeats '{SP[s][0]}'"),
    "layout_missing_c": lambda s: (arrays(s)[0][:, 0], arrays(s)[1], {"layout": "N" + SP[s]}, LayoutError,
                                   r"has no 'C' \(channels\)"),
    "kernel_layout_missing_i": lambda s: (*arrays(s), {"layout": f"NC{SP[s]},OX{SP[s]}->NC{SP[s]}"}, LayoutError,
                                          r"has no 'I' \(input channels\)"),
    "layout_spatial_letters_differ": lambda s: (*arrays(s), {"layout": f"NC{SP[s]},OI{'XYZ'[:s]}->NC{SP[s]}"},
                                                LayoutError, "use the same spatial letters in all three strings"),
    "layout_malformed": lambda s: (*arrays(s), {"layout": f"NC{SP[s]},OI{SP[s]}"}, LayoutError, "is malformed"),
    "layout_lowercase": lambda s: (*arrays(s), {"layout": "nc" + SP[s].lower()}, LayoutError, "upper-case letters"),
    "layout_output_without_n": lambda s: (*arrays(s), {"layout": f"NC{SP[s]},OI{SP[s]}->C{SP[s]}"}, LayoutError,
                                          "disagree on the batch axis N"),
    "layout_n_in_kernel": lambda s: (*arrays(s), {"layout": f"NC{SP[s]},OIN{SP[s]}->NC{SP[s]}"}, LayoutError,
                                     "contains 'N'"),
    "layout_wrong_type": lambda s: (*arrays(s), {"layout": 3}, LayoutError, "layout must be None, a string"),
    "bias_shape": lambda s: (*arrays(s), {"bias": np.ones(3, "float32")}, ShapeError,
                             re.escape("bias has shape (3,) but the kernel has 6 out-channels; pass a bias of shape (6,)")),
    "bias_2d": lambda s: (*arrays(s), {"bias": np.ones((6, 1), "float32")}, ShapeError, r"bias has shape \(6, 1\)"),
    "mixed_dtypes": lambda s: (arrays(s)[0], arrays(s, dtype="float64")[1], {}, DTypeError,
                               "mixed dtypes \\(input float32, kernel float64\\)"),
    "integer_dtype": lambda s: (*arrays(s, dtype="int32"), {}, DTypeError, "dtype int32 is not supported"),
    "precision_unknown": lambda s: (*arrays(s), {"precision": "ultra"}, ArgumentError, "unknown precision 'ultra'"),
}


def _call(fn, x, w, kwargs):
    kwargs = dict(kwargs)
    bias = kwargs.pop("bias", None)
    if fn == "output_shape":
        return cb.output_shape(x.shape, w.shape, bias=bias, **kwargs) if x.dtype.kind == "f" and \
            x.dtype == w.dtype else cb.conv(x, w, bias, backend="numpy", **kwargs)
    return cb.conv(x, w, bias, backend="numpy", **kwargs)


@pytest.mark.parametrize("fn", ["output_shape", "conv"])
@pytest.mark.parametrize("nsp", [1, 2, 3])
@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_bad_input_rejected(name, nsp, fn):
    x, w, kwargs, exc, pattern = CATALOGUE[name](nsp)
    with pytest.raises(exc, match=pattern) as info:
        _call(fn, x, w, kwargs)
    assert isinstance(info.value, ConvBridgeError) and isinstance(info.value, ValueError)
    record("rejected", name=name)


def test_type_errors_are_also_type_errors():
    x, w = arrays(2)
    with pytest.raises(TypeError):
        cb.conv(x, w, stride=2.5)
    with pytest.raises(TypeError):
        cb.conv(x, w.astype("float64"))


def test_flat_padding_pair_for_1d_suggests_nested_form():
    x, w = arrays(1)
    with pytest.raises(PaddingError, match=re.escape("for (lo, hi) per side write ((1, 2),)")):
        cb.conv(x, w, padding=(1, 2))
    record("rejected", name="flat_pair_1d")


def test_unknown_backend_and_compare_arguments():
    x, w = arrays(2)
    with pytest.raises(ArgumentError, match="unknown backend 'tensorflow'; choose one of 'numpy', 'jax', 'torch'"):
        cb.conv(x, w, backend="tensorflow")
    with pytest.raises(ArgumentError, match="repeats a name"):
        cb.compare(x, w, backends=("numpy", "numpy"))
    with pytest.raises(ArgumentError, match="backends must be a name or a sequence of names"):
        cb.compare(x, w, backends=None)
    with pytest.raises(ArgumentError, match="unknown op 'deconv'"):
        cb.compare(x, w, op="deconv", backends=("numpy",))
    with pytest.raises(ShapeError, match=r"candidate has shape \(1, 2\) but this conv gives \(2, 6, 6, 6\)"):
        cb.verify(np.ones((1, 2), "float32"), x, w)
    for _ in range(4):
        record("rejected", name="api")


def test_float64_on_jax_without_x64():
    jax = pytest.importorskip("jax")
    x, w = arrays(2, dtype="float64")
    with jax.enable_x64(False):
        with pytest.raises(DTypeError, match=r"x64 mode is off.*jax.config.update\('jax_enable_x64', True\)"):
            cb.conv(x, w, backend="jax")
    record("rejected", name="float64_jax")


def test_torch_refuses_4d_conv_with_a_pointer():
    pytest.importorskip("torch")
    x, w = np.ones((1, 1, 3, 3, 3, 3), "float32"), np.ones((1, 1, 2, 2, 2, 2), "float32")
    with pytest.raises(ArgumentError, match="torch has no 4-d convolution.*backend='jax'"):
        cb.conv(x, w, backend="torch")
    assert cb.conv(x, w, backend="numpy").shape == (1, 1, 2, 2, 2, 2)


def test_missing_backend_names_the_pip_line(monkeypatch):
    import importlib.util

    from convbridge import backends

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "jax" else real(n, *a))
    monkeypatch.setattr(backends, "_LOADED", {})  # as in a process that has not loaded the backend yet
    with pytest.raises(BackendUnavailable, match=r"pip install 'convbridge\[jax\]'") as info:
        cb.conv(*arrays(2), backend="jax")
    assert isinstance(info.value, ImportError)


# ---- what is not an array, and arrays no backend can take (issue 10) ------------------------------------------

@pytest.mark.parametrize("x, exc, pattern", [
    ("abc", ArgumentTypeError, "input must be an array .*, got str 'abc'"),
    ({"a": 1}, ArgumentTypeError, "input must be an array .*, got dict"),
    ([[1.0, 2.0], [3.0]], ShapeError, "input is a ragged nested sequence"),
    ([["a", "b"]], ArgumentTypeError, "input must hold numbers"),
])
def test_non_arrays_are_refused_by_role(x, exc, pattern):
    with pytest.raises(exc, match=pattern):
        cb.conv(x, np.ones((1, 1, 1), "float32"))
    with pytest.raises(exc, match=pattern.replace("input", "input")):
        cb.compare(x, np.ones((1, 1, 1), "float32"), backends=("numpy",))


def test_torch_tensors_no_backend_can_take():
    torch = pytest.importorskip("torch")
    w = torch.ones(1, 1, 2)
    with pytest.raises(ArgumentTypeError, match="input is a sparse_coo torch tensor.*to_dense"):
        cb.conv(torch.ones(1, 1, 4).to_sparse(), w)
    meta = torch.ones(1, 1, 4, device="meta")
    assert cb.conv(meta, w.to("meta")).shape == (1, 1, 3)  # torch itself computes shapes on meta
    with pytest.raises(ArgumentTypeError, match="meta device has a shape but no values"):
        cb.conv(meta, w, backend="numpy")
    with pytest.raises(ArgumentTypeError, match="meta device has a shape but no values"):
        cb.verify(meta, np.ones((1, 1, 4), "float32"), np.ones((1, 1, 2), "float32"))


def test_jax_tracers_are_named_not_crashed_on():
    jax = pytest.importorskip("jax")
    pytest.importorskip("torch")
    x, w = np.ones((1, 1, 5), "float32"), np.ones((1, 1, 2), "float32")
    for call in (lambda t: cb.verify(cb.conv(t, w), t, w), lambda t: cb.conv(t, w, backend="torch"),
                 lambda t: cb.compare(t, w, backends=("jax",)).verdict):
        with pytest.raises(ArgumentTypeError, match="JAX tracer .* concrete arrays"):
            jax.jit(call)(x)
    assert cb.verify(jax.jit(lambda t: cb.conv(t, w))(x), x, w).verdict in ("identical", "equivalent")


def test_a_tensor_that_requires_grad_warns_when_it_leaves_torch():
    torch = pytest.importorskip("torch")
    x = torch.ones(1, 1, 5, requires_grad=True)
    with pytest.warns(cb.errors.ConvBridgeWarning, match="requires grad goes to backend='numpy'"):
        cb.conv(x, np.ones((1, 1, 2), "float32"), backend="numpy")
    assert cb.conv(x, torch.ones(1, 1, 2)).requires_grad  # staying in torch: no warning, gradients flow


def test_messages_that_used_to_mislead():
    x, w = arrays(2)
    with pytest.raises(DTypeError, match=r"\.astype\('float32'\) for NumPy/JAX arrays or \.to\(torch\.float32\)"):
        cb.conv(x.astype("int64"), w)
    with pytest.raises(ShapeError, match=r"got an array of shape \(2, 4, 8, 8\); pass its \.shape"):
        cb.output_shape(x, w.shape)
    with pytest.raises(ArgumentError, match="compare and verify read fold's arguments as \\(x, kernel_size\\)"):
        cb.compare(np.ones((1, 4, 9), "float32"), (4, 4), (2, 2), op="fold", backends=("numpy",))
    assert cb.verify([[[1.0, 1.0]]], np.ones((1, 1, 3)), np.ones((1, 1, 2)), op="conv").verdict == "mismatch"


def test_reprs_are_short():
    x, w = arrays(2)
    assert len(repr(cb.as_matmul(x, w))) < 400
    assert len(repr(cb.transpose.torch_to_jax(np.ones((64, 64, 7, 7))))) < 300


@pytest.mark.parametrize("call, pattern", [
    (lambda x, w: cb.conv(x, w, strides=2), r"conv has no argument 'strides' \(did you mean 'stride'\?\)"),
    (lambda x, w: cb.explain(x.shape, w.shape, strde=2), r"conv has no argument 'strde' \(did you mean 'stride'\?\)"),
    (lambda x, w: cb.conv_matrix(x.shape, w, strides=2), r"conv has no argument 'strides' \(did you mean"),
    (lambda x, w: cb.unfold(x, 3, 4), r"unfold\(x, kernel_size, \.\.\.\): too many positional arguments"),
    (lambda x, w: cb.fold(x), r"fold\(cols, output_size, kernel_size, \.\.\.\): missing a required argument"),
    (lambda x, w: cb.conv(x), r"conv\(x, kernel, bias=None, \.\.\.\): missing a required argument: 'kernel'"),
    (lambda x, w: cb.explain(layer=-2), r"missing a required argument: 'input_shape'"),
    (lambda x, w: cb.explain(x.shape, layer=-2), r"layer must be a string such as 'Conv2d\(3, 4, 5\)', got -2"),
    (lambda x, w: cb.verify(cb.conv(x, w), x, w, name=[]), r"name labels the candidate .* got list \[\]"),
    (lambda x, w: cb.output_shape((1, 3, -8, 8), w.shape), r"input shape \(1, 3, -8, 8\) has a negative size"),
    (lambda x, w: cb.conv(x, w, output_size=x), r"conv has no argument 'output_size'"),
    (lambda x, w: cb.conv_transpose(x, w.transpose(1, 0, 2, 3), output_size=x),
     r"output_size must be an int, got ndarray of shape \(2, 4, 8, 8\) float32$"),
    (lambda x, w: cb.conv(x, w, stride=2**70), r"stride is 1180591620717411303424, beyond what any framework"),
    (lambda x, w: cb.conv(x, w, padding=[(0, 2**40)] * 2), r"padding\[0\]\[1\] is 1099511627776, beyond what"),
    (lambda x, w: cb.conv(np.ma.masked_array(x, mask=x > 0), w), r"input is a masked array, whose mask no framework"),
])
def test_python_call_errors_and_values_in_messages_are_convbridge_errors(call, pattern):
    """Python's own call errors become ArgumentTypeError (still a TypeError), and no message prints an array."""
    x, w = arrays(2)
    with pytest.raises(ConvBridgeError, match=pattern) as info:
        call(x, w)
    assert len(str(info.value)) < 400
    record("rejected", name="python_call")


def test_overflow_stays_quiet(recwarn):
    """float16 and float32 sums past the largest finite value give inf, without numpy's RuntimeWarnings."""
    for dtype, big in (("float16", 6e4), ("float32", 3e38)):
        x, w = np.full((1, 1, 8), big, dtype), np.full((1, 1, 3), 2, dtype)
        assert np.isinf(cb.conv(x, w, backend="numpy")).all()
        cb.compare(x, w, backends=("numpy",))
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)], [str(w.message) for w in recwarn]


def test_frameworks_take_what_they_cannot_read_natively():
    jax = pytest.importorskip("jax")
    pytest.importorskip("torch")
    x, w = arrays(2)
    report = cb.compare(x.astype(">f4"), w.astype(">f4"), backends=("torch", "jax", "numpy"))  # big-endian
    assert report.verdict in ("identical", "equivalent")
    with pytest.raises(ArgumentTypeError, match="ShapeDtypeStruct, which has a shape but no values"):
        cb.conv(jax.ShapeDtypeStruct(x.shape, "float32"), w, backend="jax")


def test_matmul_overflow_stays_quiet(recwarn):
    x, w = arrays(2)
    big = np.full_like(x, 3e38)
    assert np.isinf(cb.conv(big, w, backend="numpy", algorithm="matmul")).any()
    cb.as_matmul(big, w)()
    cb.compare(np.where(x > 0, np.inf, -np.inf).astype("float32"), w, backends=("numpy",))
    assert not [m for m in recwarn if issubclass(m.category, RuntimeWarning)], [str(m.message) for m in recwarn]


def test_lists_of_grad_tensors_and_wider_candidates():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 3, 8, 8)).astype("float32"), rng.standard_normal((4, 3, 3, 3)).astype("float32")
    with pytest.raises(ArgumentTypeError, match="stack its items into one array first"):
        cb.conv([torch.tensor(x[0]).requires_grad_(), torch.tensor(x[1])], torch.tensor(w))
    y = cb.conv(x, w)  # a float32 result handed over as a list or a float64 copy is judged as float32
    assert cb.verify(y.tolist(), x, w).verdict == cb.verify(y.astype("float64"), x, w).verdict == "equivalent"
    assert cb.verify(np.roll(y, 1, -1).tolist(), x, w).verdict == "mismatch"
