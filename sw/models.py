"""The networks: a quantized MLP 64-64-32-10 and its plain float twin.

Hidden layers are ``QuantLinear -> QuantReLU`` (or ``QuantHardTanh``: signed codes); the last
layer has no activation, its output is the raw integer accumulator (the logits) at scale
``s_in * s_w``. The input is real values that are input codes times ``2**-input_bits``. The
quantized model computes in a dtype in which its hard-quantized forward is exact
(:meth:`QuantMLP.exact_dtype`: float32 when every accumulator fits 24 bits, as the digits
MLP's do at every width, else float64; see
:func:`softfloor.train.hard_codes`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import arith
from .nn.lowering import threshold_rewrite as _threshold_layer  # noqa: F401 (one rule)
from .nn.tensor import QuantTensor
from .quant import (QuantHardTanh, QuantLinear, QuantReLU, act_quant_bwd, act_quant_fwd, check_bits,
                    check_scales, free_requant_params, linear_quant_bwd, linear_quant_fwd,
                    lsq_grad_factor)
from .surrogates import SURROGATES, check_surrogate, make_surrogate, round_half_up
from .tensorops import scalar

#: The default layer widths: 64 pixels in, 10 classes out.
SIZES = (64, 64, 32, 10)

#: Hidden activations: unsigned codes after ReLU, signed codes after hardtanh.
ACTIVATIONS = {"relu": QuantReLU, "hardtanh": QuantHardTanh}


def check_free_scales(surrogate: str, bn_threshold: bool) -> None:
    """Raise a ValueError naming the option that free scales do not support (yet)."""
    why = ("the 'pact' surrogate (its clip level is a power-of-two scale)"
           if SURROGATES[surrogate].scale_grad == "pact"
           else "BatchNorm before 1-bit activations (an integer threshold at power-of-two "
                "scales)" if bn_threshold else None)
    if why:
        raise ValueError(f"scales 'free' is not implemented with {why}; use scales 'po2'")


def check_activation(name: str) -> str:
    """Return ``name`` if it is a known activation, else raise a ValueError listing them."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")
    return name


@dataclass
class IntLayer:
    """One integer layer of a hard-quantized model, exactly as it is exported.

    ``acc = x @ weight.T + bias``; then, if ``requant`` is given, ``arith.requantize(acc,
    *requant)`` with ``requant = (shift, rounding, lo, hi, multiplier)`` and ``act_bits`` wide
    output codes, signed when ``lo < 0`` (hardtanh activations), else unsigned.
    ``shift``/``multiplier`` are int64 tensors (one per output channel) when the weights have
    per-channel scales (see :func:`apply_requant`).
    """
    weight: torch.Tensor
    bias: torch.Tensor
    weight_bits: int
    requant: tuple | None = None
    act_bits: int | None = None


def apply_requant(x: torch.Tensor, requant: tuple) -> torch.Tensor:
    """``arith.requantize`` of integer ``x`` (``(N, C, ...)``) by an :class:`IntLayer` requant
    tuple; per-channel ``shift``/``multiplier`` (int64 tensors) apply to channel ``c`` = axis 1."""
    shift, mode, lo, hi, mult = requant
    if not isinstance(shift, torch.Tensor):
        return arith.requantize(x, shift, mode, lo, hi, mult)
    out = torch.empty_like(x)
    for c in range(x.shape[1]):
        out[:, c] = arith.requantize(x[:, c], int(shift[c]), mode, lo, hi, int(mult[c]))
    return out


def int_dense(x: torch.Tensor, layer: "IntLayer", per_layer: list) -> torch.Tensor:
    """One integer dense layer on int64 codes: ``x @ W.T + b``, then its requant if any; the
    codes after each op are appended to ``per_layer`` (as ``golden.run(intermediates=True)``)."""
    x = x @ layer.weight.T + layer.bias
    per_layer.append(x.numpy().copy())
    if layer.requant is not None:
        x = apply_requant(x, layer.requant)
        per_layer.append(x.numpy().copy())
    return x


def worst_case_acc_bits(fan_ins, input_bits: int, act_bits: int, weight_bits,
                        bias_bits: int) -> int:
    """Bits of the largest accumulator magnitude (in LSBs) of a chain of weighted layers with
    these fan-ins: ``fan_in * max|x code| * max|w code| + 2**(bias_bits-1)``, the first layer
    on input codes, the others on activation codes. ``weight_bits``: one width for every
    layer, or one per layer."""
    wbits = [weight_bits] * len(fan_ins) if isinstance(weight_bits, int) else list(weight_bits)
    if len(wbits) != len(fan_ins):
        raise ValueError(f"{len(wbits)} weight widths for {len(fan_ins)} layers")
    x_max = [(1 << input_bits) - 1] + [(1 << act_bits) - 1] * (len(fan_ins) - 1)
    worst = max(n * x * (1 if wb == 1 else 1 << (wb - 1))
                for n, x, wb in zip(fan_ins, x_max, wbits)) + (1 << (bias_bits - 1))
    return worst.bit_length()


