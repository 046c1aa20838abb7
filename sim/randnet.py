"""Check one integer model end to end: generate RTL, co-simulate, compare with golden, diagnose.

:func:`check_model` is what the random-network tests and the soak sweep call for each generated
model; on any failure it raises :class:`NetworkMismatch` whose message carries the diagnosis
(first bad layer, element, codes, waveform) and the line that reproduces it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from softfloor import golden
from softfloor.hw.generate import generate
from softfloor.intmodel import IntModel
from softfloor.sim import cosim, diagnose, lint, tools

__all__ = ["check_model", "NetworkCheck", "NetworkMismatch"]


class NetworkMismatch(AssertionError):
    """The RTL of a model disagrees with its golden model (or with its manifest's timing)."""


@dataclass
class NetworkCheck:
    """What :func:`check_model` measured for one model."""
    model: str
    simulator: str
    samples: int
    latency_cycles: int | None
    initiation_interval: float | None
    build_seconds: float
    run_seconds: float

    def __str__(self) -> str:
        return (f"{self.model} on {self.simulator}: {self.samples} samples bit-exact, latency "
                f"{self.latency_cycles}, II {self.initiation_interval}")


def check_model(model: IntModel, inputs: np.ndarray, simulator: str, work_dir, *,
                seed: int = 0, gap_prob: float = 0.0, stall_prob: float = 0.0,
                reproduce: str = "", lint_top: bool = True, folding=None) -> NetworkCheck:
    """Generate ``model``'s RTL into ``work_dir``, stream ``inputs``, require bit-exactness.

    Without gaps and backpressure it also requires the measured latency and initiation interval
    to equal the manifest's ``cycles_per_inference`` and ``initiation_interval``. ``reproduce``
    (e.g. ``"SOFTFLOOR_SEED=17 pytest tests/sim/test_randnet.py"``) is quoted in the error.
    ``lint_top`` also requires Verilator ``--lint-only -Wall`` to be clean up to the documented
    waivers (skipped when Verilator is not installed and the run is on Icarus). ``folding``
    (``{dense layer: (pe, simd)}``, ``{}`` = fully folded) overrides the planner's choice.
    """
    work = Path(work_dir)
    gen = generate(model, work / "rtl", **({} if folding is None else {"folding": folding}))
    want = golden.run(model, inputs)
    timing = gap_prob == 0 and stall_prob == 0
    r = cosim.cosimulate(gen.verilog, gen.manifest, inputs, simulator, work / "run",
                         expected=want, seed=seed, gap_prob=gap_prob, stall_prob=stall_prob,
                         measure_latency=timing, idle_check_cycles=8)
    head = f"model {model.name} on {simulator}" + (f" -- reproduce: {reproduce}" if reproduce
                                                    else "")
    if lint_top and (simulator == "verilator" or tools.available("verilator")):
        rep = lint.lint(gen.verilog, gen.manifest["top"])
        if not rep.ok:
            raise NetworkMismatch(f"{head}: unwaived lint warnings\n{rep}")
    if r.outputs.shape != want.shape or np.any(r.outputs != want) or r.raw.get("x_errors"):
        d = diagnose.diagnose(model, gen.manifest, gen.verilog, inputs, want, r.outputs,
                              simulator, work, seed=seed, gap_prob=gap_prob,
                              stall_prob=stall_prob)
        raise NetworkMismatch(f"{head}\n{r.mismatches} of {len(want)} samples differ\n{d}\n"
                              f"{model}")
    if r.raw.get("x_errors"):
        raise NetworkMismatch(f"{head}: X/Z on valid output data: {r.raw['x_errors'][:5]}")
    if r.raw.get("extra_output_beats"):
        raise NetworkMismatch(f"{head}: {r.raw['extra_output_beats']} output beat(s) after the "
                              f"last sample")
    man = gen.manifest
    if timing and len(inputs) > 1 and (r.latency_cycles != man["cycles_per_inference"] or
                                       r.initiation_interval != man["initiation_interval"]):
        raise NetworkMismatch(
            f"{head}: measured latency {r.latency_cycles} / II {r.initiation_interval}, manifest "
            f"says {man['cycles_per_inference']} / {man['initiation_interval']}")
    return NetworkCheck(model.name, simulator, len(inputs), r.latency_cycles,
                        r.initiation_interval, r.build_seconds, r.run_seconds)
