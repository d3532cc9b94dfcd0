"""BatchNorm folding and activation fusion at conversion, against the masked dense model
in eval mode (float64); the fused activations of the packed ops; bad activation names."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from conftest import DTYPES, assert_matches, cuda_only, poisoned_outputs, precision_flags

import gwprune
from gwprune.activation import ACTIVATIONS
from gwprune.convert import convert, masked_layer_weight, to_dense
from gwprune.nn import GroupwiseConv2d, GroupwiseLinear

DENSE_ACTIVATIONS = {
    "relu": F.relu,
    "relu6": F.relu6,
    "silu": F.silu,
    "gelu": F.gelu,
    "gelu_tanh": lambda t: F.gelu(t, approximate="tanh"),
}


def randomize_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """BatchNorms with statistics and affine parameters far from the identity."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            size = module.num_features
            with torch.no_grad():
                if module.running_mean is not None:
                    module.running_mean.copy_(torch.randn(size, generator=generator))
                    module.running_var.copy_(torch.rand(size, generator=generator) * 3 + 0.1)
                if module.affine:
                    module.weight.copy_(torch.randn(size, generator=generator))
                    module.bias.copy_(torch.randn(size, generator=generator))
    return model


def masked_reference(model: nn.Module, report) -> nn.Module:
    """The model (eval mode, unfolded) with the converted layers' pruned groups zeroed."""
    import copy

    masked = copy.deepcopy(model).eval()
    with torch.no_grad():
        for layer in report.converted:
            module = masked.get_submodule(layer.name)
            module.weight.copy_(masked_layer_weight(module, layer.keep_idx))
    return masked


def check_against_masked(model, x, keep=0.5, **kwargs):
    model = randomize_norms(model.double()).eval()
    converted, report = convert(model, keep, **kwargs)
    ref = masked_reference(model, report)(x)
    with torch.inference_mode():
        assert_matches(converted(x), ref, "fp64", "folded model")
        assert_matches(to_dense(converted)(x), ref, "fp64", "to_dense of the folded model")
    return converted, report


