"""torch convolution layers written as strings, read by torch's own rules: ``read_layer("ConvTranspose2d(64, 32, 4,
stride=2, padding=1)")``.

The text is parsed with :mod:`ast` (never evaluated) and bound to torch's constructor signature, positional order
included; what torch's constructor or its forward would reject raises a ConvBridgeError stating torch's rule.
:func:`convbridge.explain` and porting read layers through here (``convbridge.explain`` re-exports both names).

>>> read_layer("nn.Conv1d(4, 8, 3, 2)").stride
(2,)
"""

from __future__ import annotations

import ast
import difflib
import reprlib
from dataclasses import dataclass
from typing import Any, cast

from convbridge._types import Shape
from convbridge.errors import ArgumentError, ArgumentTypeError, ConvBridgeError, brief, unknown_argument

__all__ = ["Layer", "read_layer"]

#: torch's positional order of each layer's constructor arguments (``torch/nn/modules/conv.py``).
_ORDER = {
    "Conv": ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups", "bias",
             "padding_mode"),
    "ConvTranspose": ("in_channels", "out_channels", "kernel_size", "stride", "padding", "output_padding", "groups",
                      "bias", "dilation", "padding_mode"),
}
_DEFAULTS: dict[str, Any] = dict(stride=1, padding=0, output_padding=0, dilation=1, groups=1, bias=True,
                                 padding_mode="zeros")
#: Keywords torch's constructors take that place the weights, with no bearing on the arithmetic: read, not used.
_PLACEMENT = ("device", "dtype")
_NAMES = tuple(f"{kind}{n}d" for kind in _ORDER for n in (1, 2, 3))
_PREFIXES = ("", "nn.", "torch.nn.")
_TORCH_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


