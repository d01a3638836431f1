"""What is computed: every op's arguments parsed, validated and resolved once, framework-free.

- :mod:`~convbridge.spec.geometry`: one spatial dim of a convolution or transposed convolution, and
  every size formula (span, output size, full size, 'same' splits, reachable sizes, halos).
- :mod:`~convbridge.spec.layout`, :mod:`~convbridge.spec.padding`: layout strings and padding forms.
- :mod:`~convbridge.spec.conv`, :mod:`~convbridge.spec.transpose`, :mod:`~convbridge.spec.unfold`:
  the frozen specs and their builders.

A spec says *what*; how it runs (backend, algorithm, precision policy, device) is a
:class:`convbridge.plan.Plan`.

>>> spec = make_conv_spec((32, 3, 32, 32), (4, 3, 5, 5))
>>> spec.out_shape, [a.out for a in spec.axes]
((32, 4, 28, 28), [28, 28])
"""

from convbridge.spec._parse import as_shape
from convbridge.spec.conv import ChannelSpec, ConvSpec, SpatialSpec, make_conv_spec
from convbridge.spec.geometry import ConvAxis, TransposeAxis, lax_transpose_padding
from convbridge.spec.layout import Layout, default_spatial_letters, inverse, permutation, resolve_layout
from convbridge.spec.padding import NUMPY_PAD_MODES, PADDING_MODES, gather_indices
from convbridge.spec.transpose import ConvTransposeSpec, make_conv_transpose_spec, resolve_transpose_layout
from convbridge.spec.unfold import FoldSpec, UnfoldSpec, col2im_spec, im2col_spec, make_fold_spec, make_unfold_spec

#: Any spec (what the reference, the backends and the verdict receive).
Spec = ConvSpec | ConvTransposeSpec | UnfoldSpec | FoldSpec

__all__ = ["Spec", "SpatialSpec", "ChannelSpec", "ConvSpec", "ConvTransposeSpec", "UnfoldSpec", "FoldSpec",
           "make_conv_spec", "make_conv_transpose_spec", "make_unfold_spec", "make_fold_spec", "im2col_spec",
           "col2im_spec", "ConvAxis", "TransposeAxis", "lax_transpose_padding", "Layout", "resolve_layout",
           "resolve_transpose_layout", "default_spatial_letters", "inverse", "permutation", "PADDING_MODES",
           "NUMPY_PAD_MODES", "gather_indices", "as_shape"]
