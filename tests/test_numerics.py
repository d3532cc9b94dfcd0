"""Non-finite inputs and extreme magnitudes: gwprune against dense PyTorch.

Semantics (docs/reliability.md): gwprune never reads what only pruned groups would read.
So a NaN/inf at an input position read by a kept group propagates exactly as in a dense
F.conv2d / F.linear on the masked weight, while a NaN/inf seen only through pruned groups
(a pruned input feature of a linear layer, an input channel whose taps are all pruned, the
taps of a partly pruned channel) does not reach gwprune's output, where the masked dense op
gives 0 * inf = NaN. Values of pruned weight groups are ignored the same way.

The dense comparison runs at the same precision on the same device. On CUDA it runs with
cuDNN disabled (PyTorch's im2col + GEMM convolution): cuDNN may pick Winograd or FFT
algorithms, which mix neighbouring inputs and spread one inf over a whole tile of outputs,
so their non-finite pattern is an artifact of the algorithm. The float64 CPU reference is
checked too.
"""

import warnings

import pytest
import torch
import torch.nn.functional as F
from conftest import DTYPES, TOLERANCES, cuda_only, poisoned_outputs, precision_flags

import gwprune
from gwprune.nn import GroupwiseConv2d, GroupwiseLinear

# CPU runs gwprune's CPU kernels, which compute the half types too.
NUMERIC_PRECISIONS = [
    pytest.param("cpu", p, id=f"cpu-{p}") for p in ("fp64", "fp32", "fp16", "bf16")
] + [
    pytest.param("cuda", p, id=f"cuda-{p}", marks=cuda_only)
    for p in ("fp64", "fp32", "tf32", "fp16", "bf16")
]
HALF_PRECISIONS = [
    pytest.param(device, p, id=f"{device}-{p}", marks=[cuda_only] if device == "cuda" else [])
    for device in ("cpu", "cuda")
    for p in ("fp16", "bf16")
]
NONFINITE = {"nan": [float("nan")], "inf": [float("inf")], "-inf": [float("-inf")]}
NONFINITE["mixed"] = [float("nan"), float("inf"), float("-inf")]

# Conv geometries: (in_channels, out_channels, (H, W), kernel, stride, padding, dilation)
GEOMETRIES = [
    (5, 7, (9, 8), 3, 1, 1, 1),
    (3, 4, (11, 10), (3, 2), (2, 1), (0, 1), (1, 2)),
    (4, 6, (7, 7), 1, 1, 0, 1),
]


def dense_conv(x, weight, keep_idx, bias, **kwargs):
    """F.conv2d on the masked weight, same device and precision, by PyTorch's im2col + GEMM
    convolution: cuDNN and oneDNN off (see the module doc)."""
    masked = gwprune.mask_weight(weight, keep_idx)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "TF32 acceleration on top of oneDNN")
        with torch.backends.cudnn.flags(enabled=False), torch.backends.mkldnn.flags(False):
            return F.conv2d(x, masked, bias, **kwargs)


def dense_linear(x, weight, keep_idx, bias):
    return F.linear(x, gwprune.mask_weight(weight, keep_idx), bias)


def pattern(t: torch.Tensor) -> torch.Tensor:
    """0 finite, 1 NaN, 2 +inf, 3 -inf, per element (on the CPU)."""
    t = t.detach().double().cpu()
    code = torch.zeros(t.shape, dtype=torch.int8)
    code[torch.isnan(t)] = 1
    code[torch.isposinf(t)] = 2
    code[torch.isneginf(t)] = 3
    return code


def assert_same_pattern(out, expected, context):
    got, want = pattern(out), pattern(expected)
    if not torch.equal(got, want):
        where = (got != want).nonzero()[0].tolist()
        names = ["finite", "NaN", "+inf", "-inf"]
        raise AssertionError(
            f"{context}: non-finite pattern differs at {where}: gwprune "
            f"{names[got[tuple(where)]]}, expected {names[want[tuple(where)]]} "
            f"({int((got != want).sum())} elements differ)"
        )


def assert_finite_part_matches(out, ref64, precision, context):
    finite = pattern(ref64) == 0
    got, want = out.double().cpu()[finite], ref64.double().cpu()[finite]
    error = (got - want).norm() / want.norm().clamp_min(1e-300)
    assert error <= TOLERANCES[precision], f"{context}: finite part rel. error {error:.2e}"


