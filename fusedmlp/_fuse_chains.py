"""fuse()'s second step: chains ``layer -> layer -> ... -> layer`` of an already fused model
(``FusedLinearReLU`` / ``FusedLinear``; the last may be a plain ``nn.Linear``), where each
intermediate output goes only into the next layer, run as one ``fusedmlp::mlp`` op: one
C++ call forward, one autograd node, one backward call.

Every module keeps its class. The module owning a chain (the innermost one whose forward
calls the whole chain: the seed's ``Net``, timm's ``Mlp``, a ``torchvision.ops.MLP``) gets
an instance ``forward`` attribute (in its ``__dict__``; ``type(module).forward`` is
untouched): a :class:`ChainedForward`. It runs that forward's fx graph with each chain
replaced by one op call, with the module itself as ``self`` (every other submodule,
parameter and buffer is looked up live), while the modules the graph goes through still
hold the same children, no module of a chain (nor a container fx inlined) has hooks, there
are no global module hooks, and a Dropout in a chain still has p == 0; otherwise it runs
the class's ``forward`` (per layer), so hooks added later fire and replaced or appended
modules are honoured. It survives ``copy.deepcopy`` (the copy's forward runs on the copy's
modules) and pickling (``torch.save`` of the whole model).

Between two layers a chain may pass through (and drops): ``nn.Identity``, ``nn.Dropout``
with p == 0 and, after a layer whose activation is ReLU, a ReLU call or ``nn.ReLU`` module
(not in place; relu(relu(z)) == relu(z)), each used only there; such a ReLU after the last
layer joins the chain too. Anything else (a second reader of an intermediate output, a
residual, a cast, a Dropout with p > 0, a layer called twice or with hooks, mixed dtypes or
devices) ends the chain.
"""
import inspect
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
from torch import fx, nn

from ._torch_activations import call_activation
from .nn import (FusedLinear, FusedLinearReLU, _global_module_hooks, mlp_layer_activation,
                 module_has_hooks)
from .ops import mlp_output

# Module types that may stand between two layers of a chain: exactly these (a subclass may
# change forward). nn.Dropout only with p == 0 (checked at fuse time and on every call).
_PASS_THROUGH = (nn.Identity, nn.Dropout, nn.ReLU)
_FUSED_LAYERS = (FusedLinearReLU, FusedLinear)


@dataclass
class Chain:
    """A chain in a graph: its layer nodes in order, every node it replaces (the layers
    and what stands between them, in graph order) and the node whose value it returns."""

    layers: List[fx.Node]
    nodes: List[fx.Node]
    output: fx.Node

    @property
    def layer_names(self) -> List[str]:
        return [str(node.target) for node in self.layers]


def mlp_chain(x: torch.Tensor, layers: Tuple[nn.Module, ...]) -> torch.Tensor:
    """``layers`` (FusedLinearReLU / FusedLinear / nn.Linear) applied in order, as one
    ``fusedmlp::mlp`` op. Each layer's parameters and activation are read on every call
    (``_parameters`` directly: ``module.weight`` goes through ``Module.__getattr__``)."""
    weights, biases, activations, slopes = [], [], [], []
    for layer in layers:
        params = layer._parameters
        weights.append(params["weight"])
        biases.append(params["bias"])
        activation, slope = mlp_layer_activation(layer)
        activations.append(activation)
        slopes.append(slope)
    return mlp_output(x, weights, biases, activations, slopes)


def _ends_with_relu(layer: nn.Module) -> bool:
    return (type(layer) is FusedLinearReLU
            or (type(layer) is FusedLinear and layer.activation == "relu"))


