"""FINN's TFC (784-64-64-64-10) on the 5,000 MNIST digits, at w2a2 and w1a1, from the layers up.

Builds the network from softfloor.nn layers, trains it with softfloor.fit, exports the integer
model, and co-simulates the generated Verilog against the golden model with
``softfloor flow --model`` on Verilator and Icarus::

    python examples/tfc_mnist5k.py --out build/examples/tfc            # 60 epochs, 1,000 samples
    python examples/tfc_mnist5k.py --epochs 2 --samples 8 --widths w2a2   # a quick check

Prints one JSON line per width: float twin and quantized test accuracy, epoch times, and the
RTL's mismatches per simulator.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

import softfloor
from softfloor import intmodel
from softfloor import nn as snn
from softfloor.data import load_mnist5k
from softfloor.loop import epoch_seconds, fit_float
from softfloor.zoo import float_twin

#: (name, weight bits, activation bits, input bits, BatchNorm)
WIDTHS = {"w4a4": (4, 4, 4, False), "w2a2": (2, 2, 2, True), "w1a1": (1, 1, 1, False)}


def tfc(weight_bits: int, act_bits: int, input_bits: int, batchnorm: bool) -> nn.Sequential:
    """784-64-64-64-10: QuantInput, three QuantLinear + QuantReLU, the QuantLinear logits."""
    surrogate = "ste"
    inp = (snn.QuantInput(1, thresholds="learned") if input_bits == 1
           else snn.QuantInput(input_bits, scale=2.0 ** -input_bits))
    layers = [inp]
    for a, b in ((784, 64), (64, 64), (64, 64)):
        layers += [snn.QuantLinear(a, b, weight_bits, batchnorm=batchnorm, surrogate=surrogate),
                   snn.QuantReLU(act_bits, surrogate)]
    layers.append(snn.QuantLinear(64, 10, weight_bits, surrogate=surrogate))
    return nn.Sequential(*layers)


def run(width: str, out: Path, epochs: int, seed: int, samples: int, simulators: str,
        data=None, device: str = "up5k", **kw) -> dict:
    d = data or load_mnist5k()
    arrays = (d["x_train"], d["y_train"], d["x_test"], d["y_test"])
    torch.manual_seed(seed)
    model = tfc(*WIDTHS[width])
    res = softfloor.fit(model, arrays, epochs=epochs, seed=seed)
    twin = fit_float(float_twin(model), arrays, res.config)
    m = softfloor.export(model, name=f"tfc-{width}")
    out.mkdir(parents=True, exist_ok=True)
    intmodel.save(m, out / "tfc.intmodel.json")
    row = {"example": "tfc", "width": width, "seed": seed, "epochs": epochs,
           "float": twin.test_accuracy, "quantized": res.accuracy["test"],
           "val": res.accuracy.get("val"), "bit_exact_golden": res.accuracy["bit_exact"],
           "epoch_seconds": epoch_seconds(res), "float_epoch_seconds": epoch_seconds(twin)}
    if samples:
        row["rtl"] = cosimulate(out / "tfc.intmodel.json", d["x_test"][:samples],
                                d["y_test"][:samples], out / "flow", simulators, device)
    return row


def extra(args) -> dict:
    return {"device": args.device}


def cosimulate(model_file: Path, x, y, out: Path, simulators: str, device: str = "up5k"
               ) -> dict:
    """``softfloor flow --model`` on these samples: mismatches per simulator."""
    from softfloor import flow
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "x.npy", np.asarray(x, dtype=np.float64))
    np.save(out / "y.npy", np.asarray(y, dtype=np.int64))
    rep = flow.flow(flow.FlowOptions(out=out, model=model_file, inputs=out / "x.npy",
                                     labels=out / "y.npy", synth=False, simulator=simulators,
                                     device=device, quiet=True))
    return {sim: {"samples": b["samples"], "mismatches": b["mismatches"]}
            for sim, b in rep["bit_exact"].items()} | {"accuracy": rep["accuracy"]["rtl"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("build/examples/tfc"))
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--samples", type=int, default=1000, help="test samples co-simulated (0: none)")
    ap.add_argument("--simulator", default="both", choices=("verilator", "icarus", "both"))
    ap.add_argument("--device", default="up5k",
                    help="the device the folding planner targets (its parallelism)")
    ap.add_argument("--widths", nargs="+", default=["w2a2", "w1a1"], choices=list(WIDTHS))
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
    sys.exit(main())
