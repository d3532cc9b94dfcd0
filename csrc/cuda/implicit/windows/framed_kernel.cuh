// The framed-window kernel (contract in framed_geometry.cuh): window_kernel.cuh's CTA
// with framed windows. Warpgroup 0's first two warps produce (framed_producer.cuh),
// warpgroups 1 and 2 consume with FramedWindowView (register_consumer.cuh).
//
// Shared memory: kStages weight tiles | the ring (R slots and the zero slot) | the stage
// tables | scratch and each stage's last channel | the stages' new channels | the copy
// rows | barriers.
#pragma once

#include <cuda.h>

#include <cstdint>

#include "../sm90_primitives.cuh"
#include "framed_geometry.cuh"
#include "framed_producer.cuh"
#include "register_consumer.cuh"
#include "window_kernel.cuh"

namespace gwprune::cuda::implicit::windows {

template <int BN>
struct FramedLayout {
  static constexpr int kBTileBytes = BN * 128;
  static constexpr int kRingOffset = kStages * kBTileBytes;
  static constexpr int kTableBytes = kStages * kBK * 4;
  static constexpr int kScratchBytes = 128;
  static constexpr int kNewChannelBytes = 2 * kBK * 4;
  // R slots and the zero slot.
  __host__ __device__ static int ring_bytes(const FramedLaunch& w) {
    return w.slot_elements * 2 * (static_cast<int>(w.ring.divisor) + 1);
  }
  __host__ __device__ static int copy_row_bytes(const FramedLaunch& w) {
    return 8 * w.max_segments * w.segment_rows;
  }
  static int shared_bytes(const FramedLaunch& w) {
    return 1024 + kRingOffset + ring_bytes(w) + kTableBytes + kScratchBytes + kNewChannelBytes +
           copy_row_bytes(w) + 8 * (2 * kStages + static_cast<int>(w.ring.divisor));
  }
};

// The largest ring (up to kMaxRingSlots) that shared memory holds next to BN-wide weight
// stages, or false when fewer than kMinRingSlots fit (window_kernel.cuh's choose_ring).
template <int BN>
inline bool choose_framed_ring(FramedLaunch& w) {
  w.ring = FastDivision::of(1);
  const int fixed = FramedLayout<BN>::shared_bytes(w) - w.slot_elements * 2 - 8;
  int slots = (kMaxSharedBytes - fixed) / (w.slot_elements * 2 + 8);
  if (slots > kMaxRingSlots) slots = kMaxRingSlots;
  if (slots < kMinRingSlots) return false;
  w.ring = FastDivision::of(slots);
  return FramedLayout<BN>::shared_bytes(w) <= kMaxSharedBytes;
}

template <typename Elem, int BN>
__global__ void __launch_bounds__(kThreads, 1)
    framed_conv_kernel(const __grid_constant__ CUtensorMap weight_map, const ConvProblem p,
                       const FramedLaunch w) {
#ifdef GWPRUNE_SM90A_DEVICE
  using Layout = FramedLayout<BN>;
  extern __shared__ uint8_t shared_raw[];
  const WindowTile cta = window_tile<BN>(p, shared_raw);
  uint8_t* shared = cta.shared;
  const int ring_slots = static_cast<int>(w.ring.divisor);
  uint8_t* ring = shared + Layout::kRingOffset;
  FramedShared s;
  s.b_stages = shared;
  s.ring = smem_address(ring);
  s.tables = reinterpret_cast<int*>(ring + Layout::ring_bytes(w));
  s.scratch = reinterpret_cast<int*>(reinterpret_cast<uint8_t*>(s.tables) + Layout::kTableBytes);
  s.stage_last = s.scratch + 4;
  s.new_channels =
      reinterpret_cast<int*>(reinterpret_cast<uint8_t*>(s.scratch) + Layout::kScratchBytes);
  s.copy_rows = reinterpret_cast<int2*>(s.new_channels + 2 * kBK);
  s.full = reinterpret_cast<uint64_t*>(reinterpret_cast<uint8_t*>(s.copy_rows) +
                                       Layout::copy_row_bytes(w));
  s.empty = s.full + kStages;
  s.ring_empty = s.empty + kStages;
  const int warpgroup = threadIdx.x / 128;
  const int thread = threadIdx.x % 128;

  // The frames: every element the copies never write reads as zero.
  for (int offset = 16 * threadIdx.x; offset < Layout::ring_bytes(w); offset += 16 * kThreads)
    store_shared(s.ring + offset, make_uint4(0, 0, 0, 0));
  if (threadIdx.x == 0) {
    init_window_barriers(s.full, s.empty, s.ring_empty, ring_slots, kFramedThreads);
    prefetch_tensor_map(&weight_map);
  }
  __syncthreads();
  const FramedTile tile = framed_tile(p, cta.first_row);

  if (warpgroup == 0) {
    release_registers<kProducerRegisters>();
    if (thread < kFramedThreads)
      produce_framed<kStages, Layout::kBTileBytes, kBK>(p, &weight_map, s, tile, w, cta.first_col,
                                                        thread);
  } else {
    consume_and_store<FramedWindowView, Elem, BN>(p, s, tile, w, shared, cta.first_row,
                                                  cta.first_col, warpgroup - 1, thread);
  }
#endif
}

}  // namespace gwprune::cuda::implicit::windows
