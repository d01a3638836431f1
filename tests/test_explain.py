"""`explain`: the arithmetic matches output_shape and the backends; every emitted snippet runs and matches."""

from __future__ import annotations

import re

import numpy as np
import pytest

import convbridge as cb
from convbridge.errors import ConvBridgeError

from cases import CONV, Case
from conftest import BACKENDS

torch = pytest.importorskip("torch")
jax = pytest.importorskip("jax")
flax = pytest.importorskip("flax")
equinox = pytest.importorskip("equinox")
import flax.linen  # noqa: E402
import jax.numpy as jnp  # noqa: E402

#: The convolutions explained: every padding form and mode, groups, layouts, ranks, unbatched input. CI runs
#: the snippets of the widest ones (each combines several features); the rest run with `make sweep`.
WIDE = ["tutorial", "strided_same_odd", "explain_odd_layouts", "reflect_asym_bias", "unbatched_hwc_reflect",
        "conv1d", "conv3d_pairs", "groups_strided", "depthwise"]
NAMES = WIDE + ["strided_same_lower", "dilation", "asymmetric_pairs", "replicate", "circular", "nhwc", "unbatched"]
SNIPPET_CASES = WIDE + [pytest.param(n, marks=pytest.mark.slow) for n in NAMES if n not in WIDE]
FRAMEWORK_NAMES = ["torch.nn.functional", "torch.nn", "jax.lax", "flax.linen", "equinox.nn"]


def _arrays(case, seed=0):
    x, w, b = case.arrays(seed=seed)
    return x, w, b, cb.explain(case.x, case.w, bias=case.bias, **case.kwargs)


def _namespace(x, w, b):
    return {"torch": torch, "jax": jax, "jnp": jnp, "flax": flax, "equinox": equinox, "np": np, "x": x, "w": w,
            "b": b}


def _run(snippet, x, w, b, *, eager=False):
    """Run a snippet as printed: torch ones eagerly, jax ones under jax.jit (one compile rather than one per
    eager op; ``eager=True`` runs them op by op, exactly as a user pasting them would)."""
    if snippet.framework.startswith("torch"):
        ns = _namespace(torch.from_numpy(x), torch.from_numpy(w), None if b is None else torch.from_numpy(b))
        exec(snippet.code, ns)  # noqa: S102 - the point is that the printed code runs as printed
        return ns["y"].detach().numpy()

    def run(x, w, b):
        ns = _namespace(x, w, b)
        exec(snippet.code, ns)  # noqa: S102
        return ns["y"]

    args = (jnp.asarray(x), jnp.asarray(w), None if b is None else jnp.asarray(b))
    return np.asarray(run(*args) if eager else jax.jit(run)(*args))


@pytest.mark.parametrize("name", NAMES)
def test_arithmetic_matches_torch_and_the_backends(name):
    case = CONV[name]
    x, w, b, e = _arrays(case)
    assert e.output_shape == case.expected_shape
    for backend in BACKENDS:
        assert tuple(cb.conv(x, w, b, backend=backend, **case.kwargs).shape) == e.output_shape
    for d in e.dims:
        assert int(re.search(r"\+ 1 = (\d+)", d.formula).group(1)) == d.out
    rows, inner, cols = e.matmul
    assert rows * e.spec.batch * cols * e.spec.groups == int(np.prod(e.output_shape))
    assert e.spec.macs == e.spec.batch * rows * inner * cols * e.spec.groups


@pytest.mark.parametrize("name", SNIPPET_CASES)
def test_every_snippet_runs_and_matches(name):
    case = CONV[name]
    x, w, b, e = _arrays(case, seed=1)
    assert [s.framework for s in e.snippets] == FRAMEWORK_NAMES
    for snippet in e.snippets:
        y = _run(snippet, x, w, b)
        assert y.shape == case.expected_shape, (snippet.framework, y.shape)
        verdict = cb.verify(y, x, w, b, name=snippet.framework, **case.kwargs).verdict
        assert verdict in ("identical", "equivalent"), f"{name} {snippet.framework}:\n{snippet.code}"


@pytest.mark.parametrize("name", ["tutorial", pytest.param("unbatched_hwc_reflect", marks=pytest.mark.slow)])
def test_snippets_run_eagerly_as_pasted(name):
    """The JAX snippets op by op, as a user pasting them runs them (slow in Equinox: one compile per op)."""
    case = CONV[name]
    x, w, b, e = _arrays(case, seed=2)
    for snippet in e.snippets[2:]:
        y = _run(snippet, x, w, b, eager=True)
        assert cb.verify(y, x, w, b, **case.kwargs).verdict in ("identical", "equivalent"), snippet.framework


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
    case = Case(layer, shape, kernel, e.spec.has_bias, kw)
    assert e.output_shape == case.expected_shape
    assert e.spec.has_bias == ("bias=False" not in layer)
    x, w, b = case.arrays()
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
    (lambda: cb.explain((1, 3, 8, 8), (4, 3, 3, 3), algorithm="matmul"), "conv has no argument 'algorithm'"),
    (lambda: cb.explain((1, 3, 8, 8), (4, 3, 3, 3), bias="yes"), "bias must be True or False"),
])
def test_explain_errors(call, pattern):
    with pytest.raises(ConvBridgeError, match=pattern):
        call()
