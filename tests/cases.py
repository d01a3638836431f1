"""The case tables: one format for every op, looked up by name (never by position).

``Case.w`` is the kernel's shape for the convolutions and the kernel size for unfold/fold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

import convbridge as cb
from oracle import expected_shape


@dataclass(frozen=True)
class Case:
    name: str
    x: tuple[int, ...]
    w: Any
    bias: bool = False
    kwargs: dict = field(default_factory=dict)
    op: str = "conv"

    @property
    def out_channels(self) -> int:
        """The result's channels (to size a bias; asserting nothing, so the package may say it)."""
        from convbridge.ops import get_op

        return get_op(self.op).build(self.x, self.w, **self.kwargs).out_channels

    def arrays(self, seed: int = 0, dtype: str = "float32"):
        """``(x, w, b)``: random normal arrays of the case's shapes (``w`` is the kernel size for unfold/fold)."""
        rng = np.random.default_rng(seed)
        x = rng.standard_normal(self.x).astype(dtype)
        if self.op in ("unfold", "fold"):
            return x, self.w, None
        w = rng.standard_normal(self.w).astype(dtype)
        b = rng.standard_normal(self.out_channels).astype(dtype) if self.bias else None
        return x, w, b

    @property
    def expected_shape(self) -> tuple[int, ...]:
        return expected_shape(self.op, self.x, self.w, self.kwargs)

    def without(self, *keys: str) -> Case:
        """The same case with some keyword arguments dropped."""
        return Case(self.name, self.x, self.w, self.bias, {k: v for k, v in self.kwargs.items() if k not in keys},
                    self.op)


def table(*cases: Case) -> dict[str, Case]:
    names = [c.name for c in cases]
    assert len(set(names)) == len(names), "case names must be unique"
    return {c.name: c for c in cases}


def T(name, x, w, bias=False, kwargs=None):  # noqa: N802 - a transposed-convolution case
    return Case(name, x, w, bias, kwargs or {}, op="conv_transpose")


def U(name, x, kernel_size, kwargs=None):  # noqa: N802 - an unfold case (fold undoes it)
    return Case(name, x, kernel_size, False, kwargs or {}, op="unfold")


