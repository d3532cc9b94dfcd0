// Probe: the mainloop ceiling of a "shifted tile" design for the NCHW 16-bit implicit conv,
// where the consumers run shared-memory wgmma on an MN-major A tile that four shifter warps
// build from the channel windows, instead of reading A elements into registers themselves.
//
// Why: bench/NOTES.md change 32 measured the window kernels' register consumer at ~690
// TFLOP/s with nothing but its table and element loads beside wgmma (the anchor runs at
// ~700), so that design's mainloop alone sits at ~1.08x the anchor. Under the run gather's
// condition (stride 1, OW == W: 8 consecutive output pixels of one kept group are 8
// consecutive elements of x, so of its window), an A tile row of 8 pixels is one unaligned
// 16-byte run of a window: two aligned 16-byte shared loads, a shift by the run's start
// residue, a padding mask and one 16-byte store (run_gather.cuh's arithmetic, from shared
// memory instead of L2). The consumers' loop then holds nothing but barriers and wgmma.
//
// The kernel: 132 CTAs of 384 threads; warpgroup 0's four warps shift (and, with Copies,
// its thread 0 first starts each stage's weight tile and 17 window boxes as the window
// producer does), warpgroups 1 and 2 run m64n256k16 fp16 wgmma with A MN-major from the
// shifted tiles, B K-major from four weight stages. Stages are handed over by mbarriers as
// in the kernel (a_full: 4 shifter warps; empty: 8 consumer warps). Table and windows are
// laid out as the window producer would at keep .5 of a 28-wide image (~4.5 taps of each
// channel per stage, 16-byte bank skew per channel), padding masks as for a tile at the
// top of an image (its first row's taps above the image are zero, and each row's edges).
//
// Variants:
//   static     consumers only, A and B fixed (the SS mainloop alone, no barriers);
//   handoff    the shifters only wait and arrive (the barrier hand-off's own cost);
//   shift2     the shift with two 16-byte loads per run;
//   shiftx     the shift with one load per run, the next block from the neighbour lane;
//   +copies    as above, with the copies.
// `--check` runs the shifters once on one CTA and compares the A tile with the host's.
//   nvcc -std=c++17 -O3 -arch=sm_90a -I../../../csrc/cuda/implicit -o shift_tile_probe
//   shift_tile_probe.cu && ./shift_tile_probe
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "probe_timing.cuh"
#include "run_gather.cuh"
#include "sm90_primitives.cuh"
#include "wgmma_ops.cuh"

using namespace gwprune::cuda::implicit;

constexpr int kStages = 4;
constexpr int kBTileBytes = 256 * 128;  // 256 output channels x 64 groups
constexpr int kATileBytes = 128 * 128;  // 128 pixels x 64 groups, MN-major
constexpr int kSlots = 12;
constexpr int kSlotBytes = 1600;  // 8 rows of 28, the skew and the 16-byte slack, rounded
constexpr int kWindowBytes = kSlots * kSlotBytes;
constexpr int kScratchBytes = 17 * 512;  // where +copies' window boxes land
constexpr int kTableBytes = kStages * 64 * 8;
constexpr int kAOffset = kStages * kBTileBytes;
constexpr int kWindowOffset = kAOffset + kStages * kATileBytes;
constexpr int kScratchOffset = kWindowOffset + kWindowBytes;
constexpr int kTableOffset = kScratchOffset + kScratchBytes;
constexpr int kSharedBytes = kTableOffset + kTableBytes + 1024;
constexpr int kWidth = 28;

enum class Mode { kStatic, kHandoff, kShift2, kShiftNeighbour };

