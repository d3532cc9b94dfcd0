// The window kernel (contract in window_geometry.cuh): one CTA per 128-pixel x BN-channel
// output tile; warpgroup 0's first two warps produce (window_producer.cuh), warpgroups 1
// and 2 consume (register_consumer.cuh) and store through the shared epilogue
// (../epilogue.cuh).
//
// Shared memory: kStages weight tiles | the window ring (R slots) | the stage tables |
// scratch and each stage's last channel | barriers.
#pragma once

#include <cuda.h>

#include <cstdint>

#include "../epilogue.cuh"
#include "../sm90_primitives.cuh"
#include "register_consumer.cuh"
#include "window_geometry.cuh"
#include "window_producer.cuh"

namespace gwprune::cuda::implicit::windows {

constexpr int kStages = 4;
constexpr int kBK = 64;  // kept groups per stage (16-bit elements: one 128-byte K slice)
constexpr int kThreads = 384;
constexpr int kMaxSharedBytes = 227 * 1024;
// The producer copies; the consumers hold 128 accumulators plus their fragments, views
// and pixel offsets. The two moves balance: 128 * (168 - 56) == 256 * (224 - 168).
constexpr int kLaunchRegisters = 168;
constexpr int kProducerRegisters = 56;
constexpr int kConsumerRegisters = 224;
static_assert(128 * (kLaunchRegisters - kProducerRegisters) ==
                  256 * (kConsumerRegisters - kLaunchRegisters),
              "registers released by the producer must equal those the consumers claim");

// A window kernel's shared memory: Stages weight tiles of BN rows | as many A tiles of
// ATileBytes (none for the register kernel) | the ring | the stage tables | scratch and each
// stage's last channel | BarriersPerStage barriers per stage, then one per ring slot.
template <int BN, int Stages, int ATileBytes, int BarriersPerStage>
struct RingLayout {
  static constexpr int kBTileBytes = BN * 128;
  static constexpr int kAOffset = Stages * kBTileBytes;
  static constexpr int kRingOffset = kAOffset + Stages * ATileBytes;
  static constexpr int kTableBytes = Stages * kBK * 8;
  static constexpr int kScratchBytes = 128;
  __host__ __device__ static int ring_bytes(const WindowLaunch& w) {
    return w.slot_elements * 2 * static_cast<int>(w.ring.divisor);
  }
  static int shared_bytes(const WindowLaunch& w) {
    return 1024 + kRingOffset + ring_bytes(w) + kTableBytes + kScratchBytes +
           8 * (BarriersPerStage * Stages + kMaxTileRingSlots);
  }
  // Points s's pieces into `shared` (1024-byte aligned) and sizes this CTA's ring; returns
  // the barriers past full and empty (BarriersPerStage - 2 per stage).
  __device__ static uint64_t* place(WindowShared& s, uint8_t* shared, const TileWindows& tile,
                                    const WindowLaunch& w) {
    uint8_t* ring = shared + kRingOffset;
    s.b_stages = shared;
    s.ring = smem_address(ring);
    s.ring_slots = tile_ring(tile, w);
    s.tables = reinterpret_cast<int2*>(ring + ring_bytes(w));
    s.scratch = reinterpret_cast<int*>(reinterpret_cast<uint8_t*>(s.tables) + kTableBytes);
    s.stage_last = s.scratch + 4;
    s.full = reinterpret_cast<uint64_t*>(reinterpret_cast<uint8_t*>(s.scratch) + kScratchBytes);
    s.empty = s.full + Stages;
    s.ring_empty = s.full + BarriersPerStage * Stages;
    return s.empty + Stages;
  }
};

template <int BN>
using WindowLayout = RingLayout<BN, kStages, 0, 2>;

// The largest ring (up to kMaxRingSlots of the launch's largest slots) that shared memory
// holds next to a Layout's stages (WindowLayout, or the staged kernel's StagedLayout), or
// false when fewer than kMinRingSlots fit: the producer copies a channel only once the
// channel R before it is released, so R is how far the copies run ahead. Each CTA then
// splits the same bytes into its own slots (tile_ring).
template <typename Layout>
inline bool choose_ring(WindowLaunch& w) {
  w.ring = FastDivision::of(1);
  const int fixed = Layout::shared_bytes(w) - w.slot_elements * 2;
  int slots = (kMaxSharedBytes - fixed) / (w.slot_elements * 2);
  if (slots > kMaxRingSlots) slots = kMaxRingSlots;
  if (slots < kMinRingSlots) return false;
  w.ring = FastDivision::of(slots);
  return Layout::shared_bytes(w) <= kMaxSharedBytes;
}

#ifdef GWPRUNE_SM90A_DEVICE

// The barriers every window kernel uses, initialised by thread 0 of the CTA.
__device__ __forceinline__ void init_window_barriers(uint64_t* full, uint64_t* empty,
                                                     uint64_t* ring_empty, int ring_slots,
                                                     uint32_t stage_writers) {
  for (int i = 0; i < kStages; ++i) {
    mbarrier_init(&full[i], stage_writers);  // every table entry's writer
    mbarrier_init(&empty[i], 8);             // every consumer warp
  }
  for (int i = 0; i < ring_slots; ++i) mbarrier_init(&ring_empty[i], 8);  // consumer warps
  fence_barrier_init();
}

// A consumer warpgroup's part of a window kernel: the K loop over the window layout View,
// then the output tile through the shared epilogue, staged where the weight stages were.
template <typename View, typename Elem, int BN, typename Shared, typename Tile, typename Launch>
__device__ __forceinline__ void consume_and_store(const ConvProblem& p, const Shared& s,
                                                  const Tile& tile, const Launch& w,
                                                  uint8_t* shared, int first_row, int first_col,
                                                  int consumer, int thread) {
  claim_registers<kConsumerRegisters>();
  float acc[BN / 2];
  consume_windows<View, typename ElemTraits<Elem>::Mma, BN, kStages, kBK>(
      acc, p, s, tile, w, first_row, consumer, thread);
  // Both consumers are past their last wgmma: the weight stages can hold the output.
  named_barrier_sync(2, 256);
  constexpr int kStagingBytes = BN * (64 * sizeof(Elem) + 16);
  static_assert(2 * kStagingBytes <= kStages * BN * 128, "the output tiles fit the stages");
  store_tile<Elem, BN, false>(p, acc, shared + consumer * kStagingBytes, first_row + 64 * consumer,
                              first_col, thread, 3 + consumer);
}

// The CTA's shared memory, 1024-byte aligned, and its output tile: output-channel tiles
// vary fastest, so the CTAs of one pixel tile run together and its windows are read from L2.
struct WindowTile {
  uint8_t* shared;
  int first_row, first_col;
};

template <int BN>
__device__ __forceinline__ WindowTile window_tile(const ConvProblem& p, uint8_t* shared_raw) {
  const int n_tiles = (p.out_channels + BN - 1) / BN;
  return {reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(shared_raw) + 1023) &
                                     ~static_cast<uintptr_t>(1023)),
          static_cast<int>(blockIdx.x / n_tiles) * kTileRows,
          static_cast<int>(blockIdx.x % n_tiles) * BN};
}

