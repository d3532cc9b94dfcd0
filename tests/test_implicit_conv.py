"""The implicit-GEMM conv path (csrc/cuda/implicit/) forced by backend="implicit", and the
backend rule: each case against F.conv2d in float64 on the masked weight, outputs poisoned."""

import pytest
import torch
import torch.nn.functional as F
from conftest import (
    DTYPES,
    assert_matches,
    forced_gather,
    implicit_kernel_available,
    make_keep_idx,
    poisoned_outputs,
    precision_flags,
)

import gwprune
from gwprune._config import IMPLICIT_NCHW_PRODUCERS
from gwprune.activation import ACTIVATIONS

IMPLICIT_PRECISIONS = ["tf32", "fp16", "bf16"]


needs_implicit = pytest.mark.skipif(
    not implicit_kernel_available(), reason="needs an sm_90 GPU and a build with sm_90a"
)

# batch, in_channels, out_channels, (H, W), kernel, stride, padding, dilation
IMPLICIT_SHAPES = [
    (2, 64, 128, (14, 14), 3, 1, 1, 1),
    (1, 3, 17, (17, 33), 3, 1, 1, 1),
    (3, 17, 33, (9, 14), 5, 2, 2, 1),
    (2, 33, 64, (12, 10), (3, 1), 1, (1, 0), 1),
    (1, 1, 1, (5, 5), 1, 1, 0, 1),
    (2, 16, 300, (7, 9), 3, 2, 0, 2),
    (3, 40, 8, (16, 16), 3, 1, 2, 2),
    (1, 128, 256, (28, 28), 1, 1, 0, 1),
    (5, 24, 520, (6, 5), (2, 3), (2, 1), (0, 2), (2, 1)),
    (130, 8, 16, (3, 3), 3, 1, 1, 1),
]
KEEPS = ["one", "quarter", "half", "all"]


def shape_id(shape):
    n, c, co, hw, k, s, p, d = shape
    return f"n{n}-c{c}-o{co}-{hw[0]}x{hw[1]}-k{k}-s{s}-p{p}-d{d}".replace(" ", "")


def implicit_case(shape, keep, with_bias, channels_last, precision, seed):
    generator = torch.Generator().manual_seed(seed)
    n, c, co, (h, w), k, s, p, d = shape
    kh, kw = (k, k) if isinstance(k, int) else k
    dtype = DTYPES[precision]
    x = torch.randn(n, c, h, w, generator=generator, dtype=torch.float64)
    weight = torch.randn(co, c, kh, kw, generator=generator, dtype=torch.float64)
    bias = torch.randn(co, generator=generator, dtype=torch.float64) if with_bias else None
    keep_idx = make_keep_idx(c * kh * kw, keep, generator)
    # The reference sees the inputs rounded to the op's dtype, as the op does.
    x, weight = x.to(dtype), weight.to(dtype)
    bias = None if bias is None else bias.to(dtype)
    ref = F.conv2d(
        x.double(),
        gwprune.mask_weight(weight.double(), keep_idx),
        None if bias is None else bias.double(),
        s,
        p,
        d,
    )
    x = x.cuda()
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    bias = None if bias is None else bias.cuda()
    return x, weight.cuda(), bias, keep_idx.cuda(), (s, p, d), ref


@needs_implicit
@pytest.mark.cuda
@pytest.mark.parametrize("precision", IMPLICIT_PRECISIONS)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("keep", KEEPS)
@pytest.mark.parametrize("shape", IMPLICIT_SHAPES, ids=shape_id)
def test_implicit_matches_masked_dense(shape, keep, channels_last, precision):
    with_bias = keep != "one"
    x, weight, bias, keep_idx, (s, p, d), ref = implicit_case(
        shape, keep, with_bias, channels_last, precision, seed=hash((shape_id(shape), keep)) % 2**31
    )
    layout = torch.channels_last if channels_last else torch.contiguous_format
    packed = gwprune.pack_conv2d_weight(weight, keep_idx, layout)
    with precision_flags(precision), poisoned_outputs("cuda"):
        out = gwprune.ops.conv2d_packed(x, packed, bias, s, p, d, backend="implicit")
    assert out.is_contiguous(memory_format=layout), "output does not follow x's layout"
    assert_matches(out, ref, precision, f"implicit {shape_id(shape)} keep={keep} {layout}")


