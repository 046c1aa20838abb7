"""Co-simulation speed: samples/s and cycles/s per simulator for the digits MLP, build cache reuse,
and (full mode) the wall time of the whole test suite as ``make test`` runs it.

For each simulator the digits MLP (64-64-32-10, random integer weights of the trained model's
shapes, see :func:`softfloor.benchmarks.golden.digits_mlp`) is built into a fresh cache (cold
build; ccache may still help Verilator's C++), then streamed twice back to back with an
always-ready sink: once with 1 sample (the fixed cost: simulator start, cocotb, imports) and once
with N samples. ``samples_per_s`` is N over the whole run; ``marginal_samples_per_s`` and
``cycles_per_s`` exclude the fixed cost (``(N - 1) / (t_N - t_1)``). A third run reuses the
cached build (``warm_build_s``).
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _digits_mlp():
    from .golden import digits_mlp
    return digits_mlp()


def measure(simulator: str, samples: int, work: Path) -> dict:
    import numpy as np
    from softfloor import golden
    from softfloor.hw.generate import generate
    from softfloor.sim import cosim, tools
    tools.ensure(simulator)
    model = _digits_mlp()
    gen = generate(model, work / "rtl")
    x = np.random.default_rng(0).integers(model.input.code_type.lo, model.input.code_type.hi,
                                          size=(samples, model.input.size), endpoint=True)
    want = golden.run(model, x)
    old = os.environ.get("SOFTFLOOR_SIM_CACHE")
    os.environ["SOFTFLOOR_SIM_CACHE"] = str(work / "cache")      # cold build
    try:
        t0 = time.monotonic()
        one = cosim.cosimulate(gen.verilog, gen.manifest, x[:1], simulator, work / "one",
                               expected=want[:1], measure_latency=False)
        t1 = time.monotonic() - t0 - one.build_seconds
        t0 = time.monotonic()
        full = cosim.cosimulate(gen.verilog, gen.manifest, x, simulator, work / "full",
                                expected=want, measure_latency=False)
        tn = time.monotonic() - t0 - full.build_seconds
    finally:
        if old is None:
            os.environ.pop("SOFTFLOOR_SIM_CACHE", None)
        else:
            os.environ["SOFTFLOOR_SIM_CACHE"] = old
    if full.mismatches:
        raise RuntimeError(f"{simulator}: {full.mismatches} mismatching samples in the benchmark")
    cycles = full.raw.get("stream_cycles", 0)
    # Too short a run to separate the fixed cost from the simulation: no marginal rates.
    marginal = tn - t1 if tn - t1 > 0.2 else None
    return {"simulator": simulator, "model": model.name, "samples": samples,
            "cold_build_s": round(one.build_seconds, 2), "warm_build_s": round(full.build_seconds, 3),
            "fixed_cost_s": round(t1, 2), "run_s": round(tn, 2),
            "samples_per_s": round(samples / tn, 1),
            "marginal_samples_per_s": round((samples - 1) / marginal, 1) if marginal else None,
            "cycles": int(cycles), "cycles_per_s": round(cycles / marginal) if marginal else None,
            "initiation_interval": full.initiation_interval}


def time_suite(repo: Path) -> dict:
    """Wall time of ``python -m pytest -n 2 -q`` (what ``make test`` runs) in ``repo``."""
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "-q", "-p", "no:cacheprovider"],
                       cwd=repo, capture_output=True, text=True)
    wall = time.monotonic() - t0
    last = [ln for ln in p.stdout.splitlines() if ln.strip()][-1:] or ["?"]
    return {"suite": "pytest -n 2 -q", "wall_s": round(wall, 1), "exit": p.returncode,
            "summary": last[0].strip("= ")}


def run(out_dir: Path, quick: bool) -> dict:
    from softfloor.sim import tools
    samples = 100 if quick else 360          # 360 = the digits test split
    rows, notes = [], []
    with tempfile.TemporaryDirectory(prefix="sf-bench-sim-") as tmp:
        for sim in tools.SIMULATORS:
            if not tools.available(sim):
                notes.append(f"{sim}: not installed, not measured")
                continue
            rows.append(measure(sim, samples, Path(tmp) / sim))
    tables = {}
    repo = Path(__file__).resolve().parents[2]
    if not quick and (repo / "tests").is_dir():
        tables["test suite wall time"] = [time_suite(repo)]
    else:
        notes.append("quick mode: the test-suite wall time is not measured (run without --quick)")
    notes.append("always-ready sink, back-to-back input (the event-driven fast path of "
                 "softfloor.sim.tb_stream); cycles at the manifest's initiation interval")
    return {"rows": rows, "tables": tables, "notes": notes}
