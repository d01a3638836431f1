"""JAX backend: ``lax.conv_general_dilated`` with the spec's permutations as dimension numbers.

conv is one ``conv_general_dilated``; conv_transpose is another over the input
dilated by the stride (``lhs_dilation``), with the kernel regrouped and flipped;
unfold gathers strided slices and fold adds them back (JAX has neither op).
Works under ``jax.jit``, ``jax.grad`` and ``jax.vmap``: it only reads static
shapes from the spec and calls lax.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from convbridge.errors import DTypeError
from convbridge.padding import gather_indices
from convbridge.parity import Precision, unit_roundoff
from convbridge.spec import ConvSpec

NAME = "jax"
_LAX_PRECISION = {"highest": lax.Precision.HIGHEST, "high": lax.Precision.HIGH, "default": lax.Precision.DEFAULT}


def asarray(a):
    """Any array -> jax array of the same dtype (torch tensors go through host memory)."""
    if a is None or isinstance(a, jax.Array):
        return a
    if type(a).__module__.startswith("torch"):
        from convbridge.backends.torch_backend import to_numpy as torch_to_numpy

        a = torch_to_numpy(a)
    return jnp.asarray(a)


def to_numpy(a) -> np.ndarray:
    return np.asarray(a)


def check(spec: ConvSpec) -> None:
    """Reject float64 when JAX's x64 mode is off (it would silently compute in float32)."""
    if spec.dtype == "float64" and not jax.config.jax_enable_x64:
        raise DTypeError(
            "float64 input on the jax backend, but JAX's x64 mode is off and would silently use float32; "
            "enable it with jax.config.update('jax_enable_x64', True) or JAX_ENABLE_X64=1, or cast to float32"
        )


def precision(spec: ConvSpec, x=None) -> Precision:
    """Model of what XLA uses: CPU computes in the dtype; GPUs use TF32 and TPUs bf16 passes below 'highest'."""
    platform = jax.default_backend()
    u = unit_roundoff(spec.dtype)
    if spec.dtype != "float32" or spec.precision == "highest" or platform == "cpu":
        return Precision(u, 0.0, f"{spec.dtype} (IEEE), precision={spec.precision}, {platform}")
    if platform == "tpu":
        u_in, name = (2.0**-8, "bf16 passes") if spec.precision == "default" else (2.0**-16, "bf16x3 passes")
    else:
        u_in, name = 2.0**-11, "TF32 inputs"
    return Precision(u, u_in, f"{name}, float32 accumulation, precision={spec.precision}, {platform}")


def _conv(spec: ConvSpec, x, w, b):
    lay = spec.layout
    if not lay.batched:
        x = x[None]
    pads = spec.padding
    if spec.padding_mode != "zeros":
        for i, (n, (lo, hi)) in enumerate(zip(spec.in_spatial, spec.padding)):
            idx = gather_indices(n, lo, hi, spec.padding_mode)
            x = jnp.take(x, idx, axis=lay.lhs_perm[2 + i])
        pads = ((0, 0),) * spec.nsp
    dn = lax.ConvDimensionNumbers(lay.lhs_perm, lay.rhs_perm, lay.out_perm)
    y = lax.conv_general_dilated(
        x, w, spec.stride, pads, rhs_dilation=spec.dilation, dimension_numbers=dn,
        feature_group_count=spec.groups, precision=_LAX_PRECISION[spec.precision],
    )
    y = _add_bias(y, b, lay.out_perm[1])
    return y if lay.batched else y[0]


def _add_bias(y, b, axis: int):
    if b is None:
        return y
    shape = [1] * y.ndim
    shape[axis] = -1
    return y + b.reshape(shape)


def _transpose_kernel(spec, w):
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


def _crop(y, cuts, perm):
    """Remove ``(lo, hi)`` entries from the axes ``perm[2:]`` (the canonical spatial axes)."""
    idx = [slice(None)] * y.ndim
    for i, (lo, hi) in enumerate(cuts):
        ax = perm[2 + i]
        idx[ax] = slice(lo, y.shape[ax] - hi)
    return y[tuple(idx)]


