"""What :func:`convbridge.divergence` returns: one row per paired layer, the glue between layers, the end-to-end output.

A row judges one layer of model A against its counterpart in model B **on the same input** (A's input to that
layer, converted to B's layout), so errors do not accumulate: the first real difference stands out. It also
compares the layer's *own* input in the two full runs, so that a bug in the code between layers (a flatten in
the wrong order, a missing transpose) is named at the first layer whose inputs differ while every earlier
output agreed.

Ratios are in units of the unit roundoff times the layer's gauge: ``r = max |y_a - y_b| / (u G)`` and
``allowed`` is the bound in the same units (see :mod:`convbridge.divergence.layers` for each kind's gauge and bound).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DiffRow", "DiffReport", "GradRow", "VERDICTS"]

#: Best to worst; a report's verdict is its worst row's.
VERDICTS = ("identical", "equivalent", "inconclusive", "mismatch")


@dataclass(frozen=True)
class DiffRow:
    """One pair of layers (or the end-to-end output, ``kind == "output"``).

    Attributes:
        index: position in execution order (0-based), ``-1`` for the end-to-end row.
        name_a, name_b: each layer's path in its model (``"layer1.0.conv1"``, ``"layer1_0/conv1"``).
        type_a, type_b: each layer's class, e.g. ``"torch.nn.Conv2d"``, ``"flax.linen.Conv"``.
        kind: the canonical kind judged (``"conv"``, ``"batchnorm"``, ``"relu"``, ... ``"output"``).
        shape_in, shape_out: A's input and output shapes (A's layout).
        verdict: ``"identical" | "equivalent" | "inconclusive" | "mismatch"`` of the same-input comparison.
        r: worst ``|y_a - y_b| / (u G)`` over the elements (0 when identical; inf where the gauge is 0 and they
            differ).
        allowed: the bound on ``r`` (both sides' rounding, documented per kind); ``0`` for exact layers.
        max_abs: worst ``|y_a - y_b|``.
        evidence: what decided, in words (float64 re-run, counts of elements beyond the bound, ...).
        cause: the likely cause of a mismatch when convbridge can tell (``"padding: ..."``, ``"eps 1e-05 vs
            0.001"``, ``"kernel flipped"``, ...), else ``""``.
        input_verdict: ``"agree"`` when B's own input to this layer (what B's code between layers makes of B's
            earlier layers' outputs) agrees with A's within what those layers' differences explain, in float32 or
            else in the float64 re-runs; ``"glue"`` when it does not (the code between the previous layer and this
            one differs); ``"undecided"`` when only the float32 rule failed and no float64 re-run ran; ``""`` when
            not checked (``glue=False``).
        input_max_abs, input_allowed: B's own input against A's: worst absolute difference and the bound it was held
            to (from the earlier outputs' differences, see :func:`convbridge.divergence.layers.glue_bound`).
        glue_cause: the likely glue bug (``"flatten order: ..."``), when convbridge can tell.
        bound: how ``allowed`` was derived (``"rigorous: gamma_K G, K=27"``, ``"exact: a selection"``, ...).
    """

    index: int
    name_a: str
    name_b: str
    type_a: str
    type_b: str
    kind: str
    shape_in: tuple[int, ...]
    shape_out: tuple[int, ...]
    verdict: str
    r: float
    allowed: float
    max_abs: float
    evidence: str = ""
    cause: str = ""
    input_verdict: str = ""
    input_max_abs: float = 0.0
    input_allowed: float = 0.0
    glue_cause: str = ""
    bound: str = ""

    @property
    def divergent(self) -> bool:
        """The layer or the glue before it differs in meaning."""
        return self.verdict == "mismatch" or self.input_verdict == "glue"

    def __str__(self) -> str:
        where = f"{self.name_a} ({self.type_a}) <-> {self.name_b} ({self.type_b})"
        if self.input_verdict == "glue":
            text = (f"the input of {where} differs while every earlier layer agreed (|d| {self.input_max_abs:.3g} > "
                    f"{self.input_allowed:.3g}): the code between the previous layer and this one differs")
            return text + (f"; likely cause: {self.glue_cause}" if self.glue_cause else "")
        text = f"{where}: {self.verdict}, r {_num(self.r)} (allowed {_num(self.allowed)})"
        if self.evidence:
            text += f"; {self.evidence}"
        return text + (f"; likely cause: {self.cause}" if self.cause else "")

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["divergent"] = self.divergent
        d["shape_in"], d["shape_out"] = list(self.shape_in), list(self.shape_out)
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


@dataclass(frozen=True)
class GradRow:
    """One gradient (``diff(..., grad=True)``): with respect to the input or one parameter, judged end to end.

    Attributes:
        name_a, name_b: the parameter's path in each model (``"input"`` for the input).
        shape: A's shape of the gradient (A's layout).
        verdict: ``"identical" | "equivalent" | "mismatch"``.
        max_abs, max_rel: worst difference of the float32 gradients (relative to the largest gradient magnitude).
        rel64: the same for the float64 re-runs of both models (what decides the meaning).
        evidence: what decided.
    """

    name_a: str
    name_b: str
    shape: tuple[int, ...]
    verdict: str
    max_abs: float
    max_rel: float
    rel64: float
    evidence: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["shape"] = list(self.shape)
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


@dataclass(frozen=True)
class DiffReport:
    """The layer-by-layer comparison of two models on one input.

    Attributes:
        model_a, model_b: each model's description (``"torch ResNet18"``, ``"flax.linen ResNet18"``).
        rows: one :class:`DiffRow` per paired layer, in execution order.
        output: the end-to-end row (``kind == "output"``).
        unpaired_a, unpaired_b: layers captured on one side only (treated as glue), by name.
        grads: gradient rows (``grad=True``), else empty.
        notes: anything the reader should know (layouts assumed, re-runs skipped, ...).
        seconds: wall time of the diff.
    """

    model_a: str
    model_b: str
    rows: tuple[DiffRow, ...]
    output: DiffRow
    unpaired_a: tuple[str, ...] = ()
    unpaired_b: tuple[str, ...] = ()
    grads: tuple[GradRow, ...] = ()
    notes: tuple[str, ...] = ()
    seconds: float = math.nan
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def first_divergent(self) -> DiffRow | None:
        """The first row whose layer, or the glue before it, differs in meaning; None when everything agrees."""
        return next((row for row in self.rows if row.divergent), None)

    @property
    def verdict(self) -> str:
        """The worst verdict over the rows, the glue checks, the output and the gradients."""
        found = [row.verdict for row in self.rows] + [self.output.verdict] + [g.verdict for g in self.grads]
        if any(row.input_verdict == "glue" for row in self.rows):
            found.append("mismatch")
        if any(row.input_verdict == "undecided" for row in self.rows):
            found.append("inconclusive")
        return max(found, key=VERDICTS.index) if found else "identical"

    def to_dict(self) -> dict[str, Any]:
        first = self.first_divergent
        return {"model_a": self.model_a, "model_b": self.model_b, "verdict": self.verdict,
                "first_divergent": None if first is None else first.index,
                "rows": [row.to_dict() for row in self.rows], "output": self.output.to_dict(),
                "unpaired_a": list(self.unpaired_a), "unpaired_b": list(self.unpaired_b),
                "grads": [g.to_dict() for g in self.grads], "notes": list(self.notes),
                "seconds": self.seconds if math.isfinite(self.seconds) else None}

    def __str__(self) -> str:
        from convbridge.divergence.render import text

        return text(self)

    def __rich__(self) -> Any:
        """The table for ``rich.print(report)`` (terminals), the first divergent row highlighted."""
        from convbridge.divergence.render import table

        return table(self)

    def _repr_html_(self) -> str:
        from convbridge.divergence.render import html_fragment

        return html_fragment(self)

    def save_html(self, path: Any) -> Any:
        """Write the report as a self-contained HTML page with the per-layer bar chart; returns the path."""
        from convbridge.divergence.render import save_html

        return save_html(self, path)


def _num(v: float) -> str:
    return "inf" if v == math.inf else f"{v:.3g}"
