"""`explain`: the arithmetic matches output_shape and the backends; every emitted snippet runs and matches."""

from __future__ import annotations

import re

import numpy as np
import pytest

import convbridge as cb
from convbridge.errors import ArgumentError, ConvBridgeError

from conftest import BACKENDS

torch = pytest.importorskip("torch")
jax = pytest.importorskip("jax")
flax = pytest.importorskip("flax")
equinox = pytest.importorskip("equinox")
import flax.linen  # noqa: E402
import jax.numpy as jnp  # noqa: E402

# (input shape, kernel shape, bias, conv kwargs)
CASES = {
    "tutorial": ((32, 3, 32, 32), (4, 3, 5, 5), False, {}),
    "strided_same_odd": ((2, 3, 15, 14), (4, 3, 7, 4), True, dict(stride=2, padding="same")),
    "same_lower": ((1, 2, 10, 11), (3, 2, 4, 3), False, dict(stride=3, padding="same_lower")),
    "dilation": ((2, 2, 13, 11), (3, 2, 3, 3), True, dict(dilation=(2, 3), padding=2)),
    "asymmetric": ((2, 2, 8, 9), (3, 2, 3, 3), True, dict(padding=((0, 2), (3, 1)))),
    "groups": ((2, 6, 8, 8), (4, 3, 3, 3), True, dict(groups=2, padding=1, stride=(1, 2))),
    "depthwise": ((2, 4, 9, 9), (8, 1, 3, 3), False, dict(groups=4, padding="same")),
    "reflect_asym": ((1, 2, 7, 8), (3, 2, 3, 3), True, dict(padding=((2, 1), (1, 2)), padding_mode="reflect")),
    "replicate": ((1, 2, 5, 6), (3, 2, 3, 3), False, dict(padding=2, padding_mode="replicate")),
    "circular": ((1, 2, 5, 6), (3, 2, 3, 3), False, dict(padding=(2, 1), padding_mode="circular")),
    "nhwc": ((2, 9, 10, 3), (3, 3, 3, 4), True, dict(layout="NHWC", stride=2, padding="same")),
    "odd_layouts": ((9, 2, 10, 3), (4, 3, 3, 2), False, dict(layout=("HNWC", "OHIW", "NCWH"), stride=(2, 1),
                                                              padding=((1, 0), (0, 2)))),
    "unbatched": ((3, 9, 9), (4, 3, 3, 3), True, dict(padding=1)),
    "unbatched_nhwc_reflect": ((9, 8, 3), (3, 3, 3, 4), False, dict(layout="HWC", padding=1,
                                                                     padding_mode="reflect")),
    "conv1d": ((2, 3, 20), (4, 3, 5), True, dict(stride=2, padding="same", dilation=2)),
    "conv3d": ((1, 2, 6, 7, 8), (3, 2, 3, 2, 3), True, dict(stride=(1, 2, 1), padding=((1, 0), (0, 1), (1, 1)))),
}


def _arrays(x_shape, w_shape, bias, kw, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    e = cb.explain(x_shape, w_shape, bias=bias, **kw)
    b = rng.standard_normal(e.spec.out_channels).astype(np.float32) if bias else None
    return x, w, b, e


def _run(snippet, x, w, b):
    if snippet.framework.startswith("torch"):
        conv = torch.from_numpy
    else:
        conv = jnp.asarray
    ns = {"torch": torch, "jax": jax, "jnp": jnp, "flax": flax, "equinox": equinox, "np": np,
          "x": conv(x), "w": conv(w), "b": None if b is None else conv(b)}
    exec(snippet.code, ns)  # noqa: S102 - the point is that the printed code runs as printed
    y = ns["y"]
    return y.detach().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)


@pytest.mark.parametrize("name", sorted(CASES))
def test_arithmetic_matches_output_shape_and_backends(name):
    x_shape, w_shape, bias, kw = CASES[name]
    x, w, b, e = _arrays(x_shape, w_shape, bias, kw)
    assert e.output_shape == cb.output_shape(x_shape, w_shape, **kw)
    for backend in BACKENDS:
        if backend == "torch" and e.spec.nsp > 3:
            continue
        assert tuple(cb.conv(x, w, b, backend=backend, **kw).shape) == e.output_shape
    for d in e.dims:
        assert int(re.search(r"\+ 1 = (\d+)", d.formula).group(1)) == d.out
    rows, inner, cols = e.matmul
    assert rows * e.spec.batch * cols * e.spec.groups == int(np.prod(e.output_shape))
    assert e.spec.macs == e.spec.batch * rows * inner * cols * e.spec.groups


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_snippet_runs_and_matches(name):
    x_shape, w_shape, bias, kw = CASES[name]
    x, w, b, e = _arrays(x_shape, w_shape, bias, kw, seed=1)
    frameworks = [s.framework for s in e.snippets]
    assert frameworks == ["torch.nn.functional", "torch.nn", "jax.lax", "flax.linen", "equinox.nn"]
    for snippet in e.snippets:
        y = _run(snippet, x, w, b)
        assert y.shape == e.output_shape, (snippet.framework, y.shape)
        verdict = cb.verify(y, x, w, b, name=snippet.framework, **kw).verdict
        assert verdict in ("identical", "equivalent"), f"{name} {snippet.framework}:\n{snippet.code}"


