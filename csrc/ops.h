// Entry points bound by gwprune.cpp. The CUDA implementations live in
// csrc/cuda/*_cuda.cpp; CPU tensors are served by gwprune.reference in Python.
#pragma once

#include <torch/extension.h>

#include <optional>
#include <string>
#include <vector>

#include "activation.h"
#include "conv_geometry.h"

namespace gwprune {

// Group-wise conv2d on a packed weight: weight [Cout, K'] holds the kept
// columns of weight.view(Cout, -1) in the order of group_idx (int32 [K']);
// `activation` (activation.h: "none", "relu", ...) is applied to the output.
at::Tensor conv2d_packed(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& group_idx,
                         const std::optional<at::Tensor>& bias, std::vector<int64_t> kernel_size,
                         std::vector<int64_t> stride, std::vector<int64_t> padding,
                         std::vector<int64_t> dilation, int64_t workspace_bytes,
                         const std::string& backend = "auto",
                         const std::string& activation = "none");

// Group-wise linear on a packed weight: weight [out, K'] holds the kept
// columns in the order of feature_idx (int32 [K']).
at::Tensor linear_packed(const at::Tensor& x, const at::Tensor& weight,
                         const at::Tensor& feature_idx, const std::optional<at::Tensor>& bias,
                         int64_t workspace_bytes, const std::string& activation = "none");

// Debugging aid for tests: when on, every output and workspace buffer is
// filled with NaN before the kernels write it, so an element they miss shows.
void set_poison_outputs(bool enabled);
bool poison_outputs();

bool compiled_with_cuda();
std::string cuda_arch_list();

namespace cuda {
at::Tensor conv2d_packed_cuda(const at::Tensor& x, const at::Tensor& weight,
                              const at::Tensor& group_idx, const std::optional<at::Tensor>& bias,
                              const ConvGeometry& geometry, int64_t workspace_bytes,
                              const std::string& backend, Activation activation);
at::Tensor linear_packed_cuda(const at::Tensor& x2d, const at::Tensor& weight,
                              const at::Tensor& feature_idx, const std::optional<at::Tensor>& bias,
                              int64_t workspace_bytes, Activation activation);
}  // namespace cuda

}  // namespace gwprune
