"""Pages opened in a real browser: the compare report, the docs site and the cb.diff page, in Debian's chromium.

Playwright's own browser download cannot be reached here, so it drives ``/usr/bin/chromium`` (``apt-get install
chromium``); without it the browser tests skip and say so. At 1280 x 900 and 390 x 844 every page must not scroll
sideways, load every image, log no console error and no page error, and make no request that leaves the machine
(every request is routed: ``file:`` and ``data:`` pass, anything else is aborted and recorded). A full-page
screenshot of each goes to ``artifacts/browser/<page>-<width>.png``. The compare report's interactive view is
driven too: pick an image and a channel, hover a pixel, and check the readout against values computed here,
independently of convbridge (a float64 convolution of the embedded sample with the tutorial's filters).

The tests not marked ``browser`` (the per-element bound, the view left out of a huge output) run with the main
suite.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "artifacts" / "browser"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
VIEWPORTS = {1280: 900, 390: 844}
WIDTHS = list(VIEWPORTS)
BATCH = 8  # the report's batch: small, so that the experiment runs in a second or two
U32 = 2.0**-24

browser = pytest.mark.browser


# --------------------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (/usr/bin/chromium): apt-get install chromium")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed: pip install "
                                   "'convbridge[browser]'")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The compare report of the embedded sample, written by the CLI (the folder)."""
    pytest.importorskip("matplotlib")
    from click.testing import CliRunner

    from convbridge.cli import main

    out = tmp_path_factory.mktemp("compare") / "report"
    result = CliRunner().invoke(main, ["compare", "--data", "sample", "--batch-size", str(BATCH), "--out", str(out)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The docs site: ``make docs``'s site/, else built here with ``mkdocs build --strict``."""
    built = ROOT / "site"
    if (built / "index.html").is_file():
        return built
    if not (ROOT / "mkdocs.yml").is_file():
        pytest.skip("no mkdocs.yml: there is no docs site to open")
    out = tmp_path_factory.mktemp("docs") / "site"
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", str(out)],
                          cwd=ROOT, capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    return out


@pytest.fixture(scope="module")
def diff_page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """cb.diff of two tiny torch models that differ in one weight, saved as its HTML page."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("matplotlib")
    import convbridge as cb
    from convbridge.divergence import render

    torch.manual_seed(0)

    def net() -> Any:
        return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                   torch.nn.Conv2d(8, 4, 3, padding=1), torch.nn.Flatten(),
                                   torch.nn.Linear(4 * 8 * 8, 5)).eval()

    a, b = net(), net()
    b.load_state_dict(a.state_dict())
    with torch.no_grad():
        b[2].weight[0, 0, 0, 0] += 0.5
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    rep = cb.diff(a, b, x)
    assert rep.verdict == "mismatch"
    return render.save_html(rep, tmp_path_factory.mktemp("diff") / "diff.html")


# ------------------------------------------------------------------------------------------ the checks

@dataclass
class Log:
    errors: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)


@contextlib.contextmanager
def visit(chromium: Any, url: str, width: int, *, javascript: bool = True) -> Iterator[tuple[Any, Log]]:
    """A page at ``url`` in a fresh context ``width`` wide, every request routed, errors logged."""
    ctx = chromium.new_context(viewport={"width": width, "height": VIEWPORTS[width]}, java_script_enabled=javascript)
    log = Log()

    def route(r: Any) -> None:
        if r.request.url.startswith(("file:", "data:", "blob:")):
            r.continue_()
        else:
            log.blocked.append(r.request.url)
            r.abort()

    ctx.route("**/*", route)
    page = ctx.new_page()
    page.on("console", lambda m: log.errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: log.errors.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: None if r.url in log.blocked else log.errors.append(f"failed: {r.url}"))
    try:
        page.goto(url, wait_until="load")
        yield page, log
    finally:
        ctx.close()


_WIDE = """() => [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > innerWidth + 1)
  .filter(e => !e.closest('.scroll, pre, .highlight, .md-typeset__scrollwrap'))
  .slice(0, 5).map(e => e.tagName + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right))"""


def check(page: Any, log: Log, name: str, width: int, *, images: int | None = None) -> None:
    """Screenshot the page, then: no sideways scrolling, every image loaded, no error, no request out."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}-{width}.png"), full_page=True)
    scroll = page.evaluate("document.scrollingElement.scrollWidth")
    inner = page.evaluate("window.innerWidth")
    assert scroll <= inner + 1, f"{name} is {scroll} px wide in a {inner} px window; too wide: {page.evaluate(_WIDE)}"
    loaded = page.evaluate("[...document.images].map(i => [i.complete && i.naturalWidth > 0, i.src.slice(0, 60)])")
    assert all(ok for ok, _ in loaded), f"images that did not load: {[src for ok, src in loaded if not ok]}"
    if images is not None:
        assert len(loaded) == images, f"{name} shows {len(loaded)} images, expected {images}"
    assert not log.errors, f"{name}: {log.errors}"
    assert not log.blocked, f"{name} asked for something outside the machine: {log.blocked}"


