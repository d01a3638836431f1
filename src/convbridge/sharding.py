"""Convolutions over several JAX devices and hosts, with JAX's own machinery (``jax.sharding``, ``jax.shard_map``,
``jax.distributed``).

Which axes may be sharded (the jax backend checks every concrete input, outside ``jax.jit``):

- the input along its batch axis N (:func:`shard_batch`): ``cb.conv``, ``cb.conv_transpose``, ``cb.unfold`` and
  ``cb.fold`` then run once per shard (``jax.shard_map``, whatever the algorithm) and return a result sharded
  along its N axis over the same devices, with no collective at all;
- the kernel along O (:func:`shard_kernel`; a bias along its one axis): with a replicated input this is model
  parallelism (the result is sharded along its channels); with a batch-sharded input the kernel is gathered
  (it is the small operand) and the result stays sharded along N;
- the input along its first spatial axis, through :func:`spatial_conv` only: each device computes its output rows
  from its input rows plus the halo rows :meth:`ConvAxis.halo <convbridge.spec.ConvAxis.halo>` names, received
  from its neighbours with ``lax.ppermute``.

Any other sharded axis (the input's channels, a spatial axis given straight to ``cb.conv``, the kernel's I or
spatial axes) is a :class:`ShardingError` naming the axis, never a silent gather or all-reduce. Inside the
caller's own ``jax.jit`` the shardings are not known while tracing: XLA's propagation keeps a batch-sharded input
sharded along N for the native and matmul algorithms (the FFT algorithm's transforms are gathered by XLA there;
call it outside ``jit`` to have it mapped over the shards).

Several processes (hosts): :func:`start` calls ``jax.distributed.initialize(coordinator_address, num_processes,
process_id)``; each process then shards its own part of the data over its local devices, and
:func:`gather_processes` collects small results (the statistics of a run) in every process. ``shard_batch`` with
a mesh that spans processes builds the global array from each process's rows
(``jax.make_array_from_process_local_data``).

>>> halo_plan(ConvAxis(8, 3, lo=1, hi=1), 2)
Halo(rows=4, out_rows=4, left=1, right=1, starts=(0, 0), window=6)
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, overload

import numpy as np

from convbridge._types import ArrayLike, LayoutLike
from convbridge.errors import ConvBridgeError, ShapeError, brief
from convbridge.spec import ConvAxis, ConvSpec, FoldSpec, Layout, Spec, UnfoldSpec, resolve_layout

if TYPE_CHECKING:
    import jax

__all__ = ["AXIS", "ShardingError", "PaddedBatch", "Halo", "resolve_devices", "mesh", "batch_axis",
           "batch_sharding", "shard_batch", "shard_kernel", "replicate", "shard_spatial", "spatial_conv",
           "halo_plan", "divisors", "local_devices", "start", "gather_processes", "check_placement", "check_divides",
           "BatchSplit"]

#: The name of the 1-D mesh axis the helpers build.
AXIS = "devices"
_COUNT_FLAG = "--xla_force_host_platform_device_count"


class ShardingError(ConvBridgeError):
    """An array is sharded along an axis convbridge does not split, or does not divide over the devices."""


def divisors(n: int, at_most: int) -> list[int]:
    """The counts ``1 .. at_most`` that divide ``n``.

    >>> divisors(12, 8)
    [1, 2, 3, 4, 6]
    """
    return [d for d in range(1, at_most + 1) if n % d == 0]


def _near_multiples(n: int, k: int) -> str:
    below, above = n // k * k, -(-n // k) * k
    return " or ".join(str(v) for v in dict.fromkeys((below, above)) if v > 0)


# ------------------------------------------------------------------------------------------------- devices

def resolve_devices(devices: object = None) -> tuple[jax.Device, ...]:
    """``devices`` as a tuple of ``jax.Device``: None (every device, ``jax.devices()``), a count (the first that
    many), a 1-D ``jax.sharding.Mesh``, one device or a sequence of distinct devices.

    Raises:
        ShardingError: a count JAX does not have (the message says how to get more CPU devices), an empty or
            repeated list, or something that is no device.
    """
    import jax

    if devices is None:
        return tuple(jax.devices())
    if isinstance(devices, jax.sharding.Mesh):
        return tuple(mesh(devices).devices.flat)
    if isinstance(devices, (int, np.integer)) and not isinstance(devices, bool):
        have = jax.devices()
        if not 1 <= devices <= len(have):
            raise ShardingError(f"{devices} devices asked for, but JAX has {len(have)} ({have[0].platform}); "
                                f"ask for 1..{len(have)}, or on CPU start Python with XLA_FLAGS={_COUNT_FLAG}="
                                f"{max(int(devices), 1)} (set before JAX starts)")
        return tuple(have[:int(devices)])
    if isinstance(devices, jax.Device):
        return (devices,)
    if isinstance(devices, Sequence) and devices and all(isinstance(d, jax.Device) for d in devices):
        if len(set(devices)) != len(devices):
            raise ShardingError(f"devices lists a device twice: {list(devices)}; list each once")
        return tuple(devices)
    raise ShardingError(f"devices must be None (all), a count, a 1-D jax.sharding.Mesh or a list of jax.Device, "
                        f"got {brief(devices)}")


def mesh(devices: object = None) -> jax.sharding.Mesh:
    """The 1-D mesh (axis :data:`AXIS`) over ``devices`` (as :func:`resolve_devices` reads them); a 1-D mesh
    is returned as it is.

    Raises:
        ShardingError: a mesh of more than one axis, or devices :func:`resolve_devices` refuses.
    """
    import jax

    if isinstance(devices, jax.sharding.Mesh):
        if len(devices.axis_names) != 1:
            raise ShardingError(f"a mesh with axes {devices.axis_names}: these helpers shard along one mesh axis; "
                                "pass a 1-D mesh, or build a NamedSharding yourself and jax.device_put the array")
        return devices
    return _mesh(resolve_devices(devices))


@functools.lru_cache(maxsize=32)
def _mesh(devices: tuple[Any, ...]) -> jax.sharding.Mesh:
    import jax

    return jax.sharding.Mesh(np.array(devices, dtype=object), (AXIS,))


def _split_at(m: jax.sharding.Mesh, ndim: int, axis: int) -> jax.sharding.NamedSharding:
    """Split ``axis`` of an ``ndim``-dim array over the 1-D mesh ``m``."""
    import jax

    parts: list[str | None] = [None] * ndim
    parts[axis] = m.axis_names[0]
    return jax.sharding.NamedSharding(m, jax.sharding.PartitionSpec(*parts))


def local_devices(count: int | None = None) -> tuple[jax.Device, ...]:
    """This process's devices (``jax.local_devices()``), the first ``count`` of them (None: all)."""
    import jax

    have = tuple(jax.local_devices())
    return have if count is None else have[:count]


