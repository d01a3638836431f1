"""One case table drives reference-vs-backend and backend-vs-backend checks."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from convbridge.ops import get_op


@dataclass(frozen=True)
class Case:
    name: str
    x: tuple[int, ...]
    w: tuple[int, ...]
    bias: bool = False
    kwargs: dict = field(default_factory=dict)
    op: str = "conv"

    def arrays(self, seed: int = 0, dtype: str = "float32"):
        rng = np.random.default_rng(seed)
        x = rng.standard_normal(self.x).astype(dtype)
        w = rng.standard_normal(self.w).astype(dtype)
        b = rng.standard_normal(self.out_channels).astype(dtype) if self.bias else None
        return x, w, b

    @property
    def out_channels(self) -> int:
        return get_op(self.op).build(self.x, self.w, **self.kwargs).out_channels


CASES = [
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
]
