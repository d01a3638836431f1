"""`convbridge explain`: the printed arithmetic and calls, the pictures it draws, and clean failures."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from convbridge.cli import main

pytest.importorskip("matplotlib")
pytest.importorskip("scipy")
PNG, GIF = b"\x89PNG\r\n\x1a\n", b"GIF8"


def run(*args):
    return CliRunner().invoke(main, ["explain", *args], catch_exceptions=False)


def _image_size(path):
    from PIL import Image

    with Image.open(path) as im:
        return im.size, getattr(im, "n_frames", 1)


@pytest.mark.parametrize("frames", [pytest.param(None, marks=pytest.mark.slow), 6])
def test_tutorial_layer_with_pictures(tmp_path, frames):
    cap = () if frames is None else ("--max-frames", str(frames))
    result = run("32,3,32,32", "--layer", "Conv2d(3, 4, 5)", "--draw", str(tmp_path / "pics"), *cap)
    assert result.exit_code == 0, result.output
    for needle in ("H: (32 + 0 + 0 - 1*(5-1) - 1)/1 + 1 = 28", "gives 28x28x4", "(784 x 75) @ (75 x 4) per image",
                   "torch.nn.Conv2d(3, 4", "jax.lax.conv_general_dilated", "flax.linen.Conv", "equinox.nn.Conv"):
        assert needle in result.output, needle
    files = {p.name: p for p in (tmp_path / "pics").iterdir() if p.name != ".convbridge-report.json"}
    assert set(files) == {"matmul.png", "conv_matrix.png", "conv.gif", "conv_transpose.gif"}
    for name, path in files.items():
        assert path.read_bytes()[:4] == (PNG[:4] if name.endswith(".png") else GIF)
        (w, h), n_frames = _image_size(path)
        assert 300 <= w <= 3000 and 300 <= h <= 3000, (name, w, h)
        assert path.stat().st_size < 5_000_000
        if name.endswith(".gif"):  # 144 steps (12 x 12 positions), capped: an evenly spaced 7 x 8 or 2 x 3 grid
            assert n_frames == (56 if frames is None else frames), name


def test_grouped_strided_channels_last(tmp_path):
    result = run("2,20,20,8", "--kernel", "3,3,2,8", "--layout", "NHWC", "--groups", "4", "--stride", "2",
                 "--padding", "same", "--padding-mode", "reflect", "--bias", "--draw", str(tmp_path),
                 "--max-frames", "2")
    assert result.exit_code == 0, result.output
    assert "(0, 1)" in result.output and "XLA rule" in result.output  # 20 -> 10 with k=3, s=2: pad (0, 1)
    assert _image_size(tmp_path / "conv.gif")[1] == 2


def test_three_d_draws_only_matrices(tmp_path):
    result = run("1,2,6,6,6", "--kernel", "2,2,3,3,3", "--padding", "1", "--draw", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == [".convbridge-report.json", "conv_matrix.png", "matmul.png"]


def test_draw_never_touches_files_it_did_not_write(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "conv.gif").write_text("my own animation")
    result = run("1,1,5,5", "--kernel", "1,1,3,3", "--draw", str(tmp_path / "mine"))
    assert result.exit_code == 2 and "--draw" in result.output and "did not write (conv.gif)" in result.output
    assert (tmp_path / "mine" / "conv.gif").read_text() == "my own animation"
    assert not [p for p in tmp_path.iterdir() if p.name != "mine"]  # and no temporary folder left behind
    result = run("1,1,5,5", "--kernel", "1,1,3,3", "--draw", "")
    assert result.exit_code == 2 and "--draw is empty" in result.output


@pytest.mark.parametrize("args,pattern", [
    (("1,3,8,8",), "needs a kernel_shape"),
    (("1,3,8,8", "--kernel", "4,3,9,9"), "effective kernel size 9"),
    (("1,3,8,8", "--layer", "Linear(3, 4)"), "unknown layer 'Linear'"),
    (("1,3,8,x", "--kernel", "4,3,3,3"), "is not a shape"),
])
def test_explain_failures_are_clean(args, pattern):
    result = run(*args)
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert pattern in result.output, result.output


def test_transposed_layer():
    result = run("8,64,16,16", "--layer", "ConvTranspose2d(64, 32, 4, stride=2, padding=1, output_padding=1, groups=4)")
    assert result.exit_code == 0, result.output
    for needle in ("conv_transpose 2-d, torch's convention", "H: (16 - 1)*2 - 1 - 1 + 1*(4 - 1) + 1 + 1 = 33",
                   "(256 x 16) @ (16 x 128) per image per group", "torch.nn.ConvTranspose2d(64, 32",
                   "jax.lax.conv_general_dilated(", "feature_group_count=4", "lax.conv_transpose has no groups"):
        assert needle in result.output, needle


def test_transposed_kernel_with_op_and_output_padding():
    result = run("2,4,7", "--kernel", "4,2,3", "--op", "conv_transpose", "--stride", "2", "--padding", "1",
                 "--output-padding", "1", "--bias")
    assert result.exit_code == 0, result.output
    for needle in ("W: (7 - 1)*2 - 1 - 1 + 1*(3 - 1) + 1 + 1 = 14", "output (2, 2, 14)",
                   "jax.lax.conv_transpose(x, w, strides=(2,), padding=((1, 2),)", "output_padding=(1,)",
                   "flax.linen.ConvTranspose(features=2", "equinox.nn.ConvTranspose(num_spatial_dims=1"):
        assert needle in result.output, needle


def test_transposed_draw_points_to_the_convolution_it_is_the_gradient_of(tmp_path):
    layer = "ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1)"
    result = run("1,4,8,8", "--layer", layer, "--draw", str(tmp_path / "pics"))
    assert result.exit_code == 2 and "--draw" in result.output, result.output
    hint = "convbridge explain 1,2,16,16 --kernel 4,2,3,3 --stride 2,2 --padding 1:0,1:0 --dilation 1,1 --groups 1"
    assert hint in result.output and not (tmp_path / "pics").exists()
    conv = run(*hint.split()[2:])  # the suggested convolution maps the output back to the input's shape
    assert conv.exit_code == 0 and "output (1, 4, 8, 8)" in conv.output, conv.output


@pytest.mark.parametrize("args,pattern", [
    (("2,4,7", "--kernel", "4,2,3", "--op", "conv_transpose", "--padding-mode", "reflect"),
     "conv_transpose has no argument 'padding_mode'"),
    (("2,4,7", "--kernel", "4,2,3", "--output-padding", "1"), "conv has no argument 'output_padding'"),
    (("2,4,7", "--kernel", "4,2,3", "--op", "conv_transpose", "--stride", "2", "--output-padding", "2"),
     r"output_padding 2 on axis W must be < max(stride 2, dilation 1)"),
    (("2,4,7", "--kernel", "4,2,3", "--op", "deconv"), "Invalid value for '--op'"),
    (("1,4,8,8", "--layer", "ConvTranspose2d(4, 2, 3, stride=2)", "--stride", "3"),
     "stride=3 conflicts with stride=(2, 2) of layer"),
    (("1,4,8,8", "--layer", "ConvTranspose2d(4, 2, 3)", "--op", "conv"), "op='conv' conflicts with op='conv_transpose'"),
    (("1,4,8,8", "--layer", "ConvTranspose2d(4, 2, 3, bias=False)", "--bias"), "bias=True conflicts with bias=False"),
    (("1,4,8,8", "--layer", "ConvTranspose2d(4, 2, 3, padding='same')"), "ConvTranspose2d takes no padding string"),
    (("1,4,8,8", "--layer", "Conv2d(4, 2, 3, paddin=1)"), "did you mean 'padding'?"),
    (("1,4,8,8", "--layer", "ConvTranspose2d(4, 2, 3, stride=2, output_padding=2)"),
     "output_padding must be smaller than either stride or dilation"),
])
def test_transposed_failures_are_clean(args, pattern):
    result = run(*args)
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert pattern in result.output, result.output
