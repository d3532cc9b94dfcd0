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
