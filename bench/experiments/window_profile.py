"""Cycle counters of the persistent window kernel (bench/NOTES.md change 32): where a CTA's
time goes between its consumers' K loop, their waits for the producer, the epilogue, and the
producer's waits. Built with bench/experiments/window_profile.patch applied (clock64 counters
in the cursors, printed by CTA 0 and CTA gridDim / 2 at the end of each launch):

    git apply bench/experiments/window_profile.patch
    python setup.py build_ext --inplace && python bench/experiments/window_profile.py

Prints each layer's last launch's counters; timing-only (printf in the kernel). The patch
applies to the tree with two producer teams (from 3e40d47) and prints each team's thread 0;
change 32's counters were taken with its first form, on 5fcd5ec's one-team producer.
"""

import os
import sys

import torch

import gwprune

LAYERS = {
    "seed-.75": (64, 512, 512, 28, 0.75),
    "seed-.5": (64, 512, 512, 28, 0.5),
    "seed-.25": (64, 512, 512, 28, 0.25),
    "r50-128x28": (64, 128, 128, 28, 0.5),
    "vgg-512x14": (64, 512, 512, 14, 0.5),
}
os.environ["GWPRUNE_IMPLICIT_GATHER"] = "persistent"
for name in sys.argv[1:] or LAYERS:
    n, cin, cout, hw, keep = LAYERS[name]
    torch.manual_seed(0)
    x = torch.randn(n, cin, hw, hw, device="cuda", dtype=torch.float16)
    weight = torch.randn(cout, cin, 3, 3, device="cuda", dtype=torch.float16)
    keep_idx = torch.randperm(cin * 9, device="cuda")[: round(cin * 9 * keep)]
    packed = gwprune.pack_conv2d_weight(weight, keep_idx)
    for launch in range(3):
        torch.cuda.synchronize()
        print(f"== {name} launch {launch}", flush=True)
        gwprune.ops.conv2d_packed(x, packed, padding=1, backend="implicit")
        torch.cuda.synchronize()