CONV = table(
    Case("tutorial", (32, 3, 32, 32), (4, 3, 5, 5), kwargs=dict(padding="valid")),
    Case("bias", (2, 3, 9, 9), (5, 3, 3, 3), bias=True, kwargs=dict(padding=1)),
    Case("strided_same_odd", (2, 3, 15, 15), (4, 3, 7, 7), kwargs=dict(stride=2, padding="same")),
    Case("strided_same_lower", (2, 3, 15, 14), (4, 3, 4, 4), kwargs=dict(stride=2, padding="same_lower")),
    Case("same_stride3", (1, 2, 10, 11), (3, 2, 3, 2), kwargs=dict(stride=3, padding="same")),
    Case("dilation", (2, 2, 13, 11), (3, 2, 3, 3), kwargs=dict(dilation=(2, 3), padding=2)),
    Case("asymmetric_pairs", (2, 2, 8, 9), (3, 2, 3, 3), kwargs=dict(padding=((0, 2), (3, 1)))),
    Case("groups", (2, 6, 8, 8), (4, 3, 3, 3), bias=True, kwargs=dict(groups=2, padding=1)),
    Case("depthwise", (2, 4, 9, 9), (8, 1, 3, 3), kwargs=dict(groups=4, padding="same")),
    Case("reflect", (1, 2, 7, 8), (3, 2, 3, 3), kwargs=dict(padding=((2, 1), (1, 2)), padding_mode="reflect")),
    Case("replicate", (1, 2, 5, 6), (3, 2, 3, 3), kwargs=dict(padding=4, padding_mode="replicate")),
    Case("circular", (1, 2, 5, 6), (3, 2, 3, 3), kwargs=dict(padding=(5, 2), padding_mode="circular")),
    Case("nhwc", (2, 9, 10, 3), (3, 3, 3, 4), bias=True, kwargs=dict(layout="NHWC", stride=2, padding="same")),
    Case("full_layout", (2, 9, 3, 10), (4, 3, 3, 3), kwargs=dict(layout="NHCW,OIHW->NCHW", padding=1)),
    Case("jax_tuple", (9, 10, 2, 3), (3, 3, 3, 4), kwargs=dict(layout=("HWNC", "HWIO", "NHWC"))),
    Case("unbatched", (3, 9, 9), (4, 3, 3, 3), bias=True, kwargs=dict(padding=1)),
    Case("unbatched_nhwc", (9, 9, 3), (3, 3, 3, 4), kwargs=dict(layout="HWC", stride=2)),
    Case("conv1d", (2, 3, 20), (4, 3, 5), bias=True, kwargs=dict(stride=2, padding="same", dilation=2)),
    Case("conv1d_pair", (2, 3, 20), (4, 3, 4), kwargs=dict(padding=((3, 0),))),
    Case("conv1d_reflect", (2, 2, 10), (2, 2, 3), kwargs=dict(padding=3, padding_mode="reflect")),
    Case("conv3d", (1, 2, 6, 7, 8), (3, 2, 3, 2, 3), bias=True, kwargs=dict(stride=(1, 2, 1), padding="same")),
    Case("conv3d_ndhwc", (1, 6, 7, 8, 4), (2, 2, 2, 2, 4), kwargs=dict(layout="NDHWC", groups=2, dilation=2)),
    Case("conv3d_circular", (1, 2, 5, 5, 5), (2, 2, 3, 3, 3), kwargs=dict(padding=1, padding_mode="circular")),
    Case("big_k", (1, 1, 40, 40), (1, 1, 11, 11), kwargs=dict(padding="same")),
    Case("one_by_one", (2, 16, 7, 7), (8, 16, 1, 1)),
    Case("explain_odd_layouts", (9, 2, 10, 3), (4, 3, 3, 2), kwargs=dict(
        layout=("HNWC", "OHIW", "NCWH"), stride=(2, 1), padding=((1, 0), (0, 2)))),
    Case("reflect_asym_bias", (1, 2, 7, 8), (3, 2, 3, 3), bias=True,
         kwargs=dict(padding=((2, 1), (1, 2)), padding_mode="reflect")),
    Case("unbatched_hwc_reflect", (9, 8, 3), (3, 3, 3, 4), kwargs=dict(layout="HWC", padding=1,
                                                                         padding_mode="reflect")),
    Case("conv3d_pairs", (1, 2, 6, 7, 8), (3, 2, 3, 2, 3), bias=True,
         kwargs=dict(stride=(1, 2, 1), padding=((1, 0), (0, 1), (1, 1)))),
    Case("groups_strided", (2, 6, 8, 8), (4, 3, 3, 3), bias=True, kwargs=dict(groups=2, padding=1, stride=(1, 2))),
    Case("groups_asym_dilated", (2, 4, 7, 8), (6, 2, 3, 2), bias=True,
         kwargs=dict(stride=2, padding=((1, 2), (0, 1)), dilation=(1, 2), groups=2)),
    Case("reflect_nhwc", (2, 6, 7, 3), (3, 3, 3, 4), bias=True, kwargs=dict(layout="NHWC", padding=1,
                                                                             padding_mode="reflect")),
    Case("depthwise_1d", (2, 4, 17), (4, 1, 5), kwargs=dict(groups=4, padding="same", stride=3)),
    Case("unbatched_3d", (2, 5, 4, 6), (3, 2, 2, 3, 2), bias=True, kwargs=dict(padding="same")),
    Case("replicate_1d", (2, 3, 9), (2, 3, 4), kwargs=dict(padding=((3, 0),), padding_mode="replicate")),
    Case("circular_nhwc", (2, 5, 6, 2), (3, 3, 2, 4), kwargs=dict(padding=(3, 1), padding_mode="circular",
                                                                    layout="NHWC")),
    Case("depthwise_3d", (1, 2, 5, 4, 6), (4, 1, 3, 2, 3), kwargs=dict(stride=(1, 2, 1), padding="same", groups=2)),
    Case("tutorial_small", (1, 3, 8, 8), (4, 3, 5, 5)),
    Case("same_stride2", (1, 2, 9, 7), (3, 2, 3, 3), kwargs=dict(stride=2, padding="same")),
)

