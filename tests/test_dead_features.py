"""gwprune.dead_features through convert: linears narrowed to the features a converted
linear reads, checked against the same conversion without it and against float64
F.linear chains on the masked weights; and the chains it must leave alone."""

import copy
import types

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


# Feed-forwards split over two modules, as BERT's: BertIntermediate computes act(fc1(x)),
# BertOutput reads it as an argument, and the layer that calls both does not trace.
class Intermediate(nn.Module):
    def __init__(self, hidden=16, width=64):
        super().__init__()
        self.dense = nn.Linear(hidden, width)
        self.act = nn.GELU()

    def forward(self, x):
        return self.act(self.dense(x))


class Output(nn.Module):
    def __init__(self, hidden=16, width=64):
        super().__init__()
        self.dense = nn.Linear(width, hidden)
        self.dropout = nn.Dropout(0.1)
        self.norm = nn.LayerNorm(hidden)

    def forward(self, h, x):
        return self.norm(self.dropout(self.dense(h)) + x)


class Block(nn.Module):  # BertLayer: torch.fx cannot trace a forward(*args)
    def __init__(self, hidden=16, width=64, output=Output):
        super().__init__()
        self.intermediate = Intermediate(hidden, width)
        self.output = output(hidden, width)

    def forward(self, *args):
        return self.feed_forward(*args)

    def feed_forward(self, x):
        return self.output(self.intermediate(x), x)


class TracedBlock(Block):  # the same with a forward that traces
    def forward(self, x):
        return self.output(self.intermediate(x), x)


class ScaledBlock(Block):  # an elementwise step between the two modules
    def feed_forward(self, x):
        return self.output(self.intermediate(x) * 0.5, x)


class Stack(nn.Module):
    def __init__(self, block=Block):
        super().__init__()
        self.blocks = nn.ModuleList([block(), block()])

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x


@pytest.mark.parametrize("block", [Block, TracedBlock, ScaledBlock])
def test_a_feed_forward_split_over_two_modules_is_narrowed(block):
    shrunk, report, plain = convert_both(Stack(block), seed=8)
    chains = [(c.consumer, c.producers, c.features, c.width) for c in report.dead_features.shrunk]
    assert chains == [
        (f"blocks.{i}.output.dense", [f"blocks.{i}.intermediate.dense"], 32, 64) for i in (0, 1)
    ]
    for layer in shrunk.blocks:
        assert layer.intermediate.dense.out_features == 32 == layer.output.dense.in_features
        assert layer.output.dense.backend == "dense"
    check_same_function(shrunk, plain, torch.randn(3, 5, 16, dtype=torch.float64))


class ResidualBlock(Block):  # intermediate's features also go around output: none is dead
    def __init__(self):
        super().__init__(16, 16)

    def feed_forward(self, x):
        h = self.intermediate(x)
        return self.output(h, x) + h


class PassedTwiceBlock(Block):  # output(h, h): the features also feed output's residual
    def __init__(self):
        super().__init__(16, 16)

    def feed_forward(self, x):
        h = self.intermediate(x)
        return self.output(h, h)


class ReadTwiceOutput(Output):  # output's dense is not the only reader of h
    def forward(self, h, x):
        return self.norm(self.dense(h) + x + h.mean(-1, keepdim=True))


class NormFirstOutput(Output):  # a LayerNorm mixes the features before output's dense
    def __init__(self, hidden, width):
        super().__init__(hidden, width)
        self.pre_norm = nn.LayerNorm(width)

    def forward(self, h, x):
        return self.norm(self.dense(self.pre_norm(h)) + x)


class TransposedBlock(Block):  # a transpose is no elementwise step
    def feed_forward(self, x):
        h = self.intermediate(x).transpose(0, 1)
        return self.output(h, x.transpose(0, 1)).transpose(0, 1)


class CalledTwiceBlock(Block):  # intermediate's second call reads every feature
    def feed_forward(self, x):
        return self.output(self.intermediate(x), x) + self.intermediate(x).mean(-1, keepdim=True)


