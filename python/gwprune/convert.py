"""Model conversion: swap a model's eligible nn.Conv2d / nn.Linear for gwprune modules.

``convert(model, keep_ratio)`` prunes each eligible layer by a criterion and
converts it; ``convert(model)`` converts the layers that are already pruned
group-wise, either through ``torch.nn.utils.prune`` masks (``weight_mask``) or
by weights whose pruned columns are zero. Either way the converted model
computes what the masked dense model computes; ``to_dense`` goes back.
"""

import copy
import fnmatch
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.utils.parametrize as parametrize

from .conv1d import is_conv1d, linear_weight
from .dead_features import DeadFeatureReport, drop_dead_features
from .fold import FoldReport, fold_converted
from .groups import keep_idx_from_zeroed, mask_weight
from .nn import GroupwiseConv2d, GroupwiseLinear
from .prune import Criterion, GroupSelection, layer_group_scores, select_by_ratio, select_global

__all__ = [
    "convert",
    "to_dense",
    "masked_layer_weight",
    "ConversionReport",
    "ConvertedLayer",
    "SkippedLayer",
    "GROUPED_POLICIES",
]

# What convert does with grouped convs (groups > 1): leave them dense, reported
# ("skip"), or convert them (one gather + GEMM per conv group; time them with autotune).
GROUPED_POLICIES = ("skip", "convert")


@dataclass
class ConvertedLayer:
    name: str
    kind: str  # "Conv2d", "Linear" or "Conv1D": the dense layer that was replaced
    num_groups: int
    kept_groups: int
    weight_params: int  # weight entries of the dense layer
    kept_weight_params: int  # weight entries of the packed layer
    keep_idx: torch.Tensor = field(repr=False)  # sorted int64 kept groups

    @property
    def keep_ratio(self) -> float:
        return self.kept_groups / self.num_groups if self.num_groups else 1.0


@dataclass
class SkippedLayer:
    name: str
    kind: str
    reason: str


@dataclass
class ConversionReport:
    """What ``convert`` did: one entry per converted and per skipped conv/linear layer."""

    mode: str  # "prune(keep_ratio=..., criterion=...)" or "already pruned"
    converted: list[ConvertedLayer] = field(default_factory=list)
    skipped: list[SkippedLayer] = field(default_factory=list)
    # BatchNorms and activations folded into converted layers, and how the model was
    # restructured for it (gwprune.fold); None when convert ran with fold=False.
    folding: FoldReport | None = None
    # Linears narrowed to the features a converted linear reads (gwprune.dead_features);
    # None when convert ran with dead_features=False.
    dead_features: DeadFeatureReport | None = None

    @property
    def num_groups(self) -> int:
        return sum(layer.num_groups for layer in self.converted)

    @property
    def kept_groups(self) -> int:
        return sum(layer.kept_groups for layer in self.converted)

    @property
    def weight_params(self) -> int:
        return sum(layer.weight_params for layer in self.converted)

    @property
    def kept_weight_params(self) -> int:
        return sum(layer.kept_weight_params for layer in self.converted)

    def __str__(self) -> str:
        lines = [
            f"gwprune conversion ({self.mode}): {len(self.converted)} layers converted, "
            f"{len(self.skipped)} skipped"
        ]
        if self.converted:
            width = max(len(layer.name) for layer in self.converted)
            lines.append(f"  {'layer':<{width}}  kind    groups kept/total  weights kept/total")
            for layer in self.converted:
                groups = f"{layer.kept_groups}/{layer.num_groups}"
                weights = f"{layer.kept_weight_params}/{layer.weight_params}"
                lines.append(
                    f"  {layer.name:<{width}}  {layer.kind:<6}  {groups:>11} "
                    f"{100 * layer.keep_ratio:5.1f}%  {weights:>18}"
                )
            ratio = self.kept_weight_params / self.weight_params if self.weight_params else 1.0
            lines.append(
                f"  total: groups {self.kept_groups}/{self.num_groups}, weights "
                f"{self.kept_weight_params}/{self.weight_params} ({100 * ratio:.1f}% kept)"
            )
        if self.skipped:
            lines.append("  skipped:")
            width = max(len(layer.name) for layer in self.skipped)
            for layer in self.skipped:
                lines.append(f"  {layer.name:<{width}}  {layer.kind:<6}  {layer.reason}")
        if self.folding is not None and str(self.folding):
            lines.append(str(self.folding))
        if self.dead_features is not None and str(self.dead_features):
            lines.append(str(self.dead_features))
        return "\n".join(lines)


