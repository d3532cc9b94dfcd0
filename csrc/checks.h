// Argument checks whose messages name the argument and the problem.
//
// Every public entry point validates with these before touching memory, so a
// bad call raises a Python exception (c10::Error -> RuntimeError,
// c10::ValueError -> ValueError, c10::TypeError -> TypeError) instead of
// reading out of bounds.
#pragma once

#include <torch/extension.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <utility>

#include "conv_geometry.h"
#include "error_message.h"

#define CHECK_DIM(x, n) \
  GWPRUNE_CHECK_VALUE((x).dim() == (n), #x " must be a ", n, "-D tensor, got ", (x).dim(), "-D")

#define CHECK_SHAPE(x, ...)                                                                   \
  GWPRUNE_CHECK_VALUE((x).sizes() == at::IntArrayRef({__VA_ARGS__}), #x " must have shape (", \
                      #__VA_ARGS__, "), got ", (x).sizes())

#define CHECK_SAME_DEVICE(x, ref)                                                 \
  GWPRUNE_CHECK_VALUE((x).device() == (ref).device(), #x " is on ", (x).device(), \
                      " but " #ref " is on ", (ref).device())

#define CHECK_SAME_DTYPE(x, ref)                                                 \
  GWPRUNE_CHECK_TYPE((x).scalar_type() == (ref).scalar_type(), #x " has dtype ", \
                     (x).scalar_type(), " but " #ref " has dtype ", (ref).scalar_type())

#define CHECK_INDEX_DTYPE(x)                                                          \
  GWPRUNE_CHECK_TYPE((x).scalar_type() == at::kInt || (x).scalar_type() == at::kLong, \
                     #x " must be an int32 or int64 tensor, got ", (x).scalar_type())

#define CHECK_CONTIGUOUS(x) GWPRUNE_CHECK_VALUE((x).is_contiguous(), #x " must be contiguous")

#define CHECK_FLOATING(x)                                                                      \
  GWPRUNE_CHECK_TYPE((x).scalar_type() == at::kFloat || (x).scalar_type() == at::kDouble ||    \
                         (x).scalar_type() == at::kHalf || (x).scalar_type() == at::kBFloat16, \
                     #x " must be float32, float64, float16 or bfloat16, got ", (x).scalar_type())

// ---- the public ops' checks, as python/gwprune/_checks.py words them ------------------
// The eager entry points (conv2d_*_eager, linear_*_eager) run these in the order
// gwprune.ops runs its Python checks, with the same exception types and the same
// messages (shapes as Python tuples, dtypes as torch.float32), so a CUDA call can skip the
// Python checks without changing what a bad call raises (tests/test_eager_entry.py
// compares the two for every bad argument of tests/test_validation.py).
namespace gwprune::checks {

inline std::string py_dtype(c10::ScalarType type) {
  switch (type) {
    case at::kFloat:
      return "torch.float32";
    case at::kDouble:
      return "torch.float64";
    case at::kHalf:
      return "torch.float16";
    case at::kBFloat16:
      return "torch.bfloat16";
    case at::kInt:
      return "torch.int32";
    case at::kLong:
      return "torch.int64";
    case at::kShort:
      return "torch.int16";
    case at::kChar:
      return "torch.int8";
    case at::kByte:
      return "torch.uint8";
    case at::kBool:
      return "torch.bool";
    case at::kComplexFloat:
      return "torch.complex64";
    case at::kComplexDouble:
      return "torch.complex128";
    case at::kComplexHalf:
      return "torch.complex32";
    default:
      return std::string("torch.") + c10::toString(type);
  }
}

// (4, 8, 8), (5,), (): what tuple(t.shape) prints.
inline std::string py_shape(c10::IntArrayRef sizes) {
  std::string text = "(";
  for (size_t i = 0; i < sizes.size(); ++i) text += (i ? ", " : "") + std::to_string(sizes[i]);
  return text + (sizes.size() == 1 ? ",)" : ")");
}

struct Pair {
  int64_t first, second;
  std::string str() const { return py_shape({first, second}); }
};

inline bool is_float_dtype(c10::ScalarType type) {
  return type == at::kFloat || type == at::kDouble || type == at::kHalf || type == at::kBFloat16;
}

inline void check_float_tensor(const at::Tensor& t, const char* name) {
  GWPRUNE_CHECK_TYPE(is_float_dtype(t.scalar_type()), name,
                     " must be float32, float64, float16 or bfloat16, got ",
                     py_dtype(t.scalar_type()));
}

inline void check_same_device(const at::Tensor& t, const char* name, const at::Tensor& x) {
  GWPRUNE_CHECK_VALUE(t.device() == x.device(), name, " is on ", t.device(), " but x is on ",
                      x.device());
}

inline void check_same_dtype_device(const at::Tensor& t, const char* name, const at::Tensor& x) {
  GWPRUNE_CHECK_TYPE(t.scalar_type() == x.scalar_type(), name, " has dtype ",
                     py_dtype(t.scalar_type()), " but x has dtype ", py_dtype(x.scalar_type()));
  check_same_device(t, name, x);
}

inline void check_bias(const std::optional<at::Tensor>& bias, const at::Tensor& x,
                       int64_t out_features, const char* what) {
  if (!bias.has_value()) return;
  check_same_dtype_device(*bias, "bias", x);
  GWPRUNE_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == out_features, "bias must have shape (",
                      out_features, ",) (", what, "), got ", py_shape(bias->sizes()));
}

// x against the layer: rank, channels, kernel (_checks.check_conv2d_input up to the
// stride, padding and dilation arguments, which the caller parses next).
inline void check_conv2d_x(const at::Tensor& x, int64_t in_channels, Pair kernel) {
  GWPRUNE_CHECK_VALUE(x.dim() == 4, "x must be a 4-D [N, C, H, W] tensor, got shape ",
                      py_shape(x.sizes()));
  const int64_t channels = x.size(1);
  const bool grouped = in_channels != 0 && channels % in_channels == 0 && channels != in_channels;
  GWPRUNE_CHECK_VALUE(channels == in_channels, "x has ", channels, " channels but weight expects ",
                      in_channels, grouped ? " (a grouped convolution? pass groups=)" : "");
  GWPRUNE_CHECK_VALUE(std::min(kernel.first, kernel.second) > 0,
                      "kernel size must be positive, got ", kernel.str());
}

// The output extent, and the CUDA kernels' per-image limits (_checks.check_cuda_conv_limits;
// csrc/cuda/conv2d_cuda.cpp check_conv_fits_32bit keeps them as a backstop).
inline ConvGeometry check_conv2d_output(const at::Tensor& x, Pair kernel, Pair stride, Pair padding,
                                        Pair dilation) {
  ConvGeometry g{x.size(1),
                 x.size(2),
                 x.size(3),
                 kernel.first,
                 kernel.second,
                 stride.first,
                 stride.second,
                 padding.first,
                 padding.second,
                 dilation.first,
                 dilation.second,
                 0,
                 0};
  g.out_h = conv_out_size(g.height, g.kernel_h, g.stride_h, g.pad_h, g.dilation_h);
  g.out_w = conv_out_size(g.width, g.kernel_w, g.stride_w, g.pad_w, g.dilation_w);
  GWPRUNE_CHECK_VALUE(std::min(g.out_h, g.out_w) > 0, "output size would be ",
                      Pair{g.out_h, g.out_w}.str(), " for input ", Pair{g.height, g.width}.str(),
                      ", kernel ", kernel.str(), ", stride ", stride.str(), ", padding ",
                      padding.str(), ", dilation ", dilation.str(), ": the input is too small");
  if (!x.is_cuda()) return g;
  constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();
  constexpr int64_t kInt16Max = std::numeric_limits<int16_t>::max();
  const std::pair<const char*, int64_t> sizes[] = {{"C*kh*kw (groups per filter)", g.num_groups()},
                                                   {"H*W of one input image", g.height * g.width},
                                                   {"Ho*Wo of one output image", g.out_pixels()}};
  for (const auto& [what, size] : sizes) {
    GWPRUNE_CHECK_VALUE(size <= kInt32Max, what, " is ", size,
                        ", above 2^31 - 1: one image of this conv is too large for the CUDA "
                        "kernels (split the image, or run it on the CPU)");
  }
  const int64_t reaches[] = {(g.kernel_h - 1) * g.dilation_h + g.pad_h,
                             (g.kernel_w - 1) * g.dilation_w + g.pad_w};
  const char* axes[] = {"height", "width"};
  for (int d = 0; d < 2; ++d) {
    GWPRUNE_CHECK_VALUE(reaches[d] <= kInt16Max, "(kernel - 1) * dilation + padding along ",
                        axes[d], " is ", reaches[d], ", above 32767: kernel ", kernel.str(),
                        ", dilation ", dilation.str(), ", padding ", padding.str(),
                        " are too large for the CUDA kernels");
  }
  return g;
}

inline void check_linear_input(const at::Tensor& x, int64_t in_features) {
  GWPRUNE_CHECK_VALUE(x.dim() >= 1, "x must have at least 1 dimension [..., in_features]");
  GWPRUNE_CHECK_VALUE(x.size(-1) == in_features, "x has ", x.size(-1),
                      " features in its last dimension but weight expects ", in_features);
}

// A packed weight made by hand: _checks._check_packed_weight / _check_packed_index.
inline void check_packed_weight(const at::Tensor& weight, const at::Tensor& x) {
  GWPRUNE_CHECK_VALUE(weight.dim() == 2, "packed.weight must be a 2-D [out, K'] tensor, got ",
                      py_shape(weight.sizes()));
  check_same_dtype_device(weight, "packed.weight", x);
  GWPRUNE_CHECK_VALUE(weight.is_contiguous(),
                      "packed.weight must be contiguous (pack it with gwprune.pack_*_weight)");
}

inline void check_packed_index(const at::Tensor& index, const char* name, const at::Tensor& x,
                               int64_t kept_columns) {
  GWPRUNE_CHECK_TYPE(index.scalar_type() == at::kInt, name, " must be an int32 tensor, got ",
                     py_dtype(index.scalar_type()));
  GWPRUNE_CHECK_VALUE(index.dim() == 1, name, " must be 1-D, got shape ", py_shape(index.sizes()));
  check_same_device(index, name, x);
  GWPRUNE_CHECK_VALUE(index.is_contiguous(), name, " must be contiguous");
  GWPRUNE_CHECK_VALUE(index.numel() == kept_columns, name, " has ", index.numel(),
                      " entries but packed.weight has ", kept_columns, " columns");
}

}  // namespace gwprune::checks
