"""Experiment behind bench/NOTES.md change 10: how cuBLAS's speed depends on K's alignment.

    python bench/experiments/gemm_k_alignment.py --out DIR

gwprune's GEMMs reduce over K' kept groups (padded to a multiple of the packing
alignment), plus 8 bias rows on the NCHW bias path. Both GEMM forms of the seed conv
(N=64, 512 out channels, 28x28) are timed (do_bench median) for K from 2240 to 2376 in
steps of 8, at TF32, fp16 and bf16: NCHW, out[n] = W [512, K] @ cols[n] [K, 784] batched
over 64 images, and channels_last, one [50176, K] @ [K, 512] GEMM. Writes
gemm_k_alignment.csv.
"""

import argparse
import csv
import os
from functools import partial

import torch
from triton.testing import do_bench

PRECISIONS = (
    ("tf32", torch.float32, True),
    ("fp16", torch.float16, False),
    ("bf16", torch.bfloat16, False),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "gemm_k_alignment.csv"), "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["precision", "k", "k_mod_64", "nchw_batched_ms", "channels_last_flat_ms"])
        for name, dtype, tf32 in PRECISIONS:
            torch.backends.cuda.matmul.allow_tf32 = tf32
            for k in range(2240, 2377, 8):
                weight = torch.randn(512, k, device="cuda", dtype=dtype)
                cols = torch.randn(64, k, 784, device="cuda", dtype=dtype)
                batched = do_bench(partial(torch.matmul, weight, cols), return_mode="median")
                rows = torch.randn(64 * 784, k, device="cuda", dtype=dtype)
                flat = do_bench(partial(torch.mm, rows, weight.t()), return_mode="median")
                writer.writerow([name, k, k % 64, f"{batched:.4f}", f"{flat:.4f}"])
                print(name, k, f"batched {batched:.4f} flat {flat:.4f}", flush=True)


if __name__ == "__main__":
    main()
