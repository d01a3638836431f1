"""ConvSpec: every argument of a convolution parsed, validated and resolved once, framework-free.

Backends never parse user input: they receive a :class:`ConvSpec` whose channel
arithmetic is resolved and whose spatial dims are :class:`~convbridge.spec.geometry.ConvAxis`
objects in canonical order (the order of the input layout's spatial letters).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from convbridge._args import choice, is_seq
from convbridge._types import DTypes, IntOrInts, LayoutLike, PaddingLike, Pairs, Shape
from convbridge.errors import ArgumentError, ShapeError, brief
from convbridge.spec import _parse
from convbridge.spec.geometry import ConvAxis
from convbridge.spec.layout import Layout, default_kernel_layout, resolve_layout
from convbridge.spec.padding import PADDING_MODES, check_mode_widths, parse_padding

if TYPE_CHECKING:
    from convbridge.spec.transpose import ConvTransposeSpec

_S = TypeVar("_S", bound="SpatialSpec")

__all__ = ["SpatialSpec", "ChannelSpec", "ConvSpec", "make_conv_spec"]


class SpatialSpec:
    """What every spec has: a layout, a batch size and one geometry object per spatial dim."""

    op: ClassVar[str]
    layout: Layout
    batch: int
    axes: tuple[Any, ...]
    dtype: str | None

    @property
    def nsp(self) -> int:
        """Number of spatial dims."""
        return len(self.axes)

    @property
    def in_spatial(self) -> Shape:
        """The input's spatial sizes (the axes' sizes)."""
        return tuple(a.size for a in self.axes)

    @property
    def out_spatial(self) -> Shape:
        """The output's spatial sizes (the axes' window positions or outputs)."""
        return tuple(a.out for a in self.axes)

    @property
    def kernel_spatial(self) -> Shape:
        return tuple(a.kernel for a in self.axes)

    @property
    def stride(self) -> Shape:
        return tuple(a.stride for a in self.axes)

    @property
    def dilation(self) -> Shape:
        return tuple(a.dilation for a in self.axes)

    @property
    def padding(self) -> Pairs:
        """Per spatial dim ``(lo, hi)``, resolved."""
        return tuple(a.padding for a in self.axes)

    @property
    def batched_out_shape(self) -> Shape:
        """The output shape with its N axis, whether or not the user's arrays have one."""
        raise NotImplementedError

    def as_batched(self: _S) -> _S:
        """The same op on arrays that have their N axis (what implementations receive)."""
        return self if self.layout.batched else replace(self, layout=self.layout.as_batched())  # type: ignore[type-var]

    @property
    def out_shape(self) -> Shape:
        """The output shape in the user's layout (no N axis for unbatched input)."""
        shape = self.batched_out_shape
        return shape if self.layout.batched else shape[1:]

    def _repr_html_(self) -> str:
        """The spec as HTML tables in a notebook (shapes, channels, then one row per spatial axis); ``repr`` stays
        the plain text elsewhere."""
        from convbridge.spec._html import spec_html

        return spec_html(self)


class ChannelSpec(SpatialSpec):
    """The convolutions: channel arithmetic, a kernel and an optional bias on top of the geometry."""

    in_channels: int
    out_channels: int
    groups: int
    has_bias: bool

    @property
    def terms(self) -> int:
        """K: products summed into one output element, an upper bound (+1 with a bias)."""
        return self.in_channels // self.groups * math.prod(self.kernel_spatial) + int(self.has_bias)

    @property
    def canonical_out_shape(self) -> Shape:
        return (self.batch, self.out_channels, *self.out_spatial)

    @property
    def batched_out_shape(self) -> Shape:
        return self.layout.user_out_shape(self.canonical_out_shape, batched=True)


