"""The two transposed-convolution conventions, and the exact mapping between them.

PyTorch's ``conv_transpose`` is the gradient of ``conv``; ``lax.conv_transpose`` is
a convolution over the stride-dilated input. The same op, stated two ways, differs
in three places (PITFALLS traps 2 and 3):

- **kernel**: torch's ``W`` is ``(C_in, C_out, *k)``. lax reads its kernel as a conv
  kernel (``I`` = x's channels, ``O`` = the result's) and does not flip it, so lax's
  kernel is ``W`` flipped in every spatial axis. With ``transpose_kernel=True`` lax
  flips and swaps ``I``/``O`` itself, so its kernel is ``W`` unflipped, with the axis
  its layout calls ``O`` holding x's channels.
- **padding**: torch crops ``(lo, hi)`` from the full output and adds
  ``output_padding`` rows on the high side; lax pads the stride-dilated input by
  ``(a, b)``. Per dim, with ``D = dilation * (k - 1)``: ``a = D - lo`` and
  ``b = D - hi + output_padding``. lax's ``'SAME'``/``'VALID'`` are turned into pairs
  by jax's ``_conv_transpose_padding`` (see :func:`convbridge.spec.geometry.lax_transpose_padding`).
- **groups**: lax.conv_transpose has none.

:func:`torch_to_jax` and :func:`jax_to_torch` return a :class:`TransposeCall`: the
kernel (a NumPy array) and the arguments in the other convention, for
``cb.conv_transpose(x, call.kernel, **call.kwargs)``, for ``lax.conv_transpose``
(:meth:`TransposeCall.lax_kwargs`) or for ``F.conv_transposeNd``
(:meth:`TransposeCall.torch_kwargs`). A lax padding that adds zero rows beyond the
kernel's reach (``a > D``), or more than ``max(stride, dilation) - 1`` on the high side,
has no torch equivalent and raises.

>>> import numpy as np
>>> w = np.arange(6.0).reshape(1, 2, 3)  # torch: C_in 1, C_out 2, k 3
>>> call = torch_to_jax(w, stride=2, padding=1, output_padding=1)
>>> call.lax_kwargs()  # doctest: +NORMALIZE_WHITESPACE
{'strides': (2,), 'padding': ((1, 2),), 'rhs_dilation': (1,),
 'dimension_numbers': ('NCW', 'WIO', 'NCW'), 'transpose_kernel': False}
>>> call.kernel[:, 0, 0].tolist()  # lax's kernel is torch's flipped, in WIO order
[2.0, 1.0, 0.0]
>>> back = jax_to_torch(call.kernel, **call.lax_kwargs())
>>> bool(np.array_equal(back.kernel, w)), back.padding, back.output_padding
(True, ((1, 1),), (1,))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from convbridge import frameworks
from convbridge._args import as_int, per_dim
from convbridge._types import ArrayLike, IntOrInts, LayoutLike, PaddingLike, Pairs
from convbridge.arrays import to_numpy
from convbridge.errors import ArgumentError, PaddingError, ShapeError
from convbridge.spec import Layout, TransposeAxis, resolve_transpose_layout
from convbridge.spec.transpose import lax_axes, torch_axes

__all__ = ["TransposeCall", "torch_to_jax", "jax_to_torch"]


@dataclass(frozen=True)
class TransposeCall:
    """One transposed convolution stated in one convention.

    Attributes:
        convention: ``"torch"`` or ``"jax"``.
        kernel: the kernel, a NumPy array in the order of ``layout[1]``.
        stride, dilation: per spatial dim.
        padding: per-dim pairs: torch's crops ``(lo, hi)``, or lax's input paddings ``(a, b)``.
        output_padding: per dim (all 0 in the jax convention).
        layout: ``(input, kernel, output)`` layout strings, with N.
        transpose_kernel: lax's flag (always False in the torch convention).
    """

    convention: str
    kernel: np.ndarray
    stride: tuple[int, ...]
    padding: Pairs
    output_padding: tuple[int, ...]
    dilation: tuple[int, ...]
    layout: tuple[str, str, str]
    transpose_kernel: bool = False

    def __repr__(self) -> str:
        return (f"TransposeCall(convention={self.convention!r}, kernel=<{self.kernel.dtype} array "
                f"{self.kernel.shape}>, stride={self.stride}, padding={self.padding}, "
                f"output_padding={self.output_padding}, dilation={self.dilation}, layout={self.layout}, "
                f"transpose_kernel={self.transpose_kernel})")

    @property
    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`convbridge.conv_transpose` (pass ``kernel`` positionally)."""
        common = dict(convention=self.convention, stride=self.stride, padding=self.padding,
                      dilation=self.dilation, layout=self.layout)
        if self.convention == "jax":
            return common | dict(transpose_kernel=self.transpose_kernel)
        return common | dict(output_padding=self.output_padding)

    def lax_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``jax.lax.conv_transpose(x, kernel, **kw)`` (jax convention only)."""
        if self.convention != "jax":
            raise ArgumentError("lax_kwargs() needs a jax-convention call; convert it first with torch_to_jax")
        return dict(strides=self.stride, padding=self.padding, rhs_dilation=self.dilation,
                     dimension_numbers=self.layout, transpose_kernel=self.transpose_kernel)

    def torch_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``F.conv_transposeNd(x, torch.from_numpy(kernel), **kw)`` (torch convention).

        Raises:
            ArgumentError: jax convention, asymmetric padding, or a layout other than channels-first
                (then use ``cb.conv_transpose(x, call.kernel, **call.kwargs)``).
        """
        lhs, rhs, out = self.layout
        sp, torch = lhs[2:], frameworks.TORCH
        if self.convention != "torch" or lhs != torch.input_layout(sp) or rhs != torch.transpose_layout(sp) \
                or out != lhs:
            raise ArgumentError(f"F.conv_transposeNd takes channels-first (NC..., IO...) torch-convention "
                                f"arguments; this call is {self.convention} with layout {self.layout}: use "
                                "cb.conv_transpose(x, call.kernel, **call.kwargs)")
        if any(lo != hi for lo, hi in self.padding):
            raise ArgumentError(f"F.conv_transposeNd crops symmetrically but padding is {self.padding}; use "
                                "cb.conv_transpose(x, call.kernel, **call.kwargs), which crops per side")
        return dict(stride=self.stride, padding=tuple(lo for lo, _ in self.padding),
                    output_padding=self.output_padding, dilation=self.dilation, groups=1)


