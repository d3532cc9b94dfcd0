// The persistent window kernel: the window kernel's producer and register consumers
// (window_kernel.cuh), but one CTA per SM walks output tiles (first = blockIdx.x, then every
// gridDim.x-th), so a tile's set-up, its pipeline's fill and its epilogue overlap the CTA's
// other tiles instead of leaving the SM idle. The ablations of bench/NOTES.md change 25 put
// those at ~30 % of the one-tile-per-CTA kernel's time.
//
// Across its tiles a CTA's stages and ring channels run on (ProducerCursor, ConsumerCursor:
// barrier phases and slots continue), its ring uses the launch's slot size for every tile,
// and the epilogue stores from registers (register_epilogue.cuh) so that it needs none of
// the shared memory the producer is already filling for the next tile.
//
// The producer warpgroup runs as two teams of 64 threads that fill alternate stages
// (window_producer.cuh), since one team's per-stage chain was as long as the consumers'.
//
// With several K slices per tile (k_slices.cuh) the CTAs walk work units (tile, slice)
// instead: a unit multiplies its slice's stages, and the tile's last unit adds the partials
// up and runs the epilogue. With Tall (tall_tiles.cuh) they walk `tall`'s units, 256 or 128
// output pixels each, and w is planned for 256-pixel tiles.
//
// Contract: the window kernel's (window_geometry.cuh) plus the register epilogue's (an even
// number of output pixels per image, a 4-byte aligned output); Activates = false only where
// p.activation is kNone; Sliced only with k.slices > 1 and its workspace; Tall not with
// Sliced or Activates, only with BN <= 128 (its two row blocks' accumulators) and images of >= 86
// output pixels (window_plan's segments at 256 pixels).
#pragma once

#include <cuda.h>

#include <cstdint>

#include "k_slices.cuh"
#include "register_epilogue.cuh"
#include "tall_tiles.cuh"
#include "window_kernel.cuh"

