"""BatchNorm folding and activation fusion for converted layers (eval / inference).

After ``gwprune.convert`` has replaced a model's layers, ``fold_converted`` looks at
the model's real dataflow: every module that calls a converted layer directly (its
parent) is traced with ``torch.fx``, each submodule it calls kept as one node. A chain

    converted layer -> BatchNorm -> activation        (either link optional)

is folded only where the layer's output feeds nothing but the BatchNorm (same
channels, running statistics) and the BatchNorm's output nothing but the activation
(``nn.ReLU`` / ``ReLU6`` / ``SiLU`` / ``GELU``, the functional forms, and transformers'
GELU / SiLU modules). Folding computes what the model computes in eval mode:

    scale = gamma / sqrt(running_var + eps);   W' = scale * W;   b' = scale * (b - mean) + beta

applied to the packed weight's rows and the bias (in float64, then rounded to the
weight's dtype), and the activation becomes the layer's ``activation`` (fused into the
GEMM's epilogue on CUDA where cuBLASLt has one).

The model is then restructured, and the report says how: a folded BatchNorm or
activation module that the model calls only there is replaced by ``nn.Identity``;
where that is impossible (an activation module the parent calls more than once, like
torchvision ResNet blocks' shared ``relu``, or a functional activation), the parent is
rewritten as a ``torch.fx.GraphModule`` of its traced graph without the folded nodes
(same submodule names; control flow fixed as traced, in eval mode). A parent that does
not trace keeps its layers unfolded, reported with the reason. ``gwprune.to_dense``
still returns an equivalent dense model: a layer with an activation becomes
``nn.Sequential(dense layer, activation module)``.
"""

import collections
from dataclasses import dataclass, field

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

from .activation import check_activation
from .nn import GroupwiseConv2d, GroupwiseLinear

__all__ = ["FoldedLayer", "FoldReport", "fold_converted", "activation_of_module"]

# transformers' activation modules by class name (transformers is not imported here).
_TRANSFORMERS_ACTIVATIONS = {
    "GELUActivation": "gelu",
    "NewGELUActivation": "gelu_tanh",
    "GELUTanh": "gelu_tanh",
    "PytorchGELUTanh": "gelu_tanh",
    "SiLUActivation": "silu",
}
_FUNCTIONAL_ACTIVATIONS = {
    F.relu: "relu",
    torch.relu: "relu",
    F.relu6: "relu6",
    F.silu: "silu",
}
_METHOD_ACTIVATIONS = {"relu": "relu", "relu_": "relu"}


@dataclass
class FoldedLayer:
    name: str  # the converted layer
    batchnorm: str | None  # qualified name of the folded BatchNorm
    activation: str | None  # gwprune.activation name now applied by the layer
    activation_source: str | None  # what computed it before: a module name or a function


@dataclass
class FoldReport:
    folded: list[FoldedLayer] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # restructured parents, untraceable ones
    # Parents that did not trace but hold no BatchNorm or activation module (only a
    # functional activation could have been missed there), e.g. attention blocks.
    untraced: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = []
        if self.folded:
            lines.append("  folded (eval mode):")
            width = max(len(layer.name) for layer in self.folded)
            for layer in self.folded:
                parts = []
                if layer.batchnorm:
                    parts.append(f"BatchNorm {layer.batchnorm}")
                if layer.activation:
                    parts.append(f"activation {layer.activation!r} ({layer.activation_source})")
                lines.append(f"  {layer.name:<{width}}  {' + '.join(parts)}")
        lines.extend(f"  {note}" for note in self.notes)
        if self.untraced:
            lines.append(
                f"  {len(self.untraced)} parents of converted layers did not trace with torch.fx "
                f"and hold no BatchNorm or activation module (e.g. {self.untraced[0]}): not folded"
            )
        return "\n".join(lines)


def activation_of_module(module: nn.Module) -> str | None:
    """The gwprune.activation name of an activation module, or None."""
    if type(module) in (nn.ReLU,):
        return "relu"
    if isinstance(module, nn.ReLU6):
        return "relu6"
    if type(module) is nn.Hardtanh and (module.min_val, module.max_val) == (0.0, 6.0):
        return "relu6"
    if type(module) is nn.SiLU:
        return "silu"
    if type(module) is nn.GELU:
        return "gelu" if module.approximate == "none" else "gelu_tanh"
    # GELUActivation computes the exact GELU (F.gelu, or the same erf formula in Python).
    return _TRANSFORMERS_ACTIVATIONS.get(type(module).__name__)


