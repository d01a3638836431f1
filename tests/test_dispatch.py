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

from cases import CONV, TRANSPOSE
from conftest import BACKENDS


@pytest.fixture
def registry():
    """The registry, restored after a test that registers its own implementations."""
    cb.implementations()  # every installed backend registered first, so that restoring keeps them
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
    registered = ", ".join(sorted(repr(i.algorithm) for i in cb.implementations("conv", "numpy")))
    with pytest.raises(ArgumentError, match=f"no algorithm 'winograd' for conv on the numpy backend; registered: "
                                            f"{registered}; or 'auto'"):
        cb.conv(x, w, algorithm="winograd", backend="numpy")
    with pytest.raises(ArgumentError, match="no algorithm 'winograd' for conv_transpose on the jax backend; "
                                            "registered: 'matmul', 'native'"):
        cb.conv_transpose(x, w.transpose(1, 0, 2, 3), algorithm="winograd", backend="jax")
    for bad in (3, None, ""):
        with pytest.raises(ArgumentTypeError, match="algorithm must be a name such as 'native'"):
            cb.conv(x, w, algorithm=bad)


def test_plans_are_frozen_and_hashable():
    plan = make_plan(None, np.zeros(3), algorithm="MATMUL", precision="High")
    assert plan == Plan("numpy", "matmul", "high") and hash(plan) == hash(Plan("numpy", "matmul", "high"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.algorithm = "native"  # type: ignore[misc]
    with pytest.raises(ArgumentError, match="no input to infer the backend from"):
        make_plan(None, None)
    assert make_plan("TORCH", None, device=" CPU ").device == "cpu"
    for bad, match in [(dict(backend="nope"), "unknown backend 'nope'"), (dict(algorithm="Matmul"), "lower case"),
                       (dict(precision="ultra"), "unknown precision 'ultra'"), (dict(device=[1]), "device must be"),
                       (dict(device=""), "device is an empty string")]:
        with pytest.raises(cb.ConvBridgeError, match=match):
            Plan(**{"backend": "numpy", **bad})


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
    with pytest.raises(ImplementationError, match=r"'broken' conv of the numpy backend returned a numpy array "
                                                  r"\(2, 3, 9, 9\) float32 but the spec gives a numpy array \(2, 5, 7, 7\) "
                                                  r"float32; the implementation .* breaks the dispatcher's contract"):
        cb.conv(x, w, algorithm="broken")
    torch = pytest.importorskip("torch")
    registry.register(dispatch.Impl("conv", "numpy", "alien", lambda spec, plan, x, w, b: torch.from_numpy(
        cb.reference.conv(x, w, b, spec, dtype=x.dtype))))
    with pytest.raises(ImplementationError, match="returned a torch array"):
        cb.conv(x, w, algorithm="alien")
    registry.register(dispatch.Impl("conv", "numpy", "vague", lambda *a: x, supports=lambda spec, plan: "nope"))
    with pytest.raises(ImplementationError, match="supports returned 'nope'; it must return None or a ConvBridgeError"):
        cb.conv(x, w, algorithm="vague")


@pytest.mark.parametrize("impl, match", [
    ("hello", "register takes a convbridge.dispatch.Impl"),
    (dispatch.Impl("deconv", "numpy", "x", print), "unknown op 'deconv'"),
    (dispatch.Impl("conv", "tensorflow", "x", print), "unknown backend 'tensorflow'"),
    (dispatch.Impl("conv", "numpy", "Upper", print), "lower-case identifier such as 'fft', got 'Upper'"),
    (dispatch.Impl("conv", "numpy", None, print), "lower-case identifier"),
    (dispatch.Impl("conv", "numpy", "x", None), "Impl.run must be callable"),
])
def test_registration_is_checked_and_a_bad_one_breaks_nothing(registry, impl, match):
    before = cb.implementations("conv")
    with pytest.raises(cb.ConvBridgeError, match=match):
        registry.register(impl)
    assert cb.implementations("conv") == before
    with pytest.raises(ArgumentError, match="unknown op 'deconv'"):
        cb.implementations("deconv")


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
    bad = {"numpy": [("cuda", "device must be None or 'cpu'")],
           "jax": [("tpu:3", "no JAX device 'tpu:3'"), (0, "0 is not a JAX device")],
           "torch": [("warp drive", "is not a torch device"), ("cuda:0", "torch has no device 'cuda:0' here")]}
    for device, match in bad[backend]:
        with pytest.raises(ArgumentError, match=match):
            cb.conv(x, w, b, backend=backend, device=device)
        with pytest.raises(ArgumentError, match=match):
            cb.unfold(x, 3, backend=backend, device=device)


def test_the_numpy_backend_takes_a_framework_cpu_device():
    torch, jax = pytest.importorskip("torch"), pytest.importorskip("jax")
    x, w, _ = CONV["bias"].arrays()
    for device in (torch.device("cpu"), jax.devices("cpu")[0]):
        assert cb.conv(x, w, backend="numpy", device=device).shape == (2, 5, 7, 7)


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
    assert precision.model("float32", "default", "CUDA").u_in == 2.0**-11  # device-type names read as platforms
    with pytest.raises(ArgumentError, match="unknown platform 'quantum'"):
        precision.model("float32", "default", "quantum")
    for bad in (dict(u=-1.0), dict(u=float("nan")), dict(u=2.0**-24, u_in=-1.0)):
        with pytest.raises(ArgumentError, match="unit roundoff"):
            precision.Precision(**bad)
    with pytest.raises(ArgumentError, match="a float16 candidate is judged by its own dtype"):
        precision.candidate("tf32", "float16")


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


# ---- the matmul algorithm: transposed convolutions, empty batches, bfloat16 on NumPy ---------------------------

@pytest.mark.parametrize("name", ["groups_dilated", "nwc_1d", "empty_batch"])
def test_conv_transpose_matmul_algorithm(name, backend):
    case = TRANSPOSE[name]
    x, w, b = case.arrays(seed=7)
    y = cb.conv_transpose(x, w, b, backend=backend, algorithm="matmul", **case.kwargs)
    assert tuple(y.shape) == case.expected_shape
    if case.x[0]:
        assert cb.verify(y, x, w, b, op="conv_transpose", **case.kwargs).verdict in ("identical", "equivalent")


def test_conv_transpose_matmul_refuses_what_col2im_cannot_state():
    x, w, _ = TRANSPOSE["stride2_pad1_op1"].arrays()
    with pytest.raises(ArgumentError, match="col2im cannot express output_padding .* use algorithm='native'"):
        cb.conv_transpose(x, w, stride=2, output_padding=1, algorithm="matmul")
    x, w, _ = TRANSPOSE["jax_same"].arrays()
    with pytest.raises(ArgumentError, match="lowers the torch convention"):
        cb.conv_transpose(x, w, algorithm="matmul", **TRANSPOSE["jax_same"].kwargs)
    with pytest.raises(ArgumentTypeError, match="as_matmul is the matmul lowering itself"):
        cb.as_matmul(x, w, algorithm="native")


def test_empty_batches_through_the_matmul_algorithm(backend):
    x, w, _ = CONV["groups"].arrays()
    x0 = x[:0]
    assert tuple(cb.conv(x0, w, backend=backend, algorithm="matmul", groups=2, padding=1).shape) == (0, 4, 8, 8)
    assert tuple(cb.as_matmul(x0, w, backend=backend, groups=2, padding=1)().shape) == (0, 4, 8, 8)


def test_bfloat16_on_numpy_computes_in_float32_and_keeps_its_dtype():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    x, w, b = CONV["bias"].arrays()
    xb, wb, bb = (a.astype(ml_dtypes.bfloat16) for a in (x, w, b))
    y = cb.conv(xb, wb, bb, padding=1)
    assert y.dtype == ml_dtypes.bfloat16
    report = cb.compare(xb, wb, bb, backends=("numpy",), padding=1)
    assert "computed in float32 and rounded to bfloat16" in report.precisions["numpy"]
    # a float32 sum of 28 products, rounded once to bfloat16, is the correctly rounded value here
    assert report.pairs[0].n_different == 0 and report.verdict == "identical"
    with pytest.raises(DTypeError, match="NumPy has no bfloat16 arithmetic.*algorithm='native'"):
        cb.conv(xb, wb, padding=1, algorithm="matmul")
