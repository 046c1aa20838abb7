"""A custom CNN on the 5,000 MNIST digits: a 5x5 stride-2 convolution, a 3x3 pad-1 convolution,
a max-pool and a dense layer, written as an ordinary ``nn.Module``.

softfloor.fit trains it, softfloor.export turns it (traced with torch.fx) into an integer
model, and ``softfloor flow --model`` co-simulates the generated Verilog against the golden
model on Verilator and Icarus::

    python examples/cnn_mnist5k.py --out build/examples/cnn          # w4a4, 60 epochs
    python examples/cnn_mnist5k.py --epochs 1 --samples 4             # a quick check

Prints one JSON line per width: float twin and quantized test accuracy, epoch times, and the
RTL's mismatches per simulator.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

from softfloor import nn as snn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import main, train_export_check  # noqa: E402 (the examples' shared steps)

#: (weight bits, activation bits, input bits, BatchNorm) per width.
WIDTHS = {"w4a4": (4, 4, 4, False), "w2a2": (2, 2, 2, True), "w1a1": (1, 1, 1, False)}


class Net(nn.Module):
    """28x28 -> conv 5x5 stride 2 -> conv 3x3 pad 1 -> max-pool 2 -> dense 10 (8 and 16
    channels by default)."""

    def __init__(self, weight_bits=4, act_bits=4, input_bits=4, batchnorm=False,
                 surrogate="ste", channels=(8, 16)):
        super().__init__()
        c1, c2 = channels
        self.inp = snn.QuantInput(input_bits, scale=2.0 ** -input_bits if input_bits > 1
                                  else 0.75)
        self.conv1 = snn.QuantConv2d(1, c1, 5, padding=0, stride=2, weight_bits=weight_bits,
                                     batchnorm=batchnorm, surrogate=surrogate)
        self.act1 = snn.QuantReLU(act_bits, surrogate)
        self.conv2 = snn.QuantConv2d(c1, c2, 3, padding=1, weight_bits=weight_bits,
                                     batchnorm=batchnorm, surrogate=surrogate)
        self.act2 = snn.QuantReLU(act_bits, surrogate)
        self.pool = snn.QuantMaxPool2d(2)
        self.fc = snn.QuantLinear(c2 * 6 * 6, 10, weight_bits, surrogate=surrogate)

    def forward(self, x):
        x = self.inp(x.view(-1, 1, 28, 28))
        x = self.pool(self.act2(self.conv2(self.act1(self.conv1(x)))))
        return self.fc(torch.flatten(x, 1))


def run(width: str, out: Path, epochs: int, seed: int, samples: int, simulators: str, data,
        device: str = "ecp5-25f", channels=(8, 16), **_) -> dict:
    torch.manual_seed(seed)
    return train_export_check("cnn", Net(*WIDTHS[width], channels=tuple(channels)), width, data,
                              out, epochs, seed, samples, simulators, device)


def cli(argv=None) -> int:
    return main(__doc__, run, WIDTHS, ["w4a4"], "ecp5-25f", "build/examples/cnn", argv,
                extra_args={"--channels": {"type": int, "nargs": 2, "default": (8, 16),
                                           "metavar": ("C1", "C2")}})


if __name__ == "__main__":
    sys.exit(cli())
