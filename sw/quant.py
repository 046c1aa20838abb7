"""Quantizers and quantized layers with power-of-two scales.

Every scale is a power of two ``2**e`` with an integer exponent ``e``, learned as a real
parameter ``log2_scale`` and rounded (half up, straight-through gradient) in the forward pass,
so requantization in hardware is a shift.

* Weights (:class:`WeightQuantizer`): signed ``weight_bits`` codes, per-tensor scale, LSQ-style
  (the gradient to the scale is LSQ's ``q - w/s`` inside the range, ``q`` outside). Ranges:

  - 1 bit: ``sign(w)`` in ``{-1, +1}`` (``w = 0`` maps to +1), gradient clipped to ``|w/s|<=1``;
  - 2 bits: *narrow* range ``{-1, 0, +1}`` (ternary; the code -2 would be unbalanced);
  - 3..8 bits: the full two's complement range ``[-2**(b-1), 2**(b-1) - 1]``.

  Codes are ``clamp(floor(w/s + 1/2), lo, hi)``; weights are never rounded by the surrogate.
* Activations (:class:`QuantReLU`): ReLU and quantization in one, unsigned ``act_bits`` codes
  ``clamp(R(x/s), 0, 2**act_bits - 1)`` with ``R`` the rounding surrogate (soft while
  annealing, the exact ``floor(v + 1/2)`` in the hard phase). With integer accumulators ``acc``
  at scale ``s_acc`` and ``s = s_acc * 2**shift`` this is exactly
  ``arith.requantize(acc, shift, "half_up", 0, 2**act_bits - 1)``.
* Bias (:class:`QuantLinear`): an integer code at the accumulator scale ``s_in * s_w``,
  ``clamp(floor(b/s_acc + 1/2))`` to ``bias_bits`` signed, straight-through gradient.

The layers compute in whatever dtype they are given; :class:`softfloor.models.QuantMLP` uses
float64 so that every hard-quantized value (a dyadic rational) is exact.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from . import arith
from .surrogates import STERoundFn, Surrogate, make_surrogate, ste_round

MAX_BITS = 8
MAX_BIAS_BITS = 32


def check_bits(what: str, bits: int, hi: int = MAX_BITS) -> int:
    """Return ``bits`` if it is an integer in ``1..hi``, else raise a ValueError saying so."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= hi:
        raise ValueError(f"{what} must be an integer from 1 to {hi}, got {bits!r}")
    return bits


def weight_code_range(bits: int) -> tuple[int, int]:
    """Weight codes: 1 bit {-1, +1}, 2 bits narrow {-1, 0, 1}, else full signed range."""
    check_bits("weight_bits", bits)
    if bits <= 2:
        return -1, 1
    return arith.code_range(bits, True)


def pow2_scale(log2_scale: torch.Tensor) -> torch.Tensor:
    """``2 ** round_half_up(log2_scale)`` with a straight-through gradient to ``log2_scale``."""
    return torch.exp2(ste_round(log2_scale))


def exponent(log2_scale: torch.Tensor) -> int:
    """The integer exponent the forward pass uses: ``floor(log2_scale + 1/2)``."""
    return int(math.floor(float(log2_scale.detach()) + 0.5))


def requant_params(in_exp: int, w_exp: int, out_exp: int) -> tuple[int, int]:
    """``(shift, multiplier)`` taking an accumulator at ``2**(in_exp + w_exp)`` to ``2**out_exp``.

    ``shift = out_exp - in_exp - w_exp``; a negative shift becomes ``multiplier = 2**-shift``
    with shift 0 (the output is then exactly the accumulator times a power of two).
    """
    shift = out_exp - in_exp - w_exp
    if shift >= 0:
        return shift, 1
    return 0, 1 << (-shift)


class _SignSTE(torch.autograd.Function):
    """``sign(v)`` with 0 -> +1; gradient passed where ``|v| <= 1`` (clipped STE)."""

    @staticmethod
    def forward(ctx, v):
        ctx.save_for_backward(v)
        return torch.where(v >= 0, torch.ones_like(v), -torch.ones_like(v))

    @staticmethod
    def backward(ctx, grad):
        (v,) = ctx.saved_tensors
        return grad * (v.abs() <= 1).to(grad.dtype)


