// Probe: how close two consumer warpgroups get to the tensor pipe's peak with the window
// kernels' wgmma pattern, and with the alternatives. The ablations of bench/NOTES.md change
// 25 left a "skeleton" (no copies, no element loads, no epilogue) at 54 % tensor-pipe busy
// and 1.36x the anchor, so something in the consumers' issue pattern itself costs ~30 %.
// This kernel has nothing but that pattern: 132 CTAs of 384 threads (warpgroup 0 idle, as
// the producer's), each consumer warpgroup issuing m64n256k16 fp16 wgmma on 4 weight
// stages of shared memory (BK = 64: 4 K steps a stage), no barriers, no global memory,
// unless a variant adds them (+copies). Results: bench/NOTES.md change 32.
//
// Variants (template arguments, one line each):
//   RS<P>      A in registers, one commit per K step, wait_group<P> before each step's
//              fragment is rewritten (the window kernels use P = 1: two in flight);
//   RS<P>+lds  the same, each fragment built from 8 predicated 2-byte shared loads at
//              addresses read from a per-stage table (2 x 16-byte loads per step), as the
//              register consumer does;
//   RS-stage   a stage's four fragments written, then its four wgmma in one commit group,
//              wait_group<1> once per stage (eight fragment sets);
//   SS-step    A in shared memory, one commit and wait_group<1> per step;
//   SS-stage   A in shared memory, four wgmma per commit, wait_group<1> per stage (CUTLASS's
//              mainloop);
//   +copies    beside the variant, one producer thread copies each stage's bytes as the
//              window producer does (a 32 KB weight tile, 17 window boxes of 512 B), and
//              the consumers wait for each stage's full barrier and free it as the kernel's do.
// RS<P>+lds takes its element loads in one of the forms of `Loads` below.
// Prints ms and TFLOP/s per variant, best of 5 launches.
//   nvcc -std=c++17 -O3 -arch=sm_90a -I../../../csrc/cuda/implicit -o wgmma_issue_probe
//   wgmma_issue_probe.cu && ./wgmma_issue_probe
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>

#include "probe_timing.cuh"
#include "sm90_primitives.cuh"
#include "wgmma_ops.cuh"

using namespace gwprune::cuda::implicit;

constexpr int kStages = 4;
constexpr int kBTileBytes = 256 * 128;  // 256 output channels x 64 groups, 16-bit
constexpr int kATileBytes = 128 * 128;  // 128 pixels x 64 groups
constexpr int kTableBytes = 64 * 8;     // and as much again for the 4-byte form
constexpr int kSharedBytes = kStages * kBTileBytes + kATileBytes + 2 * kStages * kTableBytes + 1024;

enum class Variant { kRegister, kRegisterLoads, kRegisterStage, kSharedStep, kSharedStage };
// How the RS+lds variant gets its elements (each per K step and thread):
//   kTable8     2 x 16-byte table loads (8-byte entries: view offset, tap bit) + 8 2-byte
//               element loads: the register consumer today;
//   kTable4     1 x 16-byte table load (4-byte entries: offset | tap index << 27, laid out so
//               a lane's four groups are adjacent) + 8 element loads;
//   kNoTable    the offsets from registers (no table load) + 8 element loads;
//   kTableOnly  the 2 table loads, fragments from the entries (no element loads);
//   kPairs      the 4-byte table + 4 4-byte loads, each two pixels of one group;
//   kAhead8/4   8- or 4-byte entries, but each stage's entries loaded into registers during
//               the stage before (at its step 1), so no element load waits for a table load.
enum class Loads { kTable8, kTable4, kNoTable, kTableOnly, kPairs, kAhead8, kAhead4 };

