"""gwprune._C's CPU kernels (csrc/cpu/): the fused im2col + gather and feature gather with
their ATen GEMMs, against float64 F.conv2d / F.linear on masked weights.

These call the ops the public API routes CPU tensors to, and check that the routing really
reaches the kernels. Outputs are poisoned with NaN first (an element the kernels miss stays
NaN and fails). The thread-count tests ask for bitwise-equal outputs: the chunk plan
(csrc/cpu/chunks_cpu.h) does not depend on the thread count, the gathers are copies, and MKL
gives a GEMM of a given shape the same bits with one thread or two. The exceptions, linear
GEMMs of fewer than 16 rows and of up to 128 rows at K' >= 1024, are bounded by float32
rounding (see the linear tests; the pre-packed fp32 linear: tests/test_mkl_linear.py).
"""

import contextlib

import pytest
import torch
import torch.nn.functional as F
from conftest import DTYPES, assert_matches, linear_reference, setting, threads

import gwprune
from gwprune import ops, reference
from gwprune._extension import _C, cpu_kernels_compiled

pytestmark = pytest.mark.skipif(
    not cpu_kernels_compiled(), reason="gwprune._C with CPU kernels is not built"
)

PRECISIONS = ["fp64", "fp32", "bf16"]
WORKSPACE = 256 << 20

# batch, in_channels, out_channels, (H, W), kernel, stride, padding, dilation
CONV_SHAPES = [
    (1, 1, 4, (7, 5), 3, 1, 1, 1),
    (2, 3, 8, (9, 14), 3, 2, 0, 1),
    (1, 17, 5, (13, 8), (3, 5), 1, 2, 2),
    (3, 33, 12, (6, 11), 3, 2, 2, 1),
    (1, 33, 16, (5, 5), 5, 1, 2, 1),
    (2, 17, 9, (12, 7), (1, 3), (1, 2), (0, 1), (1, 2)),
    (1, 3, 7, (1, 1), 1, 1, 0, 1),
    (2, 64, 40, (15, 15), 3, 1, 1, 1),
]
LAYOUTS = ["nchw", "channels_last"]
PACK_FORMATS = {"pack-nchw": torch.contiguous_format, "pack-cl": torch.channels_last}


def shape_id(shape):
    n, c, co, hw, k, s, p, d = shape
    return f"n{n}-c{c}-o{co}-{hw[0]}x{hw[1]}-k{k}-s{s}-p{p}-d{d}".replace(" ", "")


def pair(value):
    return (value, value) if isinstance(value, int) else tuple(value)


@contextlib.contextmanager
def poisoned():
    _C.set_poison_outputs(True)
    try:
        yield
    finally:
        _C.set_poison_outputs(False)


