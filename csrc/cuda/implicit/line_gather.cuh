// The producer for NCHW 16-bit inputs of stride-1 convs whose output rows are as wide
// as the input rows (OW == W: the run gather's geometry, run_gather.cuh), through the
// copy engine. It fills the same MN-major A tile (mma_consumer.cuh) with one TMA copy
// per 128-byte line, so the producer's threads start copies instead of moving data
// (the run gather's ~900 instructions per warp and stage kept the tensor cores
// waiting, bench/NOTES.md change 19).
//
// Why one copy per line: under these conditions the values of kept group (c, i, j) for
// 64 consecutive output pixels q .. q + 63 of image n are the 64 consecutive elements
// of x from
//   n * stride_n + c * stride_c + q - pad_h * W - pad_w + i * dil_h * W + j * dil_w,
// one 128-byte line of an MN-major atom. x is one 1-D tensor map (its span from the data
// pointer) with boxes of 64 elements. The copy engine applies the 128-byte swizzle from
// the shared-memory address bits, so a box written to a line of an atom lands exactly
// where the run gather's swizzled stores put it.
//
// The copy engine starts a box only at a 16-byte aligned element, so every line start
// above must be a multiple of 8 (line_gather_applies): 1x1 convs on images of a multiple
// of 8 pixels, k x 1 kernels on rows of a multiple of 8. 3x3 convs, whose taps shift
// by one element, stay with the run gather.
//
// What a copy cannot do is the conv's zero padding: a line whose tap reaches past the
// image's left or right edge wraps into the next input row, one past its top or bottom
// edge into the next channel or image. So once a stage's copies have landed, the thread
// that started a line zeroes that line's padded elements. Which elements those are
// depends only on the tap and the tile's pixels: a [half][tap] table of 64-bit masks is
// built once per tile (one ballot per tap and warp). Elements before x's first or past
// its last element are zeros already (the copy's bounds); padding columns of the packed
// weight copy from a coordinate wholly before x.
//
// Tile rows are numbered per image in lines of 64 (row_pitch = OH * OW rounded up to
// 64, line_row_pitch), so no line spans two images; rows past an image's pixels compute
// values the epilogue never stores.
//
// Work split, per stage: producer thread t starts the line of kept group t % 64 for
// pixel half t / 64 (thread 0 also the weight tile's copy, and it arms the stage's
// `loaded` barrier with the whole stage's bytes), then zeroes the padding of its line two
// stages back and arrives on that stage's `full` barrier. Copies of two stages are in
// flight while a third is patched.
//
// ByThreads (the async-lines producer): the lines are copied by the producer threads with
// 16-byte cp.async instead of one TMA box each, since the copy engine takes ~59 cycles a box
// whatever its size (bench/NOTES.md change 23): 128 lines a stage are ~7,500 cycles of it
// against the stage's ~1,024 of tensor work. Eight lanes copy one line (128 contiguous
// bytes), each thread arrives on `loaded` once its copies have landed (the barrier counts
// the 128 threads besides thread 0), and the chunks past x's span read as zeros.
#pragma once

#include <cstdint>

#include "gather_mainloop.cuh"
#include "sm90_primitives.cuh"

namespace gwprune::cuda::implicit {

constexpr int kLinePixels = 64;  // output pixels of one 128-byte line (16-bit values)
// [half][tap][word]: bit e of word w marks pixel 32 w + e of the half as padding for the tap.
constexpr int kPaddingTableBytes = 2 * 64 * 2 * sizeof(uint32_t);

// Tile rows per image of the line gather: the output pixels rounded up to 64.
inline int64_t line_row_pitch(int64_t out_pixels) {
  return (out_pixels + kLinePixels - 1) / kLinePixels * kLinePixels;
}

#ifdef GWPRUNE_SM90A_DEVICE

template <int Stages, int BTileBytes, bool ByThreads = false>
struct LineGather {
  static constexpr int kATileBytes = kTileRows * kRowBytes;
  static constexpr int kBK = 64;  // kept groups per stage, one per producer thread and half
  static constexpr int kLag = 2;  // stages between starting a line and handing it over
  static constexpr int kNoTap = 64;
  static_assert(kProducerThreads == 2 * kBK, "one producer thread per line of a stage");
  // The producer waits for stage kt - Stages to be consumed before it starts stage kt; the
  // consumers release a stage after the next one is handed over, at kt - Stages + 1 + kLag.
  static_assert(kLag <= Stages - 2, "the producer would wait on a stage it has not handed over");

