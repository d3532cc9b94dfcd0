"""Process-wide settings: the workspace cap of the CUDA ops and the default conv backend."""

import math
import os

_DEFAULT_WORKSPACE_BYTES = 256 * 2**20

# The NCHW producers of the implicit conv that GWPRUNE_IMPLICIT_GATHER can force, for tests
# and benchmarks (nchw_producer in csrc/cuda/implicit/implicit_conv_kernel.cuh checks the
# name; one that does not take a call falls back to the row gather).
IMPLICIT_NCHW_PRODUCERS = (
    "rows",
    "runs",
    "pairs",
    "lines",
    "async-lines",
    "windows",
    "staged",
    "split",
    "persistent",
    "tall",
)
_MAX_WORKSPACE_BYTES = 2**63 - 1  # the C++ ops take it as int64


def _initial_workspace_bytes() -> int:
    value = os.environ.get("GWPRUNE_WORKSPACE_MB")
    if value is None:
        return _DEFAULT_WORKSPACE_BYTES
    try:
        megabytes = float(value)
    except ValueError:
        raise ValueError(f"GWPRUNE_WORKSPACE_MB must be a number, got {value!r}") from None
    if not math.isfinite(megabytes) or megabytes <= 0:
        raise ValueError(f"GWPRUNE_WORKSPACE_MB must be a positive number, got {value!r}")
    nbytes = int(megabytes * 2**20)
    if not 1 <= nbytes <= _MAX_WORKSPACE_BYTES:
        raise ValueError(
            f"GWPRUNE_WORKSPACE_MB must give between 1 byte and 2^63 - 1 bytes, got {value!r}"
        )
    return nbytes


_workspace_bytes = _initial_workspace_bytes()


def set_workspace_limit(nbytes: int) -> None:
    """Cap the extra device memory one CUDA op may take for its compacted buffer.

    The batch (or, for a single huge image, its pixels) is processed in chunks
    that fit the cap; a smaller cap saves memory and costs speed (on an H200,
    seed conv layer, TF32, keep 0.5, channels_last: 0.66 ms at 64 MiB, 0.57 at
    256 MiB, 0.55 at 1 GiB; bench/NOTES.md). Default 256 MiB, or
    ``GWPRUNE_WORKSPACE_MB``.
    """
    if isinstance(nbytes, bool) or not isinstance(nbytes, int):
        raise TypeError(f"nbytes must be an int, got {type(nbytes).__name__}")
    if not 1 <= nbytes <= _MAX_WORKSPACE_BYTES:
        raise ValueError(f"nbytes must be between 1 and 2^63 - 1, got {nbytes}")
    global _workspace_bytes
    _workspace_bytes = nbytes


def get_workspace_limit() -> int:
    """The current workspace cap in bytes (see set_workspace_limit)."""
    return _workspace_bytes


# ---- conv backend -----------------------------------------------------------------------

CONV_BACKENDS = ("auto", "implicit", "explicit")


def _checked_conv_backend(backend, what: str) -> str:
    if backend not in CONV_BACKENDS:
        raise ValueError(f"gwprune: {what} must be one of {CONV_BACKENDS}, got {backend!r}")
    return backend


_conv_backend = _checked_conv_backend(
    os.environ.get("GWPRUNE_CONV_BACKEND", "auto"), "GWPRUNE_CONV_BACKEND"
)


def set_conv_backend(backend: str) -> None:
    """Which CUDA path group-wise convs take when a call does not say (``backend=None``).

    ``"auto"`` (default, or ``GWPRUNE_CONV_BACKEND``): the rule of docs/design.md; the
    implicit GEMM on fp16 / bf16 NCHW inputs with at least 4096 output pixels in the batch
    and 512 kept columns, where it measured faster, else the explicit gather + cuBLAS path
    (``gwprune.autotune`` times both per layer). ``"implicit"``: the implicit GEMM
    (sm_90 GPU; fp16, bf16 or TF32), raising where it cannot run. ``"explicit"``: gather
    into a buffer, then cuBLAS. CPU tensors ignore it.
    """
    global _conv_backend
    _conv_backend = _checked_conv_backend(backend, "backend")


def get_conv_backend() -> str:
    """The default conv backend (see set_conv_backend)."""
    return _conv_backend


def resolve_conv_backend(backend) -> str:
    """A call's ``backend`` argument, None meaning the default."""
    return _conv_backend if backend is None else _checked_conv_backend(backend, "backend")
