// linear_packed: checks the packed operands and hands the tensors to the
// implementation of their device (csrc/cpu, csrc/cuda); flattening x to 2-D is decided
// here. linear_packed_eager and linear_cached are the eager calls of
// gwprune.ops.linear_packed and of gwprune.ops.linear served from the pack cache (see
// conv2d.cpp).
#include "checks.h"
#include "ops.h"
#include "pack_cache.h"
#include "python_args.h"

namespace gwprune {

at::Tensor linear_packed(const at::Tensor& x, const at::Tensor& weight,
                         const at::Tensor& feature_idx, const std::optional<at::Tensor>& bias,
                         int64_t workspace_bytes, const std::string& activation) {
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
  return run_linear(x, weight, feature_idx, bias, workspace_bytes, parse_activation(activation));
}

at::Tensor linear_packed_eager(py::handle x_arg, py::handle weight_arg, py::handle feature_idx_arg,
                               py::handle bias_arg, py::handle in_features_arg,
                               int64_t workspace_bytes, const std::string& activation) {
  const at::Tensor& x = python_args::tensor(x_arg, "x");
  checks::check_float_tensor(x, "x");
  const at::Tensor& weight = python_args::tensor(weight_arg, "packed.weight");
  checks::check_packed_weight(weight, x);
  const at::Tensor& feature_idx = python_args::tensor(feature_idx_arg, "packed.feature_idx");
  checks::check_packed_index(feature_idx, "packed.feature_idx", x, weight.size(1));
  const int64_t in_features = python_args::count(in_features_arg, "packed.in_features");
  checks::check_linear_input(x, in_features);
  const std::optional<at::Tensor> bias = python_args::optional_tensor(bias_arg, "bias");
  checks::check_bias(bias, x, weight.size(0), "out_features");
  GWPRUNE_CHECK_VALUE(workspace_bytes > 0, "workspace_bytes must be positive, got ",
                      workspace_bytes);
  return run_linear(x, weight, feature_idx, bias, workspace_bytes, parse_activation(activation));
}

namespace {

// linear_cached_eager and linear_cached after reading x (as run_cached_conv2d).
at::Tensor run_cached_linear(const at::Tensor& x, const at::Tensor& weight,
                             const at::Tensor& feature_idx, py::handle bias_arg,
                             int64_t in_features, int64_t workspace_bytes, int64_t packed_stream,
                             const std::string& activation) {
  checks::check_float_tensor(x, "x");
  checks::check_same_dtype_device(weight, "weight", x);  // as in run_cached_conv2d
  checks::check_linear_input(x, in_features);
  const std::optional<at::Tensor> bias = python_args::optional_tensor(bias_arg, "bias");
  checks::check_bias(bias, x, weight.size(0), "out_features");
  GWPRUNE_CHECK_VALUE(workspace_bytes > 0, "workspace_bytes must be positive, got ",
                      workspace_bytes);
  const Activation parsed_activation = parse_activation(activation);
  use_cached_operands(weight, feature_idx, packed_stream);
  return run_linear(x, weight, feature_idx, bias, workspace_bytes, parsed_activation);
}

}  // namespace

at::Tensor linear_cached_eager(py::handle x_arg, const at::Tensor& weight,
                               const at::Tensor& feature_idx, py::handle bias_arg,
                               int64_t in_features, int64_t workspace_bytes, int64_t packed_stream,
                               const std::string& activation) {
  const at::Tensor& x = python_args::tensor(x_arg, "x");
  return run_cached_linear(x, weight, feature_idx, bias_arg, in_features, workspace_bytes,
                           packed_stream, activation);
}

std::optional<at::Tensor> linear_cached(py::handle x_arg, py::handle weight_arg,
                                        py::handle keep_idx_arg, py::handle bias_arg,
                                        int64_t workspace_bytes) {
  // As conv2d_cached: anything but three tensors, or a miss, is left to Python.
  if (!THPVariable_Check(x_arg.ptr()) || !THPVariable_Check(weight_arg.ptr()) ||
      !THPVariable_Check(keep_idx_arg.ptr()))
    return std::nullopt;
  const at::Tensor& weight = THPVariable_Unpack(weight_arg.ptr());
  const std::optional<pack_cache::Packed> packed =
      pack_cache::lookup(weight, THPVariable_Unpack(keep_idx_arg.ptr()), pack_cache::kLinear);
  if (!packed.has_value()) return std::nullopt;
  // A hit: weight has the [out, in] sizes it was packed with.
  return run_cached_linear(THPVariable_Unpack(x_arg.ptr()), packed->weight, packed->index, bias_arg,
                           weight.size(1), workspace_bytes, packed->stream_id, "none");
}

at::Tensor run_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& feature_idx,
                      const std::optional<at::Tensor>& bias, int64_t workspace_bytes,
                      Activation activation) {
  GWPRUNE_CHECK_VALUE(x.is_cpu() || x.is_cuda(),
                      "gwprune._C.linear_packed runs CPU and CUDA tensors only, got x on ",
                      x.device());
  const int64_t in_features = x.size(-1);
  const int64_t rows = c10::multiply_integers(x.sizes().begin(), x.sizes().end() - 1);
  // A 2-D x is used as it is (a reshape and a view are two dispatcher calls).
  const bool flat = x.dim() == 2;
  at::Tensor x2d = flat ? x : x.reshape({rows, in_features});
  // The gather needs unit stride along features; rows may have any stride.
  if (x2d.stride(1) != 1 && in_features > 1) x2d = x2d.contiguous();
  at::Tensor out;
  if (x.is_cpu()) {
    out = cpu::linear_packed_cpu(x2d, weight, feature_idx, bias, workspace_bytes);
    apply_activation_(out, activation);
  } else {
#ifdef GWPRUNE_WITH_CUDA
    out = cuda::linear_packed_cuda(x2d, weight, feature_idx, bias, workspace_bytes, activation);
#else
    TORCH_CHECK(false, "gwprune was built without CUDA kernels");
#endif
  }
  if (flat) return out;
  std::vector<int64_t> out_shape(x.sizes().begin(), x.sizes().end() - 1);
  out_shape.push_back(weight.size(0));
  return out.view(out_shape);
}

}  // namespace gwprune
