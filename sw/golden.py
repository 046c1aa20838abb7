"""The golden model: numpy integer execution of an :class:`~softfloor.intmodel.IntModel`.

It is the judge of every RTL run. Integer codes in, integer codes out (int64 throughout; dense
and convolution use BLAS only where every partial sum is provably an exact float, see
:func:`softfloor.intmodel.exact_matmul`); vectorised over a batch, convolutions by im2col, and
streamed in chunks, so data larger than memory goes through :func:`iter_run`.

Codes are passed flat, one row per sample (``(N, size)``, C order for ``(C, H, W)`` inputs), or
already shaped ``(N, *input.shape)``; outputs are flat ``(N, output_size)``.
"""
from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

from .intmodel import Argmax, IntModel, ModelFormatError

#: Samples per chunk when streaming.
CHUNK = 65536


def check_codes(model: IntModel, codes: np.ndarray, clip: bool = False) -> np.ndarray:
    """Return ``codes`` as an int64 ``(N, *input.shape)`` array inside the input code range.

    Out-of-range codes raise :class:`ModelFormatError`, or are saturated when ``clip`` is true.
    """
    codes = np.asarray(codes)
    if codes.ndim == 0:
        raise ModelFormatError("input codes: expected one row per sample, got a scalar")
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
        codes = codes.clip(t.lo, t.hi)
    else:
        bad = (codes < t.lo) | (codes > t.hi)
        if bad.any():
            i, j = np.argwhere(bad)[0]
            raise ModelFormatError(
                f"input code {codes[i, j]} (sample {i}, element {j}) outside the input range "
                f"[{t.lo}, {t.hi}]; pass clip=True to saturate instead")
    return codes.reshape((codes.shape[0],) + tuple(model.input.shape))


def run(model: IntModel, codes: np.ndarray, intermediates: bool = False, clip: bool = False):
    """Run integer input codes through the model.

    Parameters
    ----------
    codes : array of int, shape (N, input_size), (N, *input.shape) or (input_size,)
    intermediates : bool
        Also return the codes after every layer (a list, one ``(N, *shape)`` array per layer in
        that layer's own shape: ``(N, width)`` for dense/requant on flat tensors, ``(N, C, H, W)``
        after convolutions), to find the first layer where an implementation differs.
    clip : bool
        Saturate out-of-range input codes instead of raising.

    Returns
    -------
    outputs : int64 array (N, output_size), or ``(outputs, per_layer)`` with ``intermediates``.
    """
    x = check_codes(model, codes, clip)
    # Sub-batches small enough that every intermediate stays in cache (~8 MB of int64).
    widest = max(int(np.prod(s)) for s in model.shapes())
    step = max(1, (1 << 20) // widest)
    outs, parts = [], []
    for s in range(0, max(1, len(x)), step):
        xb, per_layer = x[s:s + step], []
        for layer in model.layers:
            xb = layer.execute(xb)
            if intermediates:
                per_layer.append(xb)
        outs.append(xb.reshape(xb.shape[0], -1))
        parts.append(per_layer)
    out = outs[0] if len(outs) == 1 else np.concatenate(outs)
    if not intermediates:
        return out
    per_layer = [p[0] if len(parts) == 1 else np.concatenate(p) for p in zip(*parts)]
    return out, per_layer


def iter_run(model: IntModel, chunks: Iterable[np.ndarray], clip: bool = False
             ) -> Iterator[np.ndarray]:
    """Stream: yield the outputs of each chunk of input codes (e.g. slices of a ``np.memmap``)."""
    for chunk in chunks:
        for start in range(0, len(chunk), CHUNK):
            yield run(model, np.asarray(chunk[start:start + CHUNK]), clip=clip)


def run_real(model: IntModel, x) -> np.ndarray:
    """Quantize real inputs with the model's input spec (always saturating), then :func:`run`."""
    return run(model, model.input.quantize(x))


def dequantize(model: IntModel, out_codes: np.ndarray) -> np.ndarray:
    """Flat output codes ``(N, output_size)`` to real values (per-channel scales applied)."""
    q = np.asarray(out_codes)
    q = q.reshape((-1,) + tuple(model.output_shape))
    return model.output.dequantize(q).reshape(q.shape[0], -1)


def predict(model: IntModel, codes: np.ndarray) -> np.ndarray:
    """Class index per sample: argmax of the outputs (first maximum on ties), or the output
    itself when the model ends in an ``argmax`` op.

    With one output scale this is the argmax of the integer codes; with per-channel scales the
    codes are not comparable across channels, so it is the argmax of the dequantized values.
    """
    return classify(model, run(model, codes))


def classify(model: IntModel, out_codes: np.ndarray) -> np.ndarray:
    """Class index per sample from output codes (see :func:`predict`); a model ending in an
    ``argmax`` op outputs the class index itself."""
    out = np.asarray(out_codes)
    if isinstance(model.layers[-1], Argmax):
        return out.reshape(out.shape[0], -1)[:, 0]
    if model.output.per_channel:
        return np.argmax(dequantize(model, out), axis=1)
    return np.argmax(out.reshape(out.shape[0], -1), axis=1)
