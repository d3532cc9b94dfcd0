"""Experiment behind bench/NOTES.md changes 10-11: what a bias costs where no epilogue adds it.

    python bench/experiments/nchw_bias.py --out DIR

The seed conv (N=64, 512->512, 3x3, pad 1, 28x28) and a VGG-style layer (N=64,
256->256, 3x3, 56x56) in NCHW, keep .5, with and without bias, at each precision, side by
side with dense cuDNN; then the strict-fp32 cases without a cuBLASLt epilogue: the seed
conv in channels_last and the BERT FFN linear (8192 x 768 -> 3072). Every result is
checked against float64 on masked weights first. Run it from two builds to compare them:
the timings are of whatever gwprune is importable.
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
    "fp32": (torch.float32, False),
    "tf32": (torch.float32, True),
    "fp16": (torch.float16, False),
    "bf16": (torch.bfloat16, False),
}
TOLERANCE = {"fp32": 1e-5, "tf32": 5e-3, "fp16": 1e-2, "bf16": 1e-2}
LAYERS = {"seed-conv": (64, 512, 28), "vgg-256-56": (64, 256, 56)}


def timed_with_and_without_bias(row, run, reference, tolerance):
    for name, with_bias in (("gwprune_bias_ms", True), ("gwprune_no_bias_ms", False)):
        fn = partial(run, with_bias)
        ref = reference(with_bias)
        error = float((fn().double() - ref).norm() / ref.norm())
        if not error <= tolerance:
            sys.exit(f"{row} {name}: relative error {error:.2e}")
        row[name] = do_bench(fn, warmup=25, rep=100, return_mode="median")
        row[name.replace("_ms", "_error")] = f"{error:.1e}"
    print(row, flush=True)
    return row


def strict_fp32_rows():
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    x = torch.randn(64, 512, 28, 28, device="cuda").contiguous(memory_format=torch.channels_last)
    weight = torch.randn(512, 512, 3, 3, device="cuda") / 48
    bias = torch.randn(512, device="cuda")
    keep_idx = torch.randperm(4608, device="cuda")[:2304]
    packed = gwprune.pack_conv2d_weight(weight, keep_idx, torch.channels_last)
    masked = gwprune.mask_weight(weight, keep_idx).double()
    conv_row = {"layer": "seed-conv-channels-last", "precision": "fp32"}
    conv_row["dense_bias_ms"] = do_bench(
        partial(F.conv2d, x, weight, bias, padding=1), return_mode="median"
    )
    rows = [
        timed_with_and_without_bias(
            conv_row,
            lambda b: gwprune.ops.conv2d_packed(x, packed, bias if b else None, padding=1),
            lambda b: F.conv2d(x.double(), masked, bias.double() if b else None, padding=1),
            TOLERANCE["fp32"],
        )
    ]
    xl = torch.randn(8192, 768, device="cuda")
    wl = torch.randn(3072, 768, device="cuda") / 28
    bl = torch.randn(3072, device="cuda")
    keep_l = torch.randperm(768, device="cuda")[:384]
    packed_l = gwprune.pack_linear_weight(wl, keep_l)
    masked_l = gwprune.mask_weight(wl, keep_l).double()
    linear_row = {"layer": "bert-ffn", "precision": "fp32"}
    linear_row["dense_bias_ms"] = do_bench(partial(F.linear, xl, wl, bl), return_mode="median")
    rows.append(
        timed_with_and_without_bias(
            linear_row,
            lambda b: gwprune.ops.linear_packed(xl, packed_l, bl if b else None),
            lambda b: F.linear(xl.double(), masked_l, bl.double() if b else None),
            TOLERANCE["fp32"],
        )
    )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.backends.cudnn.benchmark = True
    rows = []
    for precision, (dtype, tf32) in PRECISIONS.items():
        torch.backends.cudnn.allow_tf32 = tf32
        for layer, (n, c, hw) in LAYERS.items():
            x = torch.randn(n, c, hw, hw, device="cuda", dtype=dtype)
            weight = torch.randn(c, c, 3, 3, device="cuda", dtype=dtype) / (9 * c) ** 0.5
            bias = torch.randn(c, device="cuda", dtype=dtype)
            keep_idx = torch.randperm(9 * c, device="cuda")[: 9 * c // 2]
            packed = gwprune.pack_conv2d_weight(weight, keep_idx)
            masked = gwprune.mask_weight(weight, keep_idx).double()
            row = {"layer": layer, "precision": precision}
            row["dense_bias_ms"] = do_bench(
                partial(F.conv2d, x, weight, bias, padding=1), return_mode="median"
            )
            for name, b in (("gwprune_bias_ms", bias), ("gwprune_no_bias_ms", None)):
                fn = partial(gwprune.ops.conv2d_packed, x, packed, b, padding=1)
                ref = F.conv2d(x.double(), masked, None if b is None else b.double(), padding=1)
                error = float((fn().double() - ref).norm() / ref.norm())
                if not error <= TOLERANCE[precision]:
                    sys.exit(f"{layer} {precision} {name}: relative error {error:.2e}")
                row[name] = do_bench(fn, warmup=25, rep=100, return_mode="median")
                row[name.replace("_ms", "_error")] = f"{error:.1e}"
            print(row, flush=True)
            rows.append(row)
    rows += strict_fp32_rows()
    with open(os.path.join(args.out, "nchw_bias.csv"), "w", newline="") as handle:
        writer = csv.DictWriter(handle, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
