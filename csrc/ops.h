// Entry points bound by gwprune.cpp. The implementations live in
// csrc/cpu/*_cpu.cpp (CPU tensors) and csrc/cuda/*_cuda.cpp (CUDA tensors).
#pragma once

#include <torch/extension.h>

#include <optional>
#include <string>
#include <utility>
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

// The eager entry points of the public ops (CUDA tensors; CPU ones with the CPU kernels),
// called from python/gwprune/ops.py with the user's arguments as they are: every check of
// the Python path, in its order and words (checks.h, python_args.h), then the op, in one
// call. *_packed_eager take a PackedConv2dWeight / PackedLinearWeight's fields.
// conv2d_cached / linear_cached take the raw call's weight and keep_idx, look them up in
// the pack cache (pack_cache.h) and, on a hit, check and run the op on the cached packed
// weight; a miss (or a weight / keep_idx / x that is not a tensor) returns nullopt
// (None) before any check, and Python's path packs, checks and fills the cache.
// *_cached_eager take a cached packed weight and the id of the stream it was packed on
// (the checks and the op of a hit, for tests).
at::Tensor conv2d_packed_eager(pybind11::handle x, pybind11::handle weight,
                               pybind11::handle group_idx, pybind11::handle bias,
                               pybind11::handle in_channels, pybind11::handle kernel_size,
                               pybind11::handle stride, pybind11::handle padding,
                               pybind11::handle dilation, int64_t workspace_bytes,
                               const std::string& backend, const std::string& activation);
at::Tensor conv2d_cached_eager(pybind11::handle x, const at::Tensor& weight,
                               const at::Tensor& group_idx, pybind11::handle bias,
                               int64_t in_channels, int64_t kernel_h, int64_t kernel_w,
                               pybind11::handle stride, pybind11::handle padding,
                               pybind11::handle dilation, int64_t workspace_bytes,
                               int64_t packed_stream, const std::string& backend,
                               const std::string& activation);
std::optional<at::Tensor> conv2d_cached(pybind11::handle x, pybind11::handle weight,
                                        pybind11::handle keep_idx, pybind11::handle bias,
                                        pybind11::handle stride, pybind11::handle padding,
                                        pybind11::handle dilation, int64_t workspace_bytes,
                                        const std::string& backend);
at::Tensor linear_packed_eager(pybind11::handle x, pybind11::handle weight,
                               pybind11::handle feature_idx, pybind11::handle bias,
                               pybind11::handle in_features, int64_t workspace_bytes,
                               const std::string& activation);
at::Tensor linear_cached_eager(pybind11::handle x, const at::Tensor& weight,
                               const at::Tensor& feature_idx, pybind11::handle bias,
                               int64_t in_features, int64_t workspace_bytes, int64_t packed_stream,
                               const std::string& activation);
std::optional<at::Tensor> linear_cached(pybind11::handle x, pybind11::handle weight,
                                        pybind11::handle keep_idx, pybind11::handle bias,
                                        int64_t workspace_bytes);

// The op on checked operands: the CUDA implementation (CPU tensors are refused here).
at::Tensor run_conv2d(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& group_idx,
                      const std::optional<at::Tensor>& bias, const ConvGeometry& geometry,
                      int64_t workspace_bytes, const std::string& backend, Activation activation);
at::Tensor run_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& feature_idx,
                      const std::optional<at::Tensor>& bias, int64_t workspace_bytes,
                      Activation activation);

// Before a cached packed weight is read on the current stream: refuses CUDA graph capture
// (an evicted entry would leave the graph reading freed memory) and, on a stream other
// than `packed_stream`, records that stream on both tensors, so that freeing them waits
// for its kernels. Nothing for CPU tensors.
void use_cached_operands(const at::Tensor& weight, const at::Tensor& index, int64_t packed_stream);

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

// The pre-packed weights of the fp32 CPU linear (csrc/cpu/mkl_packed_weights.h; oneDNN's
// or MKL's, the names are the first library's): whether torch has either library's
// packed-GEMM ops, the switch (on by default; off: every CPU
// linear runs at::addmm, as for comparing the two), dropping every copy, and the
// (weights, copies) held, after dropping those of weights that died.
bool mkl_linear_available();
void set_mkl_linear_enabled(bool enabled);
bool mkl_linear_enabled();
void clear_mkl_linear_weights();
std::pair<int64_t, int64_t> mkl_linear_weights_info();
// Which library makes and multiplies the copies: "onednn" (the default where torch has
// it), "mkl", or "none"; the setter takes those two or "default" (an A/B in one process).
std::string packed_gemm_library();
void set_packed_gemm_library(const std::string& name);
}  // namespace cpu

namespace cuda {
at::Tensor conv2d_packed_cuda(const at::Tensor& x, const at::Tensor& weight,
                              const at::Tensor& group_idx, const std::optional<at::Tensor>& bias,
                              const ConvGeometry& geometry, int64_t workspace_bytes,
                              const std::string& backend, Activation activation);
at::Tensor linear_packed_cuda(const at::Tensor& x2d, const at::Tensor& weight,
                              const at::Tensor& feature_idx, const std::optional<at::Tensor>& bias,
                              int64_t workspace_bytes, Activation activation);
void use_cached_operands(const at::Tensor& weight, const at::Tensor& index, int64_t packed_stream);
}  // namespace cuda

}  // namespace gwprune
