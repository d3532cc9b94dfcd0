"""Dead-feature elimination for converted linears (eval / inference).

A group-wise pruned linear ``B`` reads only its kept input features. Where those
features come from linears ``P`` (through nothing but elementwise steps) and go nowhere
else, the features ``B`` drops are dead: ``P`` computes them for nothing. Typical chains:

    fc1 -> activation -> fc2                         (BERT / GPT-2 feed-forward, MLPs)
    down(act(gate(x)) * up(x))                       (Llama's gated MLP)

``drop_dead_features`` finds such chains in each parent module's traced graph
(``torch.fx``, every submodule one node, as ``gwprune.fold`` traces) and then

- keeps only the rows of each ``P`` (and its bias) that ``B`` reads, in ``B``'s packed
  column order, so ``P`` computes fewer output features;
- replaces ``B`` by a ``GroupwiseLinear`` over exactly those features, every one kept,
  on the ``"dense"`` backend: one plain GEMM, no gather (``gwprune.autotune`` may still
  time it against the gathered one).

The model computes what it computed before, up to rounding: the dropped rows only fed
zero weights. The chain qualifies only where every step is elementwise and
feature-aligned (identity, dropout, the activations ``gwprune.fold`` knows, ``*`` and
``+`` of such steps or of numbers), every node on it has exactly one user, and each
module on it is called once and held once in the model. Anything else is left alone.
``gwprune.to_dense`` still returns an equivalent dense model (with the narrower layers).
"""

import collections
import operator
from dataclasses import dataclass, field

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

from .fold import _ChildrenAsLeaves, activation_of_module
from .nn import GroupwiseLinear

__all__ = ["DeadFeatureReport", "ShrunkChain", "drop_dead_features"]

# Elementwise steps a feature passes through unchanged in position.
_ELEMENTWISE_MODULES = (nn.Identity, nn.Dropout)
_UNARY_FUNCTIONS = {
    F.relu,
    torch.relu,
    F.relu6,
    F.silu,
    F.gelu,
    torch.tanh,
    torch.sigmoid,
    F.dropout,
}
_BINARY_FUNCTIONS = {operator.mul, operator.add, torch.mul, torch.add}
_METHODS = {"relu", "relu_", "sigmoid", "tanh", "mul", "add", "mul_", "add_"}


@dataclass
class ShrunkChain:
    consumer: str  # qualified name of the linear that reads the features
    producers: list[str]  # the linears that compute them (now narrower)
    features: int  # features the consumer reads (the producers' new width)
    width: int  # the producers' width before


@dataclass
class DeadFeatureReport:
    shrunk: list[ShrunkChain] = field(default_factory=list)

    def __str__(self) -> str:
        if not self.shrunk:
            return ""
        lines = ["  dead features dropped (restructured: narrower producers, dense consumers):"]
        for chain in self.shrunk:
            verb = "computes" if len(chain.producers) == 1 else "compute"
            lines.append(
                f"  {chain.consumer} reads {chain.features} of {chain.width} features: "
                f"{', '.join(chain.producers)} {verb} only those; {chain.consumer} runs dense"
            )
        return "\n".join(lines)


def _is_producer(module: nn.Module) -> bool:
    return isinstance(module, (GroupwiseLinear, nn.Linear))


class _Walk:
    """The producers behind one consumer's input, or None where the chain does not qualify."""

    def __init__(self, parent, calls, uses, width):
        self.parent, self.calls, self.uses, self.width = parent, calls, uses, width

    def _module_once(self, node) -> nn.Module | None:
        module = self.parent.get_submodule(node.target)
        if self.calls[node.target] != 1 or self.uses[id(module)] != 1:
            return None
        return module

    def producers(self, node) -> list[torch.fx.Node] | None:
        if not isinstance(node, torch.fx.Node) or len(node.users) != 1:
            return None
        if node.op == "call_module":
            module = self._module_once(node)
            if module is None or node.kwargs or len(node.args) != 1:
                return None
            if _is_producer(module):
                return [node] if module.out_features == self.width else None
            if isinstance(module, _ELEMENTWISE_MODULES) or activation_of_module(module):
                return self.producers(node.args[0])
            return None
        if node.op == "call_function" and node.target in _UNARY_FUNCTIONS:
            if len(node.args) != 1 or set(node.kwargs) - {
                "inplace",
                "approximate",
                "p",
                "training",
            }:
                return None
            return self.producers(node.args[0])
        if node.op == "call_function" and node.target in _BINARY_FUNCTIONS:
            return self._operands(node)
        if node.op == "call_method" and node.target in _METHODS:
            return self._operands(node)
        return None

    def _operands(self, node) -> list[torch.fx.Node] | None:
        if node.kwargs or not node.args:
            return None
        found: list[torch.fx.Node] = []
        for arg in node.args:
            if isinstance(arg, (int, float)):
                continue  # a number scales or shifts every feature alike
            behind = self.producers(arg)
            if behind is None:
                return None
            found.extend(n for n in behind if n not in found)
        return found or None


