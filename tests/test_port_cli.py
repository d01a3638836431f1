"""`convbridge port`: the printed construction runs as printed and computes what the described layer computes."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import convbridge as cb
from convbridge.cli import main
from convbridge.port import PortWarning
from convbridge.port.describe import source_from_text

torch = pytest.importorskip("torch")
jax = pytest.importorskip("jax")
eqx = pytest.importorskip("equinox")
from flax import nnx  # noqa: E402


def _cli(*args):
    from click.testing import CliRunner

    return CliRunner().invoke(main, list(args), standalone_mode=False, catch_exceptions=False)


def _randomised(module, variables, seed=0):
    """The described layer with random weights (the description builds it with zeros)."""
    rng = np.random.default_rng(seed)

    def draw(shape):
        return rng.standard_normal(shape).astype(np.float32)

    if isinstance(module, torch.nn.Module):
        with torch.no_grad():
            for p in module.parameters():
                p.copy_(torch.from_numpy(draw(tuple(p.shape))))
        return module, None, module.weight.detach().numpy(), None if module.bias is None else module.bias.detach().numpy()
    if variables is not None:
        params = {k: jax.device_put(draw(v.shape).astype(v.dtype)) for k, v in variables["params"].items()}
        return module, {"params": params}, np.asarray(params["kernel"]), (None if "bias" not in params
                                                                          else np.asarray(params["bias"]))
    if isinstance(module, nnx.Module):
        module.kernel.set_value(jax.device_put(draw(module.kernel.get_value().shape)))
        if module.bias is not None:
            module.bias.set_value(jax.device_put(draw(module.bias.get_value().shape)))
        return module, None, np.asarray(module.kernel.get_value()), (None if module.bias is None
                                                                     else np.asarray(module.bias.get_value()))
    module = eqx.tree_at(lambda t: t.weight, module, jax.device_put(draw(module.weight.shape)))
    if module.bias is not None:
        module = eqx.tree_at(lambda t: t.bias, module, jax.device_put(draw(module.bias.shape)))
    return module, None, np.asarray(module.weight), None if module.bias is None else np.asarray(module.bias)


DESCRIPTIONS = [
    ("ConvTranspose2d(8, 4, 4, stride=2, padding=1, groups=4)", "flax", (2, 8, 5, 5)),
    ("ConvTranspose2d(8, 4, 4, stride=2, padding=1, output_padding=1)", "nnx", (2, 8, 5, 5)),
    ("Conv2d(3, 6, 7, stride=2, padding=3, groups=3, padding_mode='reflect')", "equinox", (2, 3, 12, 12)),
    ("Conv1d(2, 4, 3, padding='same', dilation=2, bias=False)", "flax", (2, 2, 9)),
    ("flax.linen.Conv(8, (3, 3), strides=2, padding='SAME', in_channels=3)", "torch", (2, 9, 9, 3)),
    ("nnx.ConvTranspose(4, 2, (3,), strides=(2,), padding='SAME', transpose_kernel=True)", "torch", (2, 5, 4)),
    ("eqx.nn.ConvTranspose2d(4, 2, 3, stride=2, output_padding=1, groups=2)", "flax", (4, 5, 5)),
    ("flax.linen.Conv(6, (3, 3), input_dilation=2, padding=((1, 2), (1, 2)), feature_group_count=2, in_channels=4)",
     "torch", (2, 5, 5, 4)),
    ("equinox.nn.Conv(1, 2, 4, 3, padding='SAME', padding_mode='CIRCULAR')", "nnx", (2, 7)),
    ("flax.linen.Conv(8, (3, 3), padding='REFLECT', in_channels=3, param_dtype='bfloat16')", "torch", (2, 7, 7, 3)),
]


@pytest.mark.parametrize("text,to,x_shape", DESCRIPTIONS, ids=[f"{t}->{to}" for t, to, _ in DESCRIPTIONS])
def test_printed_code_runs_and_matches(text, to, x_shape):
    result = _cli("port", text, "--to", to)
    assert result.return_value == 0, result.output
    code = result.output
    module, variables = source_from_text(text)
    module, variables, w, b = _randomised(module, variables)
    namespace = {"w": w, "b": b}
    exec(compile(code, "<convbridge port>", "exec"), namespace)  # noqa: S102 - the test runs what the user pastes
    ported = (namespace["m"], namespace["variables"]) if "variables" in namespace else namespace["m"]
    source = (module, variables) if variables is not None else module
    x = np.random.default_rng(1).standard_normal(x_shape).astype(w.dtype)
    assert cb.port.check(source, ported, x).verdict in ("identical", "equivalent"), code
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PortWarning)
        assert cb.port.read(ported).layer.with_layout("") == cb.port.read(source).layer.with_layout("")


def test_port_says_why_it_is_not_native():
    out = _cli("port", "Conv2d(3, 4, 3, padding=1, padding_mode='replicate')", "--to", "flax").output
    assert "no 'replicate' padding mode" in out and "convbridge.nn.linen.Conv(" in out
    out = _cli("port", "Conv2d(3, 4, 7, stride=2, padding=3)", "--to", "flax").output
    assert "flax.linen.Conv(4, kernel_size=(7, 7), strides=(2, 2), padding=[(3, 3), (3, 3)]" in out
    assert "cb.port.kernel(w, 'OIHW', 'HWIO')" in out


@pytest.mark.parametrize("args,match", [
    (["Conv2d(3, 4, 3, stride=2, padding='same')", "--to", "flax"], "not supported for strided convolutions"),
    (["flax.linen.Conv(8, (3, 3))", "--to", "torch"], "add in_channels=N"),
    (["Linear(3, 4)", "--to", "flax"], "unknown layer"),
    (["Conv2d(3, 4, kernel_sise=3)", "--to", "flax"], "kernel_size"),
    (["Conv2d(3, 4", "--to", "flax"], "cannot read layer"),
    (["__import__('os').system('true')", "--to", "flax"], "unknown layer"),
    (["nnx.Conv(3, 8, (3, 3), strides=0)", "--to", "torch"], "refuses|stride"),
    (["Conv2d(100000, 100000, 30)", "--to", "flax"], "memory limit"),
    (["Conv2d(3, 4, 99999999999999999999999)", "--to", "flax"], "refuses"),
    (["flax.linen.Conv(8, (3, 3), input_dilation=2, in_channels=3)", "--to", "torch"], "explicit padding pairs"),
])
def test_bad_descriptions_exit_2_with_a_reason(args, match, capsys):
    from convbridge.cli import EXIT_CODES

    code = main(["port", *args], standalone_mode=False)
    assert code == EXIT_CODES["usage"]
    err = capsys.readouterr().err
    import re

    assert re.search(match, err.replace("\n", " ")), err
    assert "frame #" not in err and "Traceback" not in err


def test_float64_and_torch_dtypes_are_kept_or_refused():
    for text in ("eqx.nn.Conv2d(4, 8, 3, dtype='float64')", "nnx.Conv(4, 8, (3, 3), param_dtype='float64')",
                 "Conv2d(4, 8, 3, dtype='float64')"):
        out = _cli("port", text, "--to", "torch").output
        assert "dtype=torch.float64" in out and "np.float64" in out, out
    out = _cli("port", "Conv2d(4, 8, 3, dtype='float64')", "--to", "flax").output
    assert "jnp.float64" in out and "jax_enable_x64" in out
    assert main(["port", "Conv2d(4, 8, 3, dtype='int8')", "--to", "flax"], standalone_mode=False) == 2