template <Variant V, int Pending, Loads L = Loads::kTable8, bool Copies = false>
__global__ void __launch_bounds__(384, 1) issue(int stages, float* sink, const uint8_t* source) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ uint8_t raw[];
  uint8_t* base =
      reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(raw) + 1023) & ~uintptr_t{1023});
  // Small fp16 values everywhere (0x1400 ~ 1e-3), so nothing overflows.
  for (int i = threadIdx.x; i < kSharedBytes / 4 - 256; i += blockDim.x)
    reinterpret_cast<uint32_t*>(base)[i] = 0x14001400u;
  uint32_t* table = reinterpret_cast<uint32_t*>(base + kStages * kBTileBytes + kATileBytes);
  uint32_t* packed = table + 2 * kStages * 64;
  // Views as the window producer lays them out at keep .5 of a 28-wide image: a stage's
  // groups are ~4.5 taps of each of ~14 channels, each channel in its own slot (1,600 bytes)
  // moved back by a 16-byte bank skew per ordinal, each tap a shift of i rows and j columns.
  for (int i = threadIdx.x; i < kStages * 64; i += blockDim.x) {
    const int q = i * 2 / 9, tap = i * 2 % 9;
    const uint32_t offset = (q % 60) * 1600 + 16 * (3 - (q & 3)) + 2 * ((tap / 3) * 28 + tap % 3);
    table[2 * i] = offset;
    table[2 * i + 1] = 1u << tap;
    // The 4-byte form: [stage][step][lane % 4][4 groups], offset | tap << 27.
    const int stage = i / 64, g = i % 64, step = g / 16, r = g % 16;
    const int lane4 = (r % 8) / 2, which = (r % 2) + 2 * (r / 8);
    packed[stage * 64 + step * 16 + lane4 * 4 + which] = offset | static_cast<uint32_t>(tap) << 27;
  }
  __shared__ alignas(8) uint64_t full[kStages], empty[kStages];
  if (threadIdx.x == 0) {
    for (int i = 0; i < kStages; ++i) mbarrier_init(&full[i], 1), mbarrier_init(&empty[i], 8);
    fence_barrier_init();
  }
  __syncthreads();
  // The window kernels' register split: 56 for the producer warpgroup, 224 for consumers.
  if (threadIdx.x < 128) {
    release_registers<56>();
    // Copies: one thread writes each stage's bytes as the window producer does (a 32 KB
    // weight tile and 17 window boxes of 512 bytes, from an L2-resident buffer), paced by the
    // consumers' releases; nobody waits for the copies, so only their shared-memory writes
    // compete with the consumers.
    if (Copies && threadIdx.x == 0) {
      for (int g = 0; g < stages; ++g) {
        const int stage = g % kStages;
        if (g >= kStages) {
          mbarrier_wait(&empty[stage], ((g / kStages) - 1) & 1);
          mbarrier_wait(&full[stage], ((g / kStages) - 1) & 1);
        }
        const uint32_t bar = smem_address(&full[stage]);
        asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar),
                     "r"(kBTileBytes + 17 * 512)
                     : "memory");
        const uint8_t* from = source + (g % 16) * kBTileBytes;
        asm volatile(
            "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, "
            "[%3];" ::"r"(smem_address(base + stage * kBTileBytes)),
            "l"(from), "r"(kBTileBytes), "r"(bar)
            : "memory");
        for (int b = 0; b < 17; ++b)
          asm volatile(
              "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], "
              "512, [%2];" ::"r"(smem_address(base + kStages * kBTileBytes + 512 * (b % 32))),
              "l"(from + 512 * b + 65536), "r"(bar)
              : "memory");
      }
    }
    return;
  }
  claim_registers<224>();
  const int consumer = threadIdx.x / 128 - 1, thread = threadIdx.x % 128;
  const int lane = thread % 32;
  const uint32_t b0 = smem_address(base);
  const uint32_t a_tile = b0 + kStages * kBTileBytes + consumer * kATileBytes / 2;
  const uint32_t tables = b0 + kStages * kBTileBytes + kATileBytes;
  // A thread's fragment rows are consecutive pixels of one image row (16 w + lane / 4, +8).
  const uint32_t pixel = b0 + 2 * (16 * (thread / 32) + lane / 4 + 64 * consumer);
  const uint32_t taps = 0x1ff;
  const uint32_t pair = b0 + 4 * (16 * (thread / 32) + lane / 4 + 64 * consumer);
  const uint32_t packed_tables = tables + kStages * kTableBytes;
  // kAhead*: the entries of the stage being read [half] and of the next one [half ^ 1].
  uint32_t ahead_offset[2][4][4] = {}, ahead_valid[2][4][4] = {};
  auto load_entries = [&](int stage, uint32_t (&offset)[4][4], uint32_t (&valid)[4][4]) {
#pragma unroll
    for (int step = 0; step < 4; ++step) {
      if constexpr (L == Loads::kTable8 || L == Loads::kTableOnly || L == Loads::kAhead8) {
        const uint32_t t = tables + stage * kTableBytes + (16 * step + 2 * (lane % 4)) * 8;
        const uint4 low = load_shared<uint4>(t), high = load_shared<uint4>(t + 64);
        const uint32_t o[4] = {low.x, low.z, high.x, high.z};
        const uint32_t v[4] = {low.y, low.w, high.y, high.w};
#pragma unroll
        for (int e = 0; e < 4; ++e) offset[step][e] = o[e], valid[step][e] = taps & v[e];
      } else {
        const uint4 t = load_shared<uint4>(packed_tables + stage * kTableBytes / 2 +
                                           (16 * step + 4 * (lane % 4)) * 4);
        const uint32_t w[4] = {t.x, t.y, t.z, t.w};
#pragma unroll
        for (int e = 0; e < 4; ++e)
          offset[step][e] = w[e] & 0x7ffffffu, valid[step][e] = (taps >> (w[e] >> 27)) & 1u;
      }
    }
  };
  constexpr bool kAhead = L == Loads::kAhead8 || L == Loads::kAhead4;
  if constexpr (kAhead) load_entries(0, ahead_offset[0], ahead_valid[0]);
  uint32_t fixed[4][4];  // kNoTable: this thread's offsets, the same every stage
