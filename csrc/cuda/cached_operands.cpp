// use_cached_operands (ops.h): what a cached packed weight needs before a kernel on
// the current stream reads it.
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include "../error_message.h"
#include "../ops.h"

namespace gwprune::cuda {

void use_cached_operands(const at::Tensor& weight, const at::Tensor& index, int64_t packed_stream) {
  const c10::cuda::CUDAStream stream = c10::cuda::getCurrentCUDAStream(weight.get_device());
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  C10_CUDA_CHECK(cudaStreamIsCapturing(stream.stream(), &capture));
  GWPRUNE_CHECK(capture == cudaStreamCaptureStatusNone,
                "a raw op (gwprune.ops.conv2d / linear) cannot be captured in a CUDA graph: "
                "its packed weight lives in the pack cache, which may free it; capture "
                "gwprune.ops.conv2d_packed / linear_packed or a gwprune module instead");
  if (stream.id() == packed_stream) return;
  // As Tensor.record_stream does: when the cache frees them, the allocator will not reuse
  // the blocks before the work queued on this stream until then is done.
  c10::cuda::CUDACachingAllocator::recordStream(weight.storage().data_ptr(), stream);
  c10::cuda::CUDACachingAllocator::recordStream(index.storage().data_ptr(), stream);
}

}  // namespace gwprune::cuda