# NCHW 16-bit, stride 1, OW == W: the shapes of the run and line gathers
# (csrc/cuda/implicit/run_gather.cuh, line_gather.cuh), with images whose pixel count is
# not a multiple of 8 or 64, several K tiles, every tile width and a 7 x 7 kernel.
LINEAR_OFFSET_SHAPES = [
    (2, 64, 300, (7, 7), 3, 1, 1, 1),
    (3, 70, 129, (11, 13), 3, 1, (2, 1), 1),
    (1, 48, 64, (9, 20), (1, 5), 1, (0, 4), (1, 2)),
    (2, 40, 72, (28, 28), 3, 1, 1, 1),
    (1, 96, 256, (14, 14), 3, 1, 1, 1),
    (2, 4, 32, (12, 12), 7, 1, 3, 1),
    (1, 3, 17, (3, 3), 3, 1, 1, 1),
    # every line start 16-byte aligned: the line gather's (1x1 on 8k pixels, k x 1 on rows of 8k)
    (3, 64, 256, (28, 28), 1, 1, 0, 1),
    (2, 40, 72, (8, 16), 1, 1, 0, 1),
    (2, 24, 130, (12, 16), (3, 1), 1, (1, 0), 1),
    (1, 70, 20, (5, 8), (5, 1), 1, (2, 0), 1),
    # two and four 256-wide channel tiles: the run gather in CTA pairs
    (2, 40, 512, (14, 14), 3, 1, 1, 1),
    (1, 16, 1000, (9, 9), 3, 1, 1, 1),
]
NCHW_GATHERS = list(IMPLICIT_NCHW_PRODUCERS)
# The window kernels: A read into registers by the consumers, staged in shared memory
# by gatherer warps, or split between the two; and the register one with one CTA per SM
# walking the tiles, of 128 pixels or tall ones of 256 (where the output channels fit 128).
WINDOW_KERNELS = ["windows", "staged", "split", "persistent", "tall"]


@needs_implicit
@pytest.mark.cuda
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
@pytest.mark.parametrize("gather", NCHW_GATHERS)
@pytest.mark.parametrize("shape", LINEAR_OFFSET_SHAPES, ids=shape_id)
def test_nchw_gathers_match(shape, gather, precision, monkeypatch):
    """Each NCHW producer forced by GWPRUNE_IMPLICIT_GATHER, on x at a 16-byte-aligned
    address (where the run gather also needs x's storage to cover its last 16-byte
    granule), one element further (the run and line gathers fall back to the row gather)
    and as every other channel of a wider tensor (a channel stride beyond C * H * W)."""
    x, weight, bias, keep_idx, (s, p, d), ref = implicit_case(
        shape, "half", True, False, precision, seed=hash(shape_id(shape)) % 2**31
    )
    storage = torch.empty(x.numel() + 1, dtype=x.dtype, device=x.device)
    shifted = storage[1:].view_as(x).copy_(x)
    wide = torch.randn(x.shape[0], 2 * x.shape[1], *x.shape[2:], device=x.device).to(x.dtype)
    wide[:, ::2] = x
    every_other = wide[:, ::2]
    packed = gwprune.pack_conv2d_weight(weight, keep_idx)
    monkeypatch.setenv("GWPRUNE_IMPLICIT_GATHER", gather)
    with precision_flags(precision):
        for label, source in (("aligned", x), ("shifted", shifted), ("strided", every_other)):
            with poisoned_outputs("cuda"):
                out = gwprune.ops.conv2d_packed(source, packed, bias, s, p, d, backend="implicit")
            assert_matches(out, ref, precision, f"implicit {gather} {label} {shape_id(shape)}")


# The window kernels (csrc/cuda/implicit/windows/) take any stride, dilation and padding:
# the general grid, plus shapes whose channels wrap its ring of window slots many times,
# tiles that span up to four images, and every tile width.
WINDOW_SHAPES = IMPLICIT_SHAPES + [
    (2, 256, 512, (28, 28), 3, 1, 1, 1),
    (3, 130, 96, (7, 7), 3, 1, 1, 1),
    (2, 64, 40, (56, 56), 3, 2, 1, 1),
    (1, 48, 200, (33, 17), 3, 1, 2, 2),
    (4, 20, 64, (10, 11), (1, 3), 1, (0, 1), 1),
]