# ------------------------------------------------------------------------------------------------- batches

def batch_axis(layout: LayoutLike, ndim: int, *, output: bool = False, op: str = "conv") -> int:
    """Where the batch axis N of an ``ndim``-dim input (``output``: result) lies in ``layout`` (None: channels
    first, N first), as convbridge reads layouts.

    Raises:
        ShardingError: the layout has no N (an unbatched array has nothing to shard along).

    >>> batch_axis("HWNC", 4), batch_axis("NHWC,HWIO->HWNC", 4, output=True)
    (2, 2)
    """
    lay = _input_layout(layout, ndim, op)
    if not lay.batched:
        raise ShardingError(f"layout {lay.user(lay.lhs)!r} has no batch axis N, so there is nothing to shard the "
                            "batch along; add N, or split a spatial axis with convbridge.sharding.spatial_conv")
    return (lay.out if output else lay.lhs).index("N")


def batch_sharding(devices: object = None, ndim: int = 4, *, layout: LayoutLike = None) -> jax.sharding.NamedSharding:
    """The ``NamedSharding`` that splits an ``ndim``-dim input along its layout's N axis over a 1-D mesh: pass it
    as ``device=`` to ``cb.conv`` (the input is placed with it, the kernel and bias replicated)."""
    return _split_at(mesh(devices), ndim, batch_axis(layout, ndim))


@dataclass(frozen=True)
class PaddedBatch:
    """A batch padded with zero images to a multiple of the device count, sharded (``shard_batch(pad=True)``).

    Attributes:
        array: the padded, sharded ``jax.Array``; compute on it as on any sharded batch.
        size: the real batch size (rows ``0 .. size - 1`` along N are the caller's, the rest zeros).
        axis: the N axis of the input layout.
        out_axis: the N axis of a conv or conv_transpose result in the same layout (unfold and fold results
            have N first: pass ``axis=0`` to :meth:`trim`).
    """

    array: Any
    size: int
    axis: int
    out_axis: int

    @property
    def padded(self) -> int:
        """Zero images added."""
        return int(self.array.shape[self.axis]) - self.size

    def trim(self, y: Any, axis: int | None = None) -> Any:
        """``y`` without the results of the padding images: its first :attr:`size` entries along ``axis``
        (default :attr:`out_axis`). The trimmed array no longer divides evenly over the devices, so JAX may lay
        it out differently: trim last, after the sharded work."""
        ax = self.out_axis if axis is None else axis
        return y[(slice(None),) * ax + (slice(0, self.size),)]


