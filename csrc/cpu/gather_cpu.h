// CPU gathers: fused im2col + gather of the kept groups of a conv, and the
// kept-feature gather of a linear, each writing one chunk of the compacted
// GEMM operand. They are pure copies (no arithmetic), so they move the
// element's bits: one instantiation per element size serves fp64, fp32, fp16
// and bf16, and the result is exact whatever the thread count.
//
// Layout contract (every buffer row-major and dense; every element written):
//
//   NCHW conv   x [N, C, H, W] contiguous.
//               cols [K'][count]: row k holds group_idx[k] = (c, i, j) at the
//               output pixels p0 .. p0+count-1 of image n (pixels of one image
//               numbered ho * Wo + wo), so W [Cout, K'] @ cols is the
//               [Cout, count] column slice of that image's NCHW output.
//   NHWC conv   x channels_last (memory [N, H, W, C]).
//               cols [count][K']: row q holds every kept group at pixel
//               p0 + q, pixels numbered across the batch (n * Ho*Wo + ho * Wo
//               + wo), so cols @ W^T is rows p0 .. p0+count-1 of the
//               [N*Ho*Wo, Cout] channels_last output.
//   linear      x2d [rows, in] with unit stride along features (any row stride).
//               xg [count][K']: xg[q][k] = x2d[r0 + q][feature_idx[k]].
//
// An index of -1 (the packing's padding) and a tap that falls in the conv's
// zero padding gather exact zeros. Any group order is correct for either
// layout; the NHWC gather is fastest when consecutive entries share a tap (the
// (i, j, c) order of channels_last packs: one bounds check per run).
// Each gather fills rows [row_begin, row_end) of its chunk only (rows: k for
// NCHW, q otherwise), so a caller can split one chunk across threads.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

#include "../conv_geometry.h"

namespace gwprune::cpu {

// Consecutive entries of group_idx that share a tap, decoded once per call so
// the NHWC gather does no index arithmetic per element. Where a run's channels
// ascend (as in every pack), it is also cut into blocks of one vector's worth
// of channels with a bit mask of the kept ones: with AVX-512 one masked load,
// compress and masked store gathers a whole block (bench/NOTES.md, change 17).
struct TapRun {
  int64_t begin, end;              // entries [begin, end)
  int64_t tap;                     // i * kernel_w + j; -1 for entries of index -1 (zeros)
  int64_t row_offset;              // input row of output row 0: i * dilation_h - pad_h
  int64_t col_offset;              // j * dilation_w - pad_w
  int64_t block_begin, block_end;  // its ChannelBlocks; empty when channels do not ascend
};

struct ChannelBlock {
  int64_t first_channel;  // a multiple of the vector's lane count
  uint64_t kept;          // bit l: channel first_channel + l is the run's next entry
};

struct TapRuns {
  std::vector<TapRun> runs;
  std::vector<int64_t> channels;  // channel of each entry (0 for padding)
  std::vector<ChannelBlock> blocks;
  bool use_blocks;  // the CPU has the compress instructions for this element size
};

// Index values of a packed weight built by hand are trusted by the Python checks
// (reading them would sync a GPU); on the CPU reading them is free, so an entry
// outside [0, limit) other than -1 raises a ValueError instead of a read out of
// bounds. `what` names the index in the message.
void check_index_range(const at::Tensor& index, int64_t limit, const char* what);

TapRuns plan_tap_runs(const at::Tensor& group_idx, const ConvGeometry& g, int64_t element_size);

void im2col_gather_nchw(const at::Tensor& x, const at::Tensor& group_idx, void* cols,
                        const ConvGeometry& g, int64_t n, int64_t p0, int64_t count,
                        int64_t row_begin, int64_t row_end);

void im2col_gather_nhwc(const at::Tensor& x, const TapRuns& taps, int64_t kept, void* cols,
                        const ConvGeometry& g, int64_t p0, int64_t row_begin, int64_t row_end);

void gather_features(const at::Tensor& x2d, const std::vector<int64_t>& features, void* xg,
                     int64_t r0, int64_t row_begin, int64_t row_end);

}  // namespace gwprune::cpu
