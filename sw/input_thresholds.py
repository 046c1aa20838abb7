"""Learned per-pixel 1-bit input thresholds (``input_quant="learned"``).

Every pixel ``p`` (an integer 0..16) becomes the bit ``[p > t]`` with its own real threshold
``t``, trained with the network:

- **start:** ``t = T - 1/2`` from the calibrated integer threshold ``T`` (``p >= T``,
  :func:`softfloor.data.mi_thresholds`), so the first step sees exactly the ``"per_pixel"``
  codes;
- **forward:** the exact bit ``[p > t]`` times the input grid step (the model sees only codes
  the exported quantizer makes);
- **backward:** straight through the ramp ``clamp((p - t) / WIDTH + 1/2, 0, 1)``, i.e.
  ``dbit/dt = -1/WIDTH`` where ``|p - t| <= WIDTH/2``, else 0;
- **update:** its own Adam (:data:`LR`, decayed by the run's cosine factor), after each
  network step, then ``t`` is clamped to ``[T_LO, T_HI]``;
- **end:** ``[p > t] == [p >= floor(t) + 1]`` for integer pixels, so the result is again one
  integer threshold per pixel in 1..16, exported as the existing per-value input scale
  (:func:`softfloor.data.digits_input_spec`): the RTL and the model file do not change.

Chosen on 3 validation folds x seeds 0..19 (w1a1, 1-bit input, STE, 60 epochs; learning rate
0.05 / 0.2: +0.93 / +1.26 points over the calibrated thresholds, paired) and checked on fresh
folds 3..14 x seeds 0..9 (+0.25 +- 0.17, 120 paired runs; ``docs/training.md``).
"""
from __future__ import annotations

import numpy as np
import torch

from .data import DigitsSplit, digits_input_spec, scale_thresholds

#: Width of the backward ramp, in pixel levels.
WIDTH = 2.0
#: Peak Adam learning rate of the thresholds (pixel levels per step), and its betas.
LR = 0.2
BETAS = (0.9, 0.999)
#: The thresholds stay in ``[T_LO, T_HI]``: integer thresholds ``floor(t) + 1`` in 1..16.
T_LO, T_HI = 0.5, 15.5


class _ThresholdFn(torch.autograd.Function):
    """``[p > t] * step`` forward; straight through the ramp of width ``WIDTH`` backward."""

    @staticmethod
    def forward(ctx, pixels, t, step: float, width: float):
        ctx.save_for_backward(pixels, t)
        ctx.step, ctx.width = step, width
        return (pixels > t).to(t.dtype) * step

    @staticmethod
    def backward(ctx, g):
        pixels, t = ctx.saved_tensors
        inside = (pixels - t).abs() <= ctx.width / 2
        dt = -(g * inside).sum(0) * (ctx.step / ctx.width)
        return None, dt, None, None


def threshold_codes(pixels: torch.Tensor, t: torch.Tensor, step: float,
                    width: float = WIDTH) -> torch.Tensor:
    """The inputs ``[pixels > t] * step`` (exact), differentiable in ``t`` (see the module)."""
    return _ThresholdFn.apply(pixels, t, step, width)


def integer_thresholds(t) -> np.ndarray:
    """The integer thresholds ``T = floor(t) + 1`` (``[p > t] == [p >= T]`` for integer
    pixels ``p``), int64."""
    return np.floor(np.asarray(t, dtype=np.float64)).astype(np.int64) + 1


class LearnedThresholds:
    """The thresholds of one training run, with their optimiser.

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
        start = scale_thresholds(split.input_spec.scale)
        self.start = start
        self.t = torch.tensor(start - 0.5, dtype=dtype, requires_grad=True)
        self.pixels = torch.as_tensor(np.rint(split.x_train * 16.0), dtype=dtype)
        self.step, self.lr = float(step), float(lr)
        self.opt = torch.optim.Adam([self.t], lr=self.lr, betas=BETAS, foreach=False)

    def batch(self, idx) -> torch.Tensor:
        """The training inputs of the samples ``idx``: ``[pixel > t] * step``."""
        return threshold_codes(self.pixels[idx], self.t, self.step)

    def update(self, lr_factor: float) -> None:
        """One Adam step at ``lr * lr_factor``, then the clamp; clears the gradient."""
        for group in self.opt.param_groups:
            group["lr"] = self.lr * lr_factor
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            self.t.clamp_(T_LO, T_HI)

    def thresholds(self) -> np.ndarray:
        """The integer thresholds now (``pixel >= T``)."""
        return integer_thresholds(self.t.detach().numpy())

    def moved(self) -> int:
        """How many integer thresholds differ from the start."""
        return int(np.sum(self.thresholds() != self.start))

    def input_spec(self):
        """The 1-bit per-pixel :class:`~softfloor.intmodel.InputSpec` of :meth:`thresholds`."""
        return digits_input_spec(1, self.thresholds())

    def __repr__(self) -> str:
        return (f"LearnedThresholds({self.t.numel()} pixels, lr={self.lr}, "
                f"{self.moved()} moved from the start, thresholds={self.thresholds().tolist()})")
