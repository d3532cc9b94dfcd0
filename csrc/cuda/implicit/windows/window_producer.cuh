// The window path's producer (contract in window_geometry.cuh): per K stage of 64 kept
// groups it writes the stage's group table and starts the weight tile's copy, then starts
// the window copies of the channels that first appear in the stage. All of them complete
// on the stage's one full barrier, so a consumer waits once per stage.
//
// Channels are numbered in K order (ordinal q); channel q lives in ring slot q % R until
// every consumer warp has finished the stage after its last group. With R > 64 (at most
// 64 channels start in a stage) a stage's copies never wait for that stage's own consumers.
// A stage's table entry for group g is
//   {byte offset of g's view in the ring (slot, bank skew, tap shift),
//    the bit of g's tap (0 for padding columns) | (c * x_stride_c mod 8) << 29},
// and the stage's last channel ordinal goes to `stage_last`. Each thread fetches its group
// of the next stage (an L2 round trip) before it waits for that stage to be free.
#pragma once

#include <cstdint>

#include "../sm90_primitives.cuh"
#include "k_slices.cuh"
#include "window_geometry.cuh"

namespace gwprune::cuda::implicit::windows {

// Where the pieces of the window kernel live in shared memory.
struct WindowShared {
  uint8_t* b_stages;
  int2* tables;         // [stages][64]
  int* scratch;         // [2][2]: new channels per producer warp, by stage parity
  int* stage_last;      // [stages]: the ordinal of each stage's last channel
  uint32_t ring;        // shared address of slot 0
  TileRing ring_slots;  // this CTA's slots (tile_ring)
  uint64_t* full;       // weight tile, table and the stage's new windows landed
  uint64_t* empty;
  uint64_t* ring_empty;  // a slot's channel released by every consumer warp
};

#ifdef GWPRUNE_SM90A_DEVICE

constexpr int kTableThreads = 64;  // one per kept group of a stage
constexpr int kTableBarrier = 1;   // named barrier of those threads (team 0)
// Producer teams (the persistent kernel's two): team t's named barrier and its scratch
// words. Team 1's barrier 3 is free only in the persistent kernel (the window kernel's
// consumers use 2, the staged kernel's 2-4, and both run one team); scratch [4, 8) is
// stage_last.
__host__ __device__ constexpr int team_barrier(int team) { return kTableBarrier + 2 * team; }
__host__ __device__ constexpr int team_scratch(int team) { return 8 * team; }
// Arrivals on a stage's full barrier: every table entry's writer and, with two teams, each
// warp of the team that does not fill the stage (produce_windows).
__host__ __device__ constexpr int full_arrivals(int teams) {
  return kTableThreads + (teams - 1) * kTableThreads / 32;
}

// Where a CTA's producer stands between tiles: the stages and channel ordinals it has
// used so far (a persistent CTA's barrier phases and ring slots run on across its tiles),
// and the groups of its next stage, fetched a stage ahead.
struct ProducerCursor {
  int stages = 0;
  int channels = 0;
  int32_t group = -1, previous = -1;
};

// The group k whose entry a thread writes, and the group before it: each stage's channel
// starts depend on both. Before the first group of a unit's K range (`first`) there is none
// (-1), so the range's first channel is copied even where an earlier range read it too.
__device__ __forceinline__ void fetch_stage_groups(const ConvProblem& p, int k, int first,
                                                   int32_t& group, int32_t& previous) {
  group = fetch_group(p, k);
  previous = k > first ? fetch_group(p, k - 1) : -1;
}

template <int BK>
__device__ __forceinline__ ProducerCursor first_producer_cursor(const ConvProblem& p, int thread,
                                                                int first_stage = 0) {
  ProducerCursor cursor;
  fetch_stage_groups(p, first_stage * BK + thread, first_stage * BK, cursor.group, cursor.previous);
  return cursor;
}

// Run by producer threads [0, 64) of each team (`thread` counts within the team); a team's
// thread 0 also copies the weight tiles. Produces the stages `range` of one tile from
// `cursor` on and leaves it at stage `next_first` (the first of the CTA's next unit).
//
// With Teams = 2 the CTA's stages alternate between two teams of 64 threads (team t fills
// the stages g with g % 2 == t). One team's chain took 1,780-2,650 cycles a stage, as long
// as the consumers' (bench/NOTES.md change 32); with two, each has two stages' time for a
// stage's waits, table, copies and arrivals. Both teams still count every stage's new
// channels (the ordinals run across stages), so they need nothing from each other.
//
// A team also waits for the ring slots of the other team's new channels, in ordinal order:
// a slot's parity wait tells only its last two phases apart, and waiting for every slot in
// order keeps each slot at most one phase behind the wait. Such a wait must not come too
// late either: once the consumers have released the channel itself the slot is a phase
// ahead, the parity reads as not yet released, and the team would wait for a release that
// needs its own next stage (a deadlock that compute-sanitizer's initcheck timing exposed,
// bench/NOTES.md change 33). So each of the other team's warps also arrives on the stage's
// full barrier (full_arrivals) once its waits are done, and the consumers, who release
// the stage's channels, cannot start the stage before that. It first waits for the stage
// to be free, as the filling team does, so its arrival cannot land in the barrier's
// previous phase.
template <int Stages, int BTileBytes, int BK, int Teams = 1>
__device__ __forceinline__ void produce_windows(const ConvProblem& p, const void* weight_map,
                                                const void* x_map, const WindowShared& s,
                                                const TileWindows& tile, const WindowLaunch& w,
                                                int first_col, int thread, ProducerCursor& cursor,
                                                KRange range, int next_first, int team = 0) {
  static_assert(Teams == 1 || Teams == 2, "one or two producer teams");
  const int warp = thread / 32, lane = thread % 32;
  int* const scratch = s.scratch + team_scratch(team);
  int boxes = 0;
  for (int k = 0; k < kMaxSegments; ++k)
    if (k < tile.segments) boxes += tile.boxes[k];
  const uint32_t window_bytes = static_cast<uint32_t>(boxes * w.box * 2);
  int channels_before = cursor.channels;  // channels that start in earlier stages
#pragma unroll 1
  for (int kt = range.begin; kt < range.end; ++kt) {
    // The CTA's stage count: barrier phases and parities.
    const int g = cursor.stages + (kt - range.begin);
    const int stage = g % Stages;
    // This stage's groups were fetched a stage ahead; start the next stage's fetch (an L2
    // round trip) before waiting for anything. After a unit's last stage that is the next
    // unit's first.
    const int32_t group = cursor.group, previous_group = cursor.previous;
    const int next = kt + 1 < range.end ? kt + 1 : next_first;
    fetch_stage_groups(p, next * BK + thread, (kt + 1 < range.end ? range.begin : next) * BK,
                       cursor.group, cursor.previous);
    const bool own = Teams == 1 || (g & 1) == team;  // this team fills stage g
    if (g >= Stages) mbarrier_wait(&s.empty[stage], ((g / Stages) - 1) & 1);
    // Padding columns (-1) have no channel and start none.
    const GroupTap t = group >= 0 ? decode_tap(p, group) : GroupTap{-1, 0, 0, 0};
    const int c = t.c;
    const int previous = previous_group >= 0 ? decode_tap(p, previous_group).c : -1;
    const bool starts_channel = c >= 0 && c != previous;
    const uint32_t starts = __ballot_sync(0xffffffffu, starts_channel);
    if (lane == 0) scratch[(g & 1) * 2 + warp] = __popc(starts);
    named_barrier_sync(team_barrier(team), kTableThreads);
    const int before_warp = warp == 0 ? 0 : scratch[(g & 1) * 2];
    const int in_stage = scratch[(g & 1) * 2] + scratch[(g & 1) * 2 + 1];
    // Ordinal of this group's channel: the channels started up to and including it, less one.
    const int q = channels_before + before_warp + __popc(starts & ((2u << lane) - 1)) - 1;
    const int turn = s.ring_slots.slots.divide(q);  // how many times the ring wrapped before q
    const int slot = q - turn * s.ring_slots.slots.divisor;
    if (!own) {
      // The other team's stage: only its slot waits, so that this team waits for every
      // channel's slot in ordinal order. A slot's parity wait can only tell its last two
      // phases apart; in order, no slot is more than one phase behind its wait.
      if (starts_channel && turn > 0) mbarrier_wait(&s.ring_empty[slot], (turn - 1) & 1);
      __syncwarp();
      if (lane == 0) mbarrier_arrive(&s.full[stage]);
      channels_before += in_stage;
      continue;
    }
    const int view = slot * s.ring_slots.slot_elements + 8 * (q & 3) +
                     t.i * p.dilation_h * p.width + t.j * p.dilation_w;
    const uint32_t tap_bit = c >= 0 ? 1u << t.tap : 0u;
    const uint32_t residue = c >= 0 ? static_cast<uint32_t>(c * p.x_stride_c) & 7u : 0u;
    const uint32_t entry = smem_address(s.tables + stage * BK + thread);
    store_shared(entry, 2 * view);
    store_shared(entry + 4, static_cast<int>(tap_bit | residue << 29));
    if (thread == BK - 1) store_shared(smem_address(s.stage_last + stage), q);
    // Each thread publishes its own entry by arriving; thread 0 first adds the bytes of the
    // weight tile and of the stage's windows, so the stage cannot complete without them.
    if (thread == 0) {
      mbarrier_expect_tx(&s.full[stage], BTileBytes + in_stage * window_bytes);
      tma_load_2d(s.b_stages + stage * BTileBytes, weight_map, &s.full[stage], kt * BK, first_col);
    }
    mbarrier_arrive(&s.full[stage]);
    channels_before += in_stage;
    if (starts_channel) {
      // The slot's previous channel (q - R) must be released by every consumer warp.
      if (turn > 0) mbarrier_wait(&s.ring_empty[slot], (turn - 1) & 1);
      const uint32_t slot_address = s.ring + slot * s.ring_slots.slot_elements * 2;
      const int skew = 8 * (q & 3);
#pragma unroll
      for (int k = 0; k < kMaxSegments; ++k) {
        if (k >= tile.segments) break;
        const int first =
            (tile.first_image + k) * p.x_stride_n + c * p.x_stride_c + tile.first_row[k] * p.width;
        const int start = (first & ~7) - skew;
        for (int b = 0; b < tile.boxes[k]; ++b)
          tma_load_1d(slot_address + (tile.offset[k] + b * w.box) * 2, x_map, &s.full[stage],
                      start + b * w.box);
      }
    }
  }
  cursor.stages += range.end - range.begin;
  cursor.channels = channels_before;
}

// One whole tile per CTA.
template <int Stages, int BTileBytes, int BK>
__device__ __forceinline__ void produce_windows(const ConvProblem& p, const void* weight_map,
                                                const void* x_map, const WindowShared& s,
                                                const TileWindows& tile, const WindowLaunch& w,
                                                int first_col, int thread) {
  ProducerCursor cursor = first_producer_cursor<BK>(p, thread);
  produce_windows<Stages, BTileBytes, BK>(p, weight_map, x_map, s, tile, w, first_col, thread,
                                          cursor, KRange{0, p.k_tiles}, 0);
}

// What a reader (consumer or gatherer warp) needs at the start of stage kt, once the stage's
// table, weight tile and windows have landed: the table's shared address and the ordinal of
// the stage's last channel (channels before it appear in no later stage).
struct StageStart {
  int stage;
  uint32_t table;
  int last_channel;
};

template <int Stages, int BK>
__device__ __forceinline__ StageStart start_stage(const WindowShared& s, int kt) {
  const int stage = kt % Stages;
  mbarrier_wait(&s.full[stage], (kt / Stages) & 1);
  return {stage, smem_address(s.tables + stage * BK),
          load_shared<int>(smem_address(s.stage_last + stage))};
}

// A reader warp hands back ring channels [released, last): lane l arrives for channels
// released + l, released + l + 32, ..., so a stage's channels take one arrive per lane, not
// one per channel in series (a stage at keep .25 ends ~28 channels; each arrive is a
// shared-memory round trip on lane 0's path).
__device__ __forceinline__ void release_channels(uint64_t* ring_empty, int& released, int last,
                                                 const FastDivision& ring, int lane) {
  for (int q = released + lane; q < last; q += 32) {
    const int slot = q - ring.divide(q) * static_cast<int>(ring.divisor);
    mbarrier_arrive(&ring_empty[slot]);
  }
  if (last > released) released = last;
}

#endif  // GWPRUNE_SM90A_DEVICE

}  // namespace gwprune::cuda::implicit::windows
