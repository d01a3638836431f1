"""Convolution as matrix multiplication: im2col times a kernel matrix, and the explicit Toeplitz matrix."""

from convbridge.lowering.toeplitz import conv_matrix

__all__ = ["conv_matrix"]
