"""``gwprune bench --host-overhead``: host time per eager call, and batch-1 eager latency.

For every layer of host_cases.py (the seed conv, the BERT FFN linear and a batch-1 conv
on a GPU; small layers on the CPU), every variant (NCHW / channels_last, with and without
bias) and precision, it checks gwprune's raw, packed and module calls against float64,
then times them and the dense op together, round-robin within each round: host time per
call with the GPU kept busy (host_timing.py) and, for the batch-1 layer, eager latency.
Calls run under ``torch.no_grad()``. Writes results.csv, results.md and env.json to
bench/results/host-overhead-<device>-<date>/.
"""

import datetime
import shlex
import sys
from pathlib import Path

import torch

from . import environment
from .host_cases import CALLS, CPU_LAYERS, GPU_LAYERS, KEEP, LATENCY_LAYER, build, variants
from .host_report import (
    HOST,
    LATENCY,
    LATENCY_PRECISIONS,
    HostRow,
    add_ratios,
    read_csv,
    render,
    target_lines,
    write_csv,
)
from .outputs import write_env
from .precision import Precision, parse_precisions, precision_flags, runnable_on
from .timing import measurement_settings

GPU_HOST_PRECISIONS = "tf32,fp16,bf16"
CPU_HOST_PRECISIONS = "fp32"
# 40 calls per batch: CUDA's pending-launch queue holds about a thousand launches, and a
# chunked TF32 conv launches six or more kernels per call; 200 calls (the first H200
# run, 2026-12-02) filled the queue, so the host waited on the GPU and the time of
# multi-kernel calls (TF32 seed conv, cuDNN conv + bias) read 200 us instead of ~30.
# Rounds (--host-batches): each runs one batch of every call of a case, round-robin
# (host_timing.py); the minimum over 50 of them. 25 batches per call, timed one call after
# the other (2026-12-04), left the dense op at 27-50 us between near-identical cases.
GPU_CALLS, GPU_BATCHES = 40, 50
CPU_CALLS, CPU_BATCHES = 50, 15


def _fail(message: str) -> int:
    print(f"gwprune bench: error: {message}", file=sys.stderr)
    return 2


def _precisions(args) -> list[Precision]:
    default = GPU_HOST_PRECISIONS if args.device.type == "cuda" else CPU_HOST_PRECISIONS
    chosen, skipped = runnable_on(args.precisions or parse_precisions(default), args.device.type)
    if skipped:
        print(f"note: {', '.join(skipped)} skipped: TF32 is a CUDA tensor-core mode")
    return chosen


def _relative_error(out: torch.Tensor, reference: torch.Tensor) -> float:
    diff = (out.double() - reference).norm()
    scale = reference.norm()
    return float(diff / scale) if scale > 0 else float(diff)


