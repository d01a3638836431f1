"""A :class:`~convbridge.divergence.report.DiffReport` for people: plain text, a rich table, HTML for notebooks and
pages.

Framework-free: rich is imported by :func:`table` only, matplotlib (for the page's bar chart) by :func:`html_page`
only, and a page without matplotlib says so instead of drawing.

Numbers have 3 significant digits; an infinite ratio reads ``inf``, a missing one (None, NaN) ``-``. Long layer
names are shortened in the middle (``layer4.1…bn2``) so that text lines stay within 118 columns.

>>> from convbridge.divergence.report import DiffReport, DiffRow
>>> conv = DiffRow(0, "conv1", "conv1", "torch.nn.Conv2d", "flax.linen.Conv", "conv", (1, 3, 8, 8), (1, 4, 8, 8),
...                "equivalent", 1.5, 40.0, 2e-7)
>>> out = DiffRow(-1, "output", "output", "", "", "output", (1, 3, 8, 8), (1, 4, 8, 8), "equivalent", 1.5, 40.0,
...               2e-7)
>>> report = DiffReport("torch Net", "flax.linen Net", (conv,), out)
>>> print(text(report).splitlines()[0])
convbridge diff: torch Net (A) vs flax.linen Net (B)
>>> "every layer agrees" in text(report), "<table" in html_fragment(report)
(True, True)
"""

from __future__ import annotations

import hashlib
import html
import json
import math
import os
import re
import textwrap
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from convbridge.divergence.report import VERDICTS, DiffReport, DiffRow, GradRow
from convbridge.errors import ArgumentError, ArgumentTypeError

if TYPE_CHECKING:
    from rich.table import Table
    from rich.text import Text

__all__ = ["text", "table", "html_fragment", "html_page", "save_html", "num", "shorten", "WIDTH"]

#: The widest line :func:`text` writes (tables shrink their name columns to fit, prose is wrapped).
WIDTH = 118
#: Text rows listed under "also:" after the first divergent one, at most.
_MAX_ALSO = 10
_COLUMNS = ("#", "layer A", "layer B", "kind", "shape in->out", "verdict", "r", "allowed", "input")
_GRAD_COLUMNS = ("gradient A", "gradient B", "shape", "verdict", "max abs", "max rel", "rel (float64)")


def num(v: float | None) -> str:
    """A number with 3 significant digits; ``inf`` for infinity, ``-`` for None or NaN.

    >>> num(0.000123456), num(float("inf")), num(float("nan")), num(None), num(0.0), num(12345.0)
    ('0.000123', 'inf', '-', '-', '0', '1.23e+04')
    """
    if v is None or math.isnan(v):
        return "-"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.3g}"


def shorten(name: str, width: int) -> str:
    """``name`` on one line, at most ``width`` characters: the middle replaced by an ellipsis when too long.

    >>> shorten("backbone.layer4.1.downsample.0", 20)
    'backbone.…wnsample.0'
    """
    flat = " ".join(name.split())  # a newline or tab in a name would break the table
    if len(flat) <= width:
        return flat
    if width <= 1:
        return "…"[:max(width, 0)]
    head = (width - 1) // 2
    tail = width - 1 - head
    return flat[:head] + "…" + flat[len(flat) - tail:]


def _shape(shape: Sequence[int]) -> str:
    return "x".join(str(n) for n in shape) if len(shape) else "()"


def _shapes(row: DiffRow) -> str:
    """``1x64x56x56->1x128x28x28``, or one shape when the layer keeps it."""
    same = tuple(row.shape_in) == tuple(row.shape_out)
    return _shape(row.shape_in) if same else f"{_shape(row.shape_in)}->{_shape(row.shape_out)}"


def _agrees(row: DiffRow) -> bool:
    return row.verdict in ("identical", "equivalent") and row.input_verdict != "glue"


