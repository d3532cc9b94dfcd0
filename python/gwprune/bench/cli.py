"""``gwprune bench``: latency of group-wise pruning against dense and sparse patterns.

Without arguments it runs the quick preset on a CUDA GPU, or a tiny CPU preset
when no GPU is visible. ``--models`` times whole models instead (VGG-16, ResNet-18,
ViT-B/16, BERT-base): dense against pruned and converted. ``--host-overhead`` times
the host side of one eager call (raw, packed and module calls against F.conv2d /
F.linear, the GPU kept busy) and batch-1 eager latency. Exit status: 0 done,
2 bad arguments, 3 stopped by --max-minutes before the end (rerun with --resume).
"""

import argparse
import shlex
import sys
import time
from pathlib import Path

import torch

import gwprune

from . import environment, host_cli, model_cli, workloads
from .model_cli import DEFAULT_MODEL_KEEPS, MODEL_REP_MS, MODEL_WARMUP_MS
from .outputs import check_same_device, read_env, write_all, write_env
from .precision import PRECISIONS, Precision, parse_precisions, runnable_on
from .providers import default_providers, provider_names
from .results import CsvSink, read_csv
from .runner import plan, run_tasks, split_done
from .timing import make_timer, measurement_settings

DEFAULT_KEEPS = "0.9,0.75,0.5,0.25,0.1"
CPU_PRESET_KEEPS = "0.75,0.5,0.25"  # the keeps of the CPU targets, and under a minute
LAYER_WARMUP_MS = 10.0
LAYER_REP_MS = 50.0
GPU_PRECISIONS = "fp32,tf32,fp16,bf16"
CPU_PRECISIONS = "fp32"
# The CPU preset compares gwprune with dense, the naive path and the GEMM floor in both
# layouts; the sparse providers would take minutes on its layers on 2 cores.
CPU_PRESET_PROVIDERS = (
    "dense",
    "dense-cl",
    "group-packed",
    "group-packed-cl",
    "group-naive",
    "group-naive-cl",
    "floor",
)
EXIT_BAD_ARGUMENTS = 2
EXIT_INCOMPLETE = 3


def _keep_ratios(text: str) -> list[float]:
    keeps = []
    for part in (p.strip() for p in text.split(",")):
        try:
            keep = float(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part!r} is not a number") from None
        if not 0.0 < keep <= 1.0:
            raise argparse.ArgumentTypeError(f"{part!r} is not a keep ratio in (0, 1]")
        keeps.append(keep)
    return sorted(set(keeps), reverse=True)