# ----------------------------------------------------------------------------------------------- pages

@browser
def test_the_checks_see_errors_and_requests_out(chromium: Any, tmp_path: Path) -> None:
    """The harness itself: a request to another machine is aborted and recorded, a console error is logged."""
    page_file = tmp_path / "bad.html"
    page_file.write_text('<!DOCTYPE html><html><body><img src="https://example.invalid/x.png" alt="x">'
                         '<script>console.error("boom")</script></body></html>')
    with visit(chromium, page_file.as_uri(), 390) as (page, log):
        page.wait_for_load_state("load")
        assert log.blocked == ["https://example.invalid/x.png"]
        assert any("boom" in e for e in log.errors)
        assert not page.evaluate("document.images[0].naturalWidth")


@browser
@pytest.mark.parametrize("width", WIDTHS)
def test_compare_report(chromium: Any, report: Path, width: int) -> None:
    from convbridge.reportdir import FIGURES

    with visit(chromium, (report / "index.html").as_uri(), width) as (page, log):
        assert page.locator("#cb-explore").is_visible()
        check(page, log, "report", width, images=len(FIGURES))
        # a table wider than the phone scrolls in its own box; the page does not
        boxes = page.evaluate("[...document.querySelectorAll('.scroll')].map(e => [e.scrollWidth, e.clientWidth])")
        assert boxes and all(client <= width for _, client in boxes)
        if width == 390:
            assert any(sw > client for sw, client in boxes), "no table is wider than a phone: check the 390 px test"


@browser
@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("page_name", ["index", "porting", "api/index", "api/ops"])
def test_docs_site(chromium: Any, site: Path, page_name: str, width: int) -> None:
    path = site / f"{page_name}.html"
    pages = sorted(str(p.relative_to(site)) for p in site.rglob("*.html"))
    assert path.is_file(), f"the docs site has no {page_name}.html; it has {pages}"
    with visit(chromium, path.as_uri(), width) as (page, log):
        assert page.locator("h1").first.is_visible()
        check(page, log, "docs-" + page_name.replace("/", "-"), width)


@browser
@pytest.mark.parametrize("width", WIDTHS)
def test_diff_page(chromium: Any, diff_page: Path, width: int) -> None:
    with visit(chromium, diff_page.as_uri(), width) as (page, log):
        assert "mismatch" in page.inner_text("body")
        check(page, log, "diff", width, images=1)


# ----------------------------------------------------------------------------- the interactive report

@dataclass(frozen=True)
class Expected:
    """What the report's data must hold, computed here without convbridge's conv, reference or judge."""

    x: np.ndarray  # the normalized batch, NCHW float32
    reference: np.ndarray  # float64 conv
    gauge: np.ndarray  # float64 conv of |x| with |w|
    terms: int


@pytest.fixture(scope="module")
def expected() -> Expected:
    jax = pytest.importorskip("jax")
    from convbridge.data import load_dataset

    images = load_dataset("sample", notice=lambda m: None, progress=False).images[:BATCH]  # NHWC uint8
    x = ((images.astype(np.float32) / 255 - 0.5) / 0.5).transpose(0, 3, 1, 2)  # ToTensor + Normalize(0.5, 0.5)
    w = np.asarray(jax.random.normal(jax.random.PRNGKey(42), (4, 3, 5, 5)), np.float32)

    def conv(a: np.ndarray, k: np.ndarray) -> np.ndarray:
        windows = np.lib.stride_tricks.sliding_window_view(a.astype(np.float64), (5, 5), axis=(2, 3))
        return np.einsum("nchwij,ocij->nohw", windows, k.astype(np.float64))

    return Expected(x, conv(x, w), conv(np.abs(x), np.abs(w)), 3 * 5 * 5)


