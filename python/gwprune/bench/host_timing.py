"""Host time and eager latency of one call, for ``gwprune bench --host-overhead``.

Host time (CUDA): each batch of calls is queued behind a sleep kernel long enough that the
GPU never drains the queue, so ``time.perf_counter`` around the loop measures what the host
spends per call (Python, argument checks, dispatch, cuBLAS set-up, launches) and none of
the device time; the minimum over batches is the least disturbed one (the method of
bench/experiments/host_overhead.py, bench/NOTES.md change 14). A batch stays below the
launch queue's depth (about a thousand launches: GPU_CALLS in host_cli.py), or the host
would wait for the GPU and its time would count.

Eager latency (CUDA): back-to-back calls, no CUDA graphs, one synchronize at the end of each
batch; per call, the larger of host and device time. Median over batches.

CPU: the call is synchronous; perf_counter per call, minimum (host time) or median
(latency) over batches.
"""

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

SLEEP_CYCLES_PER_CALL = 200_000  # ~100 us of GPU sleep per queued call on a ~2 GHz GPU


@dataclass(frozen=True)
class HostTimer:
    device: torch.device
    calls: int = 200
    batches: int = 15
    warmup: int = 20

    def describe(self) -> str:
        if self.device.type == "cuda":
            return (
                f"host time: min over {self.batches} batches of {self.calls} calls queued behind "
                f"a {SLEEP_CYCLES_PER_CALL * self.calls:,}-cycle sleep kernel (GPU time "
                f"excluded); latency: median over {self.batches} batches of {self.calls} "
                "back-to-back eager calls, synchronized"
            )
        return (
            f"perf_counter over {self.batches} batches of {self.calls} calls: min (host time), "
            "median (latency)"
        )

    def host_us(self, fn: Callable[[], object]) -> float:
        self._warm(fn)
        best = float("inf")
        for _ in range(self.batches):
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
                torch.cuda._sleep(SLEEP_CYCLES_PER_CALL * self.calls)
            start = time.perf_counter()
            for _ in range(self.calls):
                fn()
            best = min(best, (time.perf_counter() - start) / self.calls * 1e6)
        self._sync()
        return best

    def latency_us(self, fn: Callable[[], object]) -> float:
        self._warm(fn)
        per_batch = []
        for _ in range(self.batches):
            self._sync()
            start = time.perf_counter()
            for _ in range(self.calls):
                fn()
            self._sync()
            per_batch.append((time.perf_counter() - start) / self.calls * 1e6)
        return statistics.median(per_batch)

    def _warm(self, fn: Callable[[], object]) -> None:
        for _ in range(self.warmup):
            fn()
        self._sync()

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
