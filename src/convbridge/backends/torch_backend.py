"""PyTorch backend: ``F.conv1d/2d/3d`` on permuted views; autograd flows through."""

from __future__ import annotations

import contextlib

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


def check(spec: ConvSpec) -> None:
    if spec.nsp > 3:
        raise ArgumentError(
            f"torch has no {spec.nsp}-d convolution (conv1d..conv3d only); use backend='jax' or 'numpy'"
        )


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
