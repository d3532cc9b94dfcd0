// The raw ops' pack cache (gwprune.ops.conv2d / linear): the packed weight of a dense
// weight and its keep_idx, kept between calls. python/gwprune/pack_cache.py is its Python
// API; this is the store, so that a hit is one call from Python (conv2d_cached /
// linear_cached, ops.h: lookup, checks and the op).
//
// Contract (the one pack_cache.py documents):
// - Key: the weight's and keep_idx's TensorImpls (the Python tensor objects: one
//   TensorImpl each) and the layout the pack is ordered for (kConvNchw,
//   kConvChannelsLast, kLinear).
// - A hit needs each source as it was when packed: the same version counter (every
//   in-place op bumps it), StorageImpl, data pointer, sizes, strides, dtype and device
//   (a .data swap keeps the version but changes the storage). The store holds weak
//   references to both TensorImpls and StorageImpls, never the tensors: their memory
//   stays allocated while the entry exists, so a new tensor or storage cannot take a
//   dead one's address and hit. Inference tensors (no version counter) are never stored.
// - Lifetime: an entry whose weight or keep_idx (or their storage) died is dropped by
//   the next lookup after a source died (a Python weakref callback flags it; the flag
//   costs the hit path one atomic load), and by every insert, limit change and info().
// - Memory: LRU by bytes of the packed tensors (packed weight + index), under the limit
//   (0: off, nothing stored); lowering the limit evicts at once; an entry larger than
//   the limit is not stored.
// - Streams: each entry keeps the id of the stream it was packed on (-1 on the CPU);
//   the caller records other streams on the packed tensors (use_cached_operands).
// - Thread-safe: one mutex guards the table. Every function is called from Python with
//   the GIL held (entries hold Python weakref objects); evicted entries are destroyed
//   after the mutex is released.
#pragma once

#include <torch/extension.h>

#include <cstdint>
#include <optional>

namespace gwprune::pack_cache {

// python/gwprune/pack_cache.py's CONV_NCHW, CONV_CHANNELS_LAST, LINEAR.
constexpr int64_t kConvNchw = 0;
constexpr int64_t kConvChannelsLast = 1;
constexpr int64_t kLinear = 2;

// A cached packed weight: what a hit hands to the op.
struct Packed {
  at::Tensor weight;  // [out, K'p]
  at::Tensor index;   // int32 [K'p]
  int64_t stream_id;  // the stream a CUDA entry was packed on; -1 on the CPU
  int64_t nbytes;
};

struct Info {
  int64_t entries, nbytes, limit, hits, misses;
};

// The layout code of a conv input (python/gwprune/_layout.py's rule): channels_last when
// x is exactly channels_last (not also contiguous), else NCHW.
int64_t conv_layout(const at::Tensor& x);

// The entry packed from exactly these tensors in their current state (a hit, counted),
// or nullopt. No sync, no validation.
std::optional<Packed> lookup(const at::Tensor& weight, const at::Tensor& keep_idx, int64_t layout);

// Stores a complete packed weight (the caller synchronized after packing) for these
// sources; `weight_version` and `keep_version` were read before packing, so an edit
// racing with the packing leaves an entry the next lookup finds stale. Counts a miss;
// returns whether the entry was stored (not: the cache is off or the entry is larger
// than the limit). The Python objects get weakrefs whose callback flags a death.
bool insert(pybind11::handle weight, pybind11::handle keep_idx, int64_t layout,
            int64_t weight_version, int64_t keep_version, const at::Tensor& packed_weight,
            const at::Tensor& packed_index, int64_t stream_id);

void set_limit(int64_t nbytes);
int64_t limit();
// Drops every entry and zeroes the hit and miss counts.
void clear();
Info info();

}  // namespace gwprune::pack_cache