// Group i of a stage (keep .5): channel ordinal q = 2i / 9, tap 2i % 9; its view's byte
// offset in the windows (slot, bank skew, tap shift) and its tap (i | j << 8).
__host__ __device__ inline uint32_t view_offset(int i) {
  const int q = i * 2 / 9, tap = i * 2 % 9;
  return (q % kSlots) * kSlotBytes + 16 * (3 - (q & 3)) + 2 * ((tap / 3) * kWidth + tap % 3);
}
__host__ __device__ inline uint32_t view_tap(int i) {
  const int tap = i * 2 % 9;
  return static_cast<uint32_t>(tap / 3) | static_cast<uint32_t>(tap % 3) << 8;
}
// Pixel e of the tile (row 0 of an image, so taps i = 0 of the first 28 pixels are above
// it): which kernel rows and columns are in the image (bits).
__host__ __device__ inline uint32_t pixel_rows(int e) { return e < kWidth ? 0x6u : 0x7u; }
__host__ __device__ inline uint32_t pixel_cols(int e) {
  const int ow = e % kWidth;
  return (ow == 0 ? 0x6u : 0x7u) & (ow == kWidth - 1 ? 0x3u : 0x7u);
}
// A window element's value: small fp16 numbers, distinct by position.
__host__ __device__ inline uint16_t window_value(int element) {
  return static_cast<uint16_t>(0x1400 + (element * 7 & 0x3ff));
}

template <Mode M, bool Copies>
__global__ void __launch_bounds__(384, 1)
    shifted(int stages, float* sink, const uint8_t* source, uint16_t* check) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ uint8_t raw[];
  uint8_t* base =
      reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(raw) + 1023) & ~uintptr_t{1023});
  for (int i = threadIdx.x; i < kWindowOffset / 4; i += blockDim.x)
    reinterpret_cast<uint32_t*>(base)[i] = 0x14001400u;
  for (int i = threadIdx.x; i < kWindowBytes / 2; i += blockDim.x)
    reinterpret_cast<uint16_t*>(base + kWindowOffset)[i] = window_value(i);
  uint2* table = reinterpret_cast<uint2*>(base + kTableOffset);
  for (int i = threadIdx.x; i < kStages * 64; i += blockDim.x)
    table[i] = make_uint2(view_offset(i % 64), view_tap(i % 64));
  __shared__ alignas(8) uint64_t a_full[kStages], empty[kStages], b_full[kStages];
  if (threadIdx.x == 0) {
    for (int i = 0; i < kStages; ++i) {
      mbarrier_init(&a_full[i], 4);
      mbarrier_init(&empty[i], 8);
      mbarrier_init(&b_full[i], 1);
    }
    fence_barrier_init();
  }
  __syncthreads();
  const uint32_t b0 = smem_address(base);
  const uint32_t windows = b0 + kWindowOffset;
  if (threadIdx.x < 128) {
    release_registers<104>();
    if (M == Mode::kStatic) return;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int run = lane % 16, half = run / 8, column = run % 8;
    const int k_row = 2 * warp + lane / 16;
    // The run's 8 pixels: byte e holds pixel e's in-image kernel rows / columns.
    uint32_t rows_lo = 0, rows_hi = 0, cols_lo = 0, cols_hi = 0;
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      const uint32_t r = pixel_rows(8 * run + e), c = pixel_cols(8 * run + e);
      if (e < 4) {
        rows_lo |= r << (8 * e), cols_lo |= c << (8 * e);
      } else {
        rows_hi |= r << (8 * (e - 4)), cols_hi |= c << (8 * (e - 4));
      }
    }
