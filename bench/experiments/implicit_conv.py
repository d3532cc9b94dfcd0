"""The implicit-GEMM conv against the explicit path, the equal-FLOPs anchor and dense.

    python bench/experiments/implicit_conv.py --out FILE.csv [--quick] [--layers a,b]
        [--gathers rows,windows,persistent-k4]

For each layer, precision (tf32, fp16, bf16) and keep ratio: gwprune with
backend="implicit" and backend="explicit" (packed weight, x in the layout given),
the anchor (cuDNN dense conv with round(keep * C) input channels, the better of NCHW
and channels_last: a channel-pruned layer with the same FLOPs) and dense cuDNN (the
better layout). Every gwprune result is checked against float64 on the masked weight
first, on a slice of the batch. Times are do_bench medians in ms (L2 flushed).
"""

import argparse
import csv
import os
import sys
from math import nan

import torch
import torch.nn.functional as F
from triton.testing import do_bench

import gwprune
from gwprune._config import IMPLICIT_NCHW_PRODUCERS

TOLERANCE = {"tf32": 5e-3, "fp16": 1e-2, "bf16": 1e-2}
DTYPE = {"tf32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

# name: (batch, C, Cout, H, kernel, stride, padding)
LAYERS = {
    "seed-512-28": (64, 512, 512, 28, 3, 1, 1),
    "r50-64-56": (64, 64, 64, 56, 3, 1, 1),
    "r50-128-28": (64, 128, 128, 28, 3, 1, 1),
    "r50-256-14": (64, 256, 256, 14, 3, 1, 1),
    "r50-512-7": (64, 512, 512, 7, 3, 1, 1),
    "vgg-128-112": (64, 128, 128, 112, 3, 1, 1),
    "vgg-256-56": (64, 256, 256, 56, 3, 1, 1),
    "vgg-512-28": (64, 512, 512, 28, 3, 1, 1),
    "vgg-512-14": (64, 512, 512, 14, 3, 1, 1),
    "r50-1x1-1024-14": (64, 1024, 256, 14, 1, 1, 0),
    "r50-1x1-256-56": (64, 256, 64, 56, 1, 1, 0),
    "r50-1x1-512-28": (64, 512, 128, 28, 1, 1, 0),
    "r50-1x1-64-56": (64, 64, 256, 56, 1, 1, 0),
    "r50-1x1-128-28": (64, 128, 512, 28, 1, 1, 0),
    "batch1-512-14": (1, 512, 512, 14, 3, 1, 1),
}
# The NCHW producers (GWPRUNE_IMPLICIT_GATHER), each timed on the same call.
GATHERS = IMPLICIT_NCHW_PRODUCERS
QUICK = ["seed-512-28", "r50-256-14", "r50-1x1-1024-14", "batch1-512-14"]


def time_ms(fn) -> float:
    return float(do_bench(fn, warmup=10, rep=60, return_mode="median"))


def relative_error(out, ref) -> float:
    return float((out.double() - ref).norm() / ref.norm())


def measure(name, layer, precision, keep, writer, gathers=GATHERS):
    n, c, co, h, k, s, p = layer
    dtype = DTYPE[precision]
    torch.backends.cudnn.allow_tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    torch.backends.cudnn.benchmark = True
    x = torch.randn(n, c, h, h, device="cuda", dtype=dtype)
    weight = torch.randn(co, c, k, k, device="cuda", dtype=dtype) / (c * k * k) ** 0.5
    groups = c * k * k
    keep_idx = torch.randperm(groups, device="cuda")[: max(1, round(keep * groups))]
    masked = gwprune.mask_weight(weight, keep_idx)
    check = slice(0, min(n, 4))
    ref = F.conv2d(x[check].double(), masked.double(), None, s, p)
    row = {"layer": name, "precision": precision, "keep": keep}
    for layout_name, layout in (("nchw", torch.contiguous_format), ("nhwc", torch.channels_last)):
        xl = x.contiguous(memory_format=layout)
        packed = gwprune.pack_conv2d_weight(weight, keep_idx, layout)
        dense_w = weight.contiguous(memory_format=layout)
        row[f"dense_{layout_name}"] = time_ms(lambda xl=xl, w=dense_w: F.conv2d(xl, w, None, s, p))
        anchor_c = max(1, round(keep * c))
        xa = xl[:, :anchor_c].contiguous(memory_format=layout)
        wa = weight[:, :anchor_c].contiguous(memory_format=layout)
        row[f"anchor_{layout_name}"] = time_ms(lambda xa=xa, wa=wa: F.conv2d(xa, wa, None, s, p))
        for backend in ("implicit", "explicit"):

            def run(xl=xl, packed=packed, backend=backend):
                return gwprune.ops.conv2d_packed(xl, packed, None, s, p, backend=backend)

            error = relative_error(run()[check], ref)
            if error > TOLERANCE[precision]:
                print(f"FAILED {name} {precision} keep={keep} {layout_name} {backend}: {error:.2e}")
                row[f"{backend}_{layout_name}"] = float("nan")
                continue
            row[f"{backend}_{layout_name}"] = time_ms(run)
        if layout_name == "nchw":
            # Each NCHW producer forced on the same call (GWPRUNE_IMPLICIT_GATHER; one
            # that does not apply falls back to the row gather): side by side. "name-kN"
            # also forces N K slices (GWPRUNE_IMPLICIT_K_SLICES, the persistent kernel's).
            for gather in gathers:
                producer, _, slices = gather.partition("-k")
                os.environ["GWPRUNE_IMPLICIT_GATHER"] = producer
                if slices:
                    os.environ["GWPRUNE_IMPLICIT_K_SLICES"] = slices
                try:

                    def forced(xl=xl, packed=packed):
                        return gwprune.ops.conv2d_packed(xl, packed, None, s, p, backend="implicit")

                    error = relative_error(forced()[check], ref)
                    row[f"implicit_{gather}_nchw"] = (
                        time_ms(forced) if error <= TOLERANCE[precision] else nan
                    )
                finally:
                    del os.environ["GWPRUNE_IMPLICIT_GATHER"]
                    os.environ.pop("GWPRUNE_IMPLICIT_K_SLICES", None)
    row["anchor"] = min(row["anchor_nchw"], row["anchor_nhwc"])
    row["dense"] = min(row["dense_nchw"], row["dense_nhwc"])
    row["implicit"] = min(row["implicit_nchw"], row["implicit_nhwc"])
    row["implicit_vs_anchor"] = row["implicit"] / row["anchor"]
    row["windows_vs_anchor"] = row.get("implicit_windows_nchw", nan) / row["anchor"]
    flops = 2 * n * co * h * h * round(keep * groups) / (s * s)
    row["implicit_tflops"] = flops / row["implicit"] / 1e9
    row["anchor_tflops"] = (
        2 * n * co * h * h * max(1, round(keep * c)) * k * k / row["anchor"] / 1e9
    )
    writer.writerow(row)
    r = row
    forced = " ".join(f"{g} {r[f'implicit_{g}_nchw']:.4f}" for g in gathers)
    print(
        f"{name:>16} {precision} keep={keep:.2f}  implicit {r['implicit_nchw']:.4f}/"
        f"{r['implicit_nhwc']:.4f} ({forced})"
        f"  explicit {r['explicit_nchw']:.4f}/{r['explicit_nhwc']:.4f}"
        f"  anchor {r['anchor']:.4f}  dense {r['dense']:.4f}  -> {r['implicit_vs_anchor']:.2f}x"
        f" anchor ({r['implicit_tflops']:.0f} vs {r['anchor_tflops']:.0f} TFLOP/s), windows"
        f" {r['windows_vs_anchor']:.2f}x",
        flush=True,
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--precisions", default="fp16,bf16,tf32")
    parser.add_argument("--layers", help="comma-separated names (default: all, or --quick's)")
    parser.add_argument(
        "--gathers", default=",".join(GATHERS), help="NCHW producers to force and time"
    )
    args = parser.parse_args(argv)
    names = QUICK if args.quick else list(LAYERS)
    if args.layers:
        names = args.layers.split(",")
    fields = ["layer", "precision", "keep"]
    fields += [
        f"{w}_{lay}"
        for w in ("dense", "anchor", "implicit", "explicit")
        for lay in ("nchw", "nhwc")
    ]
    gathers = tuple(args.gathers.split(",")) if args.gathers else ()
    fields += [f"implicit_{g}_nchw" for g in gathers]
    fields += [
        "anchor",
        "dense",
        "implicit",
        "implicit_vs_anchor",
        "windows_vs_anchor",
        "implicit_tflops",
        "anchor_tflops",
    ]
    print(torch.cuda.get_device_name(), torch.__version__, "cudnn", torch.backends.cudnn.version())
    with open(args.out, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for name in names:
            keeps = (0.75, 0.5, 0.25) if name == "seed-512-28" else (0.5,)
            for precision in args.precisions.split(","):
                for keep in keeps:
                    measure(name, LAYERS[name], precision, keep, writer, gathers)
                    handle.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
