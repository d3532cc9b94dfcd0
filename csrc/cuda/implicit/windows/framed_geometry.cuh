// Framed windows: the window kernel's second layout (the first is window_geometry.cuh's
// contiguous rows). Contract and tile geometry.
//
// A row window keeps x's rows back to back, so a pixel at the image's left or right edge
// would read the neighbouring row where the conv reads padding, and the consumer has to
// test every element against the pixel's tap mask (a predicate, a zero and a pack per
// element: ~75 instructions per K step, bench/NOTES.md change 21). A framed window gives
// every input row its own framed row of `pitch` elements: x's W elements at column `lead`,
// zeros around them, and zero framed rows above and below the image. Every tap of every
// pixel then reads a real element or a zero without a test: element (pixel, group) is the
// 2 bytes at base(pixel) + view(group).
//
// The zeros are written once per CTA (the ring is cleared at the start; a tile's framed
// rows that lie outside the image are the same for every channel), and the producer copies
// only x's own rows, W elements each, with cp.async in chunks of 16, 8 or 4 bytes: no copy
// reads outside x, and none needs x's rows to be 16-byte aligned as a TMA box would.
//
// Contract (framed_launch checks it; row windows take what it refuses):
// - x is NCHW with contiguous rows, 16-bit; W * 2, the N and C strides * 2 and x's address
//   are multiples of the chunk (4 bytes at least: W even);
// - a 128-pixel tile touches at most kMaxSegments images (out_pixels >= 43), and a
//   channel's rows are at most kMaxChannelChunks chunks;
// - a channel's framed window fits a ring of more than 64 slots next to the weight stages.
//
// A slot holds one framed segment per image the tile touches, `segment_elements` apart;
// framed row r of segment k is input row top[k] + r of image first_image + k. Slots are
// 16 elements (32 bytes) more than a multiple of 128 bytes apart, so the four channels a
// warp reads at once start in different banks.
#pragma once

#include <cstdint>

#include "../gather_mainloop.cuh"
#include "window_geometry.cuh"

namespace gwprune::cuda::implicit::windows {

// A channel's copies are at most 4 chunks per producer thread (256 chunks: e.g. two
// images' 13 rows of 14 elements, or 16 rows of 112).
constexpr int kMaxThreadChunks = 4;
constexpr int kMaxChannelChunks = 64 * kMaxThreadChunks;

// Launch-wide sizes (host: framed_plan).
struct FramedLaunch {
  int pitch = 0;        // elements per framed row
  int lead = 0;         // column of x's first element in a framed row
  int chunk_bytes = 0;  // cp.async size: 16, 8 or 4
  int row_chunks = 0;   // chunks per row of x: W * 2 / chunk_bytes
  FastDivision by_row_chunks;
  int segment_rows = 0;  // framed rows per segment, a bound over every tile
  int segment_elements = 0;
  int max_segments = 0;
  int slot_elements = 0;
  FastDivision ring;  // R, the ring's slots
};

struct FramedTile {
  int first_image;
  int segments;
  int top[kMaxSegments];   // input row of each segment's framed row 0 (may be negative)
  int rows[kMaxSegments];  // framed rows the segment's pixels read
};

// The images and input rows (padding rows included) that tile rows [first, first + 128)
// read.
__host__ __device__ inline FramedTile framed_tile(const ConvProblem& p, int first) {
  FramedTile t{};
  const int last = (first + kTileRows < p.rows ? first + kTileRows : p.rows) - 1;
  t.first_image = first / p.out_pixels;
  t.segments = last / p.out_pixels - t.first_image + 1;
  for (int k = 0; k < kMaxSegments; ++k) {
    if (k >= t.segments) break;
    const int n = t.first_image + k;
    const int first_pixel = k == 0 ? first - n * p.out_pixels : 0;
    const int last_pixel = k == t.segments - 1 ? last - n * p.out_pixels : p.out_pixels - 1;
    t.top[k] = (first_pixel / p.out_w) * p.stride_h - p.pad_h;
    const int bottom =
        (last_pixel / p.out_w) * p.stride_h - p.pad_h + (p.kernel_h - 1) * p.dilation_h;
    t.rows[k] = bottom - t.top[k] + 1;
  }
  return t;
}

// Byte spans that a warp's loads of one channel cover at each kernel row (8 pixels and
// the kernel's column reach) overlap in banks: how many pairs collide at this pitch.
inline int framed_bank_collisions(const ConvProblem& p, int pitch) {
  const int span = 2 * (8 + (p.kernel_w - 1) * p.dilation_w) + 2;
  int collisions = 0;
  for (int a = 0; a < p.kernel_h; ++a)
    for (int b = a + 1; b < p.kernel_h; ++b) {
      const int distance = (2 * (b - a) * p.dilation_h * pitch) % 128;
      if (distance < span || 128 - distance < span) ++collisions;
    }
  return collisions;
}

// The layout of a channel's framed window, or false where x does not meet the contract.
// The ring's size is chosen by choose_framed_ring (framed_kernel.cuh).
inline bool framed_plan(const ConvProblem& p, uintptr_t x_address, FramedLaunch& w) {
  w = FramedLaunch{};
  for (int chunk : {16, 8, 4}) {
    if ((2 * p.width) % chunk == 0 && (2 * int64_t{p.x_stride_c}) % chunk == 0 &&
        (2 * int64_t{p.x_stride_n}) % chunk == 0 && x_address % chunk == 0) {
      w.chunk_bytes = chunk;
      break;
    }
  }
  if (w.chunk_bytes == 0) return false;
  w.row_chunks = 2 * p.width / w.chunk_bytes;
  w.by_row_chunks = FastDivision::of(w.row_chunks);
  const int chunk_elements = w.chunk_bytes / 2;
  w.lead = (p.pad_w + chunk_elements - 1) / chunk_elements * chunk_elements;
  // The rightmost column a pixel reads, and x's own last one.
  const int reach = (p.out_w - 1) * p.stride_w - p.pad_w + (p.kernel_w - 1) * p.dilation_w;
  const int columns = reach + 1 > p.width ? reach + 1 : p.width;
  const int narrowest = (w.lead + columns + chunk_elements - 1) / chunk_elements * chunk_elements;
  // Of the pitches within 128 bytes of the narrowest, the first whose kernel rows fall in
  // different banks.
  w.pitch = narrowest;
  int best = framed_bank_collisions(p, narrowest);
  for (int pitch = narrowest; best > 0 && 2 * (pitch - narrowest) < 128; pitch += chunk_elements) {
    const int collisions = framed_bank_collisions(p, pitch);
    if (collisions < best) {
      best = collisions;
      w.pitch = pitch;
    }
  }
  int out_rows = (kTileRows - 1) / p.out_w + 2;
  if (out_rows > p.out_h) out_rows = p.out_h;
  w.segment_rows = (out_rows - 1) * p.stride_h + (p.kernel_h - 1) * p.dilation_h + 1;
  w.segment_elements = (w.segment_rows * w.pitch + 7) / 8 * 8;
  const int images = p.rows / p.out_pixels;
  w.max_segments = (kTileRows - 1) / p.out_pixels + 2;
  if (w.max_segments > images) w.max_segments = images;
  if (w.max_segments > kMaxSegments) return false;
  w.slot_elements = (w.max_segments * w.segment_elements + 63) / 64 * 64 + 16;
  return w.max_segments * w.segment_rows * w.row_chunks <= kMaxChannelChunks;
}

}  // namespace gwprune::cuda::implicit::windows