def _summary(report: DiffReport) -> str:
    """``58 identical, 2 equivalent, 2 mismatch; 1 glue difference`` over the paired layers."""
    counts = Counter(row.verdict for row in report.rows)
    parts = [f"{counts[v]} {v}" for v in VERDICTS if counts[v]]
    parts += [f"{n} {v}" for v, n in sorted(counts.items()) if v not in VERDICTS]
    glue = sum(row.input_verdict == "glue" for row in report.rows)
    n = len(report.rows)
    text = f"{n} paired layer{'s' * (n != 1)}" + (": " + ", ".join(parts) if parts else "")
    return text + (f"; {glue} glue difference{'s' * (glue != 1)}" if glue else "")


def _seconds(report: DiffReport) -> str:
    return f"{num(report.seconds)} s" if math.isfinite(report.seconds) else "time not measured"


def _end_to_end(row: DiffRow) -> str:
    text = (f"end to end ({_shape(row.shape_out)}): {row.verdict}, r {num(row.r)} (allowed {num(row.allowed)}), "
            f"max |d| {num(row.max_abs)}")
    text += f"; {row.evidence}" if row.evidence else ""
    return text + (f"; likely cause: {row.cause}" if row.cause else "")


def _first_line(report: DiffReport) -> str:
    first = report.first_divergent
    if first is not None:
        return f"first divergent (#{first.index}): {first}"
    unsure = sum(row.verdict == "inconclusive" for row in report.rows)
    if unsure:
        return f"no layer is proven to differ, but {unsure} {'is' if unsure == 1 else 'are'} inconclusive"
    return "every layer agrees"


def _others(report: DiffReport) -> list[DiffRow]:
    """Every row but the first divergent one that needs a look: divergent or inconclusive."""
    first = report.first_divergent
    return [row for row in report.rows if row is not first and not _agrees(row)]


# ------------------------------------------------------------------------------------------------------ text

def _row_cells(row: DiffRow, first: DiffRow | None) -> list[str]:
    mark = ">" if row is first else ""
    check = {"agree": "agree", "glue": "GLUE", "": "-"}.get(row.input_verdict, row.input_verdict)
    return [f"{mark}{row.index}", row.name_a, row.name_b, row.kind, _shapes(row), row.verdict, num(row.r),
            num(row.allowed), check]


