"""Rendering a DiffReport: text, the rich table, the HTML fragment and page, the bar chart, saving the page.

Reports are built by hand (no framework runs here), so every expected string is read off the rows below.
"""

from __future__ import annotations

import base64
import io
import math
import os
import re
import shutil
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

from convbridge.divergence import render
from convbridge.divergence.report import DiffReport, DiffRow, GradRow
from convbridge.errors import ArgumentError, ArgumentTypeError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CAUSE = "padding: torch pads (1, 1), flax 'SAME' pads (0, 1)"
GLUE_CAUSE = "flatten order: NCHW vs NHWC before the classifier"


def _row(index: int, name: str, kind: str, verdict: str = "identical", r: float = 0.0, allowed: float = 0.0,
         **kw: object) -> DiffRow:
    kw.setdefault("input_verdict", "" if index == 0 else "agree")
    return DiffRow(index, name, name.replace(".", "/"), f"torch.nn.{kind}", f"flax.linen.{kind}", kind,
                   (2, 8, 16, 16), (2, 8, 16, 16), verdict, r, allowed, r * 1e-7, **kw)  # type: ignore[arg-type]


def _output(verdict: str = "equivalent", r: float = 3.0) -> DiffRow:
    return DiffRow(-1, "output", "output", "", "", "output", (2, 3, 16, 16), (2, 10), verdict, r, 90.0, r * 1e-7)


def _report(**changes: object) -> DiffReport:
    """Identical, equivalent, a mismatch with a cause, a glue failure, an inconclusive row; mismatching output."""
    rows = (
        _row(0, "conv1", "Conv2d", "identical"),
        _row(1, "bn1", "BatchNorm2d", "equivalent", 0.75, 4.0, bound="rigorous: 5 u per element"),
        _row(2, "layer1.0.conv1", "Conv2d", "mismatch", 3.2e5, 60.0, cause=CAUSE, evidence="float64 re-run: r 3.1e+05"),
        _row(3, "fc", "Linear", "equivalent", 2.0, 80.0, input_verdict="glue", input_max_abs=0.7,
             input_allowed=1e-4, glue_cause=GLUE_CAUSE),
        _row(4, "relu", "ReLU", "inconclusive", math.nan, 1.0),
    )
    grads = (GradRow("input", "input", (2, 3, 16, 16), "equivalent", 1e-7, 2e-6, 1e-15),
             GradRow("conv1.weight", "conv1/kernel", (8, 3, 3, 3), "mismatch", 0.5, 0.9, 0.9,
                     evidence="the float64 gradients differ too"))
    fields: dict[str, object] = {"model_a": "torch Net", "model_b": "flax.linen Net", "rows": rows,
                                 "output": _output("mismatch", math.inf), "unpaired_a": ("dropout",), "grads": grads,
                                 "notes": ("x converted NCHW -> NHWC",), "seconds": 0.25}
    fields.update(changes)
    return DiffReport(**fields)  # type: ignore[arg-type]


def _agreeing(n: int = 3) -> DiffReport:
    rows = tuple(_row(i, f"features.{i}", "Conv2d", "equivalent", 1.0 + i, 60.0) for i in range(n))
    return DiffReport("torch Net", "flax.linen Net", rows, _output())