@needs_implicit
@pytest.mark.cuda
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
@pytest.mark.parametrize("keep", KEEPS)
@pytest.mark.parametrize("kernel", WINDOW_KERNELS)
@pytest.mark.parametrize("shape", WINDOW_SHAPES, ids=shape_id)
def test_window_kernel_matches(shape, kernel, keep, precision, monkeypatch):
    x, weight, bias, keep_idx, (s, p, d), ref = implicit_case(
        shape, keep, keep != "one", False, precision, seed=hash((shape_id(shape), keep)) % 2**31
    )
    packed = gwprune.pack_conv2d_weight(weight, keep_idx)
    monkeypatch.setenv("GWPRUNE_IMPLICIT_GATHER", kernel)
    with precision_flags(precision), poisoned_outputs("cuda"):
        out = gwprune.ops.conv2d_packed(x, packed, bias, s, p, d, backend="implicit")
    assert_matches(out, ref, precision, f"implicit {kernel} {shape_id(shape)} keep={keep}")


# More tiles than an H100/H200 has SMs, so each persistent CTA walks several: its stages,
# barrier phases and ring slots run on from tile to tile (rings wrapping many times),
# tiles of one and of two images, odd channel counts and output pixels (an odd count takes
# the one-tile-per-CTA kernel: the register epilogue stores pixel pairs).
PERSISTENT_SHAPES = [
    (24, 64, 512, (28, 28), 3, 1, 1, 1),
    (40, 33, 300, (14, 14), 3, 1, 1, 1),
    (12, 48, 96, (30, 26), 3, 2, 2, 2),
    (20, 17, 130, (17, 17), (3, 5), 1, (1, 2), 1),
]


def check_persistent_kernel(
    shape, keep, precision, seed, context, repeats, monkeypatch, kernel="persistent"
):
    """The persistent window kernel (or another forced `kernel`) on one case: correct, every
    output written (poisoned), and bitwise the same over `repeats` more calls."""
    x, weight, bias, keep_idx, (s, p, d), ref = implicit_case(
        shape, keep, True, False, precision, seed=seed
    )
    packed = gwprune.pack_conv2d_weight(weight, keep_idx)
    monkeypatch.setenv("GWPRUNE_IMPLICIT_GATHER", kernel)
    with precision_flags(precision):
        with poisoned_outputs("cuda"):
            out = gwprune.ops.conv2d_packed(x, packed, bias, s, p, d, backend="implicit")
        assert_matches(out, ref, precision, context)
        for _ in range(repeats):
            again = gwprune.ops.conv2d_packed(x, packed, bias, s, p, d, backend="implicit")
            assert torch.equal(out, again), f"{context}: differs from run to run"


# The tall-tile kernel (windows/tall_tiles.cuh) on more 128-row blocks than an H100/H200 has
# SMs: blocks left over after the tall units (ResNet-50's 128 x 28² at batch 64: 392 blocks,
# 132 tall units and 128 short ones), tall units only, tiles across two and three images,
# 64- and 128-wide channel tiles (one masked), a ring that wraps many times (keep all), a
# stride of 2; an odd pixel count takes the one-tile-per-CTA window kernel instead.
TALL_SHAPES = [
    (64, 128, 128, (28, 28), 3, 1, 1, 1),
    (24, 64, 64, (28, 28), 3, 1, 1, 1),
    (150, 17, 72, (14, 14), 3, 1, 1, 1),
    (100, 96, 40, (24, 30), 3, 2, 1, 1),
    (12, 48, 96, (30, 26), 3, 2, 2, 2),
]


# The persistent kernel (128-row tiles) on PERSISTENT_SHAPES, the tall one on TALL_SHAPES.
WALKING_KERNELS = [
    pytest.param(kernel, shape, id=f"{kernel}-{shape_id(shape)}")
    for kernel, shapes in (("persistent", PERSISTENT_SHAPES), ("tall", TALL_SHAPES))
    for shape in shapes
]


