"""The facts recorded with every run: device, driver, library versions, flags, date."""

import datetime
import os
import platform
import re
import shutil
import subprocess

import torch

import gwprune


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({_cpu_model()})"


def device_slug(device: torch.device) -> str:
    """File-name-safe device name: 'cpu', 'nvidia-h100-80gb-hbm3'."""
    if device.type != "cuda":
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "-", device_name(device).lower()).strip("-")


def _nvidia_smi_driver() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        result = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    lines = result.stdout.strip().splitlines()
    return lines[0].strip() if lines else None


def _cuda_driver_api_version() -> str | None:
    """The CUDA version the driver supports, from libcuda (when nvidia-smi is missing)."""
    try:
        import ctypes

        version = ctypes.c_int()
        if ctypes.CDLL("libcuda.so.1").cuDriverGetVersion(ctypes.byref(version)) != 0:
            return None
    except (OSError, AttributeError):
        return None
    return f"CUDA driver API {version.value // 1000}.{version.value % 1000 // 10}"


def _triton_version() -> str:
    try:
        import triton
    except Exception:  # noqa: BLE001  (absent or broken: either way not used)
        return "not available"
    return triton.__version__


def collect(device: torch.device, timer_description: str, cudnn_benchmark: bool) -> dict:
    """Everything needed to tell two result sets apart (written to env.json)."""
    facts = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": device_name(device),
        "device_type": device.type,
        "gwprune": gwprune.__version__,
        "gwprune_cuda_kernels_compiled": gwprune.info()["CUDA kernels compiled"],
        "gwprune_cpu_kernels_compiled": gwprune.info()["CPU kernels compiled"],
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "triton": _triton_version(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "timing": timer_description,
        "tf32_flags_per_precision": "cudnn.allow_tf32 and cuda.matmul.allow_tf32 set to False "
        "for fp32 (strict IEEE), True for tf32, False for fp16/bf16; restored afterwards",
    }
    if device.type != "cuda":
        facts.update({"cpu_count": os.cpu_count()})
        return facts
    props = torch.cuda.get_device_properties(device)
    facts.update(
        {
            "compute_capability": f"{props.major}.{props.minor}",
            "gpu_memory_gib": round(props.total_memory / 2**30, 1),
            "sm_count": props.multi_processor_count,
            "driver": _nvidia_smi_driver() or _cuda_driver_api_version() or "unknown",
            "cudnn": torch.backends.cudnn.version(),
            "gwprune_workspace_mib": gwprune.get_workspace_limit() / 2**20,
            "cudnn_benchmark": cudnn_benchmark,
            "tf32_flags_at_start": {
                "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
                "cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            },
            "fp16_reduced_precision_reduction": (
                torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction
            ),
            "bf16_reduced_precision_reduction": (
                torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction
            ),
        }
    )
    return facts
