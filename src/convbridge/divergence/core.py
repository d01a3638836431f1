"""``cb.diff``: find the first layer where two models (torch, Flax linen or nnx, Equinox) diverge, and why."""

from __future__ import annotations

import math
import re
import time
from typing import Any, Callable, Mapping, Sequence, TypeVar

import numpy as np

from convbridge.arrays import to_numpy
from convbridge.divergence._common import Call, Run, Side, to_channels_first, to_channels_last
from convbridge.divergence.layers import PARAMETRIC, causes, gauge, glue_bound
from convbridge.divergence.report import DiffReport, DiffRow
from convbridge.errors import (ArgumentError, ArgumentTypeError, ConvBridgeError, LayoutError, ShapeError,
                               describe_value)

__all__ = ["diff", "side"]

T = TypeVar("T")

#: The float64 end-to-end outputs of two models computing the same function agree far better than this (relative
#: to the output's largest magnitude); every semantic change we plant moves them by far more.
E2E_RELATIVE_64 = 1e-7
#: Without a float64 re-run, outputs within this (relative to the largest output) are rounding when every layer and
#: the glue between them agree; beyond it the float64 re-run decides (``rerun="auto"``).
E2E_RELATIVE_32 = 1e-4


def side(model: Any, layout: str | None = None) -> Side:
    """The :class:`Side` driving ``model``: a torch module, ``(linen_module, variables[, apply_kwargs])``, an nnx
    module or an Equinox module."""
    if isinstance(model, tuple) and len(model) in (2, 3):
        roots = {c.__module__.partition(".")[0] for c in type(model[0]).__mro__}
        if "flax" not in roots:
            raise ArgumentTypeError(f"a tuple model is (linen_module, variables[, apply_kwargs]); got a tuple holding "
                                    f"{describe_value(model[0])}")
        from convbridge.divergence._jax import LinenSide

        return _with_layout(LinenSide(model[0], model[1], model[2] if len(model) == 3 else None), layout)
    roots = {c.__module__.partition(".")[0] for c in type(model).__mro__}
    if "torch" in roots:
        from convbridge.divergence._torch import TorchSide

        return _with_layout(TorchSide(model), layout)
    if "flax" in roots:
        import flax.linen as nn

        if isinstance(model, nn.Module):
            raise ArgumentError(f"a flax.linen module holds no weights: pass ({type(model).__name__}(...), variables)")
        from convbridge.divergence._jax import NnxSide

        return _with_layout(NnxSide(model), layout)
    if "equinox" in roots:
        from convbridge.divergence._jax import EquinoxSide

        return _with_layout(EquinoxSide(model), layout)
    raise ArgumentTypeError(f"cannot diff {describe_value(model)}: give a torch.nn.Module, a (flax.linen module, "
                            "variables) pair, a flax.nnx module or an Equinox module")


def _with_layout(s: Side, layout: str | None) -> Side:
    if layout is None:
        return s
    if not isinstance(layout, str) or not layout.strip():
        raise ArgumentError(f"layout_b must be a layout string such as 'NCHW' or 'NHWC', got {describe_value(layout)}")
    lay = layout.upper()
    spatial = lay.replace("N", "").replace("C", "")
    if lay not in ("NC" + spatial, "N" + spatial + "C") or spatial not in ("", "W", "L", "HW", "DHW"):
        raise LayoutError(f"layout_b {layout!r}: diff gives B the input channels first or channels last, batch first "
                          f"and the spatial axes in A's order: write e.g. 'NCHW' or 'NHWC' ('NCL' / 'NLC', 'NCDHW' / "
                          "'NDHWC'); transpose other orders inside model B")
    s.channels_last = lay.endswith("C") and lay != "NC"
    return s


class _Convert:
    """Activations between A's and B's layouts (channels first or last; rank 2 unchanged)."""

    def __init__(self, a: Side, b: Side) -> None:
        self.same = a.channels_last == b.channels_last
        self.a_last = a.channels_last

    def to_b(self, v: np.ndarray) -> np.ndarray:
        if self.same:
            return v
        return to_channels_last(v) if not self.a_last else to_channels_first(v)

    def to_a(self, v: np.ndarray) -> np.ndarray:
        if self.same:
            return v
        return to_channels_first(v) if not self.a_last else to_channels_last(v)


