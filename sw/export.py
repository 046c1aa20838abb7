"""Export a trained :class:`~softfloor.models.QuantMLP` or :class:`~softfloor.cnn.QuantCNN` to an
exact integer model.

Per linear layer a :class:`~softfloor.intmodel.Dense` with the integer weight and bias codes
the hard-quantized forward uses, and (except after the last layer) a
:class:`~softfloor.intmodel.Requant` with ``shift = out_exp - in_exp - w_exp`` (or a
power-of-two ``multiplier`` with shift 0 if that would be negative), rounding ``half_up`` and
saturation to ``[0, 2**act_bits - 1]`` (ReLU; unsigned output codes) or to the signed range
``[-2**(act_bits-1), 2**(act_bits-1) - 1]`` (hardtanh; signed output codes); with free scales
an integer ``multiplier`` and ``shift`` (:meth:`~softfloor.models.QuantMLP.free_plan`). Widths
are the minimum the actual integers need: ``bias_bits`` from the bias codes, ``acc_bits`` from
the worst-case accumulator bound (:func:`softfloor.arith.dense_bounds`) over the input code
range of each layer. The output scale is the last accumulator's, ``2**(in_exp + w_exp)`` (with
free scales a real number).

BatchNorm is already folded by the model (:meth:`~softfloor.models.QuantMLP.integer_layers`):
into the quantized weights and bias, or, before a 1-bit activation, into an integer threshold
carried by the bias (the requantization is then shift 0, saturation to ``[0, 1]``).

The CNN (:class:`~softfloor.cnn.QuantCNN`) becomes, per stage, a
:class:`~softfloor.intmodel.Conv2d` (``pad_value`` the zero code of its input: the input's zero
point, then 0 after the ReLU activations), a :class:`~softfloor.intmodel.Requant` (as above) and
a :class:`~softfloor.intmodel.MaxPool2d` on the codes; then a
:class:`~softfloor.intmodel.Flatten` and the last :class:`~softfloor.intmodel.Dense`. Its input
is the ``(C, H, W)`` image (the flat digits input spec is reshaped). Widths as above, the
convolution's accumulator bound over every window (padding is a code of the input range).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from . import arith
from .cnn import IntConvLayer, QuantCNN
from .intmodel import (ChannelRequant, Conv2d, Dense, Flatten, InputSpec, IntModel, MaxPool2d,
                       OutputSpec, Requant)
from .models import QuantMLP


def signed_bits(lo: int, hi: int) -> int:
    """Fewest bits of a *signed* two's complement code holding ``[lo, hi]``."""
    bits, signed = arith.bits_for_range(min(lo, 0), hi)
    return bits if signed else bits + 1


def _widths(il, in_lo: int, in_hi: int) -> tuple[int, int]:
    """``(bias_bits, acc_bits)`` of a weighted integer layer: the fewest the actual integers need,
    the accumulator from its worst case over inputs in ``[in_lo, in_hi]``."""
    w, b = il.weight.numpy(), il.bias.numpy()
    lo, hi = arith.dense_bounds(w.reshape(w.shape[0], -1), b, in_lo, in_hi)
    acc_bits = max(2, signed_bits(int(min(lo)), int(max(hi))))
    return signed_bits(int(b.min()), int(b.max())), acc_bits


def _requant(name: str, il) -> Requant | ChannelRequant:
    """Per tensor, or per channel when the weights have per-channel scales; signed output
    codes when the saturation goes below 0 (hardtanh)."""
    shift, mode, rlo, rhi, mult = il.requant
    signed = rlo < 0
    if isinstance(shift, torch.Tensor):
        return ChannelRequant(name, shift.numpy().astype(np.int64), mode, il.act_bits, signed,
                              rlo, rhi, mult.numpy().astype(np.int64))
    return Requant(name, shift, mode, il.act_bits, signed, rlo, rhi, mult)


def _exps(wq) -> int | list[int]:
    """Weight exponent(s) for the meta: an int, or a list per channel."""
    e = wq.exp
    return e.tolist() if isinstance(e, torch.Tensor) else e


def _check_input(input_spec: InputSpec, bits: int, size: int) -> None:
    if (input_spec.bits != bits or input_spec.signed or input_spec.zero_point != 0
            or input_spec.size != size):
        raise ValueError(
            f"input_spec {input_spec} does not match the model's input: unsigned "
            f"{bits}-bit codes of {size} values, zero point 0")


