"""The layers CNNs are made of, framework-free: their canonical kind, and the bound each is judged with.

Every captured layer call is reduced to a :class:`Info`: its kind (from the class name, in every framework),
its parameters in PyTorch's layout and meaning (``weight``, ``bias``, ``running_mean``...), and its semantic
configuration (``eps``, ``padding``, ``align_corners``...), from which :func:`causes` names what differs.

**The bound** (:func:`gauge`). Both sides compute the layer on the same input ``x``; each result differs from
the exact value by at most ``c u G`` elementwise, with ``u`` the unit roundoff of the dtype and ``G >= 0`` a
gauge computed in float64. Two correct results therefore differ by at most ``2 c u G``; ``allowed = 2 c`` in
units of ``u G``.

============================  =====================================================  ==========================
kind                          gauge ``G``                                            ``c`` (per side)
============================  =====================================================  ==========================
conv, conv_transpose, linear  ``|W| * |x| + |b|`` (the layer with absolute values)     ``gamma_{K+1} / u``, K terms
batchnorm (eval)              ``(|x| + |mean|) |s| + |beta|``, ``s = gamma/sqrt(v+e)`` 10
layernorm, groupnorm          ``|gamma| (|x-mu|/s (m2/v + 1) + m1/s) + |beta|``        ``n + 10``, n per group
relu, relu6, max pool,        ``max |x|``                                            0: a selection is exact
flatten, identity, dropout,
nearest upsampling
average pooling               ``max |x|``                                            ``m + 2``, m per window
bilinear upsampling           ``max |x|``                                            ``16 + 4 max(spatial)``
gelu, silu, sigmoid, tanh...  ``|x| + |y|``                                          16
any other layer               ``|x| + |y|``                                          64, and only the float64
                                                                                     re-run can call a mismatch
============================  =====================================================  ==========================

The conv/linear bound is rigorous (Higham's ``gamma_K``: a sum of K products in any order, plus the bias). The
others hold on every implementation we know with a margin (a centred-then-scaled or a scale-and-shift
BatchNorm takes at most 6 roundings and a reciprocal square root within 2 ulp; bilinear weights computed from
coordinates carry an error up to ``u`` times the source extent); they are documented here so they can be
argued with. A second, independent test runs both layers in float64 on the same input: if their float64
results differ by more than the same bound at ``u = 2**-53``, they compute different functions.

**Glue** (:func:`glue_bound`). The code between two captured layers (a residual add, a concat, a reshape, a
functional ReLU or pooling) is assumed to be built from operations that are 1-Lipschitz in the max norm and
sums of at most two terms. Then B's own input to layer k differs from A's by at most ``2 D + 2 u |x|``, where
``D`` is the largest difference of any earlier layer's output between the two full runs. An input beyond that
while every earlier layer agreed is a glue bug: the code between the layers differs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from convbridge.bounds import gamma

__all__ = ["Info", "kind_of", "PARAMETRIC", "EXACT", "gauge", "glue_bound", "causes"]

#: Kinds that own parameters: paired one to one, in order, between the two models.
PARAMETRIC = frozenset({"conv", "conv_transpose", "linear", "batchnorm", "layernorm", "groupnorm"})
#: Kinds whose result is a selection (or a copy) of input values: two correct results are identical.
EXACT = frozenset({"relu", "relu6", "maxpool", "adaptive_maxpool", "flatten", "identity", "dropout", "upsample_nearest",
                   "concat"})
_SMOOTH = frozenset({"gelu", "gelu_tanh", "silu", "sigmoid", "tanh", "softplus", "elu", "leaky_relu", "hardswish",
                     "hardsigmoid", "softmax", "log_softmax"})

# (substring of the lower-cased class name, kind), first match wins; the order matters ("convtranspose" before
# "conv", "relu6" before "relu", "adaptiveavg" before "avg").
_PATTERNS = (
    ("convtranspose", "conv_transpose"), ("conv_transpose", "conv_transpose"), ("deconv", "conv_transpose"),
    ("conv", "conv"), ("linear", "linear"), ("dense", "linear"),
    ("batchnorm", "batchnorm"), ("layernorm", "layernorm"), ("groupnorm", "groupnorm"),
    ("relu6", "relu6"), ("leakyrelu", "leaky_relu"), ("leaky_relu", "leaky_relu"), ("relu", "relu"),
    ("gelu", "gelu"), ("silu", "silu"), ("swish", "silu"), ("hardswish", "hardswish"), ("sigmoid", "sigmoid"),
    ("tanh", "tanh"), ("softplus", "softplus"), ("elu", "elu"), ("logsoftmax", "log_softmax"),
    ("softmax", "softmax"),
    ("adaptiveavg", "adaptive_avgpool"), ("adaptive_avg", "adaptive_avgpool"), ("globalavg", "adaptive_avgpool"),
    ("adaptivemax", "adaptive_maxpool"), ("adaptive_max", "adaptive_maxpool"),
    ("maxpool", "maxpool"), ("max_pool", "maxpool"), ("avgpool", "avgpool"), ("avg_pool", "avgpool"),
    ("upsamplingnearest", "upsample_nearest"), ("upsamplingbilinear", "upsample"),
    ("upsample", "upsample"), ("interpolate", "upsample"), ("resize", "upsample"),
    ("flatten", "flatten"), ("dropout", "dropout"), ("identity", "identity"), ("concat", "concat"),
)


def kind_of(type_name: str) -> str:
    """The canonical kind of a layer class (or an Equinox ``Lambda``'s function) by its name.

    >>> kind_of("torch.nn.Conv2d"), kind_of("flax.linen.ConvTranspose"), kind_of("Dense"), kind_of("ReLU6")
    ('conv', 'conv_transpose', 'linear', 'relu6')
    >>> kind_of("AdaptiveAvgPool2d"), kind_of("MyBlock")
    ('adaptive_avgpool', 'other')
    """
    name = type_name.rsplit(".", 1)[-1].lower()
    return next((kind for pattern, kind in _PATTERNS if pattern in name), "other")


@dataclass
class Info:
    """One captured layer, reduced to what judging it needs (framework-free).

    Attributes:
        kind: the canonical kind (:func:`kind_of`), refined by the framework side (``"upsample_nearest"``...).
        params: parameters in PyTorch's layout and meaning: ``weight``/``bias`` (conv: ``OI*``, transposed:
            ``IO*``; linear ``(out, in)``), ``running_mean``/``running_var`` (batchnorm).
        config: the semantic configuration (``eps``, ``padding``, ``stride``, ``align_corners``, ``mode``...).
        terms: products summed per output element (conv, linear) or window size (pooling); 0 when unknown.
        gauge_fn: for conv/linear, ``fn(|x|) -> |W| * |x| + |b|`` in float64 in this side's layout.
        channels_axis: the axis of channels in this side's activations (1 or -1).
    """

    kind: str
    params: dict[str, np.ndarray] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    terms: int = 0
    gauge_fn: Callable[[np.ndarray], np.ndarray] | None = None
    channels_axis: int = 1


def _per_channel(v: np.ndarray, like: np.ndarray, axis: int) -> np.ndarray:
    shape = [1] * like.ndim
    shape[axis] = -1
    return np.asarray(v, np.float64).reshape(shape)


def gauge(info: Info, x: np.ndarray, y: np.ndarray, u: float) -> tuple[np.ndarray, float, str, bool]:
    """The gauge ``G`` (broadcastable to ``y``), the per-side constant ``c``, how, and whether it is rigorous.

    Args:
        info: the layer (side A's).
        x, y: the layer's input and its float64 output (side A's layout).
        u: the unit roundoff of the computation judged.

    Returns:
        ``(G, c, description, rigorous)``: each side's error is at most ``c u G``.

    >>> g, c, how, rigorous = gauge(Info("relu"), np.array([-2.0, 1.0]), np.array([0.0, 1.0]), 2.0**-24)
    >>> float(g), c, rigorous
    (2.0, 0.0, True)
    """
    kind = info.kind
    ax = np.abs(np.asarray(x, np.float64))
    if kind in ("conv", "conv_transpose", "linear") and info.gauge_fn is not None:
        k = max(info.terms, 1) + 1
        c = gamma(k, u) / u if k * u < 1 else math.inf
        return info.gauge_fn(ax), c, f"rigorous: gamma_K |W||x| + |b|, K = {k}", True
    if kind == "batchnorm" and {"running_var", "running_mean"} <= info.params.keys():
        p, axis = info.params, info.channels_axis
        eps = float(info.config.get("eps", 1e-5))
        w = p.get("weight", np.ones_like(p["running_var"]))
        b = p.get("bias", np.zeros_like(p["running_var"]))
        s = np.abs(np.asarray(w, np.float64)) / np.sqrt(np.asarray(p["running_var"], np.float64) + eps)
        g = ((ax + _per_channel(np.abs(p["running_mean"]), ax, axis)) * _per_channel(s, ax, axis)
             + _per_channel(np.abs(b), ax, axis))
        return g, 10.0, "6 roundings and a reciprocal square root, (|x| + |mean|)|s| + |beta|", True
    if kind in ("layernorm", "groupnorm"):
        found = _norm_gauge(info, np.asarray(x, np.float64))
        if found is not None:
            g, n = found
            return g, float(n + 10), f"mean and variance of n = {n}, a first-order bound", False
    if kind in EXACT:
        return np.asarray(float(np.max(ax, initial=0.0))), 0.0, "exact: a selection of input values", True
    if kind in ("avgpool", "adaptive_avgpool"):
        m = max(info.terms, 1)
        return (np.asarray(float(np.max(ax, initial=0.0))), float(m + 2),
                f"a mean of m = {m} values, max |x|", True)
    if kind == "upsample":
        size = max(x.shape[2:] if info.channels_axis == 1 else x.shape[1:-1], default=1)
        return (np.asarray(float(np.max(ax, initial=0.0))), 16.0 + 4 * size,
                "interpolation weights from coordinates, max |x|", False)
    ay = np.abs(np.asarray(y, np.float64))
    if kind in _SMOOTH:
        return ax + ay, 16.0, "a few ulp of an elementwise function, |x| + |y|", False
    return ax + ay, 64.0, "no bound for this kind: the float64 re-run decides", False


def _norm_gauge(info: Info, x: np.ndarray) -> tuple[np.ndarray, int] | None:
    """LayerNorm / GroupNorm: ``|gamma| (|x - mu| / s (m2 / v + 1) + m1 / s) + |beta|`` per element, with ``mu``,
    ``v``, ``m1 = mean |x|``, ``m2 = mean x^2`` over the element's group and ``s = sqrt(v + eps)``: to first order, a
    mean of n terms in any order is off by ``n u m1``, a variance by ``n u m2`` (so ``s`` by ``n u m2 / (2 v)``
    relatively), and the rest takes a few roundings. ``None`` when the layer's grouping cannot be read."""
    eps = float(info.config.get("eps", 1e-5))
    axis = info.channels_axis % x.ndim
    if info.kind == "groupnorm":
        groups = int(info.config.get("num_groups", 0) or 0)
        if groups <= 0 or x.ndim < 2 or x.shape[axis] % groups:
            return None
        xc = np.moveaxis(x, axis, 1)
        xg: np.ndarray = xc.reshape(xc.shape[0], groups, -1)
    else:
        n, k = max(info.terms, 1), x.ndim
        while k > 0 and int(np.prod(x.shape[k - 1:])) <= n:
            k -= 1
        if int(np.prod(x.shape[k:])) != n:
            return None
        xg = x.reshape(-1, n)
    mu = xg.mean(-1, keepdims=True)
    var = ((xg - mu) ** 2).mean(-1, keepdims=True)
    s = np.sqrt(var + eps)
    core = np.abs(xg - mu) / s * ((xg**2).mean(-1, keepdims=True) / (var + eps) + 1) + np.abs(xg).mean(-1,
                                                                                                   keepdims=True) / s
    if info.kind == "groupnorm":
        core = np.moveaxis(core.reshape(xc.shape), 1, axis)
        w = _per_channel(np.abs(info.params["weight"]), x, axis) if "weight" in info.params else 1.0
        b = _per_channel(np.abs(info.params["bias"]), x, axis) if "bias" in info.params else 0.0
    else:
        core = core.reshape(x.shape)
        w = np.abs(np.asarray(info.params["weight"], np.float64)) if "weight" in info.params else 1.0
        b = np.abs(np.asarray(info.params["bias"], np.float64)) if "bias" in info.params else 0.0
    return np.asarray(w * core + b), xg.shape[-1]