@needs_implicit
@pytest.mark.cuda
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
@pytest.mark.parametrize("keep", ["quarter", "half", "all"])
@pytest.mark.parametrize("kernel, shape", WALKING_KERNELS)
def test_window_kernel_walks_many_tiles(kernel, shape, keep, precision, monkeypatch):
    check_persistent_kernel(
        shape,
        keep,
        precision,
        hash((shape_id(shape), keep, kernel)) % 2**31,
        f"implicit {kernel} {shape_id(shape)} keep={keep}",
        1,
        monkeypatch,
        kernel=kernel,
    )


@needs_implicit
@pytest.mark.cuda
@pytest.mark.parametrize("activation", ["relu", "silu"])
def test_tall_window_kernel_hands_activations_on(activation, monkeypatch):
    """The tall kernel has no activation switch: a call with one runs the persistent kernel
    of 128-pixel tiles, whose epilogue applies it."""
    x, weight, bias, keep_idx, (s, p, d), _ = implicit_case(
        TALL_SHAPES[1], "half", True, False, "fp16", seed=17
    )
    weight = weight / 4
    masked = gwprune.mask_weight(weight.double().cpu(), keep_idx.cpu())
    dense = F.conv2d(x.double().cpu(), masked, bias.double().cpu(), s, p, d)
    ref = DENSE_ACTIVATIONS[activation](dense)
    packed = gwprune.pack_conv2d_weight(weight, keep_idx)
    monkeypatch.setenv("GWPRUNE_IMPLICIT_GATHER", "tall")
    with precision_flags("fp16"), poisoned_outputs("cuda"):
        out = gwprune.ops.conv2d_packed(
            x, packed, bias, s, p, d, backend="implicit", activation=activation
        )
    assert_matches(out, ref, "fp16", f"implicit tall {activation}")


# Few output tiles (a batch of one: 4 tiles of 128 x 256; 2 x 64 x 14 x 14: 4 tiles of 128 x
# 128), so the persistent kernel cuts each tile's K loop into slices (windows/k_slices.cuh):
# GWPRUNE_IMPLICIT_K_SLICES forces a count (capped at the tile's stages), from 2 to more
# slices than stages; odd channels, a masked output-channel tile, two images per tile.
K_SLICE_SHAPES = [
    (1, 512, 512, (14, 14), 3, 1, 1, 1),
    (2, 64, 128, (14, 14), 3, 1, 1, 1),
    (1, 33, 300, (16, 12), 3, 1, 2, 2),
    (3, 130, 64, (10, 10), (3, 5), 2, (1, 2), 1),
]


@needs_implicit
@pytest.mark.cuda
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
@pytest.mark.parametrize("slices", [2, 3, 7, 64])
@pytest.mark.parametrize("keep", ["quarter", "half", "all"])
@pytest.mark.parametrize("shape", K_SLICE_SHAPES, ids=shape_id)
def test_persistent_k_slices_match(shape, keep, slices, precision, monkeypatch):
    """Each unit's partials, added up by the tile's last unit in slice order: correct, every
    output written (poisoned), and bitwise the same from run to run whichever unit is last."""
    monkeypatch.setenv("GWPRUNE_IMPLICIT_K_SLICES", str(slices))
    check_persistent_kernel(
        shape,
        keep,
        precision,
        hash((shape_id(shape), keep, slices)) % 2**31,
        f"implicit persistent, {slices} K slices, {shape_id(shape)} keep={keep}",
        3,
        monkeypatch,
    )


@needs_implicit
@pytest.mark.cuda
@pytest.mark.parametrize("value", ["0", "-2", "many"])
def test_bad_k_slice_count_is_refused(value, monkeypatch):
    x, weight, bias, keep_idx, (s, p, d), _ = implicit_case(
        K_SLICE_SHAPES[1], "half", False, False, "fp16", seed=3
    )
    packed = gwprune.pack_conv2d_weight(weight, keep_idx)
    monkeypatch.setenv("GWPRUNE_IMPLICIT_GATHER", "persistent")
    monkeypatch.setenv("GWPRUNE_IMPLICIT_K_SLICES", value)
    with pytest.raises(RuntimeError, match="GWPRUNE_IMPLICIT_K_SLICES must be a positive count"):
        gwprune.ops.conv2d_packed(x, packed, bias, s, p, d, backend="implicit")


