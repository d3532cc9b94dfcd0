"""The issue-14 model table of docs/benchmarks.md, from a `gwprune bench --models` results.csv.

python bench/experiments/model_table.py bench/results/models-<card>-<date>/results.csv
"""

import csv
import sys


def main(path):
    with open(path) as f:
        rows = list(csv.DictReader(f))
    print(
        "| model | precision | keep | eager dense ms | compiled dense ms | autotuned (eager) "
        "| compiled autotuned ms | speedup_vs_best_dense |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['model']} | {r['precision']} | {r['keep']} | {float(r['dense_ms']):.3g} "
            f"| {float(r['dense_compiled_ms']):.3g} | {float(r['autotuned_speedup']):.2f}x, "
            f"{r['autotuned_dense_layers']} dense | {float(r['autotuned_compiled_ms']):.3g} "
            f"| {float(r['speedup_vs_best_dense']):.2f}x |"
        )


if __name__ == "__main__":
    main(sys.argv[1])