@dataclass(frozen=True)
class Layer:
    """A torch convolution layer read from its constructor call (:func:`read_layer`), validated by torch's rules.

    Attributes:
        kind: ``"Conv"`` or ``"ConvTranspose"``.
        num_spatial_dims: 1, 2 or 3 (``Conv2d``: 2).
        in_channels, out_channels, groups: as given.
        kernel_size, stride, dilation, output_padding: one int per spatial dim (``output_padding`` all 0 for Conv).
        padding: as given: an int, one int per dim, or ``'same'``/``'valid'`` (Conv only).
        bias: whether the layer adds a bias.
        padding_mode: ``"zeros"``, ``"reflect"``, ``"replicate"`` or ``"circular"`` (ConvTranspose: zeros only).

    >>> layer = read_layer("nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1, groups=4)")
    >>> layer.op, layer.weight_shape, layer.stride
    ('conv_transpose', (64, 8, 4, 4), (2, 2))
    """

    kind: str
    num_spatial_dims: int
    in_channels: int
    out_channels: int
    kernel_size: Shape
    stride: Shape
    padding: int | Shape | str
    output_padding: Shape
    dilation: Shape
    groups: int
    bias: bool
    padding_mode: str

    @property
    def name(self) -> str:
        """torch's class name, e.g. ``"ConvTranspose2d"``."""
        return f"{self.kind}{self.num_spatial_dims}d"

    @property
    def op(self) -> str:
        """convbridge's op: ``"conv"`` or ``"conv_transpose"``."""
        return "conv" if self.kind == "Conv" else "conv_transpose"

    @property
    def weight_shape(self) -> Shape:
        """torch's weight: ``(out, in / groups, *k)`` for Conv, ``(in, out / groups, *k)`` for ConvTranspose."""
        if self.kind == "Conv":
            return (self.out_channels, self.in_channels // self.groups, *self.kernel_size)
        return (self.in_channels, self.out_channels // self.groups, *self.kernel_size)

    def op_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``cb.conv`` / ``cb.conv_transpose`` (and ``cb.explain``) for this layer, bias aside."""
        kw: dict[str, Any] = dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups)
        if self.kind == "Conv":
            return kw | dict(padding_mode=self.padding_mode)
        return kw | dict(output_padding=self.output_padding)


def read_layer(text: str) -> Layer:
    """Read a torch layer such as ``"ConvTranspose2d(64, 32, 4, stride=2, padding=1)"`` (literal arguments only).

    ``Conv1d``..``Conv3d`` and ``ConvTranspose1d``..``ConvTranspose3d``, bare or prefixed ``nn.`` or
    ``torch.nn.``; positional arguments in torch's order; ``device=`` and ``dtype=`` are read and ignored.
    Whatever torch's constructor or its forward would reject raises here, with torch's rule.

    Args:
        text: the constructor call, as written in torch code.

    Returns:
        A :class:`Layer`.

    Raises:
        ConvBridgeError: unreadable text, an unknown layer or argument (with the closest name), or a value torch
            rejects (non-positive sizes, groups not dividing the channels, ``padding='same'`` with a stride,
            string padding or a padding mode on ConvTranspose, ``output_padding >= max(stride, dilation)``,
            tuples of the wrong length, ...).

    >>> read_layer("Conv2d(3, 8, (3, 5), 2, padding='valid', bias=False)").kernel_size
    (3, 5)
    >>> read_layer("Conv2d(3, 8, 3, stride=2, padding='same')")
    Traceback (most recent call last):
    convbridge.errors.ArgumentError: layer "...": padding='same' is not supported for strided convolutions (torch's rule; ...
    """
    if not isinstance(text, str):
        raise ArgumentTypeError(f"layer must be a string such as 'Conv2d(3, 4, 5)', got {reprlib.repr(text)}")
    kind, nsp, values = _bind(text)
    try:
        return _validated(kind, nsp, values)
    except ConvBridgeError as exc:
        raise type(exc)(f"layer {brief(text.strip())}: {exc}") from None


def _call(text: str) -> tuple[str, ast.Call]:
    """The layer's class name and its call node."""
    try:
        call = ast.parse(text.strip(), mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError):  # ValueError: a null byte
        call = None
    if not isinstance(call, ast.Call):
        raise ArgumentError(f"cannot read layer {brief(text)}; write a torch layer with literal arguments, "
                            "e.g. 'Conv2d(3, 4, 5, stride=2, padding=1)'")
    path = ast.unparse(call.func)
    prefix, _, name = path.rpartition(".")
    prefix = prefix + "." if prefix else ""
    if name not in _NAMES:
        near = difflib.get_close_matches(name, _NAMES, n=1)
        guess = f" (did you mean {near[0]!r}?)" if near else ""
        raise ArgumentError(f"unknown layer {name!r}{guess}; convbridge reads torch's {', '.join(_NAMES)}, "
                            "e.g. 'Conv2d(3, 4, 5)'")
    if prefix not in _PREFIXES:
        raise ArgumentError(f"layer {brief(text)}: {path!r} is not torch's; write {name}(...), nn.{name}(...) or "
                            f"torch.nn.{name}(...) with torch's arguments")
    return name, call


def _literal(node: ast.expr, what: str, text: str) -> Any:
    try:
        value = ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise ArgumentError(f"cannot read layer {brief(text)}: {what} {ast.unparse(node)!r} is not a literal; write "
                            "numbers, tuples, strings, True or False") from None
    return tuple(value) if isinstance(value, list) else value


def _bind(text: str) -> tuple[str, int, dict[str, Any]]:
    """Bind the call's arguments to torch's names, as Python would bind them to torch's constructor."""
    name, call = _call(text)
    kind, nsp = name[:-2], int(name[-2])
    order = _ORDER[kind]
    if any(isinstance(a, ast.Starred) for a in call.args) or any(k.arg is None for k in call.keywords):
        raise ArgumentError(f"cannot read layer {brief(text)}: *args and **kwargs cannot be read; write each "
                            "argument out")
    if len(call.args) > len(order):
        raise ArgumentError(f"layer {brief(text)} has {len(call.args)} positional arguments; {name} takes at most "
                            f"{len(order)}: {', '.join(order)}")
    values = {key: _literal(node, f"argument {i + 1} ({key})", text) for i, (key, node) in
              enumerate(zip(order, call.args))}
    for kw in call.keywords:
        key = str(kw.arg)
        if key in _PLACEMENT:
            continue
        if key not in order:
            raise unknown_argument(name, key, order, f"; e.g. '{name}(3, 4, 5, stride=2)'")
        if key in values:
            raise ArgumentError(f"layer {brief(text)} gives {key} twice (by position and by keyword); torch raises "
                                f"'got multiple values for argument {key!r}': give it once")
        values[key] = _literal(kw.value, f"{key}=", text)
    missing = [a for a in order[:3] if a not in values]
    if missing:
        raise ArgumentError(f"layer {brief(text)} lacks {', '.join(missing)}; torch's {name} needs in_channels, "
                            f"out_channels and kernel_size, e.g. '{name}(3, 4, 5)'")
    return kind, nsp, {**_DEFAULTS, **values}


def _validated(kind: str, nsp: int, v: dict[str, Any]) -> Layer:
    """torch's constructor and forward rules on the bound values."""
    name = f"{kind}{nsp}d"
    channels = {key: _positive(v[key], key) for key in ("in_channels", "out_channels")}
    groups = v["groups"]
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ArgumentError(f"groups must be a positive integer (torch's rule), got {brief(groups)}")
    for key, c in channels.items():
        if c % groups:
            raise ArgumentError(f"{key} must be divisible by groups (torch's rule): {c} channels, groups={groups}; "
                                "pick groups among the common divisors of in_channels and out_channels")
    kernel = _per_dim(v["kernel_size"], "kernel_size", nsp, 1, broadcast=False)
    stride = _per_dim(v["stride"], "stride", nsp, 1)
    dilation = _per_dim(v["dilation"], "dilation", nsp, 1)
    padding = _padding(v["padding"], kind, nsp, stride)
    output_padding = (0,) * nsp
    if kind == "ConvTranspose":
        output_padding = _output_padding(v["output_padding"], nsp, stride, dilation)
    elif v["output_padding"] != 0:  # pragma: no cover - Conv has no such name; _bind refuses it
        raise ArgumentError("Conv has no output_padding")
    if not isinstance(v["bias"], bool):
        raise ArgumentError(f"bias must be True or False, got {brief(v['bias'])} (torch reads any truthy value, so "
                            "bias='False' would add a bias)")
    mode = v["padding_mode"]
    allowed = _TORCH_PADDING_MODES if kind == "Conv" else ("zeros",)
    if mode not in allowed:
        rule = (f"only 'zeros' padding mode is supported for {name} (torch's rule: a transposed convolution crops "
                "its output, it pads no input)" if kind == "ConvTranspose"
                else f"padding_mode must be one of {', '.join(map(repr, allowed))} (torch's rule; case matters)")
        raise ArgumentError(f"{rule}, got {brief(mode)}")
    return Layer(kind, nsp, channels["in_channels"], channels["out_channels"], kernel, stride, padding,
                 output_padding, dilation, groups, v["bias"], mode)


def _positive(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ArgumentError(f"{name} must be a positive int, got {brief(value)}")
    return value


#: What torch says when a per-dim value is below its minimum.
_TORCH_SAYS = {"kernel_size": "kernel size should be greater than zero", "stride": "non-positive stride is not "
               "supported", "dilation": "dilation should be greater than zero", "padding": "negative padding is not "
               "supported", "output_padding": "negative output_padding is not supported"}


def _per_dim(value: object, name: str, nsp: int, minimum: int, *, broadcast: bool = True) -> Shape:
    """An int or a tuple of ints as torch's ``_ntuple`` and forward read it (a 1-tuple broadcasts, except a
    kernel size, which fixes the rank)."""
    items: list[Any] = list(value) if isinstance(value, tuple) else [value]
    if isinstance(value, tuple) and len(items) != nsp and not (broadcast and len(items) == 1):
        raise ArgumentError(f"{name} {brief(value)} has {len(items)} entries but the layer has {nsp} spatial dims; "
                            f"give one int or {nsp} ints (torch's forward raises otherwise)")
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int):
            raise ArgumentTypeError(f"{name} must be an int or a tuple of ints, got {brief(value)}")
        if item < minimum:
            raise ArgumentError(f"{name} must be >= {minimum}, got {brief(value)} (torch: {_TORCH_SAYS[name]})")
    return tuple(items) * (nsp if len(items) == 1 else 1)


def _padding(value: object, kind: str, nsp: int, stride: Shape) -> int | Shape | str:
    name = f"{kind}{nsp}d"
    if isinstance(value, str) and kind == "ConvTranspose":
        raise ArgumentError(f"{name} takes no padding string, got {value!r} (torch splits it into characters and its "
                            "forward raises a TypeError); give the rows cropped from each end as an int or one int "
                            "per dim, e.g. padding=1; for an output of n * stride use cb.explain(input, kernel, "
                            "op='conv_transpose', padding='same')")
    if isinstance(value, str):
        if value not in ("same", "valid"):
            raise ArgumentError(f"invalid padding string {value!r}: torch's {name} takes 'same' or 'valid' (case "
                                "matters); for 'same_lower' or other forms give cb.explain a kernel shape and padding")
        if value == "same" and any(s != 1 for s in stride):
            raise ArgumentError(f"padding='same' is not supported for strided convolutions (torch's rule; the stride "
                                f"is {stride}); give the padding as ints, or use convbridge's 'same' (XLA rule, any "
                                "stride, odd pixel high) with cb.explain(input, kernel_shape, stride=..., "
                                "padding='same')")
        return value
    if isinstance(value, tuple) and any(isinstance(p, tuple) for p in value):
        strings = ", 'same' or 'valid'" if kind == "Conv" else ""
        raise ArgumentError(f"padding {brief(value)}: torch's {name} treats both ends of a dim alike: padding is an "
                            f"int or one int per dim{strings}, not (lo, hi) pairs; for per-side widths give "
                            "cb.explain a kernel shape and padding=((lo, hi), ...)")
    _per_dim(value, "padding", nsp, 0)
    return cast("int | Shape", value)


def _output_padding(value: object, nsp: int, stride: Shape, dilation: Shape) -> Shape:
    out = _per_dim(value, "output_padding", nsp, 0)
    for i, (o, s, d) in enumerate(zip(out, stride, dilation)):
        if o >= max(s, d):
            raise ArgumentError(f"output_padding must be smaller than either stride or dilation (torch's forward): "
                                f"output_padding {o} on spatial dim {i} with stride {s} and dilation {d}; allowed "
                                f"0..{max(s, d) - 1}")
    return out
