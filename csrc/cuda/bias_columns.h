// The bias of an NCHW conv added by its GEMM, as extra reduction rows.
//
// An NCHW output's bias runs along the rows of each image's GEMM, which
// cuBLASLt's bias epilogue cannot broadcast; prefilling the output with it and
// accumulating (beta = 1) costs a write and a read of the whole output. Instead
// the packed weight gets a few extra columns (the bias, then zeros) and the
// gathered operand as many extra rows (ones, then zeros), so the GEMM adds the
// bias on its own for the price of 8 or 16 more reduction steps.
#pragma once

#include <ATen/ATen.h>

namespace gwprune::cuda {

// Rows (and weight columns) the bias adds to a GEMM over `kept` groups: two
// that carry it (see widen_weight_with_bias), then zeros up to a multiple of
// 16. cuBLAS wants K a multiple of 8 for its tensor-core kernels, and on an
// H200 a K of 16m + 8 ran ~5 % slower than its neighbours
// (bench/experiments/gemm_k_alignment.py).
int64_t bias_rows_for(int64_t kept);

// [Cout, K'] weight -> [Cout, K' + bias_rows_for(K')]: the weight, then the
// bias and zeros. With split_for_tf32 (fp32 on TF32 tensor cores, which keep
// 10 mantissa bits) a finite bias is split into a TF32-exact high part and the
// remainder, one column each, so their sum is the fp32 bias; otherwise the
// bias is one column and the multiply by 1 is exact.
at::Tensor widen_weight_with_bias(const at::Tensor& weight, const at::Tensor& bias,
                                  bool split_for_tf32);

// Writes the bias_rows_for(kept) rows that follow the first `kept` rows of each
// of `images` blocks of cols[images][kept + bias rows][pixels]: ones, ones, zeros.
void fill_bias_rows(at::Tensor& cols, int64_t images, int64_t kept, int64_t pixels);

}  // namespace gwprune::cuda
