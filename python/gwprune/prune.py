"""Pruning toolkit: group importance, group selection, and the seed's sparsity patterns.

Everything works on the weight-expansion matrix ``F = weight.reshape(out, -1)``
(``[Cout, C*kh*kw]`` for a conv, ``[out, in]`` for a linear layer), so the
four patterns below can be compared at equal density:

- element-wise: any single weights (``elementwise_mask``);
- vector-wise N:M: in every run of M consecutive weights of a row of F keep N
  (``nm_mask``, 2:4 by default);
- block-wise: ``m x n`` tiles of F (``blockwise_mask``);
- group-wise: whole columns of F (``groupwise_mask``), the pattern gwprune's
  kernels turn into a smaller dense GEMM.

Masks are boolean and shaped like the weight. ``apply_mask`` attaches one via
``torch.nn.utils.prune.custom_from_mask`` so fine-tuning keeps pruned weights
at zero; ``remove_masks`` makes the zeros permanent.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.utils.prune as torch_prune

from .conv1d import linear_weight

__all__ = [
    "CRITERIA",
    "GroupSelection",
    "group_scores",
    "layer_group_scores",
    "select_by_ratio",
    "select_global",
    "select_groups",
    "elementwise_mask",
    "nm_mask",
    "blockwise_mask",
    "groupwise_mask",
    "weight_mask_from_group_mask",
    "apply_mask",
    "apply_selection",
    "remove_masks",
]

CRITERIA = ("l1", "l2", "taylor")

Criterion = str | Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]


# ---- group importance ----------------------------------------------------------------


def _expansion_matrix(weight: torch.Tensor, name: str = "weight") -> torch.Tensor:
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"gwprune: {name} must be a torch.Tensor, got {type(weight).__name__}")
    if weight.dim() not in (2, 4):
        raise ValueError(
            f"gwprune: {name} must be a linear [out, in] or conv [Cout, C, kh, kw] weight, "
            f"got shape {tuple(weight.shape)}"
        )
    return weight.detach().reshape(weight.shape[0], -1)


def group_scores(
    weight: torch.Tensor,
    criterion: Criterion = "l2",
    grad: torch.Tensor | None = None,
    groups: int = 1,
) -> torch.Tensor:
    """Importance of each group (column of ``weight.reshape(out, -1)``), ``[num_groups]``.

    ``criterion``: ``'l1'`` (sum of |w| over the column), ``'l2'`` (the column's
    Euclidean norm), ``'taylor'`` (first-order Taylor, sum of |w * grad|; needs
    ``grad``), or a callable ``(weight, grad) -> scores[num_groups]``. Higher is
    more important. Scores are float32 or wider, on the weight's device.
    ``groups``: of a grouped conv, whose groups are scored within their conv group
    and numbered ``(c, i, j)`` over all C input channels (``gwprune.groups``).
    """
    columns = _expansion_matrix(weight)
    if groups != 1:
        # [Cout/g, g*C/g*kh*kw]: conv group k's columns at [k*C/g*kh*kw, ...), its rows only.
        columns = _grouped_expansion(columns, groups)
    # Accumulate in at least float32 so half-precision weights rank the same.
    accumulate_dtype = torch.promote_types(columns.dtype, torch.float32)
    if callable(criterion):
        scores = criterion(weight.detach(), None if grad is None else grad.detach())
        if not isinstance(scores, torch.Tensor) or scores.shape != (columns.shape[1],):
            got = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
            raise ValueError(
                f"gwprune: criterion callable must return a tensor of shape ({columns.shape[1]},) "
                f"(one score per group), got {got}"
            )
        return scores.detach().to(accumulate_dtype)
    if criterion == "l1":
        return columns.to(accumulate_dtype).abs().sum(dim=0)
    if criterion == "l2":
        return torch.linalg.vector_norm(columns.to(accumulate_dtype), dim=0)
    if criterion == "taylor":
        if grad is None:
            raise ValueError(
                "gwprune: criterion 'taylor' needs the weight's gradient but grad is None: run a "
                "forward and backward pass on a loss first (weight.grad must be populated)"
            )
        if grad.shape != weight.shape:
            raise ValueError(
                f"gwprune: grad has shape {tuple(grad.shape)} but weight has {tuple(weight.shape)}"
            )
        grad_columns = _expansion_matrix(grad, "grad")
        if groups != 1:
            grad_columns = _grouped_expansion(grad_columns, groups)
        product = columns.to(accumulate_dtype) * grad_columns.to(accumulate_dtype)
        return product.abs().sum(dim=0)
    raise ValueError(
        f"gwprune: criterion must be one of {CRITERIA} or a callable (weight, grad) -> scores, "
        f"got {criterion!r}"
    )


def _grouped_expansion(columns: torch.Tensor, groups: int) -> torch.Tensor:
    """[Cout, K] of a grouped conv -> [Cout/g, g*K]: each conv group's block side by side,
    so column sums over rows score each group within its own conv group."""
    rows = columns.shape[0] // groups
    return columns.reshape(groups, rows, -1).permute(1, 0, 2).reshape(rows, -1)


def _effective_weight_and_grad(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The weight a forward uses and its gradient, also for torch.nn.utils.prune'd modules.

    With a prune mask attached, ``module.weight`` is ``weight_orig * weight_mask``
    (a non-leaf, so no ``.grad``); the gradient lives on ``weight_orig`` and is
    already zero at masked positions.
    """
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"gwprune: {type(module).__name__} has no weight tensor to score")
    if hasattr(module, "weight_orig") and hasattr(module, "weight_mask"):
        weight, grad = module.weight_orig.detach() * module.weight_mask, module.weight_orig.grad
    else:
        weight, grad = weight.detach(), weight.grad
    # transformers' Conv1D stores [in, out]: score it as the nn.Linear it computes.
    return linear_weight(module, weight), None if grad is None else linear_weight(module, grad)