def _big(n: int = 60) -> DiffReport:
    """A ResNet-18-sized report with one mismatch in the middle."""
    kinds = ("Conv2d", "BatchNorm2d", "ReLU")
    rows = [_row(i, f"layer{i // 15 + 1}.{i // 5 % 3}.{kinds[i % 3].lower()}{i}", kinds[i % 3], "equivalent",
                 0.5 + i / 10, 60.0) for i in range(n)]
    rows[n // 2] = _row(n // 2, rows[n // 2].name_a, "BatchNorm2d", "mismatch", 2.5e4, 4.0, cause="eps 1e-05 vs 0.001")
    return DiffReport("torch ResNet18", "flax.linen ResNet18", tuple(rows), _output("mismatch", 1e4))


# -------------------------------------------------------------------------------------------------- text

def test_text_names_the_first_divergent_layer_with_its_cause() -> None:
    report = _report()
    out = render.text(report)
    assert out.splitlines()[0] == "convbridge diff: torch Net (A) vs flax.linen Net (B)"
    assert "verdict: mismatch; 5 paired layers: 1 identical, 2 equivalent, 1 inconclusive, 1 mismatch; " \
           "1 glue difference; 0.25 s" in out
    flat = " ".join(out.split())  # prose is wrapped at 118 columns
    assert f"first divergent (#2): {' '.join(str(report.rows[2]).split())}" in flat
    assert f"likely cause: {CAUSE}" in flat
    assert [line.split()[0] for line in out.splitlines() if line.startswith(">")] == [">2"]  # only the first
    assert "#3 the input of fc" in flat and GLUE_CAUSE in flat and "GLUE" in out  # the glue row, listed under also
    assert "#4 relu" in flat  # inconclusive: listed under also
    assert "end to end (2x10): mismatch, r inf (allowed 90), max |d| inf" in flat
    assert "gradients:" in out and "conv1/kernel" in out and "the float64 gradients differ too" in flat
    assert "only in A (treated as glue): dropout" in out
    assert "note: x converted NCHW -> NHWC" in out


def test_text_columns_and_numbers() -> None:
    lines = render.text(_report()).splitlines()
    header = next(line for line in lines if line.startswith("#"))
    assert header.split() == ["#", "layer", "A", "layer", "B", "kind", "shape", "in->out", "verdict", "r",
                              "allowed", "input"]
    row = {line.split()[0]: line.split() for line in lines if re.match(r">?\d+ ", line)}
    assert row["0"] == ["0", "conv1", "conv1", "Conv2d", "2x8x16x16", "identical", "0", "0", "-"]
    assert row["1"] == ["1", "bn1", "bn1", "BatchNorm2d", "2x8x16x16", "equivalent", "0.75", "4", "agree"]
    assert row[">2"][5:] == ["mismatch", "3.2e+05", "60", "agree"]
    assert row["3"][-1] == "GLUE"
    assert row["4"][5:8] == ["inconclusive", "-", "1"]  # NaN reads "-"


@pytest.mark.parametrize("value, shown", [(0.000123456, "0.000123"), (123456.0, "1.23e+05"), (2.0, "2"),
                                          (math.inf, "inf"), (-math.inf, "-inf"), (math.nan, "-"), (None, "-")])
def test_numbers_have_three_significant_digits(value: float | None, shown: str) -> None:
    assert render.num(value) == shown


def test_every_layer_agrees() -> None:
    out = render.text(_agreeing())
    assert "every layer agrees" in out and "first divergent" not in out and "also:" not in out
    assert "verdict: equivalent; 3 paired layers: 3 equivalent; time not measured" in out
    assert not any(line.startswith(">") for line in out.splitlines())
    assert "\nno layer is proven to differ, but 1 is inconclusive\n" in render.text(_report(rows=_report().rows[4:]))


def test_long_names_are_shortened_in_the_middle_and_lines_stay_readable() -> None:
    name = "backbone." + "very_long_block_name." * 12 + "conv_final"
    report = _report(rows=(_row(0, name, "Conv2d", "mismatch", 1e6, 60.0, cause=CAUSE),),
                     model_a="torch " + "M" * 200)
    out = render.text(report)
    assert max(map(len, out.splitlines())) <= render.WIDTH
    line = next(line for line in out.splitlines() if line.startswith(">0"))
    shown = line.split()[1]
    assert shown.startswith("backbone.") and shown.endswith("nal") and "…" in shown and len(shown) < len(name)


@pytest.mark.parametrize("name, width, shown", [("abcdefghij", 10, "abcdefghij"), ("abcdefghij", 5, "ab…ij"),
                                                ("abcdefghij", 4, "a…ij"), ("abcdefghij", 1, "…"),
                                                ("a\nb\tc", 10, "a b c")])
def test_shorten(name: str, width: int, shown: str) -> None:
    assert render.shorten(name, width) == shown


def test_report_str_and_repr_html_use_the_renderers() -> None:
    report = _report()
    assert str(report) == render.text(report)
    assert report._repr_html_() == render.html_fragment(report)


# -------------------------------------------------------------------------------------------------- rich

def test_rich_table_renders_without_reading_markup() -> None:
    from rich.console import Console

    rows = (*_report().rows[:2], _row(2, "[bold]odd[/bold]", "Conv2d", "mismatch", 5e5, 60.0, cause=CAUSE))
    console = Console(file=io.StringIO(), width=120, color_system=None)
    console.print(render.table(_report(rows=rows)))
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert "[bold]odd[/bold]" in out  # a name is text, never rich markup
    assert "first divergent (#2)" in out and "end to end (2x10): mismatch" in out
    assert re.search(r">2 .*mismatch .*5e\+05 .*60", out)
    assert "torch Net (A) vs flax.linen Net (B)" in out


# -------------------------------------------------------------------------------------------------- html

def _no_chart(report: DiffReport) -> str:
    return ""


def test_html_escapes_every_name() -> None:
    evil = '<script>alert("x")</script>'
    report = _report(rows=(_row(0, evil, "Conv2d", "mismatch", 1e6, 60.0, cause="<b>&</b>"),),
                     model_a="torch <Net> & co", notes=("<img src=x>",), unpaired_b=("<i>",))
    for page in (render.html_fragment(report), render.html_page(report)):
        assert "<script" not in page.lower() and "<img src=x" not in page and "<i>" not in page
        assert "&lt;script&gt;" in page and "torch &lt;Net&gt; &amp; co" in page
        assert "&lt;b&gt;&amp;&lt;/b&gt;" in page and "&lt;img src=x&gt;" in page


def test_html_highlights_and_links_the_first_divergent_row() -> None:
    fragment = render.html_fragment(_report())
    link = re.search(r'<a href="#([\w-]+)">#2 layer1\.0\.conv1</a>', fragment)
    assert link is not None
    row = re.search(rf'<tr id="{link.group(1)}" class="([\w ]+)">(.*?)</tr>', fragment)
    assert row is not None and "first" in row.group(1).split()
    assert "layer1.<wbr>0.<wbr>conv1" in row.group(2) and CAUSE.replace("'", "&#x27;") in row.group(2)
    assert fragment.index(link.group(0)) < fragment.index("<table")  # linked from above the table
    assert fragment.count('class="first') == 1
    glue = re.search(r'<tr id="[\w-]+-row-3" class="bad">.*?</tr>', fragment)
    assert glue is not None and GLUE_CAUSE in glue.group(0)


def test_html_tables_scroll_instead_of_widening_the_page() -> None:
    fragment = render.html_fragment(_report())
    assert fragment.count("<table") == 2  # the layers and the gradients
    assert fragment.count('<div class="cb-scroll"><table') == 2
    assert ".cb-diff .cb-scroll{overflow-x:auto" in fragment


def test_html_ids_are_unique_per_report_and_rendering_is_deterministic() -> None:
    a, b = render.html_fragment(_report()), render.html_fragment(_report(seconds=0.5))
    assert a == render.html_fragment(_report())
    ids_a, ids_b = set(re.findall(r'id="([\w-]+)"', a)), set(re.findall(r'id="([\w-]+)"', b))
    assert len(ids_a) == len(re.findall(r'id="', a)) and not ids_a & ids_b


def _png_size(png: bytes) -> tuple[int, int]:
    assert png.startswith(PNG_SIGNATURE) and png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    assert zlib.crc32(png[12:29]) == struct.unpack(">I", png[29:33])[0]  # the header chunk is intact
    return width, height


def test_html_page_is_self_contained_with_the_chart() -> None:
    pytest.importorskip("matplotlib")
    report = _report()
    page = render.html_page(report)
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert '<meta name="viewport" content="width=device-width,initial-scale=1">' in page
    assert "<script" not in page and "<link" not in page and "@import" not in page and "url(" not in page
    assert re.findall(r'(?:src|href)="(?!#|data:image/png;base64,)', page) == []  # nothing fetched from outside
    img = re.search(r'<img alt="([^"]+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)">', page)
    assert img is not None and "first divergent: #2 layer1.0.conv1" in img.group(1)
    width, height = _png_size(base64.b64decode(img.group(2)))
    assert width == 900 and 20 * 6 < height < 20 * 6 + 400
    assert render.html_fragment(report).replace("\n</div>", "") in page  # the fragment, then the chart


def test_html_page_without_matplotlib_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")] or ["matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, "convbridge.viz.diff", raising=False)
    page = render.html_page(_report())
    assert "No chart: the bar chart needs matplotlib" in page and "convbridge[viz]" in page
    assert "<img" not in page  # the rest is there, without the chart
    assert '<a href="#' in page and "<table" in page


