"""MNIST benchmark (``make bench SECTIONS=mnist``): the examples at full, on ``mnist5k``.

The two scripts of ``examples/`` (FINN's TFC 784-64-64-64-10, its w1a1 with the first layer's
weights at 8 bits and, as ``w1a1-b1``, all binary; and a custom CNN: a 5x5 stride-2 convolution
with 8 channels, a 3x3 pad-1 convolution with 16, a max-pool and a dense layer), built from softfloor.nn
layers and trained by softfloor.fit: 60 epochs, seeds 0, 1, 2, at w4a4, w2a2 and w1a1, each
next to its float twin (the same widths with float layers, trained by the same loop with the
same hyperparameters). Accuracy is the test split's (1,000 samples; the hard-quantized model,
bit-exact to its exported integer model, checked on every run); the validation accuracy (20 %
of the training samples held out) is what a recipe is chosen on. Epoch time is the median
epoch's CPU time, as a ratio to the float twin's in the same run (one thread, two runs at a
time, on a shared machine: a guide, not a measurement to the percent).

Then each example's exported model (seed 0) is co-simulated on every one of the 1,000 test
samples by ``softfloor flow --model`` on Verilator and Icarus: mismatches against the golden
model, folded for an ECP5-25F (the planner's parallelism keeps the simulation to minutes).

Targets (issue 20): TFC w2a2 within 1.0 point of its float twin, TFC w1a1 within 3.0, CNN w4a4
within 0.5 (the means over the seeds).
"""
from __future__ import annotations

import importlib.util
import json
import statistics
import sys
from pathlib import Path

#: The example scripts (a source checkout: they are not installed).
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
WIDTHS = ("w4a4", "w2a2", "w1a1")
SEEDS = (0, 1, 2)
EPOCHS = 60
TARGETS = {("tfc", "w2a2"): 1.0, ("tfc", "w1a1"): 3.0, ("cnn", "w4a4"): 0.5}


def _example(name: str):
    if not (EXAMPLES / f"{name}.py").exists():
        raise FileNotFoundError(f"{EXAMPLES / name}.py: the mnist benchmark runs the examples "
                                f"of a source checkout")
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


#: Worker processes for the training runs (each one thread).
WORKERS = 2


def _job(args) -> dict:
    name, width, out, epochs, seed = args
    import torch
    torch.set_num_threads(1)
    from softfloor.data import load_mnist5k
    r = _example(name).run(width, out, epochs, seed, 0, "both", load_mnist5k())
    print(json.dumps(r), flush=True)
    return r


def run(out: Path, quick: bool) -> dict:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from softfloor.data import load_mnist5k
    seeds, epochs, samples = (SEEDS[:1], 2, 20) if quick else (SEEDS, EPOCHS, 1000)
    jobs = [(name, width, out / "mnist" / name / f"{width}-s{seed}", epochs, seed)
            for name, widths in (("tfc_mnist5k", WIDTHS + ("w1a1-b1",)), ("cnn_mnist5k", WIDTHS))
            for width in widths for seed in seeds]
    with ProcessPoolExecutor(WORKERS, mp_context=mp.get_context("spawn")) as pool:
        runs = list(pool.map(_job, jobs))
    rows = []
    for (ex, width) in dict.fromkeys((r["example"], r["width"]) for r in runs):
        rs = [r for r in runs if (r["example"], r["width"]) == (ex, width)]
        fl = statistics.mean(r["float"] for r in rs)
        q = statistics.mean(r["quantized"] for r in rs)
        row = {"network": ex, "width": width, "seeds": len(rs), "float %": round(100 * fl, 2),
               "quantized %": round(100 * q, 2), "gap (points)": round(100 * (fl - q), 2),
               "quantized val %": round(100 * statistics.mean(r["val"] for r in rs), 2),
               "per seed %": " / ".join(f"{100 * r['quantized']:.1f}" for r in rs),
               "epoch time vs float": round(statistics.median(
                   r["epoch_seconds"] / r["float_epoch_seconds"] for r in rs), 2),
               "bit-exact (golden)": all(r["bit_exact_golden"] for r in rs)}
        if (ex, width) in TARGETS:
            row["target gap"] = TARGETS[(ex, width)]
            row["met"] = 100 * (fl - q) <= TARGETS[(ex, width)]
        rows.append(row)
    # the seed-0 models of these runs, every test sample through flow --model on both simulators
    common = _example("common")
    data = load_mnist5k()
    cosim = []
    for ex, width, device in (("tfc", "w2a2", "ecp5-25f"), ("tfc", "w1a1", "ecp5-25f"),
                              ("cnn", "w4a4", "ecp5-25f")):
        d = out / "mnist" / f"{ex}_mnist5k" / f"{width}-s{seeds[0]}"
        r = common.cosimulate(d / f"{ex}.intmodel.json", data["x_test"][:samples],
                              data["y_test"][:samples], d / "flow", "both", device)
        print(json.dumps({"cosim": ex, "width": width, **r}), flush=True)
        cosim.append({"network": ex, "width": width,
                      **{f"{sim} mismatches": f"{v['mismatches']}/{v['samples']}"
                         for sim, v in r.items() if sim != "accuracy"},
                      "rtl accuracy %": round(100 * r["accuracy"], 2)})
    return {"rows": rows, "tables": {"co-simulation (all test samples, seed 0)": cosim},
            "runs": runs, "notes": [f"mnist5k (4,000 training / 1,000 test), {epochs} epochs, "
                                    f"seeds {', '.join(map(str, seeds))}; float = the float "
                                    f"twin trained by the same loop; epoch time = median epoch "
                                    f"CPU time, one thread"]}
