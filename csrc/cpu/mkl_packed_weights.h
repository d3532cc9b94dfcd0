// Pre-packed copies of the CPU linear's fp32 packed weights, made and multiplied by oneDNN
// (where torch has it: the default) or MKL. (The file keeps its first library's name.)
//
// at::addmm hands MKL the weight in the plain layout, and MKL re-packs it into
// its GEMM panels on every call. torch.ops.mkl._mkl_reorder_linear_weight packs
// a weight once in MKL's cblas_sgemm_pack layout and torch.ops.mkl._mkl_linear
// multiplies by that copy (cblas_sgemm_compute); on a 2-core Xeon the BERT FFN's
// keep .5 GEMM (128 x 384 -> 3072, 2 threads) took 944 us that way against
// 1106-1420 us for F.linear. torch.ops.mkldnn._reorder_linear_weight and
// _linear_pointwise do the same with oneDNN's blocked layout; on a 2-core EPYC, where
// MKL's packed GEMM was slower than addmm, gwprune's keep .5 FFN took 1.74 ms with
// oneDNN's copy, 2.34 with MKL's, 2.35 on addmm (bench/NOTES.md, CPU section). This
// file keeps such copies between calls. The fp32 channels_last conv of one chunk uses
// them too: its GEMM (gathered rows @ W^T + bias) is the linear's (conv2d_cpu.cpp), on
// MKL's copy by default (PackedGemmUse::kConv).
//
// Contract:
// - Which calls: fp32, CPU, one GEMM over all rows of the 2-D input (the caller
//   asks only when its chunk plan has one chunk), no operand requiring grad,
//   torch built with the library's two ops, the path enabled (set_mkl_linear_enabled,
//   default on). Any other call gets an undefined tensor and runs at::addmm.
// - Per row count: MKL's packed layout is made for GEMMs of the M it was packed
//   for (_mkl_linear runs F.linear for any other M), so a copy is kept per row
//   count, for the kMaxRowCounts most recently used row counts of each weight.
//   The first call of a row count packs, so whether a call takes this path
//   depends on its shape, not on the calls before it.
// - Validity: keyed by the weight tensor (its TensorImpl through a weak
//   reference: the store never keeps a weight alive), valid while the weight's
//   version counter, data pointer and sizes are those seen at packing. In-place
//   edits (w.mul_(), w[...] = v, copy_, load_state_dict) and .data swaps repack.
//   Not seen: writes that bypass the version counter (w.data.mul_(), numpy(),
//   DLPack); gwprune.clear_pack_cache() drops every copy. Inference tensors have
//   no version counter and are never packed.
// - Lifetime: the copies of a weight that died are freed at the next miss (any
//   weight's) or clear.
// - Memory: a copy holds about the weight's bytes resident; MKL's buffer also
//   reserves ~7.5 MiB of address space that stays untouched (MKL 2024.2).
// - Numerics: the same products as addmm, summed in the library's order, within fp32
//   rounding of addmm. MKL's packed GEMM gave the same bits with 1 and 2
//   threads for 128 rows at K' 256-3072; with fewer rows and K' >= 1024 (or one
//   row) the bits depend on the thread count, also the one at packing time, by
//   up to 4.4e-7 relative. oneDNN's gave the same bits for 1 and 2 threads, at
//   packing and at the call, on every shape tried (1-392 rows, K' 384-2304)
//   (tests/test_mkl_linear.py runs every test with each library).
// - Library: packed_gemm_library / set_packed_gemm_library (ops.h); a weight's copies
//   of the two libraries are kept apart (each is made for one library and row count).
// - Thread-safe: one mutex guards the table; packing runs outside it.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <optional>

namespace gwprune::cpu {

// Row counts whose copies each weight keeps (least recently used dropped first).
constexpr int64_t kMaxRowCounts = 4;

// The store's core, for any copy derived from a weight: the copy of `weight` in `form`
// (a library's row-count form above, or a caller's negative one), made by `make` on a
// miss, under the rules above (validity, lifetime, 4 forms per weight, thread safety).
at::Tensor derived_weight_copy(const at::Tensor& weight, int64_t form,
                               const std::function<at::Tensor()>& make);

// Whether copies of `weight` may be kept for this call: fp32 CPU tensors, no operand
// requiring grad, the weight not an inference tensor (no version counter).
bool may_derive(const at::Tensor& weight, const at::Tensor& input,
                const std::optional<at::Tensor>& bias);

// A packed copy and the library that made it (both libraries' copies are MKL-DNN tensors).
struct PackedGemmWeight {
  at::Tensor copy;
  bool onednn = false;
  bool defined() const { return copy.defined(); }
};

// Who multiplies by the copy: the library's default differs (mkl_packed_weights.cpp, library).
enum class PackedGemmUse { kLinear, kConv };

// The copy (and its library) of `weight` ([out, K'] fp32, contiguous) packed for GEMMs of `rows`
// rows gathered from `input` (whose dtype, device and grad mode decide with the weight's whether
// the call qualifies), made now if needed; undefined when the call does not qualify (above). Asked
// before the gathered operand exists, so a call that does not qualify allocates nothing here.
PackedGemmWeight mkl_packed_weight(const at::Tensor& weight, const at::Tensor& input, int64_t rows,
                                   const std::optional<at::Tensor>& bias,
                                   PackedGemmUse use = PackedGemmUse::kLinear);

// out [rows, out] = xg [rows, K'] (contiguous) @ weight^T (+ bias), through the
// copy `packed` of `weight` made for xg's rows.
at::Tensor mkl_packed_linear(const at::Tensor& xg, const PackedGemmWeight& packed,
                             const at::Tensor& weight, const std::optional<at::Tensor>& bias);

}  // namespace gwprune::cpu
