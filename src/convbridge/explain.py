"""Explain a convolution or a transposed convolution: its output-size arithmetic, its matmul view, and the exact
call in every framework.

``cb.explain((32, 3, 32, 32), (4, 3, 5, 5))`` prints, among other things,
``H: (32 + 0 + 0 - 1*(5-1) - 1)/1 + 1 = 28`` and
``(784 x 75) @ (75 x 4) per image``. Every emitted snippet is runnable: it reads
``x``, ``w`` and ``b`` (that framework's arrays, in the layout given to explain)
and leaves the result in ``y`` (in the output layout). ``op="conv_transpose"`` (torch's
convention) is explained by :mod:`convbridge.explain_transpose`; a torch layer string
(``layer="ConvTranspose2d(64, 32, 4, stride=2)"``) is read by :mod:`convbridge.layer_string`,
whose :class:`Layer` and :func:`read_layer` this module re-exports.
"""

from __future__ import annotations

import math
import sys
import types
from dataclasses import dataclass, fields, replace
from typing import Any

from convbridge._args import per_dim
from convbridge._types import Shape
from convbridge.errors import ArgumentError, brief, checked_signature
from convbridge.explain_transpose import TransposeExplanation, explain_transpose, snippets_html
from convbridge.frameworks import TORCH
from convbridge.layer_string import Layer, read_layer
from convbridge.ops import get_op
from convbridge.snippets import Snippet, snippets
from convbridge.spec import ConvAxis, ConvSpec, as_shape, make_conv_spec
from convbridge.spec.layout import RESERVED
from convbridge.spec.padding import parse_padding

