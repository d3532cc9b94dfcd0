// pybind11 module gwprune._C: binds the entry points, nothing else.
#include <torch/extension.h>

#include <atomic>

#include "ops.h"
#include "pack_cache.h"

#define GWPRUNE_STRINGIFY_(x) #x
#define GWPRUNE_STRINGIFY(x) GWPRUNE_STRINGIFY_(x)

namespace gwprune {
namespace {
std::atomic<bool> poison_flag{false};
}  // namespace

void set_poison_outputs(bool enabled) { poison_flag.store(enabled); }
bool poison_outputs() { return poison_flag.load(); }

bool compiled_with_cuda() {
#ifdef GWPRUNE_WITH_CUDA
  return true;
#else
  return false;
#endif
}

// Every build has them; the binding lets Python tell this _C from one built
// before the CPU kernels existed (which rejected CPU tensors).
bool compiled_with_cpu_kernels() { return true; }

// setup.py passes the architectures as digits joined by '_' (e.g. 80_90) so
// the value survives every shell and build tool unquoted.
std::string cuda_arch_list() {
#ifdef GWPRUNE_CUDA_ARCHS
  return GWPRUNE_STRINGIFY(GWPRUNE_CUDA_ARCHS);
#else
  return "";
#endif
}

}  // namespace gwprune

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "gwprune compiled kernels: group-wise pruned conv2d and linear";
  // Our own errors become the matching Python exceptions here, with the message
  // alone (what_without_backtrace: no C++ stack in a user's ValueError).
  py::register_local_exception_translator([](std::exception_ptr error) {
    try {
      if (error) std::rethrow_exception(error);
    } catch (const c10::ValueError& e) {
      PyErr_SetString(PyExc_ValueError, e.what_without_backtrace());
    } catch (const c10::TypeError& e) {
      PyErr_SetString(PyExc_TypeError, e.what_without_backtrace());
    } catch (const c10::Error& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what_without_backtrace());
    }
  });
  m.def("conv2d_packed", &gwprune::conv2d_packed, "Group-wise conv2d on a packed weight",
        py::arg("x"), py::arg("weight"), py::arg("group_idx"), py::arg("bias"),
        py::arg("kernel_size"), py::arg("stride"), py::arg("padding"), py::arg("dilation"),
        py::arg("workspace_bytes"), py::arg("backend") = "auto", py::arg("activation") = "none");
  m.def("linear_packed", &gwprune::linear_packed, "Group-wise linear on a packed weight",
        py::arg("x"), py::arg("weight"), py::arg("feature_idx"), py::arg("bias"),
        py::arg("workspace_bytes"), py::arg("activation") = "none");
  // The eager calls of gwprune.ops (ops.h): arguments as the user passed them.
  m.def("conv2d_packed_eager", &gwprune::conv2d_packed_eager,
        "gwprune.ops.conv2d_packed's checks and the op, for a CUDA x", py::arg("x"),
        py::arg("weight"), py::arg("group_idx"), py::arg("bias"), py::arg("in_channels"),
        py::arg("kernel_size"), py::arg("stride"), py::arg("padding"), py::arg("dilation"),
        py::arg("workspace_bytes"), py::arg("backend") = "auto", py::arg("activation") = "none");
  m.def("conv2d_cached_eager", &gwprune::conv2d_cached_eager,
        "gwprune.ops.conv2d's checks and the op on a pack-cache entry, for a CUDA x", py::arg("x"),
        py::arg("weight"), py::arg("group_idx"), py::arg("bias"), py::arg("in_channels"),
        py::arg("kernel_h"), py::arg("kernel_w"), py::arg("stride"), py::arg("padding"),
        py::arg("dilation"), py::arg("workspace_bytes"), py::arg("packed_stream"),
        py::arg("backend") = "auto", py::arg("activation") = "none");
  m.def("conv2d_cached", &gwprune::conv2d_cached,
        "gwprune.ops.conv2d served from the pack cache: the lookup, the checks and the op; "
        "None on a miss",
        py::arg("x"), py::arg("weight"), py::arg("keep_idx"), py::arg("bias"), py::arg("stride"),
        py::arg("padding"), py::arg("dilation"), py::arg("workspace_bytes"),
        py::arg("backend") = "auto");
  m.def("linear_packed_eager", &gwprune::linear_packed_eager,
        "gwprune.ops.linear_packed's checks and the op, for a CUDA x", py::arg("x"),
        py::arg("weight"), py::arg("feature_idx"), py::arg("bias"), py::arg("in_features"),
        py::arg("workspace_bytes"), py::arg("activation") = "none");
  m.def("linear_cached_eager", &gwprune::linear_cached_eager,
        "gwprune.ops.linear's checks and the op on a pack-cache entry, for a CUDA x", py::arg("x"),
        py::arg("weight"), py::arg("feature_idx"), py::arg("bias"), py::arg("in_features"),
        py::arg("workspace_bytes"), py::arg("packed_stream"), py::arg("activation") = "none");
  m.def("linear_cached", &gwprune::linear_cached,
        "gwprune.ops.linear served from the pack cache: the lookup, the checks and the op; "
        "None on a miss",
        py::arg("x"), py::arg("weight"), py::arg("keep_idx"), py::arg("bias"),
        py::arg("workspace_bytes"));
  // The pack cache's store (pack_cache.h); python/gwprune/pack_cache.py is its API.
  m.def(
      "pack_cache_lookup",
      [](const at::Tensor& weight, const at::Tensor& keep_idx,
         int64_t layout) -> std::optional<std::tuple<at::Tensor, at::Tensor, int64_t, int64_t>> {
        const auto packed = gwprune::pack_cache::lookup(weight, keep_idx, layout);
        if (!packed.has_value()) return std::nullopt;
        return std::make_tuple(packed->weight, packed->index, packed->stream_id, packed->nbytes);
      },
      "(packed weight, packed index, stream id, bytes) of a hit (counted), or None",
      py::arg("weight"), py::arg("keep_idx"), py::arg("layout"));
  m.def("pack_cache_insert", &gwprune::pack_cache::insert,
        "Store a packed weight for (weight, keep_idx, layout); False when not stored",
        py::arg("weight"), py::arg("keep_idx"), py::arg("layout"), py::arg("weight_version"),
        py::arg("keep_version"), py::arg("packed_weight"), py::arg("packed_index"),
        py::arg("stream_id"));
  m.def("pack_cache_set_limit", &gwprune::pack_cache::set_limit, py::arg("nbytes"));
  m.def("pack_cache_limit", &gwprune::pack_cache::limit);
  m.def("pack_cache_clear", &gwprune::pack_cache::clear);
  m.def(
      "pack_cache_info",
      [] {
        const gwprune::pack_cache::Info info = gwprune::pack_cache::info();
        return std::make_tuple(info.entries, info.nbytes, info.limit, info.hits, info.misses);
      },
      "(entries, bytes, limit, hits, misses)");
  m.def("set_poison_outputs", &gwprune::set_poison_outputs,
        "Fill outputs and workspaces with NaN before kernels write them (tests)");
  m.def("poison_outputs", &gwprune::poison_outputs);
  m.def("mkl_linear_available", &gwprune::cpu::mkl_linear_available,
        "Whether torch has the MKL packed-GEMM ops the fp32 CPU linear uses");
  m.def("set_mkl_linear_enabled", &gwprune::cpu::set_mkl_linear_enabled,
        "Let fp32 CPU linears use MKL-packed weight copies (default on)", py::arg("enabled"));
  m.def("mkl_linear_enabled", &gwprune::cpu::mkl_linear_enabled);
  m.def("clear_mkl_linear_weights", &gwprune::cpu::clear_mkl_linear_weights,
        "Drop every MKL-packed weight copy");
  m.def("mkl_linear_weights_info", &gwprune::cpu::mkl_linear_weights_info,
        "(weights, copies) of MKL-packed weights held");
  m.def("packed_gemm_library", &gwprune::cpu::packed_gemm_library,
        "The library of the fp32 CPU GEMMs' packed weight copies: 'onednn', 'mkl' or 'none'");
  m.def("set_packed_gemm_library", &gwprune::cpu::set_packed_gemm_library,
        "Pick the packed copies' library: 'onednn', 'mkl' or 'default'", py::arg("name"));
  m.def("compiled_with_cuda", &gwprune::compiled_with_cuda);
  m.def("compiled_with_cpu_kernels", &gwprune::compiled_with_cpu_kernels);
  m.def("cuda_arch_list", &gwprune::cuda_arch_list);
}
