"""CPU A/B of gwprune's CPU kernels against dense, the naive path and the GEMM floor.

Interleaved rounds in one process (dense, gwprune, naive, floor, dense, ...), medians over
rounds, so that load from other processes hits every provider alike. Prints one line per
(layer, layout, keep): the medians in ms and the ratios to dense.

    PYTHONPATH=python python bench/experiments/cpu_layers.py --threads 2 --rounds 7
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import gwprune

LAYERS = {
    "seed-28-n1": ("conv", 512, 512, 3, 1, 28, 1),
    "seed-14-n4": ("conv", 512, 512, 3, 1, 14, 4),
    "r50-3x3-256-14-n2": ("conv", 256, 256, 3, 1, 14, 2),
    "r50-3x3-128-28-n4": ("conv", 128, 128, 3, 1, 28, 4),
    "r50-1x1-1024-256-14-n2": ("conv", 1024, 256, 1, 0, 14, 2),
    "bert-ffn-128": ("linear", 768, 3072, 128),
}


CLOCK = time.perf_counter


def timed(fn):
    begin = CLOCK()
    fn()
    return (CLOCK() - begin) * 1e3


def conv_providers(spec, keep_ratio, layout, gen):
    _, cin, cout, k, pad, size, batch = spec
    x = torch.randn(batch, cin, size, size, generator=gen).contiguous(memory_format=layout)
    w = torch.randn(cout, cin, k, k, generator=gen) * (cin * k * k) ** -0.5
    groups = cin * k * k
    keep = torch.randperm(groups, generator=gen)[: int(groups * keep_ratio)].sort().values
    masked = gwprune.mask_weight(w, keep).contiguous(memory_format=layout)
    packed = gwprune.pack_conv2d_weight(w, keep, layout)
    kept_w = masked.reshape(cout, -1).index_select(1, keep).contiguous()
    xn = x.contiguous()
    cols = F.unfold(xn, k, padding=pad).index_select(1, keep).contiguous()
    return {
        "dense": lambda: F.conv2d(x, masked, None, 1, pad),
        "gwprune": lambda: gwprune.ops.conv2d_packed(x, packed, None, 1, pad),
        "naive": lambda: torch.matmul(kept_w, F.unfold(xn, k, padding=pad).index_select(1, keep)),
        "floor": lambda: torch.matmul(kept_w, cols),
    }


def linear_providers(spec, keep_ratio, gen):
    _, fin, fout, rows = spec
    x = torch.randn(rows, fin, generator=gen)
    w = torch.randn(fout, fin, generator=gen) * fin**-0.5
    keep = torch.randperm(fin, generator=gen)[: int(fin * keep_ratio)].sort().values
    masked = gwprune.mask_weight(w, keep)
    packed = gwprune.pack_linear_weight(w, keep)
    kept_w = w.index_select(1, keep).contiguous()
    xg = x.index_select(1, keep).contiguous()
    return {
        "dense": lambda: F.linear(x, masked),
        "gwprune": lambda: gwprune.ops.linear_packed(x, packed),
        "naive": lambda: F.linear(x.index_select(-1, keep), kept_w),
        "floor": lambda: F.linear(xg, kept_w),
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--layers", default=",".join(LAYERS))
    parser.add_argument("--keeps", default="0.75,0.5,0.25")
    parser.add_argument("--layouts", default="nchw,cl")
    parser.add_argument(
        "--clock",
        choices=["wall", "thread"],
        default="wall",
        help="thread: CPU time of the calling thread (with --threads 1: robust to other load)",
    )
    args = parser.parse_args()
    if args.clock == "thread":
        if args.threads != 1:
            parser.error("--clock thread measures one thread: use --threads 1")
        global CLOCK
        CLOCK = time.thread_time
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    print(f"threads={torch.get_num_threads()} rounds={args.rounds} clock={args.clock}")
    for name in args.layers.split(","):
        spec = LAYERS[name]
        layouts = args.layouts.split(",") if spec[0] == "conv" else ["-"]
        for layout_name in layouts:
            layout = torch.channels_last if layout_name == "cl" else torch.contiguous_format
            for keep in (float(k) for k in args.keeps.split(",")):
                if spec[0] == "conv":
                    providers = conv_providers(spec, keep, layout, gen)
                else:
                    providers = linear_providers(spec, keep, gen)
                for fn in providers.values():
                    fn()
                times = {p: [] for p in providers}
                for _ in range(args.rounds):
                    for p, fn in providers.items():
                        times[p].append(timed(fn))
                med = {p: statistics.median(t) for p, t in times.items()}
                ratios = " ".join(
                    f"{p}/dense {med[p] / med['dense']:.2f}" for p in med if p != "dense"
                )
                print(
                    f"{name:<24} {layout_name:<4} keep {keep:.2f}  "
                    + " ".join(f"{p} {m:7.2f}" for p, m in med.items())
                    + f"  | {ratios}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