namespace gwprune::cuda::implicit::windows {

// The producer warpgroup's 128 threads as two teams that alternate stages.
constexpr int kProducerTeams = 2;

// A persistent CTA's work unit: its output rows and channels, its row blocks per consumer
// (2: a tall unit) and its K stages.
struct WindowUnit {
  int first_row, first_col, blocks;
  KRange range;
  int tile;  // the output tile (for the K slices' counters)
};

template <int BN, bool Sliced, bool Tall>
__device__ __forceinline__ WindowUnit window_unit(const ConvProblem& p, const KSlices& k,
                                                  const TallTiles& tall, int u) {
  const int col_tiles = (p.out_channels + BN - 1) / BN;
  // Set field by field: a braced return with a conditional KRange in it crashed cicc (CUDA 13.0).
  WindowUnit unit;
  unit.range = KRange{0, p.k_tiles};
  if constexpr (Tall) {
    const TileUnit rows = tall_tile_unit(tall, u / col_tiles);
    unit.first_row = rows.first_row;
    unit.blocks = rows.blocks;
    unit.first_col = (u % col_tiles) * BN;
    unit.tile = -1;
  } else {
    // Unit u: tile u / slices (output-channel tiles fastest), K slice u % slices.
    const int slices = Sliced ? k.slices : 1;
    unit.tile = u / slices;
    unit.first_row = (unit.tile / col_tiles) * kTileRows;
    unit.first_col = (unit.tile % col_tiles) * BN;
    unit.blocks = 1;
    if constexpr (Sliced) unit.range = k_slice_range(p.k_tiles, slices, u % slices);
  }
  return unit;
}

template <int BN, bool Sliced, bool Tall>
__device__ __forceinline__ int window_units(const ConvProblem& p, const KSlices& k,
                                            const TallTiles& tall) {
  const int col_tiles = (p.out_channels + BN - 1) / BN;
  if constexpr (Tall) return tall_tile_units(tall) * col_tiles;
  return ((p.rows + kTileRows - 1) / kTileRows) * col_tiles * (Sliced ? k.slices : 1);
}

template <typename Elem, int BN, bool ChannelsAligned, bool Activates, bool Sliced, bool Tall>
__global__ void __launch_bounds__(kThreads, 1)
    persistent_window_conv_kernel(const __grid_constant__ CUtensorMap weight_map,
                                  const __grid_constant__ CUtensorMap x_map, const ConvProblem p,
                                  const WindowLaunch w, const KSlices k, const TallTiles tall) {
#ifdef GWPRUNE_SM90A_DEVICE
  static_assert(!Tall || (!Sliced && !Activates && BN <= 128),
                "tall tiles: unsliced, no activation, BN <= 128");
  using Layout = WindowLayout<BN>;
  extern __shared__ uint8_t shared_raw[];
  uint8_t* shared = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(shared_raw) + 1023) &
                                               ~static_cast<uintptr_t>(1023));
  WindowShared s;
  Layout::place(s, shared, tile_windows(p, 0, w.box), w);
  // Every tile's windows fit the launch's slot (a bound over all tiles).
  s.ring_slots = TileRing{w.ring, w.slot_elements};
  const int warpgroup = threadIdx.x / 128;
  const int thread = threadIdx.x % 128;
  const int units = window_units<BN, Sliced, Tall>(p, k, tall);
  auto unit_of = [&](int u) { return window_unit<BN, Sliced, Tall>(p, k, tall, u); };

  if (threadIdx.x == 0) {
    init_window_barriers(s.full, s.empty, s.ring_empty, static_cast<int>(w.ring.divisor),
                         full_arrivals(kProducerTeams));
    prefetch_tensor_map(&weight_map);
    prefetch_tensor_map(&x_map);
  }
  __syncthreads();

  if (warpgroup == 0) {
    release_registers<kProducerRegisters>();
    // Two producer teams of 64 threads, alternating stages (window_producer.cuh).
    static_assert(kProducerTeams * kTableThreads == 128, "the teams fill the producer warpgroup");
    const int team = thread / kTableThreads, team_thread = thread % kTableThreads;
    ProducerCursor cursor = first_producer_cursor<kBK>(
        p, team_thread, blockIdx.x < units ? unit_of(blockIdx.x).range.begin : 0);
    for (int u = blockIdx.x; u < units; u += gridDim.x) {
      const WindowUnit unit = unit_of(u);
      const int next = u + static_cast<int>(gridDim.x);
      produce_windows<kStages, Layout::kBTileBytes, kBK, kProducerTeams>(
          p, &weight_map, &x_map, s,
          tile_windows(p, unit.first_row, w.box, unit.blocks * kTileRows), w, unit.first_col,
          team_thread, cursor, unit.range, next < units ? unit_of(next).range.begin : 0, team);
    }
  } else {
    claim_registers<kConsumerRegisters>();
    const int consumer = warpgroup - 1;
    using View = RowWindowView<ChannelsAligned>;
    using Mma = typename ElemTraits<Elem>::Mma;
    ConsumerCursor cursor;
    for (int u = blockIdx.x; u < units; u += gridDim.x) {
      const WindowUnit unit = unit_of(u);
      const TileWindows tile = tile_windows(p, unit.first_row, w.box, unit.blocks * kTileRows);
      float acc[Tall ? 2 : 1][BN / 2];
      if (Tall && unit.blocks == 2)
        consume_windows<View, Mma, BN, kStages, kBK, kBK / 16, Tall ? 2 : 1>(
            acc, p, s, tile, w, unit.first_row, consumer, thread, cursor, unit.range);
      else
        consume_windows<View, Mma, BN, kStages, kBK>(acc[0], p, s, tile, w, unit.first_row,
                                                     consumer, thread, cursor, unit.range);
      release_tile<kStages>(s, cursor, thread % 32);
      // A sliced unit's warp stores only where it is its tile's last (its rows' sum in acc).
      if (Sliced && !add_up_k_slices<BN>(acc[0], k, u, unit.tile, consumer, thread)) continue;
#pragma unroll
      for (int h = 0; h < (Tall ? 2 : 1); ++h)
        if (h < unit.blocks)
          store_tile_nchw_registers<Elem, BN, Activates>(
              p, acc[h], unit.first_row + 64 * (unit.blocks * consumer + h), unit.first_col,
              thread);
    }
  }
#endif
}

}  // namespace gwprune::cuda::implicit::windows
