// The producer's gather for NCHW 16-bit inputs of stride-1 convs whose output rows are
// as wide as the input rows (OW == W: 'same' padding along W, any padding along H, any
// dilation), kernels up to 8 x 8. It fills an MN-major A tile (mma_consumer.cuh) with
// 16-byte vectors: 8 consecutive output pixels of one kept group.
//
// Why it is faster than the row gather (gather_mainloop.cuh): under these conditions
// the x offset of (pixel p of image n, group (c, i, j)) is linear in p,
//   n * stride_n + c * stride_c + p - pad_h * W - pad_w + i * dil_h * W + j * dil_w,
// so 8 consecutive pixels of a group are 8 consecutive elements of x: two aligned
// 16-byte loads and a funnel shift, instead of 8 two-byte loads. Tile rows are numbered
// per image in runs of 8 (row_pitch = OH * OW rounded up to 8), so no run spans two
// images; the few rows past an image's pixels compute zeros that the epilogue skips.
// Padding is per element: a pixel's valid kernel rows and columns are one byte each
// (bit i, bit j), and an element is kept when both bits are set.
//
// Safety of the wide loads: a 16-byte block is loaded only when it holds at least one
// valid element. x's data pointer is 16-byte aligned and its storage reaches the end of
// the granule of x's last element (the dispatch, run_gather_applies, checks both), so
// such a block lies inside x's storage.
//
// Work split: each stage is 64 kept groups x 16 runs (128 pixels) = 1024 vectors.
// Thread (warp w, lane l) owns run l % 16 for the whole tile and, in pass t of a stage,
// kept group 8 t + 2 w + l / 16: a warp's 16 lanes of one group read 256 contiguous
// bytes, and the 8 lanes of a store phase fill one 128-byte swizzled row. A stage is
// two parts of four passes, so the kernel keeps one part's loads in flight while it
// stores the other.
//
// In CTA pairs (a 2-CTA cluster whose CTAs share the pixel tile and take neighbouring
// output-channel tiles), CTA r gathers only part r of every stage and stores it to both
// CTAs' shared memory: half the producer work per output.
#pragma once

#include <cstdint>

#include "gather_mainloop.cuh"
#include "sm90_primitives.cuh"

namespace gwprune::cuda::implicit {

#ifdef GWPRUNE_SM90A_DEVICE

// The run of 8 16-bit elements that starts `shift` (0-7) elements into the aligned 16-byte
// block `low`, `high` being the block after it, with element e kept where byte e of
// valid_lo (e < 4) / valid_hi (e >= 4) is 1 and zero where it is 0: the 32 bytes shifted
// down by 2 words, by 1 word, then by a half word, then masked.
__device__ __forceinline__ uint4 shift_run(const uint4& low, const uint4& high, int shift,
                                           uint32_t valid_lo, uint32_t valid_hi) {
  const uint32_t w[8] = {low.x, low.y, low.z, low.w, high.x, high.y, high.z, high.w};
  uint32_t v[6], u[5], out[4];
#pragma unroll
  for (int q = 0; q < 6; ++q) v[q] = (shift & 4) ? w[q + 2] : w[q];
#pragma unroll
  for (int q = 0; q < 5; ++q) u[q] = (shift & 2) ? v[q + 1] : v[q];
  const uint32_t kept_lo = valid_lo * 0xffu, kept_hi = valid_hi * 0xffu;
  const uint32_t mask[4] = {__byte_perm(kept_lo, 0, 0x1100), __byte_perm(kept_lo, 0, 0x3322),
                            __byte_perm(kept_hi, 0, 0x1100), __byte_perm(kept_hi, 0, 0x3322)};
#pragma unroll
  for (int q = 0; q < 4; ++q)
    out[q] = ((shift & 1) ? __funnelshift_r(u[q], u[q + 1], 16) : u[q]) & mask[q];
  return make_uint4(out[0], out[1], out[2], out[3]);
}

template <typename Elem>
struct RunGather {
  static_assert(sizeof(Elem) == 2, "the run gather moves 8 16-bit elements per vector");
  static constexpr bool kAMnMajor = true;
  static constexpr int kParts = 2;
  static constexpr int kPasses = 4;  // per part
  static constexpr int kGroups = 1;  // group_idx entries a lane decodes per stage

  // What a thread keeps for the whole tile: its run's x offset (channel 0, tap (0, 0),
  // padding subtracted) and, per pixel e of the run, byte e of rows / cols (low word:
  // pixels 0-3) holds the valid kernel rows / columns.
  struct Tile {
    int32_t run_base;
    uint32_t rows_lo, rows_hi, cols_lo, cols_hi;
  };

  uint4 low[kPasses], high[kPasses];              // the aligned blocks at and after the run's start
  uint32_t valid_lo[kPasses], valid_hi[kPasses];  // byte e: 1 when pixel e's element is kept
  int32_t shift[kPasses];                         // the run's start inside `low`, in elements
  GroupRing<kGroups> groups;

