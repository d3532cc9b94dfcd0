// The linear's kept-feature gather on the CPU (contract: gather_cpu.h).
#include <cstring>

#include "../error_message.h"
#include "element_bits.h"
#include "gather_cpu.h"

namespace gwprune::cpu {
namespace {

template <typename T>
void gather_rows(const T* x, int64_t row_stride, const int64_t* features, int64_t kept, T* xg,
                 int64_t r0, int64_t row_begin, int64_t row_end) {
  for (int64_t q = row_begin; q < row_end; ++q) {
    const T* src = x + (r0 + q) * row_stride;
    T* dst = xg + q * kept;
    // -1 entries read as zero; the branch is the same for every row, so it predicts.
    for (int64_t k = 0; k < kept; ++k) dst[k] = features[k] < 0 ? T{0} : src[features[k]];
  }
}

}  // namespace

void check_index_range(const at::Tensor& index, int64_t limit, const char* what) {
  const int32_t* entries = index.const_data_ptr<int32_t>();
  for (int64_t k = 0; k < index.numel(); ++k) {
    GWPRUNE_CHECK_VALUE(entries[k] >= -1 && entries[k] < limit, what, " entry ", k, " is ",
                        entries[k], ", outside [0, ", limit, ") (and not the padding index -1)");
  }
}

void gather_features(const at::Tensor& x2d, const std::vector<int64_t>& features, void* xg,
                     int64_t r0, int64_t row_begin, int64_t row_end) {
  dispatch_element_bits(x2d.element_size(), [&](auto tag) {
    using T = decltype(tag);
    gather_rows(static_cast<const T*>(x2d.const_data_ptr()), x2d.stride(0), features.data(),
                static_cast<int64_t>(features.size()), static_cast<T*>(xg), r0, row_begin, row_end);
  });
}

}  // namespace gwprune::cpu
