"""Explain a convolution: its output-size arithmetic, its matmul view, and the exact call in every framework.

``cb.explain((32, 3, 32, 32), (4, 3, 5, 5))`` prints, among other things,
``H: (32 + 0 + 0 - 1*(5-1) - 1)/1 + 1 = 28`` and
``(784 x 75) @ (75 x 4) per image``. Every emitted snippet is runnable: it reads
``x``, ``w`` and ``b`` (that framework's arrays, in the layout given to explain)
and leaves the result in ``y`` (in the output layout).
"""

from __future__ import annotations

import ast
import html
import math
import reprlib
from dataclasses import dataclass
from typing import Any

from convbridge._args import per_dim
from convbridge._types import Shape
from convbridge.errors import ArgumentError, ArgumentTypeError, brief, checked_signature
from convbridge.ops import get_op
from convbridge.snippets import Snippet, snippets
from convbridge.spec import ConvAxis, ConvSpec, as_shape, make_conv_spec, resolve_layout

__all__ = ["explain", "Explanation", "DimArithmetic", "parse_layer"]


@dataclass(frozen=True)
class DimArithmetic:
    """The output-size formula of one spatial dimension, filled in with its geometry's numbers.

    >>> DimArithmetic("W", ConvAxis(10, 3, stride=3, lo=1, hi=0)).formula
    'W: (10 + 1 + 0 - 1*(3-1) - 1)/3 + 1 = 3 (floor of 8/3 = 2)'
    """

    letter: str
    axis: ConvAxis

    @property
    def n(self) -> int:
        return self.axis.size

    @property
    def lo(self) -> int:
        return self.axis.lo

    @property
    def hi(self) -> int:
        return self.axis.hi

    @property
    def out(self) -> int:
        return self.axis.out

    @property
    def formula(self) -> str:
        a = self.axis
        num = a.padded - a.span
        exact = "" if num % a.stride == 0 else f" (floor of {num}/{a.stride} = {num // a.stride})"
        return (f"{self.letter}: ({a.size} + {a.lo} + {a.hi} - {a.dilation}*({a.kernel}-1) - 1)"
                f"/{a.stride} + 1 = {a.out}{exact}")


@dataclass(frozen=True)
class Explanation:
    """What :func:`explain` found; prints as text and renders as HTML in notebooks."""

    spec: ConvSpec
    input_shape: Shape
    kernel_shape: Shape
    dims: tuple[DimArithmetic, ...]
    padding_note: str
    snippets: tuple[Snippet, ...]

    @property
    def output_shape(self) -> Shape:
        return self.spec.out_shape

    @property
    def matmul(self) -> tuple[int, int, int]:
        """(rows, inner, cols) of the per-image, per-group product: (out pixels x Cg*prod(k)) @ (.. x Og)."""
        s = self.spec
        return (math.prod(s.out_spatial), s.in_channels // s.groups * math.prod(s.kernel_spatial),
                s.out_channels // s.groups)

    @property
    def params(self) -> int:
        return math.prod(self.kernel_shape) + (self.spec.out_channels if self.spec.has_bias else 0)

    @property
    def receptive_field(self) -> Shape:
        return tuple(a.span for a in self.spec.axes)

    def summary_line(self) -> str:
        s = self.spec
        size = "x".join(map(str, s.in_spatial))
        ksize = "x".join(map(str, s.kernel_spatial))
        out = "x".join(map(str, s.out_spatial))
        return (f"{size}x{s.in_channels} convolved with {s.out_channels} filters of {ksize} gives "
                f"{out}x{s.out_channels}")

    def lines(self) -> list[str]:
        s, (rows, inner, cols) = self.spec, self.matmul
        per = " per group" if s.groups > 1 else ""
        out = [
            f"conv {s.nsp}-d: input {self.input_shape}, kernel {self.kernel_shape}, layout {s.layout}",
            f"output {self.output_shape}: {self.summary_line()}",
            "",
            "output size per spatial dim: out = floor((n + lo + hi - dilation*(k-1) - 1)/stride) + 1",
            *(f"  {d.formula}" for d in self.dims),
            f"padding (lo, hi): {self.padding_note}",
            "",
            f"matmul view: ({rows} x {inner}) @ ({inner} x {cols}) per image{per}"
            + (f", {s.groups} groups" if s.groups > 1 else "")
            + f"; the whole batch: ({s.batch * rows} x {inner}) @ ({inner} x {cols})",
            f"MACs: {s.macs:,}   parameters: {self.params:,}   receptive field: "
            f"{'x'.join(map(str, self.receptive_field))}",
            "",
            "equivalent calls (x, w, b are that framework's arrays in the layout above; the result is y):",
        ]
        for sn in self.snippets:
            out.append(f"# {sn.framework}" + (f"  ({sn.note})" if sn.note else ""))
            out += [f"    {line}" for line in sn.code.splitlines()]
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def _repr_html_(self) -> str:
        return f"<pre>{html.escape(str(self))}</pre>"


_LAYER_ARGS = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups", "bias",
               "padding_mode")


