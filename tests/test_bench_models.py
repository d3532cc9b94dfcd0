"""gwprune bench --models on the CPU: the command end to end, the checks, the helpers."""

import contextlib
import csv
import json
from types import SimpleNamespace

import pytest
import torch

import gwprune
from gwprune.bench import cuda_graphs
from gwprune.bench.cli import main
from gwprune.bench.cuda_graphs import model_call
from gwprune.bench.model_case import ModelCase
from gwprune.bench.model_cli import model_size
from gwprune.bench.model_measure import (
    dense_times_from_rows,
    measure_dense,
    measure_model,
    model_tolerance,
)
from gwprune.bench.model_pruning import dense_layers_text, name_pattern, prune_model
from gwprune.bench.model_results import ModelRow, read_model_rows, target_checks, write_model_rows
from gwprune.bench.model_specs import CPU_SIZE, GPU_SIZE, MODEL_SPECS, parse_model_names
from gwprune.bench.precision import PRECISIONS, precision_flags
from gwprune.bench.timing import CpuTimer
from gwprune.nn import GroupwiseConv2d

pytest.importorskip("torchvision")
pytest.importorskip("transformers")

CPU = torch.device("cpu")
FAST = ["--rep-ms", "5"]  # CPU timing budget per measurement: the times are not the point here
# Converted layers of the CPU variants (first conv and classifier stay dense).
CONVERTED_LAYERS = {
    "vgg16": 12 + 2,
    "resnet18": 16 + 3,
    "resnet50": 4 * 3 + 4,  # one bottleneck per stage, its downsample conv
    "convnext_tiny": 4 * 2 + 3,  # each block's two linears, the 3 downsampling convs
    "vit_b_16": 2 * 2,
    "bert-base": 2 * 6,
    "llama": 2 * 7,
    "gpt2": 2 * 4,
}
# Converted layers with a BatchNorm or an activation folded in (tests/test_fold.py has more).
FOLDED_LAYERS = {"resnet18": 16 + 3, "resnet50": 16, "convnext_tiny": 4, "llama": 2, "gpt2": 2}


def read_rows(out) -> list[dict]:
    with (out / "results.csv").open() as handle:
        return list(csv.DictReader(handle))


# ---- the command, end to end ---------------------------------------------------------------


@pytest.fixture(scope="module")
def models_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("models")
    argv = ["--models", "--cpu", "--out", str(out), "--keep", "0.5,0.25", *FAST]
    return main([*argv, "--precisions", "fp32,bf16"]), out


def test_cpu_preset_has_a_checked_row_per_model_keep_and_precision(models_run):
    code, out = models_run
    assert code == 0
    rows = read_rows(out)
    keys = [(row["model"], row["keep"], row["precision"]) for row in rows]
    assert sorted(keys) == sorted(
        (model, keep, precision)
        for model in MODEL_SPECS
        for keep in ("0.5", "0.25")
        for precision in ("fp32", "bf16")
    )
    for row in rows:
        where = (row["model"], row["keep"], row["precision"])
        assert row["status"] == "ok", (where, row["status"])
        error, tolerance = float(row["rel_error"]), float(row["tolerance"])
        assert 0 < error <= tolerance, where
        expected_tolerance = 1e-4 if row["precision"] == "fp32" else 2e-2
        assert tolerance == pytest.approx(expected_tolerance), where  # dense's own error is small
        assert int(row["layers_converted"]) == CONVERTED_LAYERS[row["model"]], where
        assert float(row["dense_ms"]) > 0 and float(row["converted_ms"]) > 0, where
        speedup = float(row["dense_ms"]) / float(row["converted_ms"])
        assert float(row["speedup"]) == pytest.approx(speedup, rel=1e-4), where
        autotuned = float(row["dense_ms"]) / float(row["autotuned_ms"])
        assert float(row["autotuned_speedup"]) == pytest.approx(autotuned, rel=1e-4), where
        assert 0 <= int(row["autotuned_dense_layers"]) <= int(row["layers_converted"]), where
        path = "CPU kernels" if gwprune.cpu_kernels_compiled() else "reference path"
        assert row["cuda_graphs"] == "off" and path in row["note"], where
        kept = float(row["params_kept"])
        assert float(row["keep"]) < kept < 1, where  # dense layers, norms and embeddings remain
        # No --compile on the CPU by default: the best dense is the eager one.
        assert row["compile"] == "" and row["dense_compiled_ms"] == "", where
        best = float(row["dense_ms"]) / min(float(row["converted_ms"]), float(row["autotuned_ms"]))
        assert float(row["speedup_vs_best_dense"]) == pytest.approx(best, rel=1e-4), where