def _read_columns(consumer: GroupwiseLinear) -> tuple[torch.Tensor, torch.Tensor]:
    """The consumer's packed columns that hold kept features, and those features."""
    feature_idx = consumer.feature_idx.long()
    columns = torch.nonzero(feature_idx >= 0).flatten()
    return columns, feature_idx[columns]


def _narrowed(producer: nn.Module, rows: torch.Tensor) -> nn.Module:
    """``producer`` computing only output features ``rows`` (in that order)."""
    rows = rows.to(producer.weight.device)
    weight = producer.weight.detach()[rows].contiguous()
    bias = None if producer.bias is None else producer.bias.detach()[rows].contiguous()
    if isinstance(producer, GroupwiseLinear):
        narrow = GroupwiseLinear(
            producer.in_features,
            rows.numel(),
            producer.feature_idx.numel(),
            bias=bias is not None,
            device=weight.device,
            dtype=weight.dtype,
            activation=producer.activation,
        )
        narrow.weight, narrow.feature_idx = weight, producer.feature_idx
        if bias is not None:
            narrow.bias = bias
        if producer.backend == "dense":
            narrow.set_backend("dense")
        return narrow
    narrow = nn.Linear(
        producer.in_features,
        rows.numel(),
        bias=bias is not None,
        device=weight.device,
        dtype=weight.dtype,
    )
    with torch.no_grad():
        narrow.weight.copy_(weight)
        if bias is not None:
            narrow.bias.copy_(bias)
    narrow.requires_grad_(producer.weight.requires_grad)
    return narrow


def _dense_consumer(consumer: GroupwiseLinear, columns: torch.Tensor) -> GroupwiseLinear:
    """``consumer`` over just the features it reads, every one kept, on the dense backend."""
    weight = consumer.weight.detach()[:, columns.to(consumer.weight.device)]
    dense = nn.Linear(
        weight.shape[1], consumer.out_features, bias=False, device="meta", dtype=weight.dtype
    )
    dense.weight = nn.Parameter(weight.contiguous(), requires_grad=False)
    if consumer.bias is not None:
        dense.bias = nn.Parameter(consumer.bias.detach(), requires_grad=False)
    keep = torch.arange(weight.shape[1], device=weight.device)
    layer = GroupwiseLinear.from_dense(dense, keep)
    layer.activation = consumer.activation
    return layer.set_backend("dense")


def _set_child(parent: nn.Module, target: str, module: nn.Module) -> None:
    owner_name, _, child = target.rpartition(".")
    setattr(parent.get_submodule(owner_name) if owner_name else parent, child, module)


def _shrink_parent(model, parent_name, parent, report) -> None:
    was_training = parent.training
    parent.eval()
    try:
        graph = _ChildrenAsLeaves().trace(parent)
    except Exception:  # noqa: BLE001  (a parent that does not trace keeps its layers)
        return
    finally:
        parent.train(was_training)
    calls = collections.Counter(n.target for n in graph.nodes if n.op == "call_module")
    uses = collections.Counter(id(m) for _, m in model.named_modules(remove_duplicate=False))
    prefix = f"{parent_name}." if parent_name else ""
    for node in list(graph.nodes):
        if node.op != "call_module" or calls[node.target] != 1:
            continue
        consumer = parent.get_submodule(node.target)
        if not isinstance(consumer, GroupwiseLinear) or uses[id(consumer)] != 1:
            continue
        if node.kwargs or len(node.args) != 1:
            continue
        columns, features = _read_columns(consumer)
        if features.numel() == 0 or features.numel() == consumer.in_features:
            continue
        walk = _Walk(parent, calls, uses, consumer.in_features)
        producers = walk.producers(node.args[0])
        if not producers:
            continue
        for producer_node in producers:
            producer = parent.get_submodule(producer_node.target)
            _set_child(parent, producer_node.target, _narrowed(producer, features))
        _set_child(parent, node.target, _dense_consumer(consumer, columns))
        report.shrunk.append(
            ShrunkChain(
                consumer=prefix + str(node.target),
                producers=[prefix + str(p.target) for p in producers],
                features=int(features.numel()),
                width=consumer.in_features,
            )
        )


def drop_dead_features(model: nn.Module, layer_names: list[str]) -> DeadFeatureReport:
    """Drops the features that the converted linears ``layer_names`` of ``model`` do not
    read from the linears that compute them (``model`` modified in place)."""
    report = DeadFeatureReport()
    parents = sorted({name.rpartition(".")[0] for name in layer_names})
    for parent_name in parents:
        parent = model.get_submodule(parent_name)
        if any(isinstance(child, GroupwiseLinear) for child in parent.children()):
            _shrink_parent(model, parent_name, parent, report)
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    report.shrunk.sort(key=lambda chain: order.get(chain.consumer, len(order)))
    return report
