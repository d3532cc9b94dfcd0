// The implicit conv kernel (contract in implicit_conv.h): tile configurations, the
// warp-specialized kernel that joins producer, consumers and epilogue, and its launch.
// Included once per element type (implicit_conv_{fp16,bf16,tf32}.cu), so the three
// sets of instantiations compile in parallel.
//
// One CTA computes a 128-pixel x BN-channel output tile: warpgroup 0 produces stages
// (gather_mainloop.cuh), warpgroups 1 and 2 consume them (mma_consumer.cuh) and store
// (epilogue.cuh). Pipeline stages take 192 KB of shared memory, whatever BN is.
#pragma once

#include <ATen/cuda/CUDAContext.h>
#include <cuda.h>
#include <cudaTypedefs.h>

#include <cstdlib>
#include <limits>
#include <string>

#include "epilogue.cuh"
#include "gather_mainloop.cuh"
#include "implicit_conv.h"
#include "mma_consumer.cuh"
#include "run_gather.cuh"
#include "sm90_primitives.cuh"

namespace gwprune::cuda::implicit {
namespace detail {

constexpr int kThreads = 384;
// A producer thread holds two parts' loads (2 x 64 values at most) in registers, the
// consumers 128 accumulators for a 64 x 256 tile. setmaxnreg.inc waits until the CTA's
// own setmaxnreg.dec has freed the registers, so the two moves must balance exactly
// (an unbalanced pair hangs): 128 * (168 - 152) == 256 * (176 - 168).
constexpr int kLaunchRegisters = 168;  // 65536 / 384, rounded down to a multiple of 8
constexpr int kProducerRegisters = 152;
constexpr int kConsumerRegisters = 176;
static_assert(kProducerThreads * (kLaunchRegisters - kProducerRegisters) ==
                  2 * 128 * (kConsumerRegisters - kLaunchRegisters),
              "registers released by the producer must equal those the consumers claim");
constexpr int kPipelineBytes = 192 * 1024;

template <typename Elem, int BN>
struct TileConfig {
  static constexpr int kBK = kRowBytes / sizeof(Elem);  // kept groups per stage
  static constexpr int kATileBytes = kTileRows * kRowBytes;
  static constexpr int kBTileBytes = BN * kRowBytes;
  static constexpr int kStages = kPipelineBytes / (kATileBytes + kBTileBytes);
  static constexpr int kBarrierOffset = kStages * (kATileBytes + kBTileBytes);
  static constexpr int kSharedBytes = kBarrierOffset + 2 * kStages * 8 + 1024;  // + alignment
  static_assert(kStages >= 2, "a pipeline needs two stages");
  static_assert(kTileRows == kProducerThreads, "one producer thread owns each tile row");
};

// The producer's gather of A: the row gather (any geometry, both layouts) or the NCHW
// run gather (16-bit, stride 1, OW == W; run_gather.cuh). Gather<Elem, BK, ChannelsLast>
// names it in the kernel. (Both exist only in the sm_90a device pass.)
#ifdef GWPRUNE_SM90A_DEVICE
template <bool Runs>
struct GatherKind {
  template <typename Elem, int BK, bool ChannelsLast>
  using type = StageGather<Elem, BK, ChannelsLast>;
};
template <>
struct GatherKind<true> {
  template <typename Elem, int BK, bool ChannelsLast>
  using type = RunGather<Elem>;
};
#endif

template <typename Elem, int BN, bool ChannelsLast, bool Runs>
__global__ void __launch_bounds__(kThreads, 1)
    implicit_conv_kernel(const __grid_constant__ CUtensorMap weight_map, const ConvProblem p) {
#ifdef GWPRUNE_SM90A_DEVICE
  using Config = TileConfig<Elem, BN>;
  constexpr int kStages = Config::kStages;
  constexpr int kBK = Config::kBK;
  extern __shared__ uint8_t shared_raw[];
  uint8_t* shared = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(shared_raw) + 1023) &
                                               ~static_cast<uintptr_t>(1023));
  uint8_t* a_stages = shared;
  uint8_t* b_stages = shared + kStages * Config::kATileBytes;
  auto* full = reinterpret_cast<uint64_t*>(shared + Config::kBarrierOffset);
  uint64_t* empty = full + kStages;

