// conv2d_packed: checks the packed operands, owns the output-shape logic and
// hands the tensors to the implementation of their device (csrc/cpu, csrc/cuda).
#include "checks.h"
#include "ops.h"

namespace gwprune {
namespace {

std::pair<int64_t, int64_t> pair_arg(const std::vector<int64_t>& values, const char* name) {
  GWPRUNE_CHECK_VALUE(values.size() == 2, name, " must have 2 values, got ", values.size());
  return {values[0], values[1]};
}

}  // namespace

at::Tensor conv2d_packed(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& group_idx,
                         const std::optional<at::Tensor>& bias, std::vector<int64_t> kernel_size,
                         std::vector<int64_t> stride, std::vector<int64_t> padding,
                         std::vector<int64_t> dilation, int64_t workspace_bytes) {
  CHECK_DIM(x, 4);
  CHECK_DIM(weight, 2);
  CHECK_DIM(group_idx, 1);
  CHECK_FLOATING(x);
  CHECK_SAME_DTYPE(weight, x);
  CHECK_SAME_DEVICE(weight, x);
  CHECK_SAME_DEVICE(group_idx, x);
  CHECK_CONTIGUOUS(weight);
  CHECK_CONTIGUOUS(group_idx);
  GWPRUNE_CHECK_TYPE(group_idx.scalar_type() == at::kInt, "group_idx must be int32, got ",
                     group_idx.scalar_type());
  GWPRUNE_CHECK_VALUE(weight.size(1) == group_idx.size(0), "weight has ", weight.size(1),
                      " kept columns but group_idx has ", group_idx.size(0), " entries");
  if (bias.has_value()) {
    const at::Tensor& b = *bias;
    CHECK_DIM(b, 1);
    CHECK_SAME_DTYPE(b, x);
    CHECK_SAME_DEVICE(b, x);
    GWPRUNE_CHECK_VALUE(b.size(0) == weight.size(0), "bias must have ", weight.size(0),
                        " elements (out_channels), got ", b.size(0));
  }
  GWPRUNE_CHECK_VALUE(workspace_bytes > 0, "workspace_bytes must be positive, got ",
                      workspace_bytes);

  const auto [kernel_h, kernel_w] = pair_arg(kernel_size, "kernel_size");
  const auto [stride_h, stride_w] = pair_arg(stride, "stride");
  const auto [pad_h, pad_w] = pair_arg(padding, "padding");
  const auto [dilation_h, dilation_w] = pair_arg(dilation, "dilation");
  GWPRUNE_CHECK_VALUE(kernel_h > 0 && kernel_w > 0, "kernel_size must be positive, got ",
                      kernel_size);
  GWPRUNE_CHECK_VALUE(stride_h > 0 && stride_w > 0, "stride must be positive, got ", stride);
  GWPRUNE_CHECK_VALUE(pad_h >= 0 && pad_w >= 0, "padding must be non-negative, got ", padding);
  GWPRUNE_CHECK_VALUE(dilation_h > 0 && dilation_w > 0, "dilation must be positive, got ",
                      dilation);

  ConvGeometry geometry{x.size(1), x.size(2), x.size(3),  kernel_h,   kernel_w, stride_h, stride_w,
                        pad_h,     pad_w,     dilation_h, dilation_w, 0,        0};
  geometry.out_h = conv_out_size(geometry.height, kernel_h, stride_h, pad_h, dilation_h);
  geometry.out_w = conv_out_size(geometry.width, kernel_w, stride_w, pad_w, dilation_w);
  GWPRUNE_CHECK_VALUE(geometry.out_h > 0 && geometry.out_w > 0, "output size would be (",
                      geometry.out_h, ", ", geometry.out_w, ") for input (", geometry.height, ", ",
                      geometry.width, "): the input is too small for the kernel");

  GWPRUNE_CHECK_VALUE(x.is_cpu() || x.is_cuda(),
                      "gwprune._C.conv2d_packed runs CPU and CUDA tensors only, got x on ",
                      x.device());
  if (x.is_cpu()) {
    return cpu::conv2d_packed_cpu(x, weight, group_idx, bias, geometry, workspace_bytes);
  }
#ifdef GWPRUNE_WITH_CUDA
  return cuda::conv2d_packed_cuda(x, weight, group_idx, bias, geometry, workspace_bytes);
#else
  TORCH_CHECK(false, "gwprune was built without CUDA kernels");
#endif
}

}  // namespace gwprune
