// Row-major GEMM front end over cuBLAS.
//
// Every matrix here is row-major (the C++/PyTorch convention); gemm.cu maps
// each call onto cuBLAS's column-major API. Precision is decided in one place:
// float64 -> DGEMM, float32 -> SGEMM (strict) or TF32 tensor cores when
// `allow_tf32`, float16/bfloat16 -> tensor cores with float32 accumulation.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

#include "../activation.h"

namespace gwprune::cuda {

// One row-major operand: rows x cols, leading dimension `ld` (elements between
// consecutive rows), `batch_stride` elements between consecutive batch items
// (0 broadcasts the operand over the batch).
struct RowMajorOperand {
  const void* data;
  int64_t rows;
  int64_t cols;
  int64_t ld;
  int64_t batch_stride;
  bool transposed;  // use the operand as its transpose (rows x cols stored, cols x rows used)
};

struct RowMajorOutput {
  void* data;
  int64_t rows;
  int64_t cols;
  int64_t ld;
  int64_t batch_stride;
};

// out[b] = a[b] @ b[b] + beta * out[b] for b in [0, batch), on PyTorch's
// current stream and cuBLAS handle. beta is 0 or 1 (1 accumulates onto a
// bias already written into `out`).
void gemm(const RowMajorOperand& a, const RowMajorOperand& b, const RowMajorOutput& out,
          int64_t batch, at::ScalarType dtype, bool allow_tf32, float beta);

// Whether gemm_bias_epilogue can serve this precision at all: tensor-core
// precisions only (strict fp32 stays on cublasSgemm, float64 on DGEMM).
bool bias_epilogue_supported(at::ScalarType dtype, bool allow_tf32);

// Whether cuBLASLt's epilogue computes `activation` (CUBLASLT_EPILOGUE_RELU(_BIAS);
// CUBLASLT_EPILOGUE_GELU(_BIAS), which is the tanh approximation, for
// "gelu_tanh" only). The others take one pass over the output (apply_activation_).
bool epilogue_fuses(Activation activation);

// out = a @ b + bias broadcast over rows (bias has out.cols elements, the
// output's dtype; nullptr for none), then `activation` where epilogue_fuses
// it, through cuBLASLt's epilogue: the GEMM writes the output once instead of
// reading back a bias-prefilled one and passing over it again. Returns false,
// having done nothing, when cuBLASLt offers no algorithm for these operands
// (the caller then prefills the bias and calls gemm with beta = 1). An
// activation the epilogue cannot compute is left to the caller.
bool gemm_bias_epilogue(const RowMajorOperand& a, const RowMajorOperand& b,
                        const RowMajorOutput& out, const void* bias, at::ScalarType dtype,
                        bool allow_tf32, Activation activation = Activation::kNone);

// out = a @ b for one chunk of output rows, plus `epilogue_bias` through cuBLASLt when
// it is defined (where cuBLASLt declines, the bias is written into those rows first and
// accumulated: `out`'s rows must then be contiguous, ld == cols). When it is undefined,
// beta says whether `out` already holds a bias (1) or not (0). Then `activation` over
// those rows: in the epilogue where it can, else one in-place pass over the chunk's rows.
void gemm_rows(const RowMajorOperand& a, const RowMajorOperand& b, const RowMajorOutput& out,
               const at::Tensor& epilogue_bias, float beta, at::ScalarType dtype, bool allow_tf32,
               Activation activation = Activation::kNone);

}  // namespace gwprune::cuda
