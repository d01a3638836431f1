"""unfold (im2col) and fold (col2im) on every backend: exact against the reference, torch's order, adjointness.

unfold only copies, so every backend must be *identical* to the reference (K = 0, allowed r = 0); fold sums
overlapping blocks and is judged with K = the most blocks overlapping one element.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given

import convbridge as cb
from convbridge.arrays import to_numpy
from convbridge.spec import make_fold_spec, make_unfold_spec

from cases import UNFOLD
from conftest import BACKENDS, FRAMEWORKS, compiling, record, record_report
from oracle import expected_shape
from strategies import build_unfold, unfold_configs

AGREE = ("identical", "equivalent")


def _fold_kwargs(spec, kwargs):
    """fold's arguments undoing an unfold: the same geometry, output_size = the input's spatial size."""
    return dict({k: v for k, v in kwargs.items() if k != "layout"}, output_size=spec.in_spatial)


@pytest.mark.parametrize("case", UNFOLD.values(), ids=lambda c: c.name)
def test_case_table_unfold_identical_and_fold_agrees(case):
    rng = np.random.default_rng(3)
    x = rng.standard_normal(case.x).astype(np.float32)
    report = cb.compare(x, case.w, op="unfold", backends=BACKENDS, **case.kwargs)
    record("config", backends=len(BACKENDS), source="unfold-table")
    record_report(report, f"unfold-table:{case.name}")
    assert report.terms == 0 and all(p.allowed_ratio == 0 for p in report.pairs)
    assert all(p.verdict == "identical" for p in report.pairs), str(report)
    assert report.shape == case.expected_shape
    spec = make_unfold_spec(x.shape, case.w, **case.kwargs)
    cols = rng.standard_normal(report.shape).astype(np.float32)
    fkw = _fold_kwargs(spec, case.kwargs)
    report = cb.compare(cols, case.w, op="fold", backends=BACKENDS, **fkw)
    record("config", backends=len(BACKENDS), source="fold-table")
    record_report(report, f"fold-table:{case.name}")
    assert report.shape == expected_shape("fold", cols.shape, case.w, fkw)
    assert all(p.verdict in AGREE for p in report.pairs), str(report)


def test_fold_k_and_gauge():
    """K = prod over dims of min(ceil(k gcd(s, d) / s), blocks); the gauge is fold(|cols|)."""
    cols = np.random.default_rng(0).standard_normal((1, 2 * 12, 4 * 6)).astype(np.float32)
    kw = dict(output_size=(8, 12), stride=(2, 1), dilation=(1, 2), padding=((1, 0), (0, 0)))
    report = cb.compare(cols, (3, 4), op="fold", backends=("numpy",), **kw)
    spec = make_fold_spec(cols.shape, (8, 12), (3, 4), **{k: v for k, v in kw.items() if k != "output_size"})
    assert spec.terms == 2 * 4  # ceil(3 / 2) = 2 along H; min(ceil(4 * 1 / 1), 6 blocks) = 4 along W: an upper bound
    # the verdict reads each element's own count: the blocks that actually cover it (torch's fold of ones)
    pytest.importorskip("torch")
    counts = np.asarray(cb.fold(np.ones_like(cols, dtype=np.float64), (8, 12), (3, 4), backend="torch",
                                **{k: v for k, v in kw.items() if k != "output_size"}))
    np.testing.assert_array_equal(np.broadcast_to(report.term_map, counts.shape), counts)
    assert report.terms == counts.max() <= spec.terms
    np.testing.assert_array_equal(report.gauge, cb.fold(np.abs(cols).astype(np.float64), (8, 12), (3, 4),
                                                        **{k: v for k, v in kw.items() if k != "output_size"}))


# ---- Hypothesis --------------------------------------------------------------------------------------------


@compiling("unfold")
@given(unfold_configs())
def test_hypothesis_all_ranks(cfg):
    x, kwargs, spec = build_unfold(cfg)
    report = cb.compare(x, cfg["kernel"], op="unfold", backends=BACKENDS, **kwargs)
    record("config", backends=len(BACKENDS), source=f"unfold-hypothesis-{cfg['nsp']}d")
    record_report(report, f"unfold-hypothesis-{cfg['nsp']}d")
    assert report.shape == expected_shape("unfold", x.shape, cfg["kernel"], kwargs)
    assert all(p.verdict == "identical" for p in report.pairs), str(report)
    cols = np.random.default_rng(cfg["seed"]).standard_normal(report.shape).astype(np.float32)
    report = cb.compare(cols, cfg["kernel"], op="fold", backends=BACKENDS, **_fold_kwargs(spec, kwargs))
    record("config", backends=len(BACKENDS), source=f"fold-hypothesis-{cfg['nsp']}d")
    record_report(report, f"fold-hypothesis-{cfg['nsp']}d")
    assert all(p.verdict in AGREE for p in report.pairs), str(report)


# ---- identities --------------------------------------------------------------------------------------------

ADJOINT = [((2, 3, 9), (3,), dict(stride=2, padding=((2, 1),), dilation=2)),
           ((1, 2, 7, 6), (3, 2), dict(stride=(2, 1), padding=1, dilation=(1, 2))),
           ((2, 1, 4, 5, 4), (2, 2, 3), dict(stride=(1, 2, 1), padding=(1, 0, 1)))]


def _native(backend, a):
    if backend == "torch":
        import torch

        return torch.from_numpy(a)
    return a


@pytest.mark.parametrize("shape,kernel,kw", ADJOINT, ids=["1d", "2d", "3d"])
def test_fold_is_the_adjoint_of_unfold_in_float64(backend, shape, kernel, kw):
    """<unfold x, y> = <x, fold y> in float64, on every backend (fold sums exactly what unfold copies)."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape)
    spec = make_unfold_spec(shape, kernel, **kw)
    y = rng.standard_normal(spec.out_shape)
    ctx = pytest.importorskip("jax").enable_x64(True) if backend == "jax" else _null()
    with ctx:
        u = to_numpy(cb.unfold(_native(backend, x), kernel, backend=backend, **kw))
        f = to_numpy(cb.fold(_native(backend, y), spec.in_spatial, kernel, backend=backend, **kw))
    assert u.dtype == f.dtype == np.float64
    assert np.vdot(u, y) == pytest.approx(np.vdot(x, f), rel=1e-12)