def embedded(report: Path) -> dict[str, Any]:
    """The interactive view's data, decoded: arrays as (images, channels, H, W) NumPy arrays."""
    text = (report / "index.html").read_text()
    found = re.search(r'<script type="application/json" id="cb-explore-data">(.*?)</script>', text, re.S)
    assert found, "the report has no interactive data"
    data = json.loads(found.group(1))
    shape = (data["images"], data["channels"], data["height"], data["width"])

    def decode(a: Any) -> Any:
        if not isinstance(a, dict):
            return float(a)
        return np.frombuffer(base64.b64decode(a["b64"]), "<" + a["dtype"]).reshape(shape)

    data["arrays"] = {k: decode(v) for k, v in data["arrays"].items()}
    data["allowed"] = {k: decode(v) for k, v in data["allowed"].items()}
    data["rounded"] = {k: np.frombuffer(base64.b64decode(v["b64"]), np.uint8).reshape(shape).astype(bool)
                       if isinstance(v, dict) else np.full(shape, bool(v)) for k, v in data["rounded"].items()}
    return data


def _allowed_ratio(k: int) -> float:
    """(gamma_K(float32) + gamma_K(float64)) / u32: the rigorous bound on r of a float32 result vs the reference."""
    return sum(k * u / (1 - k * u) for u in (U32, 2.0**-53)) / U32


