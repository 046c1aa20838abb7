"""The golden model: numpy integer execution of an :class:`~softfloor.intmodel.IntModel`.

It is the judge of every RTL run. Integer codes in, integer codes out; vectorised over a batch
and streamed in chunks, so data larger than memory goes through ``iter_run``.
"""
from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

from .intmodel import IntModel, ModelFormatError

#: Samples per chunk when streaming.
CHUNK = 65536


def check_codes(model: IntModel, codes: np.ndarray, clip: bool = False) -> np.ndarray:
    """Return ``codes`` as an int64 ``(N, input_size)`` array inside the input code range.

    Out-of-range codes raise :class:`ModelFormatError`, or are saturated when ``clip`` is true.
    """
    codes = np.asarray(codes)
    if codes.ndim == 1:
        codes = codes[None, :]
    if not np.issubdtype(codes.dtype, np.integer):
        raise ModelFormatError(f"input codes must be integers, got dtype {codes.dtype}")
    codes = codes.reshape(codes.shape[0], -1).astype(np.int64)
    if codes.shape[1] != model.input.size:
        raise ModelFormatError(
            f"input codes have {codes.shape[1]} values per sample, the model expects "
            f"{model.input.size}")
    t = model.input.code_type
    if clip:
        return codes.clip(t.lo, t.hi)
    bad = (codes < t.lo) | (codes > t.hi)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise ModelFormatError(
            f"input code {codes[i, j]} (sample {i}, element {j}) outside the input range "
            f"[{t.lo}, {t.hi}]; pass clip=True to saturate instead")
    return codes


def run(model: IntModel, codes: np.ndarray, intermediates: bool = False, clip: bool = False):
    """Run integer input codes through the model.

    Parameters
    ----------
    codes : array of int, shape (N, input_size) or (input_size,)
    intermediates : bool
        Also return the codes after every layer (a list, one ``(N, width)`` array per layer), to
        find the first layer where an implementation differs.
    clip : bool
        Saturate out-of-range input codes instead of raising.
    Returns
    -------
    outputs : int64 array (N, output_size), or ``(outputs, per_layer)`` with ``intermediates``.
    """
    x = check_codes(model, codes, clip)
    per_layer = []
    for layer in model.layers:
        x = layer.execute(x)
        if intermediates:
            per_layer.append(x)
    return (x, per_layer) if intermediates else x


def iter_run(model: IntModel, chunks: Iterable[np.ndarray], clip: bool = False
             ) -> Iterator[np.ndarray]:
    """Stream: yield the outputs of each chunk of input codes."""
    for chunk in chunks:
        for start in range(0, len(chunk), CHUNK):
            yield run(model, chunk[start:start + CHUNK], clip=clip)


def run_real(model: IntModel, x) -> np.ndarray:
    """Quantize real inputs with the model's input spec, then :func:`run`."""
    return run(model, model.input.quantize(x))


def dequantize(model: IntModel, out_codes: np.ndarray) -> np.ndarray:
    """Output codes to real values."""
    return model.output.scale * (np.asarray(out_codes, dtype=np.float64) - model.output.zero_point)


def predict(model: IntModel, codes: np.ndarray) -> np.ndarray:
    """Class index per sample: argmax of the output codes (first maximum on ties)."""
    return np.argmax(run(model, codes), axis=1)
