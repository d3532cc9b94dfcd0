// Gather kernels: the fused im2col + gather of a convolution's kept groups,
// and the feature gather of a linear layer.
//
// A group g is one column of weight.view(Cout, -1), i.e. the flat index of
// (c, i, j) in [C, kh, kw]. Only the rows of the input-expansion matrix that
// belong to kept groups are ever formed.
#pragma once

#include <ATen/ATen.h>

#include "../conv_geometry.h"

namespace gwprune::cuda {

// Most output pixels one NCHW gather call covers (callers slice larger images):
// keeps the kernel's 32-bit pixel loop clear of overflow.
constexpr int64_t kMaxGatherPixels = int64_t{1} << 30;

// NCHW input. Writes cols[image_count][K' + bias_rows][pixel_count] (pixels
// contiguous; the last bias_rows rows of each image are left for
// fill_bias_rows), covering images [image_begin, image_begin + image_count)
// and output pixels [pixel_begin, pixel_begin + pixel_count) of each. x is
// contiguous NCHW, group_idx is int32 [K'], cols is contiguous with room for
// the block.
void im2col_gather_nchw(const at::Tensor& x, const at::Tensor& group_idx, at::Tensor& cols,
                        const ConvGeometry& geometry, int64_t image_begin, int64_t image_count,
                        int64_t pixel_begin, int64_t pixel_count, int64_t bias_rows);

// Channels-last input. Pixels are flattened over (n, ho, wo); writes
// cols[pixel_count][K' + bias_rows] (kept groups contiguous; the last
// bias_rows columns of each pixel are left for fill_bias_rows) for flat pixels
// [pixel_begin, pixel_begin + pixel_count). x is contiguous in channels_last.
void im2col_gather_nhwc(const at::Tensor& x, const at::Tensor& group_idx, at::Tensor& cols,
                        const ConvGeometry& geometry, int64_t pixel_begin, int64_t pixel_count,
                        int64_t bias_rows);

// Linear layers: out[row_count][K' + bias_columns] holds
// x2d[row_begin + r][feature_idx[k]] in its first K' columns (the rest are left
// for fill_bias_rows). x2d is [M, in] with unit column stride and any row stride.
void gather_features(const at::Tensor& x2d, const at::Tensor& feature_idx, at::Tensor& out,
                     int64_t row_begin, int64_t row_count, int64_t bias_columns);

}  // namespace gwprune::cuda