def conv_case(shape, keep_fraction, dtype, layout, with_bias, seed):
    generator = torch.Generator().manual_seed(seed)
    n, c, co, (h, w), k, *_ = shape
    kh, kw = pair(k)
    x = torch.randn(n, c, h, w, generator=generator, dtype=torch.float64).to(dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(co, c, kh, kw, generator=generator, dtype=torch.float64).to(dtype)
    bias = (
        torch.randn(co, generator=generator, dtype=torch.float64).to(dtype) if with_bias else None
    )
    groups = c * kh * kw
    keep = torch.randperm(groups, generator=generator)[: max(1, round(groups * keep_fraction))]
    return x, weight, bias, keep


def conv_reference(x, weight, bias, keep, shape):
    _, _, _, _, _, s, p, d = shape
    return F.conv2d(
        x.double(),
        gwprune.mask_weight(weight.double(), keep),
        None if bias is None else bias.double(),
        s,
        p,
        d,
    )


def run_packed_conv(x, packed, bias, shape, workspace=WORKSPACE):
    _, _, _, _, _, s, p, d = shape
    return _C.conv2d_packed(
        x,
        packed.weight,
        packed.group_idx,
        bias,
        list(packed.kernel_size),
        list(pair(s)),
        list(pair(p)),
        list(pair(d)),
        workspace,
    )


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("shape", CONV_SHAPES, ids=shape_id)
def test_cpu_conv_matches_float64_conv2d(shape, precision):
    dtype = DTYPES[precision]
    seed = 0
    for layout in LAYOUTS:
        for pack_name, pack_format in PACK_FORMATS.items():
            for keep_fraction in (0.3, 1.0):
                seed += 1
                with_bias = seed % 2 == 0
                x, weight, bias, keep = conv_case(
                    shape, keep_fraction, dtype, layout, with_bias, seed
                )
                packed = gwprune.pack_conv2d_weight(weight, keep, pack_format)
                with poisoned():
                    out = run_packed_conv(x, packed, bias, shape)
                context = (
                    f"{shape_id(shape)} {layout} {pack_name} keep={keep_fraction} bias={with_bias}"
                )
                expected_format = (
                    torch.channels_last if layout == "channels_last" else torch.contiguous_format
                )
                if x.shape[2] * x.shape[3] > 1 and x.shape[1] > 1:
                    assert out.is_contiguous(memory_format=expected_format), context
                assert_matches(
                    out, conv_reference(x, weight, bias, keep, shape), precision, context
                )


@pytest.mark.parametrize("layout", LAYOUTS)
def test_cpu_conv_tiny_workspace_cuts_rows_mid_image(layout):
    # 3 KiB of workspace: chunks of kMinChunkRows pixels that start and end inside output rows.
    shape = (2, 17, 6, (11, 13), 3, 1, 1, 1)
    x, weight, bias, keep = conv_case(shape, 0.5, torch.float64, layout, True, 7)
    packed = gwprune.pack_conv2d_weight(weight, keep)
    with poisoned():
        out = run_packed_conv(x, packed, bias, shape, workspace=3 << 10)
    assert_matches(out, conv_reference(x, weight, bias, keep, shape), "fp64", f"{layout} tiny ws")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_cpu_conv_padding_entries_contribute_nothing(layout):
    # -1 entries anywhere in group_idx gather zeros, whatever the weight holds in their column.
    shape = (2, 5, 4, (6, 7), 3, 1, 1, 1)
    x, weight, bias, _ = conv_case(shape, 1.0, torch.float64, layout, True, 11)
    group_idx = torch.tensor([3, -1, 17, 18, -1, -1, 40, 2, -1], dtype=torch.int32)
    columns = weight.reshape(4, -1).index_select(1, group_idx.long().clamp(min=0)).contiguous()
    columns[:, group_idx < 0] = 1e6  # must be multiplied by exact zeros
    packed = gwprune.PackedConv2dWeight(columns, group_idx, 5, (3, 3))
    with poisoned():
        out = run_packed_conv(x, packed, bias, shape)
    keep = group_idx[group_idx >= 0].long()
    assert_matches(out, conv_reference(x, weight, bias, keep, shape), "fp64", f"{layout} pad -1")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(
    "shape",
    [
        (1, 64, 32, (28, 28), 3, 1, 1, 1),
        (4, 32, 16, (9, 9), 3, 2, 1, 1),
        (3, 40, 24, (7, 7), 1, 1, 0, 1),
        (1, 8, 8, (5, 5), 3, 1, 1, 1),
        (1, 320, 64, (7, 7), 3, 1, 1, 1),  # few rows at K' >= 1024 (the packed GEMM's library)
        (3, 256, 64, (9, 9), 3, 1, 1, 1),  # >= 128 rows at K' >= 1024
    ],
    ids=shape_id,
)
def test_cpu_conv_identical_for_one_and_two_threads(layout, shape):
    # One chunk (K' large), several chunks of one image, and several images (NCHW: one
    # batched GEMM over them).
    x, weight, bias, keep = conv_case(shape, 0.5, torch.float32, layout, True, 3)
    packed = gwprune.pack_conv2d_weight(weight, keep, torch.channels_last)
    with threads(1):
        one = run_packed_conv(x, packed, bias, shape)
    with threads(2):
        two = run_packed_conv(x, packed, bias, shape)
    assert torch.equal(one, two), f"{shape_id(shape)} {layout}: max diff {(one - two).abs().max()}"


def test_cpu_kernels_reject_index_values_out_of_range():
    # Hand-built packed weights are not read in Python; the CPU kernels check the values.
    x = torch.randn(1, 2, 5, 5)
    for bad in (18, -2):
        group_idx = torch.tensor([0, bad, 3, -1], dtype=torch.int32)
        packed = gwprune.PackedConv2dWeight(torch.randn(3, 4), group_idx, 2, (3, 3))
        with pytest.raises(ValueError, match=f"group_idx entry 1 is {bad}, outside \\[0, 18\\)"):
            ops.conv2d_packed(x, packed, padding=1)
    packed = gwprune.PackedLinearWeight(
        torch.randn(3, 2), torch.tensor([4, 5], dtype=torch.int32), 5
    )
    with pytest.raises(ValueError, match="feature_idx entry 1 is 5, outside \\[0, 5\\)"):
        ops.linear_packed(torch.randn(2, 5), packed)


def test_cpu_conv_empty_batch_and_empty_keep():
    shape = (2, 4, 3, (6, 5), 3, 1, 1, 1)
    x, weight, bias, keep = conv_case(shape, 0.5, torch.float32, "nchw", True, 5)
    packed = gwprune.pack_conv2d_weight(weight, keep)
    assert run_packed_conv(x[:0], packed, bias, shape).shape == (0, 3, 6, 5)
    empty = gwprune.PackedConv2dWeight(
        torch.zeros(3, 0), torch.zeros(0, dtype=torch.int32), 4, (3, 3)
    )
    with poisoned():
        out = run_packed_conv(x, empty, bias, shape)
    assert torch.equal(out, bias.view(1, 3, 1, 1).expand(2, 3, 6, 5))


# ---- linear ------------------------------------------------------------------------------

LINEAR_SHAPES = [((5, 7), 7, 3), ((2, 9, 33), 33, 17), ((1, 1), 1, 4), ((300, 200), 200, 48)]


def linear_case(x_shape, in_f, out_f, keep_fraction, dtype, with_bias, seed, strided=False):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(*x_shape, generator=generator, dtype=torch.float64).to(dtype)
    if strided:  # rows with a stride larger than in_f
        wide = torch.randn(*x_shape[:-1], in_f + 5, generator=generator).to(dtype)
        wide[..., :in_f] = x
        x = wide[..., :in_f]
    weight = torch.randn(out_f, in_f, generator=generator, dtype=torch.float64).to(dtype)
    bias = (
        torch.randn(out_f, generator=generator, dtype=torch.float64).to(dtype)
        if with_bias
        else None
    )
    keep = torch.randperm(in_f, generator=generator)[: max(1, round(in_f * keep_fraction))]
    return x, weight, bias, keep


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("x_shape,in_f,out_f", LINEAR_SHAPES, ids=str)
def test_cpu_linear_matches_float64_linear(x_shape, in_f, out_f, precision):
    dtype = DTYPES[precision]
    for seed, (keep_fraction, with_bias, strided) in enumerate(
        [(0.3, False, False), (0.5, True, True), (1.0, True, False)]
    ):
        x, weight, bias, keep = linear_case(
            x_shape, in_f, out_f, keep_fraction, dtype, with_bias, seed, strided
        )
        packed = gwprune.pack_linear_weight(weight, keep)
        with poisoned():
            out = _C.linear_packed(x, packed.weight, packed.feature_idx, bias, WORKSPACE)
        context = f"{x_shape} keep={keep_fraction} bias={with_bias} strided={strided}"
        assert_matches(out, linear_reference(x, weight, bias, keep), precision, context)


def test_cpu_linear_padding_entries_and_tiny_workspace():
    x, weight, bias, _ = linear_case((70, 11), 11, 6, 1.0, torch.float64, True, 9)
    feature_idx = torch.tensor([4, -1, 0, 10, -1, 3, -1, -1], dtype=torch.int32)
    columns = weight.index_select(1, feature_idx.long().clamp(min=0)).contiguous()
    columns[:, feature_idx < 0] = 1e6
    with poisoned():
        out = _C.linear_packed(x, columns, feature_idx, bias, 64)
    keep = feature_idx[feature_idx >= 0].long()
    assert_matches(out, linear_reference(x, weight, bias, keep), "fp64", "pad -1, 64 B workspace")


def mkl_linear(enabled):
    """The fp32 linear's GEMM on pre-packed weight copies (enabled) or on addmm."""
    return setting(_C.mkl_linear_enabled, _C.set_mkl_linear_enabled, enabled)


@pytest.mark.parametrize("mkl", [True, False], ids=["mkl-packed", "addmm"])
@pytest.mark.parametrize("rows", [7, 16, 128, 1000])
def test_cpu_linear_one_and_two_threads(rows, mkl):
    # Identical from 16 rows up. Below, MKL's small-matrix GEMMs round differently with one
    # thread and two (plain torch.mm does too: one row, 300 outputs); the documented bound
    # is float32 rounding, 1e-6 relative.
    x, weight, bias, keep = linear_case((rows, 768), 768, 300, 0.5, torch.float32, True, 4)
    packed = gwprune.pack_linear_weight(weight, keep)
    with mkl_linear(mkl), threads(1):
        one = _C.linear_packed(x, packed.weight, packed.feature_idx, bias, WORKSPACE)
    with mkl_linear(mkl), threads(2):
        two = _C.linear_packed(x, packed.weight, packed.feature_idx, bias, WORKSPACE)
    if rows >= 16:
        assert torch.equal(one, two), f"rows={rows}: max diff {(one - two).abs().max()}"
    else:
        error = float((one.double() - two.double()).norm() / one.double().norm())
        assert error <= 1e-6, f"rows={rows}: relative difference {error:.2e}"


def test_cpu_linear_large_k_few_rows_within_rounding_across_threads():
    # addmm at up to 128 rows and K' >= 1024 sums differently with one thread and two
    # (3.2e-7 relative here): the documented bound is float32 rounding, as for few rows.
    x, weight, bias, keep = linear_case((128, 2048), 2048, 300, 0.5, torch.float32, True, 6)
    packed = gwprune.pack_linear_weight(weight, keep)
    with mkl_linear(False), threads(1):
        one = _C.linear_packed(x, packed.weight, packed.feature_idx, bias, WORKSPACE)
    with mkl_linear(False), threads(2):
        two = _C.linear_packed(x, packed.weight, packed.feature_idx, bias, WORKSPACE)
    error = float((one.double() - two.double()).norm() / one.double().norm())
    assert error <= 1e-6, f"relative difference {error:.2e}"
    assert_matches(two, linear_reference(x, weight, bias, keep), "fp32", "K' 1024, 2 threads")


# ---- routing ------------------------------------------------------------------------------


def test_public_ops_route_cpu_tensors_to_the_kernels(monkeypatch):
    def no_reference(*args, **kwargs):
        raise AssertionError("CPU tensors took the reference path although _C has CPU kernels")

    monkeypatch.setattr(reference, "conv2d_packed", no_reference)
    monkeypatch.setattr(reference, "linear_packed", no_reference)
    x, weight = torch.randn(2, 3, 8, 8), torch.randn(4, 3, 3, 3)
    keep = torch.tensor([0, 5, 9, 20])
    out = ops.conv2d(x, weight, keep, padding=1)
    torch.testing.assert_close(out, F.conv2d(x, gwprune.mask_weight(weight, keep), padding=1))
    xl, wl = torch.randn(5, 9), torch.randn(4, 9)
    out_l = ops.linear(xl, wl, torch.tensor([1, 8]))
    torch.testing.assert_close(out_l, F.linear(xl, gwprune.mask_weight(wl, torch.tensor([1, 8]))))


def test_kernels_agree_with_the_reference_path():
    shape = (2, 17, 9, (10, 12), 3, 2, 1, 2)
    for layout in LAYOUTS:
        x, weight, bias, keep = conv_case(shape, 0.4, torch.float64, layout, True, 21)
        packed = gwprune.pack_conv2d_weight(weight, keep)
        kernel = run_packed_conv(x, packed, bias, shape)
        oracle = reference.conv2d_packed(
            x, packed.weight, packed.group_idx, bias, packed.kernel_size, (2, 2), (1, 1), (2, 2)
        )
        assert kernel.stride() == oracle.stride(), layout
        torch.testing.assert_close(kernel, oracle, rtol=1e-12, atol=1e-12)
