// The implicit conv kernel (contract in implicit_conv.h): tile configurations, the
// warp-specialized kernel that joins producer, consumers and epilogue, and its launch.
// Included once per element type (implicit_conv_{fp16,bf16,tf32}.cu), so the three
// sets of instantiations compile in parallel.
//
// One CTA computes a 128-pixel x BN-channel output tile: warpgroup 0 produces stages
// (gather_mainloop.cuh, run_gather.cuh or line_gather.cuh), warpgroups 1 and 2 consume
// them (mma_consumer.cuh) and store (epilogue.cuh). Pipeline stages
// take 192 KB of shared memory, whatever BN is.
#pragma once

#include <ATen/cuda/CUDAContext.h>
#include <cuda.h>
#include <cudaTypedefs.h>

#include <array>
#include <cstdlib>
#include <limits>
#include <string>
#include <type_traits>

#include "epilogue.cuh"
#include "gather_mainloop.cuh"
#include "implicit_conv.h"
#include "line_gather.cuh"
#include "mma_consumer.cuh"
#include "run_gather.cuh"
#include "sm90_primitives.cuh"
#include "windows/persistent_window_kernel.cuh"
#include "windows/staged_window_kernel.cuh"
#include "windows/window_kernel.cuh"

namespace gwprune::cuda::implicit {
namespace detail {

constexpr int kThreads = 384;
// A producer thread holds two parts' loads (2 x 64 values at most) in registers, the
// consumers 128 accumulators for a 64 x 256 tile. setmaxnreg.inc waits until the CTA's
// own setmaxnreg.dec has freed the registers, so the two moves must balance exactly
// (an unbalanced pair hangs): 128 * (168 - 152) == 256 * (176 - 168). (Two producer
// warpgroups do not fit: 512 threads cap every thread at 128 registers when ptxas
// allocates, and a consumer's m64n256 wgmma needs 154.)
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
  // full, empty and loaded (the line gather's) barriers, its padding table, alignment
  static constexpr int kPaddingTableOffset = kBarrierOffset + 3 * kStages * 8;
  static constexpr int kSharedBytes = kPaddingTableOffset + kPaddingTableBytes + 1024;
  static_assert(kStages >= 4, "the line gather keeps two stages in flight and one patched");
  static_assert(kTileRows == kProducerThreads, "one producer thread owns each tile row");
};

// The producer's way of filling A:
// - kRows, the row gather (any geometry, both layouts; gather_mainloop.cuh);
// - kRuns, the NCHW run gather (16-bit, stride 1, OW == W; run_gather.cuh);
// - kRunPairs, the run gather in CTA pairs: a 2-CTA cluster on one pixel tile and two
//   output-channel tiles, each CTA gathering half of every stage into both;
// - kLines, the NCHW line gather (the run gather's geometry, by TMA; line_gather.cuh);
// - kAsyncLines, the same lines copied by the producer threads' cp.async instead;
// - kWindows, the window kernel (windows/): each channel's input rows copied once per tile
//   by TMA, the consumers reading their A fragments from them (no A tile);
// - kStagedWindows, the staged window kernel (windows/staged_window_kernel.cuh): the same
//   windows, gatherer warps building A tiles from them for shared-memory wgmma;
// - kSplitWindows, the split window kernel (the same file): each stage's A read half by the
//   consumers into registers, half from the gatherers' tile;
// - kPersistentWindows, the window kernel with one CTA per SM walking the output tiles
//   (windows/persistent_window_kernel.cuh);
// - kTallWindows, the same kernel walking tall tiles of 256 pixels (windows/tall_tiles.cuh),
//   where the output channels fit one tile of at most 128.
// The first three move the data through the producer's registers (register sets
// pipelined by parts); kLines and kAsyncLines start copies.
enum class Producer {
  kRows,
  kRuns,
  kRunPairs,
  kLines,
  kAsyncLines,
  kWindows,
  kStagedWindows,
  kSplitWindows,
  kPersistentWindows,
  kTallWindows
};

// The two forms of the line gather (line_gather.cuh: TMA boxes, or the threads' cp.async).
constexpr bool is_line_gather(Producer kind) {
  return kind == Producer::kLines || kind == Producer::kAsyncLines;
}

#ifdef GWPRUNE_SM90A_DEVICE
template <Producer Kind>
struct GatherKind {
  template <typename Elem, int BK, bool ChannelsLast>
  using type = StageGather<Elem, BK, ChannelsLast>;
};
template <>
struct GatherKind<Producer::kRuns> {
  template <typename Elem, int BK, bool ChannelsLast>
  using type = RunGather<Elem>;
};
template <>
struct GatherKind<Producer::kRunPairs> {
  template <typename Elem, int BK, bool ChannelsLast>
  using type = RunGather<Elem>;
};
#endif

#ifdef GWPRUNE_SM90A_DEVICE
// The row and run gathers' producer loop: loads of the next part in flight in one
// register set while the other is stored; the weight tile's copy completes on `full`.
template <typename Elem, int BN, bool ChannelsLast, Producer Kind>
__device__ __forceinline__ void produce_through_registers(const ConvProblem& p,
                                                          const void* weight_map, uint8_t* a_stages,
                                                          uint8_t* b_stages, uint64_t* full,
                                                          uint64_t* empty, int first_row,
                                                          int first_col, int thread) {
  using Config = TileConfig<Elem, BN>;
  constexpr int kStages = Config::kStages;
  constexpr int kBK = Config::kBK;
  const int warp = thread / 32, lane = thread % 32;
  using Gather = typename GatherKind<Kind>::template type<Elem, kBK, ChannelsLast>;
  // What the thread's rows of the tile need for the whole K loop stays in registers.
  const typename Gather::Tile tile = Gather::make_tile(p, first_row, thread);
  constexpr int kParts = Gather::kParts;
  // In a pair this CTA gathers part `rank` of every stage, into both CTAs.
  constexpr bool kPaired = Kind == Producer::kRunPairs;
  const uint32_t rank = kPaired ? cluster_rank() : 0;
  const uint32_t peer_a = kPaired ? peer_address(smem_address(a_stages), rank ^ 1) : 0;
  const uint32_t peer_full = kPaired ? peer_address(smem_address(full), rank ^ 1) : 0;
  auto stage_of = [&](int u) { return kPaired ? u : u / kParts; };
  auto part_of = [&](int u) { return kPaired ? static_cast<int>(rank) : u % kParts; };
  // Part u of the stage sequence: its stage's slot is free and the weight tile on its
  // way before the first part is stored; the stage is handed over after the last.
  auto publish = [&](int u, const Gather& gathered) {
    const int kt = stage_of(u), part = part_of(u);
    const int stage = kt % kStages;
    if (kPaired || part == 0) {
      if (kt >= kStages) mbarrier_wait<kPaired>(&empty[stage], ((kt / kStages) - 1) & 1);
      if (thread == 0) {
        mbarrier_expect_tx(&full[stage], Config::kBTileBytes);
        tma_load_2d(b_stages + stage * Config::kBTileBytes, weight_map, &full[stage], kt * kBK,
                    first_col);
      }
    }
    gathered.store(a_stages + stage * Config::kATileBytes, part, warp, lane,
                   kPaired ? peer_a + stage * Config::kATileBytes : 0);
    if constexpr (kPaired) {
      fence_proxy_async_shared_cluster();
      mbarrier_arrive(&full[stage]);
      mbarrier_arrive_cluster(peer_full + stage * 8);
    } else if (part == kParts - 1) {
      fence_proxy_async_shared();
      mbarrier_arrive(&full[stage]);
    }
  };
  auto first_column = [&](int u) { return stage_of(u) * kBK; };
  auto load = [&](int u, Gather& gathered) {
    gathered.load(p, part_of(u), first_column(u + 4), tile, warp, lane);
  };
  // Two register sets, so the loads of the next part are in flight while this one is
  // stored (the loop is unrolled by two: register arrays need compile-time indices).
  // Set `even` takes parts 0, 2, 4, ...; each holds the group_idx entries of its next
  // two parts (GroupRing).
  const int parts = kPaired ? p.k_tiles : p.k_tiles * kParts;
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
}
#endif

// x_map: x as a 1-D tensor map with 64-element boxes (the line gather's; unused otherwise).
template <typename Elem, int BN, bool ChannelsLast, Producer Kind>
__global__ void __launch_bounds__(kThreads, 1)
    implicit_conv_kernel(const __grid_constant__ CUtensorMap weight_map,
                         const __grid_constant__ CUtensorMap x_map, const ConvProblem p) {
#ifdef GWPRUNE_SM90A_DEVICE
  using Config = TileConfig<Elem, BN>;
  constexpr int kStages = Config::kStages;
  extern __shared__ uint8_t shared_raw[];
  uint8_t* shared = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(shared_raw) + 1023) &
                                               ~static_cast<uintptr_t>(1023));
  uint8_t* a_stages = shared;
  uint8_t* b_stages = shared + kStages * Config::kATileBytes;
  auto* full = reinterpret_cast<uint64_t*>(shared + Config::kBarrierOffset);
  uint64_t* empty = full + kStages;
  uint64_t* loaded = empty + kStages;
  constexpr bool kAMnMajor = Kind != Producer::kRows;
  constexpr bool kPaired = Kind == Producer::kRunPairs;

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
      // In a pair both CTAs' producers fill each stage and both CTAs' consumers free it.
      mbarrier_init(&full[s], kPaired ? 2 * kProducerThreads : kProducerThreads);
      mbarrier_init(&empty[s], kPaired ? 4 : 2);
      // The line gather's copies: thread 0's arrival, and each producer thread's once its
      // cp.async copies have landed (kAsyncLines).
      mbarrier_init(&loaded[s], Kind == Producer::kAsyncLines ? 1 + kProducerThreads : 1);
    }
    fence_barrier_init();
    prefetch_tensor_map(&weight_map);
    if constexpr (Kind == Producer::kLines) prefetch_tensor_map(&x_map);
  }
  // A pair's barriers are initialised in both CTAs before either arrives on the other's.
  if constexpr (kPaired) {
    cluster_sync();
  } else {
    __syncthreads();
  }

  if (warpgroup == 0) {
    if constexpr (kProducerRegisters < kLaunchRegisters) release_registers<kProducerRegisters>();
    if constexpr (is_line_gather(Kind)) {
      auto* padding = reinterpret_cast<uint32_t*>(shared + Config::kPaddingTableOffset);
      const LineGather<kStages, Config::kBTileBytes, Kind == Producer::kAsyncLines> gather{
          p,    &x_map, &weight_map, a_stages,  b_stages,  loaded,
          full, empty,  padding,     first_row, first_col, thread};
      gather.run();
    } else {
      produce_through_registers<Elem, BN, ChannelsLast, Kind>(
          p, &weight_map, a_stages, b_stages, full, empty, first_row, first_col, thread);
    }
  } else {
    if constexpr (kConsumerRegisters > kLaunchRegisters) claim_registers<kConsumerRegisters>();
    const int consumer = warpgroup - 1;
    float acc[BN / 2];
    const uint32_t peer_empty = kPaired ? peer_address(smem_address(empty), cluster_rank() ^ 1) : 0;
    consume_stages<typename ElemTraits<Elem>::Mma, BN, kStages, kAMnMajor, kPaired>(
        acc, a_stages, b_stages, full, empty, p.k_tiles, consumer, thread == 0, peer_empty);
    // Both consumers are past their last wgmma: the stages can hold the output tile.
    named_barrier_sync(2, 256);
    constexpr int kStagingBytes =
        ChannelsLast ? 64 * (BN * sizeof(Elem) + 16) : BN * (64 * sizeof(Elem) + 16);
    static_assert(2 * kStagingBytes <= kStages * (Config::kATileBytes + Config::kBTileBytes),
                  "both consumers' output tiles fit the drained stages");
    store_tile<Elem, BN, ChannelsLast>(p, acc, shared + consumer * kStagingBytes,
                                       first_row + 64 * consumer, first_col, thread, 3 + consumer);
  }
  // Neither CTA of a pair exits while the other may still arrive on its barriers.
  if constexpr (kPaired) cluster_sync();
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

