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
* Signed activations (:class:`QuantHardTanh`): hardtanh and quantization in one, signed
  ``act_bits`` codes ``clamp(R(x/s), -2**(act_bits-1), 2**(act_bits-1) - 1)``, power-of-two
  scale; the same surrogates, i.e. ``arith.requantize(acc, shift, "half_up", lo, hi)`` with the
  signed bounds. 2..8 bits: a signed 1-bit code is ``{-1, 0}`` (rejected; 1-bit activations
  are ReLU's ``{0, 1}``, with BatchNorm as an integer threshold).
* Bias (:class:`QuantLinear`): an integer code at the accumulator scale ``s_in * s_w``,
  ``clamp(floor(b/s_acc + 1/2))`` to ``bias_bits`` signed, straight-through gradient.

The layers compute in whatever dtype they are given; :class:`softfloor.models.QuantMLP` picks
one in which every hard-quantized value (a dyadic rational) is exact
(:meth:`~softfloor.models.QuantMLP.exact_dtype`).

Free scales (``free=True`` on the quantizers; ``QuantMLP`` / ``QuantCNN(scales="free")``): the
learned ``log2_scale`` is used as is (``s = 2**log2_scale``, any positive real), and a layer's
requantization ratio ``s_in * s_w / s_out`` becomes an integer multiplier and a shift
(:func:`free_requant_params`); :meth:`softfloor.models.QuantMLP.forward_free` (and the CNN's)
then computes on integer codes, so the hard forward is exactly ``arith.requantize(acc, shift,
"half_up", lo, hi, multiplier)``.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import arith
from .intmodel import MAX_MULTIPLIER, Dense, Requant
from .nn import lowering
from .nn.tensor import IntState, QuantTensor
from .surrogates import STERoundFn, Surrogate, make_surrogate, round_half_up, ste_round
from .tensorops import pass_inside, scalar

MAX_BITS = 8
MAX_BIAS_BITS = 32
#: Scale kinds: power-of-two (shift-only requantization) or free (integer multiplier + shift).
SCALES = ("po2", "free")
#: Bits of a free-scale requantization multiplier (``2**(MULT_BITS-1) <= m < 2**MULT_BITS``
#: before trailing zero bits are dropped): a relative error of at most ``2**-MULT_BITS`` of the
#: ratio, and ``acc * m`` stays far below ``2**53`` (exact in float64).
MULT_BITS = 16


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


def grad_scale(x: torch.Tensor, g: float) -> torch.Tensor:
    """``x`` in the forward pass (its value exactly), gradient times ``g`` in the backward pass
    (LSQ's trick)."""
    y = x * g
    return x.detach() + (y - y.detach())


def check_scales(scales: str) -> str:
    """Return ``scales`` if it is one of :data:`SCALES`, else raise a ValueError listing them."""
    if scales not in SCALES:
        raise ValueError(f"unknown scales {scales!r}; choose one of {', '.join(SCALES)}")
    return scales


def free_requant_params(log2_ratio: float) -> tuple[int, int]:
    """``(shift, multiplier)`` realising the ratio ``2**log2_ratio`` (free scales).

    ``multiplier = round_half_up(2**(log2_ratio + shift))`` with the shift that gives it
    :data:`MULT_BITS` bits, trailing zero bits then dropped (``m / 2**shift`` unchanged).
    Shifts stay in ``0..62`` (a ratio above ``2**(MULT_BITS-1)`` gets shift 0 and a larger
    multiplier; the integer model allows up to ``2**31 - 1``). The quantized ratio
    ``multiplier * 2**-shift`` is what training's hard forward and the export both use.
    """
    log2_ratio = float(log2_ratio)
    if not math.isfinite(log2_ratio):
        raise ValueError(f"requantization ratio 2**{log2_ratio} is not finite")
    shift = min(62, max(0, MULT_BITS - 1 - math.floor(log2_ratio)))
    m = int(arith.round_float(2.0 ** (log2_ratio + shift), "half_up"))
    if m >= 1 << MULT_BITS and shift > 0:  # rounded up to the next power of two
        m, shift = m >> 1, shift - 1
    m = max(m, 1)
    while m % 2 == 0 and shift > 0:
        m, shift = m >> 1, shift - 1
    if m > MAX_MULTIPLIER:
        raise ValueError(f"requantization ratio 2**{log2_ratio:.3f} needs a multiplier of {m}, "
                         f"above the integer model's limit 2**31 - 1")
    return shift, m


def lsq_grad_factor(n: int, qp: int) -> float:
    """LSQ's gradient scale ``1 / sqrt(N * Qp)`` (``N`` values share the scale, top code ``Qp``)."""
    return 1.0 / math.sqrt(max(1, n) * max(1, qp))


def exponent(log2_scale: torch.Tensor) -> int:
    """The integer exponent the forward pass uses: ``floor(log2_scale + 1/2)``."""
    return int(round_half_up(log2_scale.detach()))


def requant_params(in_exp: int, w_exp: int, out_exp: int) -> tuple[int, int]:
    """``(shift, multiplier)`` taking an accumulator at ``2**(in_exp + w_exp)`` to ``2**out_exp``.

    ``shift = out_exp - in_exp - w_exp``; a negative shift becomes ``multiplier = 2**-shift``
    with shift 0 (the output is then exactly the accumulator times a power of two).
    With per-channel ``w_exp`` (an int64 tensor) both are int64 tensors, one per channel.
    """
    if isinstance(w_exp, torch.Tensor):  # per-channel weight exponents: int64 tensors
        pairs = [requant_params(in_exp, int(e), out_exp) for e in w_exp.tolist()]
        return (torch.tensor([p[0] for p in pairs], dtype=torch.int64),
                torch.tensor([p[1] for p in pairs], dtype=torch.int64))
    shift = out_exp - in_exp - w_exp
    if shift >= 0:
        return shift, 1
    return 0, 1 << (-shift)


def sign_code(v: torch.Tensor) -> torch.Tensor:
    """1-bit weight codes: ``+1`` where ``v >= 0`` (also ``-0.0``), else ``-1``, in ``v``'s dtype.

    ``copysign(1, v + 0.0)``: adding ``+0.0`` turns ``-0.0`` into ``+0.0``; two cheap ops (a
    ``where`` on a comparison costs several times more on small tensors)."""
    return torch.copysign(scalar(1.0, v.dtype), v + scalar(0.0, v.dtype))


class _SignSTE(torch.autograd.Function):
    """``sign(v)`` with 0 -> +1; gradient passed where ``|v| <= 1`` (clipped STE)."""

    @staticmethod
    def forward(ctx, v):
        ctx.save_for_backward(v)
        return sign_code(v)

    @staticmethod
    def backward(ctx, grad):
        (v,) = ctx.saved_tensors
        return grad * (v.abs() <= 1).to(grad.dtype)


class _FakeQuantWeightFn(torch.autograd.Function):
    """``s * codes(w / s)``, ``s = 2**floor(l + 1/2)``, in one op with its closed-form backward.

    The same values and gradients as composing the STE pieces (``pow2_scale``, ``STERoundFn`` or
    ``_SignSTE``, ``clamp``), with a fraction of the autograd overhead:
    ``dw = g * inside`` and ``dl = sum(g * (q - v * inside)) * s * ln 2 * gs`` (LSQ's scale
    gradient; ``gs`` its gradient scale), ``inside`` where the rounded code is in range (1 bit:
    ``|v| <= 1``). A per-channel ``log2_scale`` (shape ``(out, 1, ...)``, broadcast against
    ``w``) gets the sum over each channel.
    """

    @staticmethod
    def forward(ctx, w, log2_scale, lo: int, hi: int, one_bit: bool, gs: float):
        s = torch.exp2(round_half_up(log2_scale))
        v = w / s
        if one_bit:
            q = sign_code(v)
            inside = v.abs() <= 1
        else:
            r = round_half_up(v)
            q = torch.clamp(r, lo, hi)
            inside = (r >= lo) & (r <= hi)
        ctx.save_for_backward(v, q, inside, s)
        ctx.gs = gs
        return s * q

    @staticmethod
    def backward(ctx, g):
        v, q, inside, s = ctx.saved_tensors
        m = inside.to(g.dtype)
        d = g * (q - v * m)
        d = d.sum() if s.dim() == 0 else d.sum_to_size(s.shape)
        dl = d * s * (math.log(2) * ctx.gs)
        return g * m, dl.reshape(s.shape), None, None, None, None


class _FakeQuantBiasFn(torch.autograd.Function):
    """``s_acc * clamp(floor(b / s_acc + 1/2), lo, hi)`` (``s_acc`` a constant), STE inside."""

    @staticmethod
    def forward(ctx, b, s_acc: float, lo: int, hi: int):
        r = round_half_up(b / s_acc)
        ctx.save_for_backward((r >= lo) & (r <= hi))
        return s_acc * torch.clamp(r, lo, hi)

    @staticmethod
    def backward(ctx, g):
        (inside,) = ctx.saved_tensors
        return g * inside.to(g.dtype), None, None, None


def fake_quant_bias(b: torch.Tensor, s_acc: float, lo: int, hi: int) -> torch.Tensor:
    """The bias of a quantized layer: ``s_acc * clamp(floor(b / s_acc + 1/2), lo, hi)``
    (straight-through inside the range). Shared by :class:`QuantLinear` and
    :class:`softfloor.cnn.QuantConv2d`; ``fake_quant_bias(...) / s_acc`` are the integer codes."""
    return _FakeQuantBiasFn.apply(b, s_acc, lo, hi)


def free_bias_codes(bias: torch.Tensor, s_acc: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """Free scales: bias codes ``clamp(floor(bias / s_acc + 1/2), lo, hi)`` (float) at the
    accumulator scale ``s_acc`` (a constant; per channel a vector), straight-through inside."""
    return torch.clamp(STERoundFn.apply(bias / s_acc), lo, hi)


LN2 = math.log(2)


#: Shapes of the straight-through gradient of a 1-bit activation (``binary_grad``, where the
#: surrogate's gradient is the clipped straight-through one: ``ste``, and ``sigmoid``'s hard
#: phase with ``hard_grad="ste"``). ``"box"``: 1 where the code is not clamped, ``-1/2 <= v <
#: 3/2`` in steps (the clipped STE). ``"triangle"``: :func:`binary_triangle_grad`, peak 1 at
#: the threshold ``v = 1/2``, zero :data:`TRIANGLE_HALF_WIDTH` steps away (the box's area, a
#: wider tapered window, as Bi-Real Net's ApproxSign).
BINARY_GRADS = ("box", "triangle")
TRIANGLE_HALF_WIDTH = 2.0


def check_binary_grad(binary_grad: str, bits: int) -> str:
    """``binary_grad`` if it is one of :data:`BINARY_GRADS` and fits ``bits``, else ValueError."""
    if binary_grad not in BINARY_GRADS:
        raise ValueError(f"binary_grad must be one of {', '.join(BINARY_GRADS)}, "
                         f"got {binary_grad!r}")
    if binary_grad != "box" and bits != 1:
        raise ValueError(f"binary_grad {binary_grad!r} shapes the gradient of 1-bit "
                         f"activations; got {bits}-bit activations (use 'box')")
    return binary_grad


def binary_triangle_grad(v: torch.Tensor) -> torch.Tensor:
    """``max(0, 1 - |v - 1/2| / TRIANGLE_HALF_WIDTH)``: the ``"triangle"`` gradient of a 1-bit
    code ``[v >= 1/2]`` at ``v = x / s``."""
    return torch.clamp(1 - (v - 0.5).abs() / TRIANGLE_HALF_WIDTH, min=0)


def reshapes_binary_grad(binary_grad: str, hi: int, surrogate, dr) -> bool:
    """Does ``binary_grad`` replace this activation's gradient: the ``"triangle"``, a 1-bit code
    (``hi == 1``) and a clipped straight-through gradient (``R'`` None from the surrogate's
    :meth:`~softfloor.surrogates.Surrogate.round_and_grad`, ``clip_grad``)?"""
    return binary_grad == "triangle" and hi == 1 and dr is None and surrogate.clip_grad


def act_quant_fwd(x, s: float, surrogate, hi: int, need_grad: bool = True,
                  binary_grad: str = "box"):
    """Forward of the fused activation quantizer: ``(s * clamp(R(x / s), 0, hi), saved)``.

    ``R`` and ``R'`` come from the surrogate's
    :meth:`~softfloor.surrogates.Surrogate.round_and_grad` (``s`` a power of two, so scaling
    by it is exact); ``saved`` is what :func:`act_quant_bwd` needs (None without
    ``need_grad``). ``binary_grad`` (:data:`BINARY_GRADS`) shapes a 1-bit code's
    straight-through gradient.
    """
    dt = x.dtype
    v = x * scalar(1.0 / s, dt)
    r, dr = surrogate.round_and_grad(v, need_grad)
    q = torch.clamp(r, 0, hi)
    y = q * scalar(s, dt)
    if not need_grad:
        return y, None
    tri = reshapes_binary_grad(binary_grad, hi, surrogate, dr)
    return y, (v, q, dr, r if surrogate.clip_grad else None, hi, tri)


def act_quant_bwd(g, saved, s: float, gs: float = 1.0):
    """Backward of :func:`act_quant_fwd`: ``(dx, dl)`` with ``dx = g R'(v) inside`` and
    ``dl = sum(g (q - v R'(v) inside)) * s * ln 2 * gs`` (the scale's log2 parameter, rounded
    with a straight-through gradient; ``inside`` where the code is not clamped, ``0 <= R(v)
    <= hi``, everywhere for a surrogate without ``clip_grad``). With the ``"triangle"``
    ``binary_grad``, ``R'(v) inside`` is :func:`binary_triangle_grad` instead."""
    v, q, dr, r, hi, tri = saved
    if tri:
        d = g * binary_triangle_grad(v)
    else:
        d = g if dr is None else g * dr
        if r is not None:
            d = pass_inside(d, r, 0, hi)
    dl = (g * q - d * v).sum() * scalar(s * LN2 * gs, g.dtype)
    return d, dl


def linear_quant_fwd(x, w, b, s: float, s_acc: float, lo: int, hi: int, one_bit: bool,
                     blo: int, bhi: int):
    """Forward of the fused quantized linear layer: ``(z, saved)``,
    ``z = x @ (s * codes(w / s)).T + s_acc * clamp(floor(b / s_acc + 1/2), blo, bhi)``.

    Weight codes: 1 bit ``sign`` (0 -> +1), else ``clamp(floor(w / s + 1/2), lo, hi)``
    (values identical to :class:`_FakeQuantWeightFn` and :class:`_FakeQuantBiasFn`).
    Per-channel scales: ``s`` and ``s_acc`` are vectors of powers of two, one per output
    channel (tensors in ``w``'s dtype).
    """
    dt = w.dtype
    if isinstance(s, torch.Tensor):  # per channel: columns of the weight, entries of the bias
        inv_s, s_w, inv_acc, s_b = (1.0 / s)[:, None], s[:, None], 1.0 / s_acc, s_acc
    else:
        inv_s, s_w = scalar(1.0 / s, dt), scalar(s, dt)
        inv_acc, s_b = scalar(1.0 / s_acc, dt), scalar(s_acc, dt)
    v = w * inv_s
    if one_bit:  # straight-through where |v| <= 1
        q, r, rlo, rhi = sign_code(v), v, -1, 1
    else:        # straight-through where the rounded code is in range
        r = round_half_up(v)
        q, rlo, rhi = torch.clamp(r, lo, hi), lo, hi
    rb = round_half_up(b * inv_acc)
    bq = torch.clamp(rb, blo, bhi)
    wq = q * s_w
    z = F.linear(x, wq, bq * s_b)
    return z, (x, v, q, (r, rlo, rhi), (rb, blo, bhi), wq)


def linear_quant_bwd(g, saved, s: float, gs: float = 1.0, need_x: bool = True):
    """Backward of :func:`linear_quant_fwd`: ``(dx, dw, db, dl)``; straight-through inside the
    code ranges, LSQ's scale gradient ``sum(gw (q - v inside)) * s * ln 2 * gs`` (the bias scale
    is a constant, as in :class:`_FakeQuantBiasFn`)."""
    x, v, q, inside, inside_b, wq = saved
    dx = g @ wq if need_x else None
    gw = g.t() @ x
    dw = pass_inside(gw, *inside)
    if isinstance(s, torch.Tensor):  # per-channel scales: one sum per output channel
        dl = (gw * (q - pass_inside(v, *inside))).sum(1) * s * scalar(LN2 * gs, g.dtype)
    else:
        dl = (gw * (q - pass_inside(v, *inside))).sum() * scalar(s * LN2 * gs, g.dtype)
    return dx, dw, pass_inside(g.sum(0), *inside_b), dl


class _FakeQuantActFn(torch.autograd.Function):
    """The activation quantizer in one op (:func:`act_quant_fwd` / :func:`act_quant_bwd`):
    the same values and gradients as composing ``pow2_scale`` and ``surrogate.quantize``."""

    @staticmethod
    def forward(ctx, x, log2_scale, s: float, surrogate, hi: int, gs: float,
                binary_grad: str = "box"):
        y, ctx.saved = act_quant_fwd(x, s, surrogate, hi, True, binary_grad)
        ctx.s, ctx.gs = s, gs
        return y

    @staticmethod
    def backward(ctx, g):
        dx, dl = act_quant_bwd(g, ctx.saved, ctx.s, ctx.gs)
        del ctx.saved
        return dx, dl, None, None, None, None, None


class _BinaryTriangleFn(torch.autograd.Function):
    """The composed path's 1-bit code with the ``"triangle"`` gradient: forward the code
    ``q`` (computed by the surrogate), backward ``g * binary_triangle_grad(v)``."""

    @staticmethod
    def forward(ctx, v, q):
        ctx.save_for_backward(v)
        return q

    @staticmethod
    def backward(ctx, g):
        (v,) = ctx.saved_tensors
        return g * binary_triangle_grad(v), None


class _QuantLinearFn(torch.autograd.Function):
    """The quantized linear layer in one op (:func:`linear_quant_fwd` /
    :func:`linear_quant_bwd`): the same values and gradients as :class:`_FakeQuantWeightFn`,
    :class:`_FakeQuantBiasFn` and ``addmm`` composed."""

    @staticmethod
    def forward(ctx, x, w, b, log2_scale, s: float, s_acc: float, lo: int, hi: int,
                one_bit: bool, gs: float, blo: int, bhi: int):
        z, ctx.saved = linear_quant_fwd(x, w, b, s, s_acc, lo, hi, one_bit, blo, bhi)
        ctx.s, ctx.gs = s, gs
        return z

    @staticmethod
    def backward(ctx, g):
        dx, dw, db, dl = linear_quant_bwd(g, ctx.saved, ctx.s, ctx.gs, ctx.needs_input_grad[0])
        del ctx.saved
        return dx, dw, db, dl, None, None, None, None, None, None, None, None


class WeightQuantizer(nn.Module):
    """Signed weight quantizer with a learned power-of-two scale, per tensor or per channel.

    Parameters
    ----------
    bits : int
        Weight width, 1..8 (see the module docstring for the code ranges).
    channels : int, optional
        Per-output-channel scales: one learned exponent per output channel (the first axis of
        the weight); :attr:`exp` is then an int64 tensor of ``channels`` exponents.
    free : bool
        Free scale ``2**log2_scale`` (not rounded to a power of two; see the module docstring).
    """

    def __init__(self, bits: int, scale_grad: str = "auto", channels: int | None = None,
                 free: bool = False):
        super().__init__()
        self.bits = check_bits("weight_bits", bits)
        self.free = bool(free)
        self.lo, self.hi = weight_code_range(bits)
        self.channels = channels
        self.log2_scale = nn.Parameter(torch.zeros(() if channels is None else (channels,)))
        self.scale_grad = scale_grad

    @property
    def per_channel(self) -> bool:
        return self.channels is not None

    def extra_repr(self) -> str:
        e = self.log2_scale.detach() if self.free else self.exp  # free: the log2 scale itself
        if isinstance(e, torch.Tensor):
            e = [round(v, 4) for v in e.tolist()] if e.dim() else round(e.item(), 4)
        return f"bits={self.bits}, codes=[{self.lo}, {self.hi}], scale=2**{e}"

    @torch.no_grad()
    def init_scale(self, w: torch.Tensor) -> None:
        """LSQ-style init ``s = 2 * mean|w| / sqrt(hi)`` (``mean|w|`` for 1 bit), as ``log2 s``
        (per channel: the mean of each output channel)."""
        if self.per_channel:
            m = w.abs().reshape(w.shape[0], -1).mean(1)
            s = m if self.bits == 1 else 2 * m / math.sqrt(self.hi)
            self.log2_scale.copy_(torch.log2(s.clamp_min(1e-12)))
            return
        m = float(w.abs().mean())
        s = m if self.bits == 1 else 2 * m / math.sqrt(self.hi)
        self.log2_scale.fill_(math.log2(max(s, 1e-12)))

    @property
    def exp(self) -> int | torch.Tensor:
        """The integer exponent(s) the forward pass uses (per channel: an int64 tensor)."""
        if self.per_channel:
            return round_half_up(self.log2_scale.detach()).to(torch.int64)
        return exponent(self.log2_scale)

    def scale(self) -> torch.Tensor:
        return torch.exp2(self.log2_scale) if self.free else pow2_scale(self.log2_scale)

    def _log2_scale(self, w: torch.Tensor) -> torch.Tensor:
        """The scale parameter shaped to broadcast against ``w`` (``(out, 1, ...)`` per channel)."""
        if self.per_channel:
            return self.log2_scale.reshape((-1,) + (1,) * (w.dim() - 1))
        return self.log2_scale

    def _n(self, w: torch.Tensor) -> int:
        """Values sharing one scale (LSQ's ``N``)."""
        return w[0].numel() if self.per_channel else w.numel()

    def codes_float(self, w: torch.Tensor) -> torch.Tensor:
        """Integer codes as a float tensor, with straight-through gradients to ``w`` and scale."""
        v = w / self._scale(w)
        if self.bits == 1:
            return _SignSTE.apply(v)
        return torch.clamp(STERoundFn.apply(v), self.lo, self.hi)

    def _scale(self, w: torch.Tensor) -> torch.Tensor:
        """The scale (broadcast against ``w``) with the gradient to ``log2_scale`` (LSQ-scaled
        with ``scale_grad="lsq"``)."""
        log2_scale = self._log2_scale(w)
        if self.scale_grad == "lsq":
            log2_scale = grad_scale(log2_scale, lsq_grad_factor(self._n(w), self.hi))
        return torch.exp2(log2_scale) if self.free else pow2_scale(log2_scale)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        """Fake-quantized weights ``s * codes`` (one fused op, see :class:`_FakeQuantWeightFn`;
        composed with autograd for free scales)."""
        if self.free:
            return self._scale(w) * self.codes_float(w)
        gs = lsq_grad_factor(self._n(w), self.hi) if self.scale_grad == "lsq" else 1.0
        return _FakeQuantWeightFn.apply(w, self._log2_scale(w), self.lo, self.hi,
                                        self.bits == 1, gs)

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
    free : bool
        Free scale ``2**log2_scale`` (not rounded; never the fused op).
    binary_grad : str
        1-bit codes: the shape of the straight-through gradient (:data:`BINARY_GRADS`).
    """

    #: Smallest code (unsigned codes start at 0).
    lo = 0

    def __init__(self, bits: int, surrogate: str | Surrogate = "sigmoid", free: bool = False,
                 binary_grad: str = "box"):
        super().__init__()
        self.bits = check_bits("act_bits", bits)
        self.hi = (1 << bits) - 1
        self.free = bool(free)
        self.binary_grad = check_binary_grad(binary_grad, bits)
        self.surrogate = make_surrogate(surrogate) if isinstance(surrogate, str) else surrogate
        self.log2_scale = nn.Parameter(torch.zeros(()))
        if self.surrogate.learns_sharpness:
            # DSQ: alpha = sigmoid(theta), initialised to the paper's alpha.
            a = self.surrogate.alpha_init
            self.sharpness_logit = nn.Parameter(torch.tensor(math.log(a / (1 - a))))
            self.surrogate.theta = self.sharpness_logit

    def extra_repr(self) -> str:
        e = round(float(self.log2_scale.detach()), 4) if self.free else self.exp
        return (f"bits={self.bits}, codes=[{self.lo}, {self.hi}], scale=2**{e}, "
                f"surrogate={self.surrogate}")

    @torch.no_grad()
    def init_scale(self, x: torch.Tensor) -> None:
        """Init from a batch of pre-activations: the 99.9th percentile of ``relu(x)`` maps to the
        largest code (a power of two at or above, so little is clipped; free: exactly)."""
        self._init_top(torch.relu(x.detach().flatten().to(torch.float64)))

    def _init_top(self, r: torch.Tensor) -> None:
        top = float(torch.quantile(r, 0.999)) if r.numel() else 1.0
        if top <= 0:  # a dead unit (no positive input): any scale; keep it near the inputs'
            top = float(r.abs().max()) if r.numel() else 1.0
        if top <= 0:
            top = float(self.hi)
        e = math.log2(max(top / self.hi, 1e-12))
        self.log2_scale.fill_(e if self.free else math.ceil(e))

    @property
    def exp(self) -> int:
        return exponent(self.log2_scale)

    def scale(self) -> torch.Tensor:
        return torch.exp2(self.log2_scale) if self.free else pow2_scale(self.log2_scale)

    def _apply(self, fn, *args, **kwargs):
        out = super()._apply(fn, *args, **kwargs)
        if self.surrogate.learns_sharpness:  # .double() etc. replace the parameter's tensor
            self.surrogate.theta = self.sharpness_logit
        return out

    def fusable(self) -> bool:
        """True when the surrogate has a closed form :func:`act_quant_fwd` can use (not PACT,
        not learned-sharpness DSQ while soft)."""
        sur = self.surrogate
        return (sur.scale_grad != "pact" and not (sur.learns_sharpness and not sur.hard)
                and not self.free)

    def forward(self, x: torch.Tensor | QuantTensor) -> torch.Tensor | QuantTensor:
        """Quantize: a :class:`~softfloor.nn.tensor.QuantTensor` (the layer on its own; any
        input scale, an accumulator or codes) gives a QuantTensor of this layer's codes; a plain
        tensor of real values gives the real fake-quantized values."""
        if isinstance(x, QuantTensor):
            return self.forward_quant(x)
        mode = self.surrogate.scale_grad
        if self.fusable():
            # One fused op (same values and gradients as the composition below).
            gs = lsq_grad_factor(x[0].numel(), self.hi) if mode == "lsq" else 1.0
            return _FakeQuantActFn.apply(x, self.log2_scale, 2.0 ** self.exp, self.surrogate,
                                         self.hi, gs, self.binary_grad)
        return self.forward_composed(x)

    def forward_composed(self, x: torch.Tensor) -> torch.Tensor:
        """The activation quantizer composed from autograd ops (learned-sharpness DSQ while
        soft, PACT; the reference the fused op is tested against)."""
        mode = self.surrogate.scale_grad
        log2_scale = self.log2_scale
        if mode == "lsq":
            log2_scale = grad_scale(log2_scale, lsq_grad_factor(x[0].numel(), self.hi))
        s = torch.exp2(log2_scale) if self.free else pow2_scale(log2_scale)
        if mode == "pact":
            # PACT: y = s_d * round(clip(x, 0, alpha) / s_d), alpha = s * hi; s_d carries no
            # gradient, so d y / d alpha = 1 exactly where x > alpha.
            sd = s.detach()
            x = torch.minimum(torch.relu(x) if self.lo == 0 else torch.maximum(x, s * self.lo),
                              s * self.hi)
            return sd * self.surrogate.quantize(x / sd, self.lo, self.hi)
        v = x / s
        q = self.surrogate.quantize(v, self.lo, self.hi)
        if self.binary_grad != "box":
            rg = self.surrogate.round_and_grad(v.detach(), True)   # None: no closed form
            if rg is not None and reshapes_binary_grad(self.binary_grad, self.hi,
                                                       self.surrogate, rg[1]):
                q = _BinaryTriangleFn.apply(v, q.detach())
        return s * q


    # -- on its own: QuantTensor in, QuantTensor out -------------------------------------------

    def forward_quant(self, x: QuantTensor) -> QuantTensor:
        """The layer on its own (see :meth:`forward`).

        Power-of-two scales: ``clamp(R(x / s), lo, hi) * s`` on the real values; after a
        BatchNorm threshold (``x.bn``, a 1-bit activation) the hard phase decides with the exact
        integer comparison the exported layer makes. Free scales: the codes
        ``clamp(R(acc * m / 2**shift), lo, hi)`` (:func:`free_requant`, multiplier and shift of
        the ratio of the scales), exactly the exported requantization in the hard phase.
        """
        if self.free or x.free:
            return self._forward_free(x)
        if x.bn is not None:
            y = self._threshold_gate(x, self(x.value))
        else:
            y = self(x.value)
        return QuantTensor(y.to(self.log2_scale.dtype), exp=self.exp, lo=self.lo, hi=self.hi)

    def _threshold_gate(self, x: QuantTensor, y: torch.Tensor) -> torch.Tensor:
        """In the hard phase, the 1-bit code of ``x.bn``'s integer threshold on the accumulator
        ``x.pre`` (the gradient stays the surrogate's through BatchNorm)."""
        if self.bits != 1:
            raise ValueError(f"{type(self).__name__}({self.bits} bits) after a BatchNorm "
                             "threshold: only a 1-bit activation turns BatchNorm into an integer "
                             "threshold; use batchnorm='fold' (True) on the layer before")
        if not self.surrogate.hard:
            return y
        lin = x.bn
        with torch.no_grad():
            direction, bound = lin.threshold_bound(x.in_exp, self.exp, lin.wq.exp)
            e_acc = x.in_exp + lin.wq.exp
            if isinstance(e_acc, torch.Tensor):
                inv = torch.exp2(-e_acc.to(x.pre.dtype))
                acc = x.pre * lin.channel_view(inv, x.pre.dim())
                gate = (acc * lin.channel_view(direction, acc.dim())
                        >= lin.channel_view(bound, acc.dim())).to(y.dtype)
            else:
                acc = x.pre * 2.0 ** -e_acc
                gate = (acc * lin.channel_view(direction, acc.dim())
                        >= lin.channel_view(bound, acc.dim())).to(y.dtype)
        return y + (2.0 ** self.exp * gate - y).detach()

    def _forward_free(self, x: QuantTensor) -> QuantTensor:
        if not self.free:
            raise ValueError(f"{type(self).__name__} has a power-of-two scale but its input has "
                             "a free one: use the same scales (po2 or free) along the network")
        if x.bn is not None:
            raise ValueError("BatchNorm as a threshold needs power-of-two scales; use "
                             "batchnorm='fold' with free scales")
        acc = x.codes().to(torch.float64)
        l_in = x.log2 if x.free else _exp_log2(x.exp)
        l_a = free_log2(self, acc)
        rq = free_ratio_params(l_in.detach() - self.log2_scale.detach())
        q = free_requant(acc, rq, l_in - l_a, self)
        return QuantTensor(q, log2=l_a, lo=self.lo, hi=self.hi)

    @torch.no_grad()
    def calibrate(self, x: QuantTensor) -> QuantTensor:
        """Calibration: the scale from the batch ``x`` (its real values; after a BatchNorm
        threshold also the statistics, and beta so that the activation fires at the mean), then
        this layer's hard output."""
        if x.bn is not None:
            lin = x.bn
            lin.bn.reset_stats(lin.bn.rows(x.pre))
            z = lin.bn.apply(x.pre)
            self.init_scale(z)
            lin.bn.beta.fill_(2.0 ** self.exp / 2)   # fire at the mean: s/2 sits at beta
            x = x.with_value(lin.bn.apply(x.pre))
        elif self.free or x.free:
            # As the networks on codes always have: the next codes from the real values
            # (not through the quantized ratio), so calibration is that of the real network.
            z = x.real().to(torch.float64)
            self.init_scale(z)
            l_a = float(self.log2_scale)
            q = torch.clamp(round_half_up(z * 2.0 ** -l_a), self.lo, self.hi)
            return QuantTensor(q, log2=self.log2_scale.detach().to(torch.float64), lo=self.lo,
                               hi=self.hi)
        else:
            self.init_scale(x.value)
        hard, self.surrogate.hard = self.surrogate.hard, True
        try:
            return self(x)
        finally:
            self.surrogate.hard = hard

    def to_int(self, st: IntState) -> tuple[list, IntState]:
        """The exported ops: a ``requant`` to this layer's codes (per channel after per-channel
        weight scales), or, after a BatchNorm threshold, the pending weighted op with the
        threshold folded into its bias and a ``requant`` to ``[0, 1]``."""
        k = st.weighted
        if st.pending is not None:
            return self._threshold_to_int(st)
        if self.free or st.log2 is not None:
            if not self.free:
                raise ValueError(f"{type(self).__name__}: power-of-two scale after a free one")
            l_in = st.log2 if st.log2 is not None else _exp_log2(st.exp)
            shift, mult = free_ratio_params(l_in - self.log2_scale.detach())
        else:
            e_in = torch.as_tensor(st.exp) if isinstance(st.exp, np.ndarray) else st.exp
            shift, mult = requant_params(0, e_in, self.exp)
        if st.strict:
            lowering.check_requant_limits(shift, mult)
        op = lowering.requant_op(st.name(f"act{k}" if k else "act"), shift, mult, self.bits,
                                 self.lo < 0, self.lo, self.hi)
        lo, hi = lowering.out_range(op, st.lo, st.hi)
        new = _replace(st, lo=lo, hi=hi, kind="codes", exp=None if self.free else self.exp,
                       log2=self.log2_scale.detach().to(torch.float64) if self.free else None)
        return [op], new

    def _threshold_to_int(self, st: IntState) -> tuple[list, IntState]:
        lin, w, b, in_exp, in_lo, in_hi, k, make = st.pending
        if self.bits != 1 or self.free:
            raise ValueError(f"{type(lin).__name__} with batchnorm='threshold' must be followed "
                             f"by a 1-bit power-of-two activation, got {self!r}; use "
                             f"batchnorm='fold' (True)")
        w2, b2 = lowering.threshold_rewrite(w, b, *lin.threshold(in_exp, self.exp), in_lo, in_hi)
        weighted = make(w2, b2)
        rq = Requant(st.name(f"act{k}"), 0, "half_up", 1, False, 0, 1, 1)
        lo, hi = lowering.acc_bounds(lowering.as_numpy(w2), lowering.as_numpy(b2), in_lo, in_hi)
        lo, hi = lowering.out_range(rq, lo, hi)
        return [weighted, rq], _replace(st, lo=lo, hi=hi, kind="codes", exp=self.exp,
                                        log2=None, pending=None)


def _replace(st: IntState, **kw) -> IntState:
    """``st`` with fields changed (the name registry and counters are shared)."""
    import dataclasses
    return dataclasses.replace(st, **kw)


def _exp_log2(exp) -> torch.Tensor:
    """A power-of-two exponent (int or per-channel int64) as a float64 log2 scale."""
    if isinstance(exp, (torch.Tensor, np.ndarray)):
        return torch.as_tensor(exp).to(torch.float64)
    return torch.tensor(float(exp), dtype=torch.float64)


def free_ratio_params(log2_ratio: torch.Tensor):
    """:func:`free_requant_params` of a log2 ratio: ``(shift, multiplier)`` as ints, or per
    channel (a vector) as int64 tensors."""
    if log2_ratio.dim():
        pairs = [free_requant_params(v) for v in log2_ratio.tolist()]
        return tuple(torch.tensor(c, dtype=torch.int64) for c in zip(*pairs))
    return free_requant_params(float(log2_ratio))


def free_log2(quantizer, x: torch.Tensor) -> torch.Tensor:
    """A weight quantizer's (``x`` its weight) or an activation's (``x`` its input batch) log2
    scale parameter, with LSQ's gradient scale when it has one (the value exactly the same)."""
    ls = quantizer.log2_scale
    if isinstance(quantizer, QuantReLU):
        if quantizer.surrogate.scale_grad == "lsq":
            return grad_scale(ls, lsq_grad_factor(x[0].numel(), quantizer.hi))
        return ls
    if quantizer.scale_grad == "lsq":
        return grad_scale(ls, lsq_grad_factor(quantizer._n(x), quantizer.hi))
    return ls


def free_bias(bc: torch.Tensor, s_acc: torch.Tensor, l_acc: torch.Tensor) -> torch.Tensor:
    """Bias codes ``bc`` (their gradient to the bias) whose real value ``s_acc bc`` carries no
    gradient to the scales, as with power-of-two scales: the added term is exactly 0 and cancels
    the gradient of ``2**l_acc bc`` to the log2 scales in ``l_acc``."""
    u = bc.detach() * s_acc / torch.exp2(l_acc)
    return bc + (u - u.detach())


def free_requant(acc: torch.Tensor, rq: tuple, l_ratio: torch.Tensor, act) -> torch.Tensor:
    """Activation codes ``clamp(R(acc * m / 2**shift), lo, hi)`` of accumulators ``acc`` (``(N,
    C)`` or ``(N, C, H, W)``; per-channel ``m``, ``shift``, ``l_ratio`` apply to axis 1).

    The value of ``acc * m / 2**shift`` is exact (float64, ``acc * m < 2**53``), so the hard
    phase is ``arith.requantize(acc, shift, "half_up", lo, hi, m)``; its gradient is that of
    ``acc * 2**l_ratio``, the real ratio (the multiplier's rounding straight through).
    """
    shift, mult = rq
    view = (-1,) + (1,) * (acc.dim() - 2)
    if isinstance(mult, torch.Tensor):
        ratio = (mult.to(acc.dtype) * torch.exp2(-shift.to(acc.dtype))).reshape(view)
    else:
        ratio = mult * 2.0 ** -shift
    t = acc * torch.exp2(l_ratio).reshape(view)
    return act.surrogate.quantize((t - t.detach()) + acc.detach() * ratio, act.lo, act.hi)


#: PACT's clip-level weight decay (Choi et al. 2018: ``alpha`` is L2-regularised, ``lambda_alpha``):
#: :attr:`softfloor.train.TrainConfig.pact_decay`'s default.
PACT_DECAY = 1e-2


def pact_penalty(acts, decay: float) -> torch.Tensor | None:
    """PACT's regulariser of the clip levels: ``decay * sum(alpha**2)`` over the activation
    quantizers in ``acts`` whose surrogate is PACT (``alpha = 2**log2_scale * hi``, the clip
    level before its power-of-two rounding, so the gradient reaches ``log2_scale``); ``None``
    when there is none or ``decay`` is 0.

    Without it PACT's clip only learns from the inputs above it: once every input of a layer
    sits below the 1-bit threshold ``alpha / 2`` nothing moves ``alpha`` back down and the
    network is dead (``docs/experiments.md``).
    """
    pact = [a for a in acts if a.surrogate.scale_grad == "pact"]
    if not pact or not decay:
        return None
    return decay * sum((torch.exp2(a.log2_scale) * a.hi) ** 2 for a in pact)


class QuantHardTanh(QuantReLU):
    """Hardtanh + signed ``bits`` quantization through a rounding surrogate, power-of-two scale.

    Codes ``clamp(R(x / s), lo, hi)`` with ``lo = -2**(bits-1)``, ``hi = 2**(bits-1) - 1`` (the
    full two's complement range; zero is a code, so zero padding and max-pool of codes work as
    for :class:`QuantReLU`). The hard phase is exactly ``arith.requantize(acc, shift,
    "half_up", lo, hi)``. Always the composed (autograd) path: :meth:`fusable` is False.
    PACT clips at both ends, ``s lo`` and ``s hi``.

    Parameters
    ----------
    bits : int
        Activation width, 2..8 (a signed 1-bit code is ``{-1, 0}``: rejected).
    surrogate : str or Surrogate
    """

    def __init__(self, bits: int, surrogate: str | Surrogate = "sigmoid", free: bool = False,
                 binary_grad: str = "box"):
        check_bits("act_bits", bits)
        if bits == 1:
            raise ValueError(
                "act_bits 1 is not supported with hardtanh activations: a signed 1-bit code is "
                "{-1, 0}; use act_bits >= 2, or ReLU activations ({0, 1}, with BatchNorm as an "
                "integer threshold)")
        super().__init__(bits, surrogate, free, binary_grad)
        self.lo, self.hi = arith.code_range(bits, True)

    @torch.no_grad()
    def init_scale(self, x: torch.Tensor) -> None:
        """Init from a batch of pre-activations: the 99.9th percentile of ``|x|`` maps to the
        largest positive code (a power of two at or above, so little is clipped; free: exactly)."""
        self._init_top(x.detach().flatten().to(torch.float64).abs())

    def fusable(self) -> bool:
        """False: the fused activation op (and the fused MLP step) clamp at 0."""
        return False


BN_MODES = ("fold", "threshold")


class BatchNormStats(nn.Module):
    """BatchNorm's affine parameters and statistics, applied by folding (never as a layer).

    ``gamma``/``beta`` are learned; ``running_mean``/``running_var`` follow the batches with
    ``momentum`` while ``use_batch`` is set (the soft phase of training) and are frozen
    afterwards, so the hard phase trains exactly the model that is exported.
    """

    def __init__(self, features: int, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(features))
        self.beta = nn.Parameter(torch.zeros(features))
        self.register_buffer("running_mean", torch.zeros(features))
        self.register_buffer("running_var", torch.ones(features))
        self.momentum, self.eps = momentum, eps
        self.use_batch = True

    def extra_repr(self) -> str:
        return f"{self.gamma.numel()}, batch_stats={self.use_batch}"

    def stats(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, var)``: of the batch ``z`` (updating the running ones) or the running ones."""
        if self.training and self.use_batch and z.shape[0] > 1:
            return self.batch_stats(z)[:2]
        return self.running_mean, self.running_var

    def batch_stats(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(mean, var, z - mean)`` of the batch ``z``; updates the running statistics.

        Two passes of sums: the same statistics as ``torch.var_mean(z, 0, unbiased=False)``,
        a fraction of its cost on small batches."""
        inv_n = scalar(1.0 / z.shape[0], z.dtype)
        mean = z.sum(0) * inv_n
        zc = z - mean
        var = (zc * zc).sum(0) * inv_n
        with torch.no_grad():  # running = (1 - momentum) running + momentum batch
            torch._foreach_lerp_([self.running_mean, self.running_var], [mean, var],
                                 self.momentum)
        return mean, var, zc

    @staticmethod
    def rows(z: torch.Tensor) -> torch.Tensor:
        """``z`` as ``(rows, channels)``: itself for ``(N, C)``; ``(N * H * W, C)`` for an
        ``(N, C, H, W)`` batch (statistics per channel over batch, height and width)."""
        if z.dim() == 2:
            return z
        return z.transpose(0, 1).reshape(z.shape[1], -1).T

    def apply(self, z: torch.Tensor) -> torch.Tensor:
        """BatchNorm of ``z`` (``(N, C)`` or ``(N, C, H, W)``): ``(z - mean) * gamma / sqrt(var +
        eps) + beta`` with :meth:`stats` (the batch's while training with batch statistics)."""
        mean, var = self.stats(self.rows(z))
        f = self.factor(var)
        if z.dim() == 2:
            return (z - mean) * f + self.beta
        v = (-1, 1, 1)
        return (z - mean.reshape(v)) * f.reshape(v) + self.beta.reshape(v)

    @torch.no_grad()
    def reset_stats(self, z: torch.Tensor) -> None:
        """Set the running statistics to those of ``z`` (calibration)."""
        self.running_mean.copy_(z.mean(0))
        self.running_var.copy_(z.var(0, unbiased=False))

    def fold(self, weight: torch.Tensor, bias: torch.Tensor, batch=None
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """The folding rule: ``(weight * g, beta + (bias - mean) * g)`` per output channel (the
        first axis of ``weight``), ``g = gamma / sqrt(var + eps)``.

        ``batch`` (optional) is a callable giving the layer's float output as ``(rows,
        channels)``: its statistics are used while training with batch statistics on (and it
        is only called then); otherwise the running statistics. The one definition behind
        :meth:`QuantLinear.folded` and :meth:`softfloor.cnn.QuantConv2d.folded` (the fused MLP
        step computes the same expressions, tested equal)."""
        if batch is not None and self.training and self.use_batch:
            mean, var = self.stats(batch())
        else:
            mean, var = self.running_mean, self.running_var
        g = self.factor(var)
        return (weight * g.reshape((-1,) + (1,) * (weight.dim() - 1)),
                self.beta + (bias - mean) * g)

    def var_eps(self, var: torch.Tensor) -> torch.Tensor:
        """``var + eps``."""
        return var + scalar(self.eps, var.dtype)

    def rstd(self, var: torch.Tensor) -> torch.Tensor:
        """``1 / sqrt(var + eps)``."""
        return torch.rsqrt(self.var_eps(var))

    def factor(self, var: torch.Tensor) -> torch.Tensor:
        """``gamma / sqrt(var + eps)``."""
        return self.gamma * self.rstd(var)


def check_bn_mode(batchnorm, bn=None) -> str | None:
    """The BatchNorm mode of a weighted layer from ``batchnorm`` (``False``/``None``, ``True`` or
    ``"fold"``, ``"threshold"``) or the older ``bn`` argument (None or a mode)."""
    mode = bn if batchnorm is None else ("fold" if batchnorm is True else batchnorm or None)
    if mode is not None and mode not in BN_MODES:
        raise ValueError(f"bn must be None or one of {', '.join(BN_MODES)}, got {mode!r}")
    return mode


def check_scale_kind(scales: str | None, free_scale: bool) -> bool:
    """True for free scales: ``scales`` (``"po2"`` or ``"free"``) if given, else ``free_scale``."""
    return bool(free_scale) if scales is None else check_scales(scales) == "free"


def channel_view(t, ndim: int):
    """A per-channel vector shaped to broadcast along axis 1 of an ``ndim``-d batch (itself for
    ``(N, C)``); anything else unchanged."""
    if isinstance(t, torch.Tensor) and t.dim() == 1 and ndim > 2:
        return t.reshape((-1,) + (1,) * (ndim - 2))
    return t


def weight_scale_grad(surrogate, scale_grad: str) -> str:
    """The weight scale's gradient mode: ``"lsq"`` when the surrogate (a name or None) is LSQ's,
    else ``scale_grad``. A weight quantizer takes the surrogate's scale gradient; weights are
    rounded with the straight-through estimator whatever the surrogate (it shapes the rounding
    of activations)."""
    if surrogate is None:
        return scale_grad
    from .surrogates import SURROGATES, check_surrogate
    name = surrogate if isinstance(surrogate, str) else surrogate.name
    return "lsq" if SURROGATES[check_surrogate(name)].scale_grad == "lsq" else scale_grad


def acc_bound(fan_in: int, x_absmax: int, weight_bits: int, bias_bits: int) -> int:
    """Worst-case accumulator magnitude of a weighted layer: ``fan_in * max|x| * max|w| +
    2**(bias_bits - 1)``."""
    return fan_in * x_absmax * (1 if weight_bits == 1 else 1 << (weight_bits - 1)) \
        + (1 << (bias_bits - 1))


def exact_compute_dtype(dtype: torch.dtype, bound: int, who: str) -> torch.dtype:
    """``dtype`` when integers up to ``bound`` are exact in it, else float64 (a float32 layer
    whose accumulators need more than 24 bits computes in float64); a ValueError beyond
    float64's 53 bits."""
    if bound < 1 << {torch.float32: 24, torch.float64: 53}.get(dtype, 11):
        return dtype
    if bound < 1 << 53:
        return torch.float64
    raise ValueError(f"{who}: accumulators up to {bound} are not exact in float64 "
                     f"({bound.bit_length()} bits > 53); use narrower codes or fewer inputs")


class ThresholdBN:
    """BatchNorm before a 1-bit activation as an integer comparison (``batchnorm="threshold"``),
    shared by :class:`QuantLinear` and :class:`softfloor.cnn.QuantConv2d` (``self.bn`` the
    statistics, ``self.wq`` the weight quantizer)."""

    channel_view = staticmethod(channel_view)

    @torch.no_grad()
    def threshold(self, in_exp: int, act_exp: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``"threshold"`` BatchNorm before a 1-bit activation as an integer comparison.

        The activation fires when ``gamma (z - mu) / sigma + beta >= s / 2`` (``s`` the
        activation scale, ``z = s_acc * acc``, running statistics). Per output channel this is
        ``acc >= t`` (``direction`` +1, ``gamma > 0``), ``acc <= t`` (-1, ``gamma < 0``), or a
        constant (0, ``gamma == 0``: ``t`` is 1 if it always fires, else 0).

        Returns
        -------
        direction : int64 tensor of -1, 0, +1
        t : float64 tensor of integers (``+-inf`` when never / always reachable)
        """
        direction, t_real, fires_const = self._threshold_real(in_exp, act_exp, self.wq.exp)
        t = torch.where(direction > 0, torch.ceil(t_real), torch.floor(t_real))
        t = torch.where(direction == 0, fires_const.to(t.dtype), t).to(torch.float64)
        return direction.to(torch.int64), t

    def threshold_bound(self, in_exp: int, act_exp: int, w_exp: int
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`threshold` as the training forward compares it, in the model's dtype:
        ``(direction, bound)``, the activation fires where ``direction * acc >= bound``.

        ``bound = ceil(direction * t_real)`` (``acc <= floor(t)`` is ``-acc >= ceil(-t)``),
        ``-inf`` / ``+inf`` for a constant channel. The accumulators are exact integers in the
        dtype and ``bound`` is the very value :meth:`threshold` converts to float64, so the
        decisions are those of ``acc >= t`` / ``acc <= t`` (tested against that and against
        the exported layer). The training forward passes (fused and composed) decide with it
        in the hard phase; call it with gradients off.
        """
        direction, t_real, fires_const = self._threshold_real(in_exp, act_exp, w_exp)
        dt = t_real.dtype
        bound = torch.where(direction == 0,
                            torch.where(fires_const, scalar(-math.inf, dt), scalar(math.inf, dt)),
                            torch.ceil(direction * t_real))
        return direction, bound

    def _threshold_real(self, in_exp: int, act_exp: int, w_exp):
        """``(sign(g), t_real, beta >= s / 2)`` in the model's dtype, ``g = gamma / sigma``:
        the one definition of the threshold arithmetic (:meth:`threshold`,
        :meth:`threshold_bound`)."""
        bn = self.bn
        g = bn.factor(bn.running_var)
        dt = g.dtype
        s = 2.0 ** act_exp
        s_acc = 2.0 ** (in_exp + w_exp)
        if not isinstance(s_acc, torch.Tensor):  # per-tensor: a Python float
            s_acc = scalar(s_acc, dt)
        half = scalar(s / 2, dt)
        t_real = (bn.running_mean + (half - bn.beta)
                  / torch.where(g == 0, scalar(1.0, dt), g)) / s_acc
        return torch.sign(g), t_real, bn.beta >= half


class QuantLinear(ThresholdBN, nn.Module):
    """Linear layer with quantized weights and an integer bias at the accumulator scale.

    On its own (a :class:`~softfloor.nn.tensor.QuantTensor` in): returns the accumulator
    ``2**(in_exp + w_exp) * (x_codes @ W_codes.T + b_codes)`` as a QuantTensor (``kind="acc"``),
    the input exponent read from the input. ``forward(x, in_exp)`` with a plain tensor of real
    inputs (codes times ``2**in_exp``) returns the real accumulator (the networks' own paths).

    Parameters
    ----------
    in_features, out_features : int
    weight_bits : int
        1..8.
    bias_bits : int
        Signed width the bias codes are clipped to (1..32).
    scale_grad : str
        Gradient mode of the weight scale (``"auto"`` or ``"lsq"``).
    bn : None, "fold" or "threshold"
        BatchNorm after the layer (also ``batchnorm``). ``"fold"`` (``batchnorm=True``): folded
        into the weights and bias *before* they are quantized (``w * gamma / sigma``, ``beta +
        (b - mu) * gamma / sigma``), so the integer layer is an ordinary one. ``"threshold"``:
        the weights are quantized unfolded and BatchNorm is applied to the accumulator; the
        1-bit activation after it turns it exactly into an integer threshold (see
        :meth:`threshold`).
    per_channel : bool
        One weight scale per output feature (``wq.exp`` an int64 tensor; the accumulator of
        output ``o`` has scale ``s_in * 2**wq.exp[o]``, the bias likewise).
    free_scale : bool
        A free weight scale (also ``scales="free"``): the layer computes on codes (integer
        multiplier + shift requantization in the activation after it).
    surrogate : str, optional
        The weight scale takes this surrogate's scale gradient (``"lsq"``: LSQ's); weights
        round straight-through.
    """

    def __init__(self, in_features: int, out_features: int, weight_bits: int = 4,
                 bias_bits: int = 16, scale_grad: str = "auto", bn: str | None = None,
                 per_channel: bool = False, free_scale: bool = False, *,
                 batchnorm: bool | str | None = None, scales: str | None = None,
                 surrogate: str | None = None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.bias_bits = check_bits("bias_bits", bias_bits, MAX_BIAS_BITS)
        self.bias_lo, self.bias_hi = arith.code_range(bias_bits, True)
        lin = nn.Linear(in_features, out_features)  # PyTorch's default init
        self.weight = nn.Parameter(lin.weight.detach().clone())
        self.bias = nn.Parameter(lin.bias.detach().clone())
        free = check_scale_kind(scales, free_scale)
        self.wq = WeightQuantizer(weight_bits, weight_scale_grad(surrogate, scale_grad),
                                  out_features if per_channel else None, free)
        self.wq.init_scale(self.weight)
        self.bn_mode = check_bn_mode(batchnorm, bn)
        if self.bn_mode == "threshold" and free:
            raise ValueError("QuantLinear: batchnorm='threshold' needs power-of-two scales; use "
                             "batchnorm='fold' with free scales")
        self.bn = BatchNormStats(out_features) if self.bn_mode else None

    def folded(self, x: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Real weight and bias before quantization: BatchNorm folded in (``"fold"`` mode).

        With ``x`` (a training batch) and batch statistics on, the statistics are the batch's.
        """
        if self.bn_mode != "fold":
            return self.weight, self.bias
        return self.bn.fold(self.weight, self.bias,
                            None if x is None else
                            lambda: F.linear(x.to(self.weight.dtype), self.weight, self.bias))

    @property
    def weight_bits(self) -> int:
        return self.wq.bits

    def extra_repr(self) -> str:
        bn = f", batchnorm={self.bn_mode}" if self.bn_mode else ""
        return f"{self.in_features}->{self.out_features}, bias_bits={self.bias_bits}{bn}"

    def acc_scale(self, in_exp: int) -> torch.Tensor:
        return torch.exp2(torch.tensor(float(in_exp), dtype=self.weight.dtype)) * self.wq.scale()

    def bias_codes_float(self, in_exp: int, bias: torch.Tensor | None = None) -> torch.Tensor:
        s_acc = self.acc_scale(in_exp).detach()
        b = self.folded()[1] if bias is None else bias
        return torch.clamp(STERoundFn.apply(b / s_acc), self.bias_lo, self.bias_hi)

    def free_bias_codes_float(self, s_acc: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """Free scales: bias codes at the accumulator scale ``s_acc`` (:func:`free_bias_codes`)."""
        return free_bias_codes(bias, s_acc, self.bias_lo, self.bias_hi)

    def forward(self, x: torch.Tensor | QuantTensor, in_exp: int | None = None):
        if isinstance(x, QuantTensor):
            return self.forward_quant(x)
        if in_exp is None:
            raise TypeError(_NEEDS_CODES.format(type(self).__name__))
        wq = self.wq
        if wq.free:
            raise RuntimeError("a QuantLinear with a free scale has no power-of-two input "
                               "exponent: it runs in QuantMLP.forward_free")
        if wq.per_channel:
            return self.forward_composed(x, in_exp)
        wf, bf = self.folded(x)
        e = wq.exp
        gs = lsq_grad_factor(wf.numel(), wq.hi) if wq.scale_grad == "lsq" else 1.0
        dt = x.dtype
        return _QuantLinearFn.apply(x, wf.to(dt), bf.to(dt), wq.log2_scale, 2.0 ** e,
                                    2.0 ** (in_exp + e), wq.lo, wq.hi, wq.bits == 1, gs,
                                    self.bias_lo, self.bias_hi)

    def forward_composed(self, x: torch.Tensor, in_exp: int) -> torch.Tensor:
        """:meth:`forward` composed from the fused weight and bias ops and ``addmm`` (the
        reference the single fused op is tested against; the path of per-channel scales)."""
        wf, bf = self.folded(x)
        dt = x.dtype
        w = self.wq(wf).to(dt)
        b = _FakeQuantBiasFn.apply(bf, 2.0 ** (in_exp + self.wq.exp), self.bias_lo,
                                   self.bias_hi).to(dt)
        return torch.addmm(b, x, w.T)

    # -- on its own -------------------------------------------------------------------------

    def forward_quant(self, x: QuantTensor) -> QuantTensor:
        """The accumulator of a QuantTensor input (see the class docstring). Power-of-two
        scales compute on real values, in float64 when a float32 layer's accumulators could
        exceed 24 bits (:func:`exact_compute_dtype`); free scales on codes, in float64."""
        check_input(self, x.bn, x.value.shape, 2, self.in_features, self.out_features,
                    f"it needs (N, {self.in_features}) (add a Flatten after convolutions)")
        return accumulate(self, x, self.in_features)

    def _forward_free(self, x: QuantTensor, bound: int) -> QuantTensor:
        q = x.codes().to(torch.float64)
        l_in = x.log2 if x.free else _exp_log2(x.exp)
        l_acc = l_in + free_log2(self.wq, self.weight)
        batch = self.bn_mode == "fold" and self.training and self.bn.use_batch
        wf, bf = self.folded(q * torch.exp2(l_in) if batch else None)
        s_acc = torch.exp2(l_in.detach() + self.wq.log2_scale.detach())
        bc = free_bias(self.free_bias_codes_float(s_acc, bf), s_acc, l_acc).to(q.dtype)
        acc = torch.addmm(bc, q, self.wq.codes_float(wf).to(q.dtype).T)
        return QuantTensor(acc, log2=l_acc, lo=-bound, hi=bound, kind="acc")

    @torch.no_grad()
    def calibrate(self, x: QuantTensor) -> QuantTensor:
        """Calibration on a batch: with BatchNorm folded, its statistics from the float layer's
        output and the weight scale from the folded weights; then the layer's output."""
        if self.bn_mode == "fold":
            xr = x.real().to(self.weight.dtype)
            self.bn.reset_stats(xr @ self.weight.T + self.bias)
            self.init_weight_scale()
        return self(x)

    def to_int(self, st: IntState) -> tuple[list, IntState]:
        """A ``dense`` op (weight and bias codes; widths from the actual integers), or with
        ``batchnorm="threshold"`` the op pending the 1-bit activation that gets its
        threshold."""
        check_input(self, st.pending, st.shape, 1, self.in_features, self.out_features,
                    "add a Flatten before it", batched=False)
        return weighted_to_int(self, st, "fc", self.weight_codes(),
                               lambda name, w, b, bb, ab: Dense(name, w, b, self.weight_bits,
                                                                bb, ab),
                               (self.out_features,))

    @torch.no_grad()
    def init_weight_scale(self) -> None:
        """Re-initialise the weight scale from the (folded) weights."""
        self.wq.init_scale(self.folded()[0])

    @torch.no_grad()
    def weight_codes(self) -> torch.Tensor:
        """Integer weight codes (int64), ``(out_features, in_features)``."""
        return self.wq.codes(self.folded()[0])

    @torch.no_grad()
    def bias_codes(self, in_exp: int) -> torch.Tensor:
        """Integer bias codes (int64) at the accumulator scale ``2**(in_exp + w_exp)``."""
        return self.bias_codes_float(in_exp).to(torch.int64)


def accumulate(layer, x: QuantTensor, fan_in: int) -> QuantTensor:
    """The accumulator QuantTensor of a weighted layer (:class:`QuantLinear`, ``QuantConv2d``)
    on ``x``: power-of-two scales through the layer's own forward on real values (in float64
    when its accumulators could exceed the dtype's exact integers), free scales through its
    ``_forward_free`` on codes; with ``batchnorm="threshold"`` BatchNorm of the accumulator,
    pending the 1-bit activation."""
    name = type(layer).__name__
    bound = acc_bound(fan_in, x.absmax, layer.wq.bits, layer.bias_bits)
    if layer.wq.free:
        return layer._forward_free(x, bound)
    if x.free:
        raise ValueError(_MIXED.format(name))
    if x.per_channel:
        raise ValueError(_PER_CHANNEL_IN.format(name))
    dt = exact_compute_dtype(layer.weight.dtype, bound, name)
    z = layer(x.value.to(dt), x.exp)
    e_acc = x.exp + layer.wq.exp
    if layer.bn_mode == "threshold":
        return QuantTensor(layer.bn.apply(z), exp=e_acc, lo=-bound, hi=bound, kind="acc",
                           bn=layer, pre=z, in_exp=x.exp)
    return QuantTensor(z, exp=e_acc, lo=-bound, hi=bound, kind="acc")


_NEEDS_CODES = ("{} needs quantized inputs: a QuantTensor from softfloor.nn.QuantInput or a "
                "quantized activation (got a plain tensor); put a QuantInput before the first layer")
_PENDING_BN = ("{} follows a layer with batchnorm='threshold', which must be followed by a 1-bit "
               "QuantReLU (the BatchNorm becomes its integer threshold); use batchnorm='fold' "
               "(True) otherwise")
_MIXED = ("{} has a power-of-two weight scale but its input has a free scale: use the same "
          "scales (po2 or free) along the network")
_PER_CHANNEL_IN = ("{} gets an input with per-channel scales (a layer with per-channel weight "
                   "scales and no activation after it): put a quantized activation between them")


def check_input(layer, pending, shape, dims: int, width: int, out: int, needs: str,
                batched: bool = True) -> None:
    """Refuse what a weighted layer cannot take: a BatchNorm threshold still pending, or an
    input of ``dims`` axes (the batch axis first when ``batched``) whose feature or channel axis
    is not ``width``; ``needs`` says what to do."""
    if pending is not None:
        raise ValueError(_PENDING_BN.format(type(layer).__name__))
    shape = tuple(shape)
    if len(shape) != dims or shape[int(batched)] != width:
        raise ValueError(f"{type(layer).__name__}({width}->{out}) "
                         f"{'got input' if batched else 'gets codes'} of shape {shape}; {needs}")


def weighted_to_int(layer, st: IntState, kind: str, w: torch.Tensor, make, out_shape
                    ) -> tuple[list, IntState]:
    """The export of a weighted layer (:class:`QuantLinear`, ``QuantConv2d``): integer weight
    and bias codes at the accumulator scale, an op from ``make(name, w, b, bias_bits,
    acc_bits)`` named ``kind`` + its number, and the accumulator's state; with a BatchNorm
    threshold, pending the activation."""
    import dataclasses
    st.weighted += 1
    k = st.weighted
    counts = st.names
    n = 1 + sum(1 for name in counts if name.startswith(f"{kind}") and name[len(kind):].isdigit())
    name_base = f"{kind}{n}"
    if layer.wq.free:
        wf, bf = layer.folded()
        l_in = st.log2 if st.log2 is not None else _exp_log2(st.exp)
        s_acc = torch.exp2(l_in + layer.wq.log2_scale.detach())
        b = layer.free_bias_codes_float(s_acc, bf).detach().to(torch.int64)
        scale = dict(exp=None, log2=l_in + layer.wq.log2_scale.detach().to(torch.float64))
    else:
        if st.log2 is not None:
            raise ValueError(_MIXED.format(type(layer).__name__))
        if st.per_channel:
            raise ValueError(_PER_CHANNEL_IN.format(type(layer).__name__))
        b = layer.bias_codes(st.exp)
        e = layer.wq.exp
        scale = dict(exp=st.exp + (e.numpy() if isinstance(e, torch.Tensor) else e), log2=None)

    def build(w2, b2, name=None):
        wn, bn_ = lowering.as_numpy(w2), lowering.as_numpy(b2)
        bb, ab = lowering.widths(wn, bn_, st.lo, st.hi)
        return make(name or st.name(name_base), wn, bn_, bb, ab)

    if layer.bn_mode == "threshold":
        st.name(name_base)  # reserve the name
        pend = (layer, w, b, st.exp, st.lo, st.hi, k, lambda w2, b2: build(w2, b2, name_base))
        return [], dataclasses.replace(st, shape=out_shape, pending=pend, kind="acc", **scale)
    op = build(w, b)
    lo, hi = lowering.acc_bounds(lowering.as_numpy(w), lowering.as_numpy(b), st.lo, st.hi)
    return [op], dataclasses.replace(st, shape=out_shape, lo=lo, hi=hi, kind="acc", **scale)
