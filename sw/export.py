"""Export a trained :class:`~softfloor.models.QuantMLP` to an exact integer model.

Per linear layer a :class:`~softfloor.intmodel.Dense` with the integer weight and bias codes
the hard-quantized forward uses, and (except after the last layer) a
:class:`~softfloor.intmodel.Requant` with ``shift = out_exp - in_exp - w_exp`` (or a
power-of-two ``multiplier`` with shift 0 if that would be negative), rounding ``half_up`` and
saturation to ``[0, 2**act_bits - 1]`` (ReLU). Widths are the minimum the actual integers need:
``bias_bits`` from the bias codes, ``acc_bits`` from the worst-case accumulator bound
(:func:`softfloor.arith.dense_bounds`) over the input code range of each layer. The output
scale is the last accumulator's, ``2**(in_exp + w_exp)``.

BatchNorm is already folded by the model (:meth:`~softfloor.models.QuantMLP.integer_layers`):
into the quantized weights and bias, or, before a 1-bit activation, into an integer threshold
carried by the bias (the requantization is then shift 0, saturation to ``[0, 1]``).
"""
from __future__ import annotations

from . import arith
from .intmodel import Dense, InputSpec, IntModel, OutputSpec, Requant
from .models import QuantMLP


def signed_bits(lo: int, hi: int) -> int:
    """Fewest bits of a *signed* two's complement code holding ``[lo, hi]``."""
    bits, signed = arith.bits_for_range(min(lo, 0), hi)
    return bits if signed else bits + 1


def export(model: QuantMLP, input_spec: InputSpec, name: str = "model",
           meta: dict | None = None) -> IntModel:
    """Build the :class:`~softfloor.intmodel.IntModel` of a trained, hard-quantized model.

    Parameters
    ----------
    model : QuantMLP
    input_spec : InputSpec
        Must match the model's input: unsigned ``model.input_bits`` codes, zero point 0 (as
        :func:`softfloor.data.digits_input_spec` makes). Its scale is the user's meaning of a
        code; the model computes on the codes (its own input scale is ``2**-input_bits``).
    name : str
    meta : dict, optional
        Merged into the model's ``meta`` (e.g. the training config and accuracies).
    """
    if (input_spec.bits != model.input_bits or input_spec.signed
            or input_spec.zero_point != 0 or input_spec.size != model.sizes[0]):
        raise ValueError(
            f"input_spec {input_spec} does not match the model's input: unsigned "
            f"{model.input_bits}-bit codes of {model.sizes[0]} values, zero point 0")
    exps = model.layer_exps()
    in_lo, in_hi = input_spec.code_type.lo, input_spec.code_type.hi
    layers = []
    for i, il in enumerate(model.integer_layers(in_lo, in_hi)):
        w, b = il.weight.numpy(), il.bias.numpy()
        lo, hi = arith.dense_bounds(w, b, in_lo, in_hi)
        acc_bits = max(2, signed_bits(int(min(lo)), int(max(hi))))
        bias_bits = signed_bits(int(b.min()), int(b.max()))
        layers.append(Dense(f"fc{i + 1}", w, b, il.weight_bits, bias_bits, acc_bits))
        if il.requant is not None:
            shift, mode, rlo, rhi, mult = il.requant
            layers.append(Requant(f"act{i + 1}", shift, mode, il.act_bits, False, rlo, rhi, mult))
            in_lo, in_hi = rlo, rhi
    out_exp = exps[-1] + model.linears[-1].wq.exp
    info = {"producer": "softfloor.export", "surrogate": model.surrogate_name,
            "batchnorm": [lin.bn_mode for lin in model.linears[:len(model.acts)]],
            "exponents": {"input": model.input_exp,
                          "weights": [lin.wq.exp for lin in model.linears],
                          "activations": [a.exp for a in model.acts]}}
    return IntModel(input=input_spec, layers=layers, output=OutputSpec(2.0 ** out_exp, 0),
                    name=name, meta=info | (meta or {}))


def export_result(result, input_spec: InputSpec, name: str = "model") -> IntModel:
    """Export a :class:`~softfloor.train.TrainResult`, recording its config and accuracies."""
    return export(result.model, input_spec, name,
                  {"train_config": result.config.to_dict() | {"input_bits": result.config.in_bits},
                   "accuracy": dict(result.accuracy), "train_seconds": round(result.seconds, 3)})
