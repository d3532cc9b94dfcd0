// The store of MKL-packed linear weights (contract: mkl_packed_weights.h).
#include "mkl_packed_weights.h"

#include <ATen/Context.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <algorithm>
#include <atomic>
#include <functional>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "../ops.h"

namespace gwprune::cpu {
namespace {

using Reorder = at::Tensor(const at::Tensor&, int64_t);
using PackedLinear = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                const std::optional<at::Tensor>&, int64_t);

// The ops are registered by libtorch_cpu when torch has MKL and oneDNN; looked up once,
// through the dispatcher, as Python's torch.ops does. oneDNN's pair is called boxed (its
// Scalar?[] argument has no stable unboxed C++ type across torch versions).
struct PackedGemmOps {
  std::optional<c10::TypedOperatorHandle<Reorder>> mkl_reorder;
  std::optional<c10::TypedOperatorHandle<PackedLinear>> mkl_linear;
  std::optional<c10::OperatorHandle> onednn_reorder;  // mkldnn::_reorder_linear_weight
  std::optional<c10::OperatorHandle> onednn_linear;   // mkldnn::_linear_pointwise
};

const PackedGemmOps& packed_gemm_ops() {
  static const PackedGemmOps ops = [] {
    PackedGemmOps found;
    auto& dispatcher = c10::Dispatcher::singleton();
    if (at::hasMKL()) {
      auto reorder = dispatcher.findSchema({"mkl::_mkl_reorder_linear_weight", ""});
      auto linear = dispatcher.findSchema({"mkl::_mkl_linear", ""});
      if (reorder.has_value() && linear.has_value()) {
        found.mkl_reorder = reorder->typed<Reorder>();
        found.mkl_linear = linear->typed<PackedLinear>();
      }
    }
    if (at::hasMKLDNN()) {
      auto reorder = dispatcher.findSchema({"mkldnn::_reorder_linear_weight", ""});
      auto linear = dispatcher.findSchema({"mkldnn::_linear_pointwise", ""});
      if (reorder.has_value() && linear.has_value()) {
        found.onednn_reorder = *reorder;
        found.onednn_linear = *linear;
      }
    }
    return found;
  }();
  return ops;
}

enum class Library { kOneDnn = 0, kMkl = 1 };

// oneDNN first where torch has it: on a 2-core EPYC its packed GEMM ran the BERT FFN's keep
// .5 GEMM (128 x 384 -> 3072) in 1.64 ms against MKL's packed 3.14 and addmm's 2.63, and
// gave the same bits for 1 and 2 threads on every shape tried (bench/NOTES.md, CPU).
std::atomic<int> library_choice{-1};  // -1: the default

// Convs take MKL's copy by default where torch has it: their gathered rows times the weight
// (392-784 rows of K' 576-4608 in the CPU preset) ran 5-12 % slower on oneDNN's copy than on
// MKL's or on addmm on the same EPYC (ResNet-50 3x3 256 14x14 N=2 channels_last keep .5 1.77
// against 1.63 ms; bench/NOTES.md, CPU path), from 128 rows on: with fewer rows at K' >= 1024
// MKL's bits depend on the thread count (above), oneDNN's do not. An explicit choice holds for
// every call.
constexpr int64_t kMklConvRows = 128;

Library library(PackedGemmUse use = PackedGemmUse::kLinear, int64_t rows = 0) {
  const int chosen = library_choice.load(std::memory_order_relaxed);
  if (chosen >= 0) return static_cast<Library>(chosen);
  const PackedGemmOps& ops = packed_gemm_ops();
  if (use == PackedGemmUse::kConv && rows >= kMklConvRows && ops.mkl_reorder.has_value())
    return Library::kMkl;
  return ops.onednn_reorder.has_value() ? Library::kOneDnn : Library::kMkl;
}

bool library_available(Library which) {
  const PackedGemmOps& ops = packed_gemm_ops();
  return which == Library::kOneDnn ? ops.onednn_reorder.has_value() : ops.mkl_reorder.has_value();
}

std::atomic<bool> enabled_flag{true};

struct Copy {
  int64_t form;  // 2 * row count + Library: one library's copy for one row count
  at::Tensor packed;
};

// What a weight looked like when its copies were made, and the copies (most recently used
// first). The weak reference keeps the TensorImpl's memory (not its storage) allocated, so
// no other tensor can take its address, the table's key, while the entry exists.
struct Entry {
  c10::weak_intrusive_ptr<c10::TensorImpl> owner;
  int64_t version;
  const void* data;
  std::vector<int64_t> sizes;
  std::vector<Copy> copies;

  bool describes(const at::Tensor& weight, int64_t weight_version) const {
    return version == weight_version && data == weight.const_data_ptr() &&
           weight.sizes().equals(sizes);
  }
};

std::mutex table_mutex;
// Never destroyed: at exit, freeing the copies could outlive the allocators they came from.
auto& table = *new std::unordered_map<const c10::TensorImpl*, Entry>();

// Caller holds the lock.
void drop_dead_entries() {
  for (auto it = table.begin(); it != table.end();) {
    it = it->second.owner.expired() ? table.erase(it) : std::next(it);
  }
}

bool requires_grad(const std::optional<at::Tensor>& tensor) {
  return tensor.has_value() && tensor->requires_grad();
}

}  // namespace

