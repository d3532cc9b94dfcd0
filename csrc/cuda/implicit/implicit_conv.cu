// The implicit path's host side: what it takes (implicit_conv_unsupported_reason) and
// the dispatch on element type to the per-type launchers (implicit_conv_{fp16,bf16,tf32}.cu).
#include <ATen/cuda/CUDAContext.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <limits>
#include <string>

#include "gather_mainloop.cuh"
#include "implicit_conv.h"

namespace gwprune::cuda::implicit {

template <typename Elem>
void launch_implicit_conv(const at::Tensor& x, const at::Tensor& weight,
                          const at::Tensor& group_idx, const std::optional<at::Tensor>& bias,
                          const ConvGeometry& geometry, at::Tensor& out, bool channels_last,
                          Activation activation);

namespace {

bool built_for_sm90a() {
#ifdef GWPRUNE_CUDA_ARCHS
#define GWPRUNE_ARCHS_STRING_(x) #x
#define GWPRUNE_ARCHS_STRING(x) GWPRUNE_ARCHS_STRING_(x)
  const std::string archs = "_" GWPRUNE_ARCHS_STRING(GWPRUNE_CUDA_ARCHS) "_";
  return archs.find("_90a_") != std::string::npos;
#else
  return false;
#endif
}

}  // namespace

const char* implicit_conv_unsupported_reason(const at::Tensor& x, const at::Tensor& weight,
                                             const ConvGeometry& g, bool allow_tf32) {
  if (!built_for_sm90a()) return "gwprune was not built for sm_90a";
  const cudaDeviceProp* device = at::cuda::getDeviceProperties(x.get_device());
  if (device->major != 9 || device->minor != 0) return "the GPU is not sm_90";
  const auto dtype = x.scalar_type();
  if (dtype == at::kFloat && !allow_tf32) return "strict fp32 (TF32 is off)";
  if (dtype != at::kFloat && dtype != at::kHalf && dtype != at::kBFloat16)
    return "dtype is not fp16, bf16 or fp32";
  if (g.kernel_h * g.kernel_w > 64) return "more than 64 kernel taps";
  constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();
  if (x.numel() >= kInt32Max) return "x has 2^31 elements or more";
  if (x.size(0) * g.out_pixels() >= kInt32Max - kTileRows) return "too many output pixels";
  if ((weight.size(1) * weight.element_size()) % 16 != 0)
    return "packed weight rows are not 16-byte aligned";
  if (weight.size(1) == 0) return "no kept groups";
  return nullptr;
}

void implicit_conv2d(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& group_idx,
                     const std::optional<at::Tensor>& bias, const ConvGeometry& geometry,
                     at::Tensor& out, Activation activation) {
  const bool channels_last = !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast);
  switch (x.scalar_type()) {
    case at::kHalf:
      launch_implicit_conv<__half>(x, weight, group_idx, bias, geometry, out, channels_last,
                                   activation);
      break;
    case at::kBFloat16:
      launch_implicit_conv<__nv_bfloat16>(x, weight, group_idx, bias, geometry, out, channels_last,
                                          activation);
      break;
    default:
      launch_implicit_conv<float>(x, weight, group_idx, bias, geometry, out, channels_last,
                                  activation);
  }
}

}  // namespace gwprune::cuda::implicit
