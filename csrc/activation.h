// The activation a packed conv/linear applies to its own output (gwprune.activation).
//
// Parsed once per call from the op's string argument. The implicit CUDA conv applies
// every one in its own epilogue (cuda/implicit/epilogue.cuh). The explicit CUDA path
// fuses what cuBLASLt's epilogues offer (ReLU; GELU, which cuBLASLt computes with the
// tanh approximation, so only "gelu_tanh" may use it: gemm.cu) and applies the rest as
// one in-place pass over the output (apply_activation_).
#pragma once

#include <ATen/ATen.h>

#include <string>

#include "error_message.h"

namespace gwprune {

// cuda/implicit/gather_mainloop.cuh's EpilogueActivation holds the same values.
enum class Activation { kNone, kRelu, kRelu6, kSilu, kGelu, kGeluTanh };

inline Activation parse_activation(const std::string& name) {
  if (name == "none") return Activation::kNone;
  if (name == "relu") return Activation::kRelu;
  if (name == "relu6") return Activation::kRelu6;
  if (name == "silu") return Activation::kSilu;
  if (name == "gelu") return Activation::kGelu;
  if (name == "gelu_tanh") return Activation::kGeluTanh;
  GWPRUNE_CHECK_VALUE(false, "activation must be one of none, relu, relu6, silu, gelu, ",
                      "gelu_tanh; got ", name);
  return Activation::kNone;
}

// `out` (an output the op just wrote) = activation(out), in place.
inline void apply_activation_(at::Tensor& out, Activation activation) {
  switch (activation) {
    case Activation::kNone:
      return;
    case Activation::kRelu:
      out.relu_();
      return;
    case Activation::kRelu6:
      at::hardtanh_(out, 0.0, 6.0);
      return;
    case Activation::kSilu:
      at::silu_(out);
      return;
    case Activation::kGelu:
      at::gelu_(out);
      return;
    case Activation::kGeluTanh:
      at::gelu_(out, "tanh");
      return;
  }
}

}  // namespace gwprune
