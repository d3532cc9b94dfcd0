"""Packed weights of the raw ops, kept between calls.

``gwprune.ops.conv2d(x, weight, keep_idx)`` and ``ops.linear`` take a dense weight and
``keep_idx``; validating ``keep_idx`` costs a host sync on a GPU and packing costs a sort,
a gather and a copy of the kept columns. The cache keeps one packed weight per
(weight, keep_idx, input layout), so a repeated call is gather + GEMM only, like the packed
ops.

Where it lives. With ``gwprune._C`` the store is C++ (csrc/pack_cache.cpp; its contract,
the one below, in csrc/pack_cache.h), and an eager raw call that hits is one call into it:
``gwprune._C.conv2d_cached`` / ``linear_cached`` look the sources up, run the op's checks
and the op, and return None on a miss, which comes back here (``conv2d_entry`` /
``linear_entry``: validate, pack, insert). This module is the store's Python API; without
``_C`` it keeps a Python store of the same contract (``_PythonPackCache``).

What makes a hit. An entry remembers the weight and keep_idx *objects* (their TensorImpls;
the Python store: the Python objects) through weak references (a dead reference matches
nothing, so a new tensor that reuses a freed tensor's ``id`` or address is a miss) and, for
each, what the object may change without becoming another object: its version counter
(every in-place op bumps it: ``w.mul_(2)``, ``w[0] = 1``, ``keep.copy_(...)``, ``set_``,
``resize_``), its storage (the C++ store: the StorageImpl, held weakly too, so a freed
storage whose memory is reused does not match), data pointer, shape, strides and dtype
(``module.half()`` or ``.to()`` swap ``.data`` without a version bump, but to another
storage). Writes that bypass the version counter, ``w.data.mul_()`` or writes through
``numpy()`` / DLPack, are not seen: call ``clear_pack_cache()`` after them. Tensors made
under ``torch.inference_mode`` have no version counter and are never cached (each call
packs).

Lifetime. The cache never holds the caller's tensors, only its own packed copies, whose
bytes count against the limit (LRU by bytes, default 1 GiB, ``GWPRUNE_PACK_CACHE_MB``;
``set_pack_cache_limit(0)`` turns it off). When the weight or keep_idx object dies, its
entries are dropped at the next cache operation (a weakref callback flags the death).
Streams: packing ends with the one host sync that validates ``keep_idx``, so a packed
weight is complete before any stream can see it; a hit on another stream than the one it
was packed on records that stream on the packed tensors (``Tensor.record_stream``; the C++
hit path: csrc/cuda/cached_operands.cpp), so freeing an entry never hands its memory to a
new allocation while a kernel on that stream may still read it. Thread-safe: one lock
guards the table; packing itself runs outside it. The versions are read before packing, so
an edit racing with the packing leaves an entry that the next call finds stale.
"""

import math
import os
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass

import torch

from . import _checks
from ._extension import _C
from ._layout import conv_output_memory_format
from .groups import num_groups
from .packing import (
    PackedConv2dWeight,
    PackedLinearWeight,
    pack_conv2d_unchecked,
    pack_linear_unchecked,
)

_DEFAULT_LIMIT_BYTES = 2**30
_MAX_LIMIT_BYTES = 2**63 - 1

CAPTURE_MESSAGE = (
    "gwprune: a raw op (gwprune.ops.conv2d / linear) cannot be captured in a CUDA graph: its "
    "packed weight lives in the pack cache, which may free it; capture "
    "gwprune.ops.conv2d_packed / linear_packed or a gwprune module instead"
)

# The layouts a pack is ordered for (csrc/pack_cache.h uses the same codes).
CONV_NCHW = 0
CONV_CHANNELS_LAST = 1
LINEAR = 2


def _initial_limit_bytes() -> int:
    value = os.environ.get("GWPRUNE_PACK_CACHE_MB")
    if value is None:
        return _DEFAULT_LIMIT_BYTES
    try:
        megabytes = float(value)
    except ValueError:
        raise ValueError(f"GWPRUNE_PACK_CACHE_MB must be a number, got {value!r}") from None
    if not math.isfinite(megabytes) or megabytes < 0:
        raise ValueError(f"GWPRUNE_PACK_CACHE_MB must be a non-negative number, got {value!r}")
    return min(int(megabytes * 2**20), _MAX_LIMIT_BYTES)


