// The backend rule (docs/design.md states it). "auto" runs the implicit kernel on 16-bit
// NCHW inputs with at least 4096 output pixels in the batch and at least 512 kept columns
// (K'p), where the kernel takes the call; everything else runs the explicit path. Measured
// on an H200 (2026-12-04, bench/results/implicit-NVIDIA-H200-2026-12-04, persistent window
// kernel), NCHW fp16 / bf16 at keep .5 unless named: the implicit kernel took 0.45-0.89x
// the explicit path's time on the seed conv at keep .75 and .5, ResNet-50's 3x3 layers at
// 28², 14² and 7², VGG-16's 512 x 14² and the 1x1 1024 -> 256 at 14²; it took 1.07-1.09x
// on the seed conv at keep .25 (K'p 1152 on 50k pixels) and VGG-16's 256 x 56², 1.2-1.3x
// on ResNet-50's 64 x 56² (K'p 288: below the bound) and 2.9x at batch 1 (196 pixels: four
// tiles for 132 SMs). channels_last inputs stay explicit (the implicit kernel's row gather
// was slower on 6 of those 10 layers), and so does TF32 (row gather only, slower where
// measured: bench/NOTES.md change 18). gwprune.autotune times both per
// layer where the rule's few misses matter; strict fp32 always runs explicit.
#include "conv_backend.h"

#include "../error_message.h"
#include "implicit/implicit_conv.h"

namespace gwprune::cuda {

namespace {

constexpr int64_t kAutoImplicitMinPixels = 4096;
constexpr int64_t kAutoImplicitMinColumns = 512;

bool auto_prefers_implicit(const at::Tensor& x, const at::Tensor& weight,
                           const ConvGeometry& geometry, bool allow_tf32) {
  const auto dtype = x.scalar_type();
  if (dtype != at::kHalf && dtype != at::kBFloat16) return false;
  if (!x.is_contiguous()) return false;  // channels_last stays explicit
  if (x.size(0) * geometry.out_pixels() < kAutoImplicitMinPixels) return false;
  if (weight.size(1) < kAutoImplicitMinColumns) return false;
  return implicit::implicit_conv_unsupported_reason(x, weight, geometry, allow_tf32) == nullptr;
}

}  // namespace

ConvBackend choose_conv_backend(const std::string& requested, const at::Tensor& x,
                                const at::Tensor& weight, const ConvGeometry& geometry,
                                bool allow_tf32) {
  if (requested == "explicit") return ConvBackend::kExplicit;
  if (requested != "implicit")
    return auto_prefers_implicit(x, weight, geometry, allow_tf32) ? ConvBackend::kImplicit
                                                                  : ConvBackend::kExplicit;
  const char* why_not = implicit::implicit_conv_unsupported_reason(x, weight, geometry, allow_tf32);
  GWPRUNE_CHECK_VALUE(why_not == nullptr, "backend='implicit' cannot run this conv: ",
                      why_not == nullptr ? "" : why_not);
  return ConvBackend::kImplicit;
}

}  // namespace gwprune::cuda
