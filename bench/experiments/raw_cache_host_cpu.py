"""Host time of a raw op served from the pack cache against the packed op, on the CPU.

    PYTHONPATH=python python bench/experiments/raw_cache_host_cpu.py [--calls 1000] [--rounds 300]

Issue 15's target: after its first call, ``gwprune.ops.conv2d(x, weight, keep_idx)`` (and
``ops.linear``) within 1.10x the host time of ``ops.conv2d_packed(x, packed)``. A CPU-only
build runs the same Python as a CUDA call up to gwprune._C (the CPU kernels are compiled,
so CPU tensors take the eager entries), and on these tiny layers the CPU kernel is a
few microseconds, so the difference raw - packed is what the raw call's cache lookup adds
over the packed call (the CUDA call adds the same, then launches instead of computing):

- linear 1x64 -> 64 with bias, keep .5;
- conv 1x8x4x4 -> 8, 3x3, padding 1, with bias, keep .5, NCHW and channels_last.

Per call: the minimum over rounds of --calls calls; every round times raw, packed and dense
(F.conv2d / F.linear on the masked weight, for scale) one batch each, the first rotating
from round to round, so drift of the machine hits all three alike. One thread, under
torch.no_grad(). For a before / after comparison run this file once per build
(PYTHONPATH pointing at each checkout), a few times interleaved: two builds cannot share a
process (their torch.library ops share names).
"""

import argparse
import timeit

import torch
import torch.nn.functional as F

import gwprune


def linear_case():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 64, generator=g)
    weight = torch.randn(64, 64, generator=g)
    keep = torch.randperm(64, generator=g)[:32]
    bias = torch.randn(64, generator=g)
    packed = gwprune.pack_linear_weight(weight, keep)
    masked = gwprune.mask_weight(weight, keep)
    return {
        "raw": lambda: gwprune.ops.linear(x, weight, keep, bias),
        "packed": lambda: gwprune.ops.linear_packed(x, packed, bias),
        "dense": lambda: F.linear(x, masked, bias),
    }


def conv_case(channels_last: bool):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 8, 4, 4, generator=g)
    memory_format = torch.contiguous_format
    if channels_last:
        memory_format = torch.channels_last
        x = x.contiguous(memory_format=memory_format)
    weight = torch.randn(8, 8, 3, 3, generator=g)
    keep = torch.randperm(72, generator=g)[:36]
    bias = torch.randn(8, generator=g)
    packed = gwprune.pack_conv2d_weight(weight, keep, memory_format)
    masked = gwprune.mask_weight(weight, keep)
    return {
        "raw": lambda: gwprune.ops.conv2d(x, weight, keep, bias, 1, 1),
        "packed": lambda: gwprune.ops.conv2d_packed(x, packed, bias, 1, 1),
        "dense": lambda: F.conv2d(x, masked, bias, 1, 1),
    }


def measure(calls: dict, number: int, rounds: int) -> dict[str, float]:
    timers = {name: timeit.Timer(fn) for name, fn in calls.items()}
    names = list(calls)
    for fn in calls.values():  # the raw call's first call fills the pack cache
        for _ in range(20):
            fn()
    best = dict.fromkeys(names, float("inf"))
    for r in range(rounds):
        first = r % len(names)
        for name in names[first:] + names[:first]:
            best[name] = min(best[name], timers[name].timeit(number) / number * 1e6)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=1000, help="calls per batch")
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"gwprune {gwprune.__file__}; min over {args.rounds} rounds of {args.calls} calls")
    print(f"{'case':<28} {'raw us':>8} {'packed us':>10} {'raw/packed':>11} "
          f"{'raw-packed':>11} {'dense us':>9}")  # fmt: skip
    cases = {
        "linear 1x64->64": linear_case(),
        "conv 1x8x4x4 3x3 nchw": conv_case(False),
        "conv 1x8x4x4 3x3 cl": conv_case(True),
    }
    with torch.no_grad():
        for case, calls in cases.items():
            t = measure(calls, args.calls, args.rounds)
            print(f"{case:<28} {t['raw']:8.2f} {t['packed']:10.2f} "
                  f"{t['raw'] / t['packed']:10.3f}x {t['raw'] - t['packed']:11.2f} "
                  f"{t['dense']:9.2f}")  # fmt: skip
    info = gwprune.pack_cache_info()
    print(f"pack cache: {info.entries} entries, {info.hits} hits, {info.misses} misses")


if __name__ == "__main__":
    main()
