"""Layout strings <-> permutations.

A layout names every axis of an array with one letter: ``N`` batch and ``C``
channels for inputs and outputs, ``O``/``I`` for kernels (``I`` always means the
channels of ``x`` and ``O`` the channels of the result, for conv and
conv_transpose alike), and any other letter a spatial axis. Everything inside
convbridge works in *canonical order*: ``(N, C, *spatial)`` for inputs and
outputs, ``(O, I, *spatial)`` for kernels, spatial axes in the order they appear
in the input layout.
"""

from __future__ import annotations

import functools
import string
from dataclasses import dataclass, replace

from convbridge import frameworks
from convbridge._tracing import tracing
from convbridge.errors import LayoutError, ShapeError, brief

__all__ = ["Layout", "resolve_layout", "default_spatial_letters", "default_kernel_layout", "inverse", "permutation",
           "RESERVED"]

#: Letters with a fixed meaning; every other letter is a spatial axis.
RESERVED = "NCOI"


@dataclass(frozen=True)
class Layout:
    """Resolved layouts of input, kernel and output, always with an N axis.

    Attributes:
        lhs: input layout, e.g. ``"NCHW"`` (``N`` prepended when the user's input is unbatched).
        rhs: kernel layout, e.g. ``"OIHW"``.
        out: output layout, e.g. ``"NCHW"``.
        batched: False when the user's arrays have no N axis (it is added and removed around the op).
    """

    lhs: str
    rhs: str
    out: str
    batched: bool = True

    @property
    def spatial(self) -> tuple[str, ...]:
        """Spatial letters in the order of the input layout (the canonical order)."""
        return tuple(c for c in self.lhs if c not in RESERVED)

    @property
    def lhs_perm(self) -> tuple[int, ...]:
        """Axes of the input to take, in order, to get ``(N, C, *spatial)``."""
        return _perm(self.lhs, "NC", self.spatial)

    @property
    def rhs_perm(self) -> tuple[int, ...]:
        """Axes of the kernel to take, in order, to get ``(O, I, *spatial)``."""
        return _perm(self.rhs, "OI", self.spatial)

    @property
    def out_perm(self) -> tuple[int, ...]:
        """Axes of the output to take, in order, to get ``(N, C, *spatial)``."""
        return _perm(self.out, "NC", self.spatial)

    @property
    def is_canonical(self) -> bool:
        """True when input, kernel and output are all channels-first."""
        ident = tuple(range(len(self.lhs)))
        return self.lhs_perm == self.rhs_perm == self.out_perm == ident

    def as_batched(self) -> Layout:
        """The same layout for arrays that have their N axis (the dispatcher adds it)."""
        return self if self.batched else replace(self, batched=True)

    def canonical_layout(self) -> Layout:
        """The same spatial letters, channels-first (``NC...``, ``OI...``), batched."""
        sp = "".join(self.spatial)
        return Layout("NC" + sp, "OI" + sp, "NC" + sp)

    def user_out_shape(self, canonical: tuple[int, ...], *, batched: bool | None = None) -> tuple[int, ...]:
        """A canonical ``(N, C, *spatial)`` output shape in the output layout (no N when unbatched)."""
        return self._user_shape(self.out, canonical, self.batched if batched is None else batched)

    def user_in_shape(self, canonical: tuple[int, ...]) -> tuple[int, ...]:
        """A canonical ``(N, C, *spatial)`` input shape in the input layout (no N when unbatched)."""
        return self._user_shape(self.lhs, canonical, self.batched)

    def _user_shape(self, letters: str, canonical: tuple[int, ...], batched: bool) -> tuple[int, ...]:
        sizes = dict(zip(("N", "C", *self.spatial), canonical))
        return tuple(sizes[c] for c in (letters if batched else self.user(letters)))

    def user(self, letters: str) -> str:
        """Drop the implicit N from ``letters`` when the user's arrays are unbatched."""
        return letters if self.batched else letters.replace("N", "")

    def __str__(self) -> str:
        return f"{self.user(self.lhs)},{self.rhs}->{self.user(self.out)}"


def _perm(letters: str, first_two: str, spatial: tuple[str, ...]) -> tuple[int, ...]:
    return permutation(letters, first_two + "".join(spatial))


def inverse(perm: tuple[int, ...]) -> tuple[int, ...]:
    """The permutation that undoes ``perm``."""
    return tuple(sorted(range(len(perm)), key=perm.__getitem__))


