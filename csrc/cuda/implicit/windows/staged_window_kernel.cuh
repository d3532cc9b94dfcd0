// The staged window kernel: the window kernel's producer and windows (window_geometry.cuh's
// contract, window_producer.cuh), with the A tiles built in shared memory by two gatherer
// warps (tile_gatherer.cuh) and multiplied by the shared-memory consumers
// (../mma_consumer.cuh), so the consumers' loop holds no element loads at all.
//
// Warpgroups: 0 produces (its first two warps) and gathers (its last two), 1 and 2 consume
// and store through the shared epilogue (../epilogue.cuh). One CTA per 128-pixel x
// BN-channel tile. (A gatherer warpgroup of its own does not fit: at 512 threads ptxas
// compiles every thread to 128 registers, and the consumers' m64n256 wgmma needs 154.)
//
// Shared memory: kStagedStages weight tiles | as many A tiles | the window ring (R slots) |
// the stage tables | scratch and each stage's last channel | barriers. Three stages, not
// four: the ring needs more than 64 slots beside them (a stage can start 64 channels).
#pragma once

#include <cuda.h>

#include <cstdint>

#include "../epilogue.cuh"
#include "../mma_consumer.cuh"
#include "../sm90_primitives.cuh"
#include "tile_gatherer.cuh"
#include "window_geometry.cuh"
#include "window_kernel.cuh"
#include "window_producer.cuh"

namespace gwprune::cuda::implicit::windows {

constexpr int kStagedStages = 3;
// Named barriers: 1 is the producer's table barrier (window_producer.cuh), then the two
// consumers together, then each consumer's own.
constexpr int kConsumersBarrier = 2;
constexpr int kStagedThreads = 384;
constexpr int kGathererWarps = 2;

// The staged kernel's variants: RegisterSteps = 0, every K step from the gatherer's A
// tiles (consume_stages); RegisterSteps = 2, the split kernel: the consumers read the first
// two K steps of each stage from the windows themselves (consume_windows) and the gatherer
// builds the last two. The consumers hold 128 accumulators (and, split, their fragments
// and pixel views); warpgroup 0 (copies, and the gatherer's two rows' pixels, eight
// entries and sixteen loads in flight) gives up what they claim. setmaxnreg.inc waits for
// the matching dec: the moves must balance.
template <int RegisterSteps>
struct StagedRoles {
  static constexpr bool kSplit = RegisterSteps > 0;
  static constexpr int kLaunchRegisters = 168;
  static constexpr int kConsumerRegisters = kSplit ? 208 : 176;
  static constexpr int kProducerRegisters = kSplit ? 88 : 152;
  static_assert(128 * (kLaunchRegisters - kProducerRegisters) ==
                    256 * (kConsumerRegisters - kLaunchRegisters),
                "registers released by warpgroup 0 must equal those the consumers claim");
  // Readers of each stage's table and windows: the gatherer warps, and the eight consumer
  // warps where they read windows too (else the two consumer warpgroups free the stage).
  static constexpr int kStageReleases = kGathererWarps + (kSplit ? 8 : 2);
  static constexpr int kWindowReaders = kGathererWarps + (kSplit ? 8 : 0);
  static constexpr int kFirstGatheredChunk = 2 * RegisterSteps;
};

// full, empty and a_full per stage.
template <int BN>
using StagedLayout = RingLayout<BN, kStagedStages, kATileBytes, 3>;

// Activates: as for add_bias_and_activate (../epilogue.cuh).
template <typename Elem, int BN, bool ChannelsAligned, int RegisterSteps, bool Activates>
__global__ void __launch_bounds__(kStagedThreads, 1)
    staged_window_conv_kernel(const __grid_constant__ CUtensorMap weight_map,
                              const __grid_constant__ CUtensorMap x_map, const ConvProblem p,
                              const WindowLaunch w) {
#ifdef GWPRUNE_SM90A_DEVICE
  using Layout = StagedLayout<BN>;
  using Roles = StagedRoles<RegisterSteps>;
  constexpr int kS = kStagedStages;
  extern __shared__ uint8_t shared_raw[];
  const WindowTile cta = window_tile<BN>(p, shared_raw);
  uint8_t* shared = cta.shared;
  const TileWindows tile = tile_windows(p, cta.first_row, w.box);
  StagedShared s;
  s.a_full = Layout::place(s, shared, tile, w);
  s.a_stages = shared + Layout::kAOffset;
  const int ring_slots = static_cast<int>(s.ring_slots.slots.divisor);
  const int warpgroup = threadIdx.x / 128;
  const int thread = threadIdx.x % 128;

  if (threadIdx.x == 0) {
    for (int i = 0; i < kS; ++i) {
      mbarrier_init(&s.full[i], kTableThreads);  // every table entry's writer
      mbarrier_init(&s.empty[i], Roles::kStageReleases);
      mbarrier_init(&s.a_full[i], kGathererWarps);
    }
    for (int i = 0; i < ring_slots; ++i) mbarrier_init(&s.ring_empty[i], Roles::kWindowReaders);
    fence_barrier_init();
    prefetch_tensor_map(&weight_map);
    prefetch_tensor_map(&x_map);
  }
  __syncthreads();

  if (warpgroup == 0) {
    release_registers<Roles::kProducerRegisters>();
    if (thread < kTableThreads) {
      produce_windows<kS, Layout::kBTileBytes, kBK>(p, &weight_map, &x_map, s, tile, w,
                                                    cta.first_col, thread);
    } else {
      gather_tiles<RowWindowView<ChannelsAligned>, kS, kBK, kGathererWarps,
                   Roles::kFirstGatheredChunk>(p, s, tile, w, cta.first_row,
                                               thread - kTableThreads);
    }
  } else {
    claim_registers<Roles::kConsumerRegisters>();
    const int consumer = warpgroup - 1;
    float acc[BN / 2];
    if constexpr (Roles::kSplit) {
      consume_windows<RowWindowView<ChannelsAligned>, typename ElemTraits<Elem>::Mma, BN, kS, kBK,
                      RegisterSteps>(acc, p, s, tile, w, cta.first_row, consumer, thread);
    } else {
      consume_stages<typename ElemTraits<Elem>::Mma, BN, kS>(acc, s.a_stages, s.b_stages, s.a_full,
                                                             s.empty, p.k_tiles, consumer,
                                                             thread == 0, 0, s.full);
    }
    // Both consumers are past their last wgmma: the stages can hold the output.
    named_barrier_sync(kConsumersBarrier, 256);
    constexpr int kStagingBytes = BN * (64 * sizeof(Elem) + 16);
    static_assert(2 * kStagingBytes <= Layout::kRingOffset, "the output tiles fit the stages");
    store_tile<Elem, BN, false, Activates>(p, acc, shared + consumer * kStagingBytes,
                                           cta.first_row + 64 * consumer, cta.first_col, thread,
                                           kConsumersBarrier + 1 + consumer);
  }
#endif
}

}  // namespace gwprune::cuda::implicit::windows
