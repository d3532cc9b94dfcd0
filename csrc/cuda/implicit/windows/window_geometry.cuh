// The window path of the implicit conv (NCHW, 16-bit): contract and tile geometry.
//
// Instead of gathering each kept group's 128 pixels from x (one global load per element
// or vector, latency bound: bench/NOTES.md changes 18-20), a CTA copies, for each input
// channel that has kept groups, the input rows its 128-pixel tile reads (its *window*)
// into shared memory with 1-D TMA boxes, once per channel. Every kept group (c, i, j) of
// that channel is then a shifted view of the same window, and the consumer warpgroups
// read their wgmma A fragments straight from it into registers (register_consumer.cuh):
// no A tile is written at all, and x is read from L2 once per channel, not once per group.
//
// Contract (window_path_applies checks it; the other producers take what it refuses):
// - x is NCHW with contiguous rows (stride(3) == 1, stride(2) == W), 16-bit, 16-byte
//   aligned; any N and C strides, stride, dilation and padding;
// - kh * kw <= 29 (a pixel's valid taps are bits of a 32-bit mask whose top 3 bits a
//   table entry uses for the channel's residue);
// - a 128-pixel tile touches at most kMaxSegments images (out_pixels >= 43; a tall tile's
//   256 pixels: out_pixels >= 86);
// - a channel's window fits a ring of more than 64 slots next to the weight stages.
//
// A window slot holds one segment per image the tile touches: the rows [first_row, first_row
// + rows) of channel c of that image, contiguous in x, copied in boxes of `box` elements
// from the 16-byte aligned element at or before the segment's first one, moved back by
// 8 * (q & 3) elements for the slot's channel ordinal q, so that the four channels a warp
// reads at once start in different banks. Elements before or past x read as zeros.
#pragma once

#include <cstdint>

#include "../gather_mainloop.cuh"

namespace gwprune::cuda::implicit::windows {

constexpr int kMaxSegments = 4;
// An A tile in shared memory (the staged and split kernels): 128 rows of 64 16-bit groups,
// K-major, 128-byte swizzle; a consumer warpgroup's 64 rows are its second half's offset.
constexpr int kATileBytes = kTileRows * 128;
constexpr int kMaxTaps = 29;
// A segment's copy starts up to 7 elements before it (16-byte alignment) and up to 24
// more for the bank skew.
constexpr int kSegmentSlack = 7 + 24;
// A stage starts at most 64 channels; one more slot lets its copies go out while the
// previous stage's last channel is still held.
constexpr int kMinRingSlots = 65;
constexpr int kMaxRingSlots = 128;
// A CTA whose tile touches fewer images than the launch's worst case has smaller slots, so
// the same ring bytes hold more of them (tile_ring), up to this many.
constexpr int kMaxTileRingSlots = 256;

struct TileWindows {
  int first_image;
  int segments;
  int first_row[kMaxSegments];  // first input row of each image's segment
  int rows[kMaxSegments];       // input rows (0: every tap of the segment is padding)
  int offset[kMaxSegments];     // element offset of the segment in a slot
  int boxes[kMaxSegments];
};

__host__ __device__ inline int boxes_for_rows(int rows, int width, int box) {
  return rows > 0 ? (rows * width + kSegmentSlack + box - 1) / box : 0;
}

// The images and input rows that tile rows [first, first + tile_rows) read (tile_rows: 128, or
// a tall tile's 256, tall_tiles.cuh).
__host__ __device__ inline TileWindows tile_windows(const ConvProblem& p, int first, int box,
                                                    int tile_rows = kTileRows) {
  TileWindows t{};
  const int last = (first + tile_rows < p.rows ? first + tile_rows : p.rows) - 1;
  t.first_image = first / p.out_pixels;
  const int last_image = last / p.out_pixels;
  t.segments = last_image - t.first_image + 1;
  int offset = 0;
  for (int k = 0; k < kMaxSegments; ++k) {
    if (k >= t.segments) break;
    const int n = t.first_image + k;
    const int first_pixel = k == 0 ? first - n * p.out_pixels : 0;
    const int last_pixel = n == last_image ? last - n * p.out_pixels : p.out_pixels - 1;
    const int top = (first_pixel / p.out_w) * p.stride_h - p.pad_h;
    const int bottom =
        (last_pixel / p.out_w) * p.stride_h - p.pad_h + (p.kernel_h - 1) * p.dilation_h;
    const int row_begin = top > 0 ? top : 0;
    const int row_end = bottom < p.height - 1 ? bottom : p.height - 1;
    t.first_row[k] = row_begin;
    t.rows[k] = row_end >= row_begin ? row_end - row_begin + 1 : 0;
    t.offset[k] = offset;
    t.boxes[k] = boxes_for_rows(t.rows[k], p.width, box);
    offset += t.boxes[k] * box;
  }
  return t;
}

// Launch-wide sizes: the box, the slot (elements, a bound over every tile), how many
// images a tile can touch, and the ring's size (window_kernel.cuh's choose_ring).
struct WindowLaunch {
  int box = 0;
  int slot_elements = 0;
  int max_segments = 0;
  FastDivision ring;  // R, the ring's slots
};

// One CTA's ring: its tile's own slot size (the boxes of the segments it touches) and as
// many slots as the launch's ring bytes hold at that size. Most tiles touch one image, so
// their rings hold about twice the launch's worst case: at keep .25 a stage starts ~28
// channels, and a ring of ~95 slots held only 3.4 stages of them (bench/NOTES.md change 23).
struct TileRing {
  FastDivision slots;
  int slot_elements;
};

__host__ __device__ inline TileRing tile_ring(const TileWindows& t, const WindowLaunch& w) {
  int elements = 0;
  for (int k = 0; k < kMaxSegments; ++k)
    if (k < t.segments) elements += t.boxes[k] * w.box;
  if (elements < w.box) elements = w.box;  // a tile whose every tap is padding copies nothing
  int slots = w.slot_elements * static_cast<int>(w.ring.divisor) / elements;
  if (slots > kMaxTileRingSlots) slots = kMaxTileRingSlots;
  return {FastDivision::of(slots), elements};
}

inline WindowLaunch window_plan(const ConvProblem& p, int tile_rows = kTileRows) {
  WindowLaunch plan;
  // Output rows that a tile's consecutive pixels of one image span, then their input rows.
  int out_rows = (tile_rows - 1) / p.out_w + 2;
  if (out_rows > p.out_h) out_rows = p.out_h;
  int in_rows = (out_rows - 1) * p.stride_h + (p.kernel_h - 1) * p.dilation_h + 1;
  if (in_rows > p.height) in_rows = p.height;
  const int images = p.rows / p.out_pixels;
  plan.max_segments = (tile_rows - 1) / p.out_pixels + 2;
  if (plan.max_segments > images) plan.max_segments = images;
  const int span = in_rows * p.width + kSegmentSlack;
  // TMA writes shared memory at 128-byte aligned boxes: multiples of 64 elements.
  plan.box = span >= 256 ? 256 : (span + 63) / 64 * 64;
  plan.slot_elements = plan.max_segments * boxes_for_rows(in_rows, p.width, plan.box) * plan.box;
  return plan;
}

}  // namespace gwprune::cuda::implicit::windows