def test_tutorial_text():
    text = str(cb.explain((32, 3, 32, 32), (4, 3, 5, 5)))
    for needle in ("H: (32 + 0 + 0 - 1*(5-1) - 1)/1 + 1 = 28", "32x32x3 convolved with 4 filters of 5x5 gives 28x28x4",
                   "(784 x 75) @ (75 x 4) per image", "MACs: 7,526,400", "parameters: 300",
                   "receptive field: 5x5", "torch.nn.functional.conv2d(", "torch.nn.Conv2d(3, 4",
                   "jax.lax.conv_general_dilated(", "dimension_numbers=('NCHW', 'OIHW', 'NCHW')",
                   "flax.linen.Conv(features=4", "equinox.nn.Conv(num_spatial_dims=2"):
        assert needle in text, needle
    assert "<pre>" in cb.explain((1, 3, 8, 8), (2, 3, 3, 3))._repr_html_()


def test_same_and_asymmetric_notes():
    e = cb.explain((8, 3, 224, 224), (64, 3, 7, 7), stride=2, padding="same")
    assert e.dims[0].lo == 2 and e.dims[0].hi == 3  # PITFALLS trap 1: not torch's (3, 3)
    assert "XLA rule" in e.padding_note and "asymmetric" in e.padding_note
    torch_f = e.snippets[0]
    assert "torch.nn.functional.pad(x, (2, 3, 2, 3))" in torch_f.code and "asymmetric" in torch_f.note
    assert "ZeroPad2d((2, 3, 2, 3))" in e.snippets[1].code


@pytest.mark.parametrize("layer,kernel,kw", [
    ("Conv2d(3, 4, 5)", (4, 3, 5, 5), dict(stride=1, padding=0, groups=1)),
    ("torch.nn.Conv2d(3, 8, (3, 5), stride=2, padding=(1, 2), dilation=(1, 2), padding_mode='circular')",
     (8, 3, 3, 5), dict(stride=2, padding=(1, 2), dilation=(1, 2), padding_mode="circular")),
    ("nn.Conv1d(4, 4, 3, groups=4, padding='same', bias=False)", (4, 1, 3), dict(groups=4, padding="same")),
])
def test_layer_descriptions(layer, kernel, kw):
    shape = (2, int(layer.split("(")[1].split(",")[0]), *([9] * (len(kernel) - 2)))
    e = cb.explain(shape, layer=layer)
    assert e.kernel_shape == kernel
    assert e.output_shape == cb.output_shape(shape, kernel, **kw)
    assert e.spec.has_bias == ("bias=False" not in layer)
    x, w, b, _ = _arrays(shape, kernel, e.spec.has_bias, kw)
    for snippet in e.snippets:
        assert cb.verify(_run(snippet, x, w, b), x, w, b, **kw).verdict in ("identical", "equivalent")


@pytest.mark.parametrize("call,pattern", [
    (lambda: cb.explain((1, 3, 8, 8), layer="Linear(3, 4)"), "unknown layer 'Linear'"),
    (lambda: cb.explain((1, 3, 8, 8), layer="Conv2d(3, 4"), "cannot read layer"),
    (lambda: cb.explain((1, 3, 8, 8), layer="Conv2d(3, 4, k)"), "cannot read layer"),
    (lambda: cb.explain((1, 3, 8, 8), layer="Conv2d(3, 4, 3, colour=1)"), "unknown arguments"),
    (lambda: cb.explain((1, 3, 8, 8), layer="Conv2d(3, 4)"), "lacks"),
    (lambda: cb.explain((1, 3, 8, 8)), "needs a kernel_shape"),
    (lambda: cb.explain((1, 3, 8, 8), (4, 3, 3, 3), layer="Conv2d(3, 4, 3)"), "not both"),
    (lambda: cb.explain((1, 3, 8, 8), (4, 3, 9, 9)), "effective kernel size 9"),
])
def test_explain_errors(call, pattern):
    with pytest.raises(ConvBridgeError, match=pattern):
        call()
    assert issubclass(ArgumentError, ConvBridgeError)
