"""``gwprune bench --models``: whole models, dense against group-wise pruned and converted.

cli.py parses the arguments and hands them here: the models preset on a GPU (VGG-16,
ResNet-18 and ViT-B/16 at 224x224, BERT-base at sequence length 128, batch 64), a tiny
CPU preset elsewhere. Exit status as for the layer benchmark: 0 done, 2 bad
arguments, 3 stopped by --max-minutes (rerun with --resume).
"""

import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

import gwprune

from . import environment
from .model_case import CHECK_SAMPLES
from .model_measure import dense_times_from_rows
from .model_outputs import write_model_outputs
from .model_pruning import CRITERION
from .model_results import ModelRowSink, read_model_rows
from .model_runner import ModelRunOptions, plan_model_tasks, run_model_tasks
from .model_specs import (
    BERT_ATTENTION,
    CPU_SIZE,
    GPU_SIZE,
    MODEL_SPECS,
    ModelSize,
    parse_model_names,
)
from .outputs import check_same_device, write_env
from .precision import Precision
from .runner import split_done
from .timing import CpuTimer, CudaTimer, measurement_settings

DEFAULT_MODEL_KEEPS = [0.75, 0.5, 0.25]
MODEL_WARMUP_MS = 25.0
MODEL_REP_MS = 200.0
EXIT_BAD_ARGUMENTS = 2
EXIT_INCOMPLETE = 3


def _fail(message: str) -> int:
    print(f"gwprune bench: error: {message}", file=sys.stderr)
    return EXIT_BAD_ARGUMENTS


def model_size(args) -> ModelSize:
    """The preset's size (GPU: full models; CPU: tiny variants) with --batch etc. applied."""
    size = GPU_SIZE if args.device.type == "cuda" else CPU_SIZE
    changes = {"batch": args.batch, "image_size": args.image_size, "seq_len": args.seq_len}
    return replace(size, **{name: value for name, value in changes.items() if value is not None})


def make_model_timer(device: torch.device, warmup_ms: float, rep_ms: float):
    """CUDA: do_bench / events with these budgets; CPU: perf_counter runs within rep_ms."""
    if device.type == "cuda":
        return CudaTimer(warmup_ms=warmup_ms, rep_ms=rep_ms)
    return CpuTimer(budget_s=rep_ms / 1000)


def _library_versions() -> dict:
    versions = {}
    for name in ("torchvision", "transformers"):
        try:
            module = __import__(name)
        except Exception:  # noqa: BLE001  (absent or broken: the models needing it fail)
            versions[name] = "not available"
        else:
            versions[name] = module.__version__
    return versions


def catalog_lines() -> list[str]:
    lines = ["models (--models NAMES):"]
    for spec in MODEL_SPECS.values():
        dense = ", ".join(f"{name} ({why})" for name, why in spec.dense_by_design)
        lines.append(f"  {spec.name:<10} {spec.label(GPU_SIZE)}; stays dense: {dense}")
    return lines


