"""The parse prologue the spec builders share: shapes, canonical order, channels, bias, dtypes, axes."""

from __future__ import annotations

import reprlib
from collections.abc import Sequence

from convbridge._args import as_int, as_param, per_dim
from convbridge._types import DTypes, Pairs, Shape
from convbridge.errors import ArgumentError, DTypeError, PaddingError, ShapeError
from convbridge.precision import COMPLEX_DTYPES, DTYPES, FLOAT_DTYPES
from convbridge.spec.geometry import ConvAxis
from convbridge.spec.layout import Layout

__all__ = ["as_shape", "canonical_input", "canonical", "check_nonempty", "check_bias", "common_dtype", "strides",
           "conv_axes", "check_fits", "groups_of"]


def as_shape(shape: object, what: str) -> Shape:
    """A shape as a tuple of ints, or a ShapeError naming ``what``."""
    ndim = getattr(shape, "ndim", 1)
    if ndim != 1:
        raise ShapeError(f"{what} shape must be a sequence of ints, got an array of shape "
                         f"{tuple(getattr(shape, 'shape', ()))}; pass its .shape")
    try:
        dims = tuple(as_int(s, f"{what} shape") for s in shape)  # type: ignore[attr-defined]
    except TypeError:
        raise ShapeError(f"{what} shape must be a sequence of ints, got {reprlib.repr(shape)}") from None
    if any(d < 0 for d in dims):
        raise ShapeError(f"{what} shape {dims} has a negative size; sizes are >= 0")
    return dims


def canonical_input(x_shape: Shape, lay: Layout) -> Shape:
    """``(N, C, *spatial)`` of the input (N = 1 when unbatched)."""
    xs = x_shape if lay.batched else (1, *x_shape)
    return tuple(xs[i] for i in lay.lhs_perm)


def canonical(x_shape: Shape, w_shape: Shape, lay: Layout) -> tuple[Shape, Shape]:
    """``(N, C, *spatial)`` of the input (N = 1 when unbatched) and ``(O, I, *spatial)`` of the kernel."""
    xc = canonical_input(x_shape, lay)
    wc = tuple(w_shape[i] for i in lay.rhs_perm)
    check_nonempty(xc, wc, lay)
    return xc, wc


def check_nonempty(xc: Sequence[int], wc: Sequence[int], lay: Layout) -> None:
    """Every kernel axis, the channels and every spatial axis of the input need an element (N may be 0)."""
    names = {"O": "out-channel", "I": "in-channel"}
    for letter, size in zip(("O", "I", *lay.spatial), wc):
        if size == 0:
            axis = names.get(letter, f"spatial {letter}")
            raise ShapeError(f"kernel has a zero-size {axis} axis (shape {tuple(wc)} in O, I, spatial order); "
                             "every kernel axis needs at least one element")
    if xc[1] == 0:
        raise ShapeError("input has 0 channels; the channel axis needs at least one element")
    for letter, size in zip(lay.spatial, xc[2:]):
        if size == 0:
            raise ShapeError(f"input spatial axis {letter} has size 0; every spatial axis needs at least one element")


def check_bias(b_shape: Shape | None, c_out: int) -> None:
    """A bias is ``(C_out,)`` or absent."""
    if b_shape is not None and tuple(b_shape) != (c_out,):
        raise ShapeError(f"bias has shape {tuple(b_shape)} but the kernel has {c_out} out-channels; "
                         f"pass a bias of shape ({c_out},) or None")


def common_dtype(dtypes: DTypes) -> str | None:
    """The one float or complex dtype of input, kernel and bias; mixed or other dtypes raise (nothing is cast).

    >>> common_dtype(("complex64", "complex64", None))
    'complex64'
    """
    names = [d for d in dtypes if d is not None]
    if not names:
        return None
    roles = ("input", "kernel", "bias")
    if len(set(names)) > 1:
        listed = ", ".join(f"{r} {d}" for r, d in zip(roles, dtypes) if d is not None)
        # a complex one among them: cast the real ones up (exact); casting it down would drop its imaginary part
        target = next((d for d in names if d in COMPLEX_DTYPES), None) or \
            next((d for d in names if d in FLOAT_DTYPES), "float32")
        kind = "complex" if target in COMPLEX_DTYPES else "float"
        raise DTypeError(f"mixed dtypes ({listed}); convbridge never casts silently: cast all to one {kind} dtype, "
                         f"e.g. .astype('{target}') for NumPy/JAX arrays or .to(torch.{target}) for torch tensors")
    if names[0] not in DTYPES:
        hint = (": cast integers to float64 (every partial sum exact below 2**53) or float32 (below 2**24)"
                if names[0].startswith(("int", "uint", "bool")) else
                ": cast to complex64 (.to(torch.complex64)), whose components are float32"
                if names[0] == "complex32" else "")
        raise DTypeError(f"dtype {names[0]} is not supported; convbridge computes {', '.join(DTYPES)}{hint}")
    return names[0]


def strides(stride: object, dilation: object, nsp: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Per-dim stride and dilation, each >= 1."""
    return per_dim(stride, "stride", nsp, minimum=1), per_dim(dilation, "dilation", nsp, minimum=1)


def conv_axes(sizes: Sequence[int], kernel: Sequence[int], stride: Sequence[int], dilation: Sequence[int],
              pads: str | Pairs) -> tuple[ConvAxis, ...]:
    """One :class:`ConvAxis` per spatial dim; ``pads`` is ``"same"``/``"same_lower"`` or resolved pairs."""
    if isinstance(pads, str):
        return tuple(ConvAxis.same(n, k, s, d, lower=pads == "same_lower")
                     for n, k, s, d in zip(sizes, kernel, stride, dilation))
    return tuple(ConvAxis(n, k, s, d, lo, hi) for n, k, s, d, (lo, hi) in zip(sizes, kernel, stride, dilation, pads))


def check_fits(axes: Sequence[ConvAxis], letters: Sequence[str]) -> None:
    """The dilated kernel must fit the padded input on every axis (torch raises; JAX would return nothing)."""
    for a, letter in zip(axes, letters):
        if not a.fits:
            raise PaddingError(
                f"effective kernel size {a.span} (kernel {a.kernel}, dilation {a.dilation}) is larger than the "
                f"padded input {a.padded} (size {a.size} + padding {a.lo} + {a.hi}) on axis {letter}; "
                "pad more, use a smaller kernel or dilation, or a larger input"
            )


def groups_of(groups: object, c_in: int, what: str) -> int:
    """``groups`` as an int >= 1 dividing the input channels (``what``: the op, for the message)."""
    g = as_param(groups, "groups")
    if g <= 0:
        raise ArgumentError(f"groups must be >= 1, got {g}; groups=1 is an ordinary {what}")
    if c_in % g:
        raise ArgumentError(f"input has {c_in} channels, which groups ({g}) does not divide; "
                            "choose groups dividing the input channels")
    return g
