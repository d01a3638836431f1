"""Every float dtype on every backend, op and registered algorithm, judged against the float64 reference.

Issue 13's "differential tests per dtype on CPU (a sampled grid), with the verdict's reduced-precision bound":

- the grid: float16, bfloat16 (ml_dtypes on NumPy), float32 and float64 (JAX in x64 mode, scoped) x conv,
  conv_transpose, unfold, fold x every algorithm ``convbridge.dispatch`` registers for the op (each run on the
  backends that register it) x a fixed table of geometries (strides, dilation, groups, depthwise, reflect /
  circular / 'same' padding, 1-d to 3-d, NHWC, bias). A seeded, stratified sample runs in CI; the full product
  is marked slow. Each run must be "identical" or "equivalent" in units of the dtype's unit roundoff, keep the
  input's dtype, and an algorithm that cannot compute a dtype must refuse it with a convbridge error;
- special values: 16-bit results that overflow to +-inf exactly where the correctly rounded reference does are
  not a mismatch; a NaN in the input propagates to the same elements; integer and bool inputs are refused with
  an error that names the supported dtypes.

Every call runs with warnings turned into errors: a NumPy "overflow encountered in cast" must not leak to a user.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

import convbridge as cb
from convbridge import dispatch
from convbridge.arrays import dtype_name, framework_of
from convbridge.errors import ConvBridgeError, DTypeError
from convbridge.ops import get_op
from convbridge.precision import FLOAT_DTYPES, unit_roundoff

from cases import CONV, TRANSPOSE, UNFOLD
from conftest import BACKENDS

ml_dtypes = pytest.importorskip("ml_dtypes")

AGREE = ("identical", "equivalent")
OPS = ("conv", "conv_transpose", "unfold", "fold")
HALF = ("float16", "bfloat16")
INTEGERS = ("int8", "int32", "int64", "uint8", "bool")

#: (backend, dtype, algorithm) -> what the refusal must say. Everything else registered must compute.
REFUSED = {("numpy", "bfloat16", alg): r"NumPy has no bfloat16 arithmetic.*use algorithm='native'"
           for alg in ("matmul", "fft", "shifted")}


def _registered() -> dict[str, dict[str, tuple[str, ...]]]:
    """op -> algorithm -> the installed backends that register it (read from the dispatcher, never hard-coded)."""
    found: dict[str, dict[str, list[str]]] = {op: {} for op in OPS}
    for op in OPS:
        for backend in BACKENDS:
            for impl in dispatch.implementations(op, backend):
                found[op].setdefault(impl.algorithm, []).append(backend)
    return {op: {alg: tuple(bes) for alg, bes in algs.items()} for op, algs in found.items()}


ALGORITHMS = _registered()


# ------------------------------------------------------------------------------------------- the geometries

@dataclass(frozen=True)
class Geometry:
    """One call: ``x`` and ``w`` are shapes for the convolutions; for unfold/fold ``w`` is the kernel size."""

    name: str
    op: str
    x: tuple[int, ...]
    w: Any
    bias: bool = False
    kwargs: dict = field(default_factory=dict)

    @property
    def spec(self) -> Any:
        return get_op(self.op).build(self.x, self.w, **self.kwargs)

    @property
    def depthwise(self) -> bool:
        spec = self.spec
        return self.op == "conv" and spec.groups > 1 and spec.in_channels == spec.groups

    def arrays(self, dtype: str, seed: int = 0) -> tuple[Any, ...]:
        """``(x, w, b)`` (``(x, kernel_size, None)`` for unfold/fold), standard normal values rounded to ``dtype``."""
        rng = np.random.default_rng(seed)
        x = _cast(rng.standard_normal(self.x), dtype)
        if self.op in ("unfold", "fold"):
            return x, self.w, None
        w = _cast(rng.standard_normal(self.w), dtype)
        b = _cast(rng.standard_normal(self.spec.out_channels), dtype) if self.bias else None
        return x, w, b


def _from_case(case: Any) -> Geometry:
    return Geometry(case.name, case.op, case.x, case.w, case.bias, dict(case.kwargs))


def _fold_of(case: Any) -> Geometry:
    """fold undoing an unfold case: its columns as input, the same geometry, output_size = the input's size."""
    spec = get_op("unfold").build(case.x, case.w, **case.kwargs)
    kwargs = {k: v for k, v in case.kwargs.items() if k != "layout"}
    return Geometry(f"fold_{case.name}", "fold", spec.out_shape, case.w, False,
                    dict(kwargs, output_size=spec.in_spatial))


