// plan_gemm_bias and the one-launch kernels behind bias_columns.h (a chain of
// ATen ops here cost more host time than the prefill they replace).
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>

#include <algorithm>
#include <type_traits>

#include "bias_columns.h"
#include "buffers.h"
#include "gemm.h"
#include "kernel_utils.cuh"

namespace gwprune::cuda {
namespace {

constexpr int64_t kOnesRows = 2;
constexpr int64_t kBiasAlignment = 16;

// Grid for a grid-stride loop over `elements`.
unsigned elementwise_blocks(int64_t elements) {
  const int64_t cap =
      static_cast<int64_t>(at::cuda::getCurrentDeviceProperties()->multiProcessorCount) * 8;
  return static_cast<unsigned>(
      std::clamp<int64_t>((elements + kThreadsPerBlock - 1) / kThreadsPerBlock, 1, cap));
}

// High part of a float as TF32 holds it: sign, exponent, 10 mantissa bits.
// inf and NaN are returned whole (their low part is then 0).
__device__ __forceinline__ float tf32_high(float value) {
  if (!isfinite(value)) return value;
  return __int_as_float(__float_as_int(value) & ~((1 << 13) - 1));
}

template <typename scalar_t>
__global__ void __launch_bounds__(kThreadsPerBlock)
    widen_weight_kernel(const scalar_t* __restrict__ weight, const scalar_t* __restrict__ bias,
                        scalar_t* __restrict__ widened, int64_t rows, int64_t kept, int64_t width,
                        bool split_for_tf32) {
  const int64_t total = rows * width;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = i / width;
    const int64_t column = i - row * width;
    scalar_t value = scalar_t(0);
    if (column < kept) {
      value = weight[row * kept + column];
    } else if (column - kept < kOnesRows) {
      value = bias[row];
      if constexpr (std::is_same_v<scalar_t, float>) {
        if (split_for_tf32) {
          const float high = tf32_high(value);
          value = column == kept ? high : (isfinite(value) ? value - high : 0.0f);
        } else if (column != kept) {
          value = 0.0f;
        }
      } else if (column != kept) {
        value = scalar_t(0);
      }
    }
    widened[i] = value;
  }
}

template <typename scalar_t>
__global__ void __launch_bounds__(kThreadsPerBlock)
    fill_bias_rows_kernel(scalar_t* __restrict__ cols, int64_t images, int64_t kept,
                          int64_t bias_rows, int64_t pixels) {
  const int64_t per_image = bias_rows * pixels;
  const int64_t total = images * per_image;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t image = i / per_image;
    const int64_t offset = i - image * per_image;  // (row - kept) * pixels + pixel
    cols[(image * (kept + bias_rows) + kept) * pixels + offset] =
        scalar_t(offset < kOnesRows * pixels ? 1 : 0);
  }
}

template <typename scalar_t>
__global__ void __launch_bounds__(kThreadsPerBlock)
    fill_with_bias_kernel(scalar_t* __restrict__ out, const scalar_t* __restrict__ bias,
                          int64_t total, int64_t inner, int64_t channels) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = bias[(i / inner) % channels];
  }
}

}  // namespace

void fill_with_bias(void* data, at::ScalarType dtype, int64_t total, const at::Tensor& bias,
                    int64_t inner) {
  const int64_t channels = bias.numel();
  if (total == 0 || channels == 0) return;
  TORCH_CHECK(bias.scalar_type() == dtype, "gwprune: bias and output dtypes differ");
  const at::Tensor bias_values = bias.contiguous();
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "fill_with_bias", [&] {
    fill_with_bias_kernel<scalar_t><<<elementwise_blocks(total), kThreadsPerBlock, 0, stream>>>(
        static_cast<scalar_t*>(data), bias_values.const_data_ptr<scalar_t>(), total,
        std::max<int64_t>(inner, 1), channels);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

int64_t bias_rows_for(int64_t kept) {
  const int64_t padded = (kept + kOnesRows + kBiasAlignment - 1) / kBiasAlignment * kBiasAlignment;
  return padded - kept;
}

at::Tensor widen_weight_with_bias(const at::Tensor& weight, const at::Tensor& bias,
                                  bool split_for_tf32) {
  const int64_t rows = weight.size(0);
  const int64_t kept = weight.size(1);
  const int64_t width = kept + bias_rows_for(kept);
  at::Tensor widened = at::empty({rows, width}, weight.options());
  const at::Tensor bias_values = bias.contiguous();
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, weight.scalar_type(), "widen_weight_with_bias", [&] {
        widen_weight_kernel<scalar_t>
            <<<elementwise_blocks(widened.numel()), kThreadsPerBlock, 0, stream>>>(
                weight.const_data_ptr<scalar_t>(), bias_values.const_data_ptr<scalar_t>(),
                widened.mutable_data_ptr<scalar_t>(), rows, kept, width, split_for_tf32);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  return widened;
}

GemmBias plan_gemm_bias(at::Tensor& out, const at::Tensor& weight,
                        const std::optional<at::Tensor>& bias, bool epilogue_allowed,
                        bool allow_tf32, int64_t workspace_bytes) {
  const int64_t kept = weight.size(1);
  const bool has_bias = kept > 0 && bias.has_value();
  GemmBias plan;
  plan.weight = weight;
  plan.budget_elements = workspace_bytes / weight.element_size();
  if (has_bias && epilogue_allowed && bias_epilogue_supported(weight.scalar_type(), allow_tf32)) {
    plan.epilogue = bias->contiguous();
  } else if (has_bias) {
    const int64_t widened = weight.size(0) * (kept + bias_rows_for(kept));
    if (out.numel() >= 8 * widened && 4 * widened <= plan.budget_elements) {
      plan.weight =
          widen_weight_with_bias(weight, *bias, weight.scalar_type() == at::kFloat && allow_tf32);
      plan.bias_rows = bias_rows_for(kept);
      plan.budget_elements -= widened;
    }
  }
  plan.budget_elements = std::max<int64_t>(plan.budget_elements, kept);
  const bool bias_in_gemm = plan.epilogue.defined() || plan.bias_rows > 0;
  plan.beta = prepare_output(out, bias_in_gemm ? std::nullopt : bias);
  return plan;
}

void fill_bias_rows(at::Tensor& cols, int64_t blocks, int64_t kept, int64_t width) {
  const int64_t bias_rows = bias_rows_for(kept);
  const int64_t total = blocks * bias_rows * width;
  if (total == 0) return;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, cols.scalar_type(), "fill_bias_rows", [&] {
        fill_bias_rows_kernel<scalar_t><<<elementwise_blocks(total), kThreadsPerBlock, 0, stream>>>(
            cols.mutable_data_ptr<scalar_t>(), blocks, kept, bias_rows, width);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
}

}  // namespace gwprune::cuda
