"""Exact equivalent calls of a convolution in torch, jax.lax, Flax (linen and nnx) and Equinox, as runnable code.

Each snippet reads ``x``, ``w`` and ``b`` (that framework's arrays, in the user's
layouts; ``b`` only when the spec has a bias) and leaves the result in ``y``, in
the user's output layout. Padding that a framework cannot express directly
(asymmetric pairs in torch, padding modes in lax and Flax) becomes an explicit
pad followed by an unpadded convolution, and the snippet says why. Layouts, kernel
letters, argument and padding-mode names come from :mod:`convbridge.frameworks`.
"""

from __future__ import annotations

from dataclasses import dataclass

from convbridge.frameworks import EQUINOX, FLAX_LINEN, FLAX_NNX, LAX, TORCH, Convention
from convbridge.spec import NUMPY_PAD_MODES, ConvSpec, ConvTransposeSpec, SpatialSpec, permutation

__all__ = ["Snippet", "snippets"]


@dataclass(frozen=True)
class Snippet:
    """One framework's exact equivalent call.

    Attributes:
        framework: the API, e.g. ``"flax.linen"``.
        code: runnable code reading ``x``, ``w`` (and ``b``) and leaving the result in ``y``.
        note: why the code looks the way it does (an explicit pad, a transpose), or ``""``.
    """

    framework: str
    code: str
    note: str = ""


def snippets(spec: ConvSpec | ConvTransposeSpec) -> tuple[Snippet, ...]:
    """All framework snippets for ``spec`` (torch ones only for 1-3 spatial dims); a transposed convolution's come
    from :mod:`convbridge.snippets_transpose`.

    >>> from convbridge.spec import make_conv_spec
    >>> [s.framework for s in snippets(make_conv_spec((1, 3, 8, 8), (4, 3, 3, 3)))]
    ['torch.nn.functional', 'torch.nn', 'jax.lax', 'flax.linen', 'flax.nnx', 'equinox.nn']
    """
    if isinstance(spec, ConvTransposeSpec):
        from convbridge.snippets_transpose import transpose_snippets

        return transpose_snippets(spec)
    out = []
    if spec.nsp <= 3:
        out += [_torch_functional(spec), _torch_module(spec)]
    out += [_lax(spec), _flax(spec, FLAX_LINEN), _flax(spec, FLAX_NNX), _equinox(spec)]
    return tuple(out)


def _sp(spec: SpatialSpec) -> str:
    return "".join(spec.layout.spatial)


def _permute_line(var: str, src: str, dst: str, method: str, new: str | None = None) -> list[str]:
    """``new = var.<method>(perm)`` when the layouts differ, else nothing."""
    if src == dst:
        return [] if new is None else [f"{new} = {var}"]
    return [f"{new or var} = {method.format(var=var, perm=permutation(src, dst))}  # {src} -> {dst}"]


def _symmetric(spec: ConvSpec) -> bool:
    return all(lo == hi for lo, hi in spec.padding)


def _torch_pad_tuple(spec: ConvSpec) -> tuple[int, ...]:
    """torch's F.pad order: last spatial dim first, (lo, hi) each."""
    return tuple(p for pair in reversed(spec.padding) for p in pair)


def _to_framework(spec: ConvSpec, fw: Convention, method: str) -> tuple[list[str], str, str]:
    """Lines laying ``x`` and ``w`` out as ``fw`` wants them; the framework's input layout and the user's output."""
    lay = spec.layout
    x_fw = fw.input_layout(_sp(spec), batched=lay.batched)
    lines = _permute_line("x", lay.user(lay.lhs), x_fw, method)
    lines += _permute_line("w", lay.rhs, fw.kernel_layout(_sp(spec)), method)
    return lines, x_fw, lay.user(lay.out)


