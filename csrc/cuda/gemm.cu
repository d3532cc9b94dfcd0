// cuBLAS calls for gwprune: layouts, precision and the math-mode guard.
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/Exceptions.h>
#include <c10/util/Exception.h>
#include <cublas_v2.h>

#include <limits>

#include "gemm.h"

namespace gwprune::cuda {
namespace {

// PyTorch's handle carries the math mode of torch.backends.cuda.matmul.allow_tf32,
// but conv follows the cuDNN flag instead, so every call sets the mode it
// needs and restores the handle's mode afterwards.
class MathModeGuard {
 public:
  MathModeGuard(cublasHandle_t handle, cublasMath_t mode) : handle_(handle) {
    TORCH_CUDABLAS_CHECK(cublasGetMathMode(handle_, &saved_));
    TORCH_CUDABLAS_CHECK(cublasSetMathMode(handle_, mode));
  }
  ~MathModeGuard() { cublasSetMathMode(handle_, saved_); }
  MathModeGuard(const MathModeGuard&) = delete;
  MathModeGuard& operator=(const MathModeGuard&) = delete;

 private:
  cublasHandle_t handle_;
  cublasMath_t saved_;
};

int as_cublas_int(int64_t value, const char* what) {
  TORCH_CHECK(value >= 0 && value <= std::numeric_limits<int>::max(), "gwprune: GEMM ", what, " = ",
              value, " does not fit cuBLAS's 32-bit int (the caller must chunk)");
  return static_cast<int>(value);
}

cudaDataType_t cuda_data_type(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat:
      return CUDA_R_32F;
    case at::kHalf:
      return CUDA_R_16F;
    case at::kBFloat16:
      return CUDA_R_16BF;
    case at::kDouble:
      return CUDA_R_64F;
    default:
      TORCH_CHECK(false, "gwprune: no cuBLAS type for dtype ", dtype);
  }
}

}  // namespace

void gemm(const RowMajorOperand& a, const RowMajorOperand& b, const RowMajorOutput& out,
          int64_t batch, at::ScalarType dtype, bool allow_tf32, float beta) {
  const int64_t inner = a.transposed ? a.rows : a.cols;
  TORCH_CHECK(inner == (b.transposed ? b.cols : b.rows), "gwprune: GEMM inner dimensions differ");
  TORCH_CHECK(out.rows == (a.transposed ? a.cols : a.rows), "gwprune: GEMM output rows differ");
  TORCH_CHECK(out.cols == (b.transposed ? b.rows : b.cols), "gwprune: GEMM output cols differ");
  if (batch == 0 || out.rows == 0 || out.cols == 0) return;

  // Row-major out = A @ B is column-major out^T = B^T @ A^T, and a row-major
  // matrix read column-major is already its transpose: pass B first, A second.
  const cublasOperation_t op_b = b.transposed ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_a = a.transposed ? CUBLAS_OP_T : CUBLAS_OP_N;
  const int m = as_cublas_int(out.cols, "m");
  const int n = as_cublas_int(out.rows, "n");
  const int k = as_cublas_int(inner, "k");
  const int ld_b = as_cublas_int(b.ld, "ld of B");
  const int ld_a = as_cublas_int(a.ld, "ld of A");
  const int ld_out = as_cublas_int(out.ld, "ld of C");
  const int batch_count = as_cublas_int(batch, "batch");

  cublasHandle_t handle = at::cuda::getCurrentCUDABlasHandle();

  if (dtype == at::kFloat && !allow_tf32) {
    // Strict fp32 is plain SGEMM with tensor-core down-conversion switched off.
    MathModeGuard mode(handle, CUBLAS_DEFAULT_MATH);
    const float alpha_f = 1.0f;
    if (batch_count == 1) {
      TORCH_CUDABLAS_CHECK(cublasSgemm(
          handle, op_b, op_a, m, n, k, &alpha_f, static_cast<const float*>(b.data), ld_b,
          static_cast<const float*>(a.data), ld_a, &beta, static_cast<float*>(out.data), ld_out));
    } else {
      TORCH_CUDABLAS_CHECK(cublasSgemmStridedBatched(
          handle, op_b, op_a, m, n, k, &alpha_f, static_cast<const float*>(b.data), ld_b,
          b.batch_stride, static_cast<const float*>(a.data), ld_a, a.batch_stride, &beta,
          static_cast<float*>(out.data), ld_out, out.batch_stride, batch_count));
    }
    return;
  }

  if (dtype == at::kDouble) {
    MathModeGuard mode(handle, CUBLAS_DEFAULT_MATH);
    const double alpha_d = 1.0;
    const double beta_d = beta;
    TORCH_CUDABLAS_CHECK(cublasDgemmStridedBatched(
        handle, op_b, op_a, m, n, k, &alpha_d, static_cast<const double*>(b.data), ld_b,
        b.batch_stride, static_cast<const double*>(a.data), ld_a, a.batch_stride, &beta_d,
        static_cast<double*>(out.data), ld_out, out.batch_stride, batch_count));
    return;
  }

  // TF32, fp16 and bf16: tensor cores with fp32 accumulation and fp32 alpha/beta.
  const bool tf32 = dtype == at::kFloat;
  MathModeGuard mode(handle, tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH);
  const cublasComputeType_t compute = tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  const cudaDataType_t type = cuda_data_type(dtype);
  const float alpha_f = 1.0f;
  if (batch_count == 1) {
    TORCH_CUDABLAS_CHECK(cublasGemmEx(handle, op_b, op_a, m, n, k, &alpha_f, b.data, type, ld_b,
                                      a.data, type, ld_a, &beta, out.data, type, ld_out, compute,
                                      CUBLAS_GEMM_DEFAULT));
  } else {
    TORCH_CUDABLAS_CHECK(cublasGemmStridedBatchedEx(
        handle, op_b, op_a, m, n, k, &alpha_f, b.data, type, ld_b, b.batch_stride, a.data, type,
        ld_a, a.batch_stride, &beta, out.data, type, ld_out, out.batch_stride, batch_count, compute,
        CUBLAS_GEMM_DEFAULT));
  }
}

}  // namespace gwprune::cuda