__all__ = ["explain", "Explanation", "TransposeExplanation", "DimArithmetic", "Layer", "read_layer", "parse_layer"]


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

    def matmul_text(self) -> str:
        """The matmul view in words: ``(784 x 75) @ (75 x 4) per image; the whole batch: ...``."""
        s, (rows, inner, cols) = self.spec, self.matmul
        per = " per group" if s.groups > 1 else ""
        groups = f", {s.groups} groups" if s.groups > 1 else ""
        return (f"({rows} x {inner}) @ ({inner} x {cols}) per image{per}{groups}; the whole batch: "
                f"({s.batch * rows} x {inner}) @ ({inner} x {cols})")

    def lines(self) -> list[str]:
        s = self.spec
        out = [
            f"conv {s.nsp}-d: input {self.input_shape}, kernel {self.kernel_shape}, layout {s.layout}",
            f"output {self.output_shape}: {self.summary_line()}",
            "",
            "output size per spatial dim: out = floor((n + lo + hi - dilation*(k-1) - 1)/stride) + 1",
            *(f"  {d.formula}" for d in self.dims),
            f"padding (lo, hi): {self.padding_note}",
            "",
            f"matmul view: {self.matmul_text()}",
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
        """The explanation as HTML tables in a notebook: shapes and views, the size formula per spatial dim, and
        every framework's equivalent call."""
        from convbridge.spec._html import box, table

        s = self.spec
        about = [("input", str(self.input_shape)), ("kernel", str(self.kernel_shape)), ("layout", str(s.layout)),
                 ("output", f"{self.output_shape}: {self.summary_line()}"), ("padding (lo, hi)", self.padding_note),
                 ("matmul view", self.matmul_text()), ("MACs", f"{s.macs:,}"), ("parameters", f"{self.params:,}"),
                 ("receptive field", "x".join(map(str, self.receptive_field)))]
        dims = [(d.letter, d.n, d.lo, d.hi, d.axis.dilation, d.axis.kernel, d.axis.stride, d.out, d.formula)
                for d in self.dims]
        head = ("axis", "n", "lo", "hi", "dilation", "k", "stride", "out",
                "out = floor((n + lo + hi - dilation*(k-1) - 1)/stride) + 1")
        return box(table(about, caption=f"conv {s.nsp}-d"), table(dims, head), snippets_html(self.snippets))


def parse_layer(text: str) -> tuple[int, dict[str, Any]]:
    """Parse a torch layer such as ``"Conv2d(3, 4, 5, stride=2)"`` into torch's argument names (see :func:`read_layer`,
    which this wraps).

    Returns:
        ``(nsp, arguments)``: per-dim sizes as tuples, ``padding`` as given.

    >>> parse_layer("nn.Conv2d(3, 4, 5, padding=1)")[1]["padding"]
    1
    """
    layer = read_layer(text)
    values = {f.name: getattr(layer, f.name) for f in fields(layer)}
    if layer.kind == "Conv":
        del values["output_padding"]
    del values["kind"], values["num_spatial_dims"]
    return layer.num_spatial_dims, values


def _merge_layer(layer: Layer, text: str, op: str | None, bias: bool | None,
                 kwargs: dict[str, Any]) -> tuple[str, bool, dict[str, Any]]:
    """The layer's own arguments with the explicit ones; an explicit value that differs from the layer's raises."""
    own = layer.op_kwargs()
    given: dict[str, Any] = dict(kwargs, op=op, bias=bias)
    mine: dict[str, Any] = dict(own, op=layer.op, bias=layer.bias)
    for key, value in given.items():
        if key in mine and value is not None and not _same(key, value, mine[key], layer.num_spatial_dims):
            raise ArgumentError(f"{key}={brief(value)} conflicts with {key}={brief(mine[key])} of layer "
                                f"{brief(text.strip())}; give it once (an equal value is fine)")
    if "output_size" in kwargs:
        del own["output_padding"]  # torch's forward(x, output_size) picks output_padding itself
    return layer.op, layer.bias, {**own, **kwargs}


def _layer_kernel(layer: Layer, layout: object) -> tuple[Shape, object]:
    """The layer's weight shape and the layout to read it with: torch's kernel layout (``OI...``, or ``IO...`` for
    ConvTranspose) unless the layout names the kernel's letters, which then reorder the weight's shape."""
    if isinstance(layout, str) and "," not in layout and "->" not in layout:
        lhs, rhs, out = layout, None, layout
    elif isinstance(layout, str) and layout.count(",") == 1 and layout.count("->") == 1:
        (lhs, rhs), out = layout.split("->")[0].split(","), layout.split("->")[1]
    elif isinstance(layout, (tuple, list)) and len(layout) == 3 and all(isinstance(p, str) for p in layout):
        lhs, rhs, out = layout
    else:  # None, or malformed: the spec says why
        return layer.weight_shape, layout
    sp = "".join(c for c in lhs.strip() if c not in RESERVED)
    own = TORCH.kernel_layout(sp) if layer.kind == "Conv" else TORCH.transpose_layout(sp)
    if rhs is None:
        return layer.weight_shape, (lhs.strip(), own, out.strip())
    if sorted(rhs.strip()) != sorted(own):
        return layer.weight_shape, layout  # the spec reports the letters that disagree
    sizes = dict(zip(own, layer.weight_shape))
    return tuple(sizes[c] for c in rhs.strip()), layout


def _same(key: str, value: object, own: object, nsp: int) -> bool:
    if key in ("stride", "dilation", "output_padding"):
        return per_dim(value, key, nsp, minimum=0) == per_dim(own, key, nsp, minimum=0)
    if key == "padding":
        return parse_padding(value, nsp) == parse_padding(own, nsp)
    return value == own and isinstance(value, bool) == isinstance(own, bool)


@checked_signature
def explain(input_shape: Shape, kernel_shape: Shape | None = None, *, op: str | None = None,
            layer: str | None = None, bias: bool | None = None,
            **op_kwargs: Any) -> Explanation | TransposeExplanation:
    """Explain a convolution or a transposed convolution: its arithmetic, and its exact equivalent in every framework.

    Args:
        input_shape: the input's shape, e.g. ``(32, 3, 32, 32)`` (unbatched works too).
        kernel_shape: the kernel's shape, e.g. ``(4, 3, 5, 5)``; for ``op="conv_transpose"`` torch's
            ``(C_in, C_out / groups, *k)``; or give ``layer``.
        op: ``"conv"`` (default) or ``"conv_transpose"`` (torch's convention, the gradient of conv);
            a layer's kind sets it.
        layer: a torch layer instead of a kernel, e.g. ``"Conv2d(3, 4, 5)"`` or
            ``"nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1)"`` (:func:`read_layer`).
        bias: whether a bias is added (default: the layer's, else False).
        **op_kwargs: stride, padding, dilation, groups, layout, and padding_mode (conv) or output_padding,
            output_size (conv_transpose), as for ``cb.conv`` / ``cb.conv_transpose``. With a layer, a value
            that differs from the layer's own raises; layout and output_size add to it.

    Returns:
        An :class:`Explanation` (conv) or a :class:`~convbridge.explain_transpose.TransposeExplanation`;
        ``print()`` it.

    Raises:
        ConvBridgeError: invalid shapes or arguments, an unreadable layer, or arguments that contradict it.

    Shape:
        conv: out = floor((n + lo + hi - dilation * (k - 1) - 1) / stride) + 1;
        conv_transpose: out = (n - 1) * stride - lo - hi + dilation * (k - 1) + output_padding + 1.

    >>> e = explain((32, 3, 32, 32), (4, 3, 5, 5))
    >>> e.dims[0].formula
    'H: (32 + 0 + 0 - 1*(5-1) - 1)/1 + 1 = 28'
    >>> e.matmul
    (784, 75, 4)
    >>> t = explain((8, 64, 16, 16), layer="ConvTranspose2d(64, 32, 4, stride=2, padding=1, output_padding=1)")
    >>> t.dims[0].formula, t.output_shape
    ('H: (16 - 1)*2 - 1 - 1 + 1*(4 - 1) + 1 + 1 = 33', (8, 32, 33, 33))
    """
    input_shape = as_shape(input_shape, "input")
    if bias is not None and not isinstance(bias, bool):
        raise ArgumentError(f"bias must be True or False (whether the convolution adds one), got {brief(bias)}")
    if layer is not None:
        if kernel_shape is not None:
            raise ArgumentError("give kernel_shape or layer, not both")
        parsed = read_layer(layer)
        op, bias, op_kwargs = _merge_layer(parsed, layer, op, bias, op_kwargs)
        kernel_shape, layout = _layer_kernel(parsed, op_kwargs.get("layout"))
        if layout is not None:
            op_kwargs["layout"] = layout
    entry = get_op("conv" if op is None else op)
    if entry.name not in ("conv", "conv_transpose"):
        raise ArgumentError(f"explain explains op='conv' and op='conv_transpose', got op={entry.name!r}")
    entry.check_keywords(op_kwargs)  # what is computed only: no plan keywords (algorithm, device)
    if kernel_shape is None:
        raise ArgumentError("explain needs a kernel_shape such as (4, 3, 5, 5) or a layer such as 'Conv2d(3, 4, 5)'")
    kernel_shape = as_shape(kernel_shape, "kernel")
    if entry.name == "conv_transpose":
        return explain_transpose(input_shape, kernel_shape, bool(bias), op_kwargs,
                                 module_output_size=layer is not None and "output_size" in op_kwargs)
    spec = replace(make_conv_spec(input_shape, kernel_shape, **op_kwargs), has_bias=bool(bias))
    dims = tuple(DimArithmetic(c, a) for c, a in zip(spec.layout.spatial, spec.axes))
    note = _padding_note(spec, op_kwargs.get("padding", 0))
    return Explanation(spec, input_shape, kernel_shape, dims, note, snippets(spec))


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


class _CallableModule(types.ModuleType):
    """``import convbridge.explain`` (e.g. for :func:`read_layer`) binds this module to ``convbridge.explain``,
    shadowing the function the package exports under the same name; calling the module calls the function, so
    ``cb.explain(...)`` works in either order of imports."""

    def __call__(self, *args: Any, **kwargs: Any) -> Explanation | TransposeExplanation:
        return explain(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
