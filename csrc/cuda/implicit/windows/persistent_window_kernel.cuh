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
// up and runs the epilogue.
//
// Contract: the window kernel's (window_geometry.cuh) plus the register epilogue's (an even
// number of output pixels per image, a 4-byte aligned output); Activates = false only where
// p.activation is kNone; Sliced only with k.slices > 1 and its workspace.
#pragma once

#include <cuda.h>

#include <cstdint>

#include "k_slices.cuh"
#include "register_epilogue.cuh"
#include "window_kernel.cuh"

namespace gwprune::cuda::implicit::windows {

// The producer warpgroup's 128 threads as two teams that alternate stages.
constexpr int kProducerTeams = 2;

template <typename Elem, int BN, bool ChannelsAligned, bool Activates, bool Sliced>
__global__ void __launch_bounds__(kThreads, 1)
    persistent_window_conv_kernel(const __grid_constant__ CUtensorMap weight_map,
                                  const __grid_constant__ CUtensorMap x_map, const ConvProblem p,
                                  const WindowLaunch w, const KSlices k) {
#ifdef GWPRUNE_SM90A_DEVICE
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
  const int col_tiles = (p.out_channels + BN - 1) / BN;
  const int slices = Sliced ? k.slices : 1;
  const int units = ((p.rows + kTileRows - 1) / kTileRows) * col_tiles * slices;
  // Unit u: tile u / slices (output-channel tiles fastest), K slice u % slices.
  auto range_of = [&](int u) {
    return Sliced ? k_slice_range(p.k_tiles, slices, u % slices) : KRange{0, p.k_tiles};
  };

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
        p, team_thread, blockIdx.x < units ? range_of(blockIdx.x).begin : 0);
    for (int u = blockIdx.x; u < units; u += gridDim.x) {
      const int t = u / slices;
      const int first_row = (t / col_tiles) * kTileRows;
      const int next = u + static_cast<int>(gridDim.x);
      produce_windows<kStages, Layout::kBTileBytes, kBK, kProducerTeams>(
          p, &weight_map, &x_map, s, tile_windows(p, first_row, w.box), w, (t % col_tiles) * BN,
          team_thread, cursor, range_of(u), next < units ? range_of(next).begin : 0, team);
    }
  } else {
    claim_registers<kConsumerRegisters>();
    const int consumer = warpgroup - 1;
    ConsumerCursor cursor;
    for (int u = blockIdx.x; u < units; u += gridDim.x) {
      const int t = u / slices;
      const int first_row = (t / col_tiles) * kTileRows;
      const int first_col = (t % col_tiles) * BN;
      float acc[BN / 2];
      consume_windows<RowWindowView<ChannelsAligned>, typename ElemTraits<Elem>::Mma, BN, kStages,
                      kBK>(acc, p, s, tile_windows(p, first_row, w.box), w, first_row, consumer,
                           thread, cursor, range_of(u));
      release_tile<kStages>(s, cursor, thread % 32);
      // A sliced unit's warp stores only where it is its tile's last (its rows' sum in acc).
      if (!Sliced || add_up_k_slices<BN>(acc, k, u, t, consumer, thread))
        store_tile_nchw_registers<Elem, BN, Activates>(p, acc, first_row + 64 * consumer, first_col,
                                                       thread);
    }
  }
#endif
}

}  // namespace gwprune::cuda::implicit::windows