#pragma unroll 1
    for (int g = 0; g < stages; ++g) {
      const int stage = g % kStages;
      if (g >= kStages) mbarrier_wait(&empty[stage], ((g / kStages) - 1) & 1);
      if (Copies && threadIdx.x == 0) {
        mbarrier_expect_tx(&b_full[stage], kBTileBytes + 17 * 512);
        const uint8_t* from = source + (g % 16) * kBTileBytes;
        const uint32_t bar = smem_address(&b_full[stage]);
        asm volatile(
            "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, "
            "[%3];" ::"r"(b0 + stage * kBTileBytes),
            "l"(from), "r"(kBTileBytes), "r"(bar)
            : "memory");
        for (int b = 0; b < 17; ++b)
          asm volatile(
              "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], "
              "512, [%2];" ::"r"(b0 + kScratchOffset + 512 * b),
              "l"(from + 512 * b + 65536), "r"(bar)
              : "memory");
        mbarrier_arrive(&b_full[stage]);
      }
      if constexpr (M != Mode::kHandoff) {
        const uint32_t a = b0 + kAOffset + stage * kATileBytes;
        const uint32_t entries = smem_address(table + stage * 64);
#pragma unroll
        for (int part = 0; part < 2; ++part) {
          uint4 low[4], high[4];
          uint32_t valid_lo[4], valid_hi[4];
          int shift[4];
#pragma unroll
          for (int t = 0; t < 4; ++t) {
            const int group = 8 * (4 * part + t) + k_row;
            const uint2 entry = load_shared<uint2>(entries + 8 * group);
            const uint32_t i = entry.y & 0xffu, j = entry.y >> 8;
            valid_lo[t] = (rows_lo >> i) & (cols_lo >> j) & 0x01010101u;
            valid_hi[t] = (rows_hi >> i) & (cols_hi >> j) & 0x01010101u;
            const int start = 8 * run + static_cast<int>(entry.x / 2);  // in elements
            shift[t] = start & 7;
            const uint32_t block = windows + 2 * (start & ~7);
            low[t] = load_shared<uint4>(block);
            if constexpr (M == Mode::kShift2) {
              high[t] = load_shared<uint4>(block + 16);
            } else {
              // The next block is the neighbour run's first; run 15 loads its own.
              high[t].x = __shfl_down_sync(0xffffffffu, low[t].x, 1, 16);
              high[t].y = __shfl_down_sync(0xffffffffu, low[t].y, 1, 16);
              high[t].z = __shfl_down_sync(0xffffffffu, low[t].z, 1, 16);
              high[t].w = __shfl_down_sync(0xffffffffu, low[t].w, 1, 16);
              if (run == 15) high[t] = load_shared<uint4>(block + 16);
            }
          }
#pragma unroll
          for (int t = 0; t < 4; ++t) {
            const int group_block = 4 * part + t;
            const uint32_t offset =
                (half * 8 + group_block) * 1024 + k_row * 128 + (((column ^ k_row) & 7) << 4);
            store_shared(a + offset,
                         shift_run(low[t], high[t], shift[t], valid_lo[t], valid_hi[t]));
          }
        }
        fence_proxy_async_shared();
      }
      __syncwarp();
      if (lane == 0) mbarrier_arrive(&a_full[stage]);
      if (check != nullptr && g == 0) {
        // One stage, one CTA: hand the tile to the host.
        mbarrier_wait(&a_full[0], 0);
        for (int i = threadIdx.x; i < kATileBytes / 2; i += 128)
          check[i] = reinterpret_cast<const uint16_t*>(base + kAOffset)[i];
        return;
      }
    }
    return;
  }
  claim_registers<200>();
  if (check != nullptr) return;
  const int consumer = threadIdx.x / 128 - 1;
  const int lane = threadIdx.x % 32;
  float acc[128];
#pragma unroll
  for (int i = 0; i < 128; ++i) acc[i] = 0.f;
#pragma unroll 1
  for (int g = 0; g < stages; ++g) {
    const int stage = g % kStages;
    if constexpr (M != Mode::kStatic) {
      mbarrier_wait(&a_full[stage], (g / kStages) & 1);
      if (Copies) mbarrier_wait(&b_full[stage], (g / kStages) & 1);
    }
    const uint32_t a = b0 + kAOffset + stage * kATileBytes + consumer * 8192;
    const uint32_t b = b0 + stage * kBTileBytes;
    fence_accumulators(acc);
    wgmma_fence();
#pragma unroll
    for (int step = 0; step < 4; ++step)
      Wgmma<Fp16, 256>::mma<1>(acc, sw128_mnmajor_descriptor(a + 2048 * step, 1024, 8192),
                               sw128_kmajor_descriptor(b + 32 * step), 1);
    wgmma_commit_group();
    wgmma_wait_group<1>();
    fence_accumulators(acc);
    if (M != Mode::kStatic && g > 0) {
      __syncwarp();
      if (lane == 0) mbarrier_arrive(&empty[(g - 1) % kStages]);
    }
  }
  wgmma_wait_group<0>();
  fence_accumulators(acc);
  float total = 0.f;
#pragma unroll
  for (int i = 0; i < 128; ++i) total += acc[i];
  if (total == 12345.f) sink[threadIdx.x] = total;  // keeps every wgmma alive
