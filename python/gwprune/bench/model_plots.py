"""speedup_<model>.png: whole-model speedup over dense against the fraction of groups kept.

One line per precision, dense at 1, the model's target (if it has one) as a dotted line.
Uses matplotlib's Figure directly (Agg canvas, no pyplot), like plots.py.
"""

from collections import defaultdict
from pathlib import Path

from .model_results import TARGET_PRECISIONS, TARGET_SPEEDUPS, ModelRow
from .plots import device_line

PRECISION_COLOURS = {"fp32": "black", "tf32": "tab:blue", "fp16": "tab:orange", "bf16": "tab:green"}


def plot_model_speedups(rows: list[ModelRow], out_dir: Path, device: str) -> list[Path]:
    from matplotlib.figure import Figure

    by_model: dict[str, list[ModelRow]] = defaultdict(list)
    for row in rows:
        if row.ok and row.speedup is not None:
            by_model[row.model].append(row)
    written = []
    for model, section in by_model.items():
        fig = Figure(figsize=(7, 4.5), layout="constrained")
        ax = fig.add_subplot()
        ax.axhline(1.0, color="gray", linewidth=1.2, label="dense")
        for (target_model, keep), (required, _) in TARGET_SPEEDUPS.items():
            if target_model != model:
                continue
            ax.axhline(
                required,
                color="tab:red",
                linestyle=":",
                label=f"target {required:g}x vs best dense at keep {keep:g} "
                f"({', '.join(TARGET_PRECISIONS)})",
            )
        by_precision: dict[str, list[ModelRow]] = defaultdict(list)
        for row in section:
            by_precision[row.precision].append(row)
        for precision, points in by_precision.items():
            points = sorted(points, key=lambda row: -row.keep)
            ax.plot(
                [row.keep for row in points],
                [row.speedup for row in points],
                marker="o",
                color=PRECISION_COLOURS.get(precision, "tab:gray"),
                label=precision,
            )
            tuned = [row for row in points if row.autotuned_speedup is not None]
            if tuned:
                ax.plot(
                    [row.keep for row in tuned],
                    [row.autotuned_speedup for row in tuned],
                    marker="x",
                    linestyle="--",
                    color=PRECISION_COLOURS.get(precision, "tab:gray"),
                    label=f"{precision} autotuned",
                )
        first = section[0]
        ax.set_xlabel("fraction of groups kept in every converted layer")
        ax.set_ylabel("speedup over dense (dense ms / converted ms)")
        ax.set_xlim(1.05, 0.0)  # pruning more goes right
        ax.grid(True, alpha=0.3)
        title = f"{model}: {first.label}, input {first.input}\n{device_line(device)}"
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=8, loc="best")
        path = out_dir / f"speedup_{model}.png"
        fig.savefig(path, dpi=110)
        written.append(path)
    return written
