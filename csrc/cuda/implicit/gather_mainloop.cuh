// The producer warpgroup of the implicit conv: it fills each pipeline stage with
//   A: a [128 output pixels x BK kept groups] tile gathered from x, and
//   B: the packed weight's [BN output channels x BK kept groups] tile (one TMA copy),
// both K-major in shared memory in the 128-byte swizzle that wgmma reads.
//
// A(m, k) = x[row_base(m) + group_offset(k)] when tap(k) is inside the image for pixel
// m, else 0 (the conv's zero padding). row_base and the 64-bit mask of a pixel's valid
// taps are computed once per tile by the producer thread that owns the row (the tile's
// pixels are fixed for its whole K loop); group_offset and tap are decoded from
// group_idx per stage. The same address rule
// serves both layouts; only the lane mapping differs, so loads stay coalesced:
// - channels_last: consecutive lanes take consecutive kept groups of one pixel (the
//   packed order puts the channels of one tap next to each other);
// - NCHW: consecutive lanes take consecutive pixels of one kept group (one channel's
//   shifted window), and each lane packs 16 bytes of its row before storing.
// Either way a producer thread has 64 (16-bit) or 32 (TF32) loads of a stage in flight.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "sm90_primitives.cuh"
#include "wgmma_ops.cuh"

namespace gwprune::cuda::implicit {

constexpr int kTileRows = 128;  // output pixels per tile (two consumer warpgroups)
constexpr int kRowBytes = 128;  // one K slice of a row: the swizzle width
constexpr int kProducerThreads = 128;

// Host and device where the file is compiled by nvcc (the window kernels size each CTA's
// ring on the device), host only where a C++ compiler includes it.
#ifdef __CUDACC__
#define GWPRUNE_HOST_DEVICE __host__ __device__
#else
#define GWPRUNE_HOST_DEVICE
#endif

// n / d for 0 <= n < 2^31 by a multiply-high and a shift (the round-up method that
// CUTLASS's FastDivmod uses): group_idx is decoded on the producer every stage, where two
// integer divisions were about 70 of its instructions per part.
struct FastDivision {
  uint32_t divisor = 1, multiplier = 0, shift = 0;

