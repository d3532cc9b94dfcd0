// Fused im2col + gather: reads x once per kept (c, i, j) tap and writes only the
// kept rows of the input-expansion matrix, in the layout cuBLAS consumes.
//
// Layout contracts (all offsets 64-bit):
//   NCHW:  x [N, C, H, W] contiguous -> cols [images][K'][pixels], pixels
//          contiguous; one warp per (image, kept group) row, lanes walk output
//          pixels so loads along w and stores along the row are coalesced.
//   NHWC:  x [N, H, W, C] (channels_last) -> cols [pixels][K'], kept groups
//          contiguous; one warp per output pixel, consecutive lanes take
//          consecutive kept groups, so with the tap-major order packing uses
//          for channels_last (consecutive channels of one tap) both the loads
//          and the stores are coalesced. (Vector stores of VEC groups per lane
//          made the loads strided and ran slower in fp16: bench/NOTES.md.)
//          Each lane issues kGatherUnroll loads before it stores: with one
//          load in flight per warp, small-channel layers (C = 64) were
//          latency-bound at a third of the write bandwidth.
// Rows too few to fill the GPU are cut into slices along their length, a
// warp per (row, slice): see plan_row_slices.
// Both conv gathers can leave bias_rows rows (NCHW) or columns (NHWC) free
// after each image's or pixel's kept groups for fill_bias_rows (bias_columns.h).
// A group index outside [0, C*kh*kw) yields zeros, never an out-of-bounds read
// (indices are validated before launch; this is the memory-safety backstop).
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>

#include <algorithm>

#include "gather.h"
#include "kernel_utils.cuh"

