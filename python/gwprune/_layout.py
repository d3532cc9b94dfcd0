"""Memory-format decisions shared by the CUDA path, the reference path and the fakes."""

import torch


def conv_output_memory_format(x: torch.Tensor) -> torch.memory_format:
    """channels_last when x is exactly channels_last (and not also contiguous), else NCHW.

    csrc/cuda/conv2d_cuda.cpp applies the same rule to pick its gather layout,
    so every backend returns the same strides.
    """
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format
