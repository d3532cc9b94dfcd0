"""Scale: convs and linears whose output or compacted buffer passes 2^31 elements.

GPU-only, and heavy (about 11 GB of GPU memory at the peak, fp16 to keep it modest): the
tests run when GWPRUNE_RUN_SCALE=1, or when the GPU has at least 60 GiB free; never with
GWPRUNE_RUN_SCALE=0. A conv is independent per image and a linear per row, so correctness is
checked on selected images/rows (the first, those on both sides of the 2^31-element
boundaries, the last) against a float64 reference computed on the CPU for just those, and
every output element is checked to be written (outputs are poisoned with NaN first). The
peak device memory of a call is bounded by its output plus the workspace cap.
"""

import os

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_matches, poisoned_outputs, precision_flags

import gwprune

SCALE_FREE_BYTES = 60 * 2**30
TWO_31 = 2**31
# Extra memory a call may take beyond output + workspace cap: the packed index and weight of
# a raw call, cuBLAS's own bookkeeping; the caching allocator rounds to 512 bytes.
SLACK_BYTES = 8 * 2**20


def scale_enabled() -> tuple[bool, str]:
    if not torch.cuda.is_available():
        return False, "needs a CUDA GPU"
    flag = os.environ.get("GWPRUNE_RUN_SCALE")
    if flag == "0":
        return False, "GWPRUNE_RUN_SCALE=0"
    if flag == "1":
        return True, ""
    free, _ = torch.cuda.mem_get_info()
    if free >= SCALE_FREE_BYTES:
        return True, ""
    return False, f"{free / 2**30:.0f} GiB free on the GPU (< 60); set GWPRUNE_RUN_SCALE=1"


_ENABLED, _WHY = scale_enabled() if torch.cuda.is_available() else (False, "needs a CUDA GPU")
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.slow,
    pytest.mark.skipif(not _ENABLED, reason=f"scale tests off: {_WHY}"),
]


@pytest.fixture
def workspace_limit():
    saved = gwprune.get_workspace_limit()
    yield gwprune.set_workspace_limit
    gwprune.set_workspace_limit(saved)


def around(index: int, count: int, radius: int = 1) -> list[int]:
    return [i for i in range(index - radius, index + radius + 1) if 0 <= i < count]


