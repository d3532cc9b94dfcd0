"""gwprune bench on the CPU: the CLI end to end, the correctness gate, masks, argument errors."""

import csv
import json
import time

import pytest
import torch

from gwprune.bench import masks
from gwprune.bench.case import Case, make_layer_data
from gwprune.bench.cli import main
from gwprune.bench.precision import PRECISIONS, precision_flags
from gwprune.bench.providers import Prepared, Provider, default_providers
from gwprune.bench.results import ResultRow, add_ratios, model_totals
from gwprune.bench.runner import measure, plan, run_tasks
from gwprune.bench.timing import CpuTimer
from gwprune.bench.workloads import CPU_TINY_CONV, CPU_TINY_LINEAR, MODELS, ModelLayers, select

CPU = torch.device("cpu")


# ---- the command, end to end ---------------------------------------------------------------


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    # The tiny layers with every provider: the CPU preset's own layers take ~40 s on 2 cores
    # (its plan is checked without running it, below).
    code = main(["--cpu", "--out", str(out), "--keep", "0.75,0.5", *TINY_LAYERS])
    return code, out


TINY_LAYERS = ["--layers", "cpu-tiny-conv,cpu-tiny-linear"]


def test_cpu_preset_plans_meaningful_layers_in_both_layouts(tmp_path, monkeypatch):
    import gwprune.bench.cli as cli
    from gwprune.bench.runner import RunOutcome

    planned = []

    def record(tasks, *args, **kwargs):
        planned.extend(tasks)
        return RunOutcome(complete=False)

    monkeypatch.setattr(cli, "run_tasks", record)
    assert main(["--cpu", "--out", str(tmp_path), "--no-plots"]) == 3  # nothing measured
    slugs = {task.workload.slug for task in planned}
    assert slugs == {
        "conv512-512_k3s1p1_28x28_n1",
        "conv256-256_k3s1p1_14x14_n2",
        "conv1024-256_k1s1p0_14x14_n2",
        "linear768-3072_m128",
    }
    providers = {task.provider.name for task in planned}
    assert providers == set(cli.CPU_PRESET_PROVIDERS)
    assert {task.keep for task in planned} == {1.0, 0.75, 0.5, 0.25}
    env = json.loads((tmp_path / "env.json").read_text())
    assert env["preset"] == "cpu" and env["torch_threads"] == torch.get_num_threads()