class _Entry:
    """A cached packed weight, as lookups return it."""

    __slots__ = (
        "packed",
        "nbytes",
        "stream_id",  # the stream a CUDA entry was packed on; -1 on the CPU
    )

    def __init__(self, packed, nbytes: int, stream_id: int):
        self.packed = packed
        self.nbytes = nbytes
        self.stream_id = stream_id


def _new_entry(packed) -> _Entry:
    packed_weight, packed_index = packed_tensors(packed)
    stream_id = (
        torch.cuda.current_stream(packed_weight.device).stream_id if packed_weight.is_cuda else -1
    )
    return _Entry(packed, packed_weight.nbytes + packed_index.nbytes, stream_id)


def _source_versions(weight: torch.Tensor, keep_idx: torch.Tensor) -> tuple[int, int] | None:
    """Both version counters, or None for inference tensors (none to read: never cached)."""
    try:
        return weight._version, keep_idx._version
    except RuntimeError:
        return None


@dataclass(frozen=True)
class PackCacheInfo:
    """What ``pack_cache_info()`` reports."""

    entries: int
    nbytes: int
    limit_bytes: int
    hits: int
    misses: int


class _NativePackCache:
    """The store in gwprune._C (csrc/pack_cache.h), which the raw ops' eager hit path
    (gwprune._C.conv2d_cached / linear_cached) reads without coming back to Python."""

    def __init__(self, limit_bytes: int):
        _C.pack_cache_set_limit(limit_bytes)

    @property
    def limit_bytes(self) -> int:
        return _C.pack_cache_limit()

    def get(self, layout: int, weight: torch.Tensor, keep_idx: torch.Tensor) -> _Entry | None:
        """The entry packed from exactly these tensors in their current state, or None."""
        found = _C.pack_cache_lookup(weight, keep_idx, layout)
        if found is None:
            return None
        packed_weight, packed_index, stream_id, nbytes = found
        # A hit: weight has the shape it was packed with.
        if layout == LINEAR:
            packed = PackedLinearWeight(packed_weight, packed_index, weight.shape[1])
        else:
            kernel_size = (weight.shape[2], weight.shape[3])
            packed = PackedConv2dWeight(packed_weight, packed_index, weight.shape[1], kernel_size)
        return _Entry(packed, nbytes, stream_id)

    def put(self, layout: int, weight, keep_idx, entry: _Entry, versions) -> _Entry:
        """Stores ``entry`` (complete: the caller synchronized after packing) for these
        sources as they were at ``versions`` (None: inference tensors, not stored); returns
        it, stored or not (a disabled cache or an entry larger than the limit is not)."""
        if versions is not None:
            packed_weight, packed_index = packed_tensors(entry.packed)
            _C.pack_cache_insert(weight, keep_idx, layout, *versions, packed_weight,
                                 packed_index, entry.stream_id)  # fmt: skip
        return entry

    def set_limit(self, nbytes: int) -> None:
        _C.pack_cache_set_limit(nbytes)

    def clear(self) -> None:
        _C.pack_cache_clear()

    def info(self) -> PackCacheInfo:
        return PackCacheInfo(*_C.pack_cache_info())


class _Record:
    """An entry of the Python store and what its sources looked like when packed."""

    __slots__ = (
        "entry",
        "weight_ref",
        "keep_ref",
        "weight_version",
        "keep_version",
        "weight_ptr",
        "keep_ptr",
        "weight_shape",
        "weight_stride",
        "weight_dtype",
    )

    def matches(self, weight: torch.Tensor, keep_idx: torch.Tensor) -> bool:
        return (
            self.weight_ref() is weight
            and self.keep_ref() is keep_idx
            and weight._version == self.weight_version
            and keep_idx._version == self.keep_version
            and weight.data_ptr() == self.weight_ptr
            and keep_idx.data_ptr() == self.keep_ptr
            and weight.dtype is self.weight_dtype
            and weight.shape == self.weight_shape
            and weight.stride() == self.weight_stride
        )


