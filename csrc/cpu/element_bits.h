// The CPU gathers copy elements without looking at their values, so they are
// instantiated per element size (an unsigned integer of that many bytes) rather
// than per floating type: zero bits are +0.0 in every floating format.
#pragma once

#include <c10/util/Exception.h>

#include <cstdint>

// GCC turns plain copy loops back into calls to memcpy/memset; for the short
// runs of a gather (an output row of a few dozen elements) the call costs more
// than the copy (bench/NOTES.md, change 17).
#if defined(__GNUC__) && !defined(__clang__)
#define GWPRUNE_NO_LIBCALLS __attribute__((optimize("no-tree-loop-distribute-patterns")))
#else
#define GWPRUNE_NO_LIBCALLS
#endif

namespace gwprune::cpu {

template <typename Fn>
void dispatch_element_bits(int64_t element_size, Fn&& fn) {
  switch (element_size) {
    case 2:
      fn(uint16_t{});
      break;
    case 4:
      fn(uint32_t{});
      break;
    case 8:
      fn(uint64_t{});
      break;
    default:
      TORCH_CHECK(false, "gwprune: no CPU gather for elements of this size");
  }
}

// Inline copy and zero fill of a short run; 64-byte blocks through fixed-size
// memcpy, which the compiler expands into vector moves.
template <typename T>
GWPRUNE_NO_LIBCALLS inline void copy_run(T* dst, const T* src, int64_t count) {
  constexpr int64_t kBlock = 64 / sizeof(T);
  int64_t i = 0;
  for (; i + kBlock <= count; i += kBlock) __builtin_memcpy(dst + i, src + i, 64);
  for (; i < count; ++i) dst[i] = src[i];
}

template <typename T>
GWPRUNE_NO_LIBCALLS inline void zero_run(T* dst, int64_t count) {
  for (int64_t i = 0; i < count; ++i) dst[i] = T{0};
}

}  // namespace gwprune::cpu
