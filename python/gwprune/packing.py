"""Packed weights: the kept columns of a pruned layer, compacted once.

Packing is the only place a weight is compacted; a packed layer's forward is
gather + GEMM only. The kept groups are ordered for the input layout the
packed weight is meant for: (c, i, j) for NCHW inputs, (i, j, c) for
channels_last ones, where consecutive kept groups are then consecutive
channels of one tap. Either order gives the same result for any input.

The kept count is padded up to a multiple of ``INDEX_ALIGNMENT`` with index -1
and zero weight columns: every leading dimension cuBLAS sees is then a
multiple of 16 bytes, which its tensor-core kernels need (an odd K' such as
4147 ran 2-5x slower than a padded one). Kernels and the reference path read
-1 as "contributes nothing".
"""

from dataclasses import dataclass

import torch

from . import _checks
from .groups import num_groups

INDEX_ALIGNMENT = 8
PAD_INDEX = -1


def padded_count(count: int) -> int:
    return -(-count // INDEX_ALIGNMENT) * INDEX_ALIGNMENT


def pad_index(index: torch.Tensor) -> torch.Tensor:
    """int32 index padded with PAD_INDEX to a multiple of INDEX_ALIGNMENT entries."""
    pad = padded_count(index.numel()) - index.numel()
    filler = torch.full((pad,), PAD_INDEX, dtype=torch.int32, device=index.device)
    return torch.cat([index.to(torch.int32), filler])


def pad_columns(columns: torch.Tensor) -> torch.Tensor:
    """[out, K'] -> contiguous [out, padded_count(K')] with zero columns appended."""
    pad = padded_count(columns.shape[1]) - columns.shape[1]
    return torch.nn.functional.pad(columns, (0, pad)).contiguous()


def kept_count(index: torch.Tensor) -> int:
    """Number of real (non-padding) entries of a packed index (reads the index)."""
    return int((index >= 0).sum())


@dataclass(frozen=True)
class PackedConv2dWeight:
    weight: torch.Tensor  # [Cout, K'p] kept columns of weight.reshape(Cout, -1), group_idx order
    group_idx: torch.Tensor  # int32 [groups * K'p] flat (c, i, j) of each kept column, -1 = pad
    in_channels: int  # C, all input channels (for groups > 1 too)
    kernel_size: tuple[int, int]
    # Conv groups: rows [k*Cout/g, (k+1)*Cout/g) of weight and entries [k*K'p, (k+1)*K'p) of
    # group_idx are conv group k (its kept (c, i, j), c over all C channels, -1 padded to the
    # widest group's count), run as one ungrouped packed conv each (see conv_group_parts).
    groups: int = 1

    @property
    def num_groups(self) -> int:
        return self.in_channels * self.kernel_size[0] * self.kernel_size[1]

    @property
    def num_kept(self) -> int:
        return kept_count(self.group_idx)

    @property
    def keep_ratio(self) -> float:
        return self.num_kept / self.num_groups if self.num_groups else 1.0

    def to(self, *args, **kwargs) -> "PackedConv2dWeight":
        """Moves/casts the weight like Tensor.to; indices follow the device only."""
        weight = self.weight.to(*args, **kwargs).contiguous()
        return PackedConv2dWeight(
            weight,
            self.group_idx.to(weight.device),
            self.in_channels,
            self.kernel_size,
            self.groups,
        )

    def conv_group_parts(self) -> list["PackedConv2dWeight"]:
        """One ungrouped packed weight per conv group (views): conv group k is an ungrouped
        conv over all C input channels that keeps only (c, i, j) of its own channels."""
        if self.groups == 1:
            return [self]
        rows = self.weight.shape[0] // self.groups
        width = self.weight.shape[1]
        return [
            PackedConv2dWeight(
                self.weight[k * rows : (k + 1) * rows],
                self.group_idx[k * width : (k + 1) * width],
                self.in_channels,
                self.kernel_size,
            )
            for k in range(self.groups)
        ]


@dataclass(frozen=True)
class PackedLinearWeight:
    weight: torch.Tensor  # [out, K'p] kept columns, feature_idx order
    feature_idx: torch.Tensor  # int32 [K'p] kept input features, -1 = padding
    in_features: int

    @property
    def num_kept(self) -> int:
        return kept_count(self.feature_idx)

    @property
    def keep_ratio(self) -> float:
        return self.num_kept / self.in_features if self.in_features else 1.0

    def to(self, *args, **kwargs) -> "PackedLinearWeight":
        weight = self.weight.to(*args, **kwargs).contiguous()
        return PackedLinearWeight(weight, self.feature_idx.to(weight.device), self.in_features)


def _validated_keep_idx(keep_idx, weight: torch.Tensor, what: str, groups: int = 1) -> torch.Tensor:
    limit = num_groups(weight, groups)
    _checks.check_index_meta(keep_idx, "keep_idx", weight, "weight", limit, what)
    _checks.check_index_values(keep_idx, "keep_idx", limit, what)
    return torch.sort(keep_idx.long()).values


def conv2d_gather_order(
    keep_idx: torch.Tensor,
    in_channels: int,
    kernel_size: tuple[int, int],
    memory_format: torch.memory_format,
) -> torch.Tensor:
    """Sorted keep_idx reordered for the gather of the given input layout."""
    if memory_format != torch.channels_last:
        return keep_idx
    taps = kernel_size[0] * kernel_size[1]
    tap_major = (keep_idx % taps) * in_channels + keep_idx // taps
    return keep_idx[torch.argsort(tap_major)]


def pack_conv2d_unchecked(
    weight: torch.Tensor, sorted_keep_idx: torch.Tensor, memory_format: torch.memory_format
) -> PackedConv2dWeight:
    """Packs with indices already validated and sorted (see pack_conv2d_weight)."""
    out_channels, in_channels, kh, kw = weight.shape
    order = conv2d_gather_order(sorted_keep_idx.long(), in_channels, (kh, kw), memory_format)
    columns = pad_columns(weight.reshape(out_channels, -1).index_select(1, order))
    return PackedConv2dWeight(columns, pad_index(order), in_channels, (kh, kw))


def pack_grouped_conv2d_unchecked(
    weight: torch.Tensor,
    sorted_keep_idx: torch.Tensor,
    memory_format: torch.memory_format,
    groups: int,
) -> PackedConv2dWeight:
    """Packs a grouped conv weight ``[Cout, C/g, kh, kw]``; ``sorted_keep_idx`` numbers
    ``(c, i, j)`` over all C channels (validated and sorted). Reads the indices (one host
    sync on a GPU): each conv group's kept count sets the packed width."""
    out_channels, group_channels, kh, kw = weight.shape
    in_channels = group_channels * groups
    rows = out_channels // groups
    per_group = group_channels * kh * kw
    keep = sorted_keep_idx.long()
    owner = keep // per_group
    counts = torch.bincount(owner, minlength=groups).tolist()
    width = padded_count(max(counts)) if counts else 0
    columns = weight.new_zeros(out_channels, width)
    group_idx = torch.full((groups * width,), PAD_INDEX, dtype=torch.int32, device=weight.device)
    start = 0
    for k, count in enumerate(counts):
        kept = keep[start : start + count]
        start += count
        if not count:
            continue
        order = conv2d_gather_order(kept, in_channels, (kh, kw), memory_format)
        block = weight[k * rows : (k + 1) * rows].reshape(rows, -1)
        columns[k * rows : (k + 1) * rows, :count] = block.index_select(1, order - k * per_group)
        group_idx[k * width : k * width + count] = order.to(torch.int32)
    return PackedConv2dWeight(columns.contiguous(), group_idx, in_channels, (kh, kw), groups)


def pack_conv2d_weight(
    weight: torch.Tensor,
    keep_idx: torch.Tensor,
    memory_format: torch.memory_format = torch.contiguous_format,
    groups: int = 1,
) -> PackedConv2dWeight:
    """Compacts a conv weight ``[Cout, C/groups, kh, kw]`` to its kept groups.

    ``keep_idx`` (int32/int64, 1-D, same device as ``weight``) lists kept flat
    ``(c, i, j)`` indices (for ``groups > 1``, ``c`` over all C input channels, see
    ``gwprune.groups``); it is validated here (range, duplicates), once.
    ``memory_format`` is the input layout the packed weight will mostly see.
    """
    _checks.check_float_tensor(weight, "weight", dim=4)
    _checks.check_groups_arg(groups, weight.shape[0], "weight's output channels")
    if weight.shape[0] == 0:
        raise ValueError(f"gwprune: weight has 0 output channels (shape {tuple(weight.shape)})")
    if memory_format not in (torch.contiguous_format, torch.channels_last):
        raise ValueError(
            f"gwprune: memory_format must be torch.contiguous_format or torch.channels_last, "
            f"got {memory_format}"
        )
    keep = _validated_keep_idx(keep_idx, weight, "groups (C*kh*kw of weight)", groups)
    if groups != 1:
        return pack_grouped_conv2d_unchecked(weight, keep, memory_format, groups)
    return pack_conv2d_unchecked(weight, keep, memory_format)


def pack_linear_unchecked(
    weight: torch.Tensor, sorted_keep_idx: torch.Tensor
) -> PackedLinearWeight:
    columns = pad_columns(weight.index_select(1, sorted_keep_idx.long()))
    return PackedLinearWeight(columns, pad_index(sorted_keep_idx), weight.shape[1])


def pack_linear_weight(weight: torch.Tensor, keep_idx: torch.Tensor) -> PackedLinearWeight:
    """Compacts a linear weight ``[out, in]`` to its kept input features."""
    _checks.check_float_tensor(weight, "weight", dim=2)
    keep = _validated_keep_idx(keep_idx, weight, "input features of weight")
    return pack_linear_unchecked(weight, keep)