def _compiled(fn):
    """One XLA program per (spec, shapes): the frozen spec is a static argument (eager dispatch would compile
    every small op separately). Still composes with an outer jit, grad and vmap."""
    jitted = jax.jit(fn, static_argnums=0)
    jitted.__doc__ = fn.__doc__
    return jitted


def _conv_transpose(spec, x, w, b):
    """Padding per side d(k-1) - lo and d(k-1) - hi + output_padding; negative widths are crops instead."""
    lay, nsp = spec.layout, spec.nsp
    if not lay.batched:
        x = x[None]
    spans = [d * (k - 1) for k, d in zip(spec.kernel_spatial, spec.dilation)]
    want = [(span - lo, span - hi) for span, (lo, hi) in zip(spans, spec.crops)]
    dn = lax.ConvDimensionNumbers(lay.lhs_perm, tuple(range(nsp + 2)), lay.out_perm)
    y = lax.conv_general_dilated(
        x, _transpose_kernel(spec, w), (1,) * nsp, [(max(a, 0), max(c, 0)) for a, c in want],
        lhs_dilation=spec.stride, rhs_dilation=spec.dilation, dimension_numbers=dn,
        feature_group_count=spec.groups, precision=_LAX_PRECISION[spec.precision],
    )
    y = _crop(y, [(max(-a, 0), max(-c, 0)) for a, c in want], lay.out_perm)
    y = _add_bias(y, b, lay.out_perm[1])
    return y if lay.batched else y[0]


def _block_index(spec, padded, blocks) -> np.ndarray:
    """``(K, L)`` flat indices into the padded spatial axes: tap ``t`` of block ``l`` (both row-major) reads
    padded position ``p(l) * stride + t * dilation``. Static (NumPy), so unfold is one gather, fold one scatter-add.

    >>> from convbridge.spec_unfold import make_unfold_spec
    >>> _block_index(make_unfold_spec((1, 1, 5), (2,), stride=3), (5,), (2,)).tolist()
    [[0, 3], [1, 4]]
    """
    nsp = spec.nsp
    axes = []
    for i, (k, d, s, b) in enumerate(zip(spec.kernel_spatial, spec.dilation, spec.stride, blocks)):
        tap = np.arange(k).reshape([k if j == i else 1 for j in range(nsp)] + [1] * nsp)
        pos = np.arange(b).reshape([1] * nsp + [b if j == i else 1 for j in range(nsp)])
        axes.append(tap * d + pos * s)
    flat = np.ravel_multi_index(np.broadcast_arrays(*axes), padded)
    return flat.reshape(math.prod(spec.kernel_spatial), math.prod(blocks))


def _unfold(spec, x):
    """Zero-pad, then one gather of every (tap, block) pair: exact, jit/grad/vmap safe."""
    lay = spec.layout
    xc = jnp.transpose(x if lay.batched else x[None], lay.lhs_perm)
    xp = jnp.pad(xc, [(0, 0), (0, 0), *spec.padding])
    n, taps = xc.shape[0], math.prod(spec.kernel_spatial)
    index = _block_index(spec, xp.shape[2:], spec.out_spatial)
    cols = xp.reshape(n, spec.channels, math.prod(xp.shape[2:]))[:, :, index]
    cols = cols.reshape(n, spec.channels * taps, math.prod(spec.out_spatial))
    return cols if lay.batched else cols[0]


def _fold(spec, cols):
    """One scatter-add of every (tap, block) pair into the zero-padded output, then crop the padding."""
    cc = cols if spec.layout.batched else cols[None]
    n, taps = cc.shape[0], math.prod(spec.kernel_spatial)
    padded = [size + lo + hi for size, (lo, hi) in zip(spec.out_spatial, spec.padding)]
    blocks = cc.reshape(n, spec.channels, taps, math.prod(spec.blocks))
    y = jnp.zeros((n, spec.channels, math.prod(padded)), dtype=cc.dtype)
    y = y.at[:, :, _block_index(spec, padded, spec.blocks)].add(blocks).reshape(n, spec.channels, *padded)
    y = _crop(y, spec.padding, tuple(range(y.ndim)))
    return y if spec.layout.batched else y[0]


conv = _compiled(_conv)
conv_transpose = _compiled(_conv_transpose)
unfold = _compiled(_unfold)
fold = _compiled(_fold)
