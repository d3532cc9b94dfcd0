"""The raw ops' pack cache: hits, invalidation by in-place edits, object lifetime, LRU
eviction by bytes, the disabled mode, threads, streams and several devices; every result
equal to F.conv2d / F.linear on the masked weight (float64 here, so exactly).

With gwprune._C the store is C++ (csrc/pack_cache.cpp) and an eager hit is one call into
it (gwprune._C.conv2d_cached / linear_cached); CPU tensors take that path too when the CPU
kernels are compiled, so every CPU test here runs it. The Python store (a gwprune without
_C) is tested at the end."""

import gc
import itertools
import threading

import pytest
import torch
import torch.nn.functional as F
from conftest import DEVICES, HAS_CUDA, cuda_only, host_sync_count

import gwprune
from gwprune import ops, pack_cache
from gwprune._extension import _C

native = pytest.mark.skipif(_C is None, reason="the C++ store is gwprune._C's")
cpp_hits_on_cpu = pytest.mark.skipif(
    not gwprune.cpu_kernels_compiled(), reason="CPU tensors reach the C++ hit path with CPU kernels"
)


@pytest.fixture(autouse=True)
def fresh_cache():
    limit = gwprune.get_pack_cache_limit()
    gwprune.clear_pack_cache()
    yield
    gwprune.set_pack_cache_limit(limit)
    gwprune.clear_pack_cache()


def conv_problem(device, seed=0, channels=6, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, channels, 7, 6, generator=g, dtype=dtype).to(device)
    weight = torch.randn(5, channels, 3, 3, generator=g, dtype=dtype).to(device)
    keep = torch.randperm(channels * 9, generator=g)[: channels * 4].to(device)
    bias = torch.randn(5, generator=g, dtype=dtype).to(device)
    return x, weight, keep, bias


def linear_problem(device, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 3, 20, generator=g, dtype=dtype).to(device)
    weight = torch.randn(7, 20, generator=g, dtype=dtype).to(device)
    keep = torch.randperm(20, generator=g)[:9].to(device)
    bias = torch.randn(7, generator=g, dtype=dtype).to(device)
    return x, weight, keep, bias


def conv_reference(x, weight, keep, bias):
    return F.conv2d(x, gwprune.mask_weight(weight, keep), bias, padding=1)


def linear_reference(x, weight, keep, bias):
    return F.linear(x, gwprune.mask_weight(weight, keep), bias)


def assert_equal(out, ref, case):
    assert out.shape == ref.shape, f"{case}: shape {tuple(out.shape)} != {tuple(ref.shape)}"
    error = float((out - ref).abs().max())
    assert error < 1e-12, f"{case}: max |out - ref| = {error:.3e}"


def counts():
    info = gwprune.pack_cache_info()
    return info.hits, info.misses, info.entries


@pytest.mark.parametrize("device", DEVICES)
def test_repeated_calls_hit_one_entry(device):
    x, weight, keep, bias = conv_problem(device)
    xl, wl, kl, bl = linear_problem(device)
    hits, misses, _ = counts()
    for call in range(3):
        assert_equal(
            gwprune.ops.conv2d(x, weight, keep, bias, padding=1),
            conv_reference(x, weight, keep, bias),
            f"conv call {call}",
        )
        assert_equal(
            gwprune.ops.linear(xl, wl, kl, bl), linear_reference(xl, wl, kl, bl), f"linear {call}"
        )
    new_hits, new_misses, entries = counts()
    assert (new_hits - hits, new_misses - misses, entries) == (4, 2, 2)
    info = gwprune.pack_cache_info()
    assert info.nbytes > 0 and info.limit_bytes == gwprune.get_pack_cache_limit()


