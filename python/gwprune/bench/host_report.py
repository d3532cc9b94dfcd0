"""Rows, targets and results.md of ``gwprune bench --host-overhead``."""

from dataclasses import dataclass

from .csv_io import read_rows, write_rows

HOST = "host_us"
LATENCY = "latency_us"

# (what, target) of issue 15; ratios from one process.
RAW_VS_PACKED_TARGET = 1.10
HOST_VS_DENSE_TARGET = 1.25
LATENCY_VS_DENSE_TARGET = 1.00
LATENCY_PRECISIONS = ("tf32", "fp16", "bf16")


@dataclass
class HostRow:
    layer: str
    shape: str
    kind: str
    layout: str
    bias: str  # "yes" / "no"
    precision: str
    call: str  # dense, raw, packed, module
    metric: str  # host_us (GPU time excluded) or latency_us (eager, back to back)
    us: float | None
    ratio_vs_dense: float | None
    ratio_vs_packed: float | None
    status: str  # ok, FAILED (result wrong: not timed), error: ...


def add_ratios(rows: list[HostRow]) -> None:
    by_key = {(r.layer, r.layout, r.bias, r.precision, r.metric, r.call): r for r in rows}
    for row in rows:
        key = (row.layer, row.layout, row.bias, row.precision, row.metric)
        dense, packed = by_key.get((*key, "dense")), by_key.get((*key, "packed"))
        row.ratio_vs_dense = _ratio(row, dense)
        row.ratio_vs_packed = _ratio(row, packed) if row.call == "raw" else None


def _ratio(row: HostRow, base: HostRow | None) -> float | None:
    if base is None or row.us is None or not base.us:
        return None
    return row.us / base.us


def write_csv(path, rows: list[HostRow]) -> None:
    write_rows(path, rows, HostRow)


def read_csv(path) -> list[HostRow]:
    return read_rows(path, HostRow)


def _worst(rows: list[HostRow], field: str) -> HostRow | None:
    rated = [r for r in rows if getattr(r, field) is not None]
    return max(rated, key=lambda r: getattr(r, field)) if rated else None


def _case(row: HostRow) -> str:
    layout = "" if row.layout == "-" else f" {row.layout}"
    bias = "bias" if row.bias == "yes" else "no bias"
    return f"{row.layer}{layout} {bias} [{row.precision}]"


def target_lines(rows: list[HostRow]) -> list[str]:
    host = [r for r in rows if r.metric == HOST and r.status == "ok"]
    latency = [r for r in rows if r.metric == LATENCY and r.status == "ok"]
    lines = ["| target | worst case | ratio | met |", "|---|---|---|---|"]

    def line(what: str, worst: HostRow | None, field: str, target: float) -> None:
        if worst is None:
            lines.append(f"| {what} | not measured | - | - |")
            return
        value = getattr(worst, field)
        met = "yes" if value <= target else "**no**"
        lines.append(f"| {what} | {_case(worst)} {worst.call} | {value:.2f}x | {met} |")

    raw = [r for r in host if r.call == "raw"]
    line(f"raw op host time <= {RAW_VS_PACKED_TARGET:.2f}x packed", _worst(raw, "ratio_vs_packed"),
         "ratio_vs_packed", RAW_VS_PACKED_TARGET)  # fmt: skip
    for call in ("packed", "module", "raw"):
        line(
            f"{call} host time <= {HOST_VS_DENSE_TARGET:.2f}x dense",
            _worst([r for r in host if r.call == call], "ratio_vs_dense"),
            "ratio_vs_dense",
            HOST_VS_DENSE_TARGET,
        )
    for call in ("packed", "module", "raw"):
        line(
            f"batch-1 eager latency, {call} <= {LATENCY_VS_DENSE_TARGET:.2f}x dense",
            _worst([r for r in latency if r.call == call], "ratio_vs_dense"),
            "ratio_vs_dense",
            LATENCY_VS_DENSE_TARGET,
        )
    return lines


def _table(rows: list[HostRow], metric: str) -> list[str]:
    chosen = [r for r in rows if r.metric == metric]
    if not chosen:
        return ["(none measured)"]
    lines = [
        "| layer | layout | bias | precision | dense | raw | packed | module | raw / packed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple, dict[str, HostRow]] = {}
    for row in chosen:
        key = (row.layer, row.layout, row.bias, row.precision)
        groups.setdefault(key, {})[row.call] = row
    for (layer, layout, bias, precision), calls in groups.items():
        cells = []
        for call in ("dense", "raw", "packed", "module"):
            row = calls.get(call)
            cells.append(_cell(row))
        raw = calls.get("raw")
        ratio = f"{raw.ratio_vs_packed:.2f}x" if raw and raw.ratio_vs_packed else "-"
        lines.append(
            f"| {layer} | {layout} | {bias} | {precision} | {' | '.join(cells)} | {ratio} |"
        )
    return lines


def _cell(row: HostRow | None) -> str:
    if row is None:
        return "-"
    if row.status != "ok":
        return row.status.split(":")[0]
    ratio = (
        "" if row.call == "dense" or row.ratio_vs_dense is None else f" ({row.ratio_vs_dense:.2f}x)"
    )
    return f"{row.us:.1f}{ratio}"


def render(rows: list[HostRow], env: dict, command: str) -> str:
    cpu = env.get("device_type") == "cpu"
    lines = [
        f"# gwprune bench --host-overhead: {env.get('device', '?')}",
        "",
        f"`{command}`, {env.get('date', '?')}. Layers (keep {env.get('keep', '?')}): "
        + "; ".join(env.get("layers", [])),
        "",
        f"Timing: {env.get('timing', '?')}.",
        "",
    ]
    if cpu:
        lines += [
            "**CPU run**: CPU tensors run the CPU kernels synchronously, so a call's time",
            "includes its compute (the layers are small); the targets are for CUDA tensors on",
            "the device host and are shown only to keep the report's shape.",
            "",
        ]
    lines += ["## Targets", "", *target_lines(rows), ""]
    lines += [
        "## Host time per call (us; GPU time excluded; ratio to dense)",
        "",
        *_table(rows, HOST),
        "",
        "## Batch-1 eager latency per call (us; no CUDA graphs; ratio to dense)",
        "",
        *_table(rows, LATENCY),
        "",
    ]
    failed = [r for r in rows if r.status != "ok"]
    if failed:
        lines += ["## Not timed", ""]
        lines += [f"- {_case(r)} {r.call} ({r.metric}): {r.status}" for r in failed]
        lines.append("")
    return "\n".join(lines)
