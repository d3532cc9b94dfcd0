// How the CPU path cuts a layer into GEMM tasks and runs them.
//
// A chunk is rows of the compacted GEMM operand (output pixels of a conv, rows
// of a linear) that one gather writes; a task is one chunk times one block of
// output channels, one single-threaded ATen GEMM. The plan depends on the
// layer's shape only, never on the thread count: a BLAS's result for an
// element depends on the GEMM's shape and threading (MKL's does), so a fixed
// plan of single-threaded GEMMs gives the same output bits for any thread count.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>

namespace gwprune::cpu {

// The compacted operand of one chunk. Measured on a 2-core Xeon (bench/NOTES.md,
// change 17): chunks sized for L2 (256-512 KiB) ran up to 1.8x slower than
// 4 MiB ones, because each GEMM call re-packs the whole weight and small chunks
// (a few dozen pixels when K' is in the thousands) cannot amortise that; 4 MiB
// still sits in L3 between the gather and the GEMM.
constexpr int64_t kChunkOperandBytes = 4 << 20;
// Fewer rows than this would make the GEMM re-pack the weight too often.
constexpr int64_t kMinChunkRows = 32;
// A layer is cut into at least kMinTasks independent GEMMs where it can be, so
// that both cores of a small machine work on a layer that fits one chunk:
// first into more chunks of at least kMinSplitRows rows, then into blocks of at
// least kMinBlockChannels output channels. A constant, not the thread count,
// to keep the plan (and so the output bits) the same for any thread count.
constexpr int64_t kMinTasks = 2;
constexpr int64_t kMinSplitRows = 256;
constexpr int64_t kMinBlockChannels = 128;

struct TaskPlan {
  int64_t rows_per_chunk, chunks;
  int64_t channels_per_block, channel_blocks;
};

// Chunks of `total_rows` rows (per unit: the images of an NCHW conv, whose
// chunks never span two images), each at most `budget_bytes` of operand (at
// least kMinChunkRows rows, or all of them), equal in size, an even number of
// them in all when there are several, then blocks of output channels.
inline TaskPlan plan_tasks(int64_t total_rows, int64_t row_bytes, int64_t budget_bytes,
                           int64_t out_channels, int64_t units = 1) {
  const int64_t fit = std::max<int64_t>(budget_bytes / std::max<int64_t>(row_bytes, 1), 1);
  const int64_t max_rows = std::min(total_rows, std::max(fit, kMinChunkRows));
  int64_t chunks = (total_rows + max_rows - 1) / max_rows;
  if (units * chunks < kMinTasks) {
    const int64_t wanted = (kMinTasks + units - 1) / units;
    chunks = std::max(chunks, std::min(wanted, total_rows / kMinSplitRows));
  }
  if (units * chunks % 2 == 1 && units * chunks > 1 && total_rows / (chunks + 1) >= kMinChunkRows)
    ++chunks;
  const int64_t rows = (total_rows + chunks - 1) / chunks;
  chunks = (total_rows + rows - 1) / rows;
  const int64_t wanted_blocks = (kMinTasks + units * chunks - 1) / (units * chunks);
  const int64_t blocks = std::clamp<int64_t>(out_channels / kMinBlockChannels, 1, wanted_blocks);
  const int64_t per_block = (out_channels + blocks - 1) / blocks;
  return {rows, chunks, per_block, (out_channels + per_block - 1) / per_block};
}

// Runs every task in one parallel region: task t is chunk t / channel_blocks,
// block t % channel_blocks, and each thread takes a contiguous range of tasks.
// A thread gathers a chunk into its own workspace (`gather(chunk, workspace)`)
// when its range reaches it, then runs that chunk's blocks of its range
// (`gemm(chunk, workspace, block)`), so the operand is still in the core's
// cache. Where two threads share a chunk both gather it: duplicated copying,
// but no second parallel region, whose wake-up costs a scheduler tick when the
// cores are busy (bench/NOTES.md, change 17). The BLAS, called inside a
// parallel region (or with one thread), never threads a GEMM.
template <typename Gather, typename Gemm>
void run_tasks(int64_t chunks, int64_t channel_blocks, int64_t workspace_elements,
               const at::TensorOptions& options, Gather&& gather, Gemm&& gemm) {
  at::parallel_for(0, chunks * channel_blocks, 1, [&](int64_t begin, int64_t end) {
    at::Tensor workspace = at::empty({workspace_elements}, options);
    int64_t gathered = -1;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t chunk = task / channel_blocks;
      if (chunk != gathered) {
        gather(chunk, workspace);
        gathered = chunk;
      }
      gemm(chunk, workspace, task % channel_blocks);
    }
  });
}

}  // namespace gwprune::cpu