@pytest.mark.parametrize("device", DEVICES)
def test_other_inputs_reuse_the_entry_layouts_get_their_own(device):
    x, weight, keep, bias = conv_problem(device)
    for n in (1, 3):
        x_n = torch.randn(n, *x.shape[1:], dtype=x.dtype, device=device)
        assert_equal(
            gwprune.ops.conv2d(x_n, weight, keep, None, padding=1),
            conv_reference(x_n, weight, keep, None),
            f"batch {n}",
        )
    assert counts()[1:] == (1, 1)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    out = gwprune.ops.conv2d(x_cl, weight, keep, bias, padding=1)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert_equal(out, conv_reference(x, weight, keep, bias), "channels_last")
    assert counts()[2] == 2  # the channels_last pack orders its groups (i, j, c)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "edit",
    ["weight-mul_", "weight-setitem", "weight-copy_", "keep-setitem", "keep-copy_"],
)
def test_in_place_edits_invalidate(device, edit):
    x, weight, keep, bias = conv_problem(device)
    gwprune.ops.conv2d(x, weight, keep, bias, padding=1)
    with torch.no_grad():
        if edit == "weight-mul_":
            weight.mul_(-2)
        elif edit == "weight-setitem":
            weight[:, 0] = 7.0
        elif edit == "weight-copy_":
            weight.copy_(torch.randn_like(weight))
        elif edit == "keep-setitem":
            dropped = sorted(set(range(weight[0].numel())) - set(keep.tolist()))
            keep[0] = dropped[0]
        else:
            keep.copy_(torch.randperm(weight[0].numel())[: keep.numel()].to(device))
    assert_equal(
        gwprune.ops.conv2d(x, weight, keep, bias, padding=1),
        conv_reference(x, weight, keep, bias),
        edit,
    )
    assert counts()[1] == 2, f"{edit}: the edited source was served from the cache"


@pytest.mark.parametrize("device", DEVICES)
def test_linear_in_place_edit_of_a_view_invalidates(device):
    # A view shares its base's version counter: editing the base is seen through it.
    x, weight, keep, bias = linear_problem(device)
    base = torch.cat([weight, weight]).clone()
    view = base[:7]
    gwprune.ops.linear(x, view, keep, bias)
    with torch.no_grad():
        base.add_(1.0)
    assert_equal(gwprune.ops.linear(x, view, keep, bias), linear_reference(x, view, keep, bias), "")


@pytest.mark.parametrize("device", DEVICES)
def test_data_swap_without_version_bump_is_a_miss(device):
    # Module.half() / .to() assign .data, which keeps the version counter: the data pointer
    # and dtype in the entry catch it.
    x, weight, keep, bias = conv_problem(device)
    gwprune.ops.conv2d(x, weight, keep, bias, padding=1)
    version = weight._version
    weight.data = torch.randn_like(weight)
    assert weight._version == version
    assert_equal(
        gwprune.ops.conv2d(x, weight, keep, bias, padding=1),
        conv_reference(x, weight, keep, bias),
        "swapped .data",
    )
    assert counts()[1] == 2


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("edit", ["weight-mul_", "weight-setitem", "keep-setitem", "keep-copy_"])
def test_linear_in_place_edits_invalidate(device, edit):
    x, weight, keep, bias = linear_problem(device)
    gwprune.ops.linear(x, weight, keep, bias)
    with torch.no_grad():
        if edit == "weight-mul_":
            weight.mul_(3)
        elif edit == "weight-setitem":
            weight[2] = -1.0
        elif edit == "keep-setitem":
            keep[0] = sorted(set(range(weight.shape[1])) - set(keep.tolist()))[0]
        else:
            keep.copy_(torch.randperm(weight.shape[1])[: keep.numel()].to(device))
    assert_equal(
        gwprune.ops.linear(x, weight, keep, bias), linear_reference(x, weight, keep, bias), edit
    )
    assert counts()[:2] == (0, 2), f"{edit}: the edited source was served from the cache"