def _layout(layout: LayoutLike, w_ndim: int, convention: str, transpose_kernel: bool) -> Layout:
    try:
        return resolve_transpose_layout(layout, w_ndim, w_ndim, convention, transpose_kernel)
    except ShapeError:  # an unbatched layout string, e.g. 'CHW'
        return resolve_transpose_layout(layout, w_ndim - 1, w_ndim, convention, transpose_kernel)


def torch_to_jax(kernel: ArrayLike, *, stride: IntOrInts = 1, padding: PaddingLike = 0,
                 output_padding: IntOrInts = 0, dilation: IntOrInts = 1, groups: int = 1, layout: LayoutLike = None,
                 transpose_kernel: bool = False) -> TransposeCall:
    """State a torch-convention transposed convolution as ``lax.conv_transpose`` arguments.

    Args:
        kernel: torch's kernel, ``(C_in, C_out, *k)`` by default (any framework).
        stride, padding, output_padding, dilation, layout: as for :func:`convbridge.conv_transpose`
            with ``convention="torch"`` (``output_size``: resolve it to ``output_padding`` first).
        groups: must be 1 (lax.conv_transpose has no groups).
        transpose_kernel: which lax form to produce (the kernel changes, the op does not).

    Returns:
        A jax-convention :class:`TransposeCall`; its kernel uses lax's default letters
        (spatial, then ``IO``), its input and output layouts are the torch call's.

    Shape:
        kernel (C_in, C_out, *k) -> (*k, C_in, C_out), or (*k, C_out, C_in) with transpose_kernel.

    >>> torch_to_jax(np.ones((4, 2, 3, 3)), stride=2, padding="same").padding
    ((2, 1), (2, 1))
    """
    if as_int(groups, "groups") != 1:
        raise ArgumentError(f"groups={groups}: lax.conv_transpose has no groups, so no jax-convention call "
                            "equals this one; keep convention='torch' (cb.conv_transpose runs it on jax too)")
    w = to_numpy(kernel)
    lay = _layout(layout, w.ndim, "torch", False)
    nsp, perm = w.ndim - 2, lay.rhs_perm
    wt = w.transpose((perm[1], perm[0], *perm[2:]))  # (C_in, C_out, *k)
    stride_ = per_dim(stride, "stride", nsp, minimum=1)
    dilation_ = per_dim(dilation, "dilation", nsp, minimum=1)
    axes = torch_axes(padding, output_padding, None, (1,) * nsp, wt.shape[2:], stride_, dilation_,
                      letters=lay.spatial)
    lax_pads = tuple(a.lax_padding for a in axes)
    spatial_axes = tuple(range(2, 2 + nsp))
    if transpose_kernel:
        arr = wt.transpose((*spatial_axes, 1, 0))
    else:
        arr = np.flip(wt, axis=spatial_axes).transpose((*spatial_axes, 0, 1))
    dims = (lay.lhs, frameworks.LAX.transpose_layout("".join(lay.spatial)), lay.out)
    return TransposeCall("jax", np.ascontiguousarray(arr), stride_, lax_pads, (0,) * nsp, dilation_, dims,
                         bool(transpose_kernel))


