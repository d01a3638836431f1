"""JAX backend: ``lax.conv_general_dilated`` with the spec's permutations as dimension numbers.

conv is one ``conv_general_dilated``; conv_transpose is another over the input
dilated by the stride (``lhs_dilation``), with the kernel regrouped and flipped;
unfold gathers strided slices and fold adds them back (JAX has neither op).
Each is compiled once per (spec, plan) and works under ``jax.jit``, ``jax.grad`` and
``jax.vmap``: it only reads static shapes from the spec and calls lax.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from convbridge import costs
from convbridge import precision as _precision
from convbridge._types import Array, ArrayLike, Pairs
from convbridge.arrays import framework_of, native_order, to_host, to_numpy
from convbridge.backends._common import HALF_DTYPES, accumulates_in_float32, float32_accumulation, pad_by_mode
from convbridge.dispatch import Impl, register
from convbridge.errors import ArgumentError, ConvBridgeError, DTypeError
from convbridge.plan import Plan
from convbridge.precision import Precision
from convbridge.sharding import BatchSplit, check_divides, check_placement
from convbridge.spec import ConvAxis, ConvSpec, ConvTransposeSpec, FoldSpec, Spec, UnfoldSpec

NAME = "jax"

__all__ = ["NAME", "place", "to_numpy", "unsupported", "precision", "transpose", "take", "compile", "astype"]


def float64() -> Any:
    """A context in which JAX computes float64 (x64 mode), restoring the global setting after: the verdict's
    float64 re-runs use it."""
    return jax.enable_x64(True)


def _device(device: object) -> Any:
    """``device`` as a ``jax.Device`` (or a ``jax.sharding.Sharding``, kept as it is); None stays None."""
    if device is None or isinstance(device, (jax.Device, jax.sharding.Sharding)):
        return device
    have = ", ".join(f"{d.platform}:{d.id}" for d in jax.devices())
    if not isinstance(device, str):
        raise ArgumentError(f"{device!r} is not a JAX device; pass e.g. 'cpu', 'cpu:0' or a jax.Device "
                            f"(this machine has {have})")
    kind, _, index = device.partition(":")
    try:
        return jax.devices(kind)[int(index or 0)]
    except (RuntimeError, ValueError, IndexError):
        raise ArgumentError(f"no JAX device {device!r}; this machine has {have}") from None


def place(arrays: Sequence[ArrayLike | None], device: object) -> tuple[Array | None, ...]:
    """Any arrays as jax arrays of the same dtypes (torch tensors go through host memory), on ``device``; a
    sharding over several devices places the first array (the input) and replicates the others over its devices."""
    target = _device(device)
    out = []
    for i, a in enumerate(arrays):
        where = target if i == 0 else _replicated(target)
        if i == 0 and a is not None and where is not None:
            check_divides(where, np.shape(a))
        if a is not None and not isinstance(a, jax.Array):  # device_put: jnp.asarray compiles a copy per shape
            host = np.asarray(to_host(a) if framework_of(a) == "torch" else native_order(a))
            a = jax.device_put(host, where)
        elif a is not None and where is not None:
            a = jax.device_put(a, where)
        out.append(a)
    return tuple(out)


def _replicated(target: Any) -> Any:
    """Where a kernel or bias goes beside an input placed on ``target``: the same device, or for a sharding over
    several devices, whole on each of them (a batch sharding's spec means nothing for the kernel's axes)."""
    if not isinstance(target, jax.sharding.Sharding) or len(target.device_set) == 1:
        return target
    if isinstance(target, jax.sharding.NamedSharding):
        return jax.sharding.NamedSharding(target.mesh, jax.sharding.PartitionSpec())
    devices = np.array(sorted(target.device_set, key=str), dtype=object)
    return jax.sharding.NamedSharding(jax.sharding.Mesh(devices, ("devices",)), jax.sharding.PartitionSpec())


#: The dtypes JAX computes only in x64 mode, and what it would silently compute them in otherwise.
_X64 = {"float64": "float32", "complex128": "complex64"}


def unsupported(spec: Spec, plan: Plan) -> ConvBridgeError | None:
    """float64 and complex128 when JAX's x64 mode is off (it would silently compute in float32 / complex64)."""
    return x64_error(spec.dtype)


