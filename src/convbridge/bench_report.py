"""The benchmark's results as data, tables, Markdown and JSON, and the output files ``convbridge bench``
writes (checked before any work, written to a temporary file and renamed into place; only a file that
``convbridge bench`` wrote itself is ever replaced). The figure is :func:`convbridge.viz.bench.plot`."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from convbridge.bench import AUTO, BASELINE, FORMAT, SUSPECT, CaseResult, Measurement, SuiteResult, auto_algorithm

__all__ = ["to_dict", "header", "case_title", "case_rows", "declined_lines", "summary_columns", "summary_rows",
           "describe_choice", "print_tables", "markdown", "check_output", "write_output", "write_json",
           "write_markdown", "CASE_COLUMNS", "PNG_TAG"]


# ------------------------------------------------------------------------------------------ results as data

def _ms(seconds: float | None) -> float | None:
    return None if seconds is None or not math.isfinite(seconds) else seconds * 1e3


def _numbers(res: CaseResult, m: Measurement, peak: float) -> dict[str, Any]:
    """A measurement's numbers: times in ms, GFLOP/s, % of the GEMM peak, ratios to the best."""
    if m.status != "ok":
        return {}
    med, (q1, q3) = m.median, m.quartiles()
    best, own = res.best(), res.best(m.method.backend)
    return {"median_ms": _ms(med), "q1_ms": _ms(q1), "q3_ms": _ms(q3), "min_ms": _ms(min(m.times)),
            "max_ms": _ms(max(m.times)), "calls": len(m.times), "first_call_ms": _ms(m.first),
            "gflops": res.flops / med / 1e9, "peak_pct": 100.0 * res.flops / med / peak if peak else None,
            "ratio_best": med / best.median if best else None, "ratio_backend_best": med / own.median if own else None,
            "times_ms": [t * 1e3 for t in m.times]}


def _auto_measurement(res: CaseResult, backend: str) -> Measurement | None:
    return next((m for m in res.ok(backend) if m.method.kind == AUTO), None)


def _summary(res: CaseResult) -> dict[str, Any]:
    """The issue's targets for one case: the best method, and per framework the best hand-written call, the
    best method on that backend, and auto against both."""
    best = res.best()
    out: dict[str, Any] = {"best": None if best is None else f"{best.method.backend} {best.method.label}",
                           "best_ms": _ms(best.median) if best else None}
    for b in ("torch", "jax"):
        hand, top, auto = res.best(b, BASELINE), res.best(b), _auto_measurement(res, b)
        out[b] = {"baseline": hand.method.label if hand else None, "baseline_ms": _ms(hand.median) if hand else None,
                  "backend_best": top.method.label if top else None, "backend_best_ms": _ms(top.median) if top else None,
                  "auto_algorithm": auto_algorithm(res, b),
                  "auto_ms": _ms(auto.median) if auto else None,
                  "auto_vs_baseline": auto.median / hand.median if auto and hand else None,
                  "auto_vs_backend_best": auto.median / top.median if auto and top else None,
                  "auto_vs_best": auto.median / best.median if auto and best else None}
    return out


def to_dict(result: SuiteResult) -> dict[str, Any]:
    """Every number of the run as plain data (what the JSON file holds)."""
    peak = float(result.peak.get("flops", 0.0))
    cases = []
    for res in result.cases:
        c = res.case
        rows = [{"method": m.method.label, "backend": m.method.backend, "kind": m.method.kind,
                 "algorithm": m.method.algorithm, "status": m.status, "note": m.note, "model_ms": _ms(m.model),
                 "error": m.error, "verdict": m.verdict, "verdict_ratio": m.ratio, **_numbers(res, m, peak)}
                for m in res.measurements]
        cases.append({"name": c.name, "title": c.title, "op": c.op, "x": list(c.x), "w": list(c.w),
                      "kwargs": dict(c.kwargs), "out": list(res.out_shape), "gflop": res.flops / 1e9,
                      "error_reference": res.reference, "auto": res.auto, "jax_devices": res.jax_devices,
                      "summary": _summary(res), "results": rows})
    return {FORMAT[0]: FORMAT[1], "partial": result.partial, "seconds": result.seconds, "machine": result.machine,
            "peak": result.peak, "settings": result.settings, "cases": cases}


