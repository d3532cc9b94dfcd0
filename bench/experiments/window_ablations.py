"""Timing-only ablations of the window kernel (bench/NOTES.md change 24): built with
bench/experiments/window_ablations.patch applied, GWPRUNE_WINDOW_ABLATE=0/1/2/3 skips the
window boxes (bit 0) and/or the consumers' element loads (bit 1). Outputs are wrong by
design for 1-3; only times are printed.

    git apply bench/experiments/window_ablations.patch   # experiment builds only
    pip install --no-build-isolation --no-deps . && python bench/experiments/window_ablations.py

Written in the session of 2026-12-03 (third), not yet run: that session's device time ran
out first.
"""

import os

import torch
from triton.testing import do_bench

import gwprune

print(torch.cuda.get_device_name(), torch.__version__)
torch.manual_seed(0)
n, c, co, h = 64, 512, 512, 28
x = torch.randn(n, c, h, h, device="cuda", dtype=torch.float16)
weight = torch.randn(co, c, 3, 3, device="cuda", dtype=torch.float16)
os.environ["GWPRUNE_IMPLICIT_GATHER"] = "windows"
print("keep ablate ms")
for keep in (0.75, 0.5, 0.25):
    kept = torch.randperm(c * 9)[: round(keep * c * 9)].sort().values.cuda()
    packed = gwprune.pack_conv2d_weight(weight, kept)
    for ablate in ("0", "1", "2", "3"):
        os.environ["GWPRUNE_WINDOW_ABLATE"] = ablate
        ms = do_bench(
            lambda packed=packed: gwprune.ops.conv2d_packed(
                x, packed, None, 1, 1, backend="implicit"
            ),
            warmup=10,
            rep=60,
            return_mode="median",
        )
        print(f"{keep} {ablate} {ms:.4f}", flush=True)
