"""Random networks of softfloor.nn layers for tests (tiny shapes, no training).

``random_net(seed)`` draws a chain: a QuantInput (1..8 bits, signed or not, one scale or
per-value thresholds), 1..6 weighted layers (convolutions while the tensor is an image, then
dense), random widths, kernels, strides, padding and pad values, 1..8 bits per layer, every
surrogate, per-channel or per-tensor weight scales, BatchNorm folded, as a threshold before a
1-bit activation, or none; activations ReLU, hardtanh, sigmoid or tanh tables; max-pools;
power-of-two or free scales for the whole network. It is calibrated on random data and its
parameters and statistics perturbed, so scales and thresholds land anywhere.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from softfloor import nn as snn
from softfloor.surrogates import SURROGATES


class Wrapped(nn.Module):
    """The same chain as attributes and a forward that calls them (torch.fx traces it)."""

    def __init__(self, layers):
        super().__init__()
        self.names = []
        for i, m in enumerate(layers):
            setattr(self, f"l{i}", m)
            self.names.append(f"l{i}")

    def forward(self, x):
        for n in self.names:
            x = getattr(self, n)(x)
        return x


def random_net(seed: int):
    """``(model, x)``: a random network and a batch of real inputs for it."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    free = rng.random() < 0.3
    surs = [s for s in SURROGATES if not (free and SURROGATES[s].scale_grad == "pact")]

    def sur():
        return str(rng.choice(surs))

    image = rng.random() < 0.6
    shape = ((int(rng.integers(1, 4)), int(rng.integers(3, 9)), int(rng.integers(3, 9)))
             if image else (int(rng.integers(2, 25)),))
    in_bits = int(rng.integers(1, 9))
    signed = in_bits > 1 and rng.random() < 0.3
    n = 24
    x = rng.normal(0, 1, (n, *shape)) if signed else rng.random((n, *shape)) * 2
    if in_bits == 1 and rng.random() < 0.5:
        qin = snn.QuantInput(1, thresholds=rng.uniform(0.2, 1.8, int(np.prod(shape))))
    else:
        scale = float(2.0 ** rng.integers(-6, 1)) if rng.random() < 0.5 \
            else float(rng.uniform(0.01, 0.5))
        qin = snn.QuantInput(in_bits, signed, scale=scale)
    layers = [qin]
    depth = int(rng.integers(1, 7))
    spatial = image
    for d in range(depth):
        last = d == depth - 1
        wb = int(rng.integers(1, 9))
        per_channel = bool(rng.random() < 0.4) and not last
        # the activation after this layer (decides the BatchNorm mode)
        act_kind = None if last and rng.random() < 0.5 else \
            str(rng.choice(["relu", "relu", "hardtanh", "table"] if not free else
                           ["relu", "hardtanh"]))
        ab = int(rng.integers(1, 9)) if act_kind == "relu" else int(rng.integers(2, 9))
        bn = None
        if not free and act_kind == "relu" and ab == 1 and rng.random() < 0.5:
            bn = "threshold"
        elif not free and act_kind is not None and rng.random() < 0.3:
            bn = "fold"
        conv = spatial and (d < depth - 1) and rng.random() < 0.8 and min(shape[1:]) >= 2
        if spatial and not conv:
            layers.append(snn.Flatten())
            shape = (int(np.prod(shape)),)
            spatial = False
        if conv:
            c, h, w = shape
            k = int(rng.integers(1, min(3, h, w) + 1))
            p = int(rng.integers(0, 2))
            s = int(rng.integers(1, 3))
            out = int(rng.integers(1, 6))
            pv = int(rng.choice([0, 0, 0, 1])) if p else 0
            layers.append(snn.QuantConv2d(c, out, k, p, wb, int(rng.integers(8, 17)),
                                          per_channel=per_channel, batchnorm=bn or False,
                                          stride=s, pad_value=pv,
                                          scales="free" if free else "po2", surrogate=sur()))
            shape = (out, (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1)
        else:
            out = int(rng.integers(2, 6)) if last else int(rng.integers(1, 17))
            layers.append(snn.QuantLinear(shape[0], out, wb, int(rng.integers(8, 17)),
                                          per_channel=per_channel, batchnorm=bn,
                                          scales="free" if free else "po2", surrogate=sur()))
            shape = (out,)
        if act_kind == "relu":
            layers.append(snn.QuantReLU(ab, sur(), free=free))
        elif act_kind == "hardtanh":
            layers.append(snn.QuantHardTanh(ab, sur(), free=free))
        elif act_kind == "table":
            cls = snn.QuantSigmoid if rng.random() < 0.5 else snn.QuantTanh
            layers.append(cls(ab, int(rng.integers(2, 7)), sur()))
        if conv and act_kind is not None and rng.random() < 0.4 and min(shape[1:]) >= 2:
            k = 2
            s = int(rng.integers(1, 3))
            layers.append(snn.QuantMaxPool2d(k, s))
            shape = (shape[0], (shape[1] - k) // s + 1, (shape[2] - k) // s + 1)
    model = nn.Sequential(*layers) if rng.random() < 0.7 else Wrapped(layers)
    xt = torch.as_tensor(x)
    snn.calibrate(model, xt, rng.integers(0, 3, n))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "log2_scale" in name:
                p.add_(torch.as_tensor(rng.normal(0, 0.7, tuple(p.shape))))
            elif "threshold" in name or "sharpness" in name:
                continue
            else:
                p.add_(torch.as_tensor(rng.normal(0, 0.1, tuple(p.shape))))
        for m in model.modules():
            if hasattr(m, "running_mean"):
                m.running_mean.add_(torch.as_tensor(rng.normal(0, 0.2, tuple(m.running_mean.shape))))
                m.gamma.mul_(torch.as_tensor(rng.choice([-1.0, 1.0, 0.5, 0.0],
                                                        tuple(m.gamma.shape))))
    return model, xt