# TRANSPOSE and CONV share some names ("groups", "depthwise", "nhwc"): keep both, keyed by op
GEOMETRIES = {f"{g.op}:{g.name}": g for g in [
    *(_from_case(CONV[n]) for n in ("bias", "strided_same_odd", "dilation", "groups", "depthwise", "reflect",
                                    "circular", "nhwc", "conv1d", "conv3d", "depthwise_1d", "reflect_nhwc")),
    *(_from_case(TRANSPOSE[n]) for n in ("stride2_pad1_op1", "groups", "depthwise", "nhwc", "t1d", "t3d")),
    *(_from_case(UNFOLD[n]) for n in ("stride_pad_dilation_2d", "nhwc", "u1d", "u3d")),
    *(_fold_of(UNFOLD[n]) for n in ("stride_pad_dilation_2d", "u1d", "u3d")),
]}


def _supports(geo: Geometry, algorithm: str) -> bool:
    """Whether the algorithm computes this geometry at all (shifted: depthwise convolutions only)."""
    return algorithm != "shifted" or geo.depthwise


#: The full product: (dtype, geometry key, algorithm).
GRID = [(dtype, key, alg) for dtype in FLOAT_DTYPES for key, geo in GEOMETRIES.items()
        for alg in ALGORITHMS[geo.op] if _supports(geo, alg)]


def _sample(seed: int = 13, extra: int = 4) -> list[tuple[str, str, str]]:
    """A seeded, stratified sample of :data:`GRID`: one run for every (op, algorithm), the dtypes rotated so that
    each meets the convolutions under several algorithms, with a random geometry; then ``extra`` random runs."""
    rng = np.random.default_rng(seed)
    picked = []
    strata = sorted({(GEOMETRIES[k].op, alg) for _, k, alg in GRID})
    for i, (op, alg) in enumerate(strata):
        dtype = FLOAT_DTYPES[i % len(FLOAT_DTYPES)]
        keys = sorted({k for d, k, a in GRID if d == dtype and a == alg and GEOMETRIES[k].op == op})
        picked.append((dtype, keys[int(rng.integers(len(keys)))], alg))
    rest = [c for c in GRID if c not in picked]
    return picked + [rest[int(i)] for i in rng.choice(len(rest), extra, replace=False)]


SAMPLE = _sample()


# ------------------------------------------------------------------------------------------------ helpers

def _numpy_dtype(dtype: str) -> np.dtype:
    return np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.dtype(dtype)


def _cast(a: np.ndarray, dtype: str) -> np.ndarray:
    return a.astype(_numpy_dtype(dtype))


@contextlib.contextmanager
def strict() -> Iterator[None]:
    """Any warning (a leaked NumPy RuntimeWarning above all) is an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def _x64(dtype: str) -> Any:
    """JAX's x64 mode for float64, restored after (the repo's scope: ``jax_backend.float64``); else nothing."""
    if dtype != "float64" or "jax" not in BACKENDS:
        return contextlib.nullcontext()
    from convbridge.backends.jax_backend import float64

    return float64()


def _call(geo: Geometry, arrays: tuple[Any, ...], backend: str, algorithm: str) -> Any:
    """The op itself on one backend (cb.conv / cb.conv_transpose / cb.unfold / cb.fold)."""
    x, w, b = arrays
    if geo.op in ("unfold", "fold"):
        return getattr(cb, geo.op)(x, kernel_size=w, backend=backend, **geo.kwargs)
    return getattr(cb, geo.op)(x, w, b, backend=backend, algorithm=algorithm, **geo.kwargs)


def _compare(geo: Geometry, arrays: tuple[Any, ...], backends: tuple[str, ...], algorithm: str,
             **extra: Any) -> cb.ParityReport:
    x, w, b = arrays
    if geo.op in ("unfold", "fold"):
        return cb.compare(x, w, op=geo.op, backends=backends, algorithm=algorithm, **geo.kwargs, **extra)
    return cb.compare(x, w, b, op=geo.op, backends=backends, algorithm=algorithm, **geo.kwargs, **extra)


def _split(op: str, dtype: str, algorithm: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The backends that register the algorithm: those that must compute ``dtype``, those that must refuse it."""
    owners = ALGORITHMS[op][algorithm]
    refused = tuple(be for be in owners if (be, dtype, algorithm) in REFUSED)
    return tuple(be for be in owners if be not in refused), refused