def _null():
    import contextlib

    return contextlib.nullcontext()


@pytest.mark.parametrize("nsp", [1, 2, 3])
def test_unfold_times_kernel_is_conv(nsp):
    """im2col: W.reshape(O, -1) @ unfold(x) is conv(x, W), with the same stride, padding and dilation."""
    rng = np.random.default_rng(nsp)
    x = rng.standard_normal((2, 3, *[7, 6, 5][:nsp])).astype(np.float32)
    w = rng.standard_normal((4, 3, *[3, 2, 2][:nsp])).astype(np.float32)
    kw = dict(stride=[2, 1, 2][:nsp], padding=[(1, 0), (0, 2), (1, 1)][:nsp], dilation=[1, 2, 1][:nsp])
    cols = cb.unfold(x, w.shape[2:], **kw)
    y = np.einsum("ok,nkl->nol", w.reshape(4, -1), cols).reshape(cb.output_shape(x.shape, w.shape, **kw))
    assert cb.verify(y, x, w, **kw).verdict in AGREE


# ---- torch's own order, bit for bit --------------------------------------------------------------------------

TORCH_2D = [((2, 3, 7, 8), dict(kernel_size=(2, 3), dilation=(2, 1), padding=(1, 2), stride=(1, 2))),
            ((0, 3, 5, 5), dict(kernel_size=2)),
            ((3, 6, 5), dict(kernel_size=(3, 2), padding=1, stride=2)),
            ((1, 1, 4, 4), dict(kernel_size=4))]


@pytest.mark.skipif("torch" not in FRAMEWORKS, reason="needs torch")
@pytest.mark.parametrize("shape,kw", TORCH_2D, ids=["batched", "empty_batch", "unbatched", "one_block"])
def test_torch_unfold_and_fold_order_bitwise(backend, shape, kw):
    """cb.unfold == F.unfold and cb.fold == F.fold bit for bit (fold on small integers, so any summation
    order is exact), including an empty batch and an unbatched input."""
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    ks = kw["kernel_size"] if isinstance(kw["kernel_size"], tuple) else (kw["kernel_size"],) * 2
    rest = {k: v for k, v in kw.items() if k != "kernel_size"}
    expected = F.unfold(torch.from_numpy(x), **kw).numpy()
    got = to_numpy(cb.unfold(_native(backend, x), ks, backend=backend, **rest))
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
    cols = rng.integers(-8, 9, expected.shape).astype(np.float32)
    out = shape[-2:]
    expected = F.fold(torch.from_numpy(cols), out, **kw).numpy()
    got = to_numpy(cb.fold(_native(backend, cols), out, ks, backend=backend, **rest))
    np.testing.assert_array_equal(got, expected)


@pytest.mark.skipif("torch" not in FRAMEWORKS, reason="needs torch")
def test_torch_rank_generic_path_equals_torch_2d():
    """The rank-generic torch path (used for 1-d and 3-d) gives F.unfold / F.fold's bits on 2-d input, and
    1-d and 3-d unfolds follow torch's 2-d order on a singleton axis."""
    import torch
    import torch.nn.functional as F

    from convbridge.backends import torch_backend

    rng = np.random.default_rng(2)
    xt = torch.from_numpy(rng.standard_normal((2, 3, 8, 7)).astype(np.float32))
    spec = make_unfold_spec(xt.shape, (3, 2), stride=(2, 1), dilation=(1, 3))
    expected = F.unfold(xt, (3, 2), dilation=(1, 3), stride=(2, 1))
    assert torch.equal(torch_backend.unfold_generic(xt, spec), expected)
    cols = torch.from_numpy(rng.integers(-8, 9, tuple(expected.shape)).astype(np.float32))
    fspec = make_fold_spec(cols.shape, (8, 7), (3, 2), stride=(2, 1), dilation=(1, 3))
    assert torch.equal(torch_backend.fold_generic(cols, fspec),
                       F.fold(cols, (8, 7), (3, 2), dilation=(1, 3), stride=(2, 1)))
    x1 = rng.standard_normal((2, 3, 11)).astype(np.float32)
    for backend in BACKENDS:
        got = to_numpy(cb.unfold(_native(backend, x1), (3,), stride=2, dilation=2,
                                                          padding=1, backend=backend))
        ref = F.unfold(torch.from_numpy(x1)[:, :, None], (1, 3), dilation=(1, 2), padding=(0, 1), stride=(1, 2))
        np.testing.assert_array_equal(got, ref.numpy())
    x3 = rng.standard_normal((2, 3, 1, 6, 5)).astype(np.float32)
    got = cb.unfold(torch.from_numpy(x3), (1, 2, 3), stride=(1, 2, 1))
    assert torch.equal(got, F.unfold(torch.from_numpy(x3)[:, :, 0], (2, 3), stride=(2, 1)))
