"""cocotb testbench for a generated softfloor top (driver -> DUT -> monitor -> scoreboard).

Run by :mod:`softfloor.sim.cosim` through cocotb's Python runner; it never imports torch or the
training code. The job (inputs, expected outputs, options) arrives as a JSON file named by the
``SOFTFLOOR_COSIM_JOB`` environment variable, and results go back as files:

* ``outputs``: ``.npy`` of the integer output codes, one row per sample, in stream order;
* ``results``: JSON with the measured latency (cycles from the first input beat accepted to the
  last output beat of an isolated sample), the measured initiation interval (cycles between the
  last beats of successive samples, streaming back to back), framing errors and, when expected
  outputs were given, the first mismatches.

Waiting is event driven (on ``tready``/``tvalid`` edges, not on every clock) unless random gaps or
backpressure are requested, so long inferences simulate quickly.
"""
from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge
from cocotb.utils import get_sim_time

PERIOD_NS = 10


def _job() -> dict:
    path = os.environ.get("SOFTFLOOR_COSIM_JOB")
    if not path:
        raise RuntimeError("SOFTFLOOR_COSIM_JOB is not set: run through softfloor.sim.cosim")
    return json.loads(Path(path).read_text())


def upcoming_edge() -> int:
    """Index of the next rising clock edge (edges at (k + 1/2) * period)."""
    return int(get_sim_time("ns") / PERIOD_NS + 0.5)


def pack(sample: np.ndarray, port: dict) -> list[int]:
    """Integer codes of one sample -> tdata words (element i at bits [i*b, (i+1)*b))."""
    b, per = port["element_bits"], port["elements_per_beat"]
    mask = (1 << b) - 1
    beats = []
    for start in range(0, port["elements"], per):
        word = 0
        for i, v in enumerate(sample[start:start + per]):
            word |= (int(v) & mask) << (i * b)
        beats.append(word)
    assert len(beats) == port["beats_per_sample"], (len(beats), port)
    return beats


def unpack(beats: list[int], port: dict) -> list[int]:
    """tdata words of one sample -> its integer codes (two's complement when signed)."""
    b, per = port["element_bits"], port["elements_per_beat"]
    mask = (1 << b) - 1
    out = []
    for word in beats:
        for i in range(per):
            v = (word >> (i * b)) & mask
            if port["signed"] and v >> (b - 1):
                v -= 1 << b
            out.append(v)
    return out[:port["elements"]]


class Driver:
    """Drives samples onto ``s_axis``; records the edge index of every accepted beat."""

    def __init__(self, dut, port: dict, gap_prob: float, rng: random.Random):
        self.dut, self.port, self.gap_prob, self.rng = dut, port, gap_prob, rng
        self.accepted: list[int] = []  # edge index per accepted beat

    async def send(self, samples: np.ndarray) -> None:
        dut = self.dut
        for sample in samples:
            beats = pack(sample, self.port)
            for j, word in enumerate(beats):
                while self.gap_prob and self.rng.random() < self.gap_prob:
                    dut.s_axis_tvalid.value = 0
                    await RisingEdge(dut.clk)
                dut.s_axis_tdata.value = word
                dut.s_axis_tlast.value = int(j == len(beats) - 1)
                dut.s_axis_tvalid.value = 1
                while True:
                    await ReadOnly()
                    if dut.s_axis_tready.value == 1:
                        break
                    await RisingEdge(dut.s_axis_tready)
                self.accepted.append(upcoming_edge())
                await RisingEdge(dut.clk)
        dut.s_axis_tvalid.value = 0
        dut.s_axis_tlast.value = 0


