"""Grouped convolution (``groups`` > 1, depthwise included) on gwprune's ungrouped op.

A packed grouped weight holds one block per conv group (``PackedConv2dWeight``,
``groups``); conv group k is an ungrouped packed conv over all C input channels that
keeps only ``(c, i, j)`` of its own channels, so it runs through the ordinary gather +
GEMM on the whole input (no channel slice is copied) and writes its Cout/g output
channels; the blocks' outputs are concatenated along the channels. That is one call per
conv group: fine for a few large groups, slow for depthwise convs (C tiny GEMMs), which
``gwprune.convert`` therefore leaves dense unless asked (``grouped='convert'``).
"""

from collections.abc import Callable

import torch

from ._layout import conv_output_memory_format
from .packing import PackedConv2dWeight


def run_conv_groups(
    x: torch.Tensor,
    packed: PackedConv2dWeight,
    bias: torch.Tensor | None,
    run_one: Callable[[torch.Tensor, PackedConv2dWeight, torch.Tensor | None], torch.Tensor],
) -> torch.Tensor:
    """``run_one(x, part, bias_part)`` for each conv group, concatenated along channels."""
    rows = packed.weight.shape[0] // packed.groups
    outputs = [
        run_one(x, part, None if bias is None else bias[k * rows : (k + 1) * rows])
        for k, part in enumerate(packed.conv_group_parts())
    ]
    return torch.cat(outputs, dim=1).contiguous(memory_format=conv_output_memory_format(x))
