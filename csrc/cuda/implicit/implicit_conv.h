// The implicit-GEMM path: a group-wise conv2d as one Hopper kernel that reads the
// kept groups straight from x inside its tensor-core mainloop. No compacted
// buffer is written; extra device memory is nothing beyond the packed weight, except where
// the persistent window kernel cuts a launch of few tiles into K slices
// (windows/k_slices.cuh): fp32 partials of at most 4 tiles per SM, from the caching
// allocator, bounded by the GPU and not by the batch (unless GWPRUNE_IMPLICIT_K_SLICES forces
// a count).
//
// Contract (checked by implicit_conv_supported, which the dispatcher asks first):
// - an sm_90 device and a build with the sm_90a target;
// - x is [N, C, H, W], NCHW-contiguous or channels_last, fp16, bf16, or fp32 run in
//   TF32 (the caller decides TF32 from PyTorch's cuDNN flag); strict fp32 stays on
//   the explicit path;
// - weight is the packed [Cout, K'p] (K'p a multiple of 8, so its rows are 16-byte
//   aligned for the copy engine), contiguous, x's dtype; group_idx int32 [K'p] flat
//   (c, i, j) indices in weight's column order, -1 for padding columns;
// - kh * kw <= 64 (a row's valid taps are one 64-bit mask), x.numel() < 2^31 (32-bit
//   offsets into x), N * OH * OW * 128 < 2^31 tiles;
// - any C, H, W, stride, padding, dilation and K'p; rows, output channels and kept
//   columns beyond a tile are masked, so no shape needs padding.
//
// The output is written in x's layout, with the bias (optional, x's dtype) added and then
// the activation (any of activation.h's) applied in fp32 before rounding. out must have the
// conv's output shape and x's memory format.
//
// Pieces (CUTLASS 3.x's split): the producers, each filling the tile the consumers read:
// gather_mainloop.cuh the row gather (any geometry: x into a K-major swizzled tile),
// run_gather.cuh the NCHW run gather (16-bit, stride 1, OW == W: 16-byte vectors into an
// MN-major tile; alone, or in CTA pairs sharing it), line_gather.cuh the NCHW line gather
// (one TMA copy per aligned 64-pixel line); nchw_producer picks one. mma_consumer.cuh is
// the two wgmma warpgroups, epilogue.cuh the bias, the activation and the store in the
// output layout, implicit_conv_kernel.cuh the kernel, its tile configurations and the
// launch (instantiated per dtype by implicit_conv_{fp16,bf16,tf32}.cu). windows/ is a second
// kernel for NCHW 16-bit inputs (its contract in windows/window_geometry.cuh): each
// channel's input rows copied once per tile, the consumers reading A from them into
// registers; nchw_producer picks it too, and it shares the epilogue. Its staged and split
// forms (windows/staged_window_kernel.cuh) add gatherer warps that build A tiles in shared
// memory from the same windows, for all or half of each stage's K steps.
#pragma once

#include <ATen/ATen.h>

#include <optional>

#include "../../activation.h"
#include "../../conv_geometry.h"

namespace gwprune::cuda::implicit {

// Why the implicit path cannot take a call, or nullptr when it can.
const char* implicit_conv_unsupported_reason(const at::Tensor& x, const at::Tensor& weight,
                                             const ConvGeometry& geometry, bool allow_tf32);

// out = activation(conv of x with the packed weight (+ bias)), in x's layout, on the
// current stream.
void implicit_conv2d(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& group_idx,
                     const std::optional<at::Tensor>& bias, const ConvGeometry& geometry,
                     at::Tensor& out, Activation activation);

}  // namespace gwprune::cuda::implicit
