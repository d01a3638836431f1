"""Pictures of convolution as matrix multiplication: files are valid, sizes sane, bad input refused."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("matplotlib")
Image = pytest.importorskip("PIL.Image")

from convbridge.errors import ConvBridgeError  # noqa: E402
from convbridge.spec import make_conv_spec  # noqa: E402
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


def test_conv_matrix_by_definition_is_the_convolution(rng):
    # the helper the picture test relies on: C @ vec(x) equals a direct loop over the definition
    x, w = rng.normal(size=(1, 2, 5, 5)), rng.normal(size=(3, 2, 3, 3))
    C, y_shape = conv_matrix_by_definition(x.shape, w, 1)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    y = np.array([[[(xp[0, :, i:i + 3, j:j + 3] * w[o]).sum() for j in range(5)] for i in range(5)]
                  for o in range(3)])
    np.testing.assert_allclose(C @ x.ravel(), y.ravel())
    assert y_shape == (1, 3, 5, 5)


# --- draw_matmul -----------------------------------------------------------------------------------

def test_matmul_small_is_wide_and_tutorial_is_tall(tmp_path, rng):
    cols, kern = rng.normal(size=(16, 27)), rng.normal(size=(27, 2))
    small = draw_matmul(cols, kern, cols @ kern, tmp_path / "small.png", highlight_row=3, title="small")
    cols, kern = rng.random((784, 75)), rng.normal(size=(75, 4))
    big = draw_matmul(cols, kern, cols @ kern, tmp_path / "big.png", highlight_row=100)
    (sw, sh), (bw, bh) = png_size(small), png_size(big)
    assert sw > sh  # 16 x 27 next to 27 x 2: wider than tall
    assert bh > 1.3 * bw  # 784 rows: tall-skinny
    assert max(sw, sh, bw, bh) < 3000


def test_matmul_groups_as_blocks(tmp_path, rng):
    cols = [rng.normal(size=(9, 8)), rng.normal(size=(9, 8))]
    kern = [rng.normal(size=(8, 1)), rng.normal(size=(8, 1))]
    out = [c @ k for c, k in zip(cols, kern)]
    png_size(draw_matmul(cols, kern, out, tmp_path / "g.png"))


@pytest.mark.parametrize("shapes, match", [
    (((4, 5), (6, 2), (4, 2)), r"cols' columns \(5\) must equal the kernel's rows \(6\)"),
    (((4, 5), (5, 2), (4, 3)), r"out_matrix is 4 x 3 but cols @ kernel_matrix is 4 x 2"),
    (((4, 5, 1), (5, 2), (4, 2)), r"cols must be a non-empty 2-d matrix, got shape \(4, 5, 1\)"),
])
def test_matmul_rejects_shapes_that_do_not_chain(tmp_path, shapes, match):
    with pytest.raises(ConvBridgeError, match=match):
        draw_matmul(*(np.ones(s) for s in shapes), tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


def test_matmul_rejects_bad_row_and_mixed_groups(tmp_path):
    a, b = np.ones((4, 3)), np.ones((3, 2))
    with pytest.raises(ConvBridgeError, match=r"highlight_row 4 is out of range; .* use 0\.\.3"):
        draw_matmul(a, b, a @ b, tmp_path / "r.png", highlight_row=4)
    with pytest.raises(ConvBridgeError, match="all as 2-d arrays or all as sequences"):
        draw_matmul([a], b, a @ b, tmp_path / "m.png")
    with pytest.raises(ConvBridgeError, match="same P"):
        draw_matmul([a, np.ones((5, 3))], [b, b], [a @ b, np.ones((5, 2))], tmp_path / "p.png")


# --- draw_conv_matrix ------------------------------------------------------------------------------

def test_conv_matrix_dense_and_sparse(tmp_path, rng):
    C, y_shape = conv_matrix_by_definition((1, 2, 5, 5), rng.normal(size=(3, 2, 3, 3)), 1)
    assert C.shape == (75, 50)
    w, h = png_size(draw_conv_matrix(C, (1, 2, 5, 5), y_shape, tmp_path / "c.png", title="pad 1"))
    assert h > w  # 75 rows x 50 columns
    sparse = pytest.importorskip("scipy.sparse")
    png_size(draw_conv_matrix(sparse.csr_matrix(C), (1, 2, 5, 5), y_shape, tmp_path / "s.png"))


def test_conv_matrix_2000_square_pools_without_losing_nonzeros(tmp_path):
    from convbridge.viz.lowering import _raster

    rows, cols = np.arange(2000), np.arange(2000)
    vals = np.where(rows % 2 == 0, 1.0, -3.0)
    raster, factor = _raster(rows, cols, vals, (2000, 2000))
    assert factor == 3 and raster.shape == (667, 667)
    assert np.all(np.isfinite(np.diag(raster)))  # every block on the diagonal keeps a nonzero
    assert np.diag(raster)[0] == -3.0  # the largest magnitude wins
    assert np.isnan(raster[0, 5])  # zeros stay zero (drawn black)
    png_size(draw_conv_matrix(np.diag(vals), (1, 2, 1000), (1, 2, 1000), tmp_path / "big.png"))


def test_conv_matrix_rejects_wrong_shape(tmp_path):
    with pytest.raises(ConvBridgeError, match=r"C has shape \(10, 9\) but .* needs 9 x 9"):
        draw_conv_matrix(np.ones((10, 9)), (1, 1, 9), (1, 1, 9), tmp_path / "c.png")
    with pytest.raises(ConvBridgeError, match=r"canonical shape \(N, C, \*spatial\)"):
        draw_conv_matrix(np.ones((9, 9)), (9,), (1, 1, 9), tmp_path / "c.png")


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
    with pytest.raises(ConvBridgeError, match=r"fps must be a number in \(0, 50\]"):
        animate_conv(spec, tmp_path / "c.gif", fps=0)


def test_animate_conv_transpose_2d(tmp_path):
    path = animate_conv_transpose((3, 3), (3, 3), 2, 1, 1, 1, 2, 2, 1, tmp_path / "t.gif", max_frames=5)
    n, (w, h) = gif_info(path)
    assert 1 < n <= 5 and 200 <= w <= 3000 and 200 <= h <= 3000


def test_animate_conv_transpose_1d_groups_pairs(tmp_path):
    path = animate_conv_transpose((4,), (3,), 2, ((1, 2),), 1, 1, 2, 4, 2, tmp_path / "t1.gif")
    n, _ = gif_info(path)
    assert n == 2 * 4  # groups x input pixels


@pytest.mark.parametrize("args, match", [
    (((3, 3), (3, 3), 2, 1, 1, 2, 1, 1, 1), r"output_padding 2 on dim 0 must be smaller than stride \(2\)"),
    (((3,), (3,), 1, 3, 1, 0, 1, 1, 1), r"padding \(3, 3\) on dim 0 crops the whole output canvas of size 5"),
    (((3, 3), (3,), 1, 0, 1, 0, 1, 1, 1), "give one kernel size per spatial dim"),
    (((2, 2, 2), (1, 1, 1), 1, 0, 1, 0, 1, 1, 1), "1-d and 2-d convolutions, but this one has 3"),
    (((3,), (3,), 1, 0, 1, 0, 3, 2, 2), r"divisible by groups \(2\)"),
])
def test_animate_conv_transpose_rejects(tmp_path, args, match):
    with pytest.raises(ConvBridgeError, match=match):
        animate_conv_transpose(*args, tmp_path / "t.gif")


def test_import_loads_no_framework():
    code = ("import sys, convbridge.viz.lowering, convbridge.viz.animate; "
            "bad = [m for m in ('torch', 'jax', 'matplotlib.pyplot') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
