"""Training parity: the gradients of one convolution on several backends, judged like its output.

A convolution's vector-Jacobian product (VJP) is itself a sum of products, so it obeys the same rounding bound
``|fl(v) - v| <= beta(K_e) G_e`` (:mod:`convbridge.parity`), each gradient with its own gauge ``G`` (the same sum over
the absolute values) and its own per-element term counts ``K_e``. For ``y = conv(x, w) + b`` (torch's meaning: any
rank, stride s, dilation d, padding pairs, groups) and a cotangent ``g``:

- ``dx = conv_transpose(g, w)``, the same stride, padding, dilation and groups, with the output_padding that
  restores x's size (a padding mode other than zeros then adds each padded row's gradient back onto the row it
  copies): ``K_e`` at most ``C_out/groups * prod(k)``;
- ``dw[o, c, k] = sum_{n, p} pad(x)[n, c, p*s + k*d] g[n, o, p]``, per group: a correlation of x with g as the
  kernel (batch and channel roles swapped, stride and dilation swapped): ``K_e`` at most ``N * prod(out)``;
- ``db = sum of g over the batch and the output positions``: ``K = N * prod(out)``.

For ``op="conv_transpose"`` the roles swap: ``dx`` is the convolution this transposed convolution is the gradient of,
applied to ``g``, and ``dw`` the same correlation with x and g exchanged. The float64 references, gauges and term
counts come from :mod:`convbridge.reference` (the term counts from the same VJP on ones).

Each backend's VJP comes from its framework's autodiff: torch autograd (``"torch"``, and callables that return torch
tensors: they receive torch tensors that require grad) and ``jax.vjp`` (``"jax"`` under ``jax.jit``, and callables
that return JAX arrays). NumPy has no autodiff: ``"numpy"`` and callables that return NumPy arrays are left out of
the gradients, with a note. Every backend gets the same seeded cotangent, in the output's dtype.

Undecided gradients are re-run like outputs (:func:`convbridge.compare`): in float64, and on integer data (x, w, b
and g) on which every partial sum of every gradient is exact in the dtype.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from convbridge import backends as _backends
from convbridge import dispatch, judging
from convbridge._types import ArrayLike
from convbridge.arrays import framework_of, shape_of, to_host, to_numpy
from convbridge.errors import ArgumentError, ArgumentTypeError, ConvBridgeError, DTypeError, ShapeError, \
    describe_value
from convbridge.ops import build, split_plan_keywords
from convbridge.parity import FAMILIES, Gauges, PairResult, ParityReport
from convbridge.plan import make_plan
from convbridge.precision import REFERENCE, Precision, candidate, is_complex, unit_roundoff
from convbridge.reference import conv_canonical, to_canonical
from convbridge.reference.transpose import conv_transpose_canonical, torch_kernel
from convbridge.spec import NUMPY_PAD_MODES, ConvAxis, ConvSpec, ConvTransposeSpec, TransposeAxis, gather_indices, \
    inverse

__all__ = ["GRADIENTS", "SEED", "compare_gradients", "judge_gradients", "cotangent", "reference_vjp",
           "gradient_gauges", "exact_values"]

#: The gradients judged, in the report's order: with respect to the input, the kernel and the bias.
GRADIENTS = ("x", "weight", "bias")
#: The cotangent's seed.
SEED = 0
#: What each gradient is, by op, for the gradient report's head line: (op it is, how).
_WHAT = {
    "conv": {"x": ("conv_transpose", "conv_transpose(g, w) with the conv's stride, padding, dilation and groups"),
             "weight": ("conv", "correlation of x with g over the batch and the output positions, per group"),
             "bias": ("sum", "sum of g over the batch and the output positions")},
    "conv_transpose": {"x": ("conv", "conv(g, w), the convolution this transposed convolution is the gradient of"),
                       "weight": ("conv", "correlation of g with x over the batch and the input positions, per group"),
                       "bias": ("sum", "sum of g over the batch and the output positions")},
}
#: Named backends with autodiff.
_AUTODIFF = ("torch", "jax")

Spec = ConvSpec | ConvTransposeSpec
Runs = dict[str, tuple[np.ndarray, Precision, str]]


# ----------------------------------------------------------------------------------------------- the reference

def cotangent(spec: Spec, seed: int = SEED) -> np.ndarray:
    """The seeded cotangent ``g``: standard normal values in the op's output shape and dtype (the same for every
    backend).

    >>> from convbridge.spec import make_conv_spec
    >>> g = cotangent(make_conv_spec((2, 3, 8, 8), (4, 3, 3, 3), dtypes=("float32", "float32")))
    >>> g.shape, g.dtype.name
    ((2, 4, 6, 6), 'float32')
    """
    values = np.random.default_rng(seed).standard_normal(spec.out_shape)
    return values.astype(judging._np_dtype(str(spec.dtype or "float64")))


def _out_canonical(a: np.ndarray, spec: Spec) -> np.ndarray:
    """An array in the op's output layout -> ``(N, C, *spatial)``."""
    a = np.asarray(a) if spec.layout.batched else np.asarray(a)[None]
    return a.transpose(spec.layout.out_perm)


