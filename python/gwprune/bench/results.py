"""Result rows: the CSV format, the ratios against dense and floor, and per-model sums."""

import math
from dataclasses import dataclass
from pathlib import Path

from .csv_io import RowSink, field_names, read_rows, write_rows
from .workloads import ModelLayers


@dataclass
class ResultRow:
    workload: str  # slug
    label: str  # human description
    kind: str
    gemm: str  # out x K x columns of the dense GEMM behind the layer
    batch: int
    precision: str
    provider: str
    family: str
    pattern: str
    keep: float  # requested keep ratio (1.0 for dense)
    density: float | None = None  # fraction of weights the provider's mask actually keeps
    ms: float | None = None
    ratio_vs_dense: float | None = None  # ms / fastest dense layout, same workload & precision
    ratio_vs_floor: float | None = None  # ms / fastest floor, same workload, precision & keep
    # ms / fastest anchor layout (cuDNN on round(keep * C) input channels: a channel-pruned
    # layer with the same FLOPs), same workload, precision & keep
    ratio_vs_anchor: float | None = None
    rel_error: float | None = None
    tolerance: float | None = None
    status: str = ""  # ok | FAILED | unsupported: why | error: what | skipped: why
    timing: str = ""
    input_sets: int | None = None
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def key(self) -> tuple[str, str, float, str]:
        return (self.workload, self.provider, round(self.keep, 6), self.precision)


FIELDS = field_names(ResultRow)


class CsvSink(RowSink):
    """Appends result rows to results.csv as they are measured."""

    def __init__(self, path: Path, existing: list[ResultRow]):
        super().__init__(path, existing, ResultRow)


def write_csv(path: Path, rows: list[ResultRow]) -> None:
    write_rows(path, rows, ResultRow)


def read_csv(path: Path) -> list[ResultRow]:
    return read_rows(path, ResultRow)


# ---- derived numbers ----------------------------------------------------------------------


def dense_best(rows: list[ResultRow]) -> dict[tuple[str, str], float]:
    """Fastest passing dense layout per (workload, precision)."""
    best: dict[tuple[str, str], float] = {}
    for row in rows:
        if row.ok and row.family == "dense" and row.ms is not None:
            key = (row.workload, row.precision)
            best[key] = min(best.get(key, math.inf), row.ms)
    return best


def family_best(rows: list[ResultRow], family: str) -> dict[tuple[str, str, float], float]:
    """Fastest passing row of ``family`` per (workload, precision, keep)."""
    best: dict[tuple[str, str, float], float] = {}
    for row in rows:
        if row.ok and row.family == family and row.ms is not None:
            key = (row.workload, row.precision, round(row.keep, 6))
            best[key] = min(best.get(key, math.inf), row.ms)
    return best


def floor_best(rows: list[ResultRow]) -> dict[tuple[str, str, float], float]:
    return family_best(rows, "floor")


def add_ratios(rows: list[ResultRow]) -> None:
    dense, floor, anchor = dense_best(rows), floor_best(rows), family_best(rows, "anchor")
    for row in rows:
        row.ratio_vs_dense = row.ratio_vs_floor = row.ratio_vs_anchor = None
        if not row.ok or row.ms is None:
            continue
        if (row.workload, row.precision) in dense:
            row.ratio_vs_dense = row.ms / dense[(row.workload, row.precision)]
        keep_key = (row.workload, row.precision, round(row.keep, 6))
        if keep_key in floor:
            row.ratio_vs_floor = row.ms / floor[keep_key]
        if keep_key in anchor:
            row.ratio_vs_anchor = row.ms / anchor[keep_key]


DENSE_BEST = "dense-best"  # model total with each layer in its fastest dense layout


@dataclass
class ModelTotal:
    model: str
    precision: str
    provider: str
    family: str
    keep: float
    ms: float
    ratio_vs_dense: float
    dense_fallback_layers: int  # layer uses this provider could not run: dense time counted
    layers: int  # layer uses in the model


def model_totals(rows: list[ResultRow], models: list[ModelLayers]) -> list[ModelTotal]:
    """Sum over a model's layers (times their use count) per provider, keep and precision.

    A layer the provider could not run (unsupported, failed, missing) counts with its
    fastest dense time, as a deployment would keep that layer dense. Only the layers'
    GEMM-like work is summed: activations, pooling and norms are not measured. The
    reference, ``dense-best``, takes each layer in its fastest dense layout.
    """
    dense = dense_best(rows)
    by_key = {row.key: row for row in rows if row.ok and row.ms is not None}
    totals: list[ModelTotal] = []
    for model in models:
        uses = sum(count for _, count in model.layers)
        precisions = dict.fromkeys(
            row.precision for row in rows if any(row.workload == w.slug for w, _ in model.layers)
        )
        for precision in precisions:
            if any((w.slug, precision) not in dense for w, _ in model.layers):
                continue  # no dense time for some layer: no meaningful total
            dense_total = sum(count * dense[(w.slug, precision)] for w, count in model.layers)
            totals.append(
                ModelTotal(
                    model.name, precision, DENSE_BEST, "dense", 1.0, dense_total, 1.0, 0, uses
                )
            )
            variants = dict.fromkeys(
                (row.provider, row.family, round(row.keep, 6))
                for row in rows
                if row.precision == precision
                and any(row.workload == w.slug for w, _ in model.layers)
            )
            for provider, family, keep in variants:
                total, fallback = 0.0, 0
                for workload, count in model.layers:
                    row = by_key.get((workload.slug, provider, keep, precision))
                    if row is None:
                        fallback += count
                        total += count * dense[(workload.slug, precision)]
                    else:
                        total += count * row.ms
                if fallback == uses:
                    continue  # the provider ran no layer of this model: nothing to report
                totals.append(
                    ModelTotal(
                        model.name,
                        precision,
                        provider,
                        family,
                        keep,
                        total,
                        total / dense_total,
                        fallback,
                        uses,
                    )
                )
    return totals


def write_model_totals_csv(path: Path, totals: list[ModelTotal]) -> None:
    write_rows(path, totals, ModelTotal)
