"""Experiment behind bench/NOTES.md: what the workspace cap costs and where the time
of one gwprune call goes, side by side in one process on one GPU.

    python bench/experiments/chunk_sweep.py --out DIR [--quick]

For the seed conv layer (N=64, 512->512, 3x3, pad 1, 28x28, with bias) and the BERT
FFN linear (8192x768->3072, with and without bias) it times, at each precision: dense
(cuDNN NCHW / channels_last, cuBLAS), the compacted-GEMM floor, and gwprune at several
workspace caps in both layouts (weights packed for the layout they see); then a
torch.profiler split of one gwprune call into gather and GEMM kernel time. Every
gwprune result is checked against the dense one on masked weights before it is timed.
Writes sweep.csv and prints a table.
"""

import argparse
import csv
import os
import sys
from functools import partial

import torch
import torch.nn.functional as F
from triton.testing import do_bench

import gwprune

PRECISIONS = {
    "tf32": (torch.float32, True),
    "fp16": (torch.float16, False),
    "bf16": (torch.bfloat16, False),
    "fp32": (torch.float32, False),
}
TOLERANCE = {"tf32": 1e-2, "fp16": 2e-2, "bf16": 3e-2, "fp32": 1e-4}


def set_tf32(enabled: bool) -> None:
    torch.backends.cudnn.allow_tf32 = enabled
    torch.backends.cuda.matmul.allow_tf32 = enabled


def time_ms(fn) -> float:
    return float(do_bench(fn, warmup=25, rep=100, return_mode="median"))


def check(out, ref, precision, what):
    error = float((out.double() - ref.double()).norm() / ref.double().norm())
    if not error <= TOLERANCE[precision]:
        sys.exit(f"{what}: relative error {error:.2e} over {TOLERANCE[precision]}")


def conv_rows(precision, keeps, caps, writer):
    dtype, tf32 = PRECISIONS[precision]
    set_tf32(tf32)
    n, c, co, hw = 64, 512, 512, 28
    x = torch.randn(n, c, hw, hw, device="cuda", dtype=dtype)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(co, c, 3, 3, device="cuda", dtype=dtype) / 48
    bias = torch.randn(co, device="cuda", dtype=dtype)
    dense = time_ms(lambda: F.conv2d(x, weight, bias, padding=1))
    dense_cl = time_ms(lambda: F.conv2d(x_cl, weight, bias, padding=1))
    for keep in keeps:
        keep_idx = torch.randperm(c * 9, device="cuda")[: int(keep * c * 9)]
        packed_for = {
            "nchw": gwprune.pack_conv2d_weight(weight, keep_idx),
            "channels_last": gwprune.pack_conv2d_weight(weight, keep_idx, torch.channels_last),
        }
        ref = F.conv2d(x, gwprune.mask_weight(weight, keep_idx), bias, padding=1)
        kept = packed_for["nchw"].weight.shape[1]
        cols = torch.randn(n * hw * hw, kept, device="cuda", dtype=dtype)
        floor = time_ms(partial(torch.mm, cols, packed_for["nchw"].weight.t()))
        del cols
        for cap in caps:
            gwprune.set_workspace_limit(cap * 2**20)
            for layout, xin in (("nchw", x), ("channels_last", x_cl)):
                packed = packed_for[layout]
                out = gwprune.ops.conv2d_packed(xin, packed, bias, padding=1)
                check(out, ref, precision, f"conv {precision} {layout} keep {keep}")
                ms = time_ms(partial(gwprune.ops.conv2d_packed, xin, packed, bias, padding=1))
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
                out = gwprune.ops.conv2d_packed(xin, packed, bias, padding=1)
                torch.cuda.synchronize()
                extra = torch.cuda.max_memory_allocated() - base - out.numel() * out.element_size()
                del out
                writer.writerow(
                    dict(
                        layer="seed-conv",
                        precision=precision,
                        keep=keep,
                        layout=layout,
                        cap_mib=cap,
                        gwprune_ms=round(ms, 4),
                        floor_ms=round(floor, 4),
                        dense_nchw_ms=round(dense, 4),
                        dense_cl_ms=round(dense_cl, 4),
                        extra_mib=round(extra / 2**20, 1),
                    )
                )