def _precisions(text: str) -> list[Precision]:
    try:
        return parse_precisions(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value:g}")
    return value


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gwprune bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    preset = parser.add_mutually_exclusive_group()
    preset.add_argument("--quick", action="store_true", help="a few layers, a few minutes on a GPU")
    preset.add_argument(
        "--paper",
        action="store_true",
        help="the seed's layers and the layers of its models (VGG-16, ResNet-18, ViT-B/16, "
        "BERT-base); long: use --max-minutes and --resume",
    )
    parser.add_argument(
        "--layers",
        type=_names,
        metavar="NAMES",
        help="comma list of layers, models, preset:<name> or workload slugs (see --list)",
    )
    parser.add_argument(
        "--models",
        nargs="?",
        const="all",
        default=None,
        metavar="NAMES",
        help="whole models instead of layers: all, or a comma list from "
        "vgg16, resnet18, vit_b_16, bert-base (default all)",
    )
    parser.add_argument(
        "--host-overhead",
        action="store_true",
        help="host time per eager call (GPU time excluded) of gwprune's raw, packed and module "
        "calls against F.conv2d / F.linear, and batch-1 eager latency; results in "
        "bench/results/host-overhead-<device>-<date>",
    )
    parser.add_argument(
        "--host-calls",
        type=_positive_int,
        default=None,
        help=f"--host-overhead: calls per timed batch (default {host_cli.GPU_CALLS}; "
        f"CPU {host_cli.CPU_CALLS})",
    )
    parser.add_argument(
        "--host-batches",
        type=_positive_int,
        default=None,
        help=f"--host-overhead: rounds, each one timed batch of every call of a case, "
        f"round-robin (default {host_cli.GPU_BATCHES}; CPU {host_cli.CPU_BATCHES})",
    )
    parser.add_argument(
        "--keep",
        type=_keep_ratios,
        default=None,
        metavar="RATIOS",
        help=f"fractions of groups kept (default {DEFAULT_KEEPS}; CPU preset {CPU_PRESET_KEEPS}; "
        f"with --models {','.join(f'{k:g}' for k in DEFAULT_MODEL_KEEPS)})",
    )
    parser.add_argument(
        "--precisions",
        type=_precisions,
        default=None,
        metavar="LIST",
        help=f"from {', '.join(PRECISIONS)} "
        f"(default {GPU_PRECISIONS} on GPU, {CPU_PRECISIONS} on CPU)",
    )
    parser.add_argument(
        "--providers",
        type=_names,
        default=None,
        metavar="NAMES",
        help=f"only these providers, from {', '.join(provider_names())}",
    )
    parser.add_argument(
        "--batch", type=_positive_int, default=None, help="batch size for every workload"
    )
    parser.add_argument(
        "--image-size",
        type=_positive_int,
        default=None,
        help="--models: input height and width of the CNNs and ViT (default 224; CPU 32)",
    )
    parser.add_argument(
        "--seq-len",
        type=_positive_int,
        default=None,
        help="--models: BERT's sequence length (default 128; CPU 16)",
    )
    parser.add_argument(
        "--cuda-graphs",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="--models: time CUDA graph replays of both models (default on; "
        "a capture that fails falls back to eager, noted in the row)",
    )
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="--models: also time dense and the autotuned converted model under torch.compile "
        "(inductor, freezing on) and report speedup_vs_best_dense (default on a GPU, off on "
        "the CPU)",
    )
    parser.add_argument(
        "--compile-backend",
        default="inductor",
        help="--models: torch.compile backend of --compile (default inductor; 'eager' only "
        "checks the plumbing, as the CPU tests do)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default bench/results/latest-<preset>-<device>)",
    )
    parser.add_argument(
        "--cpu", action="store_true", help="run on the CPU even if a GPU is visible"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep the rows already in OUT/results.csv and measure only the missing ones",
    )
    parser.add_argument(
        "--max-minutes",
        type=_positive_float,
        default=None,
        help="stop measuring after this long, write what is done, exit with status 3",
    )
    parser.add_argument(
        "--warmup-ms",
        type=_positive_float,
        default=None,
        help=f"GPU warm-up per timing (default {LAYER_WARMUP_MS:g}; --models {MODEL_WARMUP_MS:g})",
    )
    parser.add_argument(
        "--rep-ms",
        type=_positive_float,
        default=None,
        help=f"GPU time spent in timed runs per timing (default {LAYER_REP_MS:g}; --models "
        f"{MODEL_REP_MS:g}, also the CPU budget there)",
    )
    parser.add_argument(
        "--workspace-mb",
        type=_positive_float,
        default=None,
        help="gwprune.set_workspace_limit for the packed ops (default: gwprune's)",
    )
    parser.add_argument(
        "--no-cudnn-benchmark",
        action="store_true",
        help="leave torch.backends.cudnn.benchmark off "
        "(by default on, so dense gets cuDNN's fastest algorithm)",
    )
    parser.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="CPU threads for a CPU run (default: torch's thread count, usually one per core, "
        "for the CPU preset's layers; 1 for custom --layers and --models, whose small shapes "
        "extra threads mostly slow with wake-up stalls)",
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights, inputs and masks")
    parser.add_argument("--list", action="store_true", help="list layers, models and providers")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="measure nothing: rewrite results.md, model sums and plots from OUT/results.csv "
        "and OUT/env.json (e.g. on a laptop, for results fetched from a GPU machine)",
    )
    return parser


def _fail(message: str) -> int:
    print(f"gwprune bench: error: {message}", file=sys.stderr)
    return EXIT_BAD_ARGUMENTS


def _preset_name(args) -> str:
    if args.layers:
        return "custom"
    if args.paper:
        return "paper"
    if args.quick:
        return "quick"
    return "cpu" if args.device.type == "cpu" else "quick"


def _precisions_for(args) -> list[Precision]:
    """--precisions or the device's default; TF32 dropped (with a note) on the CPU."""
    default = GPU_PRECISIONS if args.device.type == "cuda" else CPU_PRECISIONS
    precisions, skipped = runnable_on(
        args.precisions or parse_precisions(default), args.device.type
    )
    if skipped:
        print(f"note: {', '.join(skipped)} skipped: TF32 is a CUDA tensor-core mode")
    return precisions


