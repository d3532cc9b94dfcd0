"""One implicit-GEMM call per layout on the seed conv (keep .5, or $KEEP; fp16), for a
profiler; NCHW once more per NCHW producer named on the command line
(GWPRUNE_IMPLICIT_GATHER):

ncu --kernel-name regex:conv_kernel python bench/experiments/implicit_profile_target.py rows
"""

import os
import sys

import torch

import gwprune

torch.manual_seed(0)
x = torch.randn(64, 512, 28, 28, device="cuda", dtype=torch.float16)
weight = torch.randn(512, 512, 3, 3, device="cuda", dtype=torch.float16)
keep = float(os.environ.get("KEEP", "0.5"))
keep_idx = torch.randperm(512 * 9, device="cuda")[: round(512 * 9 * keep)]
for layout in (torch.contiguous_format, torch.channels_last):
    packed = gwprune.pack_conv2d_weight(weight, keep_idx, layout)
    xl = x.contiguous(memory_format=layout)
    gwprune.ops.conv2d_packed(xl, packed, padding=1, backend="implicit")
    if layout == torch.contiguous_format:
        for gather in sys.argv[1:]:
            os.environ["GWPRUNE_IMPLICIT_GATHER"] = gather
            gwprune.ops.conv2d_packed(xl, packed, padding=1, backend="implicit")
            del os.environ["GWPRUNE_IMPLICIT_GATHER"]
torch.cuda.synchronize()
