"""Exact equivalent calls of a transposed convolution (torch's convention) in torch, jax.lax, Flax and Equinox.

Each snippet reads ``x``, ``w`` (torch's kernel ``(C_in, C_out / groups, *k)``, laid out as the user's
kernel layout) and ``b``, and leaves the result in ``y`` in the user's output layout. The conversions are
written out so that a reader learns them:

- torch crops both ends of a dim alike: asymmetric crops compute with ``padding=0`` and slice the result.
- lax's kernels are plain conv kernels: torch's kernel is flipped in every spatial axis (PITFALLS trap 2),
  and the input is padded by lax's ``(a, b) = (D - lo, D - hi + output_padding)``, never ``'SAME'``.
- a grouped kernel is regrouped, not reshaped (trap 3): ``(in, out/g, *k) -> (g, in/g, out/g, *k)``,
  swap each group's in and out axes, ``-> (out, in/g, *k)``.
- Flax's ConvTranspose has no groups and Equinox's requires ``output_padding < stride``: there the snippet
  uses ``convbridge.nn``'s modules, which take torch's arguments and kernel.

>>> from convbridge.spec import make_conv_transpose_spec
>>> spec = make_conv_transpose_spec((1, 4, 5, 5), (4, 2, 3, 3), stride=2, padding=1)
>>> [s.framework for s in transpose_snippets(spec)]  # doctest: +NORMALIZE_WHITESPACE
['torch.nn.functional', 'torch.nn', 'jax.lax.conv_transpose', 'jax.lax.conv_general_dilated', 'flax.linen',
 'flax.nnx', 'equinox.nn']
"""

from __future__ import annotations

from convbridge.frameworks import EQUINOX, FLAX_LINEN, FLAX_NNX, TORCH, Convention
from convbridge.snippets import Snippet, _flax_apply, _permute_line, _sp
from convbridge.spec import ConvTransposeSpec

__all__ = ["transpose_snippets"]

_JNP = "jnp.transpose({var}, {perm})"
_TORCH = "{var}.permute{perm}"
_HIGHEST = "precision=jax.lax.Precision.HIGHEST"


def transpose_snippets(spec: ConvTransposeSpec) -> tuple[Snippet, ...]:
    """All framework snippets for a torch-convention ``spec`` (torch ones only for 1-3 spatial dims;
    ``lax.conv_transpose`` only without groups)."""
    out = [_torch_functional(spec), _torch_module(spec)] if spec.nsp <= 3 else []
    if spec.groups == 1:
        out.append(_lax_transpose(spec))
    out += [_lax_dilated(spec), _flax(spec, FLAX_LINEN), _flax(spec, FLAX_NNX), _equinox(spec)]
    return tuple(out)


def _symmetric(spec: ConvTransposeSpec) -> bool:
    return all(lo == hi for lo, hi in spec.padding)


def _crop(spec: ConvTransposeSpec, layout: str) -> str:
    """``y = y[...]``: rows ``lo .. lo + out`` of every spatial axis of ``y`` laid out as ``layout``."""
    per = {c: f"{a.lo}:{a.lo + a.out}" for c, a in zip(spec.layout.spatial, spec.axes)}
    return f"y = y[{', '.join(per.get(c, ':') for c in layout)}]  # crop (lo, hi) per side"


def _torch_kernel(spec: ConvTransposeSpec, method: str) -> list[str]:
    """Lay ``x`` and ``w`` out as torch wants them."""
    lay = spec.layout
    x_fw = TORCH.input_layout(_sp(spec), batched=lay.batched)
    return (_permute_line("x", lay.user(lay.lhs), x_fw, method)
            + _permute_line("w", lay.rhs, TORCH.transpose_layout(_sp(spec)), method))