def _as_placeable(x: ArrayLike) -> Any:
    """A jax array as it is; anything else as a host NumPy array (torch through host memory).

    Raises:
        DTypeError: float64 or complex128 while JAX's x64 mode is off (``jax.device_put`` would silently narrow
            it to float32 / complex64), as ``cb.conv(..., backend="jax")`` does.
    """
    from convbridge.arrays import framework_of, native_order, to_host
    from convbridge.backends.jax_backend import x64_error

    if framework_of(x) == "jax":
        return x
    a = np.asarray(to_host(x) if framework_of(x) == "torch" else native_order(x))
    narrowing = x64_error(a.dtype)
    if narrowing is not None:
        raise narrowing
    return a


def _single_process(m: jax.sharding.Mesh, what: str) -> None:
    """Refuse a mesh with devices of other processes: ``what`` (spatial or kernel sharding) is single-process."""
    import jax

    others = sorted({d.process_index for d in m.devices.flat} - {jax.process_index()})
    if others:
        raise ShardingError(
            f"{what} runs within one process, but this mesh has devices of process(es) "
            f"{', '.join(map(str, others))} too (this is process {jax.process_index()}); across processes only the "
            "batch is split (convbridge.shard_batch): pass this process's devices, "
            "devices=convbridge.sharding.local_devices()")


def _same_in_every_process(shape: tuple[int, ...], axis: int) -> None:
    """Refuse (in every process) parts of a global batch whose shapes differ between processes: JAX would build
    a global array from them silently, with some rows missing or repeated."""
    from jax.experimental import multihost_utils

    row = np.full(9, -1, np.int64)
    row[0], row[1:1 + len(shape)] = len(shape), shape[:8]
    with _stdout_to_stderr():
        rows = np.asarray(multihost_utils.process_allgather(row)).reshape(-1, 9)
    shapes = [tuple(int(v) for v in r[1:1 + r[0]]) for r in rows]
    if len(set(shapes)) > 1:
        sizes = ", ".join(f"process {i}: {s[axis] if len(s) > axis else '?'} (shape {s})"
                          for i, s in enumerate(shapes))
        raise ShardingError(f"the processes hold parts of different shapes of one global batch, along N (axis "
                            f"{axis}): {sizes}; give every process a part of the same shape (pad the last one)")


def _check_input_ndim(a: Any, what: str) -> None:
    if len(a.shape) < 2:
        raise ShardingError(f"{what} takes a batched input such as (N, C, H, W), got an array of shape "
                            f"{tuple(a.shape)}")


def _put(a: Any, sharding: jax.sharding.Sharding) -> Any:
    """``jax.device_put``; for a mesh spanning several processes, ``a`` is this process's part."""
    import jax

    if sharding.is_fully_addressable:
        return jax.device_put(a, sharding)
    return jax.make_array_from_process_local_data(sharding, np.asarray(a))


@overload
def shard_batch(x: ArrayLike, devices: object = ..., *, layout: LayoutLike = ...,
                pad: Literal[False] = ...) -> Any: ...
@overload
def shard_batch(x: ArrayLike, devices: object = ..., *, layout: LayoutLike = ...,
                pad: Literal[True]) -> PaddedBatch: ...


