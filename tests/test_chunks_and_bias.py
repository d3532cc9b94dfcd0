"""CUDA: chunked calls (workspace cap smaller than the compacted operand) and the
cuBLASLt bias epilogue are accurate at every precision, deterministic, and correct on
any stream and under CUDA-graph capture."""

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_matches, poisoned_outputs, precision_flags

import gwprune

pytestmark = pytest.mark.cuda


@pytest.fixture
def settings():
    """Restores the workspace cap after the test."""
    saved = gwprune.get_workspace_limit()
    yield
    gwprune.set_workspace_limit(saved)


def conv_case(layout, dtype, seed, bias=True, n=6, c=24, co=40, hw=(13, 11), keep=0.4):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, *hw, generator=generator)
    weight = torch.randn(co, c, 3, 3, generator=generator)
    b = torch.randn(co, generator=generator) if bias else None
    keep_idx = torch.randperm(c * 9, generator=generator)[: int(keep * c * 9)]
    ref = F.conv2d(
        x.double(),
        gwprune.mask_weight(weight.double(), keep_idx),
        None if b is None else b.double(),
        padding=1,
    )
    x = x.to("cuda", dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    packed = gwprune.pack_conv2d_weight(weight.to("cuda", dtype), keep_idx.cuda())
    b = None if b is None else b.to("cuda", dtype)
    return x, packed, b, ref


def linear_case(dtype, seed, bias=True, rows=257, features=96, out=72, keep=0.5):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, features, generator=generator)
    weight = torch.randn(out, features, generator=generator)
    b = torch.randn(out, generator=generator) if bias else None
    keep_idx = torch.randperm(features, generator=generator)[: int(keep * features)]
    ref = F.linear(
        x.double(),
        gwprune.mask_weight(weight.double(), keep_idx),
        None if b is None else b.double(),
    )
    packed = gwprune.pack_linear_weight(weight.to("cuda", dtype), keep_idx.cuda())
    return x.to("cuda", dtype), packed, None if b is None else b.to("cuda", dtype), ref


PRECISIONS = [
    ("fp32", torch.float32),
    ("tf32", torch.float32),
    ("fp16", torch.float16),
    ("bf16", torch.bfloat16),
]


@pytest.mark.parametrize("precision,dtype", PRECISIONS, ids=[p for p, _ in PRECISIONS])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("limit", [3000, 40_000, 2**30])
def test_chunked_conv_is_accurate_and_deterministic(settings, precision, dtype, layout, limit):
    # 3000 B slices pixels across many chunks; 40 kB takes an image or two per chunk;
    # 1 GiB is one chunk.
    x, packed, bias, ref = conv_case(layout, dtype, seed=limit)
    gwprune.set_workspace_limit(limit)
    with precision_flags(precision), poisoned_outputs("cuda"):
        first = gwprune.ops.conv2d_packed(x, packed, bias, padding=1)
        again = gwprune.ops.conv2d_packed(x, packed, bias, padding=1)
    assert_matches(first, ref, precision, f"{layout} limit={limit}")
    torch.testing.assert_close(first, again, rtol=0, atol=0)


@pytest.mark.parametrize("precision,dtype", PRECISIONS, ids=[p for p, _ in PRECISIONS])
@pytest.mark.parametrize("limit", [500, 20_000, 2**30])
def test_chunked_linear_is_accurate_and_deterministic(settings, precision, dtype, limit):
    x, packed, bias, ref = linear_case(dtype, seed=limit)
    gwprune.set_workspace_limit(limit)
    with precision_flags(precision), poisoned_outputs("cuda"):
        first = gwprune.ops.linear_packed(x, packed, bias)
        again = gwprune.ops.linear_packed(x, packed, bias)
    assert_matches(first, ref, precision, f"limit={limit}")
    torch.testing.assert_close(first, again, rtol=0, atol=0)


@pytest.mark.parametrize("precision,dtype", PRECISIONS[1:], ids=[p for p, _ in PRECISIONS[1:]])
@pytest.mark.parametrize("offset", [0, 1], ids=["aligned-bias", "offset-bias"])
def test_bias_epilogue_and_its_fallback(settings, precision, dtype, offset):
    # An aligned bias rides cuBLASLt's epilogue; a bias viewed at an odd offset is not
    # 16-byte aligned and takes the prefill path. Both must add the same bias.
    x, packed, bias, ref = conv_case("channels_last", dtype, seed=3 + offset)
    storage = torch.empty(bias.numel() + offset, dtype=dtype, device="cuda")
    storage[offset:] = bias
    shifted = storage[offset:]
    xl, packed_l, bias_l, ref_l = linear_case(dtype, seed=5 + offset)
    storage_l = torch.empty(bias_l.numel() + offset, dtype=dtype, device="cuda")
    storage_l[offset:] = bias_l
    with precision_flags(precision), poisoned_outputs("cuda"):
        out = gwprune.ops.conv2d_packed(x, packed, shifted, padding=1)
        out_l = gwprune.ops.linear_packed(xl, packed_l, storage_l[offset:])
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert_matches(out, ref, precision, f"conv bias offset {offset}")
    assert_matches(out_l, ref_l, precision, f"linear bias offset {offset}")


