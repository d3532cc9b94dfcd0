// Probe: how fast one SM's copy engine turns small 1-D TMA boxes around. The window
// kernels copy one 512-byte box per input channel and segment (~14 per stage at keep .5,
// ~28 at .25, beside one 32 KB weight box), and their time per stage grows with the
// channels a stage starts (bench/NOTES.md change 23): if each box costs the copy engine a
// fixed ~70-100 cycles whatever its size, fewer, larger boxes (several channels' windows
// in one) are the lever.
//
// One CTA per SM; `issuers` threads of warp 0 start 32 boxes per batch into a 4-batch ring
// of shared memory, each batch completing on its own mbarrier, 4 batches in flight. Prints
// cycles per box and bytes per cycle per SM for each box size and issuer count. (A box
// is at most 256 elements per dimension: the 512- and 1024-element maps fail to encode, and
// the probe stops there.)
//   nvcc -std=c++17 -arch=sm_90a -o tma_box_rate_probe tma_box_rate_probe.cu
#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>

constexpr int kBatch = 32;
constexpr int kInFlight = 4;

__device__ __forceinline__ uint32_t smem(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__global__ void rate(const __grid_constant__ CUtensorMap map, int box_bytes, int batches,
                     int issuers, long long span, unsigned long long* cycles) {
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
  const long long start = clock64();
  for (int b = 0; b < batches; ++b) {
    const int slot = b % kInFlight;
    const uint32_t bar = smem(&barrier[slot]);
    if (b >= kInFlight) {
      const uint32_t parity = ((b / kInFlight) - 1) & 1;
      asm volatile(
          "{\n.reg .pred done;\nwait_%=:\nmbarrier.try_wait.parity.shared::cta.b64 done, [%0], "
          "%1;\n"
          "@!done bra wait_%=;\n}" ::"r"(bar),
          "r"(parity)
          : "memory");
    }
    if (lane == 0)
      asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar),
                   "r"(kBatch * box_bytes)
                   : "memory");
    __syncwarp();
    if (lane < issuers) {
      for (int k = lane; k < kBatch; k += issuers) {
        const long long element =
            ((static_cast<long long>(blockIdx.x) * 7919 + b * 1237 + k * 613) * 8) %
            (span - box_bytes / 2);
        const uint32_t dst = smem(ring) + (slot * kBatch + k) * box_bytes;
        asm volatile(
            "cp.async.bulk.tensor.1d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
            " [%0], [%1, {%3}], [%2];" ::"r"(dst),
            "l"(&map), "r"(bar), "r"(static_cast<int>(element & ~7ll))
            : "memory");
      }
    }
  }
  for (int b = batches - kInFlight; b < batches; ++b) {
    const uint32_t bar = smem(&barrier[b % kInFlight]);
    const uint32_t parity = (b / kInFlight) & 1;
    asm volatile(
        "{\n.reg .pred done;\nwait_%=:\nmbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
        "@!done bra wait_%=;\n}" ::"r"(bar),
        "r"(parity)
        : "memory");
  }
  if (lane == 0) cycles[blockIdx.x] = clock64() - start;
}

int main() {
  const long long span = 8ll << 20;  // fp16 elements: 16 MB, L2-resident once warm (as x is)
  uint16_t* x;
  cudaMalloc(&x, span * 2);
  cudaMemset(x, 0, span * 2);
  int sms = 0;
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
  unsigned long long* cycles;
  cudaMalloc(&cycles, sms * sizeof(unsigned long long));
  void* fn = nullptr;
  cudaDriverEntryPointQueryResult q;
  cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &q);
  auto encode = reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
  printf("box_bytes issuers cycles_per_box bytes_per_cycle_per_sm\n");
  for (int box_elements : {64, 128, 256, 512, 1024}) {
    CUtensorMap map;
    cuuint64_t dims[1] = {static_cast<cuuint64_t>(span)};
    cuuint64_t strides[1] = {0};
    cuuint32_t box[1] = {static_cast<cuuint32_t>(box_elements)}, es[1] = {1};
    CUresult r = encode(&map, CU_TENSOR_MAP_DATA_TYPE_FLOAT16, 1, x, dims, strides, box, es,
                        CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_NONE,
                        CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    if (r != CUDA_SUCCESS) {
      printf("encode failed %d\n", static_cast<int>(r));
      return 1;
    }
    const int box_bytes = box_elements * 2;
    const int shared = kInFlight * kBatch * box_bytes;
    cudaFuncSetAttribute(rate, cudaFuncAttributeMaxDynamicSharedMemorySize, shared);
    for (int issuers : {1, 32}) {
      const int batches = 256;
      for (int repeat = 0; repeat < 2; ++repeat)  // the first warms L2 and the clocks
        rate<<<sms, 128, shared>>>(map, box_bytes, batches, issuers, span, cycles);
      const cudaError_t e = cudaDeviceSynchronize();
      if (e != cudaSuccess) {
        printf("%s\n", cudaGetErrorString(e));
        return 1;
      }
      unsigned long long host[1024];
      cudaMemcpy(host, cycles, sms * sizeof(unsigned long long), cudaMemcpyDeviceToHost);
      double mean = 0;
      for (int i = 0; i < sms; ++i) mean += static_cast<double>(host[i]) / sms;
      const double boxes = static_cast<double>(batches) * kBatch;
      printf("%9d %7d %14.1f %22.1f\n", box_bytes, issuers, mean / boxes, boxes * box_bytes / mean);
    }
  }
  return 0;
}
