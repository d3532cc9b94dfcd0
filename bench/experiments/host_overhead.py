"""Host time of one eager gwprune call, the GPU kept out of the way.

    python bench/experiments/host_overhead.py [--calls 200] [--batches 15]

For calls whose GPU time is below their host time (small batches), eager latency is
the host's: Python checks, the C++ dispatch, cuBLAS/cuBLASLt set-up and kernel
launches. This queues each batch of calls behind a sleep kernel long enough that the
GPU never drains the queue, times the host loop with perf_counter and reports the
minimum over batches (the device host is shared: the minimum is the least disturbed
batch). Results are checked against float64 first.
"""

import argparse
import sys
import time

import torch
import torch.nn.functional as F

import gwprune

PRECISIONS = {"tf32": (torch.float32, True), "fp16": (torch.float16, False)}
TOLERANCE = {"tf32": 5e-3, "fp16": 1e-2}
SLEEP_CYCLES_PER_CALL = 200_000  # ~100 us of GPU sleep per queued call


def cases(dtype):
    x = torch.randn(64, 4096, device="cuda", dtype=dtype)
    w = torch.randn(4096, 4096, device="cuda", dtype=dtype) / 64
    b = torch.randn(4096, device="cuda", dtype=dtype)
    keep = torch.randperm(4096, device="cuda")[:2048]
    packed = gwprune.pack_linear_weight(w, keep)
    ref = F.linear(x.double(), gwprune.mask_weight(w, keep).double(), b.double())
    yield "linear-64x4096-bias", lambda: gwprune.ops.linear_packed(x, packed, b), ref
    yield "F.linear (dense)", lambda: F.linear(x, w, b), None
    xc = torch.randn(1, 512, 14, 14, device="cuda", dtype=dtype)
    xc = xc.contiguous(memory_format=torch.channels_last)
    wc = torch.randn(512, 512, 3, 3, device="cuda", dtype=dtype) / 48
    keep_c = torch.randperm(4608, device="cuda")[:2304]
    packed_c = gwprune.pack_conv2d_weight(wc, keep_c, torch.channels_last)
    ref_c = F.conv2d(xc.double(), gwprune.mask_weight(wc, keep_c).double(), b[:512].double(), 1, 1)
    bias_c = b[:512].contiguous()
    yield (
        "conv-n1-14x14-cl-bias",
        lambda: gwprune.ops.conv2d_packed(xc, packed_c, bias_c, 1, 1),
        ref_c,
    )
    yield "F.conv2d (dense, cl)", lambda: F.conv2d(xc, wc, bias_c, 1, 1), None


def host_us(fn, calls: int, batches: int) -> float:
    best = float("inf")
    for _ in range(batches):
        torch.cuda.synchronize()
        torch.cuda._sleep(SLEEP_CYCLES_PER_CALL * calls)
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls * 1e6)
    torch.cuda.synchronize()
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--batches", type=int, default=15)
    args = parser.parse_args()
    for name, (dtype, tf32) in PRECISIONS.items():
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        for case, fn, ref in cases(dtype):
            if ref is not None:
                error = float((fn().double() - ref).norm() / ref.norm())
                if not error <= TOLERANCE[name]:
                    sys.exit(f"{case} {name}: relative error {error:.2e}")
            for _ in range(20):
                fn()
            print(f"{name} {case}: {host_us(fn, args.calls, args.batches):.1f} us host per call")
    return 0


if __name__ == "__main__":
    sys.exit(main())