# ---------------------------------------------------------------------------------------------------- pairing

def _pattern(src: str) -> re.Pattern[str]:
    return re.compile("^" + "".join("(.*?)" if c == "*" else re.escape(c) for c in src) + "$")


def _mapped(name: str, name_map: Mapping[str, str]) -> str | None:
    if name in name_map:
        return name_map[name]
    for src, dst in name_map.items():
        if "*" in src:
            m = _pattern(src).match(name)
            if m:
                parts = iter(m.groups())
                return re.sub(r"\*", lambda _: next(parts, "*"), dst)
    return None


def pair(calls_a: Sequence[Call], calls_b: Sequence[Call],
         name_map: Mapping[str, str] | None = None) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """Pair the two runs' leaf calls: ``(pairs, unpaired_a, unpaired_b)`` (indices).

    With ``name_map`` (A's layer name -> B's; ``*`` in a key is substituted into the value in order), every mapped
    call pairs with B's call of that name (the k-th call of a reused layer with its k-th call). Without it,
    layers with parameters pair one to one in order and must agree in kind; between two such layers, layers
    without parameters pair when both sides have the same kinds in the same order, and otherwise count as glue.

    Raises:
        ArgumentError: the layers with parameters differ in number or kind (the first mismatch named).
    """
    if name_map:
        return _pair_by_name(calls_a, calls_b, name_map)
    pa = [i for i, c in enumerate(calls_a) if c.info.kind in PARAMETRIC]
    pb = [j for j, c in enumerate(calls_b) if c.info.kind in PARAMETRIC]
    for n, (i, j) in enumerate(zip(pa, pb)):
        if calls_a[i].info.kind != calls_b[j].info.kind:
            raise ArgumentError(f"the models' layers with parameters differ at the {_ordinal(n + 1)}: "
                                f"{calls_a[i].name} ({calls_a[i].type_name}, {calls_a[i].info.kind}) vs {calls_b[j].name} "
                                f"({calls_b[j].type_name}, {calls_b[j].info.kind}); pass name_map= to pair them by "
                                "name")
    if len(pa) != len(pb):
        n = min(len(pa), len(pb))
        extra = [calls_a[i].name for i in pa[n:]] or [calls_b[j].name for j in pb[n:]]
        who = "A" if len(pa) > len(pb) else "B"
        raise ArgumentError(f"model A runs {len(pa)} layers with parameters and model B {len(pb)}; model {who}'s "
                            f"extra: {', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''}; pass name_map= to pair "
                            "them by name")
    pairs: list[tuple[int, int]] = []
    unpaired_a: list[int] = []
    unpaired_b: list[int] = []
    bounds_a, bounds_b = [-1, *pa, len(calls_a)], [-1, *pb, len(calls_b)]
    for g in range(len(bounds_a) - 1):
        gap_a = list(range(bounds_a[g] + 1, bounds_a[g + 1]))
        gap_b = list(range(bounds_b[g] + 1, bounds_b[g + 1]))
        kinds_a = [calls_a[i].info.kind for i in gap_a]
        kinds_b = [calls_b[j].info.kind for j in gap_b]
        if kinds_a == kinds_b:
            pairs.extend(zip(gap_a, gap_b))
        else:
            common = _common_kinds(kinds_a, kinds_b)
            pairs.extend((gap_a[i], gap_b[j]) for i, j in common)
            unpaired_a.extend(i for n, i in enumerate(gap_a) if n not in {c[0] for c in common})
            unpaired_b.extend(j for n, j in enumerate(gap_b) if n not in {c[1] for c in common})
        if g < len(pa):
            pairs.append((pa[g], pb[g]))
    return pairs, unpaired_a, unpaired_b


