"""Build gwprune and its compiled extension gwprune._C.

The extension is built with nvcc whenever torch has CUDA and a CUDA toolkit is
found, also on machines with no GPU; otherwise a CPU-only _C is built and the
reason is printed. Environment:

  GWPRUNE_FORCE_CPU=1        build the CPU-only extension even if CUDA is present
  TORCH_CUDA_ARCH_LIST       target architectures (default "8.0;9.0"); 9.0 is built as
                             sm_90a, the arch-specific target that the implicit-GEMM
                             kernels (wgmma, TMA) need; its code runs on the same GPUs
  CUDA_HOME / CUDA_PATH      toolkit root, when the nvcc on PATH is not in it
"""

import glob
import os
import re
import shutil
import sys
import sysconfig

from setuptools import find_packages, setup

DEFAULT_CUDA_ARCHS = "8.0;9.0"
ROOT = os.path.dirname(os.path.abspath(__file__))


def log(message):
    print(f"gwprune setup: {message}", file=sys.stderr)


def toolkit_root_from_nvcc(nvcc):
    """The toolkit root of an nvcc binary, seeing through wrapper scripts."""
    real = os.path.realpath(nvcc)
    root = os.path.dirname(os.path.dirname(real))
    if os.path.isfile(os.path.join(root, "include", "cuda_runtime.h")):
        return root
    try:
        with open(real, errors="ignore") as script:
            text = script.read(4096)
    except OSError:
        return None
    match = re.search(r"(/\S+)/bin/nvcc\b", text)
    if match and os.path.isfile(os.path.join(match.group(1), "include", "cuda_runtime.h")):
        return match.group(1)
    return None


def find_cuda_home():
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            return os.environ[var]
    nvcc = shutil.which("nvcc")
    if nvcc:
        root = toolkit_root_from_nvcc(nvcc)
        if root:
            return root
    candidates = sorted(glob.glob("/usr/local/cuda*/bin/nvcc"), reverse=True)
    return os.path.dirname(os.path.dirname(candidates[0])) if candidates else None


def nvidia_wheel_dirs(sub):
    """Directories of NVIDIA's pip wheels (nvidia/cu13/include, ...) in site-packages."""
    site = sysconfig.get_paths()["purelib"]
    return sorted(glob.glob(os.path.join(site, "nvidia", "*", sub)))


def find_cublas(cuda_home):
    """(include dir, [libcublas, libcublasLt]): the toolkit's, else the pip wheel's."""
    include_dirs = [os.path.join(cuda_home, "include")] + nvidia_wheel_dirs("include")
    include = next((d for d in include_dirs if os.path.isfile(os.path.join(d, "cublas_v2.h"))), None)
    lib_dirs = [os.path.join(cuda_home, d) for d in ("lib64", "lib")] + nvidia_wheel_dirs("lib")
    libraries = []
    for name in ("libcublas.so*", "libcublasLt.so*"):
        found = [p for d in lib_dirs for p in sorted(glob.glob(os.path.join(d, name)))]
        if not found:
            return include, None
        libraries.append(found[0])
    return include, libraries


def cuda_build_plan():
    """Returns (cuda_home, why_not): cuda_home is None when CUDA is skipped."""
    if os.environ.get("GWPRUNE_FORCE_CPU") == "1":
        return None, "GWPRUNE_FORCE_CPU=1"
    import torch

    if torch.version.cuda is None:
        return None, f"torch {torch.__version__} is a CPU-only build"
    cuda_home = find_cuda_home()
    if cuda_home is None or not os.path.isfile(os.path.join(cuda_home, "bin", "nvcc")):
        return None, "no CUDA toolkit (nvcc) found; set CUDA_HOME"
    return cuda_home, None


def hopper_as_sm90a(archs: str) -> str:
    """TORCH_CUDA_ARCH_LIST with 9.0 replaced by 9.0a (wgmma and setmaxnreg exist only
    there; sm_90 machine code runs on no GPU that sm_90a code does not)."""
    parts = [a for a in re.split(r"[;\s]+", archs) if a]
    return ";".join("9.0a" + a[3:] if a in ("9.0", "9.0+PTX") else a for a in parts)


def extensions():
    cuda_home, why_not = cuda_build_plan()
    if cuda_home is not None:
        # torch.utils.cpp_extension reads CUDA_HOME when imported.
        os.environ["CUDA_HOME"] = cuda_home
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_CUDA_ARCHS)
    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

    # The CPU kernels are in every build, CPU-only or CUDA.
    sources = ["csrc/gwprune.cpp", "csrc/conv2d.cpp", "csrc/linear.cpp", "csrc/pack_cache.cpp"]
    sources += sorted(glob.glob("csrc/cpu/*.cpp"))
    cxx_flags = ["-O3"]
    if cuda_home is None:
        log(f"building the CPU-only extension: {why_not}; CUDA tensors will use the reference path")
        ext = CppExtension("gwprune._C", sources, extra_compile_args={"cxx": cxx_flags})
        return [ext], BuildExtension

    cublas_include, cublas_libs = find_cublas(cuda_home)
    if cublas_include is None or cublas_libs is None:
        raise RuntimeError(
            f"gwprune: CUDA toolkit at {cuda_home} but no cuBLAS/cuBLASLt headers or libraries found "
            "(install the toolkit's cuBLAS or the nvidia-cublas wheel), or set GWPRUNE_FORCE_CPU=1"
        )
    archs = hopper_as_sm90a(os.environ["TORCH_CUDA_ARCH_LIST"])
    os.environ["TORCH_CUDA_ARCH_LIST"] = archs
    # Digits and the arch-specific 'a' only: the tag survives every shell unquoted, and
    # the implicit path reads "90a" from it (csrc/cuda/implicit/implicit_conv_sm90.cu).
    arch_tag = "_".join(
        re.sub(r"[^0-9a]", "", a.split("+")[0]) for a in re.split(r"[;\s]+", archs) if a
    )
    log(f"building CUDA kernels with {cuda_home} for TORCH_CUDA_ARCH_LIST={archs!r}")
    sources += sorted(glob.glob("csrc/cuda/*.cu")) + sorted(glob.glob("csrc/cuda/*.cpp"))
    sources += sorted(glob.glob("csrc/cuda/implicit/*.cu"))
    macros = [("GWPRUNE_WITH_CUDA", None), ("GWPRUNE_CUDA_ARCHS", arch_tag)]
    ext = CUDAExtension(
        "gwprune._C",
        sources,
        include_dirs=[cublas_include],
        define_macros=macros,
        extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "--expt-relaxed-constexpr"]},
        extra_link_args=cublas_libs,
    )
    return [ext], BuildExtension


ext_modules, build_ext = extensions()

setup(
    packages=find_packages("python"),
    package_dir={"": "python"},
    ext_modules=ext_modules,
    cmdclass={"build_ext": build_ext.with_options(use_ninja=True)},
)
