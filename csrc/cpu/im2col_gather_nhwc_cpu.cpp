// Fused im2col + gather of the kept groups of a channels_last input on the CPU
// (contract: gather_cpu.h): per output pixel and tap run, the run's channels
// of one input pixel, or zeros where the tap falls in the padding. Channels of
// a run come through AVX-512 compress (a vector of channels per instruction)
// when the CPU has it, else one element at a time.
#include <immintrin.h>

#include "element_bits.h"
#include "gather_cpu.h"

namespace gwprune::cpu {
namespace {

// Runtime dispatch: the extension is compiled for baseline x86-64, the
// AVX-512 functions carry their own target attribute.
bool cpu_has_compress(int64_t element_size) {
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool f = __builtin_cpu_supports("avx512f");
  static const bool vbmi2 =
      f && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vbmi2");
  return element_size == 2 ? vbmi2 : f;
#else
  (void)element_size;
  return false;
#endif
}

#if defined(__x86_64__) && defined(__GNUC__)
// Each block: load the kept lanes, pack them to the front, store that many.
__attribute__((target("avx512f"))) void compress_blocks(const uint32_t* src,
                                                        const ChannelBlock* block,
                                                        const ChannelBlock* end, uint32_t* dst) {
  for (; block != end; ++block) {
    const __mmask16 kept = static_cast<__mmask16>(block->kept);
    const __m512i v = _mm512_maskz_loadu_epi32(kept, src + block->first_channel);
    const int count = __builtin_popcount(kept);
    _mm512_mask_storeu_epi32(dst, static_cast<__mmask16>((1u << count) - 1),
                             _mm512_maskz_compress_epi32(kept, v));
    dst += count;
  }
}

__attribute__((target("avx512f"))) void compress_blocks(const uint64_t* src,
                                                        const ChannelBlock* block,
                                                        const ChannelBlock* end, uint64_t* dst) {
  for (; block != end; ++block) {
    const __mmask8 kept = static_cast<__mmask8>(block->kept);
    const __m512i v = _mm512_maskz_loadu_epi64(kept, src + block->first_channel);
    const int count = __builtin_popcount(kept);
    _mm512_mask_storeu_epi64(dst, static_cast<__mmask8>((1u << count) - 1),
                             _mm512_maskz_compress_epi64(kept, v));
    dst += count;
  }
}

__attribute__((target("avx512f,avx512bw,avx512vbmi2"))) void compress_blocks(
    const uint16_t* src, const ChannelBlock* block, const ChannelBlock* end, uint16_t* dst) {
  for (; block != end; ++block) {
    const __mmask32 kept = static_cast<__mmask32>(block->kept);
    const __m512i v = _mm512_maskz_loadu_epi16(kept, src + block->first_channel);
    const int count = __builtin_popcount(kept);
    const __mmask32 first = static_cast<__mmask32>((uint64_t{1} << count) - 1);
    _mm512_mask_storeu_epi16(dst, first, _mm512_maskz_compress_epi16(kept, v));
    dst += count;
  }
}
#else
template <typename T>
void compress_blocks(const T*, const ChannelBlock*, const ChannelBlock*, T*) {}
#endif

template <typename T>
GWPRUNE_NO_LIBCALLS void gather_nhwc(const T* x, const TapRuns& taps, int64_t kept, T* cols,
                                     const ConvGeometry& g, int64_t p0, int64_t row_begin,
                                     int64_t row_end) {
  const int64_t pixels = g.out_pixels();
  const int64_t* channels = taps.channels.data();
  const ChannelBlock* blocks = taps.blocks.data();
  for (int64_t q = row_begin; q < row_end; ++q) {
    const int64_t p = p0 + q;
    const int64_t n = p / pixels, ho = p % pixels / g.out_w, wo = p % g.out_w;
    const T* image = x + n * g.height * g.width * g.channels;
    T* dst = cols + q * kept;
    for (const TapRun& run : taps.runs) {
      const int64_t hi = ho * g.stride_h + run.row_offset;
      const int64_t wi = wo * g.stride_w + run.col_offset;
      if (run.tap < 0 || hi < 0 || hi >= g.height || wi < 0 || wi >= g.width) {
        zero_run(dst + run.begin, run.end - run.begin);
        continue;
      }
      const T* src = image + (hi * g.width + wi) * g.channels;
      if (taps.use_blocks && run.block_end > run.block_begin) {
        compress_blocks(src, blocks + run.block_begin, blocks + run.block_end, dst + run.begin);
      } else {
        for (int64_t k = run.begin; k < run.end; ++k) dst[k] = src[channels[k]];
      }
    }
  }
}

// Cuts the run's entries into ChannelBlocks of `lanes` channels, or leaves it
// without blocks when its channels do not strictly ascend.
void plan_blocks(TapRun& run, const std::vector<int64_t>& channels, int64_t lanes,
                 std::vector<ChannelBlock>& blocks) {
  const size_t first = blocks.size();
  for (int64_t k = run.begin; k < run.end; ++k) {
    if (k > run.begin && channels[k] <= channels[k - 1]) {
      blocks.resize(first);
      return;
    }
    const int64_t base = channels[k] / lanes * lanes;
    if (blocks.size() == first || blocks.back().first_channel != base) blocks.push_back({base, 0});
    blocks.back().kept |= uint64_t{1} << (channels[k] - base);
  }
  run.block_begin = static_cast<int64_t>(first);
  run.block_end = static_cast<int64_t>(blocks.size());
}

}  // namespace

TapRuns plan_tap_runs(const at::Tensor& group_idx, const ConvGeometry& g, int64_t element_size) {
  const int32_t* index = group_idx.const_data_ptr<int32_t>();
  const int64_t kept = group_idx.numel();
  const int64_t taps = g.kernel_h * g.kernel_w;
  TapRuns plan;
  plan.channels.resize(kept);
  for (int64_t k = 0; k < kept; ++k) {
    const int64_t group = index[k];
    const int64_t tap = group < 0 ? -1 : group % taps;
    plan.channels[k] = group < 0 ? 0 : group / taps;
    if (!plan.runs.empty() && plan.runs.back().tap == tap) {
      plan.runs.back().end = k + 1;
      continue;
    }
    const int64_t i = tap < 0 ? 0 : tap / g.kernel_w, j = tap < 0 ? 0 : tap % g.kernel_w;
    plan.runs.push_back(
        {k, k + 1, tap, i * g.dilation_h - g.pad_h, j * g.dilation_w - g.pad_w, 0, 0});
  }
  plan.use_blocks = cpu_has_compress(element_size);
  if (plan.use_blocks) {
    const int64_t lanes = 64 / element_size;
    for (TapRun& run : plan.runs) {
      if (run.tap >= 0) plan_blocks(run, plan.channels, lanes, plan.blocks);
    }
  }
  return plan;
}

void im2col_gather_nhwc(const at::Tensor& x, const TapRuns& taps, int64_t kept, void* cols,
                        const ConvGeometry& g, int64_t p0, int64_t row_begin, int64_t row_end) {
  dispatch_element_bits(x.element_size(), [&](auto tag) {
    using T = decltype(tag);
    gather_nhwc(static_cast<const T*>(x.const_data_ptr()), taps, kept, static_cast<T*>(cols), g, p0,
                row_begin, row_end);
  });
}

}  // namespace gwprune::cpu
