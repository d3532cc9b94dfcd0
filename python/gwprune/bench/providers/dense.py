"""Dense baselines: F.conv2d (NCHW and channels_last) and F.linear on the unpruned weight.

A dense kernel's time does not depend on which weights are zero, so dense runs once
per workload and precision; plots draw it as a horizontal line.
"""

import torch
import torch.nn.functional as F

from .base import Case, Prepared, Provider


class DenseConv2d(Provider):
    pattern = "dense"
    family = "dense"
    kinds = ("conv",)
    keep_independent = True
    # cuDNN may pick Winograd or FFT algorithms (it does for the seed's 3x3 layer in fp32).
    reorders_sums = True

    def __init__(self, channels_last: bool):
        self.channels_last = channels_last
        self.name = "dense-cl" if channels_last else "dense"
        self.note = "F.conv2d, channels_last" if channels_last else "F.conv2d, NCHW"

    def prepare(self, case: Case) -> Prepared:
        layout = torch.channels_last if self.channels_last else torch.contiguous_format
        weight = case.masked_weight("dense").contiguous(memory_format=layout)
        inputs = [x.contiguous(memory_format=layout) for x in case.inputs]
        stride, padding = case.workload.stride, case.workload.padding

        def run(i: int) -> torch.Tensor:
            return F.conv2d(inputs[i], weight, None, stride, padding)

        return Prepared(run, len(inputs))


class DenseLinear(Provider):
    name = "dense"
    pattern = "dense"
    family = "dense"
    kinds = ("linear",)
    keep_independent = True
    note = "F.linear"

    def prepare(self, case: Case) -> Prepared:
        weight = case.masked_weight("dense")
        inputs = case.inputs

        def run(i: int) -> torch.Tensor:
            return F.linear(inputs[i], weight)

        return Prepared(run, len(inputs))


class AnchorConv2d(Provider):
    """The equal-FLOPs anchor: cuDNN dense conv on the first round(keep * C) input channels
    (the slices are made untimed), as a channel-pruned model would run the layer."""

    pattern = "channel"
    family = "anchor"
    kinds = ("conv",)
    reorders_sums = True  # cuDNN may pick Winograd, as for DenseConv2d

    def __init__(self, channels_last: bool):
        self.channels_last = channels_last
        self.name = "anchor-cudnn-cl" if channels_last else "anchor-cudnn"
        layout = "channels_last" if channels_last else "NCHW"
        self.note = f"F.conv2d on round(keep * C) input channels, {layout}"

    def prepare(self, case: Case) -> Prepared:
        layout = torch.channels_last if self.channels_last else torch.contiguous_format
        channels = case.anchor_channels()
        weight = case.data.weight[:, :channels].contiguous(memory_format=layout)
        inputs = case.operand_sets(lambda x: x[:, :channels].contiguous(memory_format=layout))
        stride, padding = case.workload.stride, case.workload.padding

        def run(i: int) -> torch.Tensor:
            return F.conv2d(inputs[i], weight, None, stride, padding)

        return Prepared(run, len(inputs))
