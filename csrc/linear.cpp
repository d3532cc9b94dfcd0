// linear_packed: checks the packed operands and hands the tensors to the
// implementation of their device (csrc/cpu, csrc/cuda); flattening x to 2-D is
// decided here.
#include "checks.h"
#include "ops.h"

namespace gwprune {

at::Tensor linear_packed(const at::Tensor& x, const at::Tensor& weight,
                         const at::Tensor& feature_idx, const std::optional<at::Tensor>& bias,
                         int64_t workspace_bytes) {
  GWPRUNE_CHECK_VALUE(x.dim() >= 1, "x must have at least 1 dimension");
  CHECK_DIM(weight, 2);
  CHECK_DIM(feature_idx, 1);
  CHECK_FLOATING(x);
  CHECK_SAME_DTYPE(weight, x);
  CHECK_SAME_DEVICE(weight, x);
  CHECK_SAME_DEVICE(feature_idx, x);
  CHECK_CONTIGUOUS(weight);
  CHECK_CONTIGUOUS(feature_idx);
  GWPRUNE_CHECK_TYPE(feature_idx.scalar_type() == at::kInt, "feature_idx must be int32, got ",
                     feature_idx.scalar_type());
  GWPRUNE_CHECK_VALUE(weight.size(1) == feature_idx.size(0), "weight has ", weight.size(1),
                      " kept columns but feature_idx has ", feature_idx.size(0), " entries");
  if (bias.has_value()) {
    const at::Tensor& b = *bias;
    CHECK_DIM(b, 1);
    CHECK_SAME_DTYPE(b, x);
    CHECK_SAME_DEVICE(b, x);
    GWPRUNE_CHECK_VALUE(b.size(0) == weight.size(0), "bias must have ", weight.size(0),
                        " elements (out_features), got ", b.size(0));
  }
  GWPRUNE_CHECK_VALUE(workspace_bytes > 0, "workspace_bytes must be positive, got ",
                      workspace_bytes);
  GWPRUNE_CHECK_VALUE(x.is_cpu() || x.is_cuda(),
                      "gwprune._C.linear_packed runs CPU and CUDA tensors only, got x on ",
                      x.device());

  const int64_t in_features = x.size(-1);
  const int64_t rows = c10::multiply_integers(x.sizes().begin(), x.sizes().end() - 1);
  at::Tensor x2d = x.reshape({rows, in_features});
  // The gather needs unit stride along features; rows may have any stride.
  if (x2d.stride(1) != 1 && in_features > 1) x2d = x2d.contiguous();
  std::vector<int64_t> out_shape(x.sizes().begin(), x.sizes().end() - 1);
  out_shape.push_back(weight.size(0));
  if (x.is_cpu()) {
    return cpu::linear_packed_cpu(x2d, weight, feature_idx, bias, workspace_bytes).view(out_shape);
  }
#ifdef GWPRUNE_WITH_CUDA
  return cuda::linear_packed_cuda(x2d, weight, feature_idx, bias, workspace_bytes).view(out_shape);
#else
  TORCH_CHECK(false, "gwprune was built without CUDA kernels");
#endif
}

}  // namespace gwprune
