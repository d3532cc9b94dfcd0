"""One model at one size on one device: its dense weights, its input, its pruned variants.

The dense model and the input are made once (seeded, on the CPU, then moved). The
pruned variants are made for one keep ratio at a time (a new keep ratio drops the
previous one, so at most one set of copies lives on the device), in float32; each
precision then works on cast copies. The float64 reference of the masked dense model
is computed once per keep ratio and weight dtype on the first ``check_samples``
samples of the input.
"""

import copy

import torch
import torch.nn as nn

from .model_pruning import PrunedModel, prune_model
from .model_specs import MEMORY_FORMATS, ModelSize, ModelSpec, build_model
from .precision import Precision

CHECK_SAMPLES = 4  # samples of the batch compared against float64 (outputs are per sample)


class ModelCase:
    def __init__(self, spec: ModelSpec, size: ModelSize, device: torch.device, seed: int):
        self.spec, self.size, self.device = spec, size, device
        dense = build_model(spec, size, seed)
        self.input = spec.make_input(dense, size, seed).to(device)
        self.dense = dense.to(device)
        self.check_samples = min(CHECK_SAMPLES, size.batch)
        self._pruned: PrunedModel | None = None
        self._references: dict[tuple[float, torch.dtype], torch.Tensor] = {}

    def pruned(self, keep: float) -> PrunedModel:
        if self._pruned is None or self._pruned.keep != keep:
            self._pruned, self._references = None, {}  # free the previous keep's copies first
            self._pruned = prune_model(self.dense, self.spec, keep)
        return self._pruned

    def input_for(self, precision: Precision, layout: str) -> torch.Tensor:
        """The input cast to the precision's dtype (images only) in the layout's memory format."""
        if self.spec.takes_tokens:
            return self.input
        x = self.input.to(precision.dtype)
        return x.contiguous(memory_format=MEMORY_FORMATS[layout])

    def cast(self, model: nn.Module, dtype: torch.dtype, layout: str = "contiguous") -> nn.Module:
        """A copy of ``model`` in ``dtype`` with 4-D weights in the layout's memory format."""
        with torch.no_grad():
            copied = copy.deepcopy(model).to(dtype=dtype)
            if layout != "contiguous":
                copied = copied.to(memory_format=MEMORY_FORMATS[layout])
        return copied.eval()

    def reference(self, keep: float, precision: Precision) -> torch.Tensor:
        """float64 output of the masked dense model, with its weights and the input first
        rounded to the precision's dtype, on the first ``check_samples`` samples."""
        key = (keep, precision.dtype)
        if key not in self._references:
            masked = self.pruned(keep).masked
            x = self.input_for(precision, "contiguous")[: self.check_samples]
            try:
                self._references[key] = self._float64_output(masked, precision.dtype, x)
            except Exception:  # noqa: BLE001  (a float64 kernel missing on the device: use the CPU)
                cpu_model = copy.deepcopy(masked).cpu()
                self._references[key] = self._float64_output(cpu_model, precision.dtype, x.cpu())
        return self._references[key].to(self.device)

    def _float64_output(self, model: nn.Module, dtype: torch.dtype, x: torch.Tensor):
        with torch.no_grad():
            model64 = copy.deepcopy(model).to(dtype=dtype).to(dtype=torch.float64).eval()
        if x.is_floating_point():
            x = x.double()
        with torch.inference_mode():
            return model64(x).double()

    def first_samples(self, output: torch.Tensor) -> torch.Tensor:
        return output[: self.check_samples]