def _torch_functional(spec: ConvSpec) -> Snippet:
    lines, canon, out_user = _to_framework(spec, TORCH, "{var}.permute{perm}")
    note, padding = "", tuple(lo for lo, _ in spec.padding)
    if spec.padding_mode != "zeros" or not _symmetric(spec):
        mode = "" if spec.padding_mode == "zeros" else f", mode={TORCH.padding_modes[spec.padding_mode]!r}"
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
    lines, canon, out_user = _to_framework(spec, TORCH, "{var}.permute{perm}")
    n, symmetric = spec.nsp, _symmetric(spec)
    padding = tuple(lo for lo, _ in spec.padding) if symmetric else (0,) * n
    mode = TORCH.padding_modes[spec.padding_mode if symmetric else "zeros"]
    conv = (f"torch.nn.Conv{n}d({spec.in_channels}, {spec.out_channels}, kernel_size={spec.kernel_spatial}, "
            f"stride={spec.stride}, padding={padding}, dilation={spec.dilation}, groups={spec.groups}, "
            f"bias={spec.has_bias}, padding_mode={mode!r})")
    note, target = "", "m"
    if symmetric:
        lines.append(f"m = {conv}")
    else:
        pad = f"torch.nn.{TORCH.pad_layers[spec.padding_mode]}{n}d({_torch_pad_tuple(spec)})"
        lines.append(f"m = torch.nn.Sequential({pad}, {conv})")
        note, target = "modules pad symmetrically: an explicit pad layer first", "m[1]"
    lines += ["with torch.no_grad():  # modules own their kernel: load it",
              f"    {target}.{TORCH.params['weight']}.copy_(w)"]
    if spec.has_bias:
        lines.append(f"    {target}.{TORCH.params['bias']}.copy_(b)")
    lines.append("y = m(x)")
    lines += _permute_line("y", canon, out_user, "{var}.permute{perm}")
    return Snippet("torch.nn", "\n".join(lines), note)


def _jnp_pad(spec: ConvSpec, layout: str) -> str:
    """``jnp.pad`` of ``x`` (laid out as ``layout``) by the spec's widths in its padding mode."""
    per = {c: a.padding for c, a in zip(spec.layout.spatial, spec.axes)}
    widths = tuple(per.get(c, (0, 0)) for c in layout)
    return f"x = jnp.pad(x, {widths}, mode={NUMPY_PAD_MODES[spec.padding_mode]!r})"


def _lax(spec: ConvSpec) -> Snippet:
    lay = spec.layout
    lines, note = [], ""
    if not lay.batched:
        lines.append("x = x[None]  # lax needs a batch axis")
    order = [c for c in lay.rhs if c in lay.spatial]  # lax orders spatial arguments by the kernel's letters
    per = {c: a for c, a in zip(lay.spatial, spec.axes)}
    strides = tuple(per[c].stride for c in order)
    dilation = tuple(per[c].dilation for c in order)
    pads = tuple(per[c].padding for c in order)
    if spec.padding_mode != "zeros":
        lines.append(_jnp_pad(spec, lay.lhs))
        pads, note = ((0, 0),) * spec.nsp, "lax has no padding modes: jnp.pad first"
    dn = (lay.lhs, lay.rhs, lay.out)
    lines.append(f"y = jax.lax.conv_general_dilated(x, w, {LAX.name_of('stride')}={strides}, padding={pads}, "
                 f"{LAX.name_of('dilation')}={dilation}, {LAX.name_of('layout')}={dn}, "
                 f"{LAX.name_of('groups')}={spec.groups}, precision=jax.lax.Precision.HIGHEST)")
    if spec.has_bias:
        shape = tuple(-1 if c == "C" else 1 for c in lay.out)
        lines.append(f"y = y + b.reshape{shape}")
    if not lay.batched:
        lines.append("y = y[0]")
    return Snippet(LAX.name, "\n".join(lines), note)


