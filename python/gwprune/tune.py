"""Per-layer backend choice: each gwprune layer runs gathered or as its masked dense
twin, whichever is faster at the input it really gets.

The compacted GEMM pays where a layer is compute-bound (many channels, small
images, wide linears). Where a layer is memory-bound the explicit operand it writes
and re-reads costs more than pruning saves: ResNet-18's 64-channel 56x56 convs run
about 2x (TF32) to 3.7x (fp16) slower gathered than cuDNN on the masked weight
(bench/NOTES.md change 13). ``autotune(model, *inputs)`` runs one forward to see
each gwprune layer's input, times both backends of every layer on it, and switches
each layer to the faster one (``set_backend``). Like ``torch.backends.cudnn.benchmark``
the choice holds for the shapes, dtype, layout, precision flags and device it was
made with; run it again when those change.
"""

import statistics
import time
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from .nn import BACKENDS, GroupwiseConv2d, GroupwiseLinear

__all__ = ["autotune", "AutotuneReport", "LayerBackend"]

_GROUPWISE = (GroupwiseConv2d, GroupwiseLinear)


@dataclass
class LayerBackend:
    name: str
    kind: str  # "GroupwiseConv2d" or "GroupwiseLinear"
    input_shape: tuple[int, ...] | None  # None: the layer did not run in the forward
    times_ms: dict[str, float] = field(default_factory=dict)  # backend -> median ms
    backend: str = "gathered"


@dataclass
class AutotuneReport:
    layers: list[LayerBackend] = field(default_factory=list)

    @property
    def dense(self) -> list[str]:
        """Names of the layers switched to the dense backend."""
        return [layer.name for layer in self.layers if layer.backend == "dense"]

    def __str__(self) -> str:
        lines = [
            f"gwprune autotune: {len(self.layers)} layers, {len(self.dense)} run dense "
            f"(masked weight), {len(self.layers) - len(self.dense)} gathered"
        ]
        width = max((len(layer.name) for layer in self.layers), default=0)
        for layer in self.layers:
            if layer.input_shape is None:
                lines.append(
                    f"  {layer.name:<{width}}  not run by the forward: left {layer.backend}"
                )
                continue
            times = ", ".join(f"{b} {ms:.4f} ms" for b, ms in layer.times_ms.items())
            shape = "x".join(map(str, layer.input_shape))
            lines.append(f"  {layer.name:<{width}}  {shape:<18} {times}  -> {layer.backend}")
        return "\n".join(lines)


def _check_args(model, warmup, repeats, margin) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"gwprune: model must be an nn.Module, got {type(model).__name__}")
    for name, value, low in (("warmup", warmup, 0), ("repeats", repeats, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"gwprune: {name} must be an int >= {low}, got {value!r}")
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0 <= margin < 1:
        raise ValueError(f"gwprune: margin must be a number in [0, 1), got {margin!r}")


def _layer_inputs(model: nn.Module, inputs, kwargs) -> dict[str, torch.Tensor]:
    """The input of each gwprune layer in one forward (its last call if it runs twice)."""
    seen: dict[str, torch.Tensor] = {}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, _GROUPWISE):

            def record(_module, args, name=name):
                seen[name] = args[0]

            handles.append(module.register_forward_pre_hook(record))
    try:
        with torch.inference_mode():
            model(*inputs, **kwargs)
    finally:
        for handle in handles:
            handle.remove()
    return seen


# GPU cycles (~0.5 ms) the device sleeps before each timed call, so the host has queued
# the whole call before it starts: the events then time the GPU's work, not the host's
# launch overhead (tens of microseconds per gwprune call, more than the GPU time of a
# small layer; CUDA graphs and torch.compile remove it, and so does a deep model's
# asynchronous queue).
_QUEUE_AHEAD_CYCLES = 1_000_000


def _median_ms(fn, x: torch.Tensor, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn(x)
    if x.device.type == "cuda":
        events = []
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda._sleep(_QUEUE_AHEAD_CYCLES)
            start.record()
            fn(x)
            end.record()
            events.append((start, end))
        torch.cuda.synchronize(x.device)
        return statistics.median(start.elapsed_time(end) for start, end in events)
    times = []
    for _ in range(repeats):
        begin = time.perf_counter()
        fn(x)
        times.append((time.perf_counter() - begin) * 1e3)
    return statistics.median(times)


def _layout_of(x: torch.Tensor) -> torch.memory_format:
    if (
        x.dim() == 4
        and not x.is_contiguous()
        and x.is_contiguous(memory_format=torch.channels_last)
    ):
        return torch.channels_last
    return torch.contiguous_format


def autotune(
    model: nn.Module,
    *inputs,
    warmup: int = 3,
    repeats: int = 10,
    margin: float = 0.02,
    **kwargs,
) -> AutotuneReport:
    """Sets every gwprune layer of ``model`` to its faster backend for ``model(*inputs,
    **kwargs)`` and returns what it measured.

    Each layer is timed alone on the input it received in one forward (median of
    ``repeats`` after ``warmup`` calls): on a GPU its device time by CUDA events, with
    the call queued behind a short sleep kernel so host launch overhead is not counted
    (what a CUDA-graphed, compiled or deep asynchronous model sees); on the CPU by
    ``perf_counter``.
    A conv on a GPU is timed on both gathered CUDA paths (``"implicit"`` where its
    kernel takes the layer, and ``"explicit"``) and keeps the faster; any layer goes
    dense only when that is faster than its best gathered time by more than ``margin``
    (a fraction);
    layers the forward does not reach keep their backend. The forward runs in eval mode
    (each module's mode is restored afterwards). Run under the precision
    flags (``torch.backends.*.allow_tf32``) the model will run with. Synchronizes the
    device: call it once after conversion, not inside a timed or captured region.
    """
    _check_args(model, warmup, repeats, margin)
    # The forward runs in eval mode (restored after): a model left in training mode
    # would otherwise update its BatchNorm statistics or apply dropout while timed.
    training = {module: module.training for module in model.modules()}
    model.eval()
    try:
        return _autotune(model, inputs, kwargs, warmup, repeats, margin)
    finally:
        for module, mode in training.items():
            module.training = mode


def _candidates(module, x) -> tuple[str, ...]:
    """The backends worth timing: a CUDA conv's two gathered paths (implicit, explicit)
    and dense; elsewhere gathered and dense."""
    if x.is_cuda and "implicit" in module.BACKENDS:
        return ("explicit", "implicit", "dense")
    return BACKENDS


def _autotune(model, inputs, kwargs, warmup, repeats, margin) -> AutotuneReport:
    captured = _layer_inputs(model, inputs, kwargs)
    report = AutotuneReport()
    for name, module in model.named_modules():
        if not isinstance(module, _GROUPWISE):
            continue
        x = captured.get(name)
        entry = LayerBackend(name, type(module).__name__, None, backend=module.backend)
        report.layers.append(entry)
        if x is None:
            continue
        entry.input_shape = tuple(x.shape)
        layout = _layout_of(x)
        for backend in _candidates(module, x):
            # Outside inference_mode: the dense weight must stay a normal tensor.
            module.set_backend(backend, layout)
            with torch.inference_mode():
                try:
                    entry.times_ms[backend] = _median_ms(module, x, warmup, repeats)
                except ValueError:  # "implicit" where its kernel cannot take this layer
                    continue
        gathered = {b: ms for b, ms in entry.times_ms.items() if b != "dense"}
        best = min(gathered, key=gathered.get)
        faster = entry.times_ms["dense"] < (1 - margin) * gathered[best]
        entry.backend = "dense" if faster else best
        module.set_backend(entry.backend, layout)
    return report
