// Small device helpers shared by the gather kernels.
#pragma once

#include <ATen/cuda/CUDAContext.h>

#include <algorithm>
#include <cstdint>
#include <limits>

namespace gwprune::cuda {

constexpr int kWarpSize = 32;
constexpr int kThreadsPerBlock = 256;
constexpr int kWarpsPerBlock = kThreadsPerBlock / kWarpSize;
constexpr int64_t kMaxGridY = 65535;  // kernels loop over blockIdx.y beyond it
// Independent loads a lane of a lane-per-element gather issues before storing
// them: memory-level parallelism for latency-bound gathers.
constexpr int kGatherUnroll = 4;

// VEC consecutive elements moved as one aligned access (16 bytes at most).
template <typename scalar_t, int VEC>
struct alignas(sizeof(scalar_t) * VEC) AlignedVector {
  scalar_t val[VEC];
};

template <typename scalar_t, int VEC>
__device__ __forceinline__ void store_vector(scalar_t* dst, const scalar_t (&vals)[VEC]) {
  AlignedVector<scalar_t, VEC> vec;
#pragma unroll
  for (int v = 0; v < VEC; ++v) vec.val[v] = vals[v];
  *reinterpret_cast<AlignedVector<scalar_t, VEC>*>(dst) = vec;
}

// Widest vector (in elements, at most 16 bytes) that divides `row_length` and
// keeps every row start aligned.
template <typename scalar_t>
int pick_vector_width(int64_t row_length) {
  for (int vec = 16 / static_cast<int>(sizeof(scalar_t)); vec > 1; vec /= 2) {
    if (row_length % vec == 0) return vec;
  }
  return 1;
}

// Grid for one warp per row with a grid-stride loop: enough blocks to fill the
// GPU several times over, never more than there are rows.
inline int64_t warp_per_row_blocks(int64_t rows) {
  const int64_t wanted = (rows + kWarpsPerBlock - 1) / kWarpsPerBlock;
  const int64_t cap =
      static_cast<int64_t>(at::cuda::getCurrentDeviceProperties()->multiProcessorCount) * 32;
  return std::max<int64_t>(1, std::min(wanted, cap));
}

// How a gather cuts its rows into slices along their length, one slice per
// blockIdx.y. One warp walking a whole row is right when there are rows enough
// to fill the GPU; when there are few (one image of a small batch, a 64-row
// linear, the first conv of a network with 3 input channels) the few warps
// would each walk a long row one dependent memory round trip after another
// while most SMs idle, so rows are cut until about 32 warps per SM are busy.
struct RowSlices {
  int64_t length;  // elements per slice, a multiple of `granule`; the last one may be shorter
  int64_t count;   // slices per row (gridDim.y)
};

inline RowSlices plan_row_slices(int64_t rows, int64_t row_length, int64_t granule,
                                 int64_t max_length = std::numeric_limits<int64_t>::max()) {
  const int64_t wanted_warps =
      static_cast<int64_t>(at::cuda::getCurrentDeviceProperties()->multiProcessorCount) * 32;
  const int64_t granules = std::max<int64_t>(1, (row_length + granule - 1) / granule);
  const int64_t for_occupancy = (wanted_warps + rows - 1) / std::max<int64_t>(rows, 1);
  const int64_t for_length = (row_length + max_length - 1) / max_length;
  const int64_t slices = std::clamp<int64_t>(std::max(for_occupancy, for_length), 1, granules);
  const int64_t length = (granules + slices - 1) / slices * granule;
  return RowSlices{length, (row_length + length - 1) / length};
}

// Calls launch.template operator()<VEC>() with the widest vector width that
// divides row_length (see pick_vector_width).
template <typename scalar_t, typename Launch>
void dispatch_vector_width(int64_t row_length, Launch&& launch) {
  switch (pick_vector_width<scalar_t>(row_length)) {
    case 8:
      if constexpr (sizeof(scalar_t) <= 2) return launch.template operator()<8>();
      break;
    case 4:
      if constexpr (sizeof(scalar_t) <= 4) return launch.template operator()<4>();
      break;
    case 2:
      return launch.template operator()<2>();
    default:
      break;
  }
  launch.template operator()<1>();
}

}  // namespace gwprune::cuda