class _ChildrenAsLeaves(torch.fx.Tracer):
    """Traces one module's own forward: every submodule it calls is one node."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return True


def trace_children_as_leaves(module: nn.Module, method: str = "forward") -> torch.fx.Graph:
    """``module``'s ``method`` (forward, or another method, self bound) traced in eval mode,
    every submodule one node; every module's training mode is restored afterwards, as it
    was. Raises what tracing raises."""
    tracer = _ChildrenAsLeaves()
    tracer.traced_func_name = method
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        return tracer.trace(module)
    finally:
        for m, training in modes:
            m.training = training


@dataclass
class _Chain:
    layer: str  # qualified name
    layer_node: torch.fx.Node
    bn_node: torch.fx.Node | None
    act_node: torch.fx.Node | None
    activation: str | None


def _norm_type(layer: nn.Module) -> type:
    return nn.BatchNorm2d if isinstance(layer, GroupwiseConv2d) else nn.BatchNorm1d


def _out_features(layer: nn.Module) -> int:
    return layer.out_channels if isinstance(layer, GroupwiseConv2d) else layer.out_features


def _only_user(node: torch.fx.Node) -> torch.fx.Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def _single_input(node: torch.fx.Node, source: torch.fx.Node) -> bool:
    return len(node.args) >= 1 and node.args[0] is source


def _batchnorm_user(parent, node, layer) -> torch.fx.Node | None:
    user = _only_user(node)
    if user is None or user.op != "call_module" or user.args != (node,) or user.kwargs:
        return None
    bn = parent.get_submodule(user.target)
    if type(bn) is not _norm_type(layer) or bn.num_features != _out_features(layer):
        return None
    if bn.running_mean is None or bn.running_var is None:  # batch statistics even in eval
        return None
    return user


def _activation_user(parent, node) -> tuple[torch.fx.Node | None, str | None]:
    user = _only_user(node)
    if user is None or not _single_input(user, node):
        return None, None
    if user.op == "call_module" and len(user.args) == 1 and not user.kwargs:
        return user, activation_of_module(parent.get_submodule(user.target))
    if user.op == "call_function":
        extra = set(user.kwargs) - {"inplace", "approximate"}
        if user.target is F.gelu and len(user.args) == 1 and not extra:
            approximate = user.kwargs.get("approximate", "none")
            return user, {"none": "gelu", "tanh": "gelu_tanh"}.get(approximate)
        if user.target in _FUNCTIONAL_ACTIVATIONS and len(user.args) <= 2 and not extra:
            return user, _FUNCTIONAL_ACTIVATIONS[user.target]
    if user.op == "call_method" and user.target in _METHOD_ACTIVATIONS and len(user.args) == 1:
        return user, _METHOD_ACTIVATIONS[user.target]
    return None, None


def _find_chains(parent, graph, layers: dict[str, str], uses) -> list[_Chain]:
    """Chains in ``parent``'s traced graph; ``layers``: child name -> qualified name."""
    calls = collections.Counter(n.target for n in graph.nodes if n.op == "call_module")
    chains = []
    for node in graph.nodes:
        if node.op != "call_module" or node.target not in layers or calls[node.target] != 1:
            continue
        layer = parent.get_submodule(node.target)
        if uses[id(layer)] != 1:
            continue
        bn_node = _batchnorm_user(parent, node, layer)
        if bn_node is not None and (
            calls[bn_node.target] != 1 or uses[id(parent.get_submodule(bn_node.target))] != 1
        ):
            bn_node = None
        act_node, activation = _activation_user(parent, bn_node or node)
        if activation is None:
            act_node = None
        if bn_node is None and act_node is None:
            continue
        chains.append(_Chain(layers[node.target], node, bn_node, act_node, activation))
    return chains


