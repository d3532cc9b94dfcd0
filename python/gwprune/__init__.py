"""gwprune: group-wise pruned conv2d and linear layers that run as dense GEMMs.

A group is one column of a layer's weight-expansion matrix (one ``(c, i, j)``
of a conv filter, one input feature of a linear layer). Pruning whole groups
lets inference gather only the kept rows of the input expansion and hand a
smaller dense operand to cuBLAS.
"""

import torch

from . import nn, ops, pack_cache, prune, reference
from ._config import get_conv_backend, get_workspace_limit, set_conv_backend, set_workspace_limit
from ._extension import (
    compiled_cuda_archs,
    cpu_kernels_compiled,
    cuda_kernels_compiled,
    extension_loaded,
)
from .convert import ConversionReport, convert, to_dense
from .groups import group_mask_from_keep_idx, keep_idx_from_mask, keep_idx_from_zeroed, mask_weight
from .nn import GroupwiseConv2d, GroupwiseLinear
from .pack_cache import (
    PackCacheInfo,
    clear_pack_cache,
    get_pack_cache_limit,
    pack_cache_info,
    set_pack_cache_limit,
)
from .packing import PackedConv2dWeight, PackedLinearWeight, pack_conv2d_weight, pack_linear_weight
from .tune import AutotuneReport, autotune

__version__ = "0.1.0"

__all__ = [
    "ops",
    "pack_cache",
    "reference",
    "nn",
    "prune",
    "convert",
    "to_dense",
    "ConversionReport",
    "autotune",
    "AutotuneReport",
    "GroupwiseConv2d",
    "GroupwiseLinear",
    "info",
    "cpu_kernels_compiled",
    "set_workspace_limit",
    "get_workspace_limit",
    "set_conv_backend",
    "get_conv_backend",
    "set_pack_cache_limit",
    "get_pack_cache_limit",
    "clear_pack_cache",
    "pack_cache_info",
    "PackCacheInfo",
    "keep_idx_from_mask",
    "keep_idx_from_zeroed",
    "group_mask_from_keep_idx",
    "mask_weight",
    "pack_conv2d_weight",
    "pack_linear_weight",
    "PackedConv2dWeight",
    "PackedLinearWeight",
    "__version__",
]


def _mkl_linear_state() -> str:
    from ._extension import _C

    if _C is None or not hasattr(_C, "mkl_linear_available"):
        return "no (no _C, or one built before it)"
    if not _C.mkl_linear_available():
        return "no (torch has neither oneDNN's nor MKL's packed-GEMM ops)"
    library = getattr(_C, "packed_gemm_library", lambda: "mkl")()
    return f"yes ({library})" if _C.mkl_linear_enabled() else "available, switched off"


def info() -> dict:
    """Versions, build and device facts, as printed by ``python -m gwprune info``."""
    facts = {
        "gwprune": __version__,
        "torch": torch.__version__,
        "torch CUDA": torch.version.cuda or "none (CPU-only torch)",
        "extension loaded": extension_loaded(),
        "CPU kernels compiled": cpu_kernels_compiled(),
        "CUDA kernels compiled": cuda_kernels_compiled(),
        "compiled for": ", ".join(compiled_cuda_archs()) or "-",
        "workspace limit (MiB)": get_workspace_limit() / 2**20,
        "conv backend": get_conv_backend(),
        "pack cache limit (MiB)": get_pack_cache_limit() / 2**20,
        "CPU fp32 linear on pre-packed weights": _mkl_linear_state(),
    }
    if torch.cuda.is_available():
        index = torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        memory_gib = props.total_memory / 2**30
        facts["GPU"] = (
            f"cuda:{index} {props.name} (sm_{props.major}{props.minor}, {memory_gib:.0f} GiB)"
        )
        facts["cuDNN"] = torch.backends.cudnn.version()
    else:
        facts["GPU"] = "none visible"
    return facts
