"""Experiment behind bench/NOTES.md change 9: where a small-batch call spends its time.

    python bench/experiments/small_batch.py --out DIR

Target P4 asks for N=1 (512->512, 3x3, 14x14, keep .5) faster than dense in every
precision; at that size every call is a few tens of microseconds, so the gather's
parallelism and cuBLAS's choice of kernel decide it. For that conv (both layouts, with
and without bias) and the 64-row linear 4096->4096 this times, side by side at each
precision: dense cuDNN/cuBLAS, the compacted-GEMM floor and gwprune; then it lists
the kernels of one gwprune call with their device time (torch.profiler). Every gwprune
result is checked against float64 on masked weights before it is timed.
"""

import argparse
import csv
import os
import sys
from functools import partial

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile
from triton.testing import do_bench

import gwprune

PRECISIONS = {
    "fp32": (torch.float32, False),
    "tf32": (torch.float32, True),
    "fp16": (torch.float16, False),
    "bf16": (torch.bfloat16, False),
}
TOLERANCE = {"fp32": 1e-5, "tf32": 5e-3, "fp16": 1e-2, "bf16": 1e-2}


def time_ms(fn) -> float:
    return float(do_bench(fn, warmup=25, rep=200, return_mode="median"))


def host_us(fn, calls: int = 2000) -> float:
    """Host time per call when the GPU is not the bottleneck (launches queue up)."""
    import time

    fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    elapsed = time.perf_counter() - start
    torch.cuda.synchronize()
    return elapsed / calls * 1e6


def kernel_split(fn) -> str:
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(10):
            fn()
        torch.cuda.synchronize()
    parts = []
    for event in prof.key_averages():
        if event.device_type == torch.autograd.DeviceType.CUDA and event.count:
            parts.append(f"{event.key[:60]}: {event.device_time_total / event.count:.1f} us")
    return "; ".join(parts)


def checked(out, ref, precision, what):
    error = float((out.double() - ref).norm() / ref.norm())
    if not error <= TOLERANCE[precision]:
        sys.exit(f"{what} {precision}: relative error {error:.2e} over {TOLERANCE[precision]}")


def conv_cases(precision, keep):
    dtype, _ = PRECISIONS[precision]
    x = torch.randn(1, 512, 14, 14, device="cuda", dtype=dtype)
    weight = torch.randn(512, 512, 3, 3, device="cuda", dtype=dtype) / 48
    bias = torch.randn(512, device="cuda", dtype=dtype)
    keep_idx = torch.randperm(512 * 9, device="cuda")[: int(keep * 512 * 9)]
    masked = gwprune.mask_weight(weight, keep_idx)
    for layout, xin in (("nchw", x), ("cl", x.contiguous(memory_format=torch.channels_last))):
        packed = gwprune.pack_conv2d_weight(
            weight, keep_idx, torch.channels_last if layout == "cl" else torch.contiguous_format
        )
        yield f"dense-{layout}", partial(F.conv2d, xin, weight, bias, padding=1), None
        for with_bias in (True, False):
            b = bias if with_bias else None
            fn = partial(gwprune.ops.conv2d_packed, xin, packed, b, padding=1)
            ref = F.conv2d(
                x.double(), masked.double(), None if b is None else b.double(), padding=1
            )
            yield f"gwprune-{layout}{'-bias' if with_bias else ''}", fn, ref
    cols = torch.randn(196, packed.weight.shape[1], device="cuda", dtype=dtype)
    yield "floor", partial(torch.mm, cols, packed.weight.t()), None


def linear_cases(precision, keep):
    dtype, _ = PRECISIONS[precision]
    x = torch.randn(64, 4096, device="cuda", dtype=dtype)
    weight = torch.randn(4096, 4096, device="cuda", dtype=dtype) / 64
    bias = torch.randn(4096, device="cuda", dtype=dtype)
    keep_idx = torch.randperm(4096, device="cuda")[: int(keep * 4096)]
    packed = gwprune.pack_linear_weight(weight, keep_idx)
    ref = F.linear(x.double(), gwprune.mask_weight(weight, keep_idx).double(), bias.double())
    yield "dense", partial(F.linear, x, weight, bias), None
    yield "gwprune-bias", partial(gwprune.ops.linear_packed, x, packed, bias), ref
    xg = torch.randn(64, packed.weight.shape[1], device="cuda", dtype=dtype)
    yield "floor", partial(torch.mm, xg, packed.weight.t()), None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--keep", type=float, default=0.5)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.backends.cudnn.benchmark = True
    with open(os.path.join(args.out, "small_batch.csv"), "w", newline="") as handle:
        table = csv.writer(handle)
        table.writerow(["layer", "precision", "provider", "ms", "host_us", "kernels"])
        for precision, (_, tf32) in PRECISIONS.items():
            torch.backends.cudnn.allow_tf32 = tf32
            torch.backends.cuda.matmul.allow_tf32 = tf32
            for layer, cases in (("conv-n1-14x14", conv_cases), ("linear-64x4096", linear_cases)):
                for provider, fn, ref in cases(precision, args.keep):
                    if ref is not None:
                        checked(fn(), ref, precision, f"{layer} {provider}")
                    ms = time_ms(fn)
                    host = host_us(fn)
                    kernels = kernel_split(fn) if provider.startswith("gwprune") else ""
                    table.writerow(
                        [layer, precision, provider, f"{ms:.5f}", f"{host:.1f}", kernels]
                    )
                    handle.flush()
                    print(
                        f"{layer} {precision} {provider}: {ms * 1e3:.1f} us "
                        f"(host {host:.1f} us)  {kernels}",
                        flush=True,
                    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
