"""Random masks of the four pruning patterns, on the weight matrix ``[out, K]``.

``K`` is ``C*kh*kw`` (conv, flat ``(c, i, j)``) or ``in_features`` (linear). The
benchmark measures speed, not accuracy, so which weights are kept is random; only
the pattern and the density matter. Kept entries are True. Every function takes a
``torch.Generator`` so a run is reproducible; masks are made on the generator's
device (a GPU makes the 100-million-entry masks of VGG's first linear layer in
milliseconds, a CPU in seconds).
"""

import math
from fractions import Fraction

import torch


def kept_count(total: int, density: float) -> int:
    """How many of ``total`` items a density keeps: rounded, at least one."""
    return min(total, max(1, round(density * total)))


def group_keep_idx(num_groups: int, keep: float, generator: torch.Generator) -> torch.Tensor:
    """Sorted int64 indices of the kept groups (whole columns of ``[out, K]``)."""
    chosen = torch.randperm(num_groups, generator=generator, device=generator.device)
    chosen = chosen[: kept_count(num_groups, keep)]
    return torch.sort(chosen).values


def group_mask(shape: tuple[int, int], keep_idx: torch.Tensor) -> torch.Tensor:
    mask = torch.zeros(shape, dtype=torch.bool, device=keep_idx.device)
    mask[:, keep_idx] = True
    return mask


def channel_mask(
    shape: tuple[int, int], channels: int, taps: int, device: torch.device
) -> torch.Tensor:
    """The first ``channels`` input channels, every tap of each: columns [0, channels*taps)."""
    mask = torch.zeros(shape, dtype=torch.bool, device=device)
    mask[:, : channels * taps] = True
    return mask


def element_mask(
    shape: tuple[int, int], density: float, generator: torch.Generator
) -> torch.Tensor:
    """Unstructured: exactly round(density * numel) entries kept, anywhere."""
    numel = math.prod(shape)
    device = generator.device
    mask = torch.zeros(numel, dtype=torch.bool, device=device)
    chosen = torch.randperm(numel, generator=generator, device=device)
    mask[chosen[: kept_count(numel, density)]] = True
    return mask.reshape(shape)


def nm_ratio(keep: float) -> tuple[int, int]:
    """The N:M (kept per vector, vector length) of a keep ratio, M >= 4: 0.5 -> 2:4, 0.9 -> 9:10."""
    fraction = Fraction(keep).limit_denominator(32)
    n, m = max(1, fraction.numerator), fraction.denominator
    scale = math.ceil(4 / m)  # vectors shorter than 4 are not what vector-wise means
    return n * scale, m * scale


def nm_mask(shape: tuple[int, int], n: int, m: int, generator: torch.Generator) -> torch.Tensor:
    """Vector-wise N:M: in each run of ``m`` consecutive entries of a row, ``n`` are kept.

    A row whose length is not a multiple of ``m`` ends with a shorter vector that
    keeps proportionally fewer entries (the exact density is then slightly off n/m).
    """
    rows, cols = shape
    vectors = math.ceil(cols / m)
    device = generator.device
    scores = torch.rand((rows, vectors, m), generator=generator, device=device)
    mask = torch.zeros((rows, vectors, m), dtype=torch.bool, device=device)
    mask.scatter_(-1, scores.topk(n, dim=-1).indices, True)
    tail = vectors * m - cols  # padding positions of the last vector
    if tail:
        real = m - tail
        last = torch.zeros((rows, m), dtype=torch.bool, device=device)
        last_keep = max(1, round(n * real / m))
        last.scatter_(-1, scores[:, -1, :real].topk(last_keep, dim=-1).indices, True)
        mask[:, -1] = last
    return mask.reshape(rows, vectors * m)[:, :cols].contiguous()


def block_size_for(shape: tuple[int, int]) -> int | None:
    """32x32 blocks where both dimensions divide, else 16x16, else None (no block pattern)."""
    for size in (32, 16):
        if shape[0] % size == 0 and shape[1] % size == 0:
            return size
    return None


def block_mask(
    shape: tuple[int, int], density: float, block: int, generator: torch.Generator
) -> torch.Tensor:
    """Block-wise: whole ``block x block`` tiles kept, round(density * tiles) of them."""
    rows, cols = shape
    if rows % block or cols % block:
        raise ValueError(f"shape {shape} is not divisible into {block}x{block} blocks")
    tiles = element_mask((rows // block, cols // block), density, generator)
    return tiles.repeat_interleave(block, 0).repeat_interleave(block, 1)


def density(mask: torch.Tensor) -> float:
    return mask.sum().item() / mask.numel() if mask.numel() else 0.0
