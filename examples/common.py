"""What both examples do after building their network: train (softfloor.fit) beside the float
twin, export, co-simulate with ``softfloor flow --model``, and the command line."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import softfloor
from softfloor import intmodel
from softfloor.data import load_mnist5k
from softfloor.loop import epoch_seconds, fit_float
from softfloor.zoo import float_twin


def train_export_check(name: str, model: torch.nn.Module, width: str, data: dict, out: Path,
                       epochs: int, seed: int, samples: int, simulators: str,
                       device: str) -> dict:
    """Train ``model`` and its float twin on ``data`` (the mnist5k arrays), export it to
    ``out/<name>.intmodel.json``, co-simulate ``samples`` test samples; one result row."""
    arrays = (data["x_train"], data["y_train"], data["x_test"], data["y_test"])
    res = softfloor.fit(model, arrays, epochs=epochs, seed=seed)
    twin = fit_float(float_twin(model), arrays, res.config)
    out.mkdir(parents=True, exist_ok=True)
    intmodel.save(softfloor.export(model, name=f"{name}-{width}"), out / f"{name}.intmodel.json")
    row = {"example": name, "width": width, "seed": seed, "epochs": epochs,
           "float": twin.test_accuracy, "quantized": res.accuracy["test"],
           "val": res.accuracy.get("val"), "bit_exact_golden": res.accuracy["bit_exact"],
           "epoch_seconds": epoch_seconds(res), "float_epoch_seconds": epoch_seconds(twin)}
    if samples:
        row["rtl"] = cosimulate(out / f"{name}.intmodel.json", data["x_test"][:samples],
                                data["y_test"][:samples], out / "flow", simulators, device)
    return row


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


def main(doc: str, run, widths: dict, default_widths: list, device: str, out: str, argv=None,
         extra_args=None) -> int:
    """The examples' command line: one JSON row per width; exit 1 on any RTL mismatch."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(out))
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--samples", type=int, default=1000,
                    help="test samples co-simulated (0: none)")
    ap.add_argument("--simulator", default="both", choices=("verilator", "icarus", "both"))
    ap.add_argument("--device", default=device,
                    help="the device the folding planner targets (its parallelism)")
    ap.add_argument("--widths", nargs="+", default=default_widths, choices=list(widths))
    for a, kw in (extra_args or {}).items():
        ap.add_argument(a, **kw)
    args = ap.parse_args(argv)
    data = load_mnist5k()
    extra = {k: v for k, v in vars(args).items()
             if k not in ("out", "epochs", "seed", "samples", "simulator", "widths")}
    bad = 0
    for w in args.widths:
        t0 = time.perf_counter()
        row = run(w, args.out / w, args.epochs, args.seed, args.samples, args.simulator, data,
                  **extra)
        row["seconds"] = round(time.perf_counter() - t0, 1)
        print(json.dumps(row), flush=True)
        bad += sum(v["mismatches"] for k, v in row.get("rtl", {}).items() if k != "accuracy")
    return 1 if bad else 0
