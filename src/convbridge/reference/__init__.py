"""The independent NumPy reference, written from the definition.

It never calls torch or jax; convolution is one rank-generic window view whose blocks are copied into a column
matrix and contracted by NumPy's matrix product (BLAS for float64, float32, complex128 and complex64; einsum for
float16), its adjoint (the transposed convolution) a scatter-add of kernel-weighted input, unfold a window view
and fold its scatter-add. Padding modes use ``numpy.pad``, independently of the gather indices the backends use.

Complex arrays compute in complex128 by default (a real ``dtype`` with complex arrays: the complex dtype of its
precision), as the definition says, with no conjugation of the kernel (torch's and lax's convolutions conjugate
nothing either); :func:`magnitude` is what their gauges read (``|Re| + |Im|``).
"""

from convbridge.reference._core import compute_dtype, magnitude

from convbridge.reference.conv import conv, conv_and_gauge, conv_and_gauge_canonical, conv_canonical, \
    conv_vjp_canonical, from_canonical, to_canonical
from convbridge.reference.transpose import conv_transpose, conv_transpose_canonical
from convbridge.reference.unfold import fold, fold_canonical, unfold, unfold_canonical

__all__ = ["compute_dtype", "magnitude", "conv", "conv_and_gauge", "conv_canonical", "conv_and_gauge_canonical",
           "conv_vjp_canonical", "to_canonical", "from_canonical", "conv_transpose", "conv_transpose_canonical",
           "unfold", "unfold_canonical", "fold", "fold_canonical"]
