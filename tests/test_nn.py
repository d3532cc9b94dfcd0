"""GroupwiseConv2d / GroupwiseLinear against F.conv2d / F.linear on masked weights."""

import io

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import gwprune
from gwprune.nn import GroupwiseConv2d, GroupwiseLinear

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def random_keep_idx(num_groups: int, num_kept: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randperm(num_groups, generator=generator)[:num_kept]


def make_conv(in_channels, out_channels, kernel_size, dtype=torch.float32, **kwargs) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size, dtype=dtype, **kwargs).eval()


def conv_reference(conv: nn.Conv2d, keep_idx: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    weight = gwprune.mask_weight(conv.weight.detach(), keep_idx)
    bias = None if conv.bias is None else conv.bias.detach()
    return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation)


CONV_CASES = [
    # in, out, kernel, stride, padding, dilation, bias, kept fraction
    (3, 8, 3, 1, 1, 1, True, 0.5),
    (5, 7, (3, 2), (2, 1), (0, 1), 1, False, 0.3),
    (4, 6, 3, 1, 2, 2, True, 0.9),
    (6, 4, 1, 1, 0, 1, True, 0.5),
    (2, 3, (5, 3), 3, (2, 1), (1, 2), True, 0.2),
]


@pytest.mark.parametrize(
    "in_ch,out_ch,kernel,stride,padding,dilation,bias,kept_fraction", CONV_CASES
)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_conv_matches_masked_dense(
    in_ch, out_ch, kernel, stride, padding, dilation, bias, kept_fraction, dtype
):
    generator = torch.Generator().manual_seed(100 * in_ch + out_ch)
    conv = make_conv(
        in_ch, out_ch, kernel, dtype, stride=stride, padding=padding, dilation=dilation, bias=bias
    )
    num_groups = conv.weight[0].numel()
    keep_idx = random_keep_idx(num_groups, max(1, int(kept_fraction * num_groups)), generator)
    module = GroupwiseConv2d.from_dense(conv, keep_idx)
    x = torch.randn(2, in_ch, 11, 9, dtype=dtype, generator=generator)
    tolerance = {"rtol": 1e-12, "atol": 1e-12} if dtype == torch.float64 else {}
    torch.testing.assert_close(module(x), conv_reference(conv, keep_idx, x), **tolerance)
    assert module.num_kept == keep_idx.numel()
    assert torch.equal(module.keep_idx, torch.sort(keep_idx).values)


@pytest.mark.parametrize("pack_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("input_format", [torch.contiguous_format, torch.channels_last])
def test_conv_memory_formats(pack_format, input_format):
    generator = torch.Generator().manual_seed(1)
    conv = make_conv(6, 5, 3, torch.float64, padding=1)
    keep_idx = random_keep_idx(54, 20, generator)
    module = GroupwiseConv2d.from_dense(conv, keep_idx, memory_format=pack_format)
    x = torch.randn(2, 6, 8, 8, dtype=torch.float64, generator=generator)
    x = x.contiguous(memory_format=input_format)
    torch.testing.assert_close(module(x), conv_reference(conv, keep_idx, x), rtol=1e-12, atol=1e-12)


def test_conv_from_mask_and_from_zeroed_agree():
    generator = torch.Generator().manual_seed(2)
    conv = make_conv(4, 6, 3)
    group_mask = torch.rand(4, 3, 3, generator=generator) < 0.5
    from_mask = GroupwiseConv2d.from_mask(conv, group_mask)
    from_flat_mask = GroupwiseConv2d.from_mask(conv, group_mask.reshape(-1).int())
    keep_idx = gwprune.keep_idx_from_mask(group_mask)

    zeroed = make_conv(4, 6, 3)
    zeroed.load_state_dict(conv.state_dict())
    with torch.no_grad():
        zeroed.weight.copy_(gwprune.mask_weight(conv.weight, keep_idx))
    from_zeroed = GroupwiseConv2d.from_zeroed(zeroed)

    for module in (from_mask, from_flat_mask, from_zeroed):
        assert torch.equal(module.keep_idx, keep_idx)
    x = torch.randn(3, 4, 7, 7, generator=generator)
    expected = conv_reference(conv, keep_idx, x)
    for module in (from_mask, from_flat_mask, from_zeroed):
        torch.testing.assert_close(module(x), expected)


def test_conv_same_padding_is_resolved():
    generator = torch.Generator().manual_seed(3)
    conv = make_conv(3, 4, (3, 5), torch.float64, padding="same", dilation=(2, 1))
    keep_idx = random_keep_idx(45, 10, generator)
    module = GroupwiseConv2d.from_dense(conv, keep_idx)
    assert module.padding == (2, 2)
    x = torch.randn(1, 3, 9, 10, dtype=torch.float64, generator=generator)
    expected = F.conv2d(
        x, gwprune.mask_weight(conv.weight.detach(), keep_idx), conv.bias, 1, "same", (2, 1)
    )
    torch.testing.assert_close(module(x), expected, rtol=1e-12, atol=1e-12)

    # Asymmetric 'same' (an even kernel) stays a string, resolved per call as F.conv2d does.
    asymmetric = make_conv(3, 4, 2, torch.float64, padding="same")
    module = GroupwiseConv2d.from_dense(asymmetric, torch.tensor([0, 1, 7]))
    assert module.padding == "same"
    expected = F.conv2d(
        x,
        gwprune.mask_weight(asymmetric.weight.detach(), torch.tensor([0, 1, 7])),
        asymmetric.bias,
        1,
        "same",
    )
    torch.testing.assert_close(module(x), expected, rtol=1e-12, atol=1e-12)


def test_conv_keeping_one_and_all_groups():
    generator = torch.Generator().manual_seed(4)
    conv = make_conv(3, 4, 3, torch.float64, padding=1)
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64, generator=generator)
    for keep_idx in (torch.tensor([13]), torch.arange(27)):
        module = GroupwiseConv2d.from_dense(conv, keep_idx)
        torch.testing.assert_close(module(x), conv_reference(conv, keep_idx, x))
    full = GroupwiseConv2d.from_dense(conv, torch.arange(27))
    torch.testing.assert_close(full(x), conv(x))


