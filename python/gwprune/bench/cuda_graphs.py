"""The timed call of a whole model: a CUDA graph replay when it can be captured, else eager.

Capturing a model's forward removes its per-kernel launch cost (hundreds of small
launches for a transformer), on the dense and the converted side alike. A capture that
fails, or whose replay does not reproduce the eager output within the tolerance,
falls back to eager calls and says why; the caller records it.
"""

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from .correctness import passes, relative_error

WARMUP_CALLS = 3  # on a side stream before capture: cuDNN/cuBLAS picks and workspaces


@dataclass
class ModelCall:
    run: Callable[[], object]
    graphed: bool
    note: str = ""  # why a requested graph was not used
    _alive: tuple = field(default=(), repr=False)  # graph and its static output


def eager_call(model: nn.Module, x: torch.Tensor, note: str = "") -> ModelCall:
    def run():
        return model(x)

    return ModelCall(run, False, note)


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


def graphed_call(
    model: nn.Module, x: torch.Tensor, expected: torch.Tensor, tolerance: float
) -> ModelCall:
    """``model(x)`` captured in a CUDA graph (call inside ``torch.inference_mode``).

    ``expected`` is the eager output's first rows (``expected.shape[0]`` samples); the
    replayed output must match it within ``tolerance`` (relative), else eager is used.
    """
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP_CALLS):
                model(x)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = model(x)
        graph.replay()
        torch.cuda.synchronize()
    except Exception as error:  # noqa: BLE001  (any capture failure means: time eager)
        _recover()
        return eager_call(model, x, f"CUDA graph capture failed ({_first_line(error)}): eager")
    difference = relative_error(static_out[: expected.shape[0]], expected.double())
    if not passes(difference, tolerance):
        del graph, static_out
        return eager_call(
            model, x, f"CUDA graph replay differs from eager (rel. {difference:.2g}): eager"
        )
    return ModelCall(graph.replay, True, _alive=(graph, static_out))


def _recover() -> None:
    """Clears what a failed capture may leave behind (a pending error, cached blocks)."""
    with contextlib.suppress(Exception):  # the failure is already recorded
        torch.cuda.synchronize()
    torch.cuda.empty_cache()


def model_call(
    model: nn.Module,
    x: torch.Tensor,
    use_graphs: bool,
    expected: torch.Tensor,
    tolerance: float,
) -> ModelCall:
    """A graphed call on a CUDA device when ``use_graphs``, else an eager one."""
    if use_graphs and x.device.type == "cuda":
        return graphed_call(model, x, expected, tolerance)
    return eager_call(model, x)
