"""One measurement setting: a workload's data at one precision, pruned to one keep ratio.

``LayerData`` (weight and input sets) is made once per workload and precision and
shared by every keep ratio. ``Case`` adds the masks of the four patterns at one keep
ratio and the float64 reference output of each masked weight, made lazily and once.
"""

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from . import masks
from .precision import Precision
from .timing import rotation_count
from .workloads import Workload

# "channel": whole input channels pruned (the first round(keep * C) kept), the
# channel-pruned layer with the same FLOPs that the group-wise one is measured against.
PATTERNS = ("dense", "group", "element", "vector", "block", "channel")


class Unsupported(Exception):
    """A provider cannot run this case; the message says why (recorded, not an error)."""


def _generator(device: torch.device, *key) -> torch.Generator:
    # crc32 rather than hash(): Python salts str hashes per process, and masks must repeat.
    seed = zlib.crc32("/".join(map(str, key)).encode())
    return torch.Generator(device=device).manual_seed(seed)


@dataclass
class LayerData:
    workload: Workload
    precision: Precision
    device: torch.device
    weight: torch.Tensor  # dense-shaped, in the precision's dtype
    inputs: list[torch.Tensor]  # rotating input sets; NCHW for conv, [rows, in] for linear
    seed: int


def make_layer_data(
    workload: Workload, precision: Precision, device: torch.device, seed: int
) -> LayerData:
    """Random weight scaled by 1/sqrt(K), so outputs stay O(1) even in fp16, and inputs."""
    gen = torch.Generator(device=device).manual_seed(zlib.crc32(f"{seed}/{workload.slug}".encode()))
    dtype = precision.dtype
    scale = workload.num_groups**-0.5
    weight = (torch.randn(workload.weight_shape, generator=gen, device=device) * scale).to(dtype)
    input_bytes = torch.Size(workload.input_shape).numel() * weight.element_size()
    inputs = [
        torch.randn(workload.input_shape, generator=gen, device=device).to(dtype)
        for _ in range(rotation_count(input_bytes, device))
    ]
    return LayerData(workload, precision, device, weight, inputs, seed)


@dataclass
class Case:
    data: LayerData
    keep: float
    _masks: dict = field(default_factory=dict, repr=False)
    _references: dict = field(default_factory=dict, repr=False)

    @property
    def workload(self) -> Workload:
        return self.data.workload

    @property
    def precision(self) -> Precision:
        return self.data.precision

    @property
    def device(self) -> torch.device:
        return self.data.device

    @property
    def inputs(self) -> list[torch.Tensor]:
        return self.data.inputs

    @property
    def matrix_shape(self) -> tuple[int, int]:
        """The weight matrix every pattern is defined on: [out, K]."""
        return (self.data.weight.shape[0], self.workload.num_groups)

    def _generator(self, pattern: str) -> torch.Generator:
        return _generator(self.device, self.data.seed, self.workload.slug, self.keep, pattern)

    # ---- masks -----------------------------------------------------------------------

    def keep_idx(self) -> torch.Tensor:
        """Kept groups (int64, sorted, on the device)."""
        if "keep_idx" not in self._masks:
            self._masks["keep_idx"] = masks.group_keep_idx(
                self.workload.num_groups, self.keep, self._generator("group")
            )
        return self._masks["keep_idx"]

    def anchor_channels(self) -> int:
        """Input channels a channel-pruned layer with this keep ratio keeps."""
        return max(1, round(self.keep * self.workload.in_channels))

    def group_density(self) -> float:
        return masks.kept_count(self.workload.num_groups, self.keep) / self.workload.num_groups

    def nm_ratio(self) -> tuple[int, int]:
        return masks.nm_ratio(self.keep)

    def block_size(self) -> int | None:
        return masks.block_size_for(self.matrix_shape)

    def mask(self, pattern: str) -> torch.Tensor | None:
        """Boolean [out, K] mask of a pattern at this keep ratio (None for dense)."""
        if pattern not in PATTERNS:
            raise ValueError(f"unknown pattern {pattern!r}; expected one of {PATTERNS}")
        if pattern == "dense":
            return None
        if pattern not in self._masks:
            self._masks[pattern] = self._make_mask(pattern)
        return self._masks[pattern]

    def _make_mask(self, pattern: str) -> torch.Tensor:
        shape, gen = self.matrix_shape, self._generator(pattern)
        if pattern == "group":
            return masks.group_mask(shape, self.keep_idx())
        if pattern == "channel":
            taps = self.workload.num_groups // self.workload.in_channels
            return masks.channel_mask(shape, self.anchor_channels(), taps, self.device)
        if pattern == "element":
            # The same density as the group pattern, so the patterns compare like for like.
            return masks.element_mask(shape, self.group_density(), gen)
        if pattern == "vector":
            return masks.nm_mask(shape, *self.nm_ratio(), gen)
        block = self.block_size()
        if block is None:
            raise Unsupported(
                f"weight matrix {shape[0]}x{shape[1]} does not divide into 16x16 blocks"
            )
        return masks.block_mask(shape, self.group_density(), block, gen)

    def density(self, pattern: str) -> float:
        mask = self.mask(pattern)
        return 1.0 if mask is None else masks.density(mask)

    def masked_weight(self, pattern: str) -> torch.Tensor:
        """The dense-shaped weight with the pattern's pruned entries set to zero."""
        mask = self.mask(pattern)
        weight = self.data.weight
        if mask is None:
            return weight
        return (weight.reshape(self.matrix_shape) * mask.to(weight.dtype)).reshape(weight.shape)

    # ---- operands and references -------------------------------------------------------

    def operand_sets(self, build: Callable[[torch.Tensor], torch.Tensor]) -> list[torch.Tensor]:
        """``build`` applied to as many input sets as the built operand's size calls for."""
        first = build(self.inputs[0])
        count = min(
            len(self.inputs), rotation_count(first.numel() * first.element_size(), self.device)
        )
        return [first, *(build(x) for x in self.inputs[1:count])]

    def reference(self, pattern: str) -> torch.Tensor:
        """float64 output of the pattern's masked weight on input set 0 (computed once)."""
        if pattern not in self._references:
            weight = self.masked_weight(pattern).double()
            x = self.inputs[0].double()
            workload = self.workload
            if workload.kind == "conv":
                out = F.conv2d(x, weight, None, workload.stride, workload.padding)
            else:
                out = F.linear(x, weight)
            self._references[pattern] = out
        return self._references[pattern]
