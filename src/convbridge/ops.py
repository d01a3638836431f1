"""The op table: each op's spec builder and reference, in one place; building a spec from arrays or shapes.

``compare``, ``verify``, ``output_shape`` and the dispatcher look an op up here instead of
branching on its name. Every op's reference function has the signature
``fn(*arrays, spec, dtype=...)``, where ``arrays`` is ``(x, kernel, bias)`` for the
convolutions and ``(x,)`` for unfold and fold. The parity gauge is always the op applied
to the absolute values of its inputs.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from convbridge import reference
from convbridge._tracing import tracing
from convbridge._types import ArrayLike, IntOrInts, PaddingLike, Shape
from convbridge.arrays import check_array, dtype_name, shape_of
from convbridge.errors import ArgumentError, checked_signature, unknown_argument
from convbridge.plan import PLAN_KEYWORDS, check_plan_keywords
from convbridge.spec import (
    FoldSpec,
    Spec,
    UnfoldSpec,
    make_conv_spec,
    make_conv_transpose_spec,
    make_fold_spec,
    make_unfold_spec,
)

__all__ = ["Op", "OPS", "get_op", "build", "output_shape", "split_plan_keywords"]


@dataclass(frozen=True)
class Op:
    """One op of the table.

    Attributes:
        name: the op's name (the registry's key for its implementations).
        kernel_is_array: True when the second argument is a kernel array (conv, conv_transpose);
            False when it is a kernel size (unfold, fold), and then the op takes no bias.
        make_spec: ``make_spec(x_shape, kernel_shape_or_size, b_shape, *, dtypes, **kwargs)``.
        reference: the float64-capable NumPy definition, ``reference(*arrays, spec, dtype=...)``.
    """

    name: str
    kernel_is_array: bool
    make_spec: Callable[..., Spec]
    reference: Callable[..., np.ndarray]

    @property
    def keywords(self) -> tuple[str, ...]:
        """The op's keyword arguments (what ``**op_kwargs`` may hold)."""
        params = inspect.signature(self.make_spec).parameters.values()
        return tuple(p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name != "dtypes")

    def build(self, x_shape: Shape, second: object, b_shape: Shape | None = None, **kwargs: Any) -> Spec:
        """The op's spec from shapes; ``second`` is the kernel's shape or the kernel size."""
        self.check_keywords(kwargs)
        if not self.kernel_is_array:
            if b_shape is not None:
                raise ArgumentError(f"{self.name} takes no bias, but a third positional argument was given: compare "
                                    f"and verify read {self.name}'s arguments as (x, kernel_size); pass the rest by "
                                    f"keyword, e.g. cb.compare(cols, (3, 3), op='fold', output_size=(8, 8))")
            if second is None:
                second = kwargs.pop("kernel_size", None)
            elif "kernel_size" in kwargs:
                raise ArgumentError(f"{self.name}: kernel size given twice (second argument and kernel_size=)")
        return self.make_spec(x_shape, second, b_shape, **kwargs)

    def check_keywords(self, kwargs: Mapping[str, object]) -> None:
        allowed = (*self.keywords, "dtypes") + (() if self.kernel_is_array else ("kernel_size",))
        for key in kwargs:
            if key not in allowed:
                hint = ("; transposed convolution pads with zeros only (torch's ConvTranspose has no other "
                        "padding_mode)" if key == "padding_mode" else "")
                raise unknown_argument(self.name, key, self.keywords, hint)


def _unfold(x_shape: Shape, kernel_size: IntOrInts, b_shape: Shape | None = None, *, dilation: IntOrInts = 1,
            padding: PaddingLike = 0, stride: IntOrInts = 1, layout: Any = None,
            dtypes: tuple[str | None, ...] = (None,)) -> UnfoldSpec:
    return make_unfold_spec(x_shape, kernel_size, dilation=dilation, padding=padding, stride=stride, layout=layout,
                            dtypes=dtypes)


def _fold(cols_shape: Shape, kernel_size: IntOrInts, b_shape: Shape | None = None, *,
          output_size: IntOrInts | None = None, dilation: IntOrInts = 1, padding: PaddingLike = 0,
          stride: IntOrInts = 1, dtypes: tuple[str | None, ...] = (None,)) -> FoldSpec:
    if output_size is None:
        raise ArgumentError("fold needs output_size=, the spatial size of the folded result, e.g. (8, 8)")
    return make_fold_spec(cols_shape, output_size, kernel_size, dilation=dilation, padding=padding, stride=stride,
                          dtypes=dtypes)


OPS: Mapping[str, Op] = {
    op.name: op for op in (
        Op("conv", True, make_conv_spec, reference.conv),
        Op("conv_transpose", True, make_conv_transpose_spec, reference.conv_transpose),
        Op("unfold", False, _unfold, reference.unfold),
        Op("fold", False, _fold, reference.fold),
    )
}


def get_op(name: object) -> Op:
    """The table entry of ``name``, or an error listing the ops.

    >>> get_op("conv_transpose").kernel_is_array
    True
    """
    if not isinstance(name, str) or name not in OPS:
        raise ArgumentError(f"unknown op {name!r}; choose one of {', '.join(map(repr, OPS))}")
    return OPS[name]


