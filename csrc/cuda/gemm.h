// Row-major GEMM front end over cuBLAS.
//
// Every matrix here is row-major (the C++/PyTorch convention); gemm.cu maps
// each call onto cuBLAS's column-major API. Precision is decided in one place:
// float64 -> DGEMM, float32 -> SGEMM (strict) or TF32 tensor cores when
// `allow_tf32`, float16/bfloat16 -> tensor cores with float32 accumulation.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

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

}  // namespace gwprune::cuda
