// Probe: 1-D TMA boxes of 64 fp16 in the 128-byte swizzle, written to a line of an atom
// (destination 128-byte but not 1024-byte aligned), from negative coordinates, past the
// end, and from a start that is not 16-byte aligned.
// Prints, per variant, the CUDA error and whether each element landed where an
// address-based swizzle (chunk ^= address bits 7-9) puts it.
//   nvcc -std=c++17 -arch=sm_90a -o tma_line_probe tma_line_probe.cu
#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <vector>

__global__ void probe(const __grid_constant__ CUtensorMap map, int line, int coordinate,
                      uint16_t* out) {
  __shared__ alignas(1024) uint8_t tile[2048];
  __shared__ alignas(8) uint64_t barrier;
  const uint32_t bar = static_cast<uint32_t>(__cvta_generic_to_shared(&barrier));
  for (int i = threadIdx.x; i < 2048 / 2; i += blockDim.x)
    reinterpret_cast<uint16_t*>(tile)[i] = 0xffff;
  if (threadIdx.x == 0) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(bar));
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
  __syncthreads();
  if (threadIdx.x == 0) {
    const uint32_t dst = static_cast<uint32_t>(__cvta_generic_to_shared(tile)) + line * 128;
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], 128;" ::"r"(bar) : "memory");
    asm volatile(
        "cp.async.bulk.tensor.1d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
        " [%0], [%1, {%3}], [%2];" ::"r"(dst),
        "l"(&map), "r"(bar), "r"(coordinate)
        : "memory");
  }
  asm volatile(
      "{\n.reg .pred done;\nwait_%=:\nmbarrier.try_wait.parity.shared::cta.b64 done, [%0], 0;\n"
      "@!done bra wait_%=;\n}" ::"r"(bar)
      : "memory");
  for (int i = threadIdx.x; i < 2048 / 2; i += blockDim.x)
    out[i] = reinterpret_cast<uint16_t*>(tile)[i];
}

int main() {
  const int n = 1000;
  std::vector<uint16_t> host(n);
  for (int i = 0; i < n; ++i) host[i] = static_cast<uint16_t>(i + 1);
  uint16_t *x, *out;
  cudaMalloc(&x, n * 2);
  cudaMalloc(&out, 2048);
  cudaMemcpy(x, host.data(), n * 2, cudaMemcpyHostToDevice);
  void* fn = nullptr;
  cudaDriverEntryPointQueryResult q;
  cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &q);
  auto encode = reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
  CUtensorMap map;
  cuuint64_t dims[1] = {static_cast<cuuint64_t>(n)};
  cuuint64_t strides[1] = {0};
  cuuint32_t box[1] = {64}, es[1] = {1};
  CUresult r = encode(&map, CU_TENSOR_MAP_DATA_TYPE_FLOAT16, 1, x, dims, strides, box, es,
                      CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                      CU_TENSOR_MAP_L2_PROMOTION_L2_128B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  printf("encode rank-1 sw128: %d\n", static_cast<int>(r));
  struct Case {
    int line, coordinate;
  };
  // Aligned starts (multiples of 8 elements) first; the unaligned one last (H200, 2026-12-02:
  // an unaligned start is an illegal instruction).
  const Case cases[] = {{0, 0}, {3, 40}, {5, -16}, {7, -200}, {2, 984}, {1, 37}};
  for (const Case& c : cases) {
    probe<<<1, 128>>>(map, c.line, c.coordinate, out);
    cudaError_t e = cudaDeviceSynchronize();
    if (e != cudaSuccess) {
      printf("line %d coord %d: %s\n", c.line, c.coordinate, cudaGetErrorString(e));
      return 1;
    }
    std::vector<uint16_t> got(1024);
    cudaMemcpy(got.data(), out, 2048, cudaMemcpyDeviceToHost);
    int address_based = 0, row0 = 0;
    for (int e2 = 0; e2 < 64; ++e2) {
      const int src = c.coordinate + e2;
      const uint16_t want = (src >= 0 && src < n) ? host[src] : 0;
      const int chunk = e2 / 8, within = e2 % 8;
      const int a = c.line * 64 + (((chunk ^ c.line) & 7) * 8) + within;
      const int b = c.line * 64 + chunk * 8 + within;
      address_based += got[a] == want;
      row0 += got[b] == want;
    }
    printf("line %d coord %d: address-swizzled matches %d/64, unswizzled %d/64\n", c.line,
           c.coordinate, address_based, row0);
  }
  return 0;
}
