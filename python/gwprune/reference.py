"""The pure-PyTorch group-wise path: the tests' oracle and the CPU backend.

It is the seed's unfused algorithm (Algorithms 1-2): im2col of the whole
input (F.unfold), index_select of the kept rows, one matmul. Every backend of
gwprune must agree with it, and it must agree with F.conv2d / F.linear on
weights whose pruned groups are zero.
"""

import torch
import torch.nn.functional as F

from . import _checks
from ._layout import conv_output_memory_format
from .activation import apply_activation
from .conv_padding import apply_string_padding
from .grouped import run_conv_groups
from .packing import pack_conv2d_weight, pack_linear_weight


def _select_kept(source: torch.Tensor, index: torch.Tensor, dim: int) -> torch.Tensor:
    """index_select along dim where padding entries (-1) select exact zeros."""
    kept = source.index_select(dim, index.long().clamp(min=0))
    shape = [1] * kept.dim()
    shape[dim] = index.numel()
    return kept.masked_fill(index.view(shape) < 0, 0)


def conv2d_packed(
    x: torch.Tensor,
    weight: torch.Tensor,
    group_idx: torch.Tensor,
    bias: torch.Tensor | None,
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    activation: str | None = None,
) -> torch.Tensor:
    """Conv2d on a packed weight [Cout, K'] whose columns follow group_idx (no checks;
    index -1 marks a padding column), then ``activation`` (gwprune.activation)."""
    batch, _, height, width = x.shape
    out_h, out_w = (
        _checks.conv_out_size(
            (height, width)[d], kernel_size[d], stride[d], padding[d], dilation[d]
        )
        for d in range(2)
    )
    out_channels = weight.shape[0]
    if x.numel() == 0:
        cols = x.new_zeros(batch, group_idx.numel(), out_h * out_w)
    else:
        unfolded = F.unfold(x, kernel_size, dilation=dilation, padding=padding, stride=stride)
        cols = _select_kept(unfolded, group_idx, dim=1)
    out = torch.matmul(weight, cols)
    if bias is not None:
        out = out + bias.unsqueeze(-1)
    out = out.reshape(batch, out_channels, out_h, out_w)
    return apply_activation(out.contiguous(memory_format=conv_output_memory_format(x)), activation)


def linear_packed(
    x: torch.Tensor,
    weight: torch.Tensor,
    feature_idx: torch.Tensor,
    bias: torch.Tensor | None,
    activation: str | None = None,
) -> torch.Tensor:
    """Linear on a packed weight [out, K'] whose columns follow feature_idx (no checks),
    then ``activation``."""
    return apply_activation(
        F.linear(_select_kept(x, feature_idx, dim=-1), weight, bias), activation
    )


def conv2d(x, weight, keep_idx, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """Validated reference group-wise conv2d; same contract as gwprune.ops.conv2d."""
    _checks.check_float_tensor(x, "x")
    _checks.check_conv2d_weight(weight, x)
    _checks.check_groups_arg(groups, weight.shape[0], "output channels of weight")
    kernel_size = (weight.shape[2], weight.shape[3])
    x, padding = apply_string_padding(x, padding, kernel_size, stride, dilation)
    stride, padding, dilation, _ = _checks.check_conv2d_input(
        x, weight.shape[1] * groups, kernel_size, stride, padding, dilation
    )
    _checks.check_bias(bias, x, weight.shape[0], "out_channels")
    packed = pack_conv2d_weight(weight, keep_idx, groups=groups)

    def run_one(x, part, part_bias):
        return conv2d_packed(
            x, part.weight, part.group_idx, part_bias, kernel_size, stride, padding, dilation
        )

    return run_conv_groups(x, packed, bias, run_one)


def linear(x, weight, keep_idx, bias=None):
    """Validated reference group-wise linear; same contract as gwprune.ops.linear."""
    _checks.check_float_tensor(x, "x")
    _checks.check_linear_weight(weight, x)
    _checks.check_linear_input(x, weight.shape[1])
    _checks.check_bias(bias, x, weight.shape[0], "out_features")
    packed = pack_linear_weight(weight, keep_idx)
    return linear_packed(x, packed.weight, packed.feature_idx, bias)