def glue_bound(d_earlier: float, x: np.ndarray, u: float) -> np.ndarray:
    """The most B's own input to a layer may differ from A's when the glue before it is the same code.

    Args:
        d_earlier: the largest ``|y_b - y_a|`` of any earlier layer's output (and the model's input).
        x: A's input to the layer.
        u: the unit roundoff.

    >>> float(glue_bound(1e-6, np.array([1.0]), 2.0**-24)[0]) > 2e-6
    True
    """
    return 2.0 * d_earlier + 2.0 * u * np.abs(np.asarray(x, np.float64))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def causes(a: Info, b: Info) -> list[str]:
    """What differs between the two layers' configurations and parameters, in words (empty when nothing does).

    >>> causes(Info("batchnorm", config={"eps": 1e-5}), Info("batchnorm", config={"eps": 1e-3}))
    ['eps 1e-05 vs 0.001']
    """
    found = []
    for key in a.config:
        if key in b.config and not _same(a.config[key], b.config[key]):
            found.append(f"{key} {_fmt(a.config[key])} vs {_fmt(b.config[key])}")
    for key in sorted(a.params.keys() & b.params.keys()):
        pa, pb = np.asarray(a.params[key]), np.asarray(b.params[key])
        if pa.shape != pb.shape:
            found.append(f"{key} shape {pa.shape} vs {pb.shape}")
        elif not np.array_equal(pa, pb):
            found.append(_weights(key, pa, pb, a.kind))
    missing = sorted(a.params.keys() ^ b.params.keys())
    if missing:
        found.append("only one side has " + ", ".join(missing))
    return found


def _same(va: Any, vb: Any) -> bool:
    if isinstance(va, float) or isinstance(vb, float):
        try:
            return math.isclose(float(va), float(vb), rel_tol=1e-12)
        except (TypeError, ValueError):
            return False
    return bool(va == vb)


def _weights(key: str, pa: np.ndarray, pb: np.ndarray, kind: str) -> str:
    if kind in ("conv", "conv_transpose") and key == "weight" and pa.ndim > 2:
        spatial = tuple(range(2, pa.ndim))
        if np.array_equal(np.flip(pa, spatial), pb):
            return "kernel flipped in every spatial axis (the transposed-convolution convention: PITFALLS trap 2)"
        if pa.shape[0] == pa.shape[1] and np.array_equal(np.swapaxes(pa, 0, 1), pb):
            return "kernel's in and out channels swapped"
        if pa.shape[0] == pa.shape[1] and np.array_equal(np.flip(np.swapaxes(pa, 0, 1), spatial), pb):
            return "kernel flipped and its channels swapped"
    d = float(np.max(np.abs(pa.astype(np.float64) - pb.astype(np.float64)))) if pa.size else 0.0
    return f"{key} values differ (max |d| {d:.3g})"
