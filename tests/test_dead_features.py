"""gwprune.dead_features through convert: linears narrowed to the features a converted
linear reads, checked against the same conversion without it and against float64
F.linear chains on the masked weights; and the chains it must leave alone."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import gwprune
from gwprune import GroupwiseLinear


class MLP(nn.Module):
    def __init__(self, width=64, act=None):
        super().__init__()
        self.fc1 = nn.Linear(16, width)
        self.act = act or nn.GELU()
        self.fc2 = nn.Linear(width, 16)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class GatedMLP(nn.Module):  # Llama's MLP
    def __init__(self):
        super().__init__()
        self.gate = nn.Linear(16, 48, bias=False)
        self.up = nn.Linear(16, 48, bias=False)
        self.down = nn.Linear(48, 16, bias=False)
        self.act = nn.SiLU()

    def forward(self, x):
        return self.down(self.act(self.gate(x)) * self.up(x))


class ScaledDropoutMLP(nn.Module):  # numbers, dropout and a functional activation on the way
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(16, 40)
        self.drop = nn.Dropout(0.1)
        self.fc2 = nn.Linear(40, 8)

    def forward(self, x):
        return self.fc2(self.drop(F.relu(self.fc1(x)) * 0.5 + 1.0))


class Residual(nn.Module):  # fc1's features also go around fc2: none is dead
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(16, 16)
        self.fc2 = nn.Linear(16, 16)

    def forward(self, x):
        h = F.gelu(self.fc1(x))
        return self.fc2(h) + h


class NormBetween(nn.Module):  # LayerNorm mixes features: not elementwise
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(16, 32)
        self.norm = nn.LayerNorm(32)
        self.fc2 = nn.Linear(32, 8)

    def forward(self, x):
        return self.fc2(self.norm(self.fc1(x)))


class InputGated(nn.Module):  # x itself multiplies fc1's features
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(16, 16)
        self.fc2 = nn.Linear(16, 8)

    def forward(self, x):
        return self.fc2(self.fc1(x) * x)


class CalledTwice(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(16, 16)
        self.fc2 = nn.Linear(16, 16)

    def forward(self, x):
        return self.fc2(self.fc2(F.relu(self.fc1(x))))


def convert_both(model, seed=0):
    torch.manual_seed(seed)
    model = model.double().eval()
    shrunk, report = gwprune.convert(model, 0.5)
    plain, plain_report = gwprune.convert(model, 0.5, dead_features=False)
    assert plain_report.dead_features is None
    return shrunk, report, plain


def check_same_function(shrunk, plain, x):
    with torch.no_grad():
        expected = plain(x)
        torch.testing.assert_close(shrunk(x), expected, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(gwprune.to_dense(shrunk)(x), expected, rtol=1e-12, atol=1e-12)


def test_mlp_producer_computes_only_the_features_the_consumer_reads():
    torch.manual_seed(1)
    model = MLP().double().eval()
    shrunk, report = gwprune.convert(model, 0.5)
    plain, _ = gwprune.convert(model, 0.5, dead_features=False)
    (chain,) = report.dead_features.shrunk
    assert (chain.consumer, chain.producers, chain.features, chain.width) == (
        "fc2",
        ["fc1"],
        32,
        64,
    )
    assert "fc2 reads 32 of 64 features: fc1 computes only those" in str(report)
    assert isinstance(shrunk.fc1, GroupwiseLinear) and shrunk.fc1.out_features == 32
    assert shrunk.fc1.activation == "gelu"  # folded before, kept
    assert shrunk.fc2.in_features == 32 and shrunk.fc2.backend == "dense"
    assert shrunk.fc2.num_kept == 32
    x = torch.randn(5, 16, dtype=torch.float64)
    check_same_function(shrunk, plain, x)
    # Against float64 F.linear on the original weights masked as convert pruned them.
    keep = {layer.name: layer.keep_idx for layer in report.converted}
    hidden = F.gelu(F.linear(x, gwprune.mask_weight(model.fc1.weight, keep["fc1"]), model.fc1.bias))
    ref = F.linear(hidden, gwprune.mask_weight(model.fc2.weight, keep["fc2"]), model.fc2.bias)
    with torch.no_grad():
        torch.testing.assert_close(shrunk(x), ref, rtol=1e-12, atol=1e-12)


def test_gated_mlp_narrows_both_gate_and_up():
    shrunk, report, plain = convert_both(GatedMLP(), seed=2)
    (chain,) = report.dead_features.shrunk
    assert chain.consumer == "down" and sorted(chain.producers) == ["gate", "up"]
    assert shrunk.gate.out_features == shrunk.up.out_features == 24 == shrunk.down.in_features
    check_same_function(shrunk, plain, torch.randn(7, 16, dtype=torch.float64))


def test_numbers_dropout_and_functional_activations_are_elementwise():
    shrunk, report, plain = convert_both(ScaledDropoutMLP(), seed=3)
    assert [c.consumer for c in report.dead_features.shrunk] == ["fc2"]
    assert shrunk.fc1.out_features == 20
    check_same_function(shrunk, plain, torch.randn(3, 16, dtype=torch.float64))


@pytest.mark.parametrize("model", [Residual, NormBetween, InputGated, CalledTwice])
def test_chains_that_do_not_qualify_are_left_alone(model):
    shrunk, report, plain = convert_both(model(), seed=4)
    assert report.dead_features.shrunk == []
    assert str(report.dead_features) == ""
    assert shrunk.fc1.out_features == plain.fc1.out_features
    check_same_function(shrunk, plain, torch.randn(4, 16, dtype=torch.float64))


def test_a_producer_left_dense_is_narrowed_too():
    torch.manual_seed(5)
    model = MLP(act=nn.ReLU()).double().eval()
    shrunk, report = gwprune.convert(model, 0.5, skip=["fc1"])
    plain, _ = gwprune.convert(model, 0.5, skip=["fc1"], dead_features=False)
    assert type(shrunk.fc1) is nn.Linear and shrunk.fc1.out_features == 32
    check_same_function(shrunk, plain, torch.randn(5, 16, dtype=torch.float64))


def test_dead_features_flag_is_checked():
    with pytest.raises(TypeError, match="dead_features"):
        gwprune.convert(MLP(), 0.5, dead_features="yes")


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_transformers_mlps_are_narrowed(family):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(6)
    if family == "gpt2":
        config = transformers.GPT2Config(
            n_layer=2, n_embd=64, n_head=4, n_positions=32, vocab_size=100
        )
        model = transformers.GPT2Model(config)
    else:
        config = transformers.LlamaConfig(
            num_hidden_layers=2,
            hidden_size=64,
            intermediate_size=176,
            num_attention_heads=4,
            num_key_value_heads=4,
            vocab_size=100,
        )
        model = transformers.LlamaModel(config)
    shrunk, report, plain = convert_both(model, seed=7)
    assert len(report.dead_features.shrunk) == 2  # one MLP per layer
    ids = torch.randint(0, 100, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(
            shrunk(ids).last_hidden_state, plain(ids).last_hidden_state, rtol=1e-10, atol=1e-10
        )
