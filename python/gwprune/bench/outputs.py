"""Writes a run's output folder: results.csv, model_totals.csv, results.md, PNGs, env.json."""

import json
from dataclasses import dataclass, field
from pathlib import Path

from . import plots, report_md
from .results import add_ratios, model_totals, write_csv, write_model_totals_csv
from .workloads import ModelLayers


@dataclass
class WrittenFiles:
    csv: Path
    markdown: Path
    env: Path
    model_totals: Path | None = None
    plots: list[Path] = field(default_factory=list)
    plot_note: str = ""


def write_env(out_dir: Path, env: dict) -> Path:
    path = out_dir / "env.json"
    path.write_text(json.dumps(env, indent=2, default=str) + "\n")
    return path


def read_env(out_dir: Path) -> dict | None:
    path = out_dir / "env.json"
    return json.loads(path.read_text()) if path.exists() else None


def write_all(
    out_dir: Path,
    rows: list,
    env: dict,
    models: list[ModelLayers],
    command: str,
    complete: bool,
    make_plots: bool = True,
) -> WrittenFiles:
    add_ratios(rows)
    totals = model_totals(rows, models)
    written = WrittenFiles(
        csv=out_dir / "results.csv", markdown=out_dir / "results.md", env=write_env(out_dir, env)
    )
    write_csv(written.csv, rows)
    if totals:
        written.model_totals = out_dir / "model_totals.csv"
        write_model_totals_csv(written.model_totals, totals)
    written.markdown.write_text(report_md.render(rows, env, totals, command, complete))
    device = env.get("device", "?")
    written.plots, written.plot_note = write_plots(
        out_dir,
        make_plots,
        lambda: (
            plots.plot_workloads(rows, out_dir, device)
            + plots.plot_model_totals(totals, out_dir, device)
        ),
    )
    return written


def check_same_device(out_dir: Path, env: dict) -> None:
    """ValueError if out_dir holds results of another device (for --resume)."""
    previous = read_env(out_dir) or {}
    if previous.get("device") not in (None, env["device"]):
        raise ValueError(
            f"{out_dir} holds results from {previous['device']!r}, this is {env['device']!r}; "
            "use another --out"
        )


def write_plots(out_dir: Path, make_plots: bool, draw) -> tuple[list[Path], str]:
    """Replaces the folder's PNGs by ``draw()``'s; returns (plots, note on why none)."""
    if not make_plots:
        return [], "plots skipped (--no-plots)"
    if not plots.matplotlib_available():
        return [], "plots skipped: matplotlib is not installed (pip install matplotlib)"
    for old in out_dir.glob("*.png"):
        old.unlink()  # a plot of something no longer in the results would mislead
    return draw(), ""
