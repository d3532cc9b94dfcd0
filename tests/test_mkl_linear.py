"""The fp32 CPU linear on pre-packed weight copies (csrc/cpu/mkl_packed_weights.h), made and
multiplied by oneDNN (the default where torch has it) or MKL, every test once per library:
results against float64 F.linear on masked weights through every public surface, which calls
take the path and which fall back to addmm, the copies' bound and invalidation, and thread
counts.

Whether a call took the path is read from ``_C.mkl_linear_weights_info()`` (weights, copies):
a call of the path leaves a copy for its row count. Thread counts: MKL's packed GEMM gave the
same bits with one thread and two for 128 rows at every K' tried (256-3072), but not for fewer
rows with K' >= 1024 nor for one row at K' 384, where the thread count at packing time matters
too; the bound there is float32 rounding, 1e-6 relative (measured up to 4.4e-7). oneDNN's
gave the same bits for 1 and 2 threads on every shape tried (2-core EPYC, 2026-12-03).
"""

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_matches, linear_reference, poisoned_outputs, threads

import gwprune
from gwprune._extension import _C, cpu_kernels_compiled

pytestmark = pytest.mark.skipif(
    not cpu_kernels_compiled() or not _C.mkl_linear_available(),
    reason="needs gwprune._C's CPU kernels and a torch with MKL's packed-GEMM ops",
)

WORKSPACE = 256 << 20
SIZES = [1, 3, 17, 33]


@pytest.fixture(autouse=True, params=["onednn", "mkl"])
def fresh_store(request):
    _C.clear_mkl_linear_weights()
    _C.set_mkl_linear_enabled(True)
    _C.set_packed_gemm_library(request.param)
    if _C.packed_gemm_library() != request.param:
        _C.set_packed_gemm_library("default")
        pytest.skip(f"torch has no {request.param} packed-GEMM ops")
    yield request.param
    _C.set_packed_gemm_library("default")
    _C.set_mkl_linear_enabled(True)
    _C.clear_mkl_linear_weights()


def test_the_default_library_and_a_bad_name():
    _C.set_packed_gemm_library("default")
    expected = "onednn" if torch.backends.mkldnn.is_available() else "mkl"
    assert _C.packed_gemm_library() == expected
    with pytest.raises(ValueError, match="'onednn', 'mkl' or 'default', not 'blas'"):
        _C.set_packed_gemm_library("blas")
    assert _C.packed_gemm_library() == expected


def copies() -> int:
    return _C.mkl_linear_weights_info()[1]


def case(rows, in_f, out_f, with_bias, seed, keep_fraction=0.5, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, in_f, generator=generator, dtype=torch.float64).to(dtype)
    weight = torch.randn(out_f, in_f, generator=generator, dtype=torch.float64).to(dtype)
    bias = torch.randn(out_f, generator=generator).to(dtype) if with_bias else None
    keep = torch.randperm(in_f, generator=generator)[: max(1, round(in_f * keep_fraction))]
    return x, weight, bias, keep


# ---- results -----------------------------------------------------------------------------


@pytest.mark.parametrize("with_bias", [False, True], ids=["no-bias", "bias"])
@pytest.mark.parametrize("rows", SIZES)
def test_packed_op_matches_float64_linear(rows, with_bias):
    seed = 0
    for in_f in SIZES:
        for out_f in SIZES:
            seed += 1
            x, weight, bias, keep = case(rows, in_f, out_f, with_bias, seed)
            packed = gwprune.pack_linear_weight(weight, keep)
            before = copies()
            context = f"rows={rows} in={in_f} out={out_f} bias={with_bias}"
            for call in range(2):  # the call that packs, then one that reuses the copy
                fresh = torch.randn_like(x) if call else x
                out = gwprune.ops.linear_packed(fresh, packed, bias)
                assert_matches(out, linear_reference(fresh, weight, bias, keep), "fp32", context)
            assert copies() == before + 1, f"{context}: the MKL path was not taken"


def groupwise_linear(weight, bias, keep):
    """A GroupwiseLinear with these dense weight and bias and kept features."""
    dense = torch.nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        dense.weight.copy_(weight)
        dense.bias.copy_(bias)
    return gwprune.GroupwiseLinear.from_dense(dense, keep)


