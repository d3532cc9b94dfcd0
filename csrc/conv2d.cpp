// conv2d_packed: checks the packed operands, owns the output-shape logic and
// hands the tensors to the implementation of their device (csrc/cpu, csrc/cuda).
// conv2d_packed_eager and conv2d_cached are the eager calls of gwprune.ops.conv2d_packed
// and of gwprune.ops.conv2d served from the pack cache (pack_cache.h: the lookup is here
// too; conv2d_cached_eager takes the cached packed weight as arguments): Python's checks,
// in Python's order and words (checks.h), then the op, in one call.
#include "checks.h"
#include "ops.h"
#include "pack_cache.h"
#include "python_args.h"

namespace gwprune {
namespace {

std::pair<int64_t, int64_t> pair_arg(const std::vector<int64_t>& values, const char* name) {
  GWPRUNE_CHECK_VALUE(values.size() == 2, name, " must have 2 values, got ", values.size());
  return {values[0], values[1]};
}

void check_backend(const std::string& backend) {
  GWPRUNE_CHECK_VALUE(backend == "auto" || backend == "implicit" || backend == "explicit",
                      "backend must be 'auto', 'implicit' or 'explicit', got '", backend, "'");
}

}  // namespace

at::Tensor conv2d_packed(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& group_idx,
                         const std::optional<at::Tensor>& bias, std::vector<int64_t> kernel_size,
                         std::vector<int64_t> stride, std::vector<int64_t> padding,
                         std::vector<int64_t> dilation, int64_t workspace_bytes,
                         const std::string& backend, const std::string& activation) {
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
  check_backend(backend);
  GWPRUNE_CHECK_VALUE(workspace_bytes > 0, "workspace_bytes must be positive, got ",
                      workspace_bytes);
  const Activation parsed_activation = parse_activation(activation);

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

  return run_conv2d(x, weight, group_idx, bias, geometry, workspace_bytes, backend,
                    parsed_activation);
}

namespace {

// The checks of gwprune.ops.conv2d* that follow the weight's: x against the layer, the
// conv arguments, the bias (_checks.check_conv2d_input, check_bias).
ConvGeometry check_conv_arguments(const at::Tensor& x, int64_t in_channels, checks::Pair kernel,
                                  py::handle stride, py::handle padding, py::handle dilation) {
  checks::check_conv2d_x(x, in_channels, kernel);
  const checks::Pair stride_pair = python_args::pair(stride, "stride", 1);
  const checks::Pair padding_pair = python_args::pair(padding, "padding", 0);
  const checks::Pair dilation_pair = python_args::pair(dilation, "dilation", 1);
  return checks::check_conv2d_output(x, kernel, stride_pair, padding_pair, dilation_pair);
}

}  // namespace

at::Tensor conv2d_packed_eager(py::handle x_arg, py::handle weight_arg, py::handle group_idx_arg,
                               py::handle bias_arg, py::handle in_channels_arg,
                               py::handle kernel_size_arg, py::handle stride, py::handle padding,
                               py::handle dilation, int64_t workspace_bytes,
                               const std::string& backend, const std::string& activation) {
  const at::Tensor& x = python_args::tensor(x_arg, "x");
  checks::check_float_tensor(x, "x");
  const at::Tensor& weight = python_args::tensor(weight_arg, "packed.weight");
  checks::check_packed_weight(weight, x);
  const at::Tensor& group_idx = python_args::tensor(group_idx_arg, "packed.group_idx");
  checks::check_packed_index(group_idx, "packed.group_idx", x, weight.size(1));
  const int64_t in_channels = python_args::count(in_channels_arg, "packed.in_channels");
  const checks::Pair kernel = python_args::pair(kernel_size_arg, "packed.kernel_size", 1);
  const ConvGeometry geometry =
      check_conv_arguments(x, in_channels, kernel, stride, padding, dilation);
  const std::optional<at::Tensor> bias = python_args::optional_tensor(bias_arg, "bias");
  checks::check_bias(bias, x, weight.size(0), "out_channels");
  GWPRUNE_CHECK_VALUE(workspace_bytes > 0, "workspace_bytes must be positive, got ",
                      workspace_bytes);
  check_backend(backend);
  return run_conv2d(x, weight, group_idx, bias, geometry, workspace_bytes, backend,
                    parse_activation(activation));
}

namespace {

// conv2d_cached_eager and conv2d_cached after reading x: the checks of gwprune.ops.conv2d
// that a call served from the pack cache still needs, then the op.
at::Tensor run_cached_conv2d(const at::Tensor& x, const at::Tensor& weight,
                             const at::Tensor& group_idx, py::handle bias_arg, int64_t in_channels,
                             int64_t kernel_h, int64_t kernel_w, py::handle stride,
                             py::handle padding, py::handle dilation, int64_t workspace_bytes,
                             int64_t packed_stream, const std::string& backend,
                             const std::string& activation) {
  checks::check_float_tensor(x, "x");
  // The packed weight has the dtype and device of the weight it was packed from, and
  // keep_idx was on that device too (checked when it was packed).
  checks::check_same_dtype_device(weight, "weight", x);
  const ConvGeometry geometry =
      check_conv_arguments(x, in_channels, {kernel_h, kernel_w}, stride, padding, dilation);
  const std::optional<at::Tensor> bias = python_args::optional_tensor(bias_arg, "bias");
  checks::check_bias(bias, x, weight.size(0), "out_channels");
  GWPRUNE_CHECK_VALUE(workspace_bytes > 0, "workspace_bytes must be positive, got ",
                      workspace_bytes);
  check_backend(backend);
  const Activation parsed_activation = parse_activation(activation);
  use_cached_operands(weight, group_idx, packed_stream);
  return run_conv2d(x, weight, group_idx, bias, geometry, workspace_bytes, backend,
                    parsed_activation);
}

}  // namespace

at::Tensor conv2d_cached_eager(py::handle x_arg, const at::Tensor& weight,
                               const at::Tensor& group_idx, py::handle bias_arg,
                               int64_t in_channels, int64_t kernel_h, int64_t kernel_w,
                               py::handle stride, py::handle padding, py::handle dilation,
                               int64_t workspace_bytes, int64_t packed_stream,
                               const std::string& backend, const std::string& activation) {
  const at::Tensor& x = python_args::tensor(x_arg, "x");
  return run_cached_conv2d(x, weight, group_idx, bias_arg, in_channels, kernel_h, kernel_w, stride,
                           padding, dilation, workspace_bytes, packed_stream, backend, activation);
}

std::optional<at::Tensor> conv2d_cached(py::handle x_arg, py::handle weight_arg,
                                        py::handle keep_idx_arg, py::handle bias_arg,
                                        py::handle stride, py::handle padding, py::handle dilation,
                                        int64_t workspace_bytes, const std::string& backend) {
  // Anything but three tensors is a miss: the Python path raises its errors.
  if (!THPVariable_Check(x_arg.ptr()) || !THPVariable_Check(weight_arg.ptr()) ||
      !THPVariable_Check(keep_idx_arg.ptr()))
    return std::nullopt;
  const at::Tensor& x = THPVariable_Unpack(x_arg.ptr());
  const at::Tensor& weight = THPVariable_Unpack(weight_arg.ptr());
  const std::optional<pack_cache::Packed> packed = pack_cache::lookup(
      weight, THPVariable_Unpack(keep_idx_arg.ptr()), pack_cache::conv_layout(x));
  if (!packed.has_value()) return std::nullopt;
  // A hit: weight has the [Cout, C, kh, kw] sizes it was packed with.
  return run_cached_conv2d(x, packed->weight, packed->index, bias_arg, weight.size(1),
                           weight.size(2), weight.size(3), stride, padding, dilation,
                           workspace_bytes, packed->stream_id, backend, "none");
}

at::Tensor run_conv2d(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& group_idx,
                      const std::optional<at::Tensor>& bias, const ConvGeometry& geometry,
                      int64_t workspace_bytes, const std::string& backend, Activation activation) {
  GWPRUNE_CHECK_VALUE(x.is_cpu() || x.is_cuda(),
                      "gwprune._C.conv2d_packed runs CPU and CUDA tensors only, got x on ",
                      x.device());
  if (x.is_cpu()) {  // the backend names CUDA paths; a CPU conv has one
    at::Tensor out = cpu::conv2d_packed_cpu(x, weight, group_idx, bias, geometry, workspace_bytes);
    apply_activation_(out, activation);
    return out;
  }
#ifdef GWPRUNE_WITH_CUDA
  return cuda::conv2d_packed_cuda(x, weight, group_idx, bias, geometry, workspace_bytes, backend,
                                  activation);
#else
  (void)backend;
  (void)activation;
  TORCH_CHECK(false, "gwprune was built without CUDA kernels");
#endif
}

void use_cached_operands(const at::Tensor& weight, const at::Tensor& index, int64_t packed_stream) {
  if (!weight.is_cuda()) return;
#ifdef GWPRUNE_WITH_CUDA
  cuda::use_cached_operands(weight, index, packed_stream);
#else
  (void)index;
  (void)packed_stream;
#endif
}

}  // namespace gwprune
