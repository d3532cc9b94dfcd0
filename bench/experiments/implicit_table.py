"""The markdown rows of docs/benchmarks.md's implicit-GEMM table, from an implicit_conv.py CSV.

    python bench/experiments/implicit_table.py bench/results/.../layers-v8d-verified.csv

Prints one row per layer, precision and keep: the NCHW default / channels_last, the NCHW
producers the run forced (the header line names them), explicit NCHW / channels_last, the
anchor, dense and the ratio to the anchor with both sides' TFLOP/s, so that the docs'
figures come from the CSV, not from a hand.
"""

import csv
import sys

NAMES = {
    "seed-512-28": "seed conv 64x512x28²",
    "r50-256-14": "ResNet-50 64x256x14²",
    "r50-128-28": "ResNet-50 64x128x28²",
    "vgg-512-14": "VGG-16 64x512x14²",
    "r50-64-56": "ResNet-50 64x64x56²",
    "r50-512-7": "ResNet-50 64x512x7²",
    "vgg-256-56": "VGG-16 64x256x56²",
    "r50-1x1-1024-14": "ResNet-50 1x1 64x1024→256x14²",
    "batch1-512-14": "batch 1, 512x14²",
}


def forced_kernels(r: dict) -> list[str]:
    """The NCHW producers the run forced (implicit_conv.py --gathers), in its order."""
    return [
        key[len("implicit_") : -len("_nchw")]
        for key in r
        if key.startswith("implicit_") and key.endswith("_nchw") and key != "implicit_nchw"
    ]


def row(r: dict) -> str:
    def ms(key: str) -> str:
        return f"{float(r[key]):.3f}"

    forced = " / ".join(ms(f"implicit_{k}_nchw") for k in forced_kernels(r))
    return (
        f"| {NAMES.get(r['layer'], r['layer'])}, {float(r['keep']):g} | {r['precision']} "
        f"| {ms('implicit_nchw')} / {ms('implicit_nhwc')} | {forced} "
        f"| {ms('explicit_nchw')} / {ms('explicit_nhwc')} | {ms('anchor')} | {ms('dense')} "
        f"| {float(r['implicit_vs_anchor']):.2f}x ({float(r['implicit_tflops']):.0f} vs "
        f"{float(r['anchor_tflops']):.0f}) |"
    )


def main(path: str) -> None:
    with open(path, newline="") as handle:
        for i, r in enumerate(csv.DictReader(handle)):
            if i == 0:
                print(f"forced NCHW producers: {' / '.join(forced_kernels(r))}")
            print(row(r))


if __name__ == "__main__":
    main(sys.argv[1])
