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


def test_validation_folds_come_from_the_training_samples(split4):
    from softfloor.data import validation_split
    folds = [validation_split(split4, f) for f in range(3)]
    train_rows = {r.tobytes() for r in split4.x_train}
    for v in folds:
        assert len(v.y_train) == 1149 and len(v.y_test) == 288
        assert v.input_spec == split4.input_spec
        # disjoint, together the training samples, none of the test split
        both = np.concatenate([v.x_train, v.x_test])
        assert sorted(r.tobytes() for r in both) == sorted(train_rows)
        assert np.array_equal(split4.input_spec.quantize(v.x_test), v.c_test)
        counts = np.bincount(v.y_test, minlength=10)
        assert np.all(np.abs(counts - np.bincount(split4.y_train, minlength=10) * 0.2) <= 1)
    assert not np.array_equal(folds[0].y_test, folds[1].y_test)
    assert np.array_equal(validation_split(split4, 1).x_test, folds[1].x_test)
    with pytest.raises(ValueError, match="fold must be a non-negative integer"):
        validation_split(split4, -1)


def _shift_ref(img, dy, dx):
    out = np.zeros_like(img)
    for r in range(8):
        for c in range(8):
            if 0 <= r - dy < 8 and 0 <= c - dx < 8:
                out[r, c] = img[r - dy, c - dx]
    return out


