"""Whole models across frameworks: find the first layer where two CNNs diverge, and why.

>>> import convbridge as cb
>>> callable(cb.diff)
True

See :func:`convbridge.diff.core.diff` (also ``cb.diff``) and, for the bounds, :mod:`convbridge.diff.layers`.
"""

from __future__ import annotations

from convbridge.diff.core import diff
from convbridge.diff.report import DiffReport, DiffRow, GradRow

__all__ = ["diff", "DiffReport", "DiffRow", "GradRow"]
