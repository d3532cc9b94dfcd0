"""The CPU targets of issue 16, read off one run's rows: gwprune against dense of the same
layout (keep 0.5 at most 0.70x, keep 0.25 at most 0.40x) and never slower than the naive
path of the same layout, with the GEMM-only floor beside them so the gap shows.

Ratios come from rows of one process and one thread count (``env.json``'s torch_threads).
"""

from dataclasses import dataclass

from .results import ResultRow

# keep ratio -> the largest gwprune / dense allowed
DENSE_TARGETS = {0.5: 0.70, 0.25: 0.40}
# gwprune provider -> (dense, naive) of the same input layout
SAME_LAYOUT = {
    "group-packed": ("dense", "group-naive"),
    "group-packed-cl": ("dense-cl", "group-naive-cl"),
}


@dataclass(frozen=True)
class TargetRow:
    workload: str
    precision: str
    provider: str
    keep: float
    ms: float
    vs_dense: float | None
    vs_naive: float | None
    floor_vs_dense: float | None

    @property
    def dense_target(self) -> float | None:
        return DENSE_TARGETS.get(round(self.keep, 6))

    @property
    def met(self) -> bool | None:
        """All targets that apply met (None: nothing to compare with)."""
        checks = []
        if self.dense_target is not None and self.vs_dense is not None:
            checks.append(self.vs_dense <= self.dense_target)
        if self.vs_naive is not None:
            checks.append(self.vs_naive <= 1.0)
        return all(checks) if checks else None


def target_rows(rows: list[ResultRow]) -> list[TargetRow]:
    ok = {(r.workload, r.precision, r.provider, round(r.keep, 6)): r for r in rows if r.ok}
    dense_ms = {(r.workload, r.precision, r.provider): r.ms for r in rows if r.ok and r.keep == 1}
    found = []
    for (workload, precision, provider, keep), row in ok.items():
        if provider not in SAME_LAYOUT or keep == 1:
            continue
        dense_name, naive_name = SAME_LAYOUT[provider]
        dense = dense_ms.get((workload, precision, dense_name))
        naive = ok.get((workload, precision, naive_name, keep))
        floor = ok.get((workload, precision, "floor", keep))
        found.append(
            TargetRow(
                workload,
                precision,
                provider,
                keep,
                row.ms,
                row.ms / dense if dense else None,
                row.ms / naive.ms if naive else None,
                floor.ms / dense if floor and dense else None,
            )
        )
    return found


def _ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}x"


def render(rows: list[ResultRow], threads) -> list[str]:
    found = target_rows(rows)
    if not found:
        return []
    lines = [
        "## CPU targets",
        "",
        f"Same process, {threads} threads on both sides. gwprune / dense of the same layout "
        f"(target at keep 0.5: <= {DENSE_TARGETS[0.5]:.2f}x; at keep 0.25: "
        f"<= {DENSE_TARGETS[0.25]:.2f}x), gwprune / the naive path of the same layout "
        "(target <= 1.00x), and the GEMM-only floor / dense.",
        "",
        "| workload | precision | gwprune | keep | ms | / dense | / naive | floor / dense | met |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for t in found:
        met = {True: "yes", False: "**no**", None: ""}[t.met]
        lines.append(
            f"| {t.workload} | {t.precision} | {t.provider} | {t.keep:g} | {t.ms:.4g} | "
            f"{_ratio(t.vs_dense)} | {_ratio(t.vs_naive)} | {_ratio(t.floor_vs_dense)} | {met} |"
        )
    return [*lines, ""]
