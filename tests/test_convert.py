"""convert(): converted models compute what the masked dense models compute."""

import copy
import io

import pytest
import torch
import torch.nn as nn

import gwprune
from gwprune import prune
from gwprune.convert import ConversionReport, convert, to_dense
from gwprune.nn import GroupwiseConv2d, GroupwiseLinear


class SmallNet(nn.Module):
    """Every kind of layer convert() must handle: eligible, grouped, reflect-padded, 'same'."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.BatchNorm2d(8)
        self.down = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.grouped = nn.Conv2d(16, 16, 3, padding=1, groups=4)
        self.reflect = nn.Conv2d(16, 16, 3, padding=1, padding_mode="reflect")
        self.same = nn.Conv2d(16, 16, 3, padding="same", bias=False)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(16 * 4 * 4, 32), nn.ReLU(), nn.Linear(32, 10)
        )

    def forward(self, x):
        x = torch.relu(self.norm(self.stem(x)))
        x = torch.relu(self.down(x))
        x = torch.relu(self.grouped(x))
        x = torch.relu(self.reflect(x))
        x = torch.relu(self.same(x))
        return self.head(x)


def small_net(dtype=torch.float64) -> SmallNet:
    torch.manual_seed(0)
    return SmallNet().to(dtype).eval()


def masked_dense_copy(model: nn.Module, report: ConversionReport) -> nn.Module:
    """The dense model with the report's pruned groups zeroed, built without gwprune.nn."""
    reference = copy.deepcopy(model)
    for layer in report.converted:
        module = reference.get_submodule(layer.name)
        with torch.no_grad():
            module.weight.copy_(gwprune.mask_weight(module.weight, layer.keep_idx))
    return reference


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual - expected).norm() / expected.norm()).item()


def test_prune_and_convert_matches_masked_dense():
    model = small_net()
    converted, report = convert(model, 0.5)
    assert isinstance(converted.stem, GroupwiseConv2d)
    assert isinstance(converted.down, GroupwiseConv2d)
    assert isinstance(converted.same, GroupwiseConv2d) and converted.same.padding == (1, 1)
    assert isinstance(converted.head[1], GroupwiseLinear)
    assert isinstance(converted.head[3], GroupwiseLinear)
    assert type(converted.grouped) is nn.Conv2d and type(converted.reflect) is nn.Conv2d
    reasons = {layer.name: layer.reason for layer in report.skipped}
    assert reasons.keys() == {"grouped", "reflect"}
    assert reasons["grouped"].startswith("grouped convolution (groups=4): 4 channels per group")
    assert reasons["reflect"] == "padding_mode='reflect' (only 'zeros' is supported)"
    for layer in report.converted:
        assert layer.kept_groups == int(layer.num_groups * 0.5 + 0.5)
    assert report.kept_groups == sum(layer.kept_groups for layer in report.converted)

    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    with torch.inference_mode():
        actual = converted(x)
        expected = masked_dense_copy(model, report)(x)
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-12)
    assert relative_error(model(x), expected) > 1e-3  # pruning changed the function


def test_convert_copies_unless_inplace():
    model = small_net()
    original_state = copy.deepcopy(model.state_dict())
    converted, _ = convert(model, 0.5)
    assert converted is not model
    assert type(model.stem) is nn.Conv2d
    for key, value in model.state_dict().items():
        assert torch.equal(value, original_state[key]), key
    same_model, _ = convert(model, 0.5, inplace=True)
    assert same_model is model and isinstance(model.stem, GroupwiseConv2d)


def test_skip_list_globs_and_predicate():
    model = small_net()
    _, report = convert(model, 0.5, skip=["stem", "head.*"])
    converted = {layer.name for layer in report.converted}
    assert converted == {"down", "same"}
    reasons = {layer.name: layer.reason for layer in report.skipped}
    assert reasons["stem"] == "in skip list ('stem')"
    assert reasons["head.3"] == "in skip list ('head.*')"

    _, report = convert(model, 0.5, predicate=lambda name, module: isinstance(module, nn.Linear))
    assert {layer.name for layer in report.converted} == {"head.1", "head.3"}
    assert {layer.name: layer.reason for layer in report.skipped}[
        "down"
    ] == "predicate returned False"


def test_convert_already_zeroed_groups():
    model = small_net()
    keep = {"down": torch.arange(0, 72, 3), "head.1": torch.arange(100, 200)}
    with torch.no_grad():
        for name, keep_idx in keep.items():
            layer = model.get_submodule(name)
            layer.weight.copy_(gwprune.mask_weight(layer.weight, keep_idx))
    converted, report = convert(model)
    assert report.mode == "already pruned"
    assert {layer.name: layer.keep_idx.tolist() for layer in report.converted} == {
        name: keep_idx.tolist() for name, keep_idx in keep.items()
    }
    reasons = {layer.name: layer.reason for layer in report.skipped}
    assert reasons["stem"] == "no pruned groups"
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(converted(x), model(x), rtol=1e-10, atol=1e-12)


