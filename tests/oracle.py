"""Output shapes from an independent source: torch's own shape functions, jax's, or enumeration.

Tests check ``report.shape`` and the backends' outputs against these, never against
``cb.output_shape`` (which shares the spec builder under test). Torch runs on the meta
device (shapes only, no arithmetic); where torch cannot state a call (layouts, asymmetric
padding, strided 'same', the jax convention), the shape is counted by enumerating window
positions or scatter targets, written here without the package's geometry.
"""

from __future__ import annotations

import math

import numpy as np

RESERVED = "NCOI"


def _letters(nsp: int) -> str:
    return "DHW"[3 - nsp:] if nsp <= 3 else "ABEFGJ"[:nsp]


def _layouts(x_ndim: int, w_ndim: int, layout, op: str):
    """(input, kernel, output) letters with N, and whether the input is batched, read independently."""
    if layout is None:
        sp = _letters(w_ndim - 2)
        kernel = ("IO" if op == "conv_transpose" else "OI") + sp
        return "NC" + sp, kernel, "NC" + sp, x_ndim == w_ndim
    if isinstance(layout, str) and "->" in layout:
        lhs_rhs, out = layout.split("->")
        lhs, rhs = lhs_rhs.split(",")
    elif isinstance(layout, str):
        lhs, out = layout, layout
        sp = "".join(c for c in lhs if c not in RESERVED)
        rhs = sp + "IO" if lhs.endswith("C") else ("IO" if op == "conv_transpose" else "OI") + sp
    else:
        lhs, rhs, out = layout
    batched = "N" in lhs
    return ("" if batched else "N") + lhs, rhs, ("" if batched else "N") + out, batched


def _pairs(padding, nsp: int):
    if isinstance(padding, str):
        return padding.lower()
    if isinstance(padding, int):
        return [(padding, padding)] * nsp
    items = list(padding)
    pairs = [tuple(p) if isinstance(p, (tuple, list)) else (p, p) for p in items]
    return pairs * nsp if len(pairs) == 1 else pairs


def _per(v, nsp: int):
    return [v] * nsp if isinstance(v, int) else (list(v) * nsp if len(v) == 1 else list(v))


def windows(n: int, k: int, s: int, d: int, lo: int, hi: int) -> int:
    """Window positions p >= 0 whose last tap p*s + d*(k-1) lies inside the padded input, counted."""
    return sum(1 for p in range(n + lo + hi + 1) if p * s + d * (k - 1) <= n + lo + hi - 1)


def scatter_extent(n: int, k: int, s: int, d: int) -> int:
    """One past the last output row a transposed convolution writes: max over i, j of i*s + j*d, plus one."""
    return max(i * s + j * d for i in range(n) for j in range(k)) + 1


