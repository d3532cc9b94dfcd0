"""Shared test configuration: devices, precisions, tolerances and the upcast oracle."""

import contextlib

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()

# Relative error ||out - ref|| / ||ref|| allowed against a float64 reference.
TOLERANCES = {"fp64": 1e-12, "fp32": 1e-5, "tf32": 5e-3, "fp16": 1e-2, "bf16": 1e-2}
DTYPES = {
    "fp64": torch.float64,
    "fp32": torch.float32,
    "tf32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}

cuda_only = pytest.mark.cuda

DEVICES = ["cpu", pytest.param("cuda", marks=cuda_only)]
# CPU computes fp32 exactly as asked and has no TF32; half precisions are checked on CUDA,
# where they matter, and on CPU through the reference path in test_reference_cpu_half.
CPU_PRECISIONS = ["fp64", "fp32"]
CUDA_PRECISIONS = ["fp64", "fp32", "tf32", "fp16", "bf16"]


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


def device_precisions():
    """(device, precision) pairs for parametrized numerical tests."""
    pairs = [pytest.param("cpu", p, id=f"cpu-{p}") for p in CPU_PRECISIONS]
    pairs += [pytest.param("cuda", p, id=f"cuda-{p}", marks=cuda_only) for p in CUDA_PRECISIONS]
    return pairs


@contextlib.contextmanager
def precision_flags(precision: str):
    """Sets PyTorch's TF32 flags as the precision asks; restores them after."""
    allow = precision == "tf32"
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = allow
    torch.backends.cuda.matmul.allow_tf32 = allow
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@contextlib.contextmanager
def poisoned_outputs(device: str):
    """On CUDA, makes every gwprune output/workspace start as NaN so unwritten elements fail."""
    from gwprune._extension import _C

    if device != "cuda" or _C is None:
        yield
        return
    _C.set_poison_outputs(True)
    try:
        yield
    finally:
        _C.set_poison_outputs(False)


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    diff = (out.double().cpu() - ref.double().cpu()).norm()
    scale = ref.double().cpu().norm()
    if scale == 0:
        return float(diff)
    return float(diff / scale)


def assert_matches(out: torch.Tensor, ref: torch.Tensor, precision: str, context: str) -> None:
    """Shape, finiteness and relative error against the float64 reference; on failure
    the message names the case and the worst element."""
    assert out.shape == ref.shape, f"{context}: shape {tuple(out.shape)} != {tuple(ref.shape)}"
    out64, ref64 = out.double().cpu(), ref.double().cpu()
    finite = torch.isfinite(out64)
    if not bool(finite.all()):
        where = (~finite).nonzero()[0].tolist()
        raise AssertionError(f"{context}: non-finite output at {where} (unwritten element?)")
    error = relative_error(out64, ref64)
    if error > TOLERANCES[precision]:
        worst = (out64 - ref64).abs().argmax()
        index = list(torch.unravel_index(worst, out64.shape))
        index = [int(i) for i in index]
        raise AssertionError(
            f"{context}: relative error {error:.3e} > {TOLERANCES[precision]:.0e} ({precision}); "
            f"worst at {index}: got {out64[tuple(index)].item():.6g}, "
            f"expected {ref64[tuple(index)].item():.6g}"
        )


def make_keep_idx(num_groups: int, mode: str, generator: torch.Generator) -> torch.Tensor:
    """Kept groups for a test: 'one', 'quarter', 'half', 'all' or 'none', in random order."""
    count = {
        "none": 0,
        "one": 1,
        "quarter": max(1, num_groups // 4),
        "half": max(1, num_groups // 2),
        "all": num_groups,
    }[mode]
    return torch.randperm(num_groups, generator=generator)[:count]
