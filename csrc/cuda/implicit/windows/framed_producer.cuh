// The framed-window producer (contract in framed_geometry.cuh). Per K stage of 64 kept
// groups, 64 threads write the stage's group table and thread 0 starts the weight tile's
// TMA copy, as window_producer.cuh does; then the same threads copy x's rows of every
// channel that first appears in the stage into its ring slot with cp.async, a channel at
// a time, each thread a chunk of a row. Everything completes on the stage's one full barrier:
// the table writers arrive, the weight tile counts its bytes, and each thread's copies
// hold the phase open until they land.
//
// Channel ordinals, ring slots and their release are window_producer.cuh's. A stage's
// table entry for group g is the byte offset of g's view in the ring (slot, kernel row and
// column); the stage's last channel ordinal goes to `stage_last`.
#pragma once

#include <cstdint>

#include "../sm90_primitives.cuh"
#include "framed_geometry.cuh"

namespace gwprune::cuda::implicit::windows {

// Where the pieces of the framed kernel live in shared memory.
struct FramedShared {
  uint8_t* b_stages;
  int* tables;        // [stages][64]: byte offset of each group's view in the ring
  int* scratch;       // [2][2]: new channels per producer warp, by stage parity
  int* stage_last;    // [stages]: the ordinal of each stage's last channel
  int* new_channels;  // [2][64]: element offset in x of each channel a stage starts
  int2* copy_rows;    // {element offset in a channel of x, element offset in a slot}
  uint32_t ring;      // shared address of slot 0
  uint64_t* full;     // weight tile, table and the stage's new windows landed
  uint64_t* empty;
  uint64_t* ring_empty;  // a slot's channel released by every consumer warp
};

#ifdef GWPRUNE_SM90A_DEVICE

constexpr int kFramedThreads = 64;  // one per kept group of a stage
constexpr int kFramedBarrier = 1;   // named barrier of those threads

// The rows of x that each channel's window copies, in slot order: only rows inside the
// image (the framed rows outside it stay zero). Returns how many.
__device__ __forceinline__ int list_copy_rows(const ConvProblem& p, const FramedTile& tile,
                                              const FramedLaunch& w, int2* rows, int thread) {
  int count = 0;
  for (int k = 0; k < kMaxSegments; ++k) {
    if (k >= tile.segments) break;
    const int first = tile.top[k] > 0 ? tile.top[k] : 0;
    const int end = tile.top[k] + tile.rows[k] < p.height ? tile.top[k] + tile.rows[k] : p.height;
    for (int ih = first; ih < end; ++ih, ++count) {
      if (count % kFramedThreads == thread)
        rows[count] = make_int2((tile.first_image + k) * p.x_stride_n + ih * p.width,
                                k * w.segment_elements + (ih - tile.top[k]) * w.pitch + w.lead);
    }
  }
  return count;
}

// Run by producer threads [0, 64); thread 0 also copies the weight tiles.
template <int Stages, int BTileBytes, int BK>
__device__ __forceinline__ void produce_framed(const ConvProblem& p, const void* weight_map,
                                               const FramedShared& s, const FramedTile& tile,
                                               const FramedLaunch& w, int first_col, int thread) {
  const int warp = thread / 32, lane = thread % 32;
  const int copy_rows = list_copy_rows(p, tile, w, s.copy_rows, thread);
  named_barrier_sync(kFramedBarrier, kFramedThreads);
  // A channel's copies are its rows' chunks, numbered row by row; thread t takes chunks
  // t, t + 64, ... of every channel, so a warp's copies read consecutive bytes of x (a
  // segment's rows are contiguous in x). Their offsets are the same for every channel.
  const int channel_chunks = copy_rows * w.row_chunks;
  int source_offset[kMaxThreadChunks], slot_offset[kMaxThreadChunks];
#pragma unroll
  for (int m = 0; m < kMaxThreadChunks; ++m) {
    const int chunk = thread + kFramedThreads * m;
    const int row = w.by_row_chunks.divide(chunk);
    const int offset = (chunk - row * w.row_chunks) * w.chunk_bytes;
    const int2 rows = chunk < channel_chunks ? s.copy_rows[row] : make_int2(0, 0);
    source_offset[m] = 2 * rows.x + offset;
    slot_offset[m] = 2 * rows.y + offset;
  }
  const int slot_bytes = 2 * w.slot_elements;
  const int ring_slots = static_cast<int>(w.ring.divisor);
  int first_slot = 0;  // the slot of the stage's first new channel
  const uint8_t* x = static_cast<const uint8_t*>(p.x);
  int channels_before = 0;  // channels that start in earlier stages
  int32_t next_group = fetch_group(p, thread);
  int32_t next_previous = thread > 0 ? fetch_group(p, thread - 1) : -1;
#pragma unroll 1
  for (int kt = 0; kt < p.k_tiles; ++kt) {
    const int stage = kt % Stages;
    // This stage's groups were fetched a stage ahead; start the next stage's fetch (an L2
    // round trip) before waiting for anything.
    const int32_t group = next_group, previous_group = next_previous;
    next_group = fetch_group(p, (kt + 1) * BK + thread);
    next_previous = fetch_group(p, (kt + 1) * BK + thread - 1);
    if (kt >= Stages) mbarrier_wait(&s.empty[stage], ((kt / Stages) - 1) & 1);
    // Padding columns (-1) have no channel and start none.
    const GroupTap t = group >= 0 ? decode_tap(p, group) : GroupTap{-1, 0, 0, 0};
    const int previous = previous_group >= 0 ? decode_tap(p, previous_group).c : -1;
    const bool starts_channel = t.c >= 0 && t.c != previous;
    const uint32_t starts = __ballot_sync(0xffffffffu, starts_channel);
    if (lane == 0) s.scratch[(kt & 1) * 2 + warp] = __popc(starts);
    named_barrier_sync(kFramedBarrier, kFramedThreads);
    const int before_warp = warp == 0 ? 0 : s.scratch[(kt & 1) * 2];
    const int in_stage = s.scratch[(kt & 1) * 2] + s.scratch[(kt & 1) * 2 + 1];
    // Ordinal of this group's channel: the channels started up to and including it, less one.
    const int local = before_warp + __popc(starts & ((2u << lane) - 1)) - 1;
    const int q = channels_before + local;
    const int slot = q - w.ring.divide(q) * static_cast<int>(w.ring.divisor);
    // Padding columns read the zero slot past the ring (a real element times their zero
    // weight would turn an infinity in x into a NaN).
    const int view =
        t.c >= 0 ? slot * w.slot_elements + t.i * p.dilation_h * w.pitch + t.j * p.dilation_w
                 : static_cast<int>(w.ring.divisor) * w.slot_elements;
    store_shared(smem_address(s.tables + stage * BK + thread), 2 * view);
    if (thread == BK - 1) store_shared(smem_address(s.stage_last + stage), q);
    if (starts_channel) {
      store_shared(smem_address(s.new_channels + (kt & 1) * kFramedThreads + local),
                   t.c * p.x_stride_c);
      // The slot's previous channel (q - R) must be released by every consumer warp.
      const int turn = w.ring.divide(q);  // how many times the ring has wrapped before q
      if (turn > 0) mbarrier_wait(&s.ring_empty[slot], (turn - 1) & 1);
    }
    if (thread == 0) {
      mbarrier_expect_tx(&s.full[stage], BTileBytes);
      tma_load_2d(s.b_stages + stage * BTileBytes, weight_map, &s.full[stage], kt * BK, first_col);
    }
    // The stage's new channels are listed and their slots free.
    named_barrier_sync(kFramedBarrier, kFramedThreads);
    const uint8_t* channel_list = reinterpret_cast<const uint8_t*>(s.new_channels);
#pragma unroll 4
    for (int channel = 0; channel < in_stage; ++channel) {
      const int c_offset =
          load_shared<int>(smem_address(channel_list) + 4 * ((kt & 1) * kFramedThreads + channel));
      int slot = first_slot + channel;
      if (slot >= ring_slots) slot -= ring_slots;
      const uint32_t slot_address = s.ring + slot * slot_bytes;
      const uint8_t* source = x + 2 * int64_t{c_offset};
#pragma unroll
      for (int m = 0; m < kMaxThreadChunks; ++m) {
        if (thread + kFramedThreads * m >= channel_chunks) break;
        const uint32_t destination = slot_address + slot_offset[m];
        if (w.chunk_bytes == 16)
          cp_async<16>(destination, source + source_offset[m]);
        else if (w.chunk_bytes == 8)
          cp_async<8>(destination, source + source_offset[m]);
        else
          cp_async<4>(destination, source + source_offset[m]);
      }
    }
    cp_async_mbarrier_arrive(&s.full[stage]);
    mbarrier_arrive(&s.full[stage]);
    channels_before += in_stage;
    first_slot += in_stage;
    if (first_slot >= ring_slots) first_slot -= ring_slots;
  }
}

#endif  // GWPRUNE_SM90A_DEVICE

}  // namespace gwprune::cuda::implicit::windows
