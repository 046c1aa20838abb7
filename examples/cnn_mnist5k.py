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

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

import softfloor
from softfloor import intmodel
from softfloor import nn as snn
from softfloor.data import load_mnist5k
from softfloor.loop import epoch_seconds, fit_float
from softfloor.zoo import float_twin

#: (weight bits, activation bits, input bits, BatchNorm) per width.
WIDTHS = {"w4a4": (4, 4, 4, False), "w2a2": (2, 2, 2, True), "w1a1": (1, 1, 1, False)}


class Net(nn.Module):
    """28x28 -> conv 5x5 stride 2 -> conv 3x3 pad 1 -> max-pool 2 -> dense 10 (16 and 32
    channels by default)."""

    def __init__(self, weight_bits=4, act_bits=4, input_bits=4, batchnorm=False,
                 surrogate="ste", channels=(16, 32)):
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


def run(width: str, out: Path, epochs: int, seed: int, samples: int, simulators: str,
        data=None, device: str = "up5k", **kw) -> dict:
    from tfc_mnist5k import cosimulate  # noqa: the sibling example's flow --model step
    d = data or load_mnist5k()
    arrays = (d["x_train"], d["y_train"], d["x_test"], d["y_test"])
    torch.manual_seed(seed)
    model = Net(*WIDTHS[width], channels=tuple(kw.get("channels", (16, 32))))
    res = softfloor.fit(model, arrays, epochs=epochs, seed=seed)
    twin = fit_float(float_twin(model), arrays, res.config)
    m = softfloor.export(model, name=f"cnn-{width}")
    out.mkdir(parents=True, exist_ok=True)
    intmodel.save(m, out / "cnn.intmodel.json")
    row = {"example": "cnn", "width": width, "seed": seed, "epochs": epochs,
           "float": twin.test_accuracy, "quantized": res.accuracy["test"],
           "val": res.accuracy.get("val"), "bit_exact_golden": res.accuracy["bit_exact"],
           "epoch_seconds": epoch_seconds(res), "float_epoch_seconds": epoch_seconds(twin)}
    if samples:
        row["rtl"] = cosimulate(out / "cnn.intmodel.json", d["x_test"][:samples],
                                d["y_test"][:samples], out / "flow", simulators, device)
    return row


def extra(args) -> dict:
    return {"device": args.device, "channels": args.channels}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("build/examples/cnn"))
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--samples", type=int, default=1000, help="test samples co-simulated (0: none)")
    ap.add_argument("--simulator", default="both", choices=("verilator", "icarus", "both"))
    ap.add_argument("--channels", type=int, nargs=2, default=(16, 32), metavar=("C1", "C2"))
    ap.add_argument("--device", default="ecp5-25f",
                    help="the device the folding planner targets (its parallelism)")
    ap.add_argument("--widths", nargs="+", default=["w4a4"], choices=list(WIDTHS))
    args = ap.parse_args(argv)
    data = load_mnist5k()
    bad = 0
    for w in args.widths:
        t0 = time.perf_counter()
        row = run(w, args.out / w, args.epochs, args.seed, args.samples, args.simulator, data,
                  **extra(args))
        row["seconds"] = round(time.perf_counter() - t0, 1)
        print(json.dumps(row), flush=True)
        bad += sum(v["mismatches"] for k, v in row.get("rtl", {}).items() if k != "accuracy")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    sys.exit(main())