def layer_group_scores(module: nn.Module, criterion: Criterion = "l2") -> torch.Tensor:
    """``group_scores`` of a conv/linear module's (effective, masked) weight and its grad."""
    weight, grad = _effective_weight_and_grad(module)
    if criterion == "taylor" and grad is None:
        raise ValueError(
            f"gwprune: criterion 'taylor' needs weight.grad but the {type(module).__name__}'s "
            "weight.grad is None: run a forward and backward pass on a loss before pruning"
        )
    return group_scores(weight, criterion, grad, getattr(module, "groups", 1))


# ---- group selection -----------------------------------------------------------------


@dataclass(frozen=True)
class GroupSelection:
    """Kept groups of one layer: sorted int64 ``keep_idx`` and the bool ``group_mask``."""

    keep_idx: torch.Tensor
    group_mask: torch.Tensor

    @property
    def num_groups(self) -> int:
        return self.group_mask.numel()

    @property
    def num_kept(self) -> int:
        return self.keep_idx.numel()

    @property
    def keep_ratio(self) -> float:
        return self.num_kept / self.num_groups if self.num_groups else 1.0

    def weight_mask(self, weight: torch.Tensor) -> torch.Tensor:
        """Bool mask shaped like ``weight``: whole kept columns True."""
        return weight_mask_from_group_mask(self.group_mask, weight)

    @classmethod
    def from_keep_idx(cls, keep_idx: torch.Tensor, num_groups: int) -> "GroupSelection":
        keep_idx = torch.sort(keep_idx.long()).values
        mask = torch.zeros(num_groups, dtype=torch.bool, device=keep_idx.device)
        mask[keep_idx] = True
        return cls(keep_idx, mask)


def _check_keep_ratio(keep_ratio) -> float:
    if isinstance(keep_ratio, bool) or not isinstance(keep_ratio, (int, float)):
        raise TypeError(f"gwprune: keep_ratio must be a number, got {type(keep_ratio).__name__}")
    if not 0.0 < keep_ratio <= 1.0:
        raise ValueError(f"gwprune: keep_ratio must be in (0, 1], got {keep_ratio}")
    return float(keep_ratio)


