// Error messages for TORCH_CHECK, assembled without std::ostream.
//
// gwprune::detail::message("x has ", n, " dims") builds one std::string from
// strings, with numbers formatted by std::to_string, so c10::str only ever
// streams a string. With the GPU image's torch 2.11 + g++ 13 build, streaming
// an integer into c10::str's std::ostringstream from inside this extension
// segfaulted (backtrace: bench/results/experiments-H200-2026-11-26/
// exception-probe-run2.txt) while strings went through fine.
#pragma once

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

namespace gwprune::detail {

inline std::string to_text(const char* text) { return text; }
inline std::string to_text(const std::string& text) { return text; }
inline std::string to_text(c10::ScalarType type) { return c10::toString(type); }
inline std::string to_text(const c10::Device& device) { return device.str(); }

template <typename T, std::enable_if_t<std::is_integral_v<T>, int> = 0>
std::string to_text(T value) {
  return std::to_string(value);
}

inline std::string to_text(c10::IntArrayRef values) {
  std::string text = "[";
  for (size_t i = 0; i < values.size(); ++i) text += (i ? ", " : "") + std::to_string(values[i]);
  return text + "]";
}
inline std::string to_text(const std::vector<int64_t>& values) {
  return to_text(c10::IntArrayRef(values));
}

template <typename... Args>
std::string message(const Args&... args) {
  std::string text = "gwprune: ";
  (text += ... += to_text(args));
  return text;
}

}  // namespace gwprune::detail

#define GWPRUNE_CHECK(cond, ...) TORCH_CHECK(cond, ::gwprune::detail::message(__VA_ARGS__))
#define GWPRUNE_CHECK_VALUE(cond, ...) \
  TORCH_CHECK_VALUE(cond, ::gwprune::detail::message(__VA_ARGS__))
#define GWPRUNE_CHECK_TYPE(cond, ...) \
  TORCH_CHECK_TYPE(cond, ::gwprune::detail::message(__VA_ARGS__))