def _conv_spatial(sizes, kernel, kw):
    nsp = len(sizes)
    stride, dilation = _per(kw.get("stride", 1), nsp), _per(kw.get("dilation", 1), nsp)
    pads = _pairs(kw.get("padding", 0), nsp)
    if pads in ("same", "same_lower"):
        return [-(-n // s) for n, s in zip(sizes, stride)]  # the definition of 'same'
    pads = [(0, 0)] * nsp if pads == "valid" else pads
    return [windows(n, k, s, d, lo, hi) for n, k, s, d, (lo, hi) in zip(sizes, kernel, stride, dilation, pads)]


def _transpose_spatial(sizes, kernel, kw):
    nsp = len(sizes)
    stride, dilation = _per(kw.get("stride", 1), nsp), _per(kw.get("dilation", 1), nsp)
    pads = _pairs(kw.get("padding", 0), nsp)
    if pads in ("same", "same_lower"):
        return [n * s for n, s in zip(sizes, stride)]  # the gradient of conv's 'same'
    if kw.get("output_size") is not None:
        return _per(kw["output_size"], nsp)
    pads = [(0, 0)] * nsp if pads == "valid" else pads
    extra = _per(kw.get("output_padding", 0), nsp)
    return [scatter_extent(n, k, s, d) - lo - hi + e
            for n, k, s, d, (lo, hi), e in zip(sizes, kernel, stride, dilation, pads, extra)]


def _jax_convention_shape(x_shape, w_shape, kw):
    """lax.conv_transpose's own shape rule (jax.eval_shape: no arithmetic)."""
    import jax
    from jax import lax

    nsp = len(w_shape) - 2
    strides, dilation = tuple(_per(kw.get("stride", 1), nsp)), tuple(_per(kw.get("dilation", 1), nsp))

    def call(x, w):
        return lax.conv_transpose(x, w, strides, kw["padding"], rhs_dilation=dilation,
                                  dimension_numbers=kw.get("layout"), transpose_kernel=kw.get("transpose_kernel", False))

    spec = [jax.ShapeDtypeStruct(s, np.float32) for s in (x_shape, w_shape)]
    return tuple(jax.eval_shape(call, *spec).shape)


def _torch_shape(op, x_shape, w_shape, kw):
    """torch's own shape function on the meta device, or None where torch cannot state the call."""
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return None
    nsp = len(w_shape) - 2
    padding = kw.get("padding", 0)
    plain = kw.get("layout") is None and kw.get("padding_mode", "zeros") == "zeros" and 1 <= nsp <= 3
    sym = isinstance(padding, int) or (not isinstance(padding, str) and all(isinstance(p, int) for p in padding))
    if not plain or not sym or kw.get("output_size") is not None or kw.get("convention", "torch") != "torch":
        return None
    x = torch.empty(x_shape, device="meta")
    w = torch.empty(w_shape, device="meta")
    args = dict(stride=kw.get("stride", 1), padding=padding, dilation=kw.get("dilation", 1),
                groups=kw.get("groups", 1))
    if op == "conv":
        return tuple(getattr(F, f"conv{nsp}d")(x, w, **args).shape)
    return tuple(getattr(F, f"conv_transpose{nsp}d")(x, w, output_padding=kw.get("output_padding", 0),
                                                      **args).shape)


def expected_shape(op: str, x_shape, second, kw) -> tuple[int, ...]:
    """The output shape of ``op`` on ``x_shape`` with the kernel shape (or, for unfold/fold, kernel size)."""
    kw = dict(kw)
    if op in ("conv", "conv_transpose"):
        if op == "conv_transpose" and kw.get("convention") == "jax":
            return _jax_convention_shape(tuple(x_shape), tuple(second), kw)
        torch_says = _torch_shape(op, tuple(x_shape), tuple(second), kw)
        if torch_says is not None:
            return torch_says
        lhs, rhs, out, batched = _layouts(len(x_shape), len(second), kw.get("layout"), op)
        xs = dict(zip(lhs, x_shape if batched else (1, *x_shape)))
        ws = dict(zip(rhs, second))
        if kw.get("transpose_kernel"):
            ws = {"I": ws["O"], "O": ws["I"], **{c: v for c, v in ws.items() if c not in "IO"}}
        sp = [c for c in lhs if c not in RESERVED]
        sizes, kernel = [xs[c] for c in sp], [ws[c] for c in sp]
        spatial = (_conv_spatial if op == "conv" else _transpose_spatial)(sizes, kernel, kw)
        channels = ws["O"] * (kw.get("groups", 1) if op == "conv_transpose" else 1)
        got = dict(zip(sp, spatial), N=xs["N"], C=channels)
        shape = tuple(got[c] for c in out)
        return shape if batched else shape[1:]
    if op == "unfold":
        layout = kw.get("layout")
        nsp = len(second) if not isinstance(second, int) else len(x_shape) - 2 if layout is None else \
            sum(c not in RESERVED for c in layout)
        lhs = layout or ("N" if len(x_shape) == nsp + 2 else "") + "C" + _letters(nsp)
        xs = dict(zip(lhs, x_shape))
        sp = [c for c in lhs if c not in RESERVED]
        kernel = _per(second, nsp)
        blocks = _conv_spatial([xs[c] for c in sp], kernel, kw)
        shape = (xs.get("N", 1), xs["C"] * math.prod(kernel), math.prod(blocks))
        return shape if "N" in lhs else shape[1:]
    if op == "fold":
        size = tuple(kw["output_size"])
        kernel = _per(second, len(size))
        return (x_shape[0], x_shape[1] // math.prod(kernel), *size) if len(x_shape) == 3 else \
            (x_shape[0] // math.prod(kernel), *size)
    raise ValueError(op)
