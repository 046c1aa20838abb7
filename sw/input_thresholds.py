"""Learned per-pixel 1-bit input thresholds (``input_quant="learned"``).

Every pixel ``p`` (an integer 0..16) becomes the bit ``[p > t]`` with its own real threshold
``t``, trained with the network:

- **start:** ``t = T - 1/2`` from the calibrated integer threshold ``T`` (``p >= T``,
  :func:`softfloor.data.mi_thresholds`), so the first step sees exactly the ``"per_pixel"``
  codes;
- **forward:** the exact bit ``[p > t]`` times the input grid step (the model sees only codes
  the exported quantizer makes; the training augmentation then acts on these codes);
- **backward:** the gradient of the loss with respect to the input codes (the network's input
  gradient, straight through the augmentation), times the straight-through derivative of the
  ramp ``clamp((p - t) / WIDTH + 1/2, 0, 1)``: ``d code / dt = -step / WIDTH`` where
  ``|p - t| <= WIDTH / 2``, else 0 (:func:`threshold_grad`);
- **update:** Adam (:data:`LR`, :data:`BETAS`, decayed by the run's cosine factor; the
  arithmetic of ``torch.optim.Adam``, tested) after each network step, then ``t`` is clamped
  to ``[T_LO, T_HI]``;
- **end:** ``[p > t] == [p >= floor(t) + 1]`` for integer pixels, so the result is again one
  integer threshold per pixel in 1..16, exported as the existing per-value input scale
  (:func:`softfloor.data.digits_input_spec`): the RTL and the model file do not change.

No autograd node and no optimiser object: a handful of tensor ops per step (the thresholds
cost about a tenth of a training step). How it was chosen and measured: ``docs/experiments.md``.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .data import DigitsSplit, digits_input_spec, pixels, scale_thresholds
from .tensorops import pass_inside

#: Width of the backward ramp, in pixel levels.
WIDTH = 2.0
#: Peak Adam learning rate of the thresholds (pixel levels per step), its betas and eps.
LR = 0.2
BETAS = (0.9, 0.999)
EPS = 1e-8
#: The thresholds stay in ``[T_LO, T_HI]``: integer thresholds ``floor(t) + 1`` in 1..16.
T_LO, T_HI = 0.5, 15.5


def threshold_codes(pixels: torch.Tensor, t: torch.Tensor, step: float) -> torch.Tensor:
    """The inputs ``[pixels > t] * step`` (exact; no gradient)."""
    codes = (pixels > t).to(t.dtype)
    return codes if step == 1.0 else codes * step


def threshold_grad(pixels: torch.Tensor, t: torch.Tensor, grad_codes: torch.Tensor,
                   step: float, width: float = WIDTH) -> torch.Tensor:
    """The thresholds' gradient given the inputs' (``grad_codes``, shape of ``pixels``): the
    straight-through derivative of ``clamp((p - t) / width + 1/2, 0, 1) * step``, summed over
    the batch."""
    r = pixels - t
    return pass_inside(grad_codes.to(r.dtype), r, -width / 2, width / 2).sum(0).mul_(
        -step / width)


def integer_thresholds(t) -> np.ndarray:
    """The integer thresholds ``T = floor(t) + 1`` (``[p > t] == [p >= T]`` for integer
    pixels ``p``), int64."""
    return np.floor(np.asarray(t, dtype=np.float64)).astype(np.int64) + 1


class LearnedThresholds:
    """The thresholds of one training run, with their Adam state.

    Parameters
    ----------
    split : DigitsSplit
        A per-pixel split (``"per_pixel"`` codes): its thresholds are the start and its real
        training inputs the pixels.
    step : float
        The input grid step (the model's ``2**input_exp``).
    dtype : torch.dtype
        The model's dtype.
    lr : float
        Peak learning rate (:data:`LR`).
    """

    def __init__(self, split: DigitsSplit, step: float, dtype=torch.float64, lr: float = LR):
        if split.input_quant != "per_pixel":
            raise ValueError(f"learned input thresholds start from a per-pixel split, got a "
                             f"{split.input_quant} one; load it with "
                             f"load_digits_split(1, 'learned')")
        self.start = scale_thresholds(split.input_spec.scale)
        self.t = torch.tensor(self.start - 0.5, dtype=dtype)
        self.pixels = torch.as_tensor(pixels(split.x_train), dtype=dtype)
        self.step, self.lr = float(step), float(lr)
        self.exp_avg = torch.zeros_like(self.t)
        self.exp_avg_sq = torch.zeros_like(self.t)
        self.steps = 0
        self._batch = None

    def batch(self, idx) -> torch.Tensor:
        """The training inputs of the samples ``idx``: ``[pixel > t] * step`` (remembered
        for :meth:`update`)."""
        self._batch = self.pixels[idx]
        return threshold_codes(self._batch, self.t, self.step)

    def update(self, grad_codes: torch.Tensor, lr_factor: float) -> None:
        """One Adam step at ``lr * lr_factor`` from the gradient of the last :meth:`batch`'s
        inputs, then the clamp."""
        if grad_codes is None:
            raise RuntimeError("learned input thresholds: the model gave no gradient for its "
                               "input batch; train with input_quant 'per_pixel' instead")
        g = threshold_grad(self._batch, self.t, grad_codes, self.step)
        self._batch = None
        adam_step(self.t, g, self.exp_avg, self.exp_avg_sq, self.steps + 1,
                  self.lr * lr_factor)
        self.steps += 1
        self.t.clamp_(T_LO, T_HI)

    def thresholds(self) -> np.ndarray:
        """The integer thresholds now (``pixel >= T``)."""
        return integer_thresholds(self.t.numpy())

    def moved(self) -> int:
        """How many integer thresholds differ from the start."""
        return int(np.sum(self.thresholds() != self.start))

    def input_spec(self):
        """The 1-bit per-pixel :class:`~softfloor.intmodel.InputSpec` of :meth:`thresholds`."""
        return digits_input_spec(1, self.thresholds())

    def __repr__(self) -> str:
        return (f"LearnedThresholds({self.t.numel()} pixels, lr={self.lr}, "
                f"{self.moved()} moved from the start, thresholds={self.thresholds().tolist()})")


def adam_step(param, grad, exp_avg, exp_avg_sq, step: int, lr: float,
              betas=BETAS, eps: float = EPS) -> None:
    """One in-place Adam update (no weight decay, not amsgrad): the operations of
    ``torch.optim.Adam``'s single-tensor path, so the same values (tested)."""
    beta1, beta2 = betas
    exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    bias_correction1 = 1 - beta1 ** step
    bias_correction2_sqrt = math.sqrt(1 - beta2 ** step)
    denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
    param.addcdiv_(exp_avg, denom, value=-lr / bias_correction1)