def parse_layer(text: str) -> tuple[int, dict[str, Any]]:
    """Parse a torch layer description such as ``"Conv2d(3, 4, 5, stride=2)"`` (literals only).

    Returns:
        ``(nsp, arguments)`` with torch's argument names and defaults filled in.

    >>> parse_layer("nn.Conv2d(3, 4, 5, padding=1)")[1]["padding"]
    1
    """
    if not isinstance(text, str):
        raise ArgumentTypeError(f"layer must be a string such as 'Conv2d(3, 4, 5)', got {reprlib.repr(text)}")
    try:
        call = ast.parse(text.strip(), mode="eval").body
        if not isinstance(call, ast.Call):
            raise ValueError
        name = ast.unparse(call.func).rsplit(".", 1)[-1]
        args = [ast.literal_eval(a) for a in call.args]
        kwargs = {str(k.arg): ast.literal_eval(k.value) for k in call.keywords}
    except (SyntaxError, ValueError):
        raise ArgumentError(f"cannot read layer {brief(text)}; write a torch layer with literal arguments, "
                            "e.g. 'Conv2d(3, 4, 5, stride=2, padding=1)'") from None
    if name not in ("Conv1d", "Conv2d", "Conv3d"):
        raise ArgumentError(f"unknown layer {name!r}; use Conv1d, Conv2d or Conv3d, e.g. 'Conv2d(3, 4, 5)'")
    if len(args) > len(_LAYER_ARGS):
        raise ArgumentError(f"layer {brief(text)} has {len(args)} positional arguments; Conv takes at most 9")
    values: dict[str, Any] = dict(stride=1, padding=0, dilation=1, groups=1, bias=True, padding_mode="zeros")
    values.update(zip(_LAYER_ARGS, args))
    unknown = set(kwargs) - set(_LAYER_ARGS)
    if unknown:
        raise ArgumentError(f"layer {brief(text)} has unknown arguments {sorted(unknown)}; Conv takes {_LAYER_ARGS}")
    values.update(kwargs)
    missing = [a for a in _LAYER_ARGS[:3] if a not in values]
    if missing:
        raise ArgumentError(f"layer {brief(text)} lacks {missing}; e.g. 'Conv2d(3, 4, 5)' = in, out, kernel size")
    return int(name[4]), values


