"""convbridge.nn: every framework's Conv and ConvTranspose against the NumPy reference (values), against the
framework's own convolutions (gradients), their init (exact draws and KS tests, with negative controls), and
their errors.

Parameters are read back into torch's meaning by the storage table written out here (not by the layers' own
``kernel_layout``), so a wrong storage order fails the reference check.

JAX compiles its random draws once per shape (about a second each on these CPUs), so the value, gradient and
error tests replace the JAX layers' draws by NumPy ones (``cheap_draws``): each such test compiles one program.
The init tests use the real draws, on layers whose kernels share their shapes across frameworks.
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

import convbridge as cb
from convbridge.errors import ArgumentError, ArgumentTypeError, ConvBridgeError, DTypeError, LayoutError, ShapeError

torch = pytest.importorskip("torch")
jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
eqx = pytest.importorskip("equinox")
flax_linen = pytest.importorskip("flax.linen")
nnx = pytest.importorskip("flax.nnx")
stats = pytest.importorskip("scipy.stats")

from convbridge.nn import equinox as cbe  # noqa: E402
from convbridge.nn import linen as cbl  # noqa: E402
from convbridge.nn import nnx as cbn  # noqa: E402
from convbridge.nn import torch as cbt  # noqa: E402

FRAMEWORKS = ("torch", "linen", "nnx", "equinox")
MODULES = {"torch": cbt, "linen": cbl, "nnx": cbn, "equinox": cbe}
#: Each framework's other layout (channels-last for torch, channels-first for Flax, one channels-last example).
OTHER = {"torch": "N{}C", "linen": "NC{}", "nnx": "NC{}", "equinox": "{}C"}
SPATIAL = {1: "W", 2: "HW", 3: "DHW"}
TRUNC = 0.87962566103423978


# --- building, running and reading back a layer, per framework ------------------------------------------------

def build(fw: str, op: str, seed: int = 0, **kwargs):
    """A layer (torch draws from its global RNG, the JAX layers from ``seed``)."""
    cls = getattr(MODULES[fw], op)
    if fw == "torch":
        torch.manual_seed(seed)
        return cls(**kwargs)
    if fw == "nnx":
        return cls(**kwargs, rngs=nnx.Rngs(seed))
    if fw == "equinox":
        return cls(**kwargs, key=jax.random.key(seed))
    return cls(**kwargs)


@pytest.fixture
def cheap_draws(monkeypatch):
    """The JAX layers draw their parameters with NumPy (U(-0.5, 0.5)): no random program to compile per shape."""
    rng = np.random.default_rng(0)

    def kernel(cfg, key, dtype):  # device_put: jnp.asarray would compile a copy per shape
        return jax.device_put(rng.uniform(-0.5, 0.5, cfg.kernel_shape).astype(jnp.dtype(dtype)))

    def bias(shape):
        return lambda cfg, key, dtype, **_: jax.device_put(rng.uniform(-0.5, 0.5, shape(cfg)).astype(jnp.dtype(dtype)))

    for module in (cbl, cbn, cbe):
        monkeypatch.setattr(module, "draw_kernel", kernel)
    for module in (cbl, cbn):
        monkeypatch.setattr(module, "draw_bias", bias(lambda cfg: (cfg.out_channels,)))
    monkeypatch.setattr(cbe, "draw_bias", bias(lambda cfg: (cfg.out_channels,) + (1,) * cfg.num_spatial_dims))


def forward(fw: str, layer, x: np.ndarray, seed: int = 0):
    """``(y, params)``: the layer's output as NumPy and its parameters (linen's from ``init``), jit-compiled."""
    if fw == "torch":
        return layer(torch.from_numpy(x)).detach().numpy(), {"weight": layer.weight, "bias": layer.bias}
    if fw == "linen":
        y, variables = jax.jit(layer.init_with_output)(jax.random.key(seed), x)
        return np.asarray(y), variables["params"]
    if fw == "nnx":
        return np.asarray(nnx.jit(lambda m, v: m(v))(layer, x)), {"kernel": layer.kernel[...],
                                                                 "bias": None if layer.bias is None else layer.bias[...]}
    call = (lambda m, v: jax.vmap(m)(v)) if "N" not in layer.layout else (lambda m, v: m(v))
    return np.asarray(eqx.filter_jit(call)(layer, x)), {"weight": layer.weight, "bias": layer.bias}


def torch_meaning(fw: str, op: str, params: dict, nsp: int):
    """Weight ``(out, in/g, *k)`` (Conv) or ``(in, out/g, *k)`` (ConvTranspose) and bias ``(out,)``, float64."""
    def f64(a):
        return None if a is None else np.asarray(a.detach() if hasattr(a, "detach") else a, dtype=np.float64)

    bias = f64(params.get("bias"))
    bias = None if bias is None else bias.reshape(-1)
    if fw in ("torch", "equinox"):
        return f64(params["weight"]), bias
    spatial = tuple(range(nsp))  # Flax: (*k, I, O); Conv I = in/g, O = out; ConvTranspose I = in, O = out/g
    order = (nsp + 1, nsp, *spatial) if op == "Conv" else (nsp, nsp + 1, *spatial)
    return np.transpose(f64(params["kernel"]), order), bias


def to_layout(x_canon: np.ndarray, layout: str) -> np.ndarray:
    """``(N, C, *spatial)`` to ``layout`` (batch first, to vmap over, when the layout has no N)."""
    target = layout if "N" in layout else "N" + layout
    letters = "NC" + "".join(c for c in layout if c not in "NC")
    return np.transpose(x_canon, [letters.index(c) for c in target])


def from_layout(y: np.ndarray, layout: str) -> np.ndarray:
    target = layout if "N" in layout else "N" + layout
    letters = "NC" + "".join(c for c in layout if c not in "NC")
    return np.transpose(y, [target.index(c) for c in letters])


# --- values: every framework x Conv/ConvTranspose x a handful of configurations --------------------------------

CONV_CASES = [
    ("1d-stride-pad", dict(num_spatial_dims=1, in_channels=3, out_channels=4, kernel_size=3, stride=2, padding=1),
     (9,), None, ("linen",)),
    ("2d-pairs-dilation-groups-nobias", dict(num_spatial_dims=2, in_channels=4, out_channels=6, kernel_size=(3, 2),
                                             padding=((1, 0), (2, 1)), dilation=(2, 1), groups=2, use_bias=False),
     (7, 6), "other", ("nnx", "equinox")),
    ("2d-depthwise-same-reflect", dict(num_spatial_dims=2, in_channels=3, out_channels=6, kernel_size=3, groups=3,
                                       stride=2, padding="same", padding_mode="reflect"), (7, 8), None, ("equinox",)),
    ("3d-circular-odd-layout", dict(num_spatial_dims=3, in_channels=2, out_channels=2, kernel_size=(2, 1, 3),
                                    stride=(1, 2, 1), padding=1, padding_mode="circular"), (3, 4, 5), "NWCHD",
     ("nnx",)),
    ("2d-replicate-other-layout", dict(num_spatial_dims=2, in_channels=2, out_channels=3, kernel_size=3,
                                       padding=(2, 1), padding_mode="replicate"), (5, 6), "other",
     ("linen", "equinox")),
]
TRANSPOSE_CASES = [
    ("1d-stride-output-padding", dict(num_spatial_dims=1, in_channels=3, out_channels=2, kernel_size=3, stride=2,
                                      padding=1, output_padding=1), (5,), None, ("equinox",)),
    ("2d-groups-pairs-dilation", dict(num_spatial_dims=2, in_channels=4, out_channels=6, kernel_size=(3, 2),
                                      stride=(2, 3), padding=((1, 0), (0, 2)), dilation=(1, 2), output_padding=(1, 2),
                                      groups=2), (4, 3), "other", ("linen", "nnx")),
    ("2d-depthwise-same-nobias", dict(num_spatial_dims=2, in_channels=3, out_channels=3, kernel_size=3, groups=3,
                                      stride=2, padding="same", use_bias=False), (4, 5), None,
     ("nnx",)),
    ("3d", dict(num_spatial_dims=3, in_channels=2, out_channels=3, kernel_size=2, stride=(1, 2, 1)), (2, 3, 3), None,
     ("linen",)),
    ("2d-output-padding-from-dilation", dict(num_spatial_dims=2, in_channels=2, out_channels=2, kernel_size=3,
                                             dilation=2, output_padding=1), (4, 5), "other",
     ("equinox", "linen")),
]
CASES = [("Conv", *c) for c in CONV_CASES] + [("ConvTranspose", *c) for c in TRANSPOSE_CASES]
#: Every case runs in torch and in one or two of the JAX frameworks (they share the forward code; the storage
#: and layout plumbing differs), so that each framework sees both ops in both of its layouts (a case's layout:
#: None, the framework's; "other", its other; or a layout string).
RUNS = [(fw, *case[:-1]) for case in CASES for fw in ("torch", *case[-1])]


@pytest.mark.usefixtures("cheap_draws")
@pytest.mark.parametrize("fw, op, name, kwargs, sizes, layout", RUNS, ids=[f"{r[0]}-{r[1]}-{r[2]}" for r in RUNS])
def test_layer_equals_numpy_reference(fw, op, name, kwargs, sizes, layout):
    nsp = kwargs["num_spatial_dims"]
    layout = OTHER[fw].format(SPATIAL[nsp]) if layout == "other" else layout
    layer = build(fw, op, seed=len(name), **kwargs, layout=layout)
    x_canon = np.random.default_rng(len(name)).uniform(-1, 1, (2, kwargs["in_channels"], *sizes)).astype(np.float32)
    y, params = forward(fw, layer, to_layout(x_canon, layer.layout))
    weight, bias = torch_meaning(fw, op, params, nsp)
    args = {k: v for k, v in kwargs.items() if k not in ("num_spatial_dims", "in_channels", "out_channels",
                                                          "kernel_size", "use_bias")}
    ref_op = cb.conv if op == "Conv" else cb.conv_transpose
    ref = ref_op(x_canon.astype(np.float64), weight, bias, backend="numpy", **args)
    assert y.dtype == np.float32
    np.testing.assert_allclose(from_layout(y, layer.layout), ref, rtol=1e-5, atol=1e-6)
    assert (bias is None) == (kwargs.get("use_bias", True) is False)


# --- gradients: against each framework's own convolution with the same parameters -----------------------------

def test_torch_gradients_match_torch_functional():
    torch.manual_seed(0)
    F = torch.nn.functional
    cases = [
        (cbt.Conv(2, 4, 6, (3, 2), stride=2, padding=(1, 0), dilation=(1, 2), groups=2),
         lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=(1, 0), dilation=(1, 2), groups=2), (7, 8)),
        (cbt.ConvTranspose(2, 4, 6, 3, stride=2, padding=1, output_padding=(1, 0), groups=2, dilation=(1, 2)),
         lambda x, w, b: F.conv_transpose2d(x, w, b, stride=2, padding=1, output_padding=(1, 0), groups=2,
                                            dilation=(1, 2)), (4, 5)),
    ]
    for layer, native, sizes in cases:
        x = torch.randn(2, 4, *sizes, requires_grad=True)
        y = layer(x)
        g = torch.randn_like(y)
        grads = torch.autograd.grad((y * g).sum(), (x, layer.weight, layer.bias))
        w, b = layer.weight.detach().clone().requires_grad_(), layer.bias.detach().clone().requires_grad_()
        x2 = x.detach().clone().requires_grad_()
        y2 = native(x2, w, b)
        torch.testing.assert_close(y, y2)
        for ours, theirs in zip(grads, torch.autograd.grad((y2 * g).sum(), (x2, w, b))):
            assert ours.shape == theirs.shape and torch.isfinite(ours).all()
            torch.testing.assert_close(ours, theirs)


def _normal(shape):
    return jnp.asarray(np.random.default_rng(len(shape)).normal(size=shape), jnp.float32)


def _assert_grads(ours, theirs):
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
        assert a.shape == b.shape and bool(jnp.isfinite(a).all())
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.usefixtures("cheap_draws")
def test_linen_gradients_match_lax_conv():
    layer = cbl.Conv(2, 4, 6, (3, 2), stride=(2, 1), padding=((1, 0), (2, 1)), dilation=(1, 2), groups=2)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 7, 6, 4)), jnp.float32)
    params = jax.jit(layer.init)(jax.random.key(0), x)["params"]

    def native(p, v):
        return jax.lax.conv_general_dilated(v, p["kernel"], (2, 1), ((1, 0), (2, 1)), rhs_dilation=(1, 2),
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=2,
                                            precision="highest") + p["bias"]

    g = _normal(jax.eval_shape(native, params, x).shape)
    ours = jax.jit(jax.grad(lambda p, v: (layer.apply({"params": p}, v) * g).sum(), argnums=(0, 1)))(params, x)
    _assert_grads(ours, jax.jit(jax.grad(lambda p, v: (native(p, v) * g).sum(), argnums=(0, 1)))(params, x))


@pytest.mark.usefixtures("cheap_draws")
def test_nnx_transpose_gradients_match_lax_conv_transpose():
    k, s, d, lo, hi, op = 3, 2, 2, 1, 2, 1
    layer = cbn.ConvTranspose(1, 3, 4, k, stride=s, padding=((lo, hi),), dilation=d, output_padding=op,
                              rngs=nnx.Rngs(0))
    x = _normal((2, 6, 3))
    span = d * (k - 1)

    def native(kernel, bias, v):  # lax's transpose_kernel=True is the gradient of conv; its "O" names x's channels
        return jax.lax.conv_transpose(v, jnp.swapaxes(kernel, -1, -2), (s,), ((span - lo, span - hi + op),),
                                      rhs_dilation=(d,), dimension_numbers=("NWC", "WIO", "NWC"),
                                      transpose_kernel=True, precision="highest") + bias

    kernel, bias = layer.kernel[...], layer.bias[...]
    g = _normal(jax.eval_shape(native, kernel, bias, x).shape)
    grads = nnx.jit(nnx.grad(lambda m, v: (m(v) * g).sum(), argnums=(0, 1)))(layer, x)
    ours = (grads[0]["kernel"][...], grads[0]["bias"][...], grads[1])
    theirs = jax.jit(jax.grad(lambda a, b, v: (native(a, b, v) * g).sum(), argnums=(0, 1, 2)))(kernel, bias, x)
    _assert_grads(ours, theirs)


@pytest.mark.usefixtures("cheap_draws")
def test_equinox_gradients_match_eqx_conv_under_vmap_and_jit():
    ours = cbe.Conv(2, 4, 6, 3, stride=(1, 2), padding=((1, 0), (0, 2)), dilation=(2, 1), groups=2,
                    key=jax.random.key(0))
    theirs = eqx.filter_eval_shape(eqx.nn.Conv, 2, 4, 6, 3, stride=(1, 2), padding=((1, 0), (0, 2)), dilation=(2, 1),
                                   groups=2, key=jax.random.key(9))  # no draws: its leaves are replaced
    theirs = eqx.tree_at(lambda m: (m.weight, m.bias), theirs, (ours.weight, ours.bias))
    x = _normal((3, 4, 7, 6))
    g = _normal(eqx.filter_eval_shape(jax.vmap(ours), x).shape)

    @eqx.filter_jit
    @eqx.filter_grad
    def grad(model, v):
        return (jax.vmap(model)(v) * g).sum()

    a, b = grad(ours, x), grad(theirs, x)
    _assert_grads((a.weight, a.bias), (b.weight, b.bias))


# --- init: exact draws of each framework's own layer, and the distributions ------------------------------------

def test_default_init_is_each_frameworks_own_draw():
    """With the same seed a layer draws what the framework's own layer draws (torch's RNG order included)."""
    for ours, theirs in [(lambda: cbt.Conv(2, 3, 8, (3, 2)), lambda: torch.nn.Conv2d(3, 8, (3, 2))),
                         (lambda: cbt.ConvTranspose(1, 6, 4, 3, groups=2),
                          lambda: torch.nn.ConvTranspose1d(6, 4, 3, groups=2))]:
        torch.manual_seed(3)
        a = ours()
        torch.manual_seed(3)
        b = theirs()
        assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    x = jnp.zeros((1, 5, 5, 16))  # the init tests' shapes: their draws compile once
    lin = cbl.Conv(2, 16, 64, 5).init(jax.random.key(4), x)["params"]
    assert np.array_equal(lin["kernel"], flax_linen.Conv(64, (5, 5)).init(jax.random.key(4), x)["params"]["kernel"])
    assert np.array_equal(cbn.Conv(2, 16, 64, 5, rngs=nnx.Rngs(4)).kernel[...],
                          nnx.Conv(16, 64, (5, 5), rngs=nnx.Rngs(4)).kernel[...])
    e, n = cbe.Conv(2, 16, 64, 5, key=jax.random.key(4)), eqx.nn.Conv(2, 16, 64, 5, key=jax.random.key(4))
    assert np.array_equal(e.weight, n.weight) and np.array_equal(e.bias, n.bias)


def _draws(fw: str, op: str, init: str, in_channels: int, out_channels: int, seed: int = 0):
    """Weight (torch's meaning, flat) and bias of one 5 x 5 layer."""
    layer = build(fw, op, seed=seed, num_spatial_dims=2, in_channels=in_channels, out_channels=out_channels,
                  kernel_size=5, init=init)
    if fw == "linen":
        params = layer.init(jax.random.key(seed), jnp.zeros((1, 5, 5, in_channels)))["params"]
    elif fw == "nnx":
        params = {"kernel": layer.kernel[...], "bias": layer.bias[...]}
    else:
        params = {"weight": layer.weight, "bias": layer.bias}
    weight, bias = torch_meaning(fw, op, params, 2)
    return weight.ravel(), bias


#: ConvTranspose channels (in, out) with in != out, chosen so that every layer's stored kernel has the shape of
#: the Conv(16, 64) kernel in the same framework (torch's (64, 16, 5, 5), Flax's (5, 5, 16, 64)): JAX compiles
#: each random draw once per shape.
TRANSPOSED = {"torch": (64, 16), "equinox": (64, 16), "linen": (16, 64), "nnx": (16, 64)}


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_torch_init_is_uniform_with_torchs_fan_in(fw):
    """U(-b, b), b = 1 / sqrt(fan_in); ConvTranspose's fan_in is out / groups * prod(k) (pytorch#30079)."""
    w, bias = _draws(fw, "Conv", "torch", 16, 64)  # 25,600 draws, fan_in 16 * 25
    b = 1 / math.sqrt(16 * 25)
    assert stats.kstest(w, stats.uniform(-b, 2 * b).cdf).pvalue > 1e-3
    assert stats.kstest(w, stats.uniform(-1.1 * b, 2.2 * b).cdf).pvalue < 1e-6  # the test can tell 10 %
    assert np.abs(bias).max() <= b and np.abs(bias).max() > b / 2
    c_in, c_out = TRANSPOSED[fw]
    w, bias = _draws(fw, "ConvTranspose", "torch", c_in, c_out)
    b, wrong = 1 / math.sqrt(c_out * 25), 1 / math.sqrt(c_in * 25)  # fan_in from out / groups, not in / groups
    assert stats.kstest(w, stats.uniform(-b, 2 * b).cdf).pvalue > 1e-3
    assert stats.kstest(w, stats.uniform(-wrong, 2 * wrong).cdf).pvalue < 1e-6
    assert np.abs(bias).max() <= b


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_flax_init_is_lecun_normal_on_flax_layout(fw):
    """Truncated normal (-2, 2) of variance 1 / fan_in, fan_in = prod(k) * the *IO kernel's I axis; zero bias."""
    w, bias = _draws(fw, "Conv", "flax", 16, 64)
    std = math.sqrt(1 / (25 * 16)) / TRUNC
    assert stats.kstest(w, stats.truncnorm(-2, 2, scale=std).cdf).pvalue > 1e-3
    assert stats.kstest(w, stats.truncnorm(-2, 2, scale=1.1 * std).cdf).pvalue < 1e-6
    assert not np.any(bias)
    c_in, c_out = TRANSPOSED[fw]
    w, bias = _draws(fw, "ConvTranspose", "flax", c_in, c_out)
    std, wrong = math.sqrt(1 / (25 * c_in)) / TRUNC, math.sqrt(1 / (25 * c_out)) / TRUNC  # I = all of x's channels
    assert stats.kstest(w, stats.truncnorm(-2, 2, scale=std).cdf).pvalue > 1e-3
    assert stats.kstest(w, stats.truncnorm(-2, 2, scale=wrong).cdf).pvalue < 1e-6  # torch's fan_in (out / groups)
    assert not np.any(bias)


def test_torch_layer_init_is_distributed_as_torch_nn():
    """Two-sample KS against torch.nn's own layers (other seeds, so not the same draws)."""
    torch.manual_seed(11)
    theirs = torch.nn.Conv2d(16, 64, 5).weight.detach().numpy().ravel()
    assert stats.ks_2samp(_draws("torch", "Conv", "torch", 16, 64, seed=12)[0], theirs).pvalue > 1e-3
    torch.manual_seed(11)
    theirs = torch.nn.ConvTranspose2d(16, 64, 5).weight.detach().numpy().ravel()
    assert stats.ks_2samp(_draws("torch", "ConvTranspose", "torch", 16, 64, seed=12)[0], theirs).pvalue > 1e-3


# --- attributes, repr, hashing, imports ------------------------------------------------------------------------

@pytest.mark.usefixtures("cheap_draws")
@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_attributes_are_normalised(fw):
    layer = build(fw, "ConvTranspose", num_spatial_dims=2, in_channels=4, out_channels=6, kernel_size=[3, 2],
                  stride=2, padding=[[1, 0], [0, 1]], output_padding=1, groups=2)
    assert (layer.num_spatial_dims, layer.in_channels, layer.out_channels, layer.groups) == (2, 4, 6, 2)
    assert (layer.kernel_size, layer.stride, layer.dilation, layer.output_padding) == ((3, 2), (2, 2), (1, 1), (1, 1))
    assert layer.padding == ((1, 0), (0, 1)) and isinstance(layer.padding[0], tuple)
    assert layer.use_bias is True and layer.padding_mode == "zeros"
    assert layer.layout == {"torch": "NCHW", "linen": "NHWC", "nnx": "NHWC", "equinox": "CHW"}[fw]
    assert repr(layer).startswith("ConvTranspose(2, 4, 6, kernel_size=(3, 2), stride=(2, 2), padding=((1, 0), (0, 1))")
    assert str(layer) == repr(layer) and "groups=2, layout=" in repr(layer)
    conv = build(fw, "Conv", num_spatial_dims=1, in_channels=2, out_channels=2, kernel_size=3, layout="NWC")
    assert conv.layout == "NWC" and not hasattr(conv, "output_padding")


def test_linen_layers_hash_compare_and_clone():
    a = cbl.Conv(2, 4, 6, [3, 3], padding=[[1, 0], [0, 1]], init="torch")
    b = cbl.Conv(2, 4, 6, 3, padding=((1, 0), (0, 1)), init="torch")
    assert a == b and hash(a) == hash(b) and a.init_scheme == "torch"
    assert a.clone().init_scheme == "torch" and a.kernel_layout == "HWIO"
    with pytest.raises(ArgumentTypeError, match="not both"):
        cbl.Conv(2, 4, 6, 3, init="torch", init_scheme="flax")


def test_importing_convbridge_nn_imports_no_framework():
    code = ("import sys, convbridge.nn as n; print(sorted(m for m in ('torch', 'jax', 'flax', 'equinox') "
            "if m in sys.modules), 'torch' in dir(n))\n"
            "sys.modules['equinox'] = None  # as if not installed\n"
            "try: n.equinox\nexcept n.BackendUnavailable as e: print(str(e).replace(' ', '_'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[:2] == ["[]", "True"] and "pip_install_'convbridge[equinox]'" in out[2]
    import convbridge.nn

    assert convbridge.nn.torch is cbt and convbridge.nn.equinox is cbe  # the submodules, loaded on access


# --- errors ----------------------------------------------------------------------------------------------------

BASE = dict(num_spatial_dims=1, in_channels=4, out_channels=6, kernel_size=3)
ERRORS = [
    ("Conv", dict(init="xavier"), ArgumentError, r"unknown init 'xavier'; choose one of 'torch', 'flax'"),
    ("Conv", dict(groups=4), ArgumentError, r"groups \(4\) must divide out_channels \(6\).* choose groups from \[1, 2\]"),
    ("ConvTranspose", dict(groups=3), ArgumentError, r"groups \(3\) must divide in_channels \(4\)"),
    ("Conv", dict(padding_mode="mirror"), ArgumentError, r"unknown padding_mode 'mirror'; choose one of 'zeros'"),
    ("ConvTranspose", dict(stride=2, output_padding=2), ArgumentError,
     r"output_padding 2 on axis W must be < max\(stride 2, dilation 1\) = 2 \(ATen's rule"),
    ("ConvTranspose", dict(padding_mode="reflect"), ArgumentError, r"ConvTranspose has no padding_mode 'reflect'"),
    ("Conv", dict(kernel_size=(3, 3)), ArgumentError, r"kernel_size has 2 entries but num_spatial_dims is 1"),
    ("Conv", dict(layout="NCHW"), LayoutError, r"layout 'NCHW' has 2 spatial axes \(HW\) but num_spatial_dims is 1"),
    ("Conv", dict(layout="NWC,WIO->NWC"), LayoutError, r"layout is the layer's input \(and output\) layout"),
    ("Conv", dict(stride=0), ArgumentError, r"stride must be >= 1, got 0"),
    ("Conv", dict(padding="full"), ConvBridgeError, r"unknown padding 'full'"),
    ("Conv", dict(use_bias=1), ArgumentTypeError, r"use_bias must be True or False"),
]


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("op, extra, error, message", ERRORS, ids=[e[2].__name__ + "-" + e[3][:24] for e in ERRORS])
def test_invalid_arguments_raise_at_construction(fw, op, extra, error, message):
    with pytest.raises(error, match=message):
        build(fw, op, **(BASE | extra))


@pytest.mark.usefixtures("cheap_draws")
@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_wrong_input_channels_raise_at_call(fw):
    for op in ("Conv", "ConvTranspose"):
        layer = build(fw, op, **BASE)
        x = np.zeros((1, 5, 8) if fw in ("torch", "equinox") else (1, 8, 5), np.float32)
        with pytest.raises(ShapeError, match="input has 5 channels"):
            forward(fw, layer, x)


@pytest.mark.usefixtures("cheap_draws")
def test_bad_dtypes_raise():
    with pytest.raises(DTypeError, match="not a floating-point dtype"):
        cbt.Conv(1, 2, 2, 3, dtype=torch.int32)
    with pytest.raises(ArgumentTypeError, match="must be a torch.dtype"):
        cbt.Conv(1, 2, 2, 3, dtype="float32")
    with pytest.raises(DTypeError, match="not a floating-point dtype"):
        cbn.Conv(1, 2, 2, 3, dtype=jnp.int32, rngs=nnx.Rngs(0))
    layer = cbt.Conv(1, 2, 2, 3, dtype=torch.float64)
    assert layer.weight.dtype == torch.float64 and layer(torch.ones(1, 2, 5, dtype=torch.float64)).dtype == torch.float64
