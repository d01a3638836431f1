"""Kernels between layouts and transposed-convolution conventions, exactly (permutes, flips, regroups only).

A convolution's kernel means the same thing in every framework; only the axis order differs
(``OIHW`` in torch and Equinox, ``HWIO`` in lax and Flax). A transposed convolution's kernel is
stated two ways (PITFALLS traps 2 and 3):

- ``"torch"``: PyTorch's ``ConvTranspose`` weight, the kernel of the gradient of conv: unflipped,
  ``(C_in, C_out / groups, *k)`` in torch's order ``IO*`` (``I`` always names ``x``'s channels).
- ``"jax"``: the kernel of the equivalent convolution over the stride-dilated input: flipped in
  every spatial axis, ``(C_out, C_in / groups, *k)`` in the order ``OI*``. With ``groups == 1`` this
  is ``lax.conv_transpose``'s and Flax ``ConvTranspose``'s kernel (``HWIO``); with any groups it is
  Equinox ``ConvTranspose``'s weight (``OIHW``) and ``conv_general_dilated(lhs_dilation=stride,
  feature_group_count=groups)``'s kernel.

Between the two, the per-group blocks move: ``(g, C_in/g, C_out/g, *k)`` becomes ``(g, C_out/g,
C_in/g, *k)`` (a regroup, not a reshape: a plain reshape is wrong whenever ``C_in/g > 1``). Every
conversion is a permutation, a reshape and a flip, so a round trip is bitwise exact, and the
result is the caller's array type (NumPy, JAX or torch; gradients flow through torch and JAX).
"""

from __future__ import annotations

from typing import Any

from convbridge import frameworks
from convbridge.arrays import check_array, framework_of, shape_of
from convbridge.errors import ArgumentError, LayoutError, ShapeError, brief
from convbridge.spec.layout import default_spatial_letters, permutation

__all__ = ["kernel", "kernel_format", "CONVENTIONS", "to_jax"]

CONVENTIONS = ("torch", "jax")
_OPS = ("conv", "conv_transpose")


def kernel_format(api: str, nsp: int, op: str = "conv") -> tuple[str, str]:
    """``(layout, convention)`` of a framework API's kernel for ``op`` with ``nsp`` spatial dims.

    >>> kernel_format("flax.linen", 2, "conv_transpose")
    ('HWIO', 'jax')
    >>> kernel_format("torch.nn", 1, "conv_transpose"), kernel_format("equinox.nn", 3, "conv_transpose")
    (('IOW', 'torch'), ('OIDHW', 'jax'))
    """
    fw = frameworks.get(_API_ALIASES.get(api, api))
    letters = default_spatial_letters(nsp)
    if op == "conv":
        return fw.kernel_layout(letters), "torch"
    return fw.transpose_layout(letters), "jax" if fw.transpose_flipped else "torch"


_API_ALIASES = {"torch": "torch.nn", "torch.nn.functional": "torch.nn", "lax": "jax.lax", "jax": "jax.lax",
                "flax": "flax.linen", "linen": "flax.linen", "nnx": "flax.nnx",
                "equinox": "equinox.nn", "eqx": "equinox.nn"}


def kernel(w: Any, src: str, dst: str, *, op: str = "conv", groups: int = 1, src_convention: str | None = None,
           dst_convention: str | None = None) -> Any:
    """Convert a kernel between layouts (and, for transposed convolutions, conventions), exactly.

    Args:
        w: the kernel (NumPy, JAX or torch array).
        src, dst: layout strings in convbridge's letters (``"OIHW"``, ``"HWIO"``, ``"IOHW"``...; for a
            transposed kernel ``I`` is ``x``'s channels), or framework APIs (``"torch.nn"``, ``"jax.lax"``,
            ``"flax.linen"``, ``"flax.nnx"``, ``"equinox.nn"``), which fix layout and convention.
        op: ``"conv"`` or ``"conv_transpose"``.
        groups: channel groups (needed to regroup a grouped transposed kernel).
        src_convention, dst_convention: ``"torch"`` or ``"jax"`` for a transposed kernel given by layout
            string (default ``"torch"``); an API implies its own, and a different one given with it is an error.

    Returns:
        The kernel in ``dst``'s layout and convention, the same array type as ``w``.

    Raises:
        ConvBridgeError: unknown layouts or conventions, shapes that do not fit the layout or ``groups``.

    Shape:
        transposed, torch ``(C_in, C_out/g, *k)`` <-> jax ``(C_out, C_in/g, *k)`` flipped (then permuted).

    >>> import numpy as np
    >>> w = np.arange(24.0).reshape(4, 3, 2)  # torch ConvTranspose1d(4, 6, 2, groups=2): (in, out/g, k)
    >>> e = kernel(w, "torch.nn", "equinox.nn", op="conv_transpose", groups=2)
    >>> e.shape, e[0, :, 0].tolist()  # Equinox: (out, in/g, k), flipped; group 0's first out channel
    ((6, 2, 2), [1.0, 7.0])
    >>> bool(np.array_equal(kernel(e, "equinox.nn", "torch.nn", op="conv_transpose", groups=2), w))
    True
    """
    if op not in _OPS:
        raise ArgumentError(f"op must be 'conv' or 'conv_transpose', got {brief(op)}")
    check_array(w, "the kernel")
    if op == "conv" and "jax" in (src_convention, dst_convention):
        raise ArgumentError("conventions name transposed kernels (op='conv_transpose'); a convolution's kernel means "
                            "the same in every framework: drop src_convention / dst_convention")
    shape = tuple(shape_of(w))
    nsp = len(shape) - 2
    if nsp < 1:
        raise ShapeError(f"a kernel has two channel axes and at least one spatial axis; got shape {shape}")
    src_layout, src_conv = _format(src, src_convention, nsp, op, "src")
    dst_layout, dst_conv = _format(dst, dst_convention, nsp, op, "dst")
    if sorted(src_layout) != sorted(dst_layout):
        raise LayoutError(f"src layout {src_layout!r} and dst layout {dst_layout!r} name different axes; use the same "
                          "letters (O, I and the spatial ones) in both")
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ArgumentError(f"groups must be a positive int, got {brief(groups)}")
    if op == "conv" or src_conv == dst_conv:
        return _permute(w, permutation(src_layout, dst_layout))
    spatial = "".join(c for c in src_layout if c not in "OI")
    torch_first = src_conv == "torch"
    canon = ("IO" if torch_first else "OI") + spatial
    a = _permute(w, permutation(src_layout, canon))
    a = _regroup(a, groups, shape, src_layout, unflip_first=not torch_first)
    out_canon = ("OI" if torch_first else "IO") + spatial
    return _permute(a, permutation(out_canon, dst_layout))


