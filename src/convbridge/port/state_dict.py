"""Whole-model weights between PyTorch and Flax (linen, nnx) or Equinox, exactly, either direction.

:func:`state_dict` reads both models into *layers* (the modules that own parameters), pairs them (by name when
both sides name their layers alike, else in execution order, or by a user's ``name_map``), converts each tensor
(conv and transposed-conv kernels through :func:`convbridge.port.kernel`: permutes, flips, regroups; Linear
transposes; BatchNorm / LayerNorm / GroupNorm copies) and returns a new target with a :class:`PortTable` of
every pair. Every problem (an unmatched layer or tensor, a shape or dtype that does not fit) is collected and
raised in one error before anything is written.

This module holds the framework-free core (the data, conversions, the table and the error; the pairing is in
``convbridge.port._state_pairing``); the framework sides live in ``convbridge.port._walk_torch``, ``_walk_flax``
and ``_walk_equinox``.

>>> import jax, jax.numpy as jnp, flax.linen as nn, torch
>>> import convbridge as cb
>>> _ = torch.manual_seed(0)
>>> conv = torch.nn.Conv2d(3, 8, 3)
>>> shapes = jax.eval_shape(nn.Conv(8, (3, 3)).init, jax.random.key(0), jnp.zeros((1, 5, 5, 3)))
>>> variables, table = cb.port.state_dict(conv, shapes)
>>> variables["params"]["kernel"].shape
(3, 3, 3, 8)
>>> print(table.rows[0].conversion)
OIHW -> HWIO
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from convbridge.arrays import to_host
from convbridge.errors import (ArgumentError, ArgumentTypeError, ConvBridgeError, DTypeError, ImplementationError,
                               ShapeError, brief)
from convbridge.port._state_pairing import SKIPPED, kinds_agree, pair
from convbridge.port.kernels import _permute
from convbridge.port.kernels import kernel as convert_kernel
from convbridge.spec.layout import default_spatial_letters, permutation

__all__ = ["FORMATS", "KINDS", "Model", "PortRow", "PortTable", "StateDictPort", "Tensor", "Unit", "state_dict"]

#: What a layer is (torch's meaning); a target's tensors are converted by kind.
KINDS = ("conv", "conv_transpose", "linear", "batchnorm", "layernorm", "groupnorm", "instancenorm", "params")

#: style -> kind -> (weight layout template, transposed convention); ``*`` is the spatial letters. Every other
#: tensor (bias, BatchNorm scale and statistics, LayerNorm / GroupNorm) keeps its axes, reshaped where only unit
#: axes differ (Equinox's conv bias ``(out, 1, 1)``).
FORMATS: Mapping[str, Mapping[str, tuple[str, str]]] = {
    "torch": {"conv": ("OI*", "torch"), "conv_transpose": ("IO*", "torch"), "linear": ("OI", "")},
    "flax": {"conv": ("*IO", "torch"), "conv_transpose": ("*IO", "jax"), "linear": ("IO", "")},
    "flax.transpose_kernel": {"conv_transpose": ("*OI", "torch")},
    "convbridge.flax": {"conv": ("*IO", "torch"), "conv_transpose": ("*IO", "torch")},
    "equinox": {"conv": ("OI*", "torch"), "conv_transpose": ("OI*", "jax"), "linear": ("OI", "")},
    "convbridge.equinox": {"conv": ("OI*", "torch"), "conv_transpose": ("IO*", "torch")},
}
#: A linen layer whose module type is unknown: the transposed styles to try, in order (the first that fits wins).
_FLAX_GUESSES = ("flax", "convbridge.flax", "flax.transpose_kernel")
_STYLE_NAMES = {"flax": "flax ConvTranspose (flipped)", "convbridge.flax": "convbridge.nn ConvTranspose",
                "flax.transpose_kernel": "flax ConvTranspose(transpose_kernel=True)"}
_MAX_LISTED = 25


# ----------------------------------------------------------------------------------------------------- the data

@dataclass(frozen=True)
class Tensor:
    """One parameter or buffer as a side reads it.

    Attributes:
        key: its name inside its layer (``"weight"``, ``"kernel"``, ``"mean"``).
        role: torch's name for it (``"weight"``, ``"bias"``, ``"running_mean"``, ``"running_var"``...).
        label: its full name for reports (``"layer1.0.conv1.weight"``, ``"params/layer1_0/conv1/kernel"``).
        shape, dtype: as stored.
        value: the framework's array (or a ``jax.ShapeDtypeStruct``).
        where: where the side writes it (the side's own locator).
    """

    key: str
    role: str
    label: str
    shape: tuple[int, ...]
    dtype: str
    value: Any = field(repr=False, compare=False)
    where: Any = field(repr=False)


@dataclass(frozen=True)
class Unit:
    """One layer: a module owning tensors.

    Attributes:
        name: the layer's path (``"layer1.0.conv1"``; linen ``"layer1_0/conv1"``; ``""`` for the root).
        kind: one of :data:`KINDS`, or a guess (``"conv?"``, ``"norm"``) where the side cannot tell.
        style: the key of :data:`FORMATS` saying how its weight is stored; ``"flax?"``: a linen layer of unknown
            type (its transposed convention is found from the shapes).
        type_name: the module's type for reports.
        tensors: its tensors in the side's order.
        groups: channel groups (convolutions), when the side knows them.
        refusal: why this layer cannot be ported, if it cannot ("" when it can).
        layout: the weight's stored layout where the layer states it (convbridge.nn layers' ``kernel_layout``,
            which follows their input layout's spatial order); ``""``: the style's template.
    """

    name: str
    kind: str
    style: str
    type_name: str
    tensors: tuple[Tensor, ...]
    groups: int | None = None
    refusal: str = ""
    layout: str = ""

    @property
    def display(self) -> str:
        return repr(self.name) if self.name else "<root>"

    def summary(self) -> str:
        shapes = ", ".join(f"{t.key} {t.shape}" for t in self.tensors)
        return f"{self.display} ({self.type_name}: {shapes})"


@dataclass(frozen=True)
class Model:
    """A side read: its framework, its layers in execution order, and how to write a new one.

    Attributes:
        framework: ``"torch"``, ``"flax.linen"``, ``"flax.nnx"`` or ``"equinox"``.
        units: the layers, in the side's execution order.
        fill: ``fill({where: host array}) -> new target`` (never modifies the model read).
        sorted_keys: the side's order may be alphabetical rather than execution order (linen variables or an nnx
            module that went through ``jax.eval_shape``, ``nnx.eval_shape`` or ``jax.tree.map``).
    """

    framework: str
    units: tuple[Unit, ...]
    fill: Callable[[dict[Any, np.ndarray]], Any] = field(repr=False)
    sorted_keys: bool = False


@dataclass(frozen=True)
class PortRow:
    """One tensor ported (or skipped).

    Attributes:
        source, target: full tensor names (``""`` on the side that lacks a skipped tensor).
        kind: the layer's kind.
        source_shape, target_shape: as stored on each side.
        dtype: kept on both sides.
        conversion: what was applied (``"OIHW -> HWIO"``, ``"transpose (out, in) -> (in, out)"``, ``"copy"``,
            ``"skipped: ..."``).
    """

    source: str
    target: str
    kind: str
    source_shape: tuple[int, ...] | None
    target_shape: tuple[int, ...] | None
    dtype: str
    conversion: str


@dataclass(frozen=True)
class PortTable:
    """Every pair :func:`state_dict` ported, in the source's order.

    Attributes:
        source, target: the frameworks (``"torch"``, ``"flax.linen"``...).
        paired_by: ``"name"``, ``"order"`` or ``"name_map"``.
        rows: one :class:`PortRow` per tensor.
        notes: assumptions made (e.g. a linen transposed kernel's convention guessed from its shape).
    """

    source: str
    target: str
    paired_by: str
    rows: tuple[PortRow, ...]
    notes: tuple[str, ...] = ()

    def __str__(self) -> str:
        ported = sum(1 for r in self.rows if r.source and r.target)
        head = (f"{self.source} -> {self.target}: {ported} tensors ported, {len(self.rows) - ported} skipped, layers "
                f"paired by {self.paired_by}")
        cols = ("source", "target", "kind", "source shape", "target shape", "conversion")
        cells = [(r.source or "-", r.target or "-", r.kind, "-" if r.source_shape is None else _shape(r.source_shape),
                  "-" if r.target_shape is None else _shape(r.target_shape), r.conversion) for r in self.rows]
        widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
        lines = [head, "  ".join(c.ljust(w) for c, w in zip(cols, widths)).rstrip(),
                 "  ".join("-" * w for w in widths)]
        lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


class StateDictPort(NamedTuple):
    """What :func:`state_dict` returns: unpack it as ``filled, table = cb.port.state_dict(src, dst)``."""

    filled: Any
    table: PortTable


def _shape(shape: tuple[int, ...]) -> str:
    return str(tuple(shape))


# ------------------------------------------------------------------------------------------------------- the API

def state_dict(src: Any, dst: Any, *, module: Any = None,
               name_map: Mapping[str, str] | None = None) -> StateDictPort:
    """Port a whole model's weights from ``src`` into a new copy of ``dst``, exactly.

    One side is a torch ``nn.Module``, the other a Flax linen variables dict (``{"params": ..., "batch_stats":
    ...}``, with ``module=`` its module, or a ``(linen_module, variables)`` pair), a Flax nnx module or an
    Equinox module. The target's leaves may be real arrays or ``jax.ShapeDtypeStruct`` (``jax.eval_shape(
    model.init, key, x)``, ``nnx.eval_shape``, ``eqx.filter_eval_shape``: much faster than initialising).

    Layers (modules owning parameters or buffers) pair by name when both sides' names agree up to separators
    (torch ``layer1.0.conv1``, linen ``layer1_0/conv1``, Equinox/nnx ``layer1.0.conv1``), else in execution
    order (torch: registration order; linen: the variables' order, which is creation order; Equinox: field
    order; nnx: attribute order), checking kinds and shapes. With ``name_map`` (source layer -> target layer) a
    source layer maps by its exact entry, else by the first glob pattern it matches (each ``*`` in the key is
    substituted into the value in order: ``{"layer*.*.conv1": "layer*_*/conv1"}``), else to the target layer of
    the same name.

    Conversions are exact (permutes, flips, reshapes): conv kernels ``OI*`` <-> ``*IO``; transposed kernels
    between torch's and the flipped convention, regrouped for groups (:func:`convbridge.port.kernel`); Linear
    ``(out, in)`` <-> Dense ``(in, out)``; BatchNorm ``weight/bias/running_mean/running_var`` <-> linen
    ``params scale/bias`` + ``batch_stats mean/var`` (nnx alike; Equinox: a BatchNorm module holding them as
    fields); LayerNorm / GroupNorm ``weight`` <-> ``scale``. ``num_batches_tracked`` is skipped (listed). Dtypes
    are kept: a target of another dtype is an error. For training, torch's BatchNorm ``momentum=0.1`` is
    linen's ``momentum=0.9`` (torch weighs the new batch, Flax the running value); eps is the module's own.

    Args:
        src: the model whose weights are read.
        dst: the model (or parameters) to fill; never modified.
        module: the linen module of a linen variables dict on either side. Its submodules made in ``setup``
            give their types (a ConvTranspose's kernel convention); submodules made in ``@nn.compact`` code are
            known only by their tensors, and a transposed kernel's convention is then found from its shape
            (ambiguous cases assume Flax's own ConvTranspose and say so in the table's notes).
        name_map: source layer name -> target layer name, glob patterns allowed.

    Returns:
        ``(filled, table)`` (a :class:`StateDictPort`): ``filled`` a new target of ``dst``'s kind (a new variables
        dict or ``(module, variables)`` pair, a new nnx or Equinox module, a deep copy of the torch module)
        holding ``src``'s weights; ``table`` the :class:`PortTable` of every tensor.

    Raises:
        ArgumentError: a layer or tensor on either side has no partner, a kind does not match, or
            ``name_map`` names no layer; every one is listed by name.
        ShapeError: only shapes do not fit (each listed with both sides' names and shapes).
        DTypeError: only dtypes differ.
        ArgumentTypeError: neither or both sides are torch, or a side is no model.

    Shape:
        conv ``(O, I/g, *k)`` <-> ``(*k, I/g, O)``; transposed ``(I, O/g, *k)`` <-> flax ``(*k, I, O)`` (flipped,
        groups 1) / Equinox ``(O, I/g, *k)`` (flipped, regrouped); Linear ``(O, I)`` <-> ``(I, O)``.

    >>> import torch, equinox as eqx, jax
    >>> import convbridge as cb
    >>> t = torch.nn.Linear(3, 2)
    >>> e = eqx.filter_eval_shape(eqx.nn.Linear, 3, 2, key=jax.random.key(0))
    >>> ported, table = cb.port.state_dict(t, e)
    >>> bool((ported.weight == t.weight.detach().numpy()).all()), [r.conversion for r in table.rows]
    (True, ['copy', 'copy'])
    """
    if name_map is not None and not isinstance(name_map, Mapping):
        raise ArgumentTypeError(f"name_map must be a dict of source layer name -> target layer name, got "
                                f"{brief(name_map)}")
    s_kind, d_kind = _sniff(src, "src"), _sniff(dst, "dst")
    if (s_kind == "torch") == (d_kind == "torch"):
        both = "both are torch modules" if s_kind == "torch" else f"src is {s_kind} and dst is {d_kind}"
        raise ArgumentTypeError(f"state_dict ports between torch and one JAX framework, but {both}; give a torch "
                                "nn.Module on one side and a linen variables dict, nnx module or Equinox module on "
                                "the other")
    if module is not None and "linen" not in (s_kind, d_kind):
        raise ArgumentError(f"module= is the linen module of a linen variables dict, but src is {s_kind} and dst "
                            f"is {d_kind}; drop module=")
    s_model = _read(src, s_kind, module)
    d_model = _read(dst, d_kind, module)
    pairs, paired_by, problems = pair(s_model, d_model, dict(name_map) if name_map else None)
    values, rows, notes = _convert_all(pairs, s_model, problems)
    if problems:
        raise _error(problems, s_model, d_model)
    filled = d_model.fill(values)
    return StateDictPort(filled, PortTable(s_model.framework, d_model.framework, paired_by, tuple(rows),
                                           tuple(notes)))


# --------------------------------------------------------------------------------------------------- the sides

def _roots(obj: object) -> set[str]:
    return {c.__module__.partition(".")[0] for c in type(obj).__mro__}


def _sniff(obj: Any, role: str) -> str:
    """``"torch"``, ``"linen"``, ``"nnx"`` or ``"equinox"``, without importing a framework."""
    if isinstance(obj, tuple) and len(obj) == 2 and "flax" in _roots(obj[0]) and isinstance(obj[1], Mapping):
        return "linen"
    if isinstance(obj, Mapping):
        if any("torch" in _roots(v) for v in obj.values()):
            raise ArgumentTypeError(f"{role} is a dict of torch tensors (a state_dict?): give the torch module itself, "
                                    "whose layer types tell a convolution from a transposed one")
        return "linen"
    roots = _roots(obj)
    if "torch" in roots:
        return "torch"
    if "flax" in roots:
        from convbridge.port import _flax

        if _flax.is_linen(obj):
            raise ArgumentTypeError(f"{role} is a flax.linen module, which holds no weights: give its variables "
                                    f"with module=, or a (module, variables) pair")
        return "nnx"
    if "equinox" in roots:
        return "equinox"
    raise ArgumentTypeError(f"{role} must be a torch nn.Module, a flax.linen variables dict (or (module, "
                            f"variables) pair), a flax.nnx module or an Equinox module, got {type(obj).__name__} "
                            f"{brief(obj)}")


def _read(obj: Any, kind: str, module: Any) -> Model:
    side = importlib.import_module("convbridge.port._walk_" + ("flax" if kind in ("linen", "nnx") else kind))
    if kind == "linen":
        read_linen: Callable[[Any, Any], Model] = side.read_linen
        return read_linen(obj, module)
    if kind == "nnx":
        read_nnx: Callable[[Any], Model] = side.read_nnx
        return read_nnx(obj)
    read: Callable[[Any], Model] = side.read
    return read(obj)


# ---------------------------------------------------------------------------------------------------- converting

def _convert_all(pairs: list[tuple[Unit, Unit]], s: Model,
                 problems: list[str]) -> tuple[dict[Any, np.ndarray], list[PortRow], list[str]]:
    values: dict[Any, np.ndarray] = {}
    rows: list[PortRow] = []
    notes: list[str] = []
    torch_is_src = s.framework == "torch"
    for a, b in pairs:
        t_unit, j_unit = (a, b) if torch_is_src else (b, a)
        if not kinds_agree(a.kind, b.kind):
            problems.append(f"source layer {a.summary()} is a {a.kind} but target layer {b.summary()} is a {b.kind}")
            continue
        if j_unit.refusal:
            problems.append(f"{j_unit.display}: {j_unit.refusal}")
            continue
        kind = t_unit.kind
        for st, dt in _pair_tensors(a, b, problems):
            if st is None or dt is None:
                rows.append(_skipped(st, dt, kind))
                continue
            row = _convert_one(st, dt, kind, a, b, t_unit, values, problems, notes)
            if row is not None:
                rows.append(row)
    return values, rows, notes


def _skipped(st: Tensor | None, dt: Tensor | None, kind: str) -> PortRow:
    if st is not None:
        return PortRow(st.label, "", kind, st.shape, None, st.dtype, f"skipped: the target keeps no {st.key}")
    if dt is None:
        raise ImplementationError("a skipped tensor pair with neither side")
    return PortRow("", dt.label, kind, None, dt.shape, dt.dtype, f"skipped: the source has no {dt.key}; the "
                   "target's own value kept")


def _pair_tensors(a: Unit, b: Unit, problems: list[str]) -> list[tuple[Tensor | None, Tensor | None]]:
    """The tensors of two paired layers, by torch's role; a skipped torch tensor pairs with None."""
    b_roles = {t.role: t for t in b.tensors}
    a_roles = {t.role for t in a.tensors}
    left = [t for t in a.tensors if t.role not in b_roles and t.role not in SKIPPED]
    b_left = [t for t in b.tensors if t.role not in a_roles and t.role not in SKIPPED]
    if len(left) == 1 and len(b_left) == 1 and left[0].shape == b_left[0].shape and "params" in (a.kind, b.kind):
        b_roles[left[0].role] = b_left[0]  # a custom layer's one tensor under another name: same shape, copied
        left, b_left = [], []
    out: list[tuple[Tensor | None, Tensor | None]] = [(t, b_roles.get(t.role)) for t in a.tensors
                                                      if t.role in b_roles or t.role in SKIPPED]
    out += [(None, t) for t in b.tensors if t.role in SKIPPED and t.role not in a_roles]
    problems += [f"source tensor {t.label!r} {t.shape} has no counterpart in target layer {b.display} (it holds "
                 f"{', '.join(x.key for x in b.tensors) or 'nothing'})" for t in left]
    problems += [f"target tensor {t.label!r} {t.shape} has no counterpart in source layer {a.display} (it holds "
                 f"{', '.join(x.key for x in a.tensors) or 'nothing'})" for t in b_left]
    return out


def _convert_one(st: Tensor, dt: Tensor, kind: str, a: Unit, b: Unit, t_unit: Unit, values: dict[Any, np.ndarray],
                 problems: list[str], notes: list[str]) -> PortRow | None:
    if type(st.value).__name__ == "ShapeDtypeStruct":
        raise ArgumentTypeError(f"the source's {st.label!r} is a jax.ShapeDtypeStruct, a shape without values: port "
                                "from a model holding arrays (only the target may be shapes alone)")
    src = to_host(st.value, st.label)
    try:
        out, how = _convert(src, st, dt, kind, a, b, t_unit.groups or 1, notes)
    except ConvBridgeError as e:
        problems.append(f"shape: {st.label!r} {st.shape} cannot become {dt.label!r} {dt.shape}: {e}")
        return None
    if tuple(out.shape) != dt.shape:
        problems.append(f"shape: {st.label!r} {st.shape} converts to {tuple(out.shape)} ({how}) but "
                        f"{dt.label!r} is {dt.shape}")
        return None
    if st.dtype != dt.dtype:
        problems.append(f"dtype: {st.label!r} is {st.dtype} but {dt.label!r} is {dt.dtype}; the port keeps dtypes: "
                        "cast one model first")
        return None
    values[dt.where] = _owned(out, src)
    return PortRow(st.label, dt.label, kind, st.shape, dt.shape, st.dtype, how)


def _owned(out: np.ndarray, src: np.ndarray) -> np.ndarray:
    """``out`` as a C-contiguous array sharing no memory with the source (whose torch or JAX buffer it may view),
    so that a side may wrap it without a copy and later writes to either model never reach the other."""
    if not out.flags.c_contiguous:
        return np.ascontiguousarray(out)
    return out.copy() if np.may_share_memory(out, src) else out


def _convert(w: np.ndarray, st: Tensor, dt: Tensor, kind: str, a: Unit, b: Unit, groups: int,
             notes: list[str]) -> tuple[np.ndarray, str]:
    if st.role == "weight" and kind in ("conv", "conv_transpose", "linear"):
        if kind == "conv_transpose" and "flax?" in (a.style, b.style):
            return _guess_transposed(w, st, dt, a, b, groups, notes)
        return _kernel(w, kind, _format(a, kind, w.ndim), _format(b, kind, w.ndim), groups)
    if w.shape == dt.shape:
        return w, "copy"
    if w.size == int(np.prod(dt.shape)) and _squeezed(w.shape) == _squeezed(dt.shape):
        return w.reshape(dt.shape), f"reshape {_shape(w.shape)} -> {_shape(dt.shape)}"
    return w, "copy"


def _squeezed(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(s for s in shape if s != 1)


def _format(unit: Unit, kind: str, ndim: int, style: str = "") -> tuple[str, str]:
    """The stored layout and transposed convention of ``unit``'s weight (``style`` overrides a guessed one)."""
    style = style or unit.style
    template, convention = FORMATS["flax" if style == "flax?" else style][kind]
    if unit.layout and style == unit.style:
        return unit.layout, convention
    return template.replace("*", default_spatial_letters(max(ndim - 2, 0))), convention


def _kernel(w: np.ndarray, kind: str, src: tuple[str, str], dst: tuple[str, str],
            groups: int) -> tuple[np.ndarray, str]:
    (s_lay, s_conv), (d_lay, d_conv) = src, dst
    if len(s_lay) != w.ndim:
        raise ShapeError(f"a {kind} weight stored as {s_lay} has {len(s_lay)} axes, this one {w.ndim}")
    if kind == "linear":
        if s_lay == d_lay:
            return w, "copy"
        out = _permute(w, permutation(s_lay, d_lay))
        return out, "transpose (out, in) -> (in, out)" if s_lay == "OI" else "transpose (in, out) -> (out, in)"
    op = "conv_transpose" if kind == "conv_transpose" else "conv"
    extra = {} if op == "conv" else {"src_convention": s_conv, "dst_convention": d_conv}
    out = np.asarray(convert_kernel(w, s_lay, d_lay, op=op, groups=groups, **extra))
    how = f"{s_lay} -> {d_lay}" if s_lay != d_lay else "copy"
    if op == "conv_transpose" and s_conv != d_conv:
        regroup = f", regrouped for groups={groups}" if groups > 1 else ""
        how = f"{s_lay} ({s_conv}) -> {d_lay} ({d_conv}: flipped{regroup})"
    return out, how


def _guess_transposed(w: np.ndarray, st: Tensor, dt: Tensor, a: Unit, b: Unit, groups: int,
                      notes: list[str]) -> tuple[np.ndarray, str]:
    """A linen transposed kernel of unknown module type: the first style whose conversion fits the other side."""
    fits: list[tuple[str, np.ndarray, str]] = []
    for style in _FLAX_GUESSES:
        sa, sb = (style if a.style == "flax?" else a.style), (style if b.style == "flax?" else b.style)
        try:
            out, how = _kernel(w, "conv_transpose", _format(a, "conv_transpose", w.ndim, sa),
                               _format(b, "conv_transpose", w.ndim, sb), groups)
        except ConvBridgeError:
            continue
        if tuple(out.shape) == dt.shape:
            fits.append((style, out, how))
    if not fits:
        return _kernel(w, "conv_transpose", _format(a, "conv_transpose", w.ndim),
                       _format(b, "conv_transpose", w.ndim), groups)
    style, out, how = fits[0]
    linen = a if a.style == "flax?" else b
    if len(fits) > 1:
        others = " or ".join(_STYLE_NAMES[f[0]] for f in fits[1:])
        notes.append(f"{linen.display}: a transposed kernel whose shape also fits {others}; assumed "
                     f"{_STYLE_NAMES[style]}: pass module= (with submodules made in setup) if that is wrong")
    return out, how + f" [{_STYLE_NAMES[style]}]"


# ------------------------------------------------------------------------------------------------------- errors

def _error(problems: list[str], s: Model, d: Model) -> ConvBridgeError:
    shape_only = all(p.startswith("shape:") for p in problems)
    dtype_only = all(p.startswith("dtype:") for p in problems)
    cls: type[ConvBridgeError] = ShapeError if shape_only else DTypeError if dtype_only else ArgumentError
    listed = problems[:_MAX_LISTED]
    more = f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
    hint = ("pair layers yourself with name_map={source layer: target layer} (glob patterns allowed, e.g. "
            "{'layer*.*.conv1': 'layer*_*/conv1'})")
    if d.sorted_keys or s.sorted_keys:
        hint += ("; the JAX side's layers are in alphabetical order (jax.eval_shape, nnx.eval_shape and jax.tree.map "
                 "sort dict keys), which may not be the order they run in")
    lines = "\n".join(f"  - {p}" for p in listed)
    return cls(f"cannot port {s.framework} -> {d.framework}: {len(problems)} problem"
               f"{'s' if len(problems) != 1 else ''}, nothing was written:\n{lines}{more}\n{hint}")
