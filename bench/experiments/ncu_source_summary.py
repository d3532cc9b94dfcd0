"""Where an ncu source-page profile's stall samples fall, from its CSV.

    ncu --page source --print-source sass --csv --section SourceCounters ... > profile.csv
    python bench/experiments/ncu_source_summary.py profile.csv[.gz]

Prints the stall reasons over the whole kernel, the 40 SASS instructions with the most
samples (offset from the kernel's first instruction, share of all samples, top two
reasons), the share per 1 KiB of code, and the barrier, TMA, wgmma and store instructions
with their sample and execution counts.
"""

import collections
import csv
import gzip
import sys

SAMPLES = "Warp Stall Sampling (All Samples)"
EXECUTED = "Instructions Executed"
MARKERS = ("SYNCS.PHASECHK", "UTMALDG", "BAR.SYNC", "HGMMA", "EXIT", "STG")


def number(text: str) -> float:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return 0.0


def main(path: str) -> None:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as handle:
        rows = list(csv.reader(handle))
    start = next(i for i, row in enumerate(rows) if row and row[0] == "Address")
    header, data = rows[start], rows[start + 1 :]
    column = {name: i for i, name in enumerate(header)}
    reasons = [name for name in header if name.startswith("stall_")]
    total = sum(number(row[column[SAMPLES]]) for row in data)
    base = int(data[0][0], 16)
    print(f"instructions {len(data)}, samples {total:.0f}")
    by_reason = {name: sum(number(row[column[name]]) for row in data) for name in reasons}
    for name, value in sorted(by_reason.items(), key=lambda item: -item[1])[:10]:
        print(f"{name:28} {value:10.0f} {100 * value / total:5.1f}%")
    print("--- the 40 instructions with the most samples")
    top = sorted(range(len(data)), key=lambda i: -number(data[i][column[SAMPLES]]))[:40]
    for i in sorted(top):
        row = data[i]
        worst = sorted(((number(row[column[name]]), name[6:]) for name in reasons), reverse=True)
        first, second = (f"{name}={value:.0f}" for value, name in worst[:2])
        print(
            f"{int(row[0], 16) - base:6x} {100 * number(row[column[SAMPLES]]) / total:5.1f}%  "
            f"{row[1].strip()[:64]:64} {first} {second}"
        )
    print("--- samples per 1 KiB of code (buckets over 1 %)")
    buckets: dict[int, float] = collections.defaultdict(float)
    for row in data:
        buckets[(int(row[0], 16) - base) // 0x400 * 0x400] += number(row[column[SAMPLES]])
    for offset, value in sorted(buckets.items()):
        if value / total > 0.01:
            print(f"{offset:6x} {100 * value / total:5.1f}%")
    print("--- barriers, copies, wgmma and stores")
    for row in data:
        if any(marker in row[1] for marker in MARKERS):
            print(
                f"{int(row[0], 16) - base:6x} {row[1].strip()[:60]:60} "
                f"samples={number(row[column[SAMPLES]]):.0f} "
                f"executed={number(row[column[EXECUTED]]):.0f}"
            )


if __name__ == "__main__":
    main(sys.argv[1])