def shard_batch(x: ArrayLike, devices: object = None, *, layout: LayoutLike = None,
                pad: bool = False) -> Any:
    """Put ``x`` (NumPy, JAX or torch) on a 1-D mesh over ``devices``, split along its layout's batch axis N.

    Args:
        x: a batched input (``(N, C, *spatial)`` by default).
        devices: None (every device), a count, a 1-D mesh or a list of ``jax.Device``. With a mesh that spans
            several processes, ``x`` is this process's part of the batch (the result is the global array).
        layout: as for ``cb.conv``: None (channels first), ``"NHWC"``, ``"NHWC,HWIO->NHWC"``, a 3-tuple.
        pad: False: a batch the device count does not divide raises. True: the batch is padded with zero
            images to the next multiple, and a :class:`PaddedBatch` returned (``.array`` to compute on,
            ``.trim(y)`` to drop the padding's results).

    Returns:
        A ``jax.Array`` with a ``NamedSharding`` along N (pad=False), or a :class:`PaddedBatch` (pad=True).

    Raises:
        ShardingError: an uneven batch without ``pad`` (the message names the batch sizes and device counts that
            divide), a layout without N, unknown devices, or ``pad`` with a mesh spanning several processes.

    Shape:
        per device: ``N / devices`` along N (``ceil(N / devices)`` with ``pad``), every other axis whole.

    >>> import numpy as np, convbridge as cb
    >>> xs = shard_batch(np.zeros((4, 3, 8, 8), np.float32), devices=1)
    >>> tuple(xs.sharding.spec), cb.conv(xs, np.ones((2, 3, 3, 3), np.float32)).shape
    (('devices', None, None, None), (4, 2, 6, 6))
    """
    a = _as_placeable(x)
    _check_input_ndim(a, "shard_batch")
    ndim = len(a.shape)
    sharding = batch_sharding(devices, ndim, layout=layout)
    axis, k = batch_axis(layout, ndim), sharding.mesh.size
    local = k if sharding.is_fully_addressable else len(sharding.addressable_devices)
    if not local:
        import jax

        raise ShardingError(f"none of the {k} device(s) asked for belong to this process (process "
                            f"{jax.process_index()}; a count picks the first of jax.devices(), over every process): "
                            "pass devices=None (every process's devices) or this process's, "
                            "convbridge.sharding.local_devices()")
    n = int(a.shape[axis])
    if not sharding.is_fully_addressable:
        _same_in_every_process(tuple(int(v) for v in a.shape), axis)
    if not pad:
        if n % local:
            raise ShardingError(
                f"a batch of {n} does not split evenly over {local} devices; use a batch size divisible by {local} "
                f"(e.g. {_near_multiples(n, local)}), shard over {', '.join(map(str, divisors(n, local)))} "
                f"device(s) (the counts that divide {n}), or pass pad=True to pad with zero images and trim the "
                "result (PaddedBatch.trim)")
        return _put(a, sharding)
    if not sharding.is_fully_addressable:
        raise ShardingError("pad=True needs every device of the mesh in this process; in a multi-process run, pad "
                            "each process's part to a multiple of its device count yourself")
    extra = -n % k
    if extra:
        widths = [(0, 0)] * ndim
        widths[axis] = (0, extra)
        if isinstance(a, np.ndarray):
            a = np.pad(a, widths)
        else:
            import jax.numpy as jnp

            a = jnp.pad(a, widths)
    return PaddedBatch(_put(a, sharding), n, axis, batch_axis(layout, ndim, output=True))


def shard_kernel(kernel: ArrayLike, devices: object = None, *, layout: LayoutLike = None,
                 op: str = "conv") -> Any:
    """Put ``kernel`` on a 1-D mesh split along its output-channel axis O (model parallelism): with a replicated
    input (:func:`replicate`), ``cb.conv`` returns a result split along its channels.

    Args:
        kernel: ``(O, I, *k)`` by default (``op="conv_transpose"``: torch's ``(I, O / groups, *k)``).
        devices: as for :func:`shard_batch`.
        layout: the op's layout (its kernel letters say where O is): None, ``"NHWC"`` (kernel ``HWIO``), ...
        op: ``"conv"`` or ``"conv_transpose"`` (sets the default kernel layout).

    Raises:
        ShardingError: O does not divide over the devices (the message names the counts that do).

    >>> import numpy as np
    >>> tuple(shard_kernel(np.zeros((3, 3, 4, 8), np.float32), 1, layout="NHWC").sharding.spec)
    (None, None, None, 'devices')
    """
    if op not in ("conv", "conv_transpose"):
        raise ShardingError(f"op must be 'conv' or 'conv_transpose' (it sets where the kernel's O axis is), got "
                            f"{brief(op)}")
    w = _as_placeable(kernel)
    ndim = len(w.shape)
    axis = resolve_layout(layout, ndim, ndim, op).rhs.index("O")
    m = mesh(devices)
    _single_process(m, "kernel sharding (model parallelism)")
    if w.shape[axis] % m.size:
        raise ShardingError(f"the kernel's {w.shape[axis]} output channels (axis {axis}) do not split evenly over "
                            f"{m.size} devices; shard over {', '.join(map(str, divisors(w.shape[axis], m.size)))} "
                            "device(s), or replicate the kernel")
    return _put(w, _split_at(m, ndim, axis))


def replicate(a: ArrayLike, devices: object = None) -> Any:
    """``a`` whole on every device of a 1-D mesh (a kernel beside a batch-sharded input, or an input beside an
    O-sharded kernel)."""
    import jax

    return _put(_as_placeable(a), jax.sharding.NamedSharding(mesh(devices), jax.sharding.PartitionSpec()))


# ------------------------------------------------------------------------------------ what the backend checks

@dataclass(frozen=True)
class BatchSplit:
    """How a concrete input is split along N: its mesh and the PartitionSpec entries of its N axis and of the
    result's N axis (for ``jax.shard_map``), and the shard count."""

    mesh: Any
    in_spec: Any
    out_spec: Any
    shards: int