  GWPRUNE_HOST_DEVICE static FastDivision of(int32_t divisor) {
    FastDivision d;
    d.divisor = static_cast<uint32_t>(divisor);
    if (divisor > 1) {
      uint32_t log2_ceil = 0;
      while ((1u << log2_ceil) < d.divisor) ++log2_ceil;
      const uint32_t p = 31 + log2_ceil;
      d.multiplier = static_cast<uint32_t>(((uint64_t{1} << p) + d.divisor - 1) / d.divisor);
      d.shift = p - 32;
    }
    return d;
  }
#ifdef __CUDACC__
  __device__ __forceinline__ int32_t divide(int32_t n) const {
    return divisor == 1
               ? n
               : static_cast<int32_t>(__umulhi(static_cast<uint32_t>(n), multiplier) >> shift);
  }
#endif
};

// The activation the epilogue applies (epilogue.cuh): gwprune::Activation's values, mirrored
// here because activation.h is host code (a static_assert by make_problem checks them).
enum class EpilogueActivation : int32_t { kNone, kRelu, kRelu6, kSilu, kGelu, kGeluTanh };

// Problem description shared by every piece of the kernel (element strides of x).
struct ConvProblem {
  const void* x;
  void* out;
  const void* bias;  // nullptr: no bias
  const int32_t* group_idx;
  int32_t rows;       // tile rows: N * row_pitch
  int32_t row_pitch;  // tile rows per image: OH * OW, or rounded up to 8 for the run gather
  int32_t out_channels, kept_padded;
  int32_t height, width, out_h, out_w, out_pixels;
  int32_t kernel_h, kernel_w, taps;
  FastDivision by_taps, by_kernel_w;  // decode group = (c * taps + i * kernel_w + j)
  int32_t stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w;
  int32_t x_stride_n, x_stride_c, x_stride_h, x_stride_w;
  int32_t x_span;  // elements from x's first to its last, plus one (the async line gather's)
  int32_t k_tiles;
  EpilogueActivation activation;  // on each output value, after the bias
};

// Byte offset of element (row, byte_in_row) of a K-major tile in the 128-byte swizzle.
__device__ __forceinline__ uint32_t swizzled_offset(int row, int byte_in_row) {
  return row * kRowBytes + ((((byte_in_row >> 4) ^ row) & 7) << 4) + (byte_in_row & 15);
}

// A pixel's base offset into x and the mask of its kernel taps that fall inside the
// image (bit i * kw + j); rows past the end get an empty mask.
__device__ __forceinline__ void pixel_row_info(const ConvProblem& p, int row, int32_t& base,
                                               uint64_t& mask) {
  base = 0;
  mask = 0;
  if (row >= p.rows) return;
  const int n = row / p.out_pixels;
  const int pixel = row - n * p.out_pixels;
  const int oh = pixel / p.out_w;
  const int ow = pixel - oh * p.out_w;
  const int ih0 = oh * p.stride_h - p.pad_h;
  const int iw0 = ow * p.stride_w - p.pad_w;
  base = n * p.x_stride_n + ih0 * p.x_stride_h + iw0 * p.x_stride_w;
  uint64_t column_mask = 0;
  for (int j = 0; j < p.kernel_w; ++j) {
    const int iw = iw0 + j * p.dilation_w;
    if (iw >= 0 && iw < p.width) column_mask |= uint64_t{1} << j;
  }
  for (int i = 0; i < p.kernel_h; ++i) {
    const int ih = ih0 + i * p.dilation_h;
    if (ih >= 0 && ih < p.height) mask |= column_mask << (i * p.kernel_w);
  }
}

// A kept column's offset into x and its tap; padding columns and columns past K'p get
// tap 64, whose mask bit no pixel has.
struct GroupColumn {
  int32_t offset;
  int32_t tap;
};

// Column k's entry of group_idx, or -1 (padding) past K'p.
__device__ __forceinline__ int32_t fetch_group(const ConvProblem& p, int k) {
  return k < p.kept_padded ? __ldg(p.group_idx + k) : -1;
}

// A kept group (c * taps + i * kernel_w + j, not -1): its channel, tap, kernel row and
// column. Every producer decodes group_idx through this.
struct GroupTap {
  int c, tap, i, j;
};

__device__ __forceinline__ GroupTap decode_tap(const ConvProblem& p, int32_t group) {
  const int c = p.by_taps.divide(group);
  const int tap = group - c * p.taps;
  const int i = p.by_kernel_w.divide(tap);
  return {c, tap, i, tap - i * p.kernel_w};
}

__device__ __forceinline__ GroupColumn decode_group(const ConvProblem& p, int32_t group) {
  if (group < 0) return {0, 64};
  const GroupTap t = decode_tap(p, group);
  return {
      t.c * p.x_stride_c + t.i * p.dilation_h * p.x_stride_h + t.j * p.dilation_w * p.x_stride_w,
      t.tap};
}

// Per element type: the raw bits the gather moves and the wgmma operand type.
template <typename Elem>
struct ElemTraits;
template <>
struct ElemTraits<__half> {
  using Bits = uint16_t;
  using Mma = Fp16;
};
template <>
struct ElemTraits<__nv_bfloat16> {
  using Bits = uint16_t;
  using Mma = Bf16;
};
template <>
struct ElemTraits<float> {
  using Bits = uint32_t;
  using Mma = Tf32;  // fp32 inputs run on TF32 tensor cores
};

// The group_idx entries a producer lane decodes for its next two parts in the same
// register set: fetched four parts (one to two stages) before they are used, so the
// gather's loads never wait for group_idx's own L2 latency (the same entries are
// read by every CTA; each CTA reads each only once, so L1 does not hold them).
template <int Groups>
struct GroupRing {
  int32_t now[Groups], ahead[Groups];
  __device__ __forceinline__ void advance(const int32_t (&fresh)[Groups]) {
#pragma unroll
    for (int g = 0; g < Groups; ++g) {
      now[g] = ahead[g];
      ahead[g] = fresh[g];
    }
  }
};

#ifdef GWPRUNE_SM90A_DEVICE

template <typename Bits>
__device__ __forceinline__ Bits load_if(const Bits* x, int32_t offset, bool valid) {
  return valid ? __ldg(x + offset) : Bits{0};
}

// Whether tap `tap` (64: none) is set in a row's 64-bit mask, from its two halves.
__device__ __forceinline__ bool tap_valid(uint32_t mask_low, uint32_t mask_high, int32_t tap) {
  const uint32_t half = tap < 32 ? mask_low : mask_high;
  return tap < 64 && ((half >> (tap & 31)) & 1);
}

// One part of a stage's A tile for one producer thread, in two halves so the producer
// overlaps its work: load() issues every load of the part into registers (the addresses
// depend only on registers: row info and decoded columns arrive by warp shuffles),
// store() writes them into the stage's swizzled tile. The producer loads part u + 1
// before it stores part u, so a thread always has a part's loads in flight while it
// stores, waits and signals.
//
// channels_last: lane l holds kept columns l, l + 32, ... of the stage and walks the
// part's rows of the warp's 32 pixels, whose info lane r holds; a store is one element,
// and 32 lanes fill one swizzled 64/128-byte span of a row without bank conflicts. With
// 16-bit types a stage is two parts of 16 rows (64 values each, two parts in registers
// at once would not fit next to the addresses otherwise).
// NCHW: lane l owns pixel row warp * 32 + l and takes every column of the stage (one
// part), read by shuffles from the lanes that decoded them; stored as 16-byte vectors.
template <typename Elem, int BK, bool ChannelsLast>
struct StageGather {
  using Bits = typename ElemTraits<Elem>::Bits;
  static constexpr int kPerLane = BK / 32;  // columns each lane decodes
  static constexpr int kParts = (ChannelsLast && sizeof(Bits) == 2) ? 2 : 1;
  static constexpr int kRows = 32 / kParts;  // channels_last: rows of the warp per part
  static constexpr int kValues = ChannelsLast ? kRows * kPerLane : BK;
  static constexpr bool kAMnMajor = false;
  static constexpr int kGroups = kPerLane;
  Bits values[kValues];  // channels_last: [row r][column c] at r * kPerLane + c; NCHW: [column]
  GroupRing<kGroups> groups;