#pragma unroll
  for (int step = 0; step < 4; ++step)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int i = 16 * step + 2 * (lane % 4) + (e % 2) + 8 * (e / 2);
      const int q = i * 2 / 9, tap = i * 2 % 9;
      fixed[step][e] = (q % 60) * 1600 + 16 * (3 - (q & 3)) + 2 * ((tap / 3) * 28 + tap % 3);
    }
  float acc[128];
#pragma unroll
  for (int i = 0; i < 128; ++i) acc[i] = 0.f;
  uint32_t a[2][4][4] = {};
  uint32_t sink_bits = 0;
#pragma unroll 1
  for (int kt = 0; kt < stages; kt += 2) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int stage = (kt + half) % kStages;
      const uint32_t b = b0 + stage * kBTileBytes;
      // Copies: each stage waits for its bytes and hands the one before back, as the
      // window kernel's consumers do (unpaced consumers would lap the producer's parities).
      if constexpr (Copies) {
        mbarrier_wait(&full[stage], ((kt + half) / kStages) & 1);
        __syncwarp();
        if (lane == 0 && kt + half > 0) mbarrier_arrive(&empty[(stage + kStages - 1) % kStages]);
      }
      if constexpr (V == Variant::kSharedStage || V == Variant::kRegisterStage) {
        if constexpr (V == Variant::kRegisterStage) {
#pragma unroll
          for (int step = 0; step < 4; ++step)
#pragma unroll
            for (int r = 0; r < 4; ++r) a[half][step][r] = 0x14001400u ^ ((kt + step) & 1);
        }
        fence_accumulators(acc);
        wgmma_fence();
#pragma unroll
        for (int step = 0; step < 4; ++step) {
          if constexpr (V == Variant::kRegisterStage)
            WgmmaRegisterA<Fp16, 256>::mma(acc, a[half][step],
                                           sw128_kmajor_descriptor(b + 32 * step), 1);
          else
            Wgmma<Fp16, 256>::mma(acc, sw128_kmajor_descriptor(a_tile + 32 * step),
                                  sw128_kmajor_descriptor(b + 32 * step), 1);
        }
        wgmma_commit_group();
        wgmma_wait_group<1>();
        fence_accumulators(acc);
        if constexpr (V == Variant::kRegisterStage) {
#pragma unroll
          for (int step = 0; step < 4; ++step)
            sink_bits ^= a[half ^ 1][step][0] ^ a[half ^ 1][step][3];
        }
      } else {
        uint32_t offset[4][4], valid[4][4];
        if constexpr (kAhead) {
#pragma unroll
          for (int step = 0; step < 4; ++step)
#pragma unroll
            for (int e = 0; e < 4; ++e)
              offset[step][e] = ahead_offset[half][step][e],
              valid[step][e] = ahead_valid[half][step][e];
        } else if constexpr (L == Loads::kNoTable) {
#pragma unroll
          for (int step = 0; step < 4; ++step)
#pragma unroll
            for (int e = 0; e < 4; ++e)
              offset[step][e] = fixed[step][e] + (kt & 1), valid[step][e] = taps >> e & 1;
        } else if constexpr (V == Variant::kRegisterLoads) {
          load_entries(stage, offset, valid);
        }
#pragma unroll
        for (int step = 0; step < 4; ++step) {
          uint32_t v[4][2];
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            if constexpr (V != Variant::kRegisterLoads) {
              v[e][0] = 0x1400u ^ ((kt + e) & 1);
              v[e][1] = 0x1400u ^ ((kt + e + 1) & 1);
            } else if constexpr (L == Loads::kTableOnly) {
              v[e][0] = offset[step][e] & 0x1400u;
              v[e][1] = valid[step][e] & 0x1400u;
            } else if constexpr (L == Loads::kPairs) {
              // Both pixels of the pair from one aligned 4-byte word (an even view offset).
              const uint32_t both =
                  load_shared_or_zero<4>(pair + (offset[step][e] & ~3u), valid[step][e]);
              v[e][0] = both & 0xffffu;
              v[e][1] = both >> 16;
            } else {
#pragma unroll
              for (int h = 0; h < 2; ++h)
                v[e][h] = load_shared_or_zero<2>(pixel + 16 * h + offset[step][e], valid[step][e]);
            }
          }
          // kAhead*: the next stage's entries, once this stage's first loads are out.
          if constexpr (kAhead)
            if (step == 1)
              load_entries((stage + 1) % kStages, ahead_offset[half ^ 1], ahead_valid[half ^ 1]);
          wgmma_wait_group<Pending>();
          uint32_t (&frag)[4] = a[0][step];
          sink_bits ^= frag[0] ^ frag[1] ^ frag[2] ^ frag[3];
          pack_register_fragment(v, frag);
          fence_accumulators(acc);
          wgmma_fence();
          if constexpr (V == Variant::kSharedStep)
            Wgmma<Fp16, 256>::mma(acc, sw128_kmajor_descriptor(a_tile + 32 * step),
                                  sw128_kmajor_descriptor(b + 32 * step), 1);
          else
            WgmmaRegisterA<Fp16, 256>::mma(acc, frag, sw128_kmajor_descriptor(b + 32 * step), 1);
          wgmma_commit_group();
          fence_accumulators(acc);
        }
      }
    }
  }
  wgmma_wait_group<0>();
  fence_accumulators(acc);
  float total = __uint_as_float(sink_bits & 1);