  const ConvProblem& p;
  const void* x_map;
  const void* weight_map;
  uint8_t* a_stages;
  uint8_t* b_stages;
  uint64_t* loaded;  // per stage, 1 arrival + the stage's bytes
  uint64_t* full;    // per stage, one arrival per producer thread (after the patching)
  uint64_t* empty;
  uint32_t* padding;  // kPaddingTableBytes of shared memory
  int first_row, first_col, thread;

  // Where the line of kept group g (of the stage) and pixel half h starts in a stage's
  // MN-major tile: row g % 8 of atom 8 h + g / 8.
  __device__ __forceinline__ static uint32_t line_offset_of(int group, int half) {
    return (half * 8 + group / 8) * 1024 + (group % 8) * 128;
  }

  // ByThreads: the warp's 32 lines of one stage (each lane's `coordinate`), eight lanes per
  // line so that each cp.async instruction reads four whole 128-byte lines. Chunks before x
  // or past its span (padding columns, rows past the last image) are zero-filled.
  __device__ __forceinline__ void copy_lines(uint32_t a_stage, int coordinate) const {
    const int lane = thread % 32, chunk = lane % 8;
    const auto* x = static_cast<const uint8_t*>(p.x);
#pragma unroll
    for (int round = 0; round < 8; ++round) {
      const int source_lane = 4 * round + lane / 8;
      const int line_start = __shfl_sync(0xffffffffu, coordinate, source_lane);
      const int line_thread = thread - lane + source_lane;
      const int group = line_thread % kBK, half = line_thread / kBK;
      // The 128-byte swizzle: chunk c of row r of an atom sits at 16-byte column c ^ r.
      const uint32_t destination =
          a_stage + line_offset_of(group, half) + (((chunk ^ group) & 7) << 4);
      const int first = line_start + 8 * chunk;
      const int left = p.x_span - first;
      const int elements = first < 0 ? 0 : (left > 8 ? 8 : (left > 0 ? left : 0));
      copy_async_16(destination, x + 2 * static_cast<int64_t>(elements > 0 ? first : 0),
                    2 * elements);
    }
  }

  // Builds the padding table of the tile: thread t is pixel t % 64 of half t / 64.
  __device__ __forceinline__ void build_padding_table() const {
    const int row = first_row + thread;
    uint64_t valid = ~uint64_t{0};  // rows past the images: nothing to zero
    if (row < p.rows) {
      const int n = row / p.row_pitch;
      const int pixel = row - n * p.row_pitch;
      if (pixel < p.out_pixels) {
        const int oh = pixel / p.out_w;
        const int ow = pixel - oh * p.out_w;
        uint64_t columns = 0;
        valid = 0;
        for (int j = 0; j < p.kernel_w; ++j) {
          const int iw = ow - p.pad_w + j * p.dilation_w;
          if (iw >= 0 && iw < p.width) columns |= uint64_t{1} << j;
        }
        for (int i = 0; i < p.kernel_h; ++i) {
          const int ih = oh - p.pad_h + i * p.dilation_h;
          if (ih >= 0 && ih < p.height) valid |= columns << (i * p.kernel_w);
        }
      }
    }
    const int half = thread / 64, word = (thread / 32) % 2;
    for (int tap = 0; tap < p.taps; ++tap) {
      const uint32_t padded = __ballot_sync(0xffffffffu, ((valid >> tap) & 1) == 0);
      if (thread % 32 == 0) padding[(half * 64 + tap) * 2 + word] = padded;
    }
    named_barrier_sync(1, kProducerThreads);
  }

