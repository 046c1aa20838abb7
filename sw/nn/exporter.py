"""Export a network of :mod:`softfloor.nn` layers to an exact integer model.

:func:`export` finds the chain of layers (:func:`softfloor.nn.graph.chain`) and asks each layer
for its integer ops (``to_int``), passing the integer tensor's state from one to the next
(:class:`~softfloor.nn.tensor.IntState`: shape, code range, scale):

* :class:`~softfloor.nn.layers.QuantInput` gives the input spec (the same rule the layer
  applies in the forward pass);
* a weighted layer gives a ``dense`` or ``conv2d`` op with the integer weight and bias codes
  its hard forward uses, widths the fewest the actual integers need (the accumulator from its
  worst case over the input code range);
* an activation gives a ``requant`` (shift, or free scales' multiplier and shift; per channel
  after per-channel weight scales); after ``batchnorm="threshold"`` a 1-bit activation folds the
  BatchNorm into the weighted op's bias as an exact integer threshold;
* max-pool, flatten, and the tables of sigmoid and tanh (``lut``) as they are.

The output scale is the last op's (the accumulator's, for raw integer logits). The hard
forward of ``model.eval()`` computes the same integers (every value a code times a power of two
computed exactly, or codes themselves with free scales), so the golden model of the exported
file reproduces it bit for bit.
"""
from __future__ import annotations

import numpy as np
import torch

from softfloor.intmodel import InputSpec, IntModel, OutputSpec
from softfloor.nn.graph import ExportError, InputView, chain
from softfloor.nn.layers import QuantInput


def input_layer(model, layers, input_spec: InputSpec | None):
    """The model's input quantizer: its first layer when that is a QuantInput (``input_spec``
    must then be None or equal), else one made from ``input_spec`` (a model that takes
    pre-quantized codes, such as the builders' networks, says how through ``input_layer``)."""
    view = None
    if layers and isinstance(layers[0][1], InputView):
        view, layers = layers[0][1], layers[1:]
    first = layers[0][1] if layers else None
    if isinstance(first, QuantInput) and view is not None and first.shape is None:
        raise ExportError("the input's shape is unknown: run the model on data (or calibrate "
                          "it) before export, or give QuantInput(shape=...)")
    if isinstance(first, QuantInput):
        if input_spec is not None and input_spec != first.spec():
            raise ExportError(f"input_spec {input_spec} differs from the model's QuantInput "
                              f"{first.spec()}; omit input_spec")
        return first, layers[1:]
    if input_spec is None:
        raise ExportError(f"{type(model).__name__} does not start with a softfloor.nn.QuantInput: "
                          f"pass input_spec (how real inputs become its input codes)")
    if hasattr(model, "input_layer"):
        return model.input_layer(input_spec), layers
    return QuantInput.from_spec(input_spec), layers


def export(model: torch.nn.Module, input_spec: InputSpec | None = None, name: str = "model",
           meta: dict | None = None) -> IntModel:
    """Build the :class:`~softfloor.intmodel.IntModel` of a network of softfloor.nn layers.

    Parameters
    ----------
    model : nn.Module
        An ``nn.Sequential`` or any module whose forward is a chain of these layers (see
        :func:`softfloor.nn.graph.chain`), trained or not; exported as its hard-quantized,
        eval-mode self.
    input_spec : InputSpec, optional
        Only for a model without a :class:`~softfloor.nn.layers.QuantInput` first (e.g. one
        trained on pre-quantized codes): how real inputs become its input codes.
    name : str
    meta : dict, optional
        Merged into the model's ``meta``.

    Raises
    ------
    ExportError
        What the integer model cannot express, naming the layer or node and what to do.
    """
    qin, ops, st, layers = lower(model, input_spec)
    info = {"producer": "softfloor.export"}
    if hasattr(model, "export_meta"):
        info |= model.export_meta()
    else:
        info["layers"] = [f"{n}: {type(m).__name__}" for n, m in layers]
    return IntModel(input=qin.spec(), layers=ops, output=OutputSpec(output_scale(st), 0),
                    name=name, meta=info | (meta or {}))


def lower(model: torch.nn.Module, input_spec: InputSpec | None = None, strict: bool = True):
    """The integer ops of ``model`` without building the model file (nothing validated yet):
    ``(input_layer, ops, final_state, layers)``. :func:`export` checks and wraps them;
    ``strict=False`` skips the requantization limits (to inspect a diverged network)."""
    layers = chain(model)
    qin, rest = input_layer(model, layers, input_spec)
    ops, st = qin.to_int(None)
    st.strict = strict
    for lname, m in rest:
        if isinstance(m, QuantInput):
            raise ExportError(f"layer '{lname}': a second QuantInput inside the network")
        try:
            new, st = m.to_int(st)
        except ExportError:
            raise
        except ValueError as e:
            raise ExportError(f"layer '{lname}' ({type(m).__name__}): {e}") from None
        ops += new
    if st.pending is not None:
        raise ExportError("the network ends with batchnorm='threshold', which needs a 1-bit "
                          "QuantReLU after the layer")
    if not ops:
        raise ExportError("the network has no layer after its QuantInput")
    return qin, ops, st, layers


def output_scale(st) -> float | tuple[float, ...]:
    """The real value of one output code: ``2**exp`` (power-of-two scales) or ``2**log2`` (free),
    one per channel after per-channel weight scales."""
    if st.log2 is not None:
        v = torch.exp2(st.log2)
        return float(v) if v.dim() == 0 else tuple(float(s) for s in v)
    if isinstance(st.exp, np.ndarray) and st.exp.ndim:
        return tuple(2.0 ** int(e) for e in st.exp)
    return 2.0 ** int(st.exp)


def export_result(result, input_spec: InputSpec | None = None, name: str = "model") -> IntModel:
    """Export a :class:`~softfloor.train.TrainResult`, recording its config and accuracies.

    ``input_spec`` defaults to the one the model was trained with (``result.input_spec``, e.g.
    learned input thresholds); another one is refused (its codes are not the trained ones).
    """
    trained = getattr(result, "input_spec", None)
    if input_spec is None:
        if trained is None:
            raise ValueError("the result carries no input quantizer: pass input_spec")
        input_spec = trained
    elif trained is not None and input_spec != trained:
        raise ValueError(
            f"input_spec {input_spec} is not the input quantizer the model was trained with "
            f"({trained}); export with result.input_spec (or omit input_spec)")
    return export(result.model, input_spec, name,
                  {"train_config": result.config.to_dict() | {"input_bits": result.config.in_bits},
                   "accuracy": dict(result.accuracy), "train_seconds": round(result.seconds, 3)})