def test_compiled_baseline_and_speedup_vs_best_dense(tmp_path):
    # The compile plumbing on the CPU with the 'eager' backend (inductor on a CPU would take
    # minutes): dense and the autotuned converted model are compiled, checked and timed.
    out = tmp_path / "compiled"
    argv = ["--models", "gpt2,resnet50", "--cpu", "--out", str(out), "--keep", "0.5", *FAST]
    assert main([*argv, "--compile", "--compile-backend", "eager"]) == 0
    for row in read_rows(out):
        where = row["model"]
        assert row["status"] == "ok" and row["compile"] == "eager, freezing", (where, row)
        dense = min(float(row["dense_ms"]), float(row["dense_compiled_ms"]))
        assert float(row["best_dense_ms"]) == pytest.approx(dense, rel=1e-6), where
        converted = min(float(row[k]) for k in ("converted_ms", "autotuned_ms"))
        converted = min(converted, float(row["autotuned_compiled_ms"]))
        assert float(row["speedup_vs_best_dense"]) == pytest.approx(dense / converted, rel=1e-4)
        assert row["dense_compiled_layout"] in ("contiguous", "channels_last"), where
    text = (out / "results.md").read_text()
    assert "vs best dense" in text and "compiled dense ms" in text


def test_cnns_are_timed_in_both_layouts_and_the_better_one_reported(models_run):
    _, out = models_run
    for row in read_rows(out):
        if MODEL_SPECS[row["model"]].family == "cnn":
            for side in ("dense", "converted"):
                layouts = {
                    layout: float(row[f"{side}_ms_{layout}"])
                    for layout in ("contiguous", "channels_last")
                }
                assert row[f"{side}_layout"] == min(layouts, key=layouts.get)
                assert float(row[f"{side}_ms"]) == min(layouts.values())
        else:
            assert row["dense_ms_channels_last"] == "" and row["dense_layout"] == "contiguous"


def test_dense_layers_are_named_with_the_reason(models_run):
    _, out = models_run
    dense = {row["model"]: row["dense_layers"] for row in read_rows(out)}
    assert dense["vgg16"] == "features.0 (first conv); classifier.6 (classifier)"
    assert dense["resnet18"] == "conv1 (first conv); fc (classifier)"
    assert "2x encoder.layers.encoder_layer_*.self_attention.out_proj" in dense["vit_b_16"]
    assert "heads.head (classifier)" in dense["vit_b_16"]
    assert dense["bert-base"].startswith("bert.pooler.dense (pooler head")


def test_markdown_plots_and_env_say_what_ran(models_run):
    _, out = models_run
    markdown = (out / "results.md").read_text()
    assert "**CPU run** with small model variants" in markdown
    assert "## Setup" in markdown and "### fp32" in markdown and "### bf16" in markdown
    assert "| resnet18 | 0.5 |" in markdown and "features.0 (first conv)" in markdown
    assert sorted(path.name for path in out.glob("*.png")) == sorted(
        f"speedup_{model}.png" for model in MODEL_SPECS
    )
    env = json.loads((out / "env.json").read_text())
    assert env["benchmark"] == "models" and env["device_type"] == "cpu"
    assert env["cuda_graphs"] is False and "tiny CPU variants" in env["model_size"]
    assert env["torchvision"] != "not available" and env["transformers"] != "not available"


def test_resume_measures_nothing_twice(models_run, capsys):
    _, out = models_run
    before = (out / "results.csv").read_text()
    argv = ["--models", "--cpu", "--out", str(out), "--keep", "0.5,0.25", "--resume"]
    assert main([*argv, "--precisions", "fp32,bf16", "--no-plots", *FAST]) == 0
    assert f"0 measurements ({len(MODEL_SPECS) * 4} resumed)" in capsys.readouterr().out
    assert (out / "results.csv").read_text().count("\n") == before.count("\n")


def test_report_only_rebuilds_the_model_report(models_run):
    _, out = models_run
    (out / "results.md").unlink()
    for plot in out.glob("*.png"):
        plot.unlink()
    assert main(["--report-only", "--out", str(out)]) == 0
    assert "## Results" in (out / "results.md").read_text() and list(out.glob("speedup_*.png"))