def test_conv_keeping_no_group_gives_bias():
    conv = make_conv(3, 4, 3)
    module = GroupwiseConv2d.from_dense(conv, torch.tensor([], dtype=torch.int64))
    out = module(torch.randn(2, 3, 5, 5))
    torch.testing.assert_close(out, conv.bias.detach().reshape(1, 4, 1, 1).expand(2, 4, 3, 3))


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("input_shape", [(7,), (3, 7), (2, 3, 7)])
def test_linear_matches_masked_dense(bias, input_shape):
    generator = torch.Generator().manual_seed(5)
    linear = nn.Linear(7, 5, bias=bias, dtype=torch.float64)
    keep_idx = torch.tensor([6, 0, 3])
    module = GroupwiseLinear.from_dense(linear, keep_idx)
    x = torch.randn(*input_shape, dtype=torch.float64, generator=generator)
    expected = F.linear(x, gwprune.mask_weight(linear.weight.detach(), keep_idx), linear.bias)
    torch.testing.assert_close(module(x), expected, rtol=1e-12, atol=1e-12)
    assert module.weight.shape == (5, 8) and module.num_kept == 3  # padded to 8 columns
    assert module.feature_idx.dtype == torch.int32


def test_linear_from_mask_and_from_zeroed():
    generator = torch.Generator().manual_seed(6)
    linear = nn.Linear(10, 4)
    group_mask = torch.zeros(10, dtype=torch.bool)
    group_mask[[1, 4, 9]] = True
    with torch.no_grad():
        linear.weight[:, ~group_mask] = 0
    x = torch.randn(5, 10, generator=generator)
    for module in (
        GroupwiseLinear.from_mask(linear, group_mask),
        GroupwiseLinear.from_zeroed(linear),
    ):
        assert module.keep_idx.tolist() == [1, 4, 9]
        torch.testing.assert_close(module(x), linear(x))


def test_to_dense_round_trip():
    generator = torch.Generator().manual_seed(7)
    conv = make_conv(4, 3, (2, 3), stride=2, padding=(1, 0), dilation=(1, 2))
    keep_idx = random_keep_idx(24, 9, generator)
    dense = GroupwiseConv2d.from_dense(conv, keep_idx).to_dense()
    assert isinstance(dense, nn.Conv2d)
    assert (dense.stride, dense.padding, dense.dilation) == ((2, 2), (1, 0), (1, 2))
    torch.testing.assert_close(
        dense.weight, gwprune.mask_weight(conv.weight.detach(), keep_idx), rtol=0, atol=0
    )
    torch.testing.assert_close(dense.bias, conv.bias, rtol=0, atol=0)

    linear = nn.Linear(6, 2, bias=False)
    dense_linear = GroupwiseLinear.from_dense(linear, torch.tensor([2, 5])).to_dense()
    assert dense_linear.bias is None
    expected = gwprune.mask_weight(linear.weight.detach(), torch.tensor([2, 5]))
    torch.testing.assert_close(dense_linear.weight, expected, rtol=0, atol=0)