def test_cpu_run_writes_csv_markdown_plots_and_env(cpu_run):
    code, out = cpu_run
    assert code == 0
    with (out / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    providers = {row["provider"] for row in rows}
    assert {
        "dense",
        "group-packed",
        "group-naive",
        "floor",
        "element-csr",
        "block-bsr",
    } <= providers
    assert all(row["status"] == "ok" or row["status"].startswith("unsupported") for row in rows), [
        (row["provider"], row["status"]) for row in rows if row["status"] != "ok"
    ]
    markdown = (out / "results.md").read_text()
    assert "CPU run" in markdown and "## Latency" in markdown
    assert list(out.glob("*.png")), "no plot written"
    env = json.loads((out / "env.json").read_text())
    assert env["device_type"] == "cpu" and env["torch"] == torch.__version__


def test_ratios_are_relative_to_fastest_dense_and_floor(cpu_run):
    _, out = cpu_run
    with (out / "results.csv").open() as handle:
        rows = [row for row in csv.DictReader(handle) if row["status"] == "ok"]
    dense = [float(row["ratio_vs_dense"]) for row in rows if row["family"] == "dense"]
    assert min(dense) == pytest.approx(1.0)
    floors = [row for row in rows if row["family"] == "floor" and row["kind"] == "linear"]
    assert all(float(row["ratio_vs_floor"]) == pytest.approx(1.0) for row in floors)


def test_resume_measures_nothing_twice(cpu_run, capsys):
    _, out = cpu_run
    before = (out / "results.csv").read_text().count("\n")
    argv = ["--cpu", "--out", str(out), "--keep", "0.75,0.5", *TINY_LAYERS]
    assert main([*argv, "--resume", "--no-plots"]) == 0
    assert "0 measurements (" in capsys.readouterr().out
    assert (out / "results.csv").read_text().count("\n") == before


def test_report_only_rebuilds_table_and_plots_from_the_csv(cpu_run):
    _, out = cpu_run
    (out / "results.md").unlink()
    for plot in out.glob("*.png"):
        plot.unlink()
    assert main(["--report-only", "--out", str(out)]) == 0
    assert "## Latency" in (out / "results.md").read_text() and list(out.glob("*.png"))


def test_time_budget_stops_with_status_3_and_resume_finishes(tmp_path):
    argv = ["--cpu", "--out", str(tmp_path), "--layers", "cpu-tiny-linear", "--keep", "0.5"]
    assert main([*argv, "--max-minutes", "1e-6", "--no-plots"]) == 3
    assert "Incomplete run" in (tmp_path / "results.md").read_text()
    assert main([*argv, "--resume"]) == 0
    with (tmp_path / "results.csv").open() as handle:
        providers = [row["provider"] for row in csv.DictReader(handle)]
    assert sorted(providers) == sorted(set(providers)) and "group-packed" in providers


def test_module_entry_points_reach_the_same_main():
    import gwprune.__main__ as top
    import gwprune.bench.__main__ as bench_main

    assert bench_main.main is main
    assert top.main(["bench", "--list"]) == 0


# ---- the correctness gate ------------------------------------------------------------------


class _WrongLinear(Provider):
    """A provider whose result is 1 % off: the gate must catch it before any timing."""

    name = "wrong"
    pattern = "group"
    family = "group-wise"
    kinds = ("linear",)

    def prepare(self, case: Case) -> Prepared:
        weight = case.masked_weight("group")
        return Prepared(lambda i: torch.nn.functional.linear(case.inputs[i], weight) * 1.01, 1)


class _CountingTimer(CpuTimer):
    calls = 0

    def measure(self, fn):
        type(self).calls += 1
        return super().measure(fn)


def test_wrong_provider_is_failed_and_not_timed():
    precision = PRECISIONS["fp32"]
    with precision_flags(precision):
        case = Case(make_layer_data(CPU_TINY_LINEAR, precision, CPU, seed=0), keep=0.5)
        row = measure(_WrongLinear(), case, _CountingTimer())
    assert row.status == "FAILED"
    assert row.ms is None and _CountingTimer.calls == 0
    assert row.rel_error == pytest.approx(0.01, rel=1e-3)


def test_fp32_gate_is_strict_for_gemm_providers():
    precision = PRECISIONS["fp32"]
    by_name = {p.name: p for p in default_providers() if "linear" in p.kinds}
    with precision_flags(precision):
        case = Case(make_layer_data(CPU_TINY_LINEAR, precision, CPU, seed=0), keep=0.5)
        floor = measure(by_name["floor"], case, CpuTimer(repeats=3))
        csr = measure(by_name["element-csr"], case, CpuTimer(repeats=3))
    assert floor.status == "ok" and floor.tolerance == 1e-5
    assert csr.status == "ok" and csr.tolerance == 1e-4  # sparse kernels reorder sums


def test_runner_keeps_going_after_a_failure():
    tasks = plan(
        [CPU_TINY_LINEAR], [PRECISIONS["fp32"]], [0.5], [_WrongLinear(), *default_providers()]
    )
    outcome = run_tasks(tasks, CPU, CpuTimer(repeats=3), show_progress=False)
    statuses = {row.provider: row.status for row in outcome.rows}
    assert outcome.complete and statuses["wrong"] == "FAILED" and statuses["floor"] == "ok"


def test_tf32_flags_are_restored():
    before = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    with precision_flags(PRECISIONS["tf32"]):
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    with precision_flags(PRECISIONS["fp32"]):
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == before


# ---- masks -------------------------------------------------------------------------------


@pytest.mark.parametrize("keep", [0.9, 0.75, 0.5, 0.25, 0.1])
def test_masks_have_the_requested_density(keep):
    gen = torch.Generator().manual_seed(0)
    shape = (64, 320)
    keep_idx = masks.group_keep_idx(shape[1], keep, gen)
    group = masks.group_mask(shape, keep_idx)
    assert masks.density(group) == pytest.approx(keep, abs=0.5 / shape[1])
    assert group.all(dim=0).sum() == keep_idx.numel() and not group[:, ~group[0]].any()
    assert masks.density(masks.element_mask(shape, keep, gen)) == pytest.approx(keep, abs=1e-4)
    assert masks.density(masks.block_mask(shape, keep, 32, gen)) == pytest.approx(keep, abs=0.05)
    n, m = masks.nm_ratio(keep)
    vector = masks.nm_mask(shape, n, m, gen)
    assert masks.density(vector) == pytest.approx(keep, abs=0.02)


def test_nm_mask_keeps_n_in_every_vector_of_m():
    n, m = masks.nm_ratio(0.5)
    assert (n, m) == (2, 4)
    vector = masks.nm_mask((8, 64), n, m, torch.Generator().manual_seed(1))
    assert (vector.reshape(8, -1, m).sum(-1) == n).all()


def test_block_mask_is_made_of_whole_blocks():
    block = masks.block_mask((64, 96), 0.5, 16, torch.Generator().manual_seed(2))
    tiles = block.reshape(4, 16, 6, 16).permute(0, 2, 1, 3).reshape(24, -1)
    assert ((tiles.sum(-1) == 0) | (tiles.sum(-1) == 256)).all()
    assert masks.block_size_for((64, 96)) == 32 and masks.block_size_for((27, 64)) is None


def test_undividable_block_shape_is_unsupported_not_an_error():
    precision = PRECISIONS["fp32"]
    first_layer = select(["resnet18-cifar10"])[0][0]  # 3 -> 64 conv: K = 27
    small = type(first_layer)(3, 64, 3, 1, 1, 4, 4, 1)
    bsr = next(p for p in default_providers() if p.name == "block-bsr")
    with precision_flags(precision):
        row = measure(bsr, Case(make_layer_data(small, precision, CPU, 0), 0.5), CpuTimer())
    assert row.status.startswith("unsupported: weight matrix 64x27")


# ---- workloads and model sums ----------------------------------------------------------------


def test_model_layer_lists_have_the_published_layer_counts():
    def uses(name):
        return sum(count for _, count in MODELS[name].layers)

    assert uses("vgg16-cifar10") == 16  # 13 conv + 3 linear
    assert uses("resnet18-imagenet") == 1 + 16 + 3 + 1  # stem, 8 blocks x 2, 3 shortcuts, fc
    assert uses("bert-base-seq128") == 12 * 6 + 2
    workloads, models = select(["seed-linear", "vgg16-cifar10"], batch=8)
    assert all(w.batch == 8 for w in workloads) and models[0].name == "vgg16-cifar10"
    assert len({w.slug for w in workloads}) == len(workloads)  # shared shapes measured once


def test_model_totals_fall_back_to_dense_for_layers_a_provider_cannot_run():
    conv, linear = CPU_TINY_CONV, CPU_TINY_LINEAR
    model = ModelLayers("tiny", ((conv, 2), (linear, 1)))

    def row(workload, provider, family, keep, ms, status="ok"):
        return ResultRow(
            workload.slug,
            "",
            workload.kind,
            "",
            1,
            "fp32",
            provider,
            family,
            "",
            keep,
            ms=ms,
            status=status,
        )

    rows = [
        row(conv, "dense", "dense", 1.0, 1.0),
        row(linear, "dense", "dense", 1.0, 4.0),
        row(conv, "block-bsr", "block-wise", 0.5, 0.25),
        row(linear, "block-bsr", "block-wise", 0.5, None, "unsupported: no"),
    ]
    add_ratios(rows)
    totals = {t.provider: t for t in model_totals(rows, [model])}
    assert totals["dense"].ms == pytest.approx(6.0)
    assert totals["block-bsr"].ms == pytest.approx(2 * 0.25 + 4.0)
    assert totals["block-bsr"].dense_fallback_layers == 1


# ---- argument errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--keep", "1.5"], "'1.5' is not a keep ratio in (0, 1]"),
        (["--keep", "half"], "'half' is not a number"),
        (["--precisions", "fp8"], "unknown precision 'fp8'; choose from fp32, tf32, fp16, bf16"),
        (["--layers", "resnet50"], "unknown layer or model 'resnet50'"),
        (["--providers", "magic"], "--providers: unknown 'magic'"),
        (["--batch", "0"], "must be positive, got 0"),
        (["--quick", "--paper"], "not allowed with argument"),
        (["--cpu", "--precisions", "tf32"], "no precision left to run on the CPU"),
    ],
)
def test_argument_errors_have_clear_messages(argv, message, capsys, tmp_path):
    assert main(["--cpu", "--out", str(tmp_path), *argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without a GPU")
def test_gpu_presets_explain_what_to_do_without_a_gpu(capsys):
    assert main(["--quick"]) == 2
    assert "--quick needs a CUDA GPU" in capsys.readouterr().err


def test_resume_refuses_results_of_another_device(tmp_path, capsys):
    argv = ["--cpu", "--out", str(tmp_path), "--layers", "cpu-tiny-linear", "--keep", "0.5"]
    assert main([*argv, "--providers", "dense", "--no-plots"]) == 0
    env = json.loads((tmp_path / "env.json").read_text())
    (tmp_path / "env.json").write_text(json.dumps({**env, "device": "NVIDIA H100 80GB HBM3"}))
    assert main([*argv, "--resume"]) == 2
    assert "holds results from 'NVIDIA H100 80GB HBM3'" in capsys.readouterr().err


def test_cpu_timer_interleaves_rounds_and_keeps_each_calls_median():
    """measure_interleaved runs every call once per round (so all get the same number of
    runs, warm-up first) and reports each call's own median: a slower call reads slower."""
    order = []

    def call(name, seconds):
        def run():
            order.append(name)
            time.sleep(seconds)

        return run

    timer = CpuTimer(repeats=4, budget_s=10.0)
    fast, slow = timer.measure_interleaved([call("fast", 0.001), call("slow", 0.004)])
    assert order == ["fast", "slow"] * 5  # one warm-up round, then 4 timed rounds
    assert fast.runs == slow.runs == 4 and "interleaved" in fast.method
    assert 1.0 <= fast.ms < slow.ms and slow.ms >= 4.0