def run_models(args, argv: list[str], precisions: list[Precision]) -> int:
    try:
        names = parse_model_names(args.models)
        size = model_size(args)
    except ValueError as error:
        return _fail(f"--models: {error}")
    if not precisions:
        return _fail("no precision left to run on the CPU; use fp32, fp16 or bf16")
    specs = [MODEL_SPECS[name] for name in names]
    keeps = args.keep or DEFAULT_MODEL_KEEPS
    use_graphs = args.cuda_graphs is not False and args.device.type == "cuda"
    use_compile = args.compile if args.compile is not None else args.device.type == "cuda"
    compile_backend = args.compile_backend if use_compile else None
    warmup_ms = args.warmup_ms or MODEL_WARMUP_MS
    rep_ms = args.rep_ms or MODEL_REP_MS

    device_slug = environment.device_slug(args.device)
    folder = "latest-models-cpu" if device_slug == "cpu" else f"latest-models-{device_slug}"
    out_dir = args.out or Path("bench/results") / folder
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.workspace_mb is not None:
        gwprune.set_workspace_limit(int(args.workspace_mb * 2**20))
    timer = make_model_timer(args.device, warmup_ms, rep_ms)
    env = environment.collect(args.device, timer.describe(), not args.no_cudnn_benchmark)
    env.update(_library_versions())
    env.update(
        {
            "benchmark": "models",
            "models": names,
            "model_size": f"batch {size.batch}, images {size.image_size}x{size.image_size}, "
            f"BERT sequence {size.seq_len}" + (", tiny CPU variants" if size.tiny else ""),
            "criterion": CRITERION,
            "bert_attention": BERT_ATTENTION,
            "cuda_graphs": use_graphs,
            "compile": f"{compile_backend}, freezing on" if compile_backend else "off",
            "check_samples": min(CHECK_SAMPLES, size.batch),
            "seed": args.seed,
        }
    )
    if args.device.type == "cpu":
        env["torch_threads"] = args.threads

    existing = []
    if args.resume and (out_dir / "results.csv").exists():
        try:
            check_same_device(out_dir, env)
        except ValueError as error:
            return _fail(f"--resume: {error}")
        rows = read_model_rows(out_dir / "results.csv")
        existing = [row for row in rows if not row.status.startswith("error")]
    existing, todo = split_done(plan_model_tasks(specs, keeps, precisions), existing)

    command = "gwprune bench " + shlex.join(argv)
    print(
        f"gwprune bench --models on {env['device']}: {', '.join(names)}; "
        f"{', '.join(p.name for p in precisions)}; keep {', '.join(f'{k:g}' for k in keeps)}; "
        f"{env['model_size']}; CUDA graphs {'on' if use_graphs else 'off'}; "
        f"torch.compile {compile_backend or 'off'}; "
        f"{len(todo)} measurements" + (f" ({len(existing)} resumed)" if existing else "")
    )
    write_env(out_dir, env)
    deadline = time.perf_counter() + args.max_minutes * 60 if args.max_minutes else None
    sink = ModelRowSink(out_dir / "results.csv", existing)
    options = ModelRunOptions(
        size=size, use_graphs=use_graphs, seed=args.seed, compile_backend=compile_backend
    )
    settings = measurement_settings(args.device, not args.no_cudnn_benchmark, args.threads)
    try:
        with settings:
            outcome = run_model_tasks(
                todo,
                args.device,
                timer,
                options,
                sink,
                deadline=deadline,
                known_dense=dense_times_from_rows(existing),
            )
    finally:
        sink.close()
    env["elapsed_s_last_run"] = round(outcome.elapsed_s, 1)
    env["command"] = command
    env["incomplete"] = not outcome.complete
    rows = sink.rows
    written = write_model_outputs(out_dir, rows, env, command, outcome.complete, not args.no_plots)
    _print_summary(rows, written, outcome.elapsed_s, outcome.complete)
    return 0 if outcome.complete else EXIT_INCOMPLETE


def report_only(out_dir: Path, env: dict) -> int:
    rows = read_model_rows(out_dir / "results.csv")
    command = env.get("command", "?")
    written = write_model_outputs(out_dir, rows, env, command, not env.get("incomplete", False))
    print(f"rewrote {written.markdown} and {len(written.plots)} plots from {len(rows)} rows")
    if written.plot_note:
        print(written.plot_note)
    return 0


def _print_summary(rows, written, elapsed_s: float, complete: bool) -> None:
    statuses: dict[str, int] = {}
    for row in rows:
        kind = row.status.split(":")[0]
        statuses[kind] = statuses.get(kind, 0) + 1
    counts = ", ".join(f"{count} {kind}" for kind, count in sorted(statuses.items()))
    print(f"\n{len(rows)} rows ({counts}) in {elapsed_s:.1f} s")
    for row in rows:
        if row.status == "FAILED":
            print(f"FAILED correctness: {row.model} keep {row.keep:g} [{row.precision}]")
    markdown = written.markdown.read_text()
    start = markdown.find("## Target")
    if start < 0:
        start = markdown.find("## Results")
    end = markdown.find("## Environment")
    print("\n" + markdown[start:end].rstrip() + "\n")
    print(f"results: {written.csv}\ntable:   {written.markdown}\nenv:     {written.env}")
    if written.plots:
        print(f"plots:   {len(written.plots)} PNG in {written.csv.parent}")
    if written.plot_note:
        print(written.plot_note)
    if not complete:
        print("stopped by --max-minutes: rerun the same command with --resume to finish")
