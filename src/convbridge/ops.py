"""The op table: each op's spec builder, reference function and backend function, in one place.

``compare``, ``verify`` and ``output_shape`` look an op up here instead of branching on its name.
Every op's reference function has the signature ``fn(*arrays, spec, dtype=...)`` and every
backend module defines ``fn(spec, *arrays)`` under the op's name, where ``arrays`` is
``(x, kernel, bias)`` for the convolutions and ``(x,)`` for unfold and fold. The parity gauge is
always the op applied to the absolute values of its inputs.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

from convbridge import reference
from convbridge.errors import ArgumentError, ArgumentTypeError
from convbridge.spec import make_conv_spec
from convbridge.spec_transpose import make_conv_transpose_spec
from convbridge.spec_unfold import make_fold_spec, make_unfold_spec

__all__ = ["Op", "OPS", "get_op"]


@dataclass(frozen=True)
class Op:
    """One op of the table.

    Attributes:
        name: the op's name, also its backend function's name.
        kernel_is_array: True when the second argument is a kernel array (conv, conv_transpose);
            False when it is a kernel size (unfold, fold), and then the op takes no bias.
        make_spec: ``make_spec(x_shape, kernel_shape_or_size, b_shape, *, dtypes, **kwargs)``.
        reference: the float64-capable NumPy definition, ``reference(*arrays, spec, dtype=...)``.
    """

    name: str
    kernel_is_array: bool
    make_spec: Callable
    reference: Callable

    @property
    def backend_fn(self) -> str:
        """Name of the function every backend module implements for this op."""
        return self.name

    @property
    def keywords(self) -> tuple[str, ...]:
        """The op's keyword arguments (what ``**op_kwargs`` may hold)."""
        params = inspect.signature(self.make_spec).parameters.values()
        return tuple(p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name != "dtypes")

    def build(self, x_shape, second, b_shape=None, **kwargs):
        """The op's spec from shapes; ``second`` is the kernel's shape or the kernel size."""
        self.check_keywords(kwargs)
        if not self.kernel_is_array:
            if b_shape is not None:
                raise ArgumentError(f"{self.name} takes no bias; pass bias=None")
            if second is None:
                second = kwargs.pop("kernel_size", None)
            elif "kernel_size" in kwargs:
                raise ArgumentError(f"{self.name}: kernel size given twice (second argument and kernel_size=)")
        return self.make_spec(x_shape, second, b_shape, **kwargs)

    def check_keywords(self, kwargs: dict) -> None:
        allowed = (*self.keywords, "dtypes") + (() if self.kernel_is_array else ("kernel_size",))
        for key in kwargs:
            if key not in allowed:
                hint = ("; transposed convolution pads with zeros only (torch's ConvTranspose has no other "
                        "padding_mode)" if key == "padding_mode" else "")
                raise ArgumentTypeError(f"{self.name} has no argument {key!r}; its arguments are "
                                        f"{', '.join(self.keywords)}{hint}")


def _unfold(x_shape, kernel_size, b_shape=None, *, dilation=1, padding=0, stride=1, layout=None, dtypes=(None,)):
    return make_unfold_spec(x_shape, kernel_size, dilation=dilation, padding=padding, stride=stride, layout=layout,
                            dtypes=dtypes)


def _fold(cols_shape, kernel_size, b_shape=None, *, output_size=None, dilation=1, padding=0, stride=1,
          dtypes=(None,)):
    if output_size is None:
        raise ArgumentError("fold needs output_size=, the spatial size of the folded result, e.g. (8, 8)")
    return make_fold_spec(cols_shape, output_size, kernel_size, dilation=dilation, padding=padding, stride=stride,
                          dtypes=dtypes)


OPS = {
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
