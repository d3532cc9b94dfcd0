// Argument checks whose messages name the argument and the problem.
//
// Every public entry point validates with these before touching memory, so a
// bad call raises a Python exception (c10::Error -> RuntimeError,
// c10::ValueError -> ValueError, c10::TypeError -> TypeError) instead of
// reading out of bounds.
#pragma once

#include <torch/extension.h>

#include "error_message.h"

#define CHECK_DIM(x, n) \
  GWPRUNE_CHECK_VALUE((x).dim() == (n), #x " must be a ", n, "-D tensor, got ", (x).dim(), "-D")

#define CHECK_SHAPE(x, ...)                                                                   \
  GWPRUNE_CHECK_VALUE((x).sizes() == at::IntArrayRef({__VA_ARGS__}), #x " must have shape (", \
                      #__VA_ARGS__, "), got ", (x).sizes())

#define CHECK_SAME_DEVICE(x, ref)                                                 \
  GWPRUNE_CHECK_VALUE((x).device() == (ref).device(), #x " is on ", (x).device(), \
                      " but " #ref " is on ", (ref).device())

#define CHECK_SAME_DTYPE(x, ref)                                                 \
  GWPRUNE_CHECK_TYPE((x).scalar_type() == (ref).scalar_type(), #x " has dtype ", \
                     (x).scalar_type(), " but " #ref " has dtype ", (ref).scalar_type())

#define CHECK_INDEX_DTYPE(x)                                                          \
  GWPRUNE_CHECK_TYPE((x).scalar_type() == at::kInt || (x).scalar_type() == at::kLong, \
                     #x " must be an int32 or int64 tensor, got ", (x).scalar_type())

#define CHECK_CONTIGUOUS(x) GWPRUNE_CHECK_VALUE((x).is_contiguous(), #x " must be contiguous")

#define CHECK_FLOATING(x)                                                                      \
  GWPRUNE_CHECK_TYPE((x).scalar_type() == at::kFloat || (x).scalar_type() == at::kDouble ||    \
                         (x).scalar_type() == at::kHalf || (x).scalar_type() == at::kBFloat16, \
                     #x " must be float32, float64, float16 or bfloat16, got ", (x).scalar_type())
