"""cb.conv inside the frameworks' compilers: torch.compile(fullgraph=True) with no graph break and no cache
warning, and jax.jit with exactly one convolution in the jaxpr for the native algorithm."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import convbridge as cb


def _count(jaxpr, name):
    total = 0
    for eqn in jaxpr.eqns:
        total += eqn.primitive.name == name
        for sub in eqn.params.values():
            inner = getattr(sub, "jaxpr", sub)
            if hasattr(inner, "eqns"):
                total += _count(inner, name)
    return total


@pytest.mark.parametrize("kwargs", [dict(padding=1), dict(padding="same", stride=2, layout="NHWC"),
                                    dict(padding=((0, 2), (1, 0)), dilation=2, groups=3)])
def test_jit_holds_one_convolution(kwargs):
    jax = pytest.importorskip("jax")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 6, 9, 9) if kwargs.get("layout") != "NHWC" else (2, 9, 9, 6)).astype(np.float32)
    w = rng.standard_normal((6, 6 // kwargs.get("groups", 1), 3, 3)).astype(np.float32)
    if kwargs.get("layout") == "NHWC":
        w = w.transpose(2, 3, 1, 0)
    jaxpr = jax.make_jaxpr(lambda a, k: cb.conv(a, k, **kwargs))(x, w).jaxpr
    assert _count(jaxpr, "conv_general_dilated") == 1
    np.testing.assert_allclose(np.asarray(jax.jit(lambda a, k: cb.conv(a, k, **kwargs))(x, w)),
                               cb.conv(x, w, **kwargs), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", ["eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_torch_compile_fullgraph_has_no_graph_break_and_no_cache_warning(backend):
    """Dynamo's trace decides graph breaks; the eager backend skips inductor's code generation (seconds)."""
    torch = pytest.importorskip("torch")
    torch._dynamo.reset()
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.standard_normal((2, 9, 9, 3)).astype(np.float32))
    w = torch.from_numpy(rng.standard_normal((3, 3, 3, 4)).astype(np.float32))
    wt = torch.from_numpy(rng.standard_normal((4, 2, 3, 3)).astype(np.float32))

    def f(a, k, kt):
        y = cb.conv(a, k, padding=1, layout="NHWC", algorithm="auto")
        return cb.conv_transpose(y, kt, stride=2, padding=1, output_padding=1, layout="NHWC,IOHW->NCHW")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = torch.compile(f, fullgraph=True, backend=backend)(x, w, wt)  # fullgraph: any graph break raises
    assert not [w for w in caught if "lru_cache" in str(w.message) or "graph break" in str(w.message).lower()]
    torch.testing.assert_close(got, f(x, w, wt), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("algorithm, groups", [("shifted", 4)] + [  # one in CI: Dynamo's trace takes seconds
    pytest.param(a, g, marks=pytest.mark.slow) for a, g in (("fft", 1), ("matmul", 2), ("channels_last", 4))])
def test_torch_compile_traces_every_algorithm(algorithm, groups):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    x = torch.from_numpy(rng.standard_normal((2, 4, 10, 10)).astype(np.float32))
    w = torch.from_numpy(rng.standard_normal((4, 4 // groups, 3, 3)).astype(np.float32))

    def f(a, k):
        return cb.conv(a, k, padding=1, groups=groups, algorithm=algorithm)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = torch.compile(f, fullgraph=True, backend="eager")(x, w)
    assert not [w for w in caught if "lru_cache" in str(w.message)]
    torch.testing.assert_close(got, cb.conv(x, w, padding=1, groups=groups), rtol=1e-5, atol=1e-5)
