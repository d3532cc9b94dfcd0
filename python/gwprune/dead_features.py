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

A chain may cross module boundaries, as BERT's feed-forward does: ``BertOutput.dense``
reads ``BertOutput``'s argument, which ``BertLayer.feed_forward_chunk`` passes from
``BertIntermediate``, whose forward returns ``act(dense(x))``. The walk from ``B`` then
goes on, each link taken from a traced graph, never from module order:

- out of ``B``'s parent through a placeholder, to the argument the parent's owner passes
  there: in the owner's traced forward, or where that does not trace (``BertLayer``'s
  forward takes ``*args``) in the one method of the owner whose code names the parent
  (traced with that method in place of forward). The method must store no attribute
  (tracing runs it), and no other code of the owner's class, nor the Python functions
  it calls, may name a module the chain calls there or reach submodules by computed
  names (``getattr``, ``children()``, ...); nothing on the instance may stand in for
  the class's methods;
- into a submodule that is no step itself: traced alone, from the value its forward
  returns. Both crossings need the module called as traced: no forward hooks or
  pre-hooks, no wrapped or instance-set forward.

The model computes what it computed before, up to rounding: the dropped rows only fed
zero weights. The chain qualifies only where every step is elementwise and
feature-aligned (identity, dropout, the activations ``gwprune.fold`` knows, ``*`` and
``+`` of such steps or of numbers), every node on it has exactly one user (and a module
argument is passed once), and each module on it is called once in its graph and held
once in the model. Anything else is left alone. Not proven, as for any traced forward:
that no code outside a module's own class (an ancestor, a hook elsewhere) calls its
submodules. ``gwprune.to_dense`` still returns an equivalent dense model (with the
narrower layers).
"""

import collections
import dis
import operator
import types
from dataclasses import dataclass, field

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

from .fold import activation_of_module, trace_children_as_leaves
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


def _trace(module: nn.Module, method: str = "forward") -> torch.fx.Graph | None:
    """``module``'s ``method`` traced in eval mode, every submodule one node; None where
    it does not trace."""
    try:
        return trace_children_as_leaves(module, method)
    except Exception:  # noqa: BLE001  (a module that does not trace keeps its layers)
        return None


class _Scope:
    """One traced graph: ``module``'s ``method``, ``module`` named ``name`` in the model."""

    def __init__(self, module: nn.Module, name: str, graph: torch.fx.Graph, method="forward"):
        self.module, self.name, self.graph, self.method = module, name, graph, method
        self.calls = collections.Counter(n.target for n in graph.nodes if n.op == "call_module")

    def qualified(self, target: str) -> str:
        return f"{self.name}.{target}" if self.name else target


# Names through which a method could reach a submodule without naming it: code that
# uses them defeats the static check of a method-traced owner (_only_method_naming).
_DYNAMIC_ACCESS = {
    "getattr",
    "vars",
    "__dict__",
    "__getattr__",
    "_modules",
    "children",
    "named_children",
    "modules",
    "named_modules",
    "get_submodule",
}
_STORES = {"STORE_ATTR", "DELETE_ATTR", "STORE_GLOBAL", "DELETE_GLOBAL"}


def _code_objects(code: types.CodeType):
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):  # nested functions, lambdas, comprehensions
            yield from _code_objects(const)


def _reached_codes(function: types.FunctionType) -> list[types.CodeType]:
    """The code ``function`` can run by name: its own, what it wraps (``__wrapped__``,
    closures) and the Python functions it calls as globals, transitively (torch's not)."""
    seen: dict[types.FunctionType, None] = {}
    pending = [function]
    while pending:
        fn = pending.pop()
        if fn in seen or (getattr(fn, "__module__", None) or "").startswith("torch"):
            continue
        seen[fn] = None
        codes = list(_code_objects(fn.__code__))
        names = {name for code in codes for name in code.co_names}
        linked = [fn.__globals__.get(name) for name in names]
        linked.append(getattr(fn, "__wrapped__", None))
        for cell in fn.__closure__ or ():
            try:
                linked.append(cell.cell_contents)
            except ValueError:  # an empty cell
                continue
        pending.extend(f for f in linked if isinstance(f, types.FunctionType))
    return [code for fn in seen for code in _code_objects(fn.__code__)]


