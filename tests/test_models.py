"""The reference models (convbridge.models): each builds and runs in torch, Flax linen and Equinox with the right
shapes, and, with torch's weights copied by hand (a small local helper, not convbridge.port), the JAX outputs equal
torch's to float32 rounding; every planted-bug knob changes the output."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
pytest.importorskip("flax")
eqx = pytest.importorskip("equinox")

from convbridge.errors import ArgumentError, ArgumentTypeError, ShapeError
from convbridge.models import _common
from convbridge.models import equinox as ME
from convbridge.models import linen as ML
from convbridge.models import torch as MT

RTOL, ATOL = 1e-4, 1e-5


# -------------------------------------------------------------------------------------------- hand-written copying

def _randomise(model, x: np.ndarray, seed: int = 0):
    """Random BatchNorm affine weights and non-trivial running statistics (the batch statistics of 16 random inputs
    shaped like ``x``, perturbed, so that activations stay O(1) through the net), in eval mode. torch's default init
    leaves BN an identity."""
    g = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for m in bns:
            m.momentum = 1.0  # the running statistics become the batch's
            m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
        model.train()(torch.randn((16, *x.shape[1:]), generator=g))
        for m in bns:
            m.momentum = 0.1
            m.running_mean.add_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.mul_(torch.rand(m.running_var.shape, generator=g) * 0.5 + 0.75)
    return model.eval()


def _linen_path(name: str) -> list[str]:
    """torch's ``layer2.0.downsample.0`` -> linen's ``["layer2_0", "downsample_0"]``."""
    return re.sub(r"\.(\d+)", r"_\1", name).split(".") if name else []


def _np(t) -> np.ndarray:
    return t.detach().numpy().copy()


def to_linen(model) -> dict:
    """The linen variables holding a torch model's weights (conv OIHW -> HWIO, transposed IOHW -> HWIO, Linear
    (out, in) -> (in, out), BN weight/bias/running stats -> scale/bias/mean/var)."""
    params: dict = {}
    stats: dict = {}

    def put(tree: dict, path: list[str], key: str, value: np.ndarray) -> None:
        for p in path:
            tree = tree.setdefault(p, {})
        tree[key] = jnp.asarray(value)

    for name, m in model.named_modules():
        path = _linen_path(name)
        if isinstance(m, torch.nn.ConvTranspose2d):
            put(params, path, "kernel", _np(m.weight).transpose(2, 3, 0, 1))
        elif isinstance(m, torch.nn.Conv2d):
            put(params, path, "kernel", _np(m.weight).transpose(2, 3, 1, 0))
        elif isinstance(m, torch.nn.Linear):
            put(params, path, "kernel", _np(m.weight).T)
        elif isinstance(m, torch.nn.BatchNorm2d):
            put(params, path, "scale", _np(m.weight))
            put(stats, path, "mean", _np(m.running_mean))
            put(stats, path, "var", _np(m.running_var))
        else:
            continue
        if getattr(m, "bias", None) is not None:
            put(params, path, "bias", _np(m.bias))
    return {"params": params, "batch_stats": stats} if stats else {"params": params}


def _torch_part(module, name: str):
    for part in name.split(".") if name else []:
        module = module[int(part)] if part.isdigit() else getattr(module, part)
    return module


def to_equinox(model, abstract):
    """An Equinox model holding a torch model's weights: every leaf of ``abstract`` (from ``eqx.filter_eval_shape``)
    replaced by torch's tensor of the same path (a conv bias reshaped to ``(out, 1, 1)``); none may be left over."""
    names, values = [], []
    for name, m in model.named_modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear)):
            attrs = {"weight": m.weight, "bias": m.bias}
        elif isinstance(m, torch.nn.BatchNorm2d):
            attrs = {"weight": m.weight, "bias": m.bias, "running_mean": m.running_mean,
                     "running_var": m.running_var}
        else:
            continue
        for attr, tensor in attrs.items():
            if tensor is not None:
                names.append((name, attr))
                values.append(_np(tensor))
    targets = [getattr(_torch_part(abstract, n), a) for n, a in names]
    values = [v.reshape(t.shape) if n[1] == "bias" and v.ndim == 1 else v for n, t, v in zip(names, targets, values)]
    assert [tuple(t.shape) for t in targets] == [v.shape for v in values]
    ported = eqx.tree_at(lambda m: [getattr(_torch_part(m, n), a) for n, a in names], abstract,
                         [jnp.asarray(v) for v in values])
    assert not any(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in jax.tree.leaves(ported))
    return ported


