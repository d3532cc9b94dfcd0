// Small device helpers shared by the gather kernels.
#pragma once

#include <ATen/cuda/CUDAContext.h>

#include <algorithm>
#include <cstdint>

namespace gwprune::cuda {

constexpr int kWarpSize = 32;
constexpr int kThreadsPerBlock = 256;
constexpr int kWarpsPerBlock = kThreadsPerBlock / kWarpSize;

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