@pytest.mark.parametrize("device", DEVICES)
def test_a_new_storage_at_a_freed_storage_address_is_a_miss(device):
    # A .data swap keeps the version counter. Swapping the weight's storage out (freeing
    # it) and a new one in that the allocator placed at the freed address leaves the data
    # pointer, shape, dtype and version as the entry saw them: only the storage's identity
    # (csrc/pack_cache.cpp holds it weakly, so no new storage can take its address) tells
    # the new values from the packed ones.
    x, weight, keep, bias = conv_problem(device)
    gwprune.ops.conv2d(x, weight, keep, bias, padding=1)
    reused = 0
    for round_ in range(50):
        address, version = weight.data_ptr(), weight._version
        weight.data = torch.empty(0, dtype=weight.dtype, device=device)  # frees the storage
        fresh = torch.empty(5, 6, 3, 3, dtype=x.dtype, device=device)
        reused += fresh.data_ptr() == address
        fresh.normal_()
        weight.data = fresh
        del fresh
        assert weight._version == version and weight.shape == (5, 6, 3, 3)
        assert_equal(
            gwprune.ops.conv2d(x, weight, keep, bias, padding=1),
            conv_reference(x, weight, keep, bias),
            f"round {round_}",
        )
        if reused and round_ >= 5:
            break
    assert counts()[:2] == (0, round_ + 2)
    if not reused:
        pytest.skip("the allocator never put a new storage at the freed address")


@pytest.mark.parametrize("device", DEVICES)
def test_dead_sources_are_dropped_and_recycled_memory_is_not_reused(device):
    # Each round frees the previous weight and keep_idx and makes new ones of the same
    # size, which the allocators tend to place at the same addresses (and Python at the
    # same ids): every result must still be the new tensors'.
    x = conv_problem(device)[0]
    addresses = set()
    for seed in range(6):
        _, weight, keep, bias = conv_problem(device, seed=seed)
        addresses.add(weight.data_ptr())
        assert_equal(
            gwprune.ops.conv2d(x, weight, keep, bias, padding=1),
            conv_reference(x, weight, keep, bias),
            f"round {seed}",
        )
        del weight, keep
        gc.collect()
        assert gwprune.pack_cache_info().entries == 0, f"round {seed}: a dead source's entry"
    hits, misses, _ = counts()
    assert (hits, misses) == (0, 6)


@pytest.mark.parametrize("device", DEVICES)
def test_lru_eviction_by_bytes(device):
    problems = [conv_problem(device, seed=s) for s in range(3)]
    gwprune.ops.conv2d(*problems[0], padding=1)
    entry_bytes = gwprune.pack_cache_info().nbytes
    gwprune.clear_pack_cache()
    gwprune.set_pack_cache_limit(2 * entry_bytes)
    gwprune.ops.conv2d(*problems[0], padding=1)
    gwprune.ops.conv2d(*problems[1], padding=1)
    gwprune.ops.conv2d(*problems[0], padding=1)  # 0 is now the most recently used
    gwprune.ops.conv2d(*problems[2], padding=1)  # evicts 1
    info = gwprune.pack_cache_info()
    assert (info.entries, info.nbytes) == (2, 2 * entry_bytes)
    _, misses, _ = counts()
    gwprune.ops.conv2d(*problems[0], padding=1)
    gwprune.ops.conv2d(*problems[2], padding=1)
    assert counts()[1] == misses, "a recently used entry was evicted"
    assert_equal(
        gwprune.ops.conv2d(*problems[1], padding=1), conv_reference(*problems[1]), "evicted"
    )
    assert counts()[1] == misses + 1
    gwprune.set_pack_cache_limit(entry_bytes)  # lowering the cap evicts at once
    assert gwprune.pack_cache_info().entries == 1
    gwprune.set_pack_cache_limit(entry_bytes - 1)  # an entry larger than the cap is not kept
    assert gwprune.pack_cache_info().entries == 0
    gwprune.ops.conv2d(*problems[0], padding=1)
    assert gwprune.pack_cache_info().entries == 0


@pytest.mark.parametrize("device", DEVICES)
def test_disabled_cache_packs_every_call(device):
    gwprune.set_pack_cache_limit(0)
    x, weight, keep, bias = conv_problem(device)
    xl, wl, kl, bl = linear_problem(device)
    for call in range(2):
        assert_equal(
            gwprune.ops.conv2d(x, weight, keep, bias, padding=1),
            conv_reference(x, weight, keep, bias),
            f"conv {call}",
        )
        assert_equal(gwprune.ops.linear(xl, wl, kl, bl), linear_reference(xl, wl, kl, bl), "")
    hits, misses, entries = counts()
    assert (hits, misses, entries) == (0, 4, 0)