_vmapped = eqx.filter_jit(lambda m, x: jax.vmap(m)(x))


def _eqx_out(cls, torch_model, x_nchw: np.ndarray, **kwargs) -> np.ndarray:
    abstract = eqx.filter_eval_shape(cls, **kwargs, key=jax.random.key(0))
    return np.asarray(_vmapped(to_equinox(torch_model, abstract), jnp.asarray(x_nchw)))


def _same_structure(ported: dict, model, x) -> None:
    """The hand-ported variables have exactly the structure and shapes linen's own init makes."""
    expected = jax.eval_shape(model.init, jax.random.key(0), x)
    shapes = jax.tree.map(lambda a: (tuple(a.shape), str(a.dtype)), ported)
    assert shapes == jax.tree.map(lambda a: (tuple(a.shape), str(a.dtype)), dict(expected))


def _init_order(model, x) -> tuple[dict, dict]:
    """``model.init``'s params and batch_stats as created (abstractly: a pytree's output would sort the keys)."""
    seen = []

    def init(key, x):
        variables = model.init(key, x)
        seen.append(variables)
        return variables

    jax.eval_shape(init, jax.random.key(0), x)
    return seen[0]["params"], seen[0].get("batch_stats", {})


def _torch_out(model, x_nchw: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x_nchw)).numpy()


def _linen_out(model, variables, x_nchw: np.ndarray) -> np.ndarray:
    x = jnp.asarray(x_nchw.transpose(0, 2, 3, 1))
    y = np.asarray(jax.jit(model.apply, static_argnames="train")(variables, x, train=False))
    return y.transpose(0, 3, 1, 2) if y.ndim == 4 else y


