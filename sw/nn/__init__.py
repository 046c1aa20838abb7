"""``softfloor.nn``: quantized layers to build a network with, in any ``nn.Module``.

Every layer is usable on its own: what it needs from its input (the scale, the code range) travels
with the input as a :class:`QuantTensor`. A network starts with :class:`QuantInput` (real
inputs to integer codes) and ends wherever the user likes (usually a :class:`QuantLinear`, whose
output is the integer logits times their scale). :func:`export` turns any chain of these layers
(an ``nn.Sequential``, or a module whose ``forward`` torch.fx traces into a chain) into an exact
:class:`~softfloor.intmodel.IntModel`; ``docs/nn.md`` is the reference.

Layers: :class:`QuantInput`, :class:`QuantLinear`, :class:`QuantConv2d`, :class:`QuantReLU`,
:class:`QuantHardTanh`, :class:`QuantSigmoid`, :class:`QuantTanh`, :class:`QuantMaxPool2d`,
:class:`Flatten`. Helpers: :func:`set_hard`, :func:`calibrate`, :func:`chain`.

The names are imported on first use, so ``import softfloor.nn`` stays light.
"""
from __future__ import annotations

import importlib

_WHERE = {
    "QuantTensor": "softfloor.nn.tensor", "IntState": "softfloor.nn.tensor",
    "QuantLinear": "softfloor.quant", "QuantReLU": "softfloor.quant",
    "QuantHardTanh": "softfloor.quant", "WeightQuantizer": "softfloor.quant",
    "QuantConv2d": "softfloor.cnn",
    "QuantInput": "softfloor.nn.layers", "QuantMaxPool2d": "softfloor.nn.layers",
    "Flatten": "softfloor.nn.layers", "QuantSigmoid": "softfloor.nn.layers",
    "QuantTanh": "softfloor.nn.layers",
    "export": "softfloor.nn.exporter", "chain": "softfloor.nn.graph",
    "ExportError": "softfloor.nn.graph",
    "set_hard": "softfloor.nn.graph", "set_surrogate": "softfloor.nn.graph",
    "calibrate": "softfloor.nn.graph", "hard_forward_codes": "softfloor.nn.graph",
    "SURROGATES": "softfloor.surrogates",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'softfloor.nn' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
