"""Random valid integer models for tests (accumulators sized from the actual weights)."""
from __future__ import annotations

import numpy as np

from softfloor import arith, intmodel as im


def random_model(rng: np.random.Generator, widths=(16, 8, 4), weight_bits=4, act_bits=4,
                 input_bits=4, input_signed=False, rounding=None, bias_scale=30,
                 worst_case: bool = False) -> im.IntModel:
    """A chain dense -> requant -> ... -> dense, with random (or worst-case) weights."""
    layers = []
    t = im.CodeType.full(input_bits, input_signed)
    wlo, whi = (-1, 1) if weight_bits == 1 else arith.code_range(weight_bits, True)
    for i, (n_in, n_out) in enumerate(zip(widths, widths[1:])):
        if worst_case:
            w = np.where(rng.random((n_out, n_in)) < 0.5, wlo, whi)
        else:
            w = rng.integers(wlo, whi + 1, (n_out, n_in))
        if weight_bits == 1:
            w = np.where(w >= 0, 1, -1)
        b = rng.integers(-bias_scale, bias_scale + 1, n_out)
        lo, hi = arith.dense_bounds(w, b, t.lo, t.hi)
        bits, signed = arith.bits_for_range(int(min(lo)), int(max(hi)))
        acc_bits = max(bits + (0 if signed else 1), 2)
        bias_bits = max(arith.bits_for_range(int(b.min()), int(b.max()))[0] + 1, 2)
        d = im.Dense(f"fc{i}", w, b, weight_bits, min(bias_bits, acc_bits), acc_bits)
        layers.append(d)
        t = d.out_type(t)
        if i < len(widths) - 2:
            mode = rounding or arith.ROUNDING_MODES[int(rng.integers(3))]
            span = max(abs(t.lo), abs(t.hi), 1)
            shift = max(0, span.bit_length() - act_bits + int(rng.integers(-1, 2)))
            r = im.Requant(f"act{i}", shift, mode, act_bits, False, 0, (1 << act_bits) - 1)
            layers.append(r)
            t = r.out_type(t)
    return im.IntModel(im.InputSpec((widths[0],), input_bits, input_signed, 2.0 ** -input_bits),
                       layers, im.OutputSpec(0.01), name="random")


def random_inputs(model: im.IntModel, rng: np.random.Generator, n: int) -> np.ndarray:
    t = model.input.code_type
    x = rng.integers(t.lo, t.hi + 1, (n, model.input.size))
    x[: min(n, 2)] = [t.hi, t.lo][: min(n, 2)][0] if n == 1 else np.array([[t.hi], [t.lo]])[:min(n, 2)]
    return x
