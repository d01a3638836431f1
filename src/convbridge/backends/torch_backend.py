"""PyTorch backend: ``F.conv1d/2d/3d`` and ``F.conv_transpose1d/2d/3d`` on permuted views; autograd flows through.

Two algorithms per convolution: ``"native"`` (the channels-first call a user writes; a padding mode goes through
``F.pad``'s own kernel, as ``nn.ConvNd(padding_mode=...)`` does) and ``"channels_last"`` (the same call on input
and kernel in channels-last memory, where oneDNN's CPU kernels are fastest: 35-39x on a 31x31 depthwise kernel,
1.6x on a strided transposed convolution; the layout copy is part of the call, and free for an NHWC user).

unfold/fold use ``F.unfold``/``F.fold`` where torch has them (4-D input, i.e. 2-d), and rank-generic
``Tensor.unfold`` views and strided slice-adds for the other ranks.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F

from convbridge import _tracing, costs
from convbridge import precision as _precision
from convbridge._types import ArrayLike, Pairs
from convbridge.arrays import framework_of, native_order, to_numpy
from convbridge.backends._common import accumulates_in_float32, float32_accumulation, pad_by_mode
from convbridge.dispatch import Impl, register
from convbridge.errors import ArgumentError, ConvBridgeError
from convbridge.plan import Plan
from convbridge.precision import Precision
from convbridge.spec import ConvSpec, ConvTransposeSpec, FoldSpec, Spec, UnfoldSpec, inverse

NAME = "torch"

__all__ = ["NAME", "place", "to_numpy", "unsupported", "precision", "transpose", "take", "compile", "astype", "unfold_generic",
           "fold_generic"]


def _tensor(a: ArrayLike) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a
    arr = np.array(to_numpy(a) if framework_of(a) == "jax" else native_order(a), copy=True)
    if arr.dtype.name == "bfloat16":
        return torch.from_numpy(arr.astype(np.float32)).to(torch.bfloat16)
    return torch.from_numpy(arr)


def _device(device: object) -> torch.device | None:
    """``device`` as a torch device this machine has (None stays None)."""
    if device is None:
        return None
    try:
        dev = device if isinstance(device, torch.device) else torch.device(device)  # type: ignore[call-overload]
    except (RuntimeError, TypeError):
        raise ArgumentError(f"{device!r} is not a torch device; use e.g. 'cpu', 'cuda' or 'cuda:0'") from None
    if dev.type != "meta":
        try:
            torch.empty(0, device=dev)
        except (RuntimeError, AssertionError) as exc:
            why = str(exc).split(".")[0].splitlines()[0][:100]
            raise ArgumentError(f"torch has no device {str(dev)!r} here ({why}); use 'cpu', or None to compute "
                                "where the input lives") from None
    return dev


def place(arrays: Sequence[ArrayLike | None], device: object) -> tuple[torch.Tensor | None, ...]:
    """Any arrays as torch tensors of the same dtypes (numpy/jax arrays are copied from host memory), all on
    ``device`` (None: the first array's device)."""
    tensors = [None if a is None else _tensor(a) for a in arrays]
    target = _device(device) or next(t.device for t in tensors if t is not None)
    return tuple(None if t is None else t.to(target) for t in tensors)


_TORCH_OPS = {"conv": "convolution (conv1d..conv3d only)",
              "conv_transpose": "transposed convolution (conv_transpose1d..conv_transpose3d only)"}


def unsupported(spec: Spec, plan: Plan) -> ConvBridgeError | None:
    """torch computes every float and complex dtype it has, on any device (complex convolutions as real ones:
    ATen's Gauss trick, three real convolutions per complex one)."""
    return None


def _three_spatial_dims(spec: Spec, plan: Plan) -> ConvBridgeError | None:
    """torch has convolution functions for 1-3 spatial dims only."""
    if spec.nsp > 3:
        also = ", or algorithm='matmul'" if spec.op == "conv" else ""
        return ArgumentError(f"torch has no {spec.nsp}-d {_TORCH_OPS[spec.op]}; use backend='jax' or 'numpy'{also}")
    return None


def precision(spec: Spec, plan: Plan, x: torch.Tensor) -> Precision:
    """CPU computes in the dtype, but widens float16/bfloat16 to float32 in the native convolutions (and the
    channels-last ones, the same oneDNN kernels, and the sum of slices, which rounds once too); CUDA float32 uses
    TF32 inputs unless precision='highest'."""
    device = str(x.device)
    widened = replace(plan, algorithm="native") if plan.algorithm in ("channels_last", "shifted") else plan
    if not x.is_cuda and accumulates_in_float32(spec, widened):
        return float32_accumulation(spec, f"precision={plan.precision}, {device}")
    fmt = _cpu_format(spec, plan) if not x.is_cuda else None
    if fmt is not None:  # torch's own fp32_precision setting lets oneDNN round float32 inputs (bf16 on AMX CPUs)
        return Precision(_precision.unit_roundoff(str(spec.dtype)), _precision.INPUT_FORMATS[fmt],
                         f"{fmt} inputs (torch's fp32_precision setting), float32 accumulation, "
                         f"precision={plan.precision}, {device}")
    return _precision.model(str(spec.dtype), plan.precision, "gpu" if x.is_cuda else "cpu", where=device)


#: torch's CPU fp32 settings (torch.backends.mkldnn.{conv,matmul}.fp32_precision, inherited from
#: torch.backends.mkldnn and torch.backends; torch.set_float32_matmul_precision("medium") sets the matmul one to
#: "bf16") as convbridge's input formats.
_CPU_FORMATS = {"bf16": "bf16", "tf32": "tf32"}


def _cpu_setting(kind: str) -> str:
    """The fp32 precision oneDNN uses on the CPU for ``kind`` (``"conv"`` or ``"matmul"``): "ieee", "bf16", "tf32"."""
    mkldnn = torch.backends.mkldnn
    for holder in (getattr(mkldnn, kind, None), mkldnn, torch.backends):
        value = getattr(holder, "fp32_precision", "none")
        if value != "none":
            return str(value)
    return "ieee"


def _cpu_kind(plan: Plan) -> str:
    return "matmul" if plan.algorithm in ("matmul", "fft") else "conv"


def _cpu_format(spec: Spec, plan: Plan) -> str | None:
    """The input format a float32 (complex64) CPU computation under ``plan`` rounds to: None under "highest"
    (which forces IEEE for the call) or with torch's default settings."""
    if plan.precision == "highest" or _precision.real_dtype(str(spec.dtype)) != "float32" or _tracing.tracing():
        return None
    return _CPU_FORMATS.get(_cpu_setting(_cpu_kind(plan)))


def transpose(a: torch.Tensor, axes: Sequence[int]) -> torch.Tensor:
    return a.permute(*axes)


def take(a: torch.Tensor, index: np.ndarray, axis: int) -> torch.Tensor:
    return torch.index_select(a, axis, torch.from_numpy(index).to(a.device))


def compile(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """torch runs eagerly here (autograd flows through): ``fn`` itself."""
    return fn


def _on_gpu(x: torch.Tensor) -> bool:
    return bool(x.is_cuda)


def precision_scope(plan: Plan, x: torch.Tensor) -> Any:
    """The plan's precision policy for a computation on ``x`` (see :func:`_precision_context`), for the
    algorithms outside this module (the matmul lowering)."""
    return _precision_context(plan, x)


def _precision_context(plan: Plan, x: torch.Tensor) -> Any:
    """The policy's TF32 switches for the call, restored after it: cuDNN's ``allow_tf32`` (convolutions) and
    ``torch.backends.cuda.matmul.allow_tf32`` (the matmul algorithm's products; what
    ``torch.set_float32_matmul_precision("high")`` sets). CPUs compute in the dtype: nothing to set."""
    if not _on_gpu(x):
        if plan.precision == "highest" and not _tracing.tracing() and any(
                _cpu_setting(kind) != "ieee" for kind in ("conv", "matmul")):
            return _cpu_ieee_scope()  # a global bf16/tf32 fp32_precision must not change a "highest" call
        return contextlib.nullcontext()
    return _tf32_scope(_precision.torch_allow_tf32(plan.precision))


@contextlib.contextmanager
def _cpu_ieee_scope() -> Iterator[None]:
    """oneDNN's fp32 convolutions and matrix products in IEEE float32 for the duration, the settings restored."""
    leaves = [getattr(torch.backends.mkldnn, kind) for kind in ("conv", "matmul")]
    before = [leaf.fp32_precision for leaf in leaves]
    try:
        for leaf in leaves:
            leaf.fp32_precision = "ieee"
        yield
    finally:
        for leaf, value in zip(leaves, before):
            leaf.fp32_precision = value


@contextlib.contextmanager
def _tf32_scope(allow: bool) -> Iterator[None]:
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    before = matmul.allow_tf32
    with cudnn.flags(enabled=cudnn.enabled, benchmark=cudnn.benchmark, deterministic=cudnn.deterministic,
                     allow_tf32=allow):
        matmul.allow_tf32 = allow
        try:
            yield
        finally:
            matmul.allow_tf32 = before


def _pad(y: torch.Tensor, pairs: Pairs) -> torch.Tensor:
    """Zero-pad the trailing spatial axes by ``(lo, hi)``; negative widths crop (F.pad semantics)."""
    if not any(lo or hi for lo, hi in pairs):
        return y
    return F.pad(y, [v for pair in reversed(pairs) for v in pair])


def _crop(y: torch.Tensor, cuts: Pairs) -> torch.Tensor:
    return _pad(y, tuple((-lo, -hi) for lo, hi in cuts))


def pad_mode(spec: ConvSpec, x: torch.Tensor) -> torch.Tensor:
    """A reflect / replicate / circular padding of the channels-first ``x``: ``F.pad``'s own kernel (as
    ``nn.ConvNd(padding_mode=...)`` uses) where torch has one (1-3 spatial dims, non-negative widths; the spec
    already holds reflect below and circular at most the input's size), else one gather per axis. Both copy
    the same elements: the results are bitwise equal."""
    if spec.nsp <= 3 and all(lo >= 0 and hi >= 0 for lo, hi in spec.padding):
        return F.pad(x, [v for pair in reversed(spec.padding) for v in pair], mode=spec.padding_mode)
    return pad_by_mode(spec, x, take, range(2, 2 + spec.nsp))[0]


def _padded(spec: ConvSpec, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...] | int]:
    """The channels-first input with what F.convNd cannot pad itself applied (a mode, asymmetric zeros), and the
    symmetric zero padding left for F.convNd."""
    if spec.padding_mode != "zeros":
        return pad_mode(spec, x), 0
    pads = spec.padding
    if any(lo != hi for lo, hi in pads):
        return _pad(x, pads), 0
    return x, tuple(lo for lo, _ in pads)


def conv(spec: ConvSpec, plan: Plan, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """``F.convNd`` on channels-first views; a padding mode and asymmetric zero padding go through F.pad first."""
    lay = spec.layout
    x, padding = _padded(spec, x.permute(lay.lhs_perm))
    w = w.permute(lay.rhs_perm)
    with _precision_context(plan, x):
        y = getattr(F, f"conv{spec.nsp}d")(x, w, b, spec.stride, padding, spec.dilation, spec.groups)
    return y.permute(inverse(lay.out_perm))


def _channels_last_memory(nsp: int, *tensors: torch.Tensor) -> list[torch.Tensor]:
    """Channels-first tensors in channels-last memory (1-d as 2-d over a unit axis at 2): a copy unless they are
    already (a channels-first view of an NHWC or NDHWC array is)."""
    fmt = torch.channels_last_3d if nsp == 3 else torch.channels_last
    return [(t.unsqueeze(2) if nsp == 1 else t).contiguous(memory_format=fmt) for t in tensors]


def _unit_axis(nsp: int, values: Sequence[int], fill: int) -> tuple[int, ...]:
    """Per-axis arguments for the 2-d call that computes a 1-d one: ``fill`` for the unit axis first."""
    return (fill, *values) if nsp == 1 else tuple(values)


def conv_channels_last(spec: ConvSpec, plan: Plan, x: torch.Tensor, w: torch.Tensor,
                       b: torch.Tensor | None) -> torch.Tensor:
    """``F.conv2d``/``F.conv3d`` on input and kernel in channels-last memory (1-d as 2-d over a unit axis):
    oneDNN's fastest kernels on a CPU, depthwise ones above all. A user layout that keeps channels innermost
    (NHWC, NDHWC) is channels-last memory already: its channels-first view is passed without a copy; otherwise
    the input is copied once (part of the call). The result comes back in the user's layout (its memory may be
    channels-last)."""
    lay, nsp = spec.layout, spec.nsp
    x, padding = _padded(spec, x.permute(lay.lhs_perm))
    x, w = _channels_last_memory(nsp, x, w.permute(lay.rhs_perm))
    pads = padding if isinstance(padding, int) else _unit_axis(nsp, padding, 0)
    with _precision_context(plan, x):
        y = getattr(F, f"conv{max(nsp, 2)}d")(x, w, b, _unit_axis(nsp, spec.stride, 1), pads,
                                              _unit_axis(nsp, spec.dilation, 1), spec.groups)
    return (y.squeeze(2) if nsp == 1 else y).permute(inverse(lay.out_perm))


def _conv_transpose(spec: ConvTransposeSpec, plan: Plan, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None,
                    channels_last: bool) -> torch.Tensor:
    """F.conv_transposeNd with padding min(lo, hi) per dim; the rest of an asymmetric crop afterwards."""
    lay, nsp = spec.layout, spec.nsp
    x = x.permute(lay.lhs_perm)
    perm = lay.rhs_perm
    w = w.permute(perm[1], perm[0], *perm[2:])
    if spec.kernel_flipped:
        w = w.flip(tuple(range(2, 2 + nsp)))
    pad = [max(0, min(lo, hi)) for lo, hi in spec.padding]
    rest = tuple((lo - p, hi - p) for (lo, hi), p in zip(spec.padding, pad))
    inner_bias = all(lo >= 0 and hi >= 0 for lo, hi in rest)  # else zero rows are added after torch's bias
    args: tuple[Sequence[int], ...] = (spec.stride, pad, spec.output_padding, spec.dilation)
    if channels_last:
        x, w = _channels_last_memory(nsp, x, w)
        args = tuple(_unit_axis(nsp, a, fill) for a, fill in zip(args, (1, 0, 0, 1)))
    stride, padding, output_padding, dilation = args
    fn = getattr(F, f"conv_transpose{x.dim() - 2}d")
    with _precision_context(plan, x):
        y = fn(x, w, b if inner_bias else None, stride, padding, output_padding, spec.groups, dilation)
    y = _crop(y.squeeze(2) if channels_last and nsp == 1 else y, rest)
    if b is not None and not inner_bias:
        y = y + b.view(1, -1, *([1] * nsp))
    return y.permute(inverse(lay.out_perm))


def conv_transpose(spec: ConvTransposeSpec, plan: Plan, x: torch.Tensor, w: torch.Tensor,
                   b: torch.Tensor | None) -> torch.Tensor:
    """F.conv_transposeNd with padding min(lo, hi) per dim; the rest of an asymmetric crop afterwards."""
    return _conv_transpose(spec, plan, x, w, b, channels_last=False)


def conv_transpose_channels_last(spec: ConvTransposeSpec, plan: Plan, x: torch.Tensor, w: torch.Tensor,
                                 b: torch.Tensor | None) -> torch.Tensor:
    """As :func:`conv_transpose`, on input and kernel in channels-last memory (1-d as 2-d over a unit axis); the
    input's copy (unless the user's layout keeps channels innermost) is part of the call."""
    return _conv_transpose(spec, plan, x, w, b, channels_last=True)


# torch's own im2col/col2im, by number of spatial dims (it ships them for 4-D input only); other ranks
# take the rank-generic path below, which gives the same bits (tests/test_unfold.py pins it).
_NATIVE_UNFOLD = {2: F.unfold}
_NATIVE_FOLD = {2: F.fold}


def unfold(spec: UnfoldSpec, plan: Plan, x: torch.Tensor) -> torch.Tensor:
    """``F.unfold`` for 2-d, :func:`unfold_generic` otherwise."""
    xp = _pad(x.permute(spec.layout.lhs_perm), spec.padding)
    native = _NATIVE_UNFOLD.get(spec.nsp)
    return native(xp, spec.kernel_spatial, spec.dilation, 0, spec.stride) if native else unfold_generic(xp, spec)


def unfold_generic(xp: torch.Tensor, spec: UnfoldSpec) -> torch.Tensor:
    """(N, C, *S_pad) -> (N, C * prod(k), L) with Tensor.unfold per spatial axis, then dilated taps."""
    nsp, v = spec.nsp, xp
    for i, a in enumerate(spec.axes):
        v = v.unfold(2 + i, a.span, a.stride)
    taps: tuple[Any, ...] = (Ellipsis, *[slice(None, None, d) for d in spec.dilation])
    v = v[taps]
    v = v.permute(0, 1, *range(2 + nsp, 2 + 2 * nsp), *range(2, 2 + nsp))
    return v.reshape(xp.shape[0], spec.channels * math.prod(spec.kernel_spatial), math.prod(spec.out_spatial))


def fold(spec: FoldSpec, plan: Plan, cols: torch.Tensor) -> torch.Tensor:
    """``F.fold`` for 2-d, :func:`fold_generic` otherwise; then the padding is cropped."""
    padded = tuple(a.padded for a in spec.axes)
    native = _NATIVE_FOLD.get(spec.nsp)
    y = native(cols, padded, spec.kernel_spatial, spec.dilation, 0, spec.stride) if native else \
        fold_generic(cols, spec)
    return _crop(y, spec.padding)


def fold_generic(cc: torch.Tensor, spec: FoldSpec) -> torch.Tensor:
    """Add every tap's blocks into a zero (N, C, *S_pad) tensor through strided slices."""
    blocks = cc.reshape(cc.shape[0], spec.channels, *spec.kernel_spatial, *spec.blocks)
    y = cc.new_zeros((cc.shape[0], spec.channels, *(a.padded for a in spec.axes)))
    for tap in np.ndindex(*spec.kernel_spatial):
        idx: tuple[Any, ...] = tuple(slice(t * a.dilation, t * a.dilation + a.stride * a.out, a.stride)
                                     for t, a in zip(tap, spec.axes))
        y[(slice(None), slice(None), *idx)] += blocks[(slice(None), slice(None), *tap)]
    return y


def _channels_last_copy(spec: ConvSpec | ConvTransposeSpec) -> bool:
    """Whether the channels-last algorithms copy the input: the user's layout does not keep channels innermost,
    or a padding is materialised first (plain loops: torch.compile traces the cost models)."""
    perm = spec.layout.lhs_perm
    copy = perm[1] != max(perm)
    if isinstance(spec, ConvSpec):
        copy = copy or spec.padding_mode != "zeros"
        for lo, hi in spec.padding:
            copy = copy or lo != hi
    return copy


#: Bytes per element by dtype name, for the cost model's copies.
_ITEMSIZE = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8, "complex64": 8, "complex128": 16}


def channels_last_cost(spec: Spec, plan: Plan) -> float:
    """Estimated seconds of the channels-last algorithms: the input's copy into channels-last memory (when the
    user's layout is not) over ``costs.BANDWIDTH``, then oneDNN's channels-last rate: ``costs.DEPTHWISE[torch,
    channels-last]`` for a depthwise convolution, the dense GEMM-bound rate otherwise; a complex multiply-add is
    four real ones (``costs.flops``).

    >>> from convbridge.spec import make_conv_spec
    >>> s = make_conv_spec((4, 128, 56, 56), (128, 1, 31, 31), padding=15, groups=128, dtypes=("float32", "float32"))
    >>> 5e-3 < channels_last_cost(s, Plan("torch", "channels_last")) < 3e-2
    True
    """
    s = cast(ConvSpec | ConvTransposeSpec, spec)
    size = _ITEMSIZE.get(str(s.dtype), 4)
    copy = 0.0
    if _channels_last_copy(s):
        copy = 2.0 * s.batch * s.in_channels * math.prod(s.in_spatial) * size / costs.BANDWIDTH
    if s.in_channels == s.groups and s.groups > 1:
        rate = costs.DEPTHWISE[("torch", True)] / (2.0 if s.dtype in ("float64", "complex128") else 1.0)
    else:
        rate = costs.gemm_rate(s, costs.PEAK[("torch", "native")])
    return costs.OVERHEAD["torch"] + copy + costs.flops(s) / rate


register(Impl("conv", NAME, "native", conv, _three_spatial_dims, "F.conv1d/2d/3d", cost=costs.native))
register(Impl("conv", NAME, "channels_last", conv_channels_last, _three_spatial_dims,
              "F.conv2d/3d in channels-last memory (1-d as 2-d), the layout copy included", cost=channels_last_cost))
register(Impl("conv_transpose", NAME, "native", conv_transpose, _three_spatial_dims,
              "F.conv_transpose1d/2d/3d", cost=costs.native))
register(Impl("conv_transpose", NAME, "channels_last", conv_transpose_channels_last, _three_spatial_dims,
              "F.conv_transpose2d/3d in channels-last memory (1-d as 2-d), the layout copy included",
              cost=channels_last_cost))
register(Impl("unfold", NAME, "native", unfold, summary="F.unfold (2-d) or Tensor.unfold views"))
register(Impl("fold", NAME, "native", fold, summary="F.fold (2-d) or strided slice-adds"))


def astype(a: torch.Tensor, dtype: str) -> torch.Tensor:
    return a.to(getattr(torch, dtype))
