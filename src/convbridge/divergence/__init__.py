"""Whole models across frameworks: find the first layer where two CNNs diverge, and why.

>>> import convbridge as cb
>>> callable(cb.diff)
True

See :func:`convbridge.divergence.core.diff` (``cb.diff``) and, for the bounds, :mod:`convbridge.divergence.layers`.
"""

from __future__ import annotations

from convbridge.divergence.core import diff
from convbridge.divergence.report import DiffReport, DiffRow, GradRow

__all__ = ["diff", "DiffReport", "DiffRow", "GradRow"]
