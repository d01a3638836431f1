"""Rich display in notebooks: the specs, ParityReport and the explanations render as escaped, well-formed HTML tables
(``_repr_html_``) with the right content, and stay plain text elsewhere."""

from __future__ import annotations

import math
import re
from html.parser import HTMLParser

import numpy as np
import pytest

import convbridge as cb
from convbridge.spec import make_conv_spec, make_conv_transpose_spec, make_fold_spec, make_unfold_spec

VOID = {"br", "wbr", "img", "hr", "meta", "input", "col"}


class Tables(HTMLParser):
    """Checks that every tag closes in order, and collects each table's rows of cell texts (unescaped)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.tags: set[str] = set()
        self.tables: list[list[list[str]]] = []
        self.captions: list[str] = []
        self._cell: list[str] | None = None
        self._caption: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        if tag in VOID:
            return
        self.stack.append(tag)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "caption":
            self._caption = []

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1] if self.stack else None}>"
        self.stack.pop()
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "caption" and self._caption is not None:
            self.captions.append("".join(self._caption).strip())
            self._caption = None

    def handle_data(self, data: str) -> None:
        for sink in (self._cell, self._caption):
            if sink is not None:
                sink.append(data)


def parse(html: str) -> Tables:
    """Parse ``html``; it must be one phone-safe ``<div>`` (scrolling sideways) of balanced tags, no script."""
    assert html.startswith('<div class="convbridge" style="overflow-x:auto') and html.endswith("</div>")
    p = Tables()
    p.feed(html)
    p.close()
    assert not p.stack, f"unclosed tags: {p.stack}"
    assert not p.tags & {"script", "style", "iframe", "link", "img"}
    return p


def rows_of(p: Tables) -> dict[str, str]:
    """The name -> value rows of every two-column table without a header."""
    return {r[0]: r[1] for t in p.tables for r in t if len(r) == 2}


def table_with(p: Tables, first_header: str) -> list[list[str]]:
    return next(t for t in p.tables if t and t[0] and t[0][0] == first_header)


def conv_out(n: int, k: int, s: int = 1, d: int = 1, lo: int = 0, hi: int = 0) -> int:
    """The output size, written here from the definition (window starts 0, s, 2s, ... that fit)."""
    span, padded = d * (k - 1) + 1, n + lo + hi
    return len(range(0, padded - span + 1, s))


def test_conv_spec_renders_its_shapes_and_one_row_per_axis() -> None:
    spec = make_conv_spec((8, 3, 32, 30), (6, 3, 5, 3), stride=(2, 1), padding=((1, 2), (0, 0)), dilation=(1, 2))
    p = parse(spec._repr_html_())
    outs = (conv_out(32, 5, 2, 1, 1, 2), conv_out(30, 3, 1, 2))
    assert p.captions == ["ConvSpec: 2-d convolution"]
    about = rows_of(p)
    assert about["input"] == "(8, 3, 32, 30)" and about["kernel"] == "(6, 3, 5, 3)"
    assert about["output"] == str((8, 6, *outs)) and about["layout"] == "NCHW,OIHW->NCHW"
    assert about["K (terms per output)"] == str(3 * 5 * 3) and about["MACs"] == f"{8 * 6 * math.prod(outs) * 45:,}"
    axes = table_with(p, "axis")
    assert axes[1] == ["H", "32", "5", "2", "1", "(1, 2)", str(outs[0])]
    assert axes[2] == ["W", "30", "3", "1", "2", "(0, 0)", str(outs[1])]
    assert repr(spec).startswith("ConvSpec(") and "<" not in repr(spec)  # plain text elsewhere


def test_escaping_leaves_no_raw_markup_in_the_text() -> None:
    html = make_conv_spec((1, 9, 9, 2), (3, 3, 2, 4), layout="NHWC")._repr_html_()
    assert "->" not in html and "NHWC,HWIO-&gt;NHWC" in html  # the layout is text, escaped
    assert rows_of(parse(html))["layout"] == "NHWC,HWIO->NHWC"
    assert "'" not in make_conv_transpose_spec((1, 2, 4), (2, 1, 3))._repr_html_().replace("&#x27;", "")


def test_unbatched_and_channels_last_specs_show_the_users_shapes() -> None:
    about = rows_of(parse(make_conv_spec((3, 10, 10), (4, 3, 3, 3), padding="same")._repr_html_()))
    assert about["input"] == "(3, 10, 10)" and about["output"] == "(4, 10, 10)"
    about = rows_of(parse(make_conv_spec((2, 10, 10, 3), (3, 3, 3, 4), layout="NHWC")._repr_html_()))
    assert about["input"] == "(2, 10, 10, 3)" and about["kernel"] == "(3, 3, 3, 4)" and about["output"] == "(2, 8, 8, 4)"


def test_conv_transpose_spec_shows_crops_output_padding_and_full_size() -> None:
    spec = make_conv_transpose_spec((2, 8, 16, 16), (8, 3, 4, 4), stride=2, padding=1, output_padding=1)
    p = parse(spec._repr_html_())
    full = (16 - 1) * 2 + 1 * (4 - 1) + 1  # every input row scatters 4 taps, stride 2 apart
    out = full - 1 - 1 + 1
    assert p.captions[0].startswith("ConvTransposeSpec: 2-d transposed convolution")
    about = rows_of(p)
    assert about["output"] == f"(2, 3, {out}, {out})" and about["convention"] == "torch"
    assert table_with(p, "axis")[1] == ["H", "16", "4", "2", "1", "(1, 1)", "1", str(full), str(out)]
    jax_spec = make_conv_transpose_spec((1, 4, 4, 2), (3, 3, 5, 2), stride=2, padding="SAME", convention="jax",
                                        layout=("NHWC", "HWIO", "NHWC"), transpose_kernel=True)
    assert rows_of(parse(jax_spec._repr_html_()))["convention"] == "jax, transpose_kernel=True"


def test_unfold_and_fold_specs() -> None:
    p = parse(make_unfold_spec((2, 3, 8, 8), 3, padding=1, stride=2)._repr_html_())
    blocks = conv_out(8, 3, 2, 1, 1, 1)
    assert p.captions == ["UnfoldSpec: 2-d unfold (im2col)"]
    assert rows_of(p)["output"] == f"(2, 27, {blocks * blocks})"
    assert table_with(p, "axis")[1] == ["H", "8", "3", "2", "1", "(1, 1)", str(blocks)]
    p = parse(make_fold_spec((27, 64), (8, 8), 3, padding=1)._repr_html_())
    about = rows_of(p)
    assert about["input (cols)"] == "(27, 64)" and about["output"] == "(3, 8, 8)"
    assert about["K (blocks overlapping one element)"] == "9"


@pytest.fixture(scope="module")
def report() -> cb.ParityReport:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    shifted = lambda x, w, b: np.roll(cb.conv(x, w, padding=1), 1, axis=-1)  # noqa: E731 - a one-pixel bug
    return cb.compare(x, w, padding=1, backends=("numpy", ("<b>shifted</b> & 'co'", shifted)), rerun=True)


def test_parity_report_is_a_table_of_pairs_with_the_verdicts(report: cb.ParityReport) -> None:
    html = report._repr_html_()
    p = parse(html)
    pairs = table_with(p, "pair")
    assert pairs[0] == ["pair", "max abs", "max rel", "array_equiv", "max r", "allowed r", "worst index", "verdict",
                        "evidence"]
    body = {row[0]: row for row in pairs[1:]}
    assert set(body) == {f"{r.a} vs {r.b}" for r in report.pairs}
    bad = body["<b>shifted</b> & 'co' vs reference"]
    assert bad[7] == "mismatch" and bad[3] == "False"
    assert float(bad[4]) > float(bad[5])  # r beyond the allowed ratio
    assert body["numpy vs reference"][7] in ("identical", "equivalent")
    about = rows_of(p)
    assert about["K (most terms per element)"] == str(report.terms) and about["output"] == "(2, 4, 8, 8) float32"
    assert "<b>shifted" not in html and "&lt;b&gt;shifted&lt;/b&gt; &amp; &#x27;co&#x27;" in html  # escaped name
    assert "re-run in float64" in html and report.rerun is not None  # the re-run, folded under <details>
    body_html, _, text = html.rpartition("<details><summary>as text</summary>")
    assert report.verdict == "mismatch" and re.search(r"<p>verdict: <b[^>]*>mismatch</b></p>$", body_html)
    assert text.startswith("<pre>") and "verdict: mismatch" in text  # the plain text, folded last
    assert str(report).startswith("conv: ") and "<b>shifted</b>" in str(report)  # str stays plain, unescaped


def test_parity_report_with_gradients_folds_each_gradient() -> None:
    pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((1, 2, 5, 5)).astype(np.float32), rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    r = cb.compare(x, w, backends=("torch",), grad=True)
    html = r._repr_html_()
    p = parse(html)
    assert html.count("<summary>gradient with respect to ") == len(r.gradients) >= 2
    assert sum(1 for t in p.tables if t and t[0] and t[0][0] == "pair") == _reports(r)
    detail = "; ".join([f"output {r.output_verdict}"] + [f"{k} {g.verdict_label}" for k, g in r.gradients.items()])
    assert f"({detail})</p>" in html


def _reports(r: cb.ParityReport) -> int:
    """``r`` and every report nested in it (re-runs, gradients): each shows its own table of pairs."""
    nested = [n for n in (r.rerun, r.exact_rerun, *r.gradients.values()) if n is not None]
    return 1 + sum(_reports(n) for n in nested)


def test_explanation_renders_the_arithmetic_and_every_call() -> None:
    e = cb.explain((32, 3, 32, 32), (4, 3, 5, 5))
    p = parse(e._repr_html_())
    about = rows_of(p)
    assert about["output"].startswith("(32, 4, 28, 28): 32x32x3 convolved with 4 filters of 5x5 gives 28x28x4")
    assert about["matmul view"].startswith("(784 x 75) @ (75 x 4) per image")
    assert about["MACs"] == f"{32 * 4 * 28 * 28 * 75:,}" and about["receptive field"] == "5x5"
    dims = table_with(p, "axis")
    assert dims[1] == ["H", "32", "0", "0", "1", "5", "1", "28", "H: (32 + 0 + 0 - 1*(5-1) - 1)/1 + 1 = 28"]
    calls = table_with(p, "framework")
    frameworks = [row[0].split(" (")[0] for row in calls[1:]]
    assert frameworks == [sn.framework for sn in e.snippets] and "jax.lax" in frameworks
    lax_call = calls[1 + frameworks.index("jax.lax")][1]
    assert "dimension_numbers=('NCHW', 'OIHW', 'NCHW')" in lax_call  # quotes unescaped back: the code as written
    assert "<pre>" in e._repr_html_() and "(784 x 75) @ (75 x 4)" in str(e)


def test_transpose_explanation_renders_its_conv_view() -> None:
    e = cb.explain((8, 64, 16, 16), layer="ConvTranspose2d(64, 32, 4, stride=2, padding=1, output_padding=1)")
    p = parse(e._repr_html_())
    assert p.captions[0].startswith("conv_transpose 2-d")
    out = (16 - 1) * 2 - 1 - 1 + (4 - 1) + 1 + 1
    assert rows_of(p)["output"].startswith(f"(8, 32, {out}, {out})")
    dims = table_with(p, "axis")
    assert dims[1][:9] == ["H", "16", "2", "1", "1", "1", "1", "4", str(out)]
    assert dims[1][10] == f"H: 16 rows dilated by 2 -> 31, padded (a, b) = (2, 3), D = 1*(4 - 1) = 3: 31 + 2 + 3 - 3 = {out}"
    assert "as a conv over the dilated input" in rows_of(p)
    assert any(row[0].startswith("torch.nn.functional") for row in table_with(p, "framework"))