def _torch_call_args(spec: ConvTransposeSpec) -> tuple[str, str]:
    """torch's arguments (crops 0 when asymmetric) and the note."""
    symmetric = _symmetric(spec)
    padding = tuple(lo for lo, _ in spec.padding) if symmetric else (0,) * spec.nsp
    args = (f"stride={spec.stride}, padding={padding}, output_padding={spec.output_padding}, groups={spec.groups}, "
            f"dilation={spec.dilation}")
    return args, "" if symmetric else "torch crops both ends alike: crop nothing, then slice"


def _torch_functional(spec: ConvTransposeSpec) -> Snippet:
    lay, x_fw = spec.layout, TORCH.input_layout(_sp(spec), batched=spec.layout.batched)
    lines = _torch_kernel(spec, _TORCH)
    args, note = _torch_call_args(spec)
    bias = "b" if spec.has_bias else "None"
    lines.append(f"y = torch.nn.functional.conv_transpose{spec.nsp}d(x, w, {bias}, {args})")
    if not _symmetric(spec):
        lines.append(_crop(spec, x_fw))
    lines += _permute_line("y", x_fw, lay.user(lay.out), _TORCH)
    return Snippet("torch.nn.functional", "\n".join(lines), note)


def _torch_module(spec: ConvTransposeSpec) -> Snippet:
    lay, x_fw = spec.layout, TORCH.input_layout(_sp(spec), batched=spec.layout.batched)
    lines = _torch_kernel(spec, _TORCH)
    args, note = _torch_call_args(spec)
    lines += [f"m = torch.nn.ConvTranspose{spec.nsp}d({spec.in_channels}, {spec.out_channels}, kernel_size="
              f"{spec.kernel_spatial}, {args}, bias={spec.has_bias})",
              "with torch.no_grad():  # modules own their kernel: load it",
              f"    m.{TORCH.params['weight']}.copy_(w)"]
    if spec.has_bias:
        lines.append(f"    m.{TORCH.params['bias']}.copy_(b)")
    lines.append("y = m(x)")
    if not _symmetric(spec):
        lines.append(_crop(spec, x_fw))
    lines += _permute_line("y", x_fw, lay.user(lay.out), _TORCH)
    return Snippet("torch.nn", "\n".join(lines), note)


def _conv_kernel(spec: ConvTransposeSpec, target: str) -> list[str]:
    """Lines turning torch's kernel ``w`` (user's layout) into the kernel of the conv over the dilated input, laid
    out as ``target`` (its ``I`` = in / groups, ``O`` = out): flipped and, with groups, regrouped."""
    lay, sp, g, n = spec.layout, _sp(spec), spec.groups, spec.nsp
    flip = "  # torch's kernel is conv's gradient: a plain conv flips it in every spatial axis (PITFALLS trap 2)"
    if g == 1:  # torch's I (x's channels) and O (the result's) are the conv kernel's I and O
        axes = tuple(i for i, c in enumerate(lay.rhs) if c in lay.spatial)
        return [f"w = jnp.flip(w, axis={axes}){flip}", *_permute_line("w", lay.rhs, target, _JNP)]
    ci, co, k = spec.in_channels, spec.out_channels, spec.kernel_spatial
    return [*_permute_line("w", lay.rhs, TORCH.transpose_layout(sp), _JNP),
            f"w = jnp.flip(w, axis={tuple(range(2, 2 + n))}){flip}",
            f"w = w.reshape({(g, ci // g, co // g, *k)})  # (groups, in/groups, out/groups, *k): one block per group",
            "w = jnp.swapaxes(w, 1, 2)  # each block (in, out) -> (out, in): a regroup, not a reshape (PITFALLS "
            "trap 3)",
            f"w = w.reshape({(co, ci // g, *k)})  # (out, in/groups, *k): a grouped conv kernel, OI{sp}",
            *_permute_line("w", "OI" + sp, target, _JNP)]


def _bias_and_batch(spec: ConvTransposeSpec, lines: list[str]) -> list[str]:
    """``x[None]`` before and ``y[0]`` after when unbatched, the bias added in the output layout."""
    lay = spec.layout
    head = [] if lay.batched else ["x = x[None]  # lax needs a batch axis"]
    tail = [f"y = y + b.reshape{tuple(-1 if c == 'C' else 1 for c in lay.out)}"] if spec.has_bias else []
    return head + lines + tail + ([] if lay.batched else ["y = y[0]"])