#endif
}

template <Mode M, bool Copies>
void run(const char* name, int stages, float* sink, const uint8_t* source) {
  auto kernel = shifted<M, Copies>;
  cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSharedBytes);
  const int sms = probe_sm_count();
  cudaError_t error;
  const float best = best_launch_ms(
      [&] { kernel<<<sms, 384, kSharedBytes>>>(stages, sink, source, nullptr); }, error);
  const double flop = 2.0 * sms * 2 * stages * 4 * 64.0 * 256 * 16;
  std::printf("%-20s %9.4f ms  %7.1f TFLOP/s  %5.0f cycles/stage at 1.98 GHz  %s\n", name, best,
              flop / best / 1e9, best * 1e-3 * 1.98e9 / stages,
              error == cudaSuccess ? "" : cudaGetErrorString(error));
  std::fflush(stdout);
}

// The A tile the shifters must write for stage 0, element (pixel, group) at the run gather's
// MN-major swizzled position, against what they wrote.
template <Mode M>
int check_tile(uint16_t* device_tile) {
  auto kernel = shifted<M, false>;
  cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSharedBytes);
  cudaMemset(device_tile, 0xff, kATileBytes);
  kernel<<<1, 384, kSharedBytes>>>(1, nullptr, nullptr, device_tile);
  std::vector<uint16_t> tile(kATileBytes / 2);
  cudaMemcpy(tile.data(), device_tile, kATileBytes, cudaMemcpyDeviceToHost);
  int bad = 0;
  for (int group = 0; group < 64; ++group) {
    const uint32_t tap = view_tap(group), i = tap & 0xff, j = tap >> 8;
    for (int pixel = 0; pixel < 128; ++pixel) {
      const bool valid = (pixel_rows(pixel) >> i & 1) && (pixel_cols(pixel) >> j & 1);
      const int element = pixel + static_cast<int>(view_offset(group) / 2);
      const uint16_t want = valid ? window_value(element) : 0;
      const int run = pixel / 8, e = pixel % 8, half = run / 8, column = run % 8;
      const int k_row = group % 8, block = group / 8;
      const int byte =
          (half * 8 + block) * 1024 + k_row * 128 + (((column ^ k_row) & 7) << 4) + 2 * e;
      if (tile[byte / 2] != want && bad++ < 5)
        std::printf("  pixel %d group %d: %04x, want %04x\n", pixel, group, tile[byte / 2], want);
    }
  }
  return bad;
}

int main(int argc, char** argv) {
  float* sink = nullptr;
  cudaMalloc(&sink, 384 * sizeof(float));
  uint8_t* source = nullptr;  // 16 weight tiles and the window boxes past them
  cudaMalloc(&source, 17 * kBTileBytes + 65536);
  cudaMemset(source, 0, 17 * kBTileBytes + 65536);
  uint16_t* tile = nullptr;
  cudaMalloc(&tile, kATileBytes);
  const int bad2 = check_tile<Mode::kShift2>(tile), badx = check_tile<Mode::kShiftNeighbour>(tile);
  std::printf("check: shift2 %d wrong, shiftx %d wrong (of 8192)  %s\n", bad2, badx,
              cudaGetErrorString(cudaGetLastError()));
  if (argc > 1 && std::strcmp(argv[1], "--check") == 0) return bad2 + badx != 0;
  const int stages = 4096;  // per CTA: ~0.5 ms at peak
  for (int repeat = 0; repeat < 2; ++repeat) {
    run<Mode::kStatic, false>("static", stages, sink, source);
    run<Mode::kHandoff, false>("handoff", stages, sink, source);
    run<Mode::kShift2, false>("shift2", stages, sink, source);
    run<Mode::kShiftNeighbour, false>("shiftx", stages, sink, source);
    run<Mode::kHandoff, true>("handoff+copies", stages, sink, source);
    run<Mode::kShift2, true>("shift2+copies", stages, sink, source);
    run<Mode::kShiftNeighbour, true>("shiftx+copies", stages, sink, source);
  }
  cudaFree(sink);
  cudaFree(source);
  cudaFree(tile);
  return 0;
}
