"""Explain a transposed convolution (torch's convention, the gradient of conv): its arithmetic, two matmul views
and the exact call in every framework.

Per spatial dim the output size is ``(n - 1)*stride - lo - hi + dilation*(k - 1) + output_padding + 1``:
the input's rows scatter ``k`` taps each into a *full* output of ``(n - 1)*stride + dilation*(k - 1) + 1``
rows, ``padding`` crops ``(lo, hi)`` rows from its ends and ``output_padding`` adds rows back on the high
side. The same op is a convolution over the stride-dilated input with the kernel flipped: lax pads that
input by ``(a, b) = (D - lo, D - hi + output_padding)`` with ``D = dilation*(k - 1)``.

>>> e = explain_transpose((1, 4, 7), (4, 2, 3), False, dict(stride=2, padding=1, output_padding=1))
>>> e.dims[0].formula
'W: (7 - 1)*2 - 1 - 1 + 1*(3 - 1) + 1 + 1 = 14'
>>> e.dims[0].conv_view
'W: 7 rows dilated by 2 -> 13, padded (a, b) = (1, 2), D = 1*(3 - 1) = 2: 13 + 1 + 2 - 2 = 14'
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from convbridge._types import Shape
from convbridge.errors import ArgumentError, ShapeError, brief
from convbridge.snippets import Snippet, snippets
from convbridge.spec import ConvTransposeSpec, TransposeAxis, make_conv_transpose_spec

__all__ = ["TransposeExplanation", "TransposeDimArithmetic", "explain_transpose", "snippets_html"]


@dataclass(frozen=True)
class TransposeDimArithmetic:
    """One spatial dim of a transposed convolution, its size formula and its conv view filled in with numbers.

    >>> d = TransposeDimArithmetic("H", TransposeAxis(16, 4, stride=2, lo=1, hi=1, output_padding=1))
    >>> d.out, d.crops, d.lax_padding
    (33, (1, 1), (2, 3))
    """

    letter: str
    axis: TransposeAxis

    @property
    def n(self) -> int:
        return self.axis.size

    @property
    def out(self) -> int:
        return self.axis.out

    @property
    def crops(self) -> tuple[int, int]:
        """``(lo, hi)``: rows cropped from the ends of the full output (torch's padding)."""
        return self.axis.padding

    @property
    def lax_padding(self) -> tuple[int, int]:
        """lax's ``(a, b)`` padding of the stride-dilated input: ``(D - lo, D - hi + output_padding)``."""
        return self.axis.lax_padding

    @property
    def formula(self) -> str:
        a = self.axis
        return (f"{self.letter}: ({a.size} - 1)*{a.stride} - {a.lo} - {a.hi} + {a.dilation}*({a.kernel} - 1) + "
                f"{a.output_padding} + 1 = {a.out}")

    @property
    def conv_view(self) -> str:
        """The same size as a stride-1 convolution over the dilated, padded input."""
        a, (pa, pb) = self.axis, self.lax_padding
        dilated, reach = a.full - a.span + 1, a.span - 1
        return (f"{self.letter}: {a.size} rows dilated by {a.stride} -> {dilated}, padded (a, b) = ({pa}, {pb}), "
                f"D = {a.dilation}*({a.kernel} - 1) = {reach}: {dilated} + {pa} + {pb} - {reach} = {a.out}")


@dataclass(frozen=True)
class TransposeExplanation:
    """What :func:`convbridge.explain` found for ``op="conv_transpose"``; prints as text, renders as HTML."""

    spec: ConvTransposeSpec
    input_shape: Shape
    kernel_shape: Shape
    dims: tuple[TransposeDimArithmetic, ...]
    padding_note: str
    snippets: tuple[Snippet, ...]

    @property
    def output_shape(self) -> Shape:
        return self.spec.out_shape

    @property
    def matmul(self) -> tuple[int, int, int]:
        """(rows, inner, cols) of the per-image, per-group scatter product: (input pixels x Cg) @ (Cg x Og*prod(k)),
        whose columns col2im (fold) adds into the output."""
        s = self.spec
        return (math.prod(s.in_spatial), s.in_channels // s.groups,
                s.out_channels // s.groups * math.prod(s.kernel_spatial))

    @property
    def conv_matmul(self) -> tuple[int, int, int]:
        """(rows, inner, cols) of the same op as a conv over the dilated input: (output pixels x Cg*prod(k)) @
        (.. x Og)."""
        s = self.spec
        return (math.prod(s.out_spatial), s.in_channels // s.groups * math.prod(s.kernel_spatial),
                s.out_channels // s.groups)

    @property
    def conv_macs(self) -> int:
        """Multiply-accumulates of the conv view (the inserted zeros included)."""
        rows, inner, cols = self.conv_matmul
        return self.spec.batch * self.spec.groups * rows * inner * cols

    @property
    def params(self) -> int:
        return math.prod(self.kernel_shape) + (self.spec.out_channels if self.spec.has_bias else 0)

    def summary_line(self) -> str:
        s = self.spec
        size, ksize, out = ("x".join(map(str, v)) for v in (s.in_spatial, s.kernel_spatial, s.out_spatial))
        return (f"{size}x{s.in_channels} through {s.out_channels} transposed filters of {ksize} (stride "
                f"{'x'.join(map(str, s.stride))}) gives {out}x{s.out_channels}")

    def matmul_text(self) -> str:
        """The scatter's matmul view in words (per image, then the whole batch)."""
        s, (rows, inner, cols) = self.spec, self.matmul
        per = " per group" if s.groups > 1 else ""
        groups = f", {s.groups} groups" if s.groups > 1 else ""
        return (f"({rows} x {inner}) @ ({inner} x {cols}) per image{per}{groups}, then col2im (fold) adds each row's "
                f"{cols} columns into the output; the whole batch: ({s.batch * rows} x {inner}) @ ({inner} x {cols})")

    def conv_matmul_text(self) -> str:
        """The matmul view of the same op as a conv over the stride-dilated input, with its cost."""
        s, (crows, cinner, ccols) = self.spec, self.conv_matmul
        per = " per group" if s.groups > 1 else ""
        return (f"({crows} x {cinner}) @ ({cinner} x {ccols}) per image{per}: {self.conv_macs:,} MACs "
                f"({self.conv_macs / max(s.macs, 1):.3g}x the scatter's: they include the inserted zeros)")

    def lines(self) -> list[str]:
        s = self.spec
        return [
            f"conv_transpose {s.nsp}-d, torch's convention (the gradient of conv): input {self.input_shape}, kernel "
            f"{self.kernel_shape} (C_in, C_out/groups, *k), layout {s.layout}",
            f"output {self.output_shape}: {self.summary_line()}",
            "",
            "output size per spatial dim: out = (n - 1)*stride - lo - hi + dilation*(k - 1) + output_padding + 1",
            *(f"  {d.formula}" for d in self.dims),
            f"crops (lo, hi) of the full output: {self.padding_note}",
            "as a convolution: dilate the input by the stride (stride - 1 zeros between rows), pad it by lax's (a, b) "
            "= (D - lo, D - hi + output_padding) with D = dilation*(k - 1), and slide the kernel flipped in every "
            "spatial axis, in/out swapped, with stride 1:",
            *(f"  {d.conv_view}" for d in self.dims),
            "",
            f"matmul view (the scatter torch computes): {self.matmul_text()}",
            f"MACs: {s.macs:,}   parameters: {self.params:,}",
            f"as a conv over the dilated input: {self.conv_matmul_text()}",
            "",
            "equivalent calls (x, w, b are that framework's arrays in the layout above, w torch's kernel; the result "
            "is y):",
            *(line for sn in self.snippets for line in _snippet_lines(sn)),
        ]

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def _repr_html_(self) -> str:
        """The explanation as HTML tables in a notebook: shapes and views, the size formula and the conv view per
        spatial dim, and every framework's equivalent call."""
        from convbridge.spec._html import box, table

        s = self.spec
        about = [("input", str(self.input_shape)), ("kernel (C_in, C_out/groups, *k)", str(self.kernel_shape)),
                 ("layout", str(s.layout)), ("output", f"{self.output_shape}: {self.summary_line()}"),
                 ("crops (lo, hi) of the full output", self.padding_note),
                 ("matmul view (the scatter torch computes)", self.matmul_text()),
                 ("as a conv over the dilated input", self.conv_matmul_text()), ("MACs", f"{s.macs:,}"),
                 ("parameters", f"{self.params:,}")]
        dims = [(d.letter, d.n, d.axis.stride, d.axis.lo, d.axis.hi, d.axis.output_padding, d.axis.dilation,
                 d.axis.kernel, d.out, d.formula, d.conv_view) for d in self.dims]
        head = ("axis", "n", "stride", "lo", "hi", "output_padding", "dilation", "k", "out",
                "out = (n - 1)*stride - lo - hi + dilation*(k - 1) + output_padding + 1",
                "as a conv: kernel flipped, in/out swapped, over the input dilated by the stride")
        return box(table(about, caption=f"conv_transpose {s.nsp}-d, torch's convention (the gradient of conv)"),
                   table(dims, head), snippets_html(self.snippets))


def snippets_html(items: tuple[Snippet, ...]) -> str:
    """Every framework's equivalent call as an HTML table: the framework (and its note), then the code."""
    from convbridge.spec._html import Html, pre, table

    rows = [(sn.framework + (f" ({sn.note})" if sn.note else ""), Html(pre(sn.code))) for sn in items]
    return table(rows, ("framework", "equivalent call (x, w, b: that framework's arrays; the result is y)"))


def _snippet_lines(sn: Snippet) -> list[str]:
    return [f"# {sn.framework}" + (f"  ({sn.note})" if sn.note else ""), *(f"    {ln}" for ln in sn.code.splitlines())]


def explain_transpose(input_shape: Shape, kernel_shape: Shape, bias: bool, kwargs: dict[str, Any], *,
                      module_output_size: bool = False) -> TransposeExplanation:
    """The :class:`TransposeExplanation` of ``cb.conv_transpose(x, w, b, **kwargs)`` in torch's convention.

    Args:
        input_shape, kernel_shape: the arrays' shapes (kernel: torch's ``(C_in, C_out / groups, *k)`` by default).
        bias: whether a bias is added.
        kwargs: ``cb.conv_transpose``'s keyword arguments (``convention`` must be ``"torch"``).
        module_output_size: ``output_size`` goes to a torch module's forward, which reaches only
            ``base .. base + stride - 1`` (not ATen's ``max(stride, dilation)``): check that rule too.

    Raises:
        ConvBridgeError: invalid shapes or arguments.
    """
    kwargs = dict(kwargs)
    convention = kwargs.pop("convention", "torch")
    if convention != "torch":
        raise ArgumentError(f"explain states transposed convolutions in torch's convention, got convention="
                            f"{brief(convention)}; convert a lax.conv_transpose call first with "
                            "convbridge.transpose.jax_to_torch(kernel, **lax_kwargs)")
    spec = replace(make_conv_transpose_spec(input_shape, kernel_shape, **kwargs), has_bias=bias)
    if module_output_size:
        _check_module_output_size(spec, kwargs["output_size"])
    dims = tuple(TransposeDimArithmetic(c, a) for c, a in zip(spec.layout.spatial, spec.axes))
    return TransposeExplanation(spec, input_shape, kernel_shape, dims, _crops_note(spec, kwargs.get("padding", 0)),
                                snippets(spec))


def _check_module_output_size(spec: ConvTransposeSpec, output_size: object) -> None:
    for letter, a in zip(spec.layout.spatial, spec.axes):
        if a.output_padding >= a.stride:
            raise ShapeError(f"output_size {brief(output_size)}: torch's ConvTranspose{spec.nsp}d forward reaches "
                             f"only {a.base}..{a.base + a.stride - 1} on axis {letter} (base .. base + stride - 1), "
                             f"not {a.out}; pass output_padding={a.output_padding} in the layer instead (ATen allows "
                             f"up to max(stride, dilation) - 1)")


def _crops_note(spec: ConvTransposeSpec, given: object) -> str:
    full = ", ".join(f"{c} {a.full}" for c, a in zip(spec.layout.spatial, spec.axes))
    pairs = ", ".join(f"{c} ({lo}, {hi})" for c, (lo, hi) in zip(spec.layout.spatial, spec.padding))
    text = f"{pairs} of {full} rows; output_padding {spec.output_padding} adds rows on the high side (ATen's rule " \
           "0 <= output_padding < max(stride, dilation))"
    if isinstance(given, str) and given.lower().startswith("same"):
        rule = "odd row cropped low" if given.lower() == "same_lower" else "odd row cropped high"
        text += f"; {given!r}: output n*stride, the gradient of conv's 'same' ({rule})"
    if any(lo != hi for lo, hi in spec.padding):
        text += "; asymmetric: torch crops both ends alike, so its calls crop nothing and slice the result"
    return text
