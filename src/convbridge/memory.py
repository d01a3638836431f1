"""A memory guard: estimate what an operation needs before running it, and refuse what cannot fit.

The limit is, in order: the innermost :func:`limit` block (``with cb.memory.limit("8GiB"):``),
the environment variable ``CONVBRIDGE_MEMORY_LIMIT`` (bytes, ``"500MB"``, ``"8GiB"`` or a
percentage of the memory available now, ``"50%"``), or by default half of the memory
available when the check runs (4 GiB where that cannot be read). Estimates count the arrays an
operation holds at its peak: inputs, outputs and its largest intermediate (the float64 reference
computes in blocks of at most :data:`BLOCK_ELEMENTS` elements, so a large batch or kernel
never needs an im2col copy of everything at once; a convolution also holds a flat copy of its padded
input, from which each block's columns are contiguous runs).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

from convbridge.errors import ArgumentError, ConvBridgeError
from convbridge.reference._core import BLOCK_ELEMENTS
from convbridge.spec import ConvSpec, ConvTransposeSpec, FoldSpec, Spec, UnfoldSpec

__all__ = ["MemoryLimitError", "BLOCK_ELEMENTS", "parse_size", "available", "current_limit", "limit", "check",
           "describe", "Footprint", "footprint", "native_bytes", "reference_bytes", "matmul_bytes", "verdict_bytes"]

ENV = "CONVBRIDGE_MEMORY_LIMIT"
_DEFAULT_FRACTION, _FALLBACK = 0.5, 4 * 2**30
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "kib": 2**10, "mib": 2**20,
          "gib": 2**30, "tib": 2**40}
_stack: list[int] = []


class MemoryLimitError(ConvBridgeError):
    """An operation would need more memory than the limit allows."""


def parse_size(text: str | int | float) -> int:
    """Bytes from ``1e9``, ``"500MB"``, ``"8GiB"`` or ``"50%"`` (of the memory available now).

    >>> parse_size("1.5GiB"), parse_size("200 MB"), parse_size(4096)
    (1610612736, 200000000, 4096)
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        if not math.isfinite(text) or text <= 0:
            raise ArgumentError(f"a memory limit is a positive size, got {text!r}")
        return int(text)
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-z%]*)\s*", str(text).lower())
    if not match or match.group(2) not in (*_UNITS, "%") or float(match.group(1)) <= 0:
        raise ArgumentError(f"cannot read the memory size {text!r}; write e.g. 8GiB, 500MB, 1e9 (bytes) or 50% "
                            "(of the memory available)")
    value, unit = float(match.group(1)), match.group(2)
    if unit == "%":
        if value > 100:
            raise ArgumentError(f"a memory limit in percent is at most 100% (of the memory available), got {text!r}")
        return int((available() or _FALLBACK / _DEFAULT_FRACTION) * value / 100)
    size = value * _UNITS[unit]
    if not math.isfinite(size) or size >= 2**63:
        raise ArgumentError(f"the memory size {text!r} is beyond any machine's; write e.g. 8GiB or 100%")
    return int(size)


def available() -> int | None:
    """Memory available to new allocations now, in bytes (Linux's MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def current_limit() -> int:
    """The limit in force: the innermost :func:`limit` block, else ``CONVBRIDGE_MEMORY_LIMIT``, else half of
    the memory available now."""
    if _stack:
        return _stack[-1]
    if os.environ.get(ENV):
        return parse_size(os.environ[ENV])
    free = available()
    return int(free * _DEFAULT_FRACTION) if free else _FALLBACK


@contextlib.contextmanager
def limit(size: str | int | float) -> Iterator[int]:
    """Run the block under another memory limit (``"8GiB"``, ``"50%"``, bytes).

    >>> with limit("1GiB") as bytes_:
    ...     current_limit() == bytes_ == 2**30
    True
    """
    _stack.append(parse_size(size))
    try:
        yield _stack[-1]
    finally:
        _stack.pop()


def describe(nbytes: float) -> str:
    """``"1.5 GiB"``-style sizes.

    >>> describe(3 * 2**29), describe(2048)
    ('1.5 GiB', '2 KiB')
    """
    for unit in ("TiB", "GiB", "MiB", "KiB"):
        scale = _UNITS[unit.lower()]
        if nbytes >= scale:
            return f"{nbytes / scale:.3g} {unit}"
    return f"{int(nbytes)} B"


def check(nbytes: float, what: str, hint: str) -> None:
    """Refuse ``what`` when it needs more than the limit.

    Raises:
        MemoryLimitError: with the estimate, the limit, and ``hint`` (how to need less).
    """
    if nbytes <= _UNCHECKED and not _stack and not os.environ.get(ENV):
        return  # small: not worth reading /proc/meminfo (tens of microseconds) on every call
    cap = current_limit()
    if nbytes > cap:
        raise MemoryLimitError(f"{what} needs about {describe(nbytes)}, more than the memory limit of "
                               f"{describe(cap)}; {hint}, or raise the limit: {ENV}=16GiB, "
                               "convbridge.memory.limit('16GiB'), or --memory-limit 16GiB on the command line")


#: Estimates up to this size pass without reading the available memory (unless a limit is set).
_UNCHECKED = 16 * 2**20

_ITEMSIZE = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8, "complex64": 8, "complex128": 16}
#: Index arrays, small temporaries and Python objects around the arrays an estimate counts.
SLACK = 2**20


@dataclass(frozen=True)
class Footprint:
    """Element counts of one op: its input (and the input padded), kernel, output, the largest intermediate of the
    direct definition (the windows of a conv, the full output of a transposed conv), the column matrix of its
    matmul lowering, and the input's dtype size."""

    inputs: int
    padded: int
    kernel: int
    outputs: int
    windows: int
    columns: int
    itemsize: int


