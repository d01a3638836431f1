"""Whole-model weight ports (cb.port.state_dict) between torch and Flax linen / nnx / Equinox: every kernel
convention read back by the layer readers, the reference models' outputs and bitwise round trips, name maps,
and the one error that names every problem before anything is written."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import convbridge as cb
from convbridge.errors import ArgumentError, ArgumentTypeError, DTypeError, ShapeError
from convbridge.port import PortWarning

torch = pytest.importorskip("torch")
jax = pytest.importorskip("jax")
pytest.importorskip("flax")
eqx = pytest.importorskip("equinox")
import jax.numpy as jnp
from flax import linen, nnx

KEY = jax.random.key(0)


@pytest.fixture(autouse=True, scope="module")
def _quick_xla():
    """The outputs compared here test the weights' mapping, not XLA's optimiser: compile with most optimisations off."""
    before = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", before)


def _randomized(m, seed):
    """torch's own init for the kernels (seeded), and every vector (biases, norms' affine, BatchNorm statistics)
    drawn anew, so that no BatchNorm is the identity and nothing ports by luck."""
    torch.manual_seed(seed)
    m = m()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in list(m.named_parameters()) + list(m.named_buffers()):
            if t.dtype.is_floating_point and t.ndim == 1:
                t.copy_(torch.rand(t.shape, generator=g) + 0.5 if name.endswith(("running_var", "weight"))
                        else torch.randn(t.shape, generator=g) * 0.3)
    return m.eval()


def _state(m):
    return {k: v.clone() for k, v in m.state_dict().items()}


def _same_state(a, b, skip=("num_batches_tracked",)):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        if not k.endswith(skip):
            assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k


# ---------------------------------------------------------------------------------- conv kernels of every rank

LAYERS = {
    "conv1d_g2": lambda: torch.nn.Conv1d(4, 6, 3, padding=1, groups=2),
    "conv2d": lambda: torch.nn.Conv2d(3, 4, 3),
    "conv3d_g2": lambda: torch.nn.Conv3d(2, 4, (2, 3, 2), groups=2),
    "convT1d_g2": lambda: torch.nn.ConvTranspose1d(4, 6, 3, stride=2, groups=2),
    "convT2d": lambda: torch.nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1),
    "convT3d_g2": lambda: torch.nn.ConvTranspose3d(4, 6, 2, stride=2, groups=2, bias=False),
}


def _native(t, target):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PortWarning)
        if target == "equinox":
            return cb.port.to_equinox(t)
        return cb.port.to_flax(t, api="nnx" if target == "nnx" else "linen")


def _convbridge_twin(t, target):
    """The convbridge.nn layer of ``target`` configured as ``t`` (torch's kernel meaning, unflipped)."""
    n = t.weight.ndim - 2
    kw = {"stride": t.stride, "padding": t.padding, "dilation": t.dilation, "groups": t.groups,
          "use_bias": t.bias is not None}
    if t.transposed:
        kw["output_padding"] = t.output_padding
    args = (n, t.in_channels, t.out_channels, t.kernel_size)
    mod = getattr(cb.nn, "linen" if target == "linen_dict" else target)
    cls = mod.ConvTranspose if t.transposed else mod.Conv
    if target == "equinox":
        return eqx.filter_eval_shape(lambda: cls(*args, **kw, key=KEY))
    if target == "nnx":
        return nnx.eval_shape(lambda: cls(*args, **kw, rngs=nnx.Rngs(0)))
    layer = cls(*args, **kw)
    shapes = jax.eval_shape(layer.init, KEY, jnp.zeros((1,) + (6,) * n + (t.in_channels,)))
    return (layer, shapes) if target == "linen" else shapes


@pytest.mark.parametrize("layer", list(LAYERS))
@pytest.mark.parametrize("target", ["linen", "linen_dict", "nnx", "equinox"])
@pytest.mark.parametrize("maker", ["native", "convbridge"])
def test_every_rank_groups_and_convention_reads_back_exactly(layer, target, maker):
    torch.manual_seed(0)
    t1, t2 = LAYERS[layer](), LAYERS[layer]()  # the same layer, other weights
    dst = _native(t2, target.replace("_dict", "")) if maker == "native" else _convbridge_twin(t2, target)
    layer_module = None
    if target == "linen_dict":  # variables alone: kinds from the torch side, a transposed convention from the shapes
        layer_module = dst[0] if maker == "native" else _convbridge_twin(t2, "linen")[0]
        dst = dst[1] if maker == "native" else dst
    filled, table = cb.port.state_dict(t1, dst)
    if target == "linen_dict" and t1.transposed and t1.groups == 1:  # (kh, kw, in, out) fits both conventions
        assert "assumed flax ConvTranspose (flipped)" in " ".join(table.notes)
        filled, table = cb.port.state_dict(t1, dst, module=layer_module)  # the module's type decides
    assert table.notes == ()
    side = cb.port.read(layer_module, filled) if target == "linen_dict" else cb.port.read(filled)
    np.testing.assert_array_equal(side.weight, t1.weight.detach().numpy())  # the layer's own reader, torch's layout
    if t1.bias is not None:
        np.testing.assert_array_equal(side.bias, t1.bias.detach().numpy())
    ambiguous = target == "linen_dict" and t1.transposed and t1.groups == 1
    back, _ = cb.port.state_dict(filled, t2, module=layer_module if ambiguous else None)
    _same_state(back, t1)
    assert all(r.dtype == "float32" for r in table.rows)


def test_a_guessed_transposed_convention_is_noted_and_module_resolves_it():
    class Up(linen.Module):
        def setup(self):
            self.up = cb.nn.linen.ConvTranspose(2, 4, 4, 2, stride=2)  # torch's meaning: unflipped

        def __call__(self, x):
            return self.up(x)

    torch.manual_seed(0)
    t = torch.nn.Sequential()
    t.add_module("up", torch.nn.ConvTranspose2d(4, 4, 2, stride=2))
    shapes = jax.eval_shape(Up().init, KEY, jnp.zeros((1, 4, 4, 4)))
    w = t.up.weight.detach().numpy()
    guessed, table = cb.port.state_dict(t, shapes)  # (kh, kw, 4, 4) fits Flax's own flipped kernel too
    assert "assumed flax ConvTranspose (flipped)" in " ".join(table.notes)
    np.testing.assert_array_equal(guessed["params"]["up"]["kernel"], w[:, :, ::-1, ::-1].transpose(2, 3, 0, 1))
    known, table = cb.port.state_dict(t, shapes, module=Up())
    assert table.notes == ()
    np.testing.assert_array_equal(known["params"]["up"]["kernel"], w.transpose(2, 3, 0, 1))


def test_convbridge_layers_keep_the_kernel_layout_they_state():
    """A convbridge.nn layer with input layout ``...WH...`` stores its kernel ``OIWH`` / ``WHIO``: the port follows."""
    torch.manual_seed(0)
    t = torch.nn.Conv2d(3, 4, (2, 3))  # kh 2, kw 3
    w = t.weight.detach().numpy()
    e = eqx.filter_eval_shape(lambda: cb.nn.equinox.Conv(2, 3, 4, (3, 2), layout="CWH", key=KEY))  # (kw, kh)
    ported, table = cb.port.state_dict(t, e)
    assert table.rows[0].conversion == "OIHW -> OIWH"
    np.testing.assert_array_equal(ported.weight, w.transpose(0, 1, 3, 2))
    layer = cb.nn.linen.Conv(2, 3, 4, (3, 2), layout="NWHC")
    variables, _ = cb.port.state_dict(t, (layer, jax.eval_shape(layer.init, KEY, jnp.zeros((1, 6, 5, 3)))))
    np.testing.assert_array_equal(variables[1]["params"]["kernel"], w.transpose(3, 2, 1, 0))
    back, _ = cb.port.state_dict(variables, torch.nn.Conv2d(3, 4, (2, 3)))
    _same_state(back, t)


# ------------------------------------------------------------------------------------------- reference models

MODELS = {  # name: (constructor arguments, NCHW input shape)
    "ResNet18": ({"width": 8}, (2, 3, 32, 32)),
    "MobileNetV2Block": ({"in_ch": 8, "out_ch": 8}, (2, 8, 8, 8)),
    "UNet": ({"width": 4}, (2, 3, 8, 8)),
    "LeNet": ({}, (2, 3, 32, 32)),
}


@pytest.fixture(scope="module")
def models():
    from convbridge.models import equinox as me
    from convbridge.models import linen as ml
    from convbridge.models import torch as mt

    out = {}
    for k, (name, (kw, shape)) in enumerate(MODELS.items()):
        lm = getattr(ml, name)(**kw)
        out[name] = {"torch": _randomized(lambda n=name, a=kw: getattr(mt, n)(**a), seed=k), "linen": lm,
                     "linen_shapes": jax.eval_shape(lm.init, KEY, jnp.zeros(shape).transpose(0, 2, 3, 1)),
                     "equinox_shapes": eqx.filter_eval_shape(lambda n=name, a=kw: getattr(me, n)(**a, key=KEY)),
                     "other": _randomized(lambda n=name, a=kw: getattr(mt, n)(**a), seed=100 + k), "shape": shape}
    return out


def _nhwc(a):
    return a.transpose(0, 2, 3, 1) if a.ndim == 4 else a


def _port(m, framework):
    if framework == "linen":
        return cb.port.state_dict(m["torch"], m["linen_shapes"], module=m["linen"])
    return cb.port.state_dict(m["torch"], m["equinox_shapes"])


@pytest.mark.parametrize("framework", ["linen", "equinox"])
@pytest.mark.parametrize("name", list(MODELS))
def test_reference_models_round_trip_bitwise(models, name, framework):
    m = models[name]
    ported, table = _port(m, framework)
    assert table.paired_by == "name" and table.notes == ()
    src = (m["linen"], ported) if framework == "linen" else ported
    back, _ = cb.port.state_dict(src, m["other"])  # into a torch model holding other weights
    _same_state(back, m["torch"])


@pytest.mark.parametrize("name", list(MODELS))
def test_reference_equinox_convs_read_back_as_torch_holds_them(models, name):
    """Each ported conv, read by the layer reader (its own kernel conventions), is torch's layer's weight."""
    m = models[name]
    ported, _ = _port(m, "equinox")
    torch_convs = {n: mod for n, mod in m["torch"].named_modules() if isinstance(mod, torch.nn.modules.conv._ConvNd)}
    assert torch_convs
    for n, mod in torch_convs.items():
        layer = ported
        for part in n.split("."):  # torch's path: an attribute, or an index into a list
            layer = layer[int(part)] if part.isdigit() else getattr(layer, part)
        np.testing.assert_array_equal(cb.port.read(layer).weight, mod.weight.detach().numpy(), err_msg=n)
    if name == "UNet":  # the grouped transposed conv in linen, read by convbridge.nn.linen's reader
        variables, _ = _port(m, "linen")
        up = cb.nn.linen.ConvTranspose(2, 16, 16, 2, stride=2, groups=2)
        side = cb.port.read(up, {"params": variables["params"]["up1"]})
        np.testing.assert_array_equal(side.weight, m["torch"].up1.weight.detach().numpy())


@pytest.mark.parametrize("framework", ["linen", "equinox"])
@pytest.mark.parametrize("name", [n if n in ("LeNet", "MobileNetV2Block") else pytest.param(n, marks=pytest.mark.slow)
                                  for n in MODELS])
def test_reference_model_outputs_match_torch(models, name, framework):
    m = models[name]
    ported, _ = _port(m, framework)
    x = torch.randn(*m["shape"], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = m["torch"](x).numpy()
    if framework == "linen":
        y = jax.jit(lambda v, x: m["linen"].apply(v, x, train=False))(ported, _nhwc(x.numpy()))
        expected = _nhwc(expected)
    else:
        y = eqx.filter_jit(lambda mod, x: jax.vmap(mod)(x))(ported, jnp.asarray(x.numpy()))
    np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------------------- small test models

class TNet(torch.nn.Module):
    """conv, BatchNorm, a grouped transposed conv, GroupNorm, LayerNorm and a Linear."""

    def __init__(self, out=5):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(4)
        self.up = torch.nn.ConvTranspose2d(4, 6, 2, stride=2, groups=2)
        self.gn = torch.nn.GroupNorm(2, 6)
        self.ln = torch.nn.LayerNorm(6)
        self.fc = torch.nn.Linear(6, out)

    def forward(self, x):
        x = self.gn(self.up(torch.relu(self.bn(self.conv(x)))))
        return self.fc(self.ln(x.mean((2, 3))))


class NNet(nnx.Module):
    def __init__(self, rngs, out=5):
        self.conv = nnx.Conv(3, 4, (3, 3), padding=((1, 1), (1, 1)), rngs=rngs)
        self.bn = nnx.BatchNorm(4, use_running_average=True, epsilon=1e-5, rngs=rngs)
        self.up = cb.nn.nnx.ConvTranspose(2, 4, 6, 2, stride=2, groups=2, rngs=rngs)
        self.gn = nnx.GroupNorm(6, num_groups=2, epsilon=1e-5, rngs=rngs)
        self.ln = nnx.LayerNorm(6, epsilon=1e-5, rngs=rngs)
        self.fc = nnx.Linear(6, out, rngs=rngs)

    def __call__(self, x):
        x = self.gn(self.up(jax.nn.relu(self.bn(self.conv(x)))))
        return self.fc(self.ln(x.mean((1, 2))))


class LNet(linen.Module):
    """TNet in linen, compact, auto-named (Conv_0, BatchNorm_0, ...): pairs only in order."""

    out: int = 5

    @linen.compact
    def __call__(self, x):
        x = linen.Conv(4, (3, 3), padding=((1, 1), (1, 1)))(x)
        x = jax.nn.relu(linen.BatchNorm(use_running_average=True, epsilon=1e-5)(x))
        x = cb.nn.linen.ConvTranspose(2, 4, 6, 2, stride=2, groups=2)(x)
        x = linen.GroupNorm(num_groups=2, epsilon=1e-5)(x)
        return linen.Dense(self.out)(linen.LayerNorm(epsilon=1e-5)(x.mean((1, 2))))


LNET_ORDER = ("Conv_0", "BatchNorm_0", "ConvTranspose_0", "GroupNorm_0", "LayerNorm_0", "Dense_0")


def _eager_init(module, x, order):
    """What an eager ``module.init`` returns: real arrays, submodules in creation order (``jax.eval_shape`` and a
    jitted init sort the keys); without an eager init's op-by-op compiles (seconds)."""
    shapes = jax.eval_shape(module.init, KEY, x)
    rng = np.random.default_rng(0)
    return {c: {k: {n: jax.device_put(rng.standard_normal(v.shape).astype(v.dtype)) for n, v in tree[k].items()}
                for k in order if k in tree} for c, tree in shapes.items()}


def _lnet_variables(lm):
    return _eager_init(lm, jnp.zeros((1, 6, 6, 3)), LNET_ORDER)


def _tnet(seed=0, out=5):
    return _randomized(lambda: TNet(out), seed)


def test_nnx_port_matches_torch_and_round_trips():
    t, other = _tnet(0), _tnet(1)
    model, table = cb.port.state_dict(t, nnx.eval_shape(lambda: NNet(nnx.Rngs(0))))
    kinds = {r.source.split(".")[0]: r.kind for r in table.rows}
    assert kinds == {"conv": "conv", "bn": "batchnorm", "up": "conv_transpose", "gn": "groupnorm", "ln": "layernorm",
                     "fc": "linear"}
    x = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = t(x).numpy()
    y = nnx.jit(lambda mod, x: mod(x))(model, jnp.asarray(_nhwc(x.numpy())))
    np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-4, atol=1e-5)
    back, _ = cb.port.state_dict(model, other)
    _same_state(back, t)


def test_auto_named_linen_pairs_in_order_and_round_trips():
    t, other = _tnet(0), _tnet(1)
    lm = LNet()
    variables = _lnet_variables(lm)  # real arrays, in creation order
    filled, table = cb.port.state_dict(t, (lm, variables))
    assert table.paired_by == "order" and isinstance(filled, tuple) and filled[0] is lm
    x = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = t(x).numpy()
    y = jax.jit(lm.apply)(filled[1], jnp.asarray(_nhwc(x.numpy())))
    np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-4, atol=1e-5)
    back, table = cb.port.state_dict(filled[1], other, module=lm)
    _same_state(back, t)
    assert any(r.target == "bn.num_batches_tracked" and not r.source for r in table.rows)


