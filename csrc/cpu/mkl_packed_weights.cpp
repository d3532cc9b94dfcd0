// The store of MKL-packed linear weights (contract: mkl_packed_weights.h).
#include "mkl_packed_weights.h"

#include <ATen/Context.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

#include "../ops.h"

namespace gwprune::cpu {
namespace {

using Reorder = at::Tensor(const at::Tensor&, int64_t);
using PackedLinear = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                const std::optional<at::Tensor>&, int64_t);

// The ops are registered by libtorch_cpu when torch has MKL and oneDNN (the copy lives in
// an MKL-DNN tensor); looked up once, through the dispatcher, as Python's torch.ops does.
struct MklOps {
  std::optional<c10::TypedOperatorHandle<Reorder>> reorder;
  std::optional<c10::TypedOperatorHandle<PackedLinear>> linear;
};

const MklOps& mkl_ops() {
  static const MklOps ops = [] {
    MklOps found;
    if (!at::hasMKL()) return found;
    auto& dispatcher = c10::Dispatcher::singleton();
    auto reorder = dispatcher.findSchema({"mkl::_mkl_reorder_linear_weight", ""});
    auto linear = dispatcher.findSchema({"mkl::_mkl_linear", ""});
    if (reorder.has_value() && linear.has_value()) {
      found.reorder = reorder->typed<Reorder>();
      found.linear = linear->typed<PackedLinear>();
    }
    return found;
  }();
  return ops;
}

std::atomic<bool> enabled_flag{true};

struct Copy {
  int64_t rows;
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

at::Tensor mkl_packed_weight(const at::Tensor& weight, const at::Tensor& input, int64_t rows,
                             const std::optional<at::Tensor>& bias) {
  const MklOps& ops = mkl_ops();
  if (!ops.reorder.has_value() || !enabled_flag.load(std::memory_order_relaxed)) return {};
  // A call autograd may record stays on ATen's ops; inference tensors cannot show edits.
  if (input.scalar_type() != at::kFloat || weight.scalar_type() != at::kFloat || !input.is_cpu() ||
      input.requires_grad() || weight.requires_grad() || requires_grad(bias) ||
      weight.is_inference()) {
    return {};
  }
  const int64_t version = weight._version();
  const c10::TensorImpl* key = weight.unsafeGetTensorImpl();
  {
    std::lock_guard<std::mutex> lock(table_mutex);
    auto found = table.find(key);
    if (found != table.end() && found->second.describes(weight, version)) {
      std::vector<Copy>& copies = found->second.copies;
      auto hit = std::find_if(copies.begin(), copies.end(),
                              [&](const Copy& copy) { return copy.rows == rows; });
      if (hit != copies.end()) {
        std::rotate(copies.begin(), hit, hit + 1);  // most recently used first
        return copies.front().packed;
      }
    }
  }
  // Packed outside the lock, from the version read above: an edit racing with this call
  // leaves an entry that the next call finds stale.
  at::Tensor packed = ops.reorder->call(weight, rows);
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
                              [&](const Copy& copy) { return copy.rows == rows; }),
               copies.end());
  copies.insert(copies.begin(), Copy{rows, packed});
  if (static_cast<int64_t>(copies.size()) > kMaxRowCounts) copies.resize(kMaxRowCounts);
  return packed;
}

at::Tensor mkl_packed_linear(const at::Tensor& xg, const at::Tensor& packed,
                             const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  // _mkl_linear copies the bias into the output and runs the GEMM with beta = 1, as addmm
  // with the bias as C does.
  return mkl_ops().linear->call(xg, packed, weight, bias, xg.size(0));
}

// ---- bound controls (ops.h) -----------------------------------------------------------

bool mkl_linear_available() { return mkl_ops().reorder.has_value(); }

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
