"""Where a channels_last CPU conv's time goes: the whole packed op against its GEMM alone.

    python bench/experiments/cpu_channels_last_split.py [--threads 2]

For the CPU preset's channels_last layers (fp32, keep .5 and .25): gwprune.ops.conv2d_packed
(gather + GEMM on the MKL-packed weight), the same GEMM alone on the operand gathered
beforehand (torch.ops.mkl._mkl_linear on the packed copy, as the op runs it), and dense
F.conv2d; interleaved rounds, medians in ms. gather ~= op - GEMM.
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import gwprune

LAYERS = {  # name: (batch, C, Cout, H, kernel, padding)
    "r50-1x1-1024-14": (2, 1024, 256, 14, 1, 0),
    "r50-3x3-256-14": (2, 256, 256, 14, 3, 1),
}


def interleaved(fns, rounds=40):
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            begin = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - begin) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def split(x, packed, bias, padding, dense_w):
    """Interleaved medians of the op, its GEMM alone and dense, for one layer."""
    rows = x.shape[0] * x.shape[2] * x.shape[3]  # stride 1, 'same' or 1x1: output pixels
    cols = torch.randn(rows, packed.weight.shape[1])
    mkl_w = torch.ops.mkl._mkl_reorder_linear_weight(packed.weight, rows)
    with torch.no_grad():
        return interleaved(
            {
                "op": lambda: gwprune.ops.conv2d_packed(x, packed, bias, 1, padding),
                "gemm": lambda: torch.ops.mkl._mkl_linear(cols, mkl_w, packed.weight, bias, rows),
                "dense": lambda: F.conv2d(x, dense_w, bias, 1, padding),
            }
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    for name, (n, c, co, h, k, p) in LAYERS.items():
        x = torch.randn(n, c, h, h).contiguous(memory_format=torch.channels_last)
        weight = torch.randn(co, c, k, k)
        bias = torch.randn(co)
        dense_w = weight.contiguous(memory_format=torch.channels_last)
        for keep in (0.5, 0.25):
            keep_idx = torch.randperm(c * k * k)[: round(keep * c * k * k)]
            packed = gwprune.pack_conv2d_weight(weight, keep_idx, torch.channels_last)
            ms = split(x, packed, bias, p, dense_w)
            print(
                f"{name} keep {keep}: op {ms['op']:.3f}  gemm {ms['gemm']:.3f}  "
                f"gather ~{ms['op'] - ms['gemm']:.3f}  dense {ms['dense']:.3f} ms"
                f"  (op/dense {ms['op'] / ms['dense']:.2f}x)",
                flush=True,
            )


if __name__ == "__main__":
    main()
