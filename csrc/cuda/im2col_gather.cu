// Fused im2col + gather: reads x once per kept (c, i, j) tap and writes only the
// kept rows of the input-expansion matrix, in the layout cuBLAS consumes.
//
// Layout contracts (all offsets 64-bit):
//   NCHW:  x [N, C, H, W] contiguous -> cols [images][K'][pixels], pixels
//          contiguous; one warp per (image, kept group) row, lanes walk output
//          pixels so loads along w and stores along the row are coalesced.
//   NHWC:  x [N, H, W, C] (channels_last) -> cols [pixels][K'], kept groups
//          contiguous; one warp per output pixel, lanes walk kept groups, so
//          consecutive kept channels of one tap are consecutive loads.
// A group index outside [0, C*kh*kw) yields zeros, never an out-of-bounds read
// (indices are validated before launch; this is the memory-safety backstop).
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>

#include "gather.h"
#include "kernel_utils.cuh"

namespace gwprune::cuda {
namespace {

struct Tap {
  int64_t channel;
  int64_t dh;  // row offset of the tap: i * dilation_h - pad_h
  int64_t dw;  // column offset of the tap: j * dilation_w - pad_w
  bool valid;
};

__device__ __forceinline__ Tap decode_group(int32_t group, const ConvGeometry& g) {
  Tap tap;
  const int64_t taps = g.kernel_h * g.kernel_w;
  tap.valid = group >= 0 && group < g.channels * taps;
  const int64_t safe = tap.valid ? group : 0;
  tap.channel = safe / taps;
  const int64_t t = safe - tap.channel * taps;
  const int64_t i = t / g.kernel_w;
  const int64_t j = t - i * g.kernel_w;
  tap.dh = i * g.dilation_h - g.pad_h;
  tap.dw = j * g.dilation_w - g.pad_w;
  return tap;
}

template <typename scalar_t, int VEC>
__global__ void __launch_bounds__(kThreadsPerBlock)
    im2col_gather_nchw_kernel(const scalar_t* __restrict__ x,
                              const int32_t* __restrict__ group_idx,
                              scalar_t* __restrict__ cols, const ConvGeometry g,
                              int64_t image_begin, int64_t num_rows, int64_t num_kept,
                              int64_t pixel_begin, int64_t pixel_count) {
  const int lane = threadIdx.x % kWarpSize;
  const int64_t warp_stride = static_cast<int64_t>(gridDim.x) * kWarpsPerBlock;
  const int64_t plane = g.height * g.width;
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize;
       row < num_rows; row += warp_stride) {
    const int64_t image = row / num_kept;
    const Tap tap = decode_group(group_idx[row - image * num_kept], g);
    const scalar_t* src = x + ((image_begin + image) * g.channels + tap.channel) * plane;
    scalar_t* dst = cols + row * pixel_count;
    for (int64_t p = static_cast<int64_t>(lane) * VEC; p < pixel_count;
         p += static_cast<int64_t>(kWarpSize) * VEC) {
      int64_t oh = (pixel_begin + p) / g.out_w;
      int64_t ow = (pixel_begin + p) - oh * g.out_w;
      scalar_t vals[VEC];
#pragma unroll
      for (int v = 0; v < VEC; ++v) {
        const int64_t h = oh * g.stride_h + tap.dh;
        const int64_t w = ow * g.stride_w + tap.dw;
        const bool inside = tap.valid && h >= 0 && h < g.height && w >= 0 && w < g.width;
        vals[v] = inside ? src[h * g.width + w] : scalar_t(0);
        if (++ow == g.out_w) {
          ow = 0;
          ++oh;
        }
      }
      store_vector<scalar_t, VEC>(dst + p, vals);
    }
  }
}

template <typename scalar_t, int VEC>
__global__ void __launch_bounds__(kThreadsPerBlock)
    im2col_gather_nhwc_kernel(const scalar_t* __restrict__ x,
                              const int32_t* __restrict__ group_idx,
                              scalar_t* __restrict__ cols, const ConvGeometry g,
                              int64_t pixel_begin, int64_t pixel_count, int64_t num_kept) {
  const int lane = threadIdx.x % kWarpSize;
  const int64_t warp_stride = static_cast<int64_t>(gridDim.x) * kWarpsPerBlock;
  const int64_t out_pixels = g.out_pixels();
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize;
       row < pixel_count; row += warp_stride) {
    const int64_t flat = pixel_begin + row;
    const int64_t image = flat / out_pixels;
    const int64_t pixel = flat - image * out_pixels;
    const int64_t oh = pixel / g.out_w;
    const int64_t h0 = oh * g.stride_h;
    const int64_t w0 = (pixel - oh * g.out_w) * g.stride_w;
    const scalar_t* src = x + image * g.height * g.width * g.channels;
    scalar_t* dst = cols + row * num_kept;
    for (int64_t k = static_cast<int64_t>(lane) * VEC; k < num_kept;
         k += static_cast<int64_t>(kWarpSize) * VEC) {
      scalar_t vals[VEC];
#pragma unroll
      for (int v = 0; v < VEC; ++v) {
        const Tap tap = decode_group(group_idx[k + v], g);
        const int64_t h = h0 + tap.dh;
        const int64_t w = w0 + tap.dw;
        const bool inside = tap.valid && h >= 0 && h < g.height && w >= 0 && w < g.width;
        vals[v] = inside ? src[(h * g.width + w) * g.channels + tap.channel] : scalar_t(0);
      }
      store_vector<scalar_t, VEC>(dst + k, vals);
    }
  }
}

