"""PNG plots in the style of the seed's Figs 7-14: latency against fraction of weights kept.

One plot per workload and precision (and per model and precision for model sums):
one line per provider, dense as horizontal lines. Uses matplotlib's Figure directly
(Agg canvas, no pyplot), so no display and no global backend switch is needed.
"""

from collections import defaultdict
from pathlib import Path

from .results import ModelTotal, ResultRow

# family -> colour; provider -> line style. Patterns keep one colour across all plots.
FAMILY_COLOURS = {
    "dense": "black",
    "group-wise": "tab:blue",
    "floor": "tab:green",
    "element-wise": "tab:red",
    "vector-wise": "tab:orange",
    "block-wise": "tab:purple",
    "anchor": "tab:brown",
}
PROVIDER_STYLES = {
    "dense": "-",
    "dense-cl": "--",
    "dense-best": "-.",
    "group-packed": "-",
    "group-packed-cl": "--",
    "group-implicit": "-.",
    "group-implicit-cl": (0, (3, 1, 1, 1)),
    "anchor-cudnn": "-",
    "anchor-cudnn-cl": "--",
    "group-naive": ":",
    "group-naive-cl": (0, (1, 4)),
    "floor": "-",
    "floor-flat": "--",
    "element-csr": "-",
    "vector-csr": "-",
    "vector-2:4": "none",
    "block-bsr": "-",
}


def device_line(device: str) -> str:
    if device.startswith("CPU"):
        return f"on {device}\nCPU run: says nothing about GPU speed"
    return f"on {device}"


def matplotlib_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _series_plot(path: Path, title: str, series: dict, dense_lines: dict, footnote: str) -> None:
    """series: provider -> (family, [(keep, ms)]); dense_lines: provider -> ms."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.8), layout="constrained")
    ax = fig.add_subplot()
    values = [ms for _, points in series.values() for _, ms in points] + list(dense_lines.values())
    for provider, ms in dense_lines.items():
        ax.axhline(
            ms,
            color=FAMILY_COLOURS["dense"],
            linestyle=PROVIDER_STYLES.get(provider, "-"),
            linewidth=1.2,
            label=f"{provider} ({ms:.3g} ms)",
        )
    for provider, (family, points) in series.items():
        points = sorted(points, reverse=True)
        ax.plot(
            [keep for keep, _ in points],
            [ms for _, ms in points],
            color=FAMILY_COLOURS.get(family, "tab:gray"),
            linestyle=PROVIDER_STYLES.get(provider, "-"),
            marker="*" if provider == "vector-2:4" else "o",
            markersize=8 if provider == "vector-2:4" else 4,
            label=provider,
        )
    if values and max(values) / max(min(values), 1e-9) > 20:
        ax.set_yscale("log")  # sparse kernels can be 100x slower than dense
    ax.set_xlabel("fraction of weights kept")
    ax.set_ylabel("latency (ms, median)")
    ax.set_xlim(1.05, 0.0)  # pruning more goes right, as in the seed's figures
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    if footnote:
        fig.text(0.01, 0.01, footnote, fontsize=7, color="tab:red")
    fig.savefig(path, dpi=110)


def plot_workloads(rows: list[ResultRow], out_dir: Path, device: str) -> list[Path]:
    sections: dict[tuple[str, str], list[ResultRow]] = defaultdict(list)
    for row in rows:
        sections[(row.workload, row.precision)].append(row)
    written = []
    for (workload, precision), section in sections.items():
        series: dict[str, tuple[str, list]] = {}
        dense_lines: dict[str, float] = {}
        for row in section:
            if not row.ok:
                continue
            if row.family == "dense":
                dense_lines[row.provider] = row.ms
            else:
                series.setdefault(row.provider, (row.family, []))[1].append((row.keep, row.ms))
        if not series and not dense_lines:
            continue
        failed = sorted({row.provider for row in section if row.status == "FAILED"})
        footnote = f"FAILED correctness (not plotted): {', '.join(failed)}" if failed else ""
        title = f"{section[0].label} [{precision}]\n{workload} {device_line(device)}"
        path = out_dir / f"{workload}__{precision}.png"
        _series_plot(path, title, series, dense_lines, footnote)
        written.append(path)
    return written


def plot_model_totals(totals: list[ModelTotal], out_dir: Path, device: str) -> list[Path]:
    sections: dict[tuple[str, str], list[ModelTotal]] = defaultdict(list)
    for total in totals:
        sections[(total.model, total.precision)].append(total)
    written = []
    for (model, precision), section in sections.items():
        series: dict[str, tuple[str, list]] = {}
        dense_lines: dict[str, float] = {}
        for total in section:
            if total.family == "dense":
                dense_lines[total.provider] = total.ms
            else:
                series.setdefault(total.provider, (total.family, []))[1].append(
                    (total.keep, total.ms)
                )
        title = (
            f"{model}: sum of layer latencies x uses (layers only) [{precision}]\n"
            f"{device_line(device)}"
        )
        path = out_dir / f"model_{model}__{precision}.png"
        _series_plot(path, title, series, dense_lines, "")
        written.append(path)
    return written