# ------------------------------------------------------------------------------------------------ the grid

def _check(dtype: str, key: str, algorithm: str) -> None:
    geo = GEOMETRIES[key]
    arrays = geo.arrays(dtype, seed=len(key))
    runs, refused = _split(geo.op, dtype, algorithm)
    with _x64(dtype):
        for backend in refused:
            with strict(), pytest.raises(DTypeError, match=REFUSED[(backend, dtype, algorithm)]):
                _call(geo, arrays, backend, algorithm)
        with strict():
            report = _compare(geo, arrays, runs, algorithm)
            outputs = {backend: _call(geo, arrays, backend, algorithm) for backend in runs}
    assert report.dtype == dtype
    assert report.unit_roundoff == unit_roundoff(dtype), str(report)  # r is counted in the dtype's own u
    assert set(runs) | {"reference"} <= set(report.precisions)
    for p in report.pairs:
        if p.b == "reference":
            assert p.verdict in AGREE, f"{p.a} {algorithm} {dtype} {key}:\n{report}"
            assert p.max_ratio <= p.allowed_ratio, f"{p.a}: r {p.max_ratio} over the rigorous bound\n{report}"
    for backend, y in outputs.items():
        assert framework_of(y) == backend, f"{backend} {algorithm} returned a {framework_of(y)} array"
        assert dtype_name(y) == dtype, f"{backend} {algorithm} computed {dtype} into {dtype_name(y)}"


@pytest.mark.parametrize("dtype, key, algorithm", SAMPLE, ids=["-".join(c) for c in SAMPLE])
def test_sampled_grid(dtype, key, algorithm):
    _check(dtype, key, algorithm)


@pytest.mark.slow
@pytest.mark.parametrize("dtype, key, algorithm", GRID, ids=["-".join(c) for c in GRID])
def test_full_grid(dtype, key, algorithm):
    _check(dtype, key, algorithm)


def test_the_sample_covers_every_dtype_op_and_algorithm():
    assert {d for d, _, _ in SAMPLE} == set(FLOAT_DTYPES)
    assert {d for d, k, _ in SAMPLE if GEOMETRIES[k].op == "conv"} == set(FLOAT_DTYPES)
    assert {(GEOMETRIES[k].op, a) for _, k, a in SAMPLE} == {(GEOMETRIES[k].op, a) for _, k, a in GRID}
    assert {"native", "matmul", "fft"} <= set(ALGORITHMS["conv"])  # the dispatcher lists what the grid runs


def test_geometries_span_the_forms():
    specs = [g.spec for g in GEOMETRIES.values()]
    assert {s.nsp for s in specs} == {1, 2, 3}
    assert any(g.depthwise for g in GEOMETRIES.values()) and any(g.bias for g in GEOMETRIES.values())
    conv = [g.kwargs for g in GEOMETRIES.values() if g.op == "conv"]
    assert {"reflect", "circular"} <= {kw.get("padding_mode") for kw in conv}
    assert any(kw.get("padding") == "same" for kw in conv) and any(kw.get("layout") == "NHWC" for kw in conv)
    assert any(max(getattr(s, "stride", (1,))) > 1 for s in specs)
    assert any(max(getattr(s, "dilation", (1,))) > 1 for s in specs)


