// The raw ops' pack cache store (pack_cache.h states the contract).
#include "pack_cache.h"

#include <c10/core/UndefinedTensorImpl.h>
#include <torch/csrc/autograd/python_variable.h>

#include <atomic>
#include <iterator>
#include <list>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

#include "error_message.h"

namespace gwprune::pack_cache {
namespace {

namespace py = pybind11;

// What a source tensor looked like when its entry was packed. The weak references keep
// the TensorImpl's and StorageImpl's memory (not the tensor's data) allocated, so no other
// tensor or storage can take their addresses while the entry exists.
struct Source {
  c10::weak_intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl> impl;
  c10::weak_intrusive_ptr<c10::StorageImpl> storage;
  int64_t version;
  const void* data;
  std::vector<int64_t> sizes, strides;
  c10::ScalarType dtype;
  c10::Device device;
  py::object weakref;  // the Python object's weakref, whose callback flags a death

  Source(const at::Tensor& t, int64_t version_seen)
      : impl(t.getIntrusivePtr()),
        storage(t.unsafeGetTensorImpl()->unsafe_storage().getWeakStorageImpl()),
        version(version_seen),
        data(t.const_data_ptr()),
        sizes(t.sizes().vec()),
        strides(t.strides().vec()),
        dtype(t.scalar_type()),
        device(t.device()) {}

  // The caller's tensor has this source's TensorImpl (the key), so only its state is
  // compared; its StorageImpl, if the same address, is the same one (held weakly here).
  bool describes(const at::Tensor& t) const {
    const c10::TensorImpl* tensor = t.unsafeGetTensorImpl();
    return !t.is_inference() && tensor->has_storage() &&
           tensor->unsafe_storage().unsafeGetStorageImpl() == storage._unsafe_get_target() &&
           t._version() == version && t.const_data_ptr() == data && t.sizes().equals(sizes) &&
           t.strides().equals(strides) && t.scalar_type() == dtype && t.device() == device;
  }

  bool dead() const { return impl.expired() || storage.expired(); }
};

struct Key {
  const c10::TensorImpl* weight;
  const c10::TensorImpl* keep;
  int64_t layout;
  bool operator==(const Key& other) const {
    return weight == other.weight && keep == other.keep && layout == other.layout;
  }
};

struct KeyHash {
  size_t operator()(const Key& key) const {
    const size_t a = std::hash<const void*>()(key.weight);
    const size_t b = std::hash<const void*>()(key.keep);
    return a ^ (b + 0x9e3779b97f4a7c15ULL + (a << 6) + (a >> 2)) ^ static_cast<size_t>(key.layout);
  }
};

struct Entry {
  Key key;
  Source weight, keep;
  Packed packed;
};

using Lru = std::list<Entry>;  // most recently used first

struct Store {
  std::mutex mutex;
  Lru lru;
  std::unordered_map<Key, Lru::iterator, KeyHash> table;
  int64_t bytes = 0;
  int64_t limit = int64_t{1} << 30;  // python/gwprune/pack_cache.py sets it at import
  int64_t hits = 0;
  int64_t misses = 0;
};

// Never destroyed: at exit, freeing the packed tensors and weakrefs could outlive the
// allocators and the interpreter they came from.
Store& store = *new Store();

// Set by the weakref callback of any source that died; the next lookup sweeps.
std::atomic<bool> source_died{false};

// Caller holds the lock. Entries leave the table into `removed`, which the caller destroys
// after releasing the lock (destroying weakrefs and tensors must not happen under it).
void remove(Lru::iterator it, Lru& removed) {
  store.bytes -= it->packed.nbytes;
  store.table.erase(it->key);
  removed.splice(removed.end(), store.lru, it);
}

void sweep_dead(Lru& removed) {
  source_died.store(false, std::memory_order_relaxed);
  for (auto it = store.lru.begin(); it != store.lru.end();) {
    auto next = std::next(it);
    if (it->weight.dead() || it->keep.dead()) remove(it, removed);
    it = next;
  }
}

void evict_to(int64_t limit, Lru& removed) {
  while (store.bytes > limit && !store.lru.empty()) remove(std::prev(store.lru.end()), removed);
}

const py::object& death_callback() {
  // Never destroyed, like the store (it is referenced by weakrefs that may outlive exit).
  static const py::object& callback = *new py::object(
      py::cpp_function([](py::handle) { source_died.store(true, std::memory_order_relaxed); }));
  return callback;
}

}  // namespace

int64_t conv_layout(const at::Tensor& x) {
  return !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast) ? kConvChannelsLast
                                                                               : kConvNchw;
}