class Monitor:
    """Collects ``m_axis`` beats into samples; applies random backpressure when asked."""

    def __init__(self, dut, port: dict, stall_prob: float, rng: random.Random):
        self.dut, self.port, self.stall_prob, self.rng = dut, port, stall_prob, rng
        self.samples: list[list[int]] = []
        self.sample_edges: list[int] = []  # edge index of each sample's last beat
        self.framing_errors: list[str] = []
        self._beats: list[int] = []

    async def run(self) -> None:
        dut, per_sample = self.dut, self.port["beats_per_sample"]
        dut.m_axis_tready.value = 1
        while True:
            if self.stall_prob:
                dut.m_axis_tready.value = int(self.rng.random() >= self.stall_prob)
            await ReadOnly()
            if dut.m_axis_tvalid.value == 1 and dut.m_axis_tready.value == 1:
                self._beats.append(int(dut.m_axis_tdata.value))
                last = dut.m_axis_tlast.value == 1
                done = len(self._beats) == per_sample
                if last != done:
                    self.framing_errors.append(
                        f"sample {len(self.samples)}: tlast={int(last)} on beat "
                        f"{len(self._beats)} of {per_sample}")
                if done:
                    self.samples.append(unpack(self._beats, self.port))
                    self.sample_edges.append(upcoming_edge())
                    self._beats = []
                await RisingEdge(dut.clk)
            elif dut.m_axis_tvalid.value != 1 and not self.stall_prob:
                await RisingEdge(dut.m_axis_tvalid)
            else:
                await RisingEdge(dut.clk)

    async def wait_for(self, n: int) -> None:
        while len(self.samples) < n:
            if self.dut.m_axis_tvalid.value != 1:
                await RisingEdge(self.dut.m_axis_tvalid)
            else:
                await RisingEdge(self.dut.clk)


async def reset(dut, cycles: int = 4) -> None:
    dut.s_axis_tvalid.value = 0
    dut.s_axis_tlast.value = 0
    dut.s_axis_tdata.value = 0
    dut.m_axis_tready.value = 0
    dut.rst.value = 1
    for _ in range(cycles):
        await RisingEdge(dut.clk)
    dut.rst.value = 0
    await RisingEdge(dut.clk)


@cocotb.test()
async def stream_samples(dut):
    """Latency of an isolated sample, then every sample back to back; scoreboard in order."""
    job = _job()
    man = job["manifest"]
    rng = random.Random(job.get("seed", 0))
    inputs = np.load(job["inputs"])
    expected = np.load(job["expected"]) if job.get("expected") else None

    # Inputs settle before the first clock edge (Icarus is 4-state: no X -> 1 edge on inputs).
    dut.rst.value = 1
    dut.s_axis_tvalid.value = 0
    dut.m_axis_tready.value = 0
    cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns").start(start_high=False))
    await reset(dut)

    results: dict = {"samples": int(len(inputs))}
    # 1. latency: one sample alone, output always ready.
    if job.get("measure_latency", True) and len(inputs):
        drv = Driver(dut, man["input"], 0.0, rng)
        mon = Monitor(dut, man["output"], 0.0, rng)
        task = cocotb.start_soon(mon.run())
        await drv.send(inputs[:1])
        await mon.wait_for(1)
        task.cancel()
        results["latency_cycles"] = mon.sample_edges[0] - drv.accepted[0]
        await reset(dut)

    # 2. the whole stream, back to back (or with the requested gaps and backpressure).
    drv = Driver(dut, man["input"], job.get("gap_prob", 0.0), rng)
    mon = Monitor(dut, man["output"], job.get("stall_prob", 0.0), rng)
    task = cocotb.start_soon(mon.run())
    await drv.send(inputs)
    await mon.wait_for(len(inputs))
    task.cancel()
    start = drv.accepted[0]
    edges = mon.sample_edges
    results["stream_cycles"] = edges[-1] - start if edges else 0
    if len(edges) > 1:
        results["initiation_interval"] = (edges[-1] - edges[0]) / (len(edges) - 1)
        gaps = np.diff(edges)
        results["ii_min"], results["ii_max"] = int(gaps.min()), int(gaps.max())
    results["framing_errors"] = mon.framing_errors[:20]
    outputs = np.array(mon.samples, dtype=np.int64).reshape(len(mon.samples), -1)
    np.save(job["outputs"], outputs)

    mismatches = []
    if expected is not None:
        for i, (got, exp) in enumerate(zip(outputs, expected)):
            bad = np.nonzero(got != exp)[0]
            if len(bad):
                j = int(bad[0])
                mismatches.append({"sample": i, "element": j, "expected": int(exp[j]),
                                   "got": int(got[j])})
        results["mismatches"] = len(mismatches)
        results["first_mismatches"] = mismatches[:10]
    Path(job["results"]).write_text(json.dumps(results, indent=1))

    assert not mon.framing_errors, f"tlast framing errors: {mon.framing_errors[:5]}"
    if job.get("strict", False) and expected is not None:
        assert not mismatches, f"{len(mismatches)} samples differ; first: {mismatches[:3]}"
