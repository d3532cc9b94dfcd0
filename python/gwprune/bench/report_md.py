"""results.md: environment header, one latency table per workload and precision, model sums."""

from collections import defaultdict

from . import cpu_targets
from .results import ModelTotal, ResultRow

PROVIDER_LEGEND = [
    ("dense / dense-cl", "F.conv2d (NCHW / channels_last) or F.linear on the unpruned weight"),
    ("group-packed(-cl)", "gwprune.ops.conv2d_packed / linear_packed, weight packed beforehand"),
    ("group-implicit(-cl)", "gwprune's implicit GEMM (backend='implicit', sm_90 only)"),
    (
        "anchor-cudnn(-cl)",
        "F.conv2d on round(keep * C) input channels: channel pruning at equal FLOPs; "
        "[Nx anchor] = time / the faster anchor layout",
    ),
    (
        "group-naive(-cl)",
        "the seed's path: F.unfold + index_select + matmul, all timed (NCHW / channels_last x)",
    ),
    (
        "floor / floor-flat",
        "only the GEMM on an operand compacted beforehand (batched / one flat GEMM)",
    ),
    ("element-csr", "random unstructured mask, CSR sparse x dense (im2col / transpose untimed)"),
    ("vector-csr", "N:M mask (0.5 -> 2:4, 0.9 -> 9:10), CSR sparse x dense"),
    ("vector-2:4", "2:4 semi-structured (torch.sparse.to_sparse_semi_structured), keep 0.5 only"),
    ("block-bsr", "32x32 (or 16x16) block mask, BSR sparse x dense"),
]


def _cell(row: ResultRow | None) -> str:
    if row is None:
        return ""
    if row.ok:
        ratio = f" ({row.ratio_vs_dense:.2f}x)" if row.ratio_vs_dense is not None else ""
        anchor = ""
        if row.ratio_vs_anchor is not None and row.family == "group-wise":
            anchor = f" [{row.ratio_vs_anchor:.2f}x anchor]"
        return f"{row.ms:.4g}{ratio}{anchor}"
    if row.status == "FAILED":
        return "FAILED"
    return row.status.split(":")[0]  # unsupported / error / skipped; reasons listed below


def _table(rows: list[ResultRow]) -> list[str]:
    keeps = sorted({row.keep for row in rows}, reverse=True)
    providers = list(dict.fromkeys(row.provider for row in rows))
    cells = {(row.provider, row.keep): row for row in rows}
    lines = [
        "| provider | " + " | ".join(f"keep {keep:g}" for keep in keeps) + " |",
        "|---|" + "---:|" * len(keeps),
    ]
    for provider in providers:
        values = [_cell(cells.get((provider, keep))) for keep in keeps]
        lines.append(f"| {provider} | " + " | ".join(values) + " |")
    return lines


def _status_notes(rows: list[ResultRow]) -> list[str]:
    """One line per provider and non-ok status, with the keeps it applies to."""
    grouped: dict[tuple[str, str], list[ResultRow]] = defaultdict(list)
    for row in rows:
        if not row.ok:
            grouped[(row.provider, row.status)].append(row)
    lines = []
    for (provider, status), group in grouped.items():
        keeps = ", ".join(f"{row.keep:g}" for row in group)
        detail = status
        if status == "FAILED":
            worst = max(group, key=lambda row: row.rel_error or 0.0)
            detail = f"FAILED correctness: rel. error {worst.rel_error:.3g} > {worst.tolerance:g}"
        lines.append(f"- {provider} (keep {keeps}): {detail}")
    return lines


def environment_lines(env: dict) -> list[str]:
    lines = ["| | |", "|---|---|"]
    for key, value in env.items():
        if isinstance(value, dict):
            value = "; ".join(f"{k}={v}" for k, v in value.items())
        lines.append(f"| {key} | {value} |")
    return lines


def render(
    rows: list[ResultRow], env: dict, totals: list[ModelTotal], command: str, complete: bool
) -> str:
    is_cpu = env.get("device_type") != "cuda"
    title = f"# gwprune bench: {env.get('device', '?')}"
    lines = [title, ""]
    if is_cpu:
        if env.get("gwprune_cpu_kernels_compiled"):
            path = f"gwprune's CPU kernels (csrc/cpu/), {env.get('torch_threads', '?')} threads"
        else:
            path = "gwprune's reference path (no CPU kernels compiled)"
        lines += [
            f"**CPU run** of {path}; these times say nothing about GPU performance.",
            "",
        ]
    if not complete:
        lines += ["**Incomplete run** (time budget reached): rerun with `--resume`.", ""]
    lines += [f"Command: `{command}`", "", "## Environment", "", *environment_lines(env), ""]
    lines += [
        "## Latency",
        "",
        "Median ms per call; in parentheses the ratio to the fastest dense layout of the same "
        "workload and precision (below 1 = faster than dense). Dense is measured once, at keep 1. "
        "Every provider was checked against float64 first; FAILED ones were not timed.",
        "",
    ]
    for provider, meaning in PROVIDER_LEGEND:
        lines.append(f"- **{provider}**: {meaning}")
    lines.append("")
    sections: dict[tuple[str, str], list[ResultRow]] = defaultdict(list)
    for row in rows:
        sections[(row.workload, row.precision)].append(row)
    for (workload, precision), section in sections.items():
        first = section[0]
        lines += [
            f"### {first.label}: {precision}",
            "",
            f"`{workload}`, GEMM out x K x columns = {first.gemm}",
            "",
            *_table(section),
            "",
        ]
        notes = _status_notes(section)
        if notes:
            lines += [*notes, ""]
    if is_cpu:
        lines += cpu_targets.render(rows, env.get("torch_threads", "?"))
    if totals:
        lines += _totals_section(totals)
    return "\n".join(lines) + "\n"


def _totals_section(totals: list[ModelTotal]) -> list[str]:
    lines = [
        "## Model sums",
        "",
        "Sum of layer times x uses per model (layers only: no activations, pooling or norms). "
        "A layer a provider cannot run counts with its dense time; [n] = such layer uses.",
        "",
    ]
    sections: dict[tuple[str, str], list[ModelTotal]] = defaultdict(list)
    for total in totals:
        sections[(total.model, total.precision)].append(total)
    for (model, precision), section in sections.items():
        keeps = sorted({t.keep for t in section}, reverse=True)
        providers = list(dict.fromkeys(t.provider for t in section))
        cells = {(t.provider, t.keep): t for t in section}
        lines += [
            f"### {model}: {precision} ({section[0].layers} layer uses)",
            "",
            "| provider | " + " | ".join(f"keep {keep:g}" for keep in keeps) + " |",
            "|---|" + "---:|" * len(keeps),
        ]
        for provider in providers:
            values = []
            for keep in keeps:
                total = cells.get((provider, keep))
                if total is None:
                    values.append("")
                    continue
                fallback = (
                    f" [{total.dense_fallback_layers}]" if total.dense_fallback_layers else ""
                )
                values.append(f"{total.ms:.4g} ({total.ratio_vs_dense:.2f}x){fallback}")
            lines.append(f"| {provider} | " + " | ".join(values) + " |")
        lines.append("")
    return lines