def _kind(module: nn.Module) -> str:
    if is_conv1d(module):
        return "Conv1D"
    return "Conv2d" if isinstance(module, nn.Conv2d) else "Linear"


def _is_layer(module: nn.Module) -> bool:
    return isinstance(module, (nn.Conv2d, nn.Linear)) or is_conv1d(module)


def _groups(module: nn.Module) -> int:
    return module.groups if isinstance(module, nn.Conv2d) else 1


def _effective_weight(module: nn.Module) -> torch.Tensor:
    """The weight a forward uses: ``weight_orig * weight_mask`` under a prune mask; a
    transformers Conv1D's as the ``[out, in]`` weight of the linear layer it computes."""
    if hasattr(module, "weight_orig") and hasattr(module, "weight_mask"):
        return linear_weight(module, (module.weight_orig * module.weight_mask).detach())
    return linear_weight(module, module.weight.detach())


def masked_layer_weight(module: nn.Module, keep_idx: torch.Tensor) -> torch.Tensor:
    """``module.weight`` (nn.Conv2d, grouped too; nn.Linear; transformers Conv1D, stored
    ``[in, out]``) with every group not in ``keep_idx`` zeroed: the weight of the masked
    dense layer a converted layer equals."""
    weight = module.weight.detach()
    keep_idx = keep_idx.to(weight.device)
    if is_conv1d(module):
        return mask_weight(weight.t(), keep_idx).t()
    return mask_weight(weight, keep_idx, _groups(module))


def _ineligibility(
    name: str,
    module: nn.Module,
    skip: Iterable[str],
    predicate: Callable[[str, nn.Module], bool] | None,
    attention_out_projs: set[str],
    shared_weights: dict[str, list[str]],
    grouped: str = "skip",
) -> str | None:
    """Why a conv/linear layer must stay dense, or None if it can be converted."""
    matched = [pattern for pattern in skip if fnmatch.fnmatchcase(name, pattern)]
    if matched:
        return f"in skip list ({matched[0]!r})"
    if predicate is not None and not predicate(name, module):
        return "predicate returned False"
    if name in attention_out_projs:
        # nn.MultiheadAttention passes out_proj.weight to F.multi_head_attention_forward
        # and never calls out_proj, so a replacement module would silently not run.
        return "out_proj of nn.MultiheadAttention (its weight is read directly, never called)"
    if parametrize.is_parametrized(module):
        return "weight is parametrized (torch.nn.utils.parametrize)"
    if name in shared_weights:
        return f"weight shared with {', '.join(shared_weights[name])} (tied weights)"
    if not isinstance(getattr(module, "weight", None), torch.Tensor) or isinstance(
        module.weight, nn.parameter.UninitializedParameter
    ):
        return "weight not initialized (lazy module)"
    if module.weight.dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        return f"weight dtype {module.weight.dtype} is not supported"
    if isinstance(module, nn.Conv2d):
        if module.padding_mode != "zeros":
            return f"padding_mode={module.padding_mode!r} (only 'zeros' is supported)"
        if module.groups != 1 and grouped == "skip":
            return _grouped_reason(module)
    return None


def _grouped_reason(conv: nn.Conv2d) -> str:
    depthwise = conv.groups == conv.in_channels
    what = "depthwise" if depthwise else f"{conv.in_channels // conv.groups} channels per group"
    return (
        f"grouped convolution (groups={conv.groups}): {what}; gwprune runs one gather + GEMM "
        "per conv group, not expected to beat the dense grouped kernel; "
        "convert(grouped='convert') and gwprune.autotune time it"
    )


