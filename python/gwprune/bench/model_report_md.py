"""results.md of ``gwprune bench --models``: setup, the target verdicts, one table per precision."""

from collections import defaultdict

from .model_results import ModelRow, target_checks
from .report_md import environment_lines

LAYOUT_NAMES = {"contiguous": "NCHW", "channels_last": "channels_last"}


def _ms(ms: float | None, layout: str, show_layout: bool) -> str:
    if ms is None:
        return ""
    suffix = f" ({LAYOUT_NAMES.get(layout, layout)})" if show_layout and layout else ""
    return f"{ms:.4g}{suffix}"


def _times(speedup: float | None) -> str:
    return f"{speedup:.2f}x" if speedup is not None else ""


def _error(row: ModelRow) -> str:
    if row.rel_error is None:
        return ""
    dense = f" ({row.dense_rel_error:.1e})" if row.dense_rel_error is not None else ""
    return f"{row.rel_error:.1e}{dense}"


def _status(row: ModelRow) -> str:
    if row.ok:
        return "ok" if row.cuda_graphs in ("on", "off") else f"ok, graphs {row.cuda_graphs}"
    return row.status.split(":")[0]  # FAILED / error; details under Notes


def _setup_lines(rows: list[ModelRow], env: dict) -> list[str]:
    first: dict[str, ModelRow] = {}
    for row in rows:
        if row.layers_converted is not None:
            first.setdefault(row.model, row)
    graphs = "on" if env.get("cuda_graphs") else "off"
    lines = [
        "## Setup",
        "",
        f"Pruning: every eligible conv/linear layer keeps the stated fraction of its groups, "
        f"chosen by {env.get('criterion', 'l1').upper()} norm per layer "
        "(`gwprune.convert(model, keep, criterion=...)`); the layers below stay dense. "
        "Dense = the unpruned model with ordinary PyTorch layers; converted = the pruned model "
        "with gwprune layers. Before timing, the converted model's output (every layout) is "
        "compared with the float64 output of the masked dense model (same pruned weights, "
        "dense layers, rounded to the precision) on the first "
        f"{env.get('check_samples', '?')} samples: rel. error = ||out - ref|| / ||ref||, "
        "tolerance = max(model tolerance of the precision, 2 x the masked dense model's own "
        f"error). Timing: eval mode, `torch.inference_mode()`, CUDA graphs {graphs} "
        "(both sides), CNNs in NCHW and channels_last on both sides, the better layout "
        "reported.",
        "",
        "| model | built as | input | layers converted | left dense |",
        "|---|---|---|---:|---|",
    ]
    for model, row in first.items():
        lines.append(
            f"| {model} | {row.label} | {row.input} | {row.layers_converted} | {row.dense_layers} |"
        )
    return [*lines, ""]


def _target_lines(rows: list[ModelRow], is_gpu: bool) -> list[str]:
    checks = target_checks(rows, is_gpu)
    if not any(check.speedup is not None or check.verdict != "not measured" for check in checks):
        return []
    lines = [
        "## Targets (issue 14): TF32 and fp16, CUDA graphs allowed, against the best dense",
        "",
        "Speedup against eager dense with every converted layer gathered, and after "
        "`gwprune.autotune` (each layer gathered or masked dense, whichever is faster); the "
        "verdict is on `speedup_vs_best_dense`: the fastest converted model (eager, "
        "autotuned, autotuned under torch.compile) against the faster of eager and "
        "compiled (inductor, freezing) dense.",
        "",
        "| model | keep | precision | required | speedup | autotuned | vs best dense | verdict |",
        "|---|---:|---|---:|---:|---:|---:|---|",
    ]
    for check in checks:
        lines.append(
            f"| {check.model} | {check.keep:g} | {check.precision} | {check.required:g}x | "
            f"{_times(check.speedup)} | {_times(check.autotuned_speedup)} | "
            f"{_times(check.vs_best_dense)} | {check.verdict} |"
        )
    return [*lines, ""]