@pytest.mark.parametrize("algorithm", sorted(a for a, owners in ALGORITHMS["conv"].items() if "jax" in owners))
def test_float64_on_jax_without_x64_is_refused_by_every_algorithm(algorithm):
    jax = pytest.importorskip("jax")
    geo = GEOMETRIES["conv:depthwise"]
    x, w, b = geo.arrays("float64")
    with jax.enable_x64(False), strict():
        with pytest.raises(DTypeError, match=r"float64.*jax.*x64 mode is off.*jax_enable_x64.*or cast to float32"):
            cb.conv(x, w, b, backend="jax", algorithm=algorithm, **geo.kwargs)


# --------------------------------------------------------------------------------------------- special values

def _overflow_inputs(dtype: str, scale: str) -> tuple[tuple[np.ndarray, ...], dict]:
    """Positive x, kernels and biases of one sign per output channel: every partial sum moves one way, so a
    result overflows only where its correctly rounded value does (no inf - inf). ``scale``: ``"x300"`` (x times
    300 and a kernel large enough that the inner outputs overflow float16, bfloat16's magnitudes stay finite) or
    ``"boundary"`` (outputs spread around the dtype's largest finite value)."""
    rng = np.random.default_rng(300)
    sign = np.array([1.0, -1.0, 1.0, -1.0])
    x = rng.uniform(0.5, 1.0, (2, 4, 7, 7))
    w = sign[:, None, None, None] * rng.uniform(0.5, 1.0, (4, 4, 3, 3))
    b = sign * rng.uniform(0.5, 1.0, 4)
    kw = {"padding": 1}
    if scale == "x300":
        sx, sw = 300.0, 15.0
    else:
        base = np.abs(cb.conv(x, w, b, **kw))
        top = float(np.finfo(np.float16).max if dtype == "float16" else ml_dtypes.finfo(ml_dtypes.bfloat16).max)
        sx = sw = np.sqrt(top / np.median(base))
    return (_cast(x * sx, dtype), _cast(w * sw, dtype), _cast(b * sx * sw, dtype)), kw


def _correctly_rounded(ref: np.ndarray, dtype: str) -> np.ndarray:
    with np.errstate(over="ignore"):
        return ref.astype(_numpy_dtype(dtype)).astype(np.float64)


def _same_infs(a: np.ndarray, b: np.ndarray) -> bool:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return not np.isnan(a).any() and np.array_equal(np.isposinf(a), np.isposinf(b)) and \
        np.array_equal(np.isneginf(a), np.isneginf(b))


@pytest.mark.parametrize("rerun", [False, "default"])
@pytest.mark.parametrize("algorithm", ["native", "matmul", "fft"])
@pytest.mark.parametrize("scale", ["x300", "boundary"])
@pytest.mark.parametrize("dtype", HALF)
def test_overflow_to_the_correctly_rounded_inf_is_not_a_mismatch(dtype, scale, algorithm, rerun):
    (x, w, b), kw = _overflow_inputs(dtype, scale)
    runs, refused = _split("conv", dtype, algorithm)
    extra = {} if rerun == "default" else {"rerun": rerun}
    with strict():
        for backend in refused:
            with pytest.raises(DTypeError, match=REFUSED[(backend, dtype, algorithm)]):
                cb.conv(x, w, b, backend=backend, algorithm=algorithm, **kw)
        report = cb.compare(x, w, b, backends=runs, algorithm=algorithm, **kw, **extra)
        for backend in runs:
            assert dtype_name(cb.conv(x, w, b, backend=backend, algorithm=algorithm, **kw)) == dtype
    rounded = _correctly_rounded(report.outputs["reference"], dtype)
    assert np.isfinite(rounded).any(), "the case must keep some finite outputs"
    if dtype == "float16" or scale == "boundary":
        assert np.isposinf(rounded).any() and np.isneginf(rounded).any(), "the case must overflow both ways"
    assert not np.isnan(rounded).any()
    checked = []
    for p in report.pairs:
        if p.b != "reference":
            continue
        if _same_infs(report.outputs[p.a], rounded):
            checked.append(p.a)
            assert p.verdict != "mismatch", f"{p.a}: its infs are the correctly rounded ones\n{report}"
        nans = int(np.isnan(np.asarray(report.outputs[p.a], np.float64)).sum())
        if nans:  # finite inputs, no NaN in the reference: a NaN is no rounding error, never silently equivalent
            assert p.verdict not in AGREE, f"{p.a}: {nans} NaN where the reference has none, yet {p.verdict}"
    if algorithm == "native":  # float32 sums rounded once: always the correctly rounded infs
        assert {"jax", "torch"} & set(BACKENDS) <= set(checked), str(report)
    if set(checked) == set(runs):
        assert report.verdict != "mismatch", str(report)


