"""The picture of ``cb.diff``: one horizontal bar per layer, its ratio r against its allowed band, on a log axis.

Rows run top to bottom in execution order, the end-to-end output last; the figure grows 0.2 inch per row, so a
ResNet-18's ~60 layers stay legible. Mismatches are red, inconclusive rows yellow; an X on the left edge marks a
layer whose own input differs (the glue before it), and the first divergent row is shaded with its label in bold.
An r of exactly 0 (bitwise identical) has no logarithm: it is written as ``0`` at the left edge; an infinite r
reaches the right edge with ``inf``. Uses the Agg canvas: nothing here touches the user's matplotlib backend.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.style import context as style_context
from matplotlib.ticker import FuncFormatter, NullLocator

from convbridge.divergence.render import num, shorten
from convbridge.divergence.report import DiffReport, DiffRow
from convbridge.viz.figures import STYLE

__all__ = ["bar_chart", "PNG_TAG"]

#: The PNG's ``Software`` text chunk.
PNG_TAG = "convbridge diff"
_COLOURS = {"identical": "#3ccf7a", "equivalent": "#3ccf7a", "inconclusive": "#f9d423", "mismatch": "#ff4d4d"}
_BAND, _GLUE, _FIRST, _OTHER = "#4e9bff", "#ff8c42", "#ff4d4d", "#bbbbbb"
_ROW_INCH, _WIDTH_INCH, _DPI, _LABEL_CHARS, _LABEL_FONT = 0.2, 9.0, 100, 44, 8


def _label(row: DiffRow) -> str:
    """``12  layer1.0.conv1 (conv)``: A's name (B's is in the table beside the chart), shortened in the middle."""
    if row.index < 0:
        return "end to end"
    return f"{row.index}  {shorten(row.name_a, _LABEL_CHARS)}  ({shorten(row.kind, 12)})"


def _limits(rows: Sequence[DiffRow]) -> tuple[float, float]:
    """The x range: a decade around every finite positive r and bound, never narrower than 0.1 .. 10."""
    values = [v for row in rows for v in (row.r, row.allowed) if math.isfinite(v) and v > 0]
    lo, hi = (min(values) / 4, max(values) * 4) if values else (0.1, 10.0)
    return min(lo, 0.1), max(hi, 10.0)


def _bars(ax: Axes, rows: Sequence[DiffRow], lo: float, hi: float) -> None:
    ys = range(len(rows))
    bands = [(y, min(row.allowed, hi)) for y, row in zip(ys, rows) if row.allowed > lo]
    if bands:
        ax.barh([y for y, _ in bands], [a - lo for _, a in bands], left=lo, height=0.8, color=_BAND, alpha=0.3)
    drawn = [(y, row) for y, row in zip(ys, rows) if row.r > lo or math.isinf(row.r)]
    ax.barh([y for y, _ in drawn], [min(row.r, hi) - lo for _, row in drawn], left=lo, height=0.45,
            color=[_COLOURS.get(row.verdict, _OTHER) for _, row in drawn])
    for y, row in zip(ys, rows):
        if math.isinf(row.r):
            ax.text(hi, y, " inf", va="center", ha="right", fontsize=7, color="white", fontweight="bold")
        elif math.isnan(row.r) or row.r <= lo:
            ax.text(lo * 1.08, y, num(0.0) if row.r == 0 else num(row.r), va="center", fontsize=7, color=_OTHER)
    glue = [y for y, row in zip(ys, rows) if row.input_verdict == "glue"]
    if glue:
        ax.plot([lo] * len(glue), glue, ls="", marker="X", ms=9, color=_GLUE, clip_on=False, zorder=5)


def _figure(labels: Sequence[str]) -> tuple[Figure, Axes]:
    """A figure whose margins are set from the labels' length (cheap: no layout engine measuring every label)."""
    left = min(0.3 + max(map(len, labels)) * _LABEL_FONT * 0.6 / 72, 4.5)  # inches; DejaVu Sans ~0.6 em per char
    top, bottom = 0.6, 0.95  # inches: the title and the top ticks; the bottom ticks, the x label and the legend
    height = top + bottom + _ROW_INCH * len(labels)
    fig = Figure(figsize=(_WIDTH_INCH, height), dpi=_DPI)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=left / _WIDTH_INCH, right=1 - 0.3 / _WIDTH_INCH, top=1 - top / height,
                        bottom=bottom / height)
    return fig, fig.add_subplot()


