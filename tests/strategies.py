"""Shared Hypothesis strategies: valid configurations of every op across ranks, layouts, paddings and groups.

Each strategy draws the rank itself (1-3 spatial dims), so one test covers all ranks; how
many examples run is the profile's business (conftest.py), never a decorator's. A drawn
configuration is a dict; ``build_*`` turns it into arrays and keyword arguments, skipping
(``assume``) the rare draw the package rightly rejects (reflect wider than the input, a
padding that crops everything).
"""

from __future__ import annotations

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st

import convbridge as cb
import convbridge.spec  # noqa: F401 - cb.spec below, also when no other import has loaded it

SPATIAL = {1: "W", 2: "HW", 3: "DHW"}
RANKS = st.sampled_from([1, 2, 2, 3])


def _per_dim(draw, values, nsp):
    return draw(st.lists(values, min_size=nsp, max_size=nsp))


def _padding(draw, nsp, widths, forms=("int", "ints", "pairs", "valid", "same", "same_lower", "broadcast")):
    form = draw(st.sampled_from(forms))
    if form == "int":
        return draw(widths)
    if form == "ints":
        return _per_dim(draw, widths, nsp)
    if form == "broadcast":
        return [draw(widths)]
    if form == "pairs":
        return [tuple(draw(st.lists(widths, min_size=2, max_size=2))) for _ in range(nsp)]
    return form


def _geometry(draw):
    """Rank, groups (depthwise sometimes), input channels per group, kernel, stride, dilation."""
    nsp = draw(RANKS)
    g = draw(st.sampled_from([1, 1, 2, 3]))
    cg_in = 1 if draw(st.booleans()) and g > 1 else draw(st.integers(1, 3))
    return (nsp, g, cg_in, _per_dim(draw, st.integers(1, 4), nsp), _per_dim(draw, st.integers(1, 3), nsp),
            _per_dim(draw, st.integers(1, 3), nsp))


@st.composite
def conv_configs(draw):
    nsp, g, cg_in, kernel, stride, dilation = _geometry(draw)
    mode = draw(st.sampled_from(["zeros", "zeros", "reflect", "replicate", "circular"]))
    padding = _padding(draw, nsp, st.integers(0, 3))
    sizes = [d * (k - 1) + 1 + draw(st.integers(0, 6)) for k, d in zip(kernel, dilation)]
    if nsp == 3:
        sizes = [min(n, 9) for n in sizes]
    return dict(
        nsp=nsp, g=g, c_in=g * cg_in, c_out=g * draw(st.integers(1, 3)), kernel=kernel, sizes=sizes,
        batch=draw(st.sampled_from([1, 2, None])), channels_last=draw(st.booleans()), bias=draw(st.booleans()),
        seed=draw(st.integers(0, 2**16)),
        kwargs=dict(stride=stride, dilation=dilation, padding=padding, padding_mode=mode, groups=g),
    )


def _arrays(cfg, w_shape, c_out, kernel_channels_to):
    """Random x (channels-first, or channels-last with the layout saying so), w of ``w_shape`` (its two channel
    axes moved to ``kernel_channels_to`` when channels-last) and an optional bias; and the keyword arguments."""
    nsp = cfg["nsp"]
    rng = np.random.default_rng(cfg["seed"])
    x_shape = (cfg["c_in"], *cfg["sizes"]) if cfg["batch"] is None else (cfg["batch"], cfg["c_in"], *cfg["sizes"])
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(c_out).astype(np.float32) if cfg["bias"] else None
    kwargs = dict(cfg["kwargs"])
    if cfg["channels_last"]:
        x = np.moveaxis(x, -nsp - 1, -1)
        w = np.moveaxis(w, (0, 1), kernel_channels_to)
        kwargs["layout"] = ("N" if cfg["batch"] is not None else "") + SPATIAL[nsp] + "C"
    return x, w, b, kwargs