def split_plan_keywords(kwargs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split keyword arguments into the op's (what is computed) and the plan's (how: algorithm, precision,
    device)."""
    op_kwargs = {k: v for k, v in kwargs.items() if k not in PLAN_KEYWORDS}
    return op_kwargs, {k: v for k, v in kwargs.items() if k in PLAN_KEYWORDS}


#: Parsed specs by (op, shapes, dtypes, arguments), oldest dropped first.
_SPECS: dict[Hashable, Spec] = {}
_SPECS_KEPT = 512


_PLAIN = (bool, int, float, str, type(None))


def _plain(value: object) -> Hashable | None:
    """``value`` with every element's exact type beside it, when it is built of None, bools, ints, floats,
    strings, tuples and lists only (else None: not cached). Types matter: ``True == 1`` but a bool stride is
    refused, so the two must not share a parsed spec.

    >>> _plain((("stride", 1), ("padding", [1, True]))) != _plain((("stride", True), ("padding", [1, 1])))
    True
    """
    kind = type(value)
    if kind in _PLAIN:
        return (kind, value)
    if kind is tuple or kind is list:
        items = []
        for v in value:  # type: ignore[attr-defined]
            item = (type(v), v) if type(v) in _PLAIN else _plain(v)
            if item is None:
                return None
            items.append(item)
        return (kind, tuple(items))
    return None


def build(op: str, x: ArrayLike, second: ArrayLike, bias: ArrayLike | None, kwargs: Mapping[str, Any]) -> Spec:
    """Look ``op`` up and parse its arguments, given the arrays (shapes and dtypes are read, nothing imported).

    For the convolutions ``second`` is the kernel array; for unfold and fold the kernel size.
    """
    entry = get_op(op)
    if x is None or entry.kernel_is_array and second is None:
        needs = "an input x and a kernel" if entry.kernel_is_array else "an input"
        raise ArgumentError(f"{op} needs {needs}; got None")
    for role, a in (("input", x), ("kernel", second if entry.kernel_is_array else None), ("bias", bias)):
        if a is not None:
            check_array(a, role)
    b_shape = None if bias is None else shape_of(bias)
    if entry.kernel_is_array:
        dtypes = tuple(None if a is None else dtype_name(a) for a in (x, second, bias))
        args: tuple[Any, ...] = (shape_of(x), shape_of(second), b_shape, dtypes)
    else:
        args = (shape_of(x), second, b_shape, (dtype_name(x),))
    plain = _plain(tuple(kwargs.items()))  # specs are immutable: the same arguments parse to the same spec
    key = None if plain is None or not isinstance(second, tuple | type(None)) and not entry.kernel_is_array else \
        (op, args, plain)
    if key is not None and not tracing():
        spec = _SPECS.get(key)
        if spec is None:
            spec = entry.build(*args[:3], dtypes=args[3], **kwargs)
            if len(_SPECS) >= _SPECS_KEPT:
                _SPECS.pop(next(iter(_SPECS)))
            _SPECS[key] = spec
        return spec
    return entry.build(*args[:3], dtypes=args[3], **kwargs)


@checked_signature
def output_shape(input_shape: Shape, kernel_shape: object, *, op: str = "conv", **op_kwargs: Any) -> Shape:
    """The output shape of ``op`` without computing anything.

    Args:
        input_shape: shape of ``x`` (``cols`` for ``"fold"``).
        kernel_shape: shape of the kernel for ``"conv"``/``"conv_transpose"``; the kernel size
            (int or per-dim ints) for ``"unfold"``/``"fold"``.
        op: ``"conv" | "conv_transpose" | "unfold" | "fold"``.
        **op_kwargs: the op's keyword arguments (``bias`` may be an array or a shape); plan keywords
            (``algorithm``, ``precision``, ``device``) are validated and do not change the shape.

    Shape:
        conv: out = floor((n + lo + hi - dilation * (k - 1) - 1) / stride) + 1 per spatial dim;
        conv_transpose: out = (n - 1) * stride - lo - hi + dilation * (k - 1) + output_padding + 1;
        unfold: (N, C * prod(k), L), L = product of conv's out; fold: (N, C, *output_size).

    >>> output_shape((32, 3, 32, 32), (4, 3, 5, 5))
    (32, 4, 28, 28)
    >>> output_shape((8, 224, 224, 3), (7, 7, 3, 64), stride=2, padding="same", layout="NHWC")
    (8, 112, 112, 64)
    >>> output_shape((1, 4, 15), (4, 2, 3), op="conv_transpose", stride=2, padding=1, output_size=30)
    (1, 2, 30)
    >>> output_shape((2, 3, 8, 8), (3, 3), op="unfold", padding=1)
    (2, 27, 64)
    """
    kwargs, plan_kwargs = split_plan_keywords(op_kwargs)
    check_plan_keywords(**plan_kwargs)
    bias = kwargs.pop("bias", None)
    b_shape = None if bias is None else tuple(getattr(bias, "shape", bias))
    return get_op(op).build(input_shape, kernel_shape, b_shape, **kwargs).out_shape
