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
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

# ----------------------------------------------------------------------------------------------
# Plain functions (no custom gradient): the definitions the tests check against.


def round_half_up(v: torch.Tensor) -> torch.Tensor:
    """``floor(v + 1/2)``: nearest integer, ties toward plus infinity (arith's ``half_up``)."""
    return torch.floor(v + 0.5)


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
    s = torch.sigmoid(k * (v - torch.floor(v) - 0.5))
    g = k * s * (1 - s)
    return g / math.tanh(k / 4) if normalize else g


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
        s = torch.sigmoid(k * (v - torch.floor(v) - 0.5))
        ctx.save_for_backward(s)
        ctx.k = k
        return torch.floor(v + 0.5)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (s,) = ctx.saved_tensors
        k = ctx.k
        return grad * (k / math.tanh(k / 4)) * s * (1 - s), None


class STERoundFn(torch.autograd.Function):
    """Forward ``floor(v + 1/2)`` exactly, backward identity (straight-through)."""

    @staticmethod
    def forward(ctx, v: torch.Tensor) -> torch.Tensor:
        return torch.floor(v + 0.5)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad


def ste_round(v: torch.Tensor) -> torch.Tensor:
    """Round half up with a straight-through (identity) gradient."""
    return STERoundFn.apply(v)


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

    def forward(self, v: torch.Tensor, hard: bool | None = None) -> torch.Tensor:
        """Round ``v``: hard when ``hard`` (or, if None, ``self.hard``) is set, else soft."""
        use_hard = self.hard if hard is None else hard
        return self.hard_forward(v) if use_hard else self.soft_forward(v)

    __call__ = forward

    def __str__(self) -> str:
        return f"{self.name}(k={self.k:g}, hard={self.hard})"

    def soft_forward(self, v: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def hard_forward(self, v: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


@dataclass
class STESurrogate(Surrogate):
    """Straight-through estimator: forward always ``floor(v + 1/2)``, gradient 1; ``k`` unused."""
    name: ClassVar[str] = "ste"

    def soft_forward(self, v):
        return STERoundFn.apply(v)

    def hard_forward(self, v):
        return STERoundFn.apply(v)


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


#: Surrogates by name.
SURROGATES: dict[str, type[Surrogate]] = {
    STESurrogate.name: STESurrogate,
    SigmoidSurrogate.name: SigmoidSurrogate,
}


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
