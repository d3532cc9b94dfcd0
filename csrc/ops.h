// Entry points bound by gwprune.cpp. The implementations live in
// csrc/cpu/*_cpu.cpp (CPU tensors) and csrc/cuda/*_cuda.cpp (CUDA tensors).
#pragma once

#include <torch/extension.h>

#include <optional>
#include <string>
#include <vector>

#include "conv_geometry.h"

namespace gwprune {

// Group-wise conv2d on a packed weight: weight [Cout, K'] holds the kept
// columns of weight.view(Cout, -1) in the order of group_idx (int32 [K']).
at::Tensor conv2d_packed(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& group_idx,
                         const std::optional<at::Tensor>& bias, std::vector<int64_t> kernel_size,
                         std::vector<int64_t> stride, std::vector<int64_t> padding,
                         std::vector<int64_t> dilation, int64_t workspace_bytes);

// Group-wise linear on a packed weight: weight [out, K'] holds the kept
// columns in the order of feature_idx (int32 [K']).
at::Tensor linear_packed(const at::Tensor& x, const at::Tensor& weight,
                         const at::Tensor& feature_idx, const std::optional<at::Tensor>& bias,
                         int64_t workspace_bytes);

// Debugging aid for tests: when on, every output and workspace buffer is
// filled with NaN before the kernels write it, so an element they miss shows.
void set_poison_outputs(bool enabled);
bool poison_outputs();

bool compiled_with_cuda();
bool compiled_with_cpu_kernels();
std::string cuda_arch_list();

namespace cpu {
at::Tensor conv2d_packed_cpu(const at::Tensor& x, const at::Tensor& weight,
                             const at::Tensor& group_idx, const std::optional<at::Tensor>& bias,
                             const ConvGeometry& geometry, int64_t workspace_bytes);
at::Tensor linear_packed_cpu(const at::Tensor& x2d, const at::Tensor& weight,
                             const at::Tensor& feature_idx, const std::optional<at::Tensor>& bias,
                             int64_t workspace_bytes);
}  // namespace cpu

namespace cuda {
at::Tensor conv2d_packed_cuda(const at::Tensor& x, const at::Tensor& weight,
                              const at::Tensor& group_idx, const std::optional<at::Tensor>& bias,
                              const ConvGeometry& geometry, int64_t workspace_bytes);
at::Tensor linear_packed_cuda(const at::Tensor& x2d, const at::Tensor& weight,
                              const at::Tensor& feature_idx, const std::optional<at::Tensor>& bias,
                              int64_t workspace_bytes);
}  // namespace cuda

}  // namespace gwprune
