"""Rows of the model-level benchmark, their CSV file, and the speedup targets.

One row per model x keep ratio x precision: the dense model (unpruned) and the
converted model (gwprune layers), each timed in every memory layout that applies,
the better layout reported, and the correctness check that came first.
"""

from dataclasses import dataclass
from pathlib import Path

from .csv_io import RowSink, read_rows, write_rows


@dataclass
class ModelRow:
    model: str
    label: str
    input: str  # '64x3x224x224' or '64x128 token ids'
    batch: int
    precision: str
    keep: float  # fraction of groups kept in every converted layer
    layers_converted: int | None = None
    layers_dense: int | None = None  # conv/linear layers left dense
    dense_layers: str = ""  # which, and why
    groups_kept: float | None = None  # over the converted layers
    params_total: int | None = None  # parameters of the dense model
    params_kept: float | None = None  # fraction of them left after pruning
    dense_ms: float | None = None  # better layout
    dense_layout: str = ""
    converted_ms: float | None = None  # better layout
    converted_layout: str = ""
    speedup: float | None = None  # dense_ms / converted_ms
    # The converted model after gwprune.autotune (each layer gathered or masked dense,
    # whichever timed faster alone), better layout; how many layers it ran dense.
    autotuned_ms: float | None = None
    autotuned_layout: str = ""
    autotuned_speedup: float | None = None  # dense_ms / autotuned_ms
    autotuned_dense_layers: int | None = None
    # torch.compile (inductor, freezing): dense, and the autotuned converted model, each in
    # the layout that was faster eagerly; best dense = the faster of eager and compiled
    # dense; speedup_vs_best_dense = best dense / the fastest converted time of all.
    dense_compiled_ms: float | None = None
    dense_compiled_layout: str = ""
    autotuned_compiled_ms: float | None = None
    autotuned_compiled_layout: str = ""
    best_dense_ms: float | None = None
    speedup_vs_best_dense: float | None = None
    compile: str = ""  # '' (not measured) or 'inductor, freezing'
    compile_note: str = ""  # why a compiled timing is missing
    dense_ms_contiguous: float | None = None
    dense_ms_channels_last: float | None = None
    converted_ms_contiguous: float | None = None
    converted_ms_channels_last: float | None = None
    rel_error: float | None = None  # converted vs float64 masked dense (worst layout)
    dense_rel_error: float | None = None  # masked dense at this precision vs the same
    tolerance: float | None = None
    status: str = ""  # ok | FAILED | error: what
    cuda_graphs: str = ""  # on | off | partial (note says which fell back)
    timing: str = ""
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def key(self) -> tuple[str, float, str]:
        return (self.model, round(self.keep, 6), self.precision)


class ModelRowSink(RowSink):
    def __init__(self, path: Path, existing: list[ModelRow]):
        super().__init__(path, existing, ModelRow)


def write_model_rows(path: Path, rows: list[ModelRow]) -> None:
    write_rows(path, rows, ModelRow)


def read_model_rows(path: Path) -> list[ModelRow]:
    return read_rows(path, ModelRow)


# ---- the performance target -----------------------------------------------------------------

TARGET_KEEP = 0.5
TARGET_PRECISIONS = ("tf32", "fp16")
IMAGES, TOKENS = "64x3x224x224", "64x128 token ids"
# Issue 14: (model, keep) -> (required speedup_vs_best_dense, the input it is stated for)
TARGET_SPEEDUPS = {
    ("resnet50", 0.5): (1.40, IMAGES),
    ("vgg16", 0.5): (1.50, IMAGES),
    ("resnet18", 0.5): (1.25, IMAGES),
    ("bert-base", 0.5): (1.35, TOKENS),
    ("llama", 0.5): (1.35, TOKENS),
    ("gpt2", 0.5): (1.30, TOKENS),
    ("vgg16", 0.25): (2.2, IMAGES),
    ("resnet50", 0.25): (1.9, IMAGES),
}


@dataclass(frozen=True)
class TargetCheck:
    model: str
    precision: str
    required: float
    speedup: float | None  # every converted layer gathered, against eager dense
    autotuned_speedup: float | None  # after gwprune.autotune, against eager dense
    # verdict: 'met' | 'not met' | 'not measured: why', on speedup_vs_best_dense
    verdict: str
    keep: float = TARGET_KEEP
    vs_best_dense: float | None = None  # the best converted time against the best dense


def target_checks(rows: list[ModelRow], is_gpu: bool) -> list[TargetCheck]:
    """Issue 14's targets (TARGET_SPEEDUPS) in TF32 and fp16, judged on
    ``speedup_vs_best_dense``: the fastest converted model (eager, autotuned, autotuned
    and compiled) against the faster of eager and compiled dense. A run without compiled
    timings is not measured against the target."""
    by_key = {row.key: row for row in rows}
    checks = []
    for (model, keep), (required, target_input) in TARGET_SPEEDUPS.items():
        for precision in TARGET_PRECISIONS:
            row = by_key.get((model, keep, precision))
            speedup = row.speedup if row is not None else None
            autotuned = row.autotuned_speedup if row is not None else None
            best = row.speedup_vs_best_dense if row is not None else None
            if row is None:
                verdict = "not measured"
            elif not is_gpu:
                verdict = "not measured: CPU run"
            elif row.input != target_input:
                verdict = f"not measured: input {row.input}, target is for {target_input}"
            elif not row.ok or speedup is None:
                verdict = f"not measured: {row.status}"
            elif row.dense_compiled_ms is None:
                verdict = "not measured: no compiled dense timing (--compile)"
            else:
                verdict = "met" if best is not None and best >= required else "not met"
            checks.append(
                TargetCheck(model, precision, required, speedup, autotuned, verdict, keep, best)
            )
    return checks
