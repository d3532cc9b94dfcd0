"""The correctness gate run before any timing: relative error against float64.

The error is ||out - ref|| / ||ref|| over the whole output (Frobenius norms), with
``ref`` computed in float64 from the same (already rounded) weight and input.
"""

import math
import re

import torch

from .precision import Precision


def relative_error(out: torch.Tensor, reference: torch.Tensor) -> float:
    if out.shape != reference.shape:
        raise ValueError(f"output shape {tuple(out.shape)} != reference {tuple(reference.shape)}")
    diff = torch.linalg.vector_norm(out.double() - reference).item()
    scale = torch.linalg.vector_norm(reference).item()
    return diff / scale if scale > 0 else diff


def tolerance(precision: Precision, reorders_sums: bool) -> float:
    return precision.tolerance_reordered if reorders_sums else precision.tolerance


def passes(error: float, limit: float) -> bool:
    return math.isfinite(error) and error <= limit


# Messages PyTorch uses when a dtype/device/layout combination has no kernel.
_UNSUPPORTED_MESSAGE = re.compile(
    r"not implemented|not supported|unsupported|only .* (are|is) supported|no kernel", re.IGNORECASE
)


def exception_status(error: BaseException) -> str:
    """'unsupported: ...' for missing kernels, 'error: ...' for anything else (one line)."""
    first_line = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return "error: out of memory"
    if isinstance(error, NotImplementedError) or _UNSUPPORTED_MESSAGE.search(first_line):
        return f"unsupported: {first_line}"
    return f"error: {type(error).__name__}: {first_line}"