@pytest.mark.parametrize("device", DEVICES)
def test_invalid_keep_idx_is_rejected_every_time_and_not_cached(device):
    x, weight, _, bias = conv_problem(device)
    bad = torch.tensor([0, 3, 3], device=device)
    for _ in range(2):
        with pytest.raises(ValueError, match="duplicated"):
            gwprune.ops.conv2d(x, weight, bad, bias, padding=1)
    xl, wl, _, bl = linear_problem(device)
    out_of_range = torch.tensor([0, wl.shape[1]], device=device)
    with pytest.raises(ValueError, match="out of range"):
        gwprune.ops.linear(xl, wl, out_of_range, bl)
    assert gwprune.pack_cache_info().entries == 0


def test_inference_tensors_are_not_cached_but_work():
    x, weight, keep, bias = conv_problem("cpu")
    with torch.inference_mode():
        frozen_keep = keep.clone()
        for _ in range(2):
            assert_equal(
                gwprune.ops.conv2d(x, weight, frozen_keep, bias, padding=1),
                conv_reference(x, weight, frozen_keep, bias),
                "inference keep_idx",
            )
        frozen_keep[0] = sorted(set(range(54)) - set(keep.tolist()))[0]
        assert_equal(
            gwprune.ops.conv2d(x, weight, frozen_keep, bias, padding=1),
            conv_reference(x, weight, frozen_keep, bias),
            "edited inference keep_idx",
        )
    assert gwprune.pack_cache_info().entries == 0


def test_raw_op_under_torch_compile_uses_the_cache():
    x, weight, keep, bias = conv_problem("cpu", dtype=torch.float32)
    torch._dynamo.reset()
    compiled = torch.compile(
        lambda a: gwprune.ops.conv2d(a, weight, keep, bias, padding=1),
        backend="aot_eager",
        fullgraph=True,
    )
    expected = conv_reference(x, weight, keep, bias)
    torch.testing.assert_close(compiled(x), expected)
    hits = counts()[0]
    torch.testing.assert_close(compiled(x), expected)
    assert counts()[0] > hits
    with torch.no_grad():
        weight.mul_(0.5)
    torch.testing.assert_close(compiled(x), conv_reference(x, weight, keep, bias))


