"""What a provider is: one way of computing a pruned layer, prepared once and then timed."""

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..case import Case, Unsupported

__all__ = ["Case", "Prepared", "Provider", "Unsupported"]


def _identity(out: torch.Tensor) -> torch.Tensor:
    return out


@dataclass
class Prepared:
    """A provider readied for one case: everything but ``run`` happens before timing.

    ``run(i)`` computes the layer on input set ``i`` (``0 <= i < num_sets``) and is
    what gets timed; ``to_output`` turns its result into the layer's output shape
    ([N, Cout, H, W] or [rows, out]) for the correctness check, outside the timing.
    """

    run: Callable[[int], torch.Tensor]
    num_sets: int
    to_output: Callable[[torch.Tensor], torch.Tensor] = _identity
    note: str = ""


class Provider:
    """Base class. Subclasses set the attributes and implement ``prepare``.

    name: unique, used in tables and file names (e.g. 'group-packed-cl').
    pattern: which mask of the Case its weight follows ('dense', 'group', 'element',
        'vector', 'block'); its output is checked against that mask's float64 reference.
    family: the line style group in plots ('dense', 'group-wise', 'floor', ...).
    kinds: workload kinds it applies to; no row at all is written for other kinds.
    keep_independent: timed once per workload and precision, at keep 1.0 (dense).
    reorders_sums: sums in an order unlike a GEMM's (sparse kernels, Winograd/FFT
        convolutions), so fp32 gets the looser tolerance.
    note: what the timing includes or excludes, copied into every row.
    """

    name = "provider"
    pattern = "dense"
    family = "dense"
    kinds: tuple[str, ...] = ("conv", "linear")
    keep_independent = False
    reorders_sums = False
    note = ""

    def check_supported(self, case: Case) -> None:
        """Raises Unsupported (with the reason) when this provider cannot run ``case``."""

    def prepare(self, case: Case) -> Prepared:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<provider {self.name}>"