def _find_attention_out_projs(model: nn.Module) -> set[str]:
    return {
        f"{name}.out_proj" if name else "out_proj"
        for name, module in model.named_modules()
        if isinstance(module, nn.MultiheadAttention)
    }


def _find_shared_weights(model: nn.Module) -> dict[str, list[str]]:
    """Qualified module name -> the other parameters that are its weight (tied weights)."""
    owners: dict[int, list[tuple[str, nn.Module]]] = {}
    for module_name, module in model.named_modules(remove_duplicate=False):
        for param_name, param in module._parameters.items():
            if param is not None:
                qualified = f"{module_name}.{param_name}" if module_name else param_name
                owners.setdefault(id(param), []).append((qualified, module))
    shared = {}
    for module_name, module in model.named_modules():
        # Under a torch.nn.utils.prune mask the parameter is weight_orig.
        weight = module._parameters.get("weight", module._parameters.get("weight_orig"))
        if weight is None:
            continue
        # A module reachable under two names is one layer, not a tie: compare by identity.
        others = sorted({name for name, owner in owners[id(weight)] if owner is not module})
        if others:
            shared[module_name] = others
    return shared


def _deepcopy_model(model: nn.Module) -> nn.Module:
    """``copy.deepcopy`` that also copes with torch.nn.utils.prune'd modules.

    After a forward with grad enabled, a pruned module's ``weight`` attribute is
    ``weight_orig * weight_mask`` with a grad_fn, and deepcopy refuses non-leaf
    tensors. Such attributes are recomputed by the pruning hook at every forward,
    so the copy gets a detached clone instead.
    """
    memo = {}
    for module in model.modules():
        for value in vars(module).values():
            if isinstance(value, torch.Tensor) and not value.is_leaf:
                memo[id(value)] = value.detach().clone()
    return copy.deepcopy(model, memo)


def _replace(model: nn.Module, target: nn.Module, replacement: nn.Module) -> None:
    """Points every reference to ``target`` inside ``model`` at ``replacement``."""
    for parent in model.modules():
        for child_name, child in list(parent._modules.items()):
            if child is target:
                setattr(parent, child_name, replacement)


def _mode_description(keep_ratio, criterion, scope: str, min_keep_per_layer: int) -> str:
    if keep_ratio is None:
        return "already pruned"
    criterion_name = getattr(criterion, "__name__", criterion)
    text = f"prune keep_ratio={keep_ratio}, criterion={criterion_name!r}"
    if scope == "global":
        text += f", scope='global', min_keep_per_layer={min_keep_per_layer}"
    return text


def _check_convert_args(model, keep_ratio, skip, predicate, scope) -> list[str]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"gwprune: model must be an nn.Module, got {type(model).__name__}")
    if keep_ratio is not None and (
        isinstance(keep_ratio, bool)
        or not isinstance(keep_ratio, (int, float))
        or not 0.0 < keep_ratio <= 1.0
    ):
        raise ValueError(
            f"gwprune: keep_ratio must be None or a number in (0, 1], got {keep_ratio!r}"
        )
    if isinstance(skip, str):
        skip = [skip]
    skip = list(skip)
    if not all(isinstance(pattern, str) for pattern in skip):
        raise TypeError("gwprune: skip must be an iterable of module-name strings or glob patterns")
    if predicate is not None and not callable(predicate):
        raise TypeError("gwprune: predicate must be a callable (name, module) -> bool")
    if scope not in ("layer", "global"):
        raise ValueError(f"gwprune: scope must be 'layer' or 'global', got {scope!r}")
    return skip


def _check_new_args(grouped, fold, dead_features) -> None:
    if grouped not in GROUPED_POLICIES:
        raise ValueError(f"gwprune: grouped must be one of {GROUPED_POLICIES}, got {grouped!r}")
    if not isinstance(fold, bool):
        raise TypeError(f"gwprune: fold must be True or False, got {fold!r}")
    if not isinstance(dead_features, bool):
        raise TypeError(f"gwprune: dead_features must be True or False, got {dead_features!r}")


