"""convbridge's convolution layers as ``flax.linen.Module``: :class:`Conv` and :class:`ConvTranspose`.

Like ``nn.Conv`` they take channels-last input (``"NHWC"``; any layout with ``layout=``) and create their
params in ``module.init(rng, x)``: ``kernel`` (``*IO``, spatial axes first) and ``bias``. What they add:
``'replicate'`` padding, true ``'reflect'``/``'circular'`` widths, ``"same"`` with any stride, and a
ConvTranspose with torch's meaning (not flipped), groups and ``output_padding``.

The layers are dataclasses like every linen Module: their fields hold the arguments normalised (tuples, the
resolved layout) so that they hash and compare. The init argument is stored as the field ``init_scheme``
(``init`` is ``Module.init``); the constructor takes it as ``init=`` like the other frameworks' layers.

>>> import jax, jax.numpy as jnp
>>> from convbridge.nn.linen import Conv
>>> layer = Conv(1, 2, 4, 3, padding=1, padding_mode="replicate")
>>> params = layer.init(jax.random.key(0), jnp.zeros((1, 6, 2)))
>>> jax.tree.map(jnp.shape, params)
{'params': {'bias': (4,), 'kernel': (3, 2, 4)}}
"""

from __future__ import annotations

import functools
import inspect
from typing import TYPE_CHECKING, Any, TypeVar

import flax.linen as nn
import jax

from convbridge import api
from convbridge._types import IntOrInts, PaddingLike
from convbridge.errors import ArgumentTypeError
from convbridge.nn._common import LayerConfig, conv_config, transpose_config
from convbridge.nn._jax import draw_bias, draw_kernel, param_dtype

__all__ = ["Conv", "ConvTranspose"]

_M = TypeVar("_M", bound=type)


class _Layer(nn.Module):
    """The normalising, the params and the repr of both layers (their fields are their own, in torch's order)."""

    @nn.nowrap
    def _normalise(self, cfg: LayerConfig) -> None:
        """Store the validated arguments in the fields (before linen's own ``__post_init__``)."""
        names = {f for f in self.__dataclass_fields__}
        for name, value in vars(cfg).items():
            if name in names:
                object.__setattr__(self, name, value)
        object.__setattr__(self, "dtype", param_dtype(getattr(self, "dtype")))
        object.__setattr__(self, "_config", cfg)

    @property
    def config(self) -> LayerConfig:
        """The layer's arguments, validated (see :class:`convbridge.nn._common.LayerConfig`)."""
        cfg: LayerConfig = self.__dict__["_config"]
        return cfg

    @property
    def kernel_layout(self) -> str:
        """The kernel's storage layout in convbridge's letters, e.g. ``"HWIO"``."""
        return self.config.kernel_layout

    def _params(self) -> tuple[jax.Array, jax.Array | None]:
        cfg, dtype = self.config, getattr(self, "dtype")
        kernel = self.param("kernel", lambda key: draw_kernel(cfg, key, dtype))
        bias = self.param("bias", lambda key: draw_bias(cfg, key, dtype)) if cfg.use_bias else None
        return kernel, bias

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config.describe('flax')})"


def _takes_init(cls: _M) -> _M:
    """Let the dataclass constructor take ``init=`` for the field ``init_scheme`` (``init`` is ``Module.init``)."""
    generated = cls.__dict__["__init__"]  # the dataclass constructor linen made

    @functools.wraps(generated)
    def __init__(self: Any, *args: Any, init: str | None = None, **kwargs: Any) -> None:
        if init is not None:
            if "init_scheme" in kwargs:
                raise ArgumentTypeError("pass init= or init_scheme=, not both (they are the same argument)")
            kwargs["init_scheme"] = init
        generated(self, *args, **kwargs)

    signature = inspect.signature(generated)
    __init__.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[p.replace(name="init") if p.name == "init_scheme" else p for p in signature.parameters.values()])
    setattr(cls, "__init__", __init__)
    return cls