def _format(where: str, convention: str | None, nsp: int, op: str, role: str) -> tuple[str, str]:
    if not isinstance(where, str):
        raise ArgumentError(f"{role} must be a layout string such as 'OIHW' or a framework API such as 'flax.linen', "
                            f"got {brief(where)}")
    if convention is not None and convention not in CONVENTIONS:
        raise ArgumentError(f"{role}_convention must be 'torch' or 'jax', got {brief(convention)}")
    if where in frameworks.CONVENTIONS or where in _API_ALIASES:
        layout, implied = kernel_format(where, nsp, op)
        if op == "conv_transpose" and convention is not None and convention != implied:
            raise ArgumentError(f"{role}={where!r} states its transposed kernels in the {implied!r} convention, but "
                                f"{role}_convention={convention!r}; drop {role}_convention or give a layout string")
        return layout, implied
    letters = where.upper() if where.isalpha() else where
    if (len(letters) != nsp + 2 or set("OI") - set(letters) or len(set(letters)) != len(letters)
            or not letters.isalpha()):
        raise LayoutError(f"{role} {where!r} is not a layout of this {nsp + 2}-d kernel; write O, I and {nsp} spatial "
                          f"letter(s), e.g. {'OI' + default_spatial_letters(nsp)!r}, or a framework API such as "
                          f"{', '.join(map(repr, frameworks.CONVENTIONS))}")
    return letters, convention or "torch"


def _regroup(a: Any, groups: int, shape: tuple[int, ...], src: str, *, unflip_first: bool) -> Any:
    """(first, second, *k) with first = g * f, second = s -> (g * s, f, *k), flipped in every spatial axis."""
    first, second, *k = tuple(shape_of(a))
    if first % groups:
        role = "C_out" if unflip_first else "C_in"
        raise ShapeError(f"kernel of shape {shape} (layout {src!r}) has {first} {role} channels, not a multiple of "
                         f"groups ({groups}); check groups or the kernel's layout")
    f = first // groups
    nk = len(k)
    a = _reshape(a, (groups, f, second, *k))
    a = _permute(a, (0, 2, 1, *range(3, 3 + nk)))
    a = _reshape(a, (groups * second, f, *k))
    return _flip(a, tuple(range(2, 2 + nk)))


def _permute(a: Any, perm: tuple[int, ...]) -> Any:
    if perm == tuple(range(len(perm))):
        return a
    if framework_of(a) == "torch":
        return a.permute(*perm)
    if framework_of(a) == "jax":
        return a.transpose(perm)
    import numpy as np

    return np.transpose(np.asarray(a), perm)


def _reshape(a: Any, shape: tuple[int, ...]) -> Any:
    if framework_of(a) == "torch":
        return a.reshape(shape)
    if framework_of(a) == "jax":
        return a.reshape(shape)
    import numpy as np

    return np.reshape(np.asarray(a), shape)


def _flip(a: Any, axes: tuple[int, ...]) -> Any:
    fw = framework_of(a)
    if fw == "torch":
        import torch

        return torch.flip(a, axes)
    if fw == "jax":
        import jax.numpy as jnp

        return jnp.flip(a, axes)
    import numpy as np

    return np.ascontiguousarray(np.flip(a, axes))


def to_jax(a: Any) -> Any:
    """A JAX array of ``a``: host arrays by ``jax.device_put`` (``jnp.asarray`` compiles an XLA copy per shape);
    JAX arrays and tracers as they are."""
    import jax

    if framework_of(a) == "jax":
        return a
    import numpy as np

    return jax.device_put(np.asarray(a))