def _resumed_rows(out_dir: Path, env: dict) -> list:
    """Rows of an earlier run in out_dir worth keeping (errors are measured again)."""
    if not (out_dir / "results.csv").exists():
        return []
    check_same_device(out_dir, env)
    return [row for row in read_csv(out_dir / "results.csv") if not row.status.startswith("error")]


def _report_only(out_dir: Path | None) -> int:
    if out_dir is None:
        return _fail("--report-only needs --out, the folder of an earlier run")
    env = read_env(out_dir)
    if env is None or not (out_dir / "results.csv").exists():
        return _fail(f"--report-only: {out_dir} has no results.csv and env.json of a run")
    if env.get("benchmark") == "models":
        return model_cli.report_only(out_dir, env)
    if env.get("benchmark") == "host-overhead":
        return host_cli.report_only(out_dir, env)
    rows = read_csv(out_dir / "results.csv")
    try:
        _, models = workloads.select(env.get("layers", []), env.get("batch_override"))
    except ValueError as error:
        return _fail(f"--report-only: env.json lists layers this version does not know: {error}")
    command = env.get("command", "?")
    complete = not env.get("incomplete", False)
    written = write_all(out_dir, rows, env, models, command, complete)
    print(f"rewrote {written.markdown} and {len(written.plots)} plots from {len(rows)} rows")
    if written.plot_note:
        print(written.plot_note)
    return 0


def _print_catalog() -> None:
    print("\n".join(workloads.catalog_lines()))
    print("providers:")
    for provider in default_providers():
        print(f"  {provider.name:<16} {provider.family:<13} {'/'.join(provider.kinds)}")
    print("\n".join(model_cli.catalog_lines()))