def layer_weight_bits(n_layers: int, weight_bits: int, first_weight_bits: int | None
                      ) -> tuple[int, ...]:
    """The weight width of each of ``n_layers`` weighted layers: ``weight_bits``, except the
    first layer's ``first_weight_bits`` when given (the usual exception of binary and ternary
    networks: the layer on the input codes kept wider)."""
    check_bits("weight_bits", weight_bits)
    first = weight_bits if first_weight_bits is None \
        else check_bits("first_weight_bits", first_weight_bits)
    return (first,) + (weight_bits,) * (n_layers - 1)


def exact_dtype(acc_bits: int, scales: str = "po2") -> torch.dtype:
    """float32 when every hard-quantized value is exact in it, else float64 (always with free
    scales: the code-domain forward multiplies accumulators by integer multipliers).

    Hard-phase values are codes times powers of two; a sum of such terms is exact in a float
    with ``p`` significand bits while its magnitude stays below ``2**p`` LSBs, whatever the
    summation order. float32 (``p = 24``) is twice as fast as float64 for the batch matrix
    products of training and is the float baselines' dtype.
    """
    if scales == "free":  # acc * multiplier (up to 16 more bits) must stay exact
        return torch.float64
    return torch.float32 if acc_bits <= 24 else torch.float64


def pick_dtype(dtype: torch.dtype | None, acc_bits: int, scales: str, who: str) -> torch.dtype:
    """``dtype`` if the hard forward is exact in it (a ValueError naming the limit if not),
    else :func:`exact_dtype`."""
    exact = exact_dtype(acc_bits, scales)
    if dtype is not None and torch.finfo(dtype).eps > torch.finfo(exact).eps:
        raise ValueError(f"{who}: the hard forward is not exact in {dtype} (a layer's "
                         f"worst-case accumulator needs {acc_bits} bits"
                         f"{', free scales' if scales == 'free' else ''}); use {exact}")
    return dtype or exact


