"""Framework conventions as data: layouts, kernel letters, transposed kernels, padding rules, argument names.

One :class:`Convention` per API (``torch.nn``, ``jax.lax``, ``flax.linen``, ``flax.nnx``,
``equinox.nn``), read by the ``explain`` snippets, the transposed-convolution mapping and
porting; nothing re-derives them. Layouts are templates in convbridge's letters (PITFALLS,
"Conventions at a glance"): ``*`` stands for the spatial letters (``HW`` in 2-d); in a kernel
``I`` is always the input's channels and ``O`` the result's, for convolutions and transposed
convolutions alike. This module imports no framework.

>>> TORCH.kernel_layout("HW"), FLAX_LINEN.kernel_layout("HW"), LAX.transpose_layout("HW")
('OIHW', 'HWIO', 'HWIO')
>>> FLAX_LINEN.input_layout("HW"), EQUINOX.input_layout("HW")
('NHWC', 'CHW')
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType, ModuleType

from convbridge.errors import ArgumentError

__all__ = ["Convention", "TORCH", "LAX", "FLAX_LINEN", "FLAX_NNX", "EQUINOX", "CONVENTIONS", "get"]


def _frozen(**items: str) -> Mapping[str, str]:
    return MappingProxyType(dict(items))


@dataclass(frozen=True)
class Convention:
    """How one framework API states a convolution.

    Attributes:
        name: the API, e.g. ``"flax.linen"``.
        input: input/output layout template, e.g. ``"NC*"`` or ``"N*C"``; ``"C*"`` when the API takes one
            example (Equinox: batch with ``jax.vmap``).
        kernel: conv kernel template, ``"OI*"`` or ``"*IO"``.
        transpose_kernel: transposed-conv kernel template in convbridge's letters.
        transpose_flipped: the transposed kernel is torch's flipped in every spatial axis (lax.conv_transpose and
            Flax ConvTranspose without ``transpose_kernel``: not the gradient of conv, PITFALLS trap 2).
        transpose_grouped: the kernel letter whose axis holds one group's channels in a grouped transposed conv
            (torch: ``"O"``, ``(in, out / g, *k)``; Equinox: ``"I"``, ``(out, in / g, *k)``, flipped: the kernel of
            the equivalent convolution over the stride-dilated input); ``""``: no groups.
        padding_default: what a module pads when not told (Flax: ``"SAME"``, PITFALLS' "(!)").
        same_rule: ``"xla"`` (output ceil(n / s), odd pixel high, any stride) or ``"torch"`` (symmetric,
            stride 1 only, PITFALLS trap 4).
        padding_modes: convbridge's mode -> the API's own name; a mode not listed is not supported.
        modes_pad_same: padding modes always pad SAME-like widths, whatever padding says (Flax, trap 5).
        pad_layers: convbridge's mode -> the API's explicit padding layer (torch ``ReflectionPad2d`` ...).
        names: convbridge's argument -> the API's name for it (constructor argument or function keyword).
        params: ``"weight"`` / ``"bias"`` -> the parameter's name in the module.
        bias_broadcast: the module stores its bias as ``(C_out, 1, ..., 1)`` (Equinox) rather than ``(C_out,)``.
        precision_argument: the API takes ``precision=`` (``lax.Precision``).
    """

    name: str
    input: str
    kernel: str
    transpose_kernel: str
    transpose_flipped: bool = False
    transpose_grouped: str = ""
    padding_default: str | int = 0
    same_rule: str = "xla"
    padding_modes: Mapping[str, str] = field(default_factory=lambda: _frozen(zeros="zeros"))
    modes_pad_same: bool = False
    pad_layers: Mapping[str, str] = field(default_factory=lambda: _frozen())
    names: Mapping[str, str] = field(default_factory=lambda: _frozen())
    params: Mapping[str, str] = field(default_factory=lambda: _frozen(weight="weight", bias="bias"))
    bias_broadcast: bool = False
    precision_argument: bool = False

    def input_layout(self, spatial: str, *, batched: bool = True) -> str:
        """The input (and output) layout for ``spatial`` letters; no ``N`` when ``batched`` is False."""
        text = self.input.replace("*", spatial)
        return text if batched else text.replace("N", "")

    def kernel_layout(self, spatial: str) -> str:
        """The conv kernel layout for ``spatial`` letters."""
        return self.kernel.replace("*", spatial)

    def transpose_layout(self, spatial: str) -> str:
        """The transposed-conv kernel layout for ``spatial`` letters (convbridge's letters)."""
        return self.transpose_kernel.replace("*", spatial)

    def name_of(self, argument: str) -> str:
        """The API's name for one of convbridge's arguments (the same name when it has no other)."""
        return self.names.get(argument, argument)


TORCH = Convention(
    name="torch.nn", input="NC*", kernel="OI*", transpose_kernel="IO*", transpose_grouped="O", padding_default=0,
    same_rule="torch",
    padding_modes=_frozen(zeros="zeros", reflect="reflect", replicate="replicate", circular="circular"),
    pad_layers=_frozen(zeros="ZeroPad", reflect="ReflectionPad", replicate="ReplicationPad", circular="CircularPad"),
)
#: lax.conv_transpose's defaults (conv_general_dilated takes any layout through its dimension numbers).
LAX = Convention(
    name="jax.lax", input="N*C", kernel="*IO", transpose_kernel="*IO", transpose_flipped=True,
    padding_modes=_frozen(zeros="zeros"), precision_argument=True,
    names=_frozen(stride="window_strides", dilation="rhs_dilation", groups="feature_group_count",
                  layout="dimension_numbers"),
)
FLAX_LINEN = Convention(
    name="flax.linen", input="N*C", kernel="*IO", transpose_kernel="*IO", transpose_flipped=True,
    padding_default="SAME", padding_modes=_frozen(zeros="zeros", circular="CIRCULAR", reflect="REFLECT"),
    modes_pad_same=True, precision_argument=True,
    names=_frozen(out_channels="features", stride="strides", dilation="kernel_dilation",
                  groups="feature_group_count", bias="use_bias"),
    params=_frozen(weight="kernel", bias="bias"),
)
FLAX_NNX = Convention(
    name="flax.nnx", input="N*C", kernel="*IO", transpose_kernel="*IO", transpose_flipped=True,
    padding_default="SAME", padding_modes=_frozen(zeros="zeros", circular="CIRCULAR", reflect="REFLECT"),
    modes_pad_same=True, precision_argument=True,
    names=_frozen(in_channels="in_features", out_channels="out_features", stride="strides",
                  dilation="kernel_dilation", groups="feature_group_count", bias="use_bias"),
    params=_frozen(weight="kernel", bias="bias"),
)
EQUINOX = Convention(
    name="equinox.nn", input="C*", kernel="OI*", transpose_kernel="OI*", transpose_flipped=True, transpose_grouped="I",
    padding_default=0,
    padding_modes=_frozen(zeros="ZEROS", reflect="REFLECT", replicate="REPLICATE", circular="CIRCULAR"),
    names=_frozen(bias="use_bias"), bias_broadcast=True,
)

CONVENTIONS = MappingProxyType({c.name: c for c in (TORCH, LAX, FLAX_LINEN, FLAX_NNX, EQUINOX)})


def get(name: str) -> Convention:
    """The convention of an API by name (``"torch.nn"``, ``"jax.lax"``, ``"flax.linen"``, ``"flax.nnx"``,
    ``"equinox.nn"``).

    >>> get("flax.linen").name_of("stride")
    'strides'
    """
    if name not in CONVENTIONS:
        raise ArgumentError(f"unknown framework API {name!r}; choose one of {', '.join(map(repr, CONVENTIONS))}")
    return CONVENTIONS[name]


def load_submodule(package: str, name: str, extras: Mapping[str, str]) -> ModuleType:
    """``package.name`` imported on first use (a package's PEP 562 ``__getattr__``), or a BackendUnavailable naming
    the pip extra (``extras[name]``) when its framework is not installed.

    Raises:
        AttributeError: ``name`` is not one of ``extras``.
        BackendUnavailable: the submodule's framework is missing.
    """
    import importlib

    from convbridge.errors import BackendUnavailable

    if name not in extras:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    try:
        return importlib.import_module(f"{package}.{name}")
    except ModuleNotFoundError as missing:
        if (missing.name or "").partition(".")[0] not in ("torch", "jax", "jaxlib", "flax", "equinox"):
            raise
        raise BackendUnavailable(f"{package}.{name} needs {missing.name}, which is not installed; "
                                 f"pip install 'convbridge[{extras[name]}]'") from None