def check_divides(sharding: Any, shape: Sequence[int]) -> None:
    """Refuse to place an array of ``shape`` with a ``NamedSharding`` that does not split it evenly (JAX's own
    IndivisibleError), with :func:`shard_batch`'s message for the batch axis."""
    import jax

    if not isinstance(sharding, jax.sharding.NamedSharding):
        return
    for ax, entry in enumerate(tuple(sharding.spec)[:len(shape)]):
        names = () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)
        k = int(np.prod([sharding.mesh.shape[name] for name in names], dtype=np.int64))
        n = int(shape[ax])
        if k > 1 and n % k:
            raise ShardingError(
                f"axis {ax} of the input ({n} long, shape {tuple(shape)}) does not split evenly over the {k} "
                f"devices of device={sharding.spec}: for a batch, use a batch size divisible by {k} (e.g. "
                f"{_near_multiples(n, k)}), shard over {', '.join(map(str, divisors(n, k)))} device(s) (the counts "
                f"that divide {n}), or pad it (convbridge.shard_batch(x, pad=True))")


def _sharded_axes(a: Any) -> list[int]:
    """Axes along which a concrete jax array is split (its shard is shorter than the array); none for a tracer
    (inside jit the shardings are XLA's to propagate)."""
    import jax

    if isinstance(a, jax.core.Tracer) or len(a.sharding.device_set) == 1:
        return []
    return [i for i, (s, f) in enumerate(zip(a.sharding.shard_shape(a.shape), a.shape)) if s != f]


def _batch_axes(spec: Spec) -> tuple[tuple[str, ...], str, int, int]:
    """The names of the input's axes and their layout, and where N lies in the input and in the result: fold's
    input is ``(N, C x kernel, L)``; unfold's and fold's results have N first."""
    if isinstance(spec, FoldSpec):
        return ("N", "C x kernel", "L"), "(N, C x kernel, L)", 0, 0
    lay = spec.layout
    return (tuple(lay.lhs), repr(lay.lhs), lay.lhs.index("N"),
            0 if isinstance(spec, UnfoldSpec) else lay.out.index("N"))


def check_placement(spec: Spec, arrays: Sequence[Any]) -> BatchSplit | None:
    """Check the shardings of the jax backend's concrete arrays (batched spec; ``(x, kernel, bias)`` or
    ``(x,)``): the input may be split along N only, the kernel along O only.

    Returns:
        How to map the op over the shards when the input is split along N by a ``NamedSharding``, else None.

    Raises:
        ShardingError: another axis is split (the message names it and the alternatives).
    """
    x = arrays[0]
    names, layout, n_axis, out_n = _batch_axes(spec)
    for ax in _sharded_axes(x):
        if ax != n_axis:
            raise ShardingError(
                f"the input of {spec.op} is sharded along axis {ax} ({names[ax]} of layout {layout}) "
                f"over {len(x.sharding.device_set)} devices; convbridge's ops split an input along its batch axis N "
                "only (another axis would make XLA gather or all-reduce it): shard the batch with "
                "convbridge.shard_batch, split the first spatial axis with convbridge.sharding.spatial_conv (a "
                "halo exchange), or jax.device_put the input to one device first")
    if len(arrays) > 1 and arrays[1] is not None:
        rhs = spec.layout.rhs
        for ax in _sharded_axes(arrays[1]):
            if ax != rhs.index("O"):
                raise ShardingError(
                    f"the kernel of {spec.op} is sharded along axis {ax} ({rhs[ax]} of kernel layout {rhs!r}); a "
                    "kernel may be replicated (convbridge.sharding.replicate) or sharded along O, its output "
                    "channels (convbridge.sharding.shard_kernel)")
    return _split_of(x, n_axis, out_n, len(spec.batched_out_shape))


def _split_of(x: Any, n_axis: int, out_n: int, out_ndim: int) -> BatchSplit | None:
    import jax

    sharding = x.sharding
    if n_axis not in _sharded_axes(x) or not isinstance(sharding, jax.sharding.NamedSharding):
        return None
    P = jax.sharding.PartitionSpec
    entry = tuple(sharding.spec) + (None,) * (x.ndim - len(sharding.spec))
    out: list[Any] = [None] * out_ndim
    out[out_n] = entry[n_axis]
    shards = x.shape[n_axis] // sharding.shard_shape(x.shape)[n_axis]
    return BatchSplit(sharding.mesh, P(*entry), P(*out), shards)


# ------------------------------------------------------------------------------------------ spatial sharding

@dataclass(frozen=True)
class Halo:
    """How one spatial axis of a convolution splits over devices (:func:`halo_plan`).

    Attributes:
        rows: input rows each device holds.
        out_rows: output rows each device computes.
        left: rows each device receives from the previous one (the first receives zeros: the low padding).
        right: rows each device receives from the next one (the last receives zeros: the high padding).
        starts: per device, where its window starts in ``[left rows | own rows | right rows]``.
        window: the rows each device convolves, with no padding along the axis.
    """

    rows: int
    out_rows: int
    left: int
    right: int
    starts: tuple[int, ...]
    window: int


