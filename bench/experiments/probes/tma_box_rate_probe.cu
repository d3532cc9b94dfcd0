// Probe: how fast one SM's copy engine turns TMA boxes around, by box shape. The window
// kernels copy one 1-D box of <= 512 bytes per input channel and segment (~17 per stage at
// keep .5, ~34 at .25, beside one 32 KB weight box), and their time per stage grows with
// the channels a stage starts (bench/NOTES.md change 23). If a box costs the copy engine a
// fixed time whatever its shape, one 2-D box holding several channels' windows (rows of a
// [channel, plane element] map) is the lever; if a 2-D box costs per row, it is not.
//
// One CTA per SM; `issuers` lanes of warp 0 start the boxes of a batch (up to 32 boxes or
// 48 KB) into a 4-batch ring of shared memory, each batch completing on its own mbarrier,
// 4 batches in flight. Box origins come from a cheap 32-bit hash (a 64-bit modulo per box
// had cost the single issuer ~250 cycles in the first version). Prints cycles per box and
// bytes per cycle per SM for each shape and issuer count. A box is at most 256 elements
// per dimension.
//   nvcc -std=c++17 -arch=sm_90a -o tma_box_rate_probe tma_box_rate_probe.cu
//   for i in $(seq 0 14); do ./tma_box_rate_probe $i; done
#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>

constexpr int kMaxBatch = 32;
constexpr int kBatchBytes = 48 * 1024;
constexpr int kInFlight = 4;
constexpr int kRowsLog2 = 12;  // origins' rows: [0, 4096) of a map of 4096 + 256 rows

__device__ __forceinline__ uint32_t smem(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void wait_parity(uint32_t bar, uint32_t parity) {
  asm volatile(
      "{\n.reg .pred done;\nwait_%=:\nmbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra wait_%=;\n}" ::"r"(bar),
      "r"(parity)
      : "memory");
}

struct Shape {
  const char* name;
  int row_elements;  // the map's row pitch (a channel plane, or a weight row)
  int box_x, box_y;  // box: elements per row, rows
  int column_mask;   // origin column = hash & mask (times 8 when aligned)
  bool aligned;      // origin columns a multiple of 8 elements (16 bytes)
  bool swizzle;      // 128-byte swizzle, as the weight tiles use
};

__global__ void rate(const __grid_constant__ CUtensorMap map, Shape shape, int batch, int batches,
                     int issuers, unsigned long long* cycles) {
  extern __shared__ __align__(1024) uint8_t ring[];
  __shared__ alignas(8) uint64_t barrier[kInFlight];
  if (threadIdx.x == 0) {
    for (int i = 0; i < kInFlight; ++i)
      asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(smem(&barrier[i])));
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();
  if (threadIdx.x >= 32) return;
  const int lane = threadIdx.x;
  const int box_bytes = shape.box_x * shape.box_y * 2;
  const int pitch = (box_bytes + 127) / 128 * 128;  // a box lands at a 128-byte aligned address
  const long long start = clock64();
  for (int b = 0; b < batches; ++b) {
    const int slot = b % kInFlight;
    const uint32_t bar = smem(&barrier[slot]);
    if (b >= kInFlight) wait_parity(bar, ((b / kInFlight) - 1) & 1);
    if (lane == 0)
      asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar),
                   "r"(batch * box_bytes)
                   : "memory");
    __syncwarp();
    if (lane < issuers) {
      for (int k = lane; k < batch; k += issuers) {
        const uint32_t hash = (blockIdx.x * 7919u + b * 1237u + k * 613u) * 2654435761u;
        const int row = static_cast<int>((hash >> 8) & ((1u << kRowsLog2) - 1));
        int column = static_cast<int>(hash & static_cast<uint32_t>(shape.column_mask));
        if (shape.aligned) column *= 8;
        const uint32_t dst = smem(ring) + (slot * batch + k) * pitch;
        asm volatile(
            "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
            " [%0], [%1, {%3, %4}], [%2];" ::"r"(dst),
            "l"(&map), "r"(bar), "r"(column), "r"(row)
            : "memory");
      }
    }
  }
  for (int b = batches - kInFlight; b < batches; ++b)
    wait_parity(smem(&barrier[b % kInFlight]), (b / kInFlight) & 1);
  if (lane == 0) cycles[blockIdx.x] = clock64() - start;
}