@browser
def test_the_embedded_data_is_the_experiment(report: Path, expected: Expected) -> None:
    """No browser needed, but the CLI's report: it runs with the browser checks."""
    data = embedded(report)
    a = data["arrays"]
    assert (data["images"], data["channels"], data["height"], data["width"]) == (BATCH, 4, 28, 28)
    assert data["names"] == ["torch", "jax"] and a["torch"].dtype == np.float32 and a["reference"].dtype == np.float64
    np.testing.assert_allclose(a["reference"], expected.reference, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(a["gauge"], expected.gauge, rtol=1e-12)
    assert data["terms"] == expected.terms
    summary = json.loads((report / "report.json").read_text())
    for name in data["names"]:
        assert data["allowed"][name] == pytest.approx(_allowed_ratio(expected.terms), rel=1e-12)
        rounded = a[name] == expected.reference.astype(np.float32)  # NumPy's cast rounds correctly
        assert np.array_equal(data["rounded"][name], rounded) and 0 < rounded.mean() < 1
        r = np.where(rounded, 0.0, np.abs(a[name] - expected.reference) / (U32 * expected.gauge))
        pair = next(p for p in summary["report"]["pairs"] if (p["a"], p["b"]) == (name, "reference"))
        assert r.max() == pytest.approx(pair["max_ratio"], rel=1e-9)  # the worst element is among the embedded
        assert r.max() <= data["allowed"][name]  # rounding, within the bound


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_allowed_per_element_follows_each_elements_term_count(layout: str) -> None:
    """With 'same' padding the border elements sum fewer terms; the bound is the judge's at each one's K."""
    from convbridge.experiment import ExperimentConfig, run_experiment

    result = run_experiment(ExperimentConfig(data="sample", batch_size=2, repeats=1, padding="same", layout=layout,
                                             backends=("numpy",)), notice=lambda m: None)
    allowed = result.allowed_nchw("numpy")
    assert allowed.shape == (2, 4, 32, 32)
    # K = 3 x (kernel rows inside the image) x (kernel columns inside): 3 x 3 x 3 at a corner, 3 x 5 x 5 inside
    for (row, col), k in {(0, 0): 27, (0, 1): 36, (1, 1): 48, (0, 16): 45, (16, 16): 75, (31, 30): 36}.items():
        assert allowed[1, 2, row, col] == pytest.approx(_allowed_ratio(k), rel=1e-9), (row, col)
    p = result.report.pair("numpy", "reference")
    worst = tuple(p.worst_index[layout.index(axis)] for axis in "NCHW")
    assert allowed[worst] == pytest.approx(p.allowed_ratio, rel=1e-12)
    assert result.to_nchw(result.report.term_map)[1, 2, 0, 1] == 36


def test_view_data_round_trips_and_marks_correctly_rounded_values() -> None:
    from convbridge.viz import interactive

    rng = np.random.default_rng(0)
    ref = rng.standard_normal((10, 2, 3, 4))
    out = ref.astype(np.float32)
    out[0, 1, 2, 3] = np.nextafter(out[0, 1, 2, 3], np.float32(9))  # one ulp off: not the rounded reference
    allowed = np.full(ref.shape, 75.0)
    allowed[:, :, 0, 0] = 27.0
    page = interactive.section({"torch": out}, ref, np.abs(ref) + 1, np.full(ref.shape, 75), {"torch": U32},
                               {"torch": allowed}, [f"c{i}" for i in range(10)], start=(9, 1))
    script = page.split('id="cb-explore-data">', 1)[1].split("</script>", 1)[0]
    data = json.loads(script)
    # the image the figures show (9) is embedded in place of the 8th, and shown first (found by a hostile user)
    index = [0, 1, 2, 3, 4, 5, 6, 9]
    assert (data["images"], data["channels"]) == (8, 2) and data["start"] == [7, 1] and data["index"] == index
    assert data["labels"] == [f"c{i}" for i in index] and data["terms"] == 75
    assert np.array_equal(np.frombuffer(base64.b64decode(data["arrays"]["torch"]["b64"]), "<f4"), out[index].ravel())
    assert np.array_equal(np.frombuffer(base64.b64decode(data["arrays"]["reference"]["b64"]), "<f8"),
                          ref[index].ravel())
    mask = np.frombuffer(base64.b64decode(data["rounded"]["torch"]["b64"]), np.uint8).reshape(8, 2, 3, 4)
    assert mask.sum() == mask.size - 1 and mask[0, 1, 2, 3] == 0
    bound = np.frombuffer(base64.b64decode(data["allowed"]["torch"]["b64"]), "<f4").reshape(8, 2, 3, 4)
    assert bound[3, 1, 0, 0] == 27 and bound[3, 1, 0, 1] == 75
    for code in re.findall(r"<script>(.*?)</script>", page, re.S):
        assert "</" not in code  # the HTML parser would end the script there
    assert "8 of 10 images (numbers 0, 1, 2, 3, 4, 5, 6 and 9, the one the figures show), all 2 output channels" in page
    first = interactive.section({"torch": out}, ref, np.abs(ref) + 1, np.full(ref.shape, 75), {"torch": U32},
                                {"torch": allowed}, [f"c{i}" for i in range(10)], start=(1, 1))
    assert "the first 8 of 10 images, all 2 output channels (3 x 4 each): the torch output" in first


def test_view_is_left_out_when_one_channel_is_too_large() -> None:
    from convbridge.viz import interactive

    big = np.zeros((1, 1, 400, 400))
    page = interactive.section({"torch": big.astype(np.float32)}, big, big, big, {"torch": U32},
                               {"torch": big}, ["x"])
    assert "left out" in page and "160,000" in page and "<script" not in page


# -------------------------------------------------------------------------- the interactive view, live

def _pixels(page: Any) -> np.ndarray:
    rgba = page.evaluate("""() => { const c = document.getElementById('cb-canvas');
        return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data); }""")
    h, w = page.evaluate("[document.getElementById('cb-canvas').height, document.getElementById('cb-canvas').width]")
    return np.asarray(rgba, np.uint8).reshape(h, w, 4)[..., :3]


def _readout(page: Any) -> dict[str, list[str]]:
    return page.evaluate("""() => Object.fromEntries([...document.querySelectorAll('#cb-readout tr[data-name]')]
        .map(tr => [tr.dataset.name, [...tr.cells].slice(1).map(td => td.textContent)]))""")


def _hover(page: Any, row: int, col: int, h: int, w: int) -> None:
    canvas = page.locator("#cb-canvas")
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + (col + 0.5) * box["width"] / w, box["y"] + (row + 0.5) * box["height"] / h)


