"""Grouped / depthwise convs and string padding ('same', 'valid') against the masked dense
conv in float64 (F.conv2d on the weight with the pruned groups zeroed), odd shapes."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from conftest import assert_matches

import gwprune
from gwprune import prune
from gwprune.convert import convert, masked_layer_weight, to_dense
from gwprune.nn import GroupwiseConv2d


def random_keep(num_groups: int, generator: torch.Generator, ratio: float = 0.5) -> torch.Tensor:
    count = max(1, round(ratio * num_groups))
    return torch.randperm(num_groups, generator=generator)[:count]


GROUPED_CASES = [
    # (C, Cout, groups, kernel, stride, padding, dilation, H, W)
    (6, 9, 3, (3, 3), 1, 1, 1, 7, 5),
    (4, 8, 2, (2, 3), 2, 0, 1, 9, 6),
    (5, 5, 5, (3, 3), 1, 2, 2, 8, 7),  # depthwise
    (3, 6, 3, (5, 1), 1, (2, 0), 1, 6, 4),  # depthwise, channel multiplier 2
    (8, 4, 4, (1, 1), 1, 0, 1, 3, 5),
]


@pytest.mark.parametrize("case", GROUPED_CASES, ids=lambda c: f"C{c[0]}-Co{c[1]}-g{c[2]}")
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_grouped_conv2d_matches_masked_dense(case, layout):
    channels, out_channels, groups, kernel, stride, padding, dilation, height, width = case
    generator = torch.Generator().manual_seed(hash(case) % 2**31)
    x = torch.randn(2, channels, height, width, generator=generator, dtype=torch.float64)
    x = x.contiguous(memory_format=layout)
    weight = torch.randn(
        out_channels, channels // groups, *kernel, generator=generator, dtype=torch.float64
    )
    bias = torch.randn(out_channels, generator=generator, dtype=torch.float64)
    keep = random_keep(channels * kernel[0] * kernel[1], generator)
    out = gwprune.ops.conv2d(x, weight, keep, bias, stride, padding, dilation, groups)
    masked = gwprune.mask_weight(weight, keep, groups)
    ref = F.conv2d(x, masked, bias, stride, padding, dilation, groups)
    assert_matches(out, ref, "fp64", f"grouped conv {case}")
    expected_layout = layout if layout == torch.channels_last else torch.contiguous_format
    assert out.is_contiguous(memory_format=expected_layout)


def test_grouped_keep_idx_numbers_groups_over_all_input_channels():
    # Keeping only channel 4's taps (conv group 1 of 2) leaves conv group 0 with bias only.
    weight = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    x = torch.randn(1, 6, 5, 5, dtype=torch.float64)
    bias = torch.randn(4, dtype=torch.float64)
    keep = torch.arange(4 * 9, 5 * 9)
    out = gwprune.ops.conv2d(x, weight, keep, bias, padding=1, groups=2)
    assert torch.allclose(out[:, :2], bias[:2].view(1, 2, 1, 1).expand(1, 2, 5, 5))
    ref = F.conv2d(x, gwprune.mask_weight(weight, keep, 2), bias, padding=1, groups=2)
    assert_matches(out, ref, "fp64", "one kept channel")


SAME_CASES = [
    # (kernel, dilation): odd totals pad one more at the bottom / right, as F.conv2d does
    ((3, 3), 1),
    ((2, 4), 1),
    ((4, 3), (1, 2)),
    ((1, 2), 3),
    ((5, 5), 2),
]


@pytest.mark.parametrize("kernel,dilation", SAME_CASES)
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_same_padding_matches_f_conv2d(kernel, dilation, layout):
    generator = torch.Generator().manual_seed(7)
    x = torch.randn(2, 5, 7, 6, generator=generator, dtype=torch.float64)
    x = x.contiguous(memory_format=layout)
    weight = torch.randn(3, 5, *kernel, generator=generator, dtype=torch.float64)
    keep = random_keep(5 * kernel[0] * kernel[1], generator, 0.6)
    out = gwprune.ops.conv2d(x, weight, keep, None, 1, "same", dilation)
    masked = gwprune.mask_weight(weight, keep)
    ref = F.conv2d(x, masked, None, 1, "same", dilation)
    assert out.shape == ref.shape == (2, 3, 7, 6)
    assert_matches(out, ref, "fp64", f"'same' kernel {kernel} dilation {dilation}")
    packed = gwprune.pack_conv2d_weight(weight, keep)
    out_packed = gwprune.ops.conv2d_packed(x, packed, None, 1, "same", dilation)
    assert_matches(out_packed, ref, "fp64", "'same', packed")


def test_valid_padding_is_zero_padding():
    x = torch.randn(1, 4, 6, 9, dtype=torch.float64)
    weight = torch.randn(2, 4, 3, 2, dtype=torch.float64)
    keep = torch.tensor([0, 5, 7, 20, 23])
    out = gwprune.ops.conv2d(x, weight, keep, padding="valid", stride=(1, 2))
    ref = F.conv2d(x, gwprune.mask_weight(weight, keep), padding="valid", stride=(1, 2))
    assert_matches(out, ref, "fp64", "'valid'")


def test_bad_groups_and_padding_raise_named_errors():
    x = torch.randn(1, 6, 5, 5)
    weight = torch.randn(4, 3, 3, 3)
    keep = torch.arange(10)
    with pytest.raises(ValueError, match="groups=3 does not divide the 4 output channels"):
        gwprune.ops.conv2d(x, torch.randn(4, 2, 3, 3), keep, groups=3)
    with pytest.raises(ValueError, match="groups must be positive"):
        gwprune.ops.conv2d(x, weight, keep, groups=0)
    with pytest.raises(TypeError, match="groups must be a positive int"):
        gwprune.ops.conv2d(x, weight, keep, groups=2.0)
    with pytest.raises(ValueError, match="x has 6 channels but weight expects 9"):
        gwprune.ops.conv2d(x, torch.randn(6, 3, 3, 3), keep, groups=3)
    with pytest.raises(ValueError, match="out of range for 54"):
        gwprune.ops.conv2d(x, weight, torch.tensor([54]), groups=2)
    with pytest.raises(ValueError, match="padding='same' is not supported for strided"):
        gwprune.ops.conv2d(x, torch.randn(4, 6, 3, 3), keep, stride=2, padding="same")
    with pytest.raises(ValueError, match="padding must be 'same', 'valid'"):
        gwprune.ops.conv2d(x, torch.randn(4, 6, 3, 3), keep, padding="full")
    with pytest.raises(ValueError, match="padding must be 'same', 'valid'"):
        GroupwiseConv2d(6, 4, 3, 5, padding="circular")


@pytest.mark.parametrize("groups", [2, 6])
def test_grouped_module_round_trips(groups):
    torch.manual_seed(groups)
    conv = nn.Conv2d(6, 12, (3, 2), padding="same", groups=groups).double()
    keep = random_keep(6 * 6, torch.Generator().manual_seed(3), 0.4)
    module = GroupwiseConv2d.from_dense(conv, keep)
    x = torch.randn(3, 6, 5, 7, dtype=torch.float64)
    masked = nn.Conv2d(6, 12, (3, 2), padding="same", groups=groups).double()
    with torch.no_grad():
        masked.weight.copy_(gwprune.mask_weight(conv.weight, keep, groups))
        masked.bias.copy_(conv.bias)
    ref = masked(x)
    assert_matches(module(x), ref, "fp64", "grouped module")
    assert torch.equal(module.keep_idx, torch.sort(keep).values)
    dense = module.to_dense()
    assert dense.groups == groups and dense.padding == "same"
    assert torch.equal(dense.weight, masked.weight)
    module.set_backend("dense")
    assert_matches(module(x), ref, "fp64", "grouped module, dense backend")
    # A state dict loads into a module built with the widest conv group's kept count.
    counts = torch.bincount(keep // 6, minlength=groups)
    empty = GroupwiseConv2d(
        6, 12, (3, 2), int(counts.max()), padding="same", groups=groups, dtype=torch.float64
    )
    empty.load_state_dict(module.state_dict())
    assert_matches(empty(x), ref, "fp64", "grouped module from a state dict")


def test_group_scores_of_a_grouped_conv_stay_within_their_conv_group():
    weight = torch.randn(6, 2, 3, 3, dtype=torch.float64)
    scores = prune.group_scores(weight, "l1", groups=3)
    assert scores.shape == (3 * 2 * 9,)
    blocks = weight.reshape(3, 2, 2 * 9).abs().sum(dim=1).reshape(-1)
    assert torch.allclose(scores, blocks)


class GroupedNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, padding=1)
        self.depthwise = nn.Conv2d(8, 8, 3, padding="same", groups=8)
        self.grouped = nn.Conv2d(8, 6, (2, 3), padding="same", groups=2)

    def forward(self, x):
        return self.grouped(self.depthwise(self.conv(x)))


def test_convert_skips_grouped_convs_by_default_with_the_reason():
    model = GroupedNet().double()
    converted, report = convert(model, 0.5)
    reasons = {layer.name: layer.reason for layer in report.skipped}
    assert [layer.name for layer in report.converted] == ["conv"]
    assert "depthwise" in reasons["depthwise"] and "grouped='convert'" in reasons["depthwise"]
    assert "4 channels per group" in reasons["grouped"]


def test_convert_grouped_convert_matches_masked_dense_and_to_dense():
    torch.manual_seed(0)
    model = GroupedNet().double().eval()
    converted, report = convert(model, 0.5, grouped="convert")
    assert [layer.name for layer in report.converted] == ["conv", "depthwise", "grouped"]
    masked = GroupedNet().double().eval()
    masked.load_state_dict(model.state_dict())
    with torch.no_grad():
        for layer in report.converted:
            module = masked.get_submodule(layer.name)
            module.weight.copy_(masked_layer_weight(module, layer.keep_idx))
    x = torch.randn(2, 4, 9, 8, dtype=torch.float64)
    ref = masked(x)
    assert_matches(converted(x), ref, "fp64", "converted grouped net")
    assert_matches(to_dense(converted)(x), ref, "fp64", "to_dense of the converted grouped net")
    depthwise = report.converted[1]
    assert depthwise.weight_params == 8 * 9
    assert depthwise.kept_weight_params == depthwise.kept_groups
