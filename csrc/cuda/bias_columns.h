// How a layer's bias reaches its output (plan_gemm_bias), and the bias added
// by the GEMM itself as extra reduction rows.
//
// Where cuBLASLt's bias epilogue cannot help (an NCHW output, whose bias runs
// along each image's GEMM rows; strict fp32, which has no epilogue here),
// prefilling the output with the bias and accumulating (beta = 1) costs a
// write and a read of the whole output. Instead the packed weight gets a few
// extra columns (the bias, then zeros) and the gathered operand as many extra
// rows or columns (ones, then zeros), so the GEMM adds the bias on its own for
// the price of 8 or 16 more reduction steps.
#pragma once

#include <ATen/ATen.h>

#include <optional>

namespace gwprune::cuda {

// Rows (and weight columns) the bias adds to a GEMM over `kept` groups: two
// that carry it (see widen_weight_with_bias), then zeros up to a multiple of
// 16. cuBLAS wants K a multiple of 8 for its tensor-core kernels, and on an
// H200 a K of 16m + 8 ran ~5 % slower than its neighbours
// (bench/experiments/gemm_k_alignment.py).
int64_t bias_rows_for(int64_t kept);

// How one call adds its bias, decided once for the conv and linear paths.
struct GemmBias {
  at::Tensor epilogue;          // defined: cuBLASLt's bias epilogue adds it
  at::Tensor weight;            // the GEMM's weight: the packed one, or it widened with the bias
  int64_t bias_rows = 0;        // extra reduction rows the gather leaves for fill_bias_rows
  float beta = 0.0f;            // 1: `out` was prefilled with the bias, the GEMM accumulates
  int64_t budget_elements = 0;  // workspace left for the gathered operand (>= K')
};

// In order of preference: the epilogue (when epilogue_allowed and the dtype
// has one); extra reduction rows when the output is at least 8x the widened
// weight (the prefill's traffic scales with the output, the rows' with the
// weight) and the widened weight, which counts against the workspace cap,
// takes at most a quarter of it; else a prefilled `out`. Poisons `out` in
// tests (prepare_output). `weight` is the packed [Cout, K'] weight.
GemmBias plan_gemm_bias(at::Tensor& out, const at::Tensor& weight,
                        const std::optional<at::Tensor>& bias, bool epilogue_allowed,
                        bool allow_tf32, int64_t workspace_bytes);

// [Cout, K'] weight -> [Cout, K' + bias_rows_for(K')]: the weight, then the
// bias and zeros. With split_for_tf32 (fp32 on TF32 tensor cores, which keep
// 10 mantissa bits) a finite bias is split into a TF32-exact high part and the
// remainder, one column each, so their sum is the fp32 bias; otherwise the
// bias is one column and the multiply by 1 is exact.
at::Tensor widen_weight_with_bias(const at::Tensor& weight, const at::Tensor& bias,
                                  bool split_for_tf32);

// Writes the bias_rows_for(kept) rows that follow the first `kept` rows of each
// of `blocks` blocks of cols[blocks][kept + bias rows][width]: ones, ones, zeros.
// NCHW conv: a block per image, width = pixels; channels_last conv and linear:
// a block per operand row, width = 1 (the extra entries are columns).
void fill_bias_rows(at::Tensor& cols, int64_t blocks, int64_t kept, int64_t width);

// Writes bias[(i / inner) % bias.numel()] to element i, i < total, of the dense memory
// at `data` (of `dtype`, which the bias has too): inner = H*W for an NCHW output, 1 for
// a channels_last one or for rows of a [rows, channels] output; the output prefill of
// buffers.h's prepare_output and of gemm_rows. One kernel launch: a view + expand +
// copy_ chain cost several dispatcher calls of host time per call.
void fill_with_bias(void* data, at::ScalarType dtype, int64_t total, const at::Tensor& bias,
                    int64_t inner);

}  // namespace gwprune::cuda
