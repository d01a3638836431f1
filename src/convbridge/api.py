"""The public API: ``conv``, ``compare``, ``verify``.

Each call parses its arguments once into a spec (framework-free), then hands the
spec to a backend or to the NumPy reference.
"""

from __future__ import annotations

import numpy as np

from convbridge import backends as _backends
from convbridge import reference
from convbridge.errors import ArgumentError, ShapeError
from convbridge.parity import REFERENCE, ParityReport, Precision, judge_pair, unit_roundoff
from convbridge.spec import ConvSpec, dtype_name, make_conv_spec

__all__ = ["conv", "compare", "verify"]

_OPS = ("conv",)


def _shape(a) -> tuple[int, ...]:
    return tuple(a.shape) if hasattr(a, "shape") else np.shape(a)


def _spec(x, kernel, bias, **kwargs) -> ConvSpec:
    if x is None or kernel is None:
        raise ArgumentError("conv needs an input x and a kernel; got None")
    return make_conv_spec(
        _shape(x), _shape(kernel), None if bias is None else _shape(bias),
        dtypes=(dtype_name(np.asarray(x) if isinstance(x, list) else x),
                dtype_name(np.asarray(kernel) if isinstance(kernel, list) else kernel),
                None if bias is None else dtype_name(np.asarray(bias) if isinstance(bias, list) else bias)),
        **kwargs,
    )


def conv(x, kernel, bias=None, *, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros",
         layout=None, backend=None, precision="highest"):
    """N-d convolution (cross-correlation, as in PyTorch) with an explicit kernel.

    Args:
        x: input, ``(N, C, *spatial)`` by default, or ``(C, *spatial)`` unbatched.
        kernel: ``(C_out, C_in / groups, *kernel_size)`` by default.
        bias: optional ``(C_out,)``.
        stride, dilation: int or one int per spatial dim (>= 1).
        padding: int, per-dim ints, per-dim ``(lo, hi)`` pairs, ``"valid"``, ``"same"`` (XLA rule,
            any stride) or ``"same_lower"``.
        groups: channel groups; ``groups == C_in`` is depthwise.
        padding_mode: ``"zeros" | "reflect" | "replicate" | "circular"``.
        layout: ``None`` (channels first), an input layout such as ``"NHWC"`` (kernel ``HWIO``),
            ``"NHWC,HWIO->NHWC"`` or JAX's 3-tuple.
        backend: ``"numpy" | "jax" | "torch"``; ``None`` infers it from ``x``'s type.
        precision: ``"highest"`` (default), ``"high"`` or ``"default"`` (matters on GPUs/TPUs).

    Returns:
        The backend's native array, in the input's dtype.

    Raises:
        ConvBridgeError: any invalid argument, before any backend runs.
        BackendUnavailable: the backend's framework is not installed.

    Shape:
        out = floor((n + lo + hi - dilation * (k - 1) - 1) / stride) + 1 per spatial dim.

    >>> import numpy as np, convbridge as cb
    >>> x = np.arange(5.0).reshape(1, 1, 5)
    >>> cb.conv(x, np.array([[[1.0, 0.0, -1.0]]])).tolist()
    [[[-2.0, -2.0, -2.0]]]
    """
    spec = _spec(x, kernel, bias, stride=stride, padding=padding, dilation=dilation, groups=groups,
                 padding_mode=padding_mode, layout=layout, precision=precision)
    be = _backends.get(_backends.validate(backend) if backend is not None else _backends.infer(x))
    be.check(spec)
    return be.conv(spec, be.asarray(x), be.asarray(kernel), be.asarray(bias))


def _host(a):
    return None if a is None else _backends.get("numpy").asarray(a)


def _reference_and_gauge(spec: ConvSpec, x, kernel, bias):
    xh, wh, bh = _host(x), _host(kernel), _host(bias)
    ref = reference.conv(xh, wh, bh, spec)
    gauge = reference.conv(np.abs(xh), np.abs(wh), None if bh is None else np.abs(bh), spec)
    return ref, gauge


def _describe(spec: ConvSpec) -> str:
    pads = ", ".join(f"({lo}, {hi})" for lo, hi in spec.padding)
    return (f"{spec.nsp}-d, layout {spec.layout}, stride {spec.stride}, padding [{pads}] {spec.padding_mode}, "
            f"dilation {spec.dilation}, groups {spec.groups}, bias {spec.has_bias}")


