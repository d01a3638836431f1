"""Write the figures and the self-contained HTML report of an experiment into a folder, safely.

``index.html`` stands alone and makes no request: the figures are ``data:`` URIs, and the interactive view
(:mod:`convbridge.viz.interactive`: pick an image and a channel, hover a pixel) carries its data and its script
inline; with scripts off the figures remain. Wide tables scroll inside their own box on a narrow screen.

- A folder convbridge wrote is recognised by its marker file (``.convbridge-report.json``),
  which lists each file it wrote with its SHA-256. ``--out`` (and ``explain --draw``) accept a
  new folder, an empty one, or one with a marker; any other folder is refused.
- Only files convbridge wrote are ever replaced or removed: a file is convbridge's if the
  marker lists it and its content still has the listed hash. A file of the same name that is
  not (a user's ``index.html``, a figure edited since) stops the run before any work.
- Everything is written into a temporary folder beside the target first. A new target then
  receives it in one rename; an existing one gets its files one by one (its own stale files
  removed, anything else kept), the marker last. A failure or Ctrl-C never leaves a
  half-written report.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from convbridge import interrupts
from convbridge.errors import ConvBridgeError

if TYPE_CHECKING:
    from convbridge.experiment import ExperimentResult

__all__ = ["OutputError", "check_out_dir", "write_folder", "write_report", "strict_json", "FIGURES", "MARKER",
           "REPORT_FILES"]

#: The file that marks a folder as convbridge's (and lists the files it wrote, with their SHA-256).
MARKER = ".convbridge-report.json"
_MARKER_VERSION = 2

#: File name -> what the figure shows.
FIGURES = {
    "side_by_side.png": "Output channel {c} of image {i}, from each framework, side by side",
    "first_images.png": "Output channel {c} of the first 5 images, one row per framework",
    "abs_diff.png": "|{a} - {b}| on channel {c} of image {i}",
    "bound_ratio.png": "Bound ratio r = |{a} - reference| / (u G) on channel {c} of image {i} (line: allowed)",
    "inputs.png": "The input images with their class names",
    "filters.png": "The random filters",
}
#: Every file a report may write.
REPORT_FILES = (*FIGURES, "report.json", "index.html")


class OutputError(ConvBridgeError):
    """The output folder cannot be created or written, or holds files convbridge must not touch."""


def _digest(path: Path) -> str | None:
    """SHA-256 of a regular file (not a link), else None."""
    if path.is_symlink() or not path.is_file():
        return None
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _listed(folder: Path) -> dict[str, str] | None:
    """Name -> SHA-256 of the files the marker lists (plain names only), or None without a valid marker."""
    try:
        data = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: absurdly nested JSON
        return None
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(data, dict) or data.get("convbridge_report") != _MARKER_VERSION or not isinstance(files, dict):
        return None
    return {n: h for n, h in files.items()
            if isinstance(n, str) and isinstance(h, str) and n == Path(n).name and n not in (MARKER, "", ".", "..")}


def _ours(folder: Path, name: str, listed: Mapping[str, str]) -> bool:
    """Whether ``folder/name`` is a file convbridge wrote and nobody changed since."""
    return name in listed and _digest(folder / name) == listed[name]


def check_out_dir(out: str | Path, flag: str = "--out", will_write: Collection[str] = ()) -> Path:
    """Return ``out`` as an absolute Path if convbridge may write ``will_write`` into it; fail early otherwise.

    ``flag`` names the option in messages (``--out`` for reports, ``--draw`` for pictures).

    Raises:
        OutputError: an empty or over-long path, a file, a dangling link, a path under a file, a folder
            without a marker that holds anything, or a marked folder where one of ``will_write`` exists
            but is not convbridge's (see the module's docstring).
    """
    shown = repr(str(out))
    if not str(out).strip():
        raise OutputError(f"{flag} is empty; pass the folder to write into, e.g. {flag} "
                          f"{'convbridge-report' if flag == '--out' else 'pictures'}")
    path = Path(os.path.abspath(os.path.expanduser(out)))  # '.' and '..' resolved: the parent is a real parent
    if any(len(os.fsencode(part)) > 255 for part in path.parts) or len(os.fsencode(str(path))) > 4000:
        raise OutputError(f"{flag} {shown} has a name longer than the file system allows (255 bytes per name); "
                          "pass a shorter path")
    try:
        if path.is_symlink() and not path.exists():
            raise OutputError(f"{flag} {shown} is a symbolic link to nothing; pass a folder path")
        if path.exists() and not path.is_dir():
            raise OutputError(f"output path {shown} exists and is not a folder; pass {flag} with a folder path")
        if path.is_dir():
            _check_contents(path, shown, flag, will_write)
        for parent in path.parents:
            if parent.exists():
                if not parent.is_dir():
                    raise OutputError(f"output path {shown} lies under {str(parent)!r}, which is a file, "
                                      f"not a folder; pass {flag} with a folder path")
                break
    except OSError as exc:
        raise OutputError(f"cannot use {flag} {shown}: {exc.strerror or exc}; pass another folder") from None
    return path


def _check_contents(path: Path, shown: str, flag: str, will_write: Collection[str]) -> None:
    listed = _listed(path)
    if listed is None:
        others = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir())
        if MARKER in others:
            raise OutputError(f"{flag} {shown} holds a {MARKER} that this convbridge cannot read (from another "
                              "version, or edited); convbridge never deletes or overwrites what it cannot vouch "
                              "for: remove the folder yourself, or pass another")
        if others:
            names = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
            raise OutputError(f"{flag} {shown} is a folder that holds files convbridge did not write ({names}); "
                              "convbridge never deletes or overwrites them: pass a new or empty folder, or one "
                              "convbridge wrote before")
        return
    clash = [n for n in will_write if os.path.lexists(path / n) and not _ours(path, n, listed)]
    if clash:
        raise OutputError(f"{flag} {shown} holds {', '.join(clash)}, which convbridge did not write (or which "
                          "changed since it did); convbridge never overwrites them: move them away, or pass "
                          "another folder")


def write_folder(out: str | Path, fill: Callable[[Path], object], *, flag: str = "--out",
                 will_write: Collection[str] = ()) -> list[Path]:
    """Let ``fill(tmp)`` write files into a temporary folder, then move them into ``out``; return the final paths.

    ``out`` must pass :func:`check_out_dir` (for ``will_write`` before the work, for what ``fill`` wrote
    after it). The files land all at once (see the module's docstring); a failure or Ctrl-C inside
    ``fill`` leaves ``out`` as it was.
    """
    target = check_out_dir(out, flag, will_write)
    home = Path(os.path.realpath(target)).parent if target.exists() else target.parent
    try:
        home.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".convbridge-tmp-", dir=home))
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the output is an ordinary folder
    except OSError as exc:
        raise OutputError(f"cannot create the output folder {str(out)!r}: {exc.strerror}; "
                          f"pass {flag} with a writable folder path") from None
    with interrupts.cleanup_on_interrupt(tmp):
        try:
            fill(tmp)
            names = sorted(p.name for p in tmp.iterdir())
            digests = {name: _digest(tmp / name) or "" for name in names}
            marker = {"convbridge_report": _MARKER_VERSION, "files": digests}
            (tmp / MARKER).write_text(json.dumps(marker, indent=1))
            with interrupts.critical():
                _move_into_place(tmp, target, digests, flag, str(out))
        except OSError as exc:
            raise OutputError(f"cannot write into {flag} {str(out)!r}: {exc.strerror or exc}") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return [Path(os.path.expanduser(out)) / name for name in names]


def write_report(result: ExperimentResult, out: str | Path, *, plots: bool = True,
                 extra: Mapping[str, Any] | None = None) -> list[Path]:
    """Write figures, ``report.json`` and ``index.html`` for ``result`` into ``out``; return the final paths."""
    def fill(tmp: Path) -> None:
        figures = _figures(result, tmp) if plots else {}
        summary = dict(extra or {})
        (tmp / "report.json").write_text(strict_json(summary, indent=2))
        (tmp / "index.html").write_text(_html(result, figures, summary, tmp))

    return write_folder(out, fill, will_write=REPORT_FILES)


def _move_into_place(tmp: Path, target: Path, digests: Mapping[str, str], flag: str, shown: str) -> None:
    """A new target: one rename. An existing one: its files one by one, its own stale ones removed, marker last."""
    check_out_dir(shown, flag, will_write=digests)  # nothing of the user's may have appeared meanwhile
    if not os.path.lexists(target):
        tmp.rename(target)
        return
    listed = _listed(target) or {}
    stale = [name for name in listed if name not in digests and _ours(target, name, listed)]
    for name in digests:
        os.replace(tmp / name, target / name)
    for name in stale:
        (target / name).unlink(missing_ok=True)
    os.replace(tmp / MARKER, target / MARKER)


def strict_json(data: object, **kwargs: Any) -> str:
    """JSON that strict parsers accept: NaN and infinities become the strings ``"nan"``, ``"inf"``, ``"-inf"``.

    >>> strict_json({"r": float("inf"), "v": [float("nan"), 1.5]})
    '{"r": "inf", "v": ["nan", 1.5]}'
    """
    return json.dumps(_finite(data), allow_nan=False, default=_json_default, **kwargs)


def _finite(o: object) -> object:
    if isinstance(o, float) and not np.isfinite(o):
        return "nan" if np.isnan(o) else ("inf" if o > 0 else "-inf")
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    if isinstance(o, np.generic):
        return _finite(o.item())
    return o


def _json_default(o: object) -> object:
    if isinstance(o, np.ndarray):
        return _finite(o.tolist())
    return str(o)


def _figures(result: ExperimentResult, folder: Path) -> dict[str, str]:
    with np.errstate(all="ignore"):  # outputs that overflowed to inf are drawn, not warned about
        return _draw_figures(result, folder)


def _draw_figures(result: ExperimentResult, folder: Path) -> dict[str, str]:
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


# Narrow screens: the page never scrolls sideways; a wide table scrolls inside its own box (.scroll), pictures
# shrink to the width, long words (file paths, array reprs) break.
_CSS = """*{box-sizing:border-box}
body{background:#111;color:#ddd;font-family:system-ui,sans-serif;max-width:1180px;margin:2em auto;padding:0 1em;
overflow-wrap:break-word}
.scroll{overflow-x:auto;max-width:100%;margin:1em 0}table{border-collapse:collapse}
td,th{border:1px solid #444;padding:4px 8px;text-align:left;vertical-align:top}
.pairs td:last-child{overflow-wrap:anywhere}.wide td{white-space:nowrap}
.wide td:first-child,.wide td.text{white-space:normal}.wide td.text{min-width:12em}
th{background:#222}.identical,.equivalent{color:#6d6}.mismatch{color:#f66}.inconclusive{color:#fc6}
img{max-width:100%;height:auto;background:#000}figure{margin:1.5em 0}
code,pre{background:#1b1b1b;padding:2px 4px}p code{overflow-wrap:anywhere}.note{color:#bbb;font-size:.9em}"""


def _table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    """A table in a box of its own that scrolls sideways when the table is wider than the screen.

    A name-value table (two columns) wraps its values to the width instead; a wider one keeps each cell on one
    line (no number broken at its exponent's minus sign) but for its ``evidence`` column, which wraps.
    """
    kind = "pairs" if len(header) == 2 else "wide"
    cls = ['' if h != "evidence" else ' class="text"' for h in header]
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td{c}>{html.escape(str(v))}</td>" for c, v in zip(cls, r)) + "</tr>"
                   for r in rows)
    return f'<div class="scroll"><table class="{kind}"><tr>{head}</tr>{body}</table></div>'


def _explorer(result: ExperimentResult) -> str:
    """The interactive view (:mod:`convbridge.viz.interactive`) of the result's outputs."""
    from convbridge.viz import interactive

    rep, cfg = result.report, result.config
    outs = result.outputs_nchw
    names = list(cfg.backends)
    terms = rep.terms if rep.term_map is None else rep.term_map
    with np.errstate(all="ignore"):
        return interactive.section(
            {n: outs[n] for n in names}, outs["reference"], result.to_nchw(rep.gauge),
            result.to_nchw(np.asarray(terms)), {n: rep.pair(n, "reference").unit_roundoff for n in names},
            {n: result.allowed_nchw(n) for n in names},
            [result.dataset.class_names[k] for k in result.dataset.labels], (cfg.image_index, cfg.channel))


def _explorer_css(figures: Mapping[str, str]) -> str:
    if not figures:
        return ""
    from convbridge.viz.interactive import CSS

    return CSS


def _html(result: ExperimentResult, figures: Mapping[str, str], summary: Mapping[str, Any], folder: Path) -> str:
    rep = result.report
    facts = [(k, v) for k, v in summary.get("facts", {}).items()]
    pairs = [(f"{p.a} vs {p.b}", f"{p.max_abs:.3g}", f"{p.max_rel:.3g}", p.array_equiv, f"{p.max_ratio:.3g}",
              f"{p.threshold_ratio:.4g}", f"{p.allowed_ratio:.4g}", p.worst_index if p.max_ratio else "-", p.label,
              p.evidence or p.reason) for p in rep.pairs]
    verdict = summary.get("verdict", rep.verdict)
    label = summary.get("verdict_label", rep.verdict_label if verdict == rep.verdict else verdict)
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width,initial-scale=1">',
        "<title>convbridge compare report</title>",
        f"<style>{_CSS}\n{_explorer_css(figures)}</style></head><body>",
        "<h1>convbridge compare</h1>",
        f"<p>Data: {html.escape(result.dataset.source)}. Filters: <code>{html.escape(result.kernel_source)}</code>.</p>",
        f'<p>Verdict: <b class="{verdict}">{html.escape(label)}</b> &mdash; {html.escape(rep.description)}; '
        f"K &le; {rep.terms} terms per element, unit roundoff u = {rep.unit_roundoff:.3g}.</p>",
        "<h2>Facts</h2>", _table(facts, ("quantity", "value")),
        "<h2>Rounding-bound check</h2>",
        _table(pairs, ("pair", "max abs", "max rel", "array_equiv", "max r", "equivalent below", "mismatch above",
                       "worst index", "verdict", "evidence")),
        "<p>r = |a - b| / (u G) with G = conv(|x|, |w|) + |b|, per element. Below the probabilistic threshold "
        "(Higham &amp; Mary 2019) a difference is rounding; above the rigorous bound (Higham, Lemma 3.1, with each "
        "element's own term count and an underflow term) it is proven to be a bug; in between, a re-run in float64 "
        "or on exact integer data decides. A semantic bug gives r of order 1/u.</p>",
        _table([(k, v) for k, v in rep.precisions.items()], ("result", "precision used")),
    ]
    if result.exact is not None:
        parts += ["<h2>Exact mode</h2>", "<p>The same conv on integer data of the same shapes, thinned so that every "
                  "partial sum is exact in the dtype: any difference is a bug.</p>",
                  _table([(f"{p.a} vs {p.b}", p.n_different, p.verdict, p.evidence) for p in result.exact.pairs],
                         ("pair", "elements that differ", "verdict", "evidence"))]
    if summary.get("all"):
        agg = summary["all"]
        parts += ["<h2>Whole split</h2>", _table(
            [(k, f"{v['max_ratio']:.3g}", f"{v['allowed_ratio']:.4g}", v["non_identical_elements"], v["verdict"])
             for k, v in agg["pairs"].items()], ("pair", "worst r", "allowed r", "non-identical elements", "verdict")),
            _table([(k, f"{v:.3f} s") for k, v in agg["seconds_per_backend"].items()], ("backend", "conv time"))]
    if figures:  # the interactive view comes with the pictures (--no-plots: neither)
        parts += [_explorer(result), "<h2>Figures</h2>"]
    for name, caption in figures.items():
        parts.append(f"<figure>{_img(folder / name)}<figcaption>{html.escape(caption)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)