def _axes(ax: Axes, rows: Sequence[DiffRow], labels: Sequence[str], lo: float, hi: float) -> None:
    ax.set_xscale("log")
    ax.set_xlim(lo, hi)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: num(v)))  # plain text: no mathtext to parse
    ax.xaxis.set_minor_locator(NullLocator())  # minor ticks on a log axis cost a third of the drawing
    ax.set_ylim(len(rows) - 0.5, -0.5)  # execution order, top to bottom
    ax.set_yticks(range(len(rows)), labels, fontsize=_LABEL_FONT)
    ax.axhline(len(rows) - 1.5, color=_OTHER, lw=0.8, ls="--")  # the end-to-end row below
    ax.grid(axis="x", which="major", alpha=0.25)
    ax.tick_params(axis="x", labeltop=True, top=True, labelsize=8)


def _legend(fig: Figure, rows: Sequence[DiffRow]) -> None:
    """The band, then only what the chart shows: the verdicts' colours present, the glue mark, the shading."""
    verdicts = {row.verdict for row in rows}
    shown = [("allowed band", Patch(color=_BAND, alpha=0.3), True),
             ("r: identical / equivalent", Patch(color=_COLOURS["equivalent"]), verdicts & {"identical", "equivalent"}),
             ("r: inconclusive", Patch(color=_COLOURS["inconclusive"]), "inconclusive" in verdicts),
             ("r: mismatch", Patch(color=_COLOURS["mismatch"]), "mismatch" in verdicts),
             ("input differs (glue)", Line2D([], [], ls="", marker="X", ms=8, color=_GLUE),
              any(row.input_verdict == "glue" for row in rows)),
             ("first divergent", Patch(color=_FIRST, alpha=0.25), any(row.divergent for row in rows))]
    handles = [handle for _, handle, present in shown if present]
    fig.legend(handles=handles, labels=[label for label, _, present in shown if present], loc="lower center",
               ncol=3, fontsize=8, frameon=False, borderaxespad=0.2)


def bar_chart(report: DiffReport) -> bytes:
    """The per-layer bar chart of ``report`` as PNG bytes: r against its allowed band, log scale.

    Args:
        report: what :func:`convbridge.divergence` returned.

    Returns:
        A PNG (900 pixels wide, 20 pixels per row plus 175), tagged ``Software: convbridge diff``.
    """
    rows = [*report.rows, report.output]
    lo, hi = _limits(rows)
    first = report.first_divergent
    with style_context(STYLE):
        labels = [_label(row) for row in rows]
        fig, ax = _figure(labels)
        _bars(ax, rows, lo, hi)
        _axes(ax, rows, labels, lo, hi)
        for y, (tick, row) in enumerate(zip(ax.get_yticklabels(), rows)):
            if row.divergent or row.verdict == "mismatch":
                tick.set_color(_COLOURS["mismatch"])
            if row is first:
                tick.set_fontweight("bold")
                ax.axhspan(y - 0.5, y + 0.5, color=_FIRST, alpha=0.25, zorder=0)
        # figure texts at fixed places: placing an Axes title or label measures every tick label (half the time)
        height = fig.get_figheight()
        fig.text(0.5, 1 - 0.12 / height, shorten(f"{report.model_a} vs {report.model_b}: {report.verdict}", 90),
                 ha="center", va="top", fontsize=10)
        fig.text(0.5, 0.62 / height, "r = max |y_a - y_b| / (u G), log scale (0: bitwise identical)",
                 ha="center", va="center", fontsize=9)
        _legend(fig, rows)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", metadata={"Software": PNG_TAG})
    return buf.getvalue()