def test_convert_layers_masked_by_torch_prune():
    model = small_net()
    prune.apply_mask(model.down, prune.groupwise_mask(model.down.weight, 0.25))
    # A non-group mask still converts exactly: fully masked columns are dropped, and
    # partly masked ones are kept with their zeros.
    element_mask = prune.elementwise_mask(model.head[1].weight, 0.02)
    prune.apply_mask(model.head[1], element_mask)
    # A pruned bias is a computed tensor too; it must be folded in, not read as a parameter.
    torch.nn.utils.prune.l1_unstructured(model.head[1], "bias", amount=0.5)
    converted, report = convert(model)
    by_name = {layer.name: layer for layer in report.converted}
    assert by_name["down"].kept_groups == 18
    expected_kept = int(element_mask.any(dim=0).sum())
    assert expected_kept < 256
    assert by_name["head.1"].kept_groups == expected_kept
    assert not hasattr(converted.down, "weight_mask")
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(converted(x), model(x), rtol=1e-10, atol=1e-12)


def test_global_scope_and_taylor_criterion():
    model = small_net()
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    with pytest.raises(ValueError, match="layer 'stem': criterion 'taylor' needs weight.grad"):
        convert(model, 0.5, criterion="taylor")
    model.train()
    model(x).pow(2).sum().backward()
    model.eval()
    converted, report = convert(
        model, 0.4, criterion="taylor", scope="global", min_keep_per_layer=2
    )
    assert "scope='global'" in report.mode
    total = sum(layer.num_groups for layer in report.converted)
    assert report.kept_groups == int(0.4 * total + 0.5)
    assert min(layer.kept_groups for layer in report.converted) >= 2
    torch.testing.assert_close(
        converted(x), masked_dense_copy(model, report)(x), rtol=1e-10, atol=1e-12
    )


def test_callable_criterion():
    model = small_net()

    def first_groups(weight, grad):
        return -torch.arange(weight[0].numel(), dtype=torch.float32)

    _, report = convert(model, 0.25, criterion=first_groups)
    for layer in report.converted:
        assert layer.keep_idx.tolist() == list(range(layer.kept_groups))
    assert "first_groups" in report.mode


def test_multihead_attention_out_proj_is_skipped():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.attention = nn.MultiheadAttention(16, 2, batch_first=True)
            self.mlp = nn.Linear(16, 16)

        def forward(self, x):
            attended, _ = self.attention(x, x, x, need_weights=False)
            return self.mlp(attended)

    torch.manual_seed(1)
    model = Block().double().eval()
    converted, report = convert(model, 0.5)
    assert [layer.name for layer in report.converted] == ["mlp"]
    (skipped,) = report.skipped
    assert skipped.name == "attention.out_proj" and "MultiheadAttention" in skipped.reason
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    torch.testing.assert_close(converted(x), masked_dense_copy(model, report)(x))


def test_tied_weights_are_skipped_and_shared_modules_replaced_everywhere():
    torch.manual_seed(2)
    shared = nn.Linear(8, 8)
    tied = nn.Linear(8, 8)
    tied.weight = shared.weight
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8)).double()
    model[0] = shared
    model[2] = shared  # one module reachable under two names
    model.add_module("tied", tied)
    model.add_module("free", nn.Linear(8, 8))
    _, report = convert(model, 0.5)
    reasons = {layer.name: layer.reason for layer in report.skipped}
    assert "weight shared with tied.weight" in reasons["0"]
    assert "weight shared with" in reasons["tied"]

    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8)).double()
    model[2] = model[0]
    converted, report = convert(model, 0.5)
    assert [layer.name for layer in report.converted] == ["0"]
    assert converted[0] is converted[2] and isinstance(converted[2], GroupwiseLinear)


def test_report_is_readable():
    _, report = convert(small_net(), 0.5, skip=["stem"])
    text = str(report)
    assert text.startswith("gwprune conversion (prune keep_ratio=0.5, criterion='l2'): 4 layers")
    assert "down" in text and "36/72" in text and "50.0%" in text
    assert "stem" in text and "in skip list" in text
    assert "grouped convolution (groups=4)" in text


def test_to_dense_inverts_convert():
    model = small_net()
    # Folding and dead features reshape layers: tests/test_fold.py, test_dead_features.py.
    converted, report = convert(model, 0.5, fold=False, dead_features=False)
    dense = to_dense(converted)
    assert not any(isinstance(m, (GroupwiseConv2d, GroupwiseLinear)) for m in dense.modules())
    assert isinstance(converted.stem, GroupwiseConv2d)  # to_dense copied
    reference = masked_dense_copy(model, report)
    for name in ("stem", "down", "same", "head.1", "head.3"):
        torch.testing.assert_close(
            dense.get_submodule(name).weight, reference.get_submodule(name).weight, rtol=0, atol=0
        )