@needs_implicit
@pytest.mark.cuda
@pytest.mark.parametrize("window", [*WINDOW_KERNELS, "rows"])
def test_padding_columns_keep_infinities_out(window, monkeypatch):
    """K' = 1 pads the 64-group stage with 63 zero-weight columns: they must read zeros,
    not x, or an infinity in x would come out as NaN in every output channel."""
    x, weight, bias, keep_idx, (s, p, d), _ = implicit_case(
        (2, 8, 64, (14, 14), 3, 1, 1, 1), "one", False, False, "fp16", seed=5
    )
    keep_idx = keep_idx[:1]
    x[0, :, 3, 4] = float("inf")
    masked = gwprune.mask_weight(weight.double(), keep_idx)
    # Outputs that the kept group's nonzero weights carry the infinity to (a float64 conv
    # on x itself would turn the masked-out weights' zeros times infinity into NaNs).
    infinite = torch.isinf(x).double()
    touched = F.conv2d(infinite, (masked != 0).double(), None, s, p, d) > 0
    ref = F.conv2d(torch.where(torch.isinf(x), 0, x).double(), masked, None, s, p, d)
    packed = gwprune.pack_conv2d_weight(weight, keep_idx)
    monkeypatch.setenv("GWPRUNE_IMPLICIT_GATHER", window)
    with precision_flags("fp16"), poisoned_outputs("cuda"):
        out = gwprune.ops.conv2d_packed(x, packed, bias, s, p, d, backend="implicit")
    assert touched.any(), "the case must carry the infinity to some output"
    assert torch.equal(torch.isinf(out), touched), f"{window}: an infinity misplaced or a NaN"
    assert_matches(
        torch.where(touched, 0, out.double()), torch.where(touched, 0, ref), "fp16", window
    )


DENSE_ACTIVATIONS = {
    None: lambda t: t,
    "relu": F.relu,
    "relu6": F.relu6,
    "silu": F.silu,
    "gelu": F.gelu,
    "gelu_tanh": lambda t: F.gelu(t, approximate="tanh"),
}
# Every epilogue that stores an implicit conv's output, each of which applies the activation:
# the main kernel's (store_tile; the row gather, the only one for channels_last and TF32), the
# window kernels' (store_tile again, called by window_kernel.cuh for "windows" and by
# staged_window_kernel.cuh for "split") and the persistent kernel's from registers
# (register_epilogue.cuh), over whole tiles and over K slices ("persistent-k3": the epilogue
# runs after the partials are added up). GWPRUNE_IMPLICIT_GATHER is read for NCHW 16-bit x
# only. Without an activation the split and persistent kernels run their bias-only
# instantiations.
EPILOGUES = [
    pytest.param(precision, layout, gather, id=f"{precision}-{layout}-{gather}")
    for precision, layout, gather in [
        *[(precision, "channels_last", "rows") for precision in IMPLICIT_PRECISIONS],
        ("tf32", "nchw", "rows"),
        *[
            (precision, "nchw", gather)
            for precision in ("fp16", "bf16")
            for gather in ("rows", "windows", "split", "persistent", "persistent-k3")
        ],
    ]
]


# Two 256-wide output-channel tiles (the second mostly masked) and 196 output pixels per
# image: the window kernels take it, and the persistent one too (an even pixel count).
ACTIVATION_SHAPE = (2, 40, 300, (14, 14), 3, 1, 1, 1)


def activation_case(precision, layout, keep, seed):
    """ACTIVATION_SHAPE with a bias and the weight scaled by 1/4 (exactly), so outputs are a
    few units across, where the activations bend (and relu6 clamps some at 6)."""
    x, weight, bias, keep_idx, geometry, _ = implicit_case(
        ACTIVATION_SHAPE, keep, True, layout == "channels_last", precision, seed
    )
    return x, weight / 4, bias, keep_idx, geometry


