"""HTML tables for notebooks (``_repr_html_``) of the specs, and the small helpers the other reprs share.

Every value is escaped (``html.escape`` with quotes); the markup is a ``<div>`` holding plain ``<table>``
elements with inline styles only: no ``<style>`` block, no script, no external resource, so it renders the same
in Jupyter, VS Code and a sanitising viewer, and a wide table scrolls inside its ``<div>`` on a narrow screen.

>>> from convbridge.spec import make_conv_spec
>>> html = spec_html(make_conv_spec((32, 3, 32, 32), (4, 3, 5, 5)))
>>> html.count("<table"), "(32, 4, 28, 28)" in html
(2, True)
"""

from __future__ import annotations

import html
import math
from collections.abc import Collection, Iterable, Sequence

from convbridge.spec.conv import ConvSpec, SpatialSpec
from convbridge.spec.transpose import ConvTransposeSpec
from convbridge.spec.unfold import FoldSpec, UnfoldSpec

__all__ = ["Html", "esc", "table", "details", "pre", "box", "verdict_html", "spec_html"]

_BOX = 'class="convbridge" style="overflow-x:auto;max-width:100%"'
_TABLE = 'style="border-collapse:collapse;margin:0.3em 0 0.8em 0"'
_CELL = "padding:1px 8px;border-bottom:1px solid #8886;vertical-align:top"
_COLOURS = {"identical": "#2e9e4f", "equivalent": "#2e9e4f", "inconclusive": "#c98500", "mismatch": "#e5484d"}


class Html(str):
    """Markup that :func:`table` puts in a cell as it is (everything else is escaped)."""

    __slots__ = ()


def esc(value: object) -> str:
    """``value`` as text that HTML shows literally (``<``, ``>``, ``&`` and both quotes escaped).

    >>> esc("<b>'x' & y</b>")
    '&lt;b&gt;&#x27;x&#x27; &amp; y&lt;/b&gt;'
    """
    return html.escape(str(value), quote=True)


def _cell(value: object, tag: str, right: bool = False) -> str:
    text = value if isinstance(value, Html) else esc(value)
    align = ";text-align:right;white-space:nowrap" if right else ";text-align:left"
    return f'<{tag} style="{_CELL}{align}{";white-space:nowrap" * (tag == "th")}">{text}</{tag}>'


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def table(rows: Iterable[Sequence[object]], header: Sequence[str] | None = None, *, caption: str | None = None,
          right: Collection[int] = ()) -> str:
    """An HTML table: ``header`` as ``<th>`` cells, each row's values as ``<td>`` cells, all escaped unless
    wrapped in :class:`Html`. With a header, numbers and the columns whose indices ``right`` lists are
    right-aligned; without one (name and value rows) everything is left-aligned.

    >>> table([("K", 75)], ("name", "value"), caption="a & b")  # doctest: +ELLIPSIS
    '<table ...><caption ...>a &amp; b</caption><thead><tr><th ...>name</th>...<td ...>75</td></tr></tbody></table>'
    """
    head = "" if header is None else "<thead><tr>" + "".join(_cell(h, "th") for h in header) + "</tr></thead>"
    body = "".join("<tr>" + "".join(_cell(v, "td", header is not None and (i in right or _number(v)))
                                    for i, v in enumerate(row)) + "</tr>" for row in rows)
    cap = "" if caption is None else f'<caption style="text-align:left;font-weight:bold">{esc(caption)}</caption>'
    return f"<table {_TABLE}>{cap}{head}<tbody>{body}</tbody></table>"


def details(summary: str | Html, body: str, *, open_: bool = False) -> str:
    """``body`` (HTML) folded under a ``<details>`` element whose ``<summary>`` is ``summary`` (escaped unless
    :class:`Html`)."""
    head = summary if isinstance(summary, Html) else esc(summary)
    return f"<details{' open' if open_ else ''}><summary>{head}</summary>{body}</details>"


def pre(text: str) -> str:
    """``text`` in a ``<pre>`` block, escaped: code and the plain-text rendering keep their line breaks."""
    return f"<pre>{esc(text)}</pre>"


def box(*parts: str) -> str:
    """The parts (already HTML) in one ``<div>`` that scrolls sideways rather than overflow a narrow page."""
    return f"<div {_BOX}>" + "".join(parts) + "</div>"


def verdict_html(verdict: str, label: str | None = None) -> Html:
    """A verdict in bold, coloured by its kind (green agrees, amber inconclusive, red mismatch)."""
    colour = _COLOURS.get(verdict, "inherit")
    return Html(f'<b style="color:{colour}">{esc(verdict if label is None else label)}</b>')


def _shape(shape: Sequence[int]) -> str:
    return str(tuple(shape))


