"""Host time and eager latency of one call, for ``gwprune bench --host-overhead``.

The providers of one case (dense, raw, packed, module at one layer, variant and precision)
are timed together, in rounds: each round runs one batch of every provider, round-robin,
the first provider rotating from round to round, so drift of the host (clocks, other
processes, the allocator) hits every provider alike and the ratios of one case compare
batches taken moments apart.

Host time (CUDA): each batch of calls is queued behind a sleep kernel long enough that the
GPU never drains the queue, so ``time.perf_counter`` around the loop measures what the host
spends per call (Python, argument checks, dispatch, cuBLAS set-up, launches) and none of
the device time; the minimum over rounds is the least disturbed batch (the method of
bench/experiments/host_overhead.py, bench/NOTES.md change 14). A batch stays below the
launch queue's depth (about a thousand launches: GPU_CALLS in host_cli.py), or the host
would wait for the GPU and its time would count.

Eager latency (CUDA): back-to-back calls, no CUDA graphs, one synchronize at the end of each
batch; per call, the larger of host and device time. Median over rounds.

CPU: the call is synchronous; perf_counter per call, minimum (host time) or median
(latency) over rounds.
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
    batches: int = 15  # rounds: each runs one batch of every provider of the case
    warmup: int = 20

    def describe(self) -> str:
        rounds = (
            f"{self.batches} rounds, each one batch of {self.calls} calls per provider, "
            "round-robin (the first provider rotating)"
        )
        if self.device.type == "cuda":
            return (
                f"host time: min over {rounds}, every batch queued behind a "
                f"{SLEEP_CYCLES_PER_CALL * self.calls:,}-cycle sleep kernel (GPU time "
                f"excluded); latency: median over {self.batches} such rounds of back-to-back "
                "eager calls, synchronized"
            )
        return f"perf_counter over {rounds}: min (host time), median (latency)"

    def host_us_each(self, fns: dict[str, Callable[[], object]]) -> dict[str, float]:
        """Host time per call of each provider: min over rounds."""
        self._warm(fns)
        best = dict.fromkeys(fns, float("inf"))
        for name in self._round_robin(list(fns)):
            fn = fns[name]
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
                torch.cuda._sleep(SLEEP_CYCLES_PER_CALL * self.calls)
            start = time.perf_counter()
            for _ in range(self.calls):
                fn()
            best[name] = min(best[name], (time.perf_counter() - start) / self.calls * 1e6)
        self._sync()
        return best

    def latency_us_each(self, fns: dict[str, Callable[[], object]]) -> dict[str, float]:
        """Eager latency per call of each provider: median over rounds."""
        self._warm(fns)
        per_batch: dict[str, list[float]] = {name: [] for name in fns}
        for name in self._round_robin(list(fns)):
            fn = fns[name]
            self._sync()
            start = time.perf_counter()
            for _ in range(self.calls):
                fn()
            self._sync()
            per_batch[name].append((time.perf_counter() - start) / self.calls * 1e6)
        return {name: statistics.median(times) for name, times in per_batch.items()}

    def host_us(self, fn: Callable[[], object]) -> float:
        return self.host_us_each({"call": fn})["call"]

    def latency_us(self, fn: Callable[[], object]) -> float:
        return self.latency_us_each({"call": fn})["call"]

    def _round_robin(self, names: list[str]):
        """The providers' batches in order: round r starts at provider r mod n."""
        for r in range(self.batches):
            first = r % len(names) if names else 0
            yield from names[first:] + names[:first]

    def _warm(self, fns: dict[str, Callable[[], object]]) -> None:
        for fn in fns.values():
            for _ in range(self.warmup):
                fn()
        self._sync()

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