def _from_layer(layer: str) -> tuple[Shape, dict[str, Any]]:
    nsp, a = parse_layer(layer)
    for name in ("in_channels", "out_channels", "groups"):
        value = a[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ArgumentError(f"layer {brief(layer)}: {name} must be a positive int, got {brief(value)}")
    ks = per_dim(a["kernel_size"], "kernel_size", nsp, minimum=1)
    groups = a["groups"]
    if a["in_channels"] % groups:
        raise ArgumentError(f"layer groups={brief(groups)} must be a positive int dividing in_channels "
                            f"({a['in_channels']})")
    kernel = (a["out_channels"], a["in_channels"] // groups, *ks)
    kw = dict(stride=a["stride"], padding=a["padding"], dilation=a["dilation"], groups=groups,
              padding_mode=a["padding_mode"], bias=bool(a["bias"]))
    return kernel, kw


@checked_signature
def explain(input_shape: Shape, kernel_shape: Shape | None = None, *, layer: str | None = None, bias: bool = False,
            **conv_kwargs: Any) -> Explanation:
    """Explain a convolution's arithmetic and give its exact equivalent in every framework.

    Args:
        input_shape: the input's shape, e.g. ``(32, 3, 32, 32)`` (unbatched works too).
        kernel_shape: the kernel's shape, e.g. ``(4, 3, 5, 5)``; or give ``layer``.
        layer: a torch layer description instead of a kernel, e.g. ``"Conv2d(3, 4, 5)"``.
        bias: whether a bias is added (a layer's own ``bias=`` wins).
        **conv_kwargs: stride, padding, dilation, groups, padding_mode, layout, as for ``cb.conv``.

    Returns:
        An :class:`Explanation`; ``print()`` it.

    Raises:
        ConvBridgeError: invalid shapes or arguments.

    >>> e = explain((32, 3, 32, 32), (4, 3, 5, 5))
    >>> e.dims[0].formula
    'H: (32 + 0 + 0 - 1*(5-1) - 1)/1 + 1 = 28'
    >>> e.matmul
    (784, 75, 4)
    """
    input_shape = as_shape(input_shape, "input")
    if not isinstance(bias, bool):
        raise ArgumentError(f"bias must be True or False (whether the convolution adds one), got {brief(bias)}")
    get_op("conv").check_keywords(conv_kwargs)  # what is computed only: no plan keywords (algorithm, device)
    if layer is not None:
        if kernel_shape is not None:
            raise ArgumentError("give kernel_shape or layer, not both")
        kernel_shape, layer_kw = _from_layer(layer)
        bias = layer_kw.pop("bias")
        conv_kwargs = {**layer_kw, **conv_kwargs}
    if kernel_shape is None:
        raise ArgumentError("explain needs a kernel_shape such as (4, 3, 5, 5) or a layer such as 'Conv2d(3, 4, 5)'")
    kernel_shape = as_shape(kernel_shape, "kernel")
    spec = make_conv_spec(input_shape, kernel_shape, (kernel_shape[_o_axis(conv_kwargs, kernel_shape)],)
                          if bias else None, **conv_kwargs)
    dims = tuple(DimArithmetic(c, a) for c, a in zip(spec.layout.spatial, spec.axes))
    note = _padding_note(spec, conv_kwargs.get("padding", 0))
    return Explanation(spec, input_shape, kernel_shape, dims, note, snippets(spec))


def _o_axis(conv_kwargs: dict[str, Any], kernel_shape: Shape) -> int:
    lay = resolve_layout(conv_kwargs.get("layout"), len(kernel_shape), len(kernel_shape))
    return lay.rhs_perm[0]


def _padding_note(spec: ConvSpec, given: object) -> str:
    pairs = ", ".join(f"{c} ({lo}, {hi})" for c, (lo, hi) in zip(spec.layout.spatial, spec.padding))
    text = pairs + f", mode {spec.padding_mode}"
    if isinstance(given, str) and given.lower().startswith("same"):
        rule = "odd pixel low" if given.lower() == "same_lower" else "odd pixel high"
        text += (f" ({given!r}, XLA rule: out = ceil(n/stride), total = max((out-1)*stride + dilation*(k-1) + 1"
                 f" - n, 0), {rule})")
    if any(lo != hi for lo, hi in spec.padding):
        text += "; asymmetric: torch's conv cannot express it alone, so torch pads first"
    return text
