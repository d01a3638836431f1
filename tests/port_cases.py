"""Layer configurations for the porting tests: a seeded sample of every framework's own layers.

Each case builds a source layer in one framework (torch.nn, flax.linen, flax.nnx, equinox) and names
a target to port it to. The sample covers every rank, stride, padding form (ints, per-dim, pairs,
'same', 'valid', Flax's 'SAME', 'CIRCULAR', 'REFLECT', 'CAUSAL', Equinox's 'SAME_LOWER'), dilation,
groups (depthwise too), bias on and off, every padding mode, output_padding (up to max(stride,
dilation) - 1), transpose_kernel, and channels-first or batched target layouts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

TARGETS = ("linen", "nnx", "equinox", "torch")


@dataclass(frozen=True)
class PortCase:
    """One source layer, how to build it, and where to port it."""

    name: str
    source: str  # "torch" | "linen" | "nnx" | "equinox"
    build: Callable[[], Any]  # the source module, or a (linen module, variables) pair
    x_shape: tuple[int, ...]  # the source's input
    target: str
    layout: str | None = None
    #: What the case exercises (source, target, op, rank, padding form and mode, groups, ...): the CI sample covers
    #: every feature the full list has.
    features: frozenset[tuple[Any, ...]] = frozenset()

    def __str__(self) -> str:
        return self.name


def _span(k: int, d: int) -> int:
    return d * (k - 1) + 1


def _features(source: str, target: str, op: str, nsp: int, stride: tuple[int, ...], dilation: tuple[int, ...],
              bias: bool, **more: Any) -> frozenset[tuple[Any, ...]]:
    """The tags of one case: the route, the op at its rank, strides and dilations, bias, and ``more`` (a name -> a
    value; None or False leaves a tag out)."""
    tags = {("source", source), ("target", target), ("route", source, target), ("rank", source, op, nsp),
            ("bias", source, op, bias)}
    if any(v > 1 for v in stride):
        tags.add(("stride", source, op))
    if any(v > 1 for v in dilation):
        tags.add(("dilation", source, op))
    tags |= {(name, source, op, value) for name, value in more.items() if value is not None and value is not False}
    return frozenset(tags)


def _torch_case(r: random.Random, i: int) -> PortCase:
    op = r.choice(["conv", "conv", "conv", "conv_transpose", "conv_transpose"])
    nsp = r.choice([1, 1, 2, 2, 2, 3])
    kind = r.choice(["one", "one", "grouped", "depthwise"])
    if kind == "depthwise":
        groups = cin = r.choice([2, 3, 4])
        cout = cin * r.choice([1, 2])
    else:
        groups = 1 if kind == "one" else r.choice([2, 3])
        cin, cout = groups * r.choice([1, 2, 3]), groups * r.choice([1, 2])
    kmax = 3 if nsp == 3 else 5
    k = tuple(r.randint(1, kmax) for _ in range(nsp))
    s = tuple(r.choice([1, 1, 2, 3]) for _ in range(nsp))
    d = tuple(r.choice([1, 1, 2]) for _ in range(nsp))
    bias = r.random() < 0.7
    spans = [_span(kk, dd) for kk, dd in zip(k, d)]
    kw: dict[str, Any] = dict(stride=s, dilation=d, groups=groups, bias=bias)
    if op == "conv":
        mode = r.choice(["zeros", "zeros", "zeros", "reflect", "replicate", "circular"])
        form = r.choice(["int", "per_dim", "per_dim", "valid", "same"])
        if form == "same" and any(v > 1 for v in s):
            form = "per_dim"
        if form == "int":
            padding: Any = r.randint(0, max(spans) // 2 + 1)
        elif form == "per_dim":
            padding = tuple(r.randint(0, sp // 2 + 1) for sp in spans)
        else:
            padding = form
        kw |= dict(padding=padding, padding_mode=mode)
        pads = [padding] * nsp if isinstance(padding, int) else padding if isinstance(padding, tuple) else [0] * nsp
        if padding == "same":
            pads = [sp // 2 + 1 for sp in spans]
        n = [sp + p + r.randint(1, 3) for sp, p in zip(spans, pads)]
        cls = f"Conv{nsp}d"
    else:
        out_pad = tuple(r.randint(0, max(ss, dd) - 1) for ss, dd in zip(s, d))
        n = [r.randint(2, 4) for _ in range(nsp)]
        padding = tuple(r.randint(0, sp // 2 + (1 if r.random() < 0.2 else 0)) for sp in spans)
        # torch needs an output of at least one row: (n - 1) s - 2 p + d (k - 1) + output_padding + 1 >= 1
        padding = tuple(p if (nn - 1) * ss - 2 * p + sp + op >= 1 else 0
                        for p, nn, ss, sp, op in zip(padding, n, s, spans, out_pad))
        kw |= dict(padding=padding, output_padding=out_pad)
        cls = f"ConvTranspose{nsp}d"
    if nsp == 3:
        n = [min(v, 6) if op == "conv_transpose" else v for v in n]

    def build() -> Any:
        import torch

        torch.manual_seed(i)
        return getattr(torch.nn, cls)(cin, cout, k, **kw)

    target = r.choice(["linen", "nnx", "equinox"])
    layout = None
    if r.random() < 0.12:
        sp = "".join("DHW"[3 - nsp:])
        layout = {"linen": "NC" + sp, "nnx": "NC" + sp, "equinox": "NC" + sp}[target]
    name = f"torch-{i}-{cls}({cin},{cout},{k},{', '.join(f'{a}={v}' for a, v in kw.items())})->{target}"
    features = _features("torch", target, op, nsp, s, d, bias, groups=kind, layout=layout and target,
                         padding=form if op == "conv" else None, mode=kw.get("padding_mode"),
                         output_padding=op == "conv_transpose" and any(out_pad))
    return PortCase(name + (f"[{layout}]" if layout else ""), "torch", build, (2, cin, *n), target, layout, features)


def _flax_case(r: random.Random, i: int, api: str) -> PortCase:
    op = r.choice(["conv", "conv", "conv_transpose"])
    nsp = r.choice([1, 2, 2])
    groups = r.choice([1, 1, 2]) if op == "conv" else 1
    cin, cout = groups * r.choice([1, 2]), groups * r.choice([1, 2, 3])
    k = tuple(r.randint(1, 4) for _ in range(nsp))
    s = tuple(r.choice([1, 2, 3]) for _ in range(nsp))
    d = tuple(r.choice([1, 1, 2]) for _ in range(nsp))
    bias = r.random() < 0.7
    spans = [_span(kk, dd) for kk, dd in zip(k, d)]
    if op == "conv":
        forms = ["SAME", "SAME", "VALID", "CIRCULAR", "REFLECT", "pairs", "int"] + (["CAUSAL"] if nsp == 1 else [])
        form = r.choice(forms)
        padding: Any = {"pairs": [(r.randint(0, sp), r.randint(0, sp)) for sp in spans],
                        "int": r.randint(0, 2)}.get(form, form)
        n = [sp + r.randint(2, 5) for sp in spans]
        kw: dict[str, Any] = dict(kernel_size=k, strides=s, padding=padding, kernel_dilation=d,
                                  feature_group_count=groups, use_bias=bias)
        cls = "Conv"
    else:
        form = r.choice(["SAME", "VALID", "pairs"])
        padding = form if form != "pairs" else [(r.randint(0, sp - 1), r.randint(0, sp - 1)) for sp in spans]
        n = [(sp - 1) // ss + r.randint(2, 3) for sp, ss in zip(spans, s)]  # an output of at least one row
        kw = dict(kernel_size=k, strides=s, padding=padding, kernel_dilation=d, use_bias=bias,
                  transpose_kernel=r.random() < 0.3)
        cls = "ConvTranspose"
    x_shape = (2, *n, cin)

    def build() -> Any:
        import jax
        import jax.numpy as jnp

        rng = np.random.default_rng(i)  # weights drawn on the host: no XLA compile per shape
        if api == "linen":
            import flax.linen as linen

            m = getattr(linen, cls)(cout, **kw)
            shapes = jax.eval_shape(m.init, jax.random.PRNGKey(i), jax.ShapeDtypeStruct(x_shape, jnp.float32))
            params = {k: jnp.asarray(rng.standard_normal(v.shape).astype(np.float32))
                      for k, v in shapes["params"].items()}
            return m, {"params": params}
        from flax import nnx

        m = nnx.eval_shape(lambda: getattr(nnx, cls)(cin, cout, rngs=nnx.Rngs(i), **kw))
        m.kernel.set_value(jnp.asarray(rng.standard_normal(m.kernel.get_value().shape).astype(np.float32)))
        if bias:
            m.bias.set_value(jnp.asarray(rng.standard_normal((cout,)).astype(np.float32)))
        return m

    target = r.choice(["torch", "torch", "equinox", "nnx" if api == "linen" else "linen"])
    name = f"{api}-{i}-{cls}({cout}, {', '.join(f'{a}={v}' for a, v in kw.items())})->{target}"
    features = _features(api, target, op, nsp, s, d, bias, padding=form, groups=groups > 1,
                         transpose_kernel=kw.get("transpose_kernel"))
    return PortCase(name, api, build, x_shape, target, features=features)


def _equinox_case(r: random.Random, i: int) -> PortCase:
    op = r.choice(["conv", "conv_transpose"])
    nsp = r.choice([1, 2, 2, 3])
    groups = r.choice([1, 1, 2])
    cin, cout = groups * r.choice([1, 2]), groups * r.choice([1, 2])
    k = tuple(r.randint(1, 3 if nsp == 3 else 4) for _ in range(nsp))
    s = tuple(r.choice([1, 2]) for _ in range(nsp))
    d = tuple(r.choice([1, 1, 2]) for _ in range(nsp))
    bias = r.random() < 0.7
    spans = [_span(kk, dd) for kk, dd in zip(k, d)]
    kw: dict[str, Any] = dict(stride=s, dilation=d, groups=groups, use_bias=bias)
    if op == "conv":
        form = r.choice(["SAME", "SAME_LOWER", "VALID", "pairs", "int"])
        kw["padding"] = {"pairs": [(r.randint(0, sp // 2), r.randint(0, sp // 2)) for sp in spans],
                         "int": r.randint(0, 1)}.get(form, form)
        kw["padding_mode"] = r.choice(["ZEROS", "ZEROS", "REFLECT", "REPLICATE", "CIRCULAR"])
        n = [sp + r.randint(2, 4) for sp in spans]
        cls = "Conv"
    else:
        form = r.choice(["SAME", "SAME_LOWER", "VALID", "pairs"])
        kw["padding"] = form if form != "pairs" else [(r.randint(0, sp // 2), r.randint(0, sp // 2)) for sp in spans]
        kw["output_padding"] = tuple(r.randint(0, ss - 1) for ss in s)
        n = [r.randint(2, 4) for _ in range(nsp)]
        cls = "ConvTranspose"

    def build() -> Any:
        import equinox as eqx
        import jax

        import jax.numpy as jnp

        m = eqx.filter_eval_shape(getattr(eqx.nn, cls), nsp, cin, cout, k, key=jax.random.PRNGKey(0), **kw)
        rng = np.random.default_rng(i)  # weights drawn on the host: no XLA compile per shape
        m = eqx.tree_at(lambda t: t.weight, m, jnp.asarray(rng.standard_normal(m.weight.shape).astype(np.float32)))
        if bias:
            m = eqx.tree_at(lambda t: t.bias, m, jnp.asarray(rng.standard_normal(m.bias.shape).astype(np.float32)))
        return m

    target = r.choice(["torch", "torch", "linen", "nnx"])
    name = f"equinox-{i}-{cls}({nsp}, {cin}, {cout}, {k}, {', '.join(f'{a}={v}' for a, v in kw.items())})->{target}"
    features = _features("equinox", target, op, nsp, s, d, bias, padding=form, groups=groups > 1,
                         mode=kw.get("padding_mode"), output_padding=any(kw.get("output_padding", ())))
    return PortCase(name, "equinox", build, (cin, *n), target, features=features)


def port_cases(n_torch: int = 200, n_flax: int = 40, n_equinox: int = 60, seed: int = 2026) -> list[PortCase]:
    """A seeded sample: torch sources ported to every JAX framework, and Flax / Equinox sources ported back."""
    r = random.Random(seed)
    out = [_torch_case(r, i) for i in range(n_torch)]
    out += [_flax_case(r, 1000 + i, "linen" if i % 2 == 0 else "nnx") for i in range(n_flax)]
    out += [_equinox_case(r, 2000 + i) for i in range(n_equinox)]
    return out


def x_for(case: PortCase, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(case.x_shape).astype(np.float32)