def plant(x, positions, values, generator):
    """Writes the non-finite values (cycled) at positions (a list of index tuples)."""
    x = x.clone()
    for n, index in enumerate(positions):
        x[index] = values[n % len(values)]
    return x


def conv_problem(geometry, precision, seed, keep_channel_zero=True):
    c, co, hw, k, s, p, d = geometry
    kh, kw = (k, k) if isinstance(k, int) else k
    generator = torch.Generator().manual_seed(seed)
    dtype = DTYPES[precision]
    x = torch.randn(2, c, *hw, generator=generator, dtype=torch.float64).to(dtype)
    weight = torch.randn(co, c, kh, kw, generator=generator, dtype=torch.float64).to(dtype)
    bias = torch.randn(co, generator=generator, dtype=torch.float64).to(dtype)
    taps = kh * kw
    rest = torch.randperm(c * taps - taps, generator=generator)[: (c * taps - taps) // 2] + taps
    keep = torch.cat([torch.arange(taps), rest]) if keep_channel_zero else rest
    return x, weight, bias, keep, {"stride": s, "padding": p, "dilation": d}, generator


def to(device, *tensors):
    return [t.to(device) for t in tensors]


@pytest.mark.parametrize("device,precision", NUMERIC_PRECISIONS)
@pytest.mark.parametrize("value", list(NONFINITE))
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=["k3", "k3x2-strided-dilated", "k1"])
def test_conv_nonfinite_read_by_kept_groups_propagate_like_dense(
    device, precision, value, layout, geometry
):
    # Every tap of channel 0 is kept and the non-finite values sit in channel 0 only: all
    # reads of them are kept reads, so gwprune and the masked dense conv must agree exactly.
    x, weight, bias, keep, kwargs, generator = conv_problem(geometry, precision, seed=11)
    _, _, height, width = x.shape
    positions = [
        (
            n,
            0,
            int(torch.randint(height, (1,), generator=generator)),
            int(torch.randint(width, (1,), generator=generator)),
        )
        for n in range(2)
        for _ in range(2)
    ] + [(1, 0, 0, 0), (0, 0, height - 1, width - 1)]  # corners: read next to the padding
    x = plant(x, positions, NONFINITE[value], generator)
    ref64 = F.conv2d(
        x.double(), gwprune.mask_weight(weight.double(), keep), bias.double(), **kwargs
    )
    x, weight, bias, keep = to(device, x, weight, bias, keep)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    context = f"{device} {precision} {value} {layout} {geometry}"
    with precision_flags(precision):
        dense = dense_conv(x, weight, keep, bias, **kwargs)
        with poisoned_outputs(device):
            outs = {
                "raw": gwprune.ops.conv2d(x, weight, keep, bias, **kwargs),
                "packed": gwprune.ops.conv2d_packed(
                    x,
                    gwprune.pack_conv2d_weight(weight, keep, torch.channels_last),
                    bias,
                    **kwargs,
                ),
            }
    codes = pattern(ref64)
    assert bool((codes != 0).any()) and bool((codes == 0).any()), "the case must mix both"
    assert_same_pattern(dense, ref64, context + " (dense vs float64: the premise)")
    for name, out in outs.items():
        assert_same_pattern(out, dense, f"{context} {name}")
        assert_finite_part_matches(out, ref64, precision, f"{context} {name}")


def unfold_oracle(x64, weight64, keep, bias64, kwargs):
    """The seed's unfused algorithm in float64: expand x, keep only the kept rows, multiply.
    Reads only what kept groups read, like gwprune, and shares no code with it."""
    kernel = weight64.shape[2:]
    cols = F.unfold(
        x64, kernel, dilation=kwargs["dilation"], padding=kwargs["padding"], stride=kwargs["stride"]
    )
    kept = torch.sort(keep).values
    out = weight64.reshape(weight64.shape[0], -1)[:, kept] @ cols[:, kept]
    out = out + bias64.view(1, -1, 1)
    out_h = (
        x64.shape[2]
        + 2 * _pair(kwargs["padding"])[0]
        - _pair(kwargs["dilation"])[0] * (kernel[0] - 1)
        - 1
    ) // _pair(kwargs["stride"])[0] + 1
    return out.reshape(x64.shape[0], weight64.shape[0], out_h, -1)


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


