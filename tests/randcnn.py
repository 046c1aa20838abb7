"""Random valid convolutional IntModels for tests: every op type of format version 2.

Accumulator widths always come from the worst-case bound of the actual integer weights.
"""
from __future__ import annotations

import math

import numpy as np

from softfloor import arith
from softfloor.intmodel import (ChannelRequant, CodeType, Conv2d, Dense, Flatten, InputSpec,
                                IntModel, MaxPool2d, MultiThreshold, OutputSpec, Requant)


def acc_bits_for(weight2d, bias, t: CodeType) -> int:
    lo, hi = arith.dense_bounds(weight2d, bias, t.lo, t.hi)
    bits, _ = arith.bits_for_range(min(int(min(lo)), -1), max(int(max(hi)), 0))
    return max(2, bits)


def _shift_for(t: CodeType, mult: int, bits: int, fan_in: int) -> int:
    span = max(abs(t.lo), abs(t.hi), 1) * mult // max(1, math.isqrt(fan_in))
    return max(0, span.bit_length() - bits)


def random_cnn(rng: np.random.Generator, *, in_shape=(2, 6, 5), channels=(3, 4), classes=3,
               weight_bits=None, act_bits=None, per_channel=None, threshold=None,
               name="cnn") -> IntModel:
    """conv -> (per-channel) requant -> maxpool -> conv -> multithreshold|requant -> flatten -> dense.

    Strides, paddings and pad values are drawn at random; unset options too.
    """
    wb = weight_bits or int(rng.integers(2, 9))
    ab = act_bits or int(rng.integers(2, 6))
    per_channel = bool(rng.integers(2)) if per_channel is None else per_channel
    threshold = bool(rng.integers(2)) if threshold is None else threshold
    in_bits = int(rng.integers(2, 9))
    in_signed = bool(rng.integers(2))
    spec = InputSpec(in_shape, in_bits, in_signed, scale=1 / 16, zero_point=0,
                     rounding=str(rng.choice(arith.ROUNDING_MODES)))
    t, shape = spec.code_type, tuple(in_shape)
    layers = []

    def conv(k, cin, cout):
        nonlocal t, shape
        stride = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
        pad = tuple(int(v) for v in rng.integers(0, 2, size=4))
        kh = int(rng.integers(1, min(3, shape[1] + pad[0] + pad[2]) + 1))
        kw = int(rng.integers(1, min(3, shape[2] + pad[1] + pad[3]) + 1))
        wlo, whi = arith.code_range(wb, True)
        w = rng.integers(wlo, whi + 1, size=(cout, cin, kh, kw))
        b = rng.integers(-20, 21, size=cout)
        pad_value = int(rng.integers(t.lo, t.hi + 1)) if any(pad) else 0
        c = Conv2d(f"conv{k}", w, b, wb, 7, max(7, acc_bits_for(w.reshape(cout, -1), b, t)),
                   stride, pad, pad_value)
        shape = c.out_shape(shape, "rand")
        t = c.out_type(t)
        layers.append(c)

    conv(0, in_shape[0], channels[0])
    mult = [int(m) for m in rng.choice([1, 3, 5, 77], size=channels[0])]
    if per_channel:
        shifts = [_shift_for(t, m, ab, 9) + int(rng.integers(-1, 2)) for m in mult]
        rq = ChannelRequant("act0", np.array([max(0, s) for s in shifts]), "half_even", ab,
                            False, 0, (1 << ab) - 1, np.array(mult))
    else:
        rq = Requant("act0", _shift_for(t, mult[0], ab, 9), "half_up", ab, False, 0,
                     (1 << ab) - 1, mult[0])
    layers.append(rq)
    t = rq.out_type(t)
    if min(shape[1:]) >= 2:
        mp = MaxPool2d("pool0", (2, 2), (int(rng.integers(1, 3)),) * 2)
        shape = mp.out_shape(shape, "rand")
        layers.append(mp)
    conv(1, channels[0], channels[1])
    if threshold:
        steps = (1 << ab) - 1
        rows = int(rng.choice([1, channels[1]]))
        thr = np.sort(rng.integers(t.lo, t.hi + 1, size=(rows, steps)), axis=1)
        act = MultiThreshold("thr1", thr, ab + 1, True, out_bias=int(rng.integers(-2, 1)))
    else:
        act = Requant("act1", _shift_for(t, 1, ab, 9), "floor", ab, True,
                      -(1 << (ab - 1)), (1 << (ab - 1)) - 1)
    layers.append(act)
    t = act.out_type(t)
    layers.append(Flatten("flat"))
    n = int(np.prod(shape))
    wlo, whi = arith.code_range(wb, True)
    w = rng.integers(wlo, whi + 1, size=(classes, n))
    b = rng.integers(-50, 51, size=classes)
    layers.append(Dense("fc", w, b, wb, 7, max(7, acc_bits_for(w, b, t))))
    return IntModel(spec, layers, OutputSpec(0.01), name)


def random_cnn_network(seed: int, *, soak: bool = False) -> IntModel:
    """A random valid CNN from one integer ``seed`` (same seed, same model): random input shape
    (1..3 channels, 3..6 pixels a side; bigger with ``soak``), channel counts, classes, and
    everything :func:`random_cnn` draws (kernels, strides, paddings and pad values, bit widths,
    per-channel requant or not, multi-threshold or requant, max-pool when the frame allows)."""
    rng = np.random.default_rng(seed)
    c = int(rng.integers(1, 4))
    h, w = (int(v) for v in rng.integers(3, 10 if soak else 7, size=2))
    top = 7 if soak else 4
    channels = (int(rng.integers(1, top)), int(rng.integers(1, top)))
    return random_cnn(rng, in_shape=(c, h, w), channels=channels,
                      classes=int(rng.integers(1, 5)), name=f"cnn{seed}")