def halo_plan(axis: ConvAxis, shards: int, letter: str = "H") -> Halo:
    """Split ``axis`` (its input and its output rows) evenly over ``shards`` devices; device ``i`` computes
    outputs ``i * out_rows ..`` from the input rows :meth:`ConvAxis.halo` names for them.

    Raises:
        ShardingError: input or output rows that ``shards`` does not divide, or shards thinner than the halo
            (a device may only receive rows from its two neighbours).

    >>> halo_plan(ConvAxis(8, 3), 2)
    Halo(rows=4, out_rows=3, left=1, right=1, starts=(1, 0), window=5)
    """
    if isinstance(shards, bool) or not isinstance(shards, (int, np.integer)) or shards < 1:
        raise ShardingError(f"shards is a number of devices, a positive int, got {brief(shards)}")
    both = [d for d in divisors(axis.size, shards) if axis.out % d == 0]
    if axis.size % shards or axis.out % shards:
        raise ShardingError(f"spatial sharding splits axis {letter} ({axis.size} input rows, {axis.out} output rows) "
                            f"evenly, and {shards} devices do not divide both; use {', '.join(map(str, both))} "
                            "device(s), or shard the batch instead")
    h, m = axis.size // shards, axis.out // shards
    spans = [axis.halo(i * m, (i + 1) * m) for i in range(shards)]
    left = max(0, *(i * h - lo for i, (lo, _) in enumerate(spans)))
    right = max(0, *(hi - (i + 1) * h for i, (_, hi) in enumerate(spans)))
    if max(left, right) > h:
        raise ShardingError(f"over {shards} devices each holds {h} rows of axis {letter}, but its outputs read "
                            f"{max(left, right)} rows of a neighbour's (kernel span {axis.span}, stride "
                            f"{axis.stride}, padding {axis.padding}); halos come from the next device only: use "
                            f"fewer devices ({', '.join(map(str, both[:-1] or both))})")
    starts = tuple(lo - i * h + left for i, (lo, _) in enumerate(spans))
    return Halo(h, m, left, right, starts, spans[0][1] - spans[0][0])


def _input_layout(layout: LayoutLike, ndim: int, op: str = "conv") -> Layout:
    """The resolved layout of an ``ndim``-dim input (batched or not) given only the input."""
    try:
        return resolve_layout(layout, ndim, ndim, op)
    except ShapeError:
        return resolve_layout(layout, ndim, ndim + 1, op)  # an unbatched input: its kernel has one more dim


def shard_spatial(x: ArrayLike, devices: object = None, *, layout: LayoutLike = None) -> Any:
    """Put ``x`` on a 1-D mesh split along its first spatial axis (H of NCHW or NHWC): the input
    :func:`spatial_conv` takes (it places ``x`` this way itself when it is not).

    Raises:
        ShardingError: the axis does not divide over the devices.
    """
    a = _as_placeable(x)
    _check_input_ndim(a, "shard_spatial")
    lay = _input_layout(layout, len(a.shape))
    return _place_spatial(a, mesh(devices), lay.user(lay.lhs).index(lay.spatial[0]), lay.spatial[0])


def _place_spatial(a: Any, m: jax.sharding.Mesh, axis: int, letter: str) -> Any:
    """``a`` split along ``axis`` (spatial ``letter``) over ``m``."""
    _single_process(m, "spatial sharding")
    if a.shape[axis] % m.size:
        raise ShardingError(f"axis {letter} has {a.shape[axis]} rows, which {m.size} devices do not split evenly; "
                            f"use {', '.join(map(str, divisors(a.shape[axis], m.size)))} device(s)")
    return _put(a, _split_at(m, len(a.shape), axis))