BIAS_RESOLUTION = {"fp32": 1e-6, "tf32": 1e-6, "fp16": 1e-3, "bf16": 1e-2}


def assert_is_bias(out, bias, precision):
    """out equals the bias broadcast over it to the output dtype's rounding."""
    shape = [1] * out.dim()
    shape[1 if out.dim() == 4 else -1] = -1
    expected = bias.double().view(shape).expand_as(out)
    error = (out.double() - expected).abs()
    assert (error <= BIAS_RESOLUTION[precision] * expected.abs() + 1e-3).all(), error.max()


@pytest.mark.parametrize("precision,dtype", PRECISIONS, ids=[p for p, _ in PRECISIONS])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("limit", [3000, 2**30], ids=["small-cap", "default-cap"])
def test_conv_bias_is_exact_next_to_a_tiny_conv(settings, precision, dtype, layout, limit):
    # Where no epilogue takes the bias (NCHW outputs, strict fp32), large outputs get it as
    # weight columns against rows of ones (csrc/cuda/bias_columns.h); small caps keep the
    # prefill. With a conv term a million times smaller than the bias, the output is the
    # bias to the output dtype's rounding: a bias rounded to TF32's 10 mantissa bits
    # (~1e-4 relative) would fail this.
    gwprune.set_workspace_limit(limit)
    x, packed, _, _ = conv_case(layout, dtype, seed=21, bias=False, n=8)
    bias = (torch.rand(packed.weight.shape[0], device="cuda") * 200 - 100).to(dtype)
    packed = gwprune.ops.PackedConv2dWeight(
        packed.weight * 1e-6, packed.group_idx, packed.in_channels, packed.kernel_size
    )
    with precision_flags(precision), poisoned_outputs("cuda"):
        out = gwprune.ops.conv2d_packed(x, packed, bias, padding=1)
    assert_is_bias(out, bias, precision)


@pytest.mark.parametrize("precision,dtype", PRECISIONS, ids=[p for p, _ in PRECISIONS])
@pytest.mark.parametrize("limit", [3000, 2**30], ids=["small-cap", "default-cap"])
def test_linear_bias_is_exact_next_to_a_tiny_product(settings, precision, dtype, limit):
    gwprune.set_workspace_limit(limit)
    x, packed, _, _ = linear_case(dtype, seed=23, bias=False, rows=1031)
    bias = (torch.rand(packed.weight.shape[0], device="cuda") * 200 - 100).to(dtype)
    packed = gwprune.ops.PackedLinearWeight(
        packed.weight * 1e-6, packed.feature_idx, packed.in_features
    )
    with precision_flags(precision), poisoned_outputs("cuda"):
        out = gwprune.ops.linear_packed(x, packed, bias)
    assert_is_bias(out, bias, precision)


@pytest.mark.parametrize("precision", ["fp32", "tf32"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_conv_bias_rows_keep_inf_and_nan(settings, precision, layout):
    # An inf bias stays inf and a NaN bias NaN, as with F.conv2d (splitting inf into a
    # TF32 high part and a remainder would give inf - inf = NaN); the finite channels
    # still match the float64 reference.
    x, packed, bias, ref = conv_case(layout, torch.float32, seed=22, n=8)
    bias[0], bias[1], bias[2] = float("inf"), float("-inf"), float("nan")
    with precision_flags(precision), poisoned_outputs("cuda"):
        out = gwprune.ops.conv2d_packed(x, packed, bias, padding=1)
    assert out[:, 0].isposinf().all() and out[:, 1].isneginf().all()
    assert out[:, 2].isnan().all()
    assert_matches(out[:, 3:], ref[:, 3:], precision, "finite bias channels")


def test_chunked_calls_on_a_side_stream_and_in_a_cuda_graph(settings):
    x, packed, bias, ref = conv_case("nchw", torch.float32, seed=11)
    xl, packed_l, bias_l, ref_l = linear_case(torch.float32, seed=12)
    gwprune.set_workspace_limit(20_000)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with precision_flags("fp32"), torch.cuda.stream(stream):
        out = gwprune.ops.conv2d_packed(x, packed, bias, padding=1)
        out_l = gwprune.ops.linear_packed(xl, packed_l, bias_l)
    torch.cuda.current_stream().wait_stream(stream)
    assert_matches(out, ref, "fp32", "side stream conv")
    assert_matches(out_l, ref_l, "fp32", "side stream linear")

    static_x, static_xl = x.clone(), xl.clone()
    with precision_flags("fp32"):
        warm = torch.cuda.Stream()
        warm.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(warm):
            gwprune.ops.conv2d_packed(static_x, packed, bias, padding=1)
            gwprune.ops.linear_packed(static_xl, packed_l, bias_l)
        torch.cuda.current_stream().wait_stream(warm)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            graph_out = gwprune.ops.conv2d_packed(static_x, packed, bias, padding=1)
            graph_out_l = gwprune.ops.linear_packed(static_xl, packed_l, bias_l)
        for _ in range(3):
            graph_out.fill_(float("nan"))
            graph_out_l.fill_(float("nan"))
            graph.replay()
        torch.cuda.synchronize()
    assert_matches(graph_out, ref, "fp32", "graph replay conv")
    assert_matches(graph_out_l, ref_l, "fp32", "graph replay linear")
