"""A network of :mod:`softfloor.nn` layers as a chain, and what acts on the whole chain.

:func:`chain` finds the layers of a model in order: a module that lists them itself
(``softfloor_chain()``, the builders of :mod:`softfloor.zoo`), an ``nn.Sequential`` (nested ones
flattened), or any module whose ``forward`` torch.fx traces into a chain of these layers. What a
chain of integer ops cannot express exactly is an :class:`ExportError` naming the node and what
to do: a residual add, a concat, a value used twice (a branch), a float layer (``nn.GELU``,
``nn.Linear``, ``nn.BatchNorm1d``, ``F.relu``...) between quantized ones.

:func:`calibrate` initialises every scale (and BatchNorm statistics) from a batch, layer by
layer, with hard quantization; :func:`set_surrogate` sets the sharpness and the hard phase of
every rounding surrogate (entering the hard phase freezes the BatchNorm statistics);
:func:`hard_forward_codes` runs the hard-quantized model and returns its integer output codes,
which the exported model reproduces bit for bit.
"""
from __future__ import annotations

import operator

import numpy as np
import torch
from torch import nn

from softfloor.nn.tensor import QuantTensor
from softfloor.quant import BatchNormStats, QuantLinear, QuantReLU


class ExportError(ValueError):
    """A model that is not a chain of softfloor.nn layers; the message names the node."""


def _layer_types() -> tuple:
    from softfloor.cnn import QuantConv2d
    from softfloor.nn.layers import Flatten, QuantInput, QuantMaxPool2d, _TableActivation
    return (QuantInput, QuantLinear, QuantConv2d, QuantReLU, QuantMaxPool2d, Flatten,
            _TableActivation)


#: Modules that are the identity at inference (dropped from the chain).
PASSTHROUGH = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d)

_WHAT = {operator.add: "a residual add", torch.add: "a residual add",
         operator.iadd: "a residual add", torch.cat: "a concat", torch.stack: "a concat",
         torch.concat: "a concat", operator.mul: "a product", torch.mul: "a product"}


def _is_layer(m) -> bool:
    return isinstance(m, _layer_types()) or hasattr(m, "softfloor_chain")


def _expand(name: str, m) -> list[tuple[str, nn.Module]]:
    if hasattr(m, "softfloor_chain"):
        return [(f"{name}.{n}" if name else n, x) for n, x in m.softfloor_chain()]
    if isinstance(m, nn.Sequential):
        out = []
        for n, c in m.named_children():
            out += _expand(f"{name}.{n}" if name else n, c)
        return out
    if isinstance(m, PASSTHROUGH):
        return []
    if isinstance(m, nn.Flatten):
        from softfloor.nn.layers import Flatten
        if m.start_dim != 1 or m.end_dim != -1:
            raise ExportError(f"layer '{name}' (nn.Flatten(start_dim={m.start_dim}, "
                              f"end_dim={m.end_dim})): only flattening every axis after the "
                              f"batch is a chain op; use softfloor.nn.Flatten()")
        return [(name, Flatten())]
    if _is_layer(m):
        return [(name, m)]
    raise ExportError(_float_layer(name, type(m).__name__))


def _float_layer(name: str, what: str, kind: str = "layer") -> str:
    hint = ("use QuantLinear(..., batchnorm=True) (folded into the weights) or batchnorm="
            "'threshold' before a 1-bit activation" if "BatchNorm" in what else
            "use softfloor.nn.QuantLinear / QuantConv2d" if what in ("Linear", "Conv2d") else
            "use softfloor.nn.QuantMaxPool2d" if "Pool" in what else
            "remove it: the class is the argmax of the logits (flow --output class ends the "
            "model in an argmax)" if "Softmax" in what else
            "use softfloor.nn.QuantSigmoid / QuantTanh / QuantReLU / QuantHardTanh, or remove it")
    head = f"layer '{name}' ({what}) is" if kind == "layer" else f"{what}() is"
    return (f"{head} a float {kind} between quantized ones, which the integer model cannot "
            f"compute exactly: {hint}")


class _Tracer(torch.fx.Tracer):
    def is_leaf_module(self, m, qualname):
        return _is_layer(m) or isinstance(m, (nn.Flatten, *PASSTHROUGH)) \
            or super().is_leaf_module(m, qualname)


