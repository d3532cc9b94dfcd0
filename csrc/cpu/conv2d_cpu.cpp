// Group-wise conv2d on the CPU: the output is cut into chunks of pixels
// (chunks_cpu.h); each chunk is gathered (gather_cpu.h) and multiplied by the
// packed weight with one ATen GEMM that writes its slice of the output in the
// final layout:
//
//   NCHW input:  out[n][:, p0:p0+count] (row stride Ho*Wo) = W @ cols [K', count]
//   NHWC input:  out rows p0 .. p0+count of [N*Ho*Wo, Cout] = cols [count, K'] @ W^T
//
// The bias is the GEMM's C operand (addmm, beta = 1), so each output slice is
// written by one call. An fp32 channels_last conv of one chunk runs its GEMM on the
// MKL-packed weight copy instead (conv_nhwc_mkl_packed, mkl_packed_weights.h).
#include <algorithm>
#include <limits>
#include <vector>

#include "../ops.h"
#include "chunks_cpu.h"
#include "gather_cpu.h"
#include "mkl_packed_weights.h"

namespace gwprune::cpu {
namespace {

// out = a @ b (+ bias, which runs along out's dimension `bias_dim`).
void gemm_into(at::Tensor out, const at::Tensor& a, const at::Tensor& b,
               const std::optional<at::Tensor>& bias, int64_t bias_dim) {
  if (!bias.has_value()) {
    at::mm_out(out, a, b);
    return;
  }
  const at::Tensor along = bias_dim == 0 ? bias->view({-1, 1}) : bias->view({1, -1});
  at::addmm_out(out, along.expand(out.sizes()), a, b);
}

// out[n0 : n0 + B] = W @ cols[B] (+ bias along the channels): one batched GEMM for B images.
void batched_gemm_into(at::Tensor out, const at::Tensor& weight, const at::Tensor& cols,
                       const std::optional<at::Tensor>& bias) {
  const at::Tensor weights = weight.expand({cols.size(0), weight.size(0), weight.size(1)});
  if (!bias.has_value()) {
    at::bmm_out(out, weights, cols);
    return;
  }
  at::baddbmm_out(out, bias->view({1, -1, 1}).expand(out.sizes()), weights, cols);
}

void conv_nchw(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& group_idx,
               const std::optional<at::Tensor>& bias, at::Tensor& out, const ConvGeometry& g,
               int64_t budget_bytes) {
  const int64_t kept = group_idx.numel();
  const int64_t pixels = g.out_pixels();
  const at::Tensor out_images = out.view({x.size(0), weight.size(0), pixels});
  // Chunks never span two images: chunk c is part c % chunks of image c / chunks.
  const ChunkPlan plan = plan_chunks(pixels, kept * x.element_size(), budget_bytes);
  if (plan.chunks == 1 && x.size(0) > 1) {
    // Whole images fit a chunk: as many as the budget holds go to one batched GEMM, which
    // threads better over small images than one GEMM per image (a 1x1 1024->256 14x14
    // N=2 layer at keep .5 on a 2-core EPYC: 0.66 ms against 0.76 for the two GEMMs).
    const ChunkPlan images = plan_chunks(x.size(0), kept * pixels * x.element_size(), budget_bytes);
    auto first_images = [&](int64_t chunk) {  // first image, image count
      const int64_t n0 = chunk * images.rows_per_chunk;
      return std::pair{n0, std::min(images.rows_per_chunk, x.size(0) - n0)};
    };
    run_chunks(
        images.chunks, images.rows_per_chunk * kept * pixels, x.options(),
        [&](int64_t) { return kept; },
        [&](int64_t chunk, at::Tensor& cols, int64_t k_begin, int64_t k_end) {
          const auto [n0, count] = first_images(chunk);
          for (int64_t n = 0; n < count; ++n)
            im2col_gather_nchw(
                x, group_idx,
                static_cast<char*>(cols.data_ptr()) + n * kept * pixels * x.element_size(), g,
                n0 + n, 0, pixels, k_begin, k_end);
        },
        [&](int64_t chunk, at::Tensor& cols) {
          const auto [n0, count] = first_images(chunk);
          batched_gemm_into(out_images.narrow(0, n0, count), weight,
                            cols.narrow(0, 0, count * kept * pixels).view({count, kept, pixels}),
                            bias);
        });
    return;
  }
  auto origin = [&](int64_t chunk) {  // image, first pixel, pixel count
    const int64_t n = chunk / plan.chunks, p0 = chunk % plan.chunks * plan.rows_per_chunk;
    return std::tuple{n, p0, std::min(plan.rows_per_chunk, pixels - p0)};
  };
  run_chunks(
      x.size(0) * plan.chunks, kept * plan.rows_per_chunk, x.options(),
      [&](int64_t) { return kept; },
      [&](int64_t chunk, at::Tensor& cols, int64_t k_begin, int64_t k_end) {
        const auto [n, p0, count] = origin(chunk);
        im2col_gather_nchw(x, group_idx, cols.data_ptr(), g, n, p0, count, k_begin, k_end);
      },
      [&](int64_t chunk, at::Tensor& cols) {
        const auto [n, p0, count] = origin(chunk);
        gemm_into(out_images[n].narrow(1, p0, count), weight,
                  cols.narrow(0, 0, kept * count).view({kept, count}), bias, 0);
      });
}

void conv_nhwc(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& group_idx,
               const std::optional<at::Tensor>& bias, at::Tensor& out, const ConvGeometry& g,
               int64_t budget_bytes) {
  const int64_t kept = group_idx.numel();
  const int64_t total = x.size(0) * g.out_pixels();
  const ChunkPlan plan = plan_chunks(total, kept * x.element_size(), budget_bytes);
  const TapRuns taps = plan_tap_runs(group_idx, g, x.element_size());
  // channels_last [N, Cout, Ho, Wo] is [N*Ho*Wo, Cout] in memory.
  const at::Tensor out_rows = out.permute({0, 2, 3, 1}).view({total, weight.size(0)});
  auto count_of = [&](int64_t chunk) {
    return std::min(plan.rows_per_chunk, total - chunk * plan.rows_per_chunk);
  };
  run_chunks(
      plan.chunks, kept * plan.rows_per_chunk, x.options(), count_of,
      [&](int64_t chunk, at::Tensor& cols, int64_t q_begin, int64_t q_end) {
        im2col_gather_nhwc(x, taps, kept, cols.data_ptr(), g, chunk * plan.rows_per_chunk, q_begin,
                           q_end);
      },
      [&](int64_t chunk, at::Tensor& cols) {
        const int64_t count = count_of(chunk);
        gemm_into(out_rows.narrow(0, chunk * plan.rows_per_chunk, count),
                  cols.narrow(0, 0, kept * count).view({count, kept}), weight.t(), bias, 1);
      });
}

// channels_last, fp32, one chunk: the GEMM is the linear's (cols [N*Ho*Wo, K'] @ W^T + bias),
// so it takes the CPU linear's MKL-packed weight copy (mkl_packed_weights.h: addmm re-packs
// W on every call), and MKL's output [N*Ho*Wo, Cout] is already the channels_last output's
// memory. Undefined when the call does not qualify; conv_nhwc runs then.
at::Tensor conv_nhwc_mkl_packed(const at::Tensor& x, const at::Tensor& weight,
                                const at::Tensor& group_idx, const std::optional<at::Tensor>& bias,
                                const ConvGeometry& g, int64_t budget_bytes) {
  const int64_t kept = group_idx.numel();
  const int64_t total = x.size(0) * g.out_pixels();
  if (!weight.is_contiguous() ||
      plan_chunks(total, kept * x.element_size(), budget_bytes).chunks != 1)
    return {};
  const PackedGemmWeight packed = mkl_packed_weight(weight, x, total, bias, PackedGemmUse::kConv);
  if (!packed.defined()) return {};
  at::Tensor cols = at::empty({total, kept}, x.options());
  const TapRuns taps = plan_tap_runs(group_idx, g, x.element_size());
  at::parallel_for(0, total, 1, [&](int64_t begin, int64_t end) {
    im2col_gather_nhwc(x, taps, kept, cols.data_ptr(), g, 0, begin, end);
  });
  // _mkl_linear allocates and writes the whole output itself (no poisoning here).
  return mkl_packed_linear(cols, packed, weight, bias)
      .view({x.size(0), g.out_h, g.out_w, weight.size(0)})
      .permute({0, 3, 1, 2});
}

// A form of derived_weight_copy for the pack's weight in channels_last order (and, below
// it, its index permuted alike), made for one group_idx (its data pointer and version are folded
// in, so an edit of the index makes a new copy rather than reusing a stale one). The index permuted
// alike is kept under its own form, this far below the weight's (the forms above span 2^40 values).
constexpr int64_t kOrderedIndexForm = int64_t{1} << 41;

int64_t channels_last_order_form(const at::Tensor& group_idx) {
  const auto address = reinterpret_cast<uintptr_t>(group_idx.const_data_ptr());
  return -2 - static_cast<int64_t>(((address >> 4) * 1000003u + group_idx._version()) &
                                   ((uint64_t{1} << 40) - 1));
}

// fp32 NCHW convs of more than one tap, one image and at least 5/8 of the groups kept run
// as channels_last ones: x copied to channels_last, the pack's groups in (i, j, c) order
// (permuted copies of the weight and the index kept beside the packed copies), the
// channels_last path (its gather moves runs of channels, its GEMM takes the packed copy),
// the output copied back to NCHW. Measured on a 2-core EPYC (bench/NOTES.md, CPU path),
// against the NCHW path with its images batched into one GEMM (conv_nchw): the seed conv
// (N=1) at keep .75 0.97x dense as channels_last against 1.02x, but at .5 0.64x against
// 0.62x and at .25 0.35x against 0.29x; the ResNet-50 3x3 256 14x14 N=2 layer 0.59 / 0.31x
// against 0.55 / 0.28x at keep .5 / .25. Undefined when the call does not qualify.
at::Tensor conv_nchw_as_channels_last(const at::Tensor& x, const at::Tensor& weight,
                                      const at::Tensor& group_idx,
                                      const std::optional<at::Tensor>& bias, const ConvGeometry& g,
                                      int64_t workspace_bytes) {
  const int64_t taps = g.kernel_h * g.kernel_w;
  if (taps == 1 || x.size(0) != 1 || 8 * group_idx.numel() < 5 * g.num_groups() ||
      !mkl_linear_enabled() || !may_derive(weight, x, bias) || !weight.is_contiguous())
    return {};
  // Where channels_last memory is also contiguous (C == 1, or 1x1 images) the copy would
  // read as NCHW again: such calls stay on the NCHW path.
  const at::Tensor x_nhwc = x.contiguous(at::MemoryFormat::ChannelsLast);
  if (x_nhwc.is_contiguous()) return {};
  // (tap, c) order; the packing's -1 entries last. The permuted weight and index are both
  // kept beside the pack's weight, so a call after the first sorts nothing, and the index
  // keeps one identity across calls (a fresh tensor each call had cost ~0.1 ms of a 1-2 ms
  // ResNet-50 3x3 layer on a 2-core EPYC, bench/NOTES.md, CPU path).
  const int64_t channels = x.size(1);
  at::Tensor permutation;  // made only when a copy is
  auto order = [&]() -> const at::Tensor& {
    if (permutation.defined()) return permutation;
    const at::Tensor index = group_idx.to(at::kLong).contiguous();
    const int64_t* entries = index.const_data_ptr<int64_t>();
    const int64_t kept = index.numel();
    std::vector<int64_t> sorted(kept);
    for (int64_t k = 0; k < kept; ++k) sorted[k] = k;
    auto key = [&](int64_t k) {
      const int64_t e = entries[k];
      return e < 0 ? taps * channels : (e % taps) * channels + e / taps;
    };
    std::stable_sort(sorted.begin(), sorted.end(),
                     [&](int64_t a, int64_t b) { return key(a) < key(b); });
    permutation = at::tensor(sorted, index.options());
    return permutation;
  };
  const int64_t form = channels_last_order_form(group_idx);
  const at::Tensor ordered_weight = derived_weight_copy(
      weight, form, [&] { return weight.index_select(1, order()).contiguous(); });
  const at::Tensor ordered_index = derived_weight_copy(weight, form - kOrderedIndexForm, [&] {
    return group_idx.index_select(0, order().to(group_idx.scalar_type()));
  });
  const at::Tensor out =
      conv2d_packed_cpu(x_nhwc, ordered_weight, ordered_index, bias, g, workspace_bytes);
  return out.contiguous();
}

}  // namespace

at::Tensor conv2d_packed_cpu(const at::Tensor& x_in, const at::Tensor& weight,
                             const at::Tensor& group_idx, const std::optional<at::Tensor>& bias,
                             const ConvGeometry& geometry, int64_t workspace_bytes) {
  // Same rule as gwprune._layout.conv_output_memory_format: channels_last only
  // when x is exactly that.
  const bool channels_last =
      !x_in.is_contiguous() && x_in.is_contiguous(at::MemoryFormat::ChannelsLast);
  const auto format = channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  check_index_range(group_idx, geometry.num_groups(), "group_idx");
  const at::Tensor x = x_in.contiguous(format);
  if (!channels_last && group_idx.numel() > 0 && x.numel() > 0 && weight.size(0) > 0 &&
      geometry.out_pixels() > 0) {
    at::Tensor out =
        conv_nchw_as_channels_last(x, weight, group_idx, bias, geometry, workspace_bytes);
    if (out.defined()) return out;
  }
  // Peak extra memory: one chunk's operand.
  const int64_t budget = std::min(kChunkOperandBytes, workspace_bytes);
  if (channels_last && group_idx.numel() > 0 && x.numel() > 0 && weight.size(0) > 0 &&
      geometry.out_pixels() > 0) {
    at::Tensor out = conv_nhwc_mkl_packed(x, weight, group_idx, bias, geometry, budget);
    if (out.defined()) return out;
  }
  at::Tensor out = at::empty({x.size(0), weight.size(0), geometry.out_h, geometry.out_w},
                             x.options().memory_format(format));
  if (out.numel() == 0) return out;
  if (poison_outputs()) out.fill_(std::numeric_limits<double>::quiet_NaN());
  if (group_idx.numel() == 0) {
    // Every group pruned: the result is the bias alone.
    if (bias.has_value()) {
      out.copy_(bias->view({1, -1, 1, 1}).expand_as(out));
    } else {
      out.zero_();
    }
    return out;
  }
  if (channels_last) {
    conv_nhwc(x, weight, group_idx, bias, out, geometry, budget);
  } else {
    conv_nchw(x, weight, group_idx, bias, out, geometry, budget);
  }
  return out;
}

}  // namespace gwprune::cpu