def test_state_dict_round_trip_through_bytes():
    generator = torch.Generator().manual_seed(8)
    conv = make_conv(5, 6, 3, padding=1)
    module = GroupwiseConv2d.from_dense(
        conv, random_keep_idx(45, 17, generator), torch.channels_last
    )
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert set(state) == {"weight", "group_idx", "bias"}

    fresh = GroupwiseConv2d(5, 6, 3, keep_idx=17, padding=1)
    fresh.load_state_dict(state)
    x = torch.randn(2, 5, 8, 8, generator=generator)
    torch.testing.assert_close(fresh(x), module(x), rtol=0, atol=0)
    assert torch.equal(fresh.keep_idx, module.keep_idx)

    with pytest.raises(RuntimeError, match="size mismatch"):
        GroupwiseConv2d(5, 6, 3, keep_idx=16, padding=1).load_state_dict(state)

    linear = GroupwiseLinear.from_dense(nn.Linear(8, 3), torch.tensor([0, 2, 7]))
    fresh_linear = GroupwiseLinear(8, 3, keep_idx=3)
    fresh_linear.load_state_dict(linear.state_dict())
    x = torch.randn(4, 8, generator=generator)
    torch.testing.assert_close(fresh_linear(x), linear(x), rtol=0, atol=0)


def test_casts_keep_index_buffers_exact_int32():
    # 256 * 3 * 3 = 2304 groups: indices above 2048 are not exact in float16.
    conv = make_conv(256, 2, 3)
    keep_idx = torch.tensor([0, 2049, 2303])
    module = GroupwiseConv2d.from_dense(conv, keep_idx)
    module.to(torch.float64)
    assert module.weight.dtype == torch.float64
    assert module.group_idx.dtype == torch.int32
    module.half()
    module.type(torch.float32)
    module.to(torch.bfloat16)
    assert module.weight.dtype == torch.bfloat16
    assert module.group_idx.dtype == torch.int32
    assert module.keep_idx.tolist() == [0, 2049, 2303]

    linear = GroupwiseLinear.from_dense(nn.Linear(3000, 2), torch.tensor([5, 2999]))
    linear.type(torch.float16)
    assert linear.feature_idx.dtype == torch.int32
    assert linear.keep_idx.tolist() == [5, 2999]


def test_to_float64_matches_float64_reference():
    generator = torch.Generator().manual_seed(9)
    conv = make_conv(4, 5, 3, padding=1)
    keep_idx = random_keep_idx(36, 12, generator)
    module = GroupwiseConv2d.from_dense(conv, keep_idx).to(torch.float64)
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64, generator=generator)
    expected = conv_reference(conv.to(torch.float64), keep_idx, x)
    torch.testing.assert_close(module(x), expected, rtol=1e-12, atol=1e-12)


def test_extra_repr_shows_sizes_and_kept_groups():
    conv = make_conv(3, 8, 3, padding=1, bias=False)
    text = repr(GroupwiseConv2d.from_dense(conv, torch.arange(9)))
    assert "GroupwiseConv2d(3, 8, kernel_size=(3, 3)" in text
    assert "kept_groups=9/27 (33.3%)" in text
    assert "bias=False" in text
    text = repr(GroupwiseLinear.from_dense(nn.Linear(10, 4), torch.arange(5)))
    assert "in_features=10, out_features=4" in text
    assert "kept_groups=5/10 (50.0%)" in text


def test_inference_mode_and_no_parameters():
    generator = torch.Generator().manual_seed(10)
    model = nn.Sequential(
        GroupwiseConv2d.from_dense(make_conv(3, 4, 3), torch.arange(0, 27, 2)),
        nn.Flatten(),
        GroupwiseLinear.from_dense(nn.Linear(4 * 4 * 4, 3), torch.arange(10, 40)),
    )
    assert list(model.parameters()) == []
    x = torch.randn(2, 3, 6, 6, generator=generator)
    with torch.inference_mode():
        out = model(x)
    assert out.shape == (2, 3)
    torch.testing.assert_close(out, model(x))


@pytest.mark.parametrize("backend", ["eager", "aot_eager", "inductor"])
def test_torch_compile(backend):
    generator = torch.Generator().manual_seed(11)
    model = nn.Sequential(
        GroupwiseConv2d.from_dense(
            make_conv(3, 4, 3, padding=1), random_keep_idx(27, 11, generator)
        ),
        nn.ReLU(),
        nn.Flatten(),
        GroupwiseLinear.from_dense(nn.Linear(4 * 5 * 5, 3), random_keep_idx(100, 40, generator)),
    ).eval()
    x = torch.randn(2, 3, 5, 5, generator=generator)
    expected = model(x)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend=backend, fullgraph=True)
    with torch.inference_mode():
        torch.testing.assert_close(compiled(x), expected)
        torch.testing.assert_close(compiled(x + 1), model(x + 1))