def _results_lines(rows: list[ModelRow]) -> list[str]:
    lines = [
        "## Results",
        "",
        "Median ms per forward of the whole batch; speedup = dense ms / converted ms (above 1 = "
        "the pruned model is faster). Autotuned: the converted model after `gwprune.autotune`, "
        "with how many of its layers it runs dense (masked weight). Params kept: fraction of "
        "all the model's parameters left. Rel. error of the converted model (worst of all "
        "variants), in parentheses the masked dense model's own.",
        "",
    ]
    by_precision: dict[str, list[ModelRow]] = defaultdict(list)
    for row in rows:
        by_precision[row.precision].append(row)
    models = [row.model for row in rows]
    for precision, section in by_precision.items():
        lines += [
            f"### {precision}",
            "",
            "| model | keep | dense ms | converted ms | speedup | autotuned ms | autotuned "
            "speedup | compiled dense ms | compiled autotuned ms | vs best dense | params kept "
            "| rel. error | status |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        order = {model: position for position, model in enumerate(dict.fromkeys(models))}
        for row in sorted(section, key=lambda r: (order[r.model], -r.keep)):
            show_layout = row.dense_ms_channels_last is not None
            kept = f"{100 * row.params_kept:.1f}%" if row.params_kept is not None else ""
            autotuned = _ms(row.autotuned_ms, row.autotuned_layout, show_layout)
            if row.autotuned_dense_layers is not None:
                autotuned += f", {row.autotuned_dense_layers} dense"
            lines.append(
                f"| {row.model} | {row.keep:g} | "
                f"{_ms(row.dense_ms, row.dense_layout, show_layout)} | "
                f"{_ms(row.converted_ms, row.converted_layout, show_layout)} | "
                f"{_times(row.speedup)} | {autotuned} | {_times(row.autotuned_speedup)} | "
                f"{_ms(row.dense_compiled_ms, row.dense_compiled_layout, show_layout)} | "
                f"{_ms(row.autotuned_compiled_ms, row.autotuned_compiled_layout, show_layout)} | "
                f"{_times(row.speedup_vs_best_dense)} | "
                f"{kept} | {_error(row)} | {_status(row)} |"
            )
        lines.append("")
    return lines


def _note_lines(rows: list[ModelRow]) -> list[str]:
    notes = []
    for row in rows:
        where = f"{row.model} keep {row.keep:g} {row.precision}"
        if row.status == "FAILED":
            notes.append(
                f"- {where}: FAILED correctness: rel. error {row.rel_error:.3g} > "
                f"tolerance {row.tolerance:.3g}"
            )
        elif not row.ok:
            notes.append(f"- {where}: {row.status}")
        elif row.cuda_graphs not in ("on", "off"):
            notes.append(f"- {where}: CUDA graphs {row.cuda_graphs}: {row.note}")
    return ["## Notes", "", *notes, ""] if notes else []


def render_models(rows: list[ModelRow], env: dict, command: str, complete: bool) -> str:
    is_gpu = env.get("device_type") == "cuda"
    lines = [f"# gwprune bench --models: {env.get('device', '?')}", ""]
    if not is_gpu:
        lines += [
            "**CPU run** with small model variants: these times show that the benchmark works "
            "end to end and say nothing about GPU performance (the CPU preset of the layer "
            "benchmark, `gwprune bench` without a GPU, measures gwprune's CPU kernels).",
            "",
        ]
    if not complete:
        lines += ["**Incomplete run** (time budget reached): rerun with `--resume`.", ""]
    lines += [f"Command: `{command}`", ""]
    lines += _setup_lines(rows, env)
    lines += _target_lines(rows, is_gpu)
    lines += _results_lines(rows)
    lines += _note_lines(rows)
    lines += ["## Environment", "", *environment_lines(env), ""]
    return "\n".join(lines)
