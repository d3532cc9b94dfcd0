"""Where a converted model's time goes: every converted layer against its dense twin.

    python bench/experiments/model_layers.py --out DIR [--models resnet18,bert-base]
        [--precisions tf32,fp16] [--keep 0.5]

Target P6 asks for whole models (keep .5) 1.3-1.4x faster than dense; the model
benchmark only reports the total. This runs the model benchmark's pruned model (same
builder, pruning and layout) once with hooks that keep each gwprune layer's input,
then times, at that exact input, the gwprune layer and its dense equivalent
(``layer.to_dense()``: cuDNN/cuBLAS on the masked weight) side by side with
``do_bench``. Each gwprune layer's output is checked against the dense one in float64
before timing. Last, a kernel profile of one whole forward of each side (converted and
dense) says what the rest of the model costs.
"""

import argparse
import csv
import os
import sys

import torch
import torch.nn as nn
from torch.profiler import ProfilerActivity, profile
from triton.testing import do_bench

import gwprune
from gwprune.bench.model_case import ModelCase
from gwprune.bench.model_specs import GPU_SIZE, MODEL_SPECS
from gwprune.bench.precision import PRECISIONS, precision_flags

GROUPWISE = (gwprune.GroupwiseConv2d, gwprune.GroupwiseLinear)
PROFILE_TOP = 25


def time_ms(fn) -> float:
    return float(do_bench(fn, warmup=25, rep=100, return_mode="median"))


def layer_inputs(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each gwprune layer's input in one forward (the last call if a layer runs twice)."""
    captured, handles = {}, []
    for name, module in model.named_modules():
        if isinstance(module, GROUPWISE):

            def keep(_module, args, name=name):
                captured[name] = args[0]

            handles.append(module.register_forward_pre_hook(keep))
    with torch.inference_mode():
        model(x)
    for handle in handles:
        handle.remove()
    return captured


def dense_twin(layer: nn.Module, x: torch.Tensor) -> nn.Module:
    dense = layer.to_dense().to(dtype=x.dtype)
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        dense = dense.to(memory_format=torch.channels_last)
    return dense.eval()


def check(layer, dense, x, tolerance: float, what: str) -> float:
    with torch.inference_mode():
        out = layer(x).double()
        ref = dense.double()(x.double())
        dense.to(dtype=x.dtype)
    error = float((out - ref).norm() / ref.norm())
    if not error <= tolerance:
        sys.exit(f"{what}: relative error {error:.2e} over {tolerance}")
    return error


def profile_forward(model, x, label: str) -> str:
    with torch.inference_mode():
        for _ in range(3):
            model(x)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            model(x)
            torch.cuda.synchronize()
    events = [
        e
        for e in prof.key_averages()
        if e.device_type == torch.autograd.DeviceType.CUDA and e.count
    ]
    total = sum(e.device_time_total for e in events)
    events.sort(key=lambda e: -e.device_time_total)
    lines = [f"-- {label}: {total / 1e3:.3f} ms of kernels in one forward"]
    for e in events[:PROFILE_TOP]:
        lines.append(
            f"{e.device_time_total / 1e3:8.3f} ms {100 * e.device_time_total / total:5.1f}% "
            f"x{e.count:<4d} {e.key[:110]}"
        )
    return "\n".join(lines)


def run_model(name: str, precision, keep: float, table, profiles) -> None:
    spec = MODEL_SPECS[name]
    case = ModelCase(spec, GPU_SIZE, torch.device("cuda"), seed=0)
    layout = "channels_last" if spec.family == "cnn" else "contiguous"
    pruned = case.pruned(keep)
    model = case.cast(pruned.converted[layout], precision.dtype, layout)
    x = case.input_for(precision, layout)
    totals = {"gwprune": 0.0, "dense": 0.0, "best": 0.0}
    for layer_name, layer_x in layer_inputs(model, x).items():
        layer = model.get_submodule(layer_name)
        dense = dense_twin(layer, layer_x)
        what = f"{name} {precision.name} {layer_name}"
        error = check(layer, dense, layer_x, precision.tolerance, what)
        with torch.inference_mode():
            gw_ms = time_ms(lambda layer=layer, x=layer_x: layer(x))
            dense_ms = time_ms(lambda dense=dense, x=layer_x: dense(x))
        totals["gwprune"] += gw_ms
        totals["dense"] += dense_ms
        totals["best"] += min(gw_ms, dense_ms)
        shape = "x".join(str(s) for s in layer_x.shape)
        table.writerow(
            [
                name,
                precision.name,
                layout,
                layer_name,
                type(layer).__name__,
                shape,
                f"{layer.keep_ratio:.3f}",
                f"{dense_ms:.5f}",
                f"{gw_ms:.5f}",
                f"{gw_ms / dense_ms:.3f}",
                f"{error:.2e}",
            ]
        )
        print(
            f"{what} {shape}: dense {dense_ms * 1e3:.1f} us, gwprune {gw_ms * 1e3:.1f} us "
            f"({gw_ms / dense_ms:.2f}x)",
            flush=True,
        )
    print(
        f"== {name} {precision.name}: converted layers sum gwprune {totals['gwprune']:.3f} ms, "
        f"dense {totals['dense']:.3f}, best of both {totals['best']:.3f}",
        flush=True,
    )
    profiles.append(
        f"== {name} {precision.name} keep {keep} ({layout}); per-layer sums: "
        + ", ".join(f"{k} {v:.3f} ms" for k, v in totals.items())
    )
    with torch.no_grad():
        dense_model = case.cast(case.dense, precision.dtype, layout)
    profiles.append(profile_forward(model, x, "converted"))
    profiles.append(profile_forward(dense_model, x, "dense"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--models", default="resnet18,vgg16,bert-base")
    parser.add_argument("--precisions", default="tf32,fp16")
    parser.add_argument("--keep", type=float, default=0.5)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.backends.cudnn.benchmark = True
    profiles: list[str] = []
    with open(os.path.join(args.out, "model-layers.csv"), "w", newline="") as handle:
        table = csv.writer(handle)
        table.writerow(
            [
                "model",
                "precision",
                "layout",
                "layer",
                "kind",
                "input",
                "keep",
                "dense_ms",
                "gwprune_ms",
                "ratio",
                "rel_error",
            ]
        )
        for name in args.models.split(","):
            for precision_name in args.precisions.split(","):
                precision = PRECISIONS[precision_name]
                with precision_flags(precision):
                    run_model(name, precision, args.keep, table, profiles)
                handle.flush()
                torch.cuda.empty_cache()
    with open(os.path.join(args.out, "model-profiles.txt"), "w") as handle:
        handle.write("\n\n".join(profiles) + "\n")
    print("\n\n".join(profiles))
    return 0


if __name__ == "__main__":
    sys.exit(main())