def jax_to_torch(kernel: ArrayLike, *, strides: IntOrInts, padding: PaddingLike,
                 rhs_dilation: IntOrInts | None = None, dimension_numbers: LayoutLike = None,
                 transpose_kernel: bool = False) -> TransposeCall:
    """State a ``lax.conv_transpose`` call in torch's convention (the gradient-of-conv meaning).

    Args:
        kernel, strides, padding, rhs_dilation, dimension_numbers, transpose_kernel: exactly as
            passed to ``lax.conv_transpose`` (``dimension_numbers=None`` is lax's channels-last default).

    Returns:
        A torch-convention :class:`TransposeCall`: kernel ``(C_in, C_out, *k)`` (torch's
        ConvTranspose weight), crops ``(lo, hi)`` and ``output_padding``, symmetric whenever
        ``F.conv_transposeNd`` can express the crops.

    Raises:
        PaddingError: the lax padding has no torch equivalent (zero rows before the first
            output the kernel reaches, or too many after the last).

    Shape:
        kernel (*k, C_in, C_out) in lax's HWIO -> (C_in, C_out, *k).

    lax's ``'SAME'`` with k 3 and stride 2 crops ``(0, 1)``; torch's habitual ``padding=1,
    output_padding=1`` crops ``(1, 0)``: the same size, shifted by one pixel.

    >>> call = jax_to_torch(np.ones((3, 3, 4, 2)), strides=(2, 2), padding="SAME")
    >>> call.kernel.shape, call.padding, call.output_padding
    ((4, 2, 3, 3), ((0, 1), (0, 1)), (0, 0))
    """
    w = to_numpy(kernel)
    nsp = w.ndim - 2
    lay = _layout(dimension_numbers, w.ndim, "jax", bool(transpose_kernel))
    stride = per_dim(strides, "strides", nsp, minimum=1)
    dilation = per_dim(1 if rhs_dilation is None else rhs_dilation, "rhs_dilation", nsp, minimum=1)
    perm = lay.rhs_perm
    wt = w.transpose((perm[1], perm[0], *perm[2:]))
    if not transpose_kernel:
        wt = np.flip(wt, axis=tuple(range(2, 2 + nsp)))
    axes = lax_axes(padding, (1,) * nsp, wt.shape[2:], stride, dilation)
    pads, out_pad = zip(*(_torch_side(a, letter) for a, letter in zip(axes, lay.spatial)))
    dims = (lay.lhs, frameworks.TORCH.transpose_layout("".join(lay.spatial)), lay.out)
    return TransposeCall("torch", np.ascontiguousarray(wt), stride, tuple(pads), tuple(out_pad), dilation, dims)


def torch_crops(lo: int, hi_eff: int, room: int) -> tuple[tuple[int, int], int] | None:
    """torch's ``((lo, hi), output_padding)`` cropping ``lo`` and ``hi_eff`` (negative: adding rows) from the full
    output, symmetric when possible; None when torch's rule ``output_padding < room`` cannot reach it.

    >>> torch_crops(1, 0, 2), torch_crops(1, 2, 2), torch_crops(0, -1, 2), torch_crops(0, -2, 2)
    (((1, 1), 1), ((1, 2), 0), ((0, 0), 1), None)
    """
    if lo >= 0 and 0 <= lo - hi_eff < room:
        return (lo, lo), lo - hi_eff
    if lo >= 0 and hi_eff >= 0:
        return (lo, hi_eff), 0
    if lo >= 0 and -hi_eff < room:
        return (lo, 0), -hi_eff
    return None


def _torch_side(axis: TransposeAxis, letter: str) -> tuple[tuple[int, int], int]:
    """torch's ``((lo, hi), output_padding)`` for the axis' crops ``(lo, hi - output_padding)``; symmetric when
    possible."""
    lo, hi_eff = axis.crops
    room, s, d = axis.room, axis.stride, axis.dilation
    if lo < 0:
        raise PaddingError(f"this lax padding adds {-lo} zero rows before the first output the kernel reaches on "
                           f"axis {letter}; torch's padding only crops, so no torch call equals it: keep "
                           "convention='jax' or pad the result yourself")
    found = torch_crops(lo, hi_eff, room)
    if found is not None:
        return found
    raise PaddingError(f"this lax padding adds {-hi_eff} rows after the full output on axis {letter}, but torch's "
                       f"output_padding must be < max(stride {s}, dilation {d}) = {room}; no torch call equals it: "
                       "keep convention='jax' or pad the result yourself")