@pytest.mark.parametrize("device", DEVICES)
def test_threads_share_and_fill_the_cache(device):
    shared = conv_problem(device, seed=0)
    expected_shared = conv_reference(*shared)
    own = [linear_problem(device, seed=1 + t) for t in range(4)]
    failures = []
    start = threading.Barrier(4)

    def run(t):
        try:
            start.wait()
            for _ in range(20):
                out = gwprune.ops.conv2d(*shared, padding=1)
                assert float((out - expected_shared).abs().max()) < 1e-12
                out = gwprune.ops.linear(*own[t])
                assert float((out - linear_reference(*own[t])).abs().max()) < 1e-12
        except Exception as error:  # noqa: BLE001  (reported below with the thread)
            failures.append((t, repr(error)))

    threads = [threading.Thread(target=run, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures
    hits, misses, entries = counts()
    assert entries == 5 and hits + misses == 160 and misses <= 8


@pytest.mark.parametrize("device", DEVICES)
def test_threads_calling_while_others_clear_and_resize(device):
    # A smoke test of the store's lock: calls (hits, misses, inserts) race with clears,
    # limit changes and info; every result stays right and the counts stay consistent.
    problems = [conv_problem(device, seed=s) for s in range(3)]
    expected = [conv_reference(*p) for p in problems]
    failures = []
    stop = threading.Event()

    def call(t):
        try:
            for i in range(60):
                k = (t + i) % 3
                out = gwprune.ops.conv2d(*problems[k], padding=1)
                assert float((out - expected[k]).abs().max()) < 1e-12
        except Exception as error:  # noqa: BLE001
            failures.append((t, repr(error)))

    def meddle():
        try:
            for i in itertools.count():
                if stop.is_set():
                    return
                gwprune.set_pack_cache_limit((2**30, 0, 1)[i % 3])  # 1 byte: nothing fits
                if i % 5 == 0:
                    gwprune.clear_pack_cache()
                info = gwprune.pack_cache_info()
                assert 0 <= info.entries <= 3 and info.nbytes >= 0
        except Exception as error:  # noqa: BLE001
            failures.append(("meddler", repr(error)))

    threads = [threading.Thread(target=call, args=(t,)) for t in range(3)]
    meddler = threading.Thread(target=meddle)
    meddler.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stop.set()
    meddler.join()
    assert not failures, failures
    gwprune.set_pack_cache_limit(2**30)
    for k in range(3):
        gwprune.ops.conv2d(*problems[k], padding=1)
    assert gwprune.pack_cache_info().entries == 3


@native
@cpp_hits_on_cpu
def test_a_cpu_hit_is_one_call_into_cpp(monkeypatch):
    # After the first call, neither the Python store nor the Python checks are reached.
    x, weight, keep, bias = conv_problem("cpu")
    xl, wl, kl, bl = linear_problem("cpu")
    gwprune.ops.conv2d(x, weight, keep, bias, padding=1)
    gwprune.ops.linear(xl, wl, kl, bl)

    def python_path(*args, **kwargs):
        raise AssertionError("a hit came back to Python")

    for name in ("conv2d_entry", "linear_entry", "lookup"):
        monkeypatch.setattr(pack_cache, name, python_path)
    monkeypatch.setattr(pack_cache._cache, "get", python_path)
    for name in ("check_float_tensor", "check_conv2d_weight", "check_index_meta", "check_bias"):
        monkeypatch.setattr(ops._checks, name, python_path)
    hits = counts()[0]
    for call in range(3):
        out = gwprune.ops.conv2d(x, weight, keep, bias, padding=1)
        assert_equal(out, conv_reference(x, weight, keep, bias), f"conv hit {call}")
        out = gwprune.ops.linear(xl, wl, kl, bl)
        assert_equal(out, linear_reference(xl, wl, kl, bl), f"linear hit {call}")
    assert counts()[0] == hits + 6


@native
@cpp_hits_on_cpu
def test_cached_entries_return_none_on_a_miss():
    x, weight, keep, bias = conv_problem("cpu")
    xl, wl, kl, bl = linear_problem("cpu")
    ws = gwprune.get_workspace_limit()

    def conv(x=x, weight=weight, keep=keep):
        return _C.conv2d_cached(x, weight, keep, bias, 1, 1, 1, ws, "auto")

    assert conv() is None and _C.linear_cached(xl, wl, kl, bl, ws) is None
    gwprune.ops.conv2d(x, weight, keep, bias, padding=1)
    gwprune.ops.linear(xl, wl, kl, bl)
    assert_equal(conv(), conv_reference(x, weight, keep, bias), "conv hit")
    assert_equal(_C.linear_cached(xl, wl, kl, bl, ws), linear_reference(xl, wl, kl, bl), "hit")
    # Not tensors: left to the Python path, which raises its errors.
    assert conv(keep=keep.tolist()) is None and conv(x=x.tolist()) is None
    assert conv(weight=weight.tolist()) is None
    # Another layout, another object with equal values: other entries.
    assert conv(x=x.contiguous(memory_format=torch.channels_last)) is None
    assert conv(keep=keep.clone()) is None and conv(weight=weight.clone()) is None
    # The conv entry is not the linear's, though both are keyed by the same weight.
    assert _C.linear_cached(x, weight, keep, None, ws) is None
    assert counts()[:2] == (2, 2)


@native
def test_lookup_returns_the_packed_weight_of_the_cpp_store():
    x, weight, keep, bias = conv_problem("cpu")
    gwprune.ops.conv2d(x, weight, keep, bias, padding=1)
    assert pack_cache.lookup(pack_cache.CONV_CHANNELS_LAST, weight, keep) is None
    entry = pack_cache.lookup(pack_cache.CONV_NCHW, weight, keep)
    packed = entry.packed
    assert isinstance(packed, gwprune.PackedConv2dWeight) and entry.stream_id == -1
    assert (packed.in_channels, packed.kernel_size, packed.groups) == (6, (3, 3), 1)
    assert entry.nbytes == gwprune.pack_cache_info().nbytes
    expected = gwprune.pack_conv2d_weight(weight, keep)
    assert torch.equal(packed.weight, expected.weight)
    assert torch.equal(packed.group_idx, expected.group_idx)


def test_limit_arguments_are_checked():
    with pytest.raises(TypeError, match="nbytes must be an int"):
        gwprune.set_pack_cache_limit(1.5)
    with pytest.raises(TypeError, match="nbytes must be an int"):
        gwprune.set_pack_cache_limit(True)
    with pytest.raises(ValueError, match="between 0 and"):
        gwprune.set_pack_cache_limit(-1)


def test_environment_sets_the_default(monkeypatch):
    monkeypatch.setenv("GWPRUNE_PACK_CACHE_MB", "3")
    assert pack_cache._initial_limit_bytes() == 3 * 2**20
    monkeypatch.setenv("GWPRUNE_PACK_CACHE_MB", "0")
    assert pack_cache._initial_limit_bytes() == 0
    monkeypatch.setenv("GWPRUNE_PACK_CACHE_MB", "lots")
    with pytest.raises(ValueError, match="GWPRUNE_PACK_CACHE_MB"):
        pack_cache._initial_limit_bytes()
    monkeypatch.delenv("GWPRUNE_PACK_CACHE_MB")
    assert pack_cache._initial_limit_bytes() == 2**30


# ---- the Python store (a gwprune without _C) ----------------------------------------------


@pytest.fixture
def python_store(monkeypatch):
    """The Python store in place of the C++ one, and every call on the Python path (as
    without _C, where no eager entry exists)."""
    store = pack_cache._PythonPackCache(gwprune.get_pack_cache_limit())
    monkeypatch.setattr(pack_cache, "_cache", store)
    monkeypatch.setattr(ops, "_eager_call", lambda x, weight, bias: False)
    return store


def test_python_store_hits_and_invalidates(python_store):
    x, weight, keep, bias = conv_problem("cpu")
    xl, wl, kl, bl = linear_problem("cpu")
    for call in range(2):
        assert_equal(gwprune.ops.conv2d(x, weight, keep, bias, padding=1),
                     conv_reference(x, weight, keep, bias), f"conv {call}")  # fmt: skip
        assert_equal(gwprune.ops.linear(xl, wl, kl, bl), linear_reference(xl, wl, kl, bl), "")
    assert counts() == (2, 2, 2)
    with torch.no_grad():
        weight.mul_(-1)
        kl[0] = sorted(set(range(20)) - set(kl.tolist()))[0]
    weight_version = wl._version
    wl.data = torch.randn_like(wl)
    assert wl._version == weight_version
    assert_equal(gwprune.ops.conv2d(x, weight, keep, bias, padding=1),
                 conv_reference(x, weight, keep, bias), "edited")  # fmt: skip
    assert_equal(gwprune.ops.linear(xl, wl, kl, bl), linear_reference(xl, wl, kl, bl), "swap")
    assert counts() == (2, 4, 2)
    del weight, keep
    gc.collect()
    assert gwprune.pack_cache_info().entries == 1


def test_python_store_evicts_by_bytes_and_turns_off(python_store):
    problems = [conv_problem("cpu", seed=s) for s in range(3)]
    gwprune.ops.conv2d(*problems[0], padding=1)
    entry_bytes = gwprune.pack_cache_info().nbytes
    gwprune.clear_pack_cache()
    gwprune.set_pack_cache_limit(2 * entry_bytes)
    for k in (0, 1, 0, 2):  # 2 evicts 1, the least recently used
        gwprune.ops.conv2d(*problems[k], padding=1)
    assert pack_cache.lookup(pack_cache.CONV_NCHW, *problems[1][1:3]) is None
    assert pack_cache.lookup(pack_cache.CONV_NCHW, *problems[0][1:3]) is not None
    assert gwprune.pack_cache_info().entries == 2
    gwprune.set_pack_cache_limit(0)
    assert gwprune.pack_cache_info().entries == 0
    assert_equal(gwprune.ops.conv2d(*problems[1], padding=1), conv_reference(*problems[1]), "")
    assert gwprune.pack_cache_info().entries == 0


# ---- CUDA: syncs, streams, several devices ------------------------------------------------


@cuda_only
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_cuda_first_call_syncs_once_later_calls_never(dtype):
    x, weight, keep, bias = conv_problem("cuda", dtype=dtype)
    xl, wl, kl, bl = linear_problem("cuda", dtype=dtype)
    warm = conv_problem("cuda", seed=9, dtype=dtype)
    gwprune.ops.conv2d(*warm, padding=1)  # cuBLAS and allocator start-up
    gwprune.ops.linear(xl, wl, kl.clone(), bl)
    for name, call in {
        "conv": lambda: gwprune.ops.conv2d(x, weight, keep, bias, padding=1),
        "linear": lambda: gwprune.ops.linear(xl, wl, kl, bl),
    }.items():
        assert host_sync_count(call) == 1, f"{name}: first call"
        assert host_sync_count(call) == 0, f"{name}: second call synchronized"


@cuda_only
def test_cuda_other_stream_reads_a_complete_pack_and_keeps_it_alive():
    x, weight, keep, bias = conv_problem("cuda", dtype=torch.float32)
    expected = conv_reference(x.double(), weight.double(), keep, bias.double())
    gwprune.ops.conv2d(x, weight, keep, bias, padding=1)  # packed on the default stream
    entry = pack_cache.lookup(pack_cache.CONV_NCHW, weight, keep)
    packed_shapes = [t.shape for t in pack_cache.packed_tensors(entry.packed)]
    del entry
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        torch.cuda._sleep(100_000_000)  # the hit below reads the pack long after it is dropped
        out = gwprune.ops.conv2d(x, weight, keep, bias, padding=1)
    gwprune.clear_pack_cache()
    # The packed tensors go back to the allocator of the stream they were made on. Had the
    # side stream not been recorded on them, these same-sized blocks would reuse them at
    # once and overwrite them before the side stream's gather reads them.
    scribble = [
        torch.full(shape, -1 if len(shape) == 1 else float("nan"), device="cuda")
        for shape in packed_shapes
        for _ in range(16)
    ]
    torch.cuda.synchronize()
    del scribble
    assert float((out.double() - expected).norm() / expected.norm()) < 1e-5


@cuda_only
def test_cuda_and_cpu_entries_are_separate():
    cpu = conv_problem("cpu")
    gpu = tuple(t.cuda() for t in cpu)
    assert_equal(gwprune.ops.conv2d(*cpu, padding=1), conv_reference(*cpu), "cpu")
    out = gwprune.ops.conv2d(*gpu, padding=1)
    assert_equal(out.cpu(), conv_reference(*cpu), "cuda")
    assert gwprune.pack_cache_info().entries == 2


@pytest.mark.skipif(not HAS_CUDA or torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_cuda_two_devices():
    problems = [tuple(t.to(f"cuda:{d}") for t in conv_problem("cpu", seed=d)) for d in (0, 1)]
    for _ in range(2):
        for d, problem in enumerate(problems):
            out = gwprune.ops.conv2d(*problem, padding=1)
            assert out.device == torch.device(f"cuda:{d}")
            ref = conv_reference(*(t.cpu() for t in problem))
            assert_equal(out.cpu(), ref, f"cuda:{d}")
    hits, misses, entries = counts()
    assert (hits, misses, entries) == (2, 2, 2)
    # A weight moved to the other device is another tensor: its own entry.
    moved = tuple(t.to("cuda:1") for t in problems[0])
    out = gwprune.ops.conv2d(*moved, padding=1)
    assert_equal(out.cpu(), conv_reference(*(t.cpu() for t in moved)), "moved")
