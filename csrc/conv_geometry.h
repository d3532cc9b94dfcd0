// Shape arithmetic of a 2-D convolution, shared by the checks and the kernels.
#pragma once

#include <c10/macros/Macros.h>

#include <cstdint>

namespace gwprune {

struct ConvGeometry {
  int64_t channels, height, width;  // input C, H, W
  int64_t kernel_h, kernel_w;
  int64_t stride_h, stride_w;
  int64_t pad_h, pad_w;
  int64_t dilation_h, dilation_w;
  int64_t out_h, out_w;

  C10_HOST_DEVICE int64_t out_pixels() const { return out_h * out_w; }
  C10_HOST_DEVICE int64_t num_groups() const { return channels * kernel_h * kernel_w; }
};

// Output extent of one spatial dimension, as torch.nn.functional.conv2d computes it.
inline int64_t conv_out_size(int64_t in, int64_t kernel, int64_t stride, int64_t pad,
                             int64_t dilation) {
  return (in + 2 * pad - dilation * (kernel - 1) - 1) / stride + 1;
}

}  // namespace gwprune
