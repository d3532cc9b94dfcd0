"""One model-level measurement: check the converted model, then time it against dense.

For a model, keep ratio and precision: the converted model (each layout) must match
the float64 output of the masked dense model within the tolerance before anything of
it is timed. The tolerance is the larger of the precision's model tolerance and twice
the masked dense model's own error at that precision (both sides run the same
arithmetic; a deep model in bf16 can exceed a fixed bound through no fault of
gwprune). Dense timings do not depend on the keep ratio and are measured once per
model and precision (``measure_dense``).

Dense as deployed is usually compiled: with a compile backend (``inductor`` on a GPU,
``torch._inductor.config.freezing`` on, so BatchNorms fold into the dense convs), the
dense model and the autotuned converted model are also timed under ``torch.compile``,
in the layout that was faster eagerly; ``speedup_vs_best_dense`` compares the best
converted time with the faster of eager and compiled dense. A compiled converted model
is checked against the float64 reference like the eager one before it is timed.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn

import gwprune

from . import correctness
from .cuda_graphs import model_call
from .model_case import ModelCase
from .model_results import ModelRow
from .model_specs import ModelSize, ModelSpec
from .precision import Precision

DENSE_ERROR_FACTOR = 2.0


@dataclass(frozen=True)
class Timed:
    ms: float
    method: str  # 'do_bench x41'
    graphed: bool
    note: str = ""
    layout: str = ""  # for compiled timings: the layout it ran in


# layout -> timing of the unpruned dense model; COMPILED -> its torch.compile timing
DenseTimes = dict[str, Timed]
COMPILED = "compiled"


def _nothing(_stage: str) -> None:
    pass


def time_forward(
    model: nn.Module, x: torch.Tensor, timer, use_graphs: bool, tolerance: float, samples: int
) -> Timed:
    """Median ms of ``model(x)``: a CUDA graph replay when ``use_graphs`` (and it captures)."""
    with torch.inference_mode():
        expected = model(x)[:samples]  # warms up (cuDNN autotuning) and checks the replay
        call = model_call(model, x, use_graphs, expected, tolerance)
        del expected
        timing = timer.measure(call.run)
    return Timed(timing.ms, f"{timing.method} x{timing.runs}", call.graphed, call.note)


def time_compiled(
    model: nn.Module,
    x: torch.Tensor,
    timer,
    use_graphs: bool,
    tolerance: float,
    samples: int,
    backend: str,
    reference: torch.Tensor | None = None,
) -> Timed:
    """``time_forward`` of ``torch.compile(model, backend=backend)`` with inductor's
    freezing on. With ``reference`` (float64, first ``samples``), the compiled output
    must match it within ``tolerance`` first, else ValueError."""
    import torch._dynamo
    import torch._inductor.config

    torch._dynamo.reset()  # a fresh cache: each model would otherwise count as a recompile
    compiled = torch.compile(model, backend=backend)
    with torch._inductor.config.patch(freezing=True):
        if reference is not None:
            with torch.inference_mode():
                error = correctness.relative_error(compiled(x)[:samples], reference)
            if not correctness.passes(error, tolerance):
                raise ValueError(f"compiled output off by {error:.3g} (> {tolerance:.3g})")
        timed = time_forward(compiled, x, timer, use_graphs, tolerance, samples)
    torch._dynamo.reset()
    return timed


def measure_dense(
    case: ModelCase,
    precision: Precision,
    timer,
    use_graphs: bool,
    stage=_nothing,
    compile_backend: str | None = None,
) -> DenseTimes:
    times = {}
    for layout in case.spec.layouts:
        stage(f"dense {layout}")
        model = case.cast(case.dense, precision.dtype, layout)
        x = case.input_for(precision, layout)
        times[layout] = time_forward(
            model, x, timer, use_graphs, precision.model_tolerance, case.check_samples
        )
        del model
    if compile_backend is not None:
        layout = min(times, key=lambda key: times[key].ms)
        stage(f"dense compiled {layout}")
        model = case.cast(case.dense, precision.dtype, layout)
        x = case.input_for(precision, layout)
        try:
            timed = time_compiled(
                model,
                x,
                timer,
                use_graphs,
                precision.model_tolerance,
                case.check_samples,
                compile_backend,
            )
            times[COMPILED] = Timed(timed.ms, timed.method, timed.graphed, timed.note, layout)
        except Exception as error:  # noqa: BLE001  (recorded in the rows: compiled dense failed)
            times[COMPILED] = Timed(math.nan, "", False, f"compile failed: {_line(error)}", layout)
        del model
    return times


def _line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:160]


def dense_times_from_rows(rows: list[ModelRow]) -> dict[tuple[str, str], DenseTimes]:
    """Dense timings recorded by an earlier run (for --resume): (model, precision) -> times."""
    known: dict[tuple[str, str], DenseTimes] = {}
    for row in rows:
        times = {
            layout: Timed(ms, "earlier run", row.cuda_graphs == "on")
            for layout, ms in (
                ("contiguous", row.dense_ms_contiguous),
                ("channels_last", row.dense_ms_channels_last),
            )
            if ms is not None
        }
        if row.dense_compiled_ms is not None:
            times[COMPILED] = Timed(
                row.dense_compiled_ms, "earlier run", False, layout=row.dense_compiled_layout
            )
        if times:
            known.setdefault((row.model, row.precision), times)
    return known


def gwprune_path_note(device: torch.device) -> str:
    if device.type != "cuda":
        if gwprune.info()["CPU kernels compiled"]:
            return "CPU: gwprune CPU kernels"
        return "CPU: gwprune runs its reference path"
    if not gwprune.info()["CUDA kernels compiled"]:
        return "gwprune CUDA kernels not compiled: the reference path ran on the GPU"
    return ""


def model_tolerance(precision: Precision, dense_rel_error: float) -> float:
    """The precision's model tolerance, or twice the dense model's own error if larger
    (a non-finite dense error, e.g. an fp16 overflow, widens nothing)."""
    allowance = DENSE_ERROR_FACTOR * dense_rel_error if math.isfinite(dense_rel_error) else 0.0
    return max(precision.model_tolerance, allowance)


def new_row(spec: ModelSpec, size: ModelSize, keep: float, precision: Precision) -> ModelRow:
    return ModelRow(
        model=spec.name,
        label=spec.label(size),
        input=spec.describe_input(size),
        batch=size.batch,
        precision=precision.name,
        keep=keep,
    )


def measure_model(
    case: ModelCase,
    keep: float,
    precision: Precision,
    dense: DenseTimes | str,
    timer,
    use_graphs: bool,
    stage: Callable[[str], None] = _nothing,
    compile_backend: str | None = None,
) -> ModelRow:
    """The row of one keep ratio and precision; failures are recorded in it, not raised.
    ``dense``: the dense model's timings, or the status of its failed timing."""
    row = new_row(case.spec, case.size, keep, precision)
    row.note = gwprune_path_note(case.device)
    try:
        stage("prune + convert")
        pruned = case.pruned(keep)
        _fill_facts(row, pruned.facts)
        stage("check")
        converted = _check(case, row, keep, precision)
        if isinstance(dense, str):  # the dense model could not be timed: its error
            row.status = row.status or dense
        else:
            _fill_times(row, "dense", dense)
        if row.status:
            return row
        times = {}
        for layout, model in converted.items():
            stage(f"converted {layout}")
            times[layout] = time_forward(
                model,
                case.input_for(precision, layout),
                timer,
                use_graphs,
                row.tolerance,
                case.check_samples,
            )
        tuned = _autotune_and_time(case, row, keep, precision, converted, timer, use_graphs, stage)
        if compile_backend is not None and tuned and not row.status:
            best = min(tuned, key=lambda layout: tuned[layout][0].ms)
            stage(f"autotuned compiled {best}")
            row.compile = f"{compile_backend}, freezing"
            _time_compiled_converted(
                case,
                row,
                keep,
                precision,
                converted[best],
                best,
                timer,
                use_graphs,
                compile_backend,
            )
            _compile_facts(row, dense)
        del converted
        _fill_times(row, "converted", times)
        row.speedup = row.dense_ms / row.converted_ms
        if row.status:  # the autotuned model failed its check
            return row
        best = min(tuned, key=lambda layout: tuned[layout][0].ms)
        row.autotuned_ms, row.autotuned_layout = tuned[best][0].ms, best
        row.autotuned_dense_layers = tuned[best][1]
        row.autotuned_speedup = row.dense_ms / row.autotuned_ms
        _fill_best(row)
        _fill_timing_facts(row, dense, times, use_graphs and case.device.type == "cuda")
        row.status = "ok"
    except Exception as error:  # noqa: BLE001  (e.g. out of memory: recorded, the run goes on)
        row.status = correctness.exception_status(error)
    return row


