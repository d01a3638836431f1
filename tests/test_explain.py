"""`explain`: the arithmetic matches output_shape and the backends; every emitted snippet runs and matches, for
convolutions and transposed convolutions; torch layer strings are read by torch's own rules."""

from __future__ import annotations

import re

import numpy as np
import pytest

import convbridge as cb
from convbridge.errors import ConvBridgeError
from convbridge.explain import parse_layer, read_layer

from cases import CONV, Case, T, table
from conftest import BACKENDS

torch = pytest.importorskip("torch")
jax = pytest.importorskip("jax")
flax = pytest.importorskip("flax")
equinox = pytest.importorskip("equinox")
import flax.linen  # noqa: E402
import flax.nnx  # noqa: E402
import jax.numpy as jnp  # noqa: E402

#: The convolutions explained: every padding form and mode, groups, layouts, ranks, unbatched input. CI runs
#: the snippets of the widest ones (each combines several features); the rest run with `make sweep`.
WIDE = ["tutorial", "strided_same_odd", "explain_odd_layouts", "reflect_asym_bias", "unbatched_hwc_reflect",
        "conv1d", "conv3d_pairs", "groups_strided", "depthwise"]
NAMES = WIDE + ["strided_same_lower", "dilation", "asymmetric_pairs", "replicate", "circular", "nhwc", "unbatched"]
SNIPPET_CASES = WIDE + [pytest.param(n, marks=pytest.mark.slow) for n in NAMES if n not in WIDE]
FRAMEWORK_NAMES = ["torch.nn.functional", "torch.nn", "jax.lax", "flax.linen", "flax.nnx", "equinox.nn"]


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


def _run_all(snippets, x, w, b):
    """``[_run(s, x, w, b) for s in snippets]``, with the jax snippets traced side by side into one jax.jit: one XLA
    compile per call rather than one per framework. A snippet that fails names itself."""
    jax_ones = [s for s in snippets if not s.framework.startswith("torch")]

    def run(x, w, b):
        ys = []
        for snippet in jax_ones:
            ns = _namespace(x, w, b)
            try:
                exec(snippet.code, ns)  # noqa: S102 - the point is that the printed code runs as printed
            except Exception as error:  # noqa: BLE001 - re-raised, naming the snippet
                raise AssertionError(f"the {snippet.framework} snippet fails:\n{snippet.code}") from error
            ys.append(ns["y"])
        return ys

    args = (jnp.asarray(x), jnp.asarray(w), None if b is None else jnp.asarray(b))
    traced = iter(jax.jit(run)(*args) if jax_ones else [])
    return [_run(s, x, w, b) if s.framework.startswith("torch") else np.asarray(next(traced)) for s in snippets]


@pytest.mark.parametrize("name", NAMES)
def test_arithmetic_matches_torch(name):
    case = CONV[name]
    e = cb.explain(case.x, case.w, bias=case.bias, **case.kwargs)
    assert e.output_shape == case.expected_shape
    for d in e.dims:
        assert int(re.search(r"\+ 1 = (\d+)", d.formula).group(1)) == d.out
    rows, inner, cols = e.matmul
    assert rows * e.spec.batch * cols * e.spec.groups == int(np.prod(e.output_shape))
    assert e.spec.macs == e.spec.batch * rows * inner * cols * e.spec.groups


@pytest.mark.parametrize("name", SNIPPET_CASES)
def test_the_backends_compute_the_explained_shape(name):
    """Every backend's result has the shape explain prints (each a compile on JAX: CI runs the widest cases, `make
    sweep` the rest; test_differential's case table runs every one of them on every backend against the oracle)."""
    case = CONV[name]
    x, w, b, e = _arrays(case)
    for backend in BACKENDS:
        assert tuple(cb.conv(x, w, b, backend=backend, **case.kwargs).shape) == e.output_shape


@pytest.mark.parametrize("name", SNIPPET_CASES)
def test_every_snippet_runs_and_matches(name):
    case = CONV[name]
    x, w, b, e = _arrays(case, seed=1)
    assert [s.framework for s in e.snippets] == FRAMEWORK_NAMES
    for snippet, y in zip(e.snippets, _run_all(e.snippets, x, w, b)):
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
    for snippet, y in zip(e.snippets, _run_all(e.snippets, x, w, b)):
        assert cb.verify(y, x, w, b, **kw).verdict in ("identical", "equivalent"), snippet.framework


