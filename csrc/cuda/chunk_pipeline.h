// Runs gather-then-GEMM over chunks with the gather of chunk i+1 on a side
// stream while the GEMM of chunk i runs on the current stream.
//
// Serialised, every chunk boundary drains the GPU twice (the gather's tail,
// then the GEMM's ramp-up); overlapped, the memory-bound gather fills the
// GEMM's tail waves. Two workspace slots alternate: the gather into a slot
// waits until the GEMM that last read it is done. All side-stream work is
// joined back into the current stream before the last GEMM, so callers,
// CUDA-graph capture and the caching allocator see one stream's order.
#pragma once

#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
#include <array>
#include <cstdint>

#include "../ops.h"

namespace gwprune::cuda {

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Elements between slot starts: a multiple of 64 elements keeps the second
// slot 256-byte aligned, as the gathers' vector stores and cuBLAS expect.
inline int64_t slot_stride(int64_t slot_elements) { return ceil_div(slot_elements, 64) * 64; }

// How a workspace budget is split: everything in one slot when the whole
// compacted operand fits, else two half-budget slots for the pipeline (when
// two rows of `row_elements` fit and overlap is on: gwprune._C.set_overlap_chunks
// lets benchmarks measure the pipeline against the serial order).
struct WorkspaceSlots {
  int64_t slot_elements;  // budget of one slot, at least one row
  int count;              // 1 (serial) or 2 (overlapped)
};

inline WorkspaceSlots split_workspace(int64_t total_elements, int64_t row_elements,
                                      int64_t budget_elements) {
  const bool overlap =
      total_elements > budget_elements && budget_elements >= 2 * row_elements && overlap_chunks();
  if (!overlap) return {std::max(budget_elements, row_elements), 1};
  return {budget_elements / 2, 2};
}

// gather(chunk, slot) and gemm(chunk, slot) enqueue work on the current
// stream; the pipeline decides which stream that is when each is called.
// With one slot everything runs in order on the current stream.
template <typename Gather, typename Gemm>
void run_chunk_pipeline(int64_t num_chunks, const WorkspaceSlots& slots, Gather&& gather,
                        Gemm&& gemm) {
  if (slots.count < 2 || num_chunks < 2) {
    for (int64_t chunk = 0; chunk < num_chunks; ++chunk) {
      gather(chunk, 0);
      gemm(chunk, 0);
    }
    return;
  }
  const c10::cuda::CUDAStream main = at::cuda::getCurrentCUDAStream();
  const c10::cuda::CUDAStream side = at::cuda::getStreamFromPool(false, main.device_index());
  // The side stream starts after everything already queued on the main one
  // (inputs, the bias prefill, workspace allocation).
  at::cuda::CUDAEvent forked;
  forked.record(main);
  forked.block(side);
  std::array<at::cuda::CUDAEvent, 2> gathered;
  std::array<at::cuda::CUDAEvent, 2> consumed;
  for (int64_t chunk = 0; chunk < num_chunks; ++chunk) {
    const int slot = static_cast<int>(chunk % 2);
    {
      const c10::cuda::CUDAStreamGuard on_side(side);
      if (chunk >= 2) consumed[slot].block(side);
      gather(chunk, slot);
      gathered[slot].record(side);
    }
    gathered[slot].block(main);
    gemm(chunk, slot);
    consumed[slot].record(main);
  }
}

}  // namespace gwprune::cuda
