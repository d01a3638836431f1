"""The public API for running ops: ``conv``, ``conv_transpose``, ``unfold``, ``fold`` (``compare`` and ``verify``
 live in :mod:`convbridge.judging`).

Each call parses its arguments once into a spec (framework-free), then hands the
spec to a backend or to the NumPy reference. Which spec builder, reference and
backend function an op uses comes from the op table in :mod:`convbridge.ops`.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable
from typing import Any


from convbridge import dispatch
from convbridge._types import Array, ArrayLike, IntOrInts, LayoutLike, PaddingLike
from convbridge.errors import (
    ArgumentError,
    ArgumentTypeError,
    DTypeError,
    ConvBridgeWarning,
    brief,
    checked_signature,
)
from convbridge.ops import build, get_op
from convbridge.plan import make_plan

__all__ = ["conv", "conv_transpose", "unfold", "fold", "widen", "WIDER"]


#: The accumulation dtypes each input dtype may be widened to: a product of two values of the narrower dtype is
#: exact in the wider one (11 + 11 and 8 + 8 significant bits fit float32's 24; 24 + 24 fit float64's 53).
WIDER = {"float16": ("float32", "float64"), "bfloat16": ("float32", "float64"), "float32": ("float64",),
         "complex64": ("complex128",)}


def dtype_argument(value: object, name: str = "preferred_element_type") -> str:
    """A dtype given as a name, a NumPy / JAX / ml_dtypes type or a ``torch.dtype``, as its name.

    >>> import numpy as np
    >>> dtype_argument(np.float32), dtype_argument("bfloat16")
    ('float32', 'bfloat16')
    """
    import numpy as np

    from convbridge.precision import DTYPES

    if isinstance(value, str) and value in DTYPES:  # "bfloat16" needs ml_dtypes loaded for np.dtype
        return value
    if type(value).__module__.startswith("torch") and str(value).startswith("torch."):
        return str(value).removeprefix("torch.")
    try:
        found = "void" if isinstance(value, (list, tuple, dict, set)) else str(np.dtype(value).name)  # type: ignore[call-overload]
    except TypeError:
        found = "void"
    if not found.startswith("void"):  # np.dtype([]) is a structured void type, not a number
        return found
    raise ArgumentTypeError(f"{name} must be a dtype such as 'float32', np.float32, jnp.float32 or torch.float32, got "
                            f"{brief(value)}")


def widen(arrays: tuple[ArrayLike | None, ...], preferred: object) -> tuple[ArrayLike | None, ...]:
    """The arrays cast to ``preferred`` (``None``: as they are), each in its own framework: a convolution of the
    widened inputs is the convolution of the originals accumulated in ``preferred`` (what
    ``lax.conv_general_dilated(preferred_element_type=...)`` computes), since every product is exact there.

    Raises:
        ArgumentError: ``preferred`` does not widen the inputs' dtype (see :data:`WIDER`).
    """
    if preferred is None:
        return arrays
    from convbridge.arrays import dtype_name, framework_of

    target = dtype_argument(preferred)
    have = dtype_name(arrays[0])
    if target == have or any(a is not None and dtype_name(a) != have for a in arrays):
        return arrays  # nothing to widen, or mixed dtypes: the spec refuses those with its own message
    if target not in WIDER.get(have, ()):
        wider = WIDER.get(have)
        raise ArgumentError(f"preferred_element_type={target!r} for {have} inputs: it names a wider accumulation "
                            f"dtype, " + (f"one of {', '.join(map(repr, wider))} for {have}" if wider else
                                           f"and {have} has none convbridge computes") +
                            " (or the inputs' own dtype)")
    from convbridge import backends

    try:
        return tuple(None if a is None else backends.get(framework_of(a)).astype(a, target) for a in arrays)
    except DTypeError as e:  # JAX without x64 mode
        raise DTypeError(f"preferred_element_type={target!r} on JAX needs its x64 mode: {e}") from None


def _run(op: str, x: ArrayLike, second: ArrayLike, bias: ArrayLike | None, kwargs: dict[str, Any],
         backend: str | None, algorithm: str, precision: str, device: Hashable | None,
         preferred: object = None) -> Array:
    """Parse into a spec (what), a plan (how), and dispatch."""
    if preferred is not None:
        x, second, bias = widen((x, second, bias), preferred)
    spec = build(op, x, second, bias, kwargs)
    plan = make_plan(backend, x, algorithm=algorithm, precision=precision, device=device)
    arrays = (x, second, bias) if get_op(op).kernel_is_array else (x,)
    if plan.backend != "torch" and any(getattr(a, "requires_grad", False) for a in arrays):
        warnings.warn(f"a torch tensor that requires grad goes to backend={plan.backend!r}: the result is that "
                      "framework's array, detached from torch's autograd; use backend='torch' (or None) to keep "
                      "gradients", ConvBridgeWarning, stacklevel=3)
    return dispatch.run(spec, plan, arrays)


@checked_signature
def conv(x: ArrayLike, kernel: ArrayLike, bias: ArrayLike | None = None, *, stride: IntOrInts = 1,
         padding: PaddingLike = 0, dilation: IntOrInts = 1, groups: int = 1, padding_mode: str = "zeros",
         layout: LayoutLike = None, backend: str | None = None, algorithm: str = "native",
         precision: str = "highest", device: Hashable | None = None,
         preferred_element_type: object = None) -> Array:
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
        algorithm: ``"auto"`` (the fastest that supports the call: :mod:`convbridge.autotune`), ``"native"``
            (the framework's own convolution), ``"matmul"`` (im2col and one matrix product per group),
            ``"fft"`` (real FFTs), or another registered one: :func:`convbridge.dispatch.implementations`
            lists them.
        precision: ``"highest"`` (default), ``"high"`` or ``"default"`` (matters on GPUs/TPUs).
        device: where to compute (``"cpu"``, ``"cuda:0"``, a framework device); ``None``: where ``x`` lives.
        preferred_element_type: a wider dtype to accumulate in and return (float16/bfloat16 -> float32 or
            float64, float32 -> float64, complex64 -> complex128), as lax's ``preferred_element_type``: the
            inputs are widened first on every backend, which is the same computation (each product is exact in
            the wider dtype). ``None``: the input's dtype (16-bit inputs still accumulate in float32 on the
            native algorithms and round once).

    Returns:
        The backend's native array, in the input's dtype (or ``preferred_element_type``).

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
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, padding_mode=padding_mode,
                  layout=layout)
    return _run("conv", x, kernel, bias, kwargs, backend, algorithm, precision, device, preferred_element_type)


@checked_signature
def conv_transpose(x: ArrayLike, kernel: ArrayLike, bias: ArrayLike | None = None, *, stride: IntOrInts = 1,
                   padding: PaddingLike = 0, output_padding: IntOrInts = 0, dilation: IntOrInts = 1,
                   groups: int = 1, layout: LayoutLike = None, backend: str | None = None,
                   precision: str = "highest", output_size: IntOrInts | None = None, convention: str = "torch",
                   transpose_kernel: bool = False, algorithm: str = "native",
                   device: Hashable | None = None, padding_mode: str = "zeros",
                   preferred_element_type: object = None) -> Array:
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
        backend, algorithm, precision, device, preferred_element_type: as for :func:`conv`.
        padding_mode: ``"zeros"`` only: a transposed convolution crops its full output rather than padding an
            input (torch's ConvTranspose modules accept zeros alone); anything else raises.
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
    if padding_mode != "zeros":
        raise ArgumentTypeError(f"conv_transpose has no padding_mode {brief(padding_mode)}: a transposed convolution crops "
                                "its full output instead of padding an input (torch's ConvTranspose takes 'zeros' "
                                "only); pad or crop the result yourself")
    kwargs = dict(stride=stride, padding=padding, output_padding=output_padding, dilation=dilation, groups=groups,
                  layout=layout, output_size=output_size, convention=convention, transpose_kernel=transpose_kernel)
    return _run("conv_transpose", x, kernel, bias, kwargs, backend, algorithm, precision, device,
                preferred_element_type)


@checked_signature
def unfold(x: ArrayLike, kernel_size: IntOrInts, *, dilation: IntOrInts = 1, padding: PaddingLike = 0,
           stride: IntOrInts = 1, layout: LayoutLike = None, backend: str | None = None,
           device: Hashable | None = None) -> Array:
    """Extract sliding blocks (im2col), in ``torch.nn.functional.unfold``'s order, for any rank.

    Args:
        x: input, ``(N, C, *spatial)`` (N may be 0), or ``(C, *spatial)`` unbatched.
        kernel_size: int or per-dim ints. An int with ``layout=None`` reads ``x`` as batched; a
            3-dim input then needs per-dim ints or a layout (torch reads it as unbatched 2-d).
        dilation, stride: int or per dim (>= 1).
        padding: zero padding: int, per-dim ints, ``(lo, hi)`` pairs, ``"valid"``, ``"same"``, ``"same_lower"``.
        layout: the input's layout, e.g. ``"NHWC"`` or ``"CHW"``; the result is always ``(N, C * prod(k), L)``.
        backend: ``"numpy" | "jax" | "torch"``; ``None`` infers it from ``x``'s type.
        device: as for :func:`conv`.

    Returns:
        ``(N, C * prod(k), L)`` (no N for unbatched input): row ``c * prod(k) + t`` is channel ``c`` at
        the row-major kernel offset ``t``; column ``l`` the row-major block position. Exact (a copy).

    Shape:
        L = prod over dims of floor((n + lo + hi - dilation * (k - 1) - 1) / stride) + 1.

    >>> import numpy as np, convbridge as cb
    >>> cb.unfold(np.arange(6.0).reshape(1, 1, 2, 3), (2, 2)).tolist()
    [[[0.0, 1.0], [1.0, 2.0], [3.0, 4.0], [4.0, 5.0]]]
    """
    kwargs = dict(dilation=dilation, padding=padding, stride=stride, layout=layout)
    return _run("unfold", x, kernel_size, None, kwargs, backend, "native", "highest", device)


@checked_signature
def fold(cols: ArrayLike, output_size: IntOrInts, kernel_size: IntOrInts, *, dilation: IntOrInts = 1,
         padding: PaddingLike = 0, stride: IntOrInts = 1, backend: str | None = None,
         device: Hashable | None = None) -> Array:
    """Sum sliding blocks back into an array (col2im): the adjoint of :func:`unfold`.

    Args:
        cols: ``(N, C * prod(k), L)`` (N may be 0) or unbatched ``(C * prod(k), L)``, in unfold's order.
        output_size: spatial size of the result, per dim (a tuple: it also fixes the rank).
        kernel_size, dilation, padding, stride: those of the unfold that made ``cols``.
        backend: ``"numpy" | "jax" | "torch"``; ``None`` infers it from ``cols``'s type.
        device: as for :func:`conv`.

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
    kwargs = dict(output_size=output_size, dilation=dilation, padding=padding, stride=stride)
    return _run("fold", cols, kernel_size, None, kwargs, backend, "native", "highest", device)