def _count_to_keep(keep_ratio: float, total: int, minimum: int = 1) -> int:
    # Round half up (not Python's banker's rounding) so counts are predictable.
    return min(total, max(minimum, int(keep_ratio * total + 0.5)))


def _top_indices(scores: torch.Tensor, count: int) -> torch.Tensor:
    """Indices of the ``count`` highest scores; ties go to the lower index (stable)."""
    order = torch.sort(scores, descending=True, stable=True).indices
    return order[:count]


def select_by_ratio(scores: torch.Tensor, keep_ratio: float) -> GroupSelection:
    """Keeps the ``round(keep_ratio * num_groups)`` highest-scoring groups (at least 1)."""
    keep_ratio = _check_keep_ratio(keep_ratio)
    if not isinstance(scores, torch.Tensor) or scores.dim() != 1:
        raise ValueError("gwprune: scores must be a 1-D tensor (one score per group)")
    count = _count_to_keep(keep_ratio, scores.numel())
    return GroupSelection.from_keep_idx(_top_indices(scores, count), scores.numel())


def select_global(
    scores_by_layer: Mapping[str, torch.Tensor], keep_ratio: float, min_keep_per_layer: int = 1
) -> dict[str, GroupSelection]:
    """One threshold across layers: keeps ``round(keep_ratio * all groups)`` groups in all.

    Each layer first keeps its ``min_keep_per_layer`` best groups (so no layer is
    cut off entirely); the rest of the budget goes to the highest scores of any
    layer. Scores are compared as given: normalize them per layer beforehand if the
    layers' scales differ (e.g. with a callable criterion).
    """
    keep_ratio = _check_keep_ratio(keep_ratio)
    if isinstance(min_keep_per_layer, bool) or not isinstance(min_keep_per_layer, int):
        raise TypeError("gwprune: min_keep_per_layer must be an int")
    if min_keep_per_layer < 0:
        raise ValueError(f"gwprune: min_keep_per_layer must be >= 0, got {min_keep_per_layer}")
    if not scores_by_layer:
        return {}
    names = list(scores_by_layer)
    total = sum(scores_by_layer[name].numel() for name in names)
    budget = _count_to_keep(keep_ratio, total)

    kept: dict[str, list[torch.Tensor]] = {}
    candidate_scores, candidate_layer, candidate_index = [], [], []
    for layer_number, name in enumerate(names):
        scores = scores_by_layer[name].detach().reshape(-1).float().cpu()
        order = torch.sort(scores, descending=True, stable=True).indices
        forced = order[: min(min_keep_per_layer, scores.numel())]
        kept[name] = [forced]
        budget -= forced.numel()
        rest = order[forced.numel() :]
        candidate_scores.append(scores[rest])
        candidate_layer.append(torch.full_like(rest, layer_number))
        candidate_index.append(rest)

    if budget > 0:
        all_scores = torch.cat(candidate_scores)
        chosen = _top_indices(all_scores, budget)
        chosen_layer = torch.cat(candidate_layer)[chosen]
        chosen_index = torch.cat(candidate_index)[chosen]
        for layer_number, name in enumerate(names):
            kept[name].append(chosen_index[chosen_layer == layer_number])

    return {
        name: GroupSelection.from_keep_idx(
            torch.cat(kept[name]).to(scores_by_layer[name].device), scores_by_layer[name].numel()
        )
        for name in names
    }


