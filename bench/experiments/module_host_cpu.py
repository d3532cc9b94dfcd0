"""Python-side host time of gwprune's eager calls and module forwards, without a GPU.

    python bench/experiments/module_host_cpu.py [--calls 20000] [--repeats 9]

A CPU-only build runs the same Python as a CUDA call up to gwprune._C's eager entry (the
CPU kernels are compiled, so ops._eager_call takes the entry for CPU tensors too). On a
tiny layer the CPU kernel is a few microseconds, so timing each way of running the layer
against a direct call of the entry it ends in separates gwprune's Python from the C++
checks and the compute, which a CUDA call replaces with its launches:

- entry: gwprune._C.*_packed_eager called directly with the module's tensors (the floor);
- module: GroupwiseConv2d / GroupwiseLinear forward;
- packed: ops.conv2d_packed / ops.linear_packed on module.packed();
- raw: ops.conv2d / ops.linear on the dense weight and keep_idx (a pack-cache hit);
- dense: F.conv2d / F.linear on the masked weight, for scale only (another kernel).

Per call, min over repeats of --calls calls, under torch.no_grad(), one thread. "over
entry" is the call's time minus the entry's: what gwprune's Python adds. For a before /
after comparison run this file once per build (PYTHONPATH pointing at each), interleaved a
few times, and compare the minima: both builds cannot be imported into one process (their
torch.library ops share names).
"""

import argparse
import timeit

import torch
import torch.nn as nn
import torch.nn.functional as F

import gwprune
from gwprune import ops
from gwprune._extension import _C


def per_call_us(fn, calls: int, repeats: int) -> float:
    fn()
    return min(timeit.repeat(fn, number=calls, repeat=repeats)) / calls * 1e6


def conv_calls():
    conv = nn.Conv2d(8, 8, 3, padding=1)
    keep = torch.randperm(72)[:36]
    module = gwprune.GroupwiseConv2d.from_dense(conv, keep)
    x = torch.randn(1, 8, 6, 6)
    dense_weight = gwprune.mask_weight(conv.weight.detach(), keep)
    bias = conv.bias.detach()
    packed = module.packed()
    ws = gwprune.get_workspace_limit()
    weight = conv.weight.detach()
    tensors = (packed.weight, packed.group_idx, bias)
    return {
        "entry": lambda: _C.conv2d_packed_eager(
            x, *tensors, 8, (3, 3), 1, 1, 1, ws, "auto", "none"
        ),
        "module": lambda: module(x),
        "packed": lambda: ops.conv2d_packed(x, packed, bias, 1, 1),
        "raw": lambda: ops.conv2d(x, weight, keep, bias, 1, 1),
        "dense": lambda: F.conv2d(x, dense_weight, bias, 1, 1),
    }


def linear_calls():
    linear = nn.Linear(32, 32)
    keep = torch.randperm(32)[:16]
    module = gwprune.GroupwiseLinear.from_dense(linear, keep)
    x = torch.randn(1, 32)
    dense_weight = gwprune.mask_weight(linear.weight.detach(), keep)
    bias = linear.bias.detach()
    packed = module.packed()
    ws = gwprune.get_workspace_limit()
    weight = linear.weight.detach()
    tensors = (packed.weight, packed.feature_idx, bias)
    return {
        "entry": lambda: _C.linear_packed_eager(x, *tensors, 32, ws, "none"),
        "module": lambda: module(x),
        "packed": lambda: ops.linear_packed(x, packed, bias),
        "raw": lambda: ops.linear(x, weight, keep, bias),
        "dense": lambda: F.linear(x, dense_weight, bias),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    with torch.no_grad():
        layers = (("conv 1x8x6x6 3x3", conv_calls()), ("linear 1x32->32", linear_calls()))
        for layer, calls in layers:
            times = {name: per_call_us(fn, args.calls, args.repeats) for name, fn in calls.items()}
            print(f"{layer}:")
            for name, us in times.items():
                over = us - times["entry"]
                extra = "" if name in ("entry", "dense") else f"  over entry {over:6.2f}"
                print(f"  {name:>7}: {us:7.2f} us{extra}")


if __name__ == "__main__":
    main()
