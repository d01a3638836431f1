"""complex64 and complex128 on every backend, op and algorithm.

Values are checked against a reference built from REAL float64 reference calls on the real and imaginary parts
(``conv(xr, wr) - conv(xi, wi) + i (conv(xr, wi) + conv(xi, wr)) + b``), within ``rtol`` of the dtype and an
``atol`` scaled by the gauge ``conv(|xr| + |xi|, |wr| + |wi|) + |br| + |bi|``. Also: the dtype is kept, every
algorithm either matches or refuses with a DTypeError, ``auto`` picks a supported one, gradients flow (torch
autograd and ``jax.grad``), frameworks conjugate nothing, and JAX without x64 refuses complex128.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from conftest import BACKENDS

import convbridge as cb
from convbridge import autotune, dispatch, reference
from convbridge.errors import ConvBridgeError, DTypeError
from convbridge.spec import make_conv_spec

#: rtol per dtype: a few hundred unit roundoffs of the components (K <= 54 terms here, Gauss's trick in torch).
RTOL = {"complex64": 1e-5, "complex128": 1e-12}
DTYPES = tuple(RTOL)

# (name, op, input shape, kernel shape (conv, conv_transpose) or kernel size (unfold, fold), bias, kwargs)
CASES: list[tuple[str, str, tuple[int, ...], Any, bool, dict[str, Any]]] = [
    ("conv2d-groups-stride", "conv", (2, 4, 6, 5), (6, 2, 3, 2), True, dict(stride=2, padding=1, groups=2)),
    ("conv1d-dilation-reflect", "conv", (1, 2, 9), (3, 2, 3), True,
     dict(dilation=2, padding=2, padding_mode="reflect")),
    ("conv3d-circular", "conv", (1, 2, 4, 3, 4), (2, 1, 2, 2, 3), False,
     dict(groups=2, padding=1, padding_mode="circular", stride=(1, 2, 1))),
    ("conv2d-nhwc-replicate", "conv", (2, 5, 6, 4), (3, 3, 2, 6), True,
     dict(layout="NHWC", groups=2, padding="same", padding_mode="replicate")),
    ("conv2d-depthwise", "conv", (1, 3, 7, 6), (6, 1, 3, 3), True, dict(groups=3, padding=2, dilation=(2, 1))),
    ("transpose2d-groups", "conv_transpose", (2, 4, 3, 4), (4, 3, 3, 3), True,
     dict(stride=2, padding=1, output_padding=1, groups=2)),
    ("transpose1d-nwc", "conv_transpose", (1, 5, 2), (3, 2, 3), False, dict(layout="NWC", stride=3, dilation=2)),
    ("transpose3d", "conv_transpose", (1, 2, 2, 3, 2), (2, 2, 2, 2, 2), True, dict(stride=(2, 1, 2), padding=1)),
    ("unfold2d", "unfold", (2, 3, 6, 5), (2, 3), False, dict(dilation=(2, 1), padding=1, stride=(1, 2))),
    ("unfold1d", "unfold", (1, 2, 9), (3,), False, dict(stride=2)),
    ("unfold3d-nhwc", "unfold", (1, 3, 4, 3, 2), 2, False, dict(layout="NDHWC", padding=(1, 0, 0))),
    ("fold2d", "fold", (6, 5), (2, 3), False, dict(dilation=(2, 1), padding=1, stride=(1, 2))),
    ("fold1d", "fold", (9,), (3,), False, dict(stride=2)),
    ("fold3d", "fold", (4, 3, 3), 2, False, dict(padding=(1, 0, 1))),
]
IDS = [c[0] for c in CASES]


# ----------------------------------------------------------------------------------------------- helpers

def _complex(rng: np.random.Generator, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)


def _call(op: str, x: Any, second: Any, b: Any, kw: dict[str, Any], **plan: Any) -> Any:
    """One public call of ``op``; for fold, ``kw`` holds ``output_size`` (the case's input shape)."""
    if op == "conv":
        return cb.conv(x, second, b, **kw, **plan)
    if op == "conv_transpose":
        return cb.conv_transpose(x, second, b, **kw, **plan)
    if op == "unfold":
        return cb.unfold(x, second, **kw, **plan)
    return cb.fold(x, kw["output_size"], second, **{k: v for k, v in kw.items() if k != "output_size"}, **plan)


def _arrays(case: tuple, dtype: str, seed: int = 0) -> tuple[np.ndarray, Any, np.ndarray | None, dict[str, Any]]:
    """The case's complex NumPy input, kernel (or kernel size), bias and keyword arguments."""
    _, op, shape, kernel, bias, kw = case
    rng = np.random.default_rng(seed)
    if op == "fold":  # the input is the columns that unfold of an output_size input gives
        n, c = 2, 3
        cols = cb.output_shape((n, c, *shape), kernel, op="unfold", **kw)
        return _complex(rng, cols, dtype), kernel, None, dict(kw, output_size=shape)
    x = _complex(rng, shape, dtype)
    if op == "unfold":
        return x, kernel, None, kw
    w = _complex(rng, kernel, dtype)
    out_shape = cb.output_shape(shape, kernel, op=op, **kw)
    b = _complex(rng, (out_shape[-1 if "layout" in kw else 1],), dtype) if bias else None  # channels last / first
    return x, w, b, kw


def _split_reference(op: str, x: np.ndarray, w: Any, b: np.ndarray | None,
                     kw: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The complex reference from real float64 reference calls on the parts, and the gauge."""
    def re(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(a.real, np.float64)

    def im(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(a.imag, np.float64)

    def mag(a: np.ndarray) -> np.ndarray:
        return np.abs(re(a)) + np.abs(im(a))

    if op in ("unfold", "fold"):  # linear in x alone
        f = lambda a: np.asarray(_call(op, a, w, None, kw, backend="numpy"))  # noqa: E731
        return f(re(x)) + 1j * f(im(x)), f(mag(x))
    f = lambda a, k, c=None: np.asarray(_call(op, a, k, c, kw, backend="numpy"))  # noqa: E731
    y = f(re(x), re(w)) - f(im(x), im(w)) + 1j * (f(re(x), im(w)) + f(im(x), re(w)))
    gauge = f(mag(x), mag(w))
    if b is not None:  # the bias broadcast over the output: the op of a zero input
        zero = np.zeros_like(re(x))
        y = y + f(zero, re(w), re(b)) + 1j * f(zero, re(w), im(b))
        gauge = gauge + f(zero, re(w), mag(b))
    return y, gauge


def _host(y: Any) -> np.ndarray:
    if type(y).__module__.startswith("torch"):
        return y.detach().resolve_conj().numpy()
    return np.asarray(y)


def _dtype_of(y: Any) -> str:
    return str(y.dtype).removeprefix("torch.")


@contextlib.contextmanager
def _x64(backend: str, dtype: str) -> Iterator[None]:
    """JAX computes complex128 only in x64 mode."""
    if backend == "jax" and dtype == "complex128":
        import jax

        with jax.enable_x64(True):
            yield
    else:
        yield


def _on(backend: str, a: Any) -> Any:
    if a is None or not isinstance(a, np.ndarray):
        return a
    if backend == "jax":
        import jax.numpy as jnp

        return jnp.asarray(a)
    if backend == "torch":
        import torch

        return torch.from_numpy(a.copy())
    return a


def _check(y: Any, ref: np.ndarray, gauge: np.ndarray, dtype: str, what: str) -> None:
    assert _dtype_of(y) == dtype, f"{what}: dtype {_dtype_of(y)}, want {dtype}"
    rtol = RTOL[dtype]
    np.testing.assert_allclose(_host(y), ref, rtol=rtol, atol=rtol * float(np.max(gauge, initial=1.0)),
                               err_msg=what)


#: The case whose every algorithm JAX runs in CI (the depthwise conv: 'shifted' runs it too) ...
JAX_ALL = IDS.index("conv2d-depthwise")
#: ... and the convolutions it runs natively in CI (the other ranks' in the slow grid).
JAX_CI = {"conv2d-groups-stride", "conv2d-nhwc-replicate", "conv2d-depthwise", "transpose2d-groups",
          "transpose1d-nwc"}


def _grid() -> list[Any]:
    """(case, dtype, backend, every algorithm?): NumPy and torch run everything (eager, fast); JAX compiles each
    program (~0.2-0.5 s for a complex conv here), so CI runs one dtype per case (alternating), the native
    algorithm only, except every algorithm on one case; the rest of JAX's grid is marked slow. The algorithms are
    framework-free code over each backend's ops, which NumPy and torch exercise on every case."""
    out = []
    for index, case in enumerate(CASES):
        for dtype in DTYPES:
            for backend in BACKENDS:
                sampled = backend != "jax" or (index + DTYPES.index(dtype)) % 2 == 0 and (
                    case[1] in ("unfold", "fold") or case[0] in JAX_CI)
                every = backend != "jax" or index == JAX_ALL and dtype == "complex64"
                marks = () if sampled else (pytest.mark.slow,)
                out.append(pytest.param(index, dtype, backend, every, marks=marks,
                                        id=f"{case[0]}-{dtype}-{backend}"))
                if backend == "jax" and sampled and not every:
                    out.append(pytest.param(index, dtype, backend, True, marks=(pytest.mark.slow,),
                                            id=f"{case[0]}-{dtype}-{backend}-every"))
    return out


# ------------------------------------------------------------------------------------------------- values

@pytest.mark.parametrize(("index", "dtype", "backend", "every"), _grid())
def test_values_match_the_reference_of_the_parts(index, dtype, backend, every):
    case = CASES[index]
    op = case[1]
    x, w, b, kw = _arrays(case, dtype, seed=index)
    ref, gauge = _split_reference(op, x, w, b, kw)
    with _x64(backend, dtype):
        args = [_on(backend, a) for a in (x, w, b)]
        for algorithm in [i.algorithm for i in dispatch.implementations(op, backend)] if every else ["native"]:
            what = f"{case[0]} {dtype} {backend} {algorithm}"
            try:
                y = _call(op, *args, kw, backend=backend, algorithm=algorithm)
            except DTypeError as exc:  # a refusal names the dtype and what to use instead
                assert algorithm != "native", what
                with pytest.raises(DTypeError, match=rf"(?s){algorithm}.*{dtype}.*algorithm='native'"):
                    raise exc
                continue
            except ConvBridgeError as exc:  # not for the dtype: the geometry (e.g. 'shifted' needs depthwise)
                assert "complex" not in str(exc), what
                continue
            _check(y, ref, gauge, dtype, what)


def test_every_algorithm_computes_complex_where_it_computes_float():
    """Nothing refuses complex today: each algorithm that runs the depthwise float32 conv runs its complex64
    twin (on NumPy; the value tests above cover the other backends)."""
    rng = np.random.default_rng(5)
    x, w = _complex(rng, (1, 2, 6), "complex64"), _complex(rng, (2, 1, 3), "complex64")
    for impl in dispatch.implementations("conv", "numpy"):
        cb.conv(x.real.copy(), w.real.copy(), groups=2, algorithm=impl.algorithm)
        y = cb.conv(x, w, groups=2, algorithm=impl.algorithm)
        assert y.dtype == np.complex64, impl.algorithm


def test_no_framework_conjugates_the_kernel():
    """torch's F.conv1d, lax.conv_general_dilated and the reference compute sum x w: 1j * 1j = -1, not
    1j * conj(1j) = +1."""
    x, w = np.array([[[1j, 2.0]]], np.complex64), np.array([[[1j, 1.0]]], np.complex64)
    assert reference.conv(x, w, None, make_conv_spec(x.shape, w.shape)).tolist() == [[[1 + 0j]]]
    if "torch" in BACKENDS:
        import torch
        import torch.nn.functional as F

        assert F.conv1d(torch.from_numpy(x), torch.from_numpy(w)).tolist() == [[[1 + 0j]]]
    if "jax" in BACKENDS:
        from jax import lax

        assert np.asarray(lax.conv_general_dilated(x, w, (1,), [(0, 0)])).tolist() == [[[1 + 0j]]]
    for backend in BACKENDS:
        assert _host(cb.conv(_on(backend, x), _on(backend, w), backend=backend)).tolist() == [[[1 + 0j]]]


def test_mixing_complex_and_real_asks_for_the_complex_dtype():
    """Casting the real array up is exact; casting the complex one down would drop its imaginary part."""
    x, w = np.ones((1, 1, 4), np.complex64), np.ones((1, 1, 2), np.float32)
    with pytest.raises(DTypeError, match=r"mixed dtypes \(input complex64, kernel float32\).*one complex dtype.*"
                                         r"astype\('complex64'\)"):
        cb.conv(x, w)


@pytest.mark.skipif("jax" not in BACKENDS, reason="jax not installed")
def test_complex128_on_jax_without_x64_is_refused():
    import jax

    x, w = np.ones((1, 1, 4), np.complex128), np.ones((1, 1, 2), np.complex128)
    with jax.enable_x64(False):
        for algorithm in ("native", "matmul", "fft", "auto"):
            with pytest.raises(DTypeError, match=r"complex128 input on the jax backend.*x64 mode is off.*"
                                                 r"jax_enable_x64.*or cast to complex64"):
                cb.conv(x, w, backend="jax", algorithm=algorithm)
        with pytest.raises(DTypeError, match=r"complex128.*x64 mode is off"):
            cb.unfold(x, (2,), backend="jax")


# ------------------------------------------------------------------------------------------- auto's pick

@pytest.fixture
def fresh_auto(tmp_path, monkeypatch) -> Iterator[None]:
    monkeypatch.setenv("CONVBRIDGE_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("CONVBRIDGE_AUTOTUNE", raising=False)
    autotune.clear()
    yield
    autotune.clear()


def _refuses_complex(spec: Any, plan: Any) -> ConvBridgeError | None:
    if str(spec.dtype).startswith("complex"):
        return DTypeError(f"algorithm='refuser' computes real convolutions, not {spec.dtype}; use "
                          "algorithm='native'")
    return None


@pytest.mark.parametrize("backend", [pytest.param(b, marks=(pytest.mark.slow,) if b == "jax" else ())
                                     for b in BACKENDS])
def test_auto_picks_an_algorithm_that_computes_complex(backend, fresh_auto):
    rng = np.random.default_rng(7)
    x, w = _complex(rng, (1, 4, 9, 9), "complex64"), _complex(rng, (4, 1, 5, 5), "complex64")
    fake = dispatch.Impl("conv", backend, "refuser", lambda s, p, x, w, b: x, _refuses_complex,
                         cost=lambda s, p: 0.0)  # the cheapest by far, were it allowed
    dispatch.register(fake)
    try:
        choice = autotune.choose(_on(backend, x), _on(backend, w), groups=4, padding=2, backend=backend)
        assert choice.algorithm != "refuser" and "refuser" in choice.declined
        assert "complex64" in choice.declined["refuser"]
        y = cb.conv(_on(backend, x), _on(backend, w), groups=4, padding=2, backend=backend, algorithm="auto")
    finally:
        dispatch._REGISTRY.pop(("conv", backend, "refuser"))
        autotune.clear()
    ref, gauge = _split_reference("conv", x, w, None, dict(groups=4, padding=2))
    _check(y, ref, gauge, "complex64", f"auto on {backend} ({choice.algorithm})")


def test_complex_costs_count_four_real_multiply_adds():
    from convbridge import costs, memory

    real = make_conv_spec((2, 8, 16, 16), (8, 8, 3, 3), dtypes=("float32", "float32"))
    c64 = make_conv_spec((2, 8, 16, 16), (8, 8, 3, 3), dtypes=("complex64", "complex64"))
    c128 = make_conv_spec((2, 8, 16, 16), (8, 8, 3, 3), dtypes=("complex128", "complex128"))
    assert costs.flops(c64) == 4 * costs.flops(real)
    assert costs.native(c128, cb.plan.Plan("torch")) > costs.native(c64, cb.plan.Plan("torch")) > \
        costs.native(real, cb.plan.Plan("torch"))
    assert memory.footprint(c64).itemsize == 8 and memory.footprint(c128).itemsize == 16
    assert memory.verdict_bytes(c128, 2) > memory.verdict_bytes(real, 2)


# ---------------------------------------------------------------------------------------------- gradients

def _grad_case(dtype: str) -> tuple[np.ndarray, np.ndarray, dict[str, Any], np.ndarray, np.ndarray]:
    """A depthwise 1-d conv with a channel multiplier (every algorithm runs it), and the transposed-Jacobian
    products of ``Re sum(y)`` from the reference: ``dx = J^T 1``, ``dw`` likewise (no conjugation)."""
    rng = np.random.default_rng(11)
    x, w = _complex(rng, (2, 3, 8), dtype), _complex(rng, (6, 1, 3), dtype)
    kw = dict(groups=3, stride=2, padding=1)
    spec = make_conv_spec(x.shape, w.shape, **kw)
    ones = np.ones((2, 6, 4), np.complex128)
    dx, dw, _ = reference.conv_vjp_canonical(ones, x.astype(np.complex128), w.astype(np.complex128), spec)
    return x, w, kw, dx, dw


@pytest.mark.skipif("torch" not in BACKENDS, reason="torch not installed")
@pytest.mark.parametrize("algorithm", ["native", "matmul", "shifted", "fft"])
def test_torch_autograd_of_a_complex_conv(algorithm):
    """torch's gradient of a real loss is conj(J^T 1) (its convention: dL/dRe + i dL/dIm)."""
    import torch

    x, w, kw, dx, dw = _grad_case("complex128")
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    cb.conv(xt, wt, **kw, algorithm=algorithm).real.sum().backward()
    np.testing.assert_allclose(xt.grad.numpy(), np.conj(dx), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(wt.grad.numpy(), np.conj(dw), rtol=1e-12, atol=1e-12)


@pytest.mark.skipif("jax" not in BACKENDS, reason="jax not installed")
@pytest.mark.parametrize("algorithm", ["native", "shifted", *(pytest.param(a, marks=pytest.mark.slow)
                                                               for a in ("matmul", "fft"))])
def test_jax_grad_of_a_complex_conv(algorithm):
    """jax.grad of a real loss is J^T 1 (its convention: dL/dRe - i dL/dIm); 'shifted' has its own VJP."""
    import jax
    import jax.numpy as jnp

    x, w, kw, dx, dw = _grad_case("complex64")

    def loss(a: Any, k: Any) -> Any:
        return jnp.real(cb.conv(a, k, **kw, algorithm=algorithm).sum())

    gx, gw = jax.jit(jax.grad(loss, argnums=(0, 1)))(jnp.asarray(x), jnp.asarray(w))  # one compile
    assert gx.dtype == jnp.complex64 and gw.dtype == jnp.complex64
    np.testing.assert_allclose(np.asarray(gx), dx, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(gw), dw, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------------- reference

def test_the_reference_keeps_imaginary_parts_and_gauges_the_parts():
    """conv_and_gauge on complex inputs: the complex128 reference (float64 asked for: complex128 computed) and the
    real float64 gauge conv(|Re x| + |Im x|, |Re w| + |Im w|) + |Re b| + |Im b|; the other ops keep complex too."""
    x, w, b, kw = _arrays(CASES[1], "complex64", seed=3)
    ref, gauge = _split_reference("conv", x, w, b, kw)
    spec = make_conv_spec(x.shape, w.shape, b.shape, dtypes=("complex64",) * 3, **kw)
    y, g = reference.conv_and_gauge(x, w, b, spec)
    assert y.dtype == np.complex128 and g.dtype == np.float64
    np.testing.assert_allclose(y, ref, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(g, gauge, rtol=1e-13)
    y64 = reference.conv(x, w, b, spec, dtype=np.float64)
    assert y64.dtype == np.complex128 and np.array_equal(y64, y)
    y32, g32 = reference.conv_and_gauge(x, w, b, spec, dtype=np.float32)
    assert y32.dtype == np.complex64 and g32.dtype == np.float32
    for index in (5, 9, 12):  # conv_transpose, unfold, fold: the reference's float64 default stays complex
        case = CASES[index]
        xs, ws, bs, kws = _arrays(case, "complex128", seed=index)
        want, _ = _split_reference(case[1], xs, ws, bs, kws)
        got = np.asarray(_call(case[1], xs, ws, bs, kws, backend="numpy"))
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13)


def test_host_copies_of_complex_arrays():
    from convbridge.arrays import dtype_name, to_numpy

    if "torch" in BACKENDS:
        import torch

        t = torch.tensor([1 + 2j, 3 - 1j])
        assert to_numpy(t.conj()).tolist() == [1 - 2j, 3 + 1j]  # a lazily conjugated view
        assert to_numpy(t.conj().imag).tolist() == [-2.0, 1.0]  # a lazily negated one
        assert dtype_name(t) == "complex64"
    if "jax" in BACKENDS:
        import jax.numpy as jnp

        a = jnp.asarray(np.array([1 - 1j], np.complex64))
        assert dtype_name(a) == "complex64" and to_numpy(a).tolist() == [1 - 1j]


def test_the_conv_matrix_of_a_complex_kernel():
    from convbridge.lowering import conv_matrix

    rng = np.random.default_rng(2)
    x, w = _complex(rng, (1, 2, 5), "complex128"), _complex(rng, (3, 2, 2), "complex128")
    c = conv_matrix(x.shape, w, dense=True, padding=1, stride=2)
    np.testing.assert_allclose(c @ x.ravel(), cb.conv(x, w, padding=1, stride=2).ravel(), rtol=1e-13, atol=1e-13)