int main(int argc, char** argv) {
  // One shape per process when an index is given: a faulting shape then spoils no other.
  const int only = argc > 1 ? atoi(argv[1]) : -1;
  const Shape shapes[] = {
      // The window kernels' boxes today: 1-D runs of x (rows of a wide map, one row each).
      {"1d-128B", 4096, 64, 1, 127, true, false},
      {"1d-256B", 4096, 128, 1, 127, true, false},
      {"1d-512B", 4096, 256, 1, 127, true, false},
      // One window (8 rows of a 28 x 28 plane) for 1-16 channels: rows are channel planes.
      {"win28-1ch", 784, 248, 1, 63, true, false},
      {"win28-2ch", 784, 248, 2, 63, true, false},
      {"win28-4ch", 784, 248, 4, 63, true, false},
      {"win28-8ch", 784, 248, 8, 63, true, false},
      {"win28-16ch", 784, 248, 16, 63, true, false},
      // The same boxes from any element (not a multiple of 8): does TMA take them?
      {"win28-1ch-any", 784, 248, 1, 511, false, false},
      {"win28-8ch-any", 784, 248, 8, 511, false, false},
      // 14 x 14 planes paired (a 392-byte plane is no 16-byte row pitch; two are).
      {"win14-pair-4", 392, 184, 4, 15, true, false},
      {"win14-pair-8", 392, 184, 8, 15, true, false},
      // The weight tiles: 64 K-elements (128 bytes, swizzled) x 128 / 256 output channels.
      {"weight-16KB", 2304, 64, 128, 31, true, true},
      {"weight-32KB", 2304, 64, 256, 31, true, true},
  };
  const int map_rows = (1 << kRowsLog2) + 256;
  size_t max_elements = 0;
  for (const Shape& s : shapes) {
    const size_t e = static_cast<size_t>(s.row_elements) * map_rows;
    if (e > max_elements) max_elements = e;
  }
  uint16_t* x;
  cudaMalloc(&x, max_elements * 2);  // <= 20 MB: L2-resident once warm, as x and w are
  cudaMemset(x, 0, max_elements * 2);
  int sms = 0;
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
  unsigned long long* cycles;
  cudaMalloc(&cycles, sms * sizeof(unsigned long long));
  void* fn = nullptr;
  cudaDriverEntryPointQueryResult q;
  cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &q);
  auto encode = reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
  if (only <= 0)
    printf("%-18s %9s %5s %7s %14s %22s\n", "shape", "box_bytes", "batch", "issuers",
           "cycles_per_box", "bytes_per_cycle_per_sm");
  int index = -1;
  for (const Shape& s : shapes) {
    if (++index != only && only >= 0) continue;
    CUtensorMap map;
    cuuint64_t dims[2] = {static_cast<cuuint64_t>(s.row_elements),
                          static_cast<cuuint64_t>(map_rows)};
    cuuint64_t strides[1] = {static_cast<cuuint64_t>(s.row_elements) * 2};
    cuuint32_t box[2] = {static_cast<cuuint32_t>(s.box_x), static_cast<cuuint32_t>(s.box_y)};
    cuuint32_t es[2] = {1, 1};
    CUresult r = encode(&map, CU_TENSOR_MAP_DATA_TYPE_FLOAT16, 2, x, dims, strides, box, es,
                        CU_TENSOR_MAP_INTERLEAVE_NONE,
                        s.swizzle ? CU_TENSOR_MAP_SWIZZLE_128B : CU_TENSOR_MAP_SWIZZLE_NONE,
                        CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    if (r != CUDA_SUCCESS) {
      printf("%-18s encode failed %d\n", s.name, static_cast<int>(r));
      continue;
    }
    const int box_bytes = s.box_x * s.box_y * 2;
    const int pitch = (box_bytes + 127) / 128 * 128;
    int batch = kBatchBytes / pitch;
    if (batch > kMaxBatch) batch = kMaxBatch;
    const int shared = kInFlight * batch * pitch;
    cudaFuncSetAttribute(rate, cudaFuncAttributeMaxDynamicSharedMemorySize, shared);
    for (int issuers : {1, batch}) {
      const int batches = 8192 / batch;
      for (int repeat = 0; repeat < 2; ++repeat)  // the first warms L2 and the clocks
        rate<<<sms, 128, shared>>>(map, s, batch, batches, issuers, cycles);
      const cudaError_t e = cudaDeviceSynchronize();
      if (e != cudaSuccess) {
        printf("%s: %s\n", s.name, cudaGetErrorString(e));
        return 1;
      }
      unsigned long long host[1024];
      cudaMemcpy(host, cycles, sms * sizeof(unsigned long long), cudaMemcpyDeviceToHost);
      double mean = 0;
      for (int i = 0; i < sms; ++i) mean += static_cast<double>(host[i]) / sms;
      const double boxes = static_cast<double>(batches) * batch;
      printf("%-18s %9d %5d %7d %14.1f %22.1f\n", s.name, box_bytes, batch, issuers, mean / boxes,
             boxes * box_bytes / mean);
      if (batch == 1) break;
    }
  }
  return 0;
}
