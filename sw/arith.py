"""The arithmetic rules of softfloor, written once.

Every stage that computes on integer codes -- the hard-quantized torch forward, the golden
model, the RTL generator's numpy twins and the RTL tests -- calls these functions. Nothing else
re-implements a rounding mode, a saturation or a shift.

Fixed-point legend
------------------
A tensor is a vector of integer *codes* ``q`` with a real value ``x = scale * (q - zero_point)``.
A code type is ``(signed, bits)``: signed codes lie in ``[-2**(bits-1), 2**(bits-1) - 1]``,
unsigned in ``[0, 2**bits - 1]``. With a power-of-two scale ``2**-f`` this is hls4ml's
``ap_fixed<bits, bits - f>`` (signed) / ``ap_ufixed`` (unsigned): keep-negative = signed,
integer bits = bits - f, fraction bits = f.

Rules
-----
* Right shift by ``s >= 0`` with a rounding mode (``round_shift``), i.e. ``round(x / 2**s)``:

  - ``floor``: toward minus infinity; this is the arithmetic ``>>`` of two's complement
    (``-5 >> 1 == -3``). Never truncation toward zero.
  - ``half_up``: nearest, ties toward plus infinity: ``floor(x / 2**s + 1/2)``, the hardware idiom
    ``(x + 2**(s-1)) >> s``. ``-2.5 -> -2``, ``2.5 -> 3``. The default.
  - ``half_even``: nearest, ties to the even neighbour (``numpy.rint``, ``torch.round``).
    ``-2.5 -> -2``, ``-1.5 -> -2``, ``2.5 -> 2``.

  A shift of 0 returns ``x`` unchanged in every mode.
* Requantization: ``y = saturate(round_shift(acc * multiplier, shift, mode), lo, hi)``: one
  multiplication by a non-negative integer, *one* rounding, then saturation (clamping) to the
  bounds of the output code. ReLU is saturation with ``lo = 0``. There is never wrap-around.
* Input quantization of real numbers: ``q = saturate(round(x / scale) + zero_point, lo, hi)``
  with the same rounding modes, computed in float64.
* Multi-threshold (FINN/QONNX ``MultiThreshold``): ``y = out_bias + #{t : thresholds[t] <= x}``,
  the number of thresholds at or below ``x``. Any order of thresholds; monotone in ``x``.
* Table lookup (``lut``): ``y = table[x - in_lo]``, any function of one code.
* Argmax: the index of the *first* maximum along the last axis (``numpy.argmax``).

The integer functions use only operators that numpy arrays, Python ints and torch integer tensors
all share (``+``, ``>>``, ``&``, ``==``, ``.clip``), so the very same code runs in training and in
the golden model.
"""
from __future__ import annotations

import math

import numpy as np

#: Rounding modes of a right shift, in the order they are documented.
ROUNDING_MODES = ("floor", "half_up", "half_even")
#: The rounding mode used when a model does not say otherwise.
DEFAULT_ROUNDING = "half_up"


class RuleError(ValueError):
    """An argument to an arithmetic rule is outside its domain."""


def check_rounding(mode: str) -> str:
    """Return ``mode`` if it is a known rounding mode, else raise naming the choices."""
    if mode not in ROUNDING_MODES:
        raise RuleError(
            f"unknown rounding mode {mode!r}; choose one of {', '.join(ROUNDING_MODES)}")
    return mode


def code_range(bits: int, signed: bool) -> tuple[int, int]:
    """Smallest and largest code of a ``bits``-wide signed or unsigned integer."""
    if not isinstance(bits, (int, np.integer)) or bits < 1:
        raise RuleError(f"bit width must be a positive integer, got {bits!r}")
    bits = int(bits)
    if signed:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def wrap(v, bits: int, signed: bool):
    """The ``bits``-wide code held in the low ``bits`` bits of ``v`` (an int or an integer
    array): those bits as an unsigned number, or as two's complement (sign-extended) when
    ``signed``. What a register of that width reads back, and how a bus field is decoded."""
    v = v & ((1 << bits) - 1)
    if not signed:
        return v
    if isinstance(v, np.ndarray):
        return np.where((v >> (bits - 1)) & 1, v - (1 << bits), v)
    return v - (1 << bits) if (v >> (bits - 1)) & 1 else v


def bits_for_range(lo: int, hi: int) -> tuple[int, bool]:
    """Fewest bits (and signedness) of a two's complement code holding ``[lo, hi]``."""
    lo, hi = int(lo), int(hi)
    if lo > hi:
        raise RuleError(f"empty range [{lo}, {hi}]")
    if lo >= 0:
        return max(1, hi.bit_length()), False
    bits = max((-lo - 1).bit_length(), hi.bit_length() if hi > 0 else 0) + 1
    return bits, True


