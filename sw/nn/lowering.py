"""Helpers of the layers' ``to_int``: integer ops with the fewest bits the actual integers need.

Each weighted op gets ``bias_bits`` from its bias codes and ``acc_bits`` from the worst-case
accumulator over the input code range (:func:`softfloor.arith.dense_bounds`; a convolution's
padding is a code of that range, so it changes nothing). Requantizations are per tensor or,
with per-channel exponents, per channel.
"""
from __future__ import annotations

import numpy as np
import torch

from softfloor import arith
from softfloor.intmodel import ChannelRequant, CodeType, Requant


def signed_bits(lo: int, hi: int) -> int:
    """Fewest bits of a *signed* two's complement code holding ``[lo, hi]``."""
    bits, signed = arith.bits_for_range(lo, hi)
    return bits if signed else bits + 1


def acc_bounds(weight: np.ndarray, bias: np.ndarray, in_lo: int, in_hi: int) -> tuple[int, int]:
    """Worst-case accumulator range of a weighted op (any weight shape, output channel first)."""
    lo, hi = arith.dense_bounds(weight.reshape(weight.shape[0], -1), bias, in_lo, in_hi)
    return int(min(lo)), int(max(hi))


def widths(weight: np.ndarray, bias: np.ndarray, in_lo: int, in_hi: int) -> tuple[int, int]:
    """``(bias_bits, acc_bits)``: the fewest the actual integers need."""
    lo, hi = acc_bounds(weight, bias, in_lo, in_hi)
    bias_bits = signed_bits(int(bias.min()), int(bias.max()))
    return bias_bits, max(2, bias_bits, signed_bits(lo, hi))


def as_numpy(t) -> np.ndarray:
    """int64 numpy array of an integer tensor or array."""
    return (t.numpy() if isinstance(t, torch.Tensor) else np.asarray(t)).astype(np.int64)


def requant_op(name: str, shift, mult, bits: int, signed: bool, lo: int, hi: int
               ) -> Requant | ChannelRequant:
    """A ``requant`` rounding ``half_up``: per tensor (int shift and multiplier) or per channel
    (int64 tensors or arrays)."""
    if isinstance(shift, (torch.Tensor, np.ndarray)) and np.ndim(shift) > 0:
        return ChannelRequant(name, as_numpy(shift), "half_up", bits, signed, lo, hi,
                              as_numpy(mult))
    return Requant(name, int(shift), "half_up", bits, signed, lo, hi, int(mult))


def check_requant_limits(shift, mult) -> None:
    """Raise a ValueError when a requantization is outside the model file's limits (a shift
    above :data:`~softfloor.intmodel.MAX_SHIFT`, a multiplier of 2**31 or more): the scales
    before and after it drifted apart."""
    from softfloor.intmodel import MAX_MULTIPLIER, MAX_SHIFT
    top_s = int(shift) if isinstance(shift, int) else int(np.max(as_numpy(shift)))
    top_m = int(mult) if isinstance(mult, int) else int(np.max(as_numpy(mult)))
    if top_m > MAX_MULTIPLIER or top_s > MAX_SHIFT:
        raise ValueError(f"the requantization needs shift {top_s}, multiplier "
                         f"2**{top_m.bit_length() - 1} (the scales before and after it drifted "
                         f"apart); a model file allows shifts up to {MAX_SHIFT} and multipliers "
                         f"below 2**31: recalibrate or retrain")


def out_range(op, lo: int, hi: int) -> tuple[int, int]:
    """The code range an elementwise op produces from inputs in ``[lo, hi]``."""
    t = op.out_type(CodeType(64, True, int(lo), int(hi)))
    return t.lo, t.hi


def threshold_rewrite(w: torch.Tensor, b: torch.Tensor, direction, t, in_lo: int, in_hi: int):
    """Rewrite ``gate = [acc >= t]`` / ``[acc <= t]`` / constant as ``clamp(acc', 0, 1)``.

    ``acc' = acc - t + 1`` (``>=``) or ``-acc + t + 1`` (``<=``, the channel's weights negated,
    which keeps 1-bit weights in {-1, +1}); ``t`` is first clamped into the reachable
    accumulator range (plus one), which changes no output but keeps the bias small. ``w`` is
    ``(out, ...)`` (dense or convolution), one threshold per output channel.
    """
    lo, hi = ([int(v) for v in a] for a in
              arith.dense_bounds(w.reshape(w.shape[0], -1).numpy(), b.numpy(), in_lo, in_hi))
    w2, b2 = w.clone(), b.clone()
    for c in range(w.shape[0]):
        d = int(direction[c])
        if d > 0:
            tc = int(min(max(float(t[c]), float(lo[c])), float(hi[c]) + 1))
            b2[c] = b[c] - tc + 1
        elif d < 0:
            tc = int(min(max(float(t[c]), float(lo[c]) - 1), float(hi[c])))
            w2[c] = -w[c]
            b2[c] = -b[c] + tc + 1
        else:  # always (t = 1) or never (t = 0): acc' >= 1 or <= 0 for every input
            b2[c] = b[c] + (1 - int(lo[c]) if float(t[c]) > 0 else -int(hi[c]))
    return w2, b2