@_takes_init
class Conv(_Layer):
    """N-d convolution (cross-correlation, as torch's) computing :func:`convbridge.conv` with JAX's backend.

    Args:
        num_spatial_dims: 1, 2, 3, ...
        in_channels, out_channels: channels of the input and the output.
        kernel_size, stride, dilation: one int, or one per spatial dim.
        padding: anything :func:`convbridge.conv` takes: an int, per-dim ints, per-dim ``(lo, hi)`` pairs,
            ``"valid"``, ``"same"`` (XLA's rule, any stride) or ``"same_lower"``. The default is 0 (torch's), not
            Flax's ``"SAME"``.
        groups: channel groups (must divide both channel counts); ``groups == in_channels`` is depthwise.
        use_bias: add a learned bias.
        padding_mode: ``"zeros"``, ``"reflect"``, ``"replicate"`` or ``"circular"``.
        layout: input and output layout; ``None``: ``"NHWC"`` (``"NWC"``, ``"NDHWC"``).
        init: ``"flax"`` (``lecun_normal``, zero bias; the default here) or ``"torch"`` (U(-b, b)); stored as
            the field ``init_scheme``.
        dtype: the parameters' dtype; ``None``: float32.

    Params:
        kernel: ``(*kernel_size, in_channels / groups, out_channels)``.
        bias: ``(out_channels,)``, only with ``use_bias``.

    Raises:
        ConvBridgeError: an invalid argument (at construction) or input (at call).

    Shape:
        out = floor((n + lo + hi - dilation * (k - 1) - 1) / stride) + 1 per spatial dim.

    >>> import jax, jax.numpy as jnp
    >>> Conv(1, 2, 4, 3, stride=2, init="torch")
    Conv(1, 2, 4, kernel_size=(3,), stride=(2,), layout='NWC', init='torch')
    >>> layer, x = Conv(1, 2, 4, 3, stride=2), jnp.ones((1, 9, 2))
    >>> layer.apply(layer.init(jax.random.key(0), x), x).shape
    (1, 4, 4)
    """

    num_spatial_dims: int
    in_channels: int
    out_channels: int
    kernel_size: IntOrInts
    stride: IntOrInts = 1
    padding: PaddingLike = 0
    dilation: IntOrInts = 1
    groups: int = 1
    use_bias: bool = True
    padding_mode: str = "zeros"
    layout: str | None = None
    init_scheme: str = "flax"
    dtype: Any = None

    if TYPE_CHECKING:
        def __init__(self, num_spatial_dims: int, in_channels: int, out_channels: int, kernel_size: IntOrInts,
                     stride: IntOrInts = 1, padding: PaddingLike = 0, dilation: IntOrInts = 1, groups: int = 1,
                     use_bias: bool = True, padding_mode: str = "zeros", layout: str | None = None,
                     init: str = "flax", dtype: Any = None, *, parent: Any = None, name: str | None = None) -> None:
            ...

    def __post_init__(self) -> None:
        self._normalise(conv_config("linen", self.num_spatial_dims, self.in_channels, self.out_channels,
                                    self.kernel_size, self.stride, self.padding, self.dilation, self.groups,
                                    self.use_bias, self.padding_mode, self.layout, self.init_scheme))
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """The convolution of ``x`` (in :attr:`layout`)."""
        return api.conv(x, *self._params(), backend="jax", **self.config.kwargs(x.ndim))


@_takes_init
class ConvTranspose(_Layer):
    """N-d transposed convolution, torch's (the gradient of conv; kernel not flipped), computing
    :func:`convbridge.conv_transpose`.

    Args:
        num_spatial_dims, in_channels, out_channels, kernel_size, stride, dilation, groups, use_bias, layout,
            init, dtype: as for :class:`Conv`.
        padding: rows cropped from each end of the full output: an int, per-dim ints, ``(lo, hi)`` pairs,
            ``"valid"``, ``"same"`` (output ``n * stride``) or ``"same_lower"``.
        output_padding: rows added on the high side, ``0 <= output_padding < max(stride, dilation)`` (ATen's rule).
        padding_mode: ``"zeros"`` only.

    Params:
        kernel: ``(*kernel_size, in_channels, out_channels / groups)``: torch's weight with its spatial axes first.
        bias: ``(out_channels,)``, only with ``use_bias``.

    Raises:
        ConvBridgeError: an invalid argument (at construction) or input (at call).

    Shape:
        out = (n - 1) * stride - lo - hi + dilation * (k - 1) + output_padding + 1 per spatial dim.

    >>> import jax, jax.numpy as jnp
    >>> layer = ConvTranspose(1, 2, 8, 3, stride=2, groups=2, use_bias=False)
    >>> x = jnp.ones((1, 5, 2))
    >>> params = layer.init(jax.random.key(0), x)
    >>> params["params"]["kernel"].shape, layer.apply(params, x).shape
    ((3, 2, 4), (1, 11, 8))
    """

    num_spatial_dims: int
    in_channels: int
    out_channels: int
    kernel_size: IntOrInts
    stride: IntOrInts = 1
    padding: PaddingLike = 0
    output_padding: IntOrInts = 0
    dilation: IntOrInts = 1
    groups: int = 1
    use_bias: bool = True
    padding_mode: str = "zeros"
    layout: str | None = None
    init_scheme: str = "flax"
    dtype: Any = None

    if TYPE_CHECKING:
        def __init__(self, num_spatial_dims: int, in_channels: int, out_channels: int, kernel_size: IntOrInts,
                     stride: IntOrInts = 1, padding: PaddingLike = 0, output_padding: IntOrInts = 0,
                     dilation: IntOrInts = 1, groups: int = 1, use_bias: bool = True, padding_mode: str = "zeros",
                     layout: str | None = None, init: str = "flax", dtype: Any = None, *, parent: Any = None,
                     name: str | None = None) -> None:
            ...

    def __post_init__(self) -> None:
        self._normalise(transpose_config("linen", self.num_spatial_dims, self.in_channels, self.out_channels,
                                         self.kernel_size, self.stride, self.padding, self.output_padding,
                                         self.dilation, self.groups, self.use_bias, self.padding_mode, self.layout,
                                         self.init_scheme))
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """The transposed convolution of ``x`` (in :attr:`layout`)."""
        return api.conv_transpose(x, *self._params(), backend="jax", **self.config.kwargs(x.ndim))
