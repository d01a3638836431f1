"""Convolution as matrix multiplication: im2col/col2im products and the explicit Toeplitz matrix."""

from convbridge.lowering.im2col import MatmulView, as_matmul
from convbridge.lowering.toeplitz import conv_matrix

__all__ = ["MatmulView", "as_matmul", "conv_matrix"]
