// The epilogue of the implicit conv: a consumer warpgroup's 64 x BN fp32 accumulators
// (wgmma's fragment layout) plus the bias become the output in x's layout.
//
// Fragment layout of m64nN: thread t of the warpgroup holds rows r0 = 16 * (t / 32) +
// (t % 32) / 4 and r0 + 8; for each j < N / 8 the columns c = 8j + 2 (t % 4) and c + 1:
//   d[4j + 0] = (r0, c), d[4j + 1] = (r0, c + 1), d[4j + 2] = (r0 + 8, c), d[4j + 3] = (r0 + 8, c +
//   1).
// The tile goes through shared memory (the drained pipeline stages) so global stores
// are 16-byte vectors along Cout (channels_last) or runs of consecutive pixels (NCHW).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "gather_mainloop.cuh"

namespace gwprune::cuda::implicit {

__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_float(float v) { return v; }

template <typename Elem>
__device__ __forceinline__ Elem from_float(float v);
template <>
__device__ __forceinline__ __half from_float<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <>
__device__ __forceinline__ float from_float<float>(float v) {
  return v;
}

#ifdef GWPRUNE_SM90A_DEVICE

// Stages one warpgroup's tile in `staging` and stores it. `first_row` is the tile's first
// row (output pixels flat over images, row_pitch per image: rows past an image's
// pixels are the run gather's padding and are not stored), `first_col` its first output channel;
// `barrier_id` names this warpgroup's own barrier (128 threads).
template <typename Elem, int BN, bool ChannelsLast>
__device__ __forceinline__ void store_tile(const ConvProblem& p, const float (&acc)[BN / 2],
                                           uint8_t* staging, int first_row, int first_col,
                                           int thread, int barrier_id) {
  constexpr int kRows = 64;
  constexpr int kElem = sizeof(Elem);
  // channels_last stages [row][col], NCHW [col][row]; 16 bytes of padding per line
  // spread the fragment writes over all banks.
  constexpr int kPitch = ChannelsLast ? BN * kElem + 16 : kRows * kElem + 16;
  const uint32_t staging_address = smem_address(staging);
  const Elem* bias = static_cast<const Elem*>(p.bias);
  const int warp = thread / 32, lane = thread % 32;
  const int r0 = warp * 16 + lane / 4;
#pragma unroll
  for (int j = 0; j < BN / 8; ++j) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int c = 8 * j + 2 * (lane % 4) + h;
      const int channel = first_col + c;
      const float b = (bias != nullptr && channel < p.out_channels) ? to_float(bias[channel]) : 0.f;
#pragma unroll
      for (int half_row = 0; half_row < 2; ++half_row) {
        const int r = r0 + 8 * half_row;
        const Elem value = from_float<Elem>(acc[4 * j + 2 * half_row + h] + b);
        const int offset = ChannelsLast ? r * kPitch + c * kElem : c * kPitch + r * kElem;
        store_shared(staging_address + offset, value);
      }
    }
  }
  named_barrier_sync(barrier_id, 128);

  if constexpr (ChannelsLast) {
    // Row r of the tile is output pixel first_row + r: Cout contiguous values.
    constexpr int kVector = 16 / kElem;
    constexpr int kVectorsPerRow = BN / kVector;
    const bool aligned = (p.out_channels % kVector) == 0;
    Elem* out = static_cast<Elem*>(p.out);
    for (int v = thread; v < kRows * kVectorsPerRow; v += 128) {
      const int r = v / kVectorsPerRow;
      const int c = (v - r * kVectorsPerRow) * kVector;
      const int row = first_row + r;
      const int channel = first_col + c;
      if (row >= p.rows || channel >= p.out_channels) continue;
      const uint32_t source = staging_address + r * kPitch + c * kElem;
      Elem* target = out + static_cast<int64_t>(row) * p.out_channels + channel;
      if (aligned && channel + kVector <= p.out_channels) {
        *reinterpret_cast<uint4*>(target) = load_shared<uint4>(source);
      } else {
        for (int e = 0; e < kVector && channel + e < p.out_channels; ++e)
          target[e] = load_shared<Elem>(source + e * kElem);
      }
    }
  } else {
    // Column c is output channel first_col + c; consecutive rows are consecutive
    // pixels of one image, so consecutive threads store consecutive addresses.
    Elem* out = static_cast<Elem*>(p.out);
    const int r = thread % kRows;
    const int row = first_row + r;
    const int n = row / p.row_pitch;
    const int pixel = row - n * p.row_pitch;
    if (row < p.rows && pixel < p.out_pixels) {
      Elem* image_out = out + static_cast<int64_t>(n) * p.out_channels * p.out_pixels + pixel;
      for (int c = thread / kRows; c < BN; c += 128 / kRows) {
        const int channel = first_col + c;
        if (channel >= p.out_channels) break;
        image_out[static_cast<int64_t>(channel) * p.out_pixels] =
            load_shared<Elem>(staging_address + c * kPitch + r * kElem);
      }
    }
  }
}

#endif  // GWPRUNE_SM90A_DEVICE

}  // namespace gwprune::cuda::implicit
