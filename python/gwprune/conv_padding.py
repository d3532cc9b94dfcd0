"""String padding of a conv (``'same'``, ``'valid'``), as ``F.conv2d`` reads it.

The kernels take one symmetric (pad_h, pad_w). ``'same'`` with an even total padding
``dilation * (kernel - 1)`` is symmetric; with an odd total PyTorch pads one more row /
column at the bottom / right (checked against ``F.conv2d`` in tests/test_groups_padding.py),
which is done here by zero-padding the input by that one row / column first (a copy of
the input, as PyTorch's own ``F.conv2d`` makes in that case).
"""

import torch
import torch.nn.functional as F

from ._layout import conv_output_memory_format

PADDING_STRINGS = ("same", "valid")


def is_string_padding(padding) -> bool:
    return isinstance(padding, str)


def resolve_string_padding(
    padding: str, kernel_size, stride, dilation
) -> tuple[tuple[int, int], tuple[int, int]]:
    """``'same'`` / ``'valid'`` -> ((pad_h, pad_w), (extra_bottom, extra_right))."""
    if padding not in PADDING_STRINGS:
        raise ValueError(
            f"gwprune: padding must be 'same', 'valid', an int or a pair of ints, got {padding!r}"
        )
    if padding == "valid":
        return (0, 0), (0, 0)
    stride = (stride, stride) if isinstance(stride, int) else tuple(stride)
    dilation = (dilation, dilation) if isinstance(dilation, int) else tuple(dilation)
    if any(s != 1 for s in stride):
        raise ValueError(
            f"gwprune: padding='same' is not supported for strided convolutions "
            f"(stride={stride}), as in F.conv2d"
        )
    low, extra = [], []
    for kernel, dil in zip(kernel_size, dilation, strict=True):
        total = dil * (kernel - 1)
        low.append(total // 2)
        extra.append(total - 2 * (total // 2))
    return (low[0], low[1]), (extra[0], extra[1])


def apply_string_padding(x: torch.Tensor, padding, kernel_size, stride, dilation):
    """(x, padding) with a string padding turned into the kernels' symmetric pair; ``x``
    zero-padded at the bottom / right where ``'same'`` is asymmetric. Other paddings
    pass through unchanged."""
    if not is_string_padding(padding):
        return x, padding
    pair, (extra_h, extra_w) = resolve_string_padding(padding, kernel_size, stride, dilation)
    if extra_h or extra_w:
        layout = conv_output_memory_format(x)
        x = F.pad(x, (0, extra_w, 0, extra_h)).contiguous(memory_format=layout)
    return x, pair