class _PythonPackCache:
    """The store of a gwprune without _C (the reference path): the same contract as the C++
    store, but a source is matched by its Python object and data pointer, not its
    StorageImpl, so a new storage that a ``.data`` swap puts where a freed one was is not
    seen (tests/test_pack_cache.py shows the C++ store telling them apart)."""

    def __init__(self, limit_bytes: int):
        self._lock = threading.Lock()
        self._records: OrderedDict[tuple, _Record] = OrderedDict()
        self._dead: list[tuple] = []  # keys whose source died (appended by weakref callbacks)
        self._bytes = 0
        self.limit_bytes = limit_bytes
        self.hits = 0
        self.misses = 0

    def get(self, layout: int, weight: torch.Tensor, keep_idx: torch.Tensor) -> _Entry | None:
        if self._dead:
            self._purge_dead()
        key = (id(weight), id(keep_idx), layout)
        record = self._records.get(key)
        try:
            if record is None or not record.matches(weight, keep_idx):
                return None
        except RuntimeError:  # an inference tensor: no version counter
            return None
        with self._lock:
            if key in self._records:
                self._records.move_to_end(key)
            self.hits += 1
        return record.entry

    def put(self, layout: int, weight, keep_idx, entry: _Entry, versions) -> _Entry:
        if versions is None:
            return entry
        record = _Record()
        record.entry = entry
        record.weight_version, record.keep_version = versions
        record.weight_ptr = weight.data_ptr()
        record.keep_ptr = keep_idx.data_ptr()
        record.weight_shape = weight.shape
        record.weight_stride = weight.stride()
        record.weight_dtype = weight.dtype
        key = (id(weight), id(keep_idx), layout)

        def source_died(_ref, key=key):
            self._dead.append(key)  # list.append is atomic; the purge takes the lock

        record.weight_ref = weakref.ref(weight, source_died)
        record.keep_ref = weakref.ref(keep_idx, source_died)
        with self._lock:
            self.misses += 1
            if self.limit_bytes == 0 or entry.nbytes > self.limit_bytes:
                return entry
            old = self._records.pop(key, None)
            if old is not None:
                self._bytes -= old.entry.nbytes
            self._records[key] = record
            self._bytes += entry.nbytes
            self._evict_to(self.limit_bytes)
        return entry

    def _evict_to(self, limit: int) -> None:
        # Caller holds the lock. Least recently used first.
        while self._bytes > limit and self._records:
            _, old = self._records.popitem(last=False)
            self._bytes -= old.entry.nbytes

    def _purge_dead(self) -> None:
        with self._lock:
            dead, self._dead = self._dead, []
            for key in dead:
                record = self._records.get(key)
                if record is None:
                    continue
                if record.weight_ref() is None or record.keep_ref() is None:
                    del self._records[key]
                    self._bytes -= record.entry.nbytes

    def set_limit(self, nbytes: int) -> None:
        with self._lock:
            self.limit_bytes = nbytes
            self._evict_to(nbytes)

    def clear(self) -> None:
        with self._lock:
            self._records.clear()
            self._dead = []
            self._bytes = 0
            self.hits = 0
            self.misses = 0

    def info(self) -> PackCacheInfo:
        if self._dead:
            self._purge_dead()
        with self._lock:
            return PackCacheInfo(
                len(self._records), self._bytes, self.limit_bytes, self.hits, self.misses
            )


_cache = (_NativePackCache if _C is not None else _PythonPackCache)(_initial_limit_bytes())


def packed_tensors(packed) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(packed, PackedConv2dWeight):
        return packed.weight, packed.group_idx
    return packed.weight, packed.feature_idx


def conv2d_layout(x: torch.Tensor) -> int:
    """The cache's code for the input layout a conv pack is ordered for."""
    if conv_output_memory_format(x) == torch.channels_last:
        return CONV_CHANNELS_LAST
    return CONV_NCHW


def lookup(layout: int, weight: torch.Tensor, keep_idx: torch.Tensor) -> _Entry | None:
    """The cached entry for these sources (no validation, no sync), or None."""
    return _cache.get(layout, weight, keep_idx)