def activated_reference(x, weight, bias, keep_idx, geometry, activation):
    """activation(F.conv2d) in float64 on the CPU, on the masked weight."""
    s, p, d = geometry
    masked = gwprune.mask_weight(weight.double().cpu(), keep_idx.cpu())
    dense = F.conv2d(x.double().cpu(), masked, bias.double().cpu(), s, p, d)
    return DENSE_ACTIVATIONS[activation](dense)


@needs_implicit
@pytest.mark.cuda
@pytest.mark.parametrize("activation", [None, *ACTIVATIONS])
@pytest.mark.parametrize("precision, layout, gather", EPILOGUES)
def test_implicit_fuses_the_activation(precision, layout, gather, activation):
    """The activation in the epilogue, on the output plus the bias in fp32 (an activation
    before the bias, or none, is far outside the tolerance)."""
    x, weight, bias, keep_idx, (s, p, d) = activation_case(precision, layout, "half", seed=13)
    ref = activated_reference(x, weight, bias, keep_idx, (s, p, d), activation)
    memory_format = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    packed = gwprune.pack_conv2d_weight(weight, keep_idx, memory_format)
    with forced_gather(gather), precision_flags(precision), poisoned_outputs("cuda"):
        out = gwprune.ops.conv2d_packed(
            x, packed, bias, s, p, d, activation=activation, backend="implicit"
        )
    assert out.is_contiguous(memory_format=memory_format), "output does not follow x's layout"
    assert_matches(out, ref, precision, f"implicit {gather} {layout} activation={activation}")


@needs_implicit
@pytest.mark.cuda
@pytest.mark.parametrize("activation", ["relu", "relu6"])
@pytest.mark.parametrize(
    "layout, gather",
    [
        ("channels_last", "rows"),
        ("nchw", "rows"),
        ("nchw", "windows"),
        ("nchw", "persistent"),
        ("nchw", "persistent-k3"),
    ],
    ids=lambda value: value,
)
def test_implicit_activation_keeps_nans(layout, gather, activation):
    """relu and relu6 pass a NaN on, as PyTorch's do (fmaxf(NaN, 0) would make it 0): with
    every group kept, the NaN of x comes out exactly where dense PyTorch puts it."""
    x, weight, bias, keep_idx, (s, p, d) = activation_case("fp16", layout, "all", seed=17)
    x[1, 5, 7, 3] = float("nan")
    ref = activated_reference(x, weight, bias, keep_idx, (s, p, d), activation)
    nan = torch.isnan(ref)
    assert nan.any() and not nan.all(), "the case must carry the NaN to some outputs only"
    memory_format = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    packed = gwprune.pack_conv2d_weight(weight, keep_idx, memory_format)
    with forced_gather(gather), precision_flags("fp16"), poisoned_outputs("cuda"):
        out = gwprune.ops.conv2d_packed(
            x, packed, bias, s, p, d, activation=activation, backend="implicit"
        ).cpu()
    assert torch.equal(torch.isnan(out), nan), f"{gather} {layout} {activation}: NaNs misplaced"
    context = f"implicit {gather} {layout} {activation} beside the NaNs"
    assert_matches(torch.where(nan, 0, out.double()), torch.where(nan, 0, ref), "fp16", context)


