"""Spec pieces on their own: padding forms, gather indices, layouts, output-size arithmetic."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import convbridge as cb
from convbridge.layout import resolve_layout
from convbridge.padding import gather_indices, parse_padding, same_pairs
from convbridge.spec import make_conv_spec

NP_MODE = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


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


@given(n=st.integers(1, 40), k=st.integers(1, 7), s=st.integers(1, 4), d=st.integers(1, 3))
def test_same_gives_ceil_n_over_s(n, k, s, d):
    (lo, hi), = same_pairs((n,), (k,), (s,), (d,))
    assert hi - lo in (0, 1)
    (lo2, hi2), = same_pairs((n,), (k,), (s,), (d,), lower=True)
    assert (lo2, hi2) == (hi, lo)
    if n + lo + hi >= d * (k - 1) + 1:
        assert cb.output_shape((1, 1, n), (1, 1, k), stride=s, dilation=d, padding="same") == (1, 1, -(-n // s))


def test_layout_defaults_and_forms():
    lay = resolve_layout("NHWC", 4, 4)
    assert (lay.lhs, lay.rhs, lay.out) == ("NHWC", "HWIO", "NHWC")
    assert lay.lhs_perm == (0, 3, 1, 2) and lay.rhs_perm == (3, 2, 0, 1)
    assert resolve_layout(None, 3, 4).batched is False
    assert resolve_layout(("NWC", "WIO", "NCW"), 3, 3).out_perm == (0, 1, 2)
    assert resolve_layout("CHW", 3, 4).lhs == "NCHW"
    assert str(resolve_layout("HWC", 3, 4)) == "HWC,HWIO->HWC"
    assert resolve_layout(None, 6, 6).spatial == ("A", "B", "D", "E")


def test_spec_arithmetic_matches_torch_formula():
    spec = make_conv_spec((8, 3, 224, 224), (64, 3, 7, 7), stride=2, padding=3)
    assert spec.out_spatial == (112, 112)
    assert spec.terms == 3 * 49 and spec.macs == 8 * 64 * 112 * 112 * 147
    assert cb.output_shape((32, 3, 32, 32), (4, 3, 5, 5)) == (32, 4, 28, 28)
    assert cb.output_shape((3, 32, 32), (4, 3, 5, 5)) == (4, 28, 28)
    assert cb.output_shape((2, 32, 32, 3), (5, 5, 3, 4), layout="NHWC", padding="same") == (2, 32, 32, 4)