def x64_error(dtype: object) -> DTypeError | None:
    """The error for ``dtype`` when JAX's x64 mode is off and would silently narrow it (float64, complex128);
    None for any other dtype, or in x64 mode. The sharding helpers raise it before ``jax.device_put``."""
    name = str(dtype)  # a NumPy dtype's name, as the spec's
    narrow = _X64.get(name)
    if narrow is not None and not jax.config.read("jax_enable_x64"):
        return DTypeError(
            f"{name} input on the jax backend, but JAX's x64 mode is off and would silently use {narrow}; "
            f"enable it with jax.config.update('jax_enable_x64', True) or JAX_ENABLE_X64=1, or cast to {narrow}"
        )
    return None


def _platform(x: Array) -> str:
    try:
        platform = next(iter(x.devices())).platform
    except (AttributeError, StopIteration, jax.errors.ConcretizationTypeError):
        platform = jax.default_backend()
    # an accelerator convbridge does not model (e.g. Metal) is treated as a GPU: the wider bound of reduced
    # precision, rather than a CPU's IEEE bound that would call its rounding a bug
    return platform if platform in ("cpu", "tpu") else "gpu"


def precision(spec: Spec, plan: Plan, x: Array) -> Precision:
    """What XLA uses: CPUs compute in the dtype (the native convolutions ask a float16/bfloat16 input for a float32
    result and round it once); GPUs use TF32 and TPUs bf16 passes below 'highest'."""
    platform = _platform(x)
    if platform == "cpu" and accumulates_in_float32(spec, plan):
        return float32_accumulation(spec, f"precision={plan.precision}, cpu")
    return _precision.model(str(spec.dtype), plan.precision, platform)


def transpose(a: Array, axes: Sequence[int]) -> Array:
    return jnp.transpose(a, tuple(axes))


def take(a: Array, index: np.ndarray, axis: int) -> Array:
    return jnp.take(a, index, axis=axis)


def _lax_precision(plan: Plan) -> lax.Precision:
    return lax.Precision[_precision.lax_precision(plan.precision)]


def compile(fn: Callable[..., Array]) -> Callable[..., Array]:
    """One XLA program per (spec, plan, shapes): both are static arguments (eager dispatch would compile every
    small op separately). Still composes with an outer jit, grad and vmap.

    Concrete arrays sharded over several devices are checked first (:func:`convbridge.sharding.check_placement`:
    the input split along N only, the kernel along O only); an input split along N runs as one program per shard
    (``jax.shard_map``), so that every algorithm returns a result split along N with no collective."""
    jitted = jax.jit(fn, static_argnums=(0, 1))

    def run(spec: Spec, plan: Plan, *arrays: Array | None) -> Array:
        if not _on_several_devices(arrays):
            return jitted(spec, plan, *arrays)
        split = check_placement(spec, arrays)
        if split is None:  # model parallel (a kernel split along O) or a layout shard_map cannot express
            return jitted(spec, plan, *_colocated(arrays))
        return _per_shard(fn, spec, plan, split, tuple(a is None for a in arrays))(*arrays)

    run.__name__, run.__doc__, run.__wrapped__ = fn.__name__, fn.__doc__, fn  # type: ignore[attr-defined]
    return run


def _on_several_devices(arrays: Sequence[Array | None]) -> bool:
    """Whether a concrete array (not a tracer: inside jit the shardings are XLA's to propagate) lies on several
    devices."""
    for a in arrays:
        if a is None or isinstance(a, jax.core.Tracer):
            continue
        where = a.sharding
        if not isinstance(where, jax.sharding.SingleDeviceSharding) and len(where.device_set) > 1:
            return True
    return False


def _colocated(arrays: Sequence[Array | None]) -> tuple[Array | None, ...]:
    """The arrays on one set of devices, as the batch-split path has them: beside a kernel split along O (model
    parallelism) the input and bias whole on the kernel's devices, else the kernel and bias whole on the input's."""
    concrete = [a for a in arrays if a is not None and not isinstance(a, jax.core.Tracer)]
    if len({frozenset(a.sharding.device_set) for a in concrete}) <= 1:
        return tuple(arrays)
    w = arrays[1] if len(arrays) > 1 else None
    split_kernel = (w is not None and not isinstance(w, jax.core.Tracer) and len(w.sharding.device_set) > 1
                    and w.sharding.shard_shape(w.shape) != w.shape)
    home = w if split_kernel else arrays[0]
    if home is None or isinstance(home, jax.core.Tracer):
        return tuple(arrays)
    whole = _replicated(home.sharding)
    return tuple(a if a is None or a is home or isinstance(a, jax.core.Tracer)
                 or a.sharding.device_set == home.sharding.device_set else jax.device_put(a, whole) for a in arrays)


