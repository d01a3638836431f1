"""Pairing the layers of two models for :func:`convbridge.port.state_dict`: by name (separators aside), in
execution order, or by a user's name map with glob patterns. Framework-free."""

from __future__ import annotations

import difflib
import re
from typing import TYPE_CHECKING

import numpy as np

from convbridge.errors import ArgumentError, ArgumentTypeError, brief

if TYPE_CHECKING:
    from convbridge.port.state_dict import Model, Unit

__all__ = ["SKIPPED", "kinds_agree", "normal_name", "pair"]

#: Tensors no JAX framework keeps: listed in the table as skipped.
SKIPPED = ("num_batches_tracked",)
#: Kinds a side can only guess from its tensors (linen without module types): the kinds each may turn out to be.
GUESSES = {"conv?": {"conv", "conv_transpose"}, "norm": {"layernorm", "groupnorm", "instancenorm", "params"}}


def normal_name(name: str) -> tuple[str, ...]:
    """A layer name's parts, whatever the separators: ``"layer1.0.conv1"`` and ``"layer1_0/conv1"`` agree.

    >>> normal_name("layer1.0.conv1") == normal_name("layer1_0/conv1")
    True
    """
    return tuple(p for p in re.split(r"[./_\[\]]+", name) if p)


def pair(s: Model, d: Model, name_map: dict[str, str] | None) -> tuple[list[tuple[Unit, Unit]], str, list[str]]:
    """Pairs by ``name_map``; else by name when the names agree one to one; else in order, unless the order does not
    fit while most names agree (then the names tell which layers lack a partner)."""
    if name_map is not None:
        pairs, problems = _pair_by_map(s, d, name_map)
        return pairs, "name_map", problems
    s_names = [normal_name(u.name) for u in s.units]
    d_names = [normal_name(u.name) for u in d.units]
    if len(set(s_names)) == len(s_names) and len(set(d_names)) == len(d_names):
        if set(s_names) == set(d_names):
            return _pair_by_map(s, d, {})[0], "name", []
        common = len(set(s_names) & set(d_names))
    else:
        common = 0
    pairs, problems = _pair_by_order(s, d)
    if (problems or not all(_fits(a, b) for a, b in pairs)) and 2 * common >= min(len(s_names), len(d_names)) > 0:
        pairs, problems = _pair_by_map(s, d, {})
        return pairs, "name", problems
    return pairs, "order", problems


def _pair_by_order(s: Model, d: Model) -> tuple[list[tuple[Unit, Unit]], list[str]]:
    pairs = list(zip(s.units, d.units))
    if len(s.units) == len(d.units):
        return pairs, []
    first = next((k for k, (a, b) in enumerate(pairs) if not _fits(a, b)), len(pairs))
    longer, side = (s.units, "source") if len(s.units) > len(d.units) else (d.units, "target")
    extra = ", ".join(u.display for u in longer[len(pairs):][:5])
    msg = (f"the source has {len(s.units)} layers with parameters and the target {len(d.units)}, so they do not "
           "pair in execution order")
    if first < len(pairs):
        a, b = pairs[first]
        msg += (f"; the first that could not be paired is layer {first}: source {a.summary()} vs target "
                f"{b.summary()}")
    msg += f"; unpaired {side} layers at the end: {extra}{', ...' if len(longer) - len(pairs) > 5 else ''}"
    return pairs[:first], [msg]


def _fits(a: Unit, b: Unit) -> bool:
    """Whether two layers look like a pair: compatible kinds and the same multiset of tensor sizes."""
    def sizes(u: Unit) -> list[int]:
        return sorted(int(np.prod(t.shape)) for t in u.tensors if t.role not in SKIPPED)

    return kinds_agree(a.kind, b.kind) and sizes(a) == sizes(b)


def kinds_agree(a: str, b: str) -> bool:
    return a == b or b in GUESSES.get(a, ()) or a in GUESSES.get(b, ())


def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile("".join("(.*?)" if part == "*" else re.escape(part) for part in re.split(r"(\*)", pattern)))


def _substitute(target: str, groups: tuple[str, ...]) -> str:
    parts = target.split("*")
    if len(parts) - 1 != len(groups):
        raise ArgumentError(f"name_map value {target!r} has {len(parts) - 1} '*' but its key matched {len(groups)}; "
                            "give the value one '*' per '*' of the key")
    return "".join(p + g for p, g in zip(parts, groups + ("",)))


def _pair_by_map(s: Model, d: Model, name_map: dict[str, str]) -> tuple[list[tuple[Unit, Unit]], list[str]]:
    for k, v in name_map.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise ArgumentTypeError(f"name_map maps layer names to layer names (str -> str), got {brief(k)}: "
                                    f"{brief(v)}")
    exact = {k: v for k, v in name_map.items() if "*" not in k}
    patterns = [(k, _glob(k), v) for k, v in name_map.items() if "*" in k]
    d_by_name = {u.name: u for u in d.units}
    d_by_normal = {normal_name(u.name): u for u in d.units}
    used: set[str] = set()
    claimed: dict[str, Unit] = {}
    pairs, problems = [], []
    for u in s.units:
        target, how = _target_name(u.name, exact, patterns, used)
        found = d_by_name.get(target) if how else d_by_normal.get(normal_name(u.name))
        if found is None:
            problems.append(_unmatched_source(u, target, how, d))
            continue
        if found.name in claimed:
            problems.append(f"source layers {claimed[found.name].display} and {u.display} both map to target layer "
                            f"{found.display}")
            continue
        claimed[found.name] = u
        pairs.append((u, found))
    used |= {key for key, rx, _ in patterns if any(rx.fullmatch(u.name) for u in s.units)}  # shadowed: still fine
    problems += [f"name_map entry {k!r} matches no source layer" for k in name_map if k not in used]
    problems += [f"target layer {u.summary()} has no source layer" for u in d.units if u.name not in claimed]
    return pairs, problems


def _target_name(name: str, exact: dict[str, str], patterns: list[tuple[str, re.Pattern[str], str]],
                 used: set[str]) -> tuple[str, str]:
    """The target name ``name`` maps to and how (``""``: not in the map, try the same name)."""
    if name in exact:
        used.add(name)
        return exact[name], "exact"
    for key, rx, value in patterns:
        m = rx.fullmatch(name)
        if m:
            used.add(key)
            return _substitute(value, m.groups()), f"pattern {key!r}"
    return name, ""


def _unmatched_source(u: Unit, target: str, how: str, d: Model) -> str:
    if not how:
        return f"source layer {u.summary()} has no target layer of the same name"
    close = difflib.get_close_matches(target, [x.name for x in d.units], n=3)
    hint = f"; close target names: {', '.join(map(repr, close))}" if close else ""
    return f"source layer {u.display} maps ({how}) to {target!r}, which is no target layer{hint}"
