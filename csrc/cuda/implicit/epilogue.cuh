// The epilogue of the implicit conv: a consumer warpgroup's 64 x BN fp32 accumulators
// (wgmma's fragment layout) plus the bias, then the activation, become the output in x's
// layout.
//
// Fragment layout of m64nN: thread t of the warpgroup holds rows r0 = 16 * (t / 32) +
// (t % 32) / 4 and r0 + 8; for each j < N / 8 the columns c = 8j + 2 (t % 4) and c + 1:
//   d[4j + 0] = (r0, c), d[4j + 1] = (r0, c + 1), d[4j + 2] = (r0 + 8, c), d[4j + 3] = (r0 + 8, c +
//   1).
// The tile goes through shared memory (the drained pipeline stages) so global stores
// are 16-byte vectors along Cout (channels_last) or vectors of up to 16 bytes of
// consecutive pixels (NCHW, nchw_run_pixels).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "gather_mainloop.cuh"

namespace gwprune::cuda::implicit {

__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_float(float v) { return v; }

template <typename Elem>
__device__ __forceinline__ Elem from_float(float v);
template <>
__device__ __forceinline__ __half from_float<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <>
__device__ __forceinline__ float from_float<float>(float v) {
  return v;
}

// The activations in fp32, as PyTorch defines them (F.relu, F.relu6 = hardtanh(v, 0, 6),
// F.silu, F.gelu and F.gelu(approximate="tanh")). relu and relu6 pass a NaN on, as PyTorch's
// do (fmaxf(NaN, 0) would be 0).
__device__ __forceinline__ float relu(float v) { return v < 0.f ? 0.f : v; }
__device__ __forceinline__ float relu6(float v) { return v < 0.f ? 0.f : (v > 6.f ? 6.f : v); }
__device__ __forceinline__ float gelu(float v) {
  return 0.5f * v * (1.f + erff(v * 0.70710678118654752f));  // erf(v / sqrt(2))
}
// v sigmoid(a). silu is v sigmoid(v), computed as PyTorch does (v / (1 + exp(-v))); the tanh
// GELU, 0.5 v (1 + tanh z) with z = sqrt(2 / pi) (v + 0.044715 v^3), is v sigmoid(2z). The two
// share this code, as each activation's code is repeated for every accumulator, and the
// sigmoid form has no cancellation where tanh z nears -1.
__device__ __forceinline__ float times_sigmoid(float v, float a) { return v / (1.f + expf(-a)); }
__device__ __forceinline__ float gelu_tanh_sigmoid_argument(float v) {
  constexpr float kTwoBeta = 1.59576912160573071f;  // 2 sqrt(2 / pi)
  return kTwoBeta * (v + 0.044715f * v * v * v);
}

template <int N, typename Function>
__device__ __forceinline__ void activate_each(float (&acc)[N], Function activation) {
#pragma unroll
  for (int i = 0; i < N; ++i) acc[i] = activation(acc[i]);
}

// acc = activation(acc + bias), in fp32 and in place, before an epilogue rounds and stores the
// tile (fragment layout above: acc[4j + 2 half + h] is column 8j + 2 (lane % 4) + h). The
// activation is a kernel parameter, the same in every thread: one switch per tile, not per
// value, so each activation is one straight run of code. Activates = false leaves the switch
// out of the kernel (p.activation must then be kNone): the six unrolled variants had grown the
// persistent kernel from 3,448 to 11,264 instructions and cost 4-8 % with no activation
// (bench/NOTES.md change 27), so the default kernels come in both forms.
template <typename Elem, int BN, bool Activates = true>
__device__ __forceinline__ void add_bias_and_activate(const ConvProblem& p, float (&acc)[BN / 2],
                                                      int first_col, int lane) {
  const Elem* bias = static_cast<const Elem*>(p.bias);
#pragma unroll
  for (int j = 0; j < BN / 8; ++j) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int channel = first_col + 8 * j + 2 * (lane % 4) + h;
      const float b = (bias != nullptr && channel < p.out_channels) ? to_float(bias[channel]) : 0.f;
      acc[4 * j + h] += b;
      acc[4 * j + 2 + h] += b;
    }
  }
  if constexpr (!Activates) return;
  switch (p.activation) {
    case EpilogueActivation::kNone:
      break;
    case EpilogueActivation::kRelu:
      activate_each(acc, [](float v) { return relu(v); });
      break;
    case EpilogueActivation::kRelu6:
      activate_each(acc, [](float v) { return relu6(v); });
      break;
    case EpilogueActivation::kSilu:
    case EpilogueActivation::kGeluTanh: {
      const bool gelu_tanh = p.activation == EpilogueActivation::kGeluTanh;
      activate_each(acc, [gelu_tanh](float v) {
        return times_sigmoid(v, gelu_tanh ? gelu_tanh_sigmoid_argument(v) : v);
      });
      break;
    }
    case EpilogueActivation::kGelu:
      activate_each(acc, [](float v) { return gelu(v); });
      break;
  }
}

#ifdef GWPRUNE_SM90A_DEVICE

// The pixels of one NCHW store: the widest run (16 bytes at most) that divides both the
// image's pixels and the tile's rows per image and that the output's base is aligned to,
// so no run crosses an image and every run is aligned. Two-byte stores had been 14 % of
// the window kernel's stall samples (bench/NOTES.md change 22).
template <typename Elem>
__device__ __forceinline__ int nchw_run_pixels(const ConvProblem& p) {
  int run = 16 / static_cast<int>(sizeof(Elem));
  while (run > 1 && (p.out_pixels % run != 0 || p.row_pitch % run != 0 ||
                     reinterpret_cast<uintptr_t>(p.out) % (run * sizeof(Elem)) != 0))
    run /= 2;
  return run;
}