// A call autograd may record stays on ATen's ops; inference tensors cannot show edits.
bool may_derive(const at::Tensor& weight, const at::Tensor& input,
                const std::optional<at::Tensor>& bias) {
  return input.scalar_type() == at::kFloat && weight.scalar_type() == at::kFloat &&
         input.is_cpu() && !input.requires_grad() && !weight.requires_grad() &&
         !requires_grad(bias) && !weight.is_inference();
}

at::Tensor derived_weight_copy(const at::Tensor& weight, int64_t form,
                               const std::function<at::Tensor()>& make) {
  const int64_t version = weight._version();
  const c10::TensorImpl* key = weight.unsafeGetTensorImpl();
  {
    std::lock_guard<std::mutex> lock(table_mutex);
    auto found = table.find(key);
    if (found != table.end() && found->second.describes(weight, version)) {
      std::vector<Copy>& copies = found->second.copies;
      auto hit = std::find_if(copies.begin(), copies.end(),
                              [&](const Copy& copy) { return copy.form == form; });
      if (hit != copies.end()) {
        std::rotate(copies.begin(), hit, hit + 1);  // most recently used first
        return copies.front().packed;
      }
    }
  }
  // Made outside the lock, from the version read above: an edit racing with this call
  // leaves an entry that the next call finds stale.
  at::Tensor packed = make();
  std::lock_guard<std::mutex> lock(table_mutex);
  drop_dead_entries();
  auto found = table.find(key);
  if (found == table.end()) {
    Entry fresh{
        c10::weak_intrusive_ptr<c10::TensorImpl>(weight.getIntrusivePtr()), 0, nullptr, {}, {}};
    found = table.emplace(key, std::move(fresh)).first;
  }
  Entry& entry = found->second;
  if (!entry.describes(weight, version)) {  // new, or the weight changed: its copies are stale
    entry.version = version;
    entry.data = weight.const_data_ptr();
    entry.sizes = weight.sizes().vec();
    entry.copies.clear();
  }
  std::vector<Copy>& copies = entry.copies;
  copies.erase(std::remove_if(copies.begin(), copies.end(),
                              [&](const Copy& copy) { return copy.form == form; }),
               copies.end());
  copies.insert(copies.begin(), Copy{form, packed});
  if (static_cast<int64_t>(copies.size()) > kMaxRowCounts) copies.resize(kMaxRowCounts);
  return packed;
}

PackedGemmWeight mkl_packed_weight(const at::Tensor& weight, const at::Tensor& input, int64_t rows,
                                   const std::optional<at::Tensor>& bias, PackedGemmUse use) {
  const Library which = library(use, rows);
  if (!library_available(which) || !enabled_flag.load(std::memory_order_relaxed) ||
      !may_derive(weight, input, bias))
    return {};
  const PackedGemmOps& ops = packed_gemm_ops();
  // A copy is made by one library for one row count: both are in its form.
  const int64_t form = 2 * rows + static_cast<int64_t>(which);
  at::Tensor copy = derived_weight_copy(weight, form, [&] {
    if (which == Library::kMkl) return ops.mkl_reorder->call(weight, rows);
    std::vector<c10::IValue> stack{weight, c10::IValue(rows)};
    ops.onednn_reorder->callBoxed(&stack);
    return stack[0].toTensor();
  });
  return {copy, which == Library::kOneDnn};
}

at::Tensor mkl_packed_linear(const at::Tensor& xg, const PackedGemmWeight& packed,
                             const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  const PackedGemmOps& ops = packed_gemm_ops();
  if (packed.onednn) {  // the bias is added in oneDNN's epilogue
    std::vector<c10::IValue> stack{xg,
                                   packed.copy,
                                   bias.has_value() ? c10::IValue(*bias) : c10::IValue(),
                                   c10::IValue(std::string("none")),
                                   c10::IValue(c10::List<std::optional<at::Scalar>>()),
                                   c10::IValue()};
    ops.onednn_linear->callBoxed(&stack);
    return stack[0].toTensor();
  }
  // _mkl_linear copies the bias into the output and runs the GEMM with beta = 1, as addmm
  // with the bias as C does.
  return ops.mkl_linear->call(xg, packed.copy, weight, bias, xg.size(0));
}

// ---- bound controls (ops.h) -----------------------------------------------------------

bool mkl_linear_available() {
  return library_available(Library::kOneDnn) || library_available(Library::kMkl);
}

std::string packed_gemm_library() {
  if (!library_available(library())) return "none";
  return library() == Library::kOneDnn ? "onednn" : "mkl";
}

void set_packed_gemm_library(const std::string& name) {
  TORCH_CHECK_VALUE(name == "onednn" || name == "mkl" || name == "default",
                    "gwprune: the packed-GEMM library must be 'onednn', 'mkl' or 'default', not '",
                    name, "'");
  library_choice.store(name == "default" ? -1 : name == "mkl" ? 1 : 0);
}

void set_mkl_linear_enabled(bool enabled) { enabled_flag.store(enabled); }

bool mkl_linear_enabled() { return enabled_flag.load(); }

void clear_mkl_linear_weights() {
  std::lock_guard<std::mutex> lock(table_mutex);
  table.clear();
}

std::pair<int64_t, int64_t> mkl_linear_weights_info() {
  std::lock_guard<std::mutex> lock(table_mutex);
  drop_dead_entries();
  int64_t copies = 0;
  for (const auto& item : table) copies += static_cast<int64_t>(item.second.copies.size());
  return {static_cast<int64_t>(table.size()), copies};
}

}  // namespace gwprune::cpu
