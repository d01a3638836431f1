"""The argument and array aliases of the public API, in one place.

Arrays come from any framework (NumPy, JAX, PyTorch) and are typed loosely: convbridge
never imports a framework to annotate a signature. The argument aliases name the
forms the spec builders accept; the builders are the only code that interprets them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeAlias

__all__ = ["Array", "ArrayLike", "Shape", "IntOrInts", "Pair", "Pairs", "PaddingLike", "LayoutLike", "DTypes"]

#: A NumPy, JAX or PyTorch array (what a backend returns).
Array: TypeAlias = Any
#: Anything an array can be made from: a NumPy, JAX or PyTorch array, or nested lists of numbers.
ArrayLike: TypeAlias = Any
#: An array's shape.
Shape: TypeAlias = tuple[int, ...]
#: One int for every spatial dim, or one int per spatial dim.
IntOrInts: TypeAlias = int | Sequence[int]
#: A ``(lo, hi)`` pair of widths.
Pair: TypeAlias = tuple[int, int]
#: One ``(lo, hi)`` pair per spatial dim, resolved.
Pairs: TypeAlias = tuple[Pair, ...]
#: An int, per-dim ints, per-dim ``(lo, hi)`` pairs, or a padding string (``"valid"``, ``"same"``, ...).
PaddingLike: TypeAlias = int | str | Sequence[int | Sequence[int]]
#: ``None``, an input layout (``"NHWC"``), ``"NHWC,HWIO->NHWC"`` or JAX's 3-tuple of strings.
LayoutLike: TypeAlias = str | tuple[str, str, str] | Sequence[str] | None
#: The dtype names of (input, kernel, bias), ``None`` where unknown or absent.
DTypes: TypeAlias = tuple[str | None, ...]
