"""The small digits CNN: quantized convolution, max-pool on codes, flatten, and its float twin.

:class:`QuantCNN` (default ``conv3x3x8 pad 1 -> QuantReLU -> maxpool 2 -> conv3x3x16 pad 1 ->
QuantReLU -> maxpool 2 -> flatten -> dense 10``) on the digits as ``(1, 8, 8)`` images. The
layers reuse the quantizers of :mod:`softfloor.quant`:

* :class:`QuantConv2d`: weights through a :class:`~softfloor.quant.WeightQuantizer` (signed 1..8
  bits, power-of-two scale), bias through :func:`~softfloor.quant.fake_quant_bias` at the
  accumulator scale ``s_in * s_w``; ``forward(x, in_exp)`` returns the real accumulator. Zero
  padding pads the real value 0, which is the code 0 of the unsigned inputs and activations
  (zero point 0): the exported ``pad_value``.
* Max-pool after the activation (``QuantReLU``, or ``QuantHardTanh`` with signed codes): the
  activation codes times a positive scale, so pooling the real values pools the codes, and
  (the quantizer being monotone) it equals quantizing the pooled pre-activations; the integer
  model pools the codes (``maxpool2d``).
* Flatten in C order (PyTorch's and the integer format's), then the dense layer
  (:class:`~softfloor.quant.QuantLinear`) with raw integer logits, as the MLP's last layer.

The input is a batch of flat rows (``(N, 64)``, real values ``codes * 2**-input_bits``, the same
data as the MLP) reshaped to ``(N, 1, 8, 8)``. Like :class:`~softfloor.models.QuantMLP` the
model computes in a dtype in which the hard-quantized forward is exact
(:func:`softfloor.models.exact_dtype`: float32 for the digits CNN, float64 with free scales), and
:meth:`QuantCNN.integer_layers` / :func:`hard_codes` give its integer form (what
:func:`softfloor.export.export` writes and the golden model runs).

BatchNorm (``QuantCNN(batchnorm=True)``) is folded into every convolution before quantization,
as the MLP's ``"fold"`` mode: per output channel ``w * g``, ``beta + (b - mean) * g``, ``g =
gamma / sqrt(var + eps)``, with the statistics over batch, height and width of the float
convolution while batch statistics are on (the soft phase), the running ones afterwards and in
the exported model, which is then a plain quantized convolution. Power-of-two scales only.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import arith
from .models import (ACTIVATIONS, IntLayer, _trace, apply_requant, calibrate_free_act,
                     check_activation, check_free_scales, free_bias, free_log2, free_plan,
                     free_requant, int_dense, layer_weight_bits, pick_dtype,
                     worst_case_acc_bits)
from .quant import (BatchNormStats, QuantLinear, WeightQuantizer, check_bits, check_scales,
                    fake_quant_bias, free_bias_codes, requant_params)
from .surrogates import SURROGATES, check_surrogate, make_surrogate

#: Input image of the digits: 1 channel, 8 x 8 (the 64 pixels in C order).
INPUT_SHAPE = (1, 8, 8)
#: Output channels of the convolutions.
CHANNELS = (8, 16)
N_CLASSES = 10


def _size(v, what: str, lo: int = 1, hi: int = 16) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ValueError(f"{what} must be an integer from {lo} to {hi}, got {v!r}")
    return v


class QuantConv2d(nn.Module):
    """2-D convolution with quantized weights and an integer bias at the accumulator scale.

    ``forward(x, in_exp)`` takes real inputs that are codes times ``2**in_exp`` and returns the
    real accumulator ``2**(in_exp + w_exp) * (conv(x_codes, W_codes) + b_codes)``, zero padded.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel : int
        Square kernel size.
    padding : int
        Zero padding on every side.
    weight_bits : int
        1..8 (codes as :class:`~softfloor.quant.WeightQuantizer`).
    bias_bits : int
        Signed width the bias codes are clipped to.
    scale_grad : str
        Gradient mode of the weight scale (``"auto"`` or ``"lsq"``).
    per_channel : bool
        One power-of-two weight scale per output channel (``wq.exp`` an int64 tensor).
    free_scale : bool
        A free weight scale: the layer runs in :meth:`QuantCNN.forward_free` (codes).
    batchnorm : bool
        BatchNorm folded into the weights and bias before quantization (:meth:`folded`; not
        with a free scale).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 3, padding: int = 1,
                 weight_bits: int = 4, bias_bits: int = 16, scale_grad: str = "auto",
                 per_channel: bool = False, free_scale: bool = False, batchnorm: bool = False):
        super().__init__()
        self.in_channels = _size(in_channels, "in_channels", 1, 4096)
        self.out_channels = _size(out_channels, "out_channels", 1, 4096)
        self.kernel = _size(kernel, "kernel")
        self.padding = _size(padding, "padding", 0)
        self.bias_bits = check_bits("bias_bits", bias_bits, 32)
        self.bias_lo, self.bias_hi = arith.code_range(bias_bits, True)
        conv = nn.Conv2d(in_channels, out_channels, kernel, padding=padding)  # PyTorch's init
        self.weight = nn.Parameter(conv.weight.detach().clone())
        self.bias = nn.Parameter(conv.bias.detach().clone())
        self.wq = WeightQuantizer(weight_bits, scale_grad, out_channels if per_channel else None,
                                  free_scale)
        self.wq.init_scale(self.weight)
        if batchnorm and free_scale:
            raise ValueError("QuantConv2d: BatchNorm with a free weight scale is not implemented; "
                             "use power-of-two scales (scales='po2') or no BatchNorm")
        self.bn = BatchNormStats(out_channels) if batchnorm else None

    @property
    def weight_bits(self) -> int:
        return self.wq.bits

    def folded(self, x: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Real weight and bias before quantization, BatchNorm folded in (as
        :meth:`softfloor.quant.QuantLinear.folded`); without BatchNorm the parameters.

        With ``x`` (a training batch) and batch statistics on, the statistics are those of the
        float convolution of the batch over batch, height and width, per output channel.
        """
        if self.bn is None:
            return self.weight, self.bias
        return self.bn.fold(self.weight, self.bias,
                            None if x is None else lambda: self._float_conv_rows(x))

    @torch.no_grad()
    def reset_bn(self, x: torch.Tensor) -> None:
        """Calibration: the running statistics from the batch ``x``'s float convolution, then
        the weight scale from the folded weights."""
        self.bn.reset_stats(self._float_conv_rows(x))
        self.wq.init_scale(self.folded()[0])

    def _float_conv_rows(self, x: torch.Tensor) -> torch.Tensor:
        """The float convolution of ``x`` (unfolded parameters) as ``(N * H * W, channels)``
        rows: BatchNorm's statistics per channel over batch, height and width."""
        z = F.conv2d(x, self.weight, self.bias, padding=self.padding)
        return z.transpose(0, 1).reshape(self.out_channels, -1).T

    def extra_repr(self) -> str:
        return (f"{self.in_channels}->{self.out_channels}, kernel={self.kernel}, "
                f"padding={self.padding}, bias_bits={self.bias_bits}")

    def acc_exp(self, in_exp: int) -> int | torch.Tensor:
        """Exponent of the accumulator scale: ``in_exp + w_exp`` (per channel: a tensor)."""
        return in_exp + self.wq.exp

    def forward(self, x: torch.Tensor, in_exp: int) -> torch.Tensor:
        if self.wq.free:
            raise RuntimeError("a QuantConv2d with a free scale has no power-of-two input "
                               "exponent: it runs in QuantCNN.forward_free")
        wf, bf = self.folded(x)
        w = self.wq(wf)
        b = fake_quant_bias(bf, self._acc_scale(in_exp), self.bias_lo, self.bias_hi)
        return F.conv2d(x, w, b, padding=self.padding)

    def _acc_scale(self, in_exp: int):
        e = self.acc_exp(in_exp)
        return torch.exp2(e.to(self.bias.dtype)) if isinstance(e, torch.Tensor) else 2.0 ** e

    @torch.no_grad()
    def weight_codes(self) -> torch.Tensor:
        """Integer weight codes (int64), ``(out, in, k, k)`` (BatchNorm folded in)."""
        return self.wq.codes(self.folded()[0])

    def free_bias_codes_float(self, s_acc: torch.Tensor) -> torch.Tensor:
        """Free scales: bias codes at the accumulator scale ``s_acc`` (per channel a vector)."""
        return free_bias_codes(self.bias, s_acc, self.bias_lo, self.bias_hi)

    @torch.no_grad()
    def bias_codes(self, in_exp: int) -> torch.Tensor:
        """Integer bias codes (int64) at the accumulator scale ``2**(in_exp + w_exp)``
        (BatchNorm folded in)."""
        s = self._acc_scale(in_exp)
        b = fake_quant_bias(self.folded()[1], s, self.bias_lo, self.bias_hi) / s
        return b.to(torch.int64)


@dataclass
class IntConvLayer(IntLayer):
    """A convolution of a hard-quantized CNN as exported: ``acc = conv(x, weight) + bias`` on
    ``(C, H, W)`` codes padded with ``pad_value`` (``padding`` = top, left, bottom, right), then
    ``requant`` (as :class:`~softfloor.models.IntLayer`), then a ``pool`` x ``pool`` max-pool
    of the codes (stride ``pool``; None: no pooling)."""
    padding: tuple = (0, 0, 0, 0)
    pad_value: int = 0
    pool: int | None = None


class QuantCNN(nn.Module):
    """Quantized CNN for ``(1, 8, 8)`` digits.

    Parameters
    ----------
    weight_bits, act_bits, input_bits : int
        Widths 1..8 of weight codes, activation codes and input codes.
    surrogate : str
        Rounding surrogate of the activations (a key of ``SURROGATES``).
    bias_bits : int
        Signed width the bias codes are clipped to.
    surrogate_kwargs : dict, optional
        Extra arguments to the surrogate class (e.g. ``hard_grad``).
    channels : tuple of int
        Output channels of the convolutions (each ``conv kernel x kernel, pad kernel // 2 ->
        QuantReLU -> maxpool pool``).
    kernel, pool : int
    input_shape : (C, H, W)
    classes : int
    per_channel : bool
        Per-output-channel weight scales in the convolutions (exported as per-channel
        requantization); the dense layer keeps one scale (the class is the argmax of the codes).
    activation : str
        ``"relu"`` (unsigned codes) or ``"hardtanh"`` (signed codes, 2..8 bits; zero is the
        code 0 either way, so the padding is the same).
    scales : str
        ``"po2"`` or ``"free"`` (learned real scales, requantization by an integer multiplier
        and a shift; the network runs on codes, :meth:`forward_free`; as
        :class:`~softfloor.models.QuantMLP`).
    dtype : torch.dtype, optional
        Parameter and compute dtype; default :func:`softfloor.models.exact_dtype`.
    batchnorm : bool
        BatchNorm folded into every convolution (power-of-two scales only); the statistics
        freeze at the hard phase (:meth:`set_surrogate`), as the MLP's.
    first_weight_bits : int, optional
        Weight width 1..8 of the first convolution; default ``weight_bits``
        (``layer_weight_bits`` holds every layer's, the dense layer last).
    binary_act_grad : str
        1-bit activations: the shape of their straight-through gradient
        (:data:`softfloor.quant.BINARY_GRADS`).
    """

    def __init__(self, weight_bits: int = 4, act_bits: int = 4, input_bits: int = 4,
                 surrogate: str = "sigmoid", bias_bits: int = 16,
                 surrogate_kwargs: dict | None = None, channels=CHANNELS, kernel: int = 3,
                 pool: int = 2, input_shape=INPUT_SHAPE, classes: int = N_CLASSES,
                 per_channel: bool = False, activation: str = "relu", scales: str = "po2",
                 dtype: torch.dtype | None = None, batchnorm: bool = False,
                 first_weight_bits: int | None = None, binary_act_grad: str = "box"):
        super().__init__()
        self.activation = check_activation(activation)
        self.scales = check_scales(scales)
        free = scales == "free"
        if free:
            check_free_scales(surrogate, False)
            if batchnorm:
                raise ValueError("QuantCNN: batchnorm with scales='free' is not implemented; use "
                                 "scales='po2' (BatchNorm folded into the power-of-two layers)")
        self.layer_weight_bits = layer_weight_bits(len(channels) + 1, weight_bits,
                                                   first_weight_bits)
        check_bits("act_bits", act_bits)
        self.input_bits = check_bits("input_bits", input_bits)
        check_surrogate(surrogate)
        self.weight_bits, self.act_bits, self.bias_bits = weight_bits, act_bits, bias_bits
        self.surrogate_name = surrogate
        self.per_channel = bool(per_channel)
        self.channels = tuple(int(c) for c in channels)
        self.input_shape = tuple(int(s) for s in input_shape)
        self.kernel, self.pool = _size(kernel, "kernel"), _size(pool, "pool")
        scale_grad = "lsq" if SURROGATES[surrogate].scale_grad == "lsq" else "auto"
        c, h, w = self.input_shape
        convs = []
        for out, wb in zip(self.channels, self.layer_weight_bits):
            convs.append(QuantConv2d(c, out, kernel, kernel // 2, wb, bias_bits,
                                     scale_grad, self.per_channel, free, bool(batchnorm)))
            h, w = (h + 2 * (kernel // 2) - kernel + 1) // pool, (w + 2 * (kernel // 2)
                                                                  - kernel + 1) // pool
            if h < 1 or w < 1:
                raise ValueError(f"input {self.input_shape} is too small for "
                                 f"{len(self.channels)} conv + {pool}x{pool} pool stages")
            c = out
        self.convs = nn.ModuleList(convs)
        self.flat_features = c * h * w
        self.fc = QuantLinear(self.flat_features, int(classes), self.layer_weight_bits[-1],
                              bias_bits, scale_grad, free_scale=free)
        self.acts = nn.ModuleList(
            ACTIVATIONS[activation](act_bits, make_surrogate(surrogate, **(surrogate_kwargs or {})),
                                    free, binary_act_grad)
            for _ in self.channels)
        self.to(pick_dtype(dtype, self.worst_case_acc_bits(), self.scales, "QuantCNN"))

    def worst_case_acc_bits(self) -> int:
        """:func:`softfloor.models.worst_case_acc_bits` of the convolutions (fan-in
        ``in_channels * kernel**2``) and the dense layer."""
        fan_ins = [c.in_channels * self.kernel ** 2 for c in self.convs] + [self.flat_features]
        return worst_case_acc_bits(fan_ins, self.input_bits, self.act_bits,
                                   self.layer_weight_bits, self.bias_bits)

    @property
    def dtype(self) -> torch.dtype:
        """The parameter and compute dtype: :func:`softfloor.models.exact_dtype`."""
        return self.fc.weight.dtype

    @property
    def input_exp(self) -> int:
        """Exponent of the input scale: inputs are ``codes * 2**input_exp``."""
        return -self.input_bits

    @property
    def output_exp(self) -> int:
        """Exponent of the output (logit) scale: the last accumulator's."""
        return self.layer_exps()[-1] + self.fc.wq.exp

    @property
    def batchnorm(self) -> bool:
        return self.convs[0].bn is not None

    def layer_exps(self) -> list[int]:
        """Input exponent of every weighted layer (the convolutions, then the dense layer)."""
        return [self.input_exp] + [a.exp for a in self.acts]

    def set_surrogate(self, k: float, hard: bool) -> None:
        """Set the sharpness and the hard flag of every activation's surrogate; entering the
        hard phase freezes the BatchNorm statistics (as
        :meth:`softfloor.models.QuantMLP.set_surrogate`)."""
        for act in self.acts:
            act.surrogate.k = k
            act.surrogate.hard = hard
        for conv in self.convs:
            if conv.bn is not None:
                conv.bn.use_batch = not hard

    def _image(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.dtype).reshape((x.shape[0],) + self.input_shape)

    def _stage(self, i: int, x: torch.Tensor, exp: int) -> torch.Tensor:
        return F.max_pool2d(self.acts[i](self.convs[i](x, exp)), self.pool)

    @torch.no_grad()
    def calibrate(self, x: torch.Tensor) -> None:
        """Initialise the activation scales from a batch, stage by stage (hard quantization)."""
        x = self._image(x)
        if self.scales == "free":
            return self._calibrate_free(x)
        exp = self.input_exp
        for i, (conv, act) in enumerate(zip(self.convs, self.acts)):
            if conv.bn is not None:
                conv.reset_bn(x)
            act.init_scale(conv(x, exp))
            hard, act.surrogate.hard = act.surrogate.hard, True
            x = self._stage(i, x, exp)
            act.surrogate.hard = hard
            exp = act.exp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Real inputs (flat rows of codes * 2**input_exp) to real logits."""
        if self.scales == "free":
            return self.forward_free(x)
        x = self._image(x)
        exps = self.layer_exps()
        for i in range(len(self.convs)):
            x = self._stage(i, x, exps[i])
        return self.fc(x.flatten(1), exps[-1])

    # -- free scales: the network on codes ------------------------------------------------------

    def free_plan(self) -> list[tuple[torch.Tensor, tuple | None]]:
        """Free scales: :func:`softfloor.models.free_plan` of the convolutions and the dense
        layer."""
        return free_plan(self.input_exp, [*((c.wq, a) for c, a in zip(self.convs, self.acts)),
                                          (self.fc.wq, None)])

    def forward_free(self, x: torch.Tensor, codes: bool = False, trace: list | None = None
                     ) -> torch.Tensor:
        """Free scales: the forward pass on integer codes (as
        :meth:`softfloor.models.QuantMLP.forward_free`): per stage the convolution of the codes
        (float64, exact), :func:`~softfloor.models.free_requant`, max-pool of the codes; then
        the dense layer. Real logits, or with ``codes`` the integer logits; ``trace`` receives
        the codes after every op, in the order of the exported layers."""
        plan = self.free_plan()
        q = self._image(x) * 2.0 ** -self.input_exp  # the input codes, exactly
        l_in = torch.tensor(float(self.input_exp), dtype=torch.float64)
        for i, (conv, act) in enumerate(zip(self.convs, self.acts)):
            s_acc, rq = plan[i]
            l_acc = l_in + free_log2(conv.wq, conv.weight)
            acc = _trace(trace, F.conv2d(q, conv.wq.codes_float(conv.weight),
                                         free_bias(conv.free_bias_codes_float(s_acc), s_acc,
                                                   l_acc), padding=conv.padding))
            l_a = free_log2(act, acc)
            q = _trace(trace, free_requant(acc, rq, l_acc - l_a, act))
            q = _trace(trace, F.max_pool2d(q, self.pool))
            l_in = l_a
        q = _trace(trace, q.flatten(1))
        s_acc, _ = plan[-1]
        l_acc = l_in + free_log2(self.fc.wq, self.fc.weight)
        bc = free_bias(self.fc.free_bias_codes_float(s_acc, self.fc.bias), s_acc, l_acc)
        acc = _trace(trace, torch.addmm(bc, q, self.fc.wq.codes_float(self.fc.weight).T))
        return acc if codes else acc * torch.exp2(l_acc)

    @torch.no_grad()
    def _calibrate_free(self, q: torch.Tensor) -> None:
        """:meth:`calibrate` for free scales (on codes, stage by stage, hard quantization)."""
        q = q * 2.0 ** -self.input_exp
        l_in = float(self.input_exp)
        for conv, act in zip(self.convs, self.acts):
            s_acc = torch.exp2(l_in + conv.wq.log2_scale.detach())
            acc = F.conv2d(q, conv.wq.codes_float(conv.weight), conv.free_bias_codes_float(s_acc),
                           padding=conv.padding)
            q, l_in = calibrate_free_act(act, acc * s_acc.reshape((-1, 1, 1)))
            q = F.max_pool2d(q, self.pool)

    @torch.no_grad()
    def integer_layers(self, in_zero: int = 0) -> list[IntLayer]:
        """The hard-quantized model as integer layers: one :class:`IntConvLayer` per stage, then
        the dense :class:`~softfloor.models.IntLayer` (on the flattened codes, no requant).

        ``in_zero`` is the input's zero code (the padding of the first convolution).
        """
        if self.scales == "free":
            return self._free_integer_layers(in_zero)
        exps = self.layer_exps()
        out: list[IntLayer] = []
        pad_value = in_zero
        for i, (conv, act) in enumerate(zip(self.convs, self.acts)):
            shift, mult = requant_params(exps[i], conv.wq.exp, act.exp)
            p = conv.padding
            out.append(IntConvLayer(conv.weight_codes(), conv.bias_codes(exps[i]),
                                    conv.weight_bits, (shift, "half_up", act.lo, act.hi, mult),
                                    act.bits, (p, p, p, p), pad_value, self.pool))
            pad_value = 0  # the code of the real 0 after a ReLU / hardtanh activation
        out.append(IntLayer(self.fc.weight_codes(), self.fc.bias_codes(exps[-1]),
                            self.fc.weight_bits))
        return out

    def _free_integer_layers(self, in_zero: int) -> list[IntLayer]:
        plan = self.free_plan()
        out: list[IntLayer] = []
        pad_value = in_zero
        for (conv, act), (s_acc, (shift, mult)) in zip(zip(self.convs, self.acts), plan):
            p = conv.padding
            out.append(IntConvLayer(conv.weight_codes(),
                                    conv.free_bias_codes_float(s_acc).to(torch.int64),
                                    conv.weight_bits, (shift, "half_up", act.lo, act.hi, mult),
                                    act.bits, (p, p, p, p), pad_value, self.pool))
            pad_value = 0
        s_acc, _ = plan[-1]
        out.append(IntLayer(self.fc.weight_codes(),
                            self.fc.free_bias_codes_float(s_acc, self.fc.bias).to(torch.int64),
                            self.fc.weight_bits))
        return out


# ----------------------------------------------------------------------------------------------
# The integer forward (torch int64), an implementation independent of the golden model's


def int_conv2d(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, padding, pad_value: int
               ) -> torch.Tensor:
    """Integer convolution, stride 1: ``(N, C, H, W)`` int64 codes to int64 accumulators."""
    pt, pl, pb, pr = padding
    x = F.pad(x, (pl, pr, pt, pb), value=pad_value)
    o, c, kh, kw = w.shape
    win = x.unfold(2, kh, 1).unfold(3, kw, 1)                   # (N, C, OH, OW, kh, kw)
    n, _, oh, ow = win.shape[:4]
    cols = win.permute(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, c * kh * kw)
    acc = cols @ w.reshape(o, -1).T + b
    return acc.reshape(n, oh, ow, o).permute(0, 3, 1, 2).contiguous()


def int_maxpool2d(x: torch.Tensor, k: int) -> torch.Tensor:
    """Max over ``k x k`` windows with stride ``k`` (incomplete windows dropped)."""
    return x.unfold(2, k, k).unfold(3, k, k).amax(dim=(-2, -1))


def hard_codes(model: QuantCNN, codes, intermediates: bool = False):
    """Integer input codes ``(N, 64)`` through the hard-quantized CNN with integer arithmetic.

    Per stage ``conv -> requant -> maxpool`` on int64 codes (the rules of
    :mod:`softfloor.arith`), then flatten and the dense layer; ``intermediates`` also returns
    the codes after every integer op, in the order and shapes of the exported model's layers
    (``golden.run(..., intermediates=True)``).
    """
    x = torch.as_tensor(np.asarray(codes), dtype=torch.int64)
    x = x.reshape((x.shape[0],) + model.input_shape)
    per_layer = []
    for layer in model.integer_layers():
        if isinstance(layer, IntConvLayer):
            x = int_conv2d(x, layer.weight, layer.bias, layer.padding, layer.pad_value)
            per_layer.append(x.numpy().copy())
            x = apply_requant(x, layer.requant)
            per_layer.append(x.numpy().copy())
            if layer.pool:
                x = int_maxpool2d(x, layer.pool)
                per_layer.append(x.numpy().copy())
            continue
        if x.dim() > 2:
            x = x.flatten(1)
            per_layer.append(x.numpy().copy())
        x = int_dense(x, layer, per_layer)
    out = x.numpy().astype(np.int64)
    return (out, per_layer) if intermediates else out


class FloatCNN(nn.Module):
    """The float baseline: the same convolutions, ReLU and max-pools, float32."""

    def __init__(self, channels=CHANNELS, kernel: int = 3, pool: int = 2,
                 input_shape=INPUT_SHAPE, classes: int = N_CLASSES):
        super().__init__()
        self.channels = tuple(int(c) for c in channels)
        self.input_shape = tuple(int(s) for s in input_shape)
        c, h, w = self.input_shape
        layers: list[nn.Module] = []
        for out in self.channels:
            layers += [nn.Conv2d(c, out, kernel, padding=kernel // 2), nn.ReLU(),
                       nn.MaxPool2d(pool)]
            c, h, w = out, h // pool, w // pool
        layers += [nn.Flatten(), nn.Linear(c * h * w, classes)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.float32)
        return self.net(x.reshape((x.shape[0],) + self.input_shape))