def _common_kinds(ka: list[str], kb: list[str]) -> list[tuple[int, int]]:
    """The longest common subsequence of two kind lists, as index pairs (ignoring "other")."""
    n, m = len(ka), len(kb)
    best = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        for j in range(m - 1, -1, -1):
            best[i][j] = (best[i + 1][j + 1] + 1 if ka[i] == kb[j] and ka[i] != "other"
                          else max(best[i + 1][j], best[i][j + 1]))
    out, i, j = [], 0, 0
    while i < n and j < m:
        if ka[i] == kb[j] and ka[i] != "other" and best[i][j] == best[i + 1][j + 1] + 1:
            out.append((i, j))
            i, j = i + 1, j + 1
        elif best[i + 1][j] >= best[i][j + 1]:
            i += 1
        else:
            j += 1
    return out


def _pair_by_name(calls_a: Sequence[Call], calls_b: Sequence[Call],
                  name_map: Mapping[str, str]) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    by_name: dict[str, list[int]] = {}
    for j, c in enumerate(calls_b):
        by_name.setdefault(c.name, []).append(j)
    unused = [k for k in name_map if not any(k == c.name or ("*" in k and _pattern(k).match(c.name))
                                             for c in calls_a)]
    if unused:
        names = sorted({c.name for c in calls_a})
        raise ArgumentError(f"name_map keys that match no layer of model A: {', '.join(map(repr, unused[:5]))}; A's "
                            f"layers are {', '.join(names[:8])}{' ...' if len(names) > 8 else ''}")
    sources: dict[str, list[str]] = {}
    pairs, unpaired_a, missing = [], [], []
    for i, c in enumerate(calls_a):
        target = _mapped(c.name, name_map)
        if target is None:
            target = c.name if c.name in by_name else None
        if target is None:
            unpaired_a.append(i)
            continue
        sources.setdefault(target, []).append(c.name)
        k = len(sources[target]) - 1
        found = by_name.get(target, [])
        if k >= len(found):
            missing.append(target)
            continue
        pairs.append((i, found[k]))
    if missing:
        problems = []
        for target in dict.fromkeys(missing):
            who, n = ", ".join(dict.fromkeys(sources[target])), len(by_name.get(target, []))
            problems.append(f"A's {who} -> {target}, " + (f"which model B calls {n} time{'s' if n != 1 else ''}" if n
                                                           else "which model B does not have"))
        raise ArgumentError(f"name_map pairs more calls than model B makes: {'; '.join(problems[:4])}; B's layers are "
                            f"{', '.join(list(by_name)[:8])}{' ...' if len(by_name) > 8 else ''}")
    used = {j for _, j in pairs}
    return pairs, unpaired_a, [j for j in range(len(calls_b)) if j not in used]


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


# ---------------------------------------------------------------------------------------------------- judging