class CalledElsewhereBlock(Block):  # forward itself calls intermediate too (not traceable)
    def forward(self, *args):
        return self.feed_forward(*args) + self.intermediate(args[0]).mean(-1, keepdim=True)


class GetattrBlock(Block):  # reaches intermediate by a computed name
    def forward(self, *args):
        other = getattr(self, "inter" + "mediate")(args[0])
        return self.feed_forward(*args) + other.mean(-1, keepdim=True)


class StoringBlock(Block):  # tracing feed_forward would set an attribute of the model
    def feed_forward(self, x):
        self.last_input = x
        return self.output(self.intermediate(x), x)


def _patched_block():  # the instance's feed_forward is not the class's
    block = Block(16, 16)
    block.feed_forward = types.MethodType(ResidualBlock.feed_forward, block)
    return block


def _hooked_block():
    block = Block()
    block.output.register_forward_pre_hook(lambda module, args: (args[0].flip(-1), args[1]))
    return block


@pytest.mark.parametrize(
    "block",
    [
        ResidualBlock,
        PassedTwiceBlock,
        lambda: Block(output=ReadTwiceOutput),
        lambda: Block(output=NormFirstOutput),
        TransposedBlock,
        CalledTwiceBlock,
        CalledElsewhereBlock,
        GetattrBlock,
        StoringBlock,
        _patched_block,
        _hooked_block,  # the hook passes output other features than traced
    ],
)
def test_split_feed_forwards_that_do_not_qualify_are_left_alone(block):
    shrunk, report, plain = convert_both(Stack(block), seed=9)
    assert report.dead_features.shrunk == []
    for layer, plain_layer in zip(shrunk.blocks, plain.blocks, strict=True):
        assert layer.intermediate.dense.out_features == plain_layer.intermediate.dense.out_features
    assert not hasattr(shrunk.blocks[0], "last_input")
    check_same_function(shrunk, plain, torch.randn(3, 5, 16, dtype=torch.float64))


def masked_dense(model, report):
    """``model`` with every layer that convert pruned masked as it pruned it."""
    reference = copy.deepcopy(model)
    with torch.no_grad():
        for layer in report.converted:
            linear = reference.get_submodule(layer.name)
            linear.weight.copy_(gwprune.mask_weight(linear.weight, layer.keep_idx))
    return reference


@pytest.mark.parametrize("chunk_size", [0, 4])  # apply_chunking_to_forward splits or not
def test_transformers_bert_feed_forwards_are_narrowed(chunk_size):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(10)
    config = transformers.BertConfig(
        hidden_size=64,
        num_hidden_layers=2,
        intermediate_size=256,
        num_attention_heads=4,
        vocab_size=100,
        max_position_embeddings=32,
        chunk_size_feed_forward=chunk_size,
    )
    model = transformers.BertModel(config).double().eval()
    shrunk, report = gwprune.convert(model, 0.5)
    kept = {layer.name: layer.kept_groups for layer in report.converted}
    chains = [(c.consumer, c.producers, c.features, c.width) for c in report.dead_features.shrunk]
    assert chains == [
        (
            f"encoder.layer.{i}.output.dense",
            [f"encoder.layer.{i}.intermediate.dense"],
            kept[f"encoder.layer.{i}.output.dense"],
            256,
        )
        for i in (0, 1)
    ]
    for i, layer in enumerate(shrunk.encoder.layer):
        features = kept[f"encoder.layer.{i}.output.dense"]
        assert layer.intermediate.dense.out_features == features == 128
        assert layer.intermediate.dense.weight.shape[0] == features
        assert layer.output.dense.in_features == features
        assert layer.output.dense.backend == "dense"
    ids = torch.randint(0, 100, (2, 12))
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, 9:] = 0
    reference = masked_dense(model, report)
    with torch.no_grad():
        expected = reference(ids, attention_mask=mask).last_hidden_state
        for result in (shrunk, gwprune.to_dense(shrunk)):
            torch.testing.assert_close(
                result(ids, attention_mask=mask).last_hidden_state,
                expected,
                rtol=1e-10,
                atol=1e-10,
            )