class WeightQuantizer(nn.Module):
    """Signed per-tensor weight quantizer with a learned power-of-two scale.

    Parameters
    ----------
    bits : int
        Weight width, 1..8 (see the module docstring for the code ranges).
    """

    def __init__(self, bits: int):
        super().__init__()
        self.bits = check_bits("weight_bits", bits)
        self.lo, self.hi = weight_code_range(bits)
        self.log2_scale = nn.Parameter(torch.zeros(()))

    def extra_repr(self) -> str:
        return (f"bits={self.bits}, codes=[{self.lo}, {self.hi}], "
                f"scale=2**{exponent(self.log2_scale)}")

    @torch.no_grad()
    def init_scale(self, w: torch.Tensor) -> None:
        """LSQ-style init ``s = 2 * mean|w| / sqrt(hi)`` (``mean|w|`` for 1 bit), as ``log2 s``."""
        m = float(w.abs().mean())
        s = m if self.bits == 1 else 2 * m / math.sqrt(self.hi)
        self.log2_scale.fill_(math.log2(max(s, 1e-12)))

    @property
    def exp(self) -> int:
        return exponent(self.log2_scale)

    def scale(self) -> torch.Tensor:
        return pow2_scale(self.log2_scale)

    def codes_float(self, w: torch.Tensor) -> torch.Tensor:
        """Integer codes as a float tensor, with straight-through gradients to ``w`` and scale."""
        v = w / self.scale()
        if self.bits == 1:
            return _SignSTE.apply(v)
        return torch.clamp(STERoundFn.apply(v), self.lo, self.hi)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        """Fake-quantized weights ``s * codes``."""
        return self.scale() * self.codes_float(w)

    @torch.no_grad()
    def codes(self, w: torch.Tensor) -> torch.Tensor:
        """Integer codes (int64) exactly as the forward pass uses them."""
        return self.codes_float(w).to(torch.int64)


class QuantReLU(nn.Module):
    """ReLU + unsigned ``bits`` quantization through a rounding surrogate, power-of-two scale.

    Parameters
    ----------
    bits : int
        Activation width, 1..8.
    surrogate : str or Surrogate
        The rounding surrogate (a name from :data:`softfloor.surrogates.SURROGATES`).
    """

    def __init__(self, bits: int, surrogate: str | Surrogate = "sigmoid"):
        super().__init__()
        self.bits = check_bits("act_bits", bits)
        self.hi = (1 << bits) - 1
        self.surrogate = make_surrogate(surrogate) if isinstance(surrogate, str) else surrogate
        self.log2_scale = nn.Parameter(torch.zeros(()))

    def extra_repr(self) -> str:
        return (f"bits={self.bits}, codes=[0, {self.hi}], scale=2**{self.exp}, "
                f"surrogate={self.surrogate}")

    @torch.no_grad()
    def init_scale(self, x: torch.Tensor) -> None:
        """Init from a batch of pre-activations: the 99.9th percentile of ``relu(x)`` maps to the
        largest code (a power of two at or above, so little is clipped)."""
        r = torch.relu(x.detach().flatten().to(torch.float64))
        top = float(torch.quantile(r, 0.999)) if r.numel() else 1.0
        self.log2_scale.fill_(math.ceil(math.log2(max(top / self.hi, 1e-12))))

    @property
    def exp(self) -> int:
        return exponent(self.log2_scale)

    def scale(self) -> torch.Tensor:
        return pow2_scale(self.log2_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.scale()
        q = torch.clamp(self.surrogate(x / s), 0, self.hi)
        return s * q


class QuantLinear(nn.Module):
    """Linear layer with quantized weights and an integer bias at the accumulator scale.

    ``forward(x, in_exp)`` takes real inputs that are codes times ``2**in_exp`` and returns the
    real accumulator ``2**(in_exp + w_exp) * (x_codes @ W_codes.T + b_codes)``.

    Parameters
    ----------
    in_features, out_features : int
    weight_bits : int
        1..8.
    bias_bits : int
        Signed width the bias codes are clipped to (1..32).
    """

    def __init__(self, in_features: int, out_features: int, weight_bits: int = 4,
                 bias_bits: int = 16):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.bias_bits = check_bits("bias_bits", bias_bits, MAX_BIAS_BITS)
        self.bias_lo, self.bias_hi = arith.code_range(bias_bits, True)
        lin = nn.Linear(in_features, out_features)  # PyTorch's default init
        self.weight = nn.Parameter(lin.weight.detach().clone())
        self.bias = nn.Parameter(lin.bias.detach().clone())
        self.wq = WeightQuantizer(weight_bits)
        self.wq.init_scale(self.weight)

    @property
    def weight_bits(self) -> int:
        return self.wq.bits

    def extra_repr(self) -> str:
        return f"{self.in_features}->{self.out_features}, bias_bits={self.bias_bits}"

    def acc_scale(self, in_exp: int) -> torch.Tensor:
        return torch.exp2(torch.tensor(float(in_exp), dtype=self.weight.dtype)) * self.wq.scale()

    def bias_codes_float(self, in_exp: int) -> torch.Tensor:
        s_acc = self.acc_scale(in_exp).detach()
        return torch.clamp(STERoundFn.apply(self.bias / s_acc), self.bias_lo, self.bias_hi)

    def forward(self, x: torch.Tensor, in_exp: int) -> torch.Tensor:
        w = self.wq(self.weight)
        b = self.acc_scale(in_exp).detach() * self.bias_codes_float(in_exp)
        return x @ w.T + b

    @torch.no_grad()
    def weight_codes(self) -> torch.Tensor:
        """Integer weight codes (int64), ``(out_features, in_features)``."""
        return self.wq.codes(self.weight)

    @torch.no_grad()
    def bias_codes(self, in_exp: int) -> torch.Tensor:
        """Integer bias codes (int64) at the accumulator scale ``2**(in_exp + w_exp)``."""
        return self.bias_codes_float(in_exp).to(torch.int64)