def test_time_budget_stops_with_status_3_and_resume_reuses_dense_times(tmp_path, capsys):
    argv = ["--models", "resnet18", "--cpu", "--out", str(tmp_path), "--keep", "0.5,0.25", *FAST]
    assert main([*argv, "--max-minutes", "1e-6", "--no-plots"]) == 3
    assert "Incomplete run" in (tmp_path / "results.md").read_text()
    first = read_rows(tmp_path)
    assert len(first) <= 1
    assert main([*argv, "--resume"]) == 0
    rows = read_rows(tmp_path)
    assert [row["keep"] for row in rows] == ["0.5", "0.25"]
    assert all(row["status"] == "ok" for row in rows)
    assert len({row["dense_ms_contiguous"] for row in rows}) == 1  # dense timed once


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--models", "resnet34"], "unknown model 'resnet34'; choose from vgg16, resnet18"),
        (["--models", "--quick"], "--quick applies to the layer benchmark, not to --models"),
        (["--models", "--layers", "seed-conv"], "--layers applies to the layer benchmark"),
        (["--image-size", "32"], "--image-size applies to --models only"),
        (["--no-cuda-graphs"], "--cuda-graphs/--no-cuda-graphs applies to --models only"),
        (["--models", "--precisions", "tf32"], "no precision left to run on the CPU"),
    ],
)
def test_argument_errors_have_clear_messages(argv, message, capsys, tmp_path):
    assert main(["--cpu", "--out", str(tmp_path), *argv]) == 2
    assert message in capsys.readouterr().err


def test_list_shows_the_models(capsys):
    assert main(["--list"]) == 0
    listing = capsys.readouterr().out
    assert "models (--models NAMES):" in listing and "bert-base" in listing


# ---- helpers ---------------------------------------------------------------------------------


def test_model_names_and_sizes():
    assert parse_model_names(None) == parse_model_names("all") == list(MODEL_SPECS)
    assert parse_model_names("bert-base, vgg16,vgg16") == ["bert-base", "vgg16"]
    with pytest.raises(ValueError, match="unknown model 'vit'"):
        parse_model_names("vit")
    args = SimpleNamespace(device=CPU, batch=None, image_size=64, seq_len=None)
    assert model_size(args) == CPU_SIZE.__class__(2, 64, 16, True)
    args = SimpleNamespace(device=torch.device("cuda"), batch=8, image_size=None, seq_len=None)
    assert model_size(args) == GPU_SIZE.__class__(8, 224, 128, False)


@pytest.fixture(scope="module")
def resnet_case():
    return ModelCase(MODEL_SPECS["resnet18"], CPU_SIZE, CPU, seed=0)


def test_pruning_keeps_the_same_groups_in_every_layout(resnet_case):
    pruned = prune_model(resnet_case.dense, resnet_case.spec, 0.5)
    contiguous, channels_last = pruned.converted["contiguous"], pruned.converted["channels_last"]
    kept = {layer.name: layer.keep_idx for layer in pruned.report.converted}
    for name, module in contiguous.named_modules():
        if isinstance(module, GroupwiseConv2d):
            other = channels_last.get_submodule(name)
            assert torch.equal(module.keep_idx, other.keep_idx), name
            assert torch.equal(module.keep_idx, kept[name]), name
            masked = pruned.masked.get_submodule(name).weight.reshape(module.out_channels, -1)
            zero = (masked == 0).all(dim=0)  # the masked model zeroes exactly the pruned groups
            assert torch.equal((~zero).nonzero().reshape(-1), kept[name]), name
    assert type(contiguous.conv1) is torch.nn.Conv2d and type(contiguous.fc) is torch.nn.Linear
    # BatchNorms are folded into the converted convs (bench/ and docs: the deployed form).
    assert len(pruned.report.folding.folded) == FOLDED_LAYERS["resnet18"]
    facts = pruned.facts
    removed = pruned.report.weight_params - pruned.report.kept_weight_params
    assert facts.params_kept == pytest.approx(1 - removed / facts.params_total)
    assert facts.groups_kept == pytest.approx(0.5, abs=0.01)