def chain(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The layers of ``model`` in order, as ``(name, module)`` pairs (see the module
    docstring); raises :class:`ExportError` naming what is not a chain."""
    if hasattr(model, "softfloor_chain") or isinstance(model, nn.Sequential) or _is_layer(model):
        return _expand("", model) if not _is_layer(model) or hasattr(
            model, "softfloor_chain") else [("", model)]
    try:
        gm = torch.fx.GraphModule(model, _Tracer().trace(model))
    except Exception as e:  # torch.fx: data-dependent control flow, unsupported Python
        raise ExportError(f"{type(model).__name__}.forward cannot be traced with torch.fx "
                          f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else e}); "
                          f"write it as an nn.Sequential or a straight chain of layers") from None
    return _walk(model, gm.graph)


def _walk(model: nn.Module, graph) -> list[tuple[str, nn.Module]]:
    from softfloor.nn.layers import Flatten
    modules = dict(model.named_modules())
    nodes = list(graph.nodes)
    users = {n: list(n.users) for n in nodes}
    out: list[tuple[str, nn.Module]] = []
    cur = None            # the node holding the chain's current value
    side = set()          # size()/shape nodes of the current value, allowed as arguments

    def where(n) -> str:
        return f"node '{n.name}' ({n.op} {getattr(n.target, '__name__', n.target)})"

    for n in nodes:  # merges first: they explain a branch better than where it starts
        if n.target in _WHAT and sum(isinstance(a, torch.fx.Node) for a in _flat(n.args)) > 1:
            raise ExportError(f"{where(n)}: {_WHAT[n.target]} of two tensors is not a chain op "
                              f"(the integer model is one straight chain of layers); remove it")
    for n in nodes:
        if n.op == "placeholder":
            if cur is not None:
                raise ExportError(f"{where(n)}: the model takes more than one input; a chain "
                                  f"takes one")
            cur = n
            continue
        if n.op == "get_attr":
            raise ExportError(f"{where(n)}: a tensor of the model used directly in forward; "
                              f"only layers can hold parameters")
        if n.op == "output":
            res = n.args[0]
            if res is not cur:
                raise ExportError(f"{where(n)}: the model returns something other than the last "
                                  f"layer's output")
            break
        args = [a for a in _flat(n.args) + _flat(n.kwargs) if isinstance(a, torch.fx.Node)]
        # shape queries of the current value (x.size(0), x.shape[0]) are allowed side nodes
        if (n.op == "call_method" and n.target == "size") or \
                (n.op == "call_function" and n.target is getattr and n.args[1] == "shape"):
            if n.args[0] is cur or n.args[0] in side:
                side.add(n)
                continue
        if n.op == "call_function" and n.target is operator.getitem and n.args[0] in side:
            side.add(n)
            continue
        data = [a for a in args if a not in side]
        if cur not in data or len(data) != 1:
            what = _WHAT.get(n.target, "an operation on more than one tensor")
            raise ExportError(f"{where(n)}: {what} (a branch or a merge) is not a chain: the "
                              f"integer model is one straight chain of layers; remove it")
        if len(users[cur]) > 1 and not all(u in side or u is n for u in users[cur]):
            raise ExportError(f"{where(n)}: the value of node '{cur.name}' feeds more than one "
                              f"operation (a branch), which a chain of layers cannot express")
        if n.op == "call_module":
            out += _expand(n.target, modules[n.target])
        elif _is_flatten(n):
            out.append((n.name, Flatten()))
        elif _is_reshape(n) and not any(_is_layer(m) for _, m in out):
            # a view of the raw input before its quantizer (quantization is elementwise, so
            # it commutes): the per-sample shape of the input
            dims = n.args[1:] if n.op == "call_method" else (n.args[1],)
            dims = tuple(_flat(list(dims)))
            out = [(n.name, InputView(tuple(-1 if isinstance(d, torch.fx.Node) else int(d)
                                            for d in dims[1:])))]
        else:
            what = _WHAT.get(n.target, None)
            fn = getattr(n.target, "__name__", str(n.target))
            raise ExportError(f"{where(n)}: " + (f"{what} is not a chain op; remove it" if what
                                                 else _float_layer(n.name, fn, "function")))
        cur = n
    return out


class InputView(nn.Module):
    """A reshape of the raw input before its quantizer (``x.view(-1, 1, 28, 28)``): each
    sample to ``shape``."""

    def __init__(self, shape: tuple):
        super().__init__()
        self.shape = tuple(shape)

    def extra_repr(self) -> str:
        return f"shape={self.shape}"

    def forward(self, x):
        return x.reshape((x.shape[0],) + self.shape)


class Float32(nn.Module):
    """Casts its input to float32 (the first layer of a float twin)."""

    def forward(self, x):
        return x.float()


def _flat(a) -> list:
    if isinstance(a, (list, tuple)):
        return [y for x in a for y in _flat(x)]
    if isinstance(a, dict):
        return [y for x in a.values() for y in _flat(x)]
    return [a]


def _is_flatten(n) -> bool:
    if n.op == "call_function" and n.target is torch.flatten:
        return (n.args[1] if len(n.args) > 1 else n.kwargs.get("start_dim", 0)) == 1
    if n.op == "call_method" and n.target == "flatten":
        return (n.args[1] if len(n.args) > 1 else n.kwargs.get("start_dim", 0)) == 1
    if n.op == "call_method" and n.target in ("view", "reshape") and len(n.args) == 3:
        return n.args[2] == -1 and isinstance(n.args[1], torch.fx.Node)
    return False


def _is_reshape(n) -> bool:
    return (n.op == "call_method" and n.target in ("view", "reshape")) or \
        (n.op == "call_function" and n.target is torch.reshape)


# ----------------------------------------------------------------------------------------------
# On the whole chain


def set_surrogate(model: nn.Module, k: float | None = None, hard: bool | None = None) -> None:
    """Set the sharpness ``k`` and the ``hard`` flag of every rounding surrogate in ``model``;
    entering the hard phase freezes every BatchNorm's statistics (its running ones from then
    on), so the hard phase trains exactly the exported model."""
    for m in model.modules():
        if isinstance(m, QuantReLU):
            if k is not None:
                m.surrogate.k = k
            if hard is not None:
                m.surrogate.hard = hard
        if isinstance(m, BatchNormStats) and hard is not None:
            m.use_batch = not hard


def set_hard(model: nn.Module, hard: bool = True) -> None:
    """Every surrogate hard (the exact rounding in the forward) or soft again."""
    set_surrogate(model, None, hard)


def _surrogates(model):
    return [m.surrogate for m in model.modules() if isinstance(m, QuantReLU)]


@torch.no_grad()
def calibrate(model: nn.Module, x, y=None) -> None:
    """Initialise every scale of ``model`` from a batch ``x`` (real inputs or a QuantTensor
    of input codes), layer by layer with hard quantization: the input quantizer's scale or
    thresholds (``y`` the labels; kept when it already has them), BatchNorm statistics and weight scales of folded layers, and
    activation scales from their inputs."""
    from softfloor.nn.layers import QuantInput
    layers = chain(model)
    sur = _surrogates(model)
    hard = [s.hard for s in sur]
    try:
        for name, m in layers:
            if isinstance(m, QuantInput):
                if not isinstance(x, QuantTensor) and not m.calibrated:
                    m.calibrate(x, y)
            if not isinstance(x, QuantTensor) and not isinstance(m, (QuantInput, InputView)):
                raise ExportError(f"layer '{name}' ({type(m).__name__}) is the first layer: a "
                                  f"network starts with a softfloor.nn.QuantInput")
            if isinstance(m, InputView) and isinstance(x, QuantTensor):
                continue  # codes are already shaped
            x = m.calibrate(x) if hasattr(m, "calibrate") and not isinstance(m, QuantInput) \
                else m(x)
    finally:
        for s, h in zip(sur, hard):
            s.hard = h


@torch.no_grad()
def hard_forward_codes(model: nn.Module, x) -> np.ndarray:
    """The integer output codes of the hard-quantized model on ``x`` (real inputs, or a
    QuantTensor of input codes), in eval mode; the model's state is restored afterwards."""
    sur = _surrogates(model)
    hard = [s.hard for s in sur]
    was = model.training
    model.eval()
    try:
        for s in sur:
            s.hard = True
        out = model(x)
    finally:
        for s, h in zip(sur, hard):
            s.hard = h
        model.train(was)
    if not isinstance(out, QuantTensor):
        raise ExportError(f"{type(model).__name__} returned a {type(out).__name__}, not the "
                          f"QuantTensor of a softfloor.nn layer")
    c = out.codes()
    q = torch.round(c)
    if not torch.equal(q, c):
        raise ArithmeticError("the hard forward produced a non-integer output code")
    return q.to(torch.int64).reshape(q.shape[0], -1).numpy()


__all__ = ["ExportError", "chain", "calibrate", "set_surrogate", "set_hard",
           "hard_forward_codes"]
