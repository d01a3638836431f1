"""PyTorch backend: ``F.conv1d/2d/3d`` and ``F.conv_transpose1d/2d/3d`` on permuted views; autograd flows through.

unfold/fold use ``F.unfold``/``F.fold`` where torch has them (4-D input, i.e. 2-d), and rank-generic
``Tensor.unfold`` views and strided slice-adds for the other ranks.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
import torch.nn.functional as F

from convbridge.errors import ArgumentError
from convbridge.layout import inverse
from convbridge.padding import gather_indices
from convbridge.parity import Precision, unit_roundoff
from convbridge.spec import ConvSpec

NAME = "torch"


def asarray(a, device=None):
    """Any array -> torch tensor of the same dtype (numpy/jax arrays are copied to host memory)."""
    if a is None or isinstance(a, torch.Tensor):
        return a
    arr = np.array(a, copy=True)
    if arr.dtype.name == "bfloat16":
        return torch.from_numpy(arr.astype(np.float32)).to(torch.bfloat16)
    return torch.from_numpy(arr)


def to_numpy(a) -> np.ndarray:
    a = a.detach().cpu()
    return a.float().numpy() if a.dtype == torch.bfloat16 else a.numpy()


_TORCH_OPS = {"conv": "convolution (conv1d..conv3d only)",
              "conv_transpose": "transposed convolution (conv_transpose1d..conv_transpose3d only)"}


def check(spec) -> None:
    """Refuse convolutions torch has no function for (more than 3 spatial dims)."""
    if spec.op in _TORCH_OPS and spec.nsp > 3:
        raise ArgumentError(f"torch has no {spec.nsp}-d {_TORCH_OPS[spec.op]}; use backend='jax' or 'numpy'")


def _allow_tf32(spec: ConvSpec) -> bool:
    return spec.precision != "highest"


def precision(spec: ConvSpec, x=None) -> Precision:
    """CPU computes in the dtype; CUDA float32 uses TF32 inputs unless precision='highest'."""
    device = "cpu" if x is None else str(x.device)
    u = unit_roundoff(spec.dtype)
    if device.startswith("cuda") and spec.dtype == "float32" and _allow_tf32(spec):
        return Precision(u, 2.0**-11, f"TF32 inputs, float32 accumulation, {device}")
    return Precision(u, 0.0, f"{spec.dtype} (IEEE), precision={spec.precision}, {device}")


def _precision_context(spec: ConvSpec, x):
    if not x.is_cuda:
        return contextlib.nullcontext()
    cudnn = torch.backends.cudnn
    return cudnn.flags(enabled=cudnn.enabled, benchmark=cudnn.benchmark,
                       deterministic=cudnn.deterministic, allow_tf32=_allow_tf32(spec))


def conv(spec: ConvSpec, x, w, b):
    check(spec)
    lay = spec.layout
    w = w.to(x.device)
    b = None if b is None else b.to(x.device)
    if not lay.batched:
        x = x[None]
    x, w = x.permute(lay.lhs_perm), w.permute(lay.rhs_perm)
    pads = spec.padding
    if spec.padding_mode != "zeros":
        for i, (n, (lo, hi)) in enumerate(zip(spec.in_spatial, spec.padding)):
            idx = torch.from_numpy(gather_indices(n, lo, hi, spec.padding_mode)).to(x.device)
            x = torch.index_select(x, 2 + i, idx)
        pads = ((0, 0),) * spec.nsp
    if all(lo == hi for lo, hi in pads):
        padding = tuple(lo for lo, _ in pads)
    else:
        x = F.pad(x, [p for pair in reversed(pads) for p in pair])
        padding = 0
    fn = getattr(F, f"conv{spec.nsp}d")
    with _precision_context(spec, x):
        y = fn(x, w, b, spec.stride, padding, spec.dilation, spec.groups)
    y = y.permute(inverse(lay.out_perm))
    return y if lay.batched else y[0]


def _bias_view(b, nsp: int):
    return b.view(1, -1, *([1] * nsp))


def _pad(y, pairs):
    """Zero-pad the trailing spatial axes by ``(lo, hi)``; negative widths crop (F.pad semantics)."""
    if not any(lo or hi for lo, hi in pairs):
        return y
    return F.pad(y, [v for pair in reversed(pairs) for v in pair])


def _crop(y, cuts):
    return _pad(y, [(-lo, -hi) for lo, hi in cuts])


def conv_transpose(spec, x, w, b):
    """F.conv_transposeNd with padding min(lo, hi) per dim; the rest of an asymmetric crop afterwards."""
    check(spec)
    lay, nsp = spec.layout, spec.nsp
    w = w.to(x.device)
    b = None if b is None else b.to(x.device)
    x = (x if lay.batched else x[None]).permute(lay.lhs_perm)
    perm = lay.rhs_perm
    w = w.permute(perm[1], perm[0], *perm[2:])
    if spec.kernel_flipped:
        w = w.flip(tuple(range(2, 2 + nsp)))
    pad = [max(0, min(lo, hi)) for lo, hi in spec.padding]
    rest = [(lo - p, hi - p) for (lo, hi), p in zip(spec.padding, pad)]
    inner_bias = all(lo >= 0 and hi >= 0 for lo, hi in rest)  # else zero rows are added after torch's bias
    fn = getattr(F, f"conv_transpose{nsp}d")
    with _precision_context(spec, x):
        y = fn(x, w, b if inner_bias else None, spec.stride, pad, spec.output_padding, spec.groups, spec.dilation)
    y = _crop(y, rest)
    if b is not None and not inner_bias:
        y = y + _bias_view(b, nsp)
    y = y.permute(inverse(lay.out_perm))
    return y if lay.batched else y[0]


# torch's own im2col/col2im, by number of spatial dims (it ships them for 4-D input only); other ranks
# take the rank-generic path below, which gives the same bits (tests/test_unfold.py pins it).
_NATIVE_UNFOLD = {2: F.unfold}
_NATIVE_FOLD = {2: F.fold}


def unfold(spec, x):
    lay, nsp = spec.layout, spec.nsp
    xc = (x if lay.batched else x[None]).permute(lay.lhs_perm)
    xp = _pad(xc, spec.padding)
    native = _NATIVE_UNFOLD.get(nsp)
    cols = native(xp, spec.kernel_spatial, spec.dilation, 0, spec.stride) if native else unfold_generic(xp, spec)
    return cols if lay.batched else cols[0]


def unfold_generic(xp, spec):
    """(N, C, *S_pad) -> (N, C * prod(k), L) with Tensor.unfold per spatial axis, then dilated taps."""
    nsp, v = spec.nsp, xp
    for i, (k, d, s) in enumerate(zip(spec.kernel_spatial, spec.dilation, spec.stride)):
        v = v.unfold(2 + i, d * (k - 1) + 1, s)
    v = v[(Ellipsis, *[slice(None, None, d) for d in spec.dilation])]
    v = v.permute(0, 1, *range(2 + nsp, 2 + 2 * nsp), *range(2, 2 + nsp))
    return v.reshape(xp.shape[0], spec.channels * math.prod(spec.kernel_spatial), math.prod(spec.out_spatial))


def fold(spec, cols):
    cc = cols if spec.layout.batched else cols[None]
    padded = [n + lo + hi for n, (lo, hi) in zip(spec.out_spatial, spec.padding)]
    native = _NATIVE_FOLD.get(spec.nsp)
    y = native(cc, padded, spec.kernel_spatial, spec.dilation, 0, spec.stride) if native else \
        fold_generic(cc, spec, padded)
    y = _crop(y, spec.padding)
    return y if spec.layout.batched else y[0]


def fold_generic(cc, spec, padded):
    """Add every tap's blocks into a zero (N, C, *S_pad) tensor through strided slices."""
    blocks = cc.reshape(cc.shape[0], spec.channels, *spec.kernel_spatial, *spec.blocks)
    y = cc.new_zeros((cc.shape[0], spec.channels, *padded))
    for tap in np.ndindex(*spec.kernel_spatial):
        idx = tuple(slice(t * d, t * d + s * (n - 1) + 1, s)
                    for t, d, s, n in zip(tap, spec.dilation, spec.stride, spec.blocks))
        y[(slice(None), slice(None), *idx)] += blocks[(slice(None), slice(None), *tap)]
    return y