class QuantMLP(nn.Module):
    """Quantized MLP.

    Parameters
    ----------
    sizes : tuple of int
        Layer widths, input first.
    weight_bits, act_bits, input_bits : int
        Widths 1..8 of weight codes, activation codes and input codes.
    surrogate : str
        Rounding surrogate of the activations (a key of ``SURROGATES``).
    bias_bits : int
        Signed width the bias codes are clipped to.
    surrogate_kwargs : dict, optional
        Extra arguments to the surrogate class (e.g. ``hard_grad``).
    batchnorm : bool
        BatchNorm after every hidden linear layer, folded before export: into an integer
        threshold (the bias) for 1-bit activations, into the weights and bias before
        quantization otherwise (see :class:`~softfloor.quant.QuantLinear`). Batch statistics
        while the surrogate is soft; frozen running statistics in the hard phase and after.
    per_channel : bool
        Per-output-channel weight scales in the hidden layers (exported as per-channel
        requantization); the last layer keeps one scale, so the class is the argmax of the
        integer logits.
    activation : str
        ``"relu"`` (:class:`~softfloor.quant.QuantReLU`, unsigned codes) or ``"hardtanh"``
        (:class:`~softfloor.quant.QuantHardTanh`, signed codes, 2..8 bits; the composed path).
    scales : str
        ``"po2"``: power-of-two scales, shift-only requantization (the fused step). ``"free"``:
        learned real scales; each requantization ratio ``s_in s_w / s_out`` is an integer
        multiplier and a shift (:func:`~softfloor.quant.free_requant_params`) and the network
        runs on codes (:meth:`forward_free`), exactly the exported integer model (per channel
        with ``per_channel``). Not with PACT or BatchNorm thresholds (:func:`check_free_scales`).
    dtype : torch.dtype, optional
        Parameter and compute dtype; default :meth:`exact_dtype`. A dtype in which the hard
        forward is not exact is refused.
    first_weight_bits : int, optional
        Weight width 1..8 of the first layer (the one on the input codes); default
        ``weight_bits``. ``layer_weight_bits`` holds every layer's.
    binary_act_grad : str
        1-bit activations: the shape of their straight-through gradient, ``"box"`` or
        ``"triangle"`` (:data:`softfloor.quant.BINARY_GRADS`).
    """

    def __init__(self, sizes=SIZES, weight_bits: int = 4, act_bits: int = 4,
                 input_bits: int = 4, surrogate: str = "sigmoid", bias_bits: int = 16,
                 surrogate_kwargs: dict | None = None, batchnorm: bool = False,
                 per_channel: bool = False, activation: str = "relu", scales: str = "po2",
                 dtype: torch.dtype | None = None, first_weight_bits: int | None = None,
                 binary_act_grad: str = "box"):
        super().__init__()
        self.layer_weight_bits = layer_weight_bits(len(sizes) - 1, weight_bits,
                                                   first_weight_bits)
        check_bits("act_bits", act_bits)
        self.input_bits = check_bits("input_bits", input_bits)
        check_surrogate(surrogate)
        self.activation = check_activation(activation)
        self.scales = check_scales(scales)
        free = scales == "free"
        if free:
            check_free_scales(surrogate, bool(batchnorm) and act_bits == 1)
        self.sizes = tuple(int(s) for s in sizes)
        self.weight_bits, self.act_bits, self.bias_bits = weight_bits, act_bits, bias_bits
        self.surrogate_name = surrogate
        self.batchnorm = bool(batchnorm)
        self.per_channel = bool(per_channel)
        n_hidden = len(sizes) - 2
        bn = ("threshold" if act_bits == 1 else "fold") if batchnorm else None
        scale_grad = SURROGATES[surrogate].scale_grad
        self.linears = nn.ModuleList(
            QuantLinear(a, b, wb, bias_bits, scale_grad if scale_grad == "lsq" else "auto",
                        bn if i < n_hidden else None, per_channel and i < n_hidden, free)
            for i, (a, b, wb) in enumerate(zip(sizes, sizes[1:], self.layer_weight_bits)))
        self.acts = nn.ModuleList(
            ACTIVATIONS[activation](act_bits, make_surrogate(surrogate, **(surrogate_kwargs or {})),
                                    free, binary_act_grad)
            for _ in range(n_hidden))
        self.to(pick_dtype(dtype, self.worst_case_acc_bits(), self.scales, "QuantMLP"))

    @classmethod
    def of_layers(cls, linears, acts, input_bits: int) -> "QuantMLP | None":
        """A QuantMLP over existing layers (shared, not copied): the fused whole-network step
        for a chain ``QuantLinear, QuantReLU, ..., QuantLinear`` of a user's network; None when
        the fused step cannot run it exactly (free scales, signed or PACT / learned-sharpness
        activations, per-channel scales on the last layer, accumulators beyond the dtype)."""
        linears, acts = list(linears), list(acts)
        if len(linears) != len(acts) + 1 or not linears:
            return None
        if any(type(a) is not QuantReLU or a.free for a in acts) \
                or any(lin.wq.free for lin in linears) or linears[-1].wq.per_channel \
                or linears[-1].bn_mode is not None or len({lin.weight.dtype for lin in linears}) > 1:
            return None
        m = cls.__new__(cls)
        nn.Module.__init__(m)
        m.linears, m.acts = nn.ModuleList(linears), nn.ModuleList(acts)
        m.layer_weight_bits = tuple(lin.wq.bits for lin in linears)
        m.input_bits = input_bits
        m.activation, m.scales = "relu", "po2"
        m.sizes = (linears[0].in_features,) + tuple(lin.out_features for lin in linears)
        m.weight_bits = linears[-1].wq.bits
        m.act_bits = min((a.bits for a in acts), default=8)
        m.bias_bits = max(lin.bias_bits for lin in linears)
        m.surrogate_name = acts[0].surrogate.name if acts else "ste"
        m.batchnorm = any(lin.bn is not None for lin in linears)
        m.per_channel = any(lin.wq.per_channel for lin in linears)
        if not m.fusable_throughout() or \
                pick_dtype(None, m.worst_case_acc_bits(), "po2", "QuantMLP") != m.dtype and \
                m.dtype != torch.float64:
            return None
        for lin, act in zip(linears, acts):  # the fused step knows threshold BN before 1 bit
            if lin.bn_mode == "threshold" and act.bits != 1:
                return None
        return m

    def worst_case_acc_bits(self) -> int:
        """Bits of the largest accumulator magnitude any layer can reach (in units of its
        LSB): :func:`worst_case_acc_bits` of the layer fan-ins."""
        return worst_case_acc_bits(self.sizes[:-1], self.input_bits, self.act_bits,
                                   self.layer_weight_bits, self.bias_bits)

    def exact_dtype(self) -> torch.dtype:
        """:func:`exact_dtype` of this network."""
        return exact_dtype(self.worst_case_acc_bits(), self.scales)

    @property
    def dtype(self) -> torch.dtype:
        return self.linears[0].weight.dtype

    @property
    def input_exp(self) -> int:
        """Exponent of the input scale: inputs are ``codes * 2**input_exp``."""
        return -self.input_bits

    @property
    def output_exp(self) -> int:
        """Exponent of the output (logit) scale: the last accumulator's."""
        return self.layer_exps()[-1] + self.linears[-1].wq.exp

    def set_surrogate(self, k: float, hard: bool) -> None:
        """Set the sharpness and the hard flag of every activation's surrogate.

        Entering the hard phase also freezes the BatchNorm statistics (running ones from then
        on), so the hard phase trains exactly the exported integer model
        (:func:`softfloor.nn.graph.set_surrogate`).
        """
        from .nn.graph import set_surrogate
        set_surrogate(self, k, hard)

    def layer_exps(self) -> list[int]:
        """Input exponent of every linear layer (the input's, then each activation's)."""
        return [self.input_exp] + [a.exp for a in self.acts]

    @torch.no_grad()
    def calibrate(self, x: torch.Tensor) -> None:
        """Initialise BatchNorm statistics, weight and activation scales from a batch, layer by
        layer (hard quantization; :func:`softfloor.nn.graph.calibrate`)."""
        from .nn.graph import calibrate
        calibrate(self, self.codes_in(x))

    # -- the chain of softfloor.nn layers ------------------------------------------------------

    def softfloor_chain(self) -> list[tuple[str, nn.Module]]:
        """The layers in order: linear, activation, ..., linear."""
        out = []
        for i, lin in enumerate(self.linears):
            out.append((f"linears.{i}", lin))
            if i < len(self.acts):
                out.append((f"acts.{i}", self.acts[i]))
        return out

    def codes_in(self, x: torch.Tensor) -> QuantTensor:
        """Inputs (codes times ``2**input_exp``) as the chain's input."""
        if isinstance(x, QuantTensor):
            return x
        dt = torch.float64 if self.scales == "free" else self.dtype
        return QuantTensor(x.to(dt), exp=self.input_exp, lo=0, hi=(1 << self.input_bits) - 1)

    def input_layer(self, spec):
        """The :class:`~softfloor.nn.layers.QuantInput` of an input spec (checked against the
        network's input: unsigned ``input_bits`` codes of ``sizes[0]`` values, zero point 0)."""
        return input_layer(spec, self.input_bits, self.input_exp, (self.sizes[0],))

    def export_meta(self) -> dict:
        """What the exported model file records about the network (:func:`softfloor.export`)."""
        info = {"arch": "mlp", "surrogate": self.surrogate_name, "per_channel": self.per_channel,
                "activation": self.activation, "scales": self.scales,
                "batchnorm": [lin.bn_mode for lin in self.linears[:len(self.acts)]]}
        return info | scales_meta(self, [lin.wq for lin in self.linears])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Real inputs (codes * 2**input_exp) to real logits (accumulator * its scale).

        One fused autograd op for the whole network (:class:`_QuantMLPFn`) when every layer
        has a closed form (power-of-two scales, per tensor or per channel, surrogates with
        :meth:`~softfloor.surrogates.Surrogate.round_and_grad`, no PACT); else
        :meth:`forward_composed`. Both give the same values and gradients (tested).
        """
        if self.scales == "free" or not self.fusable():
            if "_flat" in self.__dict__:
                raise RuntimeError("QuantMLP: the parameters are flattened for the fused op, "
                                   "which this configuration cannot run; unflatten_parameters()")
            return self.forward_free(x) if self.scales == "free" else self.forward_composed(x)
        x = x.to(self.dtype)
        if torch.is_grad_enabled():
            self._fused_plan()
            flat = self.__dict__.get("_flat")
            if flat is not None:
                return _QuantMLPFn.apply(self, x, flat)
            return _QuantMLPFn.apply(self, x, *self._plan_params)
        return self.fused_forward(x, False)[0]

    def fusable_throughout(self) -> bool:
        """True when every training step runs the fused op, whatever the schedule:
        power-of-two scales (per tensor or per channel), ReLU activations and surrogates with a
        closed form in both phases (not PACT, not learned-sharpness DSQ)."""
        return (self.scales == "po2" and all(type(a) is QuantReLU for a in self.acts)
                and all(a.surrogate.scale_grad != "pact" and not a.surrogate.learns_sharpness
                        for a in self.acts))

    def flatten_parameters(self) -> nn.Parameter | None:
        """Put every parameter into one flat parameter for the optimiser; None if this model
        cannot train that way (see :meth:`fusable_throughout`).

        The module parameters become views into the flat tensor (in :meth:`fused_params`
        order), so an in-place optimiser step on it updates them; the fused op then returns the
        gradient of the flat parameter (one tensor: Adam runs one update instead of one per
        parameter). Element for element the same Adam arithmetic. Undo with
        :meth:`unflatten_parameters` before anything replaces parameter tensors.
        """
        params = self.fused_params()
        if not self.fusable_throughout() or \
                {id(p) for p in params} != {id(p) for p in self.parameters()}:
            return None
        flat = nn.Parameter(torch.cat([p.detach().reshape(-1) for p in params]))
        offset = 0
        for p in params:
            p.data = flat.data[offset:offset + p.numel()].view_as(p)
            offset += p.numel()
        self.__dict__["_flat"] = flat  # not a registered parameter: state_dict is unchanged
        self._plan = None
        return flat

    def unflatten_parameters(self) -> None:
        """Give every parameter its own storage again (the values are kept)."""
        if self.__dict__.pop("_flat", None) is not None:
            for p in self.fused_params():
                p.data = p.data.clone()
            self._plan = None

    def fusable(self) -> bool:
        """True when :meth:`forward` runs the single fused op."""
        return all(a.fusable() for a in self.acts)

    def fused_params(self) -> list[nn.Parameter]:
        """The parameters the fused op differentiates, in the order of its gradients: per layer
        weight, bias, weight log2 scale, then (hidden layers) the activation's log2 scale and,
        with BatchNorm, gamma and beta."""
        out = []
        for i, lin in enumerate(self.linears):
            out += [lin.weight, lin.bias, lin.wq.log2_scale]
            if i < len(self.acts):
                out.append(self.acts[i].log2_scale)
                if lin.bn is not None:
                    out += [lin.bn.gamma, lin.bn.beta]
        return out

    def scale_exps(self) -> tuple[list, list[int]]:
        """Integer exponents of the weight and activation scales, the per-tensor ones computed
        in one op; a per-channel weight quantizer's are its :attr:`WeightQuantizer.exp` (an
        int64 tensor)."""
        ls = [lin.wq.log2_scale for lin in self.linears if not lin.wq.per_channel] \
            + [a.log2_scale for a in self.acts]
        with torch.no_grad():
            e = iter([int(v) for v in round_half_up(torch.stack(ls)).tolist()])
        wexps = [lin.wq.exp if lin.wq.per_channel else next(e) for lin in self.linears]
        return wexps, list(e)

    def _apply(self, fn, *args, **kwargs):
        self.unflatten_parameters()
        self._plan = None  # .double(), .to() etc. may replace the parameter tensors
        return super()._apply(fn, *args, **kwargs)

    def _fused_plan(self) -> list[tuple]:
        """Per layer, what the fused op needs (built once; the modules' parameters are stable)."""
        plan = getattr(self, "_plan", None)
        if plan is None:
            plan = []
            for i, lin in enumerate(self.linears):
                wq = lin.wq
                n_w = lin.weight.shape[1] if wq.per_channel else lin.weight.numel()
                gs_w = lsq_grad_factor(n_w, wq.hi) if wq.scale_grad == "lsq" else 1.0
                layer = (lin, lin.weight, lin.bias, wq.lo, wq.hi, wq.bits == 1, lin.bias_lo,
                         lin.bias_hi, gs_w)
                if i < len(self.acts):
                    act = self.acts[i]
                    gs_a = lsq_grad_factor(lin.out_features, act.hi) \
                        if act.surrogate.scale_grad == "lsq" else 1.0
                    bn = lin.bn if lin.bn_mode == "threshold" else None
                    layer += (act.surrogate, act.hi, gs_a, bn,
                              lin.bn if lin.bn_mode == "fold" else None, act.binary_grad)
                plan.append(layer)
            self._plan = plan
            self._plan_params = self.fused_params()
        return plan

    def fused_forward(self, x: torch.Tensor, need_grad: bool):
        """The forward pass without autograd: ``(logits, saved)`` (``saved`` for
        :meth:`fused_backward`). Same values as :meth:`forward_composed`."""
        wexps, aexps = self.scale_exps()
        in_exp = self.input_exp
        saved = []
        for i, layer in enumerate(self._fused_plan()):
            lin, w, b, lo, hi, one_bit, blo, bhi, gs_w = layer[:9]
            ew = wexps[i]
            if isinstance(ew, torch.Tensor):  # per-channel exponents: vectors of powers of two
                s_w = torch.exp2(ew.to(w.dtype))
                s_acc = torch.exp2((in_exp + ew).to(w.dtype))
            else:
                s_w, s_acc = 2.0 ** ew, 2.0 ** (in_exp + ew)
            fold = layer[13] if len(layer) > 9 else None
            rfold = None
            if fold is not None:
                # BatchNorm folded into the weights and bias before quantization (as
                # QuantLinear.folded): batch statistics of x @ W.T + b while they are on.
                if self.training and fold.use_batch and x.shape[0] > 1:
                    mean, var, zc = fold.batch_stats(F.linear(x, w, b))
                else:
                    mean, var, zc = fold.running_mean, fold.running_var, None
                var_eps = fold.var_eps(var)
                rstd = torch.rsqrt(var_eps)  # fold.rstd(var)
                gf = fold.gamma * rstd  # fold.factor(var)
                w_raw, gcol, bm = w, gf[:, None], b - mean
                w, b = w * gcol, fold.beta + bm * gf
                if need_grad:
                    rfold = (x, w_raw, bm, gf, gcol, rstd, var_eps, zc)
            z, ls = linear_quant_fwd(x, w, b, s_w, s_acc, lo, hi, one_bit, blo, bhi)
            if len(layer) == 9:
                saved.append((ls, s_w, gs_w, None))
                return z, saved
            surrogate, hi_a, gs_a, bn, _, binary_grad = layer[9:15]
            ea = aexps[i]
            s_a = 2.0 ** ea
            u, rbn = z, None
            if bn is not None:
                batch = self.training and bn.use_batch and z.shape[0] > 1
                if batch:
                    mean, var, zc = bn.batch_stats(z)
                else:
                    var, zc = bn.running_var, z - bn.running_mean
                rstd = bn.rstd(var)
                f = bn.gamma * rstd  # bn.factor(var)
                u = zc * f + bn.beta
                if need_grad:
                    rbn = (zc * rstd, f, batch)
            y, ra = act_quant_fwd(u, s_a, surrogate, hi_a, need_grad, binary_grad)
            if bn is not None and surrogate.hard:
                # The exact integer comparison the exported layer makes (the gradient is the
                # surrogate's through BatchNorm, as in forward_composed).
                direction, bound = lin.threshold_bound(in_exp, ea, ew)
                inv_acc = 1.0 / s_acc if isinstance(s_acc, torch.Tensor) \
                    else scalar(1.0 / s_acc, z.dtype)  # powers of two: exact
                fires = z * (direction * inv_acc) >= bound
                y = torch.where(fires, scalar(s_a, z.dtype), scalar(0.0, z.dtype))
            saved.append((ls, s_w, gs_w, (ra, s_a, gs_a, rbn, rfold)))
            x, in_exp = y, ea
        raise AssertionError("unreachable: the last layer returns")

    def fused_backward(self, g: torch.Tensor, saved: list, need_x: bool = False
                       ) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
        """``(dx, grads)``: the gradients of the input (``need_x``, else None) and of
        :meth:`fused_params`, given the logits' gradient ``g``."""
        per_layer = []
        for i in reversed(range(len(saved))):
            ls, s_w, gs_w, rec = saved[i]
            tail = []
            if rec is not None:
                ra, s_a, gs_a, rbn, rfold = rec
                d, dla = act_quant_bwd(g, ra, s_a, gs_a)
                tail.append(dla)
                if rbn is not None:
                    xhat, f, batch = rbn
                    dxh = d * xhat
                    dgamma, dbeta = dxh.sum(0), d.sum(0)
                    tail += [dgamma, dbeta]
                    if batch:  # through the batch mean and variance
                        inv_n = scalar(1.0 / d.shape[0], d.dtype)
                        d = f * (d - dbeta * inv_n - xhat * (dgamma * inv_n))
                    else:
                        d = d * f
                g = d
            dx, dw, db, dlw = linear_quant_bwd(g, ls, s_w, gs_w, i > 0 or need_x)
            if rec is not None and rec[4] is not None:
                dx, dw, db, bn_grads = _unfold_grads(dx, dw, db, rec[4], i > 0 or need_x)
                tail += bn_grads
            per_layer.append([dw, db, dlw] + tail)
            g = dx
        return g, [t for grads in reversed(per_layer) for t in grads]

    def forward_composed(self, x: torch.Tensor) -> torch.Tensor:
        """The forward pass composed from the layers' own ops (autograd through each): the
        chain of :mod:`softfloor.nn` layers."""
        return run_chain(self, self.codes_in(x)).value

    # -- free scales: the network on codes ------------------------------------------------------

    def free_plan(self) -> list[tuple[torch.Tensor, tuple | None]]:
        """Free scales: :func:`free_plan` of the linear layers."""
        return free_plan(self.input_exp, [(lin.wq, act) for lin, act in
                                          zip(self.linears, [*self.acts, None])])

    def forward_free(self, x: torch.Tensor, codes: bool = False, trace: list | None = None
                     ) -> torch.Tensor:
        """Free scales: the forward pass on integer codes, as the exported model computes.

        Per layer ``acc = q @ Wc.T + bc`` (weight codes with straight-through gradients to the
        weights and the free weight scale, bias codes at ``s_acc``: :func:`free_bias`), then
        ``q' = clamp(R(acc * m / 2**shift), lo, hi)`` with the integer ``m`` and ``shift`` of
        :meth:`free_plan` (:func:`free_requant`): in the hard phase ``arith.requantize(acc,
        shift, "half_up", lo, hi, m)`` exactly (float64 holds ``acc * m``). The gradients are
        the real-valued network's, so every log2 scale learns as with power-of-two scales.

        Returns the real logits ``acc * 2**(l_in + l_w)`` of the last layer, or with ``codes``
        its integer accumulators ``acc``. ``trace`` (a list) receives every layer's ``acc`` and
        activation codes (detached), in the order of ``hard_codes(..., intermediates=True)``.
        """
        out = run_chain(self, self.codes_in(x), trace)
        return out.value if codes else out.real()

    @torch.no_grad()
    def integer_layers(self) -> list[IntLayer]:
        """The hard-quantized model as integer layers (what export writes, hard_codes runs)."""
        return integer_layers(self)


def run_chain(model, x: QuantTensor, trace: list | None = None) -> QuantTensor:
    """Run the chain of ``model``'s layers on a QuantTensor; ``trace`` receives every layer's
    output value (detached)."""
    for _, m in model.softfloor_chain():
        x = m(x)
        if trace is not None:
            trace.append(x.value.detach().clone())
    return x


def input_layer(spec, bits: int, exp: int, shape: tuple):
    """A builder network's :class:`~softfloor.nn.layers.QuantInput` from an input spec, checked
    against its input: unsigned ``bits``-bit codes, zero point 0, as many values as ``shape``."""
    import math

    from .nn.layers import QuantInput
    if (spec.bits != bits or spec.signed or spec.zero_point != 0
            or spec.size != math.prod(shape)):
        raise ValueError(
            f"input_spec {spec} does not match the model's input: unsigned "
            f"{bits}-bit codes of {math.prod(shape)} values, zero point 0")
    return QuantInput.from_spec(spec, exp, shape)


def scales_meta(model, wqs) -> dict:
    """The scales for a model file's meta: ``exponents`` (power-of-two), or ``log2_scales``."""
    if model.scales == "free":
        return {"log2_scales": {"input": model.input_exp,
                                "weights": [wq.log2_scale.detach().tolist() for wq in wqs],
                                "activations": [float(a.log2_scale.detach())
                                                for a in model.acts]}}
    e = [wq.exp.tolist() if isinstance(wq.exp, torch.Tensor) else wq.exp for wq in wqs]
    return {"exponents": {"input": model.input_exp, "weights": e,
                          "activations": [a.exp for a in model.acts]}}


def integer_layers(model) -> list[IntLayer]:
    """A builder network's integer ops (:func:`softfloor.nn.exporter.lower` on its unsigned
    ``input_bits`` input codes) as :class:`IntLayer` records: a weighted op with the
    requantization and max-pool after it."""
    import math

    from .intmodel import ChannelRequant, Conv2d, Dense, InputSpec, MaxPool2d, Requant
    from .nn.exporter import lower
    n = math.prod(getattr(model, "input_shape", None) or (model.sizes[0],))
    spec = InputSpec((n,), model.input_bits, False, 2.0 ** model.input_exp)
    out: list[IntLayer] = []
    for op in lower(model, spec, strict=False)[1]:
        if isinstance(op, Dense):
            out.append(IntLayer(torch.from_numpy(op.weight), torch.from_numpy(op.bias),
                                op.weight_bits))
        elif isinstance(op, Conv2d):
            from .cnn import IntConvLayer
            out.append(IntConvLayer(torch.from_numpy(op.weight), torch.from_numpy(op.bias),
                                    op.weight_bits, padding=tuple(op.padding),
                                    pad_value=op.pad_value, stride=op.stride[0]))
        elif isinstance(op, ChannelRequant):
            out[-1].requant = (torch.from_numpy(op.shift), op.rounding, op.lo, op.hi,
                               torch.from_numpy(op.multiplier))
            out[-1].act_bits = op.bits
        elif isinstance(op, Requant):
            out[-1].requant = (op.shift, op.rounding, op.lo, op.hi, op.multiplier)
            out[-1].act_bits = op.bits
        elif isinstance(op, MaxPool2d):
            if getattr(out[-1], "pool", None) is not None:
                raise ValueError("integer_layers: two max-pools after one layer")
            out[-1].pool, out[-1].pool_stride = op.kernel[0], op.stride[0]
    return out


# ----------------------------------------------------------------------------------------------
# Free scales: the shared steps of the networks on codes (QuantMLP and QuantCNN)


@torch.no_grad()
def free_plan(input_exp: int, layers) -> list[tuple[torch.Tensor, tuple | None]]:
    """Free scales: per weighted layer ``(s_acc, requant)``.

    ``layers`` is ``[(weight_quantizer, activation or None), ...]`` in order. ``s_acc =
    2**(l_in + l_w)`` is the accumulator scale (a float64 tensor, the bias codes' scale; per
    channel a vector) and ``requant`` (None without an activation) the ``(shift, multiplier)`` of
    the ratio ``2**(l_in + l_w - l_out)`` (:func:`~softfloor.quant.free_requant_params`; per
    channel int64 tensors); ``l`` the log2 scale parameters, ``l_in`` first ``input_exp``. The one
    source of these numbers for the forward on codes and the integer layers.
    """
    l_in = torch.tensor(float(input_exp), dtype=torch.float64)
    plan = []
    for wq, act in layers:
        l_w = wq.log2_scale.detach()
        rq = None
        if act is not None:
            l_a = act.log2_scale.detach()
            lr = l_in + l_w - l_a
            if lr.dim():  # per channel
                pairs = [free_requant_params(v) for v in lr.tolist()]
                rq = tuple(torch.tensor(c, dtype=torch.int64) for c in zip(*pairs))
            else:
                rq = free_requant_params(float(lr))
        plan.append((torch.exp2(l_in + l_w), rq))
        if act is not None:
            l_in = l_a
    return plan


def _unfold_grads(dx, dwf, dbf, saved, need_x: bool):
    """Gradients through the BatchNorm folding ``wf = w g``, ``bf = beta + (b - mean) g``,
    ``g = gamma rstd``, ``rstd = 1 / sqrt(var + eps)``, given those of ``wf``/``bf``; with batch
    statistics (``zc = z0 - mean``, ``z0 = x @ w.T + b``, saved) also through ``mean``/``var``
    of ``z0``: ``dz0 = (2 dvar zc - dbf g) / n``, ``dvar = -dg g / (2 (var + eps))``. Returns
    ``(dx, dw, db, [dgamma, dbeta])``."""
    x, w, bm, gf, gcol, rstd, var_eps, zc = saved  # bm = b - mean, gcol = gf[:, None]
    dw = dwf * gcol
    dgf = (dwf * w).sum(1) + dbf * bm
    db = dbf * gf
    dgamma = dgf * rstd
    if zc is not None:
        # p = -dz0 = (zc dg g / (var + eps) + dbf g) / n: the same values as the formula (the
        # factor 2 of dvar cancels exactly, a negation is exact) in fewer ops.
        p = (zc * (dgf * gf / var_eps) + db) / scalar(float(x.shape[0]), x.dtype)
        dw = torch.addmm(dw, p.t(), x, alpha=-1)
        db = db - p.sum(0)
        if need_x:
            dx = torch.addmm(dx, p, w, alpha=-1)
    return dx, dw, db, [dgamma, dbf]


class _QuantMLPFn(torch.autograd.Function):
    """The whole :class:`QuantMLP` as one autograd op: forward
    :meth:`QuantMLP.fused_forward`, closed-form backward :meth:`QuantMLP.fused_backward`
    (a fraction of the per-op autograd and Python overhead of the composed layers)."""

    @staticmethod
    def forward(ctx, model, x, *params):
        out, ctx.saved = model.fused_forward(x, True)
        ctx.model = model
        return out

    @staticmethod
    def backward(ctx, g):
        dx, grads = ctx.model.fused_backward(g, ctx.saved, ctx.needs_input_grad[1])
        del ctx.saved, ctx.model
        if len(ctx.needs_input_grad) == 3:  # one flat parameter (QuantMLP.flatten_parameters)
            return None, dx, torch.cat([t.reshape(-1) for t in grads])
        return (None, dx, *grads)


class FloatMLP(nn.Module):
    """The float baseline: the same widths, ReLU between, float32."""

    def __init__(self, sizes=SIZES):
        super().__init__()
        self.sizes = tuple(int(s) for s in sizes)
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.to(torch.float32))
