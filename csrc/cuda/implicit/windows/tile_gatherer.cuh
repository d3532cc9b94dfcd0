// The staged window kernel's gatherer warps (staged_window_kernel.cuh): per K stage they
// build the stage's A tile (128 pixels x 64 kept groups, K-major, 128-byte swizzle), or its
// chunks from FirstChunk on (the split kernel), in shared memory from the channel windows,
// so the consumers run shared-memory wgmma on it.
//
// Why gatherer warps of their own: in the register consumer (register_consumer.cuh) each
// consumer warp reads its own A fragments, ~75 instructions per K step on the path between
// two of its wgmmas, with two warps per scheduler to hide their latency (ncu: 0.41 issued
// per cycle, tensor pipes ~36 % busy; bench/NOTES.md change 22). Here those reads move to
// Warps (2 or 4) that own no accumulators and run up to a stage ahead, with 16
// independent loads per thread in flight.
//
// Lane l of gatherer warp g owns tile rows r = 32 (g % 2) + l and r + 64 for the whole K
// loop (their pixels as the window View keeps them) and (8 - FirstChunk) * 2 / Warps of
// the stage's chunks of 8 kept groups, each chunk one 16-byte store per row. A warp's 32
// rows are 32 consecutive pixels, so each element load of the warp reads one short run of
// a window.
#pragma once

#include <cstdint>

#include "../sm90_primitives.cuh"
#include "register_consumer.cuh"
#include "window_geometry.cuh"
#include "window_producer.cuh"

namespace gwprune::cuda::implicit::windows {

// Where the staged kernel's pieces live: the window kernel's, plus the A tiles and the
// barrier each completes on.
struct StagedShared : WindowShared {
  uint8_t* a_stages;
  uint64_t* a_full;  // the stage's A tile written (every gatherer warp)
};

#ifdef GWPRUNE_SM90A_DEVICE

// The eight table entries of groups [group, group + 8) of a stage table.
__device__ __forceinline__ void chunk_entries(uint32_t table, int group, int2 (&e)[8]) {
#pragma unroll
  for (int k = 0; k < 8; k += 2) {
    const uint4 pair = load_shared<uint4>(table + (group + k) * 8);
    e[k] = make_int2(pair.x, pair.y);
    e[k + 1] = make_int2(pair.z, pair.w);
  }
}

// FirstChunk > 0 (the split kernel) leaves the stage's first chunks to the consumers.
template <typename View, int Stages, int BK, int Warps, int FirstChunk = 0>
__device__ __forceinline__ void gather_tiles(const ConvProblem& p, const StagedShared& s,
                                             const TileWindows& tile, const WindowLaunch& w,
                                             int first_row, int thread) {
  static_assert(BK == 64 && (Warps == 2 || Warps == 4), "8 chunks of 8 groups per stage");
  constexpr int kChunks = (8 - FirstChunk) * 2 / Warps;  // per warp and stage
  static_assert(kChunks * Warps == (8 - FirstChunk) * 2, "the chunks split evenly");
  const int warp = thread / 32, lane = thread % 32;
  const int row = 32 * (warp % 2) + lane;
  const int first_chunk = FirstChunk + kChunks * (warp / 2);
  const typename View::Pixel pixel[2] = {View::pixel(p, tile, w, s.ring, first_row + row),
                                         View::pixel(p, tile, w, s.ring, first_row + row + 64)};
  int released = 0;  // channels this warp has handed back
#pragma unroll 1
  for (int kt = 0; kt < p.k_tiles; ++kt) {
    // Its A slot was freed before the producer refilled the stage (the consumers' release of
    // stage kt - Stages).
    const auto [stage, table, last_channel] = start_stage<Stages, BK>(s, kt);
    const uint32_t a = smem_address(s.a_stages + stage * kATileBytes);
#pragma unroll
    for (int chunk = first_chunk; chunk < first_chunk + kChunks; ++chunk) {
      int2 entry[8];
      chunk_entries(table, 8 * chunk, entry);
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        uint32_t v[8];
#pragma unroll
        for (int k = 0; k < 8; ++k) v[k] = View::element(entry[k], pixel[h]);
        const int r = row + 64 * h;
        // One PRMT per pair (a shift and an OR otherwise): low halves of v[2i], v[2i + 1].
        const uint4 packed =
            make_uint4(__byte_perm(v[0], v[1], 0x5410), __byte_perm(v[2], v[3], 0x5410),
                       __byte_perm(v[4], v[5], 0x5410), __byte_perm(v[6], v[7], 0x5410));
        store_shared(a + r * 128 + ((chunk ^ r) & 7) * 16, packed);
      }
    }
    // The tile is read by wgmma (the async proxy); the table and windows are done with.
    fence_proxy_async_shared();
    __syncwarp();
    if (lane == 0) {
      mbarrier_arrive(&s.a_full[stage]);
      mbarrier_arrive(&s.empty[stage]);
    }
    release_channels(s.ring_empty, released, last_channel, s.ring_slots.slots, lane);
  }
}

#endif  // GWPRUNE_SM90A_DEVICE

}  // namespace gwprune::cuda::implicit::windows
