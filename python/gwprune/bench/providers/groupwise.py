"""Group-wise providers: gwprune's packed ops, the seed's naive path, and the GEMM floor.

All use the same kept groups (Case.keep_idx) and are checked against the float64
output of the group-masked dense weight.
"""

import torch
import torch.nn.functional as F

import gwprune
from gwprune.packing import pad_columns, padded_count

from .base import Case, Prepared, Provider, Unsupported


def _path_note(case: Case) -> str:
    if case.device.type != "cuda":
        if gwprune.info()["CPU kernels compiled"]:
            return f"gwprune CPU kernels, {torch.get_num_threads()} threads"
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


class GroupImplicit(Provider):
    """gwprune.ops.conv2d_packed with backend="implicit": the Hopper implicit GEMM."""

    pattern = "group"
    family = "group-wise"
    kinds = ("conv",)
    note = "gwprune implicit GEMM (sm_90a): kept groups read from x inside the mainloop"

    def __init__(self, channels_last: bool):
        self.channels_last = channels_last
        self.name = "group-implicit-cl" if channels_last else "group-implicit"

    def check_supported(self, case: Case) -> None:
        if case.device.type != "cuda" or not gwprune.cuda_kernels_compiled():
            raise Unsupported("the implicit GEMM runs on CUDA with the compiled kernels")
        if torch.cuda.get_device_capability(case.device) != (9, 0):
            raise Unsupported("the implicit GEMM needs an sm_90 GPU")
        if case.precision.name not in ("tf32", "fp16", "bf16"):
            raise Unsupported("the implicit GEMM runs TF32, fp16 and bf16 only")

    def prepare(self, case: Case) -> Prepared:
        layout = torch.channels_last if self.channels_last else torch.contiguous_format
        packed = gwprune.pack_conv2d_weight(case.masked_weight("group"), case.keep_idx(), layout)
        inputs = [x.contiguous(memory_format=layout) for x in case.inputs]
        stride, padding = case.workload.stride, case.workload.padding

        def run(i: int) -> torch.Tensor:
            return gwprune.ops.conv2d_packed(
                inputs[i], packed, None, stride, padding, backend="implicit"
            )

        return Prepared(run, len(inputs), note=self.note)


class GroupNaive(Provider):
    """The seed's unfused Algorithms 1-2 on the device: F.unfold + index_select + matmul.

    ``channels_last``: the same on channels_last inputs (conv only), the naive path a
    channels_last model would take.
    """

    pattern = "group"
    family = "group-wise"
    note = "F.unfold + index_select + matmul on the unpadded kept weight, all timed"

    def __init__(self, channels_last: bool = False):
        self.channels_last = channels_last
        self.name = "group-naive-cl" if channels_last else "group-naive"
        self.kinds = ("conv",) if channels_last else ("conv", "linear")

    def prepare(self, case: Case) -> Prepared:
        layout = torch.channels_last if self.channels_last else torch.contiguous_format
        inputs = [x.contiguous(memory_format=layout) for x in case.inputs]
        workload = case.workload
        keep = case.keep_idx()
        kept_weight = case.masked_weight("group").reshape(case.matrix_shape)
        kept_weight = kept_weight.index_select(1, keep).contiguous()
        if workload.kind == "linear":

            def run_linear(i: int) -> torch.Tensor:
                return F.linear(inputs[i].index_select(-1, keep), kept_weight)

            return Prepared(run_linear, len(inputs))

        def run_conv(i: int) -> torch.Tensor:
            cols = F.unfold(
                inputs[i], workload.kernel_size, padding=workload.padding, stride=workload.stride
            )
            return torch.matmul(kept_weight, cols.index_select(1, keep))

        return Prepared(run_conv, len(inputs), to_output=lambda out: _conv_output(case, out))


def _padded_kept_weight(case: Case) -> torch.Tensor:
    """[out, K'p]: kept columns padded with zeros to gwprune's 16-byte-aligned K'."""
    weight = case.masked_weight("group").reshape(case.matrix_shape)
    return pad_columns(weight.index_select(1, case.keep_idx()))


def _pad_rows(operand: torch.Tensor, dim: int) -> torch.Tensor:
    """Zero-pads dimension dim (the kept groups) to a multiple of INDEX_ALIGNMENT."""
    extra = padded_count(operand.shape[dim]) - operand.shape[dim]
    pad = [0, 0] * (operand.dim() - 1 - dim % operand.dim()) + [0, extra]
    return F.pad(operand, pad).contiguous()


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
    note = "GEMM only (K' padded as gwprune pads it); im2col + gather done beforehand, untimed"

    def prepare(self, case: Case) -> Prepared:
        packed_weight = _padded_kept_weight(case)
        if case.workload.kind == "linear":
            operands = case.operand_sets(
                lambda x: _pad_rows(x.index_select(1, case.keep_idx()), dim=1)
            )

            def run_linear(i: int) -> torch.Tensor:
                return F.linear(operands[i], packed_weight)

            return Prepared(run_linear, len(operands))

        operands = case.operand_sets(lambda x: _pad_rows(_compacted_columns(case, x), dim=1))

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
        packed_weight = _padded_kept_weight(case)

        def flat_operand(x: torch.Tensor) -> torch.Tensor:
            cols = _pad_rows(_compacted_columns(case, x), dim=1)
            return cols.permute(1, 0, 2).reshape(cols.shape[1], -1).contiguous()

        operands = case.operand_sets(flat_operand)

        def run(i: int) -> torch.Tensor:
            return torch.mm(packed_weight, operands[i])

        return Prepared(run, len(operands), to_output=lambda out: _flat_conv_output(case, out))
