"""cb.diff on the reference models: correct ports agree layer by layer, and every planted bug is named at exactly
its layer (or at the glue before it), with its cause."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import convbridge as cb
from convbridge.errors import ArgumentError
from convbridge.models import equinox as me, linen as ml, torch as mt

RNG = np.random.default_rng(0)


def _bn_stats(model: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters (a trained network's), so that BN is really judged."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.bias.shape, generator=g) * 0.4 - 0.2)
    return model.eval()


def _linen(torch_model: torch.nn.Module, module: object, x_nhwc: np.ndarray) -> dict:
    shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros((1, *x_nhwc.shape[1:]), jnp.float32))
    variables, _ = cb.port.state_dict(torch_model, shapes, module=module)
    return variables


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    tm = _bn_stats(mt.ResNet18(width=8))
    x = RNG.standard_normal((2, 3, 32, 32)).astype(np.float32)
    return tm, _linen(tm, ml.ResNet18(width=8), x.transpose(0, 2, 3, 1)), x


def test_resnet18_torch_to_linen_agrees_layer_by_layer(resnet):
    tm, variables, x = resnet
    report = cb.diff(tm, (ml.ResNet18(width=8), variables), x)
    assert report.first_divergent is None, str(report.first_divergent)
    assert report.verdict in ("identical", "equivalent")
    kinds = [row.kind for row in report.rows]
    assert kinds.count("conv") == 20 and kinds.count("batchnorm") == 20 and kinds.count("linear") == 1
    assert {"relu", "maxpool", "adaptive_avgpool", "flatten"} <= set(kinds)
    assert all(row.input_verdict == "agree" for row in report.rows)
    assert report.output.verdict in ("identical", "equivalent")
    assert not report.unpaired_a and not report.unpaired_b
    text = str(report)
    assert "layer4.1.conv2" in text


def test_planted_same_padding_is_named_at_that_conv(resnet):
    tm, variables, x = resnet
    report = cb.diff(tm, (ml.ResNet18(width=8, same_padding_in="layer2_0/conv1"), variables), x)
    first = report.first_divergent
    assert report.verdict == "mismatch" and first is not None
    assert (first.name_a, first.name_b) == ("layer2.0.conv1", "layer2_0/conv1")
    assert "padding ((1, 1), (1, 1)) vs ((0, 1), (0, 1))" in first.cause and "SAME" in first.cause.upper()
    assert "float64 re-runs differ" in first.evidence
    # judged on the same input: every later layer still agrees (errors do not accumulate)
    later = [row for row in report.rows if row.index > first.index]
    assert later and all(row.verdict in ("identical", "equivalent") for row in later)
    assert report.output.verdict == "mismatch"


def test_planted_flatten_order_is_named_at_the_flatten():
    torch.manual_seed(0)
    tm = mt.LeNet().eval()
    x = RNG.standard_normal((2, 3, 32, 32)).astype(np.float32)
    variables = _linen(tm, ml.LeNet(), x.transpose(0, 2, 3, 1))
    assert cb.diff(tm, (ml.LeNet(), variables), x).first_divergent is None
    report = cb.diff(tm, (ml.LeNet(flatten="nhwc"), variables), x, rerun=False)  # an exact layer: no re-run needed
    first = report.first_divergent
    assert first is not None and first.name_a == "flatten" and first.kind == "flatten"
    assert "flatten order" in first.cause


def test_planted_batchnorm_eps_is_named_at_the_first_batchnorm():
    torch.manual_seed(0)
    tm = _bn_stats(mt.MobileNetV2Block(8, 8))
    x = RNG.standard_normal((2, 8, 8, 8)).astype(np.float32)
    variables = _linen(tm, ml.MobileNetV2Block(8, 8), x.transpose(0, 2, 3, 1))
    assert cb.diff(tm, (ml.MobileNetV2Block(8, 8), variables), x).first_divergent is None
    report = cb.diff(tm, (ml.MobileNetV2Block(8, 8, bn_eps=1e-3), variables), x, rerun=False)
    first = report.first_divergent
    assert first is not None and first.kind == "batchnorm"
    assert first.index == 1  # expand conv, then its BatchNorm
    assert "eps 1e-05 vs 0.001" in first.cause


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    tm = _bn_stats(mt.UNet(width=4))
    x = RNG.standard_normal((1, 3, 16, 16)).astype(np.float32)
    return tm, _linen(tm, ml.UNet(width=4), x.transpose(0, 2, 3, 1)), x


def test_planted_align_corners_is_named_at_the_upsampling(unet):
    tm, variables, x = unet
    assert cb.diff(tm, (ml.UNet(width=4), variables), x).first_divergent is None
    report = cb.diff(tm, (ml.UNet(width=4, align_corners=True), variables), x)
    first = report.first_divergent
    assert first is not None and first.kind == "upsample" and first.name_b.endswith("up2")
    assert "align_corners False vs True" in first.cause


def test_planted_unflipped_transposed_kernel_is_named_at_that_layer(unet):
    tm, variables, x = unet
    params = jax.tree_util.tree_map(lambda a: a, variables["params"])
    k = np.asarray(params["up1"]["kernel"])
    params["up1"] = {**params["up1"], "kernel": jnp.asarray(np.flip(k, (0, 1)))}  # the flip a port forgot
    report = cb.diff(tm, (ml.UNet(width=4), {**variables, "params": params}), x, rerun=False)
    first = report.first_divergent
    assert first is not None and first.kind == "conv_transpose" and first.name_a == "up1"
    assert "kernel flipped" in first.cause


def test_torch_to_equinox_and_back_agree(resnet):
    tm, _, x = resnet
    skeleton = jax.eval_shape(lambda: me.ResNet18(width=8, key=jax.random.PRNGKey(0)))  # shapes only: no init
    em, _ = cb.port.state_dict(tm, skeleton)
    report = cb.diff(tm, em, x[:1])
    assert report.first_divergent is None and report.verdict in ("identical", "equivalent")
    assert sum(row.kind == "conv" for row in report.rows) == 20
    back = cb.diff(em, tm, x[:1])  # either side may be A
    assert back.first_divergent is None


def test_linen_as_model_a(resnet):
    """The reverse direction: x in linen's NHWC, given to torch as NCHW; the planted bug is named on A's side."""
    tm, variables, x = resnet
    bad = (ml.ResNet18(width=8, same_padding_in="layer3.0.conv1"), variables)
    report = cb.diff(bad, tm, x.transpose(0, 2, 3, 1))
    first = report.first_divergent
    assert first is not None and (first.name_a, first.name_b) == ("layer3_0/conv1", "layer3.0.conv1")
    assert first.type_a == "flax.linen.Conv" and "XLA's 'same'" in first.cause
    import rich.console

    console = rich.console.Console(width=160, record=True, file=open("/dev/null", "w"))
    console.print(report)
    assert "layer3_0/conv1" in console.export_text()


def test_glue_bug_is_named_at_the_first_layer_whose_input_differs():
    """A flatten in the wrong order written as plain code (not a layer): the Linear after it is named, as glue."""
    import flax.linen as nn

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)
            self.fc = torch.nn.Linear(4 * 4 * 4, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.flatten(self.conv(x), 1))

    class LinenNet(nn.Module):
        channels_first: bool = True

        @nn.compact
        def __call__(self, x: jax.Array) -> jax.Array:
            y = nn.Conv(4, (3, 3), padding="VALID", name="conv")(x)
            if self.channels_first:
                y = jnp.transpose(y, (0, 3, 1, 2))
            return nn.Dense(5, name="fc")(y.reshape(y.shape[0], -1))

    torch.manual_seed(0)
    tm = Net().eval()
    x = RNG.standard_normal((2, 3, 6, 6)).astype(np.float32)
    variables = _linen(tm, LinenNet(), x.transpose(0, 2, 3, 1))
    assert cb.diff(tm, (LinenNet(), variables), x).first_divergent is None
    report = cb.diff(tm, (LinenNet(channels_first=False), variables), x)
    first = report.first_divergent
    assert first is not None and first.name_a == "fc" and first.input_verdict == "glue"
    assert first.verdict in ("identical", "equivalent")  # the Linear itself is right
    assert "flatten order" in first.glue_cause
    assert "the code between the previous layer and this one differs" in str(first)


def test_errors_are_clear():
    torch.manual_seed(0)
    tm = mt.LeNet()
    x = RNG.standard_normal((1, 3, 32, 32)).astype(np.float32)
    with pytest.raises(ArgumentError, match=r"training mode .* model.eval\(\)"):
        cb.diff(tm, tm, x)
    tm.eval()
    with pytest.raises(ArgumentError, match=r"holds no weights: pass \(LeNet\(...\), variables\)"):
        cb.diff(tm, ml.LeNet(), x)
    other = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 5)).eval()
    with pytest.raises(ArgumentError, match=r"model A runs 5 layers with parameters and model B 1; .*fc1.*name_map"):
        cb.diff(tm, other, x)
    with pytest.raises(cb.ConvBridgeError, match="float16, float32 or float64 array .* got int32"):
        cb.diff(tm, tm, x.astype(np.int32))
    with pytest.raises(cb.ConvBridgeError, match="1 NaN or infinite"):
        cb.diff(tm, tm, np.where(x == x.max(), np.nan, x))
    with pytest.raises(cb.ConvBridgeError, match="x is empty"):
        cb.diff(tm, tm, x[:0])
    with pytest.raises(cb.ConvBridgeError, match=r"model A \(torch LeNet\) failed on x of shape \(1, 3, 31, 31\)"):
        cb.diff(tm, tm, x[:, :, :31, :31])
    with pytest.raises(cb.ConvBridgeError, match="layout_b 'NWHC'"):
        cb.diff(tm, tm, x, layout_b="NWHC")
    with pytest.raises(ArgumentError, match="name_map keys that match no layer of model A: 'nope'"):
        cb.diff(tm, tm, x, name_map={"nope": "conv1"})


def test_name_map_with_globs_pairs_by_name():
    torch.manual_seed(0)
    tm = mt.LeNet().eval()
    x = RNG.standard_normal((1, 3, 32, 32)).astype(np.float32)
    variables = _linen(tm, ml.LeNet(), x.transpose(0, 2, 3, 1))
    report = cb.diff(tm, (ml.LeNet(), variables), x, name_map={"fc*": "fc*", "conv1": "conv1"})
    assert [row.name_a for row in report.rows][:3] == ["conv1", "relu1", "pool1"]  # the rest pair by equal names
    assert report.first_divergent is None and len(report.rows) == 12
    # a map naming a layer B does not have
    with pytest.raises(ArgumentError, match=r"A's conv1, conv2 -> conv9, which model B does not have"):
        cb.diff(tm, (ml.LeNet(), variables), x, name_map={"conv*": "conv9"})


def _tiny_torch() -> torch.nn.Module:
    torch.manual_seed(0)
    return _bn_stats(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4),
                                         torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 5)))


def test_grad_catches_a_port_that_matches_in_inference_but_trains_differently():
    """A ReLU with a straight-through gradient: the same forward, other gradients for everything before it."""
    import flax.linen as nn

    @jax.custom_vjp
    def relu(x):
        return jnp.maximum(x, 0)

    relu.defvjp(lambda x: (jnp.maximum(x, 0), None), lambda _, g: (g,))

    class Net(nn.Module):
        straight_through: bool = False

        @nn.compact
        def __call__(self, x: jax.Array) -> jax.Array:
            y = nn.BatchNorm(use_running_average=True, epsilon=1e-5, name="1")(nn.Conv(4, (3, 3), padding=((1, 1),
                                                                                    (1, 1)), name="0")(x))
            y = relu(y) if self.straight_through else nn.relu(y)
            y = jnp.transpose(y, (0, 3, 1, 2)).reshape(y.shape[0], -1)
            return nn.Dense(5, name="4")(y)

    tm = _tiny_torch()
    x = RNG.standard_normal((2, 3, 6, 6)).astype(np.float32)
    variables = _linen(tm, Net(), x.transpose(0, 2, 3, 1))
    good = cb.diff(tm, (Net(), variables), x, grad=True)
    assert good.verdict in ("identical", "equivalent"), str(good)
    names = [g.name_a for g in good.grads]
    assert names[0] == "input" and {"0.weight", "0.bias", "1.weight", "1.bias", "4.weight", "4.bias"} <= set(names)
    assert all(g.verdict in ("identical", "equivalent") and g.rel64 < 1e-12 for g in good.grads)
    bad = cb.diff(tm, (Net(straight_through=True), variables), x, grad=True)
    assert bad.first_divergent is None  # inference agrees ...
    by_name = {g.name_a: g.verdict for g in bad.grads}
    assert by_name["4.weight"] in ("identical", "equivalent")  # ... the layer after the ReLU trains the same
    assert by_name["input"] == by_name["0.weight"] == by_name["1.bias"] == "mismatch"
    assert bad.verdict == "mismatch"


def test_nnx_side():
    from flax import nnx

    class Net(nnx.Module):
        def __init__(self, rngs: nnx.Rngs) -> None:
            self.conv = nnx.Conv(3, 4, (3, 3), padding=((1, 1), (1, 1)), rngs=rngs)
            self.bn = nnx.BatchNorm(4, use_running_average=True, rngs=rngs)
            self.fc = nnx.Linear(4 * 6 * 6, 5, rngs=rngs)

        def __call__(self, x: jax.Array) -> jax.Array:
            y = nnx.relu(self.bn(self.conv(x)))
            return self.fc(jnp.transpose(y, (0, 3, 1, 2)).reshape(y.shape[0], -1))

    tm = _tiny_torch()
    net, _ = cb.port.state_dict(tm, Net(nnx.Rngs(0)))
    x = RNG.standard_normal((2, 3, 6, 6)).astype(np.float32)
    report = cb.diff(tm, net, x)
    assert [row.kind for row in report.rows] == ["conv", "batchnorm", "linear"]
    assert report.first_divergent is None and report.verdict in ("identical", "equivalent")
    assert report.unpaired_a == ("2", "3")  # torch's ReLU and Flatten modules: plain code in the nnx model


def test_glue_with_a_few_ulp_function_is_not_a_false_alarm():
    """Found by a hostile user: torch's GELU between two layers against jax.nn.gelu (exact): the inputs of the next
    layer differ by an ulp, beyond the float32 glue rule; the float64 re-run shows the glue is the same function."""
    import flax.linen as nn

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = torch.nn.Conv2d(3, 4, 3, padding=1)
            self.b = torch.nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(torch.nn.functional.gelu(self.a(x)))

    class LinenNet(nn.Module):
        approximate: bool = False

        @nn.compact
        def __call__(self, x: jax.Array) -> jax.Array:
            y = nn.Conv(4, (3, 3), padding=((1, 1), (1, 1)), name="a")(x)
            return nn.Conv(4, (3, 3), padding=((1, 1), (1, 1)), name="b")(jax.nn.gelu(y, approximate=self.approximate))

    torch.manual_seed(0)
    tm = Net().eval()
    x = RNG.standard_normal((2, 3, 8, 8)).astype(np.float32)
    variables = _linen(tm, LinenNet(), x.transpose(0, 2, 3, 1))
    good = cb.diff(tm, (LinenNet(), variables), x)
    assert good.first_divergent is None and good.verdict == "equivalent", str(good)
    assert good.output.verdict == "equivalent" and "float64" in good.output.evidence  # 4-d output, channels last
    bad = cb.diff(tm, (LinenNet(approximate=True), variables), x)  # tanh GELU: another function
    assert bad.first_divergent is not None and bad.first_divergent.name_a == "b"
    assert bad.first_divergent.input_verdict == "glue" and bad.first_divergent.glue_cause == ""


def test_groupnorm_and_layernorm_are_judged_with_their_bound():
    import flax.linen as nn

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c, self.g = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.GroupNorm(2, 8)
            self.fc, self.ln = torch.nn.Linear(8 * 6 * 6, 5), torch.nn.LayerNorm(5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.ln(self.fc(self.g(self.c(x)).flatten(1)))

    class LinenNet(nn.Module):
        eps: float = 1e-5

        @nn.compact
        def __call__(self, x: jax.Array) -> jax.Array:
            y = nn.Conv(8, (3, 3), padding=((1, 1), (1, 1)), name="c")(x)
            y = nn.GroupNorm(num_groups=2, epsilon=self.eps, name="g")(y)
            y = jnp.transpose(y, (0, 3, 1, 2)).reshape(y.shape[0], -1)
            return nn.LayerNorm(epsilon=1e-5, name="ln")(nn.Dense(5, name="fc")(y))

    torch.manual_seed(0)
    tm = Net().eval()
    with torch.no_grad():
        for m in (tm.g, tm.ln):
            m.weight.uniform_(0.5, 1.5)
            m.bias.uniform_(-0.2, 0.2)
    x = (RNG.standard_normal((2, 3, 6, 6)) + 3).astype(np.float32)  # a mean far from 0: the variance cancels
    variables = _linen(tm, LinenNet(), x.transpose(0, 2, 3, 1))
    good = cb.diff(tm, (LinenNet(), variables), x)
    assert [r.kind for r in good.rows] == ["conv", "groupnorm", "linear", "layernorm"]
    assert good.first_divergent is None, str(good.first_divergent)
    assert all(0 < r.allowed < 1e4 for r in good.rows if r.kind.endswith("norm") and r.verdict == "equivalent")
    bad = cb.diff(tm, (LinenNet(eps=1e-3), variables), x).first_divergent
    assert bad is not None and bad.kind == "groupnorm" and "eps 1e-05 vs 0.001" in bad.cause