def select_groups(
    layers: Mapping[str, nn.Module],
    keep_ratio: float,
    *,
    criterion: Criterion = "l2",
    scope: str = "layer",
    min_keep_per_layer: int = 1,
) -> dict[str, GroupSelection]:
    """Scores each layer's groups by ``criterion`` and selects the kept ones.

    ``scope='layer'`` keeps ``keep_ratio`` of every layer's groups; ``scope='global'``
    uses one threshold across all layers (see ``select_global``).
    """
    scores = {name: layer_group_scores(module, criterion) for name, module in layers.items()}
    if scope == "layer":
        return {
            name: select_by_ratio(layer_scores, keep_ratio) for name, layer_scores in scores.items()
        }
    if scope == "global":
        return select_global(scores, keep_ratio, min_keep_per_layer)
    raise ValueError(f"gwprune: scope must be 'layer' or 'global', got {scope!r}")


# ---- sparsity patterns on F = weight.reshape(out, -1) ---------------------------------


def weight_mask_from_group_mask(group_mask: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Broadcasts a group mask (``[num_groups]`` or ``[C, kh, kw]``) to ``weight``'s shape."""
    columns = _expansion_matrix(weight)
    if not isinstance(group_mask, torch.Tensor) or group_mask.numel() != columns.shape[1]:
        got = tuple(group_mask.shape) if isinstance(group_mask, torch.Tensor) else group_mask
        raise ValueError(
            f"gwprune: group_mask must have {columns.shape[1]} entries (one per group of a weight "
            f"of shape {tuple(weight.shape)}), got {got}"
        )
    flat = group_mask.reshape(1, -1).to(device=weight.device) != 0
    return flat.expand(columns.shape[0], -1).reshape(weight.shape).clone()


def groupwise_mask(
    weight: torch.Tensor,
    keep_ratio: float,
    criterion: Criterion = "l2",
    grad: torch.Tensor | None = None,
) -> torch.Tensor:
    """Group-wise pattern: keeps whole columns of F, the ``keep_ratio`` best by ``criterion``."""
    selection = select_by_ratio(group_scores(weight, criterion, grad), keep_ratio)
    return selection.weight_mask(weight)


def elementwise_mask(weight: torch.Tensor, keep_ratio: float) -> torch.Tensor:
    """Element-wise (unstructured) pattern: keeps the ``keep_ratio`` largest |w| of the layer."""
    keep_ratio = _check_keep_ratio(keep_ratio)
    magnitudes = _expansion_matrix(weight).abs().reshape(-1)
    kept = _top_indices(magnitudes, _count_to_keep(keep_ratio, magnitudes.numel()))
    mask = torch.zeros(magnitudes.numel(), dtype=torch.bool, device=weight.device)
    mask[kept] = True
    return mask.reshape(weight.shape)


def nm_mask(weight: torch.Tensor, n: int = 2, m: int = 4) -> torch.Tensor:
    """Vector-wise N:M pattern along the rows of F: in every run of ``m`` consecutive
    weights of a row keep the ``n`` largest |w| (2:4 by default; density n/m).

    When a row's length is not a multiple of ``m`` its last, shorter run keeps
    ``min(n, run length)`` weights.
    """
    if not (isinstance(n, int) and isinstance(m, int)) or not 0 < n <= m:
        raise ValueError(f"gwprune: N:M needs integers 0 < n <= m, got n={n!r}, m={m!r}")
    columns = _expansion_matrix(weight)
    rows, length = columns.shape
    runs = -(-length // m)
    # Pad with -1 (below any magnitude) so padding is never chosen over a real weight.
    padded = columns.abs().new_full((rows, runs * m), -1.0)
    padded[:, :length] = columns.abs()
    grouped = padded.reshape(rows, runs, m)
    order = torch.sort(grouped, dim=-1, descending=True, stable=True).indices[..., :n]
    mask = torch.zeros_like(grouped, dtype=torch.bool).scatter_(-1, order, True)
    mask = mask.reshape(rows, runs * m)[:, :length]
    return mask.reshape(weight.shape)


def blockwise_mask(
    weight: torch.Tensor, keep_ratio: float, block_shape: tuple[int, int] = (4, 4)
) -> torch.Tensor:
    """Block-wise pattern: tiles F into ``block_shape = (rows, cols)`` blocks (edge blocks
    may be smaller) and keeps the ``keep_ratio`` of blocks with the largest L2 norm."""
    keep_ratio = _check_keep_ratio(keep_ratio)
    if (
        not isinstance(block_shape, (tuple, list))
        or len(block_shape) != 2
        or not all(isinstance(size, int) and size > 0 for size in block_shape)
    ):
        raise ValueError(f"gwprune: block_shape must be two positive ints, got {block_shape!r}")
    columns = _expansion_matrix(weight)
    rows, length = columns.shape
    block_rows, block_cols = block_shape
    grid_rows, grid_cols = -(-rows // block_rows), -(-length // block_cols)
    squares = columns.new_zeros(grid_rows * block_rows, grid_cols * block_cols)
    squares[:rows, :length] = columns.pow(2)
    norms = (
        squares.reshape(grid_rows, block_rows, grid_cols, block_cols).sum(dim=(1, 3)).sqrt()
    ).reshape(-1)
    kept = _top_indices(norms, _count_to_keep(keep_ratio, norms.numel()))
    block_mask = torch.zeros(norms.numel(), dtype=torch.bool, device=weight.device)
    block_mask[kept] = True
    block_mask = block_mask.reshape(grid_rows, grid_cols)
    mask = block_mask.repeat_interleave(block_rows, 0).repeat_interleave(block_cols, 1)
    return mask[:rows, :length].reshape(weight.shape)


# ---- masks on modules ----------------------------------------------------------------


def apply_mask(module: nn.Module, mask: torch.Tensor, name: str = "weight") -> nn.Module:
    """Attaches ``mask`` to ``module.<name>`` with ``torch.nn.utils.prune.custom_from_mask``.

    ``mask`` is shaped like the weight, or a group mask (``[num_groups]`` /
    ``[C, kh, kw]``) that is broadcast over the rows. Afterwards ``module.<name>`` is
    ``<name>_orig * <name>_mask`` at every forward, so gradient steps cannot revive
    pruned weights. A second call combines the masks (logical and).
    """
    weight = getattr(module, name, None)
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"gwprune: {type(module).__name__} has no tensor attribute {name!r}")
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"gwprune: mask must be a torch.Tensor, got {type(mask).__name__}")
    if mask.shape != weight.shape:
        if weight.dim() in (2, 4) and mask.numel() == weight[0].numel():
            mask = weight_mask_from_group_mask(mask, weight)
        else:
            raise ValueError(
                f"gwprune: mask has shape {tuple(mask.shape)} but {name} has shape "
                f"{tuple(weight.shape)} (or give a group mask of {weight[0].numel()} entries)"
            )
    torch_prune.custom_from_mask(module, name, mask.to(device=weight.device, dtype=weight.dtype))
    return module


def apply_selection(
    layers: Mapping[str, nn.Module], selections: Mapping[str, GroupSelection]
) -> None:
    """``apply_mask`` of each layer's group selection (as returned by ``select_groups``)."""
    missing = set(selections) - set(layers)
    if missing:
        raise KeyError(f"gwprune: selections name layers not in layers: {sorted(missing)}")
    for name, selection in selections.items():
        apply_mask(layers[name], selection.group_mask)


def remove_masks(model: nn.Module) -> list[str]:
    """Makes every ``torch.nn.utils.prune`` mask in ``model`` permanent (``prune.remove``).

    Returns the qualified names of the tensors that were un-reparametrized, e.g.
    ``['features.0.weight']``.
    """
    removed = []
    for module_name, module in model.named_modules():
        pruned_tensors = [
            hook._tensor_name
            for hook in module._forward_pre_hooks.values()
            if isinstance(hook, torch_prune.BasePruningMethod)
        ]
        for tensor_name in pruned_tensors:
            torch_prune.remove(module, tensor_name)
            removed.append(f"{module_name}.{tensor_name}" if module_name else tensor_name)
    return removed