@pytest.mark.parametrize("device,precision", NUMERIC_PRECISIONS)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("geometry", GEOMETRIES[:2], ids=["k3", "k3x2-strided-dilated"])
def test_conv_nonfinite_reach_only_outputs_of_kept_taps(device, precision, layout, geometry):
    # Half of all taps kept at random; NaN/inf anywhere. gwprune's pattern is exactly the
    # pattern of the unfold oracle (kept reads only); the masked dense conv, which also reads
    # the inputs of pruned taps (0 * inf = NaN), shows strictly more non-finite outputs.
    x, weight, bias, keep, kwargs, generator = conv_problem(
        geometry, precision, seed=5, keep_channel_zero=False
    )
    n, c, height, width = x.shape
    positions = [
        tuple(int(torch.randint(size, (1,), generator=generator)) for size in (n, c, height, width))
        for _ in range(6)
    ]
    x = plant(x, positions, NONFINITE["mixed"], generator)
    oracle = unfold_oracle(x.double(), weight.double(), keep, bias.double(), kwargs)
    masked64 = F.conv2d(
        x.double(), gwprune.mask_weight(weight.double(), keep), bias.double(), **kwargs
    )
    x, weight, bias, keep = to(device, x, weight, bias, keep)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    context = f"{device} {precision} {layout} {geometry}"
    with precision_flags(precision), poisoned_outputs(device):
        out = gwprune.ops.conv2d(x, weight, keep, bias, **kwargs)
        packed = gwprune.ops.conv2d_packed(
            x, gwprune.pack_conv2d_weight(weight, keep), bias, **kwargs
        )
    for name, result in (("raw", out), ("packed", packed)):
        assert_same_pattern(result, oracle, f"{context} {name}")
        assert_finite_part_matches(result, oracle, precision, f"{context} {name}")
    gw, dense = pattern(out) != 0, pattern(masked64) != 0
    assert bool(gw.any()), f"{context}: no non-finite output at all: the case tests nothing"
    assert bool((dense & ~gw).any()) and not bool((gw & ~dense).any()), context


@pytest.mark.parametrize("device,precision", NUMERIC_PRECISIONS)
@pytest.mark.parametrize("value", list(NONFINITE))
def test_linear_nonfinite_in_kept_features_propagate_like_dense(device, precision, value):
    generator = torch.Generator().manual_seed(3)
    dtype = DTYPES[precision]
    x = torch.randn(6, 4, 24, generator=generator, dtype=torch.float64).to(dtype)
    weight = torch.randn(9, 24, generator=generator, dtype=torch.float64).to(dtype)
    bias = torch.randn(9, generator=generator, dtype=torch.float64).to(dtype)
    keep = torch.randperm(24, generator=generator)[:10]
    positions = [
        (0, 0, int(keep[0])),
        (2, 3, int(keep[5])),
        (5, 1, int(keep[9])),
        (5, 1, int(keep[2])),
    ]
    x = plant(x, positions, NONFINITE[value], generator)
    ref64 = F.linear(x.double(), gwprune.mask_weight(weight.double(), keep), bias.double())
    x, weight, bias, keep = to(device, x, weight, bias, keep)
    context = f"{device} {precision} {value}"
    with precision_flags(precision):
        dense = dense_linear(x, weight, keep, bias)
        with poisoned_outputs(device):
            outs = {
                "raw": gwprune.ops.linear(x, weight, keep, bias),
                "packed": gwprune.ops.linear_packed(
                    x, gwprune.pack_linear_weight(weight, keep), bias
                ),
            }
    assert bool((pattern(ref64) != 0).any()) and bool((pattern(ref64) == 0).any())
    assert_same_pattern(dense, ref64, context + " (dense vs float64: the premise)")
    for name, out in outs.items():
        assert_same_pattern(out, dense, f"{context} {name}")
        assert_finite_part_matches(out, ref64, precision, f"{context} {name}")