def compare(x, kernel, bias=None, *, op="conv", backends=("torch", "jax"), **op_kwargs) -> ParityReport:
    """Run ``op`` on several backends and judge every result against the float64 reference and each other.

    Args:
        x, kernel, bias: as for :func:`conv` (from any framework).
        op: ``"conv"``.
        backends: names of two or more (or one) backends to run.
        **op_kwargs: the op's keyword arguments (stride, padding, layout, precision, ...).

    Returns:
        A :class:`ParityReport`; ``print(report)`` shows the table, ``report.verdict`` the worst verdict.

    >>> import numpy as np, convbridge as cb
    >>> rng = np.random.default_rng(0)
    >>> x, w = rng.standard_normal((2, 3, 8, 8)), rng.standard_normal((4, 3, 3, 3))
    >>> cb.compare(x.astype("float32"), w.astype("float32"), backends=("numpy",)).verdict in ("identical", "equivalent")
    True
    """
    names = _backend_names(backends)
    _check_op(op)
    spec = _spec(x, kernel, bias, **op_kwargs)
    runs = {}
    for name in names:
        be = _backends.get(name)
        be.check(spec)
        xb = be.asarray(x)
        y = be.conv(spec, xb, be.asarray(kernel), be.asarray(bias))
        runs[name] = (be.to_numpy(y), be.precision(spec, xb))
    ref, gauge = _reference_and_gauge(spec, x, kernel, bias)
    return _report(spec, runs, ref, gauge)


def _backend_names(names) -> tuple[str, ...]:
    if isinstance(names, str):
        names = (names,)
    names = tuple(_backends.validate(n) for n in names)
    if not names:
        raise ArgumentError("compare needs at least one backend, e.g. backends=('torch', 'jax')")
    if len(set(names)) != len(names):
        raise ArgumentError(f"backends {names} repeats a name; list each backend once")
    return names


def _check_op(op: str) -> None:
    if op not in _OPS:
        raise ArgumentError(f"unknown op {op!r}; choose one of {', '.join(map(repr, _OPS))}")


def _report(spec: ConvSpec, runs: dict, ref: np.ndarray, gauge: np.ndarray) -> ParityReport:
    pairs, outputs = [], {"reference": ref}
    names = list(runs)
    for name in names:
        out, prec = runs[name]
        outputs[name] = out
        pairs.append(judge_pair((name, "reference"), out, ref, gauge, spec.terms, (prec, REFERENCE),
                                b_is_reference=True)[0])
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            pairs.append(judge_pair((a, b), runs[a][0], runs[b][0], gauge, spec.terms,
                                    (runs[a][1], runs[b][1]))[0])
    precisions = {n: p.label for n, (_, p) in runs.items()} | {"reference": REFERENCE.label}
    return ParityReport(op=spec.op, description=_describe(spec), shape=spec.out_shape, dtype=spec.dtype,
                        terms=spec.terms, precisions=precisions, pairs=tuple(pairs), outputs=outputs,
                        gauge=gauge)


_INPUT_ROUNDING = {"highest": 0.0, "tf32": 2.0**-11, "bf16": 2.0**-8, "bf16_3x": 2.0**-16}


def _candidate_precision(precision, dtype: str) -> Precision:
    if precision is None or isinstance(precision, str) and precision.lower() in _INPUT_ROUNDING:
        u_in = _INPUT_ROUNDING[(precision or "highest").lower()]
        label = f"{dtype}" + (f", inputs rounded ({precision})" if u_in else " (IEEE)")
        return Precision(unit_roundoff(dtype), u_in, label)
    if isinstance(precision, Precision):
        return precision
    raise ArgumentError(f"unknown candidate precision {precision!r}; choose None, "
                        f"{', '.join(map(repr, _INPUT_ROUNDING))} or a convbridge.parity.Precision")


def verify(y, x, kernel, bias=None, *, op="conv", precision=None, name="candidate", **op_kwargs) -> ParityReport:
    """Judge a candidate output ``y`` (from any framework) against the float64 reference of ``op``.

    Args:
        y: the candidate result, in the op's output layout.
        x, kernel, bias: the op's inputs.
        op: ``"conv"``.
        precision: what produced ``y``: ``None``/``"highest"`` (full precision of its dtype),
            ``"tf32"``, ``"bf16"``, ``"bf16_3x"`` (inputs rounded first) or a ``Precision``.
        name: label of the candidate in the report.
        **op_kwargs: the op's keyword arguments.

    Raises:
        ShapeError: ``y`` does not have the op's output shape.
    """
    _check_op(op)
    spec = _spec(x, kernel, bias, **op_kwargs)
    out = _host(y)
    if tuple(out.shape) != spec.out_shape:
        raise ShapeError(f"candidate has shape {tuple(out.shape)} but this {op} gives {spec.out_shape}; "
                         "check the arguments (stride, padding, layout) used to produce it")
    cand_dtype = dtype_name(y)
    if cand_dtype not in ("float16", "bfloat16", "float32", "float64"):
        raise ShapeError(f"candidate dtype {cand_dtype} is not a float dtype convbridge can judge")
    ref, gauge = _reference_and_gauge(spec, x, kernel, bias)
    return _report(spec, {name: (out, _candidate_precision(precision, cand_dtype))}, ref, gauge)