@browser
def test_report_pick_image_and_channel(chromium: Any, report: Path) -> None:
    data = embedded(report)
    torch_out = data["arrays"]["torch"]
    with visit(chromium, (report / "index.html").as_uri(), 1280) as (page, log):
        canvas = page.locator("#cb-canvas")
        assert (canvas.get_attribute("data-image"), canvas.get_attribute("data-channel")) == ("0", "0")
        before = _pixels(page)
        page.select_option("#cb-image", "1")
        page.select_option("#cb-channel", "2")
        assert (canvas.get_attribute("data-image"), canvas.get_attribute("data-channel")) == ("1", "2")
        after = _pixels(page)
        assert after.shape == (28, 28, 3) and not np.array_equal(before, after)
        # viridis from the map's smallest (dark violet) to its largest value (yellow)
        m = torch_out[1, 2]
        assert tuple(after[np.unravel_index(np.argmax(m), m.shape)]) == (0xFD, 0xE7, 0x25)
        assert tuple(after[np.unravel_index(np.argmin(m), m.shape)]) == (0x44, 0x01, 0x54)
        page.locator("#cb-explore").screenshot(path=str(ARTIFACTS / "report-explore-1280.png"))
        assert not log.errors and not log.blocked


@browser
def test_report_hover_reads_the_values(chromium: Any, report: Path, expected: Expected) -> None:
    summary = json.loads((report / "report.json").read_text())
    worst = summary["report"]["pairs"][0]  # torch vs reference
    assert (worst["a"], worst["b"]) == ("torch", "reference")
    i, c, row, col = worst["worst_index"]  # NCHW (the report's layout)
    assert i < BATCH
    data = embedded(report)
    with visit(chromium, (report / "index.html").as_uri(), 390) as (page, log):
        page.select_option("#cb-image", str(i))
        page.select_option("#cb-channel", str(c))
        _hover(page, row, col, 28, 28)
        where = page.inner_text("#cb-where")
        assert f"image {i}, channel {c}, row {row}, column {col}" in where and "K = 75" in where
        shown = _readout(page)
        assert set(shown) == {"torch", "jax", "reference"}
        ref = float(shown["reference"][0])
        assert ref == data["arrays"]["reference"][i, c, row, col]  # the shortest text that reads back
        assert ref == pytest.approx(expected.reference[i, c, row, col], rel=1e-12)
        g = expected.gauge[i, c, row, col]
        for name in ("torch", "jax"):
            value, r, allowed = shown[name]
            assert np.float32(value) == data["arrays"][name][i, c, row, col]
            assert float(r) == pytest.approx(abs(float(np.float32(value)) - expected.reference[i, c, row, col])
                                             / (U32 * g), rel=1e-3)
            assert float(allowed) == pytest.approx(_allowed_ratio(expected.terms), rel=1e-3)
        assert float(shown["torch"][1]) == pytest.approx(worst["max_ratio"], rel=1e-3)  # the worst element
        box = page.evaluate("(e => [e.scrollWidth, e.clientWidth])(document.getElementById('cb-readout').parentNode)")
        assert box[0] <= box[1], f"the readout is {box[0]} px wide in a {box[1]} px box on a phone"
        assert page.inner_text("#cb-note") == ""
        page.locator("#cb-canvas").press("ArrowRight")
        assert f"row {row}, column {col + 1}:" in page.inner_text("#cb-where")
        # an element where torch is the correctly rounded reference: r counts as 0, and the page says why
        ref32 = expected.reference[i, c].astype(np.float32)
        rows, cols = np.nonzero((data["arrays"]["torch"][i, c] == ref32) & (ref32 != expected.reference[i, c]))
        _hover(page, int(rows[0]), int(cols[0]), 28, 28)
        assert _readout(page)["torch"][1] == "0"
        note = page.inner_text("#cb-note")
        assert note.startswith("torch") and " the reference correctly rounded to float32 here" in note, note
        check(page, log, "report-hover", 390)


@browser
def test_report_without_javascript_keeps_the_figures(chromium: Any, report: Path) -> None:
    from convbridge.reportdir import FIGURES

    with visit(chromium, (report / "index.html").as_uri(), 390, javascript=False) as (page, log):
        assert not page.locator("#cb-explore").is_visible()  # hidden until its script runs
        assert "needs JavaScript" in page.evaluate("document.body.innerText")
        check(page, log, "report-nojs", 390, images=len(FIGURES))
