"""The CPU results table of docs/benchmarks.md, from two CPU-preset runs' results.csv.

    python bench/experiments/cpu_table.py RUN1_DIR RUN2_DIR

ms from run 1, in parentheses the ratio to dense of the same layout in run 1; run 2.
"""

import csv
import sys
from pathlib import Path

LAYERS = [
    ("conv512-512_k3s1p1_28x28_n1", "seed conv 512→512 3x3 28x28 N=1"),
    ("conv256-256_k3s1p1_14x14_n2", "ResNet-50 3x3 256 14x14 N=2"),
    ("conv1024-256_k1s1p0_14x14_n2", "ResNet-50 1x1 1024→256 14x14 N=2"),
    ("linear768-3072_m128", "BERT FFN 128 x 768→3072"),
]
KEEPS = ("0.75", "0.5", "0.25")


def rows(folder):
    with open(Path(folder) / "results.csv") as f:
        return {(r["workload"], r["provider"], r["keep"]): r for r in csv.DictReader(f)}


def ms(table, workload, provider, keep):
    row = table.get((workload, provider, keep))
    return None if row is None or not row["ms"] else float(row["ms"])


def fmt(value):
    return f"{value:.3g}" if value is not None else ""


def main(run1, run2):
    one, two = rows(run1), rows(run2)
    print(
        "| layer | dense | gwprune keep .75 / .5 / .25 (run 1; run 2) "
        "| naive keep .5 / .25 (run 1) | floor keep .5 / .25 (run 1) |"
    )
    print("|---|---|---|---|---|")
    for workload, name in LAYERS:
        layouts = (
            [("", "")]
            if workload.startswith("linear")
            else [("", ", NCHW"), ("-cl", ", channels_last")]
        )
        for suffix, label in layouts:
            dense_key = next(k for k in one if k[0] == workload and k[1] == "dense" + suffix)[2]
            dense1 = ms(one, workload, "dense" + suffix, dense_key)
            dense2 = ms(two, workload, "dense" + suffix, dense_key)
            cells = []
            for keep in KEEPS:
                a = ms(one, workload, "group-packed" + suffix, keep)
                b = ms(two, workload, "group-packed" + suffix, keep)
                cells.append(f"{fmt(a)} ({a / dense1:.2f}; {b / dense2:.2f})")
            naive = " / ".join(fmt(ms(one, workload, "group-naive" + suffix, k)) for k in KEEPS[1:])
            floor = (
                " / ".join(fmt(ms(one, workload, "floor", k)) for k in KEEPS[1:])
                if not suffix
                else ""
            )
            row = [f"{name}{label}", fmt(dense1), " / ".join(cells), naive, floor.strip(" /")]
            print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main(*sys.argv[1:3])
