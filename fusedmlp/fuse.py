"""``fuse(model)``: run a model's Linear -> ReLU pairs on ``FusedLinearReLU``.

Two ways to find the pairs:

* torch.fx traces ``forward``; every ``nn.Linear`` call whose output goes only into a ReLU
  (``nn.ReLU``, ``torch.relu``, ``F.relu``, ``x.relu()``, in-place forms too) is a pair.
  If every pair sits in an ``nn.Sequential`` (Linear at slot i, ReLU at slot i + 1) the
  Sequential is rewritten in place and the model keeps its class; otherwise the traced
  graph is rewritten and a ``torch.fx.GraphModule`` is returned.
* When fx cannot trace ``forward`` (data-dependent control flow, ...), or its graph would
  lose part of what ``forward`` does (``torch.no_grad()``, autocast, ``self.training``
  branches), only adjacent ``nn.Linear``, ``nn.ReLU`` slots of ``nn.Sequential``
  containers are fused, with a warning naming the Linear layers left as they were.

Replacing the Linear at its own path with ``FusedLinearReLU.from_linear`` keeps parameter
names (``state_dict`` keys) and Parameter objects; a fused-away ``nn.ReLU`` slot becomes
``nn.Identity`` so that the Sequential's indices, and the keys after it, do not move.

With ``plain_linear=True`` the ``nn.Linear`` layers left over (an output layer, a Linear
called twice, ...) then run on ``FusedLinear``: the same layer on our kernels, which beat
eager most at the small shapes such layers usually have.
"""
import copy
import logging
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import fx, nn

from . import _C
from .nn import FusedLinear, FusedLinearReLU

__all__ = ["fuse", "FuseReport"]

logger = logging.getLogger("fusedmlp")

_RELU_FUNCTIONS = (torch.relu, torch.relu_, F.relu)  # F.relu_ is torch.relu_
_RELU_METHODS = ("relu", "relu_")
_FUSED_DTYPES = (torch.float32, torch.float64)


@dataclass
class FuseReport:
    """What ``fuse`` did; the fused model carries it as ``model.fuse_report``."""

    fused: List[str] = field(default_factory=list)
    """Qualified names of the ``nn.Linear`` layers now running fused with their ReLU."""
    linear: List[str] = field(default_factory=list)
    """Qualified names of the ``nn.Linear`` layers now running on ``FusedLinear`` (no ReLU;
    only with ``plain_linear=True``), every name a shared layer is registered under."""
    skipped: Dict[str, str] = field(default_factory=dict)
    """``nn.Linear`` name -> why it was left as it was."""
    traced: bool = True
    """Whether torch.fx traced ``forward`` (if not, only nn.Sequential pairs were fused)."""

    def __str__(self) -> str:
        lines = [f"fused {len(self.fused)} Linear->ReLU pair(s): {', '.join(self.fused) or '-'}"]
        if self.linear:
            lines.append(f"ran {len(self.linear)} Linear layer(s) on FusedLinear: "
                         f"{', '.join(self.linear)}")
        lines += [f"left {name}: {why}" for name, why in self.skipped.items()]
        return "\n".join(lines)