def _lax_pairs(spec: ConvTransposeSpec) -> tuple[tuple[int, int], ...]:
    return tuple(a.lax_padding for a in spec.axes)


def _lax_transpose(spec: ConvTransposeSpec) -> Snippet:
    lay, hwio = spec.layout, FLAX_LINEN.transpose_layout(_sp(spec))
    lines = _conv_kernel(spec, hwio)
    lines.append(f"y = jax.lax.conv_transpose(x, w, strides={spec.stride}, padding={_lax_pairs(spec)}, "
                 f"rhs_dilation={spec.dilation}, dimension_numbers={(lay.lhs, hwio, lay.out)}, {_HIGHEST})")
    return Snippet("jax.lax.conv_transpose", "\n".join(_bias_and_batch(spec, lines)),
                   "lax flips nothing: flip the kernel, and pad the dilated input by (a, b) = (D - lo, D - hi + "
                   "output_padding); never 'SAME', which crops the odd row at the other end (a pixel apart)")


def _lax_dilated(spec: ConvTransposeSpec) -> Snippet:
    lay, oi = spec.layout, "OI" + _sp(spec)
    lines = _conv_kernel(spec, oi)
    lines.append(f"y = jax.lax.conv_general_dilated(x, w, window_strides={(1,) * spec.nsp}, padding="
                 f"{_lax_pairs(spec)}, lhs_dilation={spec.stride}, rhs_dilation={spec.dilation}, "
                 f"dimension_numbers={(lay.lhs, oi, lay.out)}, feature_group_count={spec.groups}, {_HIGHEST})")
    note = ("what lax.conv_transpose runs: a stride-1 conv over the input dilated by the stride" if spec.groups == 1
            else "lax.conv_transpose has no groups (no feature_group_count), so it is left out: the same op as a "
                 "grouped conv over the input dilated by the stride, kernel flipped and regrouped")
    return Snippet("jax.lax.conv_general_dilated", "\n".join(_bias_and_batch(spec, lines)), note)


def _x_channels_last(spec: ConvTransposeSpec, fw: Convention) -> tuple[list[str], str]:
    lay = spec.layout
    x_fw = fw.input_layout(_sp(spec), batched=lay.batched)
    return _permute_line("x", lay.user(lay.lhs), x_fw, _JNP), x_fw


def _flax(spec: ConvTransposeSpec, fw: Convention) -> Snippet:
    lines, x_fw = _x_channels_last(spec, fw)
    nnx = fw is FLAX_NNX
    names = ("in_channels", "out_channels") if nnx else ("out_channels",)
    channels = ", ".join(f"{fw.name_of(k)}={getattr(spec, k)}" for k in names)
    if spec.groups == 1:
        lines += _conv_kernel(spec, fw.transpose_layout(_sp(spec)))
        args = (f"{channels}, kernel_size={spec.kernel_spatial}, strides={spec.stride}, padding={_lax_pairs(spec)}, "
                f"kernel_dilation={spec.dilation}, use_bias={spec.has_bias}, {_HIGHEST}")
        lines += _flax_apply(fw, f"{fw.name}.ConvTranspose({args}", spec.has_bias)
        note = "Flax wraps lax.conv_transpose: kernel flipped, lax's (a, b) pairs; channels-last"
    elif any(st > 1 for st in spec.stride):  # what convbridge.port builds: Flax's own Conv over the dilated input
        lines += _conv_kernel(spec, fw.kernel_layout(_sp(spec)))
        args = (f"{channels}, kernel_size={spec.kernel_spatial}, strides={(1,) * spec.nsp}, padding="
                f"{_lax_pairs(spec)}, input_dilation={spec.stride}, kernel_dilation={spec.dilation}, "
                f"feature_group_count={spec.groups}, use_bias={spec.has_bias}, {_HIGHEST}")
        lines += _flax_apply(fw, f"{fw.name}.Conv({args}", spec.has_bias)
        note = (f"{fw.name}.ConvTranspose has no groups; its Conv over the input dilated by the stride "
                "(input_dilation) is the same op, with the kernel flipped and regrouped")
    else:
        lines += _permute_line("w", spec.layout.rhs, FLAX_LINEN.transpose_layout(_sp(spec)), _JNP)
        module = f"convbridge.nn.{fw.name.rpartition('.')[2]}"
        lines.insert(0, f"import {module}")
        lines += _flax_apply(fw, f"{module}.ConvTranspose({_torch_arguments(spec, x_fw)}", spec.has_bias)
        note = (f"{fw.name}.ConvTranspose has no groups: {module}.ConvTranspose takes torch's arguments and its "
                "kernel unflipped, spatial-first (*k, in, out/groups)")
    lines += _permute_line("y", x_fw, spec.layout.user(spec.layout.out), _JNP)
    return Snippet(fw.name, "\n".join(lines), note)