def build_conv(cfg):
    w_shape = (cfg["c_out"], cfg["c_in"] // cfg["g"], *cfg["kernel"])
    x, w, b, kwargs = _arrays(cfg, w_shape, cfg["c_out"], (-1, -2))  # (O, I, *k) -> (*k, I, O)
    _valid(cb.spec.make_conv_spec, x.shape, w.shape, None if b is None else b.shape, kwargs)
    return x, w, b, kwargs


@st.composite
def transpose_configs(draw):
    nsp, g, cg_in, kernel, stride, dilation = _geometry(draw)
    padding = _padding(draw, nsp, st.integers(0, 3))
    kwargs = dict(stride=stride, dilation=dilation, padding=padding, groups=g)
    if not isinstance(padding, str) or padding == "valid":
        kwargs["output_padding"] = [draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation)]
    return dict(
        nsp=nsp, g=g, c_in=g * cg_in, c_out_g=draw(st.integers(1, 3)), kernel=kernel,
        batch=draw(st.sampled_from([1, 2, None])), sizes=_per_dim(draw, st.integers(1, 6 if nsp < 3 else 4), nsp),
        channels_last=draw(st.booleans()), bias=draw(st.booleans()), seed=draw(st.integers(0, 2**16)),
        by_size=draw(st.booleans()), kwargs=kwargs,
    )


def build_transpose(cfg):
    w_shape = (cfg["c_in"], cfg["c_out_g"], *cfg["kernel"])
    x, w, b, kwargs = _arrays(cfg, w_shape, cfg["g"] * cfg["c_out_g"], (-2, -1))  # (C_in, C_out/g, *k) -> (*k, I, O)
    spec = _valid(cb.spec.make_conv_transpose_spec, x.shape, w.shape, None if b is None else b.shape, kwargs)
    if cfg["by_size"] and "output_padding" in kwargs:  # the same call, stated through output_size
        kwargs.pop("output_padding")
        kwargs["output_size"] = spec.out_spatial
    return x, w, b, kwargs


@st.composite
def unfold_configs(draw):
    nsp = draw(RANKS)
    kernel = _per_dim(draw, st.integers(1, 4), nsp)
    dilation = _per_dim(draw, st.integers(1, 3), nsp)
    sizes = [d * (k - 1) + 1 + draw(st.integers(0, 5 if nsp < 3 else 3)) for k, d in zip(kernel, dilation)]
    return dict(nsp=nsp, kernel=kernel, sizes=sizes, channels=draw(st.integers(1, 3)),
                batch=draw(st.sampled_from([0, 1, 2, None])), channels_last=draw(st.booleans()),
                seed=draw(st.integers(0, 2**16)),
                kwargs=dict(stride=_per_dim(draw, st.integers(1, 3), nsp), dilation=dilation,
                            padding=_padding(draw, nsp, st.integers(0, 2),
                                             ("int", "ints", "pairs", "valid", "same", "same_lower"))))


def build_unfold(cfg):
    nsp = cfg["nsp"]
    rng = np.random.default_rng(cfg["seed"])
    shape = (cfg["channels"], *cfg["sizes"])
    if cfg["batch"] is not None:
        shape = (cfg["batch"], *shape)
    x = rng.standard_normal(shape).astype(np.float32)
    kwargs = dict(cfg["kwargs"])
    if cfg["channels_last"]:
        x = np.moveaxis(x, -nsp - 1, -1)
        kwargs["layout"] = ("" if cfg["batch"] is None else "N") + SPATIAL[nsp] + "C"
    spec = _valid(lambda x, k, b, **kw: cb.spec.make_unfold_spec(x, k, **kw), x.shape, cfg["kernel"], None, kwargs)
    return x, kwargs, spec


def _valid(make, *args):
    *positional, kwargs = args
    try:
        return make(*positional, **kwargs)
    except cb.ConvBridgeError:  # a valid-config generator skips what the package rightly rejects
        assume(False)