template <int Bytes>
struct StoreBits;
template <>
struct StoreBits<2> {
  using type = uint16_t;
};
template <>
struct StoreBits<4> {
  using type = uint32_t;
};
template <>
struct StoreBits<8> {
  using type = uint2;
};
template <>
struct StoreBits<16> {
  using type = uint4;
};

// Column c of the staged tile ([col][row], `Pitch` bytes per column) is output channel
// first_col + c; its 64 rows go out in runs of Run consecutive pixels, consecutive threads
// taking consecutive runs so a warp writes whole lines.
template <typename Elem, int BN, int Pitch, int Run>
__device__ __forceinline__ void store_nchw_runs_of(const ConvProblem& p, uint32_t staging,
                                                   int first_row, int first_col, int thread) {
  using Bits = typename StoreBits<Run * sizeof(Elem)>::type;
  constexpr int kRuns = 64 / Run;
  Elem* out = static_cast<Elem*>(p.out);
  for (int v = thread; v < kRuns * BN; v += 128) {
    const int c = v / kRuns;
    const int channel = first_col + c;
    if (channel >= p.out_channels) break;  // c only grows with v
    const int r = (v - c * kRuns) * Run;
    const int row = first_row + r;
    if (row >= p.rows) continue;
    const int n = row / p.row_pitch;
    const int pixel = row - n * p.row_pitch;
    if (pixel >= p.out_pixels) continue;  // the run gather's padding rows
    Elem* target =
        out + (static_cast<int64_t>(n) * p.out_channels + channel) * p.out_pixels + pixel;
    *reinterpret_cast<Bits*>(target) = load_shared<Bits>(staging + c * Pitch + r * sizeof(Elem));
  }
}

template <typename Elem, int BN, int Pitch>
__device__ __forceinline__ void store_nchw_runs(const ConvProblem& p, uint32_t staging,
                                                int first_row, int first_col, int thread) {
  const int run = nchw_run_pixels<Elem>(p);
  if constexpr (sizeof(Elem) == 2) {
    if (run == 8)
      return store_nchw_runs_of<Elem, BN, Pitch, 8>(p, staging, first_row, first_col, thread);
  }
  if (run == 4)
    return store_nchw_runs_of<Elem, BN, Pitch, 4>(p, staging, first_row, first_col, thread);
  if (run == 2)
    return store_nchw_runs_of<Elem, BN, Pitch, 2>(p, staging, first_row, first_col, thread);
  store_nchw_runs_of<Elem, BN, Pitch, 1>(p, staging, first_row, first_col, thread);
}

// Adds the bias to one warpgroup's tile and applies the activation (in acc, which it
// overwrites), then stages the tile in `staging` and stores it. `first_row` is the tile's first
// row (output pixels flat over images, row_pitch per image: rows past an image's
// pixels are the run gather's padding and are not stored), `first_col` its first output channel;
// `barrier_id` names this warpgroup's own barrier (128 threads). Activates as for
// add_bias_and_activate.
template <typename Elem, int BN, bool ChannelsLast, bool Activates = true>
__device__ __forceinline__ void store_tile(const ConvProblem& p, float (&acc)[BN / 2],
                                           uint8_t* staging, int first_row, int first_col,
                                           int thread, int barrier_id) {
  constexpr int kRows = 64;
  constexpr int kElem = sizeof(Elem);
  // channels_last stages [row][col], NCHW [col][row]; 16 bytes of padding per line
  // spread the fragment writes over all banks.
  constexpr int kPitch = ChannelsLast ? BN * kElem + 16 : kRows * kElem + 16;
  const uint32_t staging_address = smem_address(staging);
  const int warp = thread / 32, lane = thread % 32;
  const int r0 = warp * 16 + lane / 4;
  add_bias_and_activate<Elem, BN, Activates>(p, acc, first_col, lane);
#pragma unroll
  for (int j = 0; j < BN / 8; ++j) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int c = 8 * j + 2 * (lane % 4) + h;
#pragma unroll
      for (int half_row = 0; half_row < 2; ++half_row) {
        const int r = r0 + 8 * half_row;
        const Elem value = from_float<Elem>(acc[4 * j + 2 * half_row + h]);
        const int offset = ChannelsLast ? r * kPitch + c * kElem : c * kPitch + r * kElem;
        store_shared(staging_address + offset, value);
      }
    }
  }
  named_barrier_sync(barrier_id, 128);

  if constexpr (ChannelsLast) {
    // Row r of the tile is output pixel first_row + r: Cout contiguous values.
    constexpr int kVector = 16 / kElem;
    constexpr int kVectorsPerRow = BN / kVector;
    const bool aligned = (p.out_channels % kVector) == 0;
    Elem* out = static_cast<Elem*>(p.out);
    for (int v = thread; v < kRows * kVectorsPerRow; v += 128) {
      const int r = v / kVectorsPerRow;
      const int c = (v - r * kVectorsPerRow) * kVector;
      const int row = first_row + r;
      const int channel = first_col + c;
      if (row >= p.rows || channel >= p.out_channels) continue;
      const uint32_t source = staging_address + r * kPitch + c * kElem;
      Elem* target = out + static_cast<int64_t>(row) * p.out_channels + channel;
      if (aligned && channel + kVector <= p.out_channels) {
        *reinterpret_cast<uint4*>(target) = load_shared<uint4>(source);
      } else {
        for (int e = 0; e < kVector && channel + e < p.out_channels; ++e)
          target[e] = load_shared<Elem>(source + e * kElem);
      }
    }
  } else {
    store_nchw_runs<Elem, BN, kPitch>(p, staging_address, first_row, first_col, thread);
  }
}

#endif  // GWPRUNE_SM90A_DEVICE

}  // namespace gwprune::cuda::implicit