def test_module_raw_op_and_activation_take_the_path():
    x, weight, bias, keep = case(17, 33, 17, True, 3)
    module = groupwise_linear(weight, bias, keep)
    x3 = x.reshape(1, 17, 33).expand(2, 17, 33)  # 34 rows, a stride-0 batch
    assert_matches(module(x3), linear_reference(x3, weight, bias, keep), "fp32", "module, 3-D x")
    assert_matches(
        gwprune.ops.linear(x, weight, keep, bias),
        linear_reference(x, weight, bias, keep),
        "fp32",
        "raw",
    )
    relu = gwprune.ops.linear_packed(x, module.packed(), bias, activation="relu")
    assert_matches(relu, linear_reference(x, weight, bias, keep).relu(), "fp32", "relu")
    # The module's weight for 34 and 17 rows, the raw op's pack-cache entry for 17.
    assert _C.mkl_linear_weights_info() == (2, 3)


def test_same_as_the_addmm_path_within_float32_rounding():
    x, weight, bias, keep = case(128, 768, 3072, True, 5)
    packed = gwprune.pack_linear_weight(weight, keep)
    mkl = gwprune.ops.linear_packed(x, packed, bias)
    _C.set_mkl_linear_enabled(False)
    plain = gwprune.ops.linear_packed(x, packed, bias)
    assert copies() == 1
    error = float((mkl.double() - plain.double()).norm() / plain.double().norm())
    assert error <= 1e-6, f"packed copy vs addmm: relative difference {error:.2e}"


# ---- which calls take the path -------------------------------------------------------------


