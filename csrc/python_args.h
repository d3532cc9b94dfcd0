// Python arguments of the eager entry points, read without pybind11's type casters so
// that a wrong kind of argument raises what gwprune's Python checks raise.
//
// Tensors: "<name> must be a torch.Tensor, got <type>" (TypeError). Counts and int
// pairs: exact ints and tuples or lists of two exact ints are read here; anything else
// (an int subclass, torch.Size, a bad value) goes to python/gwprune/_checks.py, whose
// as_pair / _check_count define what is accepted and raise its errors, so odd inputs
// behave exactly as on the Python path.
#pragma once

#include <torch/csrc/autograd/python_variable.h>
#include <torch/extension.h>

#include <optional>
#include <string>

#include "checks.h"

namespace gwprune::python_args {

namespace py = pybind11;

inline std::string type_name(py::handle value) {
  return py::str(py::type::handle_of(value).attr("__name__")).cast<std::string>();
}

inline const at::Tensor& tensor(py::handle value, const char* name) {
  GWPRUNE_CHECK_TYPE(THPVariable_Check(value.ptr()), name, " must be a torch.Tensor, got ",
                     type_name(value));
  return THPVariable_Unpack(value.ptr());
}

inline std::optional<at::Tensor> optional_tensor(py::handle value, const char* name) {
  if (value.is_none()) return std::nullopt;
  return tensor(value, name);
}

// gwprune._checks.<function>, for the rare arguments C++ does not read itself.
inline py::object python_check(const char* function) {
  return py::module_::import("gwprune._checks").attr(function);
}

// An int (exactly, or also a subclass) that fits int64, or false.
inline bool exact_int(PyObject* value, int64_t& out, bool subclasses = false) {
  if (!(subclasses ? PyLong_Check(value) : PyLong_CheckExact(value))) return false;
  int overflow = 0;
  out = PyLong_AsLongLongAndOverflow(value, &overflow);
  return overflow == 0 && !(out == -1 && PyErr_Occurred());
}

// _checks.as_pair(value, name, minimum): an int or a pair of ints, each >= minimum.
// String padding ('same', 'valid') is resolved by gwprune.ops before it calls an eager
// entry (python/gwprune/conv_padding.py); here a string is refused, an unknown one with the
// Python path's own message.
inline checks::Pair pair(py::handle value, const char* name, int64_t minimum) {
  checks::Pair result{0, 0};
  PyObject* object = value.ptr();
  if (PyUnicode_Check(object) && std::string(name) == "padding") {
    const std::string text = py::str(value).cast<std::string>();
    GWPRUNE_CHECK_VALUE(text == "same" || text == "valid",
                        "padding must be 'same', 'valid', an int or a pair of ints, got ",
                        py::repr(value).cast<std::string>());
    GWPRUNE_CHECK_VALUE(false, "padding='", text,
                        "' is resolved by gwprune.ops before its eager entry; pass numbers to "
                        "gwprune._C");
  }
  if (exact_int(object, result.first)) {
    result.second = result.first;
  } else if ((PyTuple_CheckExact(object) || PyList_CheckExact(object)) &&
             PySequence_Fast_GET_SIZE(object) == 2) {
    PyObject** items = PySequence_Fast_ITEMS(object);
    if (!exact_int(items[0], result.first) || !exact_int(items[1], result.second)) {
      result.first = minimum - 1;  // not two exact ints: let Python decide
    }
  } else {
    result.first = minimum - 1;
  }
  if (std::min(result.first, result.second) >= minimum) return result;
  PyErr_Clear();
  // Raises the Python path's error, or returns the pair it accepts (torch.Size, ...).
  const py::tuple accepted = python_check("as_pair")(value, name, minimum);
  int64_t first = 0, second = 0;
  const bool fits =
      exact_int(accepted[0].ptr(), first, true) && exact_int(accepted[1].ptr(), second, true);
  PyErr_Clear();
  // Only ints beyond 64 bits get here (Python then fails on the output size instead).
  GWPRUNE_CHECK_VALUE(fits && std::min(first, second) >= minimum, name,
                      " must be a pair of 64-bit ints, got ", py::repr(value).cast<std::string>());
  return {first, second};
}

// _checks._check_count(value, name): a non-negative int.
inline int64_t count(py::handle value, const char* name) {
  int64_t result = -1;
  if (exact_int(value.ptr(), result) && result >= 0) return result;
  PyErr_Clear();
  python_check("_check_count")(value, name);  // raises for what the Python path refuses
  // An int subclass, or an int beyond 64 bits (refused: no layer has that many).
  const bool fits = PyLong_Check(value.ptr()) && (result = PyLong_AsLongLong(value.ptr())) >= 0;
  PyErr_Clear();
  GWPRUNE_CHECK_VALUE(fits, name, " must fit in 64 bits, got ",
                      py::repr(value).cast<std::string>());
  return result;
}

}  // namespace gwprune::python_args