def _in_user(ac: np.ndarray, spec: Spec) -> np.ndarray:
    """``(N, C, *spatial)`` -> the op's input layout (N dropped for unbatched input; N may be 1 for a count map)."""
    a = ac.transpose(inverse(spec.layout.lhs_perm))
    return a if spec.layout.batched else a[0]


def _kernel_canonical(w: np.ndarray, spec: Spec) -> np.ndarray:
    """The user's kernel as conv's ``(O, I, *k)`` or a transposed convolution's torch ``(C_in, C_out/g, *k)``."""
    return w.transpose(spec.layout.rhs_perm) if isinstance(spec, ConvSpec) else torch_kernel(w, spec)


def _kernel_user(wk: np.ndarray, spec: Spec) -> np.ndarray:
    """Inverse of :func:`_kernel_canonical`."""
    if isinstance(spec, ConvSpec):
        return wk.transpose(inverse(spec.layout.rhs_perm))
    if spec.kernel_flipped:
        wk = np.flip(wk, axis=tuple(range(2, wk.ndim)))
    perm = spec.layout.rhs_perm
    return wk.transpose(inverse((perm[1], perm[0], *perm[2:])))


def _adjoint(spec: ConvTransposeSpec) -> tuple[ConvSpec, tuple[slice, ...]]:
    """The convolution a transposed convolution is the gradient of, and the slices of the transposed convolution's
    output it reads: rows that a negative crop (lax's padding, or output_padding beyond the crop) added are zeros
    that no input reaches, so the convolution skips them rather than padding negatively."""
    axes = tuple(TransposeAxis(a.size, a.kernel, a.stride, a.dilation, max(a.lo, 0), max(a.crops[1], 0))
                 for a in spec.axes)
    keep = tuple(slice(max(-a.lo, 0), a.out - max(-a.crops[1], 0)) for a in spec.axes)
    return replace(spec, axes=axes, kernel_flipped=False, convention="torch").adjoint(), keep


def _vjp_canonical(spec: Spec, xc: np.ndarray, wk: np.ndarray, gc: np.ndarray) -> dict[str, np.ndarray]:
    """Float64 gradients of ``sum(op(x, w, b) * g)``, canonical order (kernel as :func:`_kernel_canonical`)."""
    if isinstance(spec, ConvSpec):
        dx, dw = _input_vjp(gc, wk, spec), _weight_vjp(gc, xc, spec)
    else:
        adj, keep = _adjoint(spec)
        gk = gc[(slice(None), slice(None), *keep)]
        dx, dw = conv_canonical(gk, wk, None, adj), _weight_vjp(xc, gk, adj)
    return {"x": dx, "weight": dw, "bias": gc.sum(axis=(0, *range(2, gc.ndim)))}


