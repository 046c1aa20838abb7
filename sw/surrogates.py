"""Smooth surrogates of rounding, their closed-form gradients and the annealing schedule.

The formula this project started from is wrong
-----------------------------------------------
``floor(x) ~ sigmoid(k * (x - floor(x) - 1/2))`` is *not* a floor. The right-hand side is
periodic with period 1 and lies in ``(0, 1)``: it is only the smooth "round-up bit" of the
fractional part (:func:`round_up_bit`). At ``x = -3`` it is ~0 while ``floor(x) = -3``.

The corrected smooth staircase
------------------------------
Add the integer part back::

    R_k(x) = floor(x) + sigmoid(k * (frac(x) - 1/2)),      frac(x) = x - floor(x)

is a smooth *round-half-up*: its hard limit (``k -> inf``) is ``floor(x + 1/2)`` away from the
tie points. A smooth *floor* is ``R_k(x - 1/2)`` (:func:`smooth_floor`). The gradient is
``k * s * (1 - s)`` with ``s = sigmoid(k * (frac(x) - 1/2))``.

``R_k`` as written jumps at every integer by ``2 * sigmoid(-k/2)`` (the sigmoid never quite
reaches 0 or 1): 0.013 at ``k = 10`` but 0.76 at ``k = 1``, exactly where annealing starts. So
softfloor uses the *normalised* staircase (:func:`smooth_round`)::

    R_k(x) = floor(x) + (s - sigmoid(-k/2)) / tanh(k/4)
    R_k'(x) = k * s * (1 - s) / tanh(k/4)

(``sigmoid(k/2) - sigmoid(-k/2) = tanh(k/4)``). It is exactly continuous (and C1: the
derivatives at ``frac = 0`` and ``frac = 1`` are equal), passes through every integer and every
half-integer ``n + 1/2 -> n + 1/2``, the mean of its gradient over a period is exactly 1, and it
interpolates the two ends of quantization-aware training: ``k -> 0`` gives the identity (float
training), ``k -> inf`` gives round-half-up.

A tempting variant, ``floor(x) + sigmoid(k * (frac(x) - 1))`` (:func:`jump_variant`), is not a
staircase at all: it rises only to 1/2 before ``frac`` wraps, so it jumps by 1/2 at every
integer. The tests catch it with a continuity check.

Surrogates
----------
Each surrogate has a sharpness ``k`` (raised by :class:`AnnealSchedule`) and a ``hard`` flag.
With ``hard`` set the forward is the exact hard function ``floor(v + 1/2)`` (arith's
``half_up``, *not* ``torch.round``, which is half-even), so a model trained to the end of the
hard phase *is* the hard-quantized model.

* ``"ste"``: straight-through estimator. Forward always hard, gradient 1 (``k`` unused; the
  quantizers clamp afterwards, which clips the gradient outside the code range).
* ``"sigmoid"``: soft forward ``R_k`` with gradient ``R_k'`` while annealing; in the hard phase,
  hard forward with the smooth gradient ``R_k'`` at the final ``k`` (``hard_grad="smooth"``,
  default) or the STE gradient (``hard_grad="ste"``).
* ``"ste_plain"``: straight-through estimator whose gradient is 1 everywhere, *also* where the
  quantizer saturates (``"ste"`` is the clipped one: zero gradient outside the code range).
* ``"dsq"`` / ``"dsq_hard"``: Differentiable Soft Quantization (Gong et al., ICCV 2019), see
  :func:`dsq_round`. ``"dsq"`` has the soft forward with a *learned* characteristic variable
  ``alpha = sigmoid(theta)`` (one per activation quantizer, always inside (0, 1), so the
  sharpness ``log(2/alpha - 1) = log1p(2 exp(-theta))`` is finite and positive: never NaN);
  ``"dsq_hard"`` is the hard-forward / soft-backward variant with ``alpha`` from the schedule.
  The clipping range of DSQ is the quantizer's learned (power-of-two) scale times the top code.
* ``"fourier"``: the Fourier / arctan smooth floor (:func:`fourier_floor`), a damped Fourier
  series of ``floor`` whose derivative is the Poisson kernel; sharpness ``k`` maps to the
  damping ``r = (k - 1) / (k + 1)`` (``k`` is the peak slope ``(1 + r) / (1 - r)``).
* ``"lsq"``: STE rounding with learned step size (Esser et al., ICLR 2020): the gradient to
  every scale is multiplied by LSQ's ``1 / sqrt(N * Qp)``.
* ``"pact"``: STE rounding with PACT's learned clipping (Choi et al., 2018) for activations: the
  clip level ``alpha = scale * Qp`` gets gradient only from the clipped inputs, and is
  L2-regularised as in the paper (:func:`softfloor.quant.pact_penalty`,
  :attr:`softfloor.train.TrainConfig.pact_decay`).

Every surrogate declares ``default_k = (k_start, k_end)``, the sharpness range its schedule
anneals over, and ``scale_grad`` (``"auto"``, ``"lsq"`` or ``"pact"``), how the quantizers
route gradients to their scales.

An identity worth knowing: DSQ in grid units with sharpness ``k`` is *exactly* the normalised
sigmoid staircase with sharpness ``2k`` (``sigmoid(z) = (1 + tanh(z/2)) / 2``; tested). DSQ differs
from ``"sigmoid"`` only by learning its sharpness.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from softfloor.tensorops import scalar

# ----------------------------------------------------------------------------------------------
# Plain functions (no custom gradient): the definitions the tests check against.


def round_half_up(v: torch.Tensor) -> torch.Tensor:
    """``floor(v + 1/2)``: nearest integer, ties toward plus infinity (arith's ``half_up``)."""
    return torch.floor(v + scalar(0.5, v.dtype))


def round_up_bit(v: torch.Tensor, k: float) -> torch.Tensor:
    """The formula this project started from, ``sigmoid(k * (frac(v) - 1/2))``: NOT a floor.

    Periodic in ``v``, values in ``(0, 1)``; kept only to document (and test) the mistake.
    """
    return torch.sigmoid(k * (v - torch.floor(v) - 0.5))


def jump_variant(v: torch.Tensor, k: float) -> torch.Tensor:
    """The wrong staircase ``floor(v) + sigmoid(k * (frac(v) - 1))``: jumps by 1/2 at integers."""
    fl = torch.floor(v)
    return fl + torch.sigmoid(k * (v - fl - 1.0))


def _check_k(k: float) -> float:
    k = float(k)
    if not (k > 0 and math.isfinite(k)):
        raise ValueError(f"sharpness k must be a positive finite number, got {k!r}")
    return k


def smooth_round(v: torch.Tensor, k: float, normalize: bool = True) -> torch.Tensor:
    """The smooth round-half-up ``R_k(v)`` (normalised by default; see the module docstring)."""
    k = _check_k(k)
    fl = torch.floor(v)
    s = torch.sigmoid(k * (v - fl - 0.5))
    if not normalize:
        return fl + s
    return fl + (s - _sigmoid(-k / 2)) / math.tanh(k / 4)


def smooth_round_grad(v: torch.Tensor, k: float, normalize: bool = True) -> torch.Tensor:
    """Closed-form derivative of :func:`smooth_round`: ``k * s * (1 - s) [/ tanh(k/4)]``."""
    k = _check_k(k)
    dt = v.dtype
    s = torch.sigmoid(scalar(k, dt) * (v - torch.floor(v) - scalar(0.5, dt)))
    g = scalar(k, dt) * s * (scalar(1.0, dt) - s)
    return g / scalar(math.tanh(k / 4), dt) if normalize else g


def smooth_floor(v: torch.Tensor, k: float, normalize: bool = True) -> torch.Tensor:
    """A smooth floor: ``R_k(v - 1/2)``; its hard limit is ``floor(v)`` away from integers."""
    return smooth_round(v - 0.5, k, normalize)


def _sigmoid(a: float) -> float:
    return 1.0 / (1.0 + math.exp(-a)) if a >= 0 else math.exp(a) / (1.0 + math.exp(a))


# ----------------------------------------------------------------------------------------------
# autograd Functions with closed-form backward


class SmoothRoundFn(torch.autograd.Function):
    """Forward ``R_k(v)`` (normalised), backward ``R_k'(v)``."""

    @staticmethod
    def forward(ctx, v: torch.Tensor, k: float) -> torch.Tensor:
        fl = torch.floor(v)
        s = torch.sigmoid(k * (v - fl - 0.5))
        ctx.save_for_backward(s)
        ctx.k = k
        return fl + (s - _sigmoid(-k / 2)) / math.tanh(k / 4)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (s,) = ctx.saved_tensors
        k = ctx.k
        return grad * (k / math.tanh(k / 4)) * s * (1 - s), None


class HardRoundSmoothGradFn(torch.autograd.Function):
    """Forward ``floor(v + 1/2)`` exactly, backward ``R_k'(v)`` (hard forward, smooth backward)."""

    @staticmethod
    def forward(ctx, v: torch.Tensor, k: float) -> torch.Tensor:
        ctx.save_for_backward(v)
        ctx.k = k
        return round_half_up(v)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (v,) = ctx.saved_tensors
        return grad * smooth_round_grad(v, ctx.k), None


class STERoundFn(torch.autograd.Function):
    """Forward ``floor(v + 1/2)`` exactly, backward identity (straight-through)."""

    @staticmethod
    def forward(ctx, v: torch.Tensor) -> torch.Tensor:
        return round_half_up(v)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad


def ste_round(v: torch.Tensor) -> torch.Tensor:
    """Round half up with a straight-through (identity) gradient."""
    return STERoundFn.apply(v)


class STEClampRoundFn(torch.autograd.Function):
    """Forward ``clamp(floor(v + 1/2), lo, hi)``, backward identity everywhere (plain STE)."""

    @staticmethod
    def forward(ctx, v: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
        return torch.clamp(round_half_up(v), lo, hi)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None, None


# -- DSQ ---------------------------------------------------------------------------------------

def dsq_round(v: torch.Tensor, k) -> torch.Tensor:
    """DSQ's soft round in grid units: ``i + (tanh(k (v - i - 1/2)) / tanh(k/2) + 1) / 2``.

    ``i = floor(v)``. Gong et al. write it per interval ``[l + i D, l + (i+1) D]`` with
    ``phi = s tanh(k (x - m_i))``, ``s = 1 / tanh(k D / 2)``; here ``D = 1``. It is continuous
    (``i`` at ``v = i`` from both sides), passes through every integer and half-integer, and
    tends to round-half-up as ``k -> inf``. ``k`` is a float or a tensor (learned DSQ).
    """
    i = torch.floor(v)
    T = torch.tanh(torch.as_tensor(k, dtype=v.dtype) / 2)
    return i + (torch.tanh(k * (v - i - 0.5)) / T + 1) / 2


def dsq_round_grad(v: torch.Tensor, k) -> torch.Tensor:
    """Closed-form ``d dsq_round / dv = k (1 - t**2) / (2 tanh(k/2))``, ``t = tanh(k (frac - 1/2))``."""
    t = torch.tanh(k * (v - torch.floor(v) - 0.5))
    T = torch.tanh(torch.as_tensor(k, dtype=v.dtype) / 2)
    return k * (1 - t * t) / (2 * T)


def dsq_k_from_alpha(alpha):
    """DSQ's sharpness from its characteristic variable: ``k = log(2 / alpha - 1)``, alpha in (0, 1)."""
    return math.log(2 / alpha - 1) if isinstance(alpha, float) else torch.log(2 / alpha - 1)


def dsq_alpha_from_k(k: float) -> float:
    """Inverse of :func:`dsq_k_from_alpha`: ``alpha = 2 / (1 + exp(k))``."""
    return 2 / (1 + math.exp(k))


#: Bounds of DSQ's learned logit ``theta`` (``alpha = sigmoid(theta)``): sharpness
#: ``log1p(2 exp(-theta))`` stays within ~[0.036, 50.7], finite, so gradients are never NaN.
DSQ_THETA_RANGE = (-50.0, 4.0)


def dsq_k_from_theta(theta: torch.Tensor) -> torch.Tensor:
    """``k = log(2 / alpha - 1)`` with ``alpha = sigmoid(theta)``, computed as ``log1p(2 e**-theta)``.

    ``theta`` is clamped to :data:`DSQ_THETA_RANGE` first, so ``alpha`` is always strictly
    inside (0, 1) and ``k`` is finite and positive whatever the optimiser does to ``theta``.
    """
    th = torch.clamp(theta, *DSQ_THETA_RANGE)
    return torch.log1p(2 * torch.exp(-th))


class DSQRoundFn(torch.autograd.Function):
    """Forward :func:`dsq_round`, closed-form backward to ``v`` and to a tensor ``k``."""

    @staticmethod
    def forward(ctx, v: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        i = torch.floor(v)
        c = v - i - 0.5
        t = torch.tanh(k * c)
        T = torch.tanh(k / 2)
        ctx.save_for_backward(c, t, T, k)
        return i + (t / T + 1) / 2

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        c, t, T, k = ctx.saved_tensors
        dv = grad * k * (1 - t * t) / (2 * T)
        dk = None
        if ctx.needs_input_grad[1]:
            # d/dk [t / T] / 2 = (c (1 - t^2) T - t (1 - T^2) / 2) / (2 T^2)
            d = (c * (1 - t * t) * T - t * (1 - T * T) / 2) / (2 * T * T)
            dk = (grad * d).sum().reshape(k.shape)
        return dv, dk


class HardRoundGradFn(torch.autograd.Function):
    """Forward ``floor(v + 1/2)`` exactly, backward ``grad_fn(v, param)``: the hard-forward /
    surrogate-backward pattern shared by the DSQ and Fourier surrogates."""

    @staticmethod
    def forward(ctx, v: torch.Tensor, grad_fn, param: float) -> torch.Tensor:
        ctx.save_for_backward(v)
        ctx.grad_fn, ctx.param = grad_fn, param
        return round_half_up(v)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (v,) = ctx.saved_tensors
        return grad * ctx.grad_fn(v, ctx.param), None, None


# -- Fourier / arctan --------------------------------------------------------------------------

def fourier_r(k: float) -> float:
    """Damping ``r = (k - 1) / (k + 1)`` (0 for ``k <= 1``) of sharpness ``k`` = peak slope."""
    k = _check_k(k)
    return max(0.0, (k - 1) / (k + 1))


def _check_r(r: float) -> float:
    r = float(r)
    if not 0.0 <= r < 1.0:
        raise ValueError(f"Fourier damping r must be in [0, 1), got {r!r}")
    return r


def fourier_floor(v: torch.Tensor, r: float) -> torch.Tensor:
    """Smooth floor ``v - 1/2 + atan(r sin 2 pi v / (1 - r cos 2 pi v)) / pi``, ``0 <= r < 1``.

    It is the Fourier series ``floor(v) = v - 1/2 + sum_n sin(2 pi n v) / (pi n)`` with the
    ``n``-th term damped by ``r**n`` (summed in closed form). ``r = 0`` gives ``v - 1/2``;
    ``r -> 1`` gives ``floor(v)`` away from the integers. The denominator ``1 - r cos`` is
    positive, so it is smooth everywhere (computed with ``atan2``).
    """
    r = _check_r(r)
    a = 2 * math.pi * v
    return v - 0.5 + torch.atan2(r * torch.sin(a), 1 - r * torch.cos(a)) / math.pi


def fourier_floor_grad(v: torch.Tensor, r: float) -> torch.Tensor:
    """The Poisson kernel ``(1 - r**2) / (1 - 2 r cos 2 pi v + r**2)``: derivative of the floor."""
    r = _check_r(r)
    return (1 - r * r) / (1 - 2 * r * torch.cos(2 * math.pi * v) + r * r)


def fourier_round(v: torch.Tensor, r: float) -> torch.Tensor:
    """Smooth round ``fourier_floor(v + 1/2) = v - atan(r sin 2 pi v / (1 + r cos 2 pi v)) / pi``."""
    r = _check_r(r)
    a = 2 * math.pi * v
    return v - torch.atan2(r * torch.sin(a), 1 + r * torch.cos(a)) / math.pi


def fourier_round_grad(v: torch.Tensor, r: float) -> torch.Tensor:
    """``(1 - r**2) / (1 + 2 r cos 2 pi v + r**2)``: derivative of :func:`fourier_round`."""
    r = _check_r(r)
    return (1 - r * r) / (1 + 2 * r * torch.cos(2 * math.pi * v) + r * r)


class FourierRoundFn(torch.autograd.Function):
    """Forward :func:`fourier_round`, backward its Poisson kernel."""

    @staticmethod
    def forward(ctx, v: torch.Tensor, r: float) -> torch.Tensor:
        ctx.save_for_backward(v)
        ctx.r = r
        return fourier_round(v, r)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (v,) = ctx.saved_tensors
        return grad * fourier_round_grad(v, ctx.r), None


# ----------------------------------------------------------------------------------------------
# Surrogate objects


@dataclass
class Surrogate:
    """A rounding surrogate: ``forward(v)`` is soft or hard according to ``hard``.

    Attributes
    ----------
    k : float
        Sharpness, raised by the annealing schedule.
    hard : bool
        Use the exact hard function ``floor(v + 1/2)`` in the forward pass.
    """
    k: float = 1.0
    hard: bool = False
    name: ClassVar[str] = "?"
    #: ``(k_start, k_end)`` of the default annealing schedule.
    default_k: ClassVar[tuple[float, float]] = (1.0, 20.0)
    #: How quantizers send gradients to their scales: ``"auto"`` (autograd through ``v / s``),
    #: ``"lsq"`` (times ``1 / sqrt(N * Qp)``) or ``"pact"`` (activations: clipped inputs only).
    scale_grad: ClassVar[str] = "auto"
    #: The surrogate learns its own sharpness (the quantizer owns the parameter).
    learns_sharpness: ClassVar[bool] = False

    def forward(self, v: torch.Tensor, hard: bool | None = None) -> torch.Tensor:
        """Round ``v``: hard when ``hard`` (or, if None, ``self.hard``) is set, else soft."""
        use_hard = self.hard if hard is None else hard
        return self.hard_forward(v) if use_hard else self.soft_forward(v)

    __call__ = forward

    def quantize(self, v: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
        """``clamp(round(v), lo, hi)`` with this surrogate's rounding (zero gradient outside)."""
        return torch.clamp(self.forward(v), lo, hi)

    def __str__(self) -> str:
        return f"{self.name}(k={self.k:g}, hard={self.hard})"

    def soft_forward(self, v: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def hard_forward(self, v: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    #: The quantizer clamps after rounding with a gradient mask (zero where the code saturates);
    #: False: the gradient passes the clamp too (plain STE).
    clip_grad: ClassVar[bool] = True

    def round_and_grad(self, v: torch.Tensor, need_grad: bool = True):
        """``(R(v), R'(v))`` in closed form, no autograd: the fused quantizers' entry point.

        ``R'`` is None where it is 1 (straight-through) or when ``need_grad`` is false. Returns
        None when this surrogate (in its current state) has no such form (its gradient reaches
        other parameters: learned-sharpness DSQ while soft); the quantizer then composes
        :meth:`quantize` with autograd. The values and gradients are those of :meth:`forward`.
        """
        return None


@dataclass
class STESurrogate(Surrogate):
    """Straight-through estimator: forward always ``floor(v + 1/2)``, gradient 1; ``k`` unused."""
    name: ClassVar[str] = "ste"

    def soft_forward(self, v):
        return STERoundFn.apply(v)

    def hard_forward(self, v):
        return STERoundFn.apply(v)

    def round_and_grad(self, v, need_grad=True):
        return round_half_up(v), None


@dataclass
class SigmoidSurrogate(Surrogate):
    """The corrected, normalised sigmoid staircase ``R_k`` (see the module docstring).

    Soft forward ``R_k(v)`` with gradient ``R_k'(v)``. Hard forward ``floor(v + 1/2)`` with the
    gradient ``R_k'(v)`` (``hard_grad="smooth"``) or 1 (``hard_grad="ste"``).
    """
    hard_grad: str = "smooth"
    name: ClassVar[str] = "sigmoid"

    def __post_init__(self):
        if self.hard_grad not in ("smooth", "ste"):
            raise ValueError(f"hard_grad must be 'smooth' or 'ste', got {self.hard_grad!r}")

    def soft_forward(self, v):
        return SmoothRoundFn.apply(v, _check_k(self.k))

    def hard_forward(self, v):
        if self.hard_grad == "ste":
            return STERoundFn.apply(v)
        return HardRoundSmoothGradFn.apply(v, _check_k(self.k))

    def round_and_grad(self, v, need_grad=True):
        k = _check_k(self.k)
        if self.hard:
            r = round_half_up(v)
            if not need_grad or self.hard_grad == "ste":
                return r, None
            return r, smooth_round_grad(v, k)
        dt = v.dtype
        fl = torch.floor(v)
        s = torch.sigmoid(scalar(k, dt) * (v - fl - scalar(0.5, dt)))
        t = math.tanh(k / 4)
        r = fl + (s - scalar(_sigmoid(-k / 2), dt)) / scalar(t, dt)
        return r, (scalar(k / t, dt) * s * (scalar(1.0, dt) - s) if need_grad else None)


@dataclass
class PlainSTESurrogate(STESurrogate):
    """Plain straight-through estimator: gradient 1 everywhere, also where the codes saturate."""
    name: ClassVar[str] = "ste_plain"
    clip_grad: ClassVar[bool] = False

    def quantize(self, v, lo, hi):
        return STEClampRoundFn.apply(v, float(lo), float(hi))


@dataclass
class DSQSurrogate(Surrogate):
    """DSQ with a learned characteristic variable (soft forward; see :func:`dsq_round`).

    ``theta`` is set by the quantizer to its own parameter; ``alpha = sigmoid(theta)`` and the
    sharpness is ``log1p(2 exp(-theta))`` (:func:`dsq_k_from_theta`). Without ``theta`` the
    schedule's ``k`` is used. The schedule only decides when the hard phase starts (hard
    forward ``floor(v + 1/2)``, DSQ gradient at the learned sharpness).
    """
    theta: torch.Tensor | None = None
    name: ClassVar[str] = "dsq"
    learns_sharpness: ClassVar[bool] = True
    #: Gong et al. initialise alpha to 0.2.
    alpha_init: ClassVar[float] = 0.2

    def __str__(self) -> str:
        return f"{self.name}(k={self.sharpness():.4g}, hard={self.hard})"

    def _k(self) -> torch.Tensor | float:
        return _check_k(self.k) if self.theta is None else dsq_k_from_theta(self.theta)

    def sharpness(self) -> float:
        k = self._k()
        return float(k.detach()) if torch.is_tensor(k) else k

    def soft_forward(self, v):
        k = self._k()
        if not torch.is_tensor(k):
            k = torch.tensor(k, dtype=v.dtype)
        return DSQRoundFn.apply(v, k.to(v.dtype))

    def hard_forward(self, v):
        return HardRoundGradFn.apply(v, dsq_round_grad, self.sharpness())

    def round_and_grad(self, v, need_grad=True):
        if not self.hard:
            return None  # the soft forward's gradient reaches the learned sharpness
        return round_half_up(v), (dsq_round_grad(v, self.sharpness()) if need_grad else None)


@dataclass
class HardDSQSurrogate(Surrogate):
    """DSQ, hard forward / soft backward: forward ``floor(v + 1/2)``, gradient
    :func:`dsq_round_grad` with the schedule's sharpness ``k`` (``alpha = 2 / (1 + e**k)``)."""
    name: ClassVar[str] = "dsq_hard"
    default_k: ClassVar[tuple[float, float]] = (0.5, 10.0)

    def soft_forward(self, v):
        return HardRoundGradFn.apply(v, dsq_round_grad, _check_k(self.k))

    hard_forward = soft_forward

    def round_and_grad(self, v, need_grad=True):
        return round_half_up(v), (dsq_round_grad(v, _check_k(self.k)) if need_grad else None)


@dataclass
class FourierSurrogate(Surrogate):
    """Fourier / arctan smooth round (:func:`fourier_round`) with damping ``r = fourier_r(k)``.

    Soft forward with the Poisson-kernel gradient; the hard phase keeps that gradient at the
    final ``k`` under the exact forward ``floor(v + 1/2)``.

    ``k_end = 5``: the Poisson kernel's peak slope is ``k`` itself, so 5 ends where the
    ``sigmoid`` staircase ends (peak ``k / (4 tanh(k / 4))``, about 5 at its ``k_end = 20``);
    chosen on validation (``docs/experiments.md``).
    """
    name: ClassVar[str] = "fourier"
    default_k: ClassVar[tuple[float, float]] = (1.0, 5.0)

    def soft_forward(self, v):
        return FourierRoundFn.apply(v, fourier_r(self.k))

    def hard_forward(self, v):
        return HardRoundGradFn.apply(v, fourier_round_grad, fourier_r(self.k))

    def round_and_grad(self, v, need_grad=True):
        r = fourier_r(self.k)
        val = round_half_up(v) if self.hard else fourier_round(v, r)
        return val, (fourier_round_grad(v, r) if need_grad else None)


@dataclass
class LSQSurrogate(STESurrogate):
    """LSQ (Esser et al. 2020): STE rounding, scale gradients times ``1 / sqrt(N * Qp)``."""
    name: ClassVar[str] = "lsq"
    scale_grad: ClassVar[str] = "lsq"


@dataclass
class PACTSurrogate(STESurrogate):
    """PACT (Choi et al. 2018): STE rounding; the activation clip ``alpha = scale * Qp`` learns
    only from inputs above it (``d y / d alpha = 1`` there, 0 elsewhere)."""
    name: ClassVar[str] = "pact"
    scale_grad: ClassVar[str] = "pact"

    def round_and_grad(self, v, need_grad=True):
        return None  # the clip level's gradient differs from the fused quantizer's


#: Surrogates by name.
SURROGATES: dict[str, type[Surrogate]] = {
    cls.name: cls for cls in (STESurrogate, PlainSTESurrogate, SigmoidSurrogate, DSQSurrogate,
                              HardDSQSurrogate, FourierSurrogate, LSQSurrogate, PACTSurrogate)
}


def default_k(name: str) -> tuple[float, float]:
    """``(k_start, k_end)`` of the default schedule of surrogate ``name``."""
    return SURROGATES[check_surrogate(name)].default_k


def make_surrogate(name: str, **kwargs) -> Surrogate:
    """Instantiate the surrogate called ``name`` (a key of :data:`SURROGATES`)."""
    check_surrogate(name)
    return SURROGATES[name](**kwargs)


def check_surrogate(name: str) -> str:
    """Return ``name`` if it is a known surrogate, else raise a ValueError listing the choices."""
    if name not in SURROGATES:
        raise ValueError(f"unknown surrogate {name!r}; choose one of {', '.join(SURROGATES)}")
    return name


# ----------------------------------------------------------------------------------------------
# Annealing


@dataclass
class AnnealSchedule:
    """Sharpness per epoch: geometric from ``k_start`` to ``k_end``, then a hard phase.

    The first ``round((1 - hard_fraction) * epochs)`` epochs are soft, with ``k`` rising
    geometrically from ``k_start`` (first soft epoch) to ``k_end`` (last soft epoch). The
    remaining epochs (at least one when ``hard_fraction > 0``) use the hard forward at ``k_end``.
    """
    k_start: float = 1.0
    k_end: float = 20.0
    hard_fraction: float = 0.25

    def __post_init__(self):
        _check_k(self.k_start)
        _check_k(self.k_end)
        if not 0.0 <= self.hard_fraction <= 1.0:
            raise ValueError(f"hard_fraction must be in [0, 1], got {self.hard_fraction!r}")

    def soft_epochs(self, epochs: int) -> int:
        n_hard = round(self.hard_fraction * epochs)
        if self.hard_fraction > 0:
            n_hard = max(1, n_hard)
        return max(0, epochs - n_hard)

    def at(self, epoch: int, epochs: int) -> tuple[float, bool]:
        """``(k, hard)`` for ``epoch`` (0-based) of ``epochs``."""
        n_soft = self.soft_epochs(epochs)
        if epoch >= n_soft:
            return float(self.k_end), True
        t = epoch / (n_soft - 1) if n_soft > 1 else 0.0
        return float(self.k_start * (self.k_end / self.k_start) ** t), False
