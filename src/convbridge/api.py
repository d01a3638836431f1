"""The public API: ``conv``, ``conv_transpose``, ``unfold``, ``fold``, ``compare``, ``verify``.

Each call parses its arguments once into a spec (framework-free), then hands the
spec to a backend or to the NumPy reference. Which spec builder, reference and
backend function an op uses comes from the op table in :mod:`convbridge.ops`.
"""

from __future__ import annotations

import numpy as np

from convbridge import backends as _backends
from convbridge.errors import ArgumentError, ShapeError
from convbridge.ops import Op, get_op
from convbridge.parity import REFERENCE, ParityReport, Precision, judge_pair, unit_roundoff
from convbridge.spec import dtype_name

__all__ = ["conv", "conv_transpose", "unfold", "fold", "compare", "verify"]


def _shape(a) -> tuple[int, ...]:
    return tuple(a.shape) if hasattr(a, "shape") else np.shape(a)


def _dtype(a) -> str:
    return dtype_name(np.asarray(a) if isinstance(a, list) else a)


def _prepare(op: str, x, kernel, bias, kwargs: dict):
    """Look ``op`` up, parse its arguments into a spec; return (table entry, spec, input arrays)."""
    entry = get_op(op)
    if entry.kernel_is_array:
        if x is None or kernel is None:
            raise ArgumentError(f"{op} needs an input x and a kernel; got None")
        arrays = (x, kernel, bias)
        dtypes = tuple(None if a is None else _dtype(a) for a in arrays)
        spec = entry.build(_shape(x), _shape(kernel), None if bias is None else _shape(bias), dtypes=dtypes, **kwargs)
    else:
        if x is None:
            raise ArgumentError(f"{op} needs an input; got None")
        arrays = (x,)
        spec = entry.build(_shape(x), kernel, None if bias is None else _shape(bias), dtypes=(_dtype(x),), **kwargs)
    return entry, spec, arrays


def _run(entry: Op, spec, arrays, name: str):
    """Run one op on backend ``name``; return (native result, the input as that backend's array)."""
    be = _backends.get(name)
    be.check(spec)
    native = [be.asarray(a) for a in arrays]
    return getattr(be, entry.backend_fn)(spec, *native), native[0]


def _backend_for(backend, x) -> str:
    return _backends.validate(backend) if backend is not None else _backends.infer(x)


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
    entry, spec, arrays = _prepare("conv", x, kernel, bias, dict(
        stride=stride, padding=padding, dilation=dilation, groups=groups, padding_mode=padding_mode, layout=layout,
        precision=precision))
    return _run(entry, spec, arrays, _backend_for(backend, x))[0]


def _host(a):
    return None if a is None else _backends.get("numpy").asarray(a)


def _reference_and_gauge(entry: Op, spec, arrays):
    """The float64 reference and the gauge G: the same op on the absolute values of the inputs."""
    host = [_host(a) for a in arrays]
    ref = entry.reference(*host, spec)
    gauge = entry.reference(*(None if h is None else np.abs(h) for h in host), spec)
    return ref, gauge