std::optional<Packed> lookup(const at::Tensor& weight, const at::Tensor& keep_idx, int64_t layout) {
  Lru removed;  // destroyed after the lock is released
  std::lock_guard<std::mutex> lock(store.mutex);
  if (source_died.load(std::memory_order_relaxed)) sweep_dead(removed);
  const auto found =
      store.table.find(Key{weight.unsafeGetTensorImpl(), keep_idx.unsafeGetTensorImpl(), layout});
  if (found == store.table.end()) return std::nullopt;
  const Lru::iterator it = found->second;
  if (!it->weight.describes(weight) || !it->keep.describes(keep_idx)) return std::nullopt;
  store.lru.splice(store.lru.begin(), store.lru, it);
  ++store.hits;
  return it->packed;
}

bool insert(py::handle weight_arg, py::handle keep_arg, int64_t layout, int64_t weight_version,
            int64_t keep_version, const at::Tensor& packed_weight, const at::Tensor& packed_index,
            int64_t stream_id) {
  GWPRUNE_CHECK_TYPE(THPVariable_Check(weight_arg.ptr()) && THPVariable_Check(keep_arg.ptr()),
                     "pack_cache_insert takes tensors");
  const at::Tensor& weight = THPVariable_Unpack(weight_arg.ptr());
  const at::Tensor& keep_idx = THPVariable_Unpack(keep_arg.ptr());
  const int64_t nbytes = static_cast<int64_t>(packed_weight.nbytes() + packed_index.nbytes());
  Lru removed;  // destroyed after the lock is released (declared first: destroyed last)
  Lru fresh;
  {
    std::lock_guard<std::mutex> lock(store.mutex);
    ++store.misses;
    sweep_dead(removed);
    if (store.limit == 0 || nbytes > store.limit || weight.is_inference() ||
        keep_idx.is_inference() || !weight.has_storage() || !keep_idx.has_storage())
      return false;
  }
  // Made without the lock: the weakrefs are Python objects.
  const Key key{weight.unsafeGetTensorImpl(), keep_idx.unsafeGetTensorImpl(), layout};
  fresh.push_back(Entry{key, Source(weight, weight_version), Source(keep_idx, keep_version),
                        Packed{packed_weight, packed_index, stream_id, nbytes}});
  Entry& entry = fresh.back();
  entry.weight.weakref = py::weakref(weight_arg, death_callback());
  entry.keep.weakref = py::weakref(keep_arg, death_callback());
  std::lock_guard<std::mutex> lock(store.mutex);
  if (store.limit == 0 || nbytes > store.limit) return false;  // the limit fell meanwhile
  const auto old = store.table.find(key);
  if (old != store.table.end()) remove(old->second, removed);
  store.lru.splice(store.lru.begin(), fresh, fresh.begin());
  store.table.emplace(key, store.lru.begin());
  store.bytes += nbytes;
  evict_to(store.limit, removed);
  return true;
}

void set_limit(int64_t nbytes) {
  GWPRUNE_CHECK_VALUE(nbytes >= 0, "the pack cache limit must be non-negative, got ", nbytes);
  Lru removed;
  std::lock_guard<std::mutex> lock(store.mutex);
  store.limit = nbytes;
  sweep_dead(removed);
  evict_to(nbytes, removed);
}

int64_t limit() {
  std::lock_guard<std::mutex> lock(store.mutex);
  return store.limit;
}

void clear() {
  Lru removed;
  std::lock_guard<std::mutex> lock(store.mutex);
  removed.splice(removed.end(), store.lru);
  store.table.clear();
  store.bytes = 0;
  store.hits = 0;
  store.misses = 0;
  source_died.store(false, std::memory_order_relaxed);
}

Info info() {
  Lru removed;
  std::lock_guard<std::mutex> lock(store.mutex);
  sweep_dead(removed);
  return {static_cast<int64_t>(store.lru.size()), store.bytes, store.limit, store.hits,
          store.misses};
}

}  // namespace gwprune::pack_cache