def spatial_conv(x: ArrayLike, kernel: ArrayLike, bias: ArrayLike | None = None, *, devices: object = None,
                 precision: str = "highest", **conv_kwargs: Any) -> Any:
    """``cb.conv`` with the first spatial axis (H) split over devices, for images too large for one: each device
    convolves its own rows plus the halo rows it receives from its neighbours (``jax.shard_map`` and
    ``lax.ppermute``), and keeps its output rows.

    Args:
        x, kernel, bias: as for ``cb.conv`` (any framework; ``x`` may already be split by :func:`shard_spatial`).
        devices: as for :func:`shard_batch`.
        precision: the precision policy, as for ``cb.conv``.
        **conv_kwargs: ``stride``, ``padding``, ``dilation``, ``groups``, ``layout`` as for ``cb.conv``
            (``padding_mode`` ``"zeros"`` only: the devices at the ends receive zero rows).

    Returns:
        A ``jax.Array`` split along the result's first spatial axis over the devices.

    Raises:
        ShardingError: input or output rows the devices do not divide, shards thinner than the halo, or a
            padding mode other than zeros.
        ConvBridgeError: any argument ``cb.conv`` refuses.

    Shape:
        as ``cb.conv``; per device ``H / devices`` input rows and ``H_out / devices`` output rows.

    >>> import numpy as np, convbridge as cb
    >>> x, w = np.arange(64.0, dtype=np.float32).reshape(1, 1, 8, 8), np.ones((1, 1, 3, 3), np.float32)
    >>> y = spatial_conv(x, w, padding=1, devices=1)
    >>> bool(np.array_equal(y, cb.conv(x, w, padding=1))), tuple(y.sharding.spec)
    (True, (None, None, 'devices', None))
    """
    from convbridge.ops import build

    spec = build("conv", x, kernel, bias, conv_kwargs)
    assert isinstance(spec, ConvSpec)  # build("conv", ...) makes one
    if spec.padding_mode != "zeros":
        raise ShardingError(f"spatial_conv pads with zeros only (the devices at the ends receive zero rows), got "
                            f"padding_mode={spec.padding_mode!r}; pad the input yourself first, or shard the batch")
    m = mesh(devices)
    _single_process(m, "spatial sharding (spatial_conv)")
    halo = halo_plan(spec.axes[0], m.size, spec.layout.spatial[0])
    program = _spatial_program(spec, m, halo, precision, bias is not None)
    lay = spec.layout  # as cb.conv reads the input: a 3-d input with a 4-d kernel is one unbatched image
    letter = lay.spatial[0]
    arrays = (_place_spatial(_as_placeable(x), m, lay.user(lay.lhs).index(letter), letter), replicate(kernel, m))
    return program(*arrays, *(() if bias is None else (replicate(bias, m),)))