@dataclass(frozen=True)
class ConvSpec(ChannelSpec):
    """A validated convolution, in canonical order.

    Attributes:
        layout: resolved layouts (with permutations to canonical order).
        batch: N (1 for an unbatched input).
        in_channels, out_channels, groups: channel arithmetic; in_channels = groups x kernel I.
        axes: one :class:`ConvAxis` per spatial dim (sizes, kernel, stride, dilation, resolved padding).
        padding_mode: ``"zeros" | "reflect" | "replicate" | "circular"``.
        has_bias: whether a bias of shape ``(out_channels,)`` is added.
        dtype: dtype name shared by input, kernel and bias (``None`` for shape-only specs).

    >>> spec = make_conv_spec((32, 3, 32, 32), (4, 3, 5, 5))
    >>> spec.out_shape, spec.terms, spec.axes[0].span
    ((32, 4, 28, 28), 75, 5)
    """

    op: ClassVar[str] = "conv"
    layout: Layout
    batch: int
    in_channels: int
    out_channels: int
    groups: int
    axes: tuple[ConvAxis, ...]
    padding_mode: str = "zeros"
    has_bias: bool = False
    dtype: str | None = None

    @property
    def macs(self) -> int:
        """Multiply-accumulates of the direct algorithm."""
        per_out = self.in_channels // self.groups * math.prod(self.kernel_spatial)
        return self.batch * self.out_channels * math.prod(self.out_spatial) * per_out

    def describe(self) -> str:
        """The resolved arguments in words (the report's description line)."""
        pads = ", ".join(f"({lo}, {hi})" for lo, hi in self.padding)
        return (f"{self.nsp}-d, layout {self.layout}, stride {self.stride}, padding [{pads}] {self.padding_mode}, "
                f"dilation {self.dilation}, groups {self.groups}, bias {self.has_bias}")

    def resized(self, in_spatial: Sequence[int], in_channels: int | None = None, out_channels: int | None = None,
                groups: int | None = None) -> ConvSpec:
        """The same stride, padding, dilation and padding mode on one channels-first example of other sizes.

        Raises:
            ConvBridgeError: the padding no longer fits the new sizes (e.g. reflect wider than the input).

        >>> make_conv_spec((8, 3, 32, 32), (4, 3, 5, 5), padding=2).resized((9, 9)).out_shape
        (4, 9, 9)
        """
        if not is_seq(in_spatial) or len(in_spatial) != self.nsp:
            raise ArgumentError(f"resized takes {self.nsp} spatial sizes (one per spatial dim of this "
                                f"{self.nsp}-d convolution), got {brief(in_spatial)}")
        g = self.groups if groups is None else groups
        c_in = self.in_channels if in_channels is None else in_channels
        c_out = self.out_channels if out_channels is None else out_channels
        return make_conv_spec((c_in, *in_spatial), (c_out, c_in // g, *self.kernel_spatial), stride=self.stride,
                              padding=self.padding, dilation=self.dilation, groups=g, padding_mode=self.padding_mode)

    @property
    def kernel_shape(self) -> Shape:
        """The kernel's shape in the spec's kernel layout."""
        sizes = dict(zip(("O", "I", *self.layout.spatial),
                         (self.out_channels, self.in_channels // self.groups, *self.kernel_spatial)))
        return tuple(sizes[c] for c in self.layout.rhs)

    def adjoint(self) -> ConvTransposeSpec:
        """The transposed convolution (torch convention, channels-first) that maps this conv's output back to
        its input's size with the same kernel array: its gradient with respect to the input.

        Raises:
            ArgumentError: a padding mode other than ``"zeros"``: that gradient also adds each padded row back
                onto the row it copies, which no transposed convolution states.

        >>> make_conv_spec((1, 2, 7), (3, 2, 3), stride=2).adjoint().out_shape
        (1, 2, 7)
        """
        from convbridge.spec.transpose import ConvTransposeSpec

        if self.padding_mode != "zeros":
            raise ArgumentError(f"the gradient of a conv with padding_mode={self.padding_mode!r} adds each padded row "
                                "back onto the row it copies; no transposed convolution states it (use "
                                "dataclasses.replace(spec, padding_mode='zeros') for the zero-padded adjoint)")

        sp = "".join(self.layout.spatial)
        lay = Layout("NC" + sp, default_kernel_layout(sp, "conv_transpose"), "NC" + sp, self.layout.batched)
        axes = tuple(a.adjoint() for a in self.axes)
        return ConvTransposeSpec(layout=lay, batch=self.batch, in_channels=self.out_channels,
                                 out_channels=self.in_channels, groups=self.groups, axes=axes, dtype=self.dtype)


def make_conv_spec(
    x_shape: Shape,
    w_shape: Shape,
    b_shape: Shape | None = None,
    *,
    stride: IntOrInts = 1,
    padding: PaddingLike = 0,
    dilation: IntOrInts = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
    layout: LayoutLike = None,
    dtypes: DTypes = (None,),
) -> ConvSpec:
    """Parse and validate convolution arguments into a :class:`ConvSpec`.

    Raises:
        ConvBridgeError: any invalid argument; the subclass says which kind.

    Shape:
        out = floor((n + lo + hi - dilation * (k - 1) - 1) / stride) + 1 per spatial dim.

    >>> make_conv_spec((8, 224, 224, 3), (7, 7, 3, 64), stride=2, padding="same", layout="NHWC").padding
    ((2, 3), (2, 3))
    """
    x_shape, w_shape = _parse.as_shape(x_shape, "input"), _parse.as_shape(w_shape, "kernel")
    lay = resolve_layout(layout, len(x_shape), len(w_shape), "conv")
    xc, wc = _parse.canonical(x_shape, w_shape, lay)
    g = _groups(groups, xc[1], wc[0], wc[1])
    stride_, dilation_ = _parse.strides(stride, dilation, len(lay.spatial))
    mode = choice(padding_mode, "padding_mode", PADDING_MODES)
    axes = _parse.conv_axes(xc[2:], wc[2:], stride_, dilation_, parse_padding(padding, len(lay.spatial)))
    if mode != "zeros":
        check_mode_widths(mode, axes, lay.spatial)
    _parse.check_fits(axes, lay.spatial)
    _parse.check_bias(b_shape, wc[0])
    return ConvSpec(layout=lay, batch=xc[0], in_channels=xc[1], out_channels=wc[0], groups=g, axes=axes,
                    padding_mode=mode, has_bias=b_shape is not None, dtype=_parse.common_dtype(dtypes))


def _groups(groups: object, c_in: int, c_out: int, w_in: int) -> int:
    g = _parse.groups_of(groups, c_in, "convolution")
    if c_out % g:
        raise ArgumentError(f"kernel has {c_out} out-channels, which groups ({g}) does not divide; "
                            "choose groups dividing the output channels")
    if c_in != g * w_in:
        raise ShapeError(f"input has {c_in} channels but groups ({g}) x kernel in-channels ({w_in}) = {g * w_in}; "
                         "check the kernel's I axis or groups")
    return g
