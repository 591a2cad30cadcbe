"""``fuse(model)``: run a model's Linear -> activation pairs on fused layers and give back
the same model: its class, containers, methods, attributes, ``state_dict`` keys and
``named_modules()`` paths.

torch.fx traces ``forward`` only to FIND the pairs: an ``nn.Linear`` call whose output goes
only into one of torch's activations that our kernels compute (``fusedmlp._torch_activations``:
the modules ``nn.ReLU``, ``nn.GELU``, ``nn.SiLU``, ``nn.LeakyReLU``, ``nn.Sigmoid``,
``nn.Tanh``, the functions ``F.relu``, ``F.gelu``, ``F.silu``, ``F.leaky_relu``,
``torch.sigmoid``, ``torch.tanh``, ..., the Tensor methods, in-place forms too, and modules
from outside torch whose forward is just one of those calls, such as timm's ``GELU``), with
the arguments read from the module or the call (GELU's ``approximate``, LeakyReLU's
``negative_slope``). The pairs are then rewritten, preferably in place:

* The Linear is replaced at its own path(s) by the fused layer (``FusedLinearReLU`` for
  ReLU, else ``FusedLinear`` with the activation) over the same Parameter objects (so
  ``state_dict`` keys and optimizers are unaffected).
* An activation *module* called only by that Linear (an activation slot of a Sequential,
  timm's ``Mlp.act``) becomes ``nn.Identity``: indices and paths do not move.
* A ReLU *call* in ``forward`` (``torch.relu(self.fc(x))``) or a ReLU module also called
  elsewhere stays where it is and runs on the fused output. That is exact because ReLU is
  idempotent: relu(relu(z)) == relu(z), and its backward masks where relu(z) <= 0, which is
  where z <= 0. It costs one extra elementwise pass (measured in the README).
* Any other activation call on the Linear's output cannot stay: a non-idempotent one
  (``F.gelu(self.fc(x))``, a shared ``nn.GELU``) would be applied twice, an in-place ReLU
  (``F.relu(h, inplace=True)``, ``h.relu_()``) would modify the fused output, which the
  fused backward keeps. Then the traced graph is rewritten without the fused activation
  calls and a ``torch.fx.GraphModule`` is returned, carrying the original's whole module
  tree (container types included), parameters, buffers and plain attributes; only the
  methods of the model's class are not on it. ``FuseReport.route`` says which route was taken.

When fx cannot trace ``forward`` (data-dependent control flow, ...), or its graph would lose
part of what ``forward`` does (``torch.no_grad()``, autocast, ``self.training`` branches),
only adjacent (``nn.Linear``, activation module) slots of containers that run their children
in order (``nn.Sequential`` and subclasses that keep its ``forward``, such as
``torchvision.ops.MLP``) are fused, with a warning naming the Linear layers left and why.

With ``plain_linear=True`` the ``nn.Linear`` layers left over (an output layer, a Linear
called twice, ...) then run on ``FusedLinear``: the same layer on our kernels, which beat
eager most at the small shapes such layers usually have.

Then (``mlp=True``, the default) chains of those layers, ``fused layer -> fused layer ->
... -> last layer`` (the last one may be a plain ``nn.Linear``), where each intermediate
output is read only by the next layer (through nothing but ``nn.Identity``, a Dropout with
p == 0 or a ReLU kept after a ReLU layer), run as one ``fusedmlp::mlp`` op: one C++ call
each way, one autograd node. No module is replaced for that: the module owning a chain
gets an instance ``forward`` that runs its traced graph with the chain as one op while its
modules stay as fuse() left them (no hooks, nothing replaced or appended), else its
class's forward (fusedmlp._fuse_chains has the details). ``FuseReport.mlp_chains`` lists
the chains.
"""
import copy
import logging
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch
from torch import fx, nn

from . import _C
from ._fuse_chains import (ChainedForward, chain_owners, chained_forward, find_chains,
                           graph_reads_only_the_module, own_chains)
from ._torch_activations import Activation, ActivationCall, call_activation, module_activation
from .nn import FusedLinear, FusedLinearReLU, module_has_hooks

