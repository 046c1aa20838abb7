"""The arithmetic rules: every rounding mode, ties, negatives, saturation; numpy == torch == int."""
from fractions import Fraction
import math

import numpy as np
import pytest
import torch

from softfloor import arith


def ref_round(num: int, shift: int, mode: str) -> int:
    """Exact rational reference of round(num / 2**shift)."""
    q = Fraction(num, 1 << shift)
    if mode == "floor":
        return math.floor(q)
    if mode == "half_up":
        return math.floor(q + Fraction(1, 2))
    return round(q)  # Fraction.__round__ is half-even


def test_tie_table_from_the_notes():
    # +-0.5, +-1.5, +-2.5 in grid units: x = 2*v with shift 1.
    x = np.array([-5, -3, -1, 1, 3, 5])
    assert arith.round_shift(x, 1, "half_even").tolist() == [-2, -2, 0, 0, 2, 2]
    assert arith.round_shift(x, 1, "half_up").tolist() == [-2, -1, 0, 1, 2, 3]
    assert arith.round_shift(x, 1, "floor").tolist() == [-3, -2, -1, 0, 1, 2]


def test_floor_is_not_truncation():
    assert arith.round_shift(-5, 1, "floor") == -3  # C's -5/2 would give -2


@pytest.mark.parametrize("mode", arith.ROUNDING_MODES)
@pytest.mark.parametrize("shift", [0, 1, 2, 3, 5, 8])
def test_round_shift_matches_exact_reference(mode, shift):
    x = np.arange(-600, 601, dtype=np.int64)
    got = arith.round_shift(x, shift, mode)
    want = np.array([ref_round(int(v), shift, mode) for v in x])
    np.testing.assert_array_equal(got, want)
    # torch int64 and Python int go through the very same code
    np.testing.assert_array_equal(arith.round_shift(torch.from_numpy(x), shift, mode).numpy(), want)
    assert [arith.round_shift(int(v), shift, mode) for v in x[::37]] == want[::37].tolist()


@pytest.mark.parametrize("mode", arith.ROUNDING_MODES)
def test_round_float_agrees_with_round_shift(mode):
    x = np.arange(-300, 300)
    for s in (1, 2, 4):
        np.testing.assert_array_equal(arith.round_float(x / 2 ** s, mode).astype(np.int64),
                                      arith.round_shift(x, s, mode))


def test_saturate_and_requantize():
    x = np.array([-1000, -1, 0, 7, 15, 16, 1000])
    assert arith.saturate(x, 0, 15).tolist() == [0, 0, 0, 7, 15, 15, 15]
    assert arith.saturate(-3, -2, 1) == -2
    # one rounding, after the multiplier, then saturation
    assert arith.requantize(np.array([5]), 2, "half_up", -8, 7, multiplier=3).tolist() == [4]
    assert arith.requantize(np.array([999]), 2, "half_up", -8, 7).tolist() == [7]


def test_bad_arguments_raise():
    with pytest.raises(arith.RuleError, match="unknown rounding"):
        arith.round_shift(3, 1, "nearest")
    with pytest.raises(arith.RuleError, match="shift"):
        arith.round_shift(3, -1, "floor")
    with pytest.raises(arith.RuleError):
        arith.code_range(0, True)
    with pytest.raises(arith.RuleError, match="NaN"):
        arith.quantize_real([np.nan], 0.5, 0, 4, False)


def test_code_ranges_and_bits():
    assert arith.code_range(4, True) == (-8, 7)
    assert arith.code_range(4, False) == (0, 15)
    assert arith.bits_for_range(0, 15) == (4, False)
    assert arith.bits_for_range(-8, 7) == (4, True)
    assert arith.bits_for_range(-9, 0) == (5, True)
    assert arith.bits_for_range(-1, 128) == (9, True)


def test_quantize_real():
    x = np.array([0.0, 0.49, 0.5, 1.0, 1.5, 2.5, 100.0, -3.0])
    assert arith.quantize_real(x, 1.0, 0, 4, False).tolist() == [0, 0, 1, 1, 2, 3, 15, 0]
    assert arith.quantize_real(x, 1.0, 0, 4, False, "half_even").tolist() == [0, 0, 0, 1, 2, 2, 15, 0]


def test_dense_bounds_are_attained():
    rng = np.random.default_rng(1)
    w = rng.integers(-8, 8, (5, 7))
    b = rng.integers(-50, 50, 5)
    lo, hi = arith.dense_bounds(w, b, 0, 15)
    x_hi = np.where(w > 0, 15, 0)
    x_lo = np.where(w < 0, 15, 0)
    np.testing.assert_array_equal((w * x_hi).sum(1) + b, hi.astype(np.int64))
    np.testing.assert_array_equal((w * x_lo).sum(1) + b, lo.astype(np.int64))


def test_multithreshold_counts_thresholds_at_or_below():
    thr = [3, -1, 3, 7]  # unsorted and repeated on purpose
    for x in range(-3, 10):
        want = sum(t <= x for t in thr) + 5
        assert arith.multithreshold(x, thr, 5) == want
    xs = np.arange(-3, 10)
    assert arith.multithreshold(xs, np.array(thr), 5).tolist() == \
        [arith.multithreshold(int(v), thr, 5) for v in xs]
    # Per-channel thresholds broadcast over (N, C): channel axis 1, thresholds on the last axis.
    per_ch = np.array([[0, 1], [5, 6]])
    x = np.array([[1, 5], [0, 7]])
    assert arith.multithreshold(x, per_ch[None, :, :]).tolist() == [[2, 1], [1, 2]]
    t = torch.tensor(per_ch)[None]
    assert arith.multithreshold(torch.tensor(x), t).tolist() == [[2, 1], [1, 2]]


@pytest.mark.parametrize("bits", [1, 2, 3, 8, 17])
def test_wrap_is_the_register_of_that_width(bits):
    """Every integer maps to the code with the same low bits inside the width's range; codes
    already in range are unchanged; ints and arrays agree."""
    for signed in (False, True):
        lo, hi = arith.code_range(bits, signed)
        vs = np.arange(lo - 3 * (1 << bits), hi + 3 * (1 << bits) + 1)
        got = arith.wrap(vs, bits, signed)
        assert got.min() >= lo and got.max() <= hi
        assert np.all((got - vs) % (1 << bits) == 0)
        inside = (vs >= lo) & (vs <= hi)
        np.testing.assert_array_equal(got[inside], vs[inside])
        assert [arith.wrap(int(v), bits, signed) for v in vs[::7]] == got[::7].tolist()