  __device__ static Tile make_tile(const ConvProblem& p, int first_row, int thread) {
    const int run = thread % 16;
    const int row = first_row + 8 * run;
    const int n = row / p.row_pitch;
    const int first_pixel = row - n * p.row_pitch;
    Tile tile{n * p.x_stride_n + first_pixel - p.pad_h * p.width - p.pad_w, 0, 0, 0, 0};
    if (row >= p.rows) return tile;
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      const int pixel = first_pixel + e;
      if (pixel >= p.out_pixels) break;
      const int oh = pixel / p.out_w;
      const int ow = pixel - oh * p.out_w;
      uint32_t rows = 0, cols = 0;
      for (int i = 0; i < p.kernel_h; ++i) {
        const int ih = oh - p.pad_h + i * p.dilation_h;
        if (ih >= 0 && ih < p.height) rows |= 1u << i;
      }
      for (int j = 0; j < p.kernel_w; ++j) {
        const int iw = ow - p.pad_w + j * p.dilation_w;
        if (iw >= 0 && iw < p.width) cols |= 1u << j;
      }
      const int bit = 8 * (e % 4);
      if (e < 4) {
        tile.rows_lo |= rows << bit;
        tile.cols_lo |= cols << bit;
      } else {
        tile.rows_hi |= rows << bit;
        tile.cols_hi |= cols << bit;
      }
    }
    return tile;
  }

  // Lane l decodes kept group 8 (l % 8) + 2 w + (l / 8) % 2 of the stage: the group that
  // lanes of pass l % 8 and half (l / 8) % 2 read by shuffle.
  __device__ __forceinline__ static void fetch_groups(const ConvProblem& p, int k0, int warp,
                                                      int lane, int32_t (&out)[kGroups]) {
    out[0] = fetch_group(p, k0 + 8 * (lane % 8) + 2 * warp + (lane / 8) % 2);
  }

  // A group's offset into x and its tap (i | j << 8); padding columns get tap 0xffff,
  // which no pixel has.
  __device__ __forceinline__ static void decode(const ConvProblem& p, int32_t group,
                                                int32_t& offset, uint32_t& tap) {
    offset = 0;
    tap = 0xffffu;
    if (group < 0) return;
    const GroupTap t = decode_tap(p, group);
    offset = t.c * p.x_stride_c + t.i * p.dilation_h * p.width + t.j * p.dilation_w;
    tap = static_cast<uint32_t>(t.i) | (static_cast<uint32_t>(t.j) << 8);
  }

  // k_ahead: the first column of the part four parts on, whose groups this set fetches.
  __device__ __forceinline__ void load(const ConvProblem& p, int part, int k_ahead,
                                       const Tile& tile, int warp, int lane) {
    const uint4* x = static_cast<const uint4*>(p.x);
    int32_t my_offset;
    uint32_t my_tap;
    decode(p, groups.now[0], my_offset, my_tap);
    int32_t fresh[kGroups];
    fetch_groups(p, k_ahead, warp, lane, fresh);
    groups.advance(fresh);
#pragma unroll
    for (int t = 0; t < kPasses; ++t) {
      const int source = (part * kPasses + t) + 8 * (lane / 16);
      const int32_t offset = __shfl_sync(0xffffffffu, my_offset, source);
      const uint32_t tap = __shfl_sync(0xffffffffu, my_tap, source);
      const uint32_t i = tap & 0xffu, j = tap >> 8;
      uint32_t lo = 0, hi = 0;
      if (tap != 0xffffu) {
        lo = (tile.rows_lo >> i) & (tile.cols_lo >> j) & 0x01010101u;
        hi = (tile.rows_hi >> i) & (tile.cols_hi >> j) & 0x01010101u;
      }
      // Bit e: pixel e's element is kept (the multiply gathers the bytes' low bits).
      const uint32_t kept = ((lo * 0x01020408u) >> 24) | (((hi * 0x01020408u) >> 24) << 4);
      const int32_t start = tile.run_base + offset;
      const int32_t s = start & 7;
      const int32_t block = (start - s) >> 3;  // in 16-byte units
      const uint32_t in_low = 0xffu >> s;      // the run's elements that lie in `low`
      low[t] = (kept & in_low) ? __ldg(x + block) : make_uint4(0, 0, 0, 0);
      high[t] = (kept & ~in_low & 0xffu) ? __ldg(x + block + 1) : make_uint4(0, 0, 0, 0);
      valid_lo[t] = lo;
      valid_hi[t] = hi;
      shift[t] = s;
    }
  }

  // peer_tile: the same tile in the other CTA of a pair as a shared::cluster address (0: none).
  __device__ __forceinline__ void store(uint8_t* a_tile, int part, int warp, int lane,
                                        uint32_t peer_tile = 0) const {
    const int run = lane % 16;
    const int half = run / 8, column = run % 8;  // the consumer half, the 16-byte column
    const int k_row = 2 * warp + lane / 16;      // row inside the 8-group atom
#pragma unroll
    for (int t = 0; t < kPasses; ++t) {
      const int group_block = part * kPasses + t;  // K group of 8 inside the stage
      const int offset =
          (half * 8 + group_block) * 1024 + k_row * 128 + (((column ^ k_row) & 7) << 4);
      const uint4 vector = shift_run(low[t], high[t], shift[t], valid_lo[t], valid_hi[t]);
      store_shared(smem_address(a_tile) + offset, vector);
      if (peer_tile != 0) store_shared_cluster(peer_tile + offset, vector);
    }
  }
};

#endif  // GWPRUNE_SM90A_DEVICE

}  // namespace gwprune::cuda::implicit