  __device__ __forceinline__ void run() const {
    build_padding_table();
    const int group_in_stage = thread % kBK, half = thread / kBK;
    const int line_row = first_row + half * kLinePixels;
    const int line_n = line_row / p.row_pitch;
    const int32_t line_base =
        line_n * p.x_stride_n + (line_row - line_n * p.row_pitch) - p.pad_h * p.width - p.pad_w;
    const uint32_t line_offset = line_offset_of(group_in_stage, half);
    const uint32_t swizzle_row = group_in_stage % 8;
    const uint32_t a_base = smem_address(a_stages);

    auto fetch = [&](int kt) { return fetch_group(p, kt * kBK + group_in_stage); };
    int32_t ring[4] = {fetch(0), fetch(1), fetch(2), fetch(3)};

    // Starts stage kt's copies; returns the tap of this thread's line (kNoTap: a padding
    // column, copied from before x as zeros).
    auto start = [&](int kt) {
      const int stage = kt % Stages;
      if (kt >= Stages) mbarrier_wait(&empty[stage], ((kt / Stages) - 1) & 1);
      if (thread == 0) {
        mbarrier_expect_tx(&loaded[stage], (ByThreads ? 0 : kATileBytes) + BTileBytes);
        mbarrier_arrive(&loaded[stage]);
        tma_load_2d(b_stages + stage * BTileBytes, weight_map, &loaded[stage], kt * kBK, first_col);
      }
      const GroupColumn column = decode_group(p, ring[0]);
      ring[0] = ring[1];
      ring[1] = ring[2];
      ring[2] = ring[3];
      ring[3] = fetch(kt + 4);
      const bool kept = column.tap < kNoTap;
      const int coordinate = kept ? line_base + column.offset : -2 * kLinePixels;
      if constexpr (ByThreads) {
        copy_lines(a_base + stage * kATileBytes, coordinate);
        mbarrier_arrive_when_copied(&loaded[stage]);
      } else {
        tma_load_1d(a_base + stage * kATileBytes + line_offset, x_map, &loaded[stage], coordinate);
      }
      return kept ? column.tap : kNoTap;
    };

    // Waits for stage kt's copies, zeroes this thread's padded elements, hands it over.
    auto hand_over = [&](int kt, int tap) {
      const int stage = kt % Stages;
      mbarrier_wait(&loaded[stage], (kt / Stages) & 1);
      if (tap != kNoTap) {
        const uint32_t low = padding[(half * 64 + tap) * 2];
        const uint32_t high = padding[(half * 64 + tap) * 2 + 1];
        if ((low | high) != 0) {
          const uint32_t line = a_base + stage * kATileBytes + line_offset;
#pragma unroll
          for (int chunk = 0; chunk < 8; ++chunk) {
            uint32_t bits = ((chunk < 4 ? low : high) >> (8 * (chunk % 4))) & 0xffu;
            if (bits == 0) continue;
            const uint32_t chunk_address = line + (((chunk ^ swizzle_row) & 7) << 4);
            if (bits == 0xffu) {
              store_shared(chunk_address, make_uint4(0, 0, 0, 0));
              continue;
            }
            while (bits != 0) {
              const int e = __ffs(bits) - 1;
              store_shared(chunk_address + 2 * e, uint16_t{0});
              bits &= bits - 1;
            }
          }
          if constexpr (!ByThreads) fence_proxy_async_shared();
        }
      }
      // The cp.async copies wrote through the generic proxy too; wgmma reads the async one.
      if constexpr (ByThreads) fence_proxy_async_shared();
      mbarrier_arrive(&full[stage]);
    };

    int tap_older = kNoTap, tap_newer = kNoTap;  // taps of stages kt - 2 and kt - 1
#pragma unroll 1
    for (int kt = 0; kt < p.k_tiles + kLag; ++kt) {
      const int tap = kt < p.k_tiles ? start(kt) : kNoTap;
      if (kt >= kLag) hand_over(kt - kLag, tap_older);
      tap_older = tap_newer;
      tap_newer = tap;
    }
  }
};

#endif  // GWPRUNE_SM90A_DEVICE

}  // namespace gwprune::cuda::implicit