# ----------------------------------------------------------------------------------------------- tables

def _fmt(v: float | None, spec: str = ".3g", suffix: str = "") -> str:
    return "-" if v is None or not math.isfinite(v) else f"{v:{spec}}{suffix}"


def _note(m: Measurement, width: int | None) -> str:
    text = m.note if m.status == "ok" else f"{m.status}: {m.note}"
    if m.error is not None and m.error > SUSPECT:
        text = f"WRONG? rel. diff {m.error:.2g} to the reference; {text}".rstrip("; ")
    text = " ".join(text.split())
    return text if width is None or len(text) <= width else text[:width - 1] + "…"


CASE_COLUMNS = ("backend", "method", "median ms", "IQR", "GFLOP/s", "% peak", "x best", "x backend", "rel. diff",
                "verdict (r/allowed)", "note")


def _verdict(m: Measurement) -> str:
    """``equivalent (0.012)``: the verdict against the float64 reference and the worst r / allowed ('' when the
    run did not judge)."""
    if m.verdict is None:
        return ""
    return m.verdict if m.ratio is None else f"{m.verdict} ({m.ratio:.2g})"


def case_rows(res: CaseResult, peak: float, width: int | None = 60) -> list[list[str]]:
    """One row per method that was timed, skipped or failed, in :data:`CASE_COLUMNS` (notes cut to ``width``
    characters); the declined ones are in :func:`declined_lines`."""
    rows = []
    for m in res.measurements:
        if m.status == "declined":
            continue
        n = _numbers(res, m, peak)
        spread = f"±{50 * (n['q3_ms'] - n['q1_ms']) / n['median_ms']:.0f}%" if n else ""
        rows.append([m.method.backend, m.method.label, _fmt(n.get("median_ms")), spread, _fmt(n.get("gflops"), ".1f"),
                     _fmt(n.get("peak_pct"), ".0f", "%"), _fmt(n.get("ratio_best"), ".2f"),
                     _fmt(n.get("ratio_backend_best"), ".2f"), _fmt(m.error, ".1e"), _verdict(m), _note(m, width)])
    return rows


def declined_lines(res: CaseResult) -> list[str]:
    """The methods that declined the case, one line per method and reason (the backends that gave it joined)."""
    reasons: dict[tuple[str, str], list[str]] = {}
    for m in res.measurements:
        if m.status == "declined":
            reasons.setdefault((m.method.label, " ".join(m.note.split())), []).append(m.method.backend)
    return [f"declined: {label} on {', '.join(names)}: {note}" for (label, note), names in reasons.items()]


def describe_choice(choice: Mapping[str, Any]) -> str:
    """auto's choice in words: ``matmul (measured)``, and on jax what it runs under jit when that differs."""
    if not choice.get("algorithm"):
        return str(choice.get("note", "-"))
    text = f"{choice['algorithm']} ({choice.get('source')})"
    jit = choice.get("under_jit")
    if jit and jit.get("algorithm") != choice.get("algorithm"):
        text += f", under jit {jit.get('algorithm')} ({jit.get('source')})"
    return text


def case_title(res: CaseResult) -> str:
    auto = "; ".join(f"{b}: {describe_choice(v)}" for b, v in res.auto.items())
    return (f"{res.case.name}: {res.case.title}; {res.case.describe()} -> {res.out_shape}, "
            f"{res.flops / 1e9:.3g} GFLOP" + (f"; auto chose {auto}" if auto else ""))


def _frameworks(result: SuiteResult) -> list[str]:
    return [b for b in ("torch", "jax") if b in result.settings.get("backends", ())]


def summary_columns(result: SuiteResult) -> list[str]:
    """The summary's columns: the best method, then per framework run its hand-written call, auto, the ratios."""
    cols = ["shape", "best ms"]
    for b in _frameworks(result):
        cols += [f"{b} by hand", f"{b} auto", f"auto / hand, / best {b}"]
    return cols


