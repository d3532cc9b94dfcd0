// Instantiates the implicit conv for __nv_bfloat16 (bf16 tensor cores).
#include "implicit_conv_kernel.cuh"

namespace gwprune::cuda::implicit {

template void launch_implicit_conv<__nv_bfloat16>(const at::Tensor&, const at::Tensor&,
                                                  const at::Tensor&,
                                                  const std::optional<at::Tensor>&,
                                                  const ConvGeometry&, at::Tensor&, bool,
                                                  Activation);

}  // namespace gwprune::cuda::implicit