@pytest.mark.parametrize("bits", [1, 4])
def test_augment_keeps_codes_on_the_grid(bits):
    from softfloor.data import augment_codes
    s = load_digits_split(bits)
    step = 2.0 ** -bits
    x = s.c_train[:300].astype(np.float64) * step
    hi = ((1 << bits) - 1) * step
    out = augment_codes(x, 1, 0.3, step, hi, np.random.default_rng(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    codes = out / step
    assert np.array_equal(codes, np.round(codes))
    assert codes.min() == 0 and codes.max() == (1 << bits) - 1
    assert not np.array_equal(out, x)
    assert np.array_equal(x, s.c_train[:300] * step)  # the input is unchanged


def test_augment_shift_is_a_zero_filled_translation():
    from softfloor.data import augment_codes
    s = load_digits_split(4)
    x = s.c_train[:200].astype(np.float64)
    out = augment_codes(x, 2, 0.0, 1.0, 15.0, np.random.default_rng(3))
    seen = set()
    for a, b in zip(x, out):
        img, got = a.reshape(8, 8), b.reshape(8, 8)
        match = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                 if np.array_equal(_shift_ref(img, dy, dx), got)]
        assert match, "not a shift of its input"
        seen.update(match)
    assert len(seen) == 25  # every shift occurs
    # noise alone: one step changes, nothing else
    out = augment_codes(x, 0, 0.5, 1.0, 15.0, np.random.default_rng(4))
    d = out - x
    assert set(np.unique(d)) <= {-1.0, 0.0, 1.0} and 0.3 < np.mean(d != 0) < 0.5


def test_augment_is_deterministic_and_same_in_torch_and_numpy_shapes():
    import torch
    from softfloor.data import augment_codes
    x = torch.as_tensor(load_digits_split(4).c_train[:64], dtype=torch.float64) / 16
    a = augment_codes(x, 1, 0.2, 1 / 16, 15 / 16, torch.Generator().manual_seed(7))
    b = augment_codes(x, 1, 0.2, 1 / 16, 15 / 16, torch.Generator().manual_seed(7))
    c = augment_codes(x, 1, 0.2, 1 / 16, 15 / 16, torch.Generator().manual_seed(8))
    assert isinstance(a, torch.Tensor) and a.dtype == x.dtype and a.shape == x.shape
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(augment_codes(x, 0, 0.0, 1 / 16, 15 / 16, None), x)
    f = augment_codes(x.float(), 1, 0.2, 1 / 16, 1.0, torch.Generator().manual_seed(7))
    assert f.dtype == torch.float32


def test_code_noise_moves_codes_one_step_at_the_rate_and_is_deterministic():
    import torch
    from softfloor.data import code_noise
    x = torch.full((300, 784), 0.25, dtype=torch.float32)
    x[:, :100] = 0.0
    out = code_noise(x, 0.3, 0.25, 0.0, 0.75, torch.Generator().manual_seed(5))
    assert out.dtype == x.dtype and out.shape == x.shape and torch.equal(x[0, :2], x[0, :2])
    d = (out - x)[:, 100:]
    assert set(d.unique().tolist()) == {-0.25, 0.0, 0.25}
    assert abs(float((d > 0).float().mean()) - 0.15) < 0.005
    assert abs(float((d < 0).float().mean()) - 0.15) < 0.005
    assert float(out[:, :100].min()) == 0.0  # clamped at lo
    assert torch.equal(out, code_noise(x, 0.3, 0.25, 0.0, 0.75, torch.Generator().manual_seed(5)))
    assert bool((code_noise(x, 1.0, 0.25, 0.0, 0.75, torch.Generator()) != x)[:, 100:].all())
    assert torch.equal(code_noise(x, 0.0, 0.25, 0.0, 0.75, None), x)
    with pytest.raises(ValueError, match="augment noise must be a probability"):
        code_noise(x, 1.5, 0.25, 0.0, 0.75, None)


@pytest.mark.parametrize("kw, msg", [
    ({"shift": 8}, "augment shift must be an integer from 0 to 7"),
    ({"shift": 1.5}, "augment shift"), ({"noise": 1.5}, "augment noise must be a probability"),
])
def test_augment_errors(kw, msg):
    from softfloor.data import augment_codes
    args = {"shift": 1, "noise": 0.1} | kw
    with pytest.raises(ValueError, match=msg):
        augment_codes(np.zeros((2, 64)), args["shift"], args["noise"], 1.0, 15.0,
                      np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"shape \(N, 64\)"):
        augment_codes(np.zeros((2, 8, 8)), 1, 0.0, 1.0, 15.0, np.random.default_rng(0))


def test_per_pixel_thresholds_are_calibrated_on_the_training_samples_only():
    """w1a1's per-pixel input quantizer: one threshold per pixel (the most informative about
    the label on the training samples), exact as a per-value input scale; a validation fold
    re-calibrates on its training part; only for 1-bit inputs."""
    from softfloor.data import (check_input_quant, digits_input_spec, mi_thresholds,
                                validation_split)
    s = load_digits_split(1, "per_pixel")
    t = mi_thresholds(s.x_train, s.y_train)
    assert t.shape == (64,) and t.min() >= 1 and t.max() <= 16 and len(set(t.tolist())) > 3
    assert s.input_quant == "per_pixel" and s.input_spec.per_value
    assert s.input_spec == digits_input_spec(1, t)
    for x, c in ((s.x_train, s.c_train), (s.x_test, s.c_test)):
        assert np.array_equal(c, (np.rint(x * 16) >= t).astype(np.int64))
    # a pixel that is 0 in every training image carries no information: the lowest threshold
    assert t[0] == 1 and np.all(s.x_train[:, 0] == 0)
    # the thresholds do not depend on the test samples
    v = validation_split(s, 0)
    tv = np.rint(np.array(v.input_spec.scale) * 8).astype(np.int64)
    assert np.array_equal(tv, mi_thresholds(v.x_train, v.y_train))
    assert not np.array_equal(tv, t)
    assert np.array_equal(v.c_test, (np.rint(v.x_test * 16) >= tv).astype(np.int64))
    # labels matter: shuffled labels give other thresholds
    rng = np.random.default_rng(0)
    assert not np.array_equal(mi_thresholds(s.x_train, rng.permutation(s.y_train)), t)
    with pytest.raises(ValueError, match="per_pixel.*needs 1-bit inputs"):
        load_digits_split(4, "per_pixel")
    with pytest.raises(ValueError, match="input_quant must be one of"):
        check_input_quant("median", 1)
    assert load_digits_split(1).input_quant == "global"