def _grid(header: Sequence[str], rows: Sequence[Sequence[str]], flex: dict[int, int], right: set[int],
          width: int = WIDTH) -> list[str]:
    """Aligned columns within ``width``: columns in ``flex`` (index -> narrowest) shrink, widest first."""
    widths = [max([len(h)] + [len(" ".join(r[i].split())) for r in rows]) for i, h in enumerate(header)]
    over = sum(widths) + 2 * (len(widths) - 1) - width
    while over > 0:
        room = [i for i in flex if widths[i] > flex[i]]
        if not room:
            break
        widest = max(room, key=lambda i: widths[i])
        widths[widest] -= 1
        over -= 1

    def line(cells: Sequence[str]) -> str:
        return "  ".join(shorten(c, w).rjust(w) if i in right else shorten(c, w).ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return [line(header), "  ".join("-" * w for w in widths), *(line(r) for r in rows)]


def _wrap(paragraph: str, indent: str = "  ") -> list[str]:
    return textwrap.wrap(paragraph, WIDTH, subsequent_indent=indent, break_on_hyphens=False) or [""]


def _grad_lines(grads: Sequence[GradRow]) -> list[str]:
    rows = [[g.name_a, g.name_b, _shape(g.shape), g.verdict, num(g.max_abs), num(g.max_rel), num(g.rel64)]
            for g in grads]
    lines = ["", "gradients:", *_grid(_GRAD_COLUMNS, rows, {0: 12, 1: 12, 2: 10}, {4, 5, 6})]
    for g in grads:
        if g.verdict not in ("identical", "equivalent") and g.evidence:
            lines += _wrap(f"  {g.name_a}: {g.verdict}; {g.evidence}", "    ")
    return lines


def _tail_lines(report: DiffReport) -> list[str]:
    lines: list[str] = []
    for side, names in (("A", report.unpaired_a), ("B", report.unpaired_b)):
        if names:
            lines += _wrap(f"only in {side} (treated as glue): " + ", ".join(names))
    for note in report.notes:
        lines += _wrap(f"note: {note}")
    return lines


def text(report: DiffReport) -> str:
    """The report as plain text, lines at most :data:`WIDTH` (118) columns.

    A header (the models, the verdict, the counts, the time), one line per paired layer (``>`` marks the first
    divergent one), then the first divergent layer in words (or ``every layer agrees``), the other rows that need
    a look, the end-to-end output, the gradients when judged, the unpaired layers and the notes.

    Args:
        report: what :func:`convbridge.divergence` returned.

    Returns:
        The text, without a trailing newline.
    """
    first = report.first_divergent
    lines = [*_wrap(f"convbridge diff: {report.model_a} (A) vs {report.model_b} (B)"),
             *_wrap(f"verdict: {report.verdict}; {_summary(report)}; {_seconds(report)}"), ""]
    cells = [_row_cells(row, first) for row in report.rows]
    lines += _grid(_COLUMNS, cells, {1: 14, 2: 14, 4: 16, 3: 6}, {6, 7})
    lines += _wrap("r = max |y_a - y_b| / (u G) on the same input; allowed: the bound on r; input: B's own input "
                   "to the layer against A's (GLUE: the code between layers differs); one shape: unchanged"
                   + ("; >: first divergent" if first is not None else ""), "")
    lines += ["", *_wrap(_first_line(report))]
    others = _others(report)
    if others:
        lines.append("also:")
        for row in others[:_MAX_ALSO]:
            lines += _wrap(f"  #{row.index} {row}", "    ")
        if len(others) > _MAX_ALSO:
            lines.append(f"  ... and {len(others) - _MAX_ALSO} more (see the table)")
    lines += _wrap(_end_to_end(report.output))
    if report.grads:
        lines += _grad_lines(report.grads)
    tail = _tail_lines(report)
    return "\n".join(lines + ([""] + tail if tail else []))


# ------------------------------------------------------------------------------------------------------ rich

_STYLES = {"identical": "green", "equivalent": "green", "inconclusive": "yellow", "mismatch": "bold red"}


def _cell(value: str, style: str = "") -> Text:
    from rich.text import Text

    return Text(value, style=style)  # a Text, never markup: a layer named "[bold]" stays as written


def table(report: DiffReport) -> Table:
    """The per-layer table for a terminal (``rich.console.Console().print(table(report))``).

    The title holds the models and the verdict, the caption the first divergent layer and the end-to-end row;
    the first divergent row is highlighted. Names are shortened to 40 characters in the middle.

    Returns:
        A ``rich.table.Table``.
    """
    from rich import box
    from rich.table import Table

    first = report.first_divergent
    title = (f"convbridge diff: {report.model_a} (A) vs {report.model_b} (B)\n"
             f"verdict: {report.verdict}; {_summary(report)}; {_seconds(report)}")
    t = Table(title=_cell(title, "bold"), title_justify="left", caption_justify="left", box=box.SIMPLE_HEAD,
              caption=_cell(f"{_first_line(report)}\n{_end_to_end(report.output)}"))
    for col in _COLUMNS:
        t.add_column(col, justify="right" if col in ("#", "r", "allowed") else "left",
                     no_wrap=col not in ("layer A", "layer B", "shape in->out"), overflow="fold")
    for row, cells in zip(report.rows, (_row_cells(row, first) for row in report.rows)):
        cells[1], cells[2] = shorten(cells[1], 40), shorten(cells[2], 40)
        styles = [""] * len(cells)
        styles[5] = _STYLES.get(row.verdict, "")
        styles[8] = "bold red" if row.input_verdict == "glue" else ""
        t.add_row(*(_cell(c, s) for c, s in zip(cells, styles)),
                  style="on dark_red" if row is first else None, end_section=row is first)
    return t


# ------------------------------------------------------------------------------------------------------ html

_CSS = """.cb-diff{font-family:system-ui,sans-serif;line-height:1.35}
.cb-diff .cb-scroll{overflow-x:auto;max-width:100%;-webkit-overflow-scrolling:touch}
.cb-diff table{border-collapse:collapse;font-size:13px;margin:.6em 0}
.cb-diff td,.cb-diff th{border:1px solid rgba(128,128,128,.45);padding:3px 6px;text-align:left;vertical-align:top}
.cb-diff th{background:rgba(128,128,128,.18)}
.cb-diff td.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
.cb-diff .name{overflow-wrap:break-word;min-width:11em}
.cb-diff .why{min-width:14em;font-size:12px}
.cb-diff small{opacity:.75}
.cb-diff .identical,.cb-diff .equivalent,.cb-diff .agree{color:#2e9e4f}
.cb-diff .inconclusive{color:#c98500}
.cb-diff .mismatch,.cb-diff .glue{color:#e5484d;font-weight:bold}
.cb-diff tr.bad{background:rgba(229,72,77,.12)}
.cb-diff tr.first{background:rgba(229,72,77,.28);outline:2px solid #e5484d}
.cb-diff tr:target{outline:3px solid #f5a623}
.cb-diff .cb-note{opacity:.85;font-size:13px}"""

#: The page around the fragment: the dark look of ``convbridge compare``'s report, with side margins for phones.
_PAGE_CSS = """body{background:#111;color:#ddd;font-family:system-ui,sans-serif;max-width:1100px;margin:1.5em auto;
padding:0 12px}a{color:#7ab7ff}img{max-width:100%;height:auto;background:#000}figure{margin:1.5em 0}
code{background:#1b1b1b;padding:1px 4px;overflow-wrap:anywhere}
.cb-chart{overflow-x:auto}@media (max-width:600px){.cb-chart img{max-width:none;width:640px}}"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _name(value: str) -> str:
    """An escaped name that may break after its separators (``layer1.<wbr>0.<wbr>conv1``), and only there."""
    return re.sub(r"([./_:])", r"\1<wbr>", _e(value))


def _prefix(report: DiffReport) -> str:
    """Element ids unique to this report's content, so that two reports in one notebook do not share anchors."""
    blob = json.dumps(report.to_dict(), sort_keys=True, default=str).encode()
    return "cbd-" + hashlib.sha256(blob).hexdigest()[:10]


def _why(row: DiffRow) -> str:
    """The row's evidence cell: the likely cause first, then the glue, the evidence and the bound."""
    parts = []
    if row.cause:
        parts.append(f'<b class="mismatch">likely cause: {_e(row.cause)}</b>')
    if row.input_verdict == "glue":
        glue = f"input differs: |d| {num(row.input_max_abs)} &gt; {num(row.input_allowed)}"
        parts.append(f'<b class="glue">{glue}' + (f"; likely cause: {_e(row.glue_cause)}" if row.glue_cause else "")
                     + "</b>")
    if row.evidence:
        parts.append(_e(row.evidence))
    if row.bound:
        parts.append(f"<small>bound: {_e(row.bound)}</small>")
    return "<br>".join(parts)


def _html_row(row: DiffRow, first: DiffRow | None, prefix: str) -> str:
    cls = "first bad" if row is first else ("bad" if not _agrees(row) else "")
    ident = f"{prefix}-row-{row.index}" if row.index >= 0 else f"{prefix}-output"
    index = "out" if row.index < 0 else str(row.index)
    check = row.input_verdict or "-"
    cells = [
        f'<td class="num">{"&#9654; " if row is first else ""}{index}</td>',
        f'<td class="name">{_name(row.name_a)}<br><small>{_name(row.type_a)}</small></td>',
        f'<td class="name">{_name(row.name_b)}<br><small>{_name(row.type_b)}</small></td>',
        f"<td>{_e(row.kind)}</td>", f"<td>{_e(_shapes(row)).replace('-&gt;', '&rarr;<wbr>')}</td>",
        f'<td class="{_e(row.verdict)}">{_e(row.verdict)}</td>',
        f'<td class="num">{num(row.r)}</td>', f'<td class="num" title="{_e(row.bound)}">{num(row.allowed)}</td>',
        f'<td class="{_e(check)}">{_e(check)}</td>', f'<td class="num">{num(row.max_abs)}</td>',
        f'<td class="why">{_why(row)}</td>',
    ]
    return f'<tr id="{ident}"' + (f' class="{cls}"' if cls else "") + ">" + "".join(cells) + "</tr>"


def _html_table(report: DiffReport, prefix: str) -> str:
    first = report.first_divergent
    head = "".join(f"<th>{_e(c)}</th>" for c in (*_COLUMNS, "max |d|", "cause, evidence, bound"))
    body = "".join(_html_row(row, first, prefix) for row in report.rows)
    foot = _html_row(report.output, None, prefix)
    return (f'<div class="cb-scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody>'
            f"<tfoot>{foot}</tfoot></table></div>")


def _html_grads(grads: Sequence[GradRow]) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in (*_GRAD_COLUMNS, "evidence"))
    body = "".join(
        f'<tr><td class="name">{_name(g.name_a)}</td><td class="name">{_name(g.name_b)}</td><td>{_e(_shape(g.shape))}'
        f'</td><td class="{_e(g.verdict)}">{_e(g.verdict)}</td><td class="num">{num(g.max_abs)}</td>'
        f'<td class="num">{num(g.max_rel)}</td><td class="num">{num(g.rel64)}</td><td class="why">'
        f"{_e(g.evidence)}</td></tr>" for g in grads)
    return f'<h3>Gradients</h3><div class="cb-scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody>' \
           "</table></div>"