def footprint(spec: Spec) -> Footprint:
    """The element counts of ``spec``.

    >>> from convbridge.spec import make_conv_spec
    >>> footprint(make_conv_spec((16, 64, 224, 224), (64, 64, 11, 11), padding=5)).windows
    6217007104
    """
    size = _ITEMSIZE.get(str(spec.dtype), 4)
    n = spec.batch
    if isinstance(spec, ConvSpec):
        taps = math.prod(spec.kernel_spatial)
        return Footprint(n * spec.in_channels * math.prod(spec.in_spatial),
                         n * spec.in_channels * math.prod(a.padded for a in spec.axes),
                         spec.out_channels * spec.in_channels // spec.groups * taps, math.prod(spec.batched_out_shape),
                         n * math.prod(spec.out_spatial) * spec.in_channels * taps,
                         n * math.prod(spec.out_spatial) * spec.in_channels * taps, size)
    if isinstance(spec, ConvTransposeSpec):
        taps = math.prod(spec.kernel_spatial)
        inputs = n * spec.in_channels * math.prod(spec.in_spatial)
        return Footprint(inputs, inputs, spec.in_channels * spec.out_channels // spec.groups * taps,
                         math.prod(spec.batched_out_shape), n * spec.out_channels * math.prod(spec.full_spatial),
                         n * math.prod(spec.in_spatial) * spec.out_channels * taps, size)
    padded = n * spec.channels * math.prod(a.padded for a in spec.axes)
    blocks = n * spec.channels * math.prod(spec.kernel_spatial) * math.prod(a.out for a in spec.axes)
    if isinstance(spec, UnfoldSpec):
        return Footprint(n * spec.channels * math.prod(spec.in_spatial), padded, 0, blocks, blocks, blocks, size)
    assert isinstance(spec, FoldSpec)
    return Footprint(blocks, blocks, 0, math.prod(spec.batched_out_shape), padded, blocks, size)


def native_bytes(spec: Spec) -> int:
    """A framework's own op: inputs, kernel and output, twice over for its workspace (an estimate)."""
    f = footprint(spec)
    return 2 * (f.padded + f.outputs) * f.itemsize + f.kernel * f.itemsize + SLACK


def reference_bytes(spec: Spec, itemsize: int | None = None) -> int:
    """The NumPy definition in ``itemsize`` (default the input's): input, padded input, output (twice), and one
    block of windows (twice: copy and product; convolutions contract in blocks, a transposed convolution holds its
    full output). A convolution also holds a flat copy of its padded input (the source of each block's columns),
    its kernel matrix twice, and a third output (the accumulator of a split kernel, on the padded width); a
    transposed convolution a copy of its input and the product of a block of images (every tap's contribution)."""
    f = footprint(spec)
    size = f.itemsize if itemsize is None else itemsize
    if isinstance(spec, ConvSpec):  # the GEMM contraction (float16's einsum holds less)
        block = min(f.windows, BLOCK_ELEMENTS)
        return (f.inputs + 2 * f.padded + 2 * f.kernel + 3 * f.outputs + 2 * block) * size + SLACK
    products = 0  # a transposed convolution's taps for a block of images, from one matrix product
    if isinstance(spec, ConvTransposeSpec):
        products = f.inputs + min(f.columns, max(BLOCK_ELEMENTS, -(-f.columns // max(spec.batch, 1))))
    # einsum copies a block of windows and returns its product before it lands in the output; the bias adds a copy
    return (f.inputs + f.padded + f.kernel + 2 * f.outputs + 2 * f.windows + products) * size + SLACK


def matmul_bytes(spec: Spec) -> int:
    """The im2col (col2im) lowering: its input, the column matrix, the product and the output."""
    f = footprint(spec)
    return (f.padded + 2 * f.columns + f.outputs + f.kernel) * f.itemsize + SLACK


def verdict_bytes(spec: Spec, results: int) -> int:
    """compare / verify: the float64 reference and its gauge (computed together; complex128 for a complex op),
    ``results`` outputs to judge (and their float64 / complex128 re-runs), and the judge's float64 maps: the scale,
    bound and threshold of a pair of precisions, one ratio map, and the gauges of a re-run on exact data.

    >>> from convbridge.spec import make_conv_spec
    >>> real = make_conv_spec((8, 16, 32, 32), (16, 16, 3, 3), dtypes=("float32", "float32"))
    >>> cplx = make_conv_spec((8, 16, 32, 32), (16, 16, 3, 3), dtypes=("complex64", "complex64"))
    >>> verdict_bytes(cplx, 2) > verdict_bytes(real, 2)
    True
    """
    f = footprint(spec)
    wide = 2 * 8 if str(spec.dtype).startswith("complex") else 8
    return reference_bytes(spec, wide) + f.outputs * (8 * 8 + results * (f.itemsize + wide)) + f.kernel * wide
