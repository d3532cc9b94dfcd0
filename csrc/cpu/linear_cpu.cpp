// Group-wise linear on the CPU: rows of x are gathered chunk by chunk
// (gather_cpu.h, chunks_cpu.h) and each chunk's out rows = xg @ W^T (+ bias as
// the GEMM's C operand) come from one ATen GEMM; an fp32 input of one chunk
// runs its GEMM on MKL's pre-packed copy of the weight where there is one
// (mkl_packed_weights.h).
#include <limits>

#include "../ops.h"
#include "chunks_cpu.h"
#include "gather_cpu.h"
#include "mkl_packed_weights.h"

namespace gwprune::cpu {

at::Tensor linear_packed_cpu(const at::Tensor& x2d, const at::Tensor& weight,
                             const at::Tensor& feature_idx, const std::optional<at::Tensor>& bias,
                             int64_t workspace_bytes) {
  check_index_range(feature_idx, x2d.size(1), "feature_idx");
  const int64_t rows = x2d.size(0);
  const int64_t kept = feature_idx.numel();
  const int32_t* index = feature_idx.const_data_ptr<int32_t>();
  const std::vector<int64_t> features(index, index + kept);
  const int64_t budget_bytes = std::min(kChunkOperandBytes, workspace_bytes);
  if (rows > 0 && kept > 0 && weight.size(0) > 0 &&
      plan_chunks(rows, kept * x2d.element_size(), budget_bytes).chunks == 1) {
    const PackedGemmWeight packed = mkl_packed_weight(weight, x2d, rows, bias);
    if (packed.defined()) {
      // _mkl_linear allocates and writes the whole output itself (no poisoning here).
      at::Tensor xg = at::empty({rows, kept}, x2d.options());
      at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
        gather_features(x2d, features, xg.data_ptr(), 0, begin, end);
      });
      return mkl_packed_linear(xg, packed, weight, bias);
    }
  }
  at::Tensor out = at::empty({rows, weight.size(0)}, x2d.options());
  if (out.numel() == 0) return out;
  if (poison_outputs()) out.fill_(std::numeric_limits<double>::quiet_NaN());
  if (kept == 0) {
    if (bias.has_value()) {
      out.copy_(bias->view({1, -1}).expand_as(out));
    } else {
      out.zero_();
    }
    return out;
  }
  const ChunkPlan plan = plan_chunks(rows, kept * x2d.element_size(), budget_bytes);
  const at::Tensor weight_t = weight.t();
  auto count_of = [&](int64_t chunk) {
    return std::min(plan.rows_per_chunk, rows - chunk * plan.rows_per_chunk);
  };
  run_chunks(
      plan.chunks, kept * plan.rows_per_chunk, x2d.options(), count_of,
      [&](int64_t chunk, at::Tensor& xg, int64_t q_begin, int64_t q_end) {
        gather_features(x2d, features, xg.data_ptr(), chunk * plan.rows_per_chunk, q_begin, q_end);
      },
      [&](int64_t chunk, at::Tensor& xg) {
        const int64_t count = count_of(chunk);
        at::Tensor slice = out.narrow(0, chunk * plan.rows_per_chunk, count);
        const at::Tensor gathered = xg.narrow(0, 0, kept * count).view({count, kept});
        if (bias.has_value()) {
          at::addmm_out(slice, bias->view({1, -1}).expand(slice.sizes()), gathered, weight_t);
        } else {
          at::mm_out(slice, gathered, weight_t);
        }
      });
  return out;
}

}  // namespace gwprune::cpu
