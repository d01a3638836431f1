"""Pictures of convolution as matrix multiplication: files are valid, sizes sane, bad input refused."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("matplotlib")
Image = pytest.importorskip("PIL.Image")

import convbridge as cb  # noqa: E402
from convbridge.errors import ConvBridgeError  # noqa: E402
from convbridge.spec import make_conv_spec, make_conv_transpose_spec  # noqa: E402
from convbridge.viz.lowering import (  # noqa: E402
    animate_conv,
    animate_conv_transpose,
    draw_conv_matrix,
    draw_matmul,
)

PNG, GIF = b"\x89PNG\r\n\x1a\n", (b"GIF87a", b"GIF89a")


def conv_matrix_by_definition(x_shape, w, pad):
    """C with vec(y) = C @ vec(x) for a stride-1 2-d conv, straight from the definition."""
    n, c, h, wd = x_shape
    o = w.shape[0]
    kh, kw = w.shape[2:]
    oh, ow = h + 2 * pad - kh + 1, wd + 2 * pad - kw + 1
    C = np.zeros((n * o * oh * ow, n * c * h * wd))
    for b, oo, i, j, cc, a, e in np.ndindex(n, o, oh, ow, c, kh, kw):
        r, s = i - pad + a, j - pad + e
        if 0 <= r < h and 0 <= s < wd:
            C[((b * o + oo) * oh + i) * ow + j, ((b * c + cc) * h + r) * wd + s] += w[oo, cc, a, e]
    return C, (n, o, oh, ow)


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG
    with Image.open(path) as im:
        return im.size


def gif_info(path) -> tuple[int, tuple[int, int]]:
    data = path.read_bytes()
    assert data[:6] in GIF
    assert len(data) < 5_000_000
    with Image.open(path) as im:
        return im.n_frames, im.size


def test_conv_matrix_is_the_definition(rng):
    """cb.conv_matrix (the matrix the picture draws) equals C built entry by entry from the definition, which
    itself reproduces a direct loop over the convolution."""
    x, w = rng.normal(size=(1, 2, 5, 5)), rng.normal(size=(3, 2, 3, 3))
    C, y_shape = conv_matrix_by_definition(x.shape, w, 1)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    y = np.array([[[(xp[0, :, i:i + 3, j:j + 3] * w[o]).sum() for j in range(5)] for i in range(5)]
                  for o in range(3)])
    np.testing.assert_allclose(C @ x.ravel(), y.ravel())
    assert y_shape == (1, 3, 5, 5)
    np.testing.assert_array_equal(cb.conv_matrix(x.shape, w, padding=1, dense=True), C)


# --- draw_matmul -----------------------------------------------------------------------------------

def test_matmul_small_is_wide_and_tutorial_is_tall(tmp_path, rng):
    small = cb.as_matmul(rng.normal(size=(1, 3, 6, 6)), rng.normal(size=(2, 3, 3, 3)))  # 16 x 27 @ 27 x 2
    small_png = draw_matmul(small, tmp_path / "small.png", highlight_row=3, title="small")
    big = cb.as_matmul(rng.random((1, 3, 32, 32)), rng.normal(size=(4, 3, 5, 5)))  # 784 x 75 @ 75 x 4
    big_png = draw_matmul(big, tmp_path / "big.png", highlight_row=100)
    (sw, sh), (bw, bh) = png_size(small_png), png_size(big_png)
    assert sw > sh  # 16 x 27 next to 27 x 2: wider than tall
    assert bh > 1.3 * bw  # 784 rows: tall-skinny
    assert max(sw, sh, bw, bh) < 3000


def test_matmul_groups_and_transposed_views(tmp_path, rng):
    grouped = cb.as_matmul(rng.normal(size=(1, 4, 5, 5)), rng.normal(size=(2, 2, 3, 3)), groups=2)
    assert grouped.lhs.shape == (2, 9, 18)
    png_size(draw_matmul(grouped, tmp_path / "g.png"))
    col2im = cb.as_matmul(rng.normal(size=(1, 2, 3, 3)), rng.normal(size=(2, 3, 2, 2)), op="conv_transpose", stride=2)
    png_size(draw_matmul(col2im, tmp_path / "t.png", highlight_row=4))


def test_matmul_rejects_a_row_outside_the_view(tmp_path, rng):
    view = cb.as_matmul(rng.normal(size=(1, 1, 4, 3)), rng.normal(size=(2, 1, 3, 3)))  # 2 x 1 output pixels
    with pytest.raises(ConvBridgeError, match=r"highlight_row 2 is out of range; .* use 0\.\.1"):
        draw_matmul(view, tmp_path / "r.png", highlight_row=2)
    assert not (tmp_path / "r.png").exists()


# --- draw_conv_matrix ------------------------------------------------------------------------------

def test_conv_matrix_is_drawn_from_the_spec(tmp_path, rng):
    w = rng.normal(size=(3, 2, 3, 3))
    spec = make_conv_spec((1, 2, 5, 5), w.shape, padding=1)  # C is 75 x 50
    wd, h = png_size(draw_conv_matrix(spec, w, tmp_path / "c.png", title="pad 1"))
    assert h > wd
    last = make_conv_spec((1, 5, 5, 2), (3, 3, 2, 3), padding=1, layout="NHWC")  # drawn channels-first
    png_size(draw_conv_matrix(last, np.moveaxis(w, (0, 1), (-1, -2)), tmp_path / "nhwc.png"))


def test_conv_matrix_refuses_what_it_cannot_build(tmp_path):
    spec = make_conv_spec((64, 64, 224, 224), (64, 64, 3, 3), padding=1)
    with pytest.raises(ConvBridgeError, match="meant for small inputs"):
        draw_conv_matrix(spec, np.ones((64, 64, 3, 3)), tmp_path / "c.png")
    assert not (tmp_path / "c.png").exists()


def test_conv_matrix_2000_square_pools_without_losing_nonzeros(tmp_path):
    from convbridge.viz.lowering import _raster

    rows, cols = np.arange(2000), np.arange(2000)
    vals = np.where(rows % 2 == 0, 1.0, -3.0)
    raster, factor = _raster(rows, cols, vals, (2000, 2000))
    assert factor == 3 and raster.shape == (667, 667)
    assert np.all(np.isfinite(np.diag(raster)))  # every block on the diagonal keeps a nonzero
    assert np.diag(raster)[0] == -3.0  # the largest magnitude wins
    assert np.isnan(raster[0, 5])  # zeros stay zero (drawn black)
    spec = make_conv_spec((1, 2, 1000), (2, 2, 1))  # C is 2000 x 2000: pooled 3 x 3
    png_size(draw_conv_matrix(spec, np.arange(1.0, 5.0).reshape(2, 2, 1), tmp_path / "big.png"))


# --- animations ------------------------------------------------------------------------------------

def test_animate_conv_2d_groups_reflect(tmp_path):
    spec = make_conv_spec((1, 4, 7, 7), (4, 2, 3, 3), stride=2, dilation=2, padding=1,
                          padding_mode="reflect", groups=2)
    n, (w, h) = gif_info(animate_conv(spec, tmp_path / "c.gif", max_frames=6))
    assert n == 6  # 2 groups x 9 positions, capped: 3 sampled positions per group
    assert 200 <= w <= 3000 and 200 <= h <= 3000


def test_animate_conv_every_step_when_it_fits(tmp_path):
    spec = make_conv_spec((1, 2, 4, 4), (2, 1, 3, 3), groups=2)
    n, _ = gif_info(animate_conv(spec, tmp_path / "c.gif"))
    assert n == 2 * 2 * 2  # groups x output positions


def test_animate_conv_1d(tmp_path):
    spec = make_conv_spec((1, 2, 9), (3, 2, 3), stride=2, padding=2, padding_mode="circular")
    n, (w, h) = gif_info(animate_conv(spec, tmp_path / "c1.gif", max_frames=3))
    assert n == 3 and 200 <= w <= 3000 and 200 <= h <= 3000


@pytest.mark.parametrize("x, w", [((1, 1, 3, 3, 3), (1, 1, 2, 2, 2)), ((1, 1, 2, 2, 2, 2), (1, 1, 1, 1, 1, 1))])
def test_animate_conv_refuses_3d_and_up(tmp_path, x, w):
    spec = make_conv_spec(x, w)
    with pytest.raises(ConvBridgeError, match=rf"1-d and 2-d convolutions, but this one has {len(x) - 2} spatial"):
        animate_conv(spec, tmp_path / "c.gif")


def test_animate_conv_rejects_bad_arguments(tmp_path):
    spec = make_conv_spec((1, 1, 5), (1, 1, 3))
    with pytest.raises(ConvBridgeError, match="needs a ConvSpec"):
        animate_conv((1, 1, 5), tmp_path / "c.gif")
    with pytest.raises(ConvBridgeError, match="max_frames must be >= 1, got 0"):
        animate_conv(spec, tmp_path / "c.gif", max_frames=0)
    for fps in (0, 0.001, 51):  # a GIF holds frame times up to 655 s
        with pytest.raises(ConvBridgeError, match=r"fps must be a number in \[0.01, 50\]"):
            animate_conv(spec, tmp_path / "c.gif", fps=fps)
    assert not (tmp_path / "c.gif").exists()


def test_animate_conv_transpose_2d(tmp_path):
    spec = make_conv_transpose_spec((1, 2, 3, 3), (2, 2, 3, 3), stride=2, padding=1, output_padding=1)
    n, (w, h) = gif_info(animate_conv_transpose(spec, tmp_path / "t.gif", max_frames=5))
    assert 1 < n <= 5 and 200 <= w <= 3000 and 200 <= h <= 3000


def test_animate_conv_transpose_1d_groups_pairs(tmp_path):
    spec = make_conv_transpose_spec((1, 2, 4), (2, 2, 3), stride=2, padding=((1, 2),), output_padding=1, groups=2)
    n, _ = gif_info(animate_conv_transpose(spec, tmp_path / "t1.gif"))
    assert n == 2 * 4  # groups x input pixels


def test_animate_the_adjoint_of_a_conv(tmp_path):
    conv = make_conv_spec((1, 2, 7, 6), (3, 2, 3, 3), stride=2, padding=1)
    n, _ = gif_info(animate_conv_transpose(conv.adjoint(), tmp_path / "adj.gif", max_frames=4))
    assert n == 4 and conv.adjoint().out_spatial == (7, 6)


@pytest.mark.parametrize("spec, match", [
    (make_conv_spec((1, 1, 5), (1, 1, 3)), "needs a ConvTransposeSpec"),
    (make_conv_transpose_spec((1, 1, 2, 2, 2), (1, 1, 1, 1, 1)), "1-d and 2-d convolutions, but this one has 3"),
    (make_conv_transpose_spec((1, 7, 3), (3, 3, 2), convention="jax", stride=2, padding=((-1, 4),)),
     "adds rows"),
])
def test_animate_conv_transpose_rejects(tmp_path, spec, match):
    with pytest.raises(ConvBridgeError, match=match):
        animate_conv_transpose(spec, tmp_path / "t.gif")


def test_import_loads_no_framework():
    code = ("import sys, convbridge.viz.lowering, convbridge.viz.animate; "
            "bad = [m for m in ('torch', 'jax', 'matplotlib.pyplot') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


# --- what the pictures refuse, and where they write ------------------------------------------------------------

def test_pictures_take_only_what_they_draw(tmp_path, rng):
    spec = make_conv_spec((1, 2, 5, 5), (3, 2, 3, 3), padding=1)
    w = rng.normal(size=(3, 2, 3, 3))
    with pytest.raises(ConvBridgeError, match="draw_matmul draws a MatmulView"):
        draw_matmul(spec, tmp_path / "m.png")
    with pytest.raises(ConvBridgeError, match="draw_conv_matrix draws a ConvSpec"):
        draw_conv_matrix(spec.adjoint(), w, tmp_path / "c.png")
    with pytest.raises(ConvBridgeError, match=r"kernel has shape \(3, 3, 2, 3\) but the spec's kernel is "
                                              r"\(3, 2, 3, 3\) \(layout OIHW\)"):
        draw_conv_matrix(spec, w.transpose(2, 3, 1, 0), tmp_path / "c.png")
    with pytest.raises(ConvBridgeError, match="annotate must be None"):
        draw_matmul(cb.as_matmul(rng.normal(size=(1, 2, 5, 5)), w), tmp_path / "m.png", annotate="x")
    with pytest.raises(ConvBridgeError, match="nothing to draw"):
        draw_matmul(cb.as_matmul(rng.normal(size=(0, 2, 5, 5)), w), tmp_path / "m.png")
    assert list(tmp_path.iterdir()) == []


def test_pictures_write_exactly_the_path_given(tmp_path, rng):
    view = cb.as_matmul(rng.normal(size=(1, 1, 4, 4)), rng.normal(size=(1, 1, 3, 3)))
    png = draw_matmul(view, tmp_path / "new" / "folder" / "m_noext")
    assert png == tmp_path / "new" / "folder" / "m_noext" and png_size(png)  # no suffix added, parents made
    gif = animate_conv(make_conv_spec((1, 1, 5), (1, 1, 3)), tmp_path / "anim", max_frames=2)
    assert gif_info(gif)[0] == 2
    with pytest.raises(ConvBridgeError, match="is a folder"):
        draw_matmul(view, tmp_path / "new")
    assert sorted(p.name for p in (tmp_path / "new" / "folder").iterdir()) == ["m_noext"]  # no temporaries left
