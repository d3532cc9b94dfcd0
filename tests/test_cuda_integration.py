"""CUDA-only guarantees: chunked workspace, streams, graphs, devices, no host sync,
determinism, and that PyTorch's precision flags are followed."""

import threading

import pytest
import torch
import torch.nn.functional as F
from conftest import (
    DTYPES,
    assert_matches,
    host_sync_count,
    poisoned_outputs,
    precision_flags,
    relative_error,
)

import gwprune
from gwprune.nn import GroupwiseConv2d, GroupwiseLinear

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


# ---- placement: a second GPU --------------------------------------------------------------


def linear_problem(
    rows=37, in_features=96, out_features=40, keep=0.5, seed=0, dtype=torch.float32, device="cuda"
):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, 3, in_features, generator=generator).to(dtype)
    weight = torch.randn(out_features, in_features, generator=generator).to(dtype)
    bias = torch.randn(out_features, generator=generator).to(dtype)
    keep_idx = torch.randperm(in_features, generator=generator)[: int(keep * in_features)]
    ref = F.linear(x.double(), gwprune.mask_weight(weight.double(), keep_idx), bias.double())
    return x.to(device), weight.to(device), bias.to(device), keep_idx.to(device), ref


def dense_modules(weight, bias, linear_weight, linear_bias):
    conv = torch.nn.Conv2d(
        weight.shape[1], weight.shape[0], weight.shape[2], padding=1, dtype=weight.dtype
    )
    linear = torch.nn.Linear(
        linear_weight.shape[1], linear_weight.shape[0], dtype=linear_weight.dtype
    )
    with torch.no_grad():
        conv.weight.copy_(weight.cpu())
        conv.bias.copy_(bias.cpu())
        linear.weight.copy_(linear_weight.cpu())
        linear.bias.copy_(linear_bias.cpu())
    return conv, linear