def test_other_dtypes_autograd_and_inference_weights_fall_back():
    x, weight, bias, keep = case(17, 33, 17, True, 7)
    for dtype in (torch.float64, torch.bfloat16, torch.float16):
        packed = gwprune.pack_linear_weight(weight.to(dtype), keep)
        out = gwprune.ops.linear_packed(x.to(dtype), packed, bias.to(dtype))
        precision = {torch.float64: "fp64", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
        assert_matches(out, linear_reference(x, weight, bias, keep), precision, str(dtype))
    assert copies() == 0, "a non-fp32 call made an MKL copy"
    packed = gwprune.pack_linear_weight(weight, keep)
    needs_grad = x.clone().requires_grad_()
    out = gwprune.ops.linear_packed(needs_grad, packed, bias)  # the registered op
    assert_matches(out.detach(), linear_reference(x, weight, bias, keep), "fp32", "requires_grad x")
    assert copies() == 0, "a call autograd records made an MKL copy"
    with torch.inference_mode():
        made_in_inference = gwprune.pack_linear_weight(weight, keep)
        out = gwprune.ops.linear_packed(x, made_in_inference, bias)
        assert copies() == 0, "an inference tensor (no version counter) was packed"
        out_normal = gwprune.ops.linear_packed(x, packed, bias)  # normal weight: packed
    assert copies() == 1
    for result in (out, out_normal):
        assert_matches(result, linear_reference(x, weight, bias, keep), "fp32", "inference_mode")


def test_inputs_of_several_chunks_and_the_switch_fall_back():
    x, weight, bias, keep = case(70, 33, 17, True, 9)
    packed = gwprune.pack_linear_weight(weight, keep)
    # 64 bytes of workspace: chunks of 32 rows, each its own GEMM, on addmm.
    out = _C.linear_packed(x, packed.weight, packed.feature_idx, bias, 64)
    assert_matches(out, linear_reference(x, weight, bias, keep), "fp32", "chunked")
    assert copies() == 0
    _C.set_mkl_linear_enabled(False)
    out = gwprune.ops.linear_packed(x, packed, bias)
    assert_matches(out, linear_reference(x, weight, bias, keep), "fp32", "switched off")
    assert copies() == 0
    assert not _C.mkl_linear_enabled()
    assert "switched off" in gwprune.info()["CPU fp32 linear on pre-packed weights"]


def test_compile_and_fake_tensors():
    from torch._subclasses.fake_tensor import FakeTensorMode

    x, weight, bias, keep = case(17, 33, 17, True, 11)
    module = gwprune.GroupwiseLinear.from_dense(torch.nn.Linear(33, 17), keep)
    with torch.no_grad():
        module.weight.copy_(torch.randn_like(module.weight))
    expected = module.to_dense().double()(x.double()).detach()
    torch._dynamo.reset()
    compiled = torch.compile(module, backend="aot_eager", fullgraph=True)
    assert_matches(compiled(x), expected, "fp32", "aot_eager")
    assert copies() == 1, "the registered op's implementation did not take the path"
    with FakeTensorMode() as mode:
        fake_x = mode.from_tensor(x)
        fake_w = mode.from_tensor(module.weight)
        fake_idx = mode.from_tensor(module.feature_idx)
        out = torch.ops.gwprune.linear_packed(fake_x, fake_w, fake_idx, None, WORKSPACE)
    assert out.shape == (17, 17)
    assert copies() == 1


# ---- the copies: per row count, bounded, invalidated -------------------------------------------


def test_one_copy_per_row_count_four_most_recent():
    x, weight, bias, keep = case(40, 33, 17, True, 13)
    packed = gwprune.pack_linear_weight(weight, keep)
    for rows in (1, 3, 17, 33, 40, 3):
        out = gwprune.ops.linear_packed(x[:rows], packed, bias)
        assert_matches(out, linear_reference(x[:rows], weight, bias, keep), "fp32", f"rows={rows}")
    assert _C.mkl_linear_weights_info() == (1, 4)
    gwprune.clear_pack_cache()
    assert _C.mkl_linear_weights_info() == (0, 0)


def test_in_place_edits_and_swaps_repack():
    x, weight, bias, keep = case(17, 33, 17, True, 15)
    module = groupwise_linear(weight, bias, keep)

    def check(context):
        expected = module.to_dense().double()(x.double()).detach()
        for _ in range(2):  # the second call reads the copy the first one made
            assert_matches(module(x), expected, "fp32", context)

    check("as built")
    with torch.no_grad():
        module.weight.mul_(-2)  # bumps the version counter
    check("after mul_")
    with torch.no_grad():
        module.weight[3, 1] = 7.0
    check("after an element write")
    state = module.state_dict()
    state["weight"] = torch.randn_like(module.weight)
    module.load_state_dict(state)  # copies into the buffers in place
    check("after load_state_dict")
    module.weight.data = torch.randn_like(module.weight)  # new memory, same version
    check("after a .data swap")
    assert _C.mkl_linear_weights_info() == (1, 1), "stale copies were kept"


def test_copies_of_dead_weights_are_freed():
    x, weight, bias, keep = case(17, 33, 17, True, 17)
    packed = gwprune.pack_linear_weight(weight, keep)
    gwprune.ops.linear_packed(x, packed, bias)
    assert _C.mkl_linear_weights_info() == (1, 1)
    del packed
    assert _C.mkl_linear_weights_info() == (0, 0)


def test_version_bypassing_writes_need_clear_pack_cache():
    # Documented: writes through .data (or numpy, DLPack) do not bump the version counter.
    x, weight, bias, keep = case(17, 33, 17, False, 19)
    packed = gwprune.pack_linear_weight(weight, keep)
    before = gwprune.ops.linear_packed(x, packed)
    packed.weight.data.mul_(2)
    assert torch.equal(gwprune.ops.linear_packed(x, packed), before)  # the stale copy
    gwprune.clear_pack_cache()
    assert_matches(
        gwprune.ops.linear_packed(x, packed),
        2 * linear_reference(x, weight, None, keep),
        "fp32",
        "after clear_pack_cache",
    )


# ---- thread counts -------------------------------------------------------------------------


def outputs_by_threads(x, packed, bias):
    """{(threads at packing, threads at the call): output}, each packing fresh."""
    outputs = {}
    for pack_threads in (1, 2):
        _C.clear_mkl_linear_weights()
        with threads(pack_threads):
            outputs[pack_threads, pack_threads] = gwprune.ops.linear_packed(x, packed, bias)
        other = 3 - pack_threads
        with threads(other):
            outputs[pack_threads, other] = gwprune.ops.linear_packed(x, packed, bias)
        assert copies() == 1
    return outputs


@pytest.mark.parametrize("in_f,out_f", [(768, 3072), (3072, 768), (2048, 300)], ids=str)
def test_128_rows_identical_for_one_and_two_threads(in_f, out_f):
    # K' 384, 1536, 1024 (the BERT FFN pair at keep .5 and one more).
    x, weight, bias, keep = case(128, in_f, out_f, True, 21)
    outputs = outputs_by_threads(x, gwprune.pack_linear_weight(weight, keep), bias)
    first = outputs[1, 1]
    for key, out in outputs.items():
        assert torch.equal(out, first), f"threads {key}: max diff {(out - first).abs().max()}"


@pytest.mark.parametrize("rows,in_f,out_f", [(1, 768, 300), (7, 2048, 768), (64, 2048, 17)])
def test_few_rows_within_float32_rounding_across_threads(rows, in_f, out_f):
    x, weight, bias, keep = case(rows, in_f, out_f, True, 23)
    outputs = outputs_by_threads(x, gwprune.pack_linear_weight(weight, keep), bias)
    first = outputs[1, 1].double()
    for key, out in outputs.items():
        error = float((out.double() - first).norm() / first.norm())
        assert error <= 1e-6, f"threads {key}: relative difference {error:.2e}"
    assert_matches(outputs[2, 2], linear_reference(x, weight, bias, keep), "fp32", "2 threads")


# batch, in_channels, out_channels, (H, W), kernel, stride, padding
CL_CONV_SHAPES = [
    (2, 17, 33, (9, 7), 3, 1, 1),
    (1, 3, 1, (5, 5), 3, 2, 0),
    (3, 64, 48, (14, 14), 1, 1, 0),
]


@pytest.mark.parametrize("shape", CL_CONV_SHAPES, ids=str)
@pytest.mark.parametrize("with_bias", [False, True], ids=["no-bias", "bias"])
def test_channels_last_conv_takes_the_packed_copy_and_matches(shape, with_bias):
    """An fp32 channels_last conv of one chunk runs its GEMM on the MKL-packed copy
    (conv2d_cpu.cpp): float64 reference, channels_last output, one copy made; switched
    off, the addmm path gives the same result within rounding."""
    generator = torch.Generator().manual_seed(hash((shape, with_bias)) % 2**31)
    n, c, co, (h, w), k, s, p = shape
    x = torch.randn(n, c, h, w, generator=generator).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(co, c, k, k, generator=generator)
    bias = torch.randn(co, generator=generator) if with_bias else None
    keep = torch.randperm(c * k * k, generator=generator)[: max(1, c * k * k // 2)]
    ref = F.conv2d(
        x.double(),
        gwprune.mask_weight(weight.double(), keep),
        None if bias is None else bias.double(),
        s,
        p,
    )
    packed = gwprune.pack_conv2d_weight(weight, keep, torch.channels_last)
    with torch.no_grad():
        out = gwprune.ops.conv2d_packed(x, packed, bias, s, p)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert_matches(out, ref, "fp32", f"mkl channels_last conv {shape}")
    assert copies() == 1, "the channels_last conv did not take the packed copy"
    _C.set_mkl_linear_enabled(False)
    with torch.no_grad():
        plain = gwprune.ops.conv2d_packed(x, packed, bias, s, p)
    assert_matches(plain, ref, "fp32", f"addmm channels_last conv {shape}")
    torch.testing.assert_close(out, plain, rtol=1e-5, atol=1e-5)


NCHW_CONV_SHAPES = [
    # batch, C, Cout, (H, W), kernel, stride, padding, dilation
    (1, 16, 24, (14, 14), 3, 1, 1, 1),
    (2, 16, 24, (14, 14), 3, 1, 1, 1),  # more than one image: the batched NCHW path
    (1, 3, 17, (9, 13), 3, 2, 0, 1),
    (3, 17, 33, (12, 10), (3, 1), 1, 2, 2),
    (2, 1, 8, (7, 7), 3, 1, 1, 1),  # C == 1: channels_last is contiguous, the NCHW path
    (2, 4, 8, (1, 1), 3, 1, 1, 1),  # 1x1 images likewise
]


@pytest.mark.parametrize("with_bias", [False, True], ids=["no-bias", "bias"])
@pytest.mark.parametrize("shape", NCHW_CONV_SHAPES, ids=str)
def test_nchw_conv_runs_as_channels_last_and_matches(shape, with_bias):
    """An fp32 NCHW conv of one image, more than one tap and >= 5/8 of its groups kept runs
    as a channels_last one (conv2d_cpu.cpp: the pack's weight reordered once, kept beside
    the packed copies), other batches the NCHW path: float64 reference,
    poisoned outputs, NCHW output, the same bits for 1 and 2 threads and, switched off,
    the NCHW path's result within rounding. An edit of the weight makes fresh copies."""
    generator = torch.Generator().manual_seed(hash((shape, with_bias)) % 2**31)
    n, c, co, (h, w), k, s, p, d = shape
    kh, kw = (k, k) if isinstance(k, int) else k
    x = torch.randn(n, c, h, w, generator=generator)
    weight = torch.randn(co, c, kh, kw, generator=generator)
    bias = torch.randn(co, generator=generator) if with_bias else None
    keep = torch.randperm(c * kh * kw, generator=generator)[: max(1, c * kh * kw * 3 // 4)]

    def reference(weight):
        masked = gwprune.mask_weight(weight.double(), keep)
        return F.conv2d(x.double(), masked, None if bias is None else bias.double(), s, p, d)

    packed = gwprune.pack_conv2d_weight(weight, keep)
    outputs = {}
    for count in (1, 2):
        with threads(count), poisoned_outputs("cpu"):
            outputs[count] = gwprune.ops.conv2d_packed(x, packed, bias, s, p, d)
    out = outputs[2]
    assert out.is_contiguous(), "an NCHW input gives an NCHW output"
    assert_matches(out, reference(weight), "fp32", f"NCHW conv {shape}")
    assert torch.equal(outputs[1], out), "1 and 2 threads differ"
    reordered = n == 1 and c > 1 and h * w > 1 and 8 * keep.numel() >= 5 * c * kh * kw
    assert (copies() > 0) == reordered, f"copies held: {_C.mkl_linear_weights_info()}"
    _C.set_mkl_linear_enabled(False)
    plain = gwprune.ops.conv2d_packed(x, packed, bias, s, p, d)
    _C.set_mkl_linear_enabled(True)
    torch.testing.assert_close(out, plain, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        packed.weight.mul_(-1.0)
    negated = gwprune.ops.conv2d_packed(x, packed, bias, s, p, d)
    with torch.no_grad():
        packed.weight.mul_(-1.0)
    flipped = weight.neg()
    assert_matches(negated, reference(flipped), "fp32", f"NCHW conv {shape}, weight edited")


def test_nchw_conv_follows_an_edit_of_the_index():
    """The permuted weight and index of the NCHW-as-channels_last path are kept per
    group_idx (its address and version): an in-place edit of the index makes new ones, so
    the conv follows the edited groups rather than reusing stale copies."""
    generator = torch.Generator().manual_seed(23)
    n, c, co, h, k = 1, 12, 20, 9, 3
    x = torch.randn(n, c, h, h, generator=generator)
    weight = torch.randn(co, c, k, k, generator=generator)
    groups = c * k * k
    keep = torch.randperm(groups, generator=generator)[: groups * 3 // 4]
    packed = gwprune.pack_conv2d_weight(weight, keep)

    def reference():
        dense = torch.zeros(co, groups, dtype=torch.float64)
        for column, group in enumerate(packed.group_idx.tolist()):
            if group >= 0:
                dense[:, group] = packed.weight[:, column].double()
        return F.conv2d(x.double(), dense.view(co, c, k, k), None, 1, 1)

    for _ in range(2):  # the second call reads the copies the first one made
        assert_matches(
            gwprune.ops.conv2d_packed(x, packed, None, 1, 1), reference(), "fp32", "as packed"
        )
    kept = packed.group_idx >= 0
    others = torch.randperm(groups, generator=generator)[: int(kept.sum())].sort().values
    packed.group_idx[kept] = others.to(packed.group_idx.dtype)  # in place: bumps the version
    for _ in range(2):
        assert_matches(
            gwprune.ops.conv2d_packed(x, packed, None, 1, 1), reference(), "fp32", "index edited"
        )
