"""The model-level loop: model x keep ratio x precision, correctness first, rows as made.

Each model is built once; each keep ratio is pruned and converted once (in float32)
and then cast for every precision; the dense model is timed once per precision. Rows
go to a sink as they are made, so a run stopped by its time budget can be resumed.
"""

import time
from dataclasses import dataclass
from itertools import groupby

import torch

from . import correctness
from .model_case import ModelCase
from .model_measure import DenseTimes, measure_dense, measure_model, new_row
from .model_specs import ModelSize, ModelSpec
from .precision import Precision, precision_flags
from .progress import make_progress
from .runner import RunOutcome, free_device_memory


@dataclass(frozen=True)
class ModelTask:
    spec: ModelSpec
    keep: float
    precision: Precision

    @property
    def key(self) -> tuple[str, float, str]:
        return (self.spec.name, round(self.keep, 6), self.precision.name)


def plan_model_tasks(
    specs: list[ModelSpec], keeps: list[float], precisions: list[Precision]
) -> list[ModelTask]:
    """Grouped by model, then keep ratio (one conversion each), then precision."""
    return [
        ModelTask(spec, keep, precision)
        for spec in specs
        for keep in keeps
        for precision in precisions
    ]


@dataclass(frozen=True)
class ModelRunOptions:
    size: ModelSize
    use_graphs: bool
    seed: int = 0
    compile_backend: str | None = None  # torch.compile backend of the compiled timings, or off


def run_model_tasks(
    tasks: list[ModelTask],
    device: torch.device,
    timer,
    options: ModelRunOptions,
    sink=None,
    deadline: float | None = None,
    known_dense: dict[tuple[str, str], DenseTimes] | None = None,
    show_progress: bool = True,
) -> RunOutcome:
    """Measures every task; stops early (complete=False) once ``deadline`` (perf_counter)
    passes. ``known_dense``: dense timings of an earlier run, (model, precision) -> times."""
    outcome = RunOutcome()
    started = time.perf_counter()
    progress = make_progress(len(tasks), "gwprune bench --models") if show_progress else None
    dense_times: dict[tuple[str, str], DenseTimes | str] = dict(known_dense or {})

    def add(row) -> None:
        outcome.rows.append(row)
        if sink is not None:
            sink.add(row)
        if progress is not None:
            progress.update(1)

    def out_of_time() -> bool:
        return deadline is not None and time.perf_counter() > deadline

    try:
        for _, model_tasks in groupby(tasks, key=lambda task: task.spec.name):
            if out_of_time():
                break
            model_tasks = list(model_tasks)
            spec = model_tasks[0].spec
            _show(progress, f"{spec.name}: build")
            try:
                case = ModelCase(spec, options.size, device, options.seed)
            except Exception as error:  # noqa: BLE001  (e.g. out of memory: record, go on)
                status = correctness.exception_status(error)
                for task in model_tasks:
                    add(_failed_build_row(task, options.size, status))
                continue
            for task in model_tasks:
                if out_of_time():
                    break
                add(_measure(case, task, timer, options, dense_times, progress))
                free_device_memory(device)
            case = None
            free_device_memory(device)
    finally:
        if progress is not None:
            progress.close()
    outcome.complete = len(outcome.rows) == len(tasks)
    outcome.elapsed_s = time.perf_counter() - started
    return outcome


def _measure(case: ModelCase, task: ModelTask, timer, options, dense_times, progress):
    prefix = f"{task.spec.name} keep {task.keep:g} {task.precision.name}"

    def stage(text: str) -> None:
        _show(progress, f"{prefix}: {text}")

    with precision_flags(task.precision):
        dense_key = (task.spec.name, task.precision.name)
        if dense_key not in dense_times:
            try:
                dense_times[dense_key] = measure_dense(
                    case, task.precision, timer, options.use_graphs, stage, options.compile_backend
                )
            except Exception as error:  # noqa: BLE001  (recorded in every row of this precision)
                dense_times[dense_key] = correctness.exception_status(error)
            free_device_memory(case.device)
        return measure_model(
            case,
            task.keep,
            task.precision,
            dense_times[dense_key],
            timer,
            options.use_graphs,
            stage,
            options.compile_backend,
        )


def _show(progress, text: str) -> None:
    if progress is not None:
        progress.set_postfix_str(text)


def _failed_build_row(task: ModelTask, size: ModelSize, status: str):
    row = new_row(task.spec, size, task.keep, task.precision)
    row.status = status
    return row