// A tiled tensor map of unit element strides, in the 128-byte swizzle unless told
// otherwise; elements outside the tensor read as zeros. `what` names the tensor in the error.
inline CUtensorMap encode_tiled_map(CUtensorMapDataType type, cuuint32_t rank, void* base,
                                    const cuuint64_t* dims, const cuuint64_t* strides,
                                    const cuuint32_t* box, CUtensorMapL2promotion promotion,
                                    const char* what,
                                    CUtensorMapSwizzle swizzle = CU_TENSOR_MAP_SWIZZLE_128B) {
  const cuuint32_t element_strides[2] = {1, 1};
  CUtensorMap map;
  const CUresult result = tensor_map_encoder()(
      &map, type, rank, base, dims, strides, box, element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE,
      swizzle, promotion, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  TORCH_CHECK(result == CUDA_SUCCESS, "gwprune: cuTensorMapEncodeTiled (", what, ") failed (",
              result, ")");
  return map;
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
  return encode_tiled_map(type, 2, weight.data_ptr(), dims, strides, box,
                          CU_TENSOR_MAP_L2_PROMOTION_L2_256B, "weight");
}

// The problem's shapes and strides (no pointers): what the producers' rules read.
inline ConvProblem problem_shape(const at::Tensor& x, const at::Tensor& weight,
                                 const ConvGeometry& g, int bk) {
  ConvProblem p{};
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

// EpilogueActivation, the kernels' mirror of gwprune::Activation, holds the same values.
constexpr bool mirrors(Activation host, EpilogueActivation device) {
  return static_cast<int>(host) == static_cast<int>(device);
}
static_assert(mirrors(Activation::kNone, EpilogueActivation::kNone) &&
                  mirrors(Activation::kRelu, EpilogueActivation::kRelu) &&
                  mirrors(Activation::kRelu6, EpilogueActivation::kRelu6) &&
                  mirrors(Activation::kSilu, EpilogueActivation::kSilu) &&
                  mirrors(Activation::kGelu, EpilogueActivation::kGelu) &&
                  mirrors(Activation::kGeluTanh, EpilogueActivation::kGeluTanh),
              "EpilogueActivation must list gwprune::Activation's values in its order");

// The widest output-channel tile (BN) that the output channels fill at least half of: the
// tile width of every launch.
inline int tile_width(int64_t out_channels) {
  return out_channels > 128 ? 256 : out_channels > 64 ? 128 : 64;
}

// A launch's output tiles: 128-row pixel tiles times bn-wide output-channel tiles.
inline int64_t output_tiles(const ConvProblem& p, int64_t bn) {
  return ((int64_t{p.rows} + kTileRows - 1) / kTileRows) * ((p.out_channels + bn - 1) / bn);
}

inline ConvProblem make_problem(const at::Tensor& x, const at::Tensor& weight,
                                const at::Tensor& group_idx, const std::optional<at::Tensor>& bias,
                                const ConvGeometry& g, at::Tensor& out, Activation activation,
                                int bk) {
  ConvProblem p = problem_shape(x, weight, g, bk);
  p.x = x.data_ptr();
  p.out = out.data_ptr();
  p.bias = bias.has_value() ? bias->data_ptr() : nullptr;
  p.group_idx = group_idx.data_ptr<int32_t>();
  p.activation = static_cast<EpilogueActivation>(activation);
  return p;
}

// Tile rows per image of the run gather: the output pixels rounded up to 8, so that no
// run of 8 spans two images.
inline int64_t run_row_pitch(const ConvGeometry& g) { return (g.out_pixels() + 7) / 8 * 8; }

// Elements from x's first to its last, plus one.
inline int64_t element_span(const at::Tensor& x) {
  int64_t span = 1;
  for (int64_t d = 0; d < x.dim(); ++d) span += (x.size(d) - 1) * x.stride(d);
  return span;
}

// x (16-bit) as one 1-D tensor of its span, in boxes of `box` elements; elements outside
// the span read as zeros. The line gather's copies take one 128-byte swizzled line per
// box, the window kernel's a whole unswizzled channel window.
inline CUtensorMap x_span_tensor_map(const at::Tensor& x, int box, CUtensorMapL2promotion promotion,
                                     CUtensorMapSwizzle swizzle) {
  const CUtensorMapDataType type = x.scalar_type() == at::kHalf ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16
                                                                : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16;
  const cuuint64_t dims[1] = {static_cast<cuuint64_t>(element_span(x))};
  const cuuint64_t strides[1] = {0};  // a rank-1 map has none
  const cuuint32_t boxes[1] = {static_cast<cuuint32_t>(box)};
  return encode_tiled_map(type, 1, x.data_ptr(), dims, strides, boxes, promotion, "x", swizzle);
}

template <typename Elem, int BN, bool ChannelsLast, Producer Kind>
void launch(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& group_idx,
            const std::optional<at::Tensor>& bias, const ConvGeometry& g, at::Tensor& out,
            Activation activation) {
  using Config = TileConfig<Elem, BN>;
  auto* kernel = implicit_conv_kernel<Elem, BN, ChannelsLast, Kind>;
  static const bool configured = [kernel] {
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        Config::kSharedBytes));
    return true;
  }();
  (void)configured;
  ConvProblem p = make_problem(x, weight, group_idx, bias, g, out, activation, Config::kBK);
  CUtensorMap x_map{};
  if constexpr (Kind == Producer::kRuns || Kind == Producer::kRunPairs)
    p.row_pitch = static_cast<int32_t>(run_row_pitch(g));
  if constexpr (is_line_gather(Kind))
    p.row_pitch = static_cast<int32_t>(line_row_pitch(g.out_pixels()));
  if constexpr (Kind == Producer::kLines)
    x_map = x_span_tensor_map(x, kLinePixels, CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
                              CU_TENSOR_MAP_SWIZZLE_128B);
  // Below 2^31 wherever the line gather applies (line_gather_applies).
  if constexpr (Kind == Producer::kAsyncLines) p.x_span = static_cast<int32_t>(element_span(x));
  p.rows = static_cast<int32_t>(x.size(0) * p.row_pitch);
  const CUtensorMap weight_map = weight_tensor_map(weight, BN);
  const int64_t tiles = output_tiles(p, BN);
  if constexpr (Kind == Producer::kRunPairs) {
    // Neighbouring blocks take neighbouring output-channel tiles of one pixel tile (the
    // tile order in the kernel), so a cluster of two is a pair when the channel tiles are
    // even in number (run_pairs_apply).
    cudaLaunchConfig_t config{};
    config.gridDim = dim3(static_cast<unsigned>(tiles));
    config.blockDim = dim3(kThreads);
    config.dynamicSmemBytes = Config::kSharedBytes;
    config.stream = at::cuda::getCurrentCUDAStream();
    cudaLaunchAttribute cluster{};
    cluster.id = cudaLaunchAttributeClusterDimension;
    cluster.val.clusterDim.x = 2;
    cluster.val.clusterDim.y = 1;
    cluster.val.clusterDim.z = 1;
    config.attrs = &cluster;
    config.numAttrs = 1;
    C10_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, weight_map, x_map, p));
  } else {
    kernel<<<static_cast<unsigned>(tiles), kThreads, Config::kSharedBytes,
             at::cuda::getCurrentCUDAStream()>>>(weight_map, x_map, p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

template <typename Elem, bool ChannelsLast, Producer Kind>
void launch_for_width(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& group_idx,
                      const std::optional<at::Tensor>& bias, const ConvGeometry& g, at::Tensor& out,
                      Activation activation) {
  const int width = tile_width(weight.size(0));
  if (width == 256) {
    launch<Elem, 256, ChannelsLast, Kind>(x, weight, group_idx, bias, g, out, activation);
  } else if (width == 128) {
    launch<Elem, 128, ChannelsLast, Kind>(x, weight, group_idx, bias, g, out, activation);
  } else {
    launch<Elem, 64, ChannelsLast, Kind>(x, weight, group_idx, bias, g, out, activation);
  }
}

// The geometry of the run and line gathers: 16-bit NCHW with contiguous rows, stride 1
// and OW == W (so x offsets are linear in the output pixel), x 16-byte aligned (the run
// gather's wide loads, the copy engine's base address).
inline bool nchw_offsets_are_linear(const at::Tensor& x, const ConvGeometry& g) {
  return x.element_size() == 2 && x.stride(3) == 1 && x.stride(2) == g.width && g.stride_h == 1 &&
         g.stride_w == 1 && g.out_w == g.width &&
         reinterpret_cast<uintptr_t>(x.data_ptr()) % 16 == 0;
}

// Whether N images of `row_pitch` rows keep the 32-bit row numbers that
// implicit_conv_unsupported_reason checks for the unrounded ones.
inline bool rows_fit(const at::Tensor& x, int64_t row_pitch) {
  return x.size(0) * row_pitch < std::numeric_limits<int32_t>::max() - kTileRows;
}

// The run gather (run_gather.cuh) also needs kernel rows and columns <= 8 (one byte of
// valid taps each) and x's storage reaching to the end of the 16-byte granule that
// holds x's last element, so a wide load never reads bytes past the storage
// (compute-sanitizer initcheck flagged that on a 3 x 70 x 11 x 13 bf16 x, H200 2026-12-02).
inline bool run_gather_applies(const at::Tensor& x, const ConvGeometry& g) {
  if (!nchw_offsets_are_linear(x, g) || g.kernel_h > 8 || g.kernel_w > 8 ||
      !rows_fit(x, run_row_pitch(g)))
    return false;
  const auto* storage_begin = static_cast<const char*>(x.storage().data());
  const auto* data_begin = static_cast<const char*>(x.data_ptr());
  const int64_t end_byte = (data_begin - storage_begin) + element_span(x) * x.element_size();
  return (end_byte + 15) / 16 * 16 <= static_cast<int64_t>(x.storage().nbytes());
}

// The line gather (line_gather.cuh) copies through the copy engine, which reads nothing
// outside x's span but starts a box only at a 16-byte aligned element (an unaligned
// start is an illegal instruction: bench/experiments/probes/tma_line_probe.cu, H200
// 2026-12-02). So every line start must be a multiple of 8 elements: x's image and
// channel strides, the padding offset and every tap's offset (in practice 1x1 convs on
// images of a multiple of 8 pixels, and k x 1 kernels on rows of a multiple of 8). Its
// 32-bit copy coordinates must hold the largest line start (the last image's last
// channel, the last tap, a whole line) and the smallest.
inline bool line_gather_applies(const at::Tensor& x, const ConvGeometry& g) {
  if (!nchw_offsets_are_linear(x, g)) return false;
  auto aligned = [](int64_t elements) { return elements % 8 == 0; };
  if (!aligned(x.stride(0)) || !aligned(x.stride(1)) || !aligned(g.pad_h * g.width + g.pad_w))
    return false;
  for (int64_t i = 0; i < g.kernel_h; ++i)
    for (int64_t j = 0; j < g.kernel_w; ++j)
      if (!aligned(i * g.dilation_h * g.width + j * g.dilation_w)) return false;
  const int64_t pitch = line_row_pitch(g.out_pixels());
  const int64_t reach = (g.kernel_h - 1) * g.dilation_h * g.width + (g.kernel_w - 1) * g.dilation_w;
  const int64_t largest =
      x.size(0) * x.stride(0) + (x.size(1) - 1) * x.stride(1) + pitch + reach + 2 * kLinePixels;
  const int64_t smallest = g.pad_h * g.width + g.pad_w + 2 * kLinePixels;
  constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();
  return rows_fit(x, pitch) && largest < kInt32Max && smallest < kInt32Max;
}

// The run gather in CTA pairs: where the run gather applies and the 256-wide output
// channel tiles (launch_for_width's choice above 128 channels) are even in number.
inline bool run_pairs_apply(const at::Tensor& x, const at::Tensor& weight, const ConvGeometry& g) {
  const int64_t out_channels = weight.size(0);
  return out_channels > 256 && ((out_channels + 255) / 256) % 2 == 0 && run_gather_applies(x, g);
}

// The window kernel's rule (windows/window_geometry.cuh): 16-bit NCHW with contiguous
// rows, x 16-byte aligned (the copies' base), at most 29 taps, tiles touching at most 4
// images (out_pixels >= 43), more than 64 window slots beside the weight stages, and
// 32-bit copy coordinates past x's last element. Layout is the kernel's shared-memory
// layout (windows::WindowLayout or windows::StagedLayout), which bounds the ring.
template <typename Layout>
inline bool window_launch(const at::Tensor& x, const ConvGeometry& g, const ConvProblem& p,
                          windows::WindowLaunch& w, int tile_rows = kTileRows) {
  if (x.element_size() != 2 || x.stride(3) != 1 || x.stride(2) != g.width ||
      reinterpret_cast<uintptr_t>(x.data_ptr()) % 16 != 0 ||
      g.kernel_h * g.kernel_w > windows::kMaxTaps || p.rows <= 0 || !rows_fit(x, g.out_pixels()))
    return false;
  w = windows::window_plan(p, tile_rows);
  if (w.max_segments > windows::kMaxSegments) return false;
  if (element_span(x) + 4 * int64_t{w.slot_elements} >= std::numeric_limits<int32_t>::max())
    return false;
  return windows::choose_ring<Layout>(w);
}

template <typename Layout>
inline bool window_path_applies(const at::Tensor& x, const at::Tensor& weight,
                                const ConvGeometry& g, int tile_rows = kTileRows) {
  const ConvProblem p = problem_shape(x, weight, g, windows::kBK);
  windows::WindowLaunch w;
  return weight.size(0) > 0 && window_launch<Layout>(x, g, p, w, tile_rows);
}

// The persistent window kernel over tall tiles (windows/tall_tiles.cuh): the window path's
// contract at 256 pixels a tile, output channels that fit one tile of at most 128 (its two
// row blocks' accumulators), and the register epilogue's pixels. The ring is sized against
// the 128-wide layout's weight stages, which bound the 64-wide one's.
inline bool tall_windows_apply(const at::Tensor& x, const at::Tensor& weight,
                               const ConvGeometry& g) {
  return weight.size(0) <= 128 && windows::register_epilogue_takes_pixels(g.out_pixels()) &&
         window_path_applies<windows::WindowLayout<128>>(x, weight, g, windows::kTallTileRows);
}

// launch_windows' Staged for the persistent window kernel (below).
constexpr int kPersistent = -2;

// The window kernels of one tile width: the register consumer's (Staged = -1), or the
// staged one's with Staged register steps per stage (0: staged, 2: split). One CTA per tile.
// The split kernel, a default, comes without the activation switch too (Activates,
// ../epilogue.cuh); the others, forced or fallbacks, always have it.
template <typename Elem, int BN, int Staged>
struct WindowKernel {
  using Layout =
      std::conditional_t<(Staged >= 0), windows::StagedLayout<BN>, windows::WindowLayout<BN>>;
  static constexpr int kThreads = Staged >= 0 ? windows::kStagedThreads : windows::kThreads;
  using Kernel = void (*)(CUtensorMap, CUtensorMap, ConvProblem, windows::WindowLaunch);
  template <bool ChannelsAligned, bool Activates>
  static constexpr Kernel instance() {
    if constexpr (Staged >= 0) {
      // Only the split kernel drops the switch.
      constexpr bool kActivates = Activates || Staged != 2;
      return windows::staged_window_conv_kernel<Elem, BN, ChannelsAligned, Staged, kActivates>;
    } else {
      return windows::window_conv_kernel<Elem, BN, ChannelsAligned>;
    }
  }
  static Kernel of(bool channels_aligned, bool activates) {
    if (channels_aligned) return activates ? instance<true, true>() : instance<true, false>();
    return activates ? instance<false, true>() : instance<false, false>();
  }
  static std::array<Kernel, 4> all() {
    return {instance<true, true>(), instance<true, false>(), instance<false, true>(),
            instance<false, false>()};
  }
};

// The persistent window kernel, over whole tiles or K slices (windows/k_slices.cuh), with and
// without the activation switch; or over tall tiles (Tall: never sliced, and without the
// switch: with it, ptxas serialized every wgmma of the tall kernel, C7515).
template <typename Elem, int BN, bool Tall = false>
struct PersistentWindowKernel {
  using Layout = windows::WindowLayout<BN>;
  static constexpr int kThreads = windows::kThreads;
  using Kernel = void (*)(CUtensorMap, CUtensorMap, ConvProblem, windows::WindowLaunch,
                          windows::KSlices, windows::TallTiles);
  template <bool ChannelsAligned, bool Activates, bool Sliced>
  static constexpr Kernel instance() {
    return windows::persistent_window_conv_kernel < Elem, BN, ChannelsAligned, Activates && !Tall,
           Sliced && !Tall, Tall > ;
  }
  template <bool ChannelsAligned>
  static Kernel of(bool activates, bool sliced) {
    if (sliced)
      return activates ? instance<ChannelsAligned, true, true>()
                       : instance<ChannelsAligned, false, true>();
    return activates ? instance<ChannelsAligned, true, false>()
                     : instance<ChannelsAligned, false, false>();
  }
  static Kernel of(bool channels_aligned, bool activates, bool sliced) {
    return channels_aligned ? of<true>(activates, sliced) : of<false>(activates, sliced);
  }
  static std::array<Kernel, 8> all() {
    return {instance<true, true, true>(),   instance<true, true, false>(),
            instance<true, false, true>(),  instance<true, false, false>(),
            instance<false, true, true>(),  instance<false, true, false>(),
            instance<false, false, true>(), instance<false, false, false>()};
  }
};

// What every window kernel's launch needs: the problem, the windows' plan, both tensor maps
// and the shared memory.
template <typename Layout>
struct WindowLaunchSetup {
  ConvProblem p;
  windows::WindowLaunch w;
  CUtensorMap weight_map, x_map;
  int shared_bytes;
  int64_t tiles;
};

template <typename Layout>
WindowLaunchSetup<Layout> set_up_windows(const at::Tensor& x, const at::Tensor& weight,
                                         const at::Tensor& group_idx,
                                         const std::optional<at::Tensor>& bias,
                                         const ConvGeometry& g, at::Tensor& out,
                                         Activation activation, int bn, int tile_rows = kTileRows) {
  WindowLaunchSetup<Layout> setup{};
  setup.p = make_problem(x, weight, group_idx, bias, g, out, activation, windows::kBK);
  TORCH_CHECK(window_launch<Layout>(x, g, setup.p, setup.w, tile_rows),
              "gwprune: the window kernel does not take this call");
  setup.weight_map = weight_tensor_map(weight, bn);
  setup.x_map = x_span_tensor_map(x, setup.w.box, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                                  CU_TENSOR_MAP_SWIZZLE_NONE);
  setup.shared_bytes = Layout::shared_bytes(setup.w);
  setup.tiles = output_tiles(setup.p, bn);
  return setup;
}

// Once per instantiation, not per call (host time: issue 15), as launch() does.
template <typename Kernel>
void allow_window_shared_memory() {
  static const bool configured = [] {
    for (auto* each : Kernel::all())
      C10_CUDA_CHECK(cudaFuncSetAttribute(each, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          windows::kMaxSharedBytes));
    return true;
  }();
  (void)configured;
}

template <typename Elem, int BN, int Staged>
void launch_windows(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& group_idx,
                    const std::optional<at::Tensor>& bias, const ConvGeometry& g, at::Tensor& out,
                    Activation activation) {
  using Kernel = WindowKernel<Elem, BN, Staged>;
  const auto setup =
      set_up_windows<typename Kernel::Layout>(x, weight, group_idx, bias, g, out, activation, BN);
  allow_window_shared_memory<Kernel>();
  auto* kernel = Kernel::of(x.stride(1) % 8 == 0, activation != Activation::kNone);
  kernel<<<static_cast<unsigned>(setup.tiles), Kernel::kThreads, setup.shared_bytes,
           at::cuda::getCurrentCUDAStream()>>>(setup.weight_map, setup.x_map, setup.p, setup.w);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// K slices per tile of the persistent kernel: choose_k_slices' estimate, or
// GWPRUNE_IMPLICIT_K_SLICES (a positive count, capped at the stages; read per call so that a
// benchmark can time several counts on one call).
inline int persistent_k_slices(int64_t tiles, int k_tiles, int sms) {
  const char* forced = std::getenv("GWPRUNE_IMPLICIT_K_SLICES");
  if (forced != nullptr && forced[0] != '\0') {
    const int slices = std::atoi(forced);
    TORCH_CHECK(slices > 0, "GWPRUNE_IMPLICIT_K_SLICES must be a positive count, not '", forced,
                "'");
    return slices < k_tiles ? slices : k_tiles;
  }
  return windows::choose_k_slices(tiles, k_tiles, sms);
}

// Where the window kernel is the default and its output tiles are too few to fill the GPU,
// the persistent kernel over K slices (windows/k_slices.cuh), where its register epilogue
// takes the pixels and persistent_k_slices gives more than one.
inline bool k_slices_pay(const at::Tensor& x, const at::Tensor& weight, const ConvGeometry& g) {
  if (!windows::register_epilogue_takes_pixels(g.out_pixels())) return false;
  const ConvProblem p = problem_shape(x, weight, g, windows::kBK);
  const int64_t tiles = output_tiles(p, tile_width(p.out_channels));
  const int sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  return persistent_k_slices(tiles, p.k_tiles, sms) > 1;
}

template <typename Elem, int BN, bool Tall = false>
void launch_persistent_windows(const at::Tensor& x, const at::Tensor& weight,
                               const at::Tensor& group_idx, const std::optional<at::Tensor>& bias,
                               const ConvGeometry& g, at::Tensor& out, Activation activation) {
  using Kernel = PersistentWindowKernel<Elem, BN, Tall>;
  TORCH_CHECK(!Tall || activation == Activation::kNone,
              "gwprune: the tall-tile kernel takes no activation");
  const auto setup =
      set_up_windows<typename Kernel::Layout>(x, weight, group_idx, bias, g, out, activation, BN,
                                              Tall ? windows::kTallTileRows : kTileRows);
  allow_window_shared_memory<Kernel>();
  const int sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  windows::KSlices k;
  windows::TallTiles tall;
  int64_t units = 0;
  if constexpr (Tall) {
    tall = windows::plan_tall_tiles(setup.p.rows, sms);
    units = int64_t{windows::tall_tile_units(tall)} * ((setup.p.out_channels + BN - 1) / BN);
  } else {
    k.slices = persistent_k_slices(setup.tiles, setup.p.k_tiles, sms);
    units = setup.tiles * k.slices;
  }
  at::Tensor workspace;
  const auto stream = at::cuda::getCurrentCUDAStream();
  if (k.slices > 1) {
    // fp32 partials of every unit (128 x BN each), then one counter per (tile, consumer warp),
    // zeroed on the stream; the caching allocator keeps the memory for the next call.
    const int64_t partial_floats = setup.tiles * k.slices * kTileRows * BN;
    const int64_t counters = setup.tiles * windows::kConsumerWarps;
    workspace = at::empty({partial_floats + counters}, x.options().dtype(at::kFloat));
    k.partials = reinterpret_cast<float4*>(workspace.data_ptr<float>());
    k.arrivals = reinterpret_cast<int*>(workspace.data_ptr<float>() + partial_floats);
    C10_CUDA_CHECK(cudaMemsetAsync(k.arrivals, 0, counters * sizeof(int), stream));
  }
  auto* kernel = Kernel::of(x.stride(1) % 8 == 0, activation != Activation::kNone, k.slices > 1);
  kernel<<<static_cast<unsigned>(units < sms ? units : sms), Kernel::kThreads, setup.shared_bytes,
           stream>>>(setup.weight_map, setup.x_map, setup.p, setup.w, k, tall);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename Elem, int Staged>
void launch_windows_for_width(const at::Tensor& x, const at::Tensor& weight,
                              const at::Tensor& group_idx, const std::optional<at::Tensor>& bias,
                              const ConvGeometry& g, at::Tensor& out, Activation activation) {
  auto launch_width = [&](auto width) {
    constexpr int kBN = decltype(width)::value;
    if constexpr (Staged == kPersistent)
      launch_persistent_windows<Elem, kBN>(x, weight, group_idx, bias, g, out, activation);
    else
      launch_windows<Elem, kBN, Staged>(x, weight, group_idx, bias, g, out, activation);
  };
  const int width = tile_width(weight.size(0));
  if (width == 256) {
    launch_width(std::integral_constant<int, 256>{});
  } else if (width == 128) {
    launch_width(std::integral_constant<int, 128>{});
  } else {
    launch_width(std::integral_constant<int, 64>{});
  }
}

// The persistent window kernel over tall tiles, at the width of the output channels (64 or
// 128: tall_windows_apply).
template <typename Elem>
void launch_tall_windows(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& group_idx,
                         const std::optional<at::Tensor>& bias, const ConvGeometry& g,
                         at::Tensor& out, Activation activation) {
  if (tile_width(weight.size(0)) == 128)
    launch_persistent_windows<Elem, 128, true>(x, weight, group_idx, bias, g, out, activation);
  else
    launch_persistent_windows<Elem, 64, true>(x, weight, group_idx, bias, g, out, activation);
}

// Where the window kernel is the default (measured, bench/NOTES.md change 21, H200
// 2026-12-02): kernels of more than one tap on images of 196 output pixels or more, where
// each channel's window serves several kept groups and a tile touches at most two images.
// It ran slower on 1x1 convs (one group per window) and 7 x 7 images (four segments per
// window), so those keep the older producers.
inline bool window_kernel_is_default(const at::Tensor& x, const at::Tensor& weight,
                                     const ConvGeometry& g) {
  return g.kernel_h * g.kernel_w > 1 && g.out_pixels() >= 196 &&
         window_path_applies<windows::WindowLayout<256>>(x, weight, g);
}

// Where the window kernel is the default, its split form is, on images of fewer than 784
// output pixels (measured, bench/NOTES.md change 23, H200 2026-12-03: 7-9 % faster on 14 x 14
// layers, within 2 % either way on 28 x 28 ones).
inline bool split_kernel_is_default(const at::Tensor& x, const at::Tensor& weight,
                                    const ConvGeometry& g) {
  return g.out_pixels() < 784 && window_path_applies<windows::StagedLayout<256>>(x, weight, g);
}

// Elsewhere (784 output pixels or more) the window kernel runs persistent where its register
// epilogue applies (an even pixel count; the output's alignment is checked at launch):
// measured (bench/NOTES.md change 25, H200 2026-12-03) 4-14 % faster on the seed conv at keep
// .75-.25 and 19 % on ResNet-50's 128 x 28² layer, equal at 56²; on 14² layers it was 3 %
// faster and 2 % slower than the split kernel, which stays there.
inline Producer unsplit_window_kernel(const ConvGeometry& g) {
  return windows::register_epilogue_takes_pixels(g.out_pixels()) ? Producer::kPersistentWindows
                                                                 : Producer::kWindows;
}

// The NCHW 16-bit producer: the window kernel (split or persistent) where it is the default,
// else the line gather (its cp.async form) where it applies, else the run gather in pairs,
// alone, else the row gather.
// GWPRUNE_IMPLICIT_GATHER=rows|runs|pairs|lines|async-lines|windows|staged|split|persistent|tall
// forces one (one that does not apply falls back to the row gather); it is read per call so
// that a benchmark can time them all on one call (bench/experiments/implicit_conv.py).
inline Producer nchw_producer(const at::Tensor& x, const at::Tensor& weight,
                              const ConvGeometry& g) {
  const char* forced = std::getenv("GWPRUNE_IMPLICIT_GATHER");
  if (forced != nullptr && forced[0] != '\0') {
    const std::string name(forced);
    TORCH_CHECK(name == "rows" || name == "runs" || name == "pairs" || name == "lines" ||
                    name == "async-lines" || name == "windows" || name == "staged" ||
                    name == "split" || name == "persistent" || name == "tall",
                "GWPRUNE_IMPLICIT_GATHER must be 'rows', 'runs', 'pairs', 'lines', 'async-lines', "
                "'windows', 'staged', 'split', 'persistent' or 'tall', not '",
                name, "'");
    if (name == "tall")
      return tall_windows_apply(x, weight, g) ? Producer::kTallWindows : Producer::kRows;
    if (name == "windows")
      return window_path_applies<windows::WindowLayout<256>>(x, weight, g) ? Producer::kWindows
                                                                           : Producer::kRows;
    if (name == "persistent")
      return window_path_applies<windows::WindowLayout<256>>(x, weight, g)
                 ? Producer::kPersistentWindows
                 : Producer::kRows;
    if (name == "staged" || name == "split") {
      if (!window_path_applies<windows::StagedLayout<256>>(x, weight, g)) return Producer::kRows;
      return name == "staged" ? Producer::kStagedWindows : Producer::kSplitWindows;
    }
    if (name == "lines" || name == "async-lines") {
      if (!line_gather_applies(x, g)) return Producer::kRows;
      return name == "lines" ? Producer::kLines : Producer::kAsyncLines;
    }
    if (name == "runs") return run_gather_applies(x, g) ? Producer::kRuns : Producer::kRows;
    if (name == "pairs")
      return run_pairs_apply(x, weight, g) ? Producer::kRunPairs : Producer::kRows;
    return Producer::kRows;
  }
  if (window_kernel_is_default(x, weight, g)) {
    if (k_slices_pay(x, weight, g)) return Producer::kPersistentWindows;
    return split_kernel_is_default(x, weight, g) ? Producer::kSplitWindows
                                                 : unsplit_window_kernel(g);
  }
  // The lines by cp.async: 3-10 % faster than by TMA on ResNet-50's 1x1 convs at 56² and
  // 28² (H100, 2026-12-06, bench/NOTES.md change 33).
  if (line_gather_applies(x, g)) return Producer::kAsyncLines;
  if (run_pairs_apply(x, weight, g)) return Producer::kRunPairs;
  if (run_gather_applies(x, g)) return Producer::kRuns;
  return Producer::kRows;
}

template <typename Elem>
void launch_for_layout(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& group_idx,
                       const std::optional<at::Tensor>& bias, const ConvGeometry& g,
                       at::Tensor& out, bool channels_last, Activation activation) {
  if (channels_last) {
    launch_for_width<Elem, true, Producer::kRows>(x, weight, group_idx, bias, g, out, activation);
    return;
  }
  if constexpr (sizeof(Elem) == 2) {
    switch (nchw_producer(x, weight, g)) {
      case Producer::kWindows:
        launch_windows_for_width<Elem, -1>(x, weight, group_idx, bias, g, out, activation);
        return;
      case Producer::kStagedWindows:
        launch_windows_for_width<Elem, 0>(x, weight, group_idx, bias, g, out, activation);
        return;
      case Producer::kSplitWindows:
        launch_windows_for_width<Elem, 2>(x, weight, group_idx, bias, g, out, activation);
        return;
      case Producer::kPersistentWindows:
        // Its register epilogue's contract, else the one-tile-per-CTA window kernel.
        if (windows::register_epilogue_applies(g.out_pixels(), out.data_ptr()))
          launch_windows_for_width<Elem, kPersistent>(x, weight, group_idx, bias, g, out,
                                                      activation);
        else
          launch_windows_for_width<Elem, -1>(x, weight, group_idx, bias, g, out, activation);
        return;
      case Producer::kTallWindows:
        // The same epilogue contract and no activation (PersistentWindowKernel), else the
        // persistent kernel of 128-pixel tiles, else the one-tile-per-CTA window kernel.
        if (!windows::register_epilogue_applies(g.out_pixels(), out.data_ptr()))
          launch_windows_for_width<Elem, -1>(x, weight, group_idx, bias, g, out, activation);
        else if (activation == Activation::kNone)
          launch_tall_windows<Elem>(x, weight, group_idx, bias, g, out, activation);
        else
          launch_windows_for_width<Elem, kPersistent>(x, weight, group_idx, bias, g, out,
                                                      activation);
        return;
      case Producer::kLines:
        launch_for_width<Elem, false, Producer::kLines>(x, weight, group_idx, bias, g, out,
                                                        activation);
        return;
      case Producer::kAsyncLines:
        launch_for_width<Elem, false, Producer::kAsyncLines>(x, weight, group_idx, bias, g, out,
                                                             activation);
        return;
      case Producer::kRuns:
        launch_for_width<Elem, false, Producer::kRuns>(x, weight, group_idx, bias, g, out,
                                                       activation);
        return;
      case Producer::kRunPairs:  // 256-wide tiles only (run_pairs_apply)
        launch<Elem, 256, false, Producer::kRunPairs>(x, weight, group_idx, bias, g, out,
                                                      activation);
        return;
      case Producer::kRows:
        break;
    }
  }
  launch_for_width<Elem, false, Producer::kRows>(x, weight, group_idx, bias, g, out, activation);
}

}  // namespace detail

// The launcher of one element type: picks the tile width, launches on the current stream;
// the epilogue adds the bias and applies the activation.
template <typename Elem>
void launch_implicit_conv(const at::Tensor& x, const at::Tensor& weight,
                          const at::Tensor& group_idx, const std::optional<at::Tensor>& bias,
                          const ConvGeometry& geometry, at::Tensor& out, bool channels_last,
                          Activation activation) {
  detail::launch_for_layout<Elem>(x, weight, group_idx, bias, geometry, out, channels_last,
                                  activation);
}

}  // namespace gwprune::cuda::implicit