def _fold_batchnorm(layer: nn.Module, bn: nn.Module) -> None:
    with torch.no_grad():
        var = bn.running_var.double()
        scale = torch.rsqrt(var + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight.double()
        shift = -bn.running_mean.double() * scale
        if bn.bias is not None:
            shift = shift + bn.bias.double()
        scale, shift = scale.to(layer.weight.device), shift.to(layer.weight.device)
        dtype = layer.weight.dtype
        layer.weight = (layer.weight.double() * scale[:, None]).to(dtype).contiguous()
        bias = shift if layer.bias is None else layer.bias.double() * scale + shift
        layer.bias = bias.to(dtype)
        if layer.backend == "dense":  # the dense weight is a cache of the packed one
            layer.set_backend("dense", layer._dense_memory_format)


def _source(parent_name: str, parent, node: torch.fx.Node) -> str:
    if node.op == "call_module":
        return f"{parent_name}.{node.target}" if parent_name else str(node.target)
    where = parent_name or "the model's forward"
    target = node.target if isinstance(node.target, str) else node.target.__name__
    return f"{target} in {where}"


def _has_foldable_modules(parent: nn.Module) -> bool:
    return any(
        isinstance(child, nn.modules.batchnorm._BatchNorm) or activation_of_module(child)
        for child in parent.children()
    )


def _replaceable(parent, node, calls, uses) -> bool:
    """A node whose module can become nn.Identity: called once, used nowhere else."""
    return (
        node.op == "call_module"
        and calls[node.target] == 1
        and uses[id(parent.get_submodule(node.target))] == 1
    )


def _replaceable_parts(parent, chains, calls, uses, where, report) -> list[_Chain]:
    """The chains, cut back to what nn.Identity replacement can fold (no rewrite)."""
    kept = []
    for chain in chains:
        if chain.bn_node is not None and not _replaceable(parent, chain.bn_node, calls, uses):
            chain.bn_node, chain.act_node = None, None  # the activation follows the norm
        if chain.act_node is not None and not _replaceable(parent, chain.act_node, calls, uses):
            report.notes.append(
                f"not fused: the activation after {chain.layer} (a shared module or a function "
                f"in {where}) needs the model's forward rewritten, which inplace=True forbids"
            )
            chain.act_node, chain.activation = None, None
        if chain.bn_node is not None or chain.act_node is not None:
            kept.append(chain)
    return kept


def _replace_module(model: nn.Module, target: nn.Module, replacement: nn.Module) -> nn.Module:
    if model is target:
        return replacement
    for module in model.modules():
        for name, child in list(module._modules.items()):
            if child is target:
                setattr(module, name, replacement)
    return model


def fold_converted(
    model: nn.Module, layer_names: list[str], rewrite_root: bool = True
) -> tuple[nn.Module, FoldReport]:
    """Folds BatchNorms and activations into the converted layers ``layer_names`` of
    ``model`` (modified in place; the root is returned: a new GraphModule where the
    model's own forward had to be rewritten, unless ``rewrite_root`` is False, when the
    chains that need it are left unfolded and reported)."""
    report = FoldReport()
    by_parent: dict[str, dict[str, str]] = collections.defaultdict(dict)
    for name in layer_names:
        parent_name, _, child = name.rpartition(".")
        by_parent[parent_name][child] = name
    # Deepest parents first: a rewritten child is then a leaf of its parent's trace.
    for parent_name in sorted(by_parent, key=lambda n: -n.count(".") - bool(n)):
        parent = model.get_submodule(parent_name)
        layers = {
            child: name
            for child, name in by_parent[parent_name].items()
            if isinstance(getattr(parent, child, None), (GroupwiseConv2d, GroupwiseLinear))
        }
        if layers:
            may_rewrite = rewrite_root or parent is not model
            model = _fold_parent(model, parent_name, parent, layers, report, may_rewrite)
    order = {name: i for i, name in enumerate(layer_names)}
    report.folded.sort(key=lambda layer: order[layer.name])
    return model, report


def _fold_parent(model, parent_name, parent, layers, report, may_rewrite) -> nn.Module:
    where = f"{parent_name or 'the model'} ({type(parent).__name__})"
    was_training = parent.training
    try:
        graph = trace_children_as_leaves(parent)
    except Exception as error:  # noqa: BLE001  (any tracing failure: no folding there)
        if not _has_foldable_modules(parent):
            report.untraced.append(where)
            return model
        message = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
        report.notes.append(
            f"not folded: {where} does not trace with torch.fx ({message}); "
            f"its layers {', '.join(sorted(layers.values()))} keep their BatchNorm / activation"
        )
        return model
    uses = collections.Counter(id(m) for _, m in model.named_modules(remove_duplicate=False))
    chains = _find_chains(parent, graph, layers, uses)
    if not chains:
        return model
    calls = collections.Counter(n.target for n in graph.nodes if n.op == "call_module")
    if not may_rewrite:
        chains = _replaceable_parts(parent, chains, calls, uses, where, report)
    removed = [node for chain in chains for node in (chain.bn_node, chain.act_node) if node]
    rewrite = not all(_replaceable(parent, node, calls, uses) for node in removed)
    for chain in chains:
        layer = parent.get_submodule(chain.layer_node.target)
        bn_name = None
        if chain.bn_node is not None:
            _fold_batchnorm(layer, parent.get_submodule(chain.bn_node.target))
            bn_name = _source(parent_name, parent, chain.bn_node)
        source = None
        if chain.act_node is not None:
            layer.activation = check_activation(chain.activation)
            source = _source(parent_name, parent, chain.act_node)
        report.folded.append(FoldedLayer(chain.layer, bn_name, chain.activation, source))
    if not rewrite:
        names = [_source(parent_name, parent, node) for node in removed]
        for node in removed:
            model = _replace_module(model, parent.get_submodule(node.target), nn.Identity())
        report.notes.append(f"restructured: {', '.join(names)} replaced by nn.Identity")
        return model
    for chain in chains:
        for node in (chain.act_node, chain.bn_node):
            if node is not None:
                node.replace_all_uses_with(node.args[0])
                graph.erase_node(node)
    graph.lint()
    rewritten = torch.fx.GraphModule(parent, graph, class_name=type(parent).__name__)
    rewritten.train(was_training)
    report.notes.append(
        f"restructured: {where} rewritten as a torch.fx.GraphModule without the folded "
        "BatchNorm / activation nodes (an activation it calls is shared or functional)"
    )
    return _replace_module(model, parent, rewritten)