namespace gwprune::cuda {
namespace {

// One kept group resolved to its input channel (-1: padding or out of range,
// contributes zeros) and its (row, column) offset relative to an output
// pixel's window origin. 8 bytes so a 4096-entry table fits shared memory;
// 32-bit because 64-bit division would dominate the kernel. The host checks
// that C*kh*kw, H*W fit int32 and the offsets fit int16 (check_conv_fits_32bit).
struct Tap {
  int channel;
  int16_t dh;  // i * dilation_h - pad_h
  int16_t dw;  // j * dilation_w - pad_w
};

__device__ __forceinline__ Tap decode_group(int32_t group, const ConvGeometry& g) {
  const int kernel_w = static_cast<int>(g.kernel_w);
  const int taps = static_cast<int>(g.kernel_h) * kernel_w;
  if (group < 0 || group >= static_cast<int>(g.channels) * taps) return Tap{-1, 0, 0};
  const int channel = group / taps;
  const int t = group - channel * taps;
  const int i = t / kernel_w;
  const int j = t - i * kernel_w;
  return Tap{channel,
             static_cast<int16_t>(i * static_cast<int>(g.dilation_h) - static_cast<int>(g.pad_h)),
             static_cast<int16_t>(j * static_cast<int>(g.dilation_w) - static_cast<int>(g.pad_w))};
}

template <typename scalar_t, int VEC>
__global__ void __launch_bounds__(kThreadsPerBlock)
    im2col_gather_nchw_kernel(const scalar_t* __restrict__ x, const int32_t* __restrict__ group_idx,
                              scalar_t* __restrict__ cols, const ConvGeometry g,
                              int64_t image_begin, int64_t num_rows, int64_t num_kept,
                              int64_t bias_rows, int64_t pixel_begin, int64_t pixel_count,
                              RowSlices slices) {
  const int lane = threadIdx.x % kWarpSize;
  const int64_t warp_stride = static_cast<int64_t>(gridDim.x) * kWarpsPerBlock;
  const int height = static_cast<int>(g.height), width = static_cast<int>(g.width);
  const int out_w = static_cast<int>(g.out_w);
  const int stride_h = static_cast<int>(g.stride_h), stride_w = static_cast<int>(g.stride_w);
  for (int64_t slice = blockIdx.y; slice < slices.count; slice += gridDim.y) {
    // pixel_count <= kMaxGatherPixels (2^30): the pixel loop stays clear of int overflow.
    const int slice_begin = static_cast<int>(slice * slices.length);
    const int64_t slice_stop = (slice + 1) * slices.length;
    const int slice_end = static_cast<int>(slice_stop < pixel_count ? slice_stop : pixel_count);
    for (int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize;
         row < num_rows; row += warp_stride) {
      const int64_t image = row / num_kept;
      const Tap tap = decode_group(group_idx[row - image * num_kept], g);
      const bool valid = tap.channel >= 0;
      const scalar_t* src =
          x + ((image_begin + image) * g.channels + (valid ? tap.channel : 0)) * g.height * g.width;
      scalar_t* dst = cols + (row + image * bias_rows) * pixel_count;
      for (int p = slice_begin + lane * VEC; p < slice_end; p += kWarpSize * VEC) {
        const int flat = static_cast<int>(pixel_begin) + p;
        int oh = flat / out_w;
        int ow = flat - oh * out_w;
        scalar_t vals[VEC];
#pragma unroll
        for (int v = 0; v < VEC; ++v) {
          const int h = oh * stride_h + tap.dh;
          const int w = ow * stride_w + tap.dw;
          const bool inside = valid && h >= 0 && h < height && w >= 0 && w < width;
          vals[v] = inside ? src[h * width + w] : scalar_t(0);
          if (++ow == out_w) {
            ow = 0;
            ++oh;
          }
        }
        store_vector<scalar_t, VEC>(dst + p, vals);
      }
    }
  }
}

// Each block resolves the kept groups of its slice once into shared memory,
// so the per-element work is a table read, two compares and a load. Rows are
// sliced so that no slice has more than kMaxTableTaps groups.
constexpr int kMaxTableTaps = 4096;

template <typename scalar_t>
__global__ void __launch_bounds__(kThreadsPerBlock)
    im2col_gather_nhwc_kernel(const scalar_t* __restrict__ x, const int32_t* __restrict__ group_idx,
                              scalar_t* __restrict__ cols, const ConvGeometry g,
                              int64_t pixel_begin, int64_t pixel_count, int64_t num_kept,
                              int64_t row_stride, RowSlices slices) {
  __shared__ Tap table[kMaxTableTaps];
  const int lane = threadIdx.x % kWarpSize;
  const int64_t warp_stride = static_cast<int64_t>(gridDim.x) * kWarpsPerBlock;
  const int64_t out_pixels = g.out_pixels();
  const int height = static_cast<int>(g.height), width = static_cast<int>(g.width);
  const int channels = static_cast<int>(g.channels);
  for (int64_t slice = blockIdx.y; slice < slices.count; slice += gridDim.y) {
    const int64_t slice_begin = slice * slices.length;
    const int64_t slice_stop = slice_begin + slices.length;
    const int slice_size =
        static_cast<int>((slice_stop < num_kept ? slice_stop : num_kept) - slice_begin);
    __syncthreads();  // every warp is done with the previous slice's table
    for (int k = threadIdx.x; k < slice_size; k += blockDim.x)
      table[k] = decode_group(group_idx[slice_begin + k], g);
    __syncthreads();
    for (int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize;
         row < pixel_count; row += warp_stride) {
      const int64_t flat = pixel_begin + row;
      const int64_t image = flat / out_pixels;
      const int pixel = static_cast<int>(flat - image * out_pixels);
      const int oh = pixel / static_cast<int>(g.out_w);
      const int h0 = oh * static_cast<int>(g.stride_h);
      const int w0 = (pixel - oh * static_cast<int>(g.out_w)) * static_cast<int>(g.stride_w);
      const scalar_t* src = x + image * g.height * g.width * g.channels;
      scalar_t* dst = cols + row * row_stride + slice_begin;
      const auto load = [&](const Tap tap) {
        const int h = h0 + tap.dh;
        const int w = w0 + tap.dw;
        const bool inside = tap.channel >= 0 && h >= 0 && h < height && w >= 0 && w < width;
        return inside ? __ldg(src + (static_cast<int64_t>(h) * width + w) * channels + tap.channel)
                      : scalar_t(0);
      };
      int k = lane;
      for (; k + (kGatherUnroll - 1) * kWarpSize < slice_size; k += kGatherUnroll * kWarpSize) {
        scalar_t vals[kGatherUnroll];
#pragma unroll
        for (int u = 0; u < kGatherUnroll; ++u) vals[u] = load(table[k + u * kWarpSize]);
#pragma unroll
        for (int u = 0; u < kGatherUnroll; ++u) dst[k + u * kWarpSize] = vals[u];
      }
      for (; k < slice_size; k += kWarpSize) dst[k] = load(table[k]);
    }
  }
}

}  // namespace

void im2col_gather_nchw(const at::Tensor& x, const at::Tensor& group_idx, at::Tensor& cols,
                        const ConvGeometry& geometry, int64_t image_begin, int64_t image_count,
                        int64_t pixel_begin, int64_t pixel_count, int64_t bias_rows) {
  const int64_t num_kept = group_idx.numel();
  const int64_t num_rows = image_count * num_kept;
  if (num_rows == 0 || pixel_count == 0) return;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(), "im2col_gather_nchw", [&] {
        dispatch_vector_width<scalar_t>(pixel_count, [&]<int VEC>() {
          const RowSlices slices = plan_row_slices(num_rows, pixel_count, kWarpSize * VEC);
          const dim3 grid(static_cast<unsigned>(warp_per_row_blocks(num_rows)),
                          static_cast<unsigned>(std::min(slices.count, kMaxGridY)));
          im2col_gather_nchw_kernel<scalar_t, VEC><<<grid, kThreadsPerBlock, 0, stream>>>(
              x.const_data_ptr<scalar_t>(), group_idx.const_data_ptr<int32_t>(),
              cols.mutable_data_ptr<scalar_t>(), geometry, image_begin, num_rows, num_kept,
              bias_rows, pixel_begin, pixel_count, slices);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        });
      });
}

void im2col_gather_nhwc(const at::Tensor& x, const at::Tensor& group_idx, at::Tensor& cols,
                        const ConvGeometry& geometry, int64_t pixel_begin, int64_t pixel_count,
                        int64_t bias_rows) {
  const int64_t num_kept = group_idx.numel();
  if (num_kept == 0 || pixel_count == 0) return;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const RowSlices slices = plan_row_slices(pixel_count, num_kept, kWarpSize, kMaxTableTaps);
  const dim3 grid(static_cast<unsigned>(warp_per_row_blocks(pixel_count)),
                  static_cast<unsigned>(std::min(slices.count, kMaxGridY)));
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(), "im2col_gather_nhwc", [&] {
        im2col_gather_nhwc_kernel<scalar_t><<<grid, kThreadsPerBlock, 0, stream>>>(
            x.const_data_ptr<scalar_t>(), group_idx.const_data_ptr<int32_t>(),
            cols.mutable_data_ptr<scalar_t>(), geometry, pixel_begin, pixel_count, num_kept,
            num_kept + bias_rows, slices);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
}

}  // namespace gwprune::cuda