def all_forms(x, weight, bias, keep_idx, xl, wl, bl, keep_l, modules):
    """Every public way of running the two layers: raw, packed, modules."""
    conv_module, linear_module = modules
    return {
        "conv raw": gwprune.ops.conv2d(x, weight, keep_idx, bias, padding=1),
        "conv packed": gwprune.ops.conv2d_packed(
            x, gwprune.pack_conv2d_weight(weight, keep_idx), bias, padding=1
        ),
        "conv module": conv_module(x),
        "linear raw": gwprune.ops.linear(xl, wl, keep_l, bl),
        "linear packed": gwprune.ops.linear_packed(xl, gwprune.pack_linear_weight(wl, keep_l), bl),
        "linear module": linear_module(xl),
    }


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
@pytest.mark.parametrize("precision", ["fp32", "tf32", "fp16", "bf16"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("limit", [1 << 16, 1 << 30], ids=["chunked", "one-chunk"])
def test_second_device(workspace_limit, precision, layout, limit):
    # Tensors on cuda:1 while the current device is cuda:0: results on cuda:1, right, nothing
    # allocated on cuda:0, the current device untouched; the same on a side stream of cuda:1.
    torch.cuda.set_device(0)
    workspace_limit(limit)
    dtype = DTYPES[precision]
    dev = torch.device("cuda:1")
    x, weight, bias, keep_idx, ref = conv_problem(dtype=dtype, device=dev)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    xl, wl, bl, keep_l, ref_l = linear_problem(dtype=dtype, device=dev)
    conv, linear = dense_modules(weight, bias, wl, bl)
    modules = (
        GroupwiseConv2d.from_dense(conv, keep_idx.cpu()).to(dev),
        GroupwiseLinear.from_dense(linear, keep_l.cpu()).to(dev),
    )
    assert modules[0].weight.device == dev and modules[0].group_idx.device == dev
    torch.cuda.synchronize(0)
    on_device_0 = torch.cuda.memory_allocated(0)
    with precision_flags(precision), poisoned_outputs("cuda"):
        outs = all_forms(x, weight, bias, keep_idx, xl, wl, bl, keep_l, modules)
        stream = torch.cuda.Stream(device=dev)
        stream.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(stream):
            side = all_forms(x, weight, bias, keep_idx, xl, wl, bl, keep_l, modules)
        torch.cuda.current_stream(dev).wait_stream(stream)
    torch.cuda.synchronize(dev)
    assert torch.cuda.current_device() == 0
    assert torch.cuda.memory_allocated(0) == on_device_0, "a cuda:1 call allocated on cuda:0"
    for name, out in [*outs.items(), *((f"{k} (side stream)", v) for k, v in side.items())]:
        assert out.device == dev, f"{name}: output on {out.device}"
        expected = ref if name.startswith("conv") else ref_l
        assert_matches(out, expected, precision, f"cuda:1 {precision} {layout} {name}")
        if name.startswith("conv") and layout == "channels_last":
            assert out.is_contiguous(memory_format=torch.channels_last), name


# ---- streams, graphs, threads --------------------------------------------------------------


@pytest.mark.parametrize("limit", [1 << 14, 1 << 30], ids=["chunked", "one-chunk"])
def test_side_streams_running_at_once(workspace_limit, limit):
    # Two side streams, each with its own inputs, enqueued back to back so they overlap.
    workspace_limit(limit)
    problems = [conv_problem(seed=s) for s in (1, 2)]
    packed = [gwprune.pack_conv2d_weight(p[1], p[3], torch.channels_last) for p in problems]
    xs = [problems[0][0], problems[1][0].contiguous(memory_format=torch.channels_last)]
    linears = [linear_problem(seed=s) for s in (3, 4)]
    streams = [torch.cuda.Stream() for _ in range(2)]
    outs = [None, None]
    with precision_flags("fp32"), poisoned_outputs("cuda"):
        for stream in streams:
            stream.wait_stream(torch.cuda.current_stream())
        for i, stream in enumerate(streams):
            with torch.cuda.stream(stream):
                xl, wl, bl, keep_l, _ = linears[i]
                outs[i] = (
                    gwprune.ops.conv2d_packed(xs[i], packed[i], problems[i][2], padding=1),
                    gwprune.ops.linear(xl, wl, keep_l, bl),
                )
        for stream in streams:
            torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    for i in range(2):
        assert_matches(outs[i][0], problems[i][4], "fp32", f"stream {i} conv")
        assert_matches(outs[i][1], linears[i][4], "fp32", f"stream {i} linear")


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("limit", [1 << 14, 1 << 30], ids=["chunked", "one-chunk"])
def test_cuda_graph_of_a_pruned_model(workspace_limit, precision, limit):
    # Modules (packed: no host sync) captured in one graph, replayed with new inputs; the
    # chunked case captures the multi-chunk path, side stream included where it is used.
    workspace_limit(limit)
    dtype = DTYPES[precision]
    x, weight, bias, keep_idx, _ = conv_problem(dtype=dtype)
    xl, wl, bl, keep_l, _ = linear_problem(in_features=48 * 14 * 12, dtype=dtype)
    conv, linear = dense_modules(weight, bias, wl, bl)
    model = torch.nn.Sequential(
        GroupwiseConv2d.from_dense(conv, keep_idx.cpu()),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        GroupwiseLinear.from_dense(linear, keep_l.cpu()),
    ).cuda()
    dense = gwprune.to_dense(model).double().cpu()  # a copy, pruned groups zeroed
    static_x = x.clone()
    with precision_flags(precision), poisoned_outputs("cuda"):
        warm = torch.cuda.Stream()
        warm.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(warm):
            for _ in range(2):
                model(static_x)
        torch.cuda.current_stream().wait_stream(warm)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = model(static_x)
        for replay in range(3):
            new_x = torch.randn(x.shape, generator=torch.Generator().manual_seed(50 + replay))
            static_x.copy_(new_x.to(dtype))
            graph.replay()
            torch.cuda.synchronize()
            ref = dense(static_x.double().cpu())
            assert_matches(static_out, ref, precision, f"graph replay {replay}")


def test_raw_ops_sync_once_packed_never():
    # The documented cost of validating keep_idx in the raw ops: exactly one host sync, on
    # the call that packs (here: each first call after clearing the pack cache); a call
    # served from the pack cache makes none.
    x, weight, bias, keep_idx, _ = conv_problem()
    xl, wl, bl, keep_l, _ = linear_problem()
    packed_conv = gwprune.pack_conv2d_weight(weight, keep_idx)
    packed_linear = gwprune.pack_linear_weight(wl, keep_l)
    calls = {
        "conv raw": (lambda: gwprune.ops.conv2d(x, weight, keep_idx, bias, padding=1), 1),
        "linear raw": (lambda: gwprune.ops.linear(xl, wl, keep_l, bl), 1),
        "conv packed": (lambda: gwprune.ops.conv2d_packed(x, packed_conv, bias, padding=1), 0),
        "linear packed": (lambda: gwprune.ops.linear_packed(xl, packed_linear, bl), 0),
    }
    for call, _ in calls.values():
        call()  # warm up: first calls may initialize cuBLAS and the allocator
    torch.cuda.synchronize()
    for name, (call, expected) in calls.items():
        for repeat, expect in ((False, expected), (True, 0)):
            if not repeat:
                gwprune.clear_pack_cache()
            syncs = host_sync_count(call)
            when = "repeated call" if repeat else "first call"
            assert syncs == expect, f"{name}, {when}: {syncs} host syncs, not {expect}"


def test_threads_with_their_own_inputs_and_streams(workspace_limit):
    # Several Python threads at once, each on its own stream with its own data, the chunked
    # path included: every result right, and equal bit for bit to a single-threaded run.
    workspace_limit(1 << 16)
    problems = [conv_problem(seed=10 + t) for t in range(4)]
    linears = [linear_problem(seed=20 + t) for t in range(4)]
    packed = [gwprune.pack_conv2d_weight(p[1], p[3]) for p in problems]
    packed_l = [gwprune.pack_linear_weight(lp[1], lp[3]) for lp in linears]

    def run(t):
        x = problems[t][0]
        if t % 2:
            x = x.contiguous(memory_format=torch.channels_last)
        conv_out = gwprune.ops.conv2d_packed(x, packed[t], problems[t][2], padding=1)
        linear_out = gwprune.ops.linear_packed(linears[t][0], packed_l[t], linears[t][2])
        return conv_out, linear_out

    with precision_flags("fp32"):
        single = [run(t) for t in range(4)]
        torch.cuda.synchronize()
        results, errors = {}, []

        def worker(t):
            try:
                stream = torch.cuda.Stream()
                with precision_flags("fp32"), torch.cuda.stream(stream):
                    results[t] = [run(t) for _ in range(5)]
                stream.synchronize()
            except Exception as error:  # pragma: no cover - reported below
                errors.append(error)

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    torch.cuda.synchronize()
    assert not errors, errors
    for t in range(4):
        assert_matches(single[t][0], problems[t][4], "fp32", f"thread {t} conv")
        assert_matches(single[t][1], linears[t][4], "fp32", f"thread {t} linear")
        for conv_out, linear_out in results[t]:
            assert torch.equal(conv_out, single[t][0]), f"thread {t}: conv differs"
            assert torch.equal(linear_out, single[t][1]), f"thread {t}: linear differs"


@pytest.mark.parametrize("precision", ["fp32", "tf32", "fp16", "bf16"])
@pytest.mark.parametrize("limit", [1 << 14, 1 << 30], ids=["chunked", "one-chunk"])
def test_bitwise_identical_run_to_run(workspace_limit, precision, limit):
    workspace_limit(limit)
    dtype = DTYPES[precision]
    x, weight, bias, keep_idx, _ = conv_problem(dtype=dtype, seed=7)
    xl, wl, bl, keep_l, _ = linear_problem(dtype=dtype, seed=8)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    with precision_flags(precision):
        runs = [
            (
                gwprune.ops.conv2d(x, weight, keep_idx, bias, padding=1),
                gwprune.ops.conv2d(x_cl, weight, keep_idx, bias, padding=1),
                gwprune.ops.linear(xl, wl, keep_l, bl),
            )
            for _ in range(3)
        ]
    for run in runs[1:]:
        for name, a, b in zip(
            ("conv nchw", "conv channels_last", "linear"), runs[0], run, strict=True
        ):
            assert torch.equal(a, b), f"{precision} {name}: results differ run to run"


@pytest.mark.parametrize("limit", [1 << 14, 1 << 30], ids=["chunked", "one-chunk"])
def test_repeated_calls_of_every_form_do_not_grow_memory(workspace_limit, limit):
    workspace_limit(limit)
    x, weight, bias, keep_idx, _ = conv_problem()
    xl, wl, bl, keep_l, _ = linear_problem()
    x_cl = x.contiguous(memory_format=torch.channels_last)
    packed = gwprune.pack_conv2d_weight(weight, keep_idx, torch.channels_last)
    packed_l = gwprune.pack_linear_weight(wl, keep_l)

    def every_form():
        gwprune.ops.conv2d(x, weight, keep_idx, bias, padding=1)
        gwprune.ops.conv2d(x_cl, weight, keep_idx, bias, padding=1)
        gwprune.ops.conv2d_packed(x_cl, packed, bias, padding=1)
        gwprune.ops.linear(xl, wl, keep_l, bl)
        gwprune.ops.linear_packed(xl, packed_l, bl)

    for _ in range(3):
        every_form()
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    for _ in range(30):
        every_form()
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() == before