def conv_transpose(x, kernel, bias=None, *, stride=1, padding=0, output_padding=0, dilation=1, groups=1,
                   layout=None, backend=None, precision="highest", output_size=None, convention="torch",
                   transpose_kernel=False):
    """N-d transposed convolution: PyTorch's (the gradient of :func:`conv` w.r.t. its input) or lax's.

    Args:
        x: input, ``(N, C_in, *spatial)`` by default, or ``(C_in, *spatial)`` unbatched.
        kernel: torch's ``(C_in, C_out / groups, *k)`` by default (layout ``IO...``: ``I`` is all of
            ``x``'s channels, ``O`` the result's per group, unlike conv's kernel).
        bias: optional ``(C_out,)``.
        stride, dilation: int or one int per spatial dim (>= 1).
        padding: convention ``"torch"``: rows cropped from each end of the full output: an int,
            per-dim ints, per-dim ``(lo, hi)`` pairs, ``"valid"`` (0), ``"same"`` (output
            ``n * stride``, the gradient of conv's ``"same"``) or ``"same_lower"``. Convention
            ``"jax"``: ``'SAME'``, ``'VALID'`` or ``(a, b)`` pairs, read as ``lax.conv_transpose`` reads them.
        output_padding: rows added on the high side; ATen's rule ``0 <= output_padding <
            max(stride, dilation)`` (torch's modules allow only ``< stride`` through ``output_size``).
        groups: channel groups (grouped and depthwise transposed convolutions included).
        layout: ``None`` (channels first; the jax convention defaults to lax's channels-last
            ``('NHWC', 'HWIO', 'NHWC')``), an input layout such as ``"NHWC"`` (kernel ``HWIO``,
            ``I`` = x's channels), ``"NHWC,HWIO->NHWC"`` or JAX's 3-tuple.
        backend, precision: as for :func:`conv`.
        output_size: spatial output size (int or per dim); picks ``output_padding``. The reachable
            sizes are ``base .. base + max(stride, dilation) - 1`` with ``base`` the size at
            ``output_padding=0``; others raise with that range.
        convention: ``"torch"`` (default) or ``"jax"`` (``lax.conv_transpose`` exactly: kernel not
            flipped, no groups, no output_padding/output_size).
        transpose_kernel: lax's flag, only with ``convention="jax"``: lax flips the kernel and swaps
            its ``I``/``O`` axes, so the letter ``O`` of its layout names ``x``'s channels.

    Returns:
        The backend's native array, in the input's dtype.

    Raises:
        ConvBridgeError: any invalid argument, before any backend runs.
        BackendUnavailable: the backend's framework is not installed.

    Shape:
        out = (n - 1) * stride - lo - hi + dilation * (k - 1) + output_padding + 1 per spatial dim.

    >>> import numpy as np, convbridge as cb
    >>> x, w = np.array([[[1.0, 10.0]]]), np.array([[[1.0, 2.0, 3.0]]])
    >>> cb.conv_transpose(x, w, stride=2).tolist()
    [[[1.0, 2.0, 13.0, 20.0, 30.0]]]
    >>> cb.conv_transpose(x, w, stride=2, padding=1, output_size=4).tolist()
    [[[2.0, 13.0, 20.0, 30.0]]]
    """
    entry, spec, arrays = _prepare("conv_transpose", x, kernel, bias, dict(
        stride=stride, padding=padding, output_padding=output_padding, dilation=dilation, groups=groups,
        layout=layout, precision=precision, output_size=output_size, convention=convention,
        transpose_kernel=transpose_kernel))
    return _run(entry, spec, arrays, _backend_for(backend, x))[0]


def unfold(x, kernel_size, *, dilation=1, padding=0, stride=1, layout=None, backend=None):
    """Extract sliding blocks (im2col), in ``torch.nn.functional.unfold``'s order, for any rank.

    Args:
        x: input, ``(N, C, *spatial)`` (N may be 0), or ``(C, *spatial)`` unbatched.
        kernel_size: int or per-dim ints. An int with ``layout=None`` reads ``x`` as batched; a
            3-dim input then needs per-dim ints or a layout (torch reads it as unbatched 2-d).
        dilation, stride: int or per dim (>= 1).
        padding: zero padding: int, per-dim ints, ``(lo, hi)`` pairs, ``"valid"``, ``"same"``, ``"same_lower"``.
        layout: the input's layout, e.g. ``"NHWC"`` or ``"CHW"``; the result is always ``(N, C * prod(k), L)``.
        backend: ``"numpy" | "jax" | "torch"``; ``None`` infers it from ``x``'s type.

    Returns:
        ``(N, C * prod(k), L)`` (no N for unbatched input): row ``c * prod(k) + t`` is channel ``c`` at
        the row-major kernel offset ``t``; column ``l`` the row-major block position. Exact (a copy).

    Shape:
        L = prod over dims of floor((n + lo + hi - dilation * (k - 1) - 1) / stride) + 1.

    >>> import numpy as np, convbridge as cb
    >>> cb.unfold(np.arange(6.0).reshape(1, 1, 2, 3), (2, 2)).tolist()
    [[[0.0, 1.0], [1.0, 2.0], [3.0, 4.0], [4.0, 5.0]]]
    """
    entry, spec, arrays = _prepare("unfold", x, kernel_size, None, dict(
        dilation=dilation, padding=padding, stride=stride, layout=layout))
    return _run(entry, spec, arrays, _backend_for(backend, x))[0]


def fold(cols, output_size, kernel_size, *, dilation=1, padding=0, stride=1, backend=None):
    """Sum sliding blocks back into an array (col2im): the adjoint of :func:`unfold`.

    Args:
        cols: ``(N, C * prod(k), L)`` (N may be 0) or unbatched ``(C * prod(k), L)``, in unfold's order.
        output_size: spatial size of the result, per dim (a tuple: it also fixes the rank).
        kernel_size, dilation, padding, stride: those of the unfold that made ``cols``.
        backend: ``"numpy" | "jax" | "torch"``; ``None`` infers it from ``cols``'s type.

    Returns:
        ``(N, C, *output_size)`` (no N for unbatched ``cols``), channels first; overlapping blocks add.

    Raises:
        ShapeError: the rows are not a multiple of ``prod(kernel_size)``, or ``L`` does not match the
            number of blocks that ``output_size`` and the other arguments give.

    Shape:
        (N, C * prod(k), L) -> (N, C, *output_size).

    >>> import numpy as np, convbridge as cb
    >>> cb.fold(np.ones((1, 2, 3)), (4,), (2,)).tolist()
    [[[1.0, 2.0, 2.0, 1.0]]]
    """
    entry, spec, arrays = _prepare("fold", cols, kernel_size, None, dict(
        output_size=output_size, dilation=dilation, padding=padding, stride=stride))
    return _run(entry, spec, arrays, _backend_for(backend, cols))[0]