@needs_implicit
@pytest.mark.cuda
@pytest.mark.parametrize("precision", IMPLICIT_PRECISIONS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_implicit_activation_values_match_pytorch(activation, precision):
    """Each activation's values with nothing between x and the output but the bias and one
    rounding: a 1x1 conv of weight 1 on x from -10 to 10 (exact in the input type and in
    TF32, so the products are), NaN and infinities, and biases that x adds to exactly in
    fp32. Within the output type's rounding of the float64 activation (closer than the two
    GELUs are to each other and, for silu and the GELUs in fp16 and bf16, than an activation
    applied after the rounding), NaN and infinities where PyTorch puts them."""
    dtype = DTYPES[precision]
    grid = torch.linspace(-10, 10, 4096 - 3, dtype=torch.float64)
    special = torch.tensor([float("nan"), float("inf"), -float("inf")], dtype=torch.float64)
    exact = torch.float16 if precision == "tf32" else dtype  # TF32 holds fp16's 10 bits
    x = torch.cat([grid, special]).to(exact).to(dtype).view(1, 1, 64, 64)
    bias = torch.tensor([0.0, 0.5, -1.25, 3.0], dtype=dtype)
    ref = DENSE_ACTIVATIONS[activation](x.double() + bias.double().view(1, -1, 1, 1))
    packed = gwprune.pack_conv2d_weight(
        torch.ones(4, 1, 1, 1, dtype=dtype).cuda(), torch.tensor([0]).cuda()
    )
    with precision_flags(precision), poisoned_outputs("cuda"):
        out = gwprune.ops.conv2d_packed(
            x.cuda(), packed, bias.cuda(), 1, 0, 1, activation=activation, backend="implicit"
        )
    # Twice the output type's rounding (half an ulp: at most 2^-8 of a value in bf16, 2^-11
    # in fp16), fp32's own few ulps for TF32, and an absolute term for the tails, where
    # 1 + erf and 1 + exp cancel or underflow in fp32 as in PyTorch's own fp32 kernels.
    rtol, atol = {"tf32": (1e-5, 1e-6), "fp16": (1e-3, 1e-5), "bf16": (8e-3, 1e-5)}[precision]
    torch.testing.assert_close(out.double().cpu(), ref, rtol=rtol, atol=atol, equal_nan=True)


@needs_implicit
@pytest.mark.cuda
def test_unknown_gather_name_is_refused(monkeypatch):
    x, weight, bias, keep_idx, (s, p, d), _ = implicit_case(
        LINEAR_OFFSET_SHAPES[0], "half", False, False, "fp16", seed=3
    )
    packed = gwprune.pack_conv2d_weight(weight, keep_idx)
    monkeypatch.setenv("GWPRUNE_IMPLICIT_GATHER", "fastest")
    with pytest.raises(RuntimeError, match="GWPRUNE_IMPLICIT_GATHER must be"):
        gwprune.ops.conv2d_packed(x, packed, bias, s, p, d, backend="implicit")


@needs_implicit
@pytest.mark.cuda
@pytest.mark.parametrize("precision", IMPLICIT_PRECISIONS)
def test_implicit_is_bitwise_deterministic(precision):
    shape = (4, 96, 192, (15, 15), 3, 1, 1, 1)
    x, weight, bias, keep_idx, (s, p, d), _ = implicit_case(shape, "half", True, True, precision, 7)
    packed = gwprune.pack_conv2d_weight(weight, keep_idx, torch.channels_last)
    with precision_flags(precision):
        first = gwprune.ops.conv2d_packed(x, packed, bias, s, p, d, backend="implicit")
        for _ in range(3):
            again = gwprune.ops.conv2d_packed(x, packed, bias, s, p, d, backend="implicit")
            assert torch.equal(first, again), "implicit conv differs from run to run"


@needs_implicit
@pytest.mark.cuda
def test_implicit_refuses_strict_fp32_with_the_reason():
    x, weight, bias, keep_idx, (s, p, d), _ = implicit_case(
        (1, 8, 8, (6, 6), 3, 1, 1, 1), "half", False, False, "fp32", 3
    )
    packed = gwprune.pack_conv2d_weight(weight, keep_idx)
    with precision_flags("fp32"), pytest.raises(ValueError, match="strict fp32"):
        gwprune.ops.conv2d_packed(x, packed, bias, s, p, d, backend="implicit")


# The documented rule (csrc/cuda/conv_backend.cpp): "auto" runs implicit on 16-bit NCHW
# inputs with >= 4096 output pixels in the batch and >= 512 kept columns; else explicit.
# (shape, keep, channels_last, precision, the path auto must take)
AUTO_RULE_CASES = [
    ((2, 128, 64, (48, 48), 3, 1, 1, 1), "half", False, "fp16", "implicit"),  # 4608 px, K' 576
    ((2, 128, 64, (48, 48), 3, 1, 1, 1), "half", False, "bf16", "implicit"),
    ((2, 128, 64, (48, 48), 3, 1, 1, 1), "half", True, "fp16", "explicit"),  # channels_last
    ((2, 128, 64, (48, 48), 3, 1, 1, 1), "half", False, "tf32", "explicit"),  # TF32
    ((2, 128, 64, (44, 44), 3, 1, 1, 1), "half", False, "fp16", "explicit"),  # 3872 px
    ((2, 96, 64, (48, 48), 3, 1, 1, 1), "half", False, "fp16", "explicit"),  # K' 432
    ((2, 32, 64, (10, 10), 3, 1, 1, 1), "half", False, "fp16", "explicit"),
]


def extra_device_bytes(call) -> int:
    """Device memory one call allocates beyond its output (peak, caching allocator), after a
    warm-up call took the one-time allocations (cuBLAS workspaces)."""
    call()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    out = call()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base - out.numel() * out.element_size()


@needs_implicit
@pytest.mark.cuda
@pytest.mark.parametrize(("shape", "keep", "channels_last", "precision", "path"), AUTO_RULE_CASES)
def test_auto_follows_the_documented_rule(shape, keep, channels_last, precision, path, monkeypatch):
    """Which path "auto" took, told by what it allocates: the implicit kernel nothing but
    the output, the explicit path its compacted operand too (the two can round to the same
    bits, so their results cannot tell them apart). One K slice: the sliced persistent
    kernel's partials (windows/k_slices.cuh) would blur that signal."""
    x, weight, bias, keep_idx, (s, p, d), ref = implicit_case(
        shape, keep, True, channels_last, precision, 11
    )
    monkeypatch.setenv("GWPRUNE_IMPLICIT_K_SLICES", "1")
    packed = gwprune.pack_conv2d_weight(weight, keep_idx)
    extra = {}
    with precision_flags(precision):
        for backend in ("auto", "implicit", "explicit"):

            def call(backend=backend):
                return gwprune.ops.conv2d_packed(x, packed, bias, s, p, d, backend=backend)

            assert_matches(call(), ref, precision, backend)
            extra[backend] = extra_device_bytes(call)
    # The signal itself: the output alone (up to the allocator's 512-byte rounding), and
    # the explicit path's compacted operand of K'p columns.
    assert extra["implicit"] < 512, f"the implicit kernel allocated {extra['implicit']} B"
    assert extra["explicit"] > 4096, f"the explicit path allocated only {extra['explicit']} B"
    took = "implicit" if extra["auto"] < 512 else "explicit"
    assert took == path, f"auto took the {took} path ({extra['auto']} B beyond the output)"


def test_backend_names_are_checked():
    x = torch.randn(1, 2, 4, 4)
    weight = torch.randn(3, 2, 3, 3)
    keep_idx = torch.arange(9)
    with pytest.raises(ValueError, match="backend"):
        gwprune.ops.conv2d(x, weight, keep_idx, padding=1, backend="fastest")
    with pytest.raises(ValueError, match="backend"):
        gwprune.set_conv_backend("cudnn")
    assert gwprune.get_conv_backend() == "auto"


def test_backend_is_ignored_on_cpu_tensors():
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(2, 3, 6, 6, generator=generator, dtype=torch.float64)
    weight = torch.randn(4, 3, 3, 3, generator=generator, dtype=torch.float64)
    keep_idx = make_keep_idx(27, "half", generator)
    ref = F.conv2d(x, gwprune.mask_weight(weight, keep_idx), None, 1, 1)
    for backend in ("auto", "implicit", "explicit"):
        out = gwprune.ops.conv2d(x, weight, keep_idx, padding=1, backend=backend)
        assert_matches(out, ref, "fp64", f"cpu backend={backend}")


def test_module_backends_include_the_conv_paths():
    conv = torch.nn.Conv2d(3, 4, 3, padding=1)
    layer = gwprune.GroupwiseConv2d.from_dense(conv, torch.arange(10))
    x = torch.randn(1, 3, 5, 5)
    expected = layer(x)
    for backend in ("implicit", "explicit", "dense", "gathered"):
        assert layer.set_backend(backend).backend == backend
        torch.testing.assert_close(layer(x), expected)
    linear = gwprune.GroupwiseLinear.from_dense(torch.nn.Linear(4, 2), torch.arange(2))
    with pytest.raises(ValueError, match="backend"):
        linear.set_backend("implicit")
