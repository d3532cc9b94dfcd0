"""Latency measurement: median milliseconds of a zero-argument callable.

CUDA: ``triton.testing.do_bench`` (median; it flushes L2 before every timed run)
when triton imports, else CUDA events with the same flush, warm-up and median.
CPU: ``time.perf_counter`` medians of a few runs; CPU numbers only show the
command works, they say nothing about the GPU kernels.

Inputs that fit in L2 are also rotated (see ``rotation_count``): a call that
reuses the input of the previous call would otherwise read it from cache.
"""

import math
import statistics
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import torch

ROTATION_LIMIT_BYTES = 64 * 2**20  # larger than the L2 of an H100 (50 MB) or H200 (60 MB)
MAX_INPUT_SETS = 8
_L2_FLUSH_BYTES = 256 * 2**20


def rotation_count(operand_bytes: int, device: torch.device) -> int:
    """How many input sets to rotate among for an operand of this size.

    Enough sets to stream about twice the rotation limit through the cache, at most
    MAX_INPUT_SETS; one set for operands that do not fit in L2 anyway, and on CPU.
    """
    if device.type != "cuda" or operand_bytes >= ROTATION_LIMIT_BYTES:
        return 1
    return max(1, min(MAX_INPUT_SETS, math.ceil(2 * ROTATION_LIMIT_BYTES / max(operand_bytes, 1))))


@dataclass(frozen=True)
class Timing:
    ms: float
    runs: int
    method: str


class CpuTimer:
    """perf_counter median of a few runs (after one warm-up call)."""

    def __init__(self, repeats: int = 25, budget_s: float = 0.25):
        self.repeats = repeats
        self.budget_s = budget_s

    def describe(self) -> str:
        return (
            f"time.perf_counter median of up to {self.repeats} runs after 1 warm-up"
            " (the layer benchmark: providers interleaved, one run each per round)"
        )

    def measure(self, fn: Callable[[], object]) -> Timing:
        fn()
        times: list[float] = []
        started = time.perf_counter()
        while len(times) < self.repeats:
            begin = time.perf_counter()
            fn()
            times.append((time.perf_counter() - begin) * 1e3)
            if len(times) >= 3 and time.perf_counter() - started > self.budget_s:
                break
        return Timing(statistics.median(times), len(times), "perf_counter")

    def measure_interleaved(self, fns: list[Callable[[], object]]) -> list[Timing]:
        """Times several calls in rounds, each round one run of every call, so that a slow
        spell of a shared CPU (another process, frequency) lands on all of them alike and
        their ratios stay fair: the CPU preset's ratios to dense moved by up to 30 % from
        run to run when each provider was timed in its own stretch (bench/NOTES.md)."""
        for fn in fns:
            fn()
        times: list[list[float]] = [[] for _ in fns]
        started = time.perf_counter()
        for round_ in range(self.repeats):
            for fn, runs in zip(fns, times, strict=True):
                begin = time.perf_counter()
                fn()
                runs.append((time.perf_counter() - begin) * 1e3)
            if round_ >= 2 and time.perf_counter() - started > self.budget_s * len(fns):
                break
        return [
            Timing(statistics.median(runs), len(runs), "perf_counter, interleaved")
            for runs in times
        ]


class CudaTimer:
    """do_bench (or CUDA events) median; a call slower than ``slow_ms`` is timed 3 times only."""

    def __init__(self, warmup_ms: float = 10.0, rep_ms: float = 50.0, slow_ms: float = 250.0):
        self.warmup_ms = warmup_ms
        self.rep_ms = rep_ms
        self.slow_ms = slow_ms
        try:
            from triton.testing import do_bench
        except Exception:  # noqa: BLE001  (any import failure means: use CUDA events)
            do_bench = None
        self._do_bench = do_bench
        self._flush_buffer: torch.Tensor | None = None

    def describe(self) -> str:
        engine = "triton.testing.do_bench" if self._do_bench else "CUDA events"
        return (
            f"{engine} median, warm-up {self.warmup_ms:g} ms, timed runs for {self.rep_ms:g} ms, "
            f"L2 flushed before each run; calls over {self.slow_ms:g} ms: median of 3"
        )

    def measure(self, fn: Callable[[], object]) -> Timing:
        first = self._event_times(fn, 1)[0]
        if first > self.slow_ms:
            # A full do_bench estimate alone would run a multi-second kernel 5 more times.
            return Timing(statistics.median([first, *self._event_times(fn, 2)]), 3, "events x3")
        if self._do_bench is not None:
            ms = self._do_bench(fn, warmup=self.warmup_ms, rep=self.rep_ms, return_mode="median")
            return Timing(float(ms), max(1, int(self.rep_ms / max(first, 1e-3))), "do_bench")
        warmups = max(1, int(self.warmup_ms / max(first, 1e-3)))
        repeats = max(3, int(self.rep_ms / max(first, 1e-3)))
        for _ in range(warmups):
            fn()
        return Timing(statistics.median(self._event_times(fn, repeats)), repeats, "events")

    def _event_times(self, fn: Callable[[], object], count: int) -> list[float]:
        if self._flush_buffer is None:
            self._flush_buffer = torch.empty(_L2_FLUSH_BYTES, dtype=torch.int8, device="cuda")
        pairs = []
        for _ in range(count):
            self._flush_buffer.zero_()  # evict the previous call's data from L2
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            pairs.append((start, end))
        torch.cuda.synchronize()
        return [start.elapsed_time(end) for start, end in pairs]


def make_timer(device: torch.device, warmup_ms: float, rep_ms: float):
    if device.type == "cuda":
        return CudaTimer(warmup_ms=warmup_ms, rep_ms=rep_ms)
    return CpuTimer()


@contextmanager
def measurement_settings(device: torch.device, cudnn_benchmark: bool, cpu_threads: int):
    """cuDNN autotuning (so dense gets cuDNN's best algorithm) and, on the CPU, the thread
    count of a run; both restored afterwards."""
    saved_benchmark, saved_threads = torch.backends.cudnn.benchmark, torch.get_num_threads()
    torch.backends.cudnn.benchmark = cudnn_benchmark
    if device.type == "cpu":
        torch.set_num_threads(cpu_threads)
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = saved_benchmark
        torch.set_num_threads(saved_threads)
