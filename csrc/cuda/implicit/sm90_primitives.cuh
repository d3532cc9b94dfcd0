// Hopper (sm_90a) building blocks of the implicit conv, as thin inline-PTX
// wrappers: mbarriers, the bulk tensor copy (TMA), wgmma fences and shared-memory
// matrix descriptors, register reallocation. Each compiles to nothing outside an
// sm_90a device pass, so the file can be included by every architecture's pass.
#pragma once

#include <cstdint>
#include <cstring>

namespace gwprune::cuda::implicit {

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define GWPRUNE_SM90A_DEVICE 1
#endif

__device__ __forceinline__ uint32_t smem_address(const void* pointer) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(pointer));
}

#ifdef GWPRUNE_SM90A_DEVICE

// ---- shared memory ------------------------------------------------------------------------

// st.shared of 2, 4 or 16 bytes, ld.shared of 2, 4, 8 or 16, at a shared-window address. The kernel
// aligns its dynamic shared memory by integer arithmetic, after which the compiler no
// longer knows a pointer is shared and would emit generic ST.E/LD.E (slower, and
// each one costs the producer issue slots it does not have).
template <typename T>
__device__ __forceinline__ void store_shared(uint32_t address, const T& value) {
  if constexpr (sizeof(T) == 2) {
    uint16_t bits;
    memcpy(&bits, &value, 2);
    asm volatile("st.shared.b16 [%0], %1;" ::"r"(address), "h"(bits));
  } else if constexpr (sizeof(T) == 4) {
    uint32_t bits;
    memcpy(&bits, &value, 4);
    asm volatile("st.shared.b32 [%0], %1;" ::"r"(address), "r"(bits));
  } else {
    static_assert(sizeof(T) == 16, "store_shared moves 2, 4 or 16 bytes");
    uint4 bits;
    memcpy(&bits, &value, 16);
    asm volatile("st.shared.v4.b32 [%0], {%1, %2, %3, %4};" ::"r"(address), "r"(bits.x),
                 "r"(bits.y), "r"(bits.z), "r"(bits.w));
  }
}

template <typename T>
__device__ __forceinline__ T load_shared(uint32_t address) {
  T value;
  if constexpr (sizeof(T) == 2) {
    uint16_t bits;
    asm volatile("ld.shared.b16 %0, [%1];" : "=h"(bits) : "r"(address));
    memcpy(&value, &bits, 2);
  } else if constexpr (sizeof(T) == 4) {
    uint32_t bits;
    asm volatile("ld.shared.b32 %0, [%1];" : "=r"(bits) : "r"(address));
    memcpy(&value, &bits, 4);
  } else if constexpr (sizeof(T) == 8) {
    uint2 bits;
    asm volatile("ld.shared.v2.b32 {%0, %1}, [%2];" : "=r"(bits.x), "=r"(bits.y) : "r"(address));
    memcpy(&value, &bits, 8);
  } else {
    static_assert(sizeof(T) == 16, "load_shared moves 2, 4, 8 or 16 bytes");
    uint4 bits;
    asm volatile("ld.shared.v4.b32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(bits.x), "=r"(bits.y), "=r"(bits.z), "=r"(bits.w)
                 : "r"(address));
    memcpy(&value, &bits, 16);
  }
  return value;
}

// A 2- or 4-byte shared load into a zero-extended 32-bit register, or zero where `valid` is
// 0: predicated, so a warp reads padding elements without branching per element.
template <int Bytes>
__device__ __forceinline__ uint32_t load_shared_or_zero(uint32_t address, uint32_t valid) {
  static_assert(Bytes == 2 || Bytes == 4, "load_shared_or_zero moves 2 or 4 bytes");
  uint32_t bits;
  if constexpr (Bytes == 2)
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %2, 0;\nmov.b32 %0, 0;\n@p ld.shared.u16 %0, [%1];\n}"
        : "=r"(bits)
        : "r"(address), "r"(valid));
  else
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %2, 0;\nmov.b32 %0, 0;\n@p ld.shared.u32 %0, [%1];\n}"
        : "=r"(bits)
        : "r"(address), "r"(valid));
  return bits;
}

// ---- mbarrier ---------------------------------------------------------------------------

__device__ __forceinline__ void mbarrier_init(uint64_t* barrier, uint32_t arrivals) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_address(barrier)),
               "r"(arrivals));
}

// Makes the initialised barriers visible to the copy engine (async proxy).
// Orders this thread's global memory accesses before and after it at GPU scope (a lighter
// fence than __threadfence's sequentially consistent one): a release before a count that
// other CTAs read, an acquire after reading it (windows/k_slices.cuh).
__device__ __forceinline__ void fence_acq_rel_gpu() {
  asm volatile("fence.acq_rel.gpu;" ::: "memory");
}