def _mode_conflict(args) -> str | None:
    """Why the options mix the layer benchmark, --models and --host-overhead, or None."""
    if args.host_overhead:
        other_options = {
            "--models": args.models is not None,
            "--quick": args.quick,
            "--paper": args.paper,
            "--layers": args.layers,
            "--providers": args.providers,
            "--keep": args.keep,
            "--batch": args.batch,
            "--resume": args.resume,
            "--max-minutes": args.max_minutes,
        }
        used = [flag for flag, value in other_options.items() if value]
        return f"{used[0]} does not apply to --host-overhead" if used else None
    host_options = {"--host-calls": args.host_calls, "--host-batches": args.host_batches}
    used = [flag for flag, value in host_options.items() if value]
    if used:
        return f"{used[0]} applies to --host-overhead only"
    if args.models is not None:
        layer_options = {
            "--quick": args.quick,
            "--paper": args.paper,
            "--layers": args.layers,
            "--providers": args.providers,
        }
        used = [flag for flag, value in layer_options.items() if value]
        return f"{used[0]} applies to the layer benchmark, not to --models" if used else None
    model_options = {
        "--image-size": args.image_size,
        "--seq-len": args.seq_len,
        "--cuda-graphs/--no-cuda-graphs": args.cuda_graphs is not None,
        "--compile/--no-compile": args.compile is not None,
    }
    used = [flag for flag, value in model_options.items() if value]
    return f"{used[0]} applies to --models only" if used else None


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_request:  # argparse exits on --help and on errors
        return int(exit_request.code or 0)
    if args.list:
        _print_catalog()
        return 0
    if args.report_only:
        return _report_only(args.out)

    has_gpu = torch.cuda.is_available()
    args.device = torch.device("cuda" if has_gpu and not args.cpu else "cpu")
    conflict = _mode_conflict(args)
    if conflict:
        return _fail(conflict)
    if args.host_overhead:
        return host_cli.run_host_overhead(args, argv)
    if args.models is not None:
        args.threads = args.threads or 1
        return model_cli.run_models(args, argv, _precisions_for(args))
    if (args.quick or args.paper) and not has_gpu and not args.cpu:
        flag = "--quick" if args.quick else "--paper"
        return _fail(
            f"{flag} needs a CUDA GPU and none is visible; run without it for the CPU preset, "
            f"or add --cpu to run these layers on the CPU anyway (slow)"
        )
    preset = _preset_name(args)
    if args.threads is None:
        args.threads = torch.get_num_threads() if preset == "cpu" else 1
    try:
        chosen, models = workloads.select(
            args.layers or list(workloads.PRESETS[preset]), args.batch
        )
    except ValueError as error:
        return _fail(f"--layers: {error}")

    keeps = args.keep or _keep_ratios(CPU_PRESET_KEEPS if preset == "cpu" else DEFAULT_KEEPS)
    precisions = _precisions_for(args)
    if not precisions:
        return _fail("no precision left to run on the CPU; use fp32, fp16 or bf16")
    providers = default_providers()
    if args.providers:
        unknown = sorted(set(args.providers) - set(provider_names()))
        if unknown:
            return _fail(
                f"--providers: unknown {unknown[0]!r}; choose from {', '.join(provider_names())}"
            )
        providers = [p for p in providers if p.name in args.providers]
    elif preset == "cpu":
        providers = [p for p in providers if p.name in CPU_PRESET_PROVIDERS]

    # latest-quick-nvidia-h100-80gb-hbm3, latest-paper-..., latest-cpu (not latest-cpu-cpu)
    folder = "-".join(dict.fromkeys(["latest", preset, environment.device_slug(args.device)]))
    out_dir = args.out or Path("bench/results") / folder
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.workspace_mb is not None:
        gwprune.set_workspace_limit(int(args.workspace_mb * 2**20))
    timer = make_timer(args.device, args.warmup_ms or LAYER_WARMUP_MS, args.rep_ms or LAYER_REP_MS)
    env = environment.collect(args.device, timer.describe(), not args.no_cudnn_benchmark)
    env["preset"] = preset
    env["layers"] = args.layers or list(workloads.PRESETS[preset])  # for --report-only
    env["batch_override"] = args.batch
    env["seed"] = args.seed
    if args.device.type == "cpu":
        env["torch_threads"] = args.threads

    try:
        existing = _resumed_rows(out_dir, env) if args.resume else []
    except ValueError as error:
        return _fail(f"--resume: {error}")
    existing, todo = split_done(plan(chosen, precisions, keeps, providers), existing)

    command = "gwprune bench " + shlex.join(argv)
    print(
        f"gwprune bench [{preset}] on {env['device']}: {len(chosen)} workloads, "
        f"{', '.join(p.name for p in precisions)}, keep {', '.join(f'{k:g}' for k in keeps)}; "
        f"{len(todo)} measurements" + (f" ({len(existing)} resumed)" if existing else "")
    )
    write_env(out_dir, env)
    deadline = time.perf_counter() + args.max_minutes * 60 if args.max_minutes else None
    sink = CsvSink(out_dir / "results.csv", existing)
    settings = measurement_settings(args.device, not args.no_cudnn_benchmark, args.threads)
    try:
        with settings:
            outcome = run_tasks(todo, args.device, timer, sink, seed=args.seed, deadline=deadline)
    finally:
        sink.close()
    env["elapsed_s_last_run"] = round(outcome.elapsed_s, 1)
    env["command"] = command
    env["incomplete"] = not outcome.complete
    written = write_all(
        out_dir, sink.rows, env, models, command, outcome.complete, not args.no_plots
    )
    _print_summary(sink.rows, written, outcome)
    return 0 if outcome.complete else EXIT_INCOMPLETE


def _print_summary(rows, written, outcome) -> None:
    statuses: dict[str, int] = {}
    for row in rows:
        kind = row.status.split(":")[0]
        statuses[kind] = statuses.get(kind, 0) + 1
    counts = ", ".join(f"{count} {kind}" for kind, count in sorted(statuses.items()))
    print(f"\n{len(rows)} rows ({counts}) in {outcome.elapsed_s:.1f} s")
    failed = sorted(
        {
            f"{row.provider} on {row.workload} [{row.precision}]"
            for row in rows
            if row.status == "FAILED"
        }
    )
    for line in failed:
        print(f"FAILED correctness: {line}")
    markdown = written.markdown.read_text()
    if len(rows) <= 150:
        latency = markdown[markdown.index("## Latency") :] if "## Latency" in markdown else markdown
        print("\n" + latency)
    print(f"results: {written.csv}\ntable:   {written.markdown}\nenv:     {written.env}")
    if written.model_totals:
        print(f"models:  {written.model_totals}")
    if written.plots:
        print(f"plots:   {len(written.plots)} PNG in {written.csv.parent}")
    if written.plot_note:
        print(written.plot_note)
    if not outcome.complete:
        print("stopped by --max-minutes: rerun the same command with --resume to finish")