def test_inputs_are_never_modified_and_share_no_memory():
    t, other = _tnet(0), _tnet(1)
    before_t, before_other = _state(t), _state(other)
    lm = LNet()
    variables = _lnet_variables(lm)
    leaves = jax.tree.leaves(variables)
    filled, _ = cb.port.state_dict(t, (lm, variables))
    assert all(a is b for a, b in zip(jax.tree.leaves(variables), leaves))  # the user's dict is untouched
    back, _ = cb.port.state_dict(filled, other, module=lm)
    assert back is not other
    for m, before in ((t, before_t), (other, before_other)):
        assert all(torch.equal(v, before[k]) for k, v in m.state_dict().items())
    rng = np.random.default_rng(0)
    e = eqx.tree_at(lambda m: (m.weight, m.bias), eqx.filter_eval_shape(eqx.nn.Linear, 6, 5, key=KEY),
                    (jax.device_put(rng.standard_normal((5, 6), np.float32)), jax.device_put(np.zeros(5, np.float32))))
    w = np.asarray(e.weight).copy()
    ported, _ = cb.port.state_dict(t.fc, e)
    np.testing.assert_array_equal(np.asarray(e.weight), w)
    with torch.no_grad():
        t.fc.weight.add_(1.0)  # a later write to the torch model never reaches the port (no zero-copy aliasing)
    np.testing.assert_array_equal(np.asarray(ported.weight), before_t["fc.weight"].numpy())
    back.fc.weight.data.add_(1.0)
    np.testing.assert_array_equal(np.asarray(filled[1]["params"]["Dense_0"]["kernel"]), before_t["fc.weight"].numpy().T)


