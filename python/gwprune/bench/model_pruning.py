"""Pruning one model at one keep ratio: the converted models, the masked dense model, the facts.

Every eligible conv/linear layer keeps ``round(keep * groups)`` of its groups, chosen
by L1 norm per layer (``gwprune.convert(model, keep, criterion='l1')``); the model's
``dense_by_design`` layers and the layers convert cannot replace stay dense. The
masked dense model is the same model with the same pruned groups zeroed in its
ordinary ``nn.Conv2d`` / ``nn.Linear`` layers (and BatchNorms, which the converted model
folds in: ``gwprune.fold``): the reference the converted model must match. Convolutions
are packed once per memory layout (the gather order differs).
"""

import copy
import re
from collections import defaultdict
from dataclasses import dataclass

import torch
import torch.nn as nn

from gwprune.convert import ConversionReport, convert, masked_layer_weight

from .model_specs import MEMORY_FORMATS, ModelSpec

CRITERION = "l1"


@dataclass(frozen=True)
class PruneFacts:
    """What a row reports about the pruning: converted layers, kept groups and parameters."""

    layers_converted: int
    layers_dense: int
    dense_layers: str  # which conv/linear layers stayed dense, and why
    groups_kept: float  # kept / total groups over the converted layers
    params_total: int  # parameters of the dense model
    params_kept: float  # fraction of params_total left after pruning


@dataclass
class PrunedModel:
    keep: float
    report: ConversionReport
    masked: nn.Module  # dense modules, pruned groups zeroed
    converted: dict[str, nn.Module]  # layout -> gwprune model packed for that layout
    facts: PruneFacts


def prune_model(dense: nn.Module, spec: ModelSpec, keep: float) -> PrunedModel:
    """Converted models (one per layout of the spec), masked dense model and facts."""
    converted: dict[str, nn.Module] = {}
    report = None
    with torch.no_grad():
        for layout in spec.layouts:
            model, layout_report = convert(
                dense,
                keep,
                criterion=CRITERION,
                skip=spec.skip,
                memory_format=MEMORY_FORMATS[layout],
            )
            converted[layout] = model.eval()
            report = report or layout_report
        masked = masked_copy(dense, report)
    return PrunedModel(keep, report, masked, converted, prune_facts(dense, spec, report))


def masked_copy(dense: nn.Module, report: ConversionReport) -> nn.Module:
    """A copy of ``dense`` whose converted layers have their pruned groups zeroed."""
    masked = copy.deepcopy(dense)
    with torch.no_grad():
        for layer in report.converted:
            module = masked.get_submodule(layer.name)  # Conv2d, Linear or transformers Conv1D
            module.weight.copy_(masked_layer_weight(module, layer.keep_idx))
    return masked.eval()


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def prune_facts(dense: nn.Module, spec: ModelSpec, report: ConversionReport) -> PruneFacts:
    total = count_parameters(dense)
    removed = report.weight_params - report.kept_weight_params
    return PruneFacts(
        layers_converted=len(report.converted),
        layers_dense=len(report.skipped),
        dense_layers=dense_layers_text(report, spec),
        groups_kept=report.kept_groups / report.num_groups if report.num_groups else 1.0,
        params_total=total,
        params_kept=(total - removed) / total if total else 1.0,
    )


def name_pattern(name: str) -> str:
    """A module name with its indices replaced by '*': 'layers.3.fc' -> 'layers.*.fc'."""
    return re.sub(r"\d+", "*", name)


def dense_layers_text(report: ConversionReport, spec: ModelSpec) -> str:
    """'features.0 (first conv); 12x encoder.layers.encoder_layer_*.self_attention.out_proj
    (out_proj of nn.MultiheadAttention)': the layers left dense, repeated ones folded."""
    by_design = dict(spec.dense_by_design)
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for layer in report.skipped:
        reason = by_design.get(layer.name) or layer.reason.split(" (")[0]
        groups[(name_pattern(layer.name), reason)].append(layer.name)
    parts = []
    for (pattern, reason), names in groups.items():
        shown = names[0] if len(names) == 1 else f"{len(names)}x {pattern}"
        parts.append(f"{shown} ({reason})")
    return "; ".join(parts) if parts else "none"