#endif  // GWPRUNE_SM90A_DEVICE

template <typename Elem, int BN, bool ChannelsAligned>
__global__ void __launch_bounds__(kThreads, 1)
    window_conv_kernel(const __grid_constant__ CUtensorMap weight_map,
                       const __grid_constant__ CUtensorMap x_map, const ConvProblem p,
                       const WindowLaunch w) {
#ifdef GWPRUNE_SM90A_DEVICE
  using Layout = WindowLayout<BN>;
  extern __shared__ uint8_t shared_raw[];
  const WindowTile cta = window_tile<BN>(p, shared_raw);
  uint8_t* shared = cta.shared;
  const TileWindows tile = tile_windows(p, cta.first_row, w.box);
  WindowShared s;
  Layout::place(s, shared, tile, w);
  const int warpgroup = threadIdx.x / 128;
  const int thread = threadIdx.x % 128;

  if (threadIdx.x == 0) {
    init_window_barriers(s.full, s.empty, s.ring_empty,
                         static_cast<int>(s.ring_slots.slots.divisor), kTableThreads);
    prefetch_tensor_map(&weight_map);
    prefetch_tensor_map(&x_map);
  }
  __syncthreads();

  if (warpgroup == 0) {
    release_registers<kProducerRegisters>();
    if (thread < kTableThreads)
      produce_windows<kStages, Layout::kBTileBytes, kBK>(p, &weight_map, &x_map, s, tile, w,
                                                         cta.first_col, thread);
  } else {
    consume_and_store<RowWindowView<ChannelsAligned>, Elem, BN>(
        p, s, tile, w, shared, cta.first_row, cta.first_col, warpgroup - 1, thread);
  }
#endif
}

}  // namespace gwprune::cuda::implicit::windows
