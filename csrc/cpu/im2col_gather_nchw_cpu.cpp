// Fused im2col + gather of the kept groups of an NCHW input on the CPU
// (contract: gather_cpu.h): for each kept group, output row by output row, a
// short copy of the input row (stride 1) or a strided read, zeros where the tap
// falls in the padding.
#include <algorithm>

#include "element_bits.h"
#include "gather_cpu.h"

namespace gwprune::cpu {
namespace {

// First and one-past-last output column whose input column wo * stride + offset
// lies in [0, width): the rest of an output row reads the zero padding.
std::pair<int64_t, int64_t> valid_columns(int64_t offset, int64_t stride, int64_t width,
                                          int64_t out_w) {
  // wo >= ceil(-offset / stride) and wo <= floor((width - 1 - offset) / stride)
  const int64_t lo = offset >= 0 ? 0 : (-offset + stride - 1) / stride;
  const int64_t last = width - 1 - offset;
  const int64_t hi = last < 0 ? 0 : last / stride + 1;
  return {std::min(lo, out_w), std::clamp<int64_t>(hi, std::min(lo, out_w), out_w)};
}

template <typename T>
GWPRUNE_NO_LIBCALLS void gather_nchw(const T* x, const int32_t* group_idx, T* cols,
                                     const ConvGeometry& g, int64_t p0, int64_t count,
                                     int64_t row_begin, int64_t row_end) {
  const int64_t taps = g.kernel_h * g.kernel_w;
  const int64_t plane = g.height * g.width;
  for (int64_t k = row_begin; k < row_end; ++k) {
    T* dst = cols + k * count;
    const int64_t group = group_idx[k];
    if (group < 0) {
      zero_run(dst, count);
      continue;
    }
    const int64_t c = group / taps, i = group % taps / g.kernel_w, j = group % g.kernel_w;
    const T* src_plane = x + c * plane;
    const int64_t row_offset = i * g.dilation_h - g.pad_h;
    const int64_t col_offset = j * g.dilation_w - g.pad_w;
    if (g.stride_h == 1 && g.stride_w == 1 && col_offset == 0 && g.width == g.out_w) {
      // Output pixel p reads input pixel p + row_offset * W (a 1x1 conv, or the centre
      // column of a same-size one): one copy of the rows inside the image.
      const int64_t first = std::clamp<int64_t>(-row_offset * g.width, p0, p0 + count);
      const int64_t last =
          std::clamp<int64_t>((g.height - row_offset) * g.width, first, p0 + count);
      zero_run(dst, first - p0);
      copy_run(dst + (first - p0), src_plane + first + row_offset * g.width, last - first);
      zero_run(dst + (last - p0), p0 + count - last);
      continue;
    }
    const auto [lo, hi] = valid_columns(col_offset, g.stride_w, g.width, g.out_w);
    // Walk the chunk output row by output row: [p, p_end) lies in row ho.
    for (int64_t p = p0, p_end; p < p0 + count; p = p_end) {
      const int64_t ho = p / g.out_w, wo0 = p % g.out_w;
      p_end = std::min(p0 + count, (ho + 1) * g.out_w);
      const int64_t wo1 = wo0 + (p_end - p);
      T* out = dst + (p - p0) - wo0;  // out[wo] is output column wo of this row
      const int64_t hi_row = ho * g.stride_h + row_offset;
      if (hi_row < 0 || hi_row >= g.height) {
        zero_run(out + wo0, wo1 - wo0);
        continue;
      }
      const T* src = src_plane + hi_row * g.width + col_offset;  // src[wo * stride_w]
      const int64_t a = std::clamp(lo, wo0, wo1), b = std::clamp(hi, a, wo1);
      zero_run(out + wo0, a - wo0);
      if (g.stride_w == 1) {
        copy_run(out + a, src + a, b - a);
      } else {
        for (int64_t wo = a; wo < b; ++wo) out[wo] = src[wo * g.stride_w];
      }
      zero_run(out + b, wo1 - b);
    }
  }
}

}  // namespace

void im2col_gather_nchw(const at::Tensor& x, const at::Tensor& group_idx, void* cols,
                        const ConvGeometry& g, int64_t n, int64_t p0, int64_t count,
                        int64_t row_begin, int64_t row_end) {
  dispatch_element_bits(x.element_size(), [&](auto tag) {
    using T = decltype(tag);
    const T* image =
        static_cast<const T*>(x.const_data_ptr()) + n * g.channels * g.height * g.width;
    gather_nchw(image, group_idx.const_data_ptr<int32_t>(), static_cast<T*>(cols), g, p0, count,
                row_begin, row_end);
  });
}

}  // namespace gwprune::cpu
