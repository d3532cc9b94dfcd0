"""gwprune.ops.linear / linear_packed against F.linear in float64 on masked weights."""

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

# x shape, in_features, out_features
LINEAR_SHAPES = [
    ((1, 1), 1, 1),
    ((3, 17), 17, 33),
    ((3, 5, 64), 64, 17),
    ((17, 33), 33, 64),
    ((2, 3, 4, 3), 3, 5),
    ((64,), 64, 3),
    ((33, 1024), 1024, 17),
]


def linear_case(x_shape, in_f, out_f, keep_mode, with_bias, transposed, precision, device, seed):
    generator = torch.Generator().manual_seed(seed)
    dtype = DTYPES[precision]
    if transposed and len(x_shape) >= 2:
        # A transposed view: the feature dimension is not contiguous.
        x = (
            torch.randn(
                *x_shape[:-2], x_shape[-1], x_shape[-2], generator=generator, dtype=torch.float64
            )
            .to(dtype)
            .to(device)
            .transpose(-1, -2)
        )
    else:
        x = torch.randn(*x_shape, generator=generator, dtype=torch.float64).to(dtype).to(device)
    weight = torch.randn(out_f, in_f, generator=generator, dtype=torch.float64).to(dtype)
    bias = (
        torch.randn(out_f, generator=generator, dtype=torch.float64).to(dtype)
        if with_bias
        else None
    )
    keep_idx = make_keep_idx(in_f, keep_mode, generator)
    ref = F.linear(
        x.double().cpu(),
        gwprune.mask_weight(weight.double(), keep_idx),
        None if bias is None else bias.double(),
    )
    bias = None if bias is None else bias.to(device)
    return x, weight.to(device), bias, keep_idx.to(device), ref


@pytest.mark.parametrize("device,precision", device_precisions())
@pytest.mark.parametrize("x_shape,in_f,out_f", LINEAR_SHAPES, ids=str)
def test_linear_matches_masked_dense(device, precision, x_shape, in_f, out_f):
    seed = 0
    for keep_mode in ["one", "quarter", "half", "all"]:
        for with_bias in (False, True):
            for transposed in (False, True):
                seed += 1
                x, weight, bias, keep_idx, ref = linear_case(
                    x_shape, in_f, out_f, keep_mode, with_bias, transposed, precision, device, seed
                )
                context = f"x{x_shape} out={out_f} keep={keep_mode} bias={with_bias} T={transposed}"
                with precision_flags(precision), poisoned_outputs(device):
                    out = gwprune.ops.linear(x, weight, keep_idx, bias)
                    packed = gwprune.pack_linear_weight(weight, keep_idx)
                    out_packed = gwprune.ops.linear_packed(x, packed, bias)
                assert_matches(out, ref, precision, context)
                assert_matches(out_packed, ref, precision, context + " packed")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_linear_empty_keep_idx_gives_bias_or_zeros(device, with_bias):
    x = torch.randn(4, 3, 8, device=device)
    weight = torch.randn(5, 8, device=device)
    bias = torch.randn(5, device=device) if with_bias else None
    with poisoned_outputs(device):
        out = gwprune.ops.linear(x, weight, torch.empty(0, dtype=torch.int32, device=device), bias)
    expected = torch.zeros(4, 3, 5, device=device) + (bias if with_bias else 0)
    assert torch.equal(out, expected)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_linear_empty_rows(device):
    out = gwprune.ops.linear(
        torch.randn(0, 8, device=device),
        torch.randn(5, 8, device=device),
        torch.arange(3, device=device),
    )
    assert out.shape == (0, 5)
