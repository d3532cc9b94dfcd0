"""Group indexing: the seed's two ways of marking pruned groups (Algorithms 1-2).

A *group* is one column of ``weight.reshape(out, -1)``: for a conv weight
``[Cout, C, kh, kw]`` the flat index of ``(c, i, j)``; for a linear weight
``[out, in]`` one input feature. ``keep_idx`` lists the kept groups.

A grouped conv (``groups`` = g, weight ``[Cout, C/g, kh, kw]``) has one weight-expansion
matrix per conv group, ``[Cout/g, C/g*kh*kw]``; its groups are numbered by the input
channel over all ``C`` channels: ``(c, i, j)`` with ``c`` in ``[0, C)`` belongs to conv
group ``c // (C/g)``, so there are ``C*kh*kw`` of them as for an ungrouped conv, and
group-wise pruning applies within each conv group.
"""

import math

import torch

from ._checks import check_tensor


def num_groups(weight: torch.Tensor, groups: int = 1) -> int:
    """How many groups a conv or linear weight has (C*kh*kw, or in_features)."""
    return groups * math.prod(weight.shape[1:])


def grouped_columns(weight: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """``[groups, Cout/groups, C/groups*kh*kw]``: each conv group's expansion matrix;
    flattening dims 0 and 2 numbers the groups as ``(c, i, j)`` over all C channels."""
    return weight.reshape(groups, weight.shape[0] // groups, -1)


def keep_idx_from_mask(group_mask: torch.Tensor) -> torch.Tensor:
    """Sorted int64 indices of the True entries of a group mask.

    ``group_mask`` is boolean, shaped like one filter (``[C, kh, kw]``), flat
    (``[C*kh*kw]`` or ``[in_features]``), or 0/1 numbers of those shapes.
    """
    check_tensor(group_mask, "group_mask")
    if group_mask.dtype != torch.bool:
        # Numbers other than 0 and 1 (2, -1, 0.5) are more likely a mistake (scores, a
        # keep count) than a mask: refuse them rather than read every nonzero as kept.
        bad = (group_mask != 0) & (group_mask != 1)
        if bool(bad.any()):
            raise ValueError("gwprune: group_mask must be boolean or hold only 0 and 1")
        group_mask = group_mask != 0
    return group_mask.reshape(-1).nonzero().reshape(-1)


def keep_idx_from_zeroed(weight: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """Sorted int64 indices of the groups of ``weight`` that are not entirely zero
    (``groups``: of a grouped conv, see the module docstring)."""
    check_tensor(weight, "weight")
    if weight.dim() not in (2, 4):
        raise ValueError(
            "gwprune: weight must be a linear [out, in] or conv [Cout, C, kh, kw] weight, "
            f"got shape {tuple(weight.shape)}"
        )
    nonzero = grouped_columns(weight, groups).ne(0).any(dim=1)
    return nonzero.reshape(-1).nonzero().reshape(-1)


def group_mask_from_keep_idx(keep_idx: torch.Tensor, num_groups: int) -> torch.Tensor:
    """Boolean mask of ``num_groups`` entries, True at the kept groups."""
    mask = torch.zeros(num_groups, dtype=torch.bool, device=keep_idx.device)
    mask[keep_idx.long()] = True
    return mask


def mask_weight(weight: torch.Tensor, keep_idx: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """A copy of ``weight`` with every pruned group set to zero (the dense equivalent;
    ``groups``: of a grouped conv, whose ``keep_idx`` numbers ``(c, i, j)`` over all C)."""
    columns = grouped_columns(weight, groups)
    mask = group_mask_from_keep_idx(keep_idx.to(weight.device), groups * columns.shape[2])
    mask = mask.view(groups, 1, columns.shape[2]).to(weight.dtype)
    return (columns * mask).reshape(weight.shape)