@functools.lru_cache(maxsize=64)
def _spatial_program(spec: Any, m: Any, halo: Halo, precision: str, has_bias: bool) -> Any:
    """One compiled ``shard_map`` program per (spec, mesh, halo, precision)."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    from convbridge.api import conv

    lay, name, k = spec.layout, m.axis_names[0], m.size
    lhs, out = lay.user(lay.lhs), lay.user(lay.out)
    x_ax, y_ax = lhs.index(lay.spatial[0]), out.index(lay.spatial[0])
    kw = dict(stride=spec.stride, dilation=spec.dilation, groups=spec.groups, layout=str(lay), backend="jax",
              padding=((0, 0), *spec.padding[1:]), precision=precision)
    starts = np.asarray(halo.starts, np.int32)

    def local(xb: Any, w: Any, b: Any = None) -> Any:
        parts = [xb]
        if halo.left:  # the previous device's last rows; the first device receives zeros (the low padding)
            tail = lax.slice_in_dim(xb, halo.rows - halo.left, halo.rows, axis=x_ax)
            parts.insert(0, lax.ppermute(tail, name, [(i, i + 1) for i in range(k - 1)]))
        if halo.right:  # the next device's first rows; the last receives zeros (the high padding)
            head = lax.slice_in_dim(xb, 0, halo.right, axis=x_ax)
            parts.append(lax.ppermute(head, name, [(i + 1, i) for i in range(k - 1)]))
        ext = jnp.concatenate(parts, axis=x_ax) if len(parts) > 1 else xb
        window = lax.dynamic_slice_in_dim(ext, jnp.asarray(starts)[lax.axis_index(name)], halo.window, axis=x_ax)
        return conv(window, w, b, **kw)

    P = jax.sharding.PartitionSpec
    in_specs = (_split_at(m, len(lhs), x_ax).spec, P()) + ((P(),) if has_bias else ())
    return jax.jit(jax.shard_map(local, mesh=m, in_specs=in_specs, out_specs=_split_at(m, len(out), y_ax).spec))


# ------------------------------------------------------------------------------------- processes and the CLI

def _force_host_devices(count: int) -> None:
    """Ask XLA for ``count`` CPU devices (``XLA_FLAGS``), unless its flags already ask for at least that many."""
    flags = os.environ.get("XLA_FLAGS", "")
    found = re.search(rf"{_COUNT_FLAG}=(\d+)", flags)
    if found and int(found.group(1)) >= count:
        return
    rest = re.sub(rf"\s*{_COUNT_FLAG}=\d+", "", flags).strip()
    os.environ["XLA_FLAGS"] = f"{rest} {_COUNT_FLAG}={count}".strip()


def start(devices: int | str | None = None, *, coordinator: str | None = None, num_processes: int | None = None,
          process_id: int | None = None, timeout: float | None = None) -> tuple[jax.Device, ...]:
    """Make ``devices`` local JAX devices available and return them: a count, ``"all"`` or None (every one).

    On CPU, N devices need ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` before JAX starts: when JAX has
    not been imported yet, this sets it (``"all"``: one device per CPU core, unless the flag is set already).
    With ``coordinator`` (``host:port`` of process 0), it first joins a run of ``num_processes`` processes as
    ``process_id`` (``jax.distributed.initialize``); every process must be started the same way.

    ``timeout`` (seconds; None: JAX's default of 300) bounds the wait for the other processes
    (``initialization_timeout``): past it XLA ends the process itself (a fatal error, not an exception), so a caller
    that must report it sets a shorter watchdog of its own (the CLI's ``--timeout`` does).

    Raises:
        ShardingError: a count that is not a positive int, JAX already started with fewer devices, or the processes
            could not connect.
    """
    if devices is not None and devices != "all" and (
            isinstance(devices, bool) or not isinstance(devices, (int, np.integer)) or devices < 1):
        raise ShardingError(f"devices must be >= 1 or 'all', got {brief(devices)}")
    if isinstance(devices, np.integer):
        devices = int(devices)
    if "jax" not in sys.modules:
        found = re.search(rf"{_COUNT_FLAG}=(\d+)", os.environ.get("XLA_FLAGS", ""))
        if isinstance(devices, int) or not found:
            _force_host_devices(devices if isinstance(devices, int) else os.cpu_count() or 1)
    if coordinator is not None or num_processes is not None or process_id is not None:
        _initialize(coordinator, num_processes, process_id, timeout)
    have = local_devices()
    if not isinstance(devices, int):
        return have
    if len(have) < devices:
        platform = have[0].platform
        why = (f"JAX already started in this process with {len(have)} CPU device(s); N CPU devices need "
               f"XLA_FLAGS={_COUNT_FLAG}=N set before JAX starts (convbridge sets it itself when JAX has not been "
               "imported yet): start a fresh process, or set XLA_FLAGS yourself" if platform == "cpu" else
               f"this process has {len(have)} {platform} device(s); ask for at most {len(have)}")
        raise ShardingError(f"{devices} devices asked for, but {why}")
    return have[:devices]


def _initialize(coordinator: str | None, num_processes: int | None, process_id: int | None,
                timeout: float | None = None) -> None:
    """``jax.distributed.initialize`` with the three values checked first (once per process)."""
    import jax

    if coordinator is None or num_processes is None or process_id is None:
        raise ShardingError("a multi-process run needs all three of the coordinator address (host:port of process "
                            "0), the number of processes and this process's id; got coordinator="
                            f"{coordinator!r}, num_processes={num_processes}, process_id={process_id}")
    if not re.fullmatch(r"[^:\s]+:\d+", coordinator):
        raise ShardingError(f"the coordinator address is host:port (process 0's), e.g. localhost:12345, got "
                            f"{coordinator!r}")
    if num_processes < 1 or not 0 <= process_id < num_processes:
        raise ShardingError(f"process ids run 0..{num_processes - 1} for {num_processes} processes; got process_id "
                            f"{process_id}")
    if jax.distributed.is_initialized():
        return
    try:
        if timeout is None:
            jax.distributed.initialize(coordinator, num_processes, process_id)
        else:
            jax.distributed.initialize(coordinator, num_processes, process_id,
                                       initialization_timeout=max(1, int(np.ceil(timeout))))
    except (RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ShardingError(f"jax.distributed.initialize({coordinator!r}, {num_processes}, {process_id}) failed: "
                            f"{first}; start every process with the same coordinator and number of processes, each "
                            "with its own id, before JAX computes anything") from None


def gather_processes(payload: bytes) -> list[bytes]:
    """Every process's ``payload``, in process order, in every process (``multihost_utils.process_allgather``);
    ``[payload]`` in a single-process run. For small results, such as a run's statistics."""
    import jax

    if jax.process_count() == 1:
        return [payload]
    from jax.experimental import multihost_utils

    with _stdout_to_stderr():  # CPU collectives (Gloo) print their connections on stdout, which holds a JSON report
        sizes = np.asarray(multihost_utils.process_allgather(np.array([len(payload)], np.int32))).reshape(-1)
        buffer = np.zeros(int(sizes.max()), np.uint8)
        buffer[:len(payload)] = np.frombuffer(payload, np.uint8)
        everything = np.asarray(multihost_utils.process_allgather(buffer)).reshape(len(sizes), -1)
    return [everything[i, :size].tobytes() for i, size in enumerate(sizes)]


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Send what native code writes to file descriptor 1 to 2 instead, for the block."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no file descriptor 1 (an embedded interpreter): nothing to protect
        yield
        return
    try:
        os.dup2(2, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