  // Lane l decodes the stage's kept columns l, l + 32, ...
  __device__ __forceinline__ static void fetch_groups(const ConvProblem& p, int k0, int /*warp*/,
                                                      int lane, int32_t (&out)[kGroups]) {
#pragma unroll
    for (int c = 0; c < kGroups; ++c) out[c] = fetch_group(p, k0 + lane + 32 * c);
  }

  // What a producer thread keeps for the whole tile: tile row `thread`'s base offset
  // and tap mask.
  struct Tile {
    int32_t base;
    uint64_t mask;
  };
  __device__ static Tile make_tile(const ConvProblem& p, int first_row, int thread) {
    Tile tile;
    pixel_row_info(p, first_row + thread, tile.base, tile.mask);
    return tile;
  }

  // k_ahead: the first column of the part four parts on, whose groups this set fetches.
  __device__ __forceinline__ void load(const ConvProblem& p, int part, int k_ahead,
                                       const Tile& tile, int warp, int lane) {
    const Bits* x = static_cast<const Bits*>(p.x);
    const int32_t base = tile.base;
    const uint64_t mask = tile.mask;
    GroupColumn column[kPerLane];
#pragma unroll
    for (int c = 0; c < kPerLane; ++c) column[c] = decode_group(p, groups.now[c]);
    int32_t fresh[kGroups];
    fetch_groups(p, k_ahead, warp, lane, fresh);
    groups.advance(fresh);
    const uint32_t mask_low = static_cast<uint32_t>(mask);
    const uint32_t mask_high = static_cast<uint32_t>(mask >> 32);
    if constexpr (ChannelsLast) {
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        const int source = part * kRows + r;
        const int32_t row_base = __shfl_sync(0xffffffffu, base, source);
        const uint32_t row_low = __shfl_sync(0xffffffffu, mask_low, source);
        const uint32_t row_high = __shfl_sync(0xffffffffu, mask_high, source);
#pragma unroll
        for (int c = 0; c < kPerLane; ++c) {
          values[r * kPerLane + c] =
              load_if(x, row_base + column[c].offset, tap_valid(row_low, row_high, column[c].tap));
        }
      }
    } else {
#pragma unroll
      for (int k = 0; k < BK; ++k) {
        const int32_t offset = __shfl_sync(0xffffffffu, column[k / 32].offset, k % 32);
        const int32_t tap = __shfl_sync(0xffffffffu, column[k / 32].tap, k % 32);
        values[k] = load_if(x, base + offset, tap_valid(mask_low, mask_high, tap));
      }
    }
  }

  __device__ __forceinline__ void store(uint8_t* a_tile, int part, int warp, int lane,
                                        uint32_t /*peer_tile*/ = 0) const {
    const uint32_t tile_address = smem_address(a_tile);
    if constexpr (ChannelsLast) {
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
#pragma unroll
        for (int c = 0; c < kPerLane; ++c) {
          const int byte = (lane + 32 * c) * static_cast<int>(sizeof(Bits));
          const int row = warp * 32 + part * kRows + r;
          store_shared(tile_address + swizzled_offset(row, byte), values[r * kPerLane + c]);
        }
      }
    } else {
      const int row = warp * 32 + lane;
      constexpr int kPerVector = 16 / sizeof(Bits);
#pragma unroll
      for (int k = 0; k < BK; k += kPerVector) {
        uint32_t words[4];
#pragma unroll
        for (int w = 0; w < 4; ++w) {
          if constexpr (sizeof(Bits) == 2) {
            words[w] = static_cast<uint32_t>(values[k + 2 * w]) |
                       (static_cast<uint32_t>(values[k + 2 * w + 1]) << 16);
          } else {
            words[w] = values[k + w];
          }
        }
        store_shared(tile_address + swizzled_offset(row, k * static_cast<int>(sizeof(Bits))),
                     make_uint4(words[0], words[1], words[2], words[3]));
      }
    }
  }
};

#endif  // GWPRUNE_SM90A_DEVICE

}  // namespace gwprune::cuda::implicit
