"""The compare report's interactive view: pick an image and an output channel, hover a pixel to read its values.

Everything is inline (no CDN, no external file, no request): a ``<script type="application/json">`` holds a
bounded subset of the outputs as base64 little-endian floats, and a small script draws the chosen map on a
``<canvas>`` and fills a readout table. The section is ``hidden`` until its script runs; with scripts off a
``<noscript>`` note says so and the static figures stand alone.

What is embedded: the first :data:`MAX_IMAGES` images (fewer when they would exceed :data:`MAX_ELEMENTS`
elements per map; then the first channels of one image), every backend's output in its own precision (float32
for float32, float16 and bfloat16, which it represents exactly; float64 for float64), the float64 reference and
the gauge G (so that the page computes r = |a - reference| / (u G) in float64, as the judge does), where each
output equals the reference correctly rounded to its dtype (the judge counts r as 0 there: no result can be
closer), and the allowed bound on r per element (one number when it is the same everywhere).
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["CSS", "MAX_IMAGES", "MAX_ELEMENTS", "choose", "encode", "section"]

#: At most this many images (the first ones) are embedded.
MAX_IMAGES = 8
#: At most this many elements per embedded map (images x channels x height x width).
MAX_ELEMENTS = 1 << 17


def choose(images: int, channels: int, height: int, width: int) -> tuple[int, int] | None:
    """How many of the first images and output channels to embed, or None when one channel is too large.

    >>> choose(32, 4, 28, 28)
    (8, 4)
    >>> choose(32, 64, 112, 112)  # one image, the channels that fit
    (1, 10)
    >>> choose(1, 1, 512, 512) is None
    True
    """
    plane = height * width
    if plane > MAX_ELEMENTS or min(images, channels, plane) < 1:
        return None
    if channels * plane > MAX_ELEMENTS:
        return 1, MAX_ELEMENTS // plane
    return min(images, MAX_IMAGES, MAX_ELEMENTS // (channels * plane)), channels


def encode(a: np.ndarray) -> dict[str, str]:
    """``a`` as base64 little-endian float32 (``"f4"``) when that holds it exactly, else float64 (``"f8"``).

    >>> encode(np.array([1.5, -2.0], np.float16))
    {'dtype': 'f4', 'b64': 'AADAPwAAAMA='}
    """
    exact32 = (a.dtype.kind == "f" and a.dtype.itemsize <= 4) or str(a.dtype) == "bfloat16"
    data = np.ascontiguousarray(a, "<f4" if exact32 else "<f8")
    return {"dtype": "f4" if exact32 else "f8", "b64": base64.b64encode(data.tobytes()).decode("ascii")}


def _number(v: float) -> float | str:
    """A JSON number, or ``"Infinity"``, ``"-Infinity"``, ``"NaN"`` (what JavaScript's ``Number()`` reads)."""
    if math.isfinite(v):
        return v
    return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")


def _uniform_or_map(a: np.ndarray) -> float | str | dict[str, str]:
    flat = a.reshape(-1)
    if flat.size and np.all((flat == flat[0]) | (np.isnan(flat) & np.isnan(flat[0]))):
        return _number(float(flat[0]))
    return encode(a.astype(np.float32))


def _mask(a: np.ndarray) -> int | dict[str, str]:
    """A boolean map as 0 or 1 when it is all one value, else as base64 bytes (``"u1"``)."""
    if a.all() or not a.any():
        return int(a.all()) if a.size else 0
    return {"dtype": "u1", "b64": base64.b64encode(np.ascontiguousarray(a, np.uint8).tobytes()).decode("ascii")}


def _correctly_rounded(out: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Where ``out`` is bitwise the float64 ``reference`` rounded to its dtype (NaN where both are NaN)."""
    from convbridge.parity import rounded

    ref = rounded(np.asarray(reference, np.float64), out.dtype)
    with np.errstate(invalid="ignore"):
        return np.asarray((out == ref) | (np.isnan(out) & np.isnan(ref)), bool)


def section(outputs: Mapping[str, np.ndarray], reference: np.ndarray, gauge: np.ndarray, terms: np.ndarray,
            unit_roundoff: Mapping[str, float], allowed: Mapping[str, np.ndarray], labels: Sequence[str],
            start: tuple[int, int] = (0, 0)) -> str:
    """The HTML of the interactive view, or a short note when even one channel is too large to embed.

    Args:
        outputs: each backend's output, NCHW, in its own dtype.
        reference: the float64 reference, NCHW.
        gauge: G = conv(|x|, |w|) per element, NCHW (float64).
        terms: K per element, NCHW.
        unit_roundoff: u of each backend's pair with the reference (r = |a - reference| / (u G)).
        allowed: the rigorous bound on r per element for each backend, NCHW.
        labels: a caption per image (its class name).
        start: the (image, channel) shown first (that of the static figures; 0 when not embedded).

    Returns:
        A ``<section>`` (hidden until its script runs), a ``<noscript>`` note, the data and the script.
    """
    n, c, h, w = reference.shape
    picked = choose(n, c, h, w)
    if picked is None:
        return (f"<p>The interactive view is left out: one output channel has {h} x {w} = {h * w:,} elements, "
                f"more than the {MAX_ELEMENTS:,} it embeds.</p>")
    ni, nc = picked
    index = list(range(ni))
    if not 0 <= start[0] < ni and 0 <= start[0] < n:
        index[-1] = start[0]  # the image the figures show is always embedded
    cut = (np.asarray(index)[:, None], np.arange(nc)[None, :])
    names = list(outputs)
    data = {
        "images": ni, "channels": nc, "height": h, "width": w, "names": names, "index": index,
        "labels": [str(labels[i]) if i < len(labels) else "" for i in index],
        "start": [index.index(start[0]) if start[0] in index else 0, start[1] if start[1] < nc else 0],
        "arrays": {**{k: encode(outputs[k][cut]) for k in names},
                   "reference": encode(np.asarray(reference[cut], np.float64)),
                   "gauge": encode(np.asarray(np.broadcast_to(gauge, reference.shape)[cut], np.float64))},
        "terms": _uniform_or_map(np.asarray(np.broadcast_to(terms, reference.shape)[cut], np.float64)),
        "u": {k: _number(float(unit_roundoff[k])) for k in names},
        "dtypes": {k: str(outputs[k].dtype) for k in names},
        "rounded": {k: _mask(_correctly_rounded(outputs[k][cut], reference[cut])) for k in names},
        "allowed": {k: _uniform_or_map(np.asarray(allowed[k][cut], np.float64)) for k in names},
    }
    blob = json.dumps(data, separators=(",", ":")).replace("<", "\\u003c")  # no "</script>" inside
    first = f"the first {ni} of {n} image{'s' if n > 1 else ''}" if index == list(range(ni)) else (
        f"{ni} of {n} images (numbers {', '.join(map(str, index[:-1]))} and {index[-1]}, the one the figures show)")
    what = (f"{first}, "
            + (f"all {c} output channels" if nc == c else f"the first {nc} of {c} output channels")
            + f" ({h} x {w} each): the {_words(names)} output{'s' if len(names) > 1 else ''}, the float64 "
            f"reference and the gauge G, as base64 little-endian floats ({len(blob) / 1e6:.2g} MB)")
    return "\n".join([
        '<section id="cb-explore" class="explore" hidden>', "<h2>Explore the outputs</h2>",
        "<p>Pick an image, an output channel and what to show; hover (or tap) a pixel, or focus the picture and "
        "use the arrow keys, to read each framework's value, the float64 reference, r = |value - reference| / "
        "(u G) as the verdict counts it (0 where the value is the reference correctly rounded) and the bound r may "
        "reach there.</p>",
        '<div class="controls"><label>image <select id="cb-image"></select></label> '
        '<label>channel <select id="cb-channel"></select></label> '
        '<label>show <select id="cb-show"></select></label></div>',
        '<div class="stage"><canvas id="cb-canvas" tabindex="0" width="1" height="1" '
        'aria-label="the chosen output map; hover or use the arrow keys to read values"></canvas>'
        '<div id="cb-cursor" hidden></div></div>',
        '<p id="cb-legend" class="legend"></p>',
        '<p id="cb-where" class="where">Hover a pixel to read its values.</p>',
        '<div class="scroll"><table id="cb-readout"><tr><th>result</th><th>value</th><th>r</th>'
        "<th>allowed</th></tr></table></div>", '<p id="cb-note" class="legend"></p>',
        f"<p class=\"note\">Embedded for this view: {html.escape(what)}.</p>", "</section>",
        "<noscript><p class=\"note\">The interactive view (pick an image and a channel, hover a pixel to read its "
        "values) needs JavaScript; the figures below are static and complete.</p></noscript>",
        f'<script type="application/json" id="cb-explore-data">{blob}</script>',
        f"<script>{_SCRIPT}</script>",
    ])


def _words(names: Sequence[str]) -> str:
    """``"torch"``, ``"torch and jax"``, ``"torch, jax and numpy"``."""
    return " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else list(names))


#: viridis (values) and magma (r), 9 stops each, as matplotlib draws them in the static figures.
_VIRIDIS = "440154 472d7b 3b528b 2c728e 21918c 28ae80 5ec962 addc30 fde725"
_MAGMA = "000004 1c1044 4f127b 812581 b5367a e55064 fb8861 fec287 fcfdbf"

CSS = """.explore .controls{display:flex;flex-wrap:wrap;gap:.5em 1em;margin:.5em 0}
.explore select{background:#222;color:#ddd;border:1px solid #555;padding:2px 4px;max-width:100%;
text-overflow:ellipsis}
.explore .controls label{max-width:100%;display:inline-block}
.explore .stage{position:relative;width:100%;max-width:448px;line-height:0}
#cb-canvas{width:100%;height:auto;image-rendering:pixelated;background:#000;cursor:crosshair}
#cb-cursor{position:absolute;outline:2px solid #fff;box-shadow:0 0 0 1px #000;pointer-events:none}
.explore .legend,.explore .where{font-size:.9em;color:#bbb}
#cb-readout{font-size:.85em}#cb-readout td,#cb-readout th{padding:2px 4px;white-space:nowrap}
#cb-readout td.num{font-variant-numeric:tabular-nums}"""

# No "</" anywhere in the script (the HTML parser would end the <script> there): the DOM is built with
# createElement and textContent.
_SCRIPT = """
(function () {
  "use strict";
  var root = document.getElementById("cb-explore");
  var d = JSON.parse(document.getElementById("cb-explore-data").textContent);
  function decode(a) {
    if (typeof a !== "object") return Number(a);
    var s = atob(a.b64), b = new Uint8Array(s.length);
    for (var i = 0; i < s.length; i++) b[i] = s.charCodeAt(i);
    return a.dtype === "u1" ? b : a.dtype === "f8" ? new Float64Array(b.buffer) : new Float32Array(b.buffer);
  }
  function ramp(hex) { return hex.split(" ").map(function (h) {
    return [0, 2, 4].map(function (k) { return parseInt(h.substr(k, 2), 16); }); }); }
  var VIRIDIS = ramp("%VIRIDIS%"), MAGMA = ramp("%MAGMA%");
  var A = {}, k;
  for (k in d.arrays) A[k] = decode(d.arrays[k]);
  var allowed = {}, exact = {};
  d.names.forEach(function (n) { allowed[n] = decode(d.allowed[n]); exact[n] = decode(d.rounded[n]); });
  var terms = decode(d.terms), H = d.height, W = d.width, C = d.channels, P = H * W;
  var $ = function (id) { return document.getElementById(id); };
  var img = $("cb-image"), chan = $("cb-channel"), show = $("cb-show"), canvas = $("cb-canvas");
  var ctx = canvas.getContext("2d"), cursor = null;
  for (var i = 0; i < d.images; i++) img.add(new Option(d.index[i] + (d.labels[i] ? ": " + d.labels[i] : ""), i));
  for (var c = 0; c < C; c++) chan.add(new Option(String(c), c));
  d.names.concat(["reference"]).forEach(function (n) { show.add(new Option(n, n)); });
  d.names.forEach(function (n) { show.add(new Option("r: " + n + " vs reference", "r:" + n)); });
  img.value = d.start[0]; chan.value = d.start[1];
  canvas.width = W; canvas.height = H;
  function pick(m, idx) { return typeof m === "number" ? m : m[idx]; }
  function ratio(n, idx) { return pick(exact[n], idx) ? 0 : quotient(n, idx); }  // as the judge counts it
  function quotient(n, idx) {  // |a - reference| / (u G), as ParityReport.ratio_map
    var a = A[n][idx], b = A.reference[idx];
    if (a === b || (a !== a && b !== b)) return 0;
    var r = Math.abs(a - b) / (Number(d.u[n]) * A.gauge[idx]);
    return r !== r ? Infinity : r;
  }
  function base() { return (Number(img.value) * C + Number(chan.value)) * P; }
  function value(what, idx) { return what.slice(0, 2) === "r:" ? ratio(what.slice(2), idx) : A[what][idx]; }
  function draw() {
    var b0 = base(), what = show.value, isR = what.slice(0, 2) === "r:", v = new Float64Array(P);
    var lo = Infinity, hi = -Infinity, p;
    for (p = 0; p < P; p++) {
      v[p] = value(what, b0 + p);
      if (isFinite(v[p])) { lo = Math.min(lo, v[p]); hi = Math.max(hi, v[p]); }
    }
    var f = function (x) { return x; }, top = "";
    if (isR) {
      var n = what.slice(2), lim = 0;
      for (p = 0; p < P; p++) lim = Math.max(lim, pick(allowed[n], b0 + p));
      if (isFinite(lim) && lim > hi) { hi = lim; top = " (the allowed bound)"; }
      lo = 0; f = Math.log1p;
    }
    var map = isR ? MAGMA : VIRIDIS, out = ctx.createImageData(W, H), span = f(hi) - f(lo);
    for (p = 0; p < P; p++) {
      var rgb = [0, 255, 255];
      if (isFinite(v[p])) {
        var t = span > 0 ? (f(v[p]) - f(lo)) / span : 0.5, s = Math.min(Math.max(t, 0), 1) * 8;
        var j = Math.min(Math.floor(s), 7), q = s - j;
        rgb = [0, 1, 2].map(function (e) { return Math.round(map[j][e] + (map[j + 1][e] - map[j][e]) * q); });
      }
      out.data.set([rgb[0], rgb[1], rgb[2], 255], 4 * p);
    }
    ctx.putImageData(out, 0, 0);
    canvas.dataset.image = img.value; canvas.dataset.channel = chan.value; canvas.dataset.show = what;
    $("cb-legend").textContent = (isR ? "r on a log(1 + r) scale: " : what + ": ") + "dark " + fmt(lo, 4)
      + " to bright " + fmt(hi, 4) + top + "; cyan: inf or NaN.";
    if (cursor) readout(cursor[0], cursor[1]);
  }
  function fmt(x, digits) {  // digits: significant digits; 0: the shortest text that reads back as x
    if (x !== x) return "NaN";
    if (!isFinite(x)) return x > 0 ? "inf" : "-inf";
    return digits ? String(Number(x.toPrecision(digits))) : String(x);
  }
  function fmt32(x) {  // the shortest text that reads back as this float32
    if (!isFinite(x)) return fmt(x, 0);
    for (var p = 1; p < 9; p++) if (Math.fround(Number(x.toPrecision(p))) === x) return fmt(x, p);
    return fmt(x, 9);
  }
  function cell(tr, text, cls) {
    var td = document.createElement("td"); td.textContent = text; if (cls) td.className = cls; tr.appendChild(td);
  }
  function readout(y, x) {
    cursor = [y, x];
    var idx = base() + y * W + x, table = $("cb-readout");
    while (table.rows.length > 1) table.deleteRow(1);
    d.names.forEach(function (n) {
      var tr = table.insertRow(-1); tr.dataset.name = n;
      cell(tr, n); cell(tr, A[n] instanceof Float64Array ? fmt(A[n][idx], 0) : fmt32(A[n][idx]), "num value");
      cell(tr, fmt(ratio(n, idx), 4), "num ratio"); cell(tr, fmt(pick(allowed[n], idx), 4), "num allowed");
    });
    var tr = table.insertRow(-1); tr.dataset.name = "reference";
    cell(tr, "reference"); cell(tr, fmt(A.reference[idx], 0), "num value"); cell(tr, "-"); cell(tr, "-");
    var same = {};  // dtype -> the results that are the reference correctly rounded to it, here
    d.names.forEach(function (n) {
      if (pick(exact[n], idx) && quotient(n, idx) > 0) (same[d.dtypes[n]] = same[d.dtypes[n]] || []).push(n);
    });
    $("cb-note").textContent = Object.keys(same).map(function (t) {
      var ns = same[t];
      return ns.join(" and ") + (ns.length > 1 ? " are" : " is") + " the reference correctly rounded to " + t
        + " here, so r counts as 0 (|value - reference| / (u G) = " + fmt(quotient(ns[0], idx), 4) + "): no " + t
        + " value is closer.";
    }).join(" ");
    $("cb-where").textContent = "image " + img.value + ", channel " + chan.value + ", row " + y + ", column " + x
      + ": K = " + fmt(pick(terms, idx), 6) + " terms, G = " + fmt(A.gauge[idx], 6);
    var cur = $("cb-cursor");
    cur.hidden = false; cur.style.left = (100 * x / W) + "%"; cur.style.top = (100 * y / H) + "%";
    cur.style.width = (100 / W) + "%"; cur.style.height = (100 / H) + "%";
  }
  function at(e) {
    var r = canvas.getBoundingClientRect();
    var x = Math.floor((e.clientX - r.left) / r.width * W), y = Math.floor((e.clientY - r.top) / r.height * H);
    if (x >= 0 && x < W && y >= 0 && y < H) readout(y, x);
  }
  canvas.addEventListener("pointermove", at);
  canvas.addEventListener("pointerdown", at);
  canvas.addEventListener("keydown", function (e) {
    var m = {ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1]}[e.key];
    if (!m) return;
    e.preventDefault();
    var c0 = cursor || [0, 0];
    readout(Math.min(Math.max(c0[0] + m[0], 0), H - 1), Math.min(Math.max(c0[1] + m[1], 0), W - 1));
  });
  [img, chan, show].forEach(function (s) { s.addEventListener("change", draw); });
  root.hidden = false;
  draw();
})();
""".replace("%VIRIDIS%", _VIRIDIS).replace("%MAGMA%", _MAGMA)
