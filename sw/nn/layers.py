"""The layers of :mod:`softfloor.nn` that are not weighted or requantizing activations.

* :class:`QuantInput`: real inputs to integer codes, exactly the integer model's input rule
  (:func:`softfloor.arith.quantize_real`: ``clamp(floor(x / s + 1/2) + zero_point)``), with one
  scale (given, or calibrated on the training data) or, at 1 bit, one threshold per input value
  (given, calibrated, or learned with the network).
* :class:`QuantMaxPool2d` and :class:`Flatten`: on codes, the scale unchanged.
* :class:`QuantSigmoid` and :class:`QuantTanh`: a function of a code, exported as the ``lut``
  op: the input is requantized to signed ``in_bits`` codes at a learned power-of-two scale
  (:class:`~softfloor.quant.QuantHardTanh`), then ``f`` of the real value is quantized to
  ``bits``-bit codes at a fixed scale. In the hard phase the forward *is* the table the model
  file holds (``y = table[q - in_lo]``), so export is exact by construction.

The weighted layers (:class:`~softfloor.quant.QuantLinear`, :class:`~softfloor.cnn.QuantConv2d`)
and the requantizing activations (:class:`~softfloor.quant.QuantReLU`,
:class:`~softfloor.quant.QuantHardTanh`) live beside their quantizers.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from softfloor import arith
from softfloor.input_thresholds import threshold_grad
from softfloor.intmodel import MAX_LUT_ENTRIES, Flatten as FlattenOp, InputSpec, Lut, MaxPool2d
from softfloor.nn.tensor import IntState, QuantTensor
from softfloor.quant import QuantHardTanh, STERoundFn, check_bits
from softfloor.surrogates import round_half_up

#: How a :class:`QuantInput` makes its per-value 1-bit thresholds.
THRESHOLDS = ("calibrate", "learned")
#: Candidate thresholds of the calibration: this many levels of ``[0, max |x|]``.
THRESHOLD_LEVELS = 16


def _mi_thresholds(x: np.ndarray, y: np.ndarray, levels: int = THRESHOLD_LEVELS) -> np.ndarray:
    """Per input value, the real threshold (``x >= t``) among ``t = k * top / levels``, ``k`` in
    ``1..levels`` (``top = max|x|``), whose bit carries the most information about the label."""
    from softfloor.data import mi_thresholds
    top = float(np.abs(x).max()) or 1.0
    k = mi_thresholds(x / top, y, levels=levels)
    return k.astype(np.float64) * top / levels


class _ThresholdFn(torch.autograd.Function):
    """1-bit codes times ``step`` in ``dtype``: 1 where ``x >= t``, else 0; backward to ``t`` the
    straight-through ramp of :func:`softfloor.input_thresholds.threshold_grad`.

    ``exact``: the code is the integer model's input rule ``clamp(floor(x / s + 1/2), 0, 1)``
    with ``s = 2 t`` (what the exported model computes; evaluation). Otherwise the comparison
    ``x >= t`` (training: one op instead of four on the float64 inputs; the two differ only
    where ``x / 2t`` rounds to 1/2 from below, within an ulp of the threshold)."""

    @staticmethod
    def forward(ctx, x, t, width: float, exact: bool, step: float, dtype):
        if exact:
            codes = arith.saturate(round_half_up(x / (2 * t)), 0, 1).to(dtype)
        else:
            codes = (x >= t).to(dtype)
        ctx.save_for_backward(x, t)
        ctx.width, ctx.step = width, step
        return codes.mul_(step)

    @staticmethod
    def backward(ctx, g):
        x, t = ctx.saved_tensors
        return None, threshold_grad(x.reshape(x.shape[0], -1), t.reshape(-1),
                                    g.reshape(g.shape[0], -1).to(x.dtype), ctx.step,
                                    ctx.width).reshape(t.shape), None, None, None, None


class QuantInput(nn.Module):
    """Real inputs to integer codes: the network's input quantizer (and its exported input spec).

    Parameters
    ----------
    bits : int
        Code width, 1..8.
    signed : bool
        Signed codes (zero point 0 either way, so the real 0 is the code 0).
    scale : float, optional
        The real value of one code step. None: calibrated on the training data
        (:meth:`calibrate`): the smallest power of two at or above ``max |x|``, split into
        ``2**bits`` steps (``2**(bits-1)`` signed).
    thresholds : None, "calibrate", "learned" or array
        1-bit unsigned codes with one threshold per input value (code 1 where ``x >= t``,
        exported as per-value scales ``2 t``): given as an array (one per value, flat C order),
        calibrated on the training data (the one of 16 levels whose bit tells most about the
        label), or calibrated and then learned with the network (a parameter; the gradient of a
        straight-through ramp).
    shape : tuple, optional
        The per-sample input shape (default: recorded from the data).

    The network sees codes times ``2**exp`` (``exp = -bits``, ``-(bits-1)`` signed), whatever
    the scale: the next layer's weights absorb it. A :class:`QuantTensor` input is taken as
    codes already made by this quantizer (how :func:`softfloor.fit` feeds pre-quantized,
    augmented batches).
    """

    def __init__(self, bits: int = 8, signed: bool = False, scale: float | None = None,
                 thresholds=None, shape=None):
        super().__init__()
        self.bits = check_bits("input bits", bits)
        self.signed = bool(signed)
        if self.signed and bits == 1:
            raise ValueError("QuantInput: signed 1-bit codes are {-1, 0}; use signed=False "
                             "(codes {0, 1}) or bits >= 2")
        self.lo, self.hi = arith.code_range(bits, self.signed)
        self.exp = -(bits - 1) if self.signed else -bits
        self.mode = "scale"
        self.width = 1.0
        self.shape = None if shape is None else tuple(int(s) for s in shape)
        if thresholds is not None:
            if bits != 1 or self.signed:
                raise ValueError("QuantInput: per-value thresholds need bits=1, signed=False")
            if isinstance(thresholds, str):
                if thresholds not in THRESHOLDS:
                    raise ValueError(f"thresholds must be an array or one of "
                                     f"{', '.join(THRESHOLDS)}, got {thresholds!r}")
                self.mode = thresholds
                self.register_buffer("scale_", torch.zeros(0, dtype=torch.float64))
            else:
                t = torch.as_tensor(np.asarray(thresholds, dtype=np.float64)).reshape(-1)
                if not bool(torch.all(t > 0)):
                    raise ValueError("QuantInput: thresholds must be positive")
                self.mode = "thresholds"
                self.register_buffer("scale_", 2 * t)
        elif scale is None:
            self.mode = "calibrate_scale"
            self.register_buffer("scale_", torch.zeros(0, dtype=torch.float64))
        else:
            if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
                raise ValueError(f"QuantInput: scale must be a positive number, got {scale!r}")
            self.register_buffer("scale_", torch.tensor(float(scale), dtype=torch.float64))
        if self.mode == "learned":
            self.threshold = nn.Parameter(torch.zeros(0, dtype=torch.float64))

    @classmethod
    def from_spec(cls, spec: InputSpec, exp: int | None = None, shape=None) -> "QuantInput":
        """The quantizer of an existing input spec (``shape`` replaces the spec's when given,
        same size), seen by the network as codes times ``2**exp`` (default as the
        constructor's)."""
        if spec.zero_point != 0 or spec.rounding != "half_up" or spec.narrowed:
            raise ValueError(f"input spec {spec}: softfloor.nn inputs have zero point 0, "
                             f"rounding half_up and the full code range")
        q = cls(max(spec.bits, 2) if spec.signed else spec.bits, spec.signed, scale=1.0,
                shape=shape or spec.shape)
        if q.bits != spec.bits:
            raise ValueError(f"input spec {spec}: signed 1-bit codes are not supported")
        q.mode = "thresholds" if spec.per_value else "scale"
        q.scale_ = torch.tensor(spec.scale, dtype=torch.float64)
        if exp is not None:
            q.exp = int(exp)
        return q

    def extra_repr(self) -> str:
        return (f"bits={self.bits}, signed={self.signed}, mode={self.mode}, "
                f"calibrated={self.calibrated}")

    @property
    def calibrated(self) -> bool:
        return self.mode == "learned" and self.threshold.numel() > 0 or \
            self.mode != "learned" and self.scale_.numel() > 0

    def _scales(self) -> torch.Tensor:
        if not self.calibrated:
            raise RuntimeError("QuantInput: not calibrated; call calibrate(x_train[, y_train]) "
                               "or softfloor.fit first, or give a scale")
        if self.mode == "learned":
            return 2 * self.threshold.detach().clamp_min(1e-12)
        return self.scale_

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("scale_", "threshold"):  # calibrated sizes differ from the empty start
            key = prefix + name
            if key in state_dict and hasattr(self, name):
                cur = getattr(self, name)
                if cur.shape != state_dict[key].shape:
                    cur.data = torch.empty_like(state_dict[key])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def calibrate(self, x, y=None) -> None:
        """Calibrate on the training inputs ``x`` (``(N, ...)``, real values; labels ``y`` for
        the thresholds): the scale, or the per-value thresholds. A given scale or thresholds
        are kept."""
        x = np.asarray(x.real() if isinstance(x, QuantTensor) else x, dtype=np.float64)
        self.shape = self.shape or tuple(x.shape[1:])
        if self.mode == "calibrate_scale":
            top = float(np.abs(x).max()) or 1.0
            s = 2.0 ** math.ceil(math.log2(top)) / (1 << (self.bits - int(self.signed)))
            self.scale_ = torch.tensor(s, dtype=torch.float64)
        elif self.mode in THRESHOLDS:
            if y is None:
                raise ValueError("QuantInput: calibrating thresholds needs the labels")
            flat = x.reshape(len(x), -1)
            t = torch.as_tensor(_mi_thresholds(flat, np.asarray(y)))
            self.width = 2 * float(np.abs(flat).max() or 1.0) / THRESHOLD_LEVELS
            if self.mode == "learned":
                self.threshold = nn.Parameter(t - self.width / 4)
            else:
                self.scale_ = 2 * t

    def spec(self) -> InputSpec:
        """The exported input quantizer (shape, code type, scale or per-value scales)."""
        if self.shape is None:
            raise RuntimeError("QuantInput: the input shape is unknown; give shape= or run it "
                               "on data first")
        s = self._scales()
        scale = float(s) if s.dim() == 0 else tuple(float(v) for v in s)
        return InputSpec(self.shape, self.bits, self.signed, scale, 0, "half_up")

    def quantize(self, x) -> np.ndarray:
        """Integer codes (int64, ``(N, size)`` flat) of real inputs: the model file's rule."""
        x = np.asarray(x, dtype=np.float64)
        self.shape = self.shape or tuple(x.shape[1:])
        return self.spec().quantize(x)

    def codes(self, x: torch.Tensor) -> QuantTensor:
        """Pre-quantized integer codes (``(N, ...)``) as this layer's output."""
        dt = self._dtype()
        return QuantTensor(torch.as_tensor(x).to(dt) * 2.0 ** self.exp, exp=self.exp,
                           lo=self.lo, hi=self.hi)

    def _dtype(self) -> torch.dtype:
        return torch.get_default_dtype()

    def forward(self, x) -> QuantTensor:
        if isinstance(x, QuantTensor):
            return x
        x64 = torch.as_tensor(x).to(torch.float64)
        self.shape = self.shape or tuple(x64.shape[1:])
        if tuple(x64.shape[1:]) != self.shape and math.prod(x64.shape[1:]) == math.prod(
                self.shape):
            x64 = x64.reshape((x64.shape[0],) + self.shape)
        if self.mode == "learned":
            t = self.threshold.clamp_min(1e-12).reshape(self.shape)
            v = _ThresholdFn.apply(x64, t, self.width, not self.training, 2.0 ** self.exp,
                                   self._dtype())
        else:
            s = self._scales()
            s = s.reshape(self.shape) if s.dim() else s
            q = arith.saturate(round_half_up(x64 / s), self.lo, self.hi)
            v = q.to(self._dtype()) * 2.0 ** self.exp
        return QuantTensor(v, exp=self.exp, lo=self.lo, hi=self.hi)

    def to_int(self, st: IntState | None) -> tuple[list, IntState]:
        spec = self.spec()
        t = spec.code_type
        return [], IntState(tuple(spec.shape), t.lo, t.hi, exp=self.exp)


class QuantMaxPool2d(nn.Module):
    """Max-pool of codes (``kernel`` windows moving by ``stride``, default ``kernel``; no
    padding): the scale is positive, so pooling the real values pools the codes."""

    def __init__(self, kernel: int = 2, stride: int | None = None):
        super().__init__()
        self.kernel = check_bits("pool kernel", kernel, 16)
        self.stride = self.kernel if stride is None else check_bits("pool stride", stride, 16)

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}, stride={self.stride}"

    def forward(self, x):
        if isinstance(x, QuantTensor):
            if x.bn is not None:
                raise ValueError("QuantMaxPool2d after a BatchNorm threshold: put the 1-bit "
                                 "activation first")
            return x.with_value(F.max_pool2d(x.value, self.kernel, self.stride))
        return F.max_pool2d(x, self.kernel, self.stride)

    def to_int(self, st: IntState) -> tuple[list, IntState]:
        if len(st.shape) != 3:
            raise ValueError(f"QuantMaxPool2d gets codes of shape {st.shape}; it needs (C, H, W)")
        c, h, w = st.shape
        k, s = self.kernel, self.stride
        op = MaxPool2d(st.name(f"pool{st.weighted}" if st.weighted else "pool"), (k, k), (s, s))
        return [op], dataclasses.replace(st, shape=(c, (h - k) // s + 1, (w - k) // s + 1))


class Flatten(nn.Module):
    """``(N, C, H, W)`` to ``(N, C*H*W)`` in C order (PyTorch's and the model file's)."""

    def forward(self, x):
        if isinstance(x, QuantTensor):
            if x.per_channel or x.bn is not None:
                raise ValueError("Flatten after a layer with per-channel scales (or a BatchNorm "
                                 "threshold): put a quantized activation before it")
            return x.with_value(x.value.flatten(1))
        return x.flatten(1)

    def to_int(self, st: IntState) -> tuple[list, IntState]:
        if st.per_channel or st.pending is not None:
            raise ValueError("Flatten after a layer with per-channel scales (or a BatchNorm "
                             "threshold): put a quantized activation before it")
        if len(st.shape) == 1:
            return [], st
        return [FlattenOp(st.name("flatten"))], dataclasses.replace(
            st, shape=(int(np.prod(st.shape)),))


class _TableActivation(nn.Module):
    """A function of one code through a table (see the module docstring)."""
    fn = staticmethod(torch.sigmoid)
    signed = False

    def __init__(self, bits: int = 8, in_bits: int = 8, surrogate: str = "sigmoid"):
        super().__init__()
        self.bits = check_bits("bits", bits)
        if (1 << check_bits("in_bits", in_bits)) > MAX_LUT_ENTRIES:
            raise ValueError(f"in_bits {in_bits}: the table would exceed {MAX_LUT_ENTRIES}")
        self.pre = QuantHardTanh(in_bits, surrogate)
        self.lo, self.hi = arith.code_range(bits, self.signed)
        if self.signed and bits == 1:
            raise ValueError(f"{type(self).__name__}: signed 1-bit codes are {{-1, 0}}; "
                             "use bits >= 2")
        self.exp = -(bits - 1) if self.signed else -bits

    @property
    def surrogate(self):
        return self.pre.surrogate

    def extra_repr(self) -> str:
        return f"bits={self.bits}, table of {self.pre.hi - self.pre.lo + 1}"

    def table(self) -> np.ndarray:
        """Output code of every input code ``pre.lo .. pre.hi`` (int64): ``clamp(floor(f(q *
        s_in) / s_out + 1/2))`` in float64."""
        q = np.arange(self.pre.lo, self.pre.hi + 1, dtype=np.float64)
        u = torch.as_tensor(q * 2.0 ** self.pre.exp)
        y = self.fn(u).numpy() * 2.0 ** -self.exp
        return arith.saturate(arith.round_float(y, "half_up"), self.lo, self.hi).astype(np.int64)

    def forward(self, x):
        u = self.pre(x)
        uv = u.value if isinstance(u, QuantTensor) else u
        v = self.fn(uv) * 2.0 ** -self.exp
        if self.pre.surrogate.hard:
            table = torch.as_tensor(self.table(), device=uv.device).to(v.dtype)
            idx = torch.round(uv.detach() * 2.0 ** -self.pre.exp).to(torch.int64) - self.pre.lo
            q = v + (table[idx] - v).detach()
        else:
            q = torch.clamp(STERoundFn.apply(v), self.lo, self.hi)
        y = q * 2.0 ** self.exp
        if isinstance(x, QuantTensor):
            return QuantTensor(y, exp=self.exp, lo=self.lo, hi=self.hi)
        return y

    @torch.no_grad()
    def calibrate(self, x: QuantTensor) -> QuantTensor:
        self.pre.calibrate(x)
        hard, self.pre.surrogate.hard = self.pre.surrogate.hard, True
        try:
            return self(x)
        finally:
            self.pre.surrogate.hard = hard

    def to_int(self, st: IntState) -> tuple[list, IntState]:
        ops, st = self.pre.to_int(st)
        if st.log2 is not None:
            raise ValueError(f"{type(self).__name__} needs power-of-two scales")
        table = self.table()
        lut = Lut(st.name(f"lut{st.weighted}" if st.weighted else "lut"), table,
                  int(self.pre.lo), self.bits, self.signed)
        reach = table[st.lo - self.pre.lo:st.hi - self.pre.lo + 1]
        return ops + [lut], dataclasses.replace(st, lo=int(reach.min()), hi=int(reach.max()),
                                                exp=self.exp)


class QuantSigmoid(_TableActivation):
    """Sigmoid of a requantized code, as a table: unsigned ``bits`` codes of ``sigmoid(u)`` at
    scale ``2**-bits`` (the code of 1.0 saturates to the top code).

    Parameters
    ----------
    bits : int
        Output code width.
    in_bits : int
        Width of the signed codes the input is requantized to (the table has ``2**in_bits``
        entries).
    surrogate : str
        Rounding surrogate of that requantization.
    """
    fn = staticmethod(torch.sigmoid)
    signed = False


class QuantTanh(_TableActivation):
    """Tanh of a requantized code, as a table: signed ``bits`` codes at scale
    ``2**-(bits-1)`` (parameters as :class:`QuantSigmoid`)."""
    fn = staticmethod(torch.tanh)
    signed = True
