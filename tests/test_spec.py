"""Spec pieces on their own: padding forms, gather indices, layouts, and the geometry's formulas, each checked
against an independent count, torch, or the convolution itself."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import convbridge as cb
from convbridge.spec import ConvAxis, TransposeAxis, gather_indices, make_conv_spec, permutation, resolve_layout
from convbridge.spec.padding import parse_padding

from oracle import scatter_extent, windows

NP_MODE = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}
AXES = dict(n=st.integers(1, 30), k=st.integers(1, 6), s=st.integers(1, 4), d=st.integers(1, 3),
            lo=st.integers(0, 5), hi=st.integers(0, 5))


@given(n=st.integers(1, 9), lo=st.integers(0, 9), hi=st.integers(0, 9),
       mode=st.sampled_from(["reflect", "replicate", "circular"]))
def test_gather_indices_match_numpy_pad(n, lo, hi, mode):
    if mode == "reflect" and max(lo, hi) >= n or mode == "circular" and max(lo, hi) > n:
        return
    x = np.arange(n) * 10
    np.testing.assert_array_equal(x[gather_indices(n, lo, hi, mode)], np.pad(x, (lo, hi), mode=NP_MODE[mode]))


def test_padding_forms():
    assert parse_padding(2, 2) == ((2, 2), (2, 2))
    assert parse_padding([1], 3) == ((1, 1),) * 3
    assert parse_padding((1, 2), 2) == ((1, 1), (2, 2))
    assert parse_padding(((1, 2),), 1) == ((1, 2),)
    assert parse_padding([(0, 1), 3], 2) == ((0, 1), (3, 3))
    assert parse_padding("VALID", 2) == ((0, 0), (0, 0))
    assert parse_padding(np.array([1, 2]), 2) == ((1, 1), (2, 2))
    assert parse_padding("same", 1) == "same"


@given(**AXES)
def test_conv_axis_counts_windows(n, k, s, d, lo, hi):
    """out, reach and unread against a count of the windows that fit the padded input."""
    a = ConvAxis(n, k, s, d, lo, hi)
    if not a.fits:
        assert windows(n, k, s, d, lo, hi) == 0
        return
    assert a.out == windows(n, k, s, d, lo, hi)
    assert a.reach == max(t for p in range(a.out) for t in a.taps(p)) + 1
    assert 0 <= a.unread < s and a.padded == a.reach + a.unread
    assert a.span == max(a.taps(0)) + 1


@given(n=st.integers(1, 40), k=st.integers(1, 7), s=st.integers(1, 4), d=st.integers(1, 3),
       lower=st.booleans())
def test_same_gives_ceil_n_over_s(n, k, s, d, lower):
    a = ConvAxis.same(n, k, s, d, lower=lower)
    assert a.hi - a.lo == (-1 if lower else 1) * ((a.lo + a.hi) % 2)  # the odd pixel goes high (low with lower)
    if a.fits:
        assert a.out == -(-n // s)
        assert cb.output_shape((1, 1, n), (1, 1, k), stride=s, dilation=d,
                               padding="same_lower" if lower else "same") == (1, 1, -(-n // s))


@given(**AXES, op=st.integers(0, 3))
def test_transpose_axis_counts_the_scatter(n, k, s, d, lo, hi, op):
    """full is one past the last row the scatter writes; out crops and adds output_padding; reachable sizes
    are those output_padding < max(s, d) gives."""
    t = TransposeAxis(n, k, s, d, lo, hi, op % max(s, d))
    assert t.full == scatter_extent(n, k, s, d)
    assert t.out == t.full - lo - hi + t.output_padding
    assert list(t.reachable) == [t.base + e for e in range(max(s, d)) if t.base + e >= 1]
    assert t.crops == (lo, hi - t.output_padding)


@given(**AXES)
def test_adjoints_round_trip(n, k, s, d, lo, hi):
    """A conv axis' adjoint maps its output back to its input size, and the adjoint's adjoint is the conv."""
    a = ConvAxis(n, k, s, d, lo, hi)
    if not a.fits:
        return
    t = a.adjoint()
    assert t.size == a.out and t.out == n and t.output_padding == a.unread
    back = t.adjoint()  # over the transposed output, padded by its crops: the rows the windows read
    assert back.size == n and back.padded == a.reach and back.out == a.out


def test_halo_is_what_a_spatial_shard_reads():
    """Convolving only the input rows halo(start, stop) names (zero padding where they fall outside) gives
    exactly the output rows start..stop-1 of the whole convolution."""
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((1, 2, 23)), rng.standard_normal((3, 2, 4))
    spec = make_conv_spec(x.shape, w.shape, stride=2, dilation=2, padding=((3, 2),))
    full = cb.conv(x, w, backend="numpy", stride=2, dilation=2, padding=((3, 2),))
    a = spec.axes[0]
    for start, stop in [(0, 3), (3, 7), (7, a.out), (0, a.out)]:
        first, last = a.halo(start, stop)
        shard = x[..., max(first, 0):min(last, a.size)]
        pads = ((max(-first, 0), max(last - a.size, 0)),)
        part = cb.conv(shard, w, backend="numpy", stride=2, dilation=2, padding=pads)
        np.testing.assert_array_equal(part, full[..., start:stop])


def test_layout_defaults_and_forms():
    lay = resolve_layout("NHWC", 4, 4)
    assert (lay.lhs, lay.rhs, lay.out) == ("NHWC", "HWIO", "NHWC")
    assert lay.lhs_perm == (0, 3, 1, 2) and lay.rhs_perm == (3, 2, 0, 1)
    assert resolve_layout(None, 3, 4).batched is False
    assert resolve_layout(("NWC", "WIO", "NCW"), 3, 3).out_perm == (0, 1, 2)
    assert resolve_layout("CHW", 3, 4).lhs == "NCHW"
    assert str(resolve_layout("HWC", 3, 4)) == "HWC,HWIO->HWC"
    assert resolve_layout(None, 6, 6).spatial == ("A", "B", "D", "E")
    assert permutation("NHWC", "NCHW") == (0, 3, 1, 2)
    with pytest.raises(cb.ConvBridgeError, match="name different axes"):
        permutation("NHWC", "NCDW")


@pytest.mark.parametrize("x_shape, w_shape, kw", [
    ((8, 3, 224, 224), (64, 3, 7, 7), dict(stride=2, padding=3)),
    ((2, 5, 17), (4, 5, 4), dict(stride=3, dilation=2, padding=2)),
    ((1, 4, 6, 7, 8), (2, 2, 3, 2, 3), dict(groups=2, padding=(1, 0, 1), stride=(2, 1, 3))),
])
def test_spec_arithmetic_matches_torch(x_shape, w_shape, kw):
    """Output shapes, K and MACs against torch's own shape function (meta tensors: no arithmetic)."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    nsp = len(w_shape) - 2
    spec = make_conv_spec(x_shape, w_shape, **kw)
    y = getattr(F, f"conv{nsp}d")(torch.empty(x_shape, device="meta"), torch.empty(w_shape, device="meta"), **kw)
    assert spec.out_shape == tuple(y.shape)
    g = kw.get("groups", 1)
    assert spec.terms == x_shape[1] // g * int(np.prod(w_shape[2:]))
    assert spec.macs == int(np.prod(y.shape)) * spec.terms
    adj = spec.adjoint()  # torch's conv_transpose with output_padding = the unread rows maps back
    back = getattr(F, f"conv_transpose{nsp}d")(torch.empty(y.shape, device="meta"), torch.empty(w_shape, device="meta"),
                                               stride=kw.get("stride", 1), padding=kw.get("padding", 0),
                                               output_padding=adj.output_padding, dilation=kw.get("dilation", 1),
                                               groups=g)
    assert tuple(back.shape) == x_shape == adj.out_shape


