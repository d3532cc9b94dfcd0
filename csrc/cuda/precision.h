// The one place that decides float32 GEMM precision: the same PyTorch flags
// that torch.nn.functional consults, so gwprune gives what F.conv2d/F.linear
// would (torch.backends.cudnn.allow_tf32 for conv,
// torch.backends.cuda.matmul.allow_tf32 / set_float32_matmul_precision for linear).
#pragma once

#include <ATen/Context.h>
#include <torch/version.h>

namespace gwprune::cuda {

inline bool conv_allows_tf32() {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 9)
  return at::globalContext().allowTF32CuDNN(at::Float32Op::CONV);
#else
  return at::globalContext().allowTF32CuDNN();
#endif
}

inline bool matmul_allows_tf32() { return at::globalContext().allowTF32CuBLAS(); }

}  // namespace gwprune::cuda