def test_wrong_converted_model_is_failed_and_not_timed(resnet_case):
    class CountingTimer(CpuTimer):
        calls = 0

        def measure(self, fn):
            type(self).calls += 1
            return super().measure(fn)

    precision = PRECISIONS["fp32"]
    with precision_flags(precision):
        dense = measure_dense(resnet_case, precision, CpuTimer(repeats=3), use_graphs=False)
        wrong = resnet_case.pruned(0.25).converted["channels_last"]
        wrong.layer1[0].conv1.weight.mul_(1.01)
        timer = CountingTimer(repeats=3)
        row = measure_model(resnet_case, 0.25, precision, dense, timer, use_graphs=False)
    assert row.status == "FAILED" and CountingTimer.calls == 0
    assert row.rel_error > row.tolerance and row.converted_ms is None
    assert row.dense_ms is not None  # the dense model was timed: the row still says how fast


def test_dense_timing_failure_is_recorded_in_the_row(resnet_case):
    precision = PRECISIONS["fp32"]
    with precision_flags(precision):
        row = measure_model(
            resnet_case, 0.5, precision, "error: out of memory", CpuTimer(), use_graphs=False
        )
    assert row.status == "error: out of memory" and row.rel_error is not None


def test_tolerance_widens_to_twice_the_dense_models_own_error():
    bf16 = PRECISIONS["bf16"]
    assert model_tolerance(bf16, 1e-3) == 2e-2
    assert model_tolerance(bf16, 0.03) == pytest.approx(0.06)
    assert model_tolerance(bf16, float("inf")) == model_tolerance(bf16, float("nan")) == 2e-2
    assert model_tolerance(PRECISIONS["fp32"], 1e-7) == 1e-4


def test_graphs_are_not_used_off_cuda():
    model = torch.nn.Linear(4, 4)
    x = torch.randn(2, 4)
    call = model_call(model, x, use_graphs=True, expected=model(x), tolerance=1e-4)
    assert not call.graphed and call.note == ""
    torch.testing.assert_close(call.run(), model(x))


@pytest.fixture
def fake_cuda_graphs(monkeypatch):
    """Stands in for torch.cuda's stream and graph API, so graphed_call's logic runs on a CPU."""

    class Stream:
        def wait_stream(self, other):
            pass

    class Graph:
        def replay(self):
            pass

    for name, value in {
        "Stream": Stream,
        "CUDAGraph": Graph,
        "current_stream": Stream,
        "stream": lambda stream: contextlib.nullcontext(),
        "graph": lambda graph: contextlib.nullcontext(),
        "synchronize": lambda: None,
        "empty_cache": lambda: None,
    }.items():
        monkeypatch.setattr(torch.cuda, name, value)


class CallCounting(torch.nn.Module):
    """Doubles its input; from call ``wrong_from`` on it is 1 % off, or raises if ``fail``."""

    def __init__(self, wrong_from=None, fail=False):
        super().__init__()
        self.calls, self.wrong_from, self.fail = 0, wrong_from, fail

    def forward(self, x):
        self.calls += 1
        if self.fail and self.calls > cuda_graphs.WARMUP_CALLS:
            raise RuntimeError("operation not permitted when stream is capturing")
        wrong = self.wrong_from is not None and self.calls >= self.wrong_from
        return x * (2.02 if wrong else 2.0)


def test_graphed_call_captures_after_warm_up(fake_cuda_graphs):
    model, x = CallCounting(), torch.randn(4, 3)
    call = cuda_graphs.graphed_call(model, x, expected=2 * x, tolerance=1e-6)
    assert call.graphed and call.note == "" and model.calls == cuda_graphs.WARMUP_CALLS + 1
    call.run()  # a replay: the model itself is not called again
    assert model.calls == cuda_graphs.WARMUP_CALLS + 1


def test_graphed_call_falls_back_to_eager_with_the_reason(fake_cuda_graphs):
    x = torch.randn(4, 3)
    failing = cuda_graphs.graphed_call(CallCounting(fail=True), x, 2 * x, 1e-6)
    assert not failing.graphed
    assert failing.note == (
        "CUDA graph capture failed (operation not permitted when stream is capturing): eager"
    )
    captured_call = cuda_graphs.WARMUP_CALLS + 1
    differing = cuda_graphs.graphed_call(CallCounting(wrong_from=captured_call), x, 2 * x, 1e-6)
    assert not differing.graphed
    assert differing.note == "CUDA graph replay differs from eager (rel. 0.01): eager"
    torch.testing.assert_close(differing.run(), 2.02 * x)