def _html_first(report: DiffReport, prefix: str) -> str:
    first = report.first_divergent
    if first is None:
        return f'<p><span class="agree">{_e(_first_line(report))}</span></p>' if not _others(report) else \
            f'<p><span class="inconclusive">{_e(_first_line(report))}</span></p>'
    link = f'<a href="#{prefix}-row-{first.index}">#{first.index} {_e(first.name_a)}</a>'
    return f'<p class="cb-first">First divergent layer: <b class="mismatch">{link}</b>: {_e(str(first))}</p>'


def _html_end(row: DiffRow) -> str:
    rest = _end_to_end(row).split(f": {row.verdict}", 1)[-1]
    return (f'<p>End to end ({_e(_shape(row.shape_out))}): <b class="{_e(row.verdict)}">{_e(row.verdict)}</b>'
            f"{_e(rest)}</p>")


def _fragment(report: DiffReport, chart: str) -> str:
    prefix = _prefix(report)
    parts = [
        f'<div class="cb-diff" id="{prefix}"><style>{_CSS}</style>',
        f"<p><b>convbridge diff</b>: A <code>{_e(report.model_a)}</code> vs B <code>{_e(report.model_b)}</code></p>",
        (f'<p>Verdict: <b class="{_e(report.verdict)}">{_e(report.verdict)}</b> &mdash; {_e(_summary(report))}; '
         f"{_e(_seconds(report))}</p>"),
        _html_first(report, prefix), _html_table(report, prefix),
        _html_end(report.output),
        ('<p class="cb-note">r = max |y<sub>a</sub> &minus; y<sub>b</sub>| / (u G), both layers on A\'s input to the '
         "layer; allowed: the bound on r (hover it for its derivation); input: B's own input to the layer against "
         "A's (glue: the code between the layers differs).</p>"),
    ]
    if report.grads:
        parts.append(_html_grads(report.grads))
    for side, names in (("A", report.unpaired_a), ("B", report.unpaired_b)):
        if names:
            parts.append(f"<p>Only in {side} (treated as glue): " + ", ".join(f"<code>{_e(n)}</code>" for n in names)
                         + "</p>")
    parts += [f'<p class="cb-note">Note: {_e(note)}</p>' for note in report.notes]
    parts += [chart, "</div>"]
    return "\n".join(p for p in parts if p)