__all__ = ["fuse", "FuseReport"]

logger = logging.getLogger("fusedmlp")

# act(act(z)) == act(z) with the same gradient: a call of it left in forward after the fused
# layer is still exact.
_IDEMPOTENT = {"relu"}
# Tensor methods that change a tensor's dtype: fusing across one would skip the cast.
_CAST_METHODS = {"to", "type", "float", "double", "half", "bfloat16"}
_FUSED_DTYPES = (torch.float32, torch.float64)

ROUTE_IN_PLACE = "in place"
ROUTE_GRAPH = "graph"
ROUTE_UNTRACED = "untraced"


@dataclass
class FuseReport:
    """What ``fuse`` did; the fused model carries it as ``model.fuse_report``."""

    fused: List[str] = field(default_factory=list)
    """Qualified names of the ``nn.Linear`` layers now running fused with their activation."""
    activations: Dict[str, str] = field(default_factory=dict)
    """Fused ``nn.Linear`` name -> the activation fused into it, as ``fusedmlp.linear``
    names it (``"relu"``, ``"gelu"``, ``"gelu_tanh"``, ``"silu"``, ``"sigmoid"``,
    ``"tanh"``; ``"leaky_relu(negative_slope=0.2)"`` with the slope)."""
    linear: List[str] = field(default_factory=list)
    """Qualified names of the ``nn.Linear`` layers now running on ``FusedLinear`` (no ReLU;
    only with ``plain_linear=True``), every name a shared layer is registered under."""
    skipped: Dict[str, str] = field(default_factory=dict)
    """``nn.Linear`` name -> why it was left as it was."""
    traced: bool = True
    """Whether torch.fx traced ``forward`` (if not, only Sequential slots were fused)."""
    route: str = ROUTE_IN_PLACE
    """``"in place"``: the model was rewritten module by module and keeps its class;
    ``"graph"``: the result is a ``torch.fx.GraphModule`` (an activation call had to be
    removed from forward: a non-ReLU one, or an in-place ReLU); ``"untraced"``: fx could
    not trace forward, only Sequential slots were rewritten (in place)."""
    activation_kept: List[str] = field(default_factory=list)
    """Fused Linear layers whose activation call still runs in ``forward`` on the fused
    output (exact, as ReLU is idempotent; one extra elementwise pass each) when the
    layers run one by one (in a chain of ``mlp_chains`` it is part of the op)."""
    mlp_chains: List[List[str]] = field(default_factory=list)
    """Chains of layers (their paths, in order) that ``forward`` runs as one
    ``fusedmlp::mlp`` op each (``mlp=True``), e.g. ``[["fc1", "fc2"]]``."""
    mlp_left: str = ""
    """Why no chain runs as one op although ``mlp=True`` asked for it ("" otherwise)."""
    mlp_short: List[List[str]] = field(default_factory=list)
    """Chains shorter than ``mlp_min_layers``, left running layer by layer."""

    def __str__(self) -> str:
        pairs = ", ".join(f"{name} ({self.activations.get(name, '?')})" for name in self.fused)
        lines = [f"fused {len(self.fused)} Linear->activation pair(s): {pairs or '-'}"]
        if self.linear:
            lines.append(f"ran {len(self.linear)} Linear layer(s) on FusedLinear: "
                         f"{', '.join(self.linear)}")
        lines.append(f"route: {_ROUTE_DESCRIPTIONS[self.route]}")
        in_chains = {name for chain in self.mlp_chains for name in chain}
        kept = [name for name in self.activation_kept if name not in in_chains]
        if kept:  # in a chain, the ReLU call is part of the op
            lines.append("ReLU call still runs in forward (idempotent, one extra pass) after: "
                         + ", ".join(kept))
        if self.mlp_chains:
            chains = "; ".join(" -> ".join(chain) for chain in self.mlp_chains)
            lines.append(f"ran {len(self.mlp_chains)} chain(s) of layers as one fusedmlp.mlp "
                         f"op each (while their modules stay as they are): {chains}")
        elif self.mlp_left:
            lines.append(f"no chain runs as one fusedmlp.mlp op: {self.mlp_left}")
        if self.mlp_short:
            chains = "; ".join(" -> ".join(chain) for chain in self.mlp_short)
            lines.append(f"left {len(self.mlp_short)} chain(s) shorter than mlp_min_layers "
                         f"layer by layer (faster there, as measured): {chains}")
        lines += [f"left {name}: {why}" for name, why in self.skipped.items()]
        return "\n".join(lines)