class _ChainFinder:
    """Finds the chains of ``graph``, a trace of ``model`` with fused layers as leaves.
    ``why_not_fusable(module)``: fuse()'s reason a layer cannot run on our kernels
    (dtype, device, hooks), or None."""

    def __init__(self, model: nn.Module, graph: fx.Graph, why_not_fusable) -> None:
        self.model = model
        self.graph = graph
        self.why_not_fusable = why_not_fusable
        self.calls = {}
        for node in graph.nodes:
            if node.op == "call_module":
                module = model.get_submodule(node.target)
                self.calls[id(module)] = self.calls.get(id(module), 0) + 1

    def module(self, node: fx.Node) -> Optional[nn.Module]:
        return self.model.get_submodule(node.target) if node.op == "call_module" else None

    def layer(self, node: fx.Node, first: bool) -> Optional[nn.Module]:
        """The layer ``node`` calls if it may be in a chain (a plain nn.Linear only after
        the first layer: it ends the chain), else None."""
        module = self.module(node)
        if module is None or not (type(module) in _FUSED_LAYERS
                                  or (not first and type(module) is nn.Linear)):
            return None
        if (len(node.args) != 1 or node.kwargs or not isinstance(node.args[0], fx.Node)
                or self.calls[id(module)] != 1 or self.why_not_fusable(module)):
            return None
        return module

    def passes_through(self, node: fx.Node, value: fx.Node, after_relu: bool) -> bool:
        """Whether ``node`` only hands ``value`` on (see the module docs)."""
        if not node.args or node.args[0] is not value:
            return False
        module = self.module(node)
        if module is not None:
            kind = type(module)
            if (kind not in _PASS_THROUGH or module_has_hooks(module) or node.kwargs
                    or len(node.args) != 1):
                return False
            if kind is nn.Dropout:
                return module.p == 0
            if kind is nn.ReLU:
                return after_relu and not module.inplace
            return True
        if node.op in ("call_function", "call_method"):
            call = call_activation(node.target, node.args[1:], node.kwargs)
            return (after_relu and call is not None and call.activation is not None
                    and call.activation.name == "relu" and not call.in_place)
        return False

    def step(self, layer_node: fx.Node, layer: nn.Module):
        """From a layer's output: (the pass-through nodes after it, the node whose value
        they end with), following values with exactly one user."""
        between, value = [], layer_node
        while len(value.users) == 1:
            user = next(iter(value.users))
            if not self.passes_through(user, value, _ends_with_relu(layer)):
                break
            between.append(user)
            value = user
        return between, value

    def chains(self) -> List[Chain]:
        found, used = [], set()
        for node in self.graph.nodes:
            first = None if node in used else self.layer(node, first=True)
            if first is None:
                continue
            layers, nodes, layer = [node], [node], first
            between, value = self.step(node, first)
            while len(value.users) == 1:
                user = next(iter(value.users))
                candidate = self.layer(user, first=False) if user.args[0:1] == (value,) else None
                if (candidate is None or candidate.weight.dtype != first.weight.dtype
                        or candidate.weight.device != first.weight.device
                        or candidate.in_features != layer.out_features):
                    break
                layers.append(user)
                nodes += between + [user]
                layer = candidate
                between, value = self.step(user, candidate)
                if type(candidate) is nn.Linear:  # a plain Linear ends the chain
                    break
            if len(layers) >= 2:
                nodes += between  # a ReLU kept after the last layer
                found.append(Chain(layers, nodes, nodes[-1]))
                used.update(nodes)
        return found


def find_chains(model: nn.Module, graph: fx.Graph, why_not_fusable) -> List[Chain]:
    """The maximal chains of at least two layers in ``graph`` (a trace of ``model``)."""
    return _ChainFinder(model, graph, why_not_fusable).chains()


def _owner(chain: Chain) -> str:
    """The path of the innermost module whose forward calls every module of ``chain``."""
    parents = [str(node.target).split(".")[:-1] for node in chain.nodes
               if node.op == "call_module"]
    common = parents[0]
    for parent in parents[1:]:
        length = 0
        while length < min(len(common), len(parent)) and common[length] == parent[length]:
            length += 1
        common = common[:length]
    return ".".join(common)


def chain_owners(chains: List[Chain]) -> List[str]:
    """The paths of the modules owning ``chains``, each once, in order."""
    return list(dict.fromkeys(_owner(chain) for chain in chains))


def own_chains(chains: List[Chain]) -> List[Chain]:
    """The chains that the traced module itself owns (not one of its submodules)."""
    return [chain for chain in chains if _owner(chain) == ""]


def _traversed_paths(graph: fx.Graph) -> List[str]:
    """The paths of the modules whose forward or attributes ``graph`` goes through ("" the
    traced module itself): every proper prefix of what it calls or reads, parents first."""
    paths = {""}
    for node in graph.nodes:
        if node.op in ("call_module", "get_attr"):
            parts = str(node.target).split(".")
            paths.update(".".join(parts[:i]) for i in range(1, len(parts)))
    return sorted(paths, key=lambda path: (path.count(".") + bool(path), path))


