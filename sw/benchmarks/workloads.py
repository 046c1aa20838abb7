"""Reference workloads with random weights of the right widths: FINN's CNV and a 28x28 CNN.

CIFAR-10 cannot be fetched here, so these networks carry random integer weights and per-channel
thresholds drawn around each channel's accumulator spread (so activations toggle as a trained
network's do); their hardware cost and speed do not depend on the values, only on the widths.

* :func:`cnv` -- FINN's CNV topology (``finn-examples`` ``cnv-w1a1`` / ``cnv-w2a2``): input
  32x32x3 (8-bit codes), conv3x3 64, 64, maxpool 2, conv 128, 128, maxpool 2, conv 256, 256
  (no padding: 32->30->28->14->12->10->5->3->1), dense 512, 512, 10; every conv and the first
  two dense layers followed by a multi-threshold activation of ``act_bits`` (FINN's BN + sign /
  quantizer folded into thresholds), 1-bit weights are +-1.
* :func:`cnn28` -- a 28x28x1 CNN (MNIST-sized): conv3x3 16, pool 2, conv3x3 32, pool 2,
  dense 10, same conventions.
"""
from __future__ import annotations

import numpy as np

from softfloor import arith
from softfloor.intmodel import (CodeType, Conv2d, Dense, Flatten, InputSpec, IntModel,
                                MaxPool2d, MultiThreshold, OutputSpec)

__all__ = ["cnv", "cnn28", "random_network", "CNV_LAYERS", "CNN28_LAYERS"]

#: ("conv", out channels) / ("pool",) / ("dense", out features) in order; the last dense layer
#: gives the logits (no activation).
CNV_LAYERS = (("conv", 64), ("conv", 64), ("pool",), ("conv", 128), ("conv", 128), ("pool",),
              ("conv", 256), ("conv", 256), ("dense", 512), ("dense", 512), ("dense", 10))
CNN28_LAYERS = (("conv", 16), ("pool",), ("conv", 32), ("pool",), ("dense", 10))


def _weights(rng, shape, bits: int) -> np.ndarray:
    if bits == 1:
        return rng.choice(np.array([-1, 1]), size=shape)
    lo, hi = arith.code_range(bits, True)
    return rng.integers(lo, hi + 1, size=shape)


def _acc_bits(w2d: np.ndarray, t: CodeType) -> int:
    lo, hi = arith.dense_bounds(w2d, np.zeros(w2d.shape[0], dtype=np.int64), t.lo, t.hi)
    return max(2, arith.bits_for_range(min(int(min(lo)), -1), max(int(max(hi)), 0))[0])


def _thresholds(rng, w2d: np.ndarray, t: CodeType, steps: int) -> np.ndarray:
    """Per output row, ``steps`` sorted thresholds spread over +-1.5 standard deviations of
    the row's accumulator for uniform random input codes."""
    mean = (t.lo + t.hi) / 2
    var = ((t.hi - t.lo + 1) ** 2 - 1) / 12
    mu = w2d.sum(axis=1) * mean
    sd = np.sqrt((w2d.astype(np.float64) ** 2).sum(axis=1) * var) + 1
    q = np.linspace(-1.5, 1.5, steps) if steps > 1 else np.zeros(1)
    thr = np.round(mu[:, None] + sd[:, None] * q[None, :]).astype(np.int64)
    thr += rng.integers(-1, 2, size=thr.shape)
    return np.sort(thr, axis=1)


def random_network(layers, in_shape, in_bits: int, weight_bits: int, act_bits: int, *,
                   seed: int = 0, name: str = "net") -> IntModel:
    """An IntModel of ``layers`` (see :data:`CNV_LAYERS`) on ``in_shape`` unsigned
    ``in_bits`` input codes, random ``weight_bits`` weights and ``act_bits`` activations."""
    rng = np.random.default_rng(seed)
    spec = InputSpec(tuple(in_shape), in_bits, False, scale=1 / (1 << in_bits), zero_point=0)
    t, shape = spec.code_type, tuple(in_shape)
    out, steps, flat = [], (1 << act_bits) - 1, False
    last_dense = max(k for k, l in enumerate(layers) if l[0] == "dense")
    for k, layer in enumerate(layers):
        if layer[0] == "pool":
            p = MaxPool2d(f"pool{k}", (2, 2), (2, 2))
            shape = p.out_shape(shape, name)
            out.append(p)
            continue
        if layer[0] == "conv":
            w = _weights(rng, (layer[1], shape[0], 3, 3), weight_bits)
            w2d = w.reshape(layer[1], -1)
            lay = Conv2d(f"conv{k}", w, np.zeros(layer[1], dtype=np.int64), weight_bits, 2,
                         _acc_bits(w2d, t), (1, 1), (0, 0, 0, 0), 0)
        else:
            if not flat:
                out.append(Flatten("flatten"))
                shape, flat = (int(np.prod(shape)),), True
            w2d = _weights(rng, (layer[1], shape[0]), weight_bits)
            lay = Dense(f"fc{k}", w2d, np.zeros(layer[1], dtype=np.int64), weight_bits, 2,
                        _acc_bits(w2d, t))
        out.append(lay)
        shape, t = lay.out_shape(shape, name), lay.out_type(t)
        if k != last_dense:
            act = MultiThreshold(f"act{k}", _thresholds(rng, w2d, t, steps), act_bits, False)
            out.append(act)
            t = act.out_type(t)
    return IntModel(spec, out, OutputSpec(1.0), name)


def cnv(weight_bits: int = 1, act_bits: int = 1, seed: int = 0) -> IntModel:
    """FINN's CNV at ``w{weight_bits}a{act_bits}`` with random weights (8-bit input)."""
    return random_network(CNV_LAYERS, (3, 32, 32), 8, weight_bits, act_bits, seed=seed,
                          name=f"cnv-w{weight_bits}a{act_bits}")


def cnn28(weight_bits: int = 4, act_bits: int = 4, seed: int = 0) -> IntModel:
    """The 28x28 CNN of :data:`CNN28_LAYERS` with random weights (8-bit input)."""
    return random_network(CNN28_LAYERS, (1, 28, 28), 8, weight_bits, act_bits, seed=seed,
                          name=f"cnn28-w{weight_bits}a{act_bits}")
