"""The dispatch plan: the registry keyed by (op, backend, algorithm), the plan's slots (algorithm, precision
policy, device), the batch axis and output checks done once, and precision and framework conventions as data."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import convbridge as cb
from convbridge import dispatch, frameworks, precision
from convbridge.errors import ArgumentError, ArgumentTypeError, DTypeError, ImplementationError
from convbridge.plan import Plan, make_plan

from cases import CONV
from conftest import BACKENDS


@pytest.fixture
def registry():
    """The registry, restored after a test that registers its own implementations."""
    saved = dict(dispatch._REGISTRY)
    yield dispatch
    dispatch._REGISTRY.clear()
    dispatch._REGISTRY.update(saved)


def test_every_op_has_a_native_implementation_on_every_backend():
    for backend in BACKENDS:
        found = {(i.op, i.algorithm) for i in cb.implementations(backend=backend)}
        assert {("conv", "native"), ("conv_transpose", "native"), ("unfold", "native"), ("fold", "native"),
                ("conv", "matmul")} <= found, backend
    listed = cb.implementations("conv")
    assert [i.backend for i in listed if i.algorithm == "native"] == list(BACKENDS)  # NAMES order, natives first


def test_an_unknown_algorithm_names_the_registered_ones():
    x, w, _ = CONV["bias"].arrays()
    with pytest.raises(ArgumentError, match="no algorithm 'fft' for conv on the numpy backend; registered: "
                                            "'matmul', 'native'"):
        cb.conv(x, w, algorithm="fft", backend="numpy")
    with pytest.raises(ArgumentError, match="no algorithm 'matmul' for conv_transpose"):
        cb.conv_transpose(x, w.transpose(1, 0, 2, 3), algorithm="matmul", backend="numpy")
    with pytest.raises(ArgumentTypeError, match="algorithm must be a name such as 'native'"):
        cb.conv(x, w, algorithm=3)


def test_plans_are_frozen_and_hashable():
    plan = make_plan(None, np.zeros(3), algorithm="MATMUL", precision="High")
    assert plan == Plan("numpy", "matmul", "high") and hash(plan) == hash(Plan("numpy", "matmul", "high"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.algorithm = "native"  # type: ignore[misc]
    with pytest.raises(ArgumentError, match="no input to infer the backend from"):
        make_plan(None, None)


def test_the_dispatcher_hands_implementations_a_batched_spec(registry):
    """An implementation always sees the batch axis; the dispatcher adds and drops it for unbatched input."""
    seen = []

    def spy(spec, plan, x, w, b):
        seen.append((spec.layout.batched, x.ndim, spec.batch))
        return cb.reference.conv(x, w, b, spec, dtype=x.dtype)

    registry.register(dispatch.Impl("conv", "numpy", "spy", spy))
    x, w, b = CONV["unbatched"].arrays(seed=1)
    y = cb.conv(x, w, b, algorithm="spy", padding=1)
    assert seen == [(True, 4, 1)] and y.shape == CONV["unbatched"].expected_shape
    np.testing.assert_array_equal(y, cb.conv(x, w, b, padding=1))


def test_a_broken_implementation_is_caught_not_returned(registry):
    registry.register(dispatch.Impl("conv", "numpy", "broken", lambda spec, plan, x, w, b: x))
    x, w, _ = CONV["bias"].arrays()
    with pytest.raises(ImplementationError, match=r"'broken' conv of the numpy backend returned \(2, 3, 9, 9\) "
                                                  r"float32 but the spec gives \(2, 5, 7, 7\) float32; this is a bug"):
        cb.conv(x, w, algorithm="broken")


def test_an_implementation_can_decline_a_spec(registry):
    def refuse(spec, plan):
        return ArgumentError("odd kernels only") if spec.kernel_spatial[0] % 2 == 0 else None

    registry.register(dispatch.Impl("conv", "numpy", "odd", lambda spec, plan, x, w, b: x, supports=refuse))
    with pytest.raises(ArgumentError, match="odd kernels only"):
        cb.conv(np.ones((1, 1, 5), "float32"), np.ones((1, 1, 2), "float32"), algorithm="odd")


@pytest.mark.parametrize("backend", BACKENDS)
def test_device_slot(backend):
    x, w, b = CONV["bias"].arrays(seed=2)
    y = cb.conv(x, w, b, backend=backend, device="cpu", padding=1)
    np.testing.assert_array_equal(cb.arrays.to_numpy(y), cb.arrays.to_numpy(cb.conv(x, w, b, backend=backend,
                                                                                     padding=1)))
    bad = {"numpy": ("cuda", "device must be None or 'cpu'"), "jax": ("tpu:3", "no JAX device 'tpu:3'"),
           "torch": ("warp drive", "is not a torch device")}[backend]
    with pytest.raises(ArgumentError, match=bad[1]):
        cb.conv(x, w, b, backend=backend, device=bad[0])


def test_compare_applies_the_plan_to_every_backend():
    x, w, b = CONV["groups"].arrays(seed=3)
    report = cb.compare(x, w, b, backends=BACKENDS, algorithm="matmul", precision="high", **CONV["groups"].kwargs)
    assert report.verdict in ("identical", "equivalent")
    assert all("precision=high" in label for name, label in report.precisions.items() if name in ("jax", "torch"))


# ---- precision in one place ---------------------------------------------------------------------------------

def test_unit_roundoff_and_unknown_dtypes():
    assert [precision.unit_roundoff(d) for d in precision.FLOAT_DTYPES] == [2.0**-11, 2.0**-8, 2.0**-24, 2.0**-53]
    with pytest.raises(DTypeError, match="no unit roundoff for dtype 'int8'"):
        precision.unit_roundoff("int8")
    with pytest.raises(ArgumentError, match="unknown candidate precision 'fp8'"):
        cb.verify(np.zeros((1, 1, 2), "float32"), np.zeros((1, 1, 3), "float32"), np.zeros((1, 1, 2), "float32"),
                  precision="fp8")


def test_policies_map_to_each_frameworks_controls():
    assert [precision.lax_precision(p) for p in precision.POLICIES] == ["HIGHEST", "HIGH", "DEFAULT"]
    assert [precision.torch_allow_tf32(p) for p in precision.POLICIES] == [False, True, True]
    cpu, gpu, tpu = (precision.model("float32", "default", p) for p in ("cpu", "gpu", "tpu"))
    assert (cpu.u_in, gpu.u_in, tpu.u_in) == (0.0, 2.0**-11, 2.0**-8)
    assert precision.model("float32", "high", "tpu").u_in == 2.0**-16
    assert precision.model("float32", "highest", "gpu").u_in == 0.0 == precision.model("float64", "default", "gpu").u_in
    with pytest.raises(ArgumentError, match="unknown precision 'ultra'; choose one of 'highest', 'high', 'default'"):
        precision.policy("ultra")


# ---- framework conventions as data ----------------------------------------------------------------------------

def test_conventions_are_what_the_snippets_and_mapping_use():
    e = cb.explain((2, 9, 10, 3), (3, 3, 3, 4), layout="NHWC", padding=1, padding_mode="replicate")
    code = {s.framework: s.code for s in e.snippets}
    assert "# HWIO -> OIHW" in code["torch.nn.functional"] and "# HWIO -> OIHW" in code["equinox.nn"]
    assert "jnp.pad(x" in code["flax.linen"] and "mode='edge'" in code["flax.linen"]
    assert "padding_mode='REPLICATE'" in code["equinox.nn"] and "ReplicationPad" not in code["torch.nn"]
    assert frameworks.TORCH.transpose_layout("HW") == cb.transpose.jax_to_torch(
        np.ones((3, 3, 2, 4)), strides=(1, 1), padding="VALID").layout[1][:2] + "HW"
    assert frameworks.get("flax.nnx").name_of("out_channels") == "out_features"
    with pytest.raises(ArgumentError, match="unknown framework API 'keras'"):
        frameworks.get("keras")
