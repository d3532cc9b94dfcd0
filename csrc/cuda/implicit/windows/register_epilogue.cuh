// The persistent window kernel's NCHW epilogue: a consumer warpgroup's 64 x BN fp32
// accumulators (wgmma's fragment layout, ../epilogue.cuh) plus the bias, then the activation
// (add_bias_and_activate, as in the shared epilogue), go straight from registers to the output,
// with no shared memory, so the producer can fill the next tile's stages meanwhile and the
// consumers start that tile as soon as their stores are issued.
//
// Thread t of a warp holds rows r and r + 8 (r = t / 4 within the warp's 16) of columns
// c and c + 1 (c = 2 (t % 4) + 8 j). It trades one packed pair per row with lane t ^ 4,
// which holds row r ^ 1: the even row's lane keeps column c of rows r, r + 1 and the odd
// row's lane column c + 1 of rows r - 1, r, each then one 4-byte store of two consecutive
// pixels of one channel. Contract: the image's output pixels are even (so a pair never
// crosses an image and every pair is 4-byte aligned) and so is the output's base.
#pragma once

#include <cstdint>

#include "../epilogue.cuh"

namespace gwprune::cuda::implicit::windows {

// Where the register epilogue applies (its contract above): the pixel count, known when the
// kernel is chosen, and the output, known at launch.
inline bool register_epilogue_takes_pixels(int64_t out_pixels) { return out_pixels % 2 == 0; }
inline bool register_epilogue_applies(int64_t out_pixels, const void* out) {
  return register_epilogue_takes_pixels(out_pixels) && reinterpret_cast<uintptr_t>(out) % 4 == 0;
}

#ifdef GWPRUNE_SM90A_DEVICE

template <typename Elem>
__device__ __forceinline__ uint32_t pack_pair(float low, float high) {
  const Elem l = from_float<Elem>(low), h = from_float<Elem>(high);
  uint16_t low_bits, high_bits;
  memcpy(&low_bits, &l, 2);
  memcpy(&high_bits, &h, 2);
  return static_cast<uint32_t>(low_bits) | (static_cast<uint32_t>(high_bits) << 16);
}

// acc is overwritten (add_bias_and_activate). Each warp stores its own 16 rows: a warp may
// store while the others of its warpgroup do not (k_slices.cuh). Without an activation the
// bias is added as each pair is packed, as before the activations came (v10a): adding it to
// the whole tile first measured ~7 % slower on the seed conv (bench/NOTES.md change 29).
template <typename Elem, int BN, bool Activates>
__device__ __forceinline__ void store_tile_nchw_registers(const ConvProblem& p,
                                                          float (&acc)[BN / 2], int first_row,
                                                          int first_col, int thread) {
  const int warp = thread / 32, lane = thread % 32;
  if constexpr (Activates) add_bias_and_activate<Elem, BN>(p, acc, first_col, lane);
  const Elem* bias = Activates ? nullptr : static_cast<const Elem*>(p.bias);
  const bool odd_row = (lane >> 2) & 1;
  // The pair this lane stores: its own column (c) or its neighbour's (c + 1), from the
  // even one of the two rows.
  const int pair_row = 16 * warp + (lane / 4 & ~1);
  const int column = first_col + 2 * (lane % 4) + (odd_row ? 1 : 0);
  Elem* out = static_cast<Elem*>(p.out);
  Elem* row_base[2] = {nullptr, nullptr};
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int row = first_row + pair_row + 8 * half;
    if (row < p.rows) {
      const int n = row / p.out_pixels;
      row_base[half] =
          out + static_cast<int64_t>(n) * p.out_channels * p.out_pixels + (row - n * p.out_pixels);
    }
  }
#pragma unroll
  for (int j = 0; j < BN / 8; ++j) {
    const int own = first_col + 8 * j + 2 * (lane % 4);  // this lane's columns own, own + 1
    float b0 = 0.f, b1 = 0.f;
    if (bias != nullptr) {
      if (own < p.out_channels) b0 = to_float(bias[own]);
      if (own + 1 < p.out_channels) b1 = to_float(bias[own + 1]);
    }
    const int channel = column + 8 * j;
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      // This lane's own pair of columns (own, own + 1) of row r (half 0) or r + 8.
      const uint32_t mine =
          pack_pair<Elem>(acc[4 * j + 2 * half] + b0, acc[4 * j + 2 * half + 1] + b1);
      const uint32_t theirs = __shfl_xor_sync(0xffffffffu, mine, 4);
      // Even row: column own of rows r, r + 1; odd row: column own + 1 of rows r - 1, r.
      const uint32_t pair =
          odd_row ? __byte_perm(theirs, mine, 0x7632) : __byte_perm(mine, theirs, 0x5410);
      if (row_base[half] != nullptr && channel < p.out_channels)
        *reinterpret_cast<uint32_t*>(row_base[half] +
                                     static_cast<int64_t>(channel) * p.out_pixels) = pair;
    }
  }
}

#endif  // GWPRUNE_SM90A_DEVICE

}  // namespace gwprune::cuda::implicit::windows