def linear_rows(precision, keeps, writer):
    dtype, tf32 = PRECISIONS[precision]
    set_tf32(tf32)
    m, k, n = 8192, 768, 3072
    x = torch.randn(m, k, device="cuda", dtype=dtype)
    weight = torch.randn(n, k, device="cuda", dtype=dtype) / 28
    bias = torch.randn(n, device="cuda", dtype=dtype)
    gwprune.set_workspace_limit(256 * 2**20)
    for with_bias in (False, True):
        b = bias if with_bias else None
        dense = time_ms(partial(F.linear, x, weight, b))
        for keep in keeps:
            keep_idx = torch.randperm(k, device="cuda")[: int(keep * k)]
            packed = gwprune.pack_linear_weight(weight, keep_idx)
            ref = F.linear(x, gwprune.mask_weight(weight, keep_idx), b)
            check(gwprune.ops.linear_packed(x, packed, b), ref, precision, "linear")
            gathered = torch.randn(m, packed.weight.shape[1], device="cuda", dtype=dtype)
            floor = time_ms(partial(F.linear, gathered, packed.weight, b))
            ms = time_ms(partial(gwprune.ops.linear_packed, x, packed, b))
            writer.writerow(
                dict(
                    layer=f"bert-ffn{'+bias' if with_bias else ''}",
                    precision=precision,
                    keep=keep,
                    layout="rows",
                    cap_mib=256,
                    gwprune_ms=round(ms, 4),
                    floor_ms=round(floor, 4),
                    dense_nchw_ms=round(dense, 4),
                    dense_cl_ms="",
                    extra_mib="",
                )
            )


def kernel_split(precision, keep, cap):
    """Per-kernel CUDA time of one gwprune conv call (profiler), NCHW and channels_last."""
    dtype, tf32 = PRECISIONS[precision]
    set_tf32(tf32)
    gwprune.set_workspace_limit(cap * 2**20)
    x = torch.randn(64, 512, 28, 28, device="cuda", dtype=dtype)
    weight = torch.randn(512, 512, 3, 3, device="cuda", dtype=dtype)
    keep_idx = torch.randperm(4608, device="cuda")[: int(keep * 4608)]
    lines = []
    for layout, xin, memory_format in (
        ("nchw", x, torch.contiguous_format),
        ("channels_last", x.contiguous(memory_format=torch.channels_last), torch.channels_last),
    ):
        packed = gwprune.pack_conv2d_weight(weight, keep_idx, memory_format)
        for _ in range(3):
            gwprune.ops.conv2d_packed(xin, packed, None, padding=1)
        torch.cuda.synchronize()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                gwprune.ops.conv2d_packed(xin, packed, None, padding=1)
            torch.cuda.synchronize()
        lines.append(f"--- {precision} keep {keep} cap {cap} MiB {layout} (5 calls)")
        lines.append(
            prof.key_averages().table(
                sort_by="cuda_time_total", row_limit=8, max_name_column_width=70
            )
        )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--quick", action="store_true", help="TF32 and fp16 only")
    parser.add_argument("--caps", default="32,64,256,1024", help="workspace caps, MiB")
    parser.add_argument("--keeps", default="0.75,0.5,0.25")
    parser.add_argument("--conv-only", action="store_true", help="no linear rows, no profile")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(0)
    fields = [
        "layer",
        "precision",
        "keep",
        "layout",
        "cap_mib",
        "gwprune_ms",
        "floor_ms",
        "dense_nchw_ms",
        "dense_cl_ms",
        "extra_mib",
    ]
    precisions = ["tf32", "fp16"] if args.quick else ["tf32", "fp16", "bf16", "fp32"]
    caps = [int(c) for c in args.caps.split(",")]
    keeps = [float(k) for k in args.keeps.split(",")]
    with open(os.path.join(args.out, "sweep.csv"), "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for precision in precisions:
            conv_rows(precision, keeps, caps, writer)
            if not args.conv_only:
                linear_rows(precision, keeps, writer)
            handle.flush()
            print(f"done {precision}", flush=True)
    if not args.conv_only:
        with open(os.path.join(args.out, "kernel_split.txt"), "w") as handle:
            for precision in ("tf32", "fp16"):
                handle.write(kernel_split(precision, 0.5, 256) + "\n")
                handle.write(kernel_split(precision, 0.5, 64) + "\n")
    with open(os.path.join(args.out, "sweep.csv")) as handle:
        print(handle.read())


if __name__ == "__main__":
    main()
