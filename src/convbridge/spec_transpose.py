"""ConvTransposeSpec: a transposed convolution parsed, validated and resolved once, framework-free.

Two conventions resolve to one canonical meaning, PyTorch's: the transposed
convolution is the gradient of :func:`convbridge.conv` with respect to its input.
Per spatial dim, input position ``i`` and tap ``j`` of the kernel
``W[c_in, o, j]`` (torch's ``(C_in, C_out / groups, *k)``) add
``x[c_in, i] * W[c_in, o, j]`` into position ``i * stride + j * dilation`` of the
*full* output (length ``(n - 1) * stride + dilation * (k - 1) + 1``); then
``padding`` crops ``lo``/``hi`` from its ends and ``output_padding`` adds rows
back on the high side (zeros, plus the bias).

- ``convention="torch"``: ``padding`` is an int, per-dim ints, ``(lo, hi)``
  pairs, ``"valid"``, ``"same"`` (output ``n * stride``: the gradient of
  :func:`convbridge.conv` with ``padding="same"``) or ``"same_lower"``.
  ``output_padding`` obeys ATen's functional rule
  ``0 <= output_padding < max(stride, dilation)``; ``output_size`` picks it, so
  the reachable sizes are ``base .. base + max(stride, dilation) - 1``.
- ``convention="jax"``: ``lax.conv_transpose`` exactly. ``padding`` is
  ``'SAME'``, ``'VALID'`` (read through jax's ``_conv_transpose_padding`` with the
  dilated kernel size) or ``(a, b)`` pairs padding the stride-dilated input
  (negative pairs crop, as in lax). The kernel is *not* flipped; with
  ``transpose_kernel=True`` lax flips it and swaps its ``I`` and ``O`` axes, so
  the axis its layout calls ``O`` holds ``x``'s channels. In torch's terms the
  crops are ``(dilation * (k - 1) - a, dilation * (k - 1) - b)``, which may be
  negative (zero rows added).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from convbridge._args import as_int, choice, per_dim
from convbridge.errors import ArgumentError, PaddingError, ShapeError
from convbridge.layout import Layout, default_spatial_letters, resolve_layout
from convbridge.padding import parse_padding
from convbridge.spec import (
    PRECISIONS, ConvGeometry, _check_bias, _check_nonempty, _common_dtype, _shape,
)

__all__ = ["ConvTransposeSpec", "make_conv_transpose_spec", "CONVENTIONS", "lax_padding", "transpose_same_pairs",
           "resolve_transpose_layout"]

CONVENTIONS = ("torch", "jax")

Pairs = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class ConvTransposeSpec(ConvGeometry):
    """A validated transposed convolution, in canonical order (torch's meaning, whatever the convention).

    Attributes:
        op: ``"conv_transpose"``.
        convention: ``"torch"`` or ``"jax"`` (how the arguments were read).
        layout: resolved layouts; in ``layout.rhs`` the letter ``I`` is always ``x``'s channels.
        batch, in_channels, out_channels, groups: channel arithmetic; the kernel is
            ``(in_channels, out_channels / groups, *k)`` in torch's order.
        in_spatial, kernel_spatial, out_spatial: spatial sizes in canonical order.
        stride, dilation: per spatial dim.
        padding: per spatial dim ``(lo, hi)`` rows cropped from the full output (negative: zero rows
            added; only the jax convention produces those).
        output_padding: per spatial dim, rows added back on the high side.
        kernel_flipped: the user's kernel is torch's kernel flipped in every spatial axis
            (``lax.conv_transpose`` without ``transpose_kernel``).
        transpose_kernel: the jax convention's flag, as given (for the description).
        has_bias, dtype, precision: as for :class:`convbridge.spec.ConvSpec`.
    """

    op: str
    convention: str
    layout: Layout
    batch: int
    in_channels: int
    out_channels: int
    groups: int
    in_spatial: tuple[int, ...]
    kernel_spatial: tuple[int, ...]
    out_spatial: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    padding: Pairs
    output_padding: tuple[int, ...]
    kernel_flipped: bool
    transpose_kernel: bool
    has_bias: bool
    dtype: str | None
    precision: str

    @property
    def crops(self) -> Pairs:
        """Per dim ``(lo, hi - output_padding)``: what is removed from the full output (negative: added)."""
        return tuple((lo, hi - op) for (lo, hi), op in zip(self.padding, self.output_padding))

    @property
    def macs(self) -> int:
        """Multiply-accumulates of the direct (scatter) algorithm."""
        per_in = self.out_channels // self.groups * math.prod(self.kernel_spatial)
        return self.batch * self.in_channels * math.prod(self.in_spatial) * per_in

    def describe(self) -> str:
        """The resolved arguments in words (the report's description line)."""
        pads = ", ".join(f"({lo}, {hi})" for lo, hi in self.padding)
        how = "torch convention" if self.convention == "torch" else (
            f"jax convention (lax.conv_transpose, transpose_kernel={self.transpose_kernel})")
        return (f"{self.nsp}-d {how}, layout {self.layout}, stride {self.stride}, crops [{pads}], "
                f"output_padding {self.output_padding}, dilation {self.dilation}, groups {self.groups}, "
                f"kernel flipped {self.kernel_flipped}, bias {self.has_bias}")


def make_conv_transpose_spec(
    x_shape, w_shape, b_shape=None, *, stride=1, padding=0, output_padding=0, dilation=1, groups=1,
    layout=None, precision="highest", output_size=None, convention="torch", transpose_kernel=False,
    dtypes: tuple[str | None, ...] = (None,),
) -> ConvTransposeSpec:
    """Parse and validate transposed-convolution arguments into a :class:`ConvTransposeSpec`.

    Raises:
        ConvBridgeError: any invalid argument; the subclass says which kind.

    Shape:
        out = (n - 1) * stride - lo - hi + dilation * (k - 1) + output_padding + 1 per spatial dim.

    >>> make_conv_transpose_spec((1, 4, 15), (4, 2, 3), stride=2, padding=1, output_size=30).output_padding
    (1,)
    """
    convention = choice(convention, "convention", CONVENTIONS)
    tk = _transpose_kernel_flag(transpose_kernel, convention)
    x_shape, w_shape = _shape(x_shape, "input"), _shape(w_shape, "kernel")
    lay = resolve_transpose_layout(layout, len(x_shape), len(w_shape), convention, tk)
    xs = (1, *x_shape) if not lay.batched else x_shape
    xc = [xs[i] for i in lay.lhs_perm]
    wc = [w_shape[i] for i in lay.rhs_perm]  # (O = C_out / groups, I = C_in, *k)
    _check_nonempty(xc, wc, lay)
    nsp = len(lay.spatial)
    g = _groups(groups, xc[1], wc[1], wc[0], convention)
    stride = per_dim(stride, "stride", nsp, minimum=1)
    dilation = per_dim(dilation, "dilation", nsp, minimum=1)
    geometry = (tuple(xc[2:]), tuple(wc[2:]), stride, dilation, lay.spatial)
    if convention == "jax":
        _check_jax_only_arguments(per_dim(output_padding, "output_padding", nsp, minimum=0), output_size)
        pads, out_pad = _jax_crops(padding, wc[2:], stride, dilation), (0,) * nsp
    else:
        pads, out_pad = _torch_crops(padding, output_padding, output_size, geometry)
    out_sp = _out_spatial(pads, out_pad, geometry)
    _check_bias(b_shape, g * wc[0])
    return ConvTransposeSpec(
        op="conv_transpose", convention=convention, layout=lay, batch=xc[0], in_channels=xc[1],
        out_channels=g * wc[0], groups=g, in_spatial=tuple(xc[2:]), kernel_spatial=tuple(wc[2:]),
        out_spatial=out_sp, stride=stride, dilation=dilation, padding=pads, output_padding=out_pad,
        kernel_flipped=convention == "jax" and not tk, transpose_kernel=tk, has_bias=b_shape is not None,
        dtype=_common_dtype(dtypes), precision=choice(precision, "precision", PRECISIONS),
    )


def _transpose_kernel_flag(value: object, convention: str) -> bool:
    if not isinstance(value, bool):
        raise ArgumentError(f"transpose_kernel must be True or False, got {value!r}")
    if value and convention != "jax":
        raise ArgumentError(
            "transpose_kernel=True is lax.conv_transpose's flag and only means something with convention='jax'; "
            "with convention='torch' the kernel is already torch's (C_in, C_out / groups, *k): drop "
            "transpose_kernel, or pass convention='jax'"
        )
    return value


def resolve_transpose_layout(layout: object, x_ndim: int, w_ndim: int, convention: str,
                             transpose_kernel: bool = False) -> Layout:
    """Resolve a conv_transpose layout; the jax convention defaults to lax's channels-last dimension numbers.

    With ``transpose_kernel=True`` the kernel letters are read as lax reads them before it swaps
    the kernel's ``I`` and ``O`` axes, so the result's ``rhs`` swaps those two letters.

    >>> resolve_transpose_layout(None, 4, 4, "jax", transpose_kernel=True).rhs
    'HWOI'
    """
    if convention == "jax" and layout is None:
        if w_ndim < 3:
            return resolve_layout(None, x_ndim, w_ndim, "conv_transpose")  # raises the rank error
        sp = default_spatial_letters(w_ndim - 2)
        layout = ("N" if x_ndim == w_ndim else "") + sp + "C"
    lay = resolve_layout(layout, x_ndim, w_ndim, "conv_transpose")
    if transpose_kernel:
        lay = replace(lay, rhs=lay.rhs.translate(str.maketrans("IO", "OI")))
    return lay


def _groups(groups, c_in: int, w_in: int, w_out: int, convention: str) -> int:
    g = as_int(groups, "groups")
    if g <= 0:
        raise ArgumentError(f"groups must be >= 1, got {g}; groups=1 is an ordinary transposed convolution")
    if convention == "jax" and g != 1:
        raise ArgumentError(
            f"groups={g} with convention='jax': lax.conv_transpose has no groups; use convention='torch' "
            "(convbridge.transpose.jax_to_torch converts the arguments and kernel)"
        )
    if c_in % g:
        raise ArgumentError(f"input has {c_in} channels, which groups ({g}) does not divide; "
                            "choose groups dividing the input channels")
    if c_in != w_in:
        raise ShapeError(
            f"input has {c_in} channels but the kernel's I axis has {w_in}; a conv_transpose kernel is "
            f"(C_in, C_out / groups, *k) as torch's ConvTranspose weight (its I axis is all {c_in} input "
            "channels, unlike conv's): check the kernel or its layout"
        )
    return g


def _check_jax_only_arguments(output_padding: tuple[int, ...], output_size) -> None:
    if output_size is not None or any(output_padding):
        raise ArgumentError(
            "output_padding and output_size are torch-convention arguments; lax.conv_transpose has neither: "
            "with convention='jax' widen the high side of padding instead, e.g. ((1, 2),) rather than ((1, 1),)"
        )


def lax_padding(k_eff: int, s: int, padding: object) -> tuple[int, int]:
    """jax's ``_conv_transpose_padding``: lax's (a, b) padding of the stride-dilated input for one dim.

    ``k_eff`` is the dilated kernel size ``dilation * (k - 1) + 1``.

    >>> lax_padding(3, 2, "SAME"), lax_padding(3, 2, "VALID"), lax_padding(1, 3, "SAME")
    ((2, 1), (2, 2), (0, 2))
    """
    if padding == "SAME":
        pad_len = k_eff + s - 2
        pad_a = k_eff - 1 if s > k_eff - 1 else -(-pad_len // 2)
    elif padding == "VALID":
        pad_len = k_eff + s - 2 + max(k_eff - s, 0)
        pad_a = k_eff - 1
    else:
        raise PaddingError(f"no lax transposed padding for {padding!r}; use 'SAME' or 'VALID'")
    return pad_a, pad_len - pad_a


def _jax_crops(padding, kernel, stride, dilation) -> Pairs:
    nsp = len(kernel)
    spans = [d * (k - 1) for k, d in zip(kernel, dilation)]
    if isinstance(padding, str):
        if padding not in ("SAME", "VALID"):
            raise PaddingError(
                f"padding {padding!r} with convention='jax': lax.conv_transpose reads only 'SAME' and 'VALID' "
                "(upper case) as forward-conv paddings (other strings reach conv_general_dilated with another "
                "meaning); write 'SAME' or 'VALID', or give (a, b) pairs"
            )
        pairs = [lax_padding(span + 1, s, padding) for span, s in zip(spans, stride)]
    else:
        pairs = _lax_pairs(padding, nsp)
    return tuple((span - a, span - b) for span, (a, b) in zip(spans, pairs))


def _lax_pairs(padding, nsp: int) -> Pairs:
    items = list(padding) if isinstance(padding, (list, tuple)) or getattr(padding, "ndim", 0) > 0 else None
    if items is None or len(items) != nsp or not all(_is_pair(p) for p in items):
        raise PaddingError(
            f"padding {padding!r} with convention='jax': lax.conv_transpose takes 'SAME', 'VALID' or one (a, b) "
            f"pair per spatial dim ({nsp} here), e.g. {tuple([(1, 1)] * nsp)!r}"
        )
    return tuple((as_int(a, f"padding[{i}][0]"), as_int(b, f"padding[{i}][1]")) for i, (a, b) in enumerate(items))


def _is_pair(p) -> bool:
    return (isinstance(p, (list, tuple)) or getattr(p, "ndim", 0) == 1) and len(p) == 2


def transpose_same_pairs(kernel, stride, dilation, *, lower: bool = False) -> tuple[Pairs, tuple[int, ...]]:
    """Crops and output_padding of ``"same"``: output ``n * stride``, the gradient of conv's ``"same"``.

    The full output is ``(n - 1) * s + d * (k - 1) + 1``; the excess ``d * (k - 1) + 1 - s`` is cropped
    (odd row high; low with ``lower``), or, when negative, added back as output_padding.

    >>> transpose_same_pairs((3,), (2,), (1,)), transpose_same_pairs((1,), (3,), (1,))
    ((((0, 1),), (0,)), (((0, 0),), (2,)))
    """
    pairs, extra = [], []
    for k, s, d in zip(kernel, stride, dilation):
        total = d * (k - 1) + 1 - s
        small, big = max(total, 0) // 2, max(total, 0) - max(total, 0) // 2
        pairs.append((big, small) if lower else (small, big))
        extra.append(max(-total, 0))
    return tuple(pairs), tuple(extra)


def _torch_crops(padding, output_padding, output_size, geometry) -> tuple[Pairs, tuple[int, ...]]:
    sizes, kernel, stride, dilation, letters = geometry
    nsp = len(sizes)
    pads = parse_padding(padding, nsp)
    out_pad = per_dim(output_padding, "output_padding", nsp, minimum=0)
    if isinstance(pads, str):
        if output_size is not None or any(out_pad):
            raise ArgumentError(
                f"padding={pads!r} already fixes the output size (n * stride) and output_padding; "
                "pass output_size/output_padding with explicit padding instead"
            )
        return transpose_same_pairs(kernel, stride, dilation, lower=pads == "same_lower")
    if output_size is not None:
        if any(out_pad):
            raise ArgumentError(f"output_padding {out_pad} and output_size {output_size!r} both given; "
                                "output_size chooses output_padding: pass only one")
        return pads, _output_padding_for(output_size, pads, geometry)
    for op, s, d, letter in zip(out_pad, stride, dilation, letters):
        if op >= max(s, d):
            raise ArgumentError(
                f"output_padding {op} on axis {letter} must be < max(stride {s}, dilation {d}) = {max(s, d)} "
                f"(ATen's rule); allowed: 0..{max(s, d) - 1}; pick the size with output_size=, or a larger stride"
            )
    return pads, out_pad


def _transpose_size(n: int, k: int, s: int, d: int, lo: int, hi: int, op: int) -> int:
    return (n - 1) * s - lo - hi + d * (k - 1) + op + 1


def _output_padding_for(output_size, pads: Pairs, geometry) -> tuple[int, ...]:
    sizes, kernel, stride, dilation, letters = geometry
    targets = per_dim(output_size, "output_size", len(sizes), minimum=1)
    chosen = []
    for t, n, k, s, d, (lo, hi), letter in zip(targets, sizes, kernel, stride, dilation, pads, letters):
        base, room = _transpose_size(n, k, s, d, lo, hi, 0), max(s, d)
        if not 0 <= t - base < room:
            dil = f", dilation {d}" if d != 1 else ""
            pad = f"{lo}" if lo == hi else f"({lo}, {hi})"
            first = max(base, 1)
            reach = (f"reachable sizes are {first}..{base + room - 1} (output_padding {first - base}..{room - 1})"
                     if base + room - 1 >= 1 else "no size is reachable (the padding crops everything)")
            raise ShapeError(f"output_size {t} is unreachable from input {n} (stride {s}, kernel {k}{dil}, "
                             f"padding {pad}); {reach} on axis {letter}")
        chosen.append(t - base)
    return tuple(chosen)


def _out_spatial(pads: Pairs, out_pad, geometry) -> tuple[int, ...]:
    sizes, kernel, stride, dilation, letters = geometry
    out = []
    for n, k, s, d, (lo, hi), op, letter in zip(sizes, kernel, stride, dilation, pads, out_pad, letters):
        size = _transpose_size(n, k, s, d, lo, hi, op)
        if size < 1:
            full = (n - 1) * s + d * (k - 1) + 1
            raise PaddingError(
                f"conv_transpose output on axis {letter} would have size {size}: the full output {full} "
                f"(input {n}, stride {s}, kernel {k}, dilation {d}) cropped by ({lo}, {hi}) plus output_padding "
                f"{op}; crop less (padding), or use a larger input, kernel or stride"
            )
        out.append(size)
    return tuple(out)