def _torch_arguments(spec: ConvTransposeSpec, layout: str) -> str:
    """convbridge.nn's constructor arguments: torch's, with crops as (lo, hi) pairs."""
    return (f"num_spatial_dims={spec.nsp}, in_channels={spec.in_channels}, out_channels={spec.out_channels}, "
            f"kernel_size={spec.kernel_spatial}, stride={spec.stride}, padding={spec.padding}, output_padding="
            f"{spec.output_padding}, dilation={spec.dilation}, groups={spec.groups}, use_bias={spec.has_bias}, "
            f"layout={layout!r}")


def _equinox(spec: ConvTransposeSpec) -> Snippet:
    lay, sp = spec.layout, _sp(spec)
    x_fw = ("N" if lay.batched else "") + EQUINOX.input_layout(sp)  # one example; jax.vmap over N
    lines = _permute_line("x", lay.user(lay.lhs), x_fw, _JNP)
    precision = "no precision argument: on GPU/TPU use jax.default_matmul_precision('highest')"
    # Equinox requires output_padding < stride; a larger one moves into the high crop (negative: rows added),
    # which Equinox's padding arithmetic reads the same way (what convbridge.port builds)
    keep = [a.output_padding < a.stride for a in spec.axes]
    pads = tuple(a.padding if k else a.crops for a, k in zip(spec.axes, keep))
    out_pad = tuple(a.output_padding if k else 0 for a, k in zip(spec.axes, keep))
    lines += _conv_kernel(spec, EQUINOX.transpose_layout(sp))
    args = (f"num_spatial_dims={spec.nsp}, in_channels={spec.in_channels}, out_channels={spec.out_channels}, "
            f"kernel_size={spec.kernel_spatial}, stride={spec.stride}, padding={pads}, output_padding="
            f"{out_pad}, dilation={spec.dilation}, groups={spec.groups}, use_bias={spec.has_bias}")
    lines.append(f"m = equinox.nn.ConvTranspose({args}, key=jax.random.PRNGKey(0))")
    note = "Equinox's kernel is (out, in/groups, *k): torch's flipped and regrouped; padding is torch's crops"
    if not all(keep):
        note += (f"; Equinox requires output_padding < stride, so output_padding {spec.output_padding} moves into "
                 f"the high crops: padding {pads}")
    lines.append(f"m = equinox.tree_at(lambda m: m.{EQUINOX.params['weight']}, m, w)  # modules own their kernel: "
                 "replace it")
    if spec.has_bias:
        lines.append(f"m = equinox.tree_at(lambda m: m.{EQUINOX.params['bias']}, m, b.reshape"
                     f"{(-1,) + (1,) * spec.nsp})")
    lines.append("y = jax.vmap(m)(x)  # Equinox layers take one example" if lay.batched else "y = m(x)")
    lines += _permute_line("y", x_fw, lay.user(lay.out), _JNP)
    return Snippet(EQUINOX.name, "\n".join(lines), f"{note}; {precision}")