def round_shift(x, shift: int, mode: str = DEFAULT_ROUNDING):
    """``round(x / 2**shift)`` on integers with rounding ``mode`` (see the module docstring).

    Parameters
    ----------
    x : int, numpy integer array or torch integer tensor
        The value to shift. Must be of a signed integer type wide enough for ``x + 2**(shift-1)``.
    shift : int
        Non-negative shift amount.
    mode : str
        One of :data:`ROUNDING_MODES`.
    """
    check_rounding(mode)
    shift = int(shift)
    if shift < 0:
        raise RuleError(f"shift must be >= 0, got {shift}")
    if shift == 0:
        return x
    if mode == "floor":
        return x >> shift
    half = 1 << (shift - 1)
    q = (x + half) >> shift
    if mode == "half_up":
        return q
    # half_even: a tie rounded up to an odd quotient goes back down by one.
    tie = (x & ((1 << shift) - 1)) == half
    return q - tie * (q & 1)


def saturate(x, lo: int, hi: int):
    """Clamp ``x`` to ``[lo, hi]`` (no wrap-around, ever)."""
    if lo > hi:
        raise RuleError(f"saturation bounds reversed: [{lo}, {hi}]")
    if isinstance(x, (int, np.integer)):
        return min(max(int(x), lo), hi)
    return x.clip(lo, hi)


def requantize(acc, shift: int, mode: str, lo: int, hi: int, multiplier: int = 1):
    """``saturate(round_shift(acc * multiplier, shift, mode), lo, hi)``: the one requantization."""
    if multiplier != 1:
        acc = acc * int(multiplier)
    return saturate(round_shift(acc, shift, mode), lo, hi)


def multithreshold(x, thresholds, out_bias: int = 0):
    """``out_bias + (number of thresholds t with t <= x)``: the one multi-threshold rule.

    Parameters
    ----------
    x : int, numpy integer array or torch integer tensor
    thresholds : sequence of int (with an int ``x``), or an integer array/tensor whose last axis
        holds the ``T`` thresholds and whose leading axes broadcast against ``x`` (e.g. shape
        ``(C, 1, 1, T)`` for per-channel thresholds on ``(N, C, H, W)`` codes).
    out_bias : int
        Added to the count.
    """
    if isinstance(x, (int, np.integer)):
        return int(out_bias) + sum(1 for t in thresholds if int(t) <= int(x))
    count = 0
    for t in range(thresholds.shape[-1]):
        count = count + (x >= thresholds[..., t]) * 1
    return count + int(out_bias)


def table_lookup(x, table, in_lo: int):
    """``table[x - in_lo]``: the one table-lookup rule (the ``lut`` op).

    ``x`` is an int, a numpy integer array or a torch integer tensor (then ``table`` is a tensor
    on the same device); every ``x - in_lo`` must index the table.
    """
    if isinstance(x, (int, np.integer)):
        return int(table[int(x) - int(in_lo)])
    return table[x - int(in_lo)]


def argmax_first(x):
    """Index of the first maximum along the last axis: the one argmax rule (ties: lowest
    index). Works on numpy arrays and torch tensors (``torch.argmax`` returns the first maximal
    index as well)."""
    return x.argmax(-1) if not isinstance(x, np.ndarray) else np.argmax(x, axis=-1)


def round_float(v: np.ndarray, mode: str = DEFAULT_ROUNDING) -> np.ndarray:
    """Round real numbers to integers with ``mode`` (float64 in, float64 out)."""
    check_rounding(mode)
    v = np.asarray(v, dtype=np.float64)
    if mode == "floor":
        return np.floor(v)
    if mode == "half_up":
        return np.floor(v + 0.5)
    return np.rint(v)


def quantize_real(x, scale: float, zero_point: int, bits: int, signed: bool,
                  mode: str = DEFAULT_ROUNDING) -> np.ndarray:
    """Quantize real numbers to codes: ``saturate(round(x / scale) + zero_point, lo, hi)``.

    ``scale`` is one number or one per value of the last axis of ``x`` (per input value).
    Computed in float64; returns int64 codes. Non-finite inputs are an error.
    """
    x = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise RuleError("inputs contain NaN or infinity")
    s = np.asarray(scale, dtype=np.float64)
    if s.ndim > 1 or not (np.all(s > 0) and np.all(np.isfinite(s))):
        raise RuleError(f"scale must be a positive finite number (or one per value), got "
                        f"{scale!r}")
    lo, hi = code_range(bits, signed)
    q = round_float(x / s, mode) + zero_point
    return np.clip(q, lo, hi).astype(np.int64)


def dense_bounds(weight: np.ndarray, bias: np.ndarray, in_lo: int, in_hi: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Worst-case accumulator bounds of ``x @ weight.T + bias`` per output, for x in [in_lo, in_hi].

    ``in_lo``/``in_hi`` are one range for every input or arrays of one range per input column.
    Each term ``w * x`` is extreme at an end of the input range, so the bounds are exact
    (attained by some input) for independent inputs.
    """
    w = np.asarray(weight, dtype=object)
    lo_terms = np.minimum(w * in_lo, w * in_hi)
    hi_terms = np.maximum(w * in_lo, w * in_hi)
    b = np.asarray(bias, dtype=object)
    return lo_terms.sum(axis=-1) + b, hi_terms.sum(axis=-1) + b
