"""The output folder of ``gwprune bench --models``: results.csv, results.md, PNGs, env.json."""

from pathlib import Path

from .model_plots import plot_model_speedups
from .model_report_md import render_models
from .model_results import ModelRow, write_model_rows
from .outputs import WrittenFiles, write_env, write_plots


def write_model_outputs(
    out_dir: Path,
    rows: list[ModelRow],
    env: dict,
    command: str,
    complete: bool,
    make_plots: bool = True,
) -> WrittenFiles:
    written = WrittenFiles(
        csv=out_dir / "results.csv", markdown=out_dir / "results.md", env=write_env(out_dir, env)
    )
    write_model_rows(written.csv, rows)
    written.markdown.write_text(render_models(rows, env, command, complete))
    device = env.get("device", "?")
    written.plots, written.plot_note = write_plots(
        out_dir, make_plots, lambda: plot_model_speedups(rows, out_dir, device)
    )
    return written
