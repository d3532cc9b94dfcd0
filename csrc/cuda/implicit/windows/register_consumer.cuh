// The window path's consumers (contract in window_geometry.cuh): warpgroup w multiplies
// tile rows [64 w, 64 w + 64) by each stage's weight tile with wgmma, its A fragments read
// by the threads themselves from the channel windows into registers (wgmma with A in
// registers), so no A tile is ever stored.
//
// A thread's fragment rows are two fixed pixels for the whole K loop; for each it keeps
//   the shared address its tap (0, 0) would have in slot 0 (ring base, segment offset,
//   input row and column, and the segment's start residue mod 8 where x's channel stride
//   is a multiple of 8), the mask of its in-image taps, and otherwise that residue apart.
// Element (pixel, group) is then the 2 bytes at base(pixel) + view(group) (+ the residue
// of the channel's and the segment's starts together), or zero where the tap's bit is not
// in the pixel's mask. A thread reads its 16 table entries once per stage and 8 elements
// per K step of 16 groups; two register sets let one step's loads overlap the previous
// step's wgmma, with at most two in flight.
//
// The K loop (consume_windows) is written once over a window view: how a thread keeps its
// pixels, reads its table entries and loads an element. RowWindowView is the view of the
// windows above; a window layout tried later (framed windows, bench/NOTES.md change 22)
// was another view of the same loop.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "../sm90_primitives.cuh"
#include "../wgmma_ops.cuh"
#include "k_slices.cuh"
#include "window_geometry.cuh"
#include "window_producer.cuh"

namespace gwprune::cuda::implicit::windows {

#ifdef GWPRUNE_SM90A_DEVICE

// How a consumer reads element (pixel, group) of a window layout. Each view gives
//   Pixel  what a thread keeps per fragment pixel for the whole K loop,
//   pixel  its value for tile row `row`,
//   Entry  what the thread reads of a stage table per group,
//   entries  its four groups' entries of one K step (groups 2 (lane % 4) + {0, 1, 8, 9}),
//   element  the element's 16 bits in the low half of a 32-bit word.

// Row windows (window_geometry.cuh): x's rows back to back, so each element is tested
// against the pixel's in-image taps.
template <bool ChannelsAligned>
struct RowWindowView {
  struct Pixel {
    uint32_t base;  // shared address, in the ring, of tap (0, 0)'s element in slot 0
    uint32_t taps;
    uint32_t residue;  // segment start mod 8 (only for channel strides not a multiple of 8)
  };
  using Entry = int2;  // {byte offset of the group's view, tap bit | channel residue << 29}

  __device__ __forceinline__ static Pixel pixel(const ConvProblem& p, const TileWindows& tile,
                                                const WindowLaunch& /*w*/, uint32_t ring, int row) {
    Pixel f{ring, 0u, 0u};
    if (row >= p.rows) return f;
    const int n = row / p.out_pixels;
    const int pixel = row - n * p.out_pixels;
    const int oh = pixel / p.out_w;
    const int ow = pixel - oh * p.out_w;
    const int k = n - tile.first_image;
    int first_row = 0, segment_offset = 0;
#pragma unroll
    for (int s = 0; s < kMaxSegments; ++s) {
      if (s == k) {
        first_row = tile.first_row[s];
        segment_offset = tile.offset[s];
      }
    }
    const int top = oh * p.stride_h - p.pad_h;
    const int left = ow * p.stride_w - p.pad_w;
    const int offset = segment_offset + (top - first_row) * p.width + left;
    f.residue = static_cast<uint32_t>(n * p.x_stride_n + first_row * p.width) & 7u;
    // With aligned channel strides the residue is the segment's alone: fold it in.
    f.base = ring + 2 * (offset + (ChannelsAligned ? static_cast<int>(f.residue) : 0));
    for (int i = 0; i < p.kernel_h; ++i) {
      const int ih = top + i * p.dilation_h;
      if (ih < 0 || ih >= p.height) continue;
      for (int j = 0; j < p.kernel_w; ++j) {
        const int iw = left + j * p.dilation_w;
        if (iw >= 0 && iw < p.width) f.taps |= 1u << (i * p.kernel_w + j);
      }
    }
    return f;
  }

  __device__ __forceinline__ static void entries(uint32_t table, int group, Entry (&e)[4]) {
    const uint4 low = load_shared<uint4>(table + group * 8);
    const uint4 high = load_shared<uint4>(table + (group + 8) * 8);
    e[0] = make_int2(low.x, low.y);
    e[1] = make_int2(low.z, low.w);
    e[2] = make_int2(high.x, high.y);
    e[3] = make_int2(high.z, high.w);
  }

