"""The layers of ``gwprune bench --host-overhead`` and the calls timed on each.

Every layer is timed five ways at the same shapes: the dense PyTorch op (``F.conv2d`` /
``F.linear``), gwprune's raw op (``gwprune.ops.conv2d(x, weight, keep_idx)``, after its
first call, which fills the pack cache), the packed op (``ops.conv2d_packed`` on a weight
packed once) and the module (``GroupwiseConv2d`` / ``GroupwiseLinear`` forward). Conv
layers run NCHW and channels_last, every layer with and without bias, keep 0.5.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

import gwprune

KEEP = 0.5
CALLS = ("dense", "raw", "packed", "module")


@dataclass(frozen=True)
class HostLayer:
    name: str
    kind: str  # "conv" or "linear"
    batch: int
    in_features: int  # channels for conv
    out_features: int
    image: int = 0  # conv input height = width
    kernel: int = 0

    def label(self) -> str:
        if self.kind == "conv":
            return (
                f"conv {self.batch}x{self.in_features}x{self.image}x{self.image} "
                f"-> {self.out_features}, {self.kernel}x{self.kernel}"
            )
        return f"linear {self.batch}x{self.in_features} -> {self.out_features}"


GPU_LAYERS = (
    HostLayer("seed-conv", "conv", 64, 512, 512, image=28, kernel=3),
    HostLayer("bert-ffn", "linear", 8192, 768, 3072),
    HostLayer("conv-n1-14x14", "conv", 1, 512, 512, image=14, kernel=3),
)
# A CPU call is synchronous, its compute counted in its time: small layers keep that
# compute small.
CPU_LAYERS = (
    HostLayer("conv-tiny", "conv", 2, 16, 16, image=8, kernel=3),
    HostLayer("linear-tiny", "linear", 16, 64, 64),
    HostLayer("conv-n1-tiny", "conv", 1, 32, 32, image=4, kernel=3),
)
# The batch-1 layer whose eager latency is compared with dense (targets in host_report.py).
LATENCY_LAYER = {"cuda": GPU_LAYERS[2], "cpu": CPU_LAYERS[2]}


@dataclass(frozen=True)
class Variant:
    layout: str  # "nchw", "channels_last" (conv) or "-" (linear)
    bias: bool

    def label(self) -> str:
        return f"{self.layout}, {'bias' if self.bias else 'no bias'}"


def variants(layer: HostLayer) -> list[Variant]:
    layouts = ("nchw", "channels_last") if layer.kind == "conv" else ("-",)
    return [Variant(layout, bias) for layout in layouts for bias in (True, False)]


@dataclass
class HostSetup:
    """The tensors of one layer and variant, and a zero-argument callable per call kind."""

    calls: dict[str, Callable[[], torch.Tensor]]
    reference: torch.Tensor  # float64, on the layer's device: the masked dense layer


def build(
    layer: HostLayer, variant: Variant, dtype: torch.dtype, device: torch.device, seed: int
) -> HostSetup:
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0):
        return (torch.randn(*shape, generator=generator) * scale).to(device=device, dtype=dtype)

    if layer.kind == "conv":
        groups = layer.in_features * layer.kernel * layer.kernel
        x = randn(layer.batch, layer.in_features, layer.image, layer.image)
        if variant.layout == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
        weight = randn(layer.out_features, layer.in_features, layer.kernel, layer.kernel,
                       scale=groups**-0.5)  # fmt: skip
    else:
        groups = layer.in_features
        x = randn(layer.batch, layer.in_features)
        weight = randn(layer.out_features, layer.in_features, scale=groups**-0.5)
    keep = torch.randperm(groups, generator=generator)[: max(1, int(groups * KEEP))].to(device)
    bias = randn(layer.out_features) if variant.bias else None
    masked = gwprune.mask_weight(weight, keep)

    if layer.kind == "conv":
        padding = layer.kernel // 2
        memory_format = (
            torch.channels_last if variant.layout == "channels_last" else torch.contiguous_format
        )
        packed = gwprune.pack_conv2d_weight(weight, keep, memory_format)
        module = gwprune.GroupwiseConv2d.from_dense(
            _dense_conv(weight, bias, padding), keep, memory_format
        )
        module = module.to(device=device, dtype=dtype).eval()
        calls = {
            "dense": lambda: F.conv2d(x, masked, bias, 1, padding),
            "raw": lambda: gwprune.ops.conv2d(x, weight, keep, bias, padding=padding),
            "packed": lambda: gwprune.ops.conv2d_packed(x, packed, bias, 1, padding),
            "module": lambda: module(x),
        }
        reference = F.conv2d(x.double(), masked.double(), _double(bias), 1, padding)
    else:
        packed = gwprune.pack_linear_weight(weight, keep)
        module = gwprune.GroupwiseLinear.from_dense(_dense_linear(weight, bias), keep)
        module = module.to(device=device, dtype=dtype).eval()
        calls = {
            "dense": lambda: F.linear(x, masked, bias),
            "raw": lambda: gwprune.ops.linear(x, weight, keep, bias),
            "packed": lambda: gwprune.ops.linear_packed(x, packed, bias),
            "module": lambda: module(x),
        }
        reference = F.linear(x.double(), masked.double(), _double(bias))
    return HostSetup(calls, reference)


def _double(bias):
    return None if bias is None else bias.double()


def _dense_conv(weight, bias, padding) -> torch.nn.Conv2d:
    out_channels, in_channels, kh, kw = weight.shape
    conv = torch.nn.Conv2d(in_channels, out_channels, (kh, kw), padding=padding,
                           bias=bias is not None)  # fmt: skip
    with torch.no_grad():
        conv.weight.copy_(weight.float().cpu())
        if bias is not None:
            conv.bias.copy_(bias.float().cpu())
    return conv


def _dense_linear(weight, bias) -> torch.nn.Linear:
    linear = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        linear.weight.copy_(weight.float().cpu())
        if bias is not None:
            linear.bias.copy_(bias.float().cpu())
    return linear
