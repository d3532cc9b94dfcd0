// The one rule that picks a CUDA conv backend: the implicit GEMM (csrc/cuda/implicit/)
// or the explicit gather + cuBLAS path (conv2d_cuda.cpp). Both the ops and
// gwprune.autotune reach it through the `backend` argument of conv2d_packed.
#pragma once

#include <ATen/ATen.h>

#include <string>

#include "../conv_geometry.h"

namespace gwprune::cuda {

enum class ConvBackend { kExplicit, kImplicit };

// requested: "auto" (the rule in conv_backend.cpp), "implicit" (raises ValueError with the
// reason when the implicit kernel cannot take the call) or "explicit".
ConvBackend choose_conv_backend(const std::string& requested, const at::Tensor& x,
                                const at::Tensor& weight, const ConvGeometry& geometry,
                                bool allow_tf32);

}  // namespace gwprune::cuda