def test_from_dense_errors_name_the_argument():
    conv = make_conv(4, 4, 3)
    with pytest.raises(TypeError, match="conv must be an nn.Conv2d"):
        GroupwiseConv2d.from_dense(nn.Linear(3, 3), torch.tensor([0]))
    with pytest.raises(ValueError, match="keep_idx contains 36, out of range for 36"):
        GroupwiseConv2d.from_dense(make_conv(4, 4, 3, groups=2), torch.tensor([36]))
    with pytest.raises(ValueError, match="padding_mode='reflect'"):
        GroupwiseConv2d.from_dense(make_conv(4, 4, 3, padding_mode="reflect"), torch.tensor([0]))
    with pytest.raises(TypeError, match="keep_idx must be a torch.Tensor"):
        GroupwiseConv2d.from_dense(conv, [0, 1])
    with pytest.raises(ValueError, match="keep_idx contains 36, out of range"):
        GroupwiseConv2d.from_dense(conv, torch.tensor([0, 36]))
    with pytest.raises(ValueError, match="keep_idx contains 1 duplicated"):
        GroupwiseConv2d.from_dense(conv, torch.tensor([3, 3]))
    with pytest.raises(TypeError, match="keep_idx must hold integer indices"):
        GroupwiseConv2d.from_dense(conv, torch.ones(36, dtype=torch.bool))
    with pytest.raises(ValueError, match="group_mask has 35 entries"):
        GroupwiseConv2d.from_mask(conv, torch.ones(35, dtype=torch.bool))
    with pytest.raises(TypeError, match="linear must be an nn.Linear"):
        GroupwiseLinear.from_dense(conv, torch.tensor([0]))
    with pytest.raises(ValueError, match="group_mask has 4 entries"):
        GroupwiseLinear.from_mask(nn.Linear(5, 2), torch.ones(4))
    with pytest.raises(ValueError, match="keep_idx as a count"):
        GroupwiseLinear(5, 2, keep_idx=6)


def test_forward_errors_name_the_argument():
    module = GroupwiseConv2d.from_dense(make_conv(4, 4, 3), torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="x has 3 channels"):
        module(torch.randn(1, 3, 5, 5))
    with pytest.raises(TypeError, match="packed.weight has dtype torch.float32 but x has"):
        module(torch.randn(1, 4, 5, 5, dtype=torch.float64))
    linear = GroupwiseLinear.from_dense(nn.Linear(5, 2), torch.tensor([1]))
    with pytest.raises(ValueError, match="x has 4 features"):
        linear(torch.randn(2, 4))


def test_backward_is_not_supported():
    module = GroupwiseLinear.from_dense(nn.Linear(5, 2), torch.tensor([1, 3]))
    x = torch.randn(3, 5, requires_grad=True)
    with pytest.raises(RuntimeError, match="no autograd formula"):
        module(x).sum().backward()


@pytest.mark.cuda
@needs_cuda
def test_cuda_modules_match_cpu_reference():
    generator = torch.Generator().manual_seed(12)
    conv = make_conv(8, 16, 3, padding=1, stride=2)
    keep_idx = random_keep_idx(72, 30, generator)
    linear = nn.Linear(64, 10)
    feature_idx = random_keep_idx(64, 20, generator)
    x = torch.randn(4, 8, 16, 16, generator=generator)
    features = torch.randn(4, 64, generator=generator)
    expected_conv = conv_reference(conv, keep_idx, x)
    expected_linear = F.linear(
        features, gwprune.mask_weight(linear.weight.detach(), feature_idx), linear.bias
    )

    # Strict fp32 on both sides: by default PyTorch lets cuDNN convolutions (and so
    # gwprune's conv) use TF32, which is ~1e-3 off the CPU result.
    saved_tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    conv_module = GroupwiseConv2d.from_dense(conv, keep_idx).cuda()
    linear_module = GroupwiseLinear.from_dense(linear, feature_idx).to("cuda")
    assert conv_module.group_idx.is_cuda and conv_module.group_idx.dtype == torch.int32
    with torch.inference_mode():
        try:
            conv_out = conv_module(x.cuda()).cpu()
        finally:
            torch.backends.cudnn.allow_tf32 = saved_tf32
        torch.testing.assert_close(conv_out, expected_conv, rtol=1e-4, atol=1e-4)
        got_linear = linear_module(features.cuda()).cpu()
    torch.testing.assert_close(got_linear, expected_linear.detach(), rtol=1e-4, atol=1e-4)
    built_on_gpu = GroupwiseConv2d.from_dense(conv.cuda(), keep_idx)  # keep_idx moved to the weight
    assert built_on_gpu.weight.is_cuda