@functools.lru_cache(maxsize=1024)
def _permutation(src: str, dst: str) -> tuple[int, ...]:
    if sorted(src) != sorted(dst):
        raise LayoutError(f"layouts {src!r} and {dst!r} name different axes; a permutation needs the same letters")
    return tuple(src.index(c) for c in dst)


def permutation(src: str, dst: str) -> tuple[int, ...]:
    """Axes of an array laid out as ``src`` to take, in order, to lay it out as ``dst``.

    >>> permutation("NHWC", "NCHW"), permutation("OIHW", "HWIO")
    ((0, 3, 1, 2), (2, 3, 1, 0))
    """
    return (_permutation.__wrapped__ if tracing() else _permutation)(src, dst)


def default_kernel_layout(spatial: str, op: str = "conv", *, channels_last: bool = False) -> str:
    """The kernel layout convbridge assumes: torch's with channels-first input (``OIHW``; ``IOHW`` for
    conv_transpose), lax's and Flax's with channels-last input (``HWIO`` for both ops; ``I`` is x's channels).

    >>> default_kernel_layout("HW"), default_kernel_layout("HW", "conv_transpose")
    ('OIHW', 'IOHW')
    >>> default_kernel_layout("W", channels_last=True), default_kernel_layout("W", "conv_transpose", channels_last=True)
    ('WIO', 'WIO')
    """
    if channels_last:
        return frameworks.LAX.transpose_layout(spatial) if op == "conv_transpose" else \
            frameworks.FLAX_LINEN.kernel_layout(spatial)
    return frameworks.TORCH.transpose_layout(spatial) if op == "conv_transpose" else \
        frameworks.TORCH.kernel_layout(spatial)


def default_spatial_letters(nsp: int) -> str:
    """``W``, ``HW``, ``DHW`` for 1-3 spatial dims; other letters beyond that."""
    if nsp <= 3:
        return "DHW"[3 - nsp :]
    pool = [c for c in string.ascii_uppercase if c not in RESERVED]
    return "".join(pool[:nsp])


def resolve_layout(layout: object, x_ndim: int, w_ndim: int, op: str = "conv") -> Layout:
    """Resolve a user layout argument into a validated :class:`Layout`.

    Args:
        layout: ``None``; an input layout such as ``"NHWC"``; ``"NHWC,HWIO->NHWC"``;
            or JAX's 3-tuple ``("NHWC", "HWIO", "NHWC")``.
        x_ndim: rank of the input array.
        w_ndim: rank of the kernel array.
        op: ``"conv"`` or ``"conv_transpose"`` (sets the channels-first kernel default).

    Raises:
        LayoutError: malformed strings or letters that disagree between the three.
        ShapeError: the arrays' ranks do not fit the layout.
    """
    key = tuple(layout) if isinstance(layout, list) else layout
    resolve = _resolve_cached.__wrapped__ if tracing() else _resolve_cached  # torch.compile ignores the cache
    try:
        return resolve(key, x_ndim, w_ndim, op)
    except TypeError as exc:  # unhashable layout object
        raise LayoutError(
            f"layout must be None, a string such as 'NHWC', 'NHWC,HWIO->NHWC' or a 3-tuple of strings; "
            f"got {type(layout).__name__} {brief(layout)}"
        ) from exc


@functools.lru_cache(maxsize=256)
def _resolve_cached(layout: object, x_ndim: int, w_ndim: int, op: str) -> Layout:
    if layout is None:
        return _default_layout(x_ndim, w_ndim, op)
    lhs, rhs, out = _split(layout)
    if rhs is None:
        rhs = default_kernel_layout("".join(c for c in lhs if c not in RESERVED), op, channels_last=lhs.endswith("C"))
    out = lhs if out is None else out
    _check_letters(lhs, "input", required="C", forbidden="OI", optional="N")
    _check_letters(rhs, "kernel", required="OI", forbidden="NC")
    _check_letters(out, "output", required="C", forbidden="OI", optional="N")
    _check_same_spatial(lhs, rhs, out)
    if ("N" in lhs) != ("N" in out):
        raise LayoutError(
            f"input layout {lhs!r} and output layout {out!r} disagree on the batch axis N; "
            "include N in both or in neither"
        )
    if len(rhs) != w_ndim:
        raise ShapeError(
            f"kernel has {w_ndim} dims but kernel layout {rhs!r} describes {len(rhs)}; "
            "reshape the kernel or fix the layout"
        )
    if len(lhs) != x_ndim:
        raise ShapeError(
            f"input has {x_ndim} dims but input layout {lhs!r} describes {len(lhs)}; "
            "reshape the input or fix the layout (omit N for an unbatched input)"
        )
    batched = "N" in lhs
    if not batched:
        lhs, out = "N" + lhs, "N" + out
    return Layout(lhs, rhs, out, batched)


