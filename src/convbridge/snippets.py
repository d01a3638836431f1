"""Exact equivalent calls of a convolution in torch, jax.lax, Flax and Equinox, as runnable code.

Each snippet reads ``x``, ``w`` and ``b`` (that framework's arrays, in the user's
layouts; ``b`` only when the spec has a bias) and leaves the result in ``y``, in
the user's output layout. Padding that a framework cannot express directly
(asymmetric pairs in torch, padding modes in lax and Flax) becomes an explicit
pad followed by an unpadded convolution, and the snippet says why.
"""

from __future__ import annotations

from convbridge.explain import Snippet
from convbridge.spec import ConvSpec

__all__ = ["snippets"]

_NP_MODE = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}
_TORCH_PAD = {"zeros": "ZeroPad", "reflect": "ReflectionPad", "replicate": "ReplicationPad",
              "circular": "CircularPad"}


def snippets(spec: ConvSpec) -> tuple[Snippet, ...]:
    """All framework snippets for ``spec`` (torch ones only for 1-3 spatial dims)."""
    out = []
    if spec.nsp <= 3:
        out += [_torch_functional(spec), _torch_module(spec)]
    out += [_lax(spec), _flax(spec), _equinox(spec)]
    return tuple(out)


def _letters(spec: ConvSpec):
    lay = spec.layout
    x_user, out_user = lay.user(lay.lhs), lay.user(lay.out)
    nc = "NC" if lay.batched else "C"
    return lay, x_user, out_user, nc


def _perm(src: str, dst: str) -> tuple[int, ...]:
    return tuple(src.index(c) for c in dst)


def _permute_line(var: str, src: str, dst: str, method: str, new: str | None = None) -> list[str]:
    """``new = var.<method>(perm)`` when the layouts differ, else nothing."""
    if src == dst:
        return [] if new is None else [f"{new} = {var}"]
    return [f"{new or var} = {method.format(var=var, perm=_perm(src, dst))}  # {src} -> {dst}"]


def _symmetric(spec: ConvSpec) -> bool:
    return all(lo == hi for lo, hi in spec.padding)


def _torch_pad_tuple(spec: ConvSpec) -> tuple[int, ...]:
    """torch's F.pad order: last spatial dim first, (lo, hi) each."""
    return tuple(p for pair in reversed(spec.padding) for p in pair)


def _torch_prelude(spec: ConvSpec) -> tuple[list[str], str, str]:
    lay, x_user, out_user, nc = _letters(spec)
    sp = "".join(lay.spatial)
    lines = _permute_line("x", x_user, nc + sp, "{var}.permute{perm}")
    lines += _permute_line("w", lay.rhs, "OI" + sp, "{var}.permute{perm}")
    return lines, nc + sp, out_user


def _torch_functional(spec: ConvSpec) -> Snippet:
    lines, canon, out_user = _torch_prelude(spec)
    note, padding = "", tuple(lo for lo, _ in spec.padding)
    if spec.padding_mode != "zeros" or not _symmetric(spec):
        mode = "" if spec.padding_mode == "zeros" else f", mode={spec.padding_mode!r}"
        lines.append(f"x = torch.nn.functional.pad(x, {_torch_pad_tuple(spec)}{mode})")
        note = ("conv has no padding modes: pad first" if spec.padding_mode != "zeros"
                else "conv has no asymmetric padding: pad first")
        padding = (0,) * spec.nsp
    bias = "b" if spec.has_bias else "None"
    lines.append(f"y = torch.nn.functional.conv{spec.nsp}d(x, w, {bias}, stride={spec.stride}, padding={padding}, "
                 f"dilation={spec.dilation}, groups={spec.groups})")
    lines += _permute_line("y", canon, out_user, "{var}.permute{perm}")
    return Snippet("torch.nn.functional", "\n".join(lines), note)


def _torch_module(spec: ConvSpec) -> Snippet:
    lines, canon, out_user = _torch_prelude(spec)
    n = spec.nsp
    symmetric = _symmetric(spec)
    padding = tuple(lo for lo, _ in spec.padding) if symmetric else (0,) * n
    mode = spec.padding_mode if symmetric else "zeros"
    conv = (f"torch.nn.Conv{n}d({spec.in_channels}, {spec.out_channels}, kernel_size={spec.kernel_spatial}, "
            f"stride={spec.stride}, padding={padding}, dilation={spec.dilation}, groups={spec.groups}, "
            f"bias={spec.has_bias}, padding_mode={mode!r})")
    note, target = "", "m"
    if symmetric:
        lines.append(f"m = {conv}")
    else:
        pad = f"torch.nn.{_TORCH_PAD[spec.padding_mode]}{n}d({_torch_pad_tuple(spec)})"
        lines.append(f"m = torch.nn.Sequential({pad}, {conv})")
        note, target = "modules pad symmetrically: an explicit pad layer first", "m[1]"
    lines += ["with torch.no_grad():  # modules own their kernel: load it", f"    {target}.weight.copy_(w)"]
    if spec.has_bias:
        lines.append(f"    {target}.bias.copy_(b)")
    lines.append("y = m(x)")
    lines += _permute_line("y", canon, out_user, "{var}.permute{perm}")
    return Snippet("torch.nn", "\n".join(lines), note)