def graph_reads_only_the_module(module: nn.Module, graph: fx.Graph) -> bool:
    """Whether every attribute ``graph`` reads is on ``module`` (fx keeps tensors that
    forward creates as ``_tensor_constant`` attributes of its own; the rewritten graph's
    code runs with the module itself as ``self``)."""
    for node in graph.nodes:
        if node.op in ("get_attr", "call_module"):
            target = module
            for part in str(node.target).split("."):
                if not hasattr(target, part):
                    return False
                target = getattr(target, part)
    return True


def chained_forward(module: nn.Module, graph: fx.Graph,
                    chains: List[Chain]) -> "ChainedForward":
    """The ``forward`` of ``module`` running ``graph`` (its trace) with each chain replaced
    by one ``mlp_chain`` call on the chain's layers. ``graph`` is rewritten."""
    containers = [module.get_submodule(path) for path in _traversed_paths(graph)]
    watched = containers[1:]  # their forward is inlined: their hooks would not fire
    dropouts = []
    for chain in chains:
        for node in chain.nodes:
            if node.op == "call_module":
                member = module.get_submodule(node.target)
                watched.append(member)
                if type(member) is nn.Dropout:
                    dropouts.append(member)
        with graph.inserting_before(chain.layers[0]):
            layer_nodes = tuple(graph.get_attr(str(node.target)) for node in chain.layers)
            call = graph.call_function(mlp_chain, (chain.layers[0].args[0], layer_nodes))
        chain.output.replace_all_uses_with(call)
        for node in reversed(chain.nodes):
            graph.erase_node(node)
    graph.lint()
    code = fx.GraphModule(module, graph, class_name=type(module).__name__ + "ChainedForward")
    children = [(container, dict(container._modules)) for container in containers]
    watched = [(member, type(member)) for member in watched]
    return ChainedForward(module, code, children, watched, dropouts)


def _signature(module: nn.Module) -> inspect.Signature:
    return inspect.signature(type(module).forward.__get__(module))


class ChainedForward:
    """A module's instance ``forward``: its traced graph with each chain as one op, run on
    the module itself while its modules are as fuse() left them, else the class's own
    ``forward`` (see the module docs).

    ``code`` is a GraphModule of the rewritten graph; only its generated ``forward`` is
    used, with the module as ``self``. It is kept as a GraphModule because that
    deep-copies and pickles (it regenerates its code)."""

    def __init__(self, module: nn.Module, code: fx.GraphModule,
                 children: List[Tuple[nn.Module, dict]],
                 watched: List[Tuple[nn.Module, type]], dropouts: List[nn.Module]) -> None:
        self.module = module
        self.code = code
        self.children = children  # (a module the graph goes through, its children then)
        self.watched = watched  # (module, its class): it must keep it, and have no hooks
        self.dropouts = dropouts  # the Dropout layers in chains: p must stay 0
        self.__signature__ = _signature(module)  # torch.export binds inputs to it

    def __call__(self, *args, **kwargs):
        if self.intact():
            return type(self.code).forward(self.module, *args, **kwargs)
        return type(self.module).forward(self.module, *args, **kwargs)

    def intact(self) -> bool:
        """Whether the modules the graph goes through still hold the same children (so
        every module it calls, every chain's included, is the one traced), the modules of
        the chains and the inlined containers keep their class and have no hooks, there are
        no global module hooks, and each Dropout in a chain still has p == 0. About 1 us
        for the seed's Net."""
        if _global_module_hooks():
            return False
        for container, children in self.children:
            modules = container._modules
            if len(modules) != len(children):
                return False
            for name, child in children.items():
                if modules.get(name) is not child:
                    return False
        for module, kind in self.watched:  # torch.nn.utils.parametrize changes the class
            if type(module) is not kind or module_has_hooks(module):
                return False
        for dropout in self.dropouts:
            if dropout.p != 0:
                return False
        return True

    @property
    def __code__(self):
        """The class forward's code object: torch.export reads ``forward.__code__`` (its
        name, file and line, for messages)."""
        return type(self.module).forward.__code__

    def __getstate__(self):
        state = dict(self.__dict__)
        del state["__signature__"]  # rebuilt from the module's class
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.__signature__ = _signature(self.module)

    def __repr__(self) -> str:
        return f"<fusedmlp ChainedForward of {type(self.module).__name__}>"
