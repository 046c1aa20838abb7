"""The digits split: sizes, stratification, input codes, errors, and a torch-free import."""
import subprocess
import sys

import numpy as np
import pytest
from sklearn.datasets import load_digits

from softfloor import arith
from softfloor.data import DigitsSplit, load_digits_split


@pytest.fixture(scope="module")
def split4() -> DigitsSplit:
    return load_digits_split(4)


def test_sizes_and_dtypes(split4):
    s = split4
    assert s.x_train.shape == (1437, 64) and s.x_test.shape == (360, 64)
    assert s.c_train.shape == (1437, 64) and s.c_test.shape == (360, 64)
    assert s.x_train.dtype == np.float64 and s.c_train.dtype == np.int64
    assert s.y_train.dtype == np.int64 and len(s.y_test) == 360
    assert 0.0 <= s.x_train.min() and s.x_train.max() <= 1.0
    assert "train=1437" in repr(s)


def test_stratified(split4):
    counts = np.bincount(split4.y_test, minlength=10)
    full = np.bincount(load_digits().target, minlength=10)
    assert np.all(np.abs(counts - full * 0.2) <= 1)


def test_four_bit_codes_are_the_clipped_pixels(split4):
    d = load_digits()
    pixels = np.sort(d.data.astype(np.int64), axis=0)
    codes = np.sort(np.concatenate([split4.c_train, split4.c_test]), axis=0)
    assert np.array_equal(codes, np.minimum(pixels, 15))
    spec = split4.input_spec
    assert (spec.bits, spec.signed, spec.scale, spec.zero_point, spec.rounding) == \
        (4, False, 1 / 16, 0, "half_up")


@pytest.mark.parametrize("bits", [1, 2, 8])
def test_codes_follow_arith(bits):
    s = load_digits_split(bits)
    scale = 0.75 if bits == 1 else 2.0 ** -bits
    assert s.input_spec.scale == scale
    want = arith.quantize_real(s.x_test, scale, 0, bits, False, "half_up")
    assert np.array_equal(s.c_test, want)
    if bits == 1:  # the 1-bit threshold is pixel >= 6 of 16
        assert np.array_equal(s.c_test, (s.x_test * 16 >= 6).astype(np.int64))
    assert s.c_test.max() == (1 << bits) - 1 and s.c_test.min() == 0


def test_same_split_every_time(split4):
    again = load_digits_split(8)
    assert np.array_equal(split4.x_test, again.x_test)
    assert np.array_equal(split4.y_train, again.y_train)


@pytest.mark.parametrize("bits", [0, 9, -1, 2.0, "4", True])
def test_bad_input_bits(bits):
    with pytest.raises(ValueError, match="input_bits must be an integer from 1 to 8"):
        load_digits_split(bits)


def test_light_import():
    code = ("import sys, softfloor, softfloor.arith, softfloor.intmodel, softfloor.golden, "
            "softfloor.data; softfloor.data.load_digits_split(4); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