  // A predicated load, zero in the padding, so the warp never branches per element.
  __device__ __forceinline__ static uint32_t element(Entry entry, const Pixel& f) {
    uint32_t address = f.base + static_cast<uint32_t>(entry.x);
    if constexpr (!ChannelsAligned)
      address += 2 * ((f.residue + (static_cast<uint32_t>(entry.y) >> 29)) & 7u);
    const uint32_t valid = f.taps & static_cast<uint32_t>(entry.y);
    // Into a 32-bit register, zero-extended: two elements then pack with one PRMT (16-bit
    // registers cost a PRMT per element to clear and another to insert).
    return load_shared_or_zero<2>(address, valid);
  }
};

// Where a consumer warp stands between tiles: the stages it has read, the ring channels it
// has handed back, and the last channel of its last stage.
struct ConsumerCursor {
  int stages = 0;
  int released = 0;
  int last_channel = -1;
};

// After a tile's last wgmma: hands back the tile's last stage and its last channel, which
// no later stage of the tile reads (a persistent CTA's next tile starts its own channels).
template <int Stages, typename Shared>
__device__ __forceinline__ void release_tile(const Shared& s, ConsumerCursor& cursor, int lane) {
  __syncwarp();
  if (lane == 0) mbarrier_arrive(&s.empty[(cursor.stages - 1) % Stages]);
  release_channels(s.ring_empty, cursor.released, cursor.last_channel + 1, s.ring_slots.slots,
                   lane);
}

// A real (if useless) read of a fragment's registers: ptxas treats wgmma's A registers
// as free once the wgmma is issued, and where it reuses them for the next step's loads it
// has to wait for that wgmma right away (WARPGROUP.DEPBAR 0 after every HGMMA). Reading
// the fragment after the wait that covers its wgmma keeps the registers live until then.
__device__ __forceinline__ uint32_t fragment_parity(const uint32_t (&a)[4]) {
  return a[0] ^ a[1] ^ a[2] ^ a[3];
}

// The K loop of one consumer warpgroup over the window layout `View` reads
// (RowWindowView), with its shared-memory map, tile and launch sizes.
//
// RowBlocks = 2 is a tall tile's consumer (tall_tiles.cuh): warpgroup w multiplies tile rows
// [128 w, 128 w + 128) as two 64-row blocks, each K step's table entries read once for both
// and both blocks' wgmma on the same weight tile; acc[h] is block h's accumulators.
//
// RegisterSteps < BK / 16 splits each stage (the split kernel, staged_window_kernel.cuh): the
// consumers read A for its first RegisterSteps K steps themselves, and take the rest from
// the A tile that gatherer warps build in shared memory meanwhile (s.a_stages, complete on
// s.a_full; K-major, 128-byte swizzle, as tile_gatherer.cuh writes it). Each side then does
// part of the element reads that bound either alone (bench/NOTES.md change 23).
//
// `cursor` is where the warp stands between tiles (a persistent CTA's stages and ring
// channels run on across its tiles); the tile's last stage and its last channel are left
// for the caller to hand back (release_tile), after the last wgmma is waited for. `range` is
// the tile's stages that this work unit multiplies (all of them, or a K slice: k_slices.cuh).
template <typename View, typename MmaType, int BN, int Stages, int BK, int RegisterSteps = BK / 16,
          int RowBlocks = 1, typename Shared, typename Tile, typename Launch>
__device__ __forceinline__ void consume_windows(float (&acc)[RowBlocks][BN / 2],
                                                const ConvProblem& p, const Shared& s,
                                                const Tile& tile, const Launch& w, int first_row,
                                                int consumer, int thread, ConsumerCursor& cursor,
                                                KRange range) {
  using Mma = WgmmaRegisterA<MmaType, BN>;
  constexpr int kBTileBytes = BN * 128;
  constexpr int kSteps = BK / 16;
  // The previous stage is handed back at step 1, after the wait that retires it.
  static_assert(RegisterSteps >= 2 && RegisterSteps <= kSteps, "two register steps at least");
  static_assert(RowBlocks == 1 || RegisterSteps == kSteps, "tall tiles have no shared A tile");
  const int warp = thread / 32, lane = thread % 32;
  const int row = first_row + 64 * RowBlocks * consumer + 16 * warp + lane / 4;
  typename View::Pixel pixel[RowBlocks][2];
#pragma unroll
  for (int h = 0; h < RowBlocks; ++h) {
    pixel[h][0] = View::pixel(p, tile, w, s.ring, row + 64 * h);
    pixel[h][1] = View::pixel(p, tile, w, s.ring, row + 64 * h + 8);
  }
  uint32_t a[2][RowBlocks][4] = {};
  uint32_t sink = 0;
  const int stages = range.end - range.begin;
#pragma unroll 1
  for (int kt = 0; kt < stages; ++kt) {  // kt counts the unit's stages, from 0
    const int g = cursor.stages + kt;
    const auto [stage, table, last_channel] = start_stage<Stages, BK>(s, g);
    const uint32_t b = smem_address(s.b_stages + stage * kBTileBytes);
    // The stage's table entries this thread needs, for all its K steps at once.
    typename View::Entry entry[RegisterSteps][4];
#pragma unroll
    for (int step = 0; step < RegisterSteps; ++step)
      View::entries(table, 16 * step + 2 * (lane % 4), entry[step]);
#pragma unroll
    for (int step = 0; step < RegisterSteps; ++step) {
      uint32_t v[RowBlocks][4][2];
#pragma unroll
      for (int h = 0; h < RowBlocks; ++h)
#pragma unroll
        for (int e = 0; e < 4; ++e)
#pragma unroll
          for (int r = 0; r < 2; ++r) v[h][e][r] = View::element(entry[step][e], pixel[h][r]);
      // The wgmma two steps back, which read this register set, is done (and at a stage's
      // second step the previous stage's weight tile is free).
      wgmma_wait_group<1>();
      if (step == 1 && kt > 0) {
        // Every warp hands the stage back for itself: its own reads of the stage's table
        // are then ordered before the producer rewrites it.
        __syncwarp();
        if (lane == 0) mbarrier_arrive(&s.empty[(g - 1) % Stages]);
      }
#pragma unroll
      for (int h = 0; h < RowBlocks; ++h) {
        sink ^= fragment_parity(a[step % 2][h]);
        pack_register_fragment(v[h], a[step % 2][h]);
      }
#pragma unroll
      for (int h = 0; h < RowBlocks; ++h) fence_accumulators(acc[h]);
      wgmma_fence();
#pragma unroll
      for (int h = 0; h < RowBlocks; ++h)
        Mma::mma(acc[h], a[step % 2][h], sw128_kmajor_descriptor(b + 32 * step),
                 (kt > 0 || step > 0) ? 1 : 0);
      wgmma_commit_group();
      for (int h = 0; h < RowBlocks; ++h) fence_accumulators(acc[h]);
    }
    if constexpr (RegisterSteps < kSteps) {
      using SharedMma = Wgmma<MmaType, BN>;
      mbarrier_wait(&s.a_full[stage], (g / Stages) & 1);
      const uint32_t a =
          smem_address(s.a_stages + stage * kATileBytes + consumer * kATileBytes / 2);
      for (int h = 0; h < RowBlocks; ++h) fence_accumulators(acc[h]);
      wgmma_fence();
#pragma unroll
      for (int step = RegisterSteps; step < kSteps; ++step)
        SharedMma::mma(acc[0], sw128_kmajor_descriptor(a + 32 * step),
                       sw128_kmajor_descriptor(b + 32 * step), 1);
      wgmma_commit_group();
      for (int h = 0; h < RowBlocks; ++h) fence_accumulators(acc[h]);
    }
    // Channels before this stage's last appear in no later stage: this warp has read them.
    __syncwarp();
    release_channels(s.ring_empty, cursor.released, last_channel, s.ring_slots.slots, lane);
    cursor.last_channel = last_channel;
  }
  wgmma_wait_group<0>();
  for (int h = 0; h < RowBlocks; ++h) fence_accumulators(acc[h]);
  cursor.stages += stages;
  // Never true (rows is positive): only so that `sink`, and with it the fragments' last
  // reads, cannot be removed.
  if (p.rows < 0) acc[0][0] += __uint_as_float(sink);
}

// One 64-row block per consumer (the 128-row tiles), its accumulators as one array.
template <typename View, typename MmaType, int BN, int Stages, int BK, int RegisterSteps = BK / 16,
          typename Shared, typename Tile, typename Launch>
__device__ __forceinline__ void consume_windows(float (&acc)[BN / 2], const ConvProblem& p,
                                                const Shared& s, const Tile& tile, const Launch& w,
                                                int first_row, int consumer, int thread,
                                                ConsumerCursor& cursor, KRange range) {
  consume_windows<View, MmaType, BN, Stages, BK, RegisterSteps, 1>(
      *reinterpret_cast<float (*)[1][BN / 2]>(&acc), p, s, tile, w, first_row, consumer, thread,
      cursor, range);
}

// One tile per CTA: nothing to hand back after it.
template <typename View, typename MmaType, int BN, int Stages, int BK, int RegisterSteps = BK / 16,
          typename Shared, typename Tile, typename Launch>
__device__ __forceinline__ void consume_windows(float (&acc)[BN / 2], const ConvProblem& p,
                                                const Shared& s, const Tile& tile, const Launch& w,
                                                int first_row, int consumer, int thread) {
  ConsumerCursor cursor;
  consume_windows<View, MmaType, BN, Stages, BK, RegisterSteps>(
      acc, p, s, tile, w, first_row, consumer, thread, cursor, KRange{0, p.k_tiles});
}

#endif  // GWPRUNE_SM90A_DEVICE

}  // namespace gwprune::cuda::implicit::windows
