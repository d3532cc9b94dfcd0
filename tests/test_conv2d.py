"""gwprune.ops.conv2d / conv2d_packed against F.conv2d in float64 on masked weights."""

import itertools

import pytest
import torch
import torch.nn.functional as F
from conftest import (
    DTYPES,
    assert_matches,
    device_precisions,
    make_keep_idx,
    poisoned_outputs,
    precision_flags,
)

import gwprune

# batch, in_channels, out_channels, (H, W), kernel, stride, padding, dilation
CONV_SHAPES = [
    (1, 1, 1, (5, 5), 1, 1, 0, 1),
    (3, 3, 17, (17, 33), 3, 1, 1, 1),
    (1, 17, 5, (9, 14), 5, 2, 2, 1),
    (3, 64, 33, (12, 10), (3, 1), 1, (1, 0), 1),
    (1, 3, 8, (33, 17), (1, 5), 2, 0, 2),
    (3, 17, 64, (16, 16), 3, 2, 1, 2),
    (1, 64, 3, (7, 7), 3, 1, 2, 2),
    (3, 1, 3, (6, 11), (2, 3), (2, 1), (0, 2), (2, 1)),
    (1, 3, 1, (1, 1), 1, 1, 0, 1),
    (3, 64, 17, (5, 5), 5, 1, 2, 1),
]
KEEP_MODES = ["one", "quarter", "half", "all"]
LAYOUTS = ["nchw", "channels_last", "strided"]


def shape_id(shape):
    n, c, co, hw, k, s, p, d = shape
    return f"n{n}-c{c}-o{co}-{hw[0]}x{hw[1]}-k{k}-s{s}-p{p}-d{d}".replace(" ", "")


def make_input(shape, layout, dtype, device, generator):
    n, c, _, (h, w), *_ = shape
    x = torch.randn(n, c, h, w, generator=generator, dtype=torch.float64).to(dtype)
    if layout == "channels_last":
        return x.to(device).contiguous(memory_format=torch.channels_last)
    if layout == "strided":
        # Every other column of a wider tensor: neither NCHW- nor NHWC-contiguous.
        wide = torch.randn(n, c, h, 2 * w, generator=generator, dtype=torch.float64).to(dtype)
        wide[..., ::2] = x
        return wide.to(device)[..., ::2]
    return x.to(device)


def conv_case(shape, keep_mode, with_bias, layout, precision, device, seed):
    generator = torch.Generator().manual_seed(seed)
    n, c, co, _, k, s, p, d = shape
    kh, kw = (k, k) if isinstance(k, int) else k
    dtype = DTYPES[precision]
    x = make_input(shape, layout, dtype, device, generator)
    weight = torch.randn(co, c, kh, kw, generator=generator, dtype=torch.float64).to(dtype)
    bias = (
        torch.randn(co, generator=generator, dtype=torch.float64).to(dtype) if with_bias else None
    )
    keep_idx = make_keep_idx(c * kh * kw, keep_mode, generator)
    ref = F.conv2d(
        x.double().cpu(),
        gwprune.mask_weight(weight.double(), keep_idx),
        None if bias is None else bias.double(),
        s,
        p,
        d,
    )
    weight, keep_idx = weight.to(device), keep_idx.to(device)
    bias = None if bias is None else bias.to(device)
    return x, weight, bias, keep_idx, (s, p, d), ref


@pytest.mark.parametrize("device,precision", device_precisions())
@pytest.mark.parametrize("shape", CONV_SHAPES, ids=shape_id)
def test_conv2d_matches_masked_dense(device, precision, shape):
    cases = itertools.product(KEEP_MODES, [False, True], LAYOUTS)
    for seed, (keep_mode, with_bias, layout) in enumerate(cases):
        x, weight, bias, keep_idx, (s, p, d), ref = conv_case(
            shape, keep_mode, with_bias, layout, precision, device, seed
        )
        context = f"{shape_id(shape)} keep={keep_mode} bias={with_bias} layout={layout}"
        with precision_flags(precision), poisoned_outputs(device):
            out = gwprune.ops.conv2d(x, weight, keep_idx, bias, stride=s, padding=p, dilation=d)
        assert out.dtype == x.dtype and out.device == x.device, context
        if layout == "channels_last" and not x.is_contiguous():
            assert out.is_contiguous(memory_format=torch.channels_last), context
        assert_matches(out, ref, precision, context)


@pytest.mark.parametrize("device,precision", device_precisions())
@pytest.mark.parametrize("pack_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_conv2d_packed_any_pack_order_any_layout(device, precision, pack_format, layout):
    shape = (3, 17, 33, (13, 9), 3, 1, 1, 1)
    for seed, keep_mode in enumerate(KEEP_MODES):
        x, weight, bias, keep_idx, (s, p, d), ref = conv_case(
            shape, keep_mode, True, layout, precision, device, 1000 + seed
        )
        packed = gwprune.pack_conv2d_weight(weight, keep_idx, memory_format=pack_format)
        assert packed.num_kept == keep_idx.numel() and packed.weight.shape[1] % 8 == 0
        with precision_flags(precision), poisoned_outputs(device):
            out = gwprune.ops.conv2d_packed(x, packed, bias, stride=s, padding=p, dilation=d)
        assert_matches(out, ref, precision, f"pack={pack_format} layout={layout} keep={keep_mode}")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_conv2d_empty_keep_idx_gives_bias_or_zeros(device, with_bias):
    x = torch.randn(2, 4, 6, 5, device=device)
    weight = torch.randn(3, 4, 3, 3, device=device)
    bias = torch.randn(3, device=device) if with_bias else None
    keep_idx = torch.empty(0, dtype=torch.long, device=device)
    with poisoned_outputs(device):
        out = gwprune.ops.conv2d(x, weight, keep_idx, bias, padding=1)
    expected = torch.zeros(2, 3, 6, 5, device=device)
    if with_bias:
        expected += bias.view(1, 3, 1, 1)
    assert torch.equal(out, expected)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_conv2d_empty_batch(device):
    x = torch.randn(0, 4, 6, 5, device=device)
    weight = torch.randn(3, 4, 3, 3, device=device)
    out = gwprune.ops.conv2d(x, weight, torch.arange(5, device=device), padding=1)
    assert out.shape == (0, 3, 6, 5)


def test_conv2d_keep_idx_int32_and_unsorted_equal_int64_sorted():
    x = torch.randn(2, 5, 8, 8, dtype=torch.float64)
    weight = torch.randn(4, 5, 3, 3, dtype=torch.float64)
    keep = torch.tensor([44, 3, 17, 0, 29])
    a = gwprune.ops.conv2d(x, weight, keep.to(torch.int32), padding=1)
    b = gwprune.ops.conv2d(x, weight, torch.sort(keep).values, padding=1)
    assert torch.equal(a, b)


def test_keep_idx_helpers_match_the_seeds_two_marking_ways():
    weight = torch.randn(6, 4, 3, 3)
    mask = torch.rand(4, 3, 3) > 0.5
    keep_from_mask = gwprune.keep_idx_from_mask(mask)
    zeroed = weight * mask.unsqueeze(0)
    assert torch.equal(gwprune.keep_idx_from_zeroed(zeroed), keep_from_mask)
    assert torch.equal(gwprune.group_mask_from_keep_idx(keep_from_mask, 36), mask.reshape(-1))
    assert torch.equal(gwprune.mask_weight(weight, keep_from_mask), zeroed)
    x = torch.randn(2, 4, 7, 7)
    torch.testing.assert_close(
        gwprune.ops.conv2d(x, weight, keep_from_mask, padding=1), F.conv2d(x, zeroed, padding=1)
    )
