"""Sparse peers of group-wise: element- and vector-wise (CSR), block-wise (BSR), 2:4.

Each multiplies a sparse weight matrix [out, K] by a dense operand built beforehand
and untimed: the im2col matrix [K, N*L] of a conv input, or x^T [in, rows] of a
linear one (the seed computed the same products with cuSPARSE). The timed kernel
is the sparse-dense product alone; im2col, the transpose, and reshaping the result
are excluded, which favours these providers.
"""

import torch
import torch.nn.functional as F

from .base import Case, Prepared, Provider, Unsupported


def _dense_operand(case: Case, x: torch.Tensor) -> torch.Tensor:
    """[K, N*L] im2col matrix of a conv input, or [in, rows] for a linear input."""
    workload = case.workload
    if workload.kind == "linear":
        return x.t().contiguous()
    cols = F.unfold(x, workload.kernel_size, padding=workload.padding, stride=workload.stride)
    return cols.permute(1, 0, 2).reshape(cols.shape[1], -1).contiguous()


def _layer_output(case: Case, out: torch.Tensor) -> torch.Tensor:
    """[out, N*L] or [out, rows] product -> the layer's output shape (a view)."""
    workload = case.workload
    if workload.kind == "linear":
        return out.t()
    return out.reshape(out.shape[0], workload.batch, *workload.output_hw).permute(1, 0, 2, 3)


def _operand_note(case: Case) -> str:
    if case.workload.kind == "linear":
        return "sparse x dense product only; x transpose excluded"
    return "sparse x dense product only; im2col excluded"


def _sparse_product(case: Case, sparse_weight: torch.Tensor, note: str, matmul=torch.sparse.mm):
    operands = case.operand_sets(lambda x: _dense_operand(case, x))

    def run(i: int) -> torch.Tensor:
        return matmul(sparse_weight, operands[i])

    return Prepared(
        run, len(operands), lambda out: _layer_output(case, out), f"{note}; {_operand_note(case)}"
    )


class CsrSpMM(Provider):
    """Element-wise (random) or vector-wise (N:M) mask stored as CSR: cuSPARSE SpMM on GPU."""

    family_by_pattern = {"element": "element-wise", "vector": "vector-wise"}
    reorders_sums = True

    def __init__(self, pattern: str):
        self.pattern = pattern
        self.family = self.family_by_pattern[pattern]
        self.name = f"{pattern}-csr"

    def prepare(self, case: Case) -> Prepared:
        weight = case.masked_weight(self.pattern).reshape(case.matrix_shape)
        note = "CSR"
        if self.pattern == "vector":
            note = "CSR, N:M = {}:{}".format(*case.nm_ratio())
        return _sparse_product(case, weight.to_sparse_csr(), note)


class BsrSpMM(Provider):
    """Block-wise mask (32x32 blocks, 16x16 where 32 does not divide) stored as BSR."""

    name = "block-bsr"
    pattern = "block"
    family = "block-wise"
    reorders_sums = True

    def check_supported(self, case: Case) -> None:
        if case.block_size() is None:
            rows, cols = case.matrix_shape
            raise Unsupported(f"weight matrix {rows}x{cols} does not divide into 16x16 blocks")

    def prepare(self, case: Case) -> Prepared:
        block = case.block_size()
        weight = case.masked_weight("block").reshape(case.matrix_shape)
        sparse = weight.to_sparse_bsr((block, block))
        return _sparse_product(case, sparse, f"BSR {block}x{block}")


class SemiStructured24(Provider):
    """Hardware 2:4 sparsity via torch.sparse.to_sparse_semi_structured (50 % density only)."""

    name = "vector-2:4"
    pattern = "vector"
    family = "vector-wise"
    reorders_sums = True

    def check_supported(self, case: Case) -> None:
        if case.nm_ratio() != (2, 4):
            raise Unsupported("2:4 keeps exactly half the weights; runs at keep 0.5 only")
        if case.device.type != "cuda":
            raise Unsupported("2:4 semi-structured sparsity needs a CUDA GPU")
        if case.precision.dtype not in (torch.float16, torch.bfloat16):
            raise Unsupported("2:4 is benchmarked in fp16/bf16 only")

    def prepare(self, case: Case) -> Prepared:
        weight = case.masked_weight("vector").reshape(case.matrix_shape)
        try:
            sparse = torch.sparse.to_sparse_semi_structured(weight)
        except (RuntimeError, ValueError, NotImplementedError) as error:
            raise Unsupported(f"torch refused: {error}".splitlines()[0]) from error
        backend = "cuSPARSELt" if type(sparse).__name__.endswith("CUSPARSELT") else "CUTLASS"
        if case.workload.kind == "linear":
            inputs = case.inputs

            def run_linear(i: int) -> torch.Tensor:
                return F.linear(inputs[i], sparse)

            return Prepared(run_linear, len(inputs), note=f"2:4 {backend}; F.linear")
        # torch.mm, not torch.sparse.mm: the semi-structured tensor subclass implements aten.mm.
        return _sparse_product(case, sparse, f"2:4 {backend}", matmul=torch.mm)
