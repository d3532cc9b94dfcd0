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
# model -> (required speedup over dense, the input the target is stated for)
TARGET_SPEEDUPS = {
    "resnet18": (1.3, "64x3x224x224"),
    "vgg16": (1.3, "64x3x224x224"),
    "bert-base": (1.4, "64x128 token ids"),
}


@dataclass(frozen=True)
class TargetCheck:
    model: str
    precision: str
    required: float
    speedup: float | None  # every converted layer gathered
    autotuned_speedup: float | None  # after gwprune.autotune
    verdict: str  # 'met' | 'not met' | 'not measured: why' (on the better of the two)


def target_checks(rows: list[ModelRow], is_gpu: bool) -> list[TargetCheck]:
    """The target: at keep 0.5 in TF32 and fp16, ResNet-18 and VGG-16 (224x224, batch 64)
    at least 1.3x, BERT-base (batch 64, seq 128) at least 1.4x faster than dense; judged
    on the better of the all-gathered and the autotuned converted model."""
    by_key = {row.key: row for row in rows}
    checks = []
    for model, (required, target_input) in TARGET_SPEEDUPS.items():
        for precision in TARGET_PRECISIONS:
            row = by_key.get((model, TARGET_KEEP, precision))
            speedup = row.speedup if row is not None else None
            autotuned = row.autotuned_speedup if row is not None else None
            if row is None:
                verdict = "not measured"
            elif not is_gpu:
                verdict = "not measured: CPU run"
            elif row.input != target_input:
                verdict = f"not measured: input {row.input}, target is for {target_input}"
            elif not row.ok or speedup is None:
                verdict = f"not measured: {row.status}"
            else:
                best = max(speedup, autotuned or 0.0)
                verdict = "met" if best >= required else "not met"
            checks.append(TargetCheck(model, precision, required, speedup, autotuned, verdict))
    return checks
