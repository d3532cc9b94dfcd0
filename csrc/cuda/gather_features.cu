// Feature gather of a group-wise linear layer: out[r][k] = x[r][feature_idx[k]].
//
// One warp per row of x (per slice of a row when rows are too few to fill the
// GPU: plan_row_slices); consecutive lanes take consecutive kept features, so
// a warp's loads of sorted, mostly-consecutive features share a few sectors and
// its stores are contiguous. Each lane issues kGatherUnroll loads before it
// stores. (Lanes owning VEC consecutive features, for 16-byte stores, made
// every load instruction touch 32 sectors and ran at half the bandwidth:
// bench/NOTES.md change 12.)
// x2d is [M, in] with unit column stride and any row stride; out is
// contiguous [rows, K' + bias_columns]. Offsets are 64-bit. An index outside
// [0, in) yields zero, never an out-of-bounds read.
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>

#include <algorithm>

#include "gather.h"
#include "kernel_utils.cuh"

namespace gwprune::cuda {
namespace {

template <typename scalar_t>
__global__ void __launch_bounds__(kThreadsPerBlock)
    gather_features_kernel(const scalar_t* __restrict__ x, int64_t x_row_stride,
                           int64_t in_features, const int32_t* __restrict__ feature_idx,
                           scalar_t* __restrict__ out, int64_t row_begin, int64_t row_count,
                           int64_t num_kept, int64_t out_row_stride, RowSlices slices) {
  const int lane = threadIdx.x % kWarpSize;
  const int64_t warp_stride = static_cast<int64_t>(gridDim.x) * kWarpsPerBlock;
  for (int64_t slice = blockIdx.y; slice < slices.count; slice += gridDim.y) {
    const int64_t slice_begin = slice * slices.length;
    const int64_t slice_stop = slice_begin + slices.length;
    const int64_t slice_end = slice_stop < num_kept ? slice_stop : num_kept;
    for (int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize;
         row < row_count; row += warp_stride) {
      const scalar_t* src = x + (row_begin + row) * x_row_stride;
      scalar_t* dst = out + row * out_row_stride;
      const auto load = [&](int64_t k) {
        const int32_t feature = feature_idx[k];
        return (feature >= 0 && feature < in_features) ? __ldg(src + feature) : scalar_t(0);
      };
      int64_t k = slice_begin + lane;
      for (; k + (kGatherUnroll - 1) * kWarpSize < slice_end; k += kGatherUnroll * kWarpSize) {
        scalar_t vals[kGatherUnroll];
#pragma unroll
        for (int u = 0; u < kGatherUnroll; ++u) vals[u] = load(k + u * kWarpSize);
#pragma unroll
        for (int u = 0; u < kGatherUnroll; ++u) dst[k + u * kWarpSize] = vals[u];
      }
      for (; k < slice_end; k += kWarpSize) dst[k] = load(k);
    }
  }
}

}  // namespace

void gather_features(const at::Tensor& x2d, const at::Tensor& feature_idx, at::Tensor& out,
                     int64_t row_begin, int64_t row_count, int64_t bias_columns) {
  const int64_t num_kept = feature_idx.numel();
  if (num_kept == 0 || row_count == 0) return;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const RowSlices slices = plan_row_slices(row_count, num_kept, kWarpSize * kGatherUnroll);
  const dim3 grid(static_cast<unsigned>(warp_per_row_blocks(row_count)),
                  static_cast<unsigned>(std::min(slices.count, kMaxGridY)));
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x2d.scalar_type(), "gather_features", [&] {
        gather_features_kernel<scalar_t><<<grid, kThreadsPerBlock, 0, stream>>>(
            x2d.const_data_ptr<scalar_t>(), x2d.stride(0), x2d.size(1),
            feature_idx.const_data_ptr<int32_t>(), out.mutable_data_ptr<scalar_t>(), row_begin,
            row_count, num_kept, num_kept + bias_columns, slices);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
}

}  // namespace gwprune::cuda