def convert(
    model: nn.Module,
    keep_ratio: float | None = None,
    *,
    criterion: Criterion = "l2",
    scope: str = "layer",
    min_keep_per_layer: int = 1,
    skip: Iterable[str] = (),
    predicate: Callable[[str, nn.Module], bool] | None = None,
    inplace: bool = False,
    memory_format: torch.memory_format = torch.contiguous_format,
    fold: bool = True,
    grouped: str = "skip",
    dead_features: bool = True,
) -> tuple[nn.Module, ConversionReport]:
    """Replaces eligible ``nn.Conv2d`` / ``nn.Linear`` layers by gwprune modules.

    With ``keep_ratio`` each eligible layer is pruned by ``criterion`` (``'l1'``,
    ``'l2'``, ``'taylor'`` or a callable, see ``gwprune.prune.group_scores``) to keep
    that fraction of its groups (``scope='layer'``) or of all groups
    (``scope='global'``, one threshold, at least ``min_keep_per_layer`` per layer),
    then converted. With ``keep_ratio=None`` layers already pruned are converted:
    the kept groups are the columns of the effective weight (``weight_orig *
    weight_mask`` under a ``torch.nn.utils.prune`` mask, else ``weight``) that are not
    all zero; layers with nothing pruned stay dense.

    Not converted (listed in the report with the reason): names matching ``skip``
    (exact qualified names or ``fnmatch`` globs such as ``'layer*.0.conv1'``), layers
    for which ``predicate(name, module)`` is False, grouped or non-zero-padded convs,
    asymmetric ``'same'`` padding, ``out_proj`` of ``nn.MultiheadAttention`` (read by
    weight, not called), tied or parametrized weights, and layers that keep every group.

    transformers' ``Conv1D`` (GPT-2) converts like ``nn.Linear``. Grouped convs stay
    dense unless ``grouped='convert'`` (then ``gwprune.autotune`` can time them).

    With ``fold`` (the default), a BatchNorm that only a converted layer feeds is folded
    into it, and an activation that only that chain feeds is fused into it (eval-mode
    semantics; ``gwprune.fold``); ``report.folding`` says what was folded and how the
    model was restructured (with ``inplace``, the model's own forward is never rewritten:
    chains that would need it stay unfolded, reported).

    With ``dead_features`` (the default), a converted linear whose input comes from other
    linears through elementwise steps only (``fc1 -> GELU -> fc2``, Llama's
    ``down(act(gate(x)) * up(x))``, BERT's intermediate -> output across modules) makes
    those linears compute only the features it reads, and then runs as a dense GEMM over
    them (``gwprune.dead_features``; exact up to rounding); ``report.dead_features``
    lists the chains.

    Returns ``(model, report)``; the model is a deep copy unless ``inplace``. The
    result is for inference: gwprune modules have no autograd formula. Hooks
    registered on a replaced layer are not carried over; ``torch.nn.utils.prune``
    masks are folded in.
    """
    skip = _check_convert_args(model, keep_ratio, skip, predicate, scope)
    _check_new_args(grouped, fold, dead_features)
    attention_out_projs = _find_attention_out_projs(model)
    shared_weights = _find_shared_weights(model)

    report = ConversionReport(
        mode=_mode_description(keep_ratio, criterion, scope, min_keep_per_layer)
    )
    candidates: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        if not _is_layer(module):
            continue
        reason = _ineligibility(
            name, module, skip, predicate, attention_out_projs, shared_weights, grouped
        )
        if reason is None:
            candidates[name] = module
        else:
            report.skipped.append(SkippedLayer(name, _kind(module), reason))

    # Score on the caller's model: a deep copy would drop the .grad that 'taylor' needs.
    if keep_ratio is None:
        selections = {
            name: GroupSelection.from_keep_idx(
                keep_idx_from_zeroed(_effective_weight(module), _groups(module)),
                _effective_weight(module)[0].numel() * _groups(module),
            )
            for name, module in candidates.items()
        }
    else:
        scores = {}
        for name, module in candidates.items():
            try:
                scores[name] = layer_group_scores(module, criterion)
            except ValueError as error:  # say which layer: 'taylor' fails on a missing grad
                detail = str(error).removeprefix("gwprune: ")
                raise ValueError(f"gwprune: layer {name!r}: {detail}") from error
        if scope == "global":
            selections = select_global(scores, keep_ratio, min_keep_per_layer)
        else:
            selections = {name: select_by_ratio(s, keep_ratio) for name, s in scores.items()}

    if not inplace:
        model = _deepcopy_model(model)
    for name, selection in selections.items():
        module = model.get_submodule(name)
        if selection.num_kept == selection.num_groups:
            reason = "no pruned groups" if keep_ratio is None else "keep_ratio keeps every group"
            report.skipped.append(SkippedLayer(name, _kind(module), reason))
            continue
        replacement = _groupwise_from(module, selection.keep_idx, memory_format)
        _replace(model, module, replacement)
        out_features = _effective_weight(module).shape[0]
        per_output = selection.num_groups // _groups(module)  # weights of one output row
        report.converted.append(
            ConvertedLayer(
                name=name,
                kind=_kind(module),
                num_groups=selection.num_groups,
                kept_groups=selection.num_kept,
                weight_params=out_features * per_output,
                kept_weight_params=out_features // _groups(module) * selection.num_kept,
                keep_idx=selection.keep_idx,
            )
        )
    order = {name: position for position, (name, _) in enumerate(model.named_modules())}
    report.skipped.sort(key=lambda layer: order.get(layer.name, len(order)))
    if fold and report.converted:
        names = [layer.name for layer in report.converted]
        model, report.folding = fold_converted(model, names, rewrite_root=not inplace)
    if dead_features and report.converted:
        names = [layer.name for layer in report.converted if layer.kind != "Conv2d"]
        report.dead_features = drop_dead_features(model, names)
    return model, report


