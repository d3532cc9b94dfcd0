"""CUDA-only guarantees: chunked workspace, streams, graphs, devices, no host sync,
determinism, and that PyTorch's precision flags are followed."""

import threading

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_matches, poisoned_outputs, precision_flags, relative_error

import gwprune

pytestmark = pytest.mark.cuda


def conv_problem(
    n=4, c=32, co=48, hw=(14, 12), k=3, keep=0.5, seed=0, dtype=torch.float32, device="cuda"
):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, *hw, generator=generator).to(dtype)
    weight = torch.randn(co, c, k, k, generator=generator).to(dtype)
    bias = torch.randn(co, generator=generator).to(dtype)
    keep_idx = torch.randperm(c * k * k, generator=generator)[: int(keep * c * k * k)]
    ref = F.conv2d(
        x.double(), gwprune.mask_weight(weight.double(), keep_idx), bias.double(), padding=1
    )
    return x.to(device), weight.to(device), bias.to(device), keep_idx.to(device), ref


@pytest.fixture
def workspace_limit():
    saved = gwprune.get_workspace_limit()
    yield gwprune.set_workspace_limit
    gwprune.set_workspace_limit(saved)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("limit", [1, 4096, 100_000, 2**20, 2**30])
def test_any_workspace_limit_gives_the_same_result(workspace_limit, layout, limit):
    # 1 byte forces single-pixel chunks; 100 kB slices one image; 1 MiB takes a few images.
    x, weight, bias, keep_idx, ref = conv_problem()
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    workspace_limit(limit)
    with precision_flags("fp32"), poisoned_outputs("cuda"):
        out = gwprune.ops.conv2d(x, weight, keep_idx, bias, padding=1)
    assert_matches(out, ref, "fp32", f"limit={limit} layout={layout}")


def test_linear_chunked_rows(workspace_limit):
    x = torch.randn(100, 3, 40, device="cuda")
    weight = torch.randn(7, 40, device="cuda")
    keep_idx = torch.arange(0, 40, 3, device="cuda")
    ref = F.linear(x.double(), gwprune.mask_weight(weight.double(), keep_idx))
    for limit in (1, 1000, 2**30):
        workspace_limit(limit)
        with precision_flags("fp32"), poisoned_outputs("cuda"):
            assert_matches(gwprune.ops.linear(x, weight, keep_idx), ref, "fp32", f"limit={limit}")


def test_peak_memory_stays_near_output_plus_workspace(workspace_limit):
    x, weight, bias, keep_idx, _ = conv_problem(n=16, c=64, co=64, hw=(28, 28))
    packed = gwprune.pack_conv2d_weight(weight, keep_idx)
    workspace_limit(1 << 20)
    gwprune.ops.conv2d_packed(x, packed, bias, padding=1)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    out = gwprune.ops.conv2d_packed(x, packed, bias, padding=1)
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - base - out.numel() * out.element_size()
    assert extra <= (1 << 20) + 4096, f"extra device memory {extra} B over a 1 MiB cap"


def test_packed_forward_never_syncs_the_host():
    x, weight, bias, keep_idx, _ = conv_problem()
    packed_conv = gwprune.pack_conv2d_weight(weight, keep_idx)
    xl = torch.randn(8, 64, device="cuda")
    packed_linear = gwprune.pack_linear_weight(
        torch.randn(16, 64, device="cuda"), torch.arange(0, 64, 2, device="cuda")
    )
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        gwprune.ops.conv2d_packed(x, packed_conv, bias, padding=1)
        gwprune.ops.linear_packed(xl, packed_linear)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_non_default_stream_and_cuda_graph():
    x, weight, bias, keep_idx, ref = conv_problem()
    packed = gwprune.pack_conv2d_weight(weight, keep_idx)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with precision_flags("fp32"), torch.cuda.stream(stream):
        out = gwprune.ops.conv2d_packed(x, packed, bias, padding=1)
    torch.cuda.current_stream().wait_stream(stream)
    assert_matches(out, ref, "fp32", "side stream")

    static_x = x.clone()
    with precision_flags("fp32"):
        warm = torch.cuda.Stream()
        warm.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(warm):
            gwprune.ops.conv2d_packed(static_x, packed, bias, padding=1)
        torch.cuda.current_stream().wait_stream(warm)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = gwprune.ops.conv2d_packed(static_x, packed, bias, padding=1)
        x2 = torch.randn_like(static_x)
        ref2 = F.conv2d(
            x2.double().cpu(),
            gwprune.mask_weight(weight.double().cpu(), keep_idx.cpu()),
            bias.double().cpu(),
            padding=1,
        )
        static_x.copy_(x2)
        graph.replay()
        torch.cuda.synchronize()
    assert_matches(static_out, ref2, "fp32", "graph replay with new input")


def test_threads_and_determinism():
    x, weight, bias, keep_idx, ref = conv_problem()
    packed = gwprune.pack_conv2d_weight(weight, keep_idx)
    with precision_flags("fp32"):
        first = gwprune.ops.conv2d_packed(x, packed, bias, padding=1)
        results, errors = [], []

        def worker():
            try:
                with precision_flags("fp32"):
                    for _ in range(5):
                        results.append(gwprune.ops.conv2d_packed(x, packed, bias, padding=1))
            except Exception as error:  # pragma: no cover - reported below
                errors.append(error)

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        torch.cuda.synchronize()
    assert not errors, errors
    assert all(torch.equal(r, first) for r in results), "results differ run to run"
    assert_matches(first, ref, "fp32", "threads")


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_second_device():
    x, weight, bias, keep_idx, ref = conv_problem(device="cuda:1")
    with precision_flags("fp32"):
        out = gwprune.ops.conv2d(x, weight, keep_idx, bias, padding=1)
    assert out.device == torch.device("cuda:1")
    assert_matches(out, ref, "fp32", "cuda:1")


def test_strict_fp32_conv_ignores_matmul_tf32_flag():
    # F.conv2d follows the cuDNN flag only; so must gwprune's conv.
    x, weight, bias, keep_idx, ref = conv_problem(c=128, co=128, keep=0.75, seed=3)
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    try:
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = True
        strict = gwprune.ops.conv2d(x, weight, keep_idx, bias, padding=1)
        torch.backends.cudnn.allow_tf32 = True
        tf32 = gwprune.ops.conv2d(x, weight, keep_idx, bias, padding=1)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
    assert relative_error(strict, ref) < 1e-5
    # TF32 rounds operands to 10 mantissa bits: visibly less exact than strict fp32.
    assert relative_error(tf32, ref) > 10 * relative_error(strict, ref)


def test_repeated_calls_do_not_grow_memory():
    x, weight, bias, keep_idx, _ = conv_problem()
    packed = gwprune.pack_conv2d_weight(weight, keep_idx)
    for _ in range(3):
        gwprune.ops.conv2d_packed(x, packed, bias, padding=1)
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    for _ in range(50):
        gwprune.ops.conv2d_packed(x, packed, bias, padding=1)
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() == before
