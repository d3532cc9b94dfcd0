"""Layer backends ("gathered" / "dense") and gwprune.autotune choosing between them."""

import copy
import io

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from conftest import TOLERANCES, poisoned_outputs, precision_flags

import gwprune
from gwprune.nn import BACKENDS, GroupwiseConv2d, GroupwiseLinear

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
DTYPES = {
    "fp32": torch.float32,
    "tf32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}


class SmallNet(nn.Module):
    """A conv with stride and odd sizes, a 1x1 conv, a linear on a 3-D input, and a
    branch the forward never takes."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(5, 12, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(12, 9, 1, bias=False)
        self.fc = nn.Linear(17, 11)
        self.unused = nn.Linear(17, 3)

    def forward(self, x):
        y = self.conv2(torch.relu(self.conv1(x)))  # [N, 9, 9, 17] for 17x33 inputs
        return self.fc(y)


def converted_net(dtype=torch.float64, device="cpu", seed=0):
    torch.manual_seed(seed)
    dense = SmallNet().to(device=device, dtype=dtype).eval()
    # fold=False: these tests read each layer of to_dense(model) as a plain conv/linear.
    model, report = gwprune.convert(dense, keep_ratio=0.5, criterion="l1", fold=False)
    assert {layer.name for layer in report.converted} == {"conv1", "conv2", "fc", "unused"}
    masked = gwprune.to_dense(model)  # the same pruned weights in ordinary layers
    return model, masked


def fresh_input(dtype=torch.float64, device="cpu", layout=torch.contiguous_format, seed=1):
    generator = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(3, 5, 17, 33, dtype=dtype, device=device, generator=generator)
    return x.contiguous(memory_format=layout)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_backends_match_masked_dense(backend, layout):
    model, masked = converted_net()
    for module in model.modules():
        if isinstance(module, (GroupwiseConv2d, GroupwiseLinear)):
            assert module.backend == "gathered"
            module.set_backend(backend, layout)
            assert module.backend == backend
            assert (module.dense_weight is None) == (backend == "gathered")
    x = fresh_input(layout=layout)
    with torch.no_grad():
        torch.testing.assert_close(model(x), masked(x), rtol=1e-12, atol=1e-12)


def test_dense_weight_has_pruned_groups_zero_and_layout():
    model, masked = converted_net()
    model.conv1.set_backend("dense", torch.channels_last)
    weight = model.conv1.dense_weight
    assert weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(weight, masked.conv1.weight, rtol=0, atol=0)
    zero_groups = (weight.reshape(12, -1) == 0).all(dim=0)
    assert int((~zero_groups).sum()) == model.conv1.num_kept
    assert "backend='dense'" in repr(model.conv1)
    model.conv1.set_backend("gathered")
    assert model.conv1.dense_weight is None and "backend" not in repr(model.conv1)


def test_dense_backend_is_not_saved_and_follows_loaded_weights():
    model, _ = converted_net(seed=0)
    other, other_masked = converted_net(seed=5)
    keys = set(model.state_dict())
    model.fc.set_backend("dense")
    assert set(model.state_dict()) == keys  # the cache is not part of the checkpoint
    buffer = io.BytesIO()
    torch.save(other.state_dict(), buffer)
    buffer.seek(0)
    model.load_state_dict(torch.load(buffer))
    x = torch.randn(4, 17, dtype=torch.float64)
    torch.testing.assert_close(model.fc(x), other_masked.fc(x), rtol=1e-12, atol=1e-12)


def test_dense_weight_follows_casts():
    model, masked = converted_net()
    model.conv1.set_backend("dense")
    model.conv2.set_backend("dense")
    model.fc.set_backend("dense")
    model = model.float()
    assert model.conv1.dense_weight.dtype == torch.float32
    x = fresh_input()
    with torch.no_grad():
        torch.testing.assert_close(model(x.float()), masked.float()(x.float()))


@pytest.mark.parametrize(
    "backend,memory_format,match",
    [
        ("sparse", torch.contiguous_format, "backend must be one of"),
        ("dense", torch.preserve_format, "memory_format must be"),
    ],
)
def test_set_backend_rejects_bad_arguments(backend, memory_format, match):
    model, _ = converted_net()
    with pytest.raises(ValueError, match=match):
        model.conv1.set_backend(backend, memory_format)
    assert model.conv1.backend == "gathered"


def test_autotune_times_every_layer_that_runs_and_keeps_results():
    model, masked = converted_net()
    x = fresh_input(layout=torch.channels_last)
    report = gwprune.autotune(model, x, warmup=1, repeats=3)
    by_name = {layer.name: layer for layer in report.layers}
    assert list(by_name) == ["conv1", "conv2", "fc", "unused"]
    assert by_name["conv1"].input_shape == (3, 5, 17, 33)
    assert by_name["fc"].input_shape == (3, 9, 9, 17)
    for name in ("conv1", "conv2", "fc"):
        layer = by_name[name]
        assert set(layer.times_ms) == set(BACKENDS)
        assert all(ms > 0 for ms in layer.times_ms.values())
        faster = min(layer.times_ms, key=layer.times_ms.get)
        assert layer.backend in (faster, "gathered")  # 'gathered' wins ties within the margin
        assert model.get_submodule(name).backend == layer.backend
    assert by_name["unused"].input_shape is None and by_name["unused"].times_ms == {}
    assert "not run by the forward" in str(report)
    assert report.dense == [layer.name for layer in report.layers if layer.backend == "dense"]
    y = fresh_input(seed=2, layout=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(model(y), masked(y), rtol=1e-12, atol=1e-12)


def test_autotune_margin_one_minus_epsilon_keeps_everything_gathered():
    model, _ = converted_net()
    report = gwprune.autotune(model, fresh_input(), warmup=0, repeats=1, margin=0.999999)
    assert report.dense == []


def test_autotune_passes_keyword_inputs():
    class Keyword(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(6, 4)

        def forward(self, *, features):
            return self.fc(features)

    model, _ = gwprune.convert(Keyword().double(), keep_ratio=0.5)
    report = gwprune.autotune(model, features=torch.randn(2, 6, dtype=torch.float64), repeats=1)
    assert report.layers[0].input_shape == (2, 6)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"warmup": -1}, "warmup must be an int >= 0"),
        ({"repeats": 0}, "repeats must be an int >= 1"),
        ({"repeats": 2.5}, "repeats must be an int >= 1"),
        ({"margin": 1.0}, r"margin must be a number in \[0, 1\)"),
    ],
)
def test_autotune_rejects_bad_arguments(kwargs, match):
    model, _ = converted_net()
    with pytest.raises(ValueError, match=match):
        gwprune.autotune(model, fresh_input(), **kwargs)


def test_autotune_rejects_non_module():
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        gwprune.autotune(lambda x: x, torch.randn(2))


def test_autotune_without_gwprune_layers_is_empty():
    report = gwprune.autotune(nn.Linear(3, 2), torch.randn(1, 3), repeats=1)
    assert report.layers == [] and "0 layers" in str(report)


@needs_cuda
@pytest.mark.parametrize("precision", ["fp32", "tf32", "fp16", "bf16"])
def test_autotune_on_cuda_matches_masked_dense(precision):
    dtype = DTYPES[precision]
    model, masked = converted_net(dtype=dtype, device="cuda")
    layout = torch.channels_last
    with precision_flags(precision):
        report = gwprune.autotune(model, fresh_input(dtype=dtype, device="cuda", layout=layout))
        implicit_runs = precision != "fp32" and torch.cuda.get_device_capability() == (9, 0)
        for layer in report.layers[:3]:
            module = model.get_submodule(layer.name)
            # A CUDA conv times its two gathered paths and dense (tune._candidates).
            conv = "implicit" in module.BACKENDS
            expected = set(module.BACKENDS) - {"gathered"} if conv else set(BACKENDS)
            if not implicit_runs:  # strict fp32 or no sm_90a kernel: refused, not timed
                expected.discard("implicit")
            assert set(layer.times_ms) == expected, (layer.name, layer.times_ms)
        for backend in BACKENDS:  # whatever autotune chose, both backends stay correct
            for module in model.modules():
                if isinstance(module, (GroupwiseConv2d, GroupwiseLinear)):
                    module.set_backend(backend, layout)
            y = fresh_input(dtype=dtype, device="cuda", seed=3, layout=layout)
            with torch.no_grad(), poisoned_outputs("cuda"):
                out = model(y)
            with torch.no_grad():
                ref = copy.deepcopy(masked).double()(y.double())
            error = float((out.double() - ref).norm() / ref.norm())
            assert error <= TOLERANCES[precision], (backend, error)


def test_autotune_picks_the_faster_backend_by_its_timings(monkeypatch):
    """With timings stubbed (dense 1.0 ms, gathered 2.0 / 1.01 ms) the choice follows
    them and the margin; a dense weight built under autotune is a normal tensor (usable
    where inputs require grad), not an inference tensor."""
    model, masked = converted_net()
    gathered_ms = {"conv1": 2.0, "conv2": 1.01, "fc": 2.0}
    names = {module: name for name, module in model.named_modules()}

    def stub(module, x, warmup, repeats):
        return 1.0 if module.backend == "dense" else gathered_ms[names[module]]

    monkeypatch.setattr(gwprune.tune, "_median_ms", stub)
    report = gwprune.autotune(model, fresh_input(), margin=0.02)
    assert report.dense == ["conv1", "fc"]  # conv2: dense is only 1 % faster
    assert model.conv2.backend == "gathered" and model.conv2.dense_weight is None
    assert not model.fc.dense_weight.is_inference()
    x = torch.randn(2, 17, dtype=torch.float64, requires_grad=True)
    out = model.fc(x)
    torch.testing.assert_close(out, F.linear(x, masked.fc.weight, masked.fc.bias))
    out.sum().backward()
    assert x.grad is not None


def test_module_pickled_before_backends_existed_gets_them():
    model, masked = converted_net()
    del model.fc._buffers["dense_weight"]  # what an older pickle holds
    model.fc.__dict__.pop("_backend", None)
    assert model.fc.backend == "gathered"
    model.fc.set_backend("dense")
    assert "dense_weight" in model.fc._buffers
    x = torch.randn(3, 17, dtype=torch.float64)
    torch.testing.assert_close(model.fc(x), masked.fc(x), rtol=1e-12, atol=1e-12)


def test_autotune_runs_in_eval_mode_and_restores_modes():
    torch.manual_seed(0)
    dense = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Dropout(0.5))
    # fold=False keeps the BatchNorm, whose running statistics must survive autotune.
    model, _ = gwprune.convert(dense.double(), keep_ratio=0.5, fold=False)
    model.train()
    model[0].eval()  # a mixed state must come back as it was
    stats = model[1].running_mean.clone()
    gwprune.autotune(model, torch.randn(2, 3, 9, 9, dtype=torch.float64), repeats=1)
    assert torch.equal(model[1].running_mean, stats)
    assert model.training and model[1].training and model[2].training and not model[0].training