def run_host_overhead(args, argv: list[str]) -> int:
    from .host_timing import HostTimer

    device = args.device
    cuda = device.type == "cuda"
    if args.threads is None:  # as the layer presets: torch's thread count, one per core
        args.threads = torch.get_num_threads()
    precisions = _precisions(args)
    if not precisions:
        return _fail("no precision left to run on the CPU; use fp32, fp16 or bf16")
    calls = args.host_calls or (GPU_CALLS if cuda else CPU_CALLS)
    batches = args.host_batches or (GPU_BATCHES if cuda else CPU_BATCHES)
    timer = HostTimer(device, calls=calls, batches=batches, warmup=min(20, calls))
    layers = GPU_LAYERS if cuda else CPU_LAYERS
    latency_layer = LATENCY_LAYER[device.type]

    today = datetime.date.today().isoformat()
    folder = f"host-overhead-{environment.device_slug(device)}-{today}"
    out_dir = args.out or Path("bench/results") / folder
    out_dir.mkdir(parents=True, exist_ok=True)
    env = environment.collect(device, timer.describe(), not args.no_cudnn_benchmark)
    env.update(
        {
            "benchmark": "host-overhead",
            "layers": [layer.label() for layer in layers],
            "latency_layer": latency_layer.label(),
            "keep": KEEP,
            "grad_mode": "torch.no_grad()",
            "seed": args.seed,
            "date": today,
        }
    )
    if not cuda:
        env["torch_threads"] = args.threads
    command = "gwprune bench " + shlex.join(argv)
    env["command"] = command
    print(
        f"gwprune bench --host-overhead on {env['device']}: {len(layers)} layers, "
        f"{', '.join(p.name for p in precisions)}; {timer.describe()}"
    )
    write_env(out_dir, env)

    rows: list[HostRow] = []
    settings = measurement_settings(device, not args.no_cudnn_benchmark, args.threads)
    with settings, torch.no_grad():
        for layer in layers:
            for variant in variants(layer):
                for precision in precisions:
                    with_latency = layer == latency_layer and (
                        not cuda or precision.name in LATENCY_PRECISIONS
                    )
                    with precision_flags(precision):
                        rows += _measure(
                            layer, variant, precision, device, timer, args.seed, with_latency
                        )
                    print(f"  {layer.name} {variant.label()} [{precision.name}] done")
    add_ratios(rows)
    write_csv(out_dir / "results.csv", rows)
    (out_dir / "results.md").write_text(render(rows, env, command))
    for row in rows:
        if row.status != "ok":
            print(f"{row.status.split(':')[0]}: {row.layer} {row.layout} bias={row.bias} "
                  f"[{row.precision}] {row.call} ({row.metric}): {row.status}")  # fmt: skip
    print("\n" + "\n".join(target_lines(rows)) + "\n")
    print(f"results: {out_dir / 'results.csv'}\ntable:   {out_dir / 'results.md'}")
    return 0


def _measure(layer, variant, precision, device, timer, seed, with_latency) -> list[HostRow]:
    def row(call: str, metric: str, us: float | None, status: str) -> HostRow:
        return HostRow(layer.name, layer.label(), layer.kind, variant.layout,
                       "yes" if variant.bias else "no", precision.name, call, metric, us,
                       None, None, status)  # fmt: skip

    metrics = (HOST, LATENCY) if with_latency else (HOST,)
    try:
        setup = build(layer, variant, precision.dtype, device, seed)
    except Exception as error:  # noqa: BLE001  (recorded in the row, the run goes on)
        return [row(c, m, None, f"error: {error}") for c in CALLS for m in metrics]
    # Every call is checked first; those that pass are timed together, round-robin
    # (host_timing.py), so drift of the host hits them alike.
    status: dict[str, str] = {}
    for call in CALLS:
        try:
            # The dense op's own error (fp16 / TF32 rounding) is the yardstick's scale.
            tolerance = precision.tolerance_reordered if call == "dense" else precision.tolerance
            error = _relative_error(setup.calls[call](), setup.reference)
            status[call] = "ok" if error <= tolerance else f"FAILED: error {error:.2e}"
        except Exception as error:  # noqa: BLE001
            status[call] = f"error: {error}"
    timed = {call: setup.calls[call] for call in CALLS if status[call] == "ok"}
    times: dict[str, dict[str, float]] = {}
    try:
        times[HOST] = timer.host_us_each(timed)
        if with_latency:
            times[LATENCY] = timer.latency_us_each(timed)
    except Exception as error:  # noqa: BLE001
        status.update(dict.fromkeys(timed, f"error: {error}"))
    return [
        row(call, metric, times[metric][call] if status[call] == "ok" else None, status[call])
        for call in CALLS
        for metric in metrics
    ]


def report_only(out_dir: Path, env: dict) -> int:
    rows = read_csv(out_dir / "results.csv")
    add_ratios(rows)
    (out_dir / "results.md").write_text(render(rows, env, env.get("command", "?")))
    print(f"rewrote {out_dir / 'results.md'} from {len(rows)} rows")
    return 0