def test_state_dict_loads_into_a_model_converted_with_the_same_counts():
    converted, _ = convert(small_net(), 0.5)
    buffer = io.BytesIO()
    torch.save(converted.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(123)
    other, _ = convert(SmallNet().double().eval(), 0.5)  # different weights, same keep counts
    other.load_state_dict(torch.load(buffer, weights_only=True))
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(other(x), converted(x), rtol=0, atol=0)


def test_converted_model_compiles():
    converted, _ = convert(small_net(torch.float32), 0.5)
    x = torch.randn(2, 3, 8, 8)
    expected = converted(x)
    torch._dynamo.reset()
    compiled = torch.compile(converted, backend="aot_eager")
    with torch.inference_mode():
        torch.testing.assert_close(compiled(x), expected)


def test_convert_argument_errors():
    model = small_net()
    with pytest.raises(ValueError, match="keep_ratio must be None or a number in"):
        convert(model, 1.5)
    with pytest.raises(ValueError, match="keep_ratio must be None or a number in"):
        convert(model, 0)
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        convert({"stem": model.stem}, 0.5)
    with pytest.raises(TypeError, match="skip must be an iterable"):
        convert(model, 0.5, skip=[1])
    with pytest.raises(TypeError, match="predicate must be a callable"):
        convert(model, 0.5, predicate="stem")
    with pytest.raises(ValueError, match="scope must be"):
        convert(model, 0.5, scope="everything")
    with pytest.raises(ValueError, match="criterion must be one of"):
        convert(model, 0.5, criterion="l0")


# ---- real architectures ----------------------------------------------------------------


def check_torchvision_model(model, input_shape, skip=(), dtype=torch.float32):
    model = model.to(dtype).eval()
    converted, report = convert(model, 0.5, skip=skip)
    assert report.converted, "nothing was converted"
    reference = masked_dense_copy(model, report)
    x = torch.randn(*input_shape, dtype=dtype)
    with torch.inference_mode():
        actual, expected = converted(x), reference(x)
    tolerance = 1e-5 if dtype == torch.float32 else 1e-12
    assert relative_error(actual, expected) < tolerance
    return converted, report


def test_torchvision_resnet18():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(3)
    converted, report = check_torchvision_model(
        torchvision.models.resnet18(weights=None),
        (1, 3, 64, 64),
        skip=["conv1", "fc"],
        dtype=torch.float64,
    )
    assert len(report.converted) == 19  # 16 3x3 convs + 3 downsample 1x1 convs
    assert {layer.name for layer in report.skipped} == {"conv1", "fc"}
    assert isinstance(converted.layer2[0].downsample[0], GroupwiseConv2d)


def test_torchvision_vgg16():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(4)
    _, report = check_torchvision_model(
        torchvision.models.vgg16(weights=None), (1, 3, 64, 64), skip=["features.0"]
    )
    assert len(report.converted) == 12 + 3
    assert report.kept_weight_params < 0.51 * report.weight_params


def test_torchvision_vit_b_16():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(5)
    model = torchvision.models.vit_b_16(weights=None)
    nn.init.normal_(model.heads.head.weight, std=0.02)  # torchvision zero-inits the head
    converted, report = check_torchvision_model(model, (1, 3, 224, 224))
    skipped = [layer for layer in report.skipped]
    assert len(skipped) == 12
    assert all(layer.name.endswith("self_attention.out_proj") for layer in skipped)
    assert all("MultiheadAttention" in layer.reason for layer in skipped)
    assert len(report.converted) == 1 + 12 * 2 + 1  # conv_proj, two MLP linears per block, head
    assert isinstance(converted.conv_proj, GroupwiseConv2d)


def test_transformers_bert_base():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(6)
    model = transformers.BertModel(transformers.BertConfig()).to(torch.float64).eval()
    converted, report = convert(model, 0.5)
    assert len(report.converted) == 12 * 6 + 1  # q, k, v, attention out, intermediate, out; pooler
    assert report.skipped == []
    reference = masked_dense_copy(model, report)
    input_ids = torch.randint(0, model.config.vocab_size, (1, 16))
    with torch.inference_mode():
        actual = converted(input_ids=input_ids)
        expected = reference(input_ids=input_ids)
    assert relative_error(actual.last_hidden_state, expected.last_hidden_state) < 1e-12
    assert relative_error(actual.pooler_output, expected.pooler_output) < 1e-12


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_converted_model_on_cuda():
    model = small_net(torch.float32)
    converted, report = convert(model, 0.5)
    reference = masked_dense_copy(model, report)
    x = torch.randn(4, 3, 8, 8)
    with torch.inference_mode():
        actual = converted.cuda()(x.cuda()).cpu()
        expected = reference(x)
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4)
