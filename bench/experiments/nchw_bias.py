"""Experiment behind bench/NOTES.md change 10: what an NCHW conv's bias costs.

    python bench/experiments/nchw_bias.py --out DIR

The seed conv (N=64, 512->512, 3x3, pad 1, 28x28) and a VGG-style layer (N=64,
256->256, 3x3, 56x56) in NCHW, keep .5, with and without bias, at each precision,
side by side with dense cuDNN; every result checked against float64 F.conv2d on masked
weights first (the bias of the checked case has inf-free random values). Run it from
two builds to compare them: the timings are of whatever gwprune is importable.
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
    with open(os.path.join(args.out, "nchw_bias.csv"), "w", newline="") as handle:
        writer = csv.DictWriter(handle, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