# ------------------------------------------------------------------------------------------------- name maps

class Block(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(c)


class Stages(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layer1 = torch.nn.Sequential(Block(2), Block(2))
        self.layer2 = torch.nn.Sequential(Block(2))
        self.fc = torch.nn.Linear(2, 3)


class LBlock(linen.Module):
    @linen.compact
    def __call__(self, x):
        return linen.Conv(2, (3, 3), padding=1, use_bias=False, name="c1")(x)


class LStages(linen.Module):
    """The same model, other names: stage{i}_b{j}/c1, stage{i}_b{j}_n1 and head."""

    @linen.compact
    def __call__(self, x):
        for i, blocks in ((1, 2), (2, 1)):
            for j in range(blocks):
                x = LBlock(name=f"stage{i}_b{j}")(x)
                x = linen.BatchNorm(use_running_average=True, name=f"stage{i}_b{j}_n1")(x)
        return linen.Dense(3, name="head")(x.mean((1, 2)))


def _stage_shapes():
    return jax.eval_shape(LStages().init, KEY, jnp.zeros((1, 4, 4, 2)))


STAGE_MAP = {"layer*.*.conv1": "stage*_b*/c1", "layer*.*.bn1": "stage*_b*_n1", "fc": "head", "fc*": "nowhere*"}


def test_glob_name_map_substitutes_each_star_and_exact_entries_win():
    t = _randomized(Stages, 0)
    shapes = _stage_shapes()
    filled, table = cb.port.state_dict(t, shapes, name_map=STAGE_MAP)
    assert table.paired_by == "name_map"
    pairs = {r.source: r.target for r in table.rows}
    assert pairs["layer1.1.conv1.weight"] == "params/stage1_b1/c1/kernel"
    assert pairs["layer2.0.bn1.running_mean"] == "batch_stats/stage2_b0_n1/mean"
    assert pairs["fc.weight"] == "params/head/kernel"  # the exact entry, not 'fc*' -> 'nowhere'
    np.testing.assert_array_equal(filled["params"]["stage1_b1"]["c1"]["kernel"],
                                  t.layer1[1].conv1.weight.detach().numpy().transpose(2, 3, 1, 0))
    back, _ = cb.port.state_dict(filled, _randomized(Stages, 1), name_map={v: k for k, v in STAGE_MAP.items()
                                                                             if "*" not in k} | {
        "stage*_b*/c1": "layer*.*.conv1", "stage*_b*_n1": "layer*.*.bn1"})
    _same_state(back, t)


def test_name_map_errors_name_the_entry_and_close_targets():
    t = Stages()
    shapes = _stage_shapes()
    bad = dict(STAGE_MAP, fc="haed", **{"layer9.*": "x"})
    with pytest.raises(ArgumentError, match=r"(?s)'fc' maps \(exact\) to 'haed', which is no target layer; close "
                                            r"target names: 'head'.*'layer9\.\*' matches no source layer"):
        cb.port.state_dict(t, shapes, name_map=bad)
    with pytest.raises(ArgumentError, match=r"has 2 '\*' but its key matched 1"):
        cb.port.state_dict(t, shapes, name_map={"layer*.0.conv1": "a*_*"})


# ---------------------------------------------------------------------------------------------------- errors

def test_unmatched_layers_and_tensors_are_named_in_one_error_before_writing():
    t = _tnet(0)
    t.extra = torch.nn.Linear(5, 2)  # a layer the target lacks
    nnx_model = nnx.eval_shape(lambda: NNet(nnx.Rngs(0)))
    with pytest.raises(ArgumentError, match=r"(?s)1 problem.*nothing was written.*source layer 'extra' "
                                            r"\(torch.nn.Linear: weight \(2, 5\), bias \(2,\)\) has no target layer"):
        cb.port.state_dict(t, nnx_model)
    t2 = _tnet(0)
    t2.conv = torch.nn.Conv2d(3, 4, 3, padding=1, bias=False)  # the target's conv has a bias: nothing fills it
    t2.fc.register_parameter("bias", None)
    with pytest.raises(ArgumentError, match=r"(?s)2 problems.*target tensor 'conv.bias' \(4,\) has no counterpart "
                                            r"in source layer 'conv'.*target tensor 'fc.bias'"):
        cb.port.state_dict(t2, nnx_model)


def test_shape_mismatches_name_both_sides():
    t = _tnet(0, out=7)
    lm = LNet()
    shapes = _lnet_variables(lm)  # the dict in creation order
    with pytest.raises(ShapeError, match=r"(?s)2 problems.*'fc.weight' \(7, 6\) converts to \(6, 7\) \(transpose "
                                         r"\(out, in\) -> \(in, out\)\) but 'params/Dense_0/kernel' is \(6, 5\).*"
                                         r"'fc.bias' \(7,\) .*'params/Dense_0/bias' is \(5,\)"):
        cb.port.state_dict(t, (lm, shapes))


def test_a_layer_count_mismatch_names_the_first_layers_that_do_not_pair():
    seq = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Conv2d(4, 4, 1),
                              torch.nn.Flatten(), torch.nn.Linear(4, 2))

    class L(linen.Module):
        @linen.compact
        def __call__(self, x):
            x = linen.BatchNorm(use_running_average=True)(linen.Conv(4, (3, 3))(x))
            return linen.Dense(2)(x.reshape(x.shape[0], -1))

    variables = _eager_init(L(), jnp.zeros((1, 3, 3, 3)), ("Conv_0", "BatchNorm_0", "Dense_0"))
    with pytest.raises(ArgumentError, match=r"the source has 4 layers with parameters and the target 3.*first that "
                                            r"could not be paired is layer 2: source '2' \(torch.nn.Conv2d.*vs target "
                                            r"'Dense_0'.*unpaired source layers at the end: '4'"):
        cb.port.state_dict(seq, variables)
    shapes = jax.eval_shape(L().init, KEY, jnp.zeros((1, 3, 3, 3)))  # keys sorted: BatchNorm_0, Conv_0, Dense_0
    with pytest.raises(ArgumentError, match=r"layers are in alphabetical order \(jax.eval_shape"):
        cb.port.state_dict(seq, shapes)


def test_kind_and_dtype_mismatches():
    lin = torch.nn.Sequential(torch.nn.Linear(4, 4))
    eq = [eqx.filter_eval_shape(eqx.nn.Conv1d, 4, 4, 1, key=KEY)]  # same sizes, another kind
    with pytest.raises(ArgumentError, match=r"source layer '0' \(torch.nn.Linear.*is a linear but target layer '0' "
                                            r"\(eqx.nn.Conv1d.*is a conv"):
        cb.port.state_dict(lin, eqx.nn.Sequential(eq))
    with pytest.raises(DTypeError, match=r"'weight' is float64 but 'weight' is float32; the port keeps dtypes"):
        cb.port.state_dict(torch.nn.Linear(4, 4).double(), eqx.filter_eval_shape(eqx.nn.Linear, 4, 4, key=KEY))


def test_refusals_and_argument_errors():
    bn = torch.nn.Sequential(torch.nn.BatchNorm1d(3))
    stateful = eqx.filter_eval_shape(lambda: eqx.nn.Sequential([eqx.nn.BatchNorm(3, "batch", mode="batch")]))
    with pytest.raises(ArgumentError, match=r"eqx.nn.BatchNorm keeps its running statistics in an eqx.nn.State"):
        cb.port.state_dict(bn, stateful)
    linear = eqx.filter_eval_shape(eqx.nn.Linear, 2, 2, key=KEY)
    with pytest.raises(ArgumentTypeError, match="both are torch modules"):
        cb.port.state_dict(bn, bn)
    with pytest.raises(ArgumentTypeError, match="src is equinox and dst is nnx"):
        cb.port.state_dict(linear, nnx.eval_shape(lambda: nnx.Linear(2, 2, rngs=nnx.Rngs(0))))
    with pytest.raises(ArgumentTypeError, match="flax.linen module, which holds no weights"):
        cb.port.state_dict(bn, linen.Dense(3))
    with pytest.raises(ArgumentError, match="module= is the linen module of a linen variables dict"):
        cb.port.state_dict(bn, linear, module=linen.Dense(3))
    with pytest.raises(ArgumentTypeError, match="name_map must be a dict"):
        cb.port.state_dict(bn, linear, name_map=[("a", "b")])
    with pytest.raises(ArgumentTypeError, match=r"a dict of torch tensors \(a state_dict\?\): give the torch module"):
        cb.port.state_dict(torch.nn.Linear(2, 2).state_dict(), linear)
    with pytest.raises(ArgumentTypeError, match=r"the source's 'weight' is a jax.ShapeDtypeStruct, a shape without"):
        cb.port.state_dict(linear, torch.nn.Linear(2, 2))
    with pytest.raises(ArgumentTypeError, match=r"'weight' \(and 1 more\) is on the meta device.*to_empty"):
        cb.port.state_dict(torch.nn.Linear(2, 2, device="meta"), linear)
