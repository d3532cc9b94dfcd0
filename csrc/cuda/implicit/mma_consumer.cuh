// The consumer warpgroups of the implicit conv: warpgroup w multiplies rows
// [64 w, 64 w + 64) of each stage's A tile by the whole B tile with wgmma, keeping the
// fp32 accumulators in registers, and hands each stage back to the producer once the
// wgmmas that read it have retired (one wgmma batch stays in flight).
//
// A tile layouts (both 16 KB, 128-byte swizzle), as the producer writes them:
// - K-major (the row gather): 128 rows of 128 bytes; a consumer's half starts at row
//   64 w, and each K step of 32 bytes moves 32 bytes along the rows;
// - MN-major (the NCHW run gather, 16-bit only): 1024-byte atoms of 64 pixels x 8 kept
//   groups, the 8 K groups of consumer w's 64 pixels at atoms 8 w .. 8 w + 7; a K step
//   of 16 groups is two atoms (2048 bytes).
#pragma once

#include <cstdint>

#include "sm90_primitives.cuh"
#include "wgmma_ops.cuh"

namespace gwprune::cuda::implicit {

#ifdef GWPRUNE_SM90A_DEVICE

// Where the B tile completes on a barrier of its own (b_full: the staged window kernel,
// whose A tiles are written by another warpgroup), that is waited for too.
//
// Paired (a 2-CTA cluster sharing the A tiles, run_gather.cuh): the peer CTA's producer
// writes half of every stage, so a stage is waited for at cluster scope and handed back to
// both producers (peer_empty: the peer's empty barriers as a shared::cluster address).
template <typename MmaType, int BN, int Stages, bool AMnMajor = false, bool Paired = false>
__device__ __forceinline__ void consume_stages(float (&acc)[BN / 2], uint8_t* a_stages,
                                               uint8_t* b_stages, uint64_t* full, uint64_t* empty,
                                               int k_tiles, int consumer, bool signals,
                                               uint32_t peer_empty = 0,
                                               uint64_t* b_full = nullptr) {
  using Mma = Wgmma<MmaType, BN>;
  constexpr int kStepsPerStage = 128 / 32;  // every K step is 32 bytes of a 128-byte row
  constexpr int kATileBytes = 128 * 128;
  constexpr int kBTileBytes = BN * 128;
#pragma unroll 1
  for (int kt = 0; kt < k_tiles; ++kt) {
    const int stage = kt % Stages;
    mbarrier_wait<Paired>(&full[stage], (kt / Stages) & 1);
    if (b_full != nullptr) mbarrier_wait(&b_full[stage], (kt / Stages) & 1);
    const uint32_t a = smem_address(a_stages + stage * kATileBytes + consumer * 64 * 128);
    const uint32_t b = smem_address(b_stages + stage * kBTileBytes);
    fence_accumulators(acc);
    wgmma_fence();
#pragma unroll
    for (int step = 0; step < kStepsPerStage; ++step) {
      const uint64_t b_desc = sw128_kmajor_descriptor(b + 32 * step);
      const int accumulate = (kt > 0 || step > 0) ? 1 : 0;
      if constexpr (AMnMajor) {
        Mma::template mma<1>(acc, sw128_mnmajor_descriptor(a + 2048 * step, 1024, 8192), b_desc,
                             accumulate);
      } else {
        Mma::mma(acc, sw128_kmajor_descriptor(a + 32 * step), b_desc, accumulate);
      }
    }
    wgmma_commit_group();
    fence_accumulators(acc);
    wgmma_wait_group<1>();
    if (kt > 0 && signals) {
      mbarrier_arrive(&empty[(kt - 1) % Stages]);
      if constexpr (Paired) mbarrier_arrive_cluster(peer_empty + ((kt - 1) % Stages) * 8);
    }
  }
  wgmma_wait_group<0>();
  fence_accumulators(acc);
}

#endif  // GWPRUNE_SM90A_DEVICE

}  // namespace gwprune::cuda::implicit
