"""Identities that hold by construction: groups split, delta kernels shift, 1x1 is einsum, layouts permute."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

import convbridge as cb

from conftest import record_report


def _np(y):
    return cb.arrays.to_numpy(y) if not isinstance(y, np.ndarray) else y


@pytest.mark.parametrize("nsp", [1, 2, 3])
def test_groups_equal_separate_convs(backend, rng, nsp):
    g, cg_in, cg_out = 3, 2, 2
    x = rng.standard_normal((2, g * cg_in, *[7] * nsp)).astype(np.float32)
    w = rng.standard_normal((g * cg_out, cg_in, *[3] * nsp)).astype(np.float32)
    y = _np(cb.conv(x, w, groups=g, padding=1, backend=backend))
    parts = [
        _np(cb.conv(x[:, i * cg_in:(i + 1) * cg_in], w[i * cg_out:(i + 1) * cg_out], padding=1, backend=backend))
        for i in range(g)
    ]
    split = np.concatenate(parts, axis=1)
    r = cb.verify(split, x, w, groups=g, padding=1)
    assert r.verdict in ("identical", "equivalent")
    assert cb.verify(y, x, w, groups=g, padding=1).verdict in ("identical", "equivalent")
    np.testing.assert_allclose(y, split, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("tap", [(0, 0), (1, 2), (2, 1), (2, 2)])
def test_delta_kernel_shifts_input(backend, rng, tap):
    """A kernel that is 1 at one tap copies the input shifted by that tap, exactly."""
    x = rng.standard_normal((2, 1, 8, 9)).astype(np.float32)
    w = np.zeros((1, 1, 3, 3), np.float32)
    w[(0, 0, *tap)] = 1
    y = _np(cb.conv(x, w, backend=backend))
    expected = x[:, :, tap[0]:tap[0] + 6, tap[1]:tap[1] + 7]
    np.testing.assert_array_equal(y, expected)


def test_delta_kernel_with_dilation_stride_padding(backend, rng):
    x = rng.standard_normal((1, 1, 11, 12)).astype(np.float32)
    w = np.zeros((1, 1, 3, 2), np.float32)
    w[0, 0, 2, 1] = 1  # tap (2, 1) with dilation (2, 3) reads offset (4, 3) of the padded input
    y = _np(cb.conv(x, w, stride=(2, 3), dilation=(2, 3), padding=((1, 0), (0, 2)), backend=backend))
    xp = np.pad(x, ((0, 0), (0, 0), (1, 0), (0, 2)))
    expected = xp[:, :, 4::2, 3::3][:, :, :y.shape[2], :y.shape[3]]
    np.testing.assert_array_equal(y, expected)


def test_one_by_one_is_einsum(backend, rng):
    x = rng.standard_normal((2, 16, 5, 6)).astype(np.float32)
    w = rng.standard_normal((8, 16, 1, 1)).astype(np.float32)
    y = _np(cb.conv(x, w, backend=backend))
    e = np.einsum("nchw,oc->nohw", x.astype(np.float64), w[:, :, 0, 0].astype(np.float64))
    report = cb.verify(e.astype(np.float32), x, w)
    assert report.verdict in ("identical", "equivalent")
    assert cb.verify(y, x, w).verdict in ("identical", "equivalent")
    np.testing.assert_allclose(y, e, rtol=1e-4, atol=1e-4)


def _layout_sample(nsp: int, count: int, seed: int):
    sp = "DHW"[3 - nsp:]
    lhs = ["".join(p) for p in itertools.permutations("NC" + sp)]
    rhs = ["".join(p) for p in itertools.permutations("OI" + sp)]
    r = np.random.default_rng(seed)
    return [(lhs[r.integers(len(lhs))], rhs[r.integers(len(rhs))], lhs[r.integers(len(lhs))]) for _ in range(count)]


@pytest.mark.parametrize("nsp,count", [(1, 4), (2, 6), (3, 4)])
def test_layout_permutations_give_same_values(backend, nsp, count):
    """A seeded sample of (input, kernel, output) layout permutations: same values as channels-first."""
    rng = np.random.default_rng(nsp)
    sp = "DHW"[3 - nsp:]
    x = rng.standard_normal((2, 4, *[6] * nsp)).astype(np.float32)
    w = rng.standard_normal((6, 2, *[3] * nsp)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    stride = [1, 2, 1][:nsp]
    kw = dict(padding="same", groups=2)
    base = cb.conv(x, w, b, backend="numpy", stride=stride, **kw)
    canon_in, canon_k = "NC" + sp, "OI" + sp
    for lhs, rhs, out in _layout_sample(nsp, count, seed=nsp):
        xl = np.transpose(x, [canon_in.index(c) for c in lhs])
        wl = np.transpose(w, [canon_k.index(c) for c in rhs])
        kw["stride"] = [stride[sp.index(c)] for c in lhs if c in sp]  # per-dim args follow the input's letters
        y = _np(cb.conv(xl, wl, b, layout=(lhs, rhs, out), backend=backend, **kw))
        back = np.transpose(y, [out.index(c) for c in canon_in])
        np.testing.assert_allclose(back, base, rtol=2e-5, atol=2e-5, err_msg=f"{lhs},{rhs}->{out}")
        report = cb.verify(y, xl, wl, b, layout=f"{lhs},{rhs}->{out}", **kw)
        record_report(report, f"layout:{lhs},{rhs}->{out}")
        assert report.verdict in ("identical", "equivalent"), f"{lhs},{rhs}->{out}"


def test_unbatched_equals_batch_of_one(backend, rng):
    x = rng.standard_normal((3, 9, 9)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    y1 = _np(cb.conv(x, w, padding=1, backend=backend))
    y2 = _np(cb.conv(x[None], w, padding=1, backend=backend))
    assert y1.shape == (4, 9, 9)
    np.testing.assert_array_equal(y1, y2[0])


def test_same_is_xla_rule_not_torch_symmetric():
    """PITFALLS trap 1: n=224, k=7, s=2 'same' pads (2, 3), not torch's (3, 3)."""
    x = np.random.default_rng(0).standard_normal((1, 1, 224, 224)).astype(np.float32)
    w = np.random.default_rng(1).standard_normal((1, 1, 7, 7)).astype(np.float32)
    same = cb.conv(x, w, stride=2, padding="same")
    pairs = cb.conv(x, w, stride=2, padding=((2, 3), (2, 3)))
    torch_like = cb.conv(x, w, stride=2, padding=3)
    assert same.shape == torch_like.shape == (1, 1, 112, 112)
    np.testing.assert_array_equal(same, pairs)
    assert cb.verify(torch_like, x, w, stride=2, padding="same").verdict == "mismatch"
    assert math.prod(same.shape) == 112 * 112