def _method_codes(cls: type) -> dict[str, list[types.CodeType]] | None:
    """The code each method of ``cls`` (torch's classes and ``__init__`` aside) can run,
    by method name; None where a method is not a plain function (then unknown)."""
    methods: dict[str, list[types.CodeType]] = collections.defaultdict(list)
    for klass in cls.__mro__:
        if klass is object or klass.__module__.startswith("torch"):
            continue
        for name, value in vars(klass).items():
            if name == "__init__" or name == "__init_subclass__":
                continue  # construction, not inference
            if isinstance(value, (staticmethod, classmethod)):
                value = value.__func__
            functions = (
                [value.fget, value.fset, value.fdel] if isinstance(value, property) else [value]
            )
            for function in functions:
                if isinstance(function, types.FunctionType):
                    methods[name].extend(_reached_codes(function))
                elif function is not None and callable(function):
                    return None
    return methods


def _only_method_naming(owner: nn.Module, attribute: str) -> str | None:
    """The one method of ``owner``'s class other than forward whose code names
    ``self.<attribute>``, where no code of the class could reach it otherwise and that
    method stores no attribute; else None."""
    if any(callable(v) and not isinstance(v, nn.Module) for v in vars(owner).values()):
        return None  # a function set on the instance (a patched forward?) is not scanned
    methods = _method_codes(type(owner))
    if methods is None:
        return None
    names = {m: {name for code in codes for name in code.co_names} for m, codes in methods.items()}
    if any(used & _DYNAMIC_ACCESS for used in names.values()):
        return None
    naming = [m for m, used in names.items() if attribute in used]
    if len(naming) != 1 or naming[0] == "forward":
        return None
    (method,) = naming
    if any(i.opname in _STORES for code in methods[method] for i in dis.get_instructions(code)):
        return None  # tracing it would change the model
    return method


def _called_as_traced(module: nn.Module) -> bool:
    """Whether calling ``module`` runs just its class's forward, as traced: no hooks that
    could change its arguments or result, no forward set on the instance, no wrapper
    (a wrapper could pass the arguments on in another order)."""
    return (
        not module._forward_pre_hooks
        and not module._forward_hooks
        and "forward" not in vars(module)
        and not hasattr(type(module).forward, "__wrapped__")
    )


def _occurrences(node: torch.fx.Node, arg: torch.fx.Node) -> int:
    found: list[torch.fx.Node] = []
    torch.fx.node.map_arg((node.args, node.kwargs), found.append)
    return sum(1 for n in found if n is arg)