def summary_rows(result: SuiteResult) -> list[list[str]]:
    """One row per case, in :func:`summary_columns`."""
    rows = []
    for res in result.cases:
        s = _summary(res)
        row = [res.case.name, f"{_fmt(s['best_ms'])} {s['best'] or ''}".strip()]
        for b in _frameworks(result):
            v = s[b]
            row += [f"{_fmt(v['baseline_ms'])} {v['baseline'] or ''}".strip(),
                    f"{_fmt(v['auto_ms'])} {v['auto_algorithm'] or ''}".strip(),
                    f"{_fmt(v['auto_vs_baseline'], '.2f')}, {_fmt(v['auto_vs_backend_best'], '.2f')}"]
        rows.append(row)
    return rows


def header(result: SuiteResult) -> list[str]:
    """The lines above the tables: machine, GEMM peak, settings, and whether the run is partial."""
    m, p, s = result.machine, result.peak, result.settings
    lines = [f"machine: {m.get('processor')}, {m.get('cpus')} CPUs, {m.get('platform')}; numpy {m.get('numpy')}"
             + "".join(f", {k} {m[k]}" for k in ("torch", "jax") if k in m)
             + (f", torch threads {m['torch_threads']}" if "torch_threads" in m else "")]
    if p:
        rates = ", ".join(f"{k} {v / 1e9:.0f}" for k, v in p["rates"].items())
        when = ", the faster of the start and the end" if p.get("runs") == 2 else ""
        lines.append(f"float32 GEMM peak {p['flops'] / 1e9:.0f} GFLOP/s ({p['by']}, {p['n']}x{p['n']}{when}; {rates})")
    least = min(s["min_calls"], s["repeats"])
    lines.append(f"timing: 1 warm-up, then {least}..{s['repeats']} calls up to ~{s['target_seconds']} s; "
                 f"median, ± half the interquartile range; budget {s['budget_s']:g} s per call by the cost model"
                 + ("; auto measured (--tune)" if s["tune"] else ""))
    if result.partial:
        lines.append(f"PARTIAL: interrupted after {len(result.cases)} case(s); the last may be incomplete")
    return lines


def print_tables(result: SuiteResult, console: Any) -> None:
    """Print the run with rich: the header, one table per case, then the summary table."""
    from rich.table import Table

    for line in header(result):
        console.print(line, markup=False, highlight=False)
    peak = float(result.peak.get("flops", 0.0))
    for res in result.cases:
        t = Table(title=case_title(res), title_justify="left")
        for col in CASE_COLUMNS:
            t.add_column(col, justify="right" if col not in ("backend", "method", "note") else "left")
        for row in case_rows(res, peak):
            t.add_row(*row)
        console.print(t)
        for line in declined_lines(res):
            console.print(f"  {line}", markup=False, highlight=False)
    t = Table(title="Summary: median ms; ratios of auto's time (<= 1.0 meets the target against the hand-written "
                    "call)", title_justify="left")
    for col in summary_columns(result):
        t.add_column(col)
    for row in summary_rows(result):
        t.add_row(*row)
    console.print(t)


def markdown(result: SuiteResult) -> str:
    """The run as Markdown: the header, the summary table, then one table per case (for an issue's closing note)."""
    def table(cols: Sequence[str], rows: list[list[str]]) -> list[str]:
        esc = [[c.replace("|", "\\|") for c in r] for r in rows]
        return ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols), *("| " + " | ".join(r) + " |" for r in esc)]

    peak = float(result.peak.get("flops", 0.0))
    out = [_MD_TAG, "", *(f"- {line}" for line in header(result)), "",
           *table(summary_columns(result), summary_rows(result))]
    for res in result.cases:
        out += ["", f"**{case_title(res)}**", "", *table(CASE_COLUMNS, case_rows(res, peak, width=None))]
        out += ["", *(f"- {line}" for line in declined_lines(res))] if declined_lines(res) else []
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------ output files

_MD_TAG = "<!-- written by convbridge bench -->"
PNG_TAG = "convbridge bench"
_KINDS = {"--json": ("JSON", "bench.json"), "--plot": ("PNG", "bench.png"), "--markdown": ("Markdown", "bench.md")}


