"""The benchmark's figure: every timed method's time over the best time for its shape."""

from __future__ import annotations

import math
import os
from typing import Any

from convbridge.bench import AUTO, BASELINE, SuiteResult
from convbridge.bench_report import PNG_TAG, write_output

__all__ = ["plot"]


def plot(result: SuiteResult, path: str | os.PathLike[str]) -> Any:
    """Draw every timed method's time / the case's best time (log scale), one row per case, into a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    cases = [r for r in result.cases if r.ok()]
    fig = Figure(figsize=(9.0, 1.6 + 0.42 * max(len(cases), 1)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colours, markers = {"torch": "tab:red", "jax": "tab:blue", "numpy": "tab:green"}, \
        {BASELINE: "o", "convbridge": "s", AUTO: "*"}
    for i, res in enumerate(cases):
        best = res.best()
        for m in res.ok():
            off = {"torch": -0.2, "jax": 0.0, "numpy": 0.2}[m.method.backend]
            ax.scatter(m.median / best.median if best else math.nan, i + off, c=colours[m.method.backend],
                       marker=markers[m.method.kind], s=90 if m.method.kind == AUTO else 28, alpha=0.8)
    ax.set_xscale("log")
    ax.set_yticks(range(len(cases)), [r.case.name for r in cases])
    ax.invert_yaxis()
    ax.axvline(1.0, color="grey", lw=0.8)
    ax.set_xlabel("time / best time for the shape (log)")
    handles = [Line2D([], [], ls="", marker="o", color=c, label=b) for b, c in colours.items()] + \
        [Line2D([], [], ls="", marker=mk, color="black", label=k) for k, mk in markers.items()]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    ax.set_title("convbridge bench: ratio to the best method per shape" + (" (partial)" if result.partial else ""))
    return write_output(path, "--plot", lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight",
                                                                 metadata={"Software": PNG_TAG}))
