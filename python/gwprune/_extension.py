"""Guarded load of the compiled extension gwprune._C.

gwprune works without it: tensors then use gwprune.reference. Every _C has the
CPU kernels (csrc/cpu/) except one built before they existed, whose CPU tensors
also take the reference path; CUDA tensors fall back to it (with a warning
logged once) when the CUDA kernels were not built.
"""

import importlib
import logging

import torch  # noqa: F401  (the extension links against torch's libraries: import torch first)

logger = logging.getLogger("gwprune")

try:
    _C = importlib.import_module("gwprune._C")
except ImportError as error:  # pragma: no cover - depends on how gwprune was installed
    _C = None
    _LOAD_ERROR = error
    logger.warning(
        "gwprune: compiled extension not loaded (%s); using the pure-PyTorch reference path",
        error,
    )
else:
    _LOAD_ERROR = None

# Read once: a plain bool is something torch.compile can trace through, a call into a
# pybind11 function is not (the input checks ask this on every call).
_CUDA_KERNELS_COMPILED = _C is not None and bool(_C.compiled_with_cuda())
_CPU_KERNELS_COMPILED = _C is not None and bool(
    getattr(_C, "compiled_with_cpu_kernels", lambda: False)()
)


def extension_loaded() -> bool:
    return _C is not None


def cuda_kernels_compiled() -> bool:
    return _CUDA_KERNELS_COMPILED


def cpu_kernels_compiled() -> bool:
    return _CPU_KERNELS_COMPILED


def compiled_cuda_archs() -> list[str]:
    """Architectures the CUDA kernels were compiled for, e.g. ['sm_80', 'sm_90']."""
    if not cuda_kernels_compiled():
        return []
    return [f"sm_{arch}" for arch in _C.cuda_arch_list().split("_") if arch]


def load_error() -> ImportError | None:
    return _LOAD_ERROR