def export(model: QuantMLP | QuantCNN, input_spec: InputSpec, name: str = "model",
           meta: dict | None = None) -> IntModel:
    """Build the :class:`~softfloor.intmodel.IntModel` of a trained, hard-quantized model.

    Parameters
    ----------
    model : QuantMLP or QuantCNN
    input_spec : InputSpec
        Must match the model's input: unsigned ``model.input_bits`` codes, zero point 0 (as
        :func:`softfloor.data.digits_input_spec` makes). Its scale is the user's meaning of a
        code; the model computes on the codes (its own input scale is ``2**-input_bits``).
    name : str
    meta : dict, optional
        Merged into the model's ``meta`` (e.g. the training config and accuracies).
    """
    if isinstance(model, QuantCNN):
        return _export_cnn(model, input_spec, name, meta)
    _check_input(input_spec, model.input_bits, model.sizes[0])
    in_lo, in_hi = input_spec.code_type.lo, input_spec.code_type.hi
    layers = []
    for i, il in enumerate(model.integer_layers(in_lo, in_hi)):
        bias_bits, acc_bits = _widths(il, in_lo, in_hi)
        layers.append(Dense(f"fc{i + 1}", il.weight.numpy(), il.bias.numpy(), il.weight_bits,
                            bias_bits, acc_bits))
        if il.requant is not None:
            layers.append(_requant(f"act{i + 1}", il))
            in_lo, in_hi = il.requant[2], il.requant[3]
    info = {"producer": "softfloor.export", "arch": "mlp", "surrogate": model.surrogate_name,
            "per_channel": model.per_channel, "activation": model.activation,
            "scales": model.scales,
            "batchnorm": [lin.bn_mode for lin in model.linears[:len(model.acts)]]}
    out_scale = _scales_meta(info, model, [lin.wq for lin in model.linears])
    return IntModel(input=input_spec, layers=layers, output=OutputSpec(out_scale, 0),
                    name=name, meta=info | (meta or {}))


def _export_cnn(model: QuantCNN, input_spec: InputSpec, name: str, meta: dict | None
                ) -> IntModel:
    c, h, w = model.input_shape
    _check_input(input_spec, model.input_bits, c * h * w)
    spec = dataclasses.replace(input_spec, shape=model.input_shape)
    in_lo, in_hi = spec.code_type.lo, spec.code_type.hi
    layers, n_fc, spatial = [], 0, True
    for il in model.integer_layers(spec.zero_point):
        bias_bits, acc_bits = _widths(il, in_lo, in_hi)
        if isinstance(il, IntConvLayer):
            i = len([x for x in layers if isinstance(x, Conv2d)]) + 1
            layers.append(Conv2d(f"conv{i}", il.weight.numpy(), il.bias.numpy(), il.weight_bits,
                                 bias_bits, acc_bits, (1, 1), tuple(il.padding),
                                 int(il.pad_value)))
            layers.append(_requant(f"act{i}", il))
            in_lo, in_hi = il.requant[2], il.requant[3]
            if il.pool:
                layers.append(MaxPool2d(f"pool{i}", (il.pool, il.pool), (il.pool, il.pool)))
            continue
        if spatial:
            layers.append(Flatten("flatten"))
            spatial = False
        n_fc += 1
        layers.append(Dense(f"fc{n_fc}", il.weight.numpy(), il.bias.numpy(), il.weight_bits,
                            bias_bits, acc_bits))
        if il.requant is not None:
            layers.append(_requant(f"fc{n_fc}_act", il))
            in_lo, in_hi = il.requant[2], il.requant[3]
    info = {"producer": "softfloor.export", "arch": "cnn", "surrogate": model.surrogate_name,
            "per_channel": model.per_channel, "activation": model.activation,
            "scales": model.scales, "batchnorm": [None] * len(model.acts)}
    out_scale = _scales_meta(info, model, [m.wq for m in (*model.convs, model.fc)])
    return IntModel(input=spec, layers=layers, output=OutputSpec(out_scale, 0),
                    name=name, meta=info | (meta or {}))


def _scales_meta(info: dict, model, wqs) -> float:
    """Record the scales in ``info`` (``exponents``, or ``log2_scales`` for free scales) and
    return the output scale: the last accumulator's."""
    if model.scales == "free":
        info["log2_scales"] = {"input": model.input_exp,
                               "weights": [wq.log2_scale.detach().tolist() for wq in wqs],
                               "activations": [float(a.log2_scale.detach()) for a in model.acts]}
        return float(model.free_plan()[-1][0])
    info["exponents"] = {"input": model.input_exp, "weights": [_exps(wq) for wq in wqs],
                         "activations": [a.exp for a in model.acts]}
    return 2.0 ** model.output_exp


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
