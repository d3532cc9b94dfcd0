"""The measurement loop: workload x precision x keep x provider, correctness first.

Data is made once per workload and precision, masks and float64 references once
per keep ratio; every provider is checked against its pattern's reference and
timed only if it passes. Rows go to a sink as they are made, so a run stopped by
its time budget (or killed) can be resumed.
"""

import gc
import time
import warnings
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import groupby

import torch

from . import correctness
from .case import Case, LayerData, make_layer_data
from .precision import Precision, precision_flags
from .progress import make_progress
from .providers import Provider, Unsupported
from .results import ResultRow
from .workloads import Workload

DENSE_KEEP = 1.0


@dataclass(frozen=True)
class Task:
    workload: Workload
    precision: Precision
    keep: float
    provider: Provider

    @property
    def key(self) -> tuple[str, str, float, str]:
        return (self.workload.slug, self.provider.name, round(self.keep, 6), self.precision.name)


def plan(
    workloads: list[Workload],
    precisions: list[Precision],
    keeps: list[float],
    providers: list[Provider],
) -> list[Task]:
    """Every measurement, grouped by workload, then precision, then keep (dense first)."""
    tasks = []
    for workload in workloads:
        applicable = [p for p in providers if workload.kind in p.kinds]
        for precision in precisions:
            tasks += [
                Task(workload, precision, DENSE_KEEP, p) for p in applicable if p.keep_independent
            ]
            for keep in keeps:
                tasks += [
                    Task(workload, precision, keep, p) for p in applicable if not p.keep_independent
                ]
    return tasks


@dataclass
class RunOutcome:
    rows: list[ResultRow] = field(default_factory=list)
    complete: bool = True
    elapsed_s: float = 0.0


@contextmanager
def _quiet_beta_warnings():
    # torch warns on every sparse CSR/BSR or semi-structured construction; once is plenty.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*beta.*")
        warnings.filterwarnings("ignore", message=".*semi.structured.*")
        yield


def split_done(tasks, rows) -> tuple[list, list]:
    """(rows that belong to ``tasks``, tasks no row covers yet): what --resume keeps and what
    it still has to measure. Tasks and rows are matched by their ``key``."""
    wanted = {task.key for task in tasks}
    kept = [row for row in rows if row.key in wanted]
    done = {row.key for row in kept}
    return kept, [task for task in tasks if task.key not in done]


def free_device_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run_tasks(
    tasks: list[Task],
    device: torch.device,
    timer,
    sink=None,
    seed: int = 0,
    deadline: float | None = None,
    show_progress: bool = True,
) -> RunOutcome:
    """Measures every task; stops early (complete=False) once ``deadline`` (perf_counter) passes."""
    outcome = RunOutcome()
    started = time.perf_counter()
    progress = make_progress(len(tasks)) if show_progress else None

    def by_layer(task: Task):
        return (task.workload.slug, task.precision.name)

    try:
        with _quiet_beta_warnings():
            for _, layer_tasks in groupby(tasks, key=by_layer):
                layer_tasks = list(layer_tasks)
                first = layer_tasks[0]
                with precision_flags(first.precision):
                    try:
                        data = make_layer_data(first.workload, first.precision, device, seed)
                    except Exception as error:  # noqa: BLE001  (e.g. out of memory: record, go on)
                        status = correctness.exception_status(error)
                        rows = [_failed_setup_row(task, status) for task in layer_tasks]
                    else:
                        rows = _run_layer(data, layer_tasks, timer, progress, deadline)
                    for row in rows:
                        outcome.rows.append(row)
                        if sink is not None:
                            sink.add(row)
                data = rows = None
                free_device_memory(device)
                if deadline is not None and time.perf_counter() > deadline:
                    break
    finally:
        if progress is not None:
            progress.close()
    outcome.complete = len(outcome.rows) == len(tasks)
    outcome.elapsed_s = time.perf_counter() - started
    return outcome


def _run_layer(
    data: LayerData, tasks: list[Task], timer, progress, deadline
) -> Iterable[ResultRow]:
    if hasattr(timer, "measure_interleaved"):
        yield from _run_layer_interleaved(data, tasks, timer, progress, deadline)
        return
    for case, task in _layer_steps(data, tasks, progress, deadline):
        yield measure(task.provider, case, timer)
        if progress is not None:
            progress.update(1)


