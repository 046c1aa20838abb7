"""Golden model throughput on one core: samples per second for the digits MLP and a digits CNN.

Each measurement runs in a subprocess whose BLAS/OpenMP thread pools are limited to one thread
before numpy is imported. The models carry random integer weights of the digits shapes (speed
does not depend on the values, only on the shapes, the bit widths and hence the exact-BLAS
choice); accumulator widths come from the worst case of those weights, as always.

* MLP: 64 -> 64 -> 32 -> 10, w4a4, 4-bit unsigned inputs (the default ``softfloor flow`` model).
  Target: >= 100,000 samples/s.
* CNN: 1x8x8 -> conv3x3x8 (pad 1) -> requant -> maxpool 2 -> conv3x3x16 (pad 1) -> requant ->
  flatten -> dense 10, w4a4.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

TARGET_MLP = 100_000
ONE_THREAD = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                "BLIS_NUM_THREADS", "NUMEXPR_NUM_THREADS")}


def digits_mlp(seed: int = 0):
    """64-64-32-10 w4a4 with random integer weights (accumulators from the worst case)."""
    import numpy as np
    from softfloor import arith
    from softfloor.intmodel import Dense, InputSpec, IntModel, OutputSpec, Requant
    rng = np.random.default_rng(seed)
    spec = InputSpec((64,), 4, False, scale=1 / 16)
    t, layers, sizes = spec.code_type, [], [64, 64, 32, 10]
    for k in range(3):
        w = rng.integers(-8, 8, size=(sizes[k + 1], sizes[k]))
        b = rng.integers(-64, 64, size=sizes[k + 1])
        d = Dense(f"fc{k + 1}", w, b, 4, 8, _acc_bits(arith, w, b, t))
        layers.append(d)
        t = d.out_type(t)
        if k < 2:
            rq = Requant(f"act{k + 1}", max(0, max(abs(t.lo), t.hi).bit_length() - 7),
                         "half_up", 4, False, 0, 15)
            layers.append(rq)
            t = rq.out_type(t)
    return IntModel(spec, layers, OutputSpec(2.0 ** -10), "digits-mlp")


def digits_cnn(seed: int = 0):
    """1x8x8 -> conv3x3x8 -> requant -> pool2 -> conv3x3x16 -> requant -> flatten -> dense 10."""
    import numpy as np
    from softfloor import arith
    from softfloor.intmodel import (Conv2d, Dense, Flatten, InputSpec, IntModel, MaxPool2d,
                                    OutputSpec, Requant)
    rng = np.random.default_rng(seed)
    spec = InputSpec((1, 8, 8), 4, False, scale=1 / 16)
    t, layers = spec.code_type, []
    for k, (cin, cout) in enumerate([(1, 8), (8, 16)]):
        w = rng.integers(-8, 8, size=(cout, cin, 3, 3))
        b = rng.integers(-64, 64, size=cout)
        c = Conv2d(f"conv{k + 1}", w, b, 4, 8, _acc_bits(arith, w.reshape(cout, -1), b, t),
                   (1, 1), (1, 1, 1, 1), 0)
        rq = Requant(f"act{k + 1}", max(0, max(abs(c.out_type(t).lo), c.out_type(t).hi)
                                        .bit_length() - 6), "half_even", 4, False, 0, 15)
        layers += [c, rq]
        t = rq.out_type(c.out_type(t))
        if k == 0:
            layers.append(MaxPool2d("pool1", (2, 2), (2, 2)))
    layers.append(Flatten("flatten"))
    w = rng.integers(-8, 8, size=(10, 16 * 4 * 4))
    b = rng.integers(-64, 64, size=10)
    layers.append(Dense("fc", w, b, 4, 8, _acc_bits(arith, w, b, t)))
    return IntModel(spec, layers, OutputSpec(2.0 ** -10), "digits-cnn")


def _acc_bits(arith, w2d, b, t) -> int:
    lo, hi = arith.dense_bounds(w2d, b, t.lo, t.hi)
    bits, signed = arith.bits_for_range(min(int(min(lo)), -1), max(int(max(hi)), 0))
    return max(8, bits)


def measure(which: str, samples: int, repeats: int) -> dict:
    """Best-of-``repeats`` throughput of ``golden.iter_run`` over ``samples`` random codes."""
    import time

    import numpy as np
    from softfloor import golden
    model = digits_mlp() if which == "mlp" else digits_cnn()
    t = model.input.code_type
    x = np.random.default_rng(1).integers(t.lo, t.hi, size=(samples, model.input.size),
                                          endpoint=True, dtype=np.int64)
    golden.run(model, x[:1024])                         # warm up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        n = sum(len(o) for o in golden.iter_run(model, [x]))
        best = min(best, time.perf_counter() - t0)
    assert n == samples
    return {"model": model.name, "macs_per_sample": model.macs(), "samples": samples,
            "seconds": round(best, 4), "samples_per_s": round(samples / best)}


def _measure_in_subprocess(which: str, samples: int, repeats: int) -> dict:
    code = ("import json, sys; from softfloor.benchmarks.golden import measure; "
            f"print(json.dumps(measure({which!r}, {samples}, {repeats})))")
    env = os.environ | ONE_THREAD
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def run(out_dir: Path, quick: bool) -> dict:
    samples, repeats = (65536, 2) if quick else (4 * 65536, 3)
    rows, notes = [], []
    for which in ("mlp", "cnn"):
        m = _measure_in_subprocess(which, samples, repeats)
        row = {"model": m["model"], "threads": 1, "samples": m["samples"],
               "macs/sample": m["macs_per_sample"], "seconds": m["seconds"],
               "samples/s": m["samples_per_s"]}
        if which == "mlp":
            row["target"] = TARGET_MLP
            row["meets target"] = m["samples_per_s"] >= TARGET_MLP
        rows.append(row)
    notes.append("one core: OMP/OPENBLAS/MKL/BLIS_NUM_THREADS=1 set before numpy import in a "
                 "subprocess; best of %d runs of golden.iter_run over %d samples" % (repeats,
                                                                                     samples))
    notes.append("random integer weights of the digits shapes; int64 codes, BLAS only where "
                 "provably exact (float32 here: every partial sum < 2**24)")
    return {"rows": rows, "notes": notes}
