"""transformers' Conv1D (GPT-2: weight [in, out], y = x @ W + b) converts like nn.Linear."""

import pytest
import torch
import torch.nn as nn
from conftest import assert_matches

from gwprune.convert import convert, masked_layer_weight, to_dense
from gwprune.nn import GroupwiseLinear

transformers = pytest.importorskip("transformers")
from transformers.pytorch_utils import Conv1D  # noqa: E402


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.c_fc = Conv1D(21, 13)  # nf=21 outputs, nx=13 inputs
        self.c_proj = Conv1D(13, 21)

    def forward(self, x):
        return self.c_proj(torch.tanh(self.c_fc(x)))


def masked_model(model, report):
    masked = Block().double()
    masked.load_state_dict(model.state_dict())
    with torch.no_grad():
        for layer in report.converted:
            module = masked.get_submodule(layer.name)
            module.weight.copy_(masked_layer_weight(module, layer.keep_idx))
    return masked.eval()


@pytest.mark.parametrize("criterion", ["l1", "l2"])
def test_conv1d_converts_like_linear(criterion):
    torch.manual_seed(1)
    model = Block().double()
    for module in model.modules():
        if isinstance(module, Conv1D):
            nn.init.normal_(module.bias)
    converted, report = convert(model, 0.5, criterion=criterion)
    assert [(layer.name, layer.kind) for layer in report.converted] == [
        ("c_fc", "Conv1D"),
        ("c_proj", "Conv1D"),
    ]
    assert isinstance(converted.c_fc, GroupwiseLinear)
    # Groups are the inputs (rows of the stored [in, out] weight), scored as a linear's columns.
    order = 1 if criterion == "l1" else 2
    scores = torch.linalg.vector_norm(model.c_fc.weight.detach(), ord=order, dim=1)
    count = report.converted[0].kept_groups
    expected = torch.sort(torch.argsort(scores, descending=True, stable=True)[:count]).values
    assert torch.equal(report.converted[0].keep_idx, expected)
    assert report.converted[0].num_groups == 13 and report.converted[0].weight_params == 13 * 21
    x = torch.randn(3, 5, 13, dtype=torch.float64)
    ref = masked_model(model, report)(x)
    assert_matches(converted(x), ref, "fp64", "converted Conv1D block")
    dense = to_dense(converted)
    assert isinstance(dense.c_fc, nn.Linear)
    assert_matches(dense(x), ref, "fp64", "to_dense of the Conv1D block")


def test_conv1d_already_pruned_rows_are_the_pruned_groups():
    model = Block().double()
    with torch.no_grad():
        model.c_fc.weight[[1, 4, 12]] = 0  # inputs 1, 4 and 12 of c_fc
    converted, report = convert(model)
    assert [layer.name for layer in report.converted] == ["c_fc"]
    assert report.converted[0].keep_idx.tolist() == [i for i in range(13) if i not in (1, 4, 12)]
    x = torch.randn(4, 13, dtype=torch.float64)
    assert_matches(converted(x), model(x), "fp64", "already pruned Conv1D")


def test_masked_layer_weight_of_a_conv1d_zeroes_rows():
    layer = Conv1D(5, 4)
    masked = masked_layer_weight(layer, torch.tensor([0, 2]))
    assert masked.shape == (4, 5)
    assert torch.equal(masked[[1, 3]], torch.zeros(2, 5))
    assert torch.equal(masked[[0, 2]], layer.weight.detach()[[0, 2]])


def test_gpt2_converts_every_conv1d_and_fuses_gelu_tanh():
    config = transformers.GPT2Config(
        n_layer=2, n_embd=48, n_head=4, vocab_size=97, n_positions=32, attn_implementation="eager"
    )
    torch.manual_seed(0)
    model = transformers.GPT2Model(config).double().eval()
    converted, report = convert(model, 0.5)
    kinds = {layer.kind for layer in report.converted}
    assert kinds == {"Conv1D"} and len(report.converted) == 2 * 4
    fused = {layer.name: layer.activation for layer in report.folding.folded}
    assert fused == {"h.0.mlp.c_fc": "gelu_tanh", "h.1.mlp.c_fc": "gelu_tanh"}
    masked = transformers.GPT2Model(config).double().eval()
    masked.load_state_dict(model.state_dict())
    with torch.no_grad():
        for layer in report.converted:
            module = masked.get_submodule(layer.name)
            module.weight.copy_(masked_layer_weight(module, layer.keep_idx))
    ids = torch.randint(0, 97, (2, 11), generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        ref = masked(input_ids=ids).last_hidden_state
        out = converted(input_ids=ids).last_hidden_state
        dense = to_dense(converted)(input_ids=ids).last_hidden_state
    assert_matches(out, ref, "fp64", "converted GPT-2")
    assert_matches(dense, ref, "fp64", "to_dense of the converted GPT-2")
