// Output and workspace buffers shared by the CUDA ops: all from PyTorch's
// caching allocator on the current device.
#pragma once

#include <ATen/ATen.h>
#include <ATen/cuda/EmptyTensor.h>

#include <algorithm>
#include <limits>
#include <optional>
#include <vector>

#include "../ops.h"
#include "bias_columns.h"

namespace gwprune::cuda {

constexpr int64_t kMaxCublasDim = std::numeric_limits<int>::max();

// Bias is added by letting the GEMM accumulate (beta = 1) onto an output that
// already holds it; without bias the GEMM overwrites (beta = 0). `out` is an NCHW or
// channels_last conv output, or a 2-D linear one, its channels along dim 1.
inline float prepare_output(at::Tensor& out, const std::optional<at::Tensor>& bias) {
  if (poison_outputs()) out.fill_(std::numeric_limits<double>::quiet_NaN());
  if (!bias.has_value()) return 0.0f;
  const bool nchw = out.dim() == 4 && out.is_contiguous();
  fill_with_bias(out.data_ptr(), out.scalar_type(), out.numel(), *bias,
                 nchw ? out.size(2) * out.size(3) : 1);
  return 1.0f;
}

// Rows per chunk when a GEMM is cut along its rows so that a chunk's operand
// (`row_elements` per row) fits `budget_elements`: at least one row, at most
// cuBLAS's int range, the chunks as equal as possible, and for large chunks a
// multiple of kChunkRowGranule, so no chunk is a small remainder and every
// chunk fills whole GEMM tiles.
constexpr int64_t kChunkRowGranule = 256;

inline int64_t rows_per_chunk(int64_t total_rows, int64_t row_elements, int64_t budget_elements) {
  const int64_t max_rows =
      std::clamp<int64_t>(budget_elements / row_elements, 1, std::min(total_rows, kMaxCublasDim));
  if (total_rows <= max_rows) return total_rows;
  const int64_t granule = max_rows >= 16 * kChunkRowGranule ? kChunkRowGranule : 1;
  const int64_t cap = max_rows / granule * granule;
  const int64_t chunks = (total_rows + cap - 1) / cap;
  const int64_t even = (total_rows + chunks - 1) / chunks;
  return std::min(cap, (even + granule - 1) / granule * granule);
}

// An uninitialized tensor from PyTorch's CUDA caching allocator on like's device, with
// like's dtype: what at::empty's CUDA kernel does, without the dispatcher's round trip
// (host time on every call; the allocator is the same, CUDA graph pools included).
inline at::Tensor empty_device(at::IntArrayRef sizes, const at::Tensor& like,
                               at::MemoryFormat format = at::MemoryFormat::Contiguous) {
  return at::Tensor(at::detail::empty_cuda(sizes, like.scalar_type(), like.device(), format));
}

inline at::Tensor make_workspace(int64_t elements, const at::Tensor& like) {
  at::Tensor ws = empty_device({elements}, like);
  if (poison_outputs()) ws.fill_(std::numeric_limits<double>::quiet_NaN());
  return ws;
}

}  // namespace gwprune::cuda