__device__ __forceinline__ void fence_barrier_init() {
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
}

__device__ __forceinline__ void mbarrier_arrive(uint64_t* barrier) {
  asm volatile("{\n.reg .b64 state;\nmbarrier.arrive.shared::cta.b64 state, [%0];\n}" ::"r"(
                   smem_address(barrier))
               : "memory");
}

// Raises the barrier's expected transaction bytes without arriving: the thread that
// starts a TMA copy still arrives later, after its own share of the stage is written.
__device__ __forceinline__ void mbarrier_expect_tx(uint64_t* barrier, uint32_t bytes) {
  asm volatile(
      "mbarrier.expect_tx.relaxed.cta.shared::cta.b64 [%0], %1;" ::"r"(smem_address(barrier)),
      "r"(bytes)
      : "memory");
}

// Copies 16 bytes from global to shared memory without holding registers (cp.async, through
// L2 only): the first `bytes` of them from `source`, zeros past them (0: nothing is read).
// Both addresses 16-byte aligned.
__device__ __forceinline__ void copy_async_16(uint32_t destination, const void* source,
                                              uint32_t bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(destination), "l"(source),
               "r"(bytes)
               : "memory");
}

// Arrives on the barrier once every cp.async this thread started before has landed; the
// arrival is one of the barrier's expected count (noinc).
__device__ __forceinline__ void mbarrier_arrive_when_copied(uint64_t* barrier) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];" ::"r"(smem_address(barrier))
               : "memory");
}

// Waits for the barrier's phase `parity` to complete. ClusterScope: the barrier is also
// arrived on from the other CTA of a cluster, whose writes the wait must acquire.
template <bool ClusterScope = false>
__device__ __forceinline__ void mbarrier_wait(uint64_t* barrier, uint32_t parity) {
  if constexpr (ClusterScope) {
    asm volatile(
        "{\n.reg .pred done;\n"
        "wait_%=:\n"
        "mbarrier.try_wait.parity.acquire.cluster.shared::cta.b64 done, [%0], %1;\n"
        "@!done bra wait_%=;\n}" ::"r"(smem_address(barrier)),
        "r"(parity)
        : "memory");
  } else {
    asm volatile(
        "{\n.reg .pred done;\n"
        "wait_%=:\n"
        "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
        "@!done bra wait_%=;\n}" ::"r"(smem_address(barrier)),
        "r"(parity)
        : "memory");
  }
}

// ---- 2-CTA clusters (distributed shared memory) --------------------------------------------

__device__ __forceinline__ uint32_t cluster_rank() {
  uint32_t rank;
  asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(rank));
  return rank;
}

// The shared::cluster address of the same shared-memory location in CTA `rank`.
__device__ __forceinline__ uint32_t peer_address(uint32_t address, uint32_t rank) {
  uint32_t peer;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(peer) : "r"(address), "r"(rank));
  return peer;
}

__device__ __forceinline__ void store_shared_cluster(uint32_t address, const uint4& v) {
  asm volatile("st.shared::cluster.v4.b32 [%0], {%1, %2, %3, %4};" ::"r"(address), "r"(v.x),
               "r"(v.y), "r"(v.z), "r"(v.w)
               : "memory");
}

// Arrives on a barrier of either CTA of the cluster (a shared::cluster address), releasing
// this thread's earlier writes to the cluster.
__device__ __forceinline__ void mbarrier_arrive_cluster(uint32_t address) {
  asm volatile("mbarrier.arrive.release.cluster.shared::cluster.b64 _, [%0];" ::"r"(address)
               : "memory");
}

// Ordinary writes to either CTA's shared memory become visible to wgmma after this.
__device__ __forceinline__ void fence_proxy_async_shared_cluster() {
  asm volatile("fence.proxy.async.shared::cluster;" ::: "memory");
}

// Every thread of both CTAs: neither CTA runs past this before the other reaches it.
__device__ __forceinline__ void cluster_sync() {
  asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;" ::
                   : "memory");
}

// ---- TMA ----------------------------------------------------------------------------------

// 2-D tiled copy global -> shared, completing on `barrier` with the box's bytes.
__device__ __forceinline__ void tma_load_2d(void* destination, const void* tensor_map,
                                            uint64_t* barrier, int inner, int outer) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%3, %4}], [%2];" ::"r"(smem_address(destination)),
      "l"(tensor_map), "r"(smem_address(barrier)), "r"(inner), "r"(outer)
      : "memory");
}