  // Tiles along Cout vary fastest, so the CTAs that share a pixel tile run together
  // and its gathered rows of x are read from L2 once.
  const int n_tiles = (p.out_channels + BN - 1) / BN;
  const int tile_n = blockIdx.x % n_tiles;
  const int tile_m = blockIdx.x / n_tiles;
  const int first_row = tile_m * kTileRows;
  const int first_col = tile_n * BN;
  const int warpgroup = threadIdx.x / 128;
  const int thread = threadIdx.x % 128;

  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) {
      mbarrier_init(&full[s], kProducerThreads);
      mbarrier_init(&empty[s], 2);
    }
    fence_barrier_init();
    prefetch_tensor_map(&weight_map);
  }
  __syncthreads();

  if (warpgroup == 0) {
    if constexpr (kProducerRegisters < kLaunchRegisters) release_registers<kProducerRegisters>();
    const int warp = thread / 32, lane = thread % 32;
    using Gather = typename GatherKind<Runs>::template type<Elem, kBK, ChannelsLast>;
    // What the thread's rows of the tile need for the whole K loop stays in registers.
    const typename Gather::Tile tile = Gather::make_tile(p, first_row, thread);
    constexpr int kParts = Gather::kParts;
    // Part u of the stage sequence: its stage's slot is free and the weight tile on its
    // way before the first part is stored; the stage is handed over after the last.
    auto publish = [&](int u, const Gather& gathered) {
      const int kt = u / kParts, part = u % kParts;
      const int stage = kt % kStages;
      if (part == 0) {
        if (kt >= kStages) mbarrier_wait(&empty[stage], ((kt / kStages) - 1) & 1);
        if (thread == 0) {
          mbarrier_expect_tx(&full[stage], Config::kBTileBytes);
          tma_load_2d(b_stages + stage * Config::kBTileBytes, &weight_map, &full[stage], kt * kBK,
                      first_col);
        }
      }
      gathered.store(a_stages + stage * Config::kATileBytes, part, warp, lane);
      if (part == kParts - 1) {
        fence_proxy_async_shared();
        mbarrier_arrive(&full[stage]);
      }
    };
    auto first_column = [&](int u) { return (u / kParts) * kBK; };
    auto load = [&](int u, Gather& gathered) {
      gathered.load(p, u % kParts, first_column(u + 4), tile, warp, lane);
    };
    // Two register sets, so the loads of the next part are in flight while this one is
    // stored (the loop is unrolled by two: register arrays need compile-time indices).
    // Set `even` takes parts 0, 2, 4, ...; each holds the group_idx entries of its next
    // two parts (GroupRing).
    const int parts = p.k_tiles * kParts;
    Gather even, odd;
    Gather::fetch_groups(p, first_column(0), warp, lane, even.groups.now);
    Gather::fetch_groups(p, first_column(2), warp, lane, even.groups.ahead);
    Gather::fetch_groups(p, first_column(1), warp, lane, odd.groups.now);
    Gather::fetch_groups(p, first_column(3), warp, lane, odd.groups.ahead);
    load(0, even);
#pragma unroll 1
    for (int u = 0; u < parts; u += 2) {
      const bool has_odd = u + 1 < parts;
      if (has_odd) load(u + 1, odd);
      publish(u, even);
      if (!has_odd) break;
      if (u + 2 < parts) load(u + 2, even);
      publish(u + 1, odd);
    }
  } else {
    if constexpr (kConsumerRegisters > kLaunchRegisters) claim_registers<kConsumerRegisters>();
    const int consumer = warpgroup - 1;
    float acc[BN / 2];
    consume_stages<typename ElemTraits<Elem>::Mma, BN, kStages, Runs>(
        acc, a_stages, b_stages, full, empty, p.k_tiles, consumer, thread == 0);
    // Both consumers are past their last wgmma: the stages can hold the output tile.
    named_barrier_sync(2, 256);
    constexpr int kStagingBytes =
        ChannelsLast ? 64 * (BN * sizeof(Elem) + 16) : BN * (64 * sizeof(Elem) + 16);
    static_assert(2 * kStagingBytes <= kStages * (Config::kATileBytes + Config::kBTileBytes),
                  "both consumers' output tiles fit the drained stages");
    store_tile<Elem, BN, ChannelsLast>(p, acc, shared + consumer * kStagingBytes,
                                       first_row + 64 * consumer, first_col, thread, 3 + consumer);
  }
#endif
}

inline PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static PFN_cuTensorMapEncodeTiled_v12000 encode = [] {
    void* function = nullptr;
    cudaDriverEntryPointQueryResult status;
    const cudaError_t error = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &function,
                                                               12000, cudaEnableDefault, &status);
    TORCH_CHECK(error == cudaSuccess && status == cudaDriverEntryPointSuccess && function,
                "gwprune: the CUDA driver has no cuTensorMapEncodeTiled");
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(function);
  }();
  return encode;
}