@pytest.mark.parametrize("device,precision", NUMERIC_PRECISIONS)
@pytest.mark.parametrize("value", list(NONFINITE))
def test_linear_nonfinite_only_in_pruned_features_do_not_propagate(device, precision, value):
    # The documented difference: gwprune never reads a pruned feature, so its output stays
    # finite and equals the layer on the other features; dense F.linear on the masked weight
    # computes 0 * NaN = NaN (0 * inf = NaN) for every output of those rows.
    generator = torch.Generator().manual_seed(4)
    dtype = DTYPES[precision]
    x = torch.randn(5, 3, 20, generator=generator, dtype=torch.float64).to(dtype)
    weight = torch.randn(6, 20, generator=generator, dtype=torch.float64).to(dtype)
    bias = torch.randn(6, generator=generator, dtype=torch.float64).to(dtype)
    order = torch.randperm(20, generator=generator)
    keep, pruned = order[:12], order[12:]
    positions = [(0, 0, int(pruned[0])), (3, 2, int(pruned[4])), (4, 1, int(pruned[7]))]
    x = plant(x, positions, NONFINITE[value], generator)
    clean = x.double().clone()
    clean[..., pruned] = 0  # what gwprune computes: the pruned features never count
    ref64 = F.linear(clean, gwprune.mask_weight(weight.double(), keep), bias.double())
    x, weight, bias, keep = to(device, x, weight, bias, keep)
    with precision_flags(precision), poisoned_outputs(device):
        module = GroupwiseLinear.from_dense(_linear_module(weight, bias), keep)
        outs = {
            "raw": gwprune.ops.linear(x, weight, keep, bias),
            "packed": gwprune.ops.linear_packed(x, gwprune.pack_linear_weight(weight, keep), bias),
            "module": module(x),
        }
        dense = dense_linear(x, weight, keep, bias)
    for name, out in outs.items():
        context = f"{device} {precision} {value} {name}"
        assert bool(torch.isfinite(out).all()), f"{context}: a pruned feature leaked"
        assert_finite_part_matches(out, ref64, precision, context)
    rows = [(0, 0), (3, 2), (4, 1)]
    assert all(bool(torch.isnan(dense[row]).all()) for row in rows), "dense: 0 * nonfinite = NaN"


def _linear_module(weight, bias):
    linear = torch.nn.Linear(
        weight.shape[1], weight.shape[0], device=weight.device, dtype=weight.dtype
    )
    with torch.no_grad():
        linear.weight.copy_(weight)
        linear.bias.copy_(bias)
    return linear


