"""A user's float inputs and labels for a model file, validated before anything is written.

Inputs (``--inputs X.npy``) must be a non-empty finite numeric array with one row per sample
and the model's input size per row, and lie inside the model's calibrated range
(:func:`calibrated_range`): values outside it would saturate silently, so they are an error
unless ``clip`` (``--clip``). Labels (``--labels Y.npy``) must be one integer class index per
sample, ``0 <= label < classes``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from softfloor import data, intmodel
from softfloor.artifacts import ArtifactError, load_array


@dataclass
class UserInputs:
    """Validated inputs: the real values, their codes, the labels (or None)."""
    x: np.ndarray
    codes: np.ndarray
    labels: np.ndarray | None
    clipped: int = 0      # samples with a value outside the calibrated range (``clip``)


def classes(model: intmodel.IntModel) -> int:
    """How many classes ``model`` tells apart (an ``argmax`` op: its input size)."""
    last = model.layers[-1]
    return last.features if isinstance(last, intmodel.Argmax) else model.output_size


def calibrated_range(model: intmodel.IntModel) -> tuple[float, float] | None:
    """The real input range the model was calibrated for: the training data's range recorded
    in ``meta.input_range`` (models trained by softfloor), widened by half a quantization step;
    otherwise the range its input quantizer maps without saturating (one global scale) widened
    by half of it on each side (a foreign model's quantizer may saturate the top of its data:
    Brevitas's 4-bit 2^-4 input maps 1.0 to 15, 15/16 of it); None when neither is known
    (per-value quantizers, e.g. per-pixel thresholds, without meta)."""
    spec = model.input
    t = spec.code_type
    step = None if spec.per_value else abs(float(spec.scale))
    rng = model.meta.get("input_range") if isinstance(model.meta, dict) else None
    if (isinstance(rng, (list, tuple)) and len(rng) == 2
            and all(isinstance(v, (int, float)) for v in rng) and rng[0] <= rng[1]):
        pad = 0.5 * step if step is not None else 1e-6 * max(1.0, rng[1] - rng[0])
        return float(rng[0]) - pad, float(rng[1]) + pad
    if step is None:
        return None
    lo, hi = (t.lo - spec.zero_point - 0.5) * step, (t.hi - spec.zero_point + 0.5) * step
    margin = 0.5 * (hi - lo)  # a saturating tail is the quantizer's business; 2x is unscaled
    return lo - margin, hi + margin


def load(model: intmodel.IntModel, inputs: Path, labels: Path | None = None,
         clip: bool = False) -> UserInputs:
    """Read and check ``inputs`` (and ``labels``) for ``model``; one-line errors naming the
    option, the file and what to do."""
    x = load_array(inputs, "--inputs", "float inputs, one row per sample")
    size = model.input.size
    if x.ndim == 1 and x.size == size:
        x = x.reshape(1, size)
    if x.ndim < 2 or x.shape[0] == 0 or x[0].size != size:
        raise ArtifactError(
            f"--inputs {inputs}: shape {x.shape}, expected one row of {size} values per sample "
            f"(the model's input {tuple(model.input.shape)})")
    x = x.astype(np.float64)
    clipped = 0
    rng = calibrated_range(model)
    if rng is not None:
        flat = x.reshape(len(x), -1)
        out = (flat < rng[0]) | (flat > rng[1])
        clipped = int(np.sum(np.any(out, axis=1)))
        if clipped and not clip:
            raise ArtifactError(
                f"--inputs {inputs}: {clipped} of {len(x)} samples have values outside the "
                f"model's calibrated range [{rng[0]:.4g}, {rng[1]:.4g}] (data {flat.min():.4g}"
                f"..{flat.max():.4g}); scale them as in training, or pass --clip to saturate")
    codes = model.input.quantize(x)
    y = None
    if labels is not None:
        y = load_labels(labels, len(codes), classes(model))
    return UserInputs(x, codes, y, clipped)


def load_labels(path: Path, n: int, n_classes: int) -> np.ndarray:
    """``n`` integer class labels in ``0 .. n_classes-1`` from a ``.npy`` file (``--labels``)."""
    y = load_array(path, "--labels", f"{n} integer class labels in 0..{n_classes - 1}")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.shape != (n,):
        raise ArtifactError(f"--labels {path}: shape {y.shape}, expected ({n},): one label per "
                            f"input row")
    try:
        y = data.class_labels(y, f"--labels {path}", f"give class indices 0..{n_classes - 1}")
    except ValueError as e:
        raise ArtifactError(str(e)) from None
    bad = y >= n_classes
    if np.any(bad):
        raise ArtifactError(f"--labels {path}: {int(np.sum(bad))} labels outside the model's "
                            f"classes 0..{n_classes - 1} (e.g. {y[bad][0]}); give class indices")
    return y