// Calls launch.template operator()<VEC>() with the widest vector width that
// divides row_length (see pick_vector_width).
template <typename scalar_t, typename Launch>
void dispatch_vector_width(int64_t row_length, Launch&& launch) {
  switch (pick_vector_width<scalar_t>(row_length)) {
    case 8:
      if constexpr (sizeof(scalar_t) <= 2) return launch.template operator()<8>();
      break;
    case 4:
      if constexpr (sizeof(scalar_t) <= 4) return launch.template operator()<4>();
      break;
    case 2:
      return launch.template operator()<2>();
    default:
      break;
  }
  launch.template operator()<1>();
}

}  // namespace

void im2col_gather_nchw(const at::Tensor& x, const at::Tensor& group_idx, at::Tensor& cols,
                        const ConvGeometry& geometry, int64_t image_begin, int64_t image_count,
                        int64_t pixel_begin, int64_t pixel_count) {
  const int64_t num_kept = group_idx.numel();
  const int64_t num_rows = image_count * num_kept;
  if (num_rows == 0 || pixel_count == 0) return;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const auto blocks = static_cast<unsigned>(warp_per_row_blocks(num_rows));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "im2col_gather_nchw",
                                  [&] {
                                    dispatch_vector_width<scalar_t>(pixel_count, [&]<int VEC>() {
                                      im2col_gather_nchw_kernel<scalar_t, VEC>
                                          <<<blocks, kThreadsPerBlock, 0, stream>>>(
                                              x.const_data_ptr<scalar_t>(),
                                              group_idx.const_data_ptr<int32_t>(),
                                              cols.mutable_data_ptr<scalar_t>(), geometry,
                                              image_begin, num_rows, num_kept, pixel_begin,
                                              pixel_count);
                                      C10_CUDA_KERNEL_LAUNCH_CHECK();
                                    });
                                  });
}

void im2col_gather_nhwc(const at::Tensor& x, const at::Tensor& group_idx, at::Tensor& cols,
                        const ConvGeometry& geometry, int64_t pixel_begin, int64_t pixel_count) {
  const int64_t num_kept = group_idx.numel();
  if (num_kept == 0 || pixel_count == 0) return;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const auto blocks = static_cast<unsigned>(warp_per_row_blocks(pixel_count));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "im2col_gather_nhwc",
                                  [&] {
                                    dispatch_vector_width<scalar_t>(num_kept, [&]<int VEC>() {
                                      im2col_gather_nhwc_kernel<scalar_t, VEC>
                                          <<<blocks, kThreadsPerBlock, 0, stream>>>(
                                              x.const_data_ptr<scalar_t>(),
                                              group_idx.const_data_ptr<int32_t>(),
                                              cols.mutable_data_ptr<scalar_t>(), geometry,
                                              pixel_begin, pixel_count, num_kept);
                                      C10_CUDA_KERNEL_LAUNCH_CHECK();
                                    });
                                  });
}

}  // namespace gwprune::cuda
