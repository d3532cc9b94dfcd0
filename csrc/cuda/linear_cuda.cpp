// Group-wise linear on CUDA: rows of x are gathered chunk by chunk into a
// bounded workspace [rows, K'] and multiplied by the packed weight, so
// out (rows x out) = gathered @ W^T is one TN GEMM per chunk (with a bias the
// epilogue cannot add, K' may carry extra bias columns: bias_columns.h).
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>

#include "../ops.h"
#include "bias_columns.h"
#include "buffers.h"
#include "gather.h"
#include "gemm.h"
#include "precision.h"

namespace gwprune::cuda {

at::Tensor linear_packed_cuda(const at::Tensor& x2d, const at::Tensor& weight,
                              const at::Tensor& feature_idx, const std::optional<at::Tensor>& bias,
                              int64_t workspace_bytes, Activation activation) {
  const c10::cuda::CUDAGuard device_guard(x2d.device());
  const bool allow_tf32 = matmul_allows_tf32();
  const int64_t rows = x2d.size(0);
  const int64_t out_features = weight.size(0);
  const int64_t kept = feature_idx.numel();
  at::Tensor out = empty_device({rows, out_features}, x2d);
  if (out.numel() == 0) return out;
  const GemmBias plan =
      plan_gemm_bias(out, weight, bias, /*epilogue_allowed=*/true, allow_tf32, workspace_bytes);
  if (kept == 0) {
    if (plan.beta == 0.0f) out.zero_();
    apply_activation_(out, activation);
    return out;
  }
  const at::Tensor& gemm_weight = plan.weight;
  const int64_t reduction = gemm_weight.size(1);  // GEMM K: kept features, plus any bias columns
  const int64_t chunk_rows = rows_per_chunk(rows, reduction, plan.budget_elements);
  at::Tensor gathered = make_workspace(chunk_rows * reduction, x2d);
  const int64_t elem = x2d.element_size();
  char* out_base = static_cast<char*>(out.data_ptr());

  for (int64_t r0 = 0; r0 < rows; r0 += chunk_rows) {
    const int64_t count = std::min(chunk_rows, rows - r0);
    gather_features(x2d, feature_idx, gathered, r0, count, plan.bias_rows);
    // The gather never writes the bias columns and every chunk reuses the workspace, so the
    // first chunk's fill (the largest) serves the later ones: one launch less per chunk.
    if (plan.bias_rows > 0 && r0 == 0) fill_bias_rows(gathered, count, kept, 1);
    const RowMajorOperand x_op{gathered.data_ptr(), count, reduction, reduction, 0, false};
    const RowMajorOperand w_op{gemm_weight.data_ptr(), out_features, reduction, reduction, 0, true};
    const RowMajorOutput out_op{out_base + r0 * out_features * elem, count, out_features,
                                out_features, 0};
    gemm_rows(x_op, w_op, out_op, plan.epilogue, plan.beta, x2d.scalar_type(), allow_tf32,
              activation);
  }
  return out;
}

}  // namespace gwprune::cuda