def _input(shape, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# ------------------------------------------------------------------------------------------------------ ResNet18

@pytest.fixture(scope="module")
def resnet():
    x = _input((2, 3, 32, 32))
    model = _randomise(MT.ResNet18(width=8), x)
    return model, to_linen(model), x, _torch_out(model, x)


@pytest.mark.slow  # CI: tests/test_diff.py judges the same port layer by layer
def test_resnet18_linen_equals_torch(resnet):
    _, variables, x, expected = resnet
    assert expected.shape == (2, 10)
    _same_structure(variables, ML.ResNet18(width=8), jnp.zeros((1, 32, 32, 3)))
    np.testing.assert_allclose(_linen_out(ML.ResNet18(width=8), variables, x), expected, rtol=RTOL, atol=ATOL)


@pytest.mark.slow  # CI: tests/test_diff.py judges the same port layer by layer
def test_resnet18_equinox_equals_torch(resnet):
    model, _, x, expected = resnet
    np.testing.assert_allclose(_eqx_out(ME.ResNet18, model, x, width=8), expected, rtol=RTOL, atol=ATOL)


# CI: tests/test_diff.py::test_planted_same_padding_is_named_at_that_conv runs the same knob on the same linen
# ResNet18(width=8, same_padding_in="layer2_0/conv1") against torch, and finds its output a mismatch
@pytest.mark.slow
def test_resnet18_same_padding_knob_shifts_a_strided_conv(resnet):
    _, variables, x, expected = resnet
    bad = _linen_out(ML.ResNet18(width=8, same_padding_in="layer2_0/conv1"), variables, x)
    assert bad.shape == expected.shape and np.abs(bad - expected).max() > 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("name", ["layer2.0.conv1", "conv1", "layer2.0.downsample.0", "layer3_0/conv1",
                                  "layer4.1.conv2"])
def test_resnet18_same_padding_knob_every_kind_of_conv(resnet, name):
    """Strided 7x7 and 3x3 convs shift under SAME (lo < hi); a stride-1 3x3 pads (1, 1) and a 1x1/2 conv on an even
    size pads nothing, like torch, so those two knobs change nothing."""
    model, variables, x, expected = resnet
    for bad in (_linen_out(ML.ResNet18(width=8, same_padding_in=name), variables, x),
                _eqx_out(ME.ResNet18, model, x, width=8, same_padding_in=name)):
        if name in ("layer4.1.conv2", "layer2.0.downsample.0"):
            np.testing.assert_allclose(bad, expected, rtol=RTOL, atol=ATOL)
        else:
            assert np.abs(bad - expected).max() > 1e-3, name


def test_resnet18_same_padding_knob_validates():
    with pytest.raises(ArgumentError, match="'layer9.0.conv1' names no convolution of ResNet18"):
        ML.ResNet18(width=8, same_padding_in="layer9.0.conv1")
    with pytest.raises(ArgumentError, match="'layer1.0.bn1' names no convolution of ResNet18"):
        eqx.filter_eval_shape(ME.ResNet18, width=8, same_padding_in="layer1.0.bn1", key=jax.random.key(0))
    assert _common.resnet18_conv("layer3_0/downsample_0") == "layer3.0.downsample.0"
    assert _common.resnet18_conv("layer2_0/conv1") == _common.resnet18_conv("layer2.0.conv1") == "layer2.0.conv1"
    with pytest.raises(ArgumentTypeError, match="got int 3"):
        _common.resnet18_conv(3)


def _torch_tensors(model) -> list[tuple[str, tuple[int, ...]]]:
    """torch's parameters and BN statistics, module by module in registration (= forward) order."""
    return [(k, tuple(v.shape)) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")]


def test_resnet18_parameter_paths_and_order():
    torch_model = MT.ResNet18(width=8)
    p, s = _init_order(ML.ResNet18(width=8), jnp.zeros((1, 32, 32, 3)))
    assert list(p) == ["conv1", "bn1", "layer1_0", "layer1_1", "layer2_0", "layer2_1", "layer3_0", "layer3_1",
                       "layer4_0", "layer4_1", "fc"]
    assert list(p["layer2_0"]) == ["conv1", "bn1", "conv2", "bn2", "downsample_0", "downsample_1"]
    assert p["conv1"]["kernel"].shape == (7, 7, 3, 8) and p["fc"]["kernel"].shape == (64, 10)
    assert s["layer4_0"]["downsample_1"]["var"].shape == (64,)
    convs = [k.removesuffix(".weight") for k, shape in _torch_tensors(torch_model) if len(shape) == 4]
    assert convs == list(_common.RESNET18_CONVS)
    # Equinox flattens its fields in torch's state_dict order, with the same shapes (a conv bias aside)
    abstract = eqx.filter_eval_shape(ME.ResNet18, width=8, key=jax.random.key(0))
    assert [tuple(leaf.shape) for leaf in jax.tree.leaves(abstract)] == [s for _, s in _torch_tensors(torch_model)]
    assert abstract.layer2[0].downsample[1].running_var.shape == (16,)


@pytest.mark.slow
def test_resnet18_pool_output_and_nchw_flatten():
    x = _input((2, 3, 48, 48), seed=4)
    model = _randomise(MT.ResNet18(width=8, pool_output=2, num_classes=5), x, seed=3)
    expected = _torch_out(model, x)
    assert expected.shape == (2, 5)
    got = _linen_out(ML.ResNet18(width=8, pool_output=2, num_classes=5), to_linen(model), x)
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)
    got = _eqx_out(ME.ResNet18, model, x, width=8, pool_output=2, num_classes=5)
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)


# --------------------------------------------------------------------------------------------------------- LeNet

@pytest.fixture(scope="module")
def lenet():
    torch.manual_seed(0)
    model = MT.LeNet().eval()
    x = _input((2, 3, 32, 32), seed=2)
    return model, to_linen(model), x, _torch_out(model, x)