class ConvBnAct(nn.Module):
    """Sequential-style chains whose modules are each called once: nn.Identity replacement."""

    def __init__(self, act: nn.Module):
        super().__init__()
        self.conv = nn.Conv2d(5, 7, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(7)
        self.act = act
        self.conv2 = nn.Conv2d(7, 6, (2, 3), stride=2)
        self.bn2 = nn.BatchNorm2d(6, affine=False)

    def forward(self, x):
        return self.bn2(self.conv2(self.act(self.bn(self.conv(x)))))


@pytest.mark.parametrize(
    "act,name",
    [
        (nn.ReLU(inplace=True), "relu"),
        (nn.ReLU6(), "relu6"),
        (nn.SiLU(), "silu"),
        (nn.GELU(), "gelu"),
        (nn.GELU(approximate="tanh"), "gelu_tanh"),
    ],
)
def test_conv_bn_activation_folds_into_the_layer(act, name):
    x = torch.randn(2, 5, 9, 7, dtype=torch.float64)
    converted, report = check_against_masked(ConvBnAct(act), x)
    folded = {layer.name: (layer.batchnorm, layer.activation) for layer in report.folding.folded}
    assert folded == {"conv": ("bn", name), "conv2": ("bn2", None)}
    assert isinstance(converted.bn, nn.Identity) and isinstance(converted.act, nn.Identity)
    assert isinstance(converted.bn2, nn.Identity)
    assert converted.conv.activation == name and converted.conv.bias is not None
    assert any("replaced by nn.Identity" in note for note in report.folding.notes)
    assert "folded (eval mode)" in str(report)
    dense = to_dense(converted)
    assert isinstance(dense.conv, nn.Sequential) and isinstance(dense.conv[0], nn.Conv2d)


class Functional(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding="same")
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = F.relu(self.bn(self.conv(x)))
        return F.silu(self.fc(x.mean(dim=(2, 3))))


def test_functional_activations_rewrite_the_parent_as_a_graph_module():
    x = torch.randn(3, 3, 6, 5, dtype=torch.float64)
    converted, report = check_against_masked(Functional(), x)
    assert isinstance(converted, torch.fx.GraphModule)
    folded = {layer.name: layer.activation for layer in report.folding.folded}
    assert folded == {"conv": "relu", "fc": "silu"}
    assert any("rewritten as a torch.fx.GraphModule" in note for note in report.folding.notes)


def test_shared_relu_of_torchvision_resnet_blocks():
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.resnet18(num_classes=10)
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    converted, report = check_against_masked(model, x, skip=["conv1", "fc"])
    folded = {layer.name: (layer.batchnorm, layer.activation) for layer in report.folding.folded}
    assert folded["layer1.0.conv1"] == ("layer1.0.bn1", "relu")
    assert folded["layer1.0.conv2"] == ("layer1.0.bn2", None)  # the add comes before the relu
    assert folded["layer2.0.downsample.0"] == ("layer2.0.downsample.1", None)
    assert len(folded) == 16 + 3
    assert type(converted.layer1[0]).__name__ == "BasicBlock"  # a GraphModule named after it
    assert isinstance(converted.layer1[0], torch.fx.GraphModule)


class Residual(nn.Module):
    """conv's output feeds its BatchNorm and the residual add: nothing may be folded."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 1)
        self.bn2 = nn.BatchNorm2d(4, track_running_stats=False)  # batch statistics always

    def forward(self, x):
        y = self.conv(x)
        y = self.bn(y) + y
        return self.bn2(self.conv2(y))


def test_outputs_used_twice_and_batch_statistics_are_not_folded():
    model = randomize_norms(Residual().double()).eval()
    converted, report = convert(model, 0.5)
    assert report.folding.folded == []
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    assert_matches(converted(x), masked_reference(model, report)(x), "fp64", "unfolded")


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            return self.bn(self.conv(x))
        return self.conv(x)


def test_untraceable_parent_is_reported_and_left_unfolded():
    model = randomize_norms(Untraceable().double()).eval()
    converted, report = convert(model, 0.5)
    assert report.folding.folded == []
    assert "does not trace with torch.fx" in report.folding.notes[0]
    assert "not folded" in str(report)
    x = torch.rand(2, 3, 4, 4, dtype=torch.float64)
    assert_matches(converted(x), masked_reference(model, report)(x), "fp64", "untraceable")


def test_linear_batchnorm1d_gelu_and_fold_false():
    model = nn.Sequential(nn.Linear(11, 9), nn.BatchNorm1d(9), nn.GELU(), nn.Linear(9, 3))
    x = torch.randn(6, 11, dtype=torch.float64)
    converted, report = check_against_masked(model, x)
    assert [(f.name, f.batchnorm, f.activation) for f in report.folding.folded] == [
        ("0", "1", "gelu")
    ]
    assert isinstance(converted[1], nn.Identity)
    unfolded, report = convert(randomize_norms(model.double()).eval(), 0.5, fold=False)
    assert report.folding is None and isinstance(unfolded[1], nn.BatchNorm1d)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_packed_ops_apply_the_activation(activation, layout):
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(2, 6, 5, 7, generator=generator, dtype=torch.float64)
    x = x.contiguous(memory_format=layout) * 3
    weight = torch.randn(5, 6, 3, 3, generator=generator, dtype=torch.float64)
    bias = torch.randn(5, generator=generator, dtype=torch.float64)
    keep = torch.randperm(54, generator=generator)[:23]
    packed = gwprune.pack_conv2d_weight(weight, keep, layout)
    out = gwprune.ops.conv2d_packed(x, packed, bias, 1, 1, activation=activation)
    dense = F.conv2d(x, gwprune.mask_weight(weight, keep), bias, 1, 1)
    assert_matches(out, DENSE_ACTIVATIONS[activation](dense), "fp64", f"conv {activation}")
    features = torch.randn(3, 4, 6, generator=generator, dtype=torch.float64) * 3
    linear_weight = torch.randn(7, 6, generator=generator, dtype=torch.float64)
    packed_linear = gwprune.pack_linear_weight(linear_weight, keep[keep < 6])
    out = gwprune.ops.linear_packed(features, packed_linear, None, activation=activation)
    dense = F.linear(features, gwprune.mask_weight(linear_weight, keep[keep < 6]))
    assert_matches(out, DENSE_ACTIVATIONS[activation](dense), "fp64", f"linear {activation}")


def test_module_activation_attribute_and_bad_names():
    conv = nn.Conv2d(3, 4, 3).double()
    module = GroupwiseConv2d.from_dense(conv, torch.tensor([0, 4, 8, 13]))
    module.activation = "relu6"
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64) * 4
    expected = F.relu6(module.to_dense()[0](x))
    assert_matches(module(x), expected, "fp64", "module relu6")
    module.set_backend("dense")
    assert_matches(module(x), expected, "fp64", "module relu6, dense backend")
    assert "activation='relu6'" in repr(module)
    with pytest.raises(ValueError, match="activation must be None or one of"):
        GroupwiseLinear(4, 3, 2, activation="tanh")
    with pytest.raises(TypeError, match="activation must be None or one of"):
        gwprune.ops.linear_packed(
            torch.randn(2, 4),
            gwprune.pack_linear_weight(torch.randn(3, 4), torch.tensor([1])),
            activation=F.relu,
        )
    with pytest.raises(ValueError, match="activation must be None or one of"):
        gwprune.ops.conv2d_packed(
            torch.randn(1, 3, 4, 4),
            gwprune.pack_conv2d_weight(torch.randn(2, 3, 1, 1), torch.tensor([1])),
            activation="sigmoid",
        )


# ---- the fused activation on CUDA (the cuBLASLt epilogues and the in-place pass) ----------


@cuda_only
@pytest.mark.parametrize("precision", ["fp32", "tf32", "fp16", "bf16"])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_cuda_packed_ops_fuse_the_activation(precision, layout, with_bias, activation):
    dtype = DTYPES[precision]
    generator = torch.Generator().manual_seed(11)
    x = torch.randn(3, 24, 9, 11, generator=generator) * 2
    weight = torch.randn(40, 24, 3, 3, generator=generator) / 8
    bias = torch.randn(40, generator=generator) if with_bias else None
    keep = torch.randperm(24 * 9, generator=generator)[:100]
    cast = [t if t is None else t.to(dtype) for t in (x, weight, bias)]
    ref = F.conv2d(cast[0].double(), gwprune.mask_weight(cast[1].double(), keep), None, 1, 1)
    if with_bias:
        ref = ref + cast[2].double().view(1, -1, 1, 1)
    ref = DENSE_ACTIVATIONS[activation](ref)
    xc = cast[0].cuda().contiguous(memory_format=layout)
    packed = gwprune.pack_conv2d_weight(cast[1].cuda(), keep.cuda(), layout)
    bias_c = None if bias is None else cast[2].cuda()
    with precision_flags(precision), poisoned_outputs("cuda"):
        out = gwprune.ops.conv2d_packed(xc, packed, bias_c, 1, 1, activation=activation)
    assert_matches(out, ref, precision, f"cuda conv {activation} {precision} {layout}")
    features = torch.randn(5, 7, 48, generator=generator).to(dtype)
    linear_weight = (torch.randn(72, 48, generator=generator) / 4).to(dtype)
    linear_bias = torch.randn(72, generator=generator).to(dtype) if with_bias else None
    kept = torch.randperm(48, generator=generator)[:21]
    ref = F.linear(features.double(), gwprune.mask_weight(linear_weight.double(), kept))
    if with_bias:
        ref = ref + linear_bias.double()
    ref = DENSE_ACTIVATIONS[activation](ref)
    packed_linear = gwprune.pack_linear_weight(linear_weight.cuda(), kept.cuda())
    bias_c = None if linear_bias is None else linear_bias.cuda()
    with precision_flags(precision), poisoned_outputs("cuda"):
        out = gwprune.ops.linear_packed(
            features.cuda(), packed_linear, bias_c, activation=activation
        )
    assert_matches(out, ref, precision, f"cuda linear {activation} {precision}")
