// How the CPU path cuts a layer into chunks and runs them.
//
// A chunk is rows of the compacted GEMM operand (output pixels of a conv, rows
// of a linear) that one gather writes and one ATen GEMM reads. Chunk sizes
// depend on the layer's shape only, never on the thread count, because a BLAS's
// result for an element depends on the GEMM's shape (MKL's does).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>

namespace gwprune::cpu {

// The compacted operand of one chunk. Measured on a 2-core Xeon (bench/NOTES.md,
// change 17): chunks sized for L2 (256-512 KiB) ran up to 1.6x slower than
// 4 MiB ones, because each GEMM call re-packs the whole weight and small chunks
// (a few dozen pixels when K' is in the thousands) cannot amortise that. On a 2-core
// EPYC (32 MiB L3) 16 MiB did better still: the seed conv (N=1) at keep .75, whose
// 10.8 MB operand had run as three GEMMs, went from 19.0 to 17.9 ms as one (bench/NOTES.md,
// CPU path); 16 MiB still sits in that L3 between the gather and the GEMM.
constexpr int64_t kChunkOperandBytes = 16 << 20;
// Fewer rows than this would make the GEMM re-pack the weight too often.
constexpr int64_t kMinChunkRows = 32;

struct ChunkPlan {
  int64_t rows_per_chunk, chunks;
};

// Equal chunks of `total_rows` rows, each at most `budget_bytes` of operand (at
// least kMinChunkRows rows, or all of them).
inline ChunkPlan plan_chunks(int64_t total_rows, int64_t row_bytes, int64_t budget_bytes) {
  const int64_t fit = std::max<int64_t>(budget_bytes / std::max<int64_t>(row_bytes, 1), 1);
  const int64_t max_rows = std::min(total_rows, std::max(fit, kMinChunkRows));
  const int64_t chunks = (total_rows + max_rows - 1) / max_rows;
  const int64_t rows = (total_rows + chunks - 1) / chunks;
  return {rows, (total_rows + rows - 1) / rows};
}

// Runs the chunks in turn: `gather(chunk, workspace, row_begin, row_end)` split
// across threads over the chunk's `rows_of(chunk)` rows, then `gemm(chunk,
// workspace)`, one whole GEMM that the BLAS threads itself. Cutting a GEMM
// into per-thread pieces instead ran 18-60% slower per pair on one core
// (each call re-packs its operands) and lost to MKL's own threading on two
// (bench/NOTES.md, change 17).
template <typename RowsOf, typename Gather, typename Gemm>
void run_chunks(int64_t chunks, int64_t workspace_elements, const at::TensorOptions& options,
                RowsOf&& rows_of, Gather&& gather, Gemm&& gemm) {
  at::Tensor workspace = at::empty({workspace_elements}, options);
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    at::parallel_for(0, rows_of(chunk), 1,
                     [&](int64_t begin, int64_t end) { gather(chunk, workspace, begin, end); });
    gemm(chunk, workspace);
  }
}

}  // namespace gwprune::cpu