def _check(case: ModelCase, row: ModelRow, keep: float, precision: Precision) -> dict:
    """Fills the errors and tolerance; sets status FAILED if a layout is off.
    Returns the converted models cast to the precision, by layout."""
    reference = case.reference(keep, precision)
    pruned = case.pruned(keep)
    masked = case.cast(pruned.masked, precision.dtype)
    row.dense_rel_error = _error(case, masked, case.input_for(precision, "contiguous"), reference)
    del masked
    row.tolerance = model_tolerance(precision, row.dense_rel_error)
    converted, errors = {}, []
    for layout, model in pruned.converted.items():
        converted[layout] = case.cast(model, precision.dtype, layout)
        errors.append(_error(case, converted[layout], case.input_for(precision, layout), reference))
    row.rel_error = max(errors)
    if not correctness.passes(row.rel_error, row.tolerance):
        row.status = "FAILED"
    return converted


def _error(case: ModelCase, model: nn.Module, x: torch.Tensor, reference: torch.Tensor) -> float:
    """Relative error of ``model(x)`` on the checked samples against the float64 reference."""
    with torch.inference_mode():
        return correctness.relative_error(case.first_samples(model(x)), reference)


def _autotune_and_time(case, row, keep, precision, converted, timer, use_graphs, stage) -> dict:
    """``gwprune.autotune`` on each layout's converted model (in place), checked against
    the float64 reference like the model itself, then timed: layout -> (Timed, number of
    layers run dense). Sets status FAILED and returns {} if a layout is off."""
    reference = case.reference(keep, precision)
    tuned = {}
    for layout, model in converted.items():
        stage(f"autotune {layout}")
        x = case.input_for(precision, layout)
        report = gwprune.autotune(model, x)
        error = _error(case, model, x, reference)
        row.rel_error = max(row.rel_error, error)
        if not correctness.passes(error, row.tolerance):
            row.status = "FAILED"
            return {}
        stage(f"autotuned {layout}")
        timed = time_forward(model, x, timer, use_graphs, row.tolerance, case.check_samples)
        tuned[layout] = (timed, len(report.dense))
    return tuned


