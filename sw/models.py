"""The networks: a quantized MLP 64-64-32-10 and its plain float twin.

Hidden layers are ``QuantLinear -> QuantReLU``; the last layer has no activation, its output is
the raw integer accumulator (the logits) at scale ``s_in * s_w``. The input is real values that
are input codes times ``2**-input_bits``. The quantized model holds float64 parameters so that
its hard-quantized forward is exact (see :func:`softfloor.train.hard_codes`).
"""
from __future__ import annotations

import torch
from torch import nn

from .quant import QuantLinear, QuantReLU, check_bits
from .surrogates import check_surrogate

#: The default layer widths: 64 pixels in, 10 classes out.
SIZES = (64, 64, 32, 10)


class QuantMLP(nn.Module):
    """Quantized MLP.

    Parameters
    ----------
    sizes : tuple of int
        Layer widths, input first.
    weight_bits, act_bits, input_bits : int
        Widths 1..8 of weight codes, activation codes and input codes.
    surrogate : str
        Rounding surrogate of the activations (``"sigmoid"`` or ``"ste"``).
    bias_bits : int
        Signed width the bias codes are clipped to.
    surrogate_kwargs : dict, optional
        Extra arguments to the surrogate class (e.g. ``hard_grad``).
    """

    def __init__(self, sizes=SIZES, weight_bits: int = 4, act_bits: int = 4,
                 input_bits: int = 4, surrogate: str = "sigmoid", bias_bits: int = 16,
                 surrogate_kwargs: dict | None = None):
        super().__init__()
        check_bits("weight_bits", weight_bits)
        check_bits("act_bits", act_bits)
        self.input_bits = check_bits("input_bits", input_bits)
        check_surrogate(surrogate)
        from .surrogates import make_surrogate
        self.sizes = tuple(int(s) for s in sizes)
        self.weight_bits, self.act_bits, self.bias_bits = weight_bits, act_bits, bias_bits
        self.surrogate_name = surrogate
        self.linears = nn.ModuleList(
            QuantLinear(a, b, weight_bits, bias_bits) for a, b in zip(sizes, sizes[1:]))
        self.acts = nn.ModuleList(
            QuantReLU(act_bits, make_surrogate(surrogate, **(surrogate_kwargs or {})))
            for _ in range(len(sizes) - 2))
        self.double()

    @property
    def input_exp(self) -> int:
        """Exponent of the input scale: inputs are ``codes * 2**input_exp``."""
        return -self.input_bits

    def set_surrogate(self, k: float, hard: bool) -> None:
        """Set the sharpness and the hard flag of every activation's surrogate."""
        for act in self.acts:
            act.surrogate.k = k
            act.surrogate.hard = hard

    def layer_exps(self) -> list[int]:
        """Input exponent of every linear layer (the input's, then each activation's)."""
        return [self.input_exp] + [a.exp for a in self.acts]

    @torch.no_grad()
    def calibrate(self, x: torch.Tensor) -> None:
        """Initialise the activation scales from a batch, layer by layer (hard quantization)."""
        hard = [a.surrogate.hard for a in self.acts]
        x = x.to(torch.float64)
        exp = self.input_exp
        for i, lin in enumerate(self.linears):
            x = lin(x, exp)
            if i < len(self.acts):
                act = self.acts[i]
                act.init_scale(x)
                act.surrogate.hard = True
                x = act(x)
                act.surrogate.hard = hard[i]
                exp = act.exp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Real inputs (codes * 2**input_exp) to real logits (accumulator * its scale)."""
        x = x.to(torch.float64)
        exps = self.layer_exps()
        for i, lin in enumerate(self.linears):
            x = lin(x, exps[i])
            if i < len(self.acts):
                x = self.acts[i](x)
        return x


class FloatMLP(nn.Module):
    """The float baseline: the same widths, ReLU between, float32."""

    def __init__(self, sizes=SIZES):
        super().__init__()
        self.sizes = tuple(int(s) for s in sizes)
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.to(torch.float32))