def html_fragment(report: DiffReport) -> str:
    """The report as an HTML fragment (a ``<div>`` with its own scoped style) for a notebook's ``_repr_html_``.

    No chart (drawing one costs matplotlib's import on every display): :func:`html_page` has it. Every name is
    escaped; the first divergent row is highlighted and linked from the line above the table.
    """
    return _fragment(report, "")


def _chart(report: DiffReport) -> str:
    try:
        from convbridge.viz.diff import bar_chart
        png = bar_chart(report)
    except ImportError as exc:
        return (f'<p class="cb-note">No chart: the bar chart needs matplotlib, which could not be imported '
                f"({_e(exc)}); <code>pip install 'convbridge[viz]'</code> draws it.</p>")
    import base64

    first = report.first_divergent
    alt = (f"Bar chart: r against the allowed band (log scale) for {len(report.rows)} layers and the end-to-end "
           f"output; {sum(not _agrees(r) for r in report.rows)} do not agree"
           + (f"; first divergent: #{first.index} {first.name_a}" if first is not None else ""))
    data = base64.b64encode(png).decode("ascii")
    return (f'<h3>r against the allowed band, per layer</h3><figure><div class="cb-chart"><img alt="{_e(alt)}" '
            f'src="data:image/png;base64,{data}"></div><figcaption class="cb-note">Bars: r; shaded: the allowed band; '
            "red: mismatch; X: the layer's input differs (glue); highlighted: the first divergent layer."
            "</figcaption></figure>")


