// K slices for the persistent window kernel: a launch with fewer output tiles than the GPU
// has SMs (a batch of one: 4 tiles for 132 SMs; ResNet-50's 256 x 14² at batch 64: 98) cuts
// each tile's K loop into `slices` contiguous ranges of stages, so tiles x slices work units
// keep every SM busy. A unit multiplies its range into fp32 partials; the last unit of a tile
// to finish adds the tile's partials up and runs the epilogue.
//
// Contract:
// - unit u is tile u / slices, slice u % slices; slice s takes the tile's K stages
//   [s k_tiles / slices, (s + 1) k_tiles / slices), never empty (slices <= k_tiles);
// - every unit stores its partial accumulators (fp32, a warp's 16 rows at a time) to the
//   workspace, then counts itself in its (tile, consumer, warp) arrival counter; the warp that
//   counts last adds the partials of slices 0, 1, ..., slices - 1 in that order whatever order
//   the units finished in, so the output is bitwise the same from run to run;
// - the workspace is fp32 partials for every unit (128 x BN each; choose_k_slices keeps
//   to kMaxUnitsPerSm per SM, so it is bounded by the GPU and not the batch, while a count
//   forced by GWPRUNE_IMPLICIT_K_SLICES, for benchmarks and tests, is not bounded) and one
//   zeroed int counter per (tile, consumer warp), both from PyTorch's caching allocator on
//   the launch's stream;
// - slices == 1 is the unsliced kernel: no workspace, no counters.
#pragma once

#include <cstdint>

#include "../gather_mainloop.cuh"
#include "../sm90_primitives.cuh"

namespace gwprune::cuda::implicit::windows {

// The stages [begin, end) of one tile that a work unit multiplies.
struct KRange {
  int begin, end;
};

GWPRUNE_HOST_DEVICE inline KRange k_slice_range(int k_tiles, int slices, int slice) {
  return {static_cast<int>(int64_t{k_tiles} * slice / slices),
          static_cast<int>(int64_t{k_tiles} * (slice + 1) / slices)};
}

// The kernel parameter: slices per tile and, when there are several, the workspace.
struct KSlices {
  int slices = 1;
  float4* partials = nullptr;  // [unit][consumer][warp][BN / 8][32 lanes] float4
  int* arrivals = nullptr;     // [tile][consumer][warp]
};

constexpr int kConsumerWarps = 8;  // two consumer warpgroups of four warps
// Work units per SM at most: bounds the workspace (128 KB of partials per 256-wide unit).
constexpr int kMaxUnitsPerSm = 4;
// The time of a sliced launch, in half stages (a stage is ~1.5 us on an H200), fitted to the
// measured batch of one (bench/NOTES.md change 29: 2-6 slices of its 4 tiles): a CTA's units
// run one after another, each sliced unit adds ~kSlicedUnitHalfStages (its partials stored,
// fenced and counted while its tensor cores idle), and the tile's last warp ~kHalfStagesPerSlice
// for each partial it reads back. Launches of 98 and more tiles measured slower sliced in
// every count tried, as this estimate has them.
constexpr int kSlicedUnitHalfStages = 11;
constexpr int kHalfStagesPerSlice = 3;
// A unit's stages at least: fewer leave its pipeline of four stages mostly fill and drain.
constexpr int kMinUnitStages = 2;

// The slices per tile with the least estimated time (1: the unsliced kernel), where slicing
// must be estimated at least 10 % faster.
inline int choose_k_slices(int64_t tiles, int k_tiles, int sms) {
  const int64_t unsliced = (tiles + sms - 1) / sms * 2 * k_tiles;
  int best = 1;
  int64_t best_cost = unsliced;
  for (int slices = 2;
       slices <= k_tiles / kMinUnitStages && tiles * slices <= int64_t{kMaxUnitsPerSm} * sms;
       ++slices) {
    const int64_t waves = (tiles * slices + sms - 1) / sms;
    const int64_t cost = waves * (2 * ((k_tiles + slices - 1) / slices) + kSlicedUnitHalfStages) +
                         int64_t{kHalfStagesPerSlice} * slices;
    if (cost < best_cost && 10 * cost < 9 * unsliced) {
      best = slices;
      best_cost = cost;
    }
  }
  return best;
}

#ifdef GWPRUNE_SM90A_DEVICE

// One consumer warp's part of a sliced unit, after its last wgmma: stores its partials, counts
// itself in, and, where it is the tile's last, leaves the tile's sum in acc and returns true
// (the caller then runs the epilogue for the warp's rows); else returns false.
template <int BN>
__device__ __forceinline__ bool add_up_k_slices(float (&acc)[BN / 2], const KSlices& k, int unit,
                                                int tile, int consumer, int thread) {
  constexpr int kVectors = BN / 8;
  const int warp = consumer * 4 + thread / 32, lane = thread % 32;
  auto partial = [&](int of_unit) {
    return k.partials + (static_cast<int64_t>(of_unit) * kConsumerWarps + warp) * kVectors * 32 +
           lane;
  };
  float4* mine = partial(unit);
#pragma unroll
  for (int j = 0; j < kVectors; ++j)
    __stcg(mine + 32 * j, make_float4(acc[4 * j], acc[4 * j + 1], acc[4 * j + 2], acc[4 * j + 3]));
  // Every lane's partials are ordered before lane 0's count (release), and the last warp's
  // reads after it (acquire): no unit waits for another.
  fence_acq_rel_gpu();
  __syncwarp();
  int arrived = 0;
  if (lane == 0) arrived = atomicAdd(&k.arrivals[tile * kConsumerWarps + warp], 1);
  arrived = __shfl_sync(0xffffffffu, arrived, 0);
  if (arrived != k.slices - 1) return false;
  fence_acq_rel_gpu();
  // The sum in chunks of kChunk vectors, so the loads in flight fit beside the accumulators
  // (all 32 at once spilled in the 256-wide kernel).
  constexpr int kChunk = kVectors < 16 ? kVectors : 16;
  const int first_unit = tile * k.slices;
#pragma unroll
  for (int chunk = 0; chunk < kVectors; chunk += kChunk) {
#pragma unroll 1
    for (int slice = 0; slice < k.slices; ++slice) {
      const float4* part = partial(first_unit + slice) + 32 * chunk;
      float4 v[kChunk];
#pragma unroll
      for (int j = 0; j < kChunk; ++j) v[j] = __ldcg(part + 32 * j);
#pragma unroll
      for (int j = 0; j < kChunk; ++j) {
        float* sum = acc + 4 * (chunk + j);
        // Slice 0 starts the sum, so every run adds in the same order.
        sum[0] = slice == 0 ? v[j].x : sum[0] + v[j].x;
        sum[1] = slice == 0 ? v[j].y : sum[1] + v[j].y;
        sum[2] = slice == 0 ? v[j].z : sum[2] + v[j].z;
        sum[3] = slice == 0 ? v[j].w : sum[3] + v[j].w;
      }
    }
  }
  return true;
}

#endif  // GWPRUNE_SM90A_DEVICE

}  // namespace gwprune::cuda::implicit::windows