def test_dense_layer_names_are_folded():
    assert name_pattern("encoder.layer.11.attention.output") == "encoder.layer.*.attention.output"
    spec = MODEL_SPECS["vit_b_16"]
    report = SimpleNamespace(
        skipped=[
            SimpleNamespace(name="conv_proj", reason="in skip list ('conv_proj')"),
            *(
                SimpleNamespace(
                    name=f"encoder.layers.encoder_layer_{i}.self_attention.out_proj",
                    reason="out_proj of nn.MultiheadAttention (its weight is read directly)",
                )
                for i in range(12)
            ),
        ]
    )
    assert dense_layers_text(report, spec) == (
        "conv_proj (first conv (patch embedding)); 12x encoder.layers.encoder_layer_*."
        "self_attention.out_proj (out_proj of nn.MultiheadAttention)"
    )
    assert dense_layers_text(SimpleNamespace(skipped=[]), spec) == "none"


def _row(
    model,
    precision,
    speedup,
    keep=0.5,
    status="ok",
    batch_input="64x3x224x224",
    autotuned=None,
    vs_best=None,
):
    return ModelRow(
        model,
        "",
        batch_input,
        64,
        precision,
        keep,
        speedup=speedup,
        autotuned_speedup=autotuned,
        status=status,
        dense_compiled_ms=None if vs_best is None else 1.0,
        speedup_vs_best_dense=vs_best,
    )


def test_target_verdicts():
    tokens = "64x128 token ids"
    rows = [
        _row("resnet18", "tf32", 1.35, vs_best=1.25),
        _row("resnet18", "fp16", 1.3, autotuned=1.4, vs_best=1.2),  # eager wins, compiled not
        _row("vgg16", "tf32", 2.0, batch_input="16x3x224x224", vs_best=2.0),
        _row("vgg16", "fp16", None, status="FAILED"),
        _row("bert-base", "tf32", 1.5, batch_input=tokens),  # no compiled dense timing
        _row("gpt2", "fp16", 1.1, batch_input=tokens, autotuned=1.45, vs_best=1.3),
        _row("resnet50", "tf32", 2.0, keep=0.25, vs_best=1.9),
    ]
    checks = target_checks(rows, is_gpu=True)
    verdicts = {(c.model, c.keep, c.precision): c.verdict for c in checks}
    assert verdicts[("resnet18", 0.5, "tf32")] == "met"
    assert verdicts[("resnet18", 0.5, "fp16")] == "not met"
    assert verdicts[("vgg16", 0.5, "tf32")].startswith("not measured: input 16x3x224x224")
    assert verdicts[("vgg16", 0.5, "fp16")] == "not measured: FAILED"
    assert verdicts[("bert-base", 0.5, "tf32")].startswith("not measured: no compiled dense")
    assert verdicts[("gpt2", 0.5, "fp16")] == "met"
    assert verdicts[("resnet50", 0.25, "tf32")] == "met"
    assert verdicts[("llama", 0.5, "fp16")] == "not measured"
    assert len(checks) == 8 * 2  # 6 models at keep 0.5, VGG-16 and ResNet-50 at 0.25; 2 precisions
    cpu = target_checks(rows, is_gpu=False)
    assert {c.verdict for c in cpu if c.speedup is not None} == {"not measured: CPU run"}


def test_model_rows_round_trip_through_csv(tmp_path):
    row = _row("bert-base", "fp16", 1.5, batch_input="64x128 token ids")
    row.layers_converted, row.dense_layers, row.note = 72, "a (b); c, d", "x, y"
    write_model_rows(tmp_path / "rows.csv", [row])
    (back,) = read_model_rows(tmp_path / "rows.csv")
    assert back == row and back.dense_ms is None and isinstance(back.layers_converted, int)


def test_dense_times_of_an_earlier_run_are_reused():
    row = _row("resnet18", "tf32", 1.3)
    row.dense_ms_contiguous, row.dense_ms_channels_last, row.cuda_graphs = 2.0, 1.5, "on"
    known = dense_times_from_rows([row, _row("bert-base", "tf32", None)])
    assert list(known) == [("resnet18", "tf32")]
    times = known[("resnet18", "tf32")]
    assert times["channels_last"].ms == 1.5 and times["contiguous"].graphed