@pytest.mark.parametrize("device,precision", NUMERIC_PRECISIONS)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_conv_nonfinite_only_in_a_pruned_channel_do_not_propagate(device, precision, layout):
    x, weight, bias, _, kwargs, generator = conv_problem(GEOMETRIES[0], precision, seed=8)
    taps = 9
    keep = torch.tensor([g for g in range(5 * taps) if g // taps != 2])  # channel 2 pruned
    x = plant(x, [(0, 2, 4, 4), (1, 2, 0, 7), (1, 2, 8, 0)], NONFINITE["mixed"], generator)
    clean = x.double().clone()
    clean[:, 2] = 0
    ref64 = F.conv2d(clean, gwprune.mask_weight(weight.double(), keep), bias.double(), **kwargs)
    masked64 = F.conv2d(
        x.double(), gwprune.mask_weight(weight.double(), keep), bias.double(), **kwargs
    )
    x, weight, bias, keep = to(device, x, weight, bias, keep)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    with precision_flags(precision), poisoned_outputs(device):
        out = gwprune.ops.conv2d(x, weight, keep, bias, **kwargs)
        packed = gwprune.ops.conv2d_packed(
            x, gwprune.pack_conv2d_weight(weight, keep), bias, **kwargs
        )
    for name, result in (("raw", out), ("packed", packed)):
        context = f"{device} {precision} {layout} {name}"
        assert bool(torch.isfinite(result).all()), f"{context}: a pruned channel leaked"
        assert_finite_part_matches(result, ref64, precision, context)
    assert not bool(torch.isfinite(masked64).all()), "dense: 0 * nonfinite = NaN"


@pytest.mark.parametrize("device,precision", NUMERIC_PRECISIONS)
def test_values_of_pruned_weight_groups_are_ignored(device, precision):
    # Pruned weight columns may hold anything, NaN and inf included: gwprune drops them when
    # packing. (mask_weight would give 0 * inf = NaN: the dense equivalent is the weight with
    # those columns set to zero, as to_dense() builds it.)
    generator = torch.Generator().manual_seed(9)
    dtype = DTYPES[precision]
    x = torch.randn(2, 3, 6, 6, generator=generator, dtype=torch.float64).to(dtype)
    weight = torch.randn(4, 3, 3, 3, generator=generator, dtype=torch.float64).to(dtype)
    keep = torch.tensor([0, 4, 8, 10, 13, 26])
    pruned = torch.ones(27, dtype=torch.bool)
    pruned[keep] = False
    poisoned = weight.reshape(4, 27).clone()
    poisoned[:, pruned] = torch.tensor(
        [float("nan"), float("inf"), float("-inf")], dtype=dtype
    ).repeat(9)[: int(pruned.sum())]
    poisoned = poisoned.reshape(weight.shape)
    zeroed = weight.reshape(4, 27).clone()
    zeroed[:, pruned] = 0
    ref64 = F.conv2d(x.double(), zeroed.reshape(weight.shape).double(), padding=1)
    xl = torch.randn(5, 27, generator=generator, dtype=torch.float64).to(dtype)
    ref_l = F.linear(xl.double(), zeroed.double())
    x, poisoned, keep, xl = to(device, x, poisoned, keep, xl)
    conv = torch.nn.Conv2d(3, 4, 3, padding=1, bias=False, device=device, dtype=dtype)
    with torch.no_grad():
        conv.weight.copy_(poisoned)
    with precision_flags(precision), poisoned_outputs(device):
        outs = {
            "conv raw": gwprune.ops.conv2d(x, poisoned, keep, padding=1),
            "conv packed": gwprune.ops.conv2d_packed(
                x, gwprune.pack_conv2d_weight(poisoned, keep), padding=1
            ),
            "conv module": GroupwiseConv2d.from_dense(conv, keep)(x),
            "linear raw": gwprune.ops.linear(xl, poisoned.reshape(4, 27), keep),
        }
    for name, out in outs.items():
        ref = ref_l if name.startswith("linear") else ref64
        assert bool(torch.isfinite(out).all()), f"{device} {precision} {name}"
        assert_finite_part_matches(out, ref, precision, f"{device} {precision} {name}")


# ---- magnitudes at the edges of fp16 / bf16 -------------------------------------------------

# Per precision: the scale of x and w for images that overflow, images that stay just below,
# and normal ones. All values and weights are positive (weights of output channel 1 negative),
# so no sum cancels and no partial sum exceeds the total: dense and gwprune must overflow on
# exactly the same outputs, whatever their summation order. With 16 terms per output:
#   fp16 (max 65504): overflow 16 * (0.75 * 2e4) * 0.75 = 1.8e5; below 16 * (1.25 * 1500) * 1.25
#   = 3.75e4. bf16 (max 3.4e38, fp32 accumulators overflow too): overflow 16 * 0.56e38 = 9e38;
#   below 16 * 1.56e36 = 2.5e37.
SCALES = {"fp16": (2e4, 1.5e3, 1.0, 1.0), "bf16": (1e19, 1e17, 1.0, 1e19)}


def magnitude_inputs(precision, shape, generator):
    big, below, normal, weight_scale = SCALES[precision]
    dtype = DTYPES[precision]
    x = 0.75 + 0.5 * torch.rand(*shape, generator=generator, dtype=torch.float64)
    scale = torch.tensor([big, below, normal], dtype=torch.float64)
    x = x * scale.view(3, *([1] * (len(shape) - 1)))
    return x.to(dtype), weight_scale


@pytest.mark.parametrize("device,precision", HALF_PRECISIONS)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_conv_overflow_like_dense(device, precision, layout):
    generator = torch.Generator().manual_seed(21)
    x, weight_scale = magnitude_inputs(precision, (3, 4, 6, 6), generator)
    weight = 0.75 + 0.5 * torch.rand(3, 4, 2, 2, generator=generator, dtype=torch.float64)
    weight = weight * weight_scale * torch.tensor([1.0, -1.0, 1.0]).view(3, 1, 1, 1)
    weight = weight.to(DTYPES[precision])
    keep = torch.arange(16)  # every group: 16 terms per output (no padding)
    _check_overflow(device, precision, layout, "conv", x, weight, keep)


@pytest.mark.parametrize("device,precision", HALF_PRECISIONS)
def test_linear_overflow_like_dense(device, precision):
    generator = torch.Generator().manual_seed(22)
    x, weight_scale = magnitude_inputs(precision, (3, 5, 24), generator)
    weight = 0.75 + 0.5 * torch.rand(3, 24, generator=generator, dtype=torch.float64)
    weight = weight * weight_scale * torch.tensor([1.0, -1.0, 1.0]).view(3, 1)
    weight = weight.to(DTYPES[precision])
    keep = torch.randperm(24, generator=generator)[:16]
    _check_overflow(device, precision, "-", "linear", x, weight, keep)


def _check_overflow(device, precision, layout, op, x, weight, keep):
    dtype = DTYPES[precision]
    if op == "conv":
        ref64 = F.conv2d(x.double(), gwprune.mask_weight(weight.double(), keep))
    else:
        ref64 = F.linear(x.double(), gwprune.mask_weight(weight.double(), keep))
    expected = ref64.to(dtype)  # float64 rounded once to the output type: inf past its range
    x, weight, keep = to(device, x, weight, keep)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    with precision_flags(precision):
        if op == "conv":
            dense = dense_conv(x, weight, keep, None)
            with poisoned_outputs(device):
                out = gwprune.ops.conv2d(x, weight, keep)
        else:
            dense = dense_linear(x, weight, keep, None)
            with poisoned_outputs(device):
                out = gwprune.ops.linear(x, weight, keep)
    context = f"{op} {device} {precision} {layout}"
    codes = pattern(expected)
    # Image/row 0 overflows (+inf, and -inf on the negative output channel), 1 and 2 do not.
    assert bool((codes[0] == 2).any()) and bool((codes[0] == 3).any()), "premise: overflow"
    assert bool((codes[1:] == 0).all()), "premise: the other images stay finite"
    assert_same_pattern(dense, expected, context + " (dense vs float64: the premise)")
    assert_same_pattern(out, dense, context)
    for image in (1, 2):
        assert_finite_part_matches(out[image], ref64[image], precision, f"{context} [{image}]")


# Subnormals: integer multiples of the smallest subnormal, times small integer weights. For
# fp16 every product and sum (at most 30 * 4 * 16 = 1920 units of 2^-24 < 2^-13) is exact in
# fp16 itself; for bf16 (units of 2^-133) they are exact in fp32 accumulators and the result
# is rounded once to bf16. A path that flushes subnormals to zero anywhere fails both checks.
SUBNORMAL_UNIT = {"fp16": 2.0**-24, "bf16": 2.0**-133}
SUBNORMAL_MAX_MULTIPLE = {"fp16": 30, "bf16": 100}


@pytest.mark.parametrize("device,precision", HALF_PRECISIONS)
@pytest.mark.parametrize("op", ["conv", "conv-channels-last", "linear"])
def test_subnormal_inputs_like_dense(device, precision, op):
    dtype = DTYPES[precision]
    generator = torch.Generator().manual_seed(23)
    unit, top = SUBNORMAL_UNIT[precision], SUBNORMAL_MAX_MULTIPLE[precision]
    if op.startswith("conv"):
        shape, w_shape = (2, 4, 6, 6), (5, 4, 2, 2)
    else:
        shape, w_shape = (7, 24), (5, 24)
    x = torch.randint(1, top + 1, shape, generator=generator).double() * unit
    assert bool((x.to(dtype).double() == x).all()), "premise: x is exact in the type"
    assert float(x.max()) < torch.finfo(dtype).tiny, "premise: x is subnormal in the type"
    weight = torch.randint(-4, 5, w_shape, generator=generator).double()
    num_groups = weight[0].numel()
    keep = torch.randperm(num_groups, generator=generator)[:16]
    if op.startswith("conv"):
        exact = F.conv2d(x, gwprune.mask_weight(weight, keep))
    else:
        exact = F.linear(x, gwprune.mask_weight(weight, keep))
    expected = exact.to(dtype)
    assert bool((expected != 0).any()), "premise: the results are not all zero"
    x, weight, keep = to(device, x.to(dtype), weight.to(dtype), keep)
    if op == "conv-channels-last":
        x = x.contiguous(memory_format=torch.channels_last)
    with precision_flags(precision):
        if op.startswith("conv"):
            dense = dense_conv(x, weight, keep, None)
            with poisoned_outputs(device):
                out = gwprune.ops.conv2d(x, weight, keep)
        else:
            dense = dense_linear(x, weight, keep, None)
            with poisoned_outputs(device):
                out = gwprune.ops.linear(x, weight, keep)
    context = f"{op} {device} {precision}"
    assert torch.equal(out.cpu(), expected), f"{context}: subnormal inputs not computed exactly"
    assert torch.equal(out.cpu(), dense.cpu()), f"{context}: differs from dense"