def compare(x, kernel=None, bias=None, *, op="conv", backends=("torch", "jax"), **op_kwargs) -> ParityReport:
    """Run ``op`` on several backends and judge every result against the float64 reference and each other.

    Args:
        x, kernel, bias: as for :func:`conv` / :func:`conv_transpose` (from any framework). For
            ``"unfold"`` and ``"fold"``, ``x`` is the op's input and ``kernel`` the kernel size
            (or pass ``kernel_size=``); they take no bias, and fold needs ``output_size=``.
        op: ``"conv" | "conv_transpose" | "unfold" | "fold"``.
        backends: names of two or more (or one) backends to run.
        **op_kwargs: the op's keyword arguments (stride, padding, layout, precision, ...).

    Returns:
        A :class:`ParityReport`; ``print(report)`` shows the table, ``report.verdict`` the worst verdict.
        Its K (``terms``) is the op's products per output element: ``C_in / groups * prod(k)`` (+1 with
        a bias) for both convolutions, the most overlapping blocks for fold, and 0 for unfold, which
        must be identical (allowed r = 0).

    >>> import numpy as np, convbridge as cb
    >>> rng = np.random.default_rng(0)
    >>> x, w = rng.standard_normal((2, 3, 8, 8)), rng.standard_normal((4, 3, 3, 3))
    >>> cb.compare(x.astype("float32"), w.astype("float32"), backends=("numpy",)).verdict in ("identical", "equivalent")
    True
    >>> cb.compare(x.astype("float32"), (3, 3), op="unfold", backends=("numpy",)).verdict
    'identical'
    """
    names = _backend_names(backends)
    entry, spec, arrays = _prepare(op, x, kernel, bias, op_kwargs)
    runs = {}
    for name in names:
        y, xb = _run(entry, spec, arrays, name)
        be = _backends.get(name)
        runs[name] = (be.to_numpy(y), be.precision(spec, xb))
    ref, gauge = _reference_and_gauge(entry, spec, arrays)
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


def _report(spec, runs: dict, ref: np.ndarray, gauge: np.ndarray) -> ParityReport:
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
    return ParityReport(op=spec.op, description=spec.describe(), shape=spec.out_shape, dtype=spec.dtype,
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


def verify(y, x, kernel=None, bias=None, *, op="conv", precision=None, name="candidate", **op_kwargs) -> ParityReport:
    """Judge a candidate output ``y`` (from any framework) against the float64 reference of ``op``.

    Args:
        y: the candidate result, in the op's output layout.
        x, kernel, bias: the op's inputs (for unfold/fold, ``kernel`` is the kernel size), as for :func:`compare`.
        op: ``"conv" | "conv_transpose" | "unfold" | "fold"``.
        precision: what produced ``y``: ``None``/``"highest"`` (full precision of its dtype),
            ``"tf32"``, ``"bf16"``, ``"bf16_3x"`` (inputs rounded first) or a ``Precision``.
        name: label of the candidate in the report.
        **op_kwargs: the op's keyword arguments.

    Raises:
        ShapeError: ``y`` does not have the op's output shape.

    >>> import numpy as np, convbridge as cb
    >>> x = np.arange(8.0).reshape(1, 2, 4)
    >>> cb.verify(cb.unfold(x, (2,)), x, (2,), op="unfold").verdict
    'identical'
    """
    entry, spec, arrays = _prepare(op, x, kernel, bias, op_kwargs)
    out = _host(y)
    if tuple(out.shape) != spec.out_shape:
        raise ShapeError(f"candidate has shape {tuple(out.shape)} but this {op} gives {spec.out_shape}; "
                         "check the arguments (stride, padding, layout) used to produce it")
    cand_dtype = dtype_name(y)
    if cand_dtype not in ("float16", "bfloat16", "float32", "float64"):
        raise ShapeError(f"candidate dtype {cand_dtype} is not a float dtype convbridge can judge")
    ref, gauge = _reference_and_gauge(entry, spec, arrays)
    return _report(spec, {name: (out, _candidate_precision(precision, cand_dtype))}, ref, gauge)