_ROUTE_DESCRIPTIONS = {
    ROUTE_IN_PLACE: "in place (same class, modules replaced at their paths)",
    ROUTE_GRAPH: "graph (a torch.fx.GraphModule without the fused activation calls; "
                 "it keeps the submodules, parameters, buffers and attributes, not the "
                 "class's methods)",
    ROUTE_UNTRACED: "untraced (fx could not trace forward; only Sequential slots fused, "
                    "in place)",
}


# Chains shorter than this stay per layer unless fuse() is told otherwise. Measured on the
# seed's training step (784-128-10, SGD, 1 thread, benchmarks/NOTES.md) once the op had its
# direct Python entry: one op for the 2 layers 1.05x the layers one by one at batch 1 and
# 64 (before that entry 0.98x, and the default was 3), 8 layers 6-12% faster.
MLP_MIN_LAYERS = 2


def fuse(model: nn.Module, inplace: bool = False, plain_linear: bool = False,
         mlp: bool = True, mlp_min_layers: int = MLP_MIN_LAYERS) -> nn.Module:
    """``model`` with its Linear -> activation pairs running on fused layers
    (``FusedLinearReLU`` for ReLU, ``FusedLinear`` with the activation for GELU, SiLU,
    LeakyReLU, Sigmoid and Tanh): the same parameters, outputs and gradients (within
    float32 rounding).

    The result is normally ``model`` itself (or its deep copy), rewritten module by module:
    the same class, containers, methods, attributes, ``state_dict`` keys (strict loading
    works both ways) and ``named_modules()`` paths; a fused Linear's path holds the fused
    layer, an activation module called only after it holds ``nn.Identity``. Only when
    ``forward`` applies a non-ReLU activation call (or an in-place ReLU call) to a
    Linear's output, or calls the activation module elsewhere too, is the result a
    ``torch.fx.GraphModule`` (see ``fusedmlp.fuse`` module docs). Use the returned model.

    With ``inplace=False`` (the default) ``model`` is deep-copied first and left untouched;
    with ``inplace=True`` its modules are replaced in place (no copy of the parameters). A
    Linear that is called more than once, or whose output is also used other than by the
    activation, is left alone, as is one whose activation call has arguments the fused
    layer cannot honour (``out=``, an unknown GELU ``approximate``, ...) or that casts its
    output's dtype before the activation. What was fused and what was left is logged
    (logger ``"fusedmlp"``) and returned as ``result.fuse_report`` (a :class:`FuseReport`).

    ``plain_linear=True`` also moves every remaining ``nn.Linear`` (without hooks, of a
    dtype and device our kernels take) onto ``FusedLinear`` at each path it is registered
    under, one ``FusedLinear`` per layer object so that sharing is kept.

    ``mlp=True`` (the default) then runs each chain ``Linear -> act -> Linear -> ... ->
    Linear`` whose intermediate outputs nothing else reads (the seed's ``Net``,
    ``nn.Sequential``, ``torchvision.ops.MLP``, timm's ``Mlp``) as one ``fusedmlp::mlp``
    op through an instance ``forward`` of the module owning the chain, which falls back to
    the class's forward (per layer) once a hook is added or a module of it replaced; the
    class, ``state_dict`` and module paths are unchanged (``result.fuse_report.mlp_chains``;
    module docs). Chains of at least ``mlp_min_layers`` layers (default 2: every chain;
    on the seed's 2-layer Net one op measured 1.05x the layers in the training step and
    1.3x in inference at batch 1); ``result.fuse_report.mlp_short`` lists the chains a
    larger ``mlp_min_layers`` leaves layer by layer. ``mlp=False``: per-layer fused
    modules only.
    """
    if (isinstance(mlp_min_layers, bool) or not isinstance(mlp_min_layers, int)
            or mlp_min_layers < 2):
        raise ValueError(f"fuse: mlp_min_layers must be an int >= 2, got {mlp_min_layers!r}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"fuse: model must be an nn.Module, got {type(model).__name__}")
    if not inplace:
        model = copy.deepcopy(model)
    _drop_chained_forwards(model)  # fusing a fused model: found again from its classes
    activation_modules = _activation_modules(model)
    try:
        graph = _trace(model, activation_modules)
    except Exception as error:  # fx fails in many ways (TraceError, TypeError, ...)
        result, report = model, _fuse_sequential_slots(model, activation_modules)
        left = ", ".join(report.skipped) or "none"
        warnings.warn(
            f"fusedmlp.fuse: could not trace {type(model).__name__}.forward with torch.fx "
            f"({type(error).__name__}: {_first_line(error)}); fused only nn.Linear -> "
            f"activation module slots of Sequential containers "
            f"({', '.join(report.fused) or 'none'}); "
            f"nn.Linear layers left unfused (reasons in result.fuse_report): {left}",
            stacklevel=2)
    else:
        result, report = _fuse_traced(model, graph, activation_modules)
    if plain_linear:
        _run_plain_linears_fused(result, report)
    if mlp:
        _run_chains_as_one_op(result, report, activation_modules, mlp_min_layers)
    result.fuse_report = report
    _keep_through_deepcopy(result, ["fuse_report"])
    logger.info("fusedmlp.fuse(%s): %s", type(model).__name__, report)
    return result


# Activation modules of a model, by id(module): what each applies.
_ActivationModules = Dict[int, ActivationCall]


def _activation_modules(model: nn.Module) -> _ActivationModules:
    """The modules of ``model`` that apply one activation fuse() can fold: torch's own
    (``nn.GELU``, ...) and wrappers of one activation call (see _wrapped_activation)."""
    found = {}
    for module in model.modules():
        call = module_activation(module) or _wrapped_activation(module)
        if call is not None:
            found[id(module)] = call
    return found


def _wrapped_activation(module: nn.Module) -> Optional[ActivationCall]:
    """The activation call a module from outside torch makes when its forward is that one
    call on its input and nothing else, and it has no submodules, parameters or buffers:
    timm's ``GELU``, ``GELUTanh``, ``Sigmoid`` (what ``act_layer="gelu"`` builds),
    transformers' ``GELUActivation``, a user's ``Swish`` class. fx would otherwise inline
    the call, and a fused call in forward takes the graph route; as a module called once it
    becomes nn.Identity in place, like ``nn.GELU``."""
    if (type(module).__module__.split(".")[0] == "torch" or next(module.children(), None)
            is not None or next(module.parameters(), None) is not None
            or next(module.buffers(), None) is not None):
        return None
    try:  # in both train and eval mode: the same call
        nodes = list(_trace(module, {}).nodes)
    except Exception:  # fx fails in many ways: then it is not a plain activation call
        return None
    if len(nodes) != 3:
        return None
    source, call, output = nodes
    if (source.op != "placeholder" or call.op not in ("call_function", "call_method")
            or output.op != "output" or output.args != (call,) or not call.args
            or call.args[0] is not source):
        return None
    return call_activation(call.target, call.args[1:], call.kwargs)


class _Tracer(fx.Tracer):
    """Our layers are leaves, so fuse() also runs on models that are already (partly) fused,
    and so are the modules in ``activation_modules``, so that fx does not inline a wrapper
    module's activation call."""

    def __init__(self, activation_modules: Optional[_ActivationModules] = None) -> None:
        super().__init__()
        self.activation_modules = activation_modules or {}

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return (isinstance(module, (FusedLinearReLU, FusedLinear))
                or id(module) in self.activation_modules
                or super().is_leaf_module(module, qualified_name))

    # A graph does not record `with torch.no_grad():` or autocast blocks inside forward, so
    # a GraphModule would compute gradients (or dtypes) the model does not: refuse to trace.
    def create_node(self, *args, **kwargs) -> fx.Node:
        if not torch.is_grad_enabled() or any(torch.is_autocast_enabled(device)
                                              for device in ("cpu", "cuda")):
            raise RuntimeError("forward switches off autograd or switches on autocast "
                               "(torch.no_grad(), torch.autocast(), ...), which a traced "
                               "graph would not record")
        return super().create_node(*args, **kwargs)


def _trace(model: nn.Module, activation_modules: _ActivationModules) -> fx.Graph:
    """The fx graph of ``model.forward``. Raises if fx cannot trace it, if forward changes
    grad mode or autocast, or if the graph depends on train/eval mode (``if self.training:``,
    ``F.dropout(training=self.training)``): the pairs found in one mode might not be pairs in
    the other, and a GraphModule would freeze one of them."""
    modes = {module: module.training for module in model.modules()}
    with torch.enable_grad(), torch.autocast("cpu", enabled=False), \
            torch.autocast("cuda", enabled=False):  # the state _Tracer checks forward keeps
        graph = _Tracer(activation_modules).trace(model)
        try:
            for module, training in modes.items():
                module.training = not training
            graph_other_mode = _Tracer(activation_modules).trace(model)
        finally:
            for module, training in modes.items():
                module.training = training
    if graph.python_code("self").src != graph_other_mode.python_code("self").src:
        raise RuntimeError("its graph differs between train and eval mode, and a traced "
                           "graph would freeze one of them")
    return graph


@dataclass
class _Pair:
    """A Linear call whose output only an activation uses, and how that activation goes."""

    linear_name: str
    linear: nn.Linear
    linear_node: fx.Node
    activation_node: fx.Node
    activation: Activation
    activation_module: Optional[nn.Module]
    activation_fate: str  # "identity" | "kept" | "graph" (see _activation_fate)


def _fused_layer(linear: nn.Linear, activation: Activation) -> nn.Module:
    """The fused layer computing activation(linear(x)) over ``linear``'s Parameters."""
    if activation.name == "relu":
        return FusedLinearReLU.from_linear(linear)
    return FusedLinear.from_linear(linear, activation.name, activation.negative_slope)


def _fuse_traced(model: nn.Module, graph: fx.Graph,
                 activation_modules: _ActivationModules) -> Tuple[nn.Module, FuseReport]:
    calls = Counter(id(model.get_submodule(node.target))
                    for node in graph.nodes if node.op == "call_module")
    report = FuseReport(traced=True)
    pairs = _linear_activation_pairs(model, graph, calls, activation_modules, report)
    report.fused = [pair.linear_name for pair in pairs]
    report.activations = {pair.linear_name: str(pair.activation) for pair in pairs}
    replacements = {id(pair.linear): _fused_layer(pair.linear, pair.activation)
                    for pair in pairs}
    for pair in pairs:
        if pair.activation_fate == "identity":
            replacements[id(pair.activation_module)] = nn.Identity()
    needs_graph = any(pair.activation_fate == "graph" for pair in pairs)
    if needs_graph:
        # The graph is rewritten anyway, so every pair's activation call is removed from it.
        for pair in pairs:
            pair.activation_node.replace_all_uses_with(pair.linear_node)
            graph.erase_node(pair.activation_node)
        graph.lint()
    else:
        report.activation_kept = [pair.linear_name for pair in pairs
                                  if pair.activation_fate == "kept"]
    _replace_modules(model, replacements)
    if not needs_graph:
        report.route = ROUTE_IN_PLACE
        return model, report
    report.route = ROUTE_GRAPH
    return _graph_module_keeping_everything(model, graph), report


def _linear_activation_pairs(model: nn.Module, graph: fx.Graph, calls: Counter,
                             activation_modules: _ActivationModules,
                             report: FuseReport) -> List[_Pair]:
    """The (Linear call, activation call) pairs where the activation is the Linear output's
    only use, the Linear is called nowhere else (``calls``: call_module nodes per module
    object) and the activation's arguments can be honoured; records the rejected ones (and
    Linear layers whose output is cast before an activation) in ``report.skipped``."""
    pairs = []
    for activation_node in graph.nodes:
        call = _activation_call(model, activation_node, activation_modules)
        if call is None:
            continue
        linear_node = activation_node.args[0]
        cast = _cast_method(linear_node)
        if cast:  # fc(x).float() -> act: the fused layer would skip the cast
            linear_node = linear_node.args[0]
        linear = _called_linear(model, linear_node)
        if linear is None:
            continue
        activation_module = (model.get_submodule(activation_node.target)
                             if activation_node.op == "call_module" else None)
        if calls[id(linear)] > 1:
            why = "it is called more than once"
        elif cast:
            why = (f"its output is cast (.{cast}()) before its {call.kind}, a cast a fused "
                   "layer would skip")
        elif len(linear_node.users) > 1:
            why = f"its output is also used other than by the {call.kind}"
        elif call.activation is None:
            why = call.unsupported
        else:
            why = _why_not_fusable(linear, activation_module)
        name = str(linear_node.target)
        if why:
            report.skipped[name] = why
            continue
        fate = _activation_fate(call, activation_module, calls)
        pairs.append(_Pair(name, linear, linear_node, activation_node, call.activation,
                           activation_module, fate))
    return pairs


def _activation_call(model: nn.Module, node: fx.Node,
                     activation_modules: _ActivationModules) -> Optional[ActivationCall]:
    """The activation ``node`` applies to its first argument (a node), or None when it is
    not one of the activations of ``fusedmlp._torch_activations`` (or a module of
    ``activation_modules``)."""
    if not node.args or not isinstance(node.args[0], fx.Node):
        return None
    if node.op == "call_function" or node.op == "call_method":
        return call_activation(node.target, node.args[1:], node.kwargs)
    if node.op == "call_module" and len(node.args) == 1 and not node.kwargs:
        return activation_modules.get(id(model.get_submodule(node.target)))
    return None


def _cast_method(node: fx.Node) -> Optional[str]:
    """The name of the dtype-casting Tensor method ``node`` calls on a node, else None."""
    if (node.op == "call_method" and node.target in _CAST_METHODS and node.args
            and isinstance(node.args[0], fx.Node)):
        return node.target
    return None


def _called_linear(model: nn.Module, node: fx.Node) -> Optional[nn.Linear]:
    """The nn.Linear (exactly: a subclass may change forward) that ``node`` calls, else None."""
    if node.op != "call_module":
        return None
    module = model.get_submodule(node.target)
    return module if type(module) is nn.Linear else None


def _activation_fate(call: ActivationCall, module: Optional[nn.Module], calls: Counter) -> str:
    """What happens to a fused pair's activation:
    "identity": a module called only here, replaced by nn.Identity (no extra work);
    "kept": a call that may stay in forward, as the activation is idempotent and the call
    does not modify its input in place (one extra elementwise pass);
    "graph": it must be removed from forward, which only a rewritten graph can do."""
    if module is not None and calls[id(module)] == 1:
        return "identity"
    return "kept" if call.activation.name in _IDEMPOTENT and not call.in_place else "graph"


def _why_not_fusable(linear: nn.Linear,
                     activation_module: Optional[nn.Module] = None) -> Optional[str]:
    """Why this Linear (and its activation module, if any) cannot run fused, or None."""
    if linear.weight.dtype not in _FUSED_DTYPES:
        return f"its dtype is {linear.weight.dtype}; the fused kernels take float32 and float64"
    device = linear.weight.device.type
    if device not in ("cpu", "cuda") or (device == "cuda" and not _C.cuda_built()):
        return f"it is on {device}, which this build of fusedmlp has no kernels for"
    if any(module_has_hooks(module)
           for module in (linear, activation_module) if module is not None):
        return "it or its activation module has hooks, which fusing would bypass"
    return None


def _replace_modules(model: nn.Module, replacements: Dict[int, nn.Module]) -> None:
    """Put ``replacements[id(module)]`` at every path where ``module`` is registered in
    ``model`` (so a module registered twice stays one object)."""
    for parent in list(model.modules()):
        for name, child in list(parent._modules.items()):
            if child is not None and id(child) in replacements:
                setattr(parent, name, replacements[id(child)])


def _graph_module_keeping_everything(model: nn.Module, graph: fx.Graph) -> fx.GraphModule:
    """A GraphModule running ``graph`` that holds all of ``model``'s state, not only what
    the graph uses: fx.GraphModule copies just the referenced submodules (under plain
    nn.Module containers) and parameters, which would drop buffers, unused submodules,
    container types and plain attributes from the model and its ``state_dict``."""
    graph_module = fx.GraphModule(model, graph, class_name=type(model).__name__)
    module_state = set(nn.Module().__dict__)  # _modules, _parameters, hooks, training, ...
    plain_attributes = []
    for key, value in model.__dict__.items():
        if key in module_state or key not in graph_module.__dict__:
            graph_module.__dict__[key] = value.copy() if isinstance(value, (dict, set)) else value
            if key not in module_state:
                plain_attributes.append(key)
    _keep_through_deepcopy(graph_module, plain_attributes)
    return graph_module


def _keep_through_deepcopy(module: nn.Module, names: List[str]) -> None:
    """GraphModule.__deepcopy__ rebuilds the module from its graph and submodules and keeps
    only the attributes listed in ``meta["_user_preserved_attributes"]``; list ``names``."""
    if isinstance(module, fx.GraphModule):
        preserved = module.meta.setdefault("_user_preserved_attributes", {})
        preserved.update({name: getattr(module, name) for name in names})


def _runs_children_in_order(module: nn.Module) -> bool:
    """nn.Sequential or a subclass that keeps its forward (torchvision.ops.MLP): its slots
    run one after the other, so an adjacent (Linear, activation) pair is a pair."""
    return type(module).forward is nn.Sequential.forward


def _fuse_sequential_slots(model: nn.Module,
                           activation_modules: _ActivationModules) -> FuseReport:
    """Without a graph: fuse adjacent (nn.Linear, activation module) slots of containers that
    run their children in order; the activation's slot (not the module object, which may be
    used elsewhere) becomes nn.Identity. A Linear registered more than once in ``model`` is
    left alone, as forward may call it elsewhere; a slot that ``forward`` also calls on its
    own (``self.seq[0](x)``) cannot be detected here."""
    registrations = Counter(id(module) for _, module in model.named_modules(remove_duplicate=False))
    reasons: Dict[int, str] = {}
    fusable_slots = []  # (container, Linear slot name, activation slot name, activation)
    for container in model.modules():
        if not _runs_children_in_order(container):
            continue
        slots = [(name, child) for name, child in container._modules.items() if child is not None]
        for index, (slot, linear) in enumerate(slots):
            if type(linear) is not nn.Linear:
                continue
            next_slot, next_module = slots[index + 1] if index + 1 < len(slots) else (None, None)
            call = activation_modules.get(id(next_module))
            if registrations[id(linear)] > 1:
                why = "it is registered more than once in the model"
            elif next_module is None:
                why = (f"fx could not trace forward, and it is the last module of its "
                       f"{type(container).__name__}")
            elif call is None:
                why = (f"fx could not trace forward, and the next module of its "
                       f"{type(container).__name__} is {type(next_module).__name__}, not an "
                       "activation fusedmlp fuses")
            elif call.activation is None:
                why = call.unsupported
            else:
                why = _why_not_fusable(linear, next_module)
            if why is None:
                fusable_slots.append((container, slot, next_slot, call.activation))
            else:
                reasons.setdefault(id(linear), why)
    fused_linears = {id(container._modules[slot]): activation
                     for container, slot, _, activation in fusable_slots}
    report = FuseReport(traced=False, route=ROUTE_UNTRACED)
    for name, module in model.named_modules():  # before the rewrite, under their own names
        if type(module) is not nn.Linear:
            continue
        if id(module) in fused_linears:
            report.fused.append(name)
            report.activations[name] = str(fused_linears[id(module)])
        else:
            report.skipped[name] = reasons.get(
                id(module), "fx could not trace forward, and it is not in a Sequential "
                            "container followed by an activation module")
    for container, slot, next_slot, activation in fusable_slots:
        setattr(container, slot, _fused_layer(container._modules[slot], activation))
        setattr(container, next_slot, nn.Identity())
    return report


def _run_plain_linears_fused(model: nn.Module, report: FuseReport) -> None:
    """Every nn.Linear still in ``model`` that our kernels can run becomes a FusedLinear (the
    same Parameters), at every registration; recorded in ``report``."""
    replacements = {}
    for parent_name, parent in list(model.named_modules()):
        for child_name, child in list(parent._modules.items()):  # named_children() dedups
            if type(child) is not nn.Linear:
                continue
            name = f"{parent_name}.{child_name}" if parent_name else child_name
            why = _why_not_fusable(child)
            if why:
                report.skipped[name] = why
                continue
            if id(child) not in replacements:
                replacements[id(child)] = FusedLinear.from_linear(child)
            setattr(parent, child_name, replacements[id(child)])
            report.linear.append(name)
            report.skipped.pop(name, None)


def _run_chains_as_one_op(model: nn.Module, report: FuseReport,
                          activation_modules: _ActivationModules, min_layers: int) -> None:
    """Give each module owning a chain of fused layers (the innermost module whose forward
    calls the whole chain) an instance ``forward`` that runs the chain as one
    ``fusedmlp::mlp`` op (fusedmlp._fuse_chains). Traced models: the owners of the chains
    of the whole model's graph; untraced ones: the Sequential containers, outer ones
    first (a chain of an inner one that an outer one's chain covers is left to it)."""
    owners = [name for name, module in model.named_modules()
              if _runs_children_in_order(module)]
    if report.traced:
        try:
            owners = chain_owners(find_chains(model, _trace(model, activation_modules),
                                              _why_not_fusable))
        except Exception as error:  # traced before: this should not happen
            report.mlp_left = f"fx could not trace the fused model ({_first_line(error)})"
            return
    covered = set()  # the layers of the chains taken so far
    for owner_name in owners:
        owner = model.get_submodule(owner_name)
        prefix = f"{owner_name}." if owner_name else ""
        try:
            graph = _trace(owner, activation_modules)
        except Exception:  # fx fails in many ways: then that module runs per layer
            continue
        chains = [chain for chain in own_chains(find_chains(owner, graph, _why_not_fusable))
                  if not {prefix + name for name in chain.layer_names} <= covered]
        for chain in [chain for chain in chains if len(chain.layers) < min_layers]:
            names = [prefix + name for name in chain.layer_names]
            covered.update(names)
            if names not in report.mlp_short:
                report.mlp_short.append(names)
        chains = [chain for chain in chains if len(chain.layers) >= min_layers]
        if not chains:
            continue
        if not graph_reads_only_the_module(owner, graph):
            report.mlp_left = (f"{owner_name or 'the model'}'s forward creates tensors, which "
                               "fx keeps outside the model")
            continue
        for chain in chains:
            report.mlp_chains.append([prefix + name for name in chain.layer_names])
            covered.update(report.mlp_chains[-1])
        owner.__dict__["forward"] = chained_forward(owner, graph, chains)
        _keep_through_deepcopy(owner, ["forward"])  # a GraphModule (graph route)


def _drop_chained_forwards(model: nn.Module) -> None:
    """Remove the instance ``forward`` an earlier fuse() gave modules of ``model``."""
    for module in model.modules():
        if isinstance(module.__dict__.get("forward"), ChainedForward):
            del module.__dict__["forward"]
            if isinstance(module, fx.GraphModule):
                module.meta.get("_user_preserved_attributes", {}).pop("forward", None)


def _first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else ""