def _flax(spec: ConvSpec, fw: Convention) -> Snippet:
    """flax.linen's Conv (kernel passed as params) or flax.nnx's (kernel assigned to the module's Param)."""
    lines, x_fw, out_user = _to_framework(spec, fw, "jnp.transpose({var}, {perm})")
    pads, note = spec.padding, "Flax is channels-last" if spec.layout.user(spec.layout.lhs) != x_fw else ""
    if spec.padding_mode != "zeros":
        lines.append(_jnp_pad(spec, x_fw))
        pads = ((0, 0),) * spec.nsp
        note = "Flax padding modes always pad SAME-like widths: jnp.pad first, then no padding"
    args = {"out_channels": spec.out_channels, "kernel_size": spec.kernel_spatial, "stride": spec.stride,
            "padding": pads, "dilation": spec.dilation, "groups": spec.groups, "bias": spec.has_bias}
    if fw is FLAX_NNX:
        args = {"in_channels": spec.in_channels, **args}
    text = ", ".join(f"{fw.name_of(k)}={v}" for k, v in args.items())
    lines += _flax_apply(fw, f"{fw.name}.Conv({text}, precision=jax.lax.Precision.HIGHEST", spec.has_bias)
    lines += _permute_line("y", x_fw, out_user, "jnp.transpose({var}, {perm})")
    return Snippet(fw.name, "\n".join(lines), note)


def _flax_apply(fw: Convention, constructor: str, has_bias: bool) -> list[str]:
    """Build the module (``constructor`` lacks its closing parenthesis), give it ``w`` and ``b``, apply it to ``x``.

    >>> _flax_apply(FLAX_NNX, "flax.nnx.Conv(in_features=3, out_features=4, kernel_size=(3,)", False)[1]
    'm.kernel[...] = w  # modules own their kernel: overwrite it'
    """
    weight, bias = fw.params["weight"], fw.params["bias"]
    if fw is not FLAX_NNX:
        params = f"{{{weight!r}: w" + (f", {bias!r}: b}}" if has_bias else "}")
        return [f"m = {constructor})", f"y = m.apply({{'params': {params}}}, x)  # modules own their kernel: pass it "
                "as params"]
    lines = [f"m = {constructor}, rngs=flax.nnx.Rngs(0))", f"m.{weight}[...] = w  # modules own their kernel: "
             "overwrite it"]
    return lines + ([f"m.{bias}[...] = b"] if has_bias else []) + ["y = m(x)"]


def _equinox(spec: ConvSpec) -> Snippet:
    fw, lay = EQUINOX, spec.layout
    x_fw = ("N" if lay.batched else "") + fw.input_layout(_sp(spec))  # one example; jax.vmap over N
    lines = _permute_line("x", lay.user(lay.lhs), x_fw, "jnp.transpose({var}, {perm})")
    lines += _permute_line("w", lay.rhs, fw.kernel_layout(_sp(spec)), "jnp.transpose({var}, {perm})")
    args = {"in_channels": spec.in_channels, "out_channels": spec.out_channels, "kernel_size": spec.kernel_spatial,
            "stride": spec.stride, "padding": spec.padding, "dilation": spec.dilation, "groups": spec.groups,
            "bias": spec.has_bias, "padding_mode": fw.padding_modes[spec.padding_mode]}
    text = ", ".join(f"{fw.name_of(k)}={v!r}" for k, v in args.items())
    lines.append(f"m = equinox.nn.Conv(num_spatial_dims={spec.nsp}, {text}, key=jax.random.PRNGKey(0))")
    lines.append(f"m = equinox.tree_at(lambda m: m.{fw.params['weight']}, m, w)  # modules own their kernel: "
                 "replace it")
    if spec.has_bias:
        lines.append(f"m = equinox.tree_at(lambda m: m.{fw.params['bias']}, m, b.reshape"
                     f"{(-1,) + (1,) * spec.nsp})")
    lines.append("y = jax.vmap(m)(x)  # Equinox layers take one example" if lay.batched else "y = m(x)")
    lines += _permute_line("y", x_fw, lay.user(lay.out), "jnp.transpose({var}, {perm})")
    return Snippet(fw.name, "\n".join(lines), "no precision argument: on GPU/TPU use "
                   "jax.default_matmul_precision('highest')")