def _input_vjp(gc: np.ndarray, wc: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """dx of a conv: the transposed convolution of g with the same kernel (the reference's scatter-add); for a
    padding mode other than zeros, onto the padded input, then each padded row added onto the row it copies."""
    if spec.padding_mode == "zeros":
        return conv_transpose_canonical(gc, wc, None, spec.adjoint())
    flat = tuple(ConvAxis(a.padded, a.kernel, a.stride, a.dilation) for a in spec.axes)
    d = conv_transpose_canonical(gc, wc, None, replace(spec, axes=flat, padding_mode="zeros").adjoint())
    for axis, a in enumerate(spec.axes, start=2):
        acc = np.zeros((a.size, *np.moveaxis(d, axis, 0).shape[1:]))
        np.add.at(acc, gather_indices(a.size, a.lo, a.hi, spec.padding_mode), np.moveaxis(d, axis, 0))
        d = np.moveaxis(acc, 0, axis)
    return d


def _weight_vjp(gc: np.ndarray, xc: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """dw of a conv: ``dw[o, c, k] = sum_{n, p} pad(x)[n, g(o) Cg + c, p s + k d] g[n, o, p]``, one matrix product
    per kernel tap (per group), over the batch and the output positions."""
    xpad = np.pad(xc, [(0, 0), (0, 0), *spec.padding], mode=NUMPY_PAD_MODES[spec.padding_mode])  # type: ignore[call-overload]
    n, groups = xc.shape[0], spec.groups
    cg, og, pixels = spec.in_channels // groups, spec.out_channels // groups, math.prod(spec.out_spatial)
    t = gc.reshape(n, groups, og, pixels).transpose(1, 2, 0, 3).reshape(groups, og, n * pixels)
    dw = np.empty((groups, og, cg, *spec.kernel_spatial), np.result_type(gc, xc))
    for tap in np.ndindex(*spec.kernel_spatial):
        rows = tuple(slice(k * a.dilation, k * a.dilation + a.out * a.stride, a.stride) for k, a in zip(tap, spec.axes))
        xs = xpad[(slice(None), slice(None), *rows)].reshape(n, groups, cg, pixels)
        dw[(slice(None), slice(None), slice(None), *tap)] = t @ xs.transpose(1, 0, 3, 2).reshape(groups, n * pixels, cg)
    return dw.reshape(spec.out_channels, cg, *spec.kernel_spatial)


def _user(grads: Mapping[str, np.ndarray], spec: Spec) -> dict[str, np.ndarray]:
    out = {"x": _in_user(grads["x"], spec), "weight": _kernel_user(grads["weight"], spec)}
    return out | ({"bias": grads["bias"]} if spec.has_bias else {})


def reference_vjp(spec: Spec, x: ArrayLike, w: ArrayLike, g: ArrayLike, *,
                  absolute: bool = False) -> dict[str, np.ndarray]:
    """The float64 gradients of ``sum(op(x, w, b) * g)`` with respect to x, the kernel and the bias (the last only
    when the spec has one), in the user's layouts. ``absolute``: the same sums of the products' absolute values,
    the gauges.

    >>> from convbridge.spec import make_conv_spec
    >>> spec = make_conv_spec((1, 1, 3), (1, 1, 2), b_shape=(1,))
    >>> d = reference_vjp(spec, np.array([[[1.0, 2.0, 3.0]]]), np.array([[[10.0, 1.0]]]), np.array([[[1.0, -1.0]]]))
    >>> d["x"].tolist(), d["weight"].tolist(), d["bias"].tolist()
    ([[[10.0, -9.0, -1.0]]], [[[-1.0, -1.0]]], [0.0])
    """
    f: Callable[[np.ndarray], np.ndarray] = np.abs if absolute else (lambda a: a)
    xc = to_canonical(f(to_numpy(x).astype(np.float64)), spec)
    wk = _kernel_canonical(f(to_numpy(w).astype(np.float64)), spec)
    gc = _out_canonical(f(to_numpy(g).astype(np.float64)), spec)
    return _user(_vjp_canonical(spec, xc, wk, gc), spec)


def _term_maps(spec: Spec) -> dict[str, np.ndarray]:
    """K_e of each gradient: the same VJP on ones for one image (zero padding and dilation holes add nothing;
    reflect, replicate and circular padding add the rows they copy), broadcastable to the gradient's shape; the
    kernel's and the bias' counts sum over the whole batch."""
    c_in, c_out = spec.in_channels, spec.out_channels
    xc = np.ones((1, c_in, *spec.in_spatial))
    gc = np.ones((1, c_out, *spec.out_spatial))
    counts = _vjp_canonical(spec, xc, np.ones(_kernel_canonical(np.empty(spec.kernel_shape), spec).shape), gc)
    counts["weight"] = counts["weight"] * spec.batch
    counts["bias"] = np.full((), float(spec.batch * math.prod(spec.out_spatial)))
    return _user(counts, spec)


def gradient_gauges(spec: Spec, x: ArrayLike, w: ArrayLike, g: ArrayLike) -> dict[str, Gauges]:
    """What the verdict of each gradient reads: the float64 reference, the gauge, K_e, and the products a
    flush-to-zero may drop (those with a subnormal factor)."""
    host = [to_numpy(a) for a in (x, w, g)]
    ref = reference_vjp(spec, *host)
    gauge = reference_vjp(spec, *host, absolute=True)
    terms = _term_maps(spec)
    flushed: dict[str, np.ndarray | float] = {k: 0.0 for k in ref}
    subs = [judging._subnormal(h) for h in host]
    if any(s.any() for s in subs):  # products with a subnormal factor: g's with |x|, |w|; then x's and w's with |g|
        mags = [np.abs(h.astype(np.float64)) for h in host]
        first = reference_vjp(spec, mags[0], mags[1], subs[2])
        second = reference_vjp(spec, subs[0], subs[1], mags[2])
        flushed = {k: first[k] + (second[k] if k != "bias" else 0.0) for k in ref}
    return {k: Gauges(gauge=gauge[k], terms=terms[k], reference=ref[k], flushed=flushed[k]) for k in ref}


# ----------------------------------------------------------------------------------------------- who differentiates

@dataclass(frozen=True)
class _Source:
    """A backend whose VJP is judged: a named one, or a callable differentiated by ``framework``."""

    name: str
    framework: str
    backend: str | None = None
    fn: Callable[..., Any] | None = None


def _sources(runners: Sequence[Any], arrays: Sequence[ArrayLike | None]) -> tuple[list[_Source], list[str]]:
    """The runners that can be differentiated, and a note for each one that cannot."""
    sources, notes = [], []
    for r in runners:
        if r.backend is not None:
            if r.backend in _AUTODIFF:
                sources.append(_Source(r.name, r.backend, backend=r.backend))
            else:
                notes.append(f"{r.name} has no autodiff: its gradients are not judged (only its output)")
            continue
        y = r.fn(*arrays)
        fw = framework_of(y)
        if fw in _AUTODIFF:
            sources.append(_Source(r.name, fw, fn=r.fn))
        else:
            notes.append(f"{r.name} returns {type(y).__name__} arrays, which no autodiff differentiates: its "
                         "gradients are not judged (a callable in torch or JAX is differentiated by its framework)")
    return sources, notes


def _vjp(source: _Source, spec: Spec, arrays: Sequence[ArrayLike | None], g: np.ndarray,
         plan_kwargs: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], Precision]:
    """One backend's gradients (user layouts, its dtype, on the host) and the precision that computed them."""
    if source.fn is not None:
        be = _backends.get(source.framework)
        native = be.place(arrays, None)
        grads = _differentiate(source, source.fn, native, g, contextlib.nullcontext(), jit=False)
        return grads, _precision(spec, None)
    plan = make_plan(source.backend, arrays[0], **plan_kwargs)
    native = dispatch.place(plan, arrays)
    impl = dispatch.find(spec, plan)
    scope: Any = contextlib.nullcontext()
    if source.framework == "torch":  # the backward pass runs under the plan's TF32 switches too
        from convbridge.backends import torch_backend

        scope = torch_backend.precision_scope(plan, native[0])
    grads = _differentiate(source, _Executed(impl, spec, plan), native, g, scope, jit=True)
    return grads, _precision(spec, _backends.get(plan.backend).precision(spec, plan, native[0]))


@dataclass(frozen=True)
class _Executed:
    """A named backend's op as ``fn(x, w, b)`` (hashable: JAX compiles one program per spec and plan)."""

    impl: dispatch.Impl
    spec: Spec
    plan: Any

    def __call__(self, *arrays: Any) -> Any:
        return dispatch.execute(self.impl, self.spec, self.plan, arrays)


def _precision(spec: Spec, native: Precision | None) -> Precision:
    """A named backend's own precision model for float32 and float64 (what its convolutions use, backward ones too);
    a callable's, and any 16-bit gradient's, its dtype's full precision (16-bit backward kernels may accumulate in
    the dtype: the conservative model)."""
    dtype = str(spec.dtype)
    if native is not None and dtype in ("float32", "float64"):
        return native
    return candidate(None, dtype)


def _differentiate(source: _Source, fn: Callable[..., Any], native: Sequence[Any], g: np.ndarray, scope: Any, *,
                   jit: bool) -> dict[str, np.ndarray]:
    n = sum(a is not None for a in native)
    try:
        with scope:
            if source.framework == "torch":
                grads = _torch_vjp(fn, native, g)
            else:
                grads = _jax_vjp(fn, native, g, jit)
    except ConvBridgeError:
        raise
    except Exception as e:  # an error inside the user's callable or its framework's autodiff
        raise ArgumentError(f"{source.name} could not be differentiated with {source.framework}'s autodiff "
                            f"({type(e).__name__}: {e}); with grad=True a callable must compute with "
                            f"{source.framework} operations on the arrays it receives") from e
    return dict(zip(GRADIENTS[:n], (to_host(d, f"the gradient of {source.name}") for d in grads)))


def _torch_vjp(fn: Callable[..., Any], native: Sequence[Any], g: np.ndarray) -> list[Any]:
    import torch

    from convbridge.backends import torch_backend

    leaves = [None if a is None else a.detach().requires_grad_(True) for a in native]
    y = fn(*leaves)
    _check_output(y, g, "torch")
    gt = torch_backend.place((g,), y.device)[0]
    wrt = [t for t in leaves if t is not None]
    grads = torch.autograd.grad(y, wrt, grad_outputs=gt, allow_unused=True)
    return [torch.zeros_like(t) if d is None else d for t, d in zip(wrt, grads)]  # unused: a zero gradient


#: ``jax.jit`` of a VJP, made once: the op (a named backend's :class:`_Executed`, or a hashable callable) is static.
_JITTED: dict[str, Any] = {}


def _jax_vjp(fn: Callable[..., Any], native: Sequence[Any], g: np.ndarray, jit: bool) -> list[Any]:
    """The VJP under ``jax.jit`` (one XLA program rather than one per eager op): always for a named backend; for a
    callable when it is hashable and traceable (Python control flow on values needs the eager VJP, which falls back)."""
    import jax

    from convbridge.backends import jax_backend

    x, w, b = native
    gj = jax_backend.place((g,), next(iter(x.devices())) if len(x.devices()) == 1 else None)[0]  # beside x
    if "vjp" not in _JITTED:
        _JITTED["vjp"] = jax.jit(_output_and_vjp, static_argnums=0)
    if jit:
        return list(_JITTED["vjp"](fn, x, w, b, gj)[1])
    pull = None
    try:
        hash(fn)
        y, grads = _JITTED["vjp"](fn, x, w, b, gj)
    except (TypeError, ValueError, jax.errors.ConcretizationTypeError):  # unhashable, not traceable, a wrong shape
        y, pull = _pullback(fn, x, w, b)
    _check_output(y, g, "jax")
    return list(grads if pull is None else pull(gj))


def _output_and_vjp(fn: Callable[..., Any], x: Any, w: Any, b: Any, g: Any) -> tuple[Any, Any]:
    y, pull = _pullback(fn, x, w, b)
    return y, pull(g)


def _pullback(fn: Callable[..., Any], x: Any, w: Any, b: Any) -> tuple[Any, Callable[[Any], Any]]:
    import jax

    if b is None:
        return jax.vjp(lambda x, w: fn(x, w, None), x, w)
    return jax.vjp(fn, x, w, b)


def _check_output(y: Any, g: np.ndarray, framework: str) -> None:
    if not hasattr(y, "shape") or tuple(shape_of(y)) != g.shape:
        got = tuple(y.shape) if hasattr(y, "shape") else describe_value(y)
        raise ShapeError(f"a callable returned {got} on {framework} arrays but the op gives {g.shape}; with "
                         "grad=True it must accept the arrays of the framework it returns")


# ----------------------------------------------------------------------------------------------- reports

def _report(key: str, spec: Spec, runs: Mapping[str, tuple[np.ndarray, Precision, str]], g: Gauges, *,
            exact: bool = False, notes: Sequence[str] = ()) -> ParityReport:
    """One gradient's :class:`ParityReport`: each backend against the float64 reference, and each pair."""
    ref = np.asarray(g.reference)
    pairs: list[PairResult] = []
    names = list(runs)
    for name in names:
        pairs.append(judging._judge((name, "reference"), runs[name][0], ref, g, (runs[name][1], REFERENCE),
                                    ("direct", "direct"), exact=exact, b_is_reference=True))
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            pairs.append(judging._judge((a, b), runs[a][0], runs[b][0], g, (runs[a][1], runs[b][1]),
                                        ("direct", "direct"), exact=exact))
    op, how = _WHAT[spec.op][key]
    description = f"gradient of the {spec.op} with respect to {key} = {how}"
    precisions = {n: p.label for n, (_, p, _) in runs.items()} | {"reference": REFERENCE.label}
    return ParityReport(op=op, description=description, shape=tuple(ref.shape), dtype=str(spec.dtype),
                        terms=int(np.max(g.terms)) if np.size(g.terms) else 0, precisions=precisions,
                        pairs=tuple(pairs), outputs={"reference": ref} | {n: r[0] for n, r in runs.items()},
                        gauge=np.asarray(g.gauge), term_map=np.asarray(g.terms), exact=exact, notes=tuple(notes))


def _run(sources: Sequence[_Source], spec: Spec, arrays: Sequence[ArrayLike | None], g: np.ndarray,
         plan_kwargs: Mapping[str, Any]) -> dict[str, Runs]:
    """Every source's gradients, by gradient, then by source."""
    runs: dict[str, Runs] = {k: {} for k in GRADIENTS[:2 + spec.has_bias]}
    for s in sources:
        grads, prec = _vjp(s, spec, arrays, g, plan_kwargs)
        for k in runs:
            runs[k][s.name] = (grads[k], prec, "direct")
    return runs


def _gradient_reports(spec: Spec, sources: Sequence[_Source], arrays: Sequence[ArrayLike | None],
                     plan_kwargs: Mapping[str, Any], *, rerun: bool | str = "auto", exact: bool = False,
                     seed: int = SEED) -> dict[str, ParityReport]:
    """Each gradient's report (keys ``"x"``, ``"weight"``, ``"bias"``), re-run as ``rerun`` says."""
    if exact:
        values = exact_values(spec, [shape_of(a) if a is not None else None for a in arrays], seed=seed)
        placed = judging._as_inputs_like(values[:3], arrays, str(spec.dtype))
        g = values[3].astype(judging._np_dtype(str(spec.dtype)))
        gauges = gradient_gauges(spec, values[0], values[1], g)
        runs = _run(sources, spec, placed, g, plan_kwargs)
        return {k: _report(k, spec, runs[k], gauges[k], exact=True) for k in runs}
    g = cotangent(spec, seed)
    gauges = gradient_gauges(spec, arrays[0], arrays[1], g)
    runs = _run(sources, spec, arrays, g, plan_kwargs)
    reports = {k: _report(k, spec, runs[k], gauges[k]) for k in runs}
    undecided = {k: {n for p in _undecided(r) for n in (p.a, p.b)} for k, r in reports.items()}
    if rerun is False or rerun == "auto" and not any(undecided.values()):
        return reports
    names = set().union(*undecided.values())
    again = [s for s in sources if rerun is True or s.name in names]  # one VJP gives every gradient: re-run once
    wide = _rerun64(spec, again, arrays, g, plan_kwargs, gauges)
    on_integers = _gradient_reports(spec, again, arrays, plan_kwargs, exact=True, seed=seed)
    return {k: judging._settle(r, runs[k], gauges[k], wide.get(k), on_integers[k]) if rerun is True or undecided[k]
            else r for k, r in reports.items()}


def _undecided(report: ParityReport) -> list[PairResult]:
    """The pairs the verdict reads (against the reference) that are inconclusive or weak: a re-run decides them."""
    decisive = [p for p in report.pairs if p.b == "reference"] or list(report.pairs)
    return [p for p in decisive if p.verdict == "inconclusive" or p.weak]


def _rerun64(spec: Spec, sources: Sequence[_Source], arrays: Sequence[ArrayLike | None], g: np.ndarray,
             plan_kwargs: Mapping[str, Any], gauges: Mapping[str, Gauges]) -> dict[str, ParityReport]:
    """The same gradients computed in float64, on the same values (and the same cotangent), judged with the
    original gauges."""
    if str(spec.dtype) == "float64":
        return {}
    host = [None if a is None else to_numpy(a).astype(np.float64) for a in arrays]
    runs: dict[str, Runs] = {k: {} for k in gauges}
    notes = []
    with judging._float64_scope():
        placed = judging._as_inputs_like(host, arrays, "float64") if framework_of(arrays[0]) != "numpy" else host
        spec64 = replace(spec, dtype="float64")
        for s in sources:
            try:
                for k, v in _run([s], spec64, placed if s.fn is not None else host, g.astype(np.float64),
                                 plan_kwargs).items():
                    runs[k].update(v)
            except (ShapeError, DTypeError) as e:
                notes.append(f"{s.name} could not re-run in float64: {e}")
    return {k: _report(k, spec64, runs[k], gauges[k], notes=notes) for k in runs}


def exact_values(spec: Spec, shapes: Sequence[tuple[int, ...] | None], *,
                 seed: int = SEED) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """Integer-valued x, w, b and cotangent g (float64) on which every partial sum of every gradient is an integer
    the dtype holds exactly (at most ``2**p``, p its significand bits): small integers, g thinned (most entries
    zero) until every gradient's gauge is small enough."""
    p = round(-math.log2(unit_roundoff(str(spec.dtype))))
    budget = 2.0**p
    rng = np.random.default_rng(seed)
    kmax = max(float(spec.out_channels // spec.groups * math.prod(spec.kernel_spatial)),
               float(spec.batch * math.prod(spec.out_spatial)), 1.0)
    a = max(1, min(2 ** (p // 3), int(math.sqrt(budget / (2 * kmax)))))
    density = min(1.0, budget / (2 * kmax * a * a))
    for _ in range(60):
        x = rng.integers(-a, a + 1, size=shapes[0]).astype(np.float64)
        w = rng.integers(-a, a + 1, size=shapes[1]).astype(np.float64)
        b = None if shapes[2] is None else judging._nonzero(rng.integers(-a, a + 1, size=shapes[2]).astype(
            np.float64), rng, False)
        g = rng.integers(-a, a + 1, size=spec.out_shape) * (rng.random(spec.out_shape) < density)
        gauges = reference_vjp(spec, x, w, g.astype(np.float64), absolute=True)
        if max(float(np.max(v, initial=0.0)) for v in gauges.values()) <= budget:
            return x, w, b, g.astype(np.float64)
        a, density = (a // 2, density) if a > 1 else (a, density / 2)
    raise ArgumentError(f"no integer data keeps every partial sum of this {spec.op}'s gradients below 2**{p}; "
                        "compare with exact=False")


# ----------------------------------------------------------------------------------------------- the entry point

def compare_gradients(x: ArrayLike, kernel: ArrayLike, bias: ArrayLike | None = None, *, op: str = "conv",
                      backends: Any = ("torch", "jax"), rerun: bool | str = "auto", exact: bool = False,
                      grad: bool = True, seed: int = SEED, **op_kwargs: Any) -> ParityReport:
    """:func:`convbridge.compare` with ``grad=True``: the output's report, with :attr:`ParityReport.gradients` one
    report per gradient (``"x"``, ``"weight"``, and ``"bias"`` when a bias is given): each backend's VJP against the
    float64 reference VJP under the same rounding bound, with the gradient's own gauge and term counts. The overall
    verdict is the worst of the output's and the gradients'.

    Args:
        x, kernel, bias, op, backends, rerun, exact, **op_kwargs: as for :func:`convbridge.compare` (``op`` is
            ``"conv"`` or ``"conv_transpose"``).
        grad: True (False runs :func:`convbridge.compare` alone).
        seed: the cotangent's seed (:func:`cotangent`).

    Raises:
        ArgumentError: an op other than conv and conv_transpose, an FFT or Winograd bound (or ``algorithm="auto"``,
            which may pick an FFT), no backend with autodiff, or a callable its framework cannot differentiate.
        DTypeError: complex inputs (their gradients are conjugate Wirtinger derivatives, not judged here).

    >>> import numpy as np, convbridge as cb
    >>> rng = np.random.default_rng(0)
    >>> x, w = rng.standard_normal((2, 3, 8, 8)).astype("float32"), rng.standard_normal((4, 3, 3, 3)).astype("float32")
    >>> report = cb.compare(x, w, backends=("torch",), grad=True)
    >>> sorted(report.gradients), report.verdict in ("identical", "equivalent")
    (['weight', 'x'], True)
    """
    if not isinstance(grad, bool):
        raise ArgumentTypeError(f"grad is True or False, got {describe_value(grad)}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ArgumentTypeError(f"seed is an int (the cotangent's), got {describe_value(seed)}")
    if not grad:
        return judging.compare(x, kernel, bias, op=op, backends=backends, rerun=rerun, exact=exact, **op_kwargs)
    runners = judging._runners(backends)
    parsed = dict(op_kwargs)
    arrays = judging._widened(op, x, kernel, bias, parsed)
    kwargs, plan_kwargs = split_plan_keywords(parsed)
    _check_family(plan_kwargs)
    spec = build(op, arrays[0], arrays[1], arrays[2], kwargs)  # an unknown op or a bad argument says so first
    if not isinstance(spec, (ConvSpec, ConvTransposeSpec)):
        raise ArgumentError(f"grad=True judges the gradients of 'conv' and 'conv_transpose', not of {op!r} (it only "
                            "moves values: its gradient is the opposite move); compare it with grad=False")
    if is_complex(spec.dtype):
        raise DTypeError(f"grad=True judges real gradients; {spec.dtype} inputs have conjugate (Wirtinger) "
                         "gradients, which convbridge does not judge: compare with grad=False")
    sources, notes = _sources(runners, arrays)
    if not sources:
        raise ArgumentError(f"grad=True needs a backend with autodiff: 'torch', 'jax' or a callable written in torch "
                            f"or JAX; got {tuple(r.name for r in runners)} ({'; '.join(notes)})")
    output = judging.compare(x, kernel, bias, op=op, backends=backends, rerun=rerun, exact=exact, **op_kwargs)
    reports = _gradient_reports(spec, sources, arrays, plan_kwargs, rerun=rerun, exact=exact, seed=seed)
    notes.append(f"gradients: one cotangent g, standard normal (seed {seed}) in {spec.dtype}, the same for every "
                 "backend" + (" (exact mode: integer x, w, b and g)" if exact else ""))
    return replace(output, gradients=reports, notes=output.notes + tuple(notes))


def judge_gradients(spec: Spec, x: ArrayLike, kernel: ArrayLike, g: ArrayLike,
                    gradients: Mapping[str, Mapping[str, ArrayLike]],
                    precisions: Mapping[str, Precision] | None = None) -> dict[str, ParityReport]:
    """Judge gradients computed elsewhere (e.g. by two models' autodiff) for one op with cotangent ``g``.

    Args:
        spec: the op (:func:`convbridge.ops.build`).
        x, kernel, g: its input, kernel and the cotangent the gradients were computed with.
        gradients: by source name, the gradients by key (``"x"``, ``"weight"``, ``"bias"``; keys a source lacks are
            not judged for it), in the user's layouts.
        precisions: by source name, what computed them (default: the dtype's full precision).

    Returns:
        One :class:`ParityReport` per gradient key that some source gave.
    """
    gauges = gradient_gauges(spec, x, kernel, g)
    reports = {}
    for key in GRADIENTS:
        runs = {name: (to_host(got[key], f"{name}'s gradient with respect to {key}"),
                       (precisions or {}).get(name, candidate(None, str(spec.dtype))), "direct")
                for name, got in gradients.items() if key in got}
        if runs and key in gauges:
            for name, (a, _, _) in runs.items():
                if a.shape != np.shape(gauges[key].gauge):
                    raise ShapeError(f"{name}'s gradient with respect to {key} has shape {a.shape}, but the "
                                     f"{spec.op}'s {key} has shape {np.shape(gauges[key].gauge)}")
            reports[key] = _report(key, spec, runs, gauges[key])
    return reports


def _check_family(plan_kwargs: dict[str, Any]) -> None:
    """Gradients are judged by the direct bound: refuse the FFT and Winograd families (and ``auto``)."""
    algorithm = plan_kwargs.get("algorithm")
    if isinstance(algorithm, str) and algorithm.lower() in FAMILIES:
        if algorithm.lower() != "direct":
            raise ArgumentError(f"grad=True judges gradients by the direct bound; algorithm={algorithm!r} names the "
                                f"{algorithm.lower()} family: compare gradients with algorithm='native' or 'direct'")
        plan_kwargs.pop("algorithm")
    elif algorithm == "auto":
        raise ArgumentError("grad=True judges gradients by the direct bound, and algorithm='auto' may pick an FFT; "
                            "name the algorithm (e.g. 'native' or 'matmul')")