def _judge(ca: Call, cb_: Call, y_b: np.ndarray, y64_a: np.ndarray | None, y64_b: np.ndarray | None,
           u: float) -> tuple[str, float, float, float, str, str, str]:
    """``(verdict, r, allowed, max_abs, evidence, cause, bound)`` of B's layer on A's input against A's."""
    y_a = ca.y
    if y_b.shape != y_a.shape:
        return ("mismatch", math.inf, 0.0, math.inf, f"output shapes differ: {y_a.shape} vs {y_b.shape}",
                "; ".join(causes(ca.info, cb_.info)), "")
    if np.array_equal(y_a, y_b, equal_nan=True):
        return "identical", 0.0, 0.0, 0.0, "bitwise equal", "", ""
    ref = y64_a if y64_a is not None and y64_a.shape == y_a.shape else y_a.astype(np.float64)
    g, c, how, rigorous = gauge(ca.info, ca.x, ref, u)
    g = np.broadcast_to(np.asarray(g, np.float64), y_a.shape)
    d = np.abs(y_a.astype(np.float64) - y_b.astype(np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        r_el = np.where(d == 0, 0.0, d / (u * g))
    r_el = np.where(np.isnan(r_el), math.inf, r_el)
    r, allowed = float(np.max(r_el)), 2 * c
    max_abs = float(np.max(d))
    n_over = int(np.sum(r_el > allowed))
    cause = "; ".join(causes(ca.info, cb_.info) + _output_causes(ca, y_b))
    meaning = ""
    differs64 = None
    if y64_a is not None and y64_b is not None and y64_a.shape == y64_b.shape and y64_a.dtype == np.float64 \
            and y64_b.dtype == np.float64:
        u64 = 2.0**-53
        d64 = np.abs(y64_a - y64_b)
        with np.errstate(divide="ignore", invalid="ignore"):
            r64 = np.where(d64 == 0, 0.0, d64 / (u64 * g))
        r64 = np.where(np.isnan(r64), math.inf, r64)
        differs64 = bool(np.max(r64) > 2 * max(c, 16.0))
        meaning = (f"float64 re-runs differ (r64 {float(np.max(r64)):.3g}): they compute different functions"
                   if differs64 else "float64 re-runs agree")
    if r <= allowed:
        return "equivalent", r, allowed, max_abs, "within the bound", "", how
    evidence = f"{n_over} / {d.size} elements beyond the bound ({how})"
    if meaning:
        evidence += f"; {meaning}"
    if differs64 is False and not rigorous:
        return "inconclusive", r, allowed, max_abs, evidence, cause, how
    if differs64 is None and not rigorous:
        return "inconclusive", r, allowed, max_abs, evidence + "; no float64 re-run", cause, how
    return "mismatch", r, allowed, max_abs, evidence, cause, how


def _output_causes(ca: Call, y_b: np.ndarray) -> list[str]:
    """Causes read from the outputs: B's output a rearrangement of A's (a flatten's order, a transpose)."""
    if ca.info.kind == "flatten" and ca.x.ndim >= 3 and y_b.ndim == 2:
        n = ca.x.shape[0]
        if np.array_equal(y_b, np.moveaxis(ca.x, 1, -1).reshape(n, -1)):
            return ["flatten order: B flattens channels-last (N, H, W, C) where A flattens (N, C, H, W); transpose "
                    "to channels-first before flattening, or permute the next layer's weight rows"]
        if np.array_equal(y_b, np.moveaxis(ca.x, -1, 1).reshape(n, -1)):
            return ["flatten order: B flattens channels-first where A flattens channels-last"]
    cause = _glue_cause(ca.y, y_b, None, 0.0)
    return [cause.replace("B's input is A's", "B's output is A's")] if cause else []


#: In float64 the glue may also hold elementwise functions computed to a few ulp (GELU, SiLU, tanh...): each side's
#: input is allowed ``GLUE_ULPS_64 u |x|`` more than the float32 rule.
GLUE_ULPS_64 = 64.0


def _glue(ca: Call, x_b_own: np.ndarray, d_earlier: float, u: float, prev: Call | None) -> tuple[str, float, float,
                                                                                                  str]:
    """``(input_verdict, max_abs, allowed, cause)``: B's own input against A's input to the layer."""
    if x_b_own.shape != ca.x.shape:
        cause = f"input shapes differ: {ca.x.shape} in A vs {x_b_own.shape} in B (A's layout)"
        return "glue", math.inf, 0.0, cause
    d = _absdiff(ca.x, x_b_own)
    bound = glue_bound(d_earlier, ca.x, u)
    if not np.any(d > bound):
        return "agree", float(np.max(d, initial=0.0)), float(np.max(bound, initial=0.0)), ""
    return "glue", float(np.max(d)), float(np.max(bound)), _glue_cause(ca.x, x_b_own, prev, float(np.max(bound)))


def _glue64(x64_a: np.ndarray, x64_b: np.ndarray, d64_earlier: float) -> bool:
    """Whether the float64 re-runs' inputs to a layer agree (the glue computes the same function)."""
    if x64_a.shape != x64_b.shape:
        return False
    bound = glue_bound(d64_earlier, x64_a, 2.0**-53) + GLUE_ULPS_64 * 2.0**-53 * np.abs(x64_a)
    return not bool(np.any(_absdiff(x64_a, x64_b) > bound))


@np.errstate(invalid="ignore", over="ignore")
def _absdiff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``|a - b|`` in float64: 0 where both are the same non-finite value, inf where only one is."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    same = (a64 == b64) | (np.isnan(a64) & np.isnan(b64))
    d = np.abs(a64 - b64)
    return np.where(same, 0.0, np.where(np.isnan(d), np.inf, d))


def _glue_cause(x_a: np.ndarray, x_b: np.ndarray, prev: Call | None, tol: float = 0.0) -> str:
    """Name a glue bug when B's input is a rearrangement of A's (or of the previous output), to within ``tol``
    (the bound the inputs themselves failed)."""
    def close(p: np.ndarray, q: np.ndarray) -> bool:
        return p.shape == q.shape and float(np.max(_absdiff(p, q), initial=0.0)) <= tol

    if prev is not None and x_a.ndim == 2 and prev.y.ndim >= 3 and prev.y.shape[0] == x_a.shape[0]:
        y = prev.y
        n = y.shape[0]
        last = np.moveaxis(y, 1, -1).reshape(n, -1)
        first = np.moveaxis(y, -1, 1).reshape(n, -1)
        if close(x_b, last) and close(x_a, y.reshape(n, -1)):
            return ("flatten order: B flattens the activations channels-last (N, H, W, C) where A flattens (N, C, H, "
                    "W); transpose to channels-first before flattening, or permute the next layer's weight rows")
        if close(x_b, first) and close(x_a, y.reshape(n, -1)):
            return "flatten order: B flattens channels-first where A flattens channels-last"
    if x_a.ndim >= 3:
        for axes in _permutations(x_a.ndim):
            if x_a.transpose(axes).shape == x_b.shape and close(x_b, x_a.transpose(axes)) and axes != tuple(
                    range(x_a.ndim)):
                return f"a transpose: B's input is A's with axes permuted {axes}"
    if x_a.size == x_b.size and close(np.sort(x_a.ravel()), np.sort(x_b.ravel())):
        return "the same values in another order (a reshape or transpose differs)"
    return ""


def _permutations(n: int) -> list[tuple[int, ...]]:
    import itertools

    return [p for p in itertools.permutations(range(n)) if p[0] == 0] if n <= 5 else []


# ------------------------------------------------------------------------------------------------------- diff

def diff(model_a: Any, model_b: Any, x: Any, *, layout_b: str | None = None, name_map: Mapping[str, str] | None = None,
         glue: bool = True, grad: bool = False, rerun: bool | str = "auto") -> DiffReport:
    """Compare two models layer by layer on one input and name the first layer where they diverge.

    Each side is a torch module (in ``eval()`` mode), a ``(flax.linen module, variables)`` pair (or ``(module,
    variables, apply_kwargs)``), a flax.nnx module or an Equinox module (which takes one example: the batch runs
    one example at a time). Every leaf layer's input and output is captured (torch forward hooks, linen method
    interception, nnx/Equinox module traversal). Then each pair of layers is judged **on the same input**: B's
    layer runs on A's input to it, so that errors do not accumulate; and B's own input to each layer is compared
    with A's, so that a bug in the code between layers (a flatten in the wrong order, a missing transpose) is named
    at the first layer whose input differs while every earlier output agreed. The bounds are documented in
    :mod:`convbridge.divergence.layers`.

    Args:
        model_a, model_b: the two models.
        x: an input batch in model A's layout (torch: ``NCHW``); it is given to B in B's customary layout
            (channels last for Flax, channels first for torch and Equinox) unless ``layout_b`` says otherwise.
        layout_b: B's input layout (``"NCHW"`` or ``"NHWC"``...), when not its framework's custom.
        name_map: A's layer names -> B's (``"layer1.0.conv1": "layer1_0/conv1"``; ``*`` in a key is substituted
            into the value in order: ``{"layer*.*.conv1": "layer*_*/conv1"}``); default: pair by execution order.
        glue: also check each layer's own input (the glue between layers).
        grad: also compare the gradients of ``sum(y * g)`` (a seeded random ``g``) with respect to the input and
            every parameter.
        rerun: ``"auto"`` (default): when a layer or the output is not identical, or a bound is exceeded, run
            both models' layers again in float64 (on the same inputs), which tells a difference in meaning from
            rounding and decides the end-to-end verdict; ``True``: always; ``False``: never.

    Returns:
        A :class:`DiffReport`: ``.verdict``, ``.rows``, ``.first_divergent`` (None when everything agrees).

    Raises:
        ArgumentError: the models cannot be paired (say how, and suggest ``name_map``), or a torch model is in
            training mode.
    """
    start = time.perf_counter()
    if name_map is not None and not isinstance(name_map, Mapping):
        raise ArgumentTypeError(f"name_map maps A's layer names to B's (a dict), got {describe_value(name_map)}")
    if rerun not in (True, False, "auto"):
        raise ArgumentError(f"rerun must be 'auto', True or False, got {describe_value(rerun)}")
    sa, sb = side(model_a), side(model_b, layout_b)
    xa = _input(x)
    conv = _Convert(sa, sb)
    xb = conv.to_b(xa)
    run_a = _running(sa, "A", xa, lambda: sa.run(xa, {}, False))
    calls_b = _running(sb, "B", xb, lambda: sb.structure(xb))
    if not run_a.calls or not calls_b:
        empty = "A" if not run_a.calls else "B"
        raise ArgumentError(f"model {empty} ran no layer convbridge can see (no submodule was called); diff compares "
                            "models built from layers (torch.nn modules, linen/nnx submodules, Equinox modules)")
    pairs, un_a, un_b = pair(run_a.calls, calls_b, name_map)
    feeds_b = {j: conv.to_b(run_a.calls[i].x) for i, j in pairs}
    run_b = _running(sb, "B", xb, lambda: sb.run(xb, feeds_b, False))
    notes: list[str] = []
    if not pairs:
        notes.append("no layers paired: only the end-to-end output is judged")
    rows = _rows(pairs, run_a, calls_b, run_b, conv, None, None, glue)
    output = _output_row(run_a, run_b, conv, None, None, rows)
    undecided = any(r.verdict not in ("identical", "equivalent") or r.input_verdict in ("glue", "undecided")
                    for r in rows)
    if rerun is True or (rerun == "auto" and (undecided or output.verdict not in ("identical", "equivalent"))):
        try:
            r64a = sa.run(xa, {i: run_a.calls[i].x for i, _ in pairs}, True)
            r64b = sb.run(xb, feeds_b, True)
        except Exception as e:  # a model that cannot run in float64: judged by the float32 bounds alone
            notes.append(f"the float64 re-runs failed ({type(e).__name__}: {str(e)[:120]}); verdicts rest on the "
                         "float32 bounds alone")
        else:
            rows = _rows(pairs, run_a, calls_b, run_b, conv, r64a, r64b, glue)
            output = _output_row(run_a, run_b, conv, r64a.output, r64b.output, rows)
    grads: tuple[Any, ...] = ()
    if grad:
        from convbridge.divergence.gradients import gradient_rows

        names = {calls_b[j].name: run_a.calls[i].name for i, j in pairs if run_a.calls[i].info.kind in PARAMETRIC}
        grads = tuple(gradient_rows(model_a, model_b, xa, conv, run_a.output.shape, names))
    return DiffReport(sa.description, sb.description, tuple(rows), output,
                      tuple(run_a.calls[i].name for i in un_a), tuple(calls_b[j].name for j in un_b), grads,
                      tuple(notes), time.perf_counter() - start)


def _rows(pairs: Sequence[tuple[int, int]], run_a: Run, calls_b: Sequence[Call], run_b: Run, conv: _Convert,
          r64a: Run | None, r64b: Run | None, glue: bool) -> list[DiffRow]:
    rows = []
    d_earlier = d64_earlier = 0.0
    prev: Call | None = None
    fed64_a = r64a.fed if r64a is not None else {}
    fed64_b = r64b.fed if r64b is not None else {}
    for n, (i, j) in enumerate(pairs):
        ca, cb_ = run_a.calls[i], calls_b[j]
        u = _unit_roundoff(ca.y.dtype)
        y_b = conv.to_a(run_b.fed[j])
        y64_a = fed64_a.get(i)
        y64_b = conv.to_a(fed64_b[j]) if j in fed64_b else None
        verdict, r, allowed, max_abs, evidence, cause, how = _judge(ca, cb_, y_b, y64_a, y64_b, u)
        input_verdict, in_abs, in_allowed, glue_cause = "", 0.0, 0.0, ""
        if glue:
            input_verdict, in_abs, in_allowed, glue_cause = _glue(ca, conv.to_a(run_b.calls[j].x), d_earlier, u, prev)
            if input_verdict == "glue" and r64a is not None and r64b is not None:
                if _glue64(r64a.calls[i].x, conv.to_a(r64b.calls[j].x), d64_earlier):
                    input_verdict, glue_cause = "agree", ""  # a few-ulp function between the layers, not a bug
            elif input_verdict == "glue" and math.isfinite(in_abs) and r64a is None:
                input_verdict = "undecided"  # the float64 re-run decides (rerun=False: it did not run)
        d_earlier = max(d_earlier, max_abs)
        if y64_a is not None and y64_b is not None and y64_a.shape == y64_b.shape:
            d64_earlier = max(d64_earlier, float(np.max(_absdiff(y64_a, y64_b), initial=0.0)))
        rows.append(DiffRow(n, ca.name, cb_.name, ca.type_name, cb_.type_name, ca.info.kind, tuple(ca.x.shape),
                            tuple(ca.y.shape), verdict, r, allowed, max_abs, evidence, cause, input_verdict, in_abs,
                            in_allowed, glue_cause, how))
        prev = ca
    return rows


def _unit_roundoff(dtype: np.dtype) -> float:
    """The unit roundoff of a layer's output dtype (float32's for a dtype convbridge does not judge)."""
    from convbridge.precision import unit_roundoff

    try:
        return unit_roundoff(np.dtype(dtype).name)
    except ConvBridgeError:
        return 2.0**-24


def _input(x: Any) -> np.ndarray:
    """``x`` on the host, checked: a non-empty, finite float batch."""
    xa = to_numpy(x, "x")
    if xa.dtype.kind != "f":
        raise ArgumentError(f"x must be a float16, float32 or float64 array (the models' input), got {xa.dtype.name}; "
                            "cast it (and the models) to float32")
    if xa.ndim < 2:
        raise ShapeError(f"x must be a batch (N, ...) in model A's layout, got shape {xa.shape}")
    if xa.shape[0] == 0 or xa.size == 0:
        raise ShapeError(f"x is empty (shape {xa.shape}); diff needs at least one example")
    if not np.all(np.isfinite(xa)):
        raise ArgumentError(f"x holds {int(np.sum(~np.isfinite(xa)))} NaN or infinite values; diff compares the models "
                            "on finite input (how each framework propagates NaN through pooling is not a port's "
                            "meaning)")
    return xa


def _running(s: Side, who: str, x: np.ndarray, fn: Callable[[], T]) -> T:
    """``fn()``, with a framework's error while running model ``who`` re-raised as a ConvBridgeError that says so."""
    try:
        return fn()
    except ConvBridgeError:
        raise
    except Exception as e:
        layout = "channels last" if s.channels_last else "channels first"
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        hint = ""
        if "mutable" in str(e) or "batch_stats" in str(e):
            hint = ("; a linen BatchNorm in training mode updates batch_stats: pass (module, variables, {'train': "
                    "False}) (apply's keyword arguments) or use_running_average=True")
        elif "type" in first.lower() and ("double" in first or "float" in first or "Half" in first):
            hint = "; x's dtype must match the model's parameters (cast x, or the model)"
        raise ArgumentError(f"model {who} ({s.description}) failed on x of shape {x.shape} {x.dtype.name} ({layout}): "
                            f"{type(e).__name__}: {first[:300]}{hint}") from e


def _output_row(run_a: Run, run_b: Run, conv: _Convert, out64_a: np.ndarray | None, out64_b: np.ndarray | None,
                rows: Sequence[DiffRow]) -> DiffRow:
    ya, yb = run_a.output, conv.to_a(run_b.output)
    common = dict(index=-1, name_a="output", name_b="output", type_a="", type_b="", kind="output",
                  shape_in=tuple(run_a.calls[0].x.shape), shape_out=tuple(ya.shape))
    if ya.shape != yb.shape:
        return DiffRow(**common, verdict="mismatch", r=math.inf, allowed=0.0, max_abs=math.inf,  # type: ignore[arg-type]
                       evidence=f"output shapes differ: {ya.shape} vs {yb.shape}")
    if np.array_equal(ya, yb, equal_nan=True):
        return DiffRow(**common, verdict="identical", r=0.0, allowed=0.0, max_abs=0.0,  # type: ignore[arg-type]
                       evidence="bitwise equal")
    finite_a, finite_b = np.isfinite(ya), np.isfinite(yb)
    if not np.array_equal(finite_a, finite_b):
        return DiffRow(**common, verdict="inconclusive", r=math.inf, allowed=0.0,  # type: ignore[arg-type]
                       max_abs=math.inf, evidence=f"non-finite values differ: {int(np.sum(~finite_a))} in A's output, "
                       f"{int(np.sum(~finite_b))} in B's (overflow, or NaN handled differently, e.g. by max pooling)")
    d = np.where(finite_a, _absdiff(ya, yb), 0.0)
    scale = float(np.max(np.abs(np.where(finite_a, ya.astype(np.float64), 0.0)), initial=0.0)) or 1.0
    rel = float(np.max(d)) / scale
    o64b = conv.to_a(out64_b) if out64_b is not None else None
    if out64_a is not None and o64b is not None and o64b.shape == out64_a.shape:
        rel64 = float(np.max(np.where(np.isfinite(out64_a), _absdiff(out64_a, o64b), 0.0), initial=0.0)) / scale
        differs = rel64 > E2E_RELATIVE_64
        verdict = "mismatch" if differs else "equivalent"
        evidence = (f"float32 outputs differ by {rel:.2g} of the largest output (max |d| {float(np.max(d)):.3g}); the "
                    f"float64 runs by {rel64:.2g}, {'beyond' if differs else 'within'} {E2E_RELATIVE_64:g}: "
                    + ("the models compute different functions" if differs else "the float32 difference is rounding"))
        return DiffRow(**common, verdict=verdict, r=rel64, allowed=E2E_RELATIVE_64,  # type: ignore[arg-type]
                       max_abs=float(np.max(d)), evidence=evidence,
                       bound="r: the float64 runs' largest difference relative to the largest output")
    elif rel <= E2E_RELATIVE_32 and rows and all(r.verdict in ("identical", "equivalent")
                                                    and r.input_verdict in ("agree", "") for r in rows):
        evidence = (f"every layer and the glue between them agree, and the float32 outputs differ by {rel:.2g} of the "
                    f"largest output (max |d| {float(np.max(d)):.3g}), within {E2E_RELATIVE_32:g}")
        return DiffRow(**common, verdict="equivalent", r=rel, allowed=E2E_RELATIVE_32,  # type: ignore[arg-type]
                       max_abs=float(np.max(d)), evidence=evidence,
                       bound="r: the float32 outputs' largest difference relative to the largest output")
    else:
        bad = any(r.divergent for r in rows)
        verdict = "mismatch" if bad else "inconclusive"
        evidence = f"max |d| {float(np.max(d)):.3g} ({rel:.2g} of the largest output); no float64 re-run"
    return DiffRow(**common, verdict=verdict, r=rel, allowed=E2E_RELATIVE_64, max_abs=float(np.max(d)),  # type: ignore[arg-type]
                   evidence=evidence, bound="relative to the largest output")