def fuse(model: nn.Module, inplace: bool = False, plain_linear: bool = False) -> nn.Module:
    """``model`` with its Linear -> ReLU pairs running on ``FusedLinearReLU``: the same
    parameters, outputs and gradients (within float32 rounding).

    Use the returned model. With ``inplace=False`` (the default) ``model`` is deep-copied
    first and left untouched; with ``inplace=True`` its ``nn.Sequential`` containers may be
    rewritten in place (no copy of the parameters). A pair written in ``forward`` (such as
    ``torch.relu(self.fc(x))``) is fused by rewriting the torch.fx graph, so the result is
    then a ``torch.fx.GraphModule``: it has the model's submodules and parameters (same
    names) but not its other methods or attributes, and Python control flow is fixed as
    traced (a forward that fx cannot trace faithfully keeps its own, with a warning). A
    Linear that is called more than once, or whose output is also used other than by the
    ReLU, is left alone. What was fused and what was left is logged (logger
    ``"fusedmlp"``) and returned as ``result.fuse_report`` (a :class:`FuseReport`).

    ``plain_linear=True`` also moves every remaining ``nn.Linear`` (without hooks, of a
    dtype and device our kernels take) onto ``FusedLinear`` at each path it is registered
    under, one ``FusedLinear`` per layer object so that sharing is kept.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"fuse: model must be an nn.Module, got {type(model).__name__}")
    if not inplace:
        model = copy.deepcopy(model)
    try:
        graph_module = _trace(model)
    except Exception as error:  # fx fails in many ways (TraceError, TypeError, ...)
        result, report = model, _fuse_sequentials_untraced(model)
        left = ", ".join(report.skipped) or "none"
        warnings.warn(
            f"fusedmlp.fuse: could not trace {type(model).__name__}.forward with torch.fx "
            f"({type(error).__name__}: {_first_line(error)}); fused only nn.Linear -> nn.ReLU "
            f"pairs inside nn.Sequential ({', '.join(report.fused) or 'none'}); "
            f"nn.Linear layers left unfused: {left}", stacklevel=2)
    else:
        result, report = _fuse_traced(model, graph_module)
    if plain_linear:
        _run_plain_linears_fused(result, report)
    result.fuse_report = report
    logger.info("fusedmlp.fuse(%s): %s", type(model).__name__, report)
    return result


class _Tracer(fx.Tracer):
    # Our layers are leaves, so fuse() also runs on models that are already (partly) fused.
    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return (isinstance(module, (FusedLinearReLU, FusedLinear))
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


def _trace(model: nn.Module) -> fx.GraphModule:
    """The fx graph of ``model.forward``. Raises if fx cannot trace it, if forward changes
    grad mode or autocast, or if the graph depends on train/eval mode (``if self.training:``,
    ``F.dropout(training=self.training)``): a GraphModule would lose those, so such a model
    must keep its own forward."""
    modes = {module: module.training for module in model.modules()}
    with torch.enable_grad(), torch.autocast("cpu", enabled=False), \
            torch.autocast("cuda", enabled=False):  # the state _Tracer checks forward keeps
        graph = _Tracer().trace(model)
        try:
            for module, training in modes.items():
                module.training = not training
            graph_other_mode = _Tracer().trace(model)
        finally:
            for module, training in modes.items():
                module.training = training
    if graph.python_code("self").src != graph_other_mode.python_code("self").src:
        raise RuntimeError("its graph differs between train and eval mode, and a traced "
                           "graph would freeze one of them")
    return fx.GraphModule(model, graph, class_name=type(model).__name__)


def _fuse_traced(model: nn.Module, graph_module: fx.GraphModule) -> Tuple[nn.Module, FuseReport]:
    report = FuseReport(traced=True)
    calls = Counter(id(graph_module.get_submodule(node.target))
                    for node in graph_module.graph.nodes if node.op == "call_module")
    pairs = _linear_relu_pairs(graph_module, calls, report)
    report.fused = [str(linear_node.target) for linear_node, _ in pairs]
    slots = [_sequential_slot(model, graph_module, calls, *pair) for pair in pairs]
    if all(slot is not None for slot in slots):
        # Every pair is Sequential[i], Sequential[i + 1]: keep the model and its class.
        for sequential, index in slots:
            _fuse_sequential_slot(sequential, index)
        return model, report
    return _rewrite_graph(graph_module, pairs), report


def _linear_relu_pairs(graph_module: fx.GraphModule, calls: Counter,
                       report: FuseReport) -> List[Tuple[fx.Node, fx.Node]]:
    """(Linear call, ReLU call) nodes where the ReLU is the Linear output's only use and the
    Linear is called nowhere else (``calls``: call_module nodes per module object); records
    the rejected ones in ``report.skipped``."""
    pairs = []
    for relu_node in graph_module.graph.nodes:
        linear_node = _relu_input(graph_module, relu_node)
        if linear_node is None or linear_node.op != "call_module":
            continue
        linear = graph_module.get_submodule(linear_node.target)
        if type(linear) is not nn.Linear:
            continue
        if calls[id(linear)] > 1:
            why = "it is called more than once"
        elif len(linear_node.users) > 1:
            why = "its output is also used other than by the ReLU"
        else:
            relu_module = (graph_module.get_submodule(relu_node.target)
                           if relu_node.op == "call_module" else None)
            why = _why_not_fusable(linear, relu_module)
        if why:
            report.skipped[str(linear_node.target)] = why
        else:
            pairs.append((linear_node, relu_node))
    return pairs


def _relu_input(graph_module: fx.GraphModule, node: fx.Node) -> Optional[fx.Node]:
    """The node that ``node`` applies a ReLU to, or None when ``node`` is not a ReLU call
    (or has arguments besides the input and ``inplace``, such as ``out=``)."""
    if node.op == "call_function":
        is_relu = node.target in _RELU_FUNCTIONS
    elif node.op == "call_method":
        is_relu = node.target in _RELU_METHODS
    elif node.op == "call_module":
        is_relu = type(graph_module.get_submodule(node.target)) is nn.ReLU
    else:
        is_relu = False
    if not is_relu or not node.args or not isinstance(node.args[0], fx.Node):
        return None
    extra_args_are_inplace = (all(isinstance(arg, bool) for arg in node.args[1:])
                              and set(node.kwargs) <= {"inplace"})
    return node.args[0] if extra_args_are_inplace else None


def _why_not_fusable(linear: nn.Linear, relu_module: Optional[nn.Module] = None) -> Optional[str]:
    """Why this Linear (and its ReLU module, if any) cannot run on FusedLinearReLU, or None."""
    if linear.weight.dtype not in _FUSED_DTYPES:
        return f"its dtype is {linear.weight.dtype}; the fused kernels take float32 and float64"
    device = linear.weight.device.type
    if device not in ("cpu", "cuda") or (device == "cuda" and not _C.cuda_built()):
        return f"it is on {device}, which this build of fusedmlp has no kernels for"
    if any(_has_hooks(module) for module in (linear, relu_module) if module is not None):
        return "it or its ReLU has hooks, which fusing would bypass"
    return None


def _has_hooks(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks
                or module._backward_hooks or module._backward_pre_hooks)


def _sequential_slot(model: nn.Module, graph_module: fx.GraphModule, calls: Counter,
                     linear_node: fx.Node,
                     relu_node: fx.Node) -> Optional[Tuple[nn.Sequential, int]]:
    """(sequential, i) when the pair is ``sequential[i]``, ``sequential[i + 1]`` of a plain
    nn.Sequential in ``model`` and that ReLU is called only there, so the two slots can be
    replaced without a new forward; else None."""
    parent_name, _, slot = str(linear_node.target).rpartition(".")
    parent = model.get_submodule(parent_name)
    if type(parent) is not nn.Sequential or not slot.isdigit() or relu_node.op != "call_module":
        return None
    index = int(slot)
    relu_module = graph_module.get_submodule(relu_node.target)
    if index + 1 < len(parent) and parent[index + 1] is relu_module and calls[id(relu_module)] == 1:
        return parent, index
    return None


def _fuse_sequential_slot(sequential: nn.Sequential, index: int) -> None:
    sequential[index] = FusedLinearReLU.from_linear(sequential[index])
    sequential[index + 1] = nn.Identity()


def _rewrite_graph(graph_module: fx.GraphModule,
                   pairs: List[Tuple[fx.Node, fx.Node]]) -> fx.GraphModule:
    """Each Linear call now calls a FusedLinearReLU (at the Linear's own path, so parameter
    names stay) and its ReLU call is removed."""
    for linear_node, relu_node in pairs:
        linear = graph_module.get_submodule(linear_node.target)
        graph_module.set_submodule(linear_node.target, FusedLinearReLU.from_linear(linear))
        relu_node.replace_all_uses_with(linear_node)
        graph_module.graph.erase_node(relu_node)
    graph_module.graph.lint()
    graph_module.delete_all_unused_submodules()  # the nn.ReLU modules no longer called
    graph_module.recompile()
    return graph_module


def _fuse_sequentials_untraced(model: nn.Module) -> FuseReport:
    """Without a graph: fuse adjacent (nn.Linear, nn.ReLU) slots of plain nn.Sequential
    containers. A Linear registered more than once in ``model`` is left alone; a slot that
    ``forward`` also calls on its own (``self.seq[0](x)``) cannot be detected here."""
    registrations = Counter(id(module) for _, module in model.named_modules(remove_duplicate=False))
    reasons, fusable_slots = {}, []
    for sequential in model.modules():
        if type(sequential) is not nn.Sequential:
            continue
        for index in range(len(sequential) - 1):
            linear, relu = sequential[index], sequential[index + 1]
            if type(linear) is not nn.Linear or type(relu) is not nn.ReLU:
                continue
            why = ("it is registered more than once in the model"
                   if registrations[id(linear)] > 1 else _why_not_fusable(linear, relu))
            if why is None:
                fusable_slots.append((sequential, index))
            else:
                reasons[id(linear)] = why
    fused_linears = {id(sequential[index]) for sequential, index in fusable_slots}
    report = FuseReport(traced=False)
    for name, module in model.named_modules():  # before the rewrite, under their own names
        if not isinstance(module, nn.Linear):
            continue
        if id(module) in fused_linears:
            report.fused.append(name)
        else:
            report.skipped[name] = reasons.get(id(module),
                                               "not followed by nn.ReLU in an nn.Sequential")
    for sequential, index in fusable_slots:
        _fuse_sequential_slot(sequential, index)
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


def _first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else ""