def measured_call(fn):
    """fn() and the device memory it took beyond what it returned."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    out = fn()
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - base - out.numel() * out.element_size()
    return out, extra


# batch, in_channels, out_channels, H = W, kept groups of C*3*3: the output has
# 2100 * 64 * 128^2 = 2.2e9 elements (> 2^31 from image 2048 on) and the whole compacted
# operand 2100 * 72 * 128^2 = 2.5e9 (> 2^31 from image 1820 on).
CONV = (2100, 16, 64, 128, 72)


def conv_problem(layout):
    batch, channels, out_channels, size, kept = CONV
    generator = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(
        batch, channels, size, size, device="cuda", dtype=torch.float16, generator=generator
    )
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(
        out_channels, channels, 3, 3, device="cuda", dtype=torch.float16, generator=generator
    )
    bias = torch.randn(out_channels, device="cuda", dtype=torch.float16, generator=generator)
    keep = torch.randperm(channels * 9, device="cuda", generator=generator)[:kept]
    return x, weight, bias, keep


def check_conv_images(out, x, weight, bias, keep, images, context):
    masked = gwprune.mask_weight(weight.double().cpu(), keep.cpu())
    for image in images:
        ref = F.conv2d(x[image : image + 1].double().cpu(), masked, bias.double().cpu(), padding=1)
        assert_matches(out[image : image + 1], ref, "fp16", f"{context}, image {image}")


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("workspace", ["default", "whole-operand"])
def test_conv_past_2_31_elements(workspace_limit, layout, workspace):
    batch, channels, out_channels, size, kept = CONV
    x, weight, bias, keep = conv_problem(layout)
    packed = gwprune.pack_conv2d_weight(
        weight, keep, torch.channels_last if layout == "channels_last" else torch.contiguous_format
    )
    if workspace == "whole-operand":
        # One chunk holds the whole compacted operand: 2.5e9 elements, 4.6 GiB.
        workspace_limit(6 * 2**30)
    cap = gwprune.get_workspace_limit()
    with poisoned_outputs("cuda"), precision_flags("fp16"):
        gwprune.ops.conv2d_packed(x[:2], packed, bias, padding=1)  # warm cuBLAS up
        out, extra = measured_call(lambda: gwprune.ops.conv2d_packed(x, packed, bias, padding=1))
    context = f"conv {layout} workspace={workspace}"
    assert out.shape == (batch, out_channels, size, size) and out.numel() > TWO_31
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    assert out.is_contiguous(memory_format=fmt), context
    assert extra <= cap + SLACK_BYTES, f"{context}: {extra / 2**20:.1f} MiB over the output"
    assert bool(torch.isfinite(out).all()), f"{context}: unwritten (NaN) output elements"
    per_image_out = out_channels * size * size
    per_image_cols = kept * size * size
    images = sorted(
        {0, batch - 1}
        | set(around(TWO_31 // per_image_out, batch))
        | set(around(TWO_31 // per_image_cols, batch))
    )
    check_conv_images(out, x, weight, bias, keep, images, context)
    del out
    # The raw op (which packs per call) gives the same answer on the boundary images.
    with poisoned_outputs("cuda"), precision_flags("fp16"):
        raw = gwprune.ops.conv2d(x, weight, keep, bias, padding=1)
    assert bool(torch.isfinite(raw).all()), f"{context} raw: unwritten output elements"
    check_conv_images(raw, x, weight, bias, keep, images[:4], context + " raw")


# rows, in_features, out_features, kept features
LINEAR_WIDE_OUT = (2**22 + 3, 64, 544, 40)  # output 2.28e9 elements
LINEAR_WIDE_GATHER = (2**21, 1100, 16, 1030)  # gathered operand 2.16e9 elements


@pytest.mark.parametrize(
    "problem,workspace",
    [(LINEAR_WIDE_OUT, "default"), (LINEAR_WIDE_GATHER, "whole-operand")],
    ids=["output", "gathered"],
)
def test_linear_past_2_31_elements(workspace_limit, problem, workspace):
    rows, in_features, out_features, kept = problem
    generator = torch.Generator(device="cuda").manual_seed(1)
    x = torch.randn(rows, in_features, device="cuda", dtype=torch.float16, generator=generator)
    weight = torch.randn(
        out_features, in_features, device="cuda", dtype=torch.float16, generator=generator
    )
    bias = torch.randn(out_features, device="cuda", dtype=torch.float16, generator=generator)
    keep = torch.randperm(in_features, device="cuda", generator=generator)[:kept]
    packed = gwprune.pack_linear_weight(weight, keep)
    if workspace == "whole-operand":
        workspace_limit(6 * 2**30)
    cap = gwprune.get_workspace_limit()
    with poisoned_outputs("cuda"), precision_flags("fp16"):
        gwprune.ops.linear_packed(x[:8], packed, bias)  # warm cuBLAS up
        out, extra = measured_call(lambda: gwprune.ops.linear_packed(x, packed, bias))
    context = f"linear {problem} workspace={workspace}"
    assert out.shape == (rows, out_features)
    assert max(out.numel(), rows * kept) > TWO_31
    assert extra <= cap + SLACK_BYTES, f"{context}: {extra / 2**20:.1f} MiB over the output"
    assert bool(torch.isfinite(out).all()), f"{context}: unwritten (NaN) output elements"
    masked = gwprune.mask_weight(weight.double().cpu(), keep.cpu())
    starts = {0, rows - 8, TWO_31 // out_features - 4, TWO_31 // kept - 4}
    for start in sorted(s for s in starts if s + 8 <= rows):
        block = slice(start, start + 8)
        ref = F.linear(x[block].double().cpu(), masked, bias.double().cpu())
        assert_matches(out[block], ref, "fp16", f"{context}, rows {start}..{start + 7}")
