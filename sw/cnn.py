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
:func:`softfloor.export` writes and the golden model runs).

BatchNorm (``QuantCNN(batchnorm=True)``) is folded into every convolution before quantization,
as the MLP's ``"fold"`` mode: per output channel ``w * g``, ``beta + (b - mean) * g``, ``g =
gamma / sqrt(var + eps)`` with the running statistics (the hard phase and the exported model,
a plain quantized convolution). While batch statistics are on (the soft phase) the layer
convolves with ``Q(w g) / g`` and normalises that output with its batch statistics over batch,
height and width (one convolution, PyTorch's QAT ``ConvBn2d`` scheme), which also update the
running ones. Power-of-two scales only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import arith
from .models import (ACTIVATIONS, IntLayer, apply_requant, check_activation, check_free_scales,
                     free_plan, input_layer, int_dense, integer_layers, layer_weight_bits,
                     pick_dtype, run_chain, scales_meta, worst_case_acc_bits)
from .nn.graph import calibrate, set_surrogate
from .nn.layers import Flatten, QuantMaxPool2d
from .intmodel import Conv2d
from .nn.tensor import IntState, QuantTensor
from .quant import (_NEEDS_CODES, BatchNormStats, QuantLinear, ThresholdBN, check_input,
                    WeightQuantizer, _exp_log2, accumulate, check_bits, check_bn_mode,
                    check_scale_kind, check_scales, fake_quant_bias, free_bias,
                    free_bias_codes, free_log2, weighted_to_int, weight_scale_grad)
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


class QuantConv2d(ThresholdBN, nn.Module):
    """2-D convolution with quantized weights and an integer bias at the accumulator scale.

    On its own (a :class:`~softfloor.nn.tensor.QuantTensor` of ``(N, C, H, W)`` codes in):
    returns the accumulator ``2**(in_exp + w_exp) * (conv(x_codes, W_codes) + b_codes)`` as a
    QuantTensor, padded with the code ``pad_value``. ``forward(x, in_exp)`` with a plain tensor
    of real inputs (codes times ``2**in_exp``) returns the real accumulator.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel : int
        Square kernel size.
    padding : int
        Padding on every side, filled with the input code ``pad_value``.
    weight_bits : int
        1..8 (codes as :class:`~softfloor.quant.WeightQuantizer`).
    bias_bits : int
        Signed width the bias codes are clipped to.
    scale_grad : str
        Gradient mode of the weight scale (``"auto"`` or ``"lsq"``).
    per_channel : bool
        One weight scale per output channel (``wq.exp`` an int64 tensor).
    free_scale : bool
        A free weight scale (also ``scales="free"``): the layer computes on codes.
    batchnorm : bool or str
        BatchNorm after the convolution: ``True``/``"fold"`` folded into the weights and bias
        before quantization (:meth:`folded`; not with a free scale), ``"threshold"`` applied to
        the accumulator and turned into an integer threshold by the 1-bit activation after it.
    stride : int
        Step of the window in both directions.
    pad_value : int
        The input code the padding holds (0: the real 0 of unsigned and signed codes alike).
    surrogate : str, optional
        The weight scale takes this surrogate's scale gradient (``"lsq"``).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 3, padding: int = 1,
                 weight_bits: int = 4, bias_bits: int = 16, scale_grad: str = "auto",
                 per_channel: bool = False, free_scale: bool = False,
                 batchnorm: bool | str = False, *, stride: int = 1, pad_value: int = 0,
                 scales: str | None = None, surrogate: str | None = None):
        super().__init__()
        self.in_channels = _size(in_channels, "in_channels", 1, 4096)
        self.out_channels = _size(out_channels, "out_channels", 1, 4096)
        self.kernel = _size(kernel, "kernel")
        self.padding = _size(padding, "padding", 0)
        self.stride = _size(stride, "stride")
        if isinstance(pad_value, bool) or not isinstance(pad_value, int):
            raise ValueError(f"pad_value must be an integer code, got {pad_value!r}")
        self.pad_value = pad_value
        self.bias_bits = check_bits("bias_bits", bias_bits, 32)
        self.bias_lo, self.bias_hi = arith.code_range(bias_bits, True)
        conv = nn.Conv2d(in_channels, out_channels, kernel, padding=padding)  # PyTorch's init
        self.weight = nn.Parameter(conv.weight.detach().clone())
        self.bias = nn.Parameter(conv.bias.detach().clone())
        free = check_scale_kind(scales, free_scale)
        self.wq = WeightQuantizer(weight_bits, weight_scale_grad(surrogate, scale_grad),
                                  out_channels if per_channel else None, free)
        self.wq.init_scale(self.weight)
        self.bn_mode = check_bn_mode(batchnorm or None)
        if self.bn_mode and free:
            raise ValueError("QuantConv2d: BatchNorm with a free weight scale is not implemented; "
                             "use power-of-two scales (scales='po2') or no BatchNorm")
        self.bn = BatchNormStats(out_channels) if self.bn_mode else None

    @property
    def weight_bits(self) -> int:
        return self.wq.bits

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Real weight and bias before quantization, BatchNorm folded in with its running
        statistics (``"fold"``, as :meth:`softfloor.quant.QuantLinear.folded`); otherwise the
        parameters. While training with batch statistics the layer runs
        :meth:`_forward_batch_stats` instead."""
        if self.bn_mode != "fold":
            return self.weight, self.bias
        return self.bn.fold(self.weight, self.bias)

    @torch.no_grad()
    def reset_bn(self, x: torch.Tensor) -> None:
        """Calibration: the running statistics from the batch ``x``'s float convolution, then
        the weight scale from the folded weights."""
        self.bn.reset_stats(self._float_conv_rows(x))
        self.wq.init_scale(self.folded()[0])

    def _pad(self, x: torch.Tensor, scale) -> tuple[torch.Tensor, int]:
        """``x`` padded with the real value of the code ``pad_value`` (``scale`` its scale) when
        that is not 0, and the padding left for ``conv2d`` (its zero padding otherwise)."""
        p = self.padding
        if not p or not self.pad_value:
            return x, p
        return F.pad(x, (p, p, p, p), value=float(self.pad_value * scale)), 0

    def _float_conv_rows(self, x: torch.Tensor) -> torch.Tensor:
        """The float convolution of ``x`` (unfolded parameters) as ``(N * H * W, channels)``
        rows: BatchNorm's statistics per channel over batch, height and width."""
        x = x.to(self.weight.dtype)
        z = F.conv2d(x, self.weight, self.bias, stride=self.stride, padding=self.padding)
        return z.transpose(0, 1).reshape(self.out_channels, -1).T

    def extra_repr(self) -> str:
        extra = (f", stride={self.stride}" if self.stride != 1 else "") \
            + (f", pad_value={self.pad_value}" if self.pad_value else "") \
            + (f", batchnorm={self.bn_mode}" if self.bn_mode else "")
        return (f"{self.in_channels}->{self.out_channels}, kernel={self.kernel}, "
                f"padding={self.padding}, bias_bits={self.bias_bits}{extra}")

    def acc_exp(self, in_exp: int) -> int | torch.Tensor:
        """Exponent of the accumulator scale: ``in_exp + w_exp`` (per channel: a tensor)."""
        return in_exp + self.wq.exp

    def forward(self, x: torch.Tensor | QuantTensor, in_exp: int | None = None):
        if isinstance(x, QuantTensor):
            return self.forward_quant(x)
        if in_exp is None:
            raise TypeError(_NEEDS_CODES.format(type(self).__name__))
        if self.wq.free:
            raise RuntimeError("a QuantConv2d with a free scale has no power-of-two input "
                               "exponent: it runs in QuantCNN.forward_free")
        if self.bn_mode == "fold" and self.training and self.bn.use_batch:
            return self._forward_batch_stats(x, in_exp)
        wf, bf = self.folded()
        dt = x.dtype
        w = self.wq(wf).to(dt)
        b = fake_quant_bias(bf, self._acc_scale(in_exp), self.bias_lo, self.bias_hi).to(dt)
        x, p = self._pad(x, 2.0 ** in_exp)
        return F.conv2d(x, w, b, stride=self.stride, padding=p)

    def _forward_batch_stats(self, x: torch.Tensor, in_exp: int) -> torch.Tensor:
        """The soft phase of folded BatchNorm in one convolution (the scheme of PyTorch's QAT
        ``ConvBn2d``): the weights folded with the *running* statistics, quantized and unfolded
        again (``Q(w g) / g``), their convolution (the float one, but for the weights'
        quantization) normalised with its own batch statistics, which also update the running
        ones. The batch statistics of a second, float convolution (:meth:`folded`) would cost as
        much as the layer itself; the hard phase and the export fold the running statistics as
        before."""
        bn, dt = self.bn, x.dtype
        g = bn.factor(bn.running_var).reshape(-1, 1, 1, 1)
        w = (self.wq(self.weight * g) / g).to(dt)
        x, p = self._pad(x, 2.0 ** in_exp)
        z = F.conv2d(x, w, None, stride=self.stride, padding=p)
        out, mean, rstd = torch.ops.aten.native_batch_norm(
            z, bn.gamma.to(dt), bn.beta.to(dt), None, None, True, 0.0, bn.eps)
        with torch.no_grad():  # the running statistics are those of the convolution + bias
            var = rstd.double().pow(-2).sub_(bn.eps)
            torch._foreach_lerp_([bn.running_mean, bn.running_var],
                                 [(mean + self.bias).to(bn.running_mean.dtype),
                                  var.to(bn.running_var.dtype)], bn.momentum)
        return out

    def _acc_scale(self, in_exp: int):
        e = self.acc_exp(in_exp)
        return torch.exp2(e.to(self.bias.dtype)) if isinstance(e, torch.Tensor) else 2.0 ** e

    def forward_quant(self, x: QuantTensor) -> QuantTensor:
        """The accumulator of a QuantTensor input (as
        :meth:`softfloor.quant.QuantLinear.forward_quant`)."""
        check_input(self, x.bn, x.value.shape, 4, self.in_channels, self.out_channels,
                    f"it needs (N, {self.in_channels}, H, W)")
        if not x.lo <= self.pad_value <= x.hi and self.padding:
            raise ValueError(f"{type(self).__name__}: pad_value {self.pad_value} is not a code "
                             f"of its input [{x.lo}, {x.hi}]")
        return accumulate(self, x, self.in_channels * self.kernel ** 2)

    def _forward_free(self, x: QuantTensor, bound: int) -> QuantTensor:
        q = x.codes().to(torch.float64)
        l_in = x.log2 if x.free else _exp_log2(x.exp)
        l_acc = l_in + free_log2(self.wq, self.weight)
        s_acc = torch.exp2(l_in.detach() + self.wq.log2_scale.detach())
        bc = free_bias(self.free_bias_codes_float(s_acc), s_acc, l_acc).to(q.dtype)
        q, p = self._pad(q, 1.0)
        acc = F.conv2d(q, self.wq.codes_float(self.weight).to(q.dtype), bc, stride=self.stride,
                       padding=p)
        return QuantTensor(acc, log2=l_acc, lo=-bound, hi=bound, kind="acc")

    @torch.no_grad()
    def calibrate(self, x: QuantTensor) -> QuantTensor:
        """Calibration on a batch: with BatchNorm folded, the statistics and the weight scale
        (:meth:`reset_bn`); then the layer's output."""
        if self.bn_mode == "fold":
            self.reset_bn(x.real())
        return self(x)

    def to_int(self, st: IntState) -> tuple[list, IntState]:
        """A ``conv2d`` op (weight and bias codes, stride, padding with ``pad_value``; widths
        from the actual integers), pending the activation with a BatchNorm threshold."""
        check_input(self, st.pending, st.shape, 3, self.in_channels, self.out_channels,
                    f"it needs ({self.in_channels}, H, W)", batched=False)
        c, h, w = st.shape
        k, s, p = self.kernel, self.stride, self.padding
        if h + 2 * p < k or w + 2 * p < k:
            raise ValueError(f"{type(self).__name__}: kernel {k} larger than its padded input "
                             f"{h + 2 * p}x{w + 2 * p}")
        out = (self.out_channels, (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1)
        pad = int(self.pad_value) if p else int(min(max(0, st.lo), st.hi))  # no padding: unused
        if p:  # a padded tap holds the pad code: the accumulator bound covers it
            st.lo, st.hi = min(st.lo, pad), max(st.hi, pad)
        return weighted_to_int(
            self, st, "conv", self.weight_codes(),
            lambda name, wc, bc, bb, ab: Conv2d(name, wc, bc, self.weight_bits, bb, ab, (s, s),
                                                (p, p, p, p), pad), out)

    @torch.no_grad()
    def weight_codes(self) -> torch.Tensor:
        """Integer weight codes (int64), ``(out, in, k, k)`` (BatchNorm folded in)."""
        return self.wq.codes(self.folded()[0])

    def free_bias_codes_float(self, s_acc: torch.Tensor, bias: torch.Tensor | None = None
                              ) -> torch.Tensor:
        """Free scales: bias codes at the accumulator scale ``s_acc`` (per channel a vector)."""
        return free_bias_codes(self.bias if bias is None else bias, s_acc, self.bias_lo,
                               self.bias_hi)

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
    ``(C, H, W)`` codes padded with ``pad_value`` (``padding`` = top, left, bottom, right),
    moving by ``stride``, then ``requant`` (as :class:`~softfloor.models.IntLayer`), then a
    ``pool`` x ``pool`` max-pool of the codes (stride ``pool_stride``, default ``pool``; None:
    no pooling)."""
    padding: tuple = (0, 0, 0, 0)
    pad_value: int = 0
    pool: int | None = None
    stride: int = 1
    pool_stride: int | None = None


#: The digits CNN as a layer list (:func:`layer_list`): conv 3x3 pad 1 -> pool 2, twice, dense.
def layer_list(channels=CHANNELS, kernel: int = 3, pool: int = 2, classes: int = N_CLASSES
               ) -> tuple:
    """The stages of the classic CNN shape as layer tuples: per entry of ``channels`` a
    ``("conv", out, kernel, 1, kernel // 2)`` and a ``("pool", pool, pool)``, then
    ``("dense", classes)`` (see :class:`QuantCNN`)."""
    out = []
    for c in channels:
        out += [("conv", int(c), int(kernel), 1, int(kernel) // 2), ("pool", int(pool), int(pool))]
    return tuple(out) + (("dense", int(classes)),)


def check_layer_list(layers, input_shape) -> list[tuple]:
    """Validate layer tuples against ``input_shape``; returns the shape after each. A pool
    follows a convolution (at most one per convolution), dense layers come last, the last
    layer is dense."""
    shapes, shape, prev = [], tuple(input_shape), None
    if not layers or layers[-1][0] != "dense":
        raise ValueError("a CNN's layers end with a dense layer (the classes)")
    for t in layers:
        kind = t[0]
        if kind == "conv":
            if prev == "dense":
                raise ValueError("a convolution after a dense layer; dense layers come last")
            _, out, k, st, p = t
            c, h, w = shape
            _size(out, "conv channels", 1, 4096)
            _size(k, "kernel")
            _size(st, "stride")
            _size(p, "padding", 0)
            oh, ow = (h + 2 * p - k) // st + 1, (w + 2 * p - k) // st + 1
            if h + 2 * p < k or w + 2 * p < k:
                raise ValueError(f"input {tuple(input_shape)} is too small for the layers "
                                 f"(a {k}x{k} kernel on {h}x{w} with padding {p})")
            shape = (out, oh, ow)
        elif kind == "pool":
            if prev != "conv":
                raise ValueError("a max-pool must follow a convolution (one per convolution)")
            _, k, st = t
            c, h, w = shape
            if h < k or w < k:
                raise ValueError(f"input {tuple(input_shape)} is too small for the layers "
                                 f"(a {k}x{k} pool on {h}x{w})")
            shape = (c, (h - k) // st + 1, (w - k) // st + 1)
        elif kind == "dense":
            shape = (t[1],)
        else:
            raise ValueError(f"unknown layer kind {kind!r}")
        shapes.append(shape)
        prev = kind
    return shapes


class QuantCNN(nn.Module):
    """Quantized CNN, by default for ``(1, 8, 8)`` digits.

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
        Per-output-channel weight scales in the convolutions and hidden dense layers (exported
        as per-channel requantization); the last layer keeps one scale (the class is the
        argmax of the codes).
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
        BatchNorm folded into every convolution and hidden dense layer (power-of-two scales
        only); the statistics freeze at the hard phase (:meth:`set_surrogate`), as the MLP's.
    first_weight_bits : int, optional
        Weight width 1..8 of the first layer; default ``weight_bits`` (``layer_weight_bits``
        holds every layer's, the last dense layer last).
    binary_act_grad : str
        1-bit activations: the shape of their straight-through gradient
        (:data:`softfloor.quant.BINARY_GRADS`).
    layers : tuple, optional
        The layers instead of ``channels``/``kernel``/``pool``/``classes``: ``("conv", out,
        kernel, stride, padding)``, ``("pool", kernel, stride)`` (after a convolution),
        ``("dense", out)``; every convolution and every dense layer but the last has an
        activation; a flatten comes before the first dense layer (:func:`layer_list`,
        :func:`softfloor.zoo.parse_arch`).
    """

    def __init__(self, weight_bits: int = 4, act_bits: int = 4, input_bits: int = 4,
                 surrogate: str = "sigmoid", bias_bits: int = 16,
                 surrogate_kwargs: dict | None = None, channels=CHANNELS, kernel: int = 3,
                 pool: int = 2, input_shape=INPUT_SHAPE, classes: int = N_CLASSES,
                 per_channel: bool = False, activation: str = "relu", scales: str = "po2",
                 dtype: torch.dtype | None = None, batchnorm: bool = False,
                 first_weight_bits: int | None = None, binary_act_grad: str = "box",
                 layers=None):
        super().__init__()
        self.activation = check_activation(activation)
        self.scales = check_scales(scales)
        free = scales == "free"
        if free:
            check_free_scales(surrogate, False)
            if batchnorm:
                raise ValueError("QuantCNN: batchnorm with scales='free' is not implemented; use "
                                 "scales='po2' (BatchNorm folded into the power-of-two layers)")
        check_bits("act_bits", act_bits)
        self.input_bits = check_bits("input_bits", input_bits)
        check_surrogate(surrogate)
        self.weight_bits, self.act_bits, self.bias_bits = weight_bits, act_bits, bias_bits
        self.surrogate_name = surrogate
        self.per_channel = bool(per_channel)
        self.input_shape = tuple(int(s) for s in input_shape)
        self.kernel, self.pool = _size(kernel, "kernel"), _size(pool, "pool")
        self.layers = tuple(tuple(t) for t in (layers or layer_list(channels, kernel, pool,
                                                                    classes)))
        shapes = check_layer_list(self.layers, self.input_shape)
        self.channels = tuple(t[1] for t in self.layers if t[0] == "conv")
        n_weighted = sum(t[0] != "pool" for t in self.layers)
        self.layer_weight_bits = layer_weight_bits(n_weighted, weight_bits, first_weight_bits)
        scale_grad = "lsq" if SURROGATES[surrogate].scale_grad == "lsq" else "auto"
        kw = surrogate_kwargs or {}
        convs, dense, acts, pools = [], [], [], []
        shape, wi = self.input_shape, 0
        last = len(self.layers) - 1
        for idx, (t, out_shape) in enumerate(zip(self.layers, shapes)):
            if t[0] == "pool":
                pools.append(QuantMaxPool2d(t[1], t[2]))
            elif idx == last:
                self.flat_features = math.prod(shape)
                self.fc = QuantLinear(self.flat_features, t[1], self.layer_weight_bits[wi],
                                      bias_bits, scale_grad, free_scale=free)
            else:
                if t[0] == "conv":
                    convs.append(QuantConv2d(shape[0], t[1], t[2], t[4], self.layer_weight_bits[wi],
                                             bias_bits, scale_grad, self.per_channel, free,
                                             bool(batchnorm), stride=t[3]))
                else:
                    dense.append(QuantLinear(math.prod(shape), t[1], self.layer_weight_bits[wi],
                                             bias_bits, scale_grad, "fold" if batchnorm else None,
                                             self.per_channel, free))
                acts.append(ACTIVATIONS[activation](act_bits, make_surrogate(surrogate, **kw),
                                                    free, binary_act_grad))
                wi += 1
            shape = out_shape
        self.convs = nn.ModuleList(convs)
        self.acts = nn.ModuleList(acts)
        if dense:
            self.dense = nn.ModuleList(dense)
        self.pools = pools            # no parameters: not registered (the state_dict is the same)
        self.flatten = Flatten()
        self.to(pick_dtype(dtype, self.worst_case_acc_bits(), self.scales, "QuantCNN"))

    def weighted(self) -> list[nn.Module]:
        """The weighted layers in order: convolutions, hidden dense layers, the last one."""
        return [*self.convs, *getattr(self, "dense", ()), self.fc]

    def softfloor_chain(self) -> list[tuple[str, nn.Module]]:
        """The layers in order (convolution, activation, max-pool, ..., flatten, dense)."""
        convs, dense = iter(enumerate(self.convs)), iter(enumerate(getattr(self, "dense", ())))
        acts, pools = iter(enumerate(self.acts)), iter(enumerate(self.pools))
        out, flat, last = [], False, len(self.layers) - 1
        for idx, t in enumerate(self.layers):
            if t[0] == "pool":
                k, p = next(pools)
                out.append((f"pools.{k}", p))
                continue
            if t[0] == "dense" and not flat:
                out.append(("flatten", self.flatten))
                flat = True
            if idx == last:
                out.append(("fc", self.fc))
                continue
            k, m = next(convs) if t[0] == "conv" else next(dense)
            out.append((f"{'convs' if t[0] == 'conv' else 'dense'}.{k}", m))
            a, act = next(acts)
            out.append((f"acts.{a}", act))
        return out

    def worst_case_acc_bits(self) -> int:
        """:func:`softfloor.models.worst_case_acc_bits` of the weighted layers (a
        convolution's fan-in ``in_channels * kernel**2``)."""
        fan_ins = [m.in_channels * m.kernel ** 2 if isinstance(m, QuantConv2d) else m.in_features
                   for m in self.weighted()]
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
        return any(getattr(m, "bn", None) is not None for m in self.weighted())

    def layer_exps(self) -> list[int]:
        """Input exponent of every weighted layer (the convolutions, then the dense layers)."""
        return [self.input_exp] + [a.exp for a in self.acts]

    def set_surrogate(self, k: float, hard: bool) -> None:
        """Set the sharpness and the hard flag of every activation's surrogate; entering the
        hard phase freezes the BatchNorm statistics (as
        :meth:`softfloor.models.QuantMLP.set_surrogate`)."""
        set_surrogate(self, k, hard)

    def codes_in(self, x: torch.Tensor) -> QuantTensor:
        """Flat rows of input codes times ``2**input_exp`` as the chain's ``(N, C, H, W)``
        input."""
        if isinstance(x, QuantTensor):
            return x
        dt = torch.float64 if self.scales == "free" else self.dtype
        return QuantTensor(x.to(dt).reshape((x.shape[0],) + self.input_shape),
                           exp=self.input_exp, lo=0, hi=(1 << self.input_bits) - 1)

    def _image(self, x: torch.Tensor) -> torch.Tensor:
        return self.codes_in(x).value

    @torch.no_grad()
    def calibrate(self, x: torch.Tensor) -> None:
        """Initialise the scales (and BatchNorm statistics) from a batch, layer by layer (hard
        quantization; :func:`softfloor.nn.graph.calibrate`)."""
        calibrate(self, self.codes_in(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Real inputs (flat rows of codes * 2**input_exp) to real logits."""
        return run_chain(self, self.codes_in(x)).real()

    def input_layer(self, spec):
        """The :class:`~softfloor.nn.layers.QuantInput` of a flat input spec, as images."""
        return input_layer(spec, self.input_bits, self.input_exp, self.input_shape)

    def export_meta(self) -> dict:
        """What the exported model file records about the network."""
        return {"arch": "cnn", "surrogate": self.surrogate_name,
                "per_channel": self.per_channel, "activation": self.activation,
                "scales": self.scales, "batchnorm": [None] * len(self.acts)} \
            | scales_meta(self, [m.wq for m in self.weighted()])

    # -- free scales: the network on codes ------------------------------------------------------

    def free_plan(self) -> list[tuple[torch.Tensor, tuple | None]]:
        """Free scales: :func:`softfloor.models.free_plan` of the weighted layers."""
        return free_plan(self.input_exp, [*((m.wq, a) for m, a in zip(self.weighted(),
                                                                     self.acts)),
                                          (self.fc.wq, None)])

    def forward_free(self, x: torch.Tensor, codes: bool = False, trace: list | None = None
                     ) -> torch.Tensor:
        """Free scales: the forward pass on integer codes (as
        :meth:`softfloor.models.QuantMLP.forward_free`): per stage the convolution of the codes
        (float64, exact), :func:`~softfloor.quant.free_requant`, max-pool of the codes; then
        the dense layers. Real logits, or with ``codes`` the integer logits; ``trace`` receives
        the codes after every op, in the order of the exported layers."""
        out = run_chain(self, self.codes_in(x), trace)
        return out.value if codes else out.real()

    @torch.no_grad()
    def integer_layers(self, in_zero: int = 0) -> list[IntLayer]:
        """The hard-quantized model as integer layers: an :class:`IntConvLayer` per convolution
        (with its requantization and max-pool), then the dense
        :class:`~softfloor.models.IntLayer` records (on the flattened codes)."""
        return integer_layers(self)


# ----------------------------------------------------------------------------------------------
# The integer forward (torch int64), an implementation independent of the golden model's


def int_conv2d(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, padding, pad_value: int,
               stride: int = 1) -> torch.Tensor:
    """Integer convolution: ``(N, C, H, W)`` int64 codes to int64 accumulators."""
    pt, pl, pb, pr = padding
    x = F.pad(x, (pl, pr, pt, pb), value=pad_value)
    o, c, kh, kw = w.shape
    win = x.unfold(2, kh, stride).unfold(3, kw, stride)          # (N, C, OH, OW, kh, kw)
    n, _, oh, ow = win.shape[:4]
    cols = win.permute(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, c * kh * kw)
    acc = cols @ w.reshape(o, -1).T + b
    return acc.reshape(n, oh, ow, o).permute(0, 3, 1, 2).contiguous()


def int_maxpool2d(x: torch.Tensor, k: int, stride: int | None = None) -> torch.Tensor:
    """Max over ``k x k`` windows moving by ``stride`` (default ``k``; incomplete windows
    dropped)."""
    s = k if stride is None else stride
    return x.unfold(2, k, s).unfold(3, k, s).amax(dim=(-2, -1))


def hard_codes(model: QuantCNN, codes, intermediates: bool = False):
    """Integer input codes ``(N, C*H*W)`` through the hard-quantized CNN with integer
    arithmetic.

    Per stage ``conv -> requant -> maxpool`` on int64 codes (the rules of
    :mod:`softfloor.arith`), then flatten and the dense layers; ``intermediates`` also returns
    the codes after every integer op, in the order and shapes of the exported model's layers
    (``golden.run(..., intermediates=True)``).
    """
    x = torch.as_tensor(np.asarray(codes), dtype=torch.int64)
    x = x.reshape((x.shape[0],) + model.input_shape)
    per_layer = []
    for layer in model.integer_layers():
        if isinstance(layer, IntConvLayer):
            x = int_conv2d(x, layer.weight, layer.bias, layer.padding, layer.pad_value,
                           layer.stride)
            per_layer.append(x.numpy().copy())
            x = apply_requant(x, layer.requant)
            per_layer.append(x.numpy().copy())
            if layer.pool:
                x = int_maxpool2d(x, layer.pool, layer.pool_stride)
                per_layer.append(x.numpy().copy())
            continue
        if x.dim() > 2:
            x = x.flatten(1)
            per_layer.append(x.numpy().copy())
        x = int_dense(x, layer, per_layer)
    out = x.numpy().astype(np.int64)
    return (out, per_layer) if intermediates else out


class FloatCNN(nn.Module):
    """The float baseline: the same convolutions, ReLU, max-pools and dense layers, float32."""

    def __init__(self, channels=CHANNELS, kernel: int = 3, pool: int = 2,
                 input_shape=INPUT_SHAPE, classes: int = N_CLASSES, layers=None):
        super().__init__()
        self.layers = tuple(tuple(t) for t in (layers or layer_list(channels, kernel, pool,
                                                                    classes)))
        self.input_shape = tuple(int(s) for s in input_shape)
        shapes = check_layer_list(self.layers, self.input_shape)
        self.channels = tuple(t[1] for t in self.layers if t[0] == "conv")
        shape, mods, flat = self.input_shape, [], False
        for idx, (t, out_shape) in enumerate(zip(self.layers, shapes)):
            if t[0] == "conv":
                mods += [nn.Conv2d(shape[0], t[1], t[2], stride=t[3], padding=t[4]), nn.ReLU()]
            elif t[0] == "pool":
                mods.append(nn.MaxPool2d(t[1], t[2]))
            else:
                if not flat:
                    mods.append(nn.Flatten())
                    flat = True
                mods.append(nn.Linear(math.prod(shape), t[1]))
                if idx < len(self.layers) - 1:
                    mods.append(nn.ReLU())
            shape = out_shape
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.float32)
        return self.net(x.reshape((x.shape[0],) + self.input_shape))