_PER_SHARD: dict[tuple[Any, ...], Callable[..., Array]] = {}


def _per_shard(fn: Callable[..., Array], spec: Spec, plan: Plan, split: BatchSplit,
               absent: tuple[bool, ...]) -> Callable[..., Array]:
    """``fn`` mapped over the shards of an input split along N (kernel and bias whole on every device), compiled
    once per (fn, spec, plan, mesh, split)."""
    key = (fn, spec, plan, split, absent)
    program = _PER_SHARD.get(key)
    if program is None:
        local = replace(spec, batch=spec.batch // split.shards)
        present = [i for i, gone in enumerate(absent) if not gone]

        def body(*given: Array) -> Array:
            arrays: list[Array | None] = [None] * len(absent)
            for i, a in zip(present, given):
                arrays[i] = a
            return fn(local, plan, *arrays)

        in_specs = tuple(split.in_spec if i == 0 else jax.sharding.PartitionSpec() for i in present)
        mapped = jax.jit(jax.shard_map(body, mesh=split.mesh, in_specs=in_specs, out_specs=split.out_spec,
                                       check_vma=False))
        whole = jax.sharding.NamedSharding(split.mesh, jax.sharding.PartitionSpec())

        def program(*arrays: Array | None) -> Array:  # kernel and bias whole on the input's devices, wherever they were
            return mapped(*(a if i == 0 else jax.device_put(a, whole) for i, a in enumerate(arrays) if a is not None))

        if len(_PER_SHARD) >= 64:
            _PER_SHARD.pop(next(iter(_PER_SHARD)))
        _PER_SHARD[key] = program
    return program


def _wide(x: Array) -> Any:
    """The result type to ask of a convolution: float32 for a 16-bit float (the bias is added before the one
    rounding, as torch does), else None (the input's)."""
    return jnp.float32 if jnp.dtype(x.dtype).name in HALF_DTYPES else None


def _add_bias(y: Array, b: Array | None, axis: int, dtype: Any) -> Array:
    """``y + b`` along ``axis``, rounded to ``dtype`` once."""
    if b is not None:
        shape = [1] * y.ndim
        shape[axis] = -1
        y = y + b.reshape(shape).astype(y.dtype)
    return y.astype(dtype)


def conv(spec: ConvSpec, plan: Plan, x: Array, w: Array, b: Array | None) -> Array:
    """One ``conv_general_dilated``; a padding mode is one gather per spatial axis first (fused by XLA)."""
    lay = spec.layout
    x, pads = pad_by_mode(spec, x, take, lay.lhs_perm[2:])
    dn = lax.ConvDimensionNumbers(lay.lhs_perm, lay.rhs_perm, lay.out_perm)
    y = lax.conv_general_dilated(x, w, spec.stride, pads, rhs_dilation=spec.dilation, dimension_numbers=dn,
                                 feature_group_count=spec.groups, precision=_lax_precision(plan),
                                 preferred_element_type=_wide(x))
    return _add_bias(y, b, lay.out_perm[1], x.dtype)


def _transpose_kernel(spec: ConvTransposeSpec, w: Array) -> Array:
    """User kernel -> the conv kernel ``(C_out, C_in / groups, *k)`` over the stride-dilated input.

    A regroup, not a reshape (PITFALLS trap 3): torch's ``(C_in, C_out/g, k)`` becomes
    ``(g, C_in/g, C_out/g, k)``, swaps its two channel axes and merges ``(g, C_out/g)``; then
    the spatial axes are flipped (unless the user's kernel already is, as in lax's convention).
    """
    perm, g, k = spec.layout.rhs_perm, spec.groups, spec.kernel_spatial
    wt = jnp.transpose(w, (perm[1], perm[0], *perm[2:]))
    wt = wt.reshape(g, spec.in_channels // g, spec.out_channels // g, *k).swapaxes(1, 2)
    wt = wt.reshape(spec.out_channels, spec.in_channels // g, *k)
    return wt if spec.kernel_flipped else jnp.flip(wt, axis=tuple(range(2, 2 + spec.nsp)))


def _crop(y: Array, cuts: Pairs, axes: Sequence[int]) -> Array:
    """Remove ``(lo, hi)`` entries from the given axes."""
    idx = [slice(None)] * y.ndim
    for ax, (lo, hi) in zip(axes, cuts):
        idx[ax] = slice(lo, y.shape[ax] - hi)
    return y[tuple(idx)]


def conv_transpose(spec: ConvTransposeSpec, plan: Plan, x: Array, w: Array, b: Array | None) -> Array:
    """A conv over the stride-dilated input with lax's padding (negative widths are crops instead)."""
    lay, nsp = spec.layout, spec.nsp
    want = [a.lax_padding for a in spec.axes]
    dn = lax.ConvDimensionNumbers(lay.lhs_perm, tuple(range(nsp + 2)), lay.out_perm)
    y = lax.conv_general_dilated(
        x, _transpose_kernel(spec, w), (1,) * nsp, [(max(a, 0), max(c, 0)) for a, c in want],
        lhs_dilation=spec.stride, rhs_dilation=spec.dilation, dimension_numbers=dn,
        feature_group_count=spec.groups, precision=_lax_precision(plan), preferred_element_type=_wide(x),
    )
    y = _crop(y, tuple((max(-a, 0), max(-c, 0)) for a, c in want), lay.out_perm[2:])
    return _add_bias(y, b, lay.out_perm[1], x.dtype)


def _block_index(axes: Sequence[ConvAxis]) -> np.ndarray:
    """``(K, L)`` flat indices into the padded spatial axes: tap ``t`` of block ``l`` (both row-major) reads
    padded position ``p(l) * stride + t * dilation``. Static (NumPy), so unfold is one gather, fold one scatter-add.

    >>> _block_index((ConvAxis(5, 2, stride=3),)).tolist()
    [[0, 3], [1, 4]]
    """
    nsp = len(axes)
    grids = []
    for i, a in enumerate(axes):
        tap = np.arange(a.kernel).reshape([a.kernel if j == i else 1 for j in range(nsp)] + [1] * nsp)
        pos = np.arange(a.out).reshape([1] * nsp + [a.out if j == i else 1 for j in range(nsp)])
        grids.append(tap * a.dilation + pos * a.stride)
    flat = np.ravel_multi_index(tuple(np.broadcast_arrays(*grids)), tuple(a.padded for a in axes))
    return flat.reshape(math.prod(a.kernel for a in axes), math.prod(a.out for a in axes))


def unfold(spec: UnfoldSpec, plan: Plan, x: Array) -> Array:
    """Zero-pad, then one gather of every (tap, block) pair: exact, jit/grad/vmap safe."""
    xc = jnp.transpose(x, spec.layout.lhs_perm)
    xp = jnp.pad(xc, [(0, 0), (0, 0), *spec.padding])
    n, taps = xc.shape[0], math.prod(spec.kernel_spatial)
    cols = xp.reshape(n, spec.channels, math.prod(xp.shape[2:]))[:, :, _block_index(spec.axes)]
    return cols.reshape(n, spec.channels * taps, math.prod(spec.out_spatial))


def fold(spec: FoldSpec, plan: Plan, cols: Array) -> Array:
    """One scatter-add of every (tap, block) pair into the zero-padded output, then crop the padding."""
    n, taps = cols.shape[0], math.prod(spec.kernel_spatial)
    padded = [a.padded for a in spec.axes]
    blocks = cols.reshape(n, spec.channels, taps, math.prod(spec.blocks))
    y = jnp.zeros((n, spec.channels, math.prod(padded)), dtype=cols.dtype)
    y = y.at[:, :, _block_index(spec.axes)].add(blocks).reshape(n, spec.channels, *padded)
    return _crop(y, spec.padding, range(2, 2 + spec.nsp))


for _fn in (conv, conv_transpose, unfold, fold):
    register(Impl(_fn.__name__, NAME, "native", compile(_fn), summary=(_fn.__doc__ or "").split("\n")[0],
                  cost=costs.native))


def astype(a: Array, dtype: str) -> Array:
    """``a`` in ``dtype``; float64 and complex128 need x64 mode (JAX would silently keep 32 bits)."""
    error = x64_error(dtype)
    if error is not None:
        raise error
    return a.astype(dtype)