def record_use(entry: _Entry) -> None:
    """Before a kernel on the current stream reads a CUDA entry: refuses CUDA graph capture
    (an evicted entry would leave the graph reading freed memory) and marks the packed
    tensors as used by the current stream when it is not the one they were packed on, so
    freeing them later waits for that stream. The C++ eager path does the same
    (csrc/cuda/cached_operands.cpp)."""
    if entry.stream_id < 0:
        return
    if torch.cuda.is_current_stream_capturing():
        raise RuntimeError(CAPTURE_MESSAGE)
    packed_weight, packed_index = packed_tensors(entry.packed)
    stream = torch.cuda.current_stream(packed_weight.device)
    if stream.stream_id != entry.stream_id:
        packed_weight.record_stream(stream)
        packed_index.record_stream(stream)


def _validated_pack(pack, keep_idx: torch.Tensor, limit: int, what: str):
    """Sorts keep_idx, packs with it and validates it with one host sync, taken after the
    packing kernels are queued so that the packed weight is complete when it returns."""
    if keep_idx.numel() == 0:
        return pack(keep_idx.reshape(-1).long())
    ordered = torch.sort(keep_idx.reshape(-1)).values
    stats = _checks.index_value_stats(ordered)
    # Clamped so an invalid index cannot fault the gather before the check below rejects it.
    packed = pack(ordered.long().clamp(0, limit - 1))
    _checks.check_index_stats(stats.tolist(), "keep_idx", limit, what)
    return packed


def conv2d_entry(weight: torch.Tensor, keep_idx: torch.Tensor, layout: int) -> _Entry:
    """The packed weight of a raw conv call: cached, or validated, packed and cached."""
    entry = _cache.get(layout, weight, keep_idx)
    if entry is not None:
        return entry
    versions = _source_versions(weight, keep_idx)  # before packing (see the module doc)
    memory_format = torch.channels_last if layout == CONV_CHANNELS_LAST else torch.contiguous_format
    packed = _validated_pack(
        lambda keep: pack_conv2d_unchecked(weight, keep, memory_format),
        keep_idx,
        num_groups(weight),
        "groups (C*kh*kw of weight)",
    )
    return _cache.put(layout, weight, keep_idx, _new_entry(packed), versions)


def linear_entry(weight: torch.Tensor, keep_idx: torch.Tensor) -> _Entry:
    """The packed weight of a raw linear call: cached, or validated, packed and cached."""
    entry = _cache.get(LINEAR, weight, keep_idx)
    if entry is not None:
        return entry
    versions = _source_versions(weight, keep_idx)
    packed = _validated_pack(
        lambda keep: pack_linear_unchecked(weight, keep),
        keep_idx,
        weight.shape[1],
        "input features of weight",
    )
    return _cache.put(LINEAR, weight, keep_idx, _new_entry(packed), versions)


# ---- public API ------------------------------------------------------------------------


def set_pack_cache_limit(nbytes: int) -> None:
    """Caps the bytes of packed weights the raw ops keep (LRU; default 1 GiB, or
    ``GWPRUNE_PACK_CACHE_MB``). 0 turns the cache off: every raw call validates and packs
    again (one host sync on a GPU). Lowering the cap evicts at once."""
    if isinstance(nbytes, bool) or not isinstance(nbytes, int):
        raise TypeError(f"nbytes must be an int, got {type(nbytes).__name__}")
    if not 0 <= nbytes <= _MAX_LIMIT_BYTES:
        raise ValueError(f"nbytes must be between 0 and 2^63 - 1, got {nbytes}")
    _cache.set_limit(nbytes)


def get_pack_cache_limit() -> int:
    """The pack cache's cap in bytes (0: off)."""
    return _cache.limit_bytes


def clear_pack_cache() -> None:
    """Drops every cached packed weight and zeroes the counters of ``pack_cache_info``; also
    drops the CPU linear's pre-packed (oneDNN / MKL) weight copies
    (csrc/cpu/mkl_packed_weights.h), which are kept per packed weight outside this cache
    and, like it, miss writes that bypass the version counter."""
    _cache.clear()
    clear_mkl = getattr(_C, "clear_mkl_linear_weights", None)  # absent from an older _C
    if clear_mkl is not None:
        clear_mkl()


def pack_cache_info() -> PackCacheInfo:
    """Entries, bytes held, the cap, and hits and misses since the last clear."""
    return _cache.info()
