"""Host cost of gwprune's eager wrappers, measured without a GPU (CPU-only build is enough).

    python bench/experiments/eager_wrapper_cpu.py [--calls 20000]

A CUDA call of gwprune.ops.conv2d_packed used to run the Python checks of _checks.py and
then gwprune._C.conv2d_packed; it now runs a few Python tests and gwprune._C's eager entry,
which checks in C++. Neither can launch anything here, so this times the parts that do not
need the GPU, per call, min over repeats:

- python-path: ops.conv2d_packed's Python checks and dispatch, the op stubbed out (what a
  CUDA call paid in Python before the eager entry).
- eager-entry: _C.conv2d_packed_eager on CPU tensors, which runs every check and then
  refuses the CPU tensor; the cost of a call that is refused at its first check is
  subtracted (pybind11's call and the exception's translation), leaving the checks.
- eager-prefix: what ops.conv2d_packed runs in Python before that entry (isinstance, the
  compile / autograd tests).
- raw-hit-prefix: the same for ops.conv2d served from the pack cache (the lookup included).
- pack-per-call: validating and packing keep_idx, what every raw call did before the cache.
"""

import argparse
import timeit

import torch

import gwprune
from gwprune import ops, pack_cache
from gwprune._extension import _C


def per_call_us(fn, calls: int, repeats: int = 7) -> float:
    return min(timeit.repeat(fn, number=calls, repeat=repeats)) / calls * 1e6


def refused(fn):
    def call():
        try:  # noqa: SIM105  (contextlib.suppress would add its own cost to every call)
            fn()
        except (ValueError, TypeError):
            pass

    return call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=20000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    x = torch.randn(1, 64, 14, 14)
    weight = torch.randn(64, 64, 3, 3)
    keep = torch.randperm(576)[:288]
    bias = torch.randn(64)
    packed = gwprune.pack_conv2d_weight(weight, keep)
    out = torch.empty(1, 64, 14, 14)
    ws = gwprune.get_workspace_limit()

    results = {}
    stub = ops._run_conv2d_packed
    ops._run_conv2d_packed = lambda *a: out
    try:
        results["python-path"] = per_call_us(
            lambda: ops.conv2d_packed(x, packed, bias, 1, 1), args.calls
        )
    finally:
        ops._run_conv2d_packed = stub

    entry_args = (packed.weight, packed.group_idx, bias, 64, (3, 3), 1, 1, 1, ws)
    full = per_call_us(refused(lambda: _C.conv2d_packed_eager(x, *entry_args)), args.calls)
    first = per_call_us(refused(lambda: _C.conv2d_packed_eager(None, *entry_args)), args.calls)
    results["eager-entry (checks)"] = full - first
    results["eager-entry refused at once"] = first

    def prefix():
        if not isinstance(packed, gwprune.PackedConv2dWeight):
            raise TypeError
        # ops._eager_call with the CUDA test turned around for this CPU tensor
        if not (isinstance(x, torch.Tensor) and not x.is_cuda):
            return False
        if torch.compiler.is_compiling():
            return False
        if torch.is_grad_enabled():
            return not (x.requires_grad or packed.weight.requires_grad or bias.requires_grad)
        return (packed.weight, packed.group_idx, packed.in_channels, packed.kernel_size, ws)

    results["eager-prefix"] = per_call_us(prefix, args.calls)
    ops.conv2d(x, weight, keep, bias, padding=1)  # fills the cache

    def raw_prefix():
        prefix()
        entry = pack_cache.lookup(pack_cache.conv2d_layout(x), weight, keep)
        assert entry is not None
        return entry.packed.weight, entry.packed.group_idx, entry.stream_id

    results["raw-hit-prefix (incl. cache lookup)"] = per_call_us(raw_prefix, args.calls)
    results["pack-per-call (before the cache)"] = per_call_us(
        lambda: gwprune.pack_conv2d_weight(weight, keep), max(1, args.calls // 20)
    )
    for name, us in results.items():
        print(f"{name:>40}: {us:7.2f} us")


if __name__ == "__main__":
    main()