# -------------------------------------------------------------------------------------------------- chart

def test_bar_chart_is_a_png_that_grows_with_the_rows_and_shows_mismatches_in_red() -> None:
    pytest.importorskip("matplotlib")
    image = pytest.importorskip("PIL.Image")
    from convbridge.viz.diff import PNG_TAG, bar_chart

    bad, good = bar_chart(_report()), bar_chart(_agreeing(3))
    (w_bad, h_bad), (w_good, h_good) = _png_size(bad), _png_size(good)
    assert w_bad == w_good == 900 and h_bad > h_good > 100  # 6 rows (5 and the output) taller than 4
    assert b"Software\x00" + PNG_TAG.encode() in bad

    def colours(png: bytes) -> set[tuple[int, ...]]:
        with image.open(io.BytesIO(png)) as im:
            return {c for _, c in im.convert("RGB").getcolors(1 << 20)}

    red, green = (0xFF, 0x4D, 0x4D), (0x3C, 0xCF, 0x7A)  # the warning colour, the agreeing colour
    assert red in colours(bad) and green in colours(bad)
    assert red not in colours(good) and green in colours(good)


# -------------------------------------------------------------------------------------------------- saving

def test_save_html_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(render, "_chart", _no_chart)
    report = _report()
    path = tmp_path / "sub" / "diff.html"
    assert render.save_html(report, path) == path
    assert path.read_text(encoding="utf-8") == render.html_page(report)
    render.save_html(_agreeing(), str(path))  # an existing file is replaced
    assert "every layer agrees" in path.read_text(encoding="utf-8")
    assert sorted(os.listdir(path.parent)) == ["diff.html"]  # no temporary file left behind
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # an ordinary file, not mkstemp's private one