// 1-D tiled copy global -> shared: one box of the map's box size from element
// `coordinate` (any value: elements outside the tensor read as zeros).
__device__ __forceinline__ void tma_load_1d(uint32_t destination, const void* tensor_map,
                                            uint64_t* barrier, int coordinate) {
  asm volatile(
      "cp.async.bulk.tensor.1d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%3}], [%2];" ::"r"(destination),
      "l"(tensor_map), "r"(smem_address(barrier)), "r"(coordinate)
      : "memory");
}

__device__ __forceinline__ void prefetch_tensor_map(const void* tensor_map) {
  asm volatile("prefetch.tensormap [%0];" ::"l"(tensor_map) : "memory");
}

// Ordinary st.shared writes become visible to wgmma (the async proxy) only after this
// fence in each writing thread, before the barrier that hands the stage over.
__device__ __forceinline__ void fence_proxy_async_shared() {
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
}

// ---- wgmma ----------------------------------------------------------------------------------

__device__ __forceinline__ void wgmma_fence() {
  asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
}
__device__ __forceinline__ void wgmma_commit_group() {
  asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
}
template <int Pending>
__device__ __forceinline__ void wgmma_wait_group() {
  asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(Pending) : "memory");
}

// A register-A wgmma fragment (WgmmaRegisterA: rows r, r + 8 and K pairs k, k + 8 of
// this thread) from its 8 elements, each zero-extended in the low half of a 32-bit word:
// v[e][h] is K column e (k, k + 1, k + 8, k + 9) of row h.
__device__ __forceinline__ void pack_register_fragment(const uint32_t (&v)[4][2],
                                                       uint32_t (&frag)[4]) {
  frag[0] = v[0][0] | (v[1][0] << 16);
  frag[1] = v[0][1] | (v[1][1] << 16);
  frag[2] = v[2][0] | (v[3][0] << 16);
  frag[3] = v[2][1] | (v[3][1] << 16);
}

// Keeps the compiler from moving accumulator reads/writes across an asynchronous wgmma.
template <int N>
__device__ __forceinline__ void fence_accumulators(float (&d)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

// ---- registers ------------------------------------------------------------------------------

template <int Registers>
__device__ __forceinline__ void release_registers() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" ::"n"(Registers));
}
template <int Registers>
__device__ __forceinline__ void claim_registers() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" ::"n"(Registers));
}

// Named barrier over `threads` threads (a multiple of 32); id 0 is __syncthreads'.
__device__ __forceinline__ void named_barrier_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(threads) : "memory");
}

#endif  // GWPRUNE_SM90A_DEVICE

// Shared-memory matrix descriptor of a K-major tile in the 128-byte swizzle: rows of
// 128 bytes, 8-row atoms of 1024 bytes stacked along M/N (stride byte offset 1024),
// the tile 1024-byte aligned. `address` may step by 32 bytes inside a row to select
// the next K slice; the hardware applies the swizzle to absolute address bits.
__device__ __forceinline__ uint64_t sw128_kmajor_descriptor(uint32_t address) {
  uint64_t desc = 0;
  desc |= static_cast<uint64_t>((address & 0x3FFFF) >> 4);  // start address
  desc |= static_cast<uint64_t>(1) << 16;                   // leading byte offset (unused)
  desc |= static_cast<uint64_t>(1024 >> 4) << 32;           // stride byte offset
  desc |= static_cast<uint64_t>(1) << 62;                   // 128-byte swizzle
  return desc;
}

// Descriptor of an MN-major (16-bit) tile in the 128-byte swizzle: atoms of 64 M
// elements (128 bytes) x 8 K rows, 1024 bytes each; the atoms of consecutive 8-row K
// groups are `k_group_bytes` apart (the stride byte offset), those of consecutive 64-wide
// M blocks `m_block_bytes` apart (the leading byte offset; CUTLASS's make_gmma_desc
// for Major::MN, B128). A 64-row wgmma operand is one M block.
__device__ __forceinline__ uint64_t sw128_mnmajor_descriptor(uint32_t address,
                                                             uint32_t k_group_bytes,
                                                             uint32_t m_block_bytes) {
  uint64_t desc = 0;
  desc |= static_cast<uint64_t>((address & 0x3FFFF) >> 4);
  desc |= static_cast<uint64_t>((m_block_bytes >> 4) & 0x3FFF) << 16;
  desc |= static_cast<uint64_t>((k_group_bytes >> 4) & 0x3FFF) << 32;
  desc |= static_cast<uint64_t>(1) << 62;
  return desc;
}

}  // namespace gwprune::cuda::implicit