@pytest.mark.parametrize("call,pattern", [
    (lambda: cb.explain((1, 3, 8, 8), layer="Linear(3, 4)"), "unknown layer 'Linear'"),
    (lambda: cb.explain((1, 3, 8, 8), layer="Conv2d(3, 4"), "cannot read layer"),
    (lambda: cb.explain((1, 3, 8, 8), layer="Conv2d(3, 4, k)"), "cannot read layer"),
    (lambda: cb.explain((1, 3, 8, 8), layer="Conv2d(3, 4, 3, colour=1)"), "Conv2d has no argument 'colour'"),
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


# --- transposed convolutions (torch's convention) -------------------------------------------------------------

#: Transposed convolutions explained: ranks, strides, crops as pairs, output_padding (also >= stride, with a
#: larger dilation), dilation, groups and depthwise, bias, channels-last and odd layouts, unbatched input, crops
#: beyond the kernel's reach (negative lax padding). CI runs the widest; the rest run with `make sweep`.
TRANSPOSED = table(
    T("t2d_odd_layouts", (5, 2, 6, 3), (4, 3, 3, 2), True, dict(layout=("HNWC", "OHIW", "NCWH"), stride=(2, 1),
                                                                 padding=((1, 0), (0, 2)), output_padding=(1, 0))),
    T("t1d_op_beyond_stride", (2, 3, 7), (3, 2, 3), False, dict(stride=2, dilation=3, padding=1, output_padding=2)),
    T("t3d_pairs_dilated", (1, 2, 4, 3, 5), (2, 3, 2, 3, 2), True,
      dict(stride=(2, 1, 2), padding=((1, 0), (0, 2), (1, 1)), dilation=(1, 2, 1), output_padding=(1, 0, 0))),
    T("t2d_groups_bias", (2, 8, 5, 6), (8, 3, 3, 4), True, dict(groups=4, stride=2, padding=1, output_padding=1)),
    # grouped at stride 1: Flax's Conv with input_dilation would read back as a plain conv, so convbridge.nn's layer
    T("t1d_groups_stride1_op", (2, 4, 7), (4, 3, 3), True, dict(groups=2, dilation=2, padding=1, output_padding=1)),
    T("unbatched_hwc_same", (6, 5, 3), (3, 3, 3, 2), False, dict(layout="HWC", stride=2, padding="same")),
    T("depthwise_crop_beyond_reach", (2, 4, 5, 6), (4, 1, 1, 3), False, dict(groups=4, stride=(2, 3),
                                                                              padding=(1, 0))),
    T("t1d_plain_bias", (2, 3, 9), (3, 4, 5), True, dict(stride=3, padding=2, output_padding=2, dilation=2)),
    T("t2d_depthwise_multiplier", (1, 3, 5, 5), (3, 2, 3, 3), True, dict(groups=3, stride=2, padding=(0, 1),
                                                                         output_padding=(1, 0))),
    T("t2d_output_size", (1, 4, 7, 7), (4, 2, 3, 3), False, dict(stride=2, padding=1, output_size=(14, 13))),
    T("t2d_same_lower_nhwc", (2, 6, 5, 3), (4, 4, 3, 2), True, dict(layout="NHWC", stride=(1, 2),
                                                                    padding="same_lower")),
    T("t3d_ndhwc_groups", (1, 3, 5, 4, 4), (2, 2, 2, 4, 1), False, dict(layout="NDHWC", groups=2, dilation=2,
                                                                         stride=2)),
    T("unbatched_chw_bias", (3, 6, 6), (3, 2, 3, 3), True, dict(stride=2, padding=((0, 1), (2, 0)))),
    T("t2d_op_beyond_stride_groups", (1, 4, 5, 5), (4, 2, 3, 3), True, dict(groups=2, stride=2, dilation=3,
                                                                            padding=2, output_padding=2)),
    T("unbatched_depthwise", (4, 5, 5), (4, 1, 3, 3), True, dict(groups=4, stride=2, padding=1, output_padding=1)),
    T("unbatched_hwc_op_beyond_stride", (5, 6, 2), (3, 3, 2, 2), False, dict(layout="HWC", stride=(1, 2),
                                                                             dilation=(2, 1), output_padding=(1, 0))),
)
T_WIDE = ["t2d_odd_layouts", "t1d_op_beyond_stride", "t3d_pairs_dilated", "t2d_groups_bias", "unbatched_hwc_same",
          "depthwise_crop_beyond_reach", "t1d_groups_stride1_op"]
T_SNIPPET_CASES = T_WIDE + [pytest.param(n, marks=pytest.mark.slow) for n in TRANSPOSED if n not in T_WIDE]
NN = "convbridge.nn"  # torch's arguments in Flax and Equinox, where those cannot state the configuration


def _t_arrays(case, seed=0):
    x, w, b = case.arrays(seed=seed)
    return x, w, b, cb.explain(case.x, case.w, op="conv_transpose", bias=case.bias, **case.kwargs)


def _judge(y, x, w, b, case, framework):
    verdict = cb.verify(y, x, w, b, op="conv_transpose", name=framework, **case.kwargs).verdict
    assert verdict in ("identical", "equivalent"), framework


@pytest.mark.parametrize("name", list(TRANSPOSED))
def test_transposed_arithmetic(name):
    """The printed numbers are the oracle's output size; the two matmul views count the same products."""
    case = TRANSPOSED[name]
    e = cb.explain(case.x, case.w, op="conv_transpose", bias=case.bias, **case.kwargs)
    assert e.output_shape == case.expected_shape
    for d in e.dims:
        assert int(re.search(r"\+ 1 = (-?\d+)$", d.formula).group(1)) == d.out
        dilated, a, b, reach, out = map(int, re.search(r"-> (\d+), .*: \d+ \+ (-?\d+) \+ (-?\d+) - (\d+) = (\d+)",
                                                       d.conv_view).groups())
        assert (a, b) == d.lax_padding and dilated + a + b - reach == out == d.out
    s, (rows, inner, cols) = e.spec, e.matmul
    assert s.batch * s.groups * rows * inner * cols == s.macs
    assert e.conv_matmul[0] * s.batch * e.conv_matmul[2] * s.groups == int(np.prod(e.output_shape))
    assert e.params == int(np.prod(case.w)) + (s.out_channels if case.bias else 0)


def _expected_frameworks(spec):
    lax = (["jax.lax.conv_transpose"] if spec.groups == 1 else []) + ["jax.lax.conv_general_dilated"]
    return ["torch.nn.functional", "torch.nn", *lax, "flax.linen", "flax.nnx", "equinox.nn"]


@pytest.mark.parametrize("name", T_SNIPPET_CASES)
def test_every_transposed_snippet_runs_and_matches(name):
    case = TRANSPOSED[name]
    x, w, b, e = _t_arrays(case, seed=1)
    assert [s.framework for s in e.snippets] == _expected_frameworks(e.spec)
    for snippet in e.snippets:
        if NN in snippet.code:  # run by test_convbridge_nn_snippets_run_and_match
            assert e.spec.groups > 1 or any(a.output_padding >= a.stride for a in e.spec.axes), snippet.framework
    own = [s for s in e.snippets if NN not in s.code]
    for snippet, y in zip(own, _run_all(own, x, w, b)):
        assert y.shape == case.expected_shape, (snippet.framework, y.shape)
        _judge(y, x, w, b, case, f"{name} {snippet.framework}:\n{snippet.code}")


NN_CASES = [n for n in TRANSPOSED if any(NN in s.code for s in _t_arrays(TRANSPOSED[n])[3].snippets)]


@pytest.mark.parametrize("name", [n if n in T_WIDE else pytest.param(n, marks=pytest.mark.slow) for n in NN_CASES])
def test_convbridge_nn_snippets_run_and_match(name):
    for module in ("linen", "nnx", "equinox"):
        pytest.importorskip(f"convbridge.nn.{module}")
    case = TRANSPOSED[name]
    x, w, b, e = _t_arrays(case, seed=3)
    for snippet in (s for s in e.snippets if NN in s.code):
        _judge(_run(snippet, x, w, b), x, w, b, case, f"{name} {snippet.framework}:\n{snippet.code}")


@pytest.mark.slow
def test_transposed_snippets_run_eagerly_as_pasted():
    case = TRANSPOSED["t2d_odd_layouts"]
    x, w, b, e = _t_arrays(case, seed=2)
    for snippet in e.snippets[2:]:
        _judge(_run(snippet, x, w, b, eager=True), x, w, b, case, snippet.framework)


def test_transposed_text():
    e = cb.explain((8, 64, 16, 16), layer="ConvTranspose2d(64, 32, 4, stride=2, padding=1, output_padding=1, "
                                          "groups=4)")
    text = str(e)
    for needle in ("out = (n - 1)*stride - lo - hi + dilation*(k - 1) + output_padding + 1",
                   "H: (16 - 1)*2 - 1 - 1 + 1*(4 - 1) + 1 + 1 = 33", "gives 33x33x32", "H (1, 1), W (1, 1)",
                   "padded (a, b) = (2, 3), D = 1*(4 - 1) = 3: 31 + 2 + 3 - 3 = 33",
                   "(256 x 16) @ (16 x 128) per image per group, 4 groups", "MACs: 16,777,216",
                   "parameters: 8,224", "torch.nn.ConvTranspose2d(64, 32, kernel_size=(4, 4)",
                   "lax.conv_transpose has no groups", "w = jnp.swapaxes(w, 1, 2)", "feature_group_count=4",
                   "flax.linen.Conv(features=32, kernel_size=(4, 4), strides=(1, 1), padding=((2, 3), (2, 3)), "
                   "input_dilation=(2, 2)", "feature_group_count=4, use_bias=True", "equinox.nn.ConvTranspose("):
        assert needle in text, needle
    assert "jax.lax.conv_transpose(" not in text and "'SAME'" not in text
    assert "<pre>" in e._repr_html_()
    plain = str(cb.explain((1, 4, 7, 7), (4, 2, 3, 3), op="conv_transpose", stride=2, padding=1, output_padding=1))
    assert "jax.lax.conv_transpose(x, w, strides=(2, 2), padding=((1, 2), (1, 2))" in plain
    assert "flax.nnx.ConvTranspose(in_features=4, out_features=2" in plain and NN not in plain


def test_asymmetric_crops_slice_in_torch_and_beyond_stride_leaves_equinox():
    e = cb.explain((1, 2, 6, 5), (2, 3, 3, 2), op="conv_transpose", stride=(2, 3), padding=((0, 2), (1, 0)))
    torch_f, torch_m = e.snippets[:2]
    for sn in (torch_f, torch_m):
        assert "padding=(0, 0)" in sn.code and "y = y[:, :, 0:11, 1:14]" in sn.code and "slice" in sn.note
    e = cb.explain((1, 2, 6), (2, 3, 3), op="conv_transpose", stride=2, dilation=3, output_padding=2)
    eqx_sn = e.snippets[-1]  # Equinox's own layer, the output_padding moved into the high crop
    assert "equinox.nn.ConvTranspose(" in eqx_sn.code and "convbridge.nn" not in eqx_sn.code
    assert "padding=((0, -2),), output_padding=(0,)" in eqx_sn.code and "moves into the high crop" in eqx_sn.note
    grouped_s1 = cb.explain((1, 4, 6), (4, 3, 3), op="conv_transpose", groups=2)  # stride 1: convbridge's layer
    assert "convbridge.nn.linen.ConvTranspose(" in str(grouped_s1)


# --- layer strings: torch's own rules -------------------------------------------------------------------------

def _torch_layer(text):
    names = {n: getattr(torch.nn, n) for n in dir(torch.nn) if n.startswith("Conv")}
    return eval(text, {"torch": torch, "nn": torch.nn, **names})  # noqa: S307 - literal test strings


@pytest.mark.parametrize("text,in_spatial", [
    ("ConvTranspose2d(64, 32, 4, stride=2, padding=1, output_padding=1, groups=4)", (5, 6)),
    ("nn.ConvTranspose1d(4, 6, 3, 2, 1, 1, 2, False, 1)", (7,)),  # torch's positional order
    ("torch.nn.ConvTranspose3d(2, 2, (2, 3, 1), stride=(2, 1, 3), dilation=(1, 3, 1), output_padding=(1, 2, 0))",
     (3, 4, 2)),
    ("ConvTranspose2d(3, 3, 3, stride=1, dilation=2, output_padding=1, bias=False, padding=(0, 2))", (5, 5)),
    ("Conv2d(3, 8, (3, 5), 2, 1, 1, 1, True, 'reflect')", (9, 9)),
    ("nn.Conv1d(4, 4, 3, groups=4, padding='same', dilation=2, bias=False)", (9,)),
    ("torch.nn.Conv3d(2, 4, 3, stride=(1, 2, 1), padding='valid', device='cpu', dtype=torch.float32)", (5, 6, 5)),
    ("Conv2d(3, 6, 4, padding='same', padding_mode='circular', groups=3)", (6, 7)),
])
def test_read_layer_agrees_with_torch(text, in_spatial):
    """Every field is what torch's module holds, and explain's output shape is what the module computes."""
    layer, m = read_layer(text), _torch_layer(text)
    assert (layer.in_channels, layer.out_channels, layer.groups) == (m.in_channels, m.out_channels, m.groups)
    assert (layer.kernel_size, layer.stride, layer.dilation) == (m.kernel_size, m.stride, m.dilation)
    assert layer.output_padding == (m.output_padding if layer.kind == "ConvTranspose" else (0,) * len(in_spatial))
    assert layer.weight_shape == tuple(m.weight.shape) and layer.bias == (m.bias is not None)
    assert layer.padding_mode == m.padding_mode
    x = torch.zeros(2, layer.in_channels, *in_spatial)
    assert cb.explain(tuple(x.shape), layer=text).output_shape == tuple(m(x).shape)


def _torch_rejects(text, in_spatial):
    try:
        m = _torch_layer(text)
        m(torch.zeros(1, m.in_channels, *in_spatial))
    except Exception:  # noqa: BLE001 - torch's own exception, whatever its type
        return True
    return False


@pytest.mark.parametrize("text,pattern", [
    ("Conv2d(3, 8, 3, stride=2, padding='same')", "not supported for strided convolutions"),
    ("Conv2d(3, 8, 3, padding='SAME')", "invalid padding string 'SAME'"),
    ("Conv2d(3, 8, 3, padding='same_lower')", "invalid padding string 'same_lower'"),
    ("ConvTranspose2d(3, 8, 3, padding='same')", "ConvTranspose2d takes no padding string"),
    ("ConvTranspose2d(3, 8, 3, padding_mode='reflect')", "only 'zeros' padding mode is supported for ConvTranspose2d"),
    ("Conv2d(3, 8, 3, padding_mode='Zeros')", "padding_mode must be one of"),
    ("ConvTranspose2d(4, 4, 3, stride=2, output_padding=2)", r"output_padding 2 on spatial dim 0 with stride 2 and "
                                                             r"dilation 1; allowed 0\.\.1"),
    ("ConvTranspose2d(4, 4, 3, output_padding=(0, 1))", "smaller than either stride or dilation"),
    ("ConvTranspose2d(4, 4, 3, output_padding=-1)", "output_padding must be >= 0"),
    ("Conv2d(6, 8, 3, groups=4)", "in_channels must be divisible by groups"),
    ("ConvTranspose2d(4, 6, 3, groups=4)", "out_channels must be divisible by groups"),
    ("Conv2d(4, 4, 3, groups=0)", "groups must be a positive integer"),
    ("Conv2d(4, 4, 0)", "kernel_size must be >= 1"),
    ("Conv2d(4, 4, 3, stride=0)", "non-positive stride"),
    ("ConvTranspose2d(4, 4, 3, dilation=(1, 0))", "dilation should be greater than zero"),
    ("Conv2d(4, 4, 3, padding=-1)", "negative padding"),
    ("Conv2d(4, 4, (3, 3, 3))", "kernel_size .* has 3 entries but the layer has 2"),
    ("Conv2d(4, 4, (3,))", "kernel_size .* has 1 entries"),
    ("Conv2d(4, 4, 3, stride=(1, 2, 3))", "stride .* has 3 entries"),
    ("Conv2d(4, 4, 3.0)", "kernel_size must be an int"),
    ("Conv2d(4, 4, 3, padding=((1, 2), (0, 1)))", r"not \(lo, hi\) pairs"),
    ("Conv2d(4, 4, 3, 2, stride=2)", "gives stride twice"),
    ("Conv2d(4.0, 4, 3)", "in_channels must be a positive int"),
])
@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")
def test_read_layer_rejects_what_torch_rejects(text, pattern):
    with pytest.raises(ConvBridgeError, match=pattern):
        read_layer(text)
    assert _torch_rejects(text, (6, 6)), "torch accepts it"


@pytest.mark.parametrize("text,pattern", [
    ("Conv2d(3, 4, 3, paddin=1)", r"Conv2d has no argument 'paddin' \(did you mean 'padding'\?\)"),
    ("ConvTranspose2d(3, 4, 3, output_pading=1)", r"did you mean 'output_padding'\?"),
    ("Conv2d(3, 4, 3, output_padding=1)", r"Conv2d has no argument 'output_padding'"),
    ("Conv2D(3, 4, 3)", r"unknown layer 'Conv2D' \(did you mean 'Conv2d'\?\)"),
    ("ConvTranspose4d(3, 4, 3)", "unknown layer 'ConvTranspose4d'"),
    ("eqx.nn.Conv2d(3, 4, 3)", "'eqx.nn.Conv2d' is not torch's"),
    ("Conv2d(3, 4, 3", "cannot read layer"),
    ("Conv2d(3, 4, 3)[0]", "cannot read layer"),
    ("Conv2d(*args)", r"\*args and \*\*kwargs cannot be read"),
    ("Conv2d(3, 4, k)", r"argument 3 \(kernel_size\) 'k' is not a literal"),
    ("Conv2d(3, 4, 3, stride=s)", r"stride= 's' is not a literal"),
    ("Conv2d(1, 2, 3, 1, 0, 1, 1, True, 'zeros', 5)", "10 positional arguments; Conv2d takes at most 9"),
    ("ConvTranspose2d(3, 4)", "lacks kernel_size"),
    ("Conv2d(3, 4, 3, bias='False')", "bias must be True or False"),
    (42, "layer must be a string"),
])
def test_layer_string_errors(text, pattern):
    with pytest.raises(ConvBridgeError, match=pattern):
        read_layer(text)


def test_parse_layer_still_reads_torch_names():
    nsp, values = parse_layer("nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1)")
    assert nsp == 2 and values["padding"] == 1 and values["output_padding"] == (0, 0) and values["bias"] is True
    assert "output_padding" not in parse_layer("Conv1d(3, 4, 5)")[1]


@pytest.mark.parametrize("kw,pattern", [
    (dict(stride=1), r"stride=1 conflicts with stride=\(2, 2\) of layer"),
    (dict(padding=(1, 2)), r"padding=\(1, 2\) conflicts with padding=1"),
    (dict(op="conv"), r"op='conv' conflicts with op='conv_transpose'"),
    (dict(bias=False), "bias=False conflicts with bias=True"),
    (dict(output_padding=0), r"output_padding=0 conflicts with output_padding=\(1, 1\)"),
    (dict(groups=2), "groups=2 conflicts with groups=1"),
    (dict(padding_mode="reflect"), "conv_transpose has no argument 'padding_mode'"),
])
def test_explicit_arguments_must_agree_with_the_layer(kw, pattern):
    layer = "ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1)"
    with pytest.raises(ConvBridgeError, match=pattern):
        cb.explain((1, 4, 16, 16), layer=layer, **kw)


def test_layer_output_size_follows_the_module_rule():
    """torch's ConvTranspose forward(x, output_size) reaches base .. base + stride - 1 only, even with a larger
    dilation (ATen's functional rule allows up to max(stride, dilation) - 1)."""
    layer = "ConvTranspose1d(2, 2, 3, stride=2, dilation=3, padding=1)"
    assert cb.explain((1, 2, 8), layer=layer, output_size=20).output_shape == (1, 2, 20)  # base 19
    with pytest.raises(ConvBridgeError, match=r"forward reaches only 19\.\.20 on axis W .*not 21"):
        cb.explain((1, 2, 8), layer=layer, output_size=21)
    with pytest.raises(ValueError, match="valid sizes range"):
        _torch_layer(layer)(torch.zeros(1, 2, 8), output_size=[21])
    assert cb.explain((1, 2, 8), (2, 2, 3), op="conv_transpose", stride=2, dilation=3, padding=1,
                      output_size=21).output_shape == (1, 2, 21)  # without a module: ATen's rule


def test_equal_explicit_arguments_and_layout_are_fine():
    layer = "ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1)"
    e = cb.explain((1, 4, 16, 16), layer=layer, stride=(2, 2), padding=((1, 1), (1, 1)), output_padding=1,
                   op="conv_transpose", bias=True, groups=1)
    assert e.output_shape == (1, 2, 32, 32)
    assert cb.explain((1, 16, 16, 4), layer=layer, layout="NHWC").output_shape == (1, 32, 32, 2)
    assert cb.explain((1, 4, 16, 16), layer=layer, output_size=(31, 32)).output_shape == (1, 2, 31, 32)
    assert cb.explain((1, 3, 9, 9), layer="Conv2d(3, 4, 3, padding='valid')", padding=0).output_shape == (1, 4, 7, 7)


@pytest.mark.parametrize("call,pattern", [
    (lambda: cb.explain((1, 4, 5), (4, 2, 3), op="conv_transpose", convention="jax", padding="SAME"),
     "torch's convention"),
    (lambda: cb.explain((1, 4, 5), (4, 2, 3), op="conv_transpose", padding_mode="reflect"),
     "conv_transpose has no argument 'padding_mode'"),
    (lambda: cb.explain((1, 4, 5), (4, 2, 3), op="conv_transpose", stride=2, output_padding=2),
     r"output_padding 2 on axis W must be < max\(stride 2, dilation 1\)"),
    (lambda: cb.explain((1, 4, 5), (4, 2, 3), op="unfold"), "explains op='conv' and op='conv_transpose'"),
    (lambda: cb.explain((1, 4, 5), (4, 2, 3), op="deconv"), "unknown op 'deconv'"),
    (lambda: cb.explain((1, 4, 5), (4, 2, 3), output_padding=1), "conv has no argument 'output_padding'"),
    (lambda: cb.explain((1, 4, 5), (3, 2, 3), op="conv_transpose"), "input has 4 channels but the kernel's I axis"),
])
def test_transposed_explain_errors(call, pattern):
    with pytest.raises(ConvBridgeError, match=pattern):
        call()


@pytest.mark.parametrize("which", ["torch", pytest.param("all", marks=pytest.mark.slow)])
def test_a_layer_with_a_channels_last_layout_keeps_torchs_kernel(which):
    """A layer's weight is torch's whatever the input layout: 'NHWC' reads it as IOHW (OIHW for Conv), not HWIO."""
    layer = "ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1)"
    e = cb.explain((2, 5, 6, 4), layer=layer, layout="NHWC")
    assert str(e.spec.layout) == "NHWC,IOHW->NHWC" and e.kernel_shape == (4, 2, 3, 3)
    conv = cb.explain((2, 5, 6, 3), layer="Conv2d(3, 8, 3)", layout="NHWC")
    assert str(conv.spec.layout) == "NHWC,OIHW->NHWC" and conv.output_shape == (2, 3, 4, 8)
    spatial_first = cb.explain((5, 6, 4), layer=layer, layout="HWC,HWIO->HWC")
    assert spatial_first.kernel_shape == (3, 3, 4, 2) and spatial_first.output_shape == (10, 12, 2)
    case = T("layer_nhwc", (2, 5, 6, 4), (4, 2, 3, 3), True,
             dict(read_layer(layer).op_kwargs(), layout=("NHWC", "IOHW", "NHWC")))
    x, w, b = case.arrays()
    for snippet in e.snippets if which == "all" else e.snippets[:2]:
        _judge(_run(snippet, x, w, b), x, w, b, case, snippet.framework)
