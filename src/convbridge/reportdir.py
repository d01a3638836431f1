"""Write the figures and the self-contained HTML report of an experiment into a folder, atomically.

Everything goes into a temporary folder beside the target, which is renamed
into place only when complete: a failure never leaves a half-written report.
"""

from __future__ import annotations

import base64
import html
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from convbridge.errors import ConvBridgeError

if TYPE_CHECKING:
    from convbridge.experiment import ExperimentResult

__all__ = ["OutputError", "check_out_dir", "write_report", "FIGURES"]

#: File name -> what the figure shows.
FIGURES = {
    "side_by_side.png": "Output channel {c} of image {i}, from each framework, side by side",
    "first_images.png": "Output channel {c} of the first 5 images, one row per framework",
    "abs_diff.png": "|{a} - {b}| on channel {c} of image {i}",
    "bound_ratio.png": "Bound ratio r = |{a} - reference| / (u G) on channel {c} of image {i} (line: allowed)",
    "inputs.png": "The input images with their class names",
    "filters.png": "The random filters",
}


class OutputError(ConvBridgeError):
    """The output folder cannot be created or written."""


def check_out_dir(out: str | Path) -> Path:
    """Return ``out`` as a Path if it is, or can become, a folder; fail early otherwise."""
    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise OutputError(f"output path {str(path)!r} exists and is not a folder; pass --out with a folder path")
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputError(f"output path {str(path)!r} lies under {str(parent)!r}, which is a file, "
                                  "not a folder; pass --out with a folder path")
            break
    return path


def write_report(result: ExperimentResult, out: str | Path, *, plots: bool = True,
                 extra: Mapping[str, Any] | None = None) -> list[Path]:
    """Write figures, ``report.json`` and ``index.html`` for ``result`` into ``out``; return the final paths."""
    target = check_out_dir(out)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the report is an ordinary folder
    except OSError as exc:
        raise OutputError(f"cannot create the output folder {str(target)!r}: {exc.strerror}; "
                          "pass --out with a writable folder path") from None
    try:
        figures = _figures(result, tmp) if plots else {}
        summary = dict(extra or {})
        (tmp / "report.json").write_text(json.dumps(summary, indent=2, default=_json_default))
        (tmp / "index.html").write_text(_html(result, figures, summary, tmp))
        _replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return sorted(target / p.name for p in target.iterdir())


def _replace(tmp: Path, target: Path) -> None:
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{tmp.name[-8:]}")
        target.rename(old)
    tmp.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _json_default(o: object) -> object:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _figures(result: ExperimentResult, folder: Path) -> dict[str, str]:
    from convbridge.viz import figures as fig

    cfg = result.config
    i, c = cfg.image_index, cfg.channel
    outs = result.outputs_nchw
    names = list(cfg.backends)
    a, b = (names + ["reference"])[:2]
    labels = [result.dataset.class_names[k] for k in result.dataset.labels]
    captions = {k: v.format(i=i, c=c, a=a, b=b) for k, v in FIGURES.items()}
    fig.side_by_side({n: outs[n][i, c] for n in names}, captions["side_by_side.png"], folder / "side_by_side.png")
    fig.rows({n: outs[n][:5, c] for n in names}, labels[:5], captions["first_images.png"], folder / "first_images.png")
    diff = np.abs(outs[a][i, c].astype(np.float64) - outs[b][i, c].astype(np.float64))
    fig.heatmap(diff, captions["abs_diff.png"], folder / "abs_diff.png", label="absolute difference")
    pair = result.report.pair(a, "reference")
    ratio = result.ratio_nchw(a)[i, c]
    fig.heatmap(ratio, captions["bound_ratio.png"], folder / "bound_ratio.png", label="r (log scale)",
                log=True, limit=pair.allowed_ratio)
    fig.input_grid(result.dataset.images, labels, f"{captions['inputs.png']} ({result.dataset.source})",
                   folder / "inputs.png")
    fig.filters(result.kernel, f"{captions['filters.png']}: {result.kernel_source}", folder / "filters.png")
    return captions


def _img(folder_file: Path) -> str:
    data = base64.b64encode(folder_file.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(folder_file.name)}" src="data:image/png;base64,{data}">'


_CSS = """body{background:#111;color:#ddd;font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #444;padding:4px 8px;text-align:left}
th{background:#222}.identical,.equivalent{color:#6d6}.mismatch{color:#f66}.inconclusive{color:#fc6}
img{max-width:100%;background:#000}figure{margin:1.5em 0}code,pre{background:#1b1b1b;padding:2px 4px}"""


def _table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _html(result: ExperimentResult, figures: Mapping[str, str], summary: Mapping[str, Any], folder: Path) -> str:
    rep = result.report
    facts = [(k, v) for k, v in summary.get("facts", {}).items()]
    pairs = [(f"{p.a} vs {p.b}", f"{p.max_abs:.3g}", f"{p.max_rel:.3g}", p.array_equiv, f"{p.max_ratio:.3g}",
              f"{p.allowed_ratio:.4g}", p.worst_index if p.max_ratio else "-", p.verdict) for p in rep.pairs]
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        "<title>convbridge compare report</title>", f"<style>{_CSS}</style></head><body>",
        "<h1>convbridge compare</h1>",
        f"<p>Data: {html.escape(result.dataset.source)}. Filters: <code>{html.escape(result.kernel_source)}</code>.</p>",
        f'<p>Verdict: <b class="{rep.verdict}">{rep.verdict}</b> &mdash; {html.escape(rep.description)}; '
        f"K = {rep.terms} terms per element, unit roundoff u = {rep.unit_roundoff:.3g}.</p>",
        "<h2>Facts</h2>", _table(facts, ("quantity", "value")),
        "<h2>Rounding-bound check</h2>",
        _table(pairs, ("pair", "max abs", "max rel", "array_equiv", "max r", "allowed r", "worst index", "verdict")),
        "<p>r = |a - b| / (u G) with G = conv(|x|, |w|) + |b|; rounding alone keeps r at or below the allowed "
        "value (Higham 3.1); a semantic bug gives r of order 1/u.</p>",
        _table([(k, v) for k, v in rep.precisions.items()], ("result", "precision used")),
    ]
    if summary.get("all"):
        agg = summary["all"]
        parts += ["<h2>Whole split</h2>", _table(
            [(k, f"{v['max_ratio']:.3g}", f"{v['allowed_ratio']:.4g}", v["non_identical_elements"], v["verdict"])
             for k, v in agg["pairs"].items()], ("pair", "worst r", "allowed r", "non-identical elements", "verdict")),
            _table([(k, f"{v:.3f} s") for k, v in agg["seconds_per_backend"].items()], ("backend", "conv time"))]
    if figures:
        parts.append("<h2>Figures</h2>")
    for name, caption in figures.items():
        parts.append(f"<figure>{_img(folder / name)}<figcaption>{html.escape(caption)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)
