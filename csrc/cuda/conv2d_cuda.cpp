// Group-wise conv2d on CUDA: chunked gather into a bounded workspace, then
// one cuBLAS call per chunk that writes the output in its final layout.
//
//   NCHW input:  cols [images][K'][pixels]; out[n] (Cout x pixels) =
//                W (Cout x K') @ cols[n] (K' x pixels), batched over images,
//                so the GEMM writes NCHW directly (the bias, when the output is
//                large, as extra columns of W against rows of ones in cols).
//   NHWC input:  cols [pixels][K']; out (pixels x Cout, i.e. channels_last) =
//                cols @ W^T as one flat GEMM.
// The workspace holds at most `workspace_bytes` (at least one row), so peak
// extra memory is bounded for any batch; chunks run in order on the current
// stream and reuse one buffer. (Overlapping the next chunk's gather with the
// current GEMM on a second stream was measured slower: bench/NOTES.md.)
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
#include <cstdint>
#include <limits>

#include "../error_message.h"
#include "../ops.h"
#include "bias_columns.h"
#include "buffers.h"
#include "conv_backend.h"
#include "gather.h"
#include "gemm.h"
#include "implicit/implicit_conv.h"
#include "precision.h"

namespace gwprune::cuda {
namespace {

// The gather kernels index within one image in 32 bits (see Tap in im2col_gather.cu).
void check_conv_fits_32bit(const ConvGeometry& g) {
  constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();
  constexpr int64_t kInt16Max = std::numeric_limits<int16_t>::max();
  GWPRUNE_CHECK_VALUE(
      g.num_groups() <= kInt32Max && g.height * g.width <= kInt32Max && g.out_pixels() <= kInt32Max,
      "one image of this conv is too large for the CUDA kernels (C*kh*kw, "
      "H*W and Ho*Wo must each be below 2^31)");
  GWPRUNE_CHECK_VALUE((g.kernel_h - 1) * g.dilation_h + g.pad_h <= kInt16Max &&
                          (g.kernel_w - 1) * g.dilation_w + g.pad_w <= kInt16Max,
                      "(kernel - 1) * dilation + padding must be below 32768");
}

// `weight` is the GEMM's (packed, or widened with bias columns: bias_rows > 0).
void conv_nchw(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& group_idx,
               int64_t bias_rows, at::Tensor& out, const ConvGeometry& g, float beta,
               bool allow_tf32, int64_t budget_elements) {
  const int64_t kept_groups = group_idx.numel();
  const int64_t batch = x.size(0);
  const int64_t out_channels = weight.size(0);
  const int64_t reduction = weight.size(1);  // GEMM K: the kept groups, plus any bias rows
  const int64_t pixels = g.out_pixels();
  // Whole images per chunk when one fits the budget, else a slice of one image.
  const int64_t images_per_chunk =
      std::clamp<int64_t>(budget_elements / (reduction * pixels), 1, batch);
  const int64_t pixels_per_chunk =
      images_per_chunk > 1
          ? pixels
          : std::clamp<int64_t>(budget_elements / reduction, 1, std::min(pixels, kMaxGatherPixels));
  at::Tensor cols = make_workspace(images_per_chunk * reduction * pixels_per_chunk, x);
  const int64_t elem = x.element_size();
  char* out_base = static_cast<char*>(out.data_ptr());
  // The pixel count whose bias rows `cols` holds: the gather never writes them and every
  // chunk reuses the workspace, so they are filled again only where a chunk's rows are of
  // another length (an image's last slice), not once per chunk (a launch each).
  int64_t filled_count = 0;

  for (int64_t n0 = 0; n0 < batch; n0 += images_per_chunk) {
    const int64_t images = std::min(images_per_chunk, batch - n0);
    for (int64_t p0 = 0; p0 < pixels; p0 += pixels_per_chunk) {
      const int64_t count = std::min(pixels_per_chunk, pixels - p0);
      im2col_gather_nchw(x, group_idx, cols, g, n0, images, p0, count, bias_rows);
      if (bias_rows > 0 && count != filled_count) {
        // Every image slot of the workspace, so a later chunk of fewer images is covered too.
        fill_bias_rows(cols, images_per_chunk, kept_groups, count);
        filled_count = count;
      }
      const RowMajorOperand w_op{weight.data_ptr(), out_channels, reduction, reduction, 0, false};
      const RowMajorOperand cols_op{cols.data_ptr(), reduction,         count,
                                    count,           reduction * count, false};
      const RowMajorOutput out_op{out_base + (n0 * out_channels * pixels + p0) * elem, out_channels,
                                  count, pixels, out_channels * pixels};
      gemm(w_op, cols_op, out_op, images, x.scalar_type(), allow_tf32, beta);
    }
  }
}

// Bias, when given, is added by the GEMM's epilogue where cuBLASLt offers one
// (out rows are pixels, so the bias runs along the GEMM's columns), else as
// extra reduction columns (bias_rows > 0, `weight` widened), else it was
// prefilled into `out` and beta is 1. The activation goes with each chunk's
// GEMM (gemm_rows: in the epilogue, else a pass over the chunk's rows).
void conv_nhwc(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& group_idx,
               int64_t bias_rows, at::Tensor& out, const ConvGeometry& g,
               const at::Tensor& epilogue_bias, float beta, bool allow_tf32,
               int64_t budget_elements, Activation activation) {
  const int64_t kept_groups = group_idx.numel();
  const int64_t out_channels = weight.size(0);
  const int64_t reduction = weight.size(1);  // GEMM K: the kept groups, plus any bias columns
  const int64_t total_pixels = x.size(0) * g.out_pixels();
  const int64_t pixels_per_chunk = rows_per_chunk(total_pixels, reduction, budget_elements);
  at::Tensor cols = make_workspace(pixels_per_chunk * reduction, x);
  const int64_t elem = x.element_size();
  char* out_base = static_cast<char*>(out.data_ptr());

  for (int64_t p0 = 0; p0 < total_pixels; p0 += pixels_per_chunk) {
    const int64_t count = std::min(pixels_per_chunk, total_pixels - p0);
    im2col_gather_nhwc(x, group_idx, cols, g, p0, count, bias_rows);
    // As for the linear path: the first (largest) chunk's bias columns serve every chunk.
    if (bias_rows > 0 && p0 == 0) fill_bias_rows(cols, count, kept_groups, 1);
    const RowMajorOperand cols_op{cols.data_ptr(), count, reduction, reduction, 0, false};
    const RowMajorOperand w_op{weight.data_ptr(), out_channels, reduction, reduction, 0, true};
    const RowMajorOutput out_op{out_base + p0 * out_channels * elem, count, out_channels,
                                out_channels, 0};
    gemm_rows(cols_op, w_op, out_op, epilogue_bias, beta, x.scalar_type(), allow_tf32, activation);
  }
}

}  // namespace

at::Tensor conv2d_packed_cuda(const at::Tensor& x_in, const at::Tensor& weight,
                              const at::Tensor& group_idx, const std::optional<at::Tensor>& bias,
                              const ConvGeometry& geometry, int64_t workspace_bytes,
                              const std::string& backend, Activation activation) {
  const c10::cuda::CUDAGuard device_guard(x_in.device());
  check_conv_fits_32bit(geometry);
  const bool allow_tf32 = conv_allows_tf32();
  // Same rule as gwprune.reference: channels_last only when x is exactly that.
  const bool channels_last =
      !x_in.is_contiguous() && x_in.is_contiguous(at::MemoryFormat::ChannelsLast);
  const auto format = channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  const at::Tensor x = x_in.contiguous(format);

  at::Tensor out =
      empty_device({x.size(0), weight.size(0), geometry.out_h, geometry.out_w}, x, format);
  if (out.numel() == 0) return out;
  const int64_t kept = group_idx.numel();
  if (kept > 0 &&
      choose_conv_backend(backend, x, weight, geometry, allow_tf32) == ConvBackend::kImplicit) {
    if (poison_outputs()) out.fill_(std::numeric_limits<double>::quiet_NaN());
    const std::optional<at::Tensor> contiguous_bias =
        bias.has_value() ? std::optional<at::Tensor>(bias->contiguous()) : std::nullopt;
    // Its epilogue adds the bias and applies the activation: no pass over the output.
    implicit::implicit_conv2d(x, weight, group_idx, contiguous_bias, geometry, out, activation);
    return out;
  }
  // channels_last outputs can take the bias in cuBLASLt's epilogue; NCHW ones,
  // whose bias runs along each image's GEMM rows, cannot (bias_columns.h).
  const GemmBias plan =
      plan_gemm_bias(out, weight, bias, channels_last, allow_tf32, workspace_bytes);
  if (kept == 0) {
    // Every group pruned: the result is the bias alone (then the activation).
    if (plan.beta == 0.0f) out.zero_();
    apply_activation_(out, activation);
    return out;
  }
  if (channels_last) {
    conv_nhwc(x, plan.weight, group_idx, plan.bias_rows, out, geometry, plan.epilogue, plan.beta,
              allow_tf32, plan.budget_elements, activation);
  } else {
    // NCHW: the batched GEMMs have no epilogue here; one pass over the output.
    conv_nchw(x, plan.weight, group_idx, plan.bias_rows, out, geometry, plan.beta, allow_tf32,
              plan.budget_elements);
    apply_activation_(out, activation);
  }
  return out;
}

}  // namespace gwprune::cuda