def _pairs(pairs: Sequence[tuple[int, int]]) -> str:
    return ", ".join(f"({lo}, {hi})" for lo, hi in pairs)


#: What one spec shows: (name, value) rows about it, one row per spatial axis, and that table's header.
_Rows = tuple[list[tuple[str, object]], list[Sequence[object]], tuple[str, ...]]


def _conv_rows(spec: ConvSpec) -> _Rows:
    s = spec
    about = [("input", _shape(s.layout.user_in_shape((s.batch, s.in_channels, *s.in_spatial)))),
             ("kernel", _shape(s.kernel_shape)), ("output", _shape(s.out_shape)),
             ("channels", f"{s.in_channels} -> {s.out_channels}, groups {s.groups}"),
             ("padding mode", s.padding_mode), ("bias", s.has_bias), ("K (terms per output)", s.terms),
             ("MACs", f"{s.macs:,}")]
    axes: list[Sequence[object]] = [(c, a.size, a.kernel, a.stride, a.dilation, f"({a.lo}, {a.hi})", a.out)
                                    for c, a in zip(s.layout.spatial, s.axes)]
    return about, axes, ("axis", "n", "kernel", "stride", "dilation", "padding (lo, hi)", "out")


def _transpose_rows(spec: ConvTransposeSpec) -> _Rows:
    s = spec
    about = [("input", _shape(s.layout.user_in_shape((s.batch, s.in_channels, *s.in_spatial)))),
             ("kernel", _shape(s.kernel_shape)), ("output", _shape(s.out_shape)),
             ("channels", f"{s.in_channels} -> {s.out_channels}, groups {s.groups}"),
             ("convention", s.convention + (f", transpose_kernel={s.transpose_kernel}" * (s.convention == "jax"))),
             ("kernel flipped", s.kernel_flipped), ("bias", s.has_bias), ("K (terms per output)", s.terms),
             ("MACs", f"{s.macs:,}")]
    axes: list[Sequence[object]] = [
        (c, a.size, a.kernel, a.stride, a.dilation, f"({a.lo}, {a.hi})", a.output_padding, a.full, a.out)
        for c, a in zip(s.layout.spatial, s.axes)]
    return about, axes, ("axis", "n", "kernel", "stride", "dilation", "crops (lo, hi)", "output_padding", "full",
                         "out")


def _blocks_rows(spec: UnfoldSpec | FoldSpec) -> _Rows:
    s, lay = spec, spec.layout
    taps = math.prod(s.kernel_spatial)
    if isinstance(s, UnfoldSpec):
        shape_in = lay.user_in_shape((s.batch, s.channels, *s.in_spatial))
        about: list[tuple[str, object]] = [("input", _shape(shape_in)), ("output", _shape(s.out_shape)),
                                           ("rows x columns", f"C x prod(k) = {s.channels * taps}, L = "
                                                              f"{math.prod(s.out_spatial)} blocks")]
        size = "n"
    else:
        cols = (s.batch, s.channels * taps, math.prod(s.blocks))
        about = [("input (cols)", _shape(cols if lay.batched else cols[1:])), ("output", _shape(s.out_shape)),
                 ("K (blocks overlapping one element)", s.terms)]
        size = "output n"
    axes: list[Sequence[object]] = [(c, a.size, a.kernel, a.stride, a.dilation, f"({a.lo}, {a.hi})", a.out)
                                    for c, a in zip(lay.spatial, s.axes)]
    return about, axes, ("axis", size, "kernel", "stride", "dilation", "padding (lo, hi)", "blocks")


def spec_html(spec: SpatialSpec) -> str:
    """A spec as two HTML tables: what goes in and out (shapes, channels, ...), then one row per spatial axis.

    Raises:
        TypeError: not one of the four specs.
    """
    if isinstance(spec, ConvSpec):
        about, axes, head = _conv_rows(spec)
        title = f"ConvSpec: {spec.nsp}-d convolution"
    elif isinstance(spec, ConvTransposeSpec):
        about, axes, head = _transpose_rows(spec)
        title = f"ConvTransposeSpec: {spec.nsp}-d transposed convolution (torch's meaning)"
    elif isinstance(spec, (UnfoldSpec, FoldSpec)):
        about, axes, head = _blocks_rows(spec)
        title = f"{type(spec).__name__}: {spec.nsp}-d {spec.op} ({'im2col' if spec.op == 'unfold' else 'col2im'})"
    else:
        raise TypeError(f"spec_html renders ConvSpec, ConvTransposeSpec, UnfoldSpec or FoldSpec, got "
                        f"{type(spec).__name__}")
    about = [("layout", str(spec.layout)), *about, ("dtype", spec.dtype or "any (shapes only)")]
    return box(table(about, caption=title), table(axes, head))