#pragma unroll
  for (int i = 0; i < 128; ++i) total += acc[i];
  if (total == 12345.f) sink[threadIdx.x] = total;  // keeps every wgmma alive
#endif
}

template <Variant V, int Pending, Loads L = Loads::kTable8, bool Copies = false>
void run(const char* name, int stages, float* sink, const uint8_t* source) {
  auto kernel = issue<V, Pending, L, Copies>;
  cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSharedBytes);
  const int sms = probe_sm_count();
  cudaError_t error;
  const float best =
      best_launch_ms([&] { kernel<<<sms, 384, kSharedBytes>>>(stages, sink, source); }, error);
  const double flop = 2.0 * sms * 2 * stages * 4 * 64.0 * 256 * 16;
  std::printf("%-20s %9.4f ms  %7.1f TFLOP/s  %s\n", name, best, flop / best / 1e9,
              error == cudaSuccess ? "" : cudaGetErrorString(error));
  std::fflush(stdout);
}

int main() {
  float* sink = nullptr;
  cudaMalloc(&sink, 384 * sizeof(float));
  uint8_t* source = nullptr;  // 16 weight tiles and the window boxes past them: 640 KB
  cudaMalloc(&source, 17 * kBTileBytes + 65536);
  cudaMemset(source, 0, 17 * kBTileBytes + 65536);
  const int stages = 4096;  // per CTA: ~0.5 ms at peak
  run<Variant::kRegister, 1>("RS<1>", stages, sink, source);
  run<Variant::kRegister, 2>("RS<2>", stages, sink, source);
  run<Variant::kRegister, 3>("RS<3>", stages, sink, source);
  run<Variant::kRegisterLoads, 1>("RS<1>+lds", stages, sink, source);
  run<Variant::kRegisterLoads, 2>("RS<2>+lds", stages, sink, source);
  run<Variant::kRegisterLoads, 3>("RS<3>+lds", stages, sink, source);
  run<Variant::kRegisterLoads, 1, Loads::kTable4>("RS<1>+lds/t4", stages, sink, source);
  run<Variant::kRegisterLoads, 1, Loads::kNoTable>("RS<1>+lds/t0", stages, sink, source);
  run<Variant::kRegisterLoads, 1, Loads::kTableOnly>("RS<1>+table", stages, sink, source);
  run<Variant::kRegisterLoads, 1, Loads::kAhead8>("RS<1>+ahead8", stages, sink, source);
  run<Variant::kRegisterLoads, 1, Loads::kAhead4>("RS<1>+ahead4", stages, sink, source);
  run<Variant::kRegisterLoads, 2, Loads::kAhead4>("RS<2>+ahead4", stages, sink, source);
  run<Variant::kRegisterStage, 1>("RS-stage", stages, sink, source);
  run<Variant::kSharedStep, 1>("SS-step", stages, sink, source);
  run<Variant::kSharedStage, 1>("SS-stage", stages, sink, source);
  run<Variant::kRegister, 1, Loads::kTable8, true>("RS<1>+copies", stages, sink, source);
  run<Variant::kRegisterLoads, 1, Loads::kTable8, true>("RS<1>+lds+copies", stages, sink, source);
  run<Variant::kRegisterLoads, 1, Loads::kNoTable, true>("RS<1>+lds/t0+copies", stages, sink,
                                                         source);
  run<Variant::kRegisterLoads, 1, Loads::kPairs, true>("RS<1>+pairs+copies", stages, sink, source);
  // Last: a misaligned pair would end the context for every variant after it.
  run<Variant::kRegisterLoads, 1, Loads::kPairs>("RS<1>+pairs", stages, sink, source);
  run<Variant::kRegisterLoads, 2, Loads::kPairs>("RS<2>+pairs", stages, sink, source);
  cudaFree(sink);
  cudaFree(source);
  return 0;
}