def _time_compiled_converted(
    case, row, keep, precision, model, layout, timer, use_graphs, backend
) -> None:
    """The autotuned converted model under torch.compile, checked, then timed."""
    try:
        timed = time_compiled(
            model,
            case.input_for(precision, layout),
            timer,
            use_graphs,
            row.tolerance,
            case.check_samples,
            backend,
            reference=case.reference(keep, precision),
        )
    except Exception as error:  # noqa: BLE001  (the eager numbers stand; the note says why)
        row.compile_note = f"converted compile failed: {_line(error)}"
        return
    row.autotuned_compiled_ms, row.autotuned_compiled_layout = timed.ms, layout
    if timed.note:
        row.compile_note = f"converted: {timed.note}"


def _compile_facts(row: ModelRow, dense: DenseTimes | str) -> None:
    """Fills the compiled dense columns from the dense timings."""
    if isinstance(dense, str) or COMPILED not in dense:
        return
    compiled = dense[COMPILED]
    if math.isfinite(compiled.ms):
        row.dense_compiled_ms, row.dense_compiled_layout = compiled.ms, compiled.layout
    if compiled.note:
        row.compile_note = "; ".join(p for p in (f"dense: {compiled.note}", row.compile_note) if p)


def _fill_best(row: ModelRow) -> None:
    dense = [ms for ms in (row.dense_ms, row.dense_compiled_ms) if ms is not None]
    converted = [ms for ms in (row.converted_ms, row.autotuned_ms, row.autotuned_compiled_ms) if ms]
    if dense and converted:
        row.best_dense_ms = min(dense)
        row.speedup_vs_best_dense = row.best_dense_ms / min(converted)


def _fill_facts(row: ModelRow, facts) -> None:
    row.layers_converted = facts.layers_converted
    row.layers_dense = facts.layers_dense
    row.dense_layers = facts.dense_layers
    row.groups_kept = facts.groups_kept
    row.params_total = facts.params_total
    row.params_kept = facts.params_kept


def _fill_times(row: ModelRow, side: str, times: DenseTimes) -> None:
    times = {layout: timed for layout, timed in times.items() if layout != COMPILED}
    for layout, timed in times.items():
        setattr(row, f"{side}_ms_{layout}", timed.ms)
    if times:
        best = min(times, key=lambda layout: times[layout].ms)
        setattr(row, f"{side}_ms", times[best].ms)
        setattr(row, f"{side}_layout", best)


def _fill_timing_facts(row: ModelRow, dense: DenseTimes, converted: DenseTimes, graphs: bool):
    timed = {("dense", k): v for k, v in dense.items() if k != COMPILED}
    timed.update({("converted", k): v for k, v in converted.items()})
    graphed = [t.graphed for t in timed.values()]
    if not graphs:
        row.cuda_graphs = "off"
    else:
        row.cuda_graphs = "on" if all(graphed) else "partial" if any(graphed) else "failed"
    notes = [f"{side} {layout}: {t.note}" for (side, layout), t in timed.items() if t.note]
    row.note = "; ".join(part for part in (row.note, *notes) if part)
    row.timing = (
        f"dense {dense[row.dense_layout].method}, "
        f"converted {converted[row.converted_layout].method}"
    )