// The packed weight [Cout, K'p] as a 2-D tensor map: boxes of BN rows x one 128-byte
// K slice, written to shared memory in the 128-byte swizzle; rows past Cout and
// columns past K'p read as zeros.
inline CUtensorMap weight_tensor_map(const at::Tensor& weight, int box_rows) {
  const int64_t elem = weight.element_size();
  CUtensorMapDataType type = CU_TENSOR_MAP_DATA_TYPE_FLOAT32;
  if (weight.scalar_type() == at::kHalf) type = CU_TENSOR_MAP_DATA_TYPE_FLOAT16;
  if (weight.scalar_type() == at::kBFloat16) type = CU_TENSOR_MAP_DATA_TYPE_BFLOAT16;
  const cuuint64_t dims[2] = {static_cast<cuuint64_t>(weight.size(1)),
                              static_cast<cuuint64_t>(weight.size(0))};
  const cuuint64_t strides[1] = {static_cast<cuuint64_t>(weight.size(1) * elem)};
  const cuuint32_t box[2] = {static_cast<cuuint32_t>(kRowBytes / elem),
                             static_cast<cuuint32_t>(box_rows)};
  const cuuint32_t element_strides[2] = {1, 1};
  CUtensorMap map;
  const CUresult result =
      tensor_map_encoder()(&map, type, 2, weight.data_ptr(), dims, strides, box, element_strides,
                           CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                           CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  TORCH_CHECK(result == CUDA_SUCCESS, "gwprune: cuTensorMapEncodeTiled failed (", result, ")");
  return map;
}

inline ConvProblem make_problem(const at::Tensor& x, const at::Tensor& weight,
                                const at::Tensor& group_idx, const std::optional<at::Tensor>& bias,
                                const ConvGeometry& g, at::Tensor& out, int bk) {
  ConvProblem p{};
  p.x = x.data_ptr();
  p.out = out.data_ptr();
  p.bias = bias.has_value() ? bias->data_ptr() : nullptr;
  p.group_idx = group_idx.data_ptr<int32_t>();
  p.row_pitch = static_cast<int32_t>(g.out_pixels());
  p.rows = static_cast<int32_t>(x.size(0) * g.out_pixels());
  p.out_channels = static_cast<int32_t>(weight.size(0));
  p.kept_padded = static_cast<int32_t>(weight.size(1));
  p.height = static_cast<int32_t>(g.height);
  p.width = static_cast<int32_t>(g.width);
  p.out_h = static_cast<int32_t>(g.out_h);
  p.out_w = static_cast<int32_t>(g.out_w);
  p.out_pixels = static_cast<int32_t>(g.out_pixels());
  p.kernel_h = static_cast<int32_t>(g.kernel_h);
  p.kernel_w = static_cast<int32_t>(g.kernel_w);
  p.taps = p.kernel_h * p.kernel_w;
  p.by_taps = FastDivision::of(p.taps);
  p.by_kernel_w = FastDivision::of(p.kernel_w);
  p.stride_h = static_cast<int32_t>(g.stride_h);
  p.stride_w = static_cast<int32_t>(g.stride_w);
  p.pad_h = static_cast<int32_t>(g.pad_h);
  p.pad_w = static_cast<int32_t>(g.pad_w);
  p.dilation_h = static_cast<int32_t>(g.dilation_h);
  p.dilation_w = static_cast<int32_t>(g.dilation_w);
  p.x_stride_n = static_cast<int32_t>(x.stride(0));
  p.x_stride_c = static_cast<int32_t>(x.stride(1));
  p.x_stride_h = static_cast<int32_t>(x.stride(2));
  p.x_stride_w = static_cast<int32_t>(x.stride(3));
  p.k_tiles = static_cast<int32_t>((weight.size(1) + bk - 1) / bk);
  return p;
}

// Tile rows per image of the run gather: the output pixels rounded up to 8, so that no
// run of 8 spans two images.
inline int64_t run_row_pitch(const ConvGeometry& g) { return (g.out_pixels() + 7) / 8 * 8; }

template <typename Elem, int BN, bool ChannelsLast, bool Runs>
void launch(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& group_idx,
            const std::optional<at::Tensor>& bias, const ConvGeometry& g, at::Tensor& out) {
  using Config = TileConfig<Elem, BN>;
  auto* kernel = implicit_conv_kernel<Elem, BN, ChannelsLast, Runs>;
  static const bool configured = [kernel] {
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        Config::kSharedBytes));
    return true;
  }();
  (void)configured;
  ConvProblem p = make_problem(x, weight, group_idx, bias, g, out, Config::kBK);
  if constexpr (Runs) {
    p.row_pitch = static_cast<int32_t>(run_row_pitch(g));
    p.rows = static_cast<int32_t>(x.size(0) * p.row_pitch);
  }
  const CUtensorMap map = weight_tensor_map(weight, BN);
  const int64_t tiles = ((p.rows + kTileRows - 1) / kTileRows) * ((p.out_channels + BN - 1) / BN);
  kernel<<<static_cast<unsigned>(tiles), kThreads, Config::kSharedBytes,
           at::cuda::getCurrentCUDAStream()>>>(map, p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename Elem, bool ChannelsLast, bool Runs>
void launch_for_width(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& group_idx,
                      const std::optional<at::Tensor>& bias, const ConvGeometry& g,
                      at::Tensor& out) {
  // The widest tile that the output channels fill at least half of.
  const int64_t out_channels = weight.size(0);
  if (out_channels > 128) {
    launch<Elem, 256, ChannelsLast, Runs>(x, weight, group_idx, bias, g, out);
  } else if (out_channels > 64) {
    launch<Elem, 128, ChannelsLast, Runs>(x, weight, group_idx, bias, g, out);
  } else {
    launch<Elem, 64, ChannelsLast, Runs>(x, weight, group_idx, bias, g, out);
  }
}

// Whether the NCHW run gather (run_gather.cuh) takes the call: 16-bit, contiguous rows,
// stride 1 with OW == W (offsets linear in the pixel), kernel rows and columns <= 8
// (one byte of valid taps each), x 16-byte aligned (its wide loads) and its storage
// reaching to the end of the 16-byte granule that holds x's last element, so a wide
// load never reads bytes past the storage (compute-sanitizer initcheck flagged that on
// a 3 x 70 x 11 x 13 bf16 x, H200 2026-12-02). GWPRUNE_IMPLICIT_RUNS=0
// turns it off (the row gather then takes every call), read per call so that a benchmark
// can set it between calls (bench/experiments/implicit_conv.py).
inline bool run_gather_applies(const at::Tensor& x, const ConvGeometry& g) {
  const char* switch_value = std::getenv("GWPRUNE_IMPLICIT_RUNS");
  const bool enabled = switch_value == nullptr || std::string(switch_value) != "0";
  if (!enabled || x.element_size() != 2 || x.stride(3) != 1 || x.stride(2) != g.width ||
      g.stride_h != 1 || g.stride_w != 1 || g.out_w != g.width || g.kernel_h > 8 ||
      g.kernel_w > 8 || reinterpret_cast<uintptr_t>(x.data_ptr()) % 16 != 0)
    return false;
  int64_t span = 1;  // elements from x's first to its last, plus one
  for (int64_t d = 0; d < x.dim(); ++d) span += (x.size(d) - 1) * x.stride(d);
  const auto* storage_begin = static_cast<const char*>(x.storage().data());
  const auto* data_begin = static_cast<const char*>(x.data_ptr());
  const int64_t end_byte = (data_begin - storage_begin) + span * x.element_size();
  // The rounded-up rows must keep the 32-bit row numbers that implicit_conv_unsupported_reason
  // checks for the unrounded ones.
  if (x.size(0) * run_row_pitch(g) >= std::numeric_limits<int32_t>::max() - kTileRows) return false;
  return (end_byte + 15) / 16 * 16 <= static_cast<int64_t>(x.storage().nbytes());
}

template <typename Elem>
void launch_for_layout(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& group_idx,
                       const std::optional<at::Tensor>& bias, const ConvGeometry& g,
                       at::Tensor& out, bool channels_last) {
  if (channels_last) {
    launch_for_width<Elem, true, false>(x, weight, group_idx, bias, g, out);
  } else if constexpr (sizeof(Elem) == 2) {
    if (run_gather_applies(x, g)) {
      launch_for_width<Elem, false, true>(x, weight, group_idx, bias, g, out);
    } else {
      launch_for_width<Elem, false, false>(x, weight, group_idx, bias, g, out);
    }
  } else {
    launch_for_width<Elem, false, false>(x, weight, group_idx, bias, g, out);
  }
}

}  // namespace detail

// The launcher of one element type: picks the tile width, launches on the current stream.
template <typename Elem>
void launch_implicit_conv(const at::Tensor& x, const at::Tensor& weight,
                          const at::Tensor& group_idx, const std::optional<at::Tensor>& bias,
                          const ConvGeometry& geometry, at::Tensor& out, bool channels_last) {
  detail::launch_for_layout<Elem>(x, weight, group_idx, bias, geometry, out, channels_last);
}

}  // namespace gwprune::cuda::implicit
