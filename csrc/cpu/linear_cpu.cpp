// Group-wise linear on the CPU: rows of x are gathered chunk by chunk
// (gather_cpu.h, chunks_cpu.h); out[rows of the chunk, c0:c1] = xg @ W[c0:c1]^T
// (+ bias as the GEMM's C operand) is one ATen GEMM per block of outputs.
#include <limits>

#include "../ops.h"
#include "chunks_cpu.h"
#include "gather_cpu.h"

namespace gwprune::cpu {

at::Tensor linear_packed_cpu(const at::Tensor& x2d, const at::Tensor& weight,
                             const at::Tensor& feature_idx, const std::optional<at::Tensor>& bias,
                             int64_t workspace_bytes) {
  const int64_t rows = x2d.size(0);
  const int64_t kept = feature_idx.numel();
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
  const int32_t* index = feature_idx.const_data_ptr<int32_t>();
  const std::vector<int64_t> features(index, index + kept);
  const int64_t out_features = weight.size(0);
  const TaskPlan plan = plan_tasks(rows, kept * x2d.element_size(),
                                   std::min(kChunkOperandBytes, workspace_bytes), out_features);
  auto count_of = [&](int64_t chunk) {
    return std::min(plan.rows_per_chunk, rows - chunk * plan.rows_per_chunk);
  };
  run_tasks(
      plan.chunks, plan.channel_blocks, kept * plan.rows_per_chunk, x2d.options(),
      [&](int64_t chunk, at::Tensor& xg) {
        gather_features(x2d, features, xg.data_ptr(), chunk * plan.rows_per_chunk, 0,
                        count_of(chunk));
      },
      [&](int64_t chunk, at::Tensor& xg, int64_t block) {
        const int64_t count = count_of(chunk);
        const int64_t c0 = block * plan.channels_per_block;
        const int64_t channels = std::min(plan.channels_per_block, out_features - c0);
        at::Tensor slice =
            out.narrow(0, chunk * plan.rows_per_chunk, count).narrow(1, c0, channels);
        const at::Tensor gathered = xg.narrow(0, 0, kept * count).view({count, kept});
        const at::Tensor weight_t = weight.narrow(0, c0, channels).t();
        if (bias.has_value()) {
          const at::Tensor along = bias->narrow(0, c0, channels).view({1, -1});
          at::addmm_out(slice, along.expand(slice.sizes()), gathered, weight_t);
        } else {
          at::mm_out(slice, gathered, weight_t);
        }
      });
  return out;
}

}  // namespace gwprune::cpu