def _lax(spec: ConvSpec) -> Snippet:
    lay, x_user, out_user, _ = _letters(spec)
    lines, note = [], ""
    if not lay.batched:
        lines.append("x = x[None]  # lax needs a batch axis")
    order = [c for c in lay.rhs if c in lay.spatial]  # lax orders spatial arguments by the kernel's letters
    per = {c: i for i, c in enumerate(lay.spatial)}
    strides = tuple(spec.stride[per[c]] for c in order)
    dilation = tuple(spec.dilation[per[c]] for c in order)
    pads = tuple(spec.padding[per[c]] for c in order)
    if spec.padding_mode != "zeros":
        widths = tuple(spec.padding[per[c]] if c in per else (0, 0) for c in lay.lhs)
        lines.append(f"x = jnp.pad(x, {widths}, mode={_NP_MODE[spec.padding_mode]!r})")
        pads, note = ((0, 0),) * spec.nsp, "lax has no padding modes: jnp.pad first"
    dn = (lay.lhs, lay.rhs, lay.out)
    lines.append(f"y = jax.lax.conv_general_dilated(x, w, window_strides={strides}, padding={pads}, "
                 f"rhs_dilation={dilation}, dimension_numbers={dn}, feature_group_count={spec.groups}, "
                 f"precision=jax.lax.Precision.HIGHEST)")
    if spec.has_bias:
        shape = tuple(-1 if c == "C" else 1 for c in lay.out)
        lines.append(f"y = y + b.reshape{shape}")
    if not lay.batched:
        lines.append("y = y[0]")
    return Snippet("jax.lax", "\n".join(lines), note)


def _flax(spec: ConvSpec) -> Snippet:
    lay, x_user, out_user, nc = _letters(spec)
    sp = "".join(lay.spatial)
    cl = ("N" if lay.batched else "") + sp + "C"
    lines = _permute_line("x", x_user, cl, "jnp.transpose({var}, {perm})")
    lines += _permute_line("w", lay.rhs, sp + "IO", "jnp.transpose({var}, {perm})")
    pads, note = spec.padding, "Flax is channels-last" if x_user != cl else ""
    if spec.padding_mode != "zeros":
        widths = tuple(spec.padding[sp.index(c)] if c in sp else (0, 0) for c in cl)
        lines.append(f"x = jnp.pad(x, {widths}, mode={_NP_MODE[spec.padding_mode]!r})")
        pads = ((0, 0),) * spec.nsp
        note = "Flax padding modes always pad SAME-like widths: jnp.pad first, then no padding"
    lines.append(f"m = flax.linen.Conv(features={spec.out_channels}, kernel_size={spec.kernel_spatial}, "
                 f"strides={spec.stride}, padding={pads}, kernel_dilation={spec.dilation}, "
                 f"feature_group_count={spec.groups}, use_bias={spec.has_bias}, "
                 f"precision=jax.lax.Precision.HIGHEST)")
    params = "{'kernel': w" + (", 'bias': b}" if spec.has_bias else "}")
    lines.append(f"y = m.apply({{'params': {params}}}, x)  # modules own their kernel: pass it as params")
    lines += _permute_line("y", cl, out_user, "jnp.transpose({var}, {perm})")
    return Snippet("flax.linen", "\n".join(lines), note)


def _equinox(spec: ConvSpec) -> Snippet:
    lay, x_user, out_user, nc = _letters(spec)
    sp = "".join(lay.spatial)
    lines = _permute_line("x", x_user, nc + sp, "jnp.transpose({var}, {perm})")
    lines += _permute_line("w", lay.rhs, "OI" + sp, "jnp.transpose({var}, {perm})")
    mode = {"zeros": "ZEROS", "reflect": "REFLECT", "replicate": "REPLICATE", "circular": "CIRCULAR"}
    lines.append(f"m = equinox.nn.Conv(num_spatial_dims={spec.nsp}, in_channels={spec.in_channels}, "
                 f"out_channels={spec.out_channels}, kernel_size={spec.kernel_spatial}, stride={spec.stride}, "
                 f"padding={spec.padding}, dilation={spec.dilation}, groups={spec.groups}, "
                 f"use_bias={spec.has_bias}, padding_mode={mode[spec.padding_mode]!r}, key=jax.random.PRNGKey(0))")
    lines.append("m = equinox.tree_at(lambda m: m.weight, m, w)  # modules own their kernel: replace it")
    if spec.has_bias:
        lines.append(f"m = equinox.tree_at(lambda m: m.bias, m, b.reshape{(-1,) + (1,) * spec.nsp})")
    lines.append("y = jax.vmap(m)(x)  # Equinox layers take one example" if lay.batched else "y = m(x)")
    lines += _permute_line("y", nc + sp, out_user, "jnp.transpose({var}, {perm})")
    return Snippet("equinox.nn", "\n".join(lines), "no precision argument: on GPU/TPU use "
                   "jax.default_matmul_precision('highest')")