def _nan_inputs(dtype: str) -> tuple[tuple[np.ndarray, ...], dict]:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 4, 7, 7))  # the overflow case's shapes: the same compiled programs
    x[0, 1, 3, 4] = np.nan
    w, b = rng.standard_normal((4, 4, 3, 3)), rng.standard_normal(4)
    return (_cast(x, dtype), _cast(w, dtype), _cast(b, dtype)), {"padding": 1}


@pytest.mark.parametrize("algorithm", ["native", "matmul", "fft"])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_a_nan_propagates_to_the_same_elements(dtype, algorithm):
    (x, w, b), kw = _nan_inputs(dtype)
    runs, _ = _split("conv", dtype, algorithm)
    with strict():
        report = cb.compare(x, w, b, backends=runs, algorithm=algorithm, **kw)
    where = np.isnan(report.outputs["reference"])
    assert where.sum() == 4 * 9 and not where[1].any()  # a 3x3 window in each of the 4 output channels of image 0
    for backend in runs:
        same = np.array_equal(np.isnan(np.asarray(report.outputs[backend], np.float64)), where)
        verdict = report.pair(backend, "reference").verdict
        if algorithm == "fft":  # a transform spreads a NaN; then the verdict must say so
            assert same or verdict not in AGREE, f"{backend}: NaNs elsewhere, yet {verdict}\n{report}"
        else:
            assert same, f"{backend} {algorithm}: NaN at {np.argwhere(np.isnan(report.outputs[backend]))[:5]}"
            assert verdict in AGREE, str(report)


def _integer_arrays(dtype: str, framework: str) -> tuple[Any, Any]:
    rng = np.random.default_rng(1)
    x, w = rng.integers(0, 3, (1, 2, 5, 5)).astype(dtype), rng.integers(0, 3, (3, 2, 3, 3)).astype(dtype)
    if framework == "torch":
        torch = pytest.importorskip("torch")
        return torch.from_numpy(x), torch.from_numpy(w)
    if framework == "jax":
        jnp = pytest.importorskip("jax.numpy")
        return jnp.asarray(x), jnp.asarray(w)
    return x, w


def _names_supported(dtype: str) -> str:
    """A pattern: the message names the refused dtype and every supported float dtype, in any order."""
    return rf"(?s)^(?=.*\b{dtype}\b)(?=.*\bfloat16\b)(?=.*\bbfloat16\b)(?=.*\bfloat32\b)(?=.*\bfloat64\b)"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", INTEGERS)
def test_integer_and_bool_inputs_are_refused_naming_the_supported_dtypes(dtype, backend):
    for framework in ("numpy", backend):
        x, w = _integer_arrays(dtype, framework)
        name = dtype_name(x)  # jax without x64 holds int64 as int32
        with strict():
            with pytest.raises(DTypeError, match=_names_supported(name)):
                cb.conv(x, w, backend=backend)
            with pytest.raises(DTypeError, match=_names_supported(name)):
                cb.compare(x, w, backends=(backend,))
            with pytest.raises(ConvBridgeError, match=_names_supported(name)):
                cb.conv_transpose(x, w.swapaxes(0, 1) if framework != "torch" else w.transpose(0, 1),
                                  backend=backend)

