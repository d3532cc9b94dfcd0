"""The four precisions the benchmark compares, their TF32 flags and error tolerances.

fp32 and tf32 both run float32 tensors; they differ only in PyTorch's TF32 flags,
which cuDNN convolutions (torch.backends.cudnn.allow_tf32) and cuBLAS matmuls
(torch.backends.cuda.matmul.allow_tf32) read, and so do gwprune's CUDA ops.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Precision:
    name: str
    dtype: torch.dtype
    allow_tf32: bool
    tolerance: float  # relative error allowed for an exact-order GEMM or convolution
    tolerance_reordered: float  # for kernels that reorder sums (sparse, Winograd/FFT convs)
    model_tolerance: float  # relative error of a whole model's output (errors add up over layers)
    cuda_only: bool = False


PRECISIONS: dict[str, Precision] = {
    p.name: p
    for p in (
        Precision("fp32", torch.float32, False, 1e-5, 1e-4, 1e-4),
        Precision("tf32", torch.float32, True, 5e-3, 5e-3, 1e-2, cuda_only=True),
        Precision("fp16", torch.float16, False, 1e-2, 1e-2, 2e-2),
        Precision("bf16", torch.bfloat16, False, 1e-2, 1e-2, 2e-2),
    )
}


def parse_precisions(text: str) -> list[Precision]:
    """'fp32,tf32' -> [Precision, ...]; ValueError naming the unknown entry."""
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    if not names:
        raise ValueError(f"no precision given; choose from {', '.join(PRECISIONS)}")
    unknown = [name for name in names if name not in PRECISIONS]
    if unknown:
        raise ValueError(f"unknown precision {unknown[0]!r}; choose from {', '.join(PRECISIONS)}")
    return [PRECISIONS[name] for name in dict.fromkeys(names)]


def tf32_flags() -> dict[str, bool]:
    return {
        "torch.backends.cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
        "torch.backends.cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
    }


@contextmanager
def precision_flags(precision: Precision) -> Iterator[None]:
    """Sets both TF32 flags for ``precision`` and restores the previous values afterwards.

    fp16/bf16 set them off too: they do not affect half-precision kernels, and fixed
    values keep every run's recorded environment the same.
    """
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = precision.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = precision.allow_tf32
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def runnable_on(precisions: list[Precision], device_type: str) -> tuple[list, list[str]]:
    """(the precisions a device can run, names of those dropped: TF32 off CUDA)."""
    if device_type == "cuda":
        return list(precisions), []
    return [p for p in precisions if not p.cuda_only], [p.name for p in precisions if p.cuda_only]