def html_page(report: DiffReport) -> str:
    """A complete, self-contained HTML page: the fragment, plus the per-layer bar chart as an embedded PNG.

    No external requests, no scripts. Without matplotlib the page says so where the chart would be.
    """
    title = f"convbridge diff: {report.model_a} vs {report.model_b} ({report.verdict})"
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width,initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_PAGE_CSS}</style></head><body>",
        _fragment(report, _chart(report)), "</body></html>", ""])


def save_html(report: DiffReport, path: str | os.PathLike[str]) -> Path:
    """Write :func:`html_page` to ``path`` atomically (a temporary file beside it, then renamed); return the path.

    An existing file is replaced; parent folders are created.

    Raises:
        ArgumentTypeError: ``path`` is not a str or a path.
        ArgumentError: ``path`` is empty, a folder or something else that is not a file, or cannot be written.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise ArgumentTypeError(f"save_html's path is a str or a pathlib.Path, got {type(path).__name__} {path!r}")
    if not str(path).strip():
        raise ArgumentError("save_html's path is empty; pass the HTML file to write, e.g. 'diff.html'")
    target = Path(path).expanduser()
    if target.is_dir():
        raise ArgumentError(f"{str(target)!r} is a folder; pass the HTML file to write, e.g. "
                            f"{str(target / 'diff.html')!r}")
    if os.path.lexists(target) and not target.is_file():
        raise ArgumentError(f"{str(target)!r} exists and is not a regular file (a link to nothing, a pipe, a "
                            "device); convbridge replaces only files: pass another path")
    page = html_page(report)
    from convbridge.viz._files import save

    umask = os.umask(0)
    os.umask(umask)

    def write(tmp: Path) -> None:
        tmp.write_text(page, encoding="utf-8")
        tmp.chmod(0o666 & ~umask)  # the temporary file is private; the page is an ordinary file

    try:
        return save(target, write)
    except OSError as exc:
        raise ArgumentError(f"cannot write {str(target)!r}: {exc.strerror or exc}; pass a writable path") from None