class _Walk:
    """The producers behind one consumer's input, as ``(scope, node)``, or None where the
    chain does not qualify. It starts in the consumer's parent (``home``) and may go on
    into the value a submodule returns, or out of ``home`` through a placeholder to its
    caller (one level), as the module docstring says."""

    def __init__(self, model, uses, width, home: _Scope):
        self.model, self.uses, self.width, self.home = model, uses, width, home

    def _module_once(self, scope: _Scope, node) -> nn.Module | None:
        module = scope.module.get_submodule(node.target)
        if scope.calls[node.target] != 1 or self.uses[id(module)] != 1:
            return None
        if scope.method != "forward" and (
            "." in node.target or _only_method_naming(scope.module, node.target) != scope.method
        ):
            return None
        return module

    def producers(self, scope: _Scope, node) -> list[tuple[_Scope, torch.fx.Node]] | None:
        if not isinstance(node, torch.fx.Node) or len(node.users) != 1:
            return None
        if node.op == "placeholder":
            return self._from_caller(node) if scope is self.home else None
        if node.op == "call_module":
            module = self._module_once(scope, node)
            if module is None:
                return None
            one_input = not node.kwargs and len(node.args) == 1
            if _is_producer(module):
                return [(scope, node)] if one_input and module.out_features == self.width else None
            if isinstance(module, _ELEMENTWISE_MODULES) or activation_of_module(module):
                return self.producers(scope, node.args[0]) if one_input else None
            return self._from_output_of(scope, node, module)
        if node.op == "call_function" and node.target in _UNARY_FUNCTIONS:
            if len(node.args) != 1 or set(node.kwargs) - {
                "inplace",
                "approximate",
                "p",
                "training",
            }:
                return None
            return self.producers(scope, node.args[0])
        if node.op == "call_function" and node.target in _BINARY_FUNCTIONS:
            return self._operands(scope, node)
        if node.op == "call_method" and node.target in _METHODS:
            return self._operands(scope, node)
        return None

    def _operands(self, scope, node) -> list[tuple[_Scope, torch.fx.Node]] | None:
        if node.kwargs or not node.args:
            return None
        found: list[tuple[_Scope, torch.fx.Node]] = []
        for arg in node.args:
            if isinstance(arg, (int, float)):
                continue  # a number scales or shifts every feature alike
            behind = self.producers(scope, arg)
            if behind is None:
                return None
            found.extend(p for p in behind if p not in found)
        return found or None

    def _from_output_of(self, scope, node, module) -> list[tuple[_Scope, torch.fx.Node]] | None:
        """The producers behind what submodule ``module`` (called at ``node``) returns."""
        graph = _trace(module) if _called_as_traced(module) else None
        if graph is None:
            return None
        inner = _Scope(module, scope.qualified(node.target), graph)
        (output,) = (n for n in graph.nodes if n.op == "output")
        return self.producers(inner, output.args[0])  # a tuple returned is no Node: None

    def _from_caller(self, placeholder) -> list[tuple[_Scope, torch.fx.Node]] | None:
        """The producers behind the argument that ``home``'s owner passes to
        ``placeholder``."""
        home = self.home
        placeholders = [n for n in home.graph.nodes if n.op == "placeholder"]
        if not home.name or any(str(p.target).startswith("*") for p in placeholders):
            return None  # the model itself, or *args / **kwargs: positions unknown
        if not _called_as_traced(home.module):
            return None
        owner_name, _, attribute = home.name.rpartition(".")
        owner = self.model.get_submodule(owner_name)
        caller = self._caller(owner, owner_name, attribute)
        if caller is None:
            return None
        calls = [n for n in caller.graph.nodes if n.op == "call_module" and n.target == attribute]
        if len(calls) != 1 or self._module_once(caller, calls[0]) is not home.module:
            return None
        (call,) = calls
        position = placeholders.index(placeholder)
        if position < len(call.args):
            arg = call.args[position]
        else:
            arg = call.kwargs.get(str(placeholder.target))
        # Passed once: home(h, h) would feed the features to a second placeholder too.
        if not isinstance(arg, torch.fx.Node) or _occurrences(call, arg) != 1:
            return None
        return self.producers(caller, arg)

    def _caller(self, owner, owner_name, attribute) -> _Scope | None:
        graph = _trace(owner)
        if graph is not None:
            return _Scope(owner, owner_name, graph)
        method = _only_method_naming(owner, attribute)
        if method is None:
            return None
        graph = _trace(owner, method)
        return None if graph is None else _Scope(owner, owner_name, graph, method)


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
    graph = _trace(parent)
    if graph is None:
        return
    home = _Scope(parent, parent_name, graph)
    uses = collections.Counter(id(m) for _, m in model.named_modules(remove_duplicate=False))
    for node in list(graph.nodes):
        if node.op != "call_module" or home.calls[node.target] != 1:
            continue
        consumer = parent.get_submodule(node.target)
        if not isinstance(consumer, GroupwiseLinear) or uses[id(consumer)] != 1:
            continue
        if node.kwargs or len(node.args) != 1:
            continue
        columns, features = _read_columns(consumer)
        if features.numel() == 0 or features.numel() == consumer.in_features:
            continue
        walk = _Walk(model, uses, consumer.in_features, home)
        producers = walk.producers(home, node.args[0])
        if not producers:
            continue
        for scope, producer_node in producers:
            producer = scope.module.get_submodule(producer_node.target)
            _set_child(scope.module, producer_node.target, _narrowed(producer, features))
        _set_child(parent, node.target, _dense_consumer(consumer, columns))
        report.shrunk.append(
            ShrunkChain(
                consumer=home.qualified(str(node.target)),
                producers=[scope.qualified(str(p.target)) for scope, p in producers],
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