def _ours(path: os.PathLike[str], flag: str) -> bool:
    """Whether ``path`` is a file ``convbridge bench`` wrote (its JSON key, its PNG tag, its Markdown tag)."""
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16) if flag != "--json" else f.read()
    except OSError:
        return False
    if flag == "--plot":
        return head.startswith(b"\x89PNG\r\n\x1a\n") and b"Software\x00" + PNG_TAG.encode() in head
    if flag == "--markdown":
        return head.startswith(_MD_TAG.encode())
    import json

    try:
        data = json.loads(head)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return False
    return isinstance(data, dict) and FORMAT[0] in data


def check_output(path: str | os.PathLike[str], flag: str) -> Any:
    """The absolute path if ``convbridge bench`` may write its ``flag`` file there: a new file, or one it wrote
    before. Checked before any work; anything else (a folder, a link, a file of the user's) is refused.

    Raises:
        OutputError: with what is wrong and what to pass instead.
    """
    from pathlib import Path

    from convbridge.reportdir import OutputError

    shown, (kind, example) = repr(str(path)), _KINDS[flag]
    if not str(path).strip():
        raise OutputError(f"{flag} is empty; pass the {kind} file to write, e.g. {flag} {example}")
    if str(path).strip() == "-":
        raise OutputError(f"{flag} - would write a file named '-'; for the JSON report on stdout use --format json, "
                          f"else pass a file path, e.g. {flag} {example}")
    target = Path(os.path.abspath(os.path.expanduser(path)))
    too_long = [part for part in target.parts if len(os.fsencode(part)) > 255]
    if too_long:
        raise OutputError(f"{flag} {shown} has a name longer than the file system allows (255 bytes): "
                          f"{too_long[0][:40]!r}...; pass a shorter path")
    if target.is_symlink():
        raise OutputError(f"{flag} {shown} is a symbolic link; convbridge writes a plain file: pass another path")
    if target.is_dir():
        raise OutputError(f"{flag} {shown} is a folder; pass a file path inside it, e.g. {str(target / example)!r}")
    if target.exists() and not _ours(target, flag):
        raise OutputError(f"{flag} {shown} is a file convbridge bench did not write; convbridge never overwrites "
                          f"it: remove it yourself, or pass another path")
    for parent in target.parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputError(f"{flag} {shown} lies under {str(parent)!r}, which is a file, not a folder")
            break
    return target


def write_output(path: str | os.PathLike[str], flag: str, write: Callable[[Any], object]) -> Any:
    """``write(tmp)`` into a temporary file beside ``path``, then rename it into place (checked again just
    before); Ctrl-C or a failure leaves ``path`` as it was and no temporary file behind."""
    import tempfile
    from pathlib import Path

    from convbridge import interrupts
    from convbridge.reportdir import OutputError

    target = check_output(path, flag)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise OutputError(f"cannot write {flag} {str(path)!r}: {exc.strerror or exc}") from None
    os.close(fd)
    tmp = Path(name)
    with interrupts.cleanup_on_interrupt(tmp):
        try:
            umask = os.umask(0)
            os.umask(umask)
            tmp.chmod(0o666 & ~umask)  # mkstemp makes it private; the result is an ordinary file
            write(tmp)
            with interrupts.critical():
                check_output(path, flag)  # nothing of the user's appeared meanwhile
                os.replace(tmp, target)
        except OSError as exc:
            raise OutputError(f"cannot write {flag} {str(path)!r}: {exc.strerror or exc}") from None
        finally:
            tmp.unlink(missing_ok=True)
    return target


def write_json(result: SuiteResult, path: str | os.PathLike[str]) -> Any:
    """Write :func:`to_dict` as strict JSON (non-finite numbers as strings) to ``path``, safely."""
    from convbridge.reportdir import strict_json

    text = strict_json(to_dict(result), indent=1)
    return write_output(path, "--json", lambda tmp: tmp.write_text(text))


def write_markdown(result: SuiteResult, path: str | os.PathLike[str]) -> Any:
    """Write :func:`markdown` to ``path``, safely."""
    text = markdown(result)
    return write_output(path, "--markdown", lambda tmp: tmp.write_text(text))
