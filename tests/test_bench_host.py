"""gwprune bench --host-overhead on the CPU: a tiny run completes and writes sane output;
wrong results are not timed; the options that do not apply are refused."""

import csv
import datetime
import json

import pytest
import torch

from gwprune.bench.cli import main
from gwprune.bench.host_cases import CALLS, CPU_LAYERS, LATENCY_LAYER, variants
from gwprune.bench.host_timing import HostTimer

TINY = ["--host-overhead", "--cpu", "--host-calls", "3", "--host-batches", "2"]


@pytest.fixture(scope="module")
def host_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("host")
    code = main([*TINY, "--out", str(out)])
    return code, out


def rows_of(out):
    with (out / "results.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_tiny_run_times_every_call_of_every_layer(host_run):
    code, out = host_run
    assert code == 0
    rows = rows_of(out)
    host = [r for r in rows if r["metric"] == "host_us"]
    expected = {
        (layer.name, v.layout, "yes" if v.bias else "no", call)
        for layer in CPU_LAYERS
        for v in variants(layer)
        for call in CALLS
    }
    assert {(r["layer"], r["layout"], r["bias"], r["call"]) for r in host} == expected
    assert all(r["status"] == "ok" for r in rows), [r for r in rows if r["status"] != "ok"]
    assert all(float(r["us"]) > 0 for r in rows)
    latency_layers = {r["layer"] for r in rows if r["metric"] == "latency_us"}
    assert latency_layers == {LATENCY_LAYER["cpu"].name}


def test_ratios_are_to_dense_and_raw_to_packed(host_run):
    _, out = host_run
    rows = rows_of(out)
    for row in rows:
        if row["call"] == "dense":
            assert float(row["ratio_vs_dense"]) == pytest.approx(1.0)
        if row["call"] == "raw":
            packed = next(
                r
                for r in rows
                if r["call"] == "packed"
                and all(r[k] == row[k] for k in ("layer", "layout", "bias", "precision", "metric"))
            )
            assert float(row["ratio_vs_packed"]) == pytest.approx(
                float(row["us"]) / float(packed["us"]), rel=1e-4
            )
        else:
            assert row["ratio_vs_packed"] == ""


def test_markdown_and_env(host_run):
    _, out = host_run
    markdown = (out / "results.md").read_text()
    for heading in ("## Targets", "## Host time per call", "## Batch-1 eager latency"):
        assert heading in markdown
    assert "CPU run" in markdown and "raw op host time <= 1.10x packed" in markdown
    env = json.loads((out / "env.json").read_text())
    assert env["benchmark"] == "host-overhead" and env["device_type"] == "cpu"
    assert env["torch"] == torch.__version__ and env["grad_mode"] == "torch.no_grad()"


def test_report_only_rebuilds_the_markdown(host_run):
    _, out = host_run
    (out / "results.md").unlink()
    assert main(["--report-only", "--out", str(out)]) == 0
    assert "## Targets" in (out / "results.md").read_text()


def test_default_folder_is_named_by_device_and_date(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from gwprune.bench import host_cli

    monkeypatch.setattr(host_cli, "CPU_LAYERS", CPU_LAYERS[1:2])
    monkeypatch.setattr(host_cli, "LATENCY_LAYER", {"cpu": CPU_LAYERS[1]})
    assert main(TINY) == 0
    folder = tmp_path / "bench" / "results" / f"host-overhead-cpu-{datetime.date.today()}"
    assert (folder / "results.csv").exists() and (folder / "results.md").exists()


def test_a_wrong_result_is_not_timed(tmp_path, monkeypatch):
    from gwprune.bench import host_cli

    real_build = host_cli.build

    def build_with_a_wrong_raw_call(*args):
        setup = real_build(*args)
        raw = setup.calls["raw"]
        setup.calls["raw"] = lambda: raw() + 1.0
        return setup

    monkeypatch.setattr(host_cli, "build", build_with_a_wrong_raw_call)
    monkeypatch.setattr(host_cli, "CPU_LAYERS", CPU_LAYERS[1:2])
    assert main([*TINY, "--out", str(tmp_path)]) == 0
    rows = rows_of(tmp_path)
    raw = [r for r in rows if r["call"] == "raw"]
    assert raw and all(r["status"].startswith("FAILED") and r["us"] == "" for r in raw)
    assert all(r["status"] == "ok" for r in rows if r["call"] != "raw")
    assert "## Not timed" in (tmp_path / "results.md").read_text()


@pytest.mark.parametrize(
    "argv,words",
    [
        (["--host-overhead", "--models"], "--models does not apply"),
        (["--host-overhead", "--quick"], "--quick does not apply"),
        (["--host-overhead", "--keep", "0.5"], "--keep does not apply"),
        (["--host-calls", "5"], "--host-calls applies to --host-overhead only"),
    ],
)
def test_options_that_do_not_apply_are_refused(argv, words, capsys):
    assert main(argv) == 2
    assert words in capsys.readouterr().err


def test_host_timer_on_the_cpu():
    timer = HostTimer(torch.device("cpu"), calls=5, batches=3, warmup=1)
    counter = []
    assert timer.host_us(lambda: counter.append(1)) > 0
    assert len(counter) == 1 + 5 * 3
    assert timer.latency_us(lambda: None) > 0
    assert "perf_counter" in timer.describe()