TRANSPOSE = table(
    T("plain_2d", (2, 3, 5, 5), (3, 4, 3, 3)),
    T("stride2_pad1_op1", (2, 4, 7, 6), (4, 2, 3, 3), True, dict(stride=2, padding=1, output_padding=1)),
    T("pairs", (1, 2, 6, 5), (2, 3, 3, 2), False, dict(stride=(2, 3), padding=((0, 2), (1, 0)))),
    T("same", (2, 3, 7, 8), (3, 2, 4, 3), False, dict(stride=2, padding="same")),
    T("same_stride_beyond_kernel", (1, 2, 5), (2, 2, 2), True, dict(stride=4, padding="same")),
    T("same_lower", (1, 2, 6, 5), (2, 2, 4, 4), False, dict(stride=(1, 2), padding="same_lower")),
    T("valid", (1, 2, 4, 4), (2, 2, 2, 3), False, dict(stride=3, padding="valid")),
    T("output_padding_below_dilation", (1, 2, 6, 6), (2, 2, 3, 3), False,
      dict(dilation=3, output_padding=2, padding=1)),
    T("groups", (2, 6, 5, 5), (6, 2, 3, 3), True, dict(groups=3, stride=2)),
    T("depthwise", (2, 4, 6, 6), (4, 1, 3, 3), False, dict(groups=4, stride=2, padding=1, output_padding=1)),
    T("depthwise_multiplier", (1, 3, 5, 5), (3, 2, 3, 3), True, dict(groups=3, padding=(0, 1))),
    T("nhwc", (2, 5, 6, 3), (3, 3, 3, 4), True, dict(layout="NHWC", stride=2, padding=1)),
    T("full_layout", (2, 5, 3, 6), (4, 3, 3, 3), False, dict(layout="NHCW,OIHW->NCHW", stride=(1, 2))),
    T("jax_tuple_layout", (5, 6, 2, 3), (3, 3, 3, 4), False, dict(layout=("HWNC", "HWIO", "NHWC"), stride=2)),
    T("unbatched", (3, 6, 6), (3, 2, 3, 3), True, dict(stride=2)),
    T("unbatched_hwc", (6, 6, 3), (3, 3, 3, 2), False, dict(layout="HWC", stride=2, padding="same")),
    T("empty_batch", (0, 3, 5), (3, 2, 3), True, dict(stride=2, padding=1)),
    T("t1d", (2, 3, 9), (3, 4, 5), True, dict(stride=3, padding=2, output_padding=2, dilation=2)),
    T("t1d_pairs", (2, 2, 7), (2, 2, 4), False, dict(padding=((3, 0),), stride=2)),
    T("t1d_output_size", (1, 4, 15), (4, 2, 3), False, dict(stride=2, padding=1, output_size=30)),
    T("t3d", (1, 2, 4, 5, 3), (2, 3, 3, 2, 3), True,
      dict(stride=(2, 1, 2), padding=(1, 0, 1), output_padding=(1, 0, 0))),
    T("t3d_ndhwc_groups", (1, 3, 5, 4, 4), (2, 2, 2, 4, 1), False,
      dict(layout="NDHWC", groups=2, dilation=2, stride=2)),
    T("jax_same", (2, 5, 6, 3), (3, 2, 3, 4), False, dict(convention="jax", stride=2, padding="SAME")),
    T("jax_valid_transpose_kernel", (2, 5, 6, 3), (3, 2, 4, 3), True,
      dict(convention="jax", stride=(2, 3), padding="VALID", transpose_kernel=True, dilation=(1, 2))),
    T("jax_negative_pairs_1d", (2, 7, 3), (3, 3, 2), False, dict(convention="jax", stride=2, padding=((-1, 4),))),
    T("jax_nchw", (1, 3, 5, 4), (2, 3, 3, 3), True,
      dict(convention="jax", stride=2, padding=((1, 2), (0, 0)), layout=("NCHW", "OIHW", "NCHW"))),
    T("k3s2p1op1", (2, 4, 5, 6), (4, 3, 3, 3), True, dict(stride=2, padding=1, output_padding=1)),
    T("groups_dilated", (1, 4, 5, 6), (4, 3, 3, 2), False, dict(stride=2, padding=(2, 1), groups=2,
                                                                  dilation=(1, 2))),
    T("nwc_1d", (2, 9, 3), (4, 3, 2), True, dict(layout="NWC", stride=3, padding=((1, 2),))),
)

UNFOLD = table(
    U("plain_2d", (2, 3, 6, 7), (2, 3)),
    U("stride_pad_dilation_2d", (2, 2, 9, 8), (3, 2), dict(stride=(2, 1), padding=(1, 2), dilation=(2, 3))),
    U("pairs_2d", (1, 2, 6, 6), (3, 3), dict(padding=((0, 2), (1, 0)), stride=2)),
    U("same_2d", (2, 3, 7, 5), (4, 3), dict(padding="same", stride=2)),
    U("nhwc", (2, 6, 5, 3), (2, 2), dict(layout="NHWC", stride=2)),
    U("unbatched", (3, 6, 6), (3, 3), dict(padding=1)),
    U("unbatched_chw_int_kernel", (3, 6, 6), 3, dict(layout="CHW")),
    U("empty_batch", (0, 3, 5, 5), (2, 2)),
    U("u1d", (2, 3, 11), (4,), dict(stride=3, dilation=2, padding=1)),
    U("u1d_nwc", (2, 11, 3), (3,), dict(layout="NWC", padding="same")),
    U("u3d", (1, 2, 5, 6, 4), (2, 3, 2), dict(stride=(1, 2, 1), padding=(1, 0, 1))),
    U("u3d_dilated_int_kernel", (2, 1, 6, 5, 7), 2, dict(dilation=(2, 1, 3))),
)