def _layer_steps(data: LayerData, tasks: list[Task], progress, deadline):
    """(case, task) for a layer's tasks in order, one Case per keep; stops at the deadline
    and names each task on the progress bar."""
    for keep, keep_tasks in groupby(tasks, key=lambda task: task.keep):
        case = Case(data, keep)
        for task in keep_tasks:
            if deadline is not None and time.perf_counter() > deadline:
                return
            if progress is not None:
                progress.set_postfix_str(
                    f"{task.workload.slug} {task.precision.name} keep {keep:g} {task.provider.name}"
                )
            yield case, task


def _row(workload: Workload, precision: Precision, provider: Provider, keep: float) -> ResultRow:
    return ResultRow(
        workload=workload.slug,
        label=workload.label or workload.describe(),
        kind=workload.kind,
        gemm=workload.gemm_shape,
        batch=workload.batch,
        precision=precision.name,
        provider=provider.name,
        family=provider.family,
        pattern=provider.pattern,
        keep=keep,
        tolerance=correctness.tolerance(precision, provider.reorders_sums),
        note=provider.note,
    )


def _failed_setup_row(task: Task, status: str) -> ResultRow:
    """The row of a task whose workload data could not even be made."""
    row = _row(task.workload, task.precision, task.provider, task.keep)
    row.status = status
    return row


def _run_layer_interleaved(
    data: LayerData, tasks: list[Task], timer, progress, deadline
) -> list[ResultRow]:
    """The CPU form of _run_layer: every task of the layer (every keep, dense included) is
    prepared and checked first, then all that passed are timed in interleaved rounds."""
    rows, calls = [], []
    for case, task in _layer_steps(data, tasks, progress, deadline):
        row, call = prepare_checked(task.provider, case)
        rows.append(row)
        calls.append(call)
    timed = [i for i, call in enumerate(calls) if call is not None]
    try:
        timings = timer.measure_interleaved([calls[i] for i in timed])
    except Exception as error:  # noqa: BLE001  (recorded in the rows, not raised)
        for i in timed:
            rows[i].status = correctness.exception_status(error)
    else:
        for i, timing in zip(timed, timings, strict=True):
            _record_timing(rows[i], timing)
    if progress is not None:
        progress.update(len(rows))
    return rows


def measure(provider: Provider, case: Case, timer) -> ResultRow:
    """One row: prepare, check against float64, and time only if the check passes."""
    row, call = prepare_checked(provider, case)
    if call is None:
        return row
    try:
        timing = timer.measure(call)
    except Exception as error:  # noqa: BLE001
        row.status = correctness.exception_status(error)
        return row
    _record_timing(row, timing)
    return row


def _record_timing(row: ResultRow, timing) -> None:
    row.ms, row.timing, row.status = timing.ms, f"{timing.method} ({timing.runs} runs)", "ok"


def prepare_checked(provider: Provider, case: Case):
    """A row prepared and checked against float64, and the call to time (None when the
    provider is unsupported, failed to prepare or failed the check: the row says which)."""
    row = _row(case.workload, case.precision, provider, case.keep)
    try:
        provider.check_supported(case)
        row.density = case.density(provider.pattern)
        prepared = provider.prepare(case)
    except Unsupported as reason:
        row.status = f"unsupported: {reason}"
        return row, None
    except Exception as error:  # noqa: BLE001  (any failure is recorded in the row, not raised)
        row.status = correctness.exception_status(error)
        return row, None
    row.note = "; ".join(part for part in (provider.note, prepared.note) if part)
    row.input_sets = prepared.num_sets
    try:
        output = prepared.to_output(prepared.run(0))
        row.rel_error = correctness.relative_error(output, case.reference(provider.pattern))
        del output
    except Exception as error:  # noqa: BLE001
        row.status = correctness.exception_status(error)
        return row, None
    if not correctness.passes(row.rel_error, row.tolerance):
        row.status = "FAILED"
        return row, None

    calls = iter(range(1 << 62))
    num_sets = prepared.num_sets

    def rotating_call():
        return prepared.run(next(calls) % num_sets)

    return row, rotating_call