def _groupwise_from(module: nn.Module, keep_idx: torch.Tensor, memory_format) -> nn.Module:
    """Packs ``module``'s effective (mask-applied) weight and bias, leaving ``module`` as is."""
    # A stand-in dense layer on the meta device (no allocation) carries the effective
    # tensors: under torch.nn.utils.prune, module.weight / module.bias are computed
    # tensors, not the parameters from_dense would otherwise read.
    if isinstance(module, nn.Conv2d):
        dense = nn.Conv2d(
            module.in_channels,
            module.out_channels,
            module.kernel_size,
            module.stride,
            module.padding,
            module.dilation,
            groups=module.groups,
            bias=False,
            device="meta",
        )
    else:
        out_features, in_features = _effective_weight(module).shape
        dense = nn.Linear(in_features, out_features, bias=False, device="meta")
    dense.weight = nn.Parameter(_effective_weight(module).contiguous(), requires_grad=False)
    if module.bias is not None:
        dense.bias = nn.Parameter(module.bias.detach(), requires_grad=False)
    if isinstance(module, nn.Conv2d):
        return GroupwiseConv2d.from_dense(dense, keep_idx, memory_format)
    return GroupwiseLinear.from_dense(dense, keep_idx)


def to_dense(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Replaces every gwprune module in ``model`` by its dense equivalent (pruned groups
    zeroed); the inverse of ``convert`` up to the zeros. A deep copy unless ``inplace``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"gwprune: model must be an nn.Module, got {type(model).__name__}")
    if isinstance(model, (GroupwiseConv2d, GroupwiseLinear)):
        return model.to_dense()
    if not inplace:
        model = _deepcopy_model(model)
    for module in list(model.modules()):
        if isinstance(module, (GroupwiseConv2d, GroupwiseLinear)):
            _replace(model, module, module.to_dense())
    return model