def _default_layout(x_ndim: int, w_ndim: int, op: str) -> Layout:
    nsp = w_ndim - 2
    if nsp < 1:
        raise ShapeError(
            f"kernel has {w_ndim} dims but needs at least 3 (out-channels, in-channels, one spatial dim); "
            "add the missing axes, e.g. w[None, None] for a single 1-d filter"
        )
    sp = default_spatial_letters(nsp)
    kernel = default_kernel_layout(sp, op)
    if x_ndim not in (w_ndim, w_ndim - 1):
        raise ShapeError(
            f"input has {x_ndim} dims but a kernel with {w_ndim} dims ({nsp} spatial) needs an input of "
            f"{w_ndim} dims (N, C, {nsp} spatial) or {w_ndim - 1} dims (unbatched C, {nsp} spatial); "
            "check the input's rank or the kernel's"
        )
    return Layout("NC" + sp, kernel, "NC" + sp, batched=x_ndim == w_ndim)


def _split(layout: object) -> tuple[str, str | None, str | None]:
    if isinstance(layout, str):
        text = layout.replace(" ", "")
        if "->" in text or "," in text:
            lhs_rhs, arrow, out = text.partition("->")
            parts = lhs_rhs.split(",")
            if not arrow or len(parts) != 2 or not out:
                raise LayoutError(
                    f"layout {brief(layout)} is malformed; write 'input,kernel->output', e.g. 'NHWC,HWIO->NHWC'"
                )
            return parts[0], parts[1], out
        return text, None, None
    if isinstance(layout, tuple) and len(layout) == 3 and all(isinstance(s, str) for s in layout):
        return layout
    raise LayoutError(
        f"layout must be None, a string such as 'NHWC', 'NHWC,HWIO->NHWC' or a 3-tuple of strings; "
        f"got {type(layout).__name__} {brief(layout)}"
    )


def _check_letters(text: str, what: str, *, required: str, forbidden: str, optional: str = "") -> None:
    if not text or not all(c in string.ascii_uppercase for c in text):
        raise LayoutError(f"{what} layout {text!r} must consist of upper-case letters, e.g. 'NCHW' or 'OIHW'")
    for c in text:
        if text.count(c) > 1:
            raise LayoutError(f"{what} layout {text!r} repeats {c!r}; each letter names one axis")
    for c in required:
        if c not in text:
            role = {"C": "channels", "O": "output channels", "I": "input channels"}[c]
            raise LayoutError(f"{what} layout {text!r} has no {c!r} ({role}); add it, e.g. 'NCHW' or 'OIHW'")
    for c in forbidden:
        if c in text:
            allowed = "N, C" if what != "kernel" else "O, I"
            raise LayoutError(
                f"{what} layout {text!r} contains {c!r}, which is not allowed there; "
                f"{what} layouts use {allowed} and spatial letters"
            )
    if len(text) - sum(c in text for c in required + optional) < 1:
        raise LayoutError(f"{what} layout {text!r} has no spatial axis; add at least one, e.g. 'W'")


def _check_same_spatial(lhs: str, rhs: str, out: str) -> None:
    sp = {name: [c for c in s if c not in RESERVED] for name, s in (("input", lhs), ("kernel", rhs), ("output", out))}
    for name, text in (("kernel", rhs), ("output", out)):
        a, b = sp[name], sp["input"]
        if len(a) != len(b):
            raise LayoutError(
                f"{name} layout {text!r} has {len(a)} spatial axes but input layout {lhs!r} has {len(b)}; "
                "use the same spatial letters in all three strings"
            )
        if set(a) != set(b):
            raise LayoutError(
                f"{name} layout {text!r} uses spatial letters {''.join(a)!r} but input layout {lhs!r} uses "
                f"{''.join(b)!r}; use the same spatial letters in all three strings"
            )
