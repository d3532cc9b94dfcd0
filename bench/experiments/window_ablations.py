"""Timing-only ablations of the window kernel (bench/NOTES.md changes 24-25): built with
bench/experiments/window_ablations.patch applied, GWPRUNE_WINDOW_ABLATE is a bit set of
what the kernel skips:
  1  the window boxes (the consumers read stale windows),
  2  the consumers' element loads (a constant A fragment),
  4  the weight copies after the first Stages (stale weight tiles),
  8  the epilogue (nothing is stored).
Outputs are wrong by design for every nonzero value; only times are printed, next to the
anchor (dense F.conv2d with round(keep * C) input channels, the faster layout, cuDNN
autotuned) of the same run.

    # experiment builds only:
    git checkout b48de09 && git apply bench/experiments/window_ablations.patch
    pip install --no-build-isolation --no-deps . && python bench/experiments/window_ablations.py
"""

import os

import torch
import torch.nn.functional as F
from triton.testing import do_bench

import gwprune

torch.backends.cudnn.benchmark = True
print(torch.cuda.get_device_name(), torch.__version__)
torch.manual_seed(0)
n, c, co, h = 64, 512, 512, 28
x = torch.randn(n, c, h, h, device="cuda", dtype=torch.float16)
weight = torch.randn(co, c, 3, 3, device="cuda", dtype=torch.float16)
os.environ["GWPRUNE_IMPLICIT_GATHER"] = "windows"
ablations = os.environ.get("ABLATIONS", "0,1,2,3,4,7,8,15").split(",")


def time_ms(fn):
    return do_bench(fn, warmup=10, rep=60, return_mode="median")


print("keep ablate ms")
for keep in (0.75, 0.5, 0.25, 0.03):
    kept_channels = round(keep * c)
    anchor = []
    for layout in (torch.contiguous_format, torch.channels_last):
        xa = x[:, :kept_channels].contiguous(memory_format=layout)
        wa = weight[:, :kept_channels].contiguous(memory_format=layout)
        anchor.append(time_ms(lambda xa=xa, wa=wa: F.conv2d(xa, wa, padding=1)))
    print(f"{keep} anchor {min(anchor):.4f}", flush=True)
    kept = torch.randperm(c * 9)[: round(keep * c * 9)].sort().values.cuda()
    packed = gwprune.pack_conv2d_weight(weight, kept)
    for ablate in ablations:
        os.environ["GWPRUNE_WINDOW_ABLATE"] = ablate
        ms = time_ms(
            lambda packed=packed: gwprune.ops.conv2d_packed(
                x, packed, None, 1, 1, backend="implicit"
            )
        )
        print(f"{keep} {ablate} {ms:.4f}", flush=True)