def test_save_html_refuses_what_is_not_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(render, "_chart", _no_chart)
    folder = tmp_path / "out"
    folder.mkdir()
    with pytest.raises(ArgumentError, match=r"'.*out' is a folder; pass the HTML file to write, e\.g\. '.*diff\.html'"):
        render.save_html(_report(), folder)
    with pytest.raises(ArgumentError, match="path is empty; pass the HTML file to write"):
        render.save_html(_report(), " ")
    with pytest.raises(ArgumentTypeError, match="path is a str or a pathlib.Path, got int 3"):
        render.save_html(_report(), 3)  # type: ignore[arg-type]
    link = tmp_path / "dangling.html"
    link.symlink_to(tmp_path / "nowhere")
    with pytest.raises(ArgumentError, match="exists and is not a regular file"):
        render.save_html(_report(), link)
    assert sorted(os.listdir(tmp_path)) == ["dangling.html", "out"] and os.listdir(folder) == []


# -------------------------------------------------------------------------------------------------- speed

def test_a_resnet_sized_report_renders_fast() -> None:
    """60 rows: text, the rich table, the fragment and the page with its chart in under 2 s of CPU time (matplotlib
    imported beforehand; CPU rather than wall time, so that a busy machine does not fail it)."""
    pytest.importorskip("matplotlib")
    from rich.console import Console

    import convbridge.viz.diff  # noqa: F401  (the import is not the rendering)

    report = _big(60)
    start = time.process_time()
    out = render.text(report)
    Console(file=io.StringIO(), width=120).print(render.table(report))
    render.html_fragment(report)
    page = render.html_page(report)
    seconds = time.process_time() - start
    assert seconds < 2.0, f"rendering 60 rows took {seconds:.2f} s of CPU"
    assert "first divergent (#30)" in out and max(map(len, out.splitlines())) <= render.WIDTH
    png = re.search(r'base64,([^"]+)"', page)
    assert png is not None
    width, height = _png_size(base64.b64decode(png.group(1)))
    assert width == 900 and height >= 61 * 20  # every row keeps 20 pixels: labels stay legible


_PROBE = """<script>document.documentElement.style.width = "390px"; var out = [];
document.querySelectorAll("body *").forEach(function (e) {
  if (e.parentElement.closest(".cb-scroll, .cb-chart")) return;  // inside a scrolling table or chart box
  var r = e.getBoundingClientRect(); if (r.right > 390.5) out.push(e.tagName + ":" + Math.round(r.right)); });
document.title = "overflow[" + out.join(",") + "]";</script></body>"""


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs chromium for the layout check")
def test_page_fits_a_390_px_phone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Lay the page out in a 390 px wide root (headless windows are at least 500 px wide) with a probe script added
    to a copy: nothing but the contents of the scrolling containers (tables, the chart, drawn 640 px wide on a phone
    so that its labels stay readable) may reach past the right edge."""
    page = render.html_page(_big(60))
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", _PROBE, 1), encoding="utf-8")
    run = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--window-size=390,900",
                          "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120, check=False)
    found = re.findall(r"<title>overflow\[(.*?)\]</title>", run.stdout)
    assert found == [""], f"elements past 390 px: {found}" if found else run.stderr[-2000:]
