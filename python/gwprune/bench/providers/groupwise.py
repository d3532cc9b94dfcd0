"""Group-wise providers: gwprune's packed ops, the seed's naive path, and the GEMM floor.

All use the same kept groups (Case.keep_idx) and are checked against the float64
output of the group-masked dense weight.
"""

import torch
import torch.nn.functional as F

import gwprune
from gwprune import reference

from .base import Case, Prepared, Provider


def _path_note(case: Case) -> str:
    if case.device.type != "cuda":
        return "CPU: gwprune runs its reference path"
    if not gwprune.info()["CUDA kernels compiled"]:
        return "gwprune CUDA kernels not compiled: this is the reference path on the GPU"
    return "gwprune CUDA kernels"


class GroupPacked(Provider):
    """gwprune.ops.conv2d_packed / linear_packed on a weight packed once (packing untimed)."""

    pattern = "group"
    family = "group-wise"

    def __init__(self, channels_last: bool):
        self.channels_last = channels_last
        self.name = "group-packed-cl" if channels_last else "group-packed"
        self.kinds = ("conv",) if channels_last else ("conv", "linear")

    def prepare(self, case: Case) -> Prepared:
        weight = case.masked_weight("group")
        note = _path_note(case)
        if case.workload.kind == "linear":
            packed = gwprune.pack_linear_weight(weight, case.keep_idx())
            inputs = case.inputs

            def run_linear(i: int) -> torch.Tensor:
                return gwprune.ops.linear_packed(inputs[i], packed)

            return Prepared(run_linear, len(inputs), note=note)

        layout = torch.channels_last if self.channels_last else torch.contiguous_format
        packed = gwprune.pack_conv2d_weight(weight, case.keep_idx(), layout)
        inputs = [x.contiguous(memory_format=layout) for x in case.inputs]
        stride, padding = case.workload.stride, case.workload.padding

        def run_conv(i: int) -> torch.Tensor:
            return gwprune.ops.conv2d_packed(inputs[i], packed, None, stride, padding)

        return Prepared(run_conv, len(inputs), note=note)


class GroupNaive(Provider):
    """The seed's unfused Algorithms 1-2 on the device: F.unfold + index_select + matmul."""

    name = "group-naive"
    pattern = "group"
    family = "group-wise"
    note = "gwprune.reference: unfold + index_select + matmul, all timed"

    def prepare(self, case: Case) -> Prepared:
        inputs = case.inputs
        workload = case.workload
        if workload.kind == "linear":
            packed = gwprune.pack_linear_weight(case.masked_weight("group"), case.keep_idx())

            def run_linear(i: int) -> torch.Tensor:
                return reference.linear_packed(inputs[i], packed.weight, packed.feature_idx, None)

            return Prepared(run_linear, len(inputs))

        packed = gwprune.pack_conv2d_weight(case.masked_weight("group"), case.keep_idx())
        kernel = packed.kernel_size
        stride, padding = (workload.stride,) * 2, (workload.padding,) * 2

        def run_conv(i: int) -> torch.Tensor:
            return reference.conv2d_packed(
                inputs[i], packed.weight, packed.group_idx, None, kernel, stride, padding, (1, 1)
            )

        return Prepared(run_conv, len(inputs))


def _compacted_columns(case: Case, x: torch.Tensor) -> torch.Tensor:
    """[N, K', L]: the kept rows of the im2col matrix of one conv input."""
    workload = case.workload
    cols = F.unfold(x, workload.kernel_size, padding=workload.padding, stride=workload.stride)
    return cols.index_select(1, case.keep_idx()).contiguous()


def _conv_output(case: Case, out: torch.Tensor) -> torch.Tensor:
    """[N, Cout, L] -> [N, Cout, H', W'] (a view)."""
    return out.reshape(out.shape[0], out.shape[1], *case.workload.output_hw)


def _flat_conv_output(case: Case, out: torch.Tensor) -> torch.Tensor:
    """[Cout, N*L] -> [N, Cout, H', W'] (a permuted view)."""
    n = case.workload.batch
    return out.reshape(out.shape[0], n, *case.workload.output_hw).permute(1, 0, 2, 3)


class GroupFloor(Provider):
    """Only the GEMM on an operand compacted beforehand: what any group-wise kernel must pay.

    conv: packed weight [Cout, K'] x pre-gathered [N, K', L] (batched; writes NCHW).
    linear: pre-gathered x [rows, K'] x packed weight^T.
    """

    name = "floor"
    pattern = "group"
    family = "floor"
    note = "GEMM only; im2col + gather done beforehand, untimed"

    def prepare(self, case: Case) -> Prepared:
        packed_weight = case.masked_weight("group").reshape(case.matrix_shape)
        packed_weight = packed_weight.index_select(1, case.keep_idx()).contiguous()
        if case.workload.kind == "linear":
            operands = case.operand_sets(lambda x: x.index_select(1, case.keep_idx()).contiguous())

            def run_linear(i: int) -> torch.Tensor:
                return F.linear(operands[i], packed_weight)

            return Prepared(run_linear, len(operands))

        operands = case.operand_sets(lambda x: _compacted_columns(case, x))

        def run_conv(i: int) -> torch.Tensor:
            return torch.matmul(packed_weight, operands[i])

        return Prepared(run_conv, len(operands), to_output=lambda out: _conv_output(case, out))


class GroupFloorFlat(Provider):
    """conv only: one flat GEMM [Cout, K'] x [K', N*L] (output left as [Cout, N*L]).

    A second floor because in fp32/TF32 one flat GEMM can beat the batched per-image form.
    """

    name = "floor-flat"
    pattern = "group"
    family = "floor"
    kinds = ("conv",)
    note = "one flat GEMM; im2col + gather + NCHW reshape untimed"

    def prepare(self, case: Case) -> Prepared:
        packed_weight = case.masked_weight("group").reshape(case.matrix_shape)
        packed_weight = packed_weight.index_select(1, case.keep_idx()).contiguous()

        def flat_operand(x: torch.Tensor) -> torch.Tensor:
            cols = _compacted_columns(case, x)
            return cols.permute(1, 0, 2).reshape(cols.shape[1], -1).contiguous()

        operands = case.operand_sets(flat_operand)

        def run(i: int) -> torch.Tensor:
            return torch.mm(packed_weight, operands[i])

        return Prepared(run, len(operands), to_output=lambda out: _flat_conv_output(case, out))