@pytest.mark.parametrize("make, match", [
    (lambda: ConvAxis(5, 3, stride=0), "ConvAxis.stride must be >= 1, got 0"),
    (lambda: ConvAxis.same(5, 3, 0), "ConvAxis.stride must be >= 1, got 0"),
    (lambda: ConvAxis(0, 3), "ConvAxis.size must be >= 1"),
    (lambda: ConvAxis("5", 3), "ConvAxis.size must be an int"),
    (lambda: ConvAxis(5, 3, lo=True), "ConvAxis.lo must be an int"),
    (lambda: TransposeAxis(5, 3, stride=2, output_padding=2), r"output_padding 2 must be < max\(stride 2"),
    (lambda: TransposeAxis(4, 3, 2).with_lax_padding((1,)), r"'SAME', 'VALID' or an \(a, b\) pair"),
    (lambda: cb.output_shape((-2, 3, 8, 8), (4, 3, 3, 3)), r"input shape \(-2, 3, 8, 8\) has a negative size"),
    (lambda: cb.output_shape((2, 3, 8, 8), (-4, 3, 3, 3)), "kernel shape .* has a negative size"),
    (lambda: make_conv_spec((2, 3, 8, 8), (4, 3, 3, 3)).resized((9, 9, 9)), "resized takes 2 spatial sizes"),
    (lambda: make_conv_spec((1, 2, 7), (3, 2, 3), padding=1, padding_mode="reflect").adjoint(),
     "padding_mode='reflect' adds each padded row back"),
    (lambda: cb.spec.make_conv_transpose_spec((1, 5, 6, 2), (3, 3, 2, 4), convention="jax", stride=2,
                                              padding="SAME").adjoint(), "only an unflipped kernel"),
])
def test_geometry_and_specs_refuse_nonsense(make, match):
    with pytest.raises(cb.ConvBridgeError, match=match):
        make()


def test_kernel_shapes_and_adjoints_of_both_specs():
    conv = make_conv_spec((2, 9, 10, 4), (3, 3, 2, 6), layout="NHWC", groups=2, stride=2, padding=1)
    assert conv.kernel_shape == (3, 3, 2, 6)
    t = conv.adjoint()  # channels-first, torch's (C_in, C_out / g, *k) = the conv kernel's (O, I / g, *k)
    assert (t.kernel_shape, t.in_channels, t.out_channels, t.out_spatial) == ((6, 2, 3, 3), 6, 4, (9, 10))
    back = t.adjoint()
    assert back.kernel_shape == (6, 2, 3, 3) and back.out_spatial == conv.out_spatial
