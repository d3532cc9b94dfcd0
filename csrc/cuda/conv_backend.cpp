// The backend rule (docs/design.md states it). "auto" runs the explicit path: on an
// H200 (2026-12-02, bench/results/implicit-NVIDIA-H200-2026-12-02, v6c) the implicit
// kernel reaches 120-370 TFLOP/s in fp16 and is slower than gather + cuBLAS on the seed
// conv at keep .5 and .25, at batch 1 and on channels_last inputs, faster on some NCHW
// layers (the seed conv at keep .75, ResNet-50's 3x3 at 14 x 14 and 28 x 28). Until it
// wins broadly, a layer runs implicit when asked ("implicit", e.g. by gwprune.autotune
// after timing both) and the kernel can take it (implicit_conv_unsupported_reason: sm_90
// GPU, sm_90a build, fp16 / bf16 / TF32, at most 64 taps, 32-bit offsets); strict fp32
// always runs explicit.
#include "conv_backend.h"

#include "../error_message.h"
#include "implicit/implicit_conv.h"

namespace gwprune::cuda {

ConvBackend choose_conv_backend(const std::string& requested, const at::Tensor& x,
                                const at::Tensor& weight, const ConvGeometry& geometry,
                                bool allow_tf32) {
  if (requested != "implicit") return ConvBackend::kExplicit;
  const char* why_not = implicit::implicit_conv_unsupported_reason(x, weight, geometry, allow_tf32);
  GWPRUNE_CHECK_VALUE(why_not == nullptr, "backend='implicit' cannot run this conv: ",
                      why_not == nullptr ? "" : why_not);
  return ConvBackend::kImplicit;
}

}  // namespace gwprune::cuda