def test_lenet_equals_torch_and_nhwc_flatten_differs(lenet):
    model, variables, x, expected = lenet
    assert expected.shape == (2, 10)
    _same_structure(variables, ML.LeNet(), jnp.zeros((1, 32, 32, 3)))
    np.testing.assert_allclose(_linen_out(ML.LeNet(), variables, x), expected, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(_eqx_out(ME.LeNet, model, x), expected, rtol=RTOL, atol=ATOL)
    for bad in (_linen_out(ML.LeNet(flatten="nhwc"), variables, x), _eqx_out(ME.LeNet, model, x, flatten="nhwc")):
        assert bad.shape == expected.shape and np.abs(bad - expected).max() > 1e-3


def test_lenet_flatten_validates():
    with pytest.raises(ArgumentError, match="unknown flatten order 'nwhc'; choose one of 'nchw', 'nhwc'"):
        ML.LeNet(flatten="nwhc")
    with pytest.raises(ArgumentError, match="unknown flatten order 'nwhc'"):
        eqx.filter_eval_shape(ME.LeNet, flatten="nwhc", key=jax.random.key(0))
    with pytest.raises(ArgumentError, match="flatten='nhwc' exists only on the JAX models"):
        MT.LeNet(flatten="nhwc")
    with pytest.raises(ShapeError, match=r"LeNet takes NHWC batches with 3 channels, got shape \(1, 3, 32, 32\)"):
        jax.eval_shape(ML.LeNet().init, jax.random.key(0), jnp.zeros((1, 3, 32, 32)))
    model = eqx.filter_eval_shape(ME.LeNet, key=jax.random.key(0))
    with pytest.raises(ShapeError, match=r"one CHW example with 3 channels, got shape \(2, 3, 32, 32\); batch with"):
        eqx.filter_eval_shape(lambda m, x: m(x), model, jnp.zeros((2, 3, 32, 32)))


# ------------------------------------------------------------------------------------------------ MobileNetV2Block

@pytest.mark.parametrize("args", [(8, 8, 1, 6), pytest.param((8, 16, 2, 6), marks=pytest.mark.slow),
                                  pytest.param((8, 8, 1, 1), marks=pytest.mark.slow)])
def test_mobilenetv2_block_equals_torch_and_bn_eps_knob(args):
    in_ch, out_ch, stride, expand = args
    x = _input((2, in_ch, 12, 12), seed=6)
    model = _randomise(MT.MobileNetV2Block(*args), x, seed=5)
    assert model.use_residual == (stride == 1 and in_ch == out_ch)
    expected = _torch_out(model, x)
    assert expected.shape == (2, out_ch, 12 // stride, 12 // stride)
    variables = to_linen(model)
    _same_structure(variables, ML.MobileNetV2Block(*args), jnp.zeros((1, 12, 12, in_ch)))
    np.testing.assert_allclose(_linen_out(ML.MobileNetV2Block(*args), variables, x), expected, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(_eqx_out(ME.MobileNetV2Block, model, x, in_ch=in_ch, out_ch=out_ch, stride=stride,
                                        expand=expand), expected, rtol=RTOL, atol=ATOL)
    for bad in (_linen_out(ML.MobileNetV2Block(*args, bn_eps=1e-3), variables, x),
                _eqx_out(ME.MobileNetV2Block, model, x, in_ch=in_ch, out_ch=out_ch, stride=stride, expand=expand,
                         bn_eps=1e-3)):
        assert np.abs(bad - expected).max() > 1e-4


# ---------------------------------------------------------------------------------------------------------- UNet

@pytest.mark.slow  # CI: tests/test_diff.py judges the UNet port (and the align_corners knob) layer by layer
@pytest.mark.parametrize("align_corners", [False, True])
def test_unet_equals_torch_and_align_corners_knob(align_corners):
    x = _input((2, 3, 16, 16), seed=8)
    model = _randomise(MT.UNet(width=4, align_corners=align_corners), x, seed=7)
    expected = _torch_out(model, x)
    assert expected.shape == (2, 2, 16, 16)
    variables = to_linen(model)
    assert variables["params"]["up1"]["kernel"].shape == (2, 2, 16, 8)  # grouped: (kh, kw, in, out / groups)
    _same_structure(variables, ML.UNet(width=4), jnp.zeros((1, 16, 16, 3)))
    got = _linen_out(ML.UNet(width=4, align_corners=align_corners), variables, x)
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)
    got = _eqx_out(ME.UNet, model, x, width=4, align_corners=align_corners)
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)
    bad = _linen_out(ML.UNet(width=4, align_corners=not align_corners), variables, x)
    assert bad.shape == expected.shape and np.abs(bad - expected).max() > 1e-3


# ------------------------------------------------------------------------------------------- non-parametric layers

def test_upsample_is_torch_bilinear():
    x = _input((1, 2, 5, 7), seed=9)
    cases = [(scale, align_corners) for scale in (2, 3) for align_corners in (False, True)]

    @jax.jit
    def run(x):
        nhwc = x.transpose(0, 2, 3, 1)
        return [(ML.Upsample(s, "bilinear", a).apply({}, nhwc), jax.vmap(ME.Upsample(s, "bilinear", a))(x))
                for s, a in cases]

    for (lin, eq), (scale, align_corners) in zip(run(jnp.asarray(x)), cases):
        expected = torch.nn.functional.interpolate(torch.from_numpy(x), scale_factor=scale, mode="bilinear",
                                                   align_corners=align_corners).numpy()
        np.testing.assert_allclose(np.asarray(lin).transpose(0, 3, 1, 2), expected, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(np.asarray(eq), expected, rtol=1e-6, atol=1e-6)
    with pytest.raises(ArgumentError, match="unknown upsample mode 'bicubic'; choose one of 'bilinear'"):
        ME.Upsample(2, "bicubic")(jnp.asarray(x[0]))


def test_pools_and_flatten_are_torchs():
    x = _input((1, 3, 7, 5), seed=10) * 4  # past ReLU6's 6
    xt = torch.from_numpy(x)
    cases = [(ML.MaxPool(3, 2, 1), ME.MaxPool(3, 2, 1), torch.nn.MaxPool2d(3, 2, 1)),
             (ML.MaxPool(2), ME.MaxPool(2), torch.nn.MaxPool2d(2)),
             (ML.AdaptiveAvgPool(3), ME.AdaptiveAvgPool(3), torch.nn.AdaptiveAvgPool2d(3)),
             (ML.AdaptiveAvgPool(1), ME.AdaptiveAvgPool(1), torch.nn.AdaptiveAvgPool2d(1)),
             (ML.Flatten(), ME.Flatten(), torch.nn.Flatten()),
             (ML.ReLU6(), ME.ReLU6(), torch.nn.ReLU6()),
             (ML.ReLU(), ME.ReLU(), torch.nn.ReLU())]

    @jax.jit
    def run(x):  # one compilation for all the layers
        nhwc = x.transpose(0, 2, 3, 1)
        return [(lin.apply({}, nhwc), jax.vmap(eq)(x)) for lin, eq, _ in cases] + [
            (ML.Flatten("nhwc").apply({}, nhwc), jax.vmap(ME.Flatten("nhwc"))(x))]

    outs = run(jnp.asarray(x))
    for (lin, eq), (_, _, mod) in zip(outs, cases):
        expected = mod(xt).numpy()
        lin = np.asarray(lin)
        np.testing.assert_allclose(lin.transpose(0, 3, 1, 2) if lin.ndim == 4 else lin, expected, rtol=1e-6)
        np.testing.assert_allclose(np.asarray(eq), expected, rtol=1e-6, err_msg=str(mod))
    hwc = x[0].transpose(1, 2, 0).reshape(-1)
    np.testing.assert_array_equal(outs[-1][0][0], hwc)
    np.testing.assert_array_equal(outs[-1][1][0], hwc)


def test_equinox_batchnorm_is_torchs_eval():
    x = _input((1, 3, 4, 4), seed=12)
    bn = _randomise(torch.nn.Sequential(torch.nn.BatchNorm2d(3)), x, seed=11)[0]
    ported = ME.BatchNorm(3)
    ported = eqx.tree_at(lambda b: (b.weight, b.bias, b.running_mean, b.running_var), ported,
                         tuple(jnp.asarray(_np(t)) for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var)))
    np.testing.assert_allclose(ported(jnp.asarray(x[0])), _torch_out(bn, x)[0], rtol=RTOL, atol=ATOL)
    assert ME.BatchNorm(3).eps == 1e-5


def test_importing_models_imports_no_framework():
    code = ("import sys, convbridge.models; import convbridge.models._common; "
            "print(sorted(m for m in ('torch', 'jax', 'flax', 'equinox') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
