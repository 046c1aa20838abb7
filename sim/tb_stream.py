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

Options of the job (all optional):

* ``probes``: a list of internal stream probes (``instance``, ``elements``, ``element_bits``,
  ``elements_per_transfer``, ``signed``); each records every transfer (``o__valid & o__ready``)
  on the ``o__*`` ports of that engine instance, in order, into ``probes_out`` (``.npz``, one
  ``(samples, elements)`` array per probe, named ``p<k>``). Probes wait on ``o__valid`` edges,
  so they keep the event-driven fast path. Used by :mod:`softfloor.sim.diagnose`.
* ``progress``: a file the main stream's sample count is written to as it grows (at most
  every quarter second, and at the end), for :func:`softfloor.sim.cosim.cosimulate` to report.
* ``reset``: ``{"after_beats": k, "resume_from": s, "cycles": c}`` -- the reset scenario. Samples
  ``inputs[:s]`` are streamed; once ``k`` input beats have been accepted, ``rst`` is asserted for
  ``c`` cycles (source ``tvalid`` low, sink ``tready`` low); then ``inputs[s:]`` are streamed.
  Semantics (documented in docs of :func:`softfloor.sim.cosim.cosimulate`): every sample not
  completely delivered at ``m_axis`` before reset was asserted is dropped; the outputs of samples
  delivered before reset are kept (``pre_reset_outputs`` in the results); ``outputs`` holds only
  the samples sent after reset, and must be exact.
* ``weight_image``: a hex file (one load byte a line) written through ``w_axis``
  after every reset, before any sample (designs with SPRAM weights, see
  :mod:`softfloor.hw.rtl.spram`); the load uses ``gap_prob`` idle cycles too.
* ``weight_image_words``: load only this many transfers of the image, then offer a sample for
  ``idle_check_cycles`` cycles and count the input beats accepted and output beats seen
  (``short_image_inputs_accepted``, ``short_image_output_beats``; both must be 0); no stream.
"""
from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import numpy as np

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge
from cocotb.utils import get_sim_time

from softfloor import arith

PERIOD_NS = 10


def _job() -> dict:
    path = os.environ.get("SOFTFLOOR_COSIM_JOB")
    if not path:
        raise RuntimeError("SOFTFLOOR_COSIM_JOB is not set: run through softfloor.sim.cosim")
    return json.loads(Path(path).read_text())


def upcoming_edge() -> int:
    """Index of the next rising clock edge (edges at (k + 1/2) * period)."""
    return int(get_sim_time("ns") / PERIOD_NS + 0.5)


def resolve(value, what: str, errors: list) -> int:
    """Integer of a signal value; X/Z bits read as 0 and are reported in ``errors``.

    A 4-state simulator (Icarus) shows uninitialized or undriven data as X: on a valid beat that
    is a design bug, reported instead of crashing the testbench.
    """
    try:
        return int(value)
    except ValueError:
        text = str(value)
        if len(errors) < 20:
            errors.append(f"{what}: X/Z bits in {text}")
        return int("".join(c if c in "01" else "0" for c in text), 2)


def _layout(port: dict):
    # The one definition of beat packing is the generator's numpy face (hw/stream_io.py).
    from softfloor.hw.rtl.stream_io import BeatLayout
    return BeatLayout.from_dict(port)


def pack(sample: np.ndarray, port: dict) -> list[int]:
    """Integer codes of one sample -> tdata words (element i at bits [i*b, (i+1)*b))."""
    return [word for word, _ in _layout(port).pack(sample)]


def unpack(beats: list[int], port: dict) -> list[int]:
    """tdata words of one sample -> its integer codes (two's complement when signed)."""
    return _layout(port).unpack(beats)


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
                self.accepted.append(await put(dut, "s_axis", word, self.gap_prob, self.rng,
                                               last=int(j == len(beats) - 1)))
        dut.s_axis_tvalid.value = 0
        dut.s_axis_tlast.value = 0


async def put(dut, port: str, word: int, gap_prob: float, rng: random.Random,
              last: int | None = None) -> int:
    """One transfer on ``<port>_tdata`` (and ``_tlast``) after random idle cycles (each with
    probability ``gap_prob``); waits for ``<port>_tready``. The edge index it is accepted on."""
    valid, ready = getattr(dut, f"{port}_tvalid"), getattr(dut, f"{port}_tready")
    while gap_prob and rng.random() < gap_prob:
        valid.value = 0
        await RisingEdge(dut.clk)
    getattr(dut, f"{port}_tdata").value = word
    if last is not None:
        getattr(dut, f"{port}_tlast").value = last
    valid.value = 1
    while True:
        await ReadOnly()
        if ready.value == 1:
            break
        await RisingEdge(ready)
    edge = upcoming_edge()
    await RisingEdge(dut.clk)
    return edge


class Monitor:
    """Collects ``m_axis`` beats into samples; applies random backpressure when asked."""

    def __init__(self, dut, port: dict, stall_prob: float, rng: random.Random,
                 on_sample=None):
        self.dut, self.port, self.stall_prob, self.rng = dut, port, stall_prob, rng
        self.on_sample = on_sample  # called with the count after every complete sample
        self.samples: list[list[int]] = []
        self.sample_edges: list[int] = []  # edge index of each sample's last beat
        self.framing_errors: list[str] = []
        self.x_errors: list[str] = []
        self._beats: list[int] = []

    async def run(self) -> None:
        dut, per_sample = self.dut, self.port["beats_per_sample"]
        dut.m_axis_tready.value = 1
        while True:
            if self.stall_prob:
                dut.m_axis_tready.value = int(self.rng.random() >= self.stall_prob)
            await ReadOnly()
            if dut.m_axis_tvalid.value == 1 and dut.m_axis_tready.value == 1:
                self._beats.append(resolve(
                    dut.m_axis_tdata.value,
                    f"m_axis_tdata, sample {len(self.samples)} beat {len(self._beats)}",
                    self.x_errors))
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
                    if self.on_sample is not None:
                        self.on_sample(len(self.samples))
                await RisingEdge(dut.clk)
            elif dut.m_axis_tvalid.value != 1:
                # Idle output: sleep until tvalid rises (event driven, also under backpressure:
                # the random tready drawn above holds until then, a valid/ready-legal sink).
                await RisingEdge(dut.m_axis_tvalid)
            else:
                await RisingEdge(dut.clk)

    async def wait_for(self, n: int) -> None:
        while len(self.samples) < n:
            if self.dut.m_axis_tvalid.value != 1:
                await RisingEdge(self.dut.m_axis_tvalid)
            else:
                await RisingEdge(self.dut.clk)


class Probe:
    """Records the transfers of an engine's output stream (``<instance>.o__valid/ready/payload``).

    Elements of one transfer sit at bits ``[j*b, (j+1)*b)`` of ``o__payload``.
    """

    def __init__(self, dut, spec: dict):
        self.spec = spec
        h = dut
        for part in spec["instance"].split("."):
            h = getattr(h, part)
        self.clk = dut.clk
        self.valid, self.ready, self.payload = h.o__valid, h.o__ready, h.o__payload
        self.values: list[int] = []
        self.x_errors: list[str] = []

    def _decode(self, word: int) -> list[int]:
        b, per = self.spec["element_bits"], self.spec.get("elements_per_transfer", 1)
        return [arith.wrap(word >> (j * b), b, self.spec["signed"]) for j in range(per)]

    async def run(self) -> None:
        while True:
            await ReadOnly()
            if self.valid.value == 1 and self.ready.value == 1:
                self.values.extend(self._decode(resolve(
                    self.payload.value, f"{self.spec['instance']}.o__payload, element "
                    f"{len(self.values)}", self.x_errors)))
                await RisingEdge(self.clk)
            elif self.valid.value != 1:
                await RisingEdge(self.valid)
            else:
                await RisingEdge(self.clk)

    def samples(self) -> np.ndarray:
        """Recorded elements as ``(complete samples, elements)`` (padding of a last partial
        transfer per sample is dropped: transfers never straddle two samples)."""
        n, per = self.spec["elements"], self.spec.get("elements_per_transfer", 1)
        per_sample = -(-n // per) * per
        k = len(self.values) // per_sample
        arr = np.array(self.values[:k * per_sample], dtype=np.int64).reshape(k, per_sample)
        return arr[:, :n]


class ProgressFile:
    """Writes a growing count to ``path`` (atomically, at most every ``every_s`` seconds of
    wall time, and always when it reaches ``total``): the runner's process reads it."""

    def __init__(self, path: str, total: int, every_s: float = 0.25):
        self.path, self.total, self.every_s = Path(path), total, every_s
        self.last = 0.0

    def __call__(self, done: int) -> None:
        now = time.monotonic()
        if done < self.total and now - self.last < self.every_s:
            return
        self.last = now
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(f"{done} {self.total}\n")
        tmp.replace(self.path)


def _weight_image(job: dict) -> list[int] | None:
    """The weight-load transfers (``job["weight_image"]``: a hex file, one word a line), cut to
    ``job["weight_image_words"]`` when given (a short image: the design must stay idle)."""
    path = job.get("weight_image")
    if not path:
        return None
    from softfloor.hw.rtl.spram import read_image
    words = read_image(Path(path).read_text())
    n = job.get("weight_image_words")
    return words if n is None else words[:int(n)]


async def load_weights(dut, words: list[int], gap_prob: float, rng: random.Random) -> int:
    """Write the weight image through ``w_axis`` (with random idle cycles); the edge index of
    the last accepted transfer."""
    last = upcoming_edge()
    for word in words:
        last = await put(dut, "w_axis", word, gap_prob, rng)
    dut.w_axis_tvalid.value = 0
    return last


async def reset(dut, cycles: int = 4, job: dict | None = None) -> None:
    """Reset; then, for a design with a run-time weight image, load it (after every reset)."""
    if hasattr(dut, "w_axis_tvalid"):
        dut.w_axis_tvalid.value = 0
    dut.s_axis_tvalid.value = 0
    dut.s_axis_tlast.value = 0
    dut.s_axis_tdata.value = 0
    dut.m_axis_tready.value = 0
    dut.rst.value = 1
    for _ in range(cycles):
        await RisingEdge(dut.clk)
    dut.rst.value = 0
    await RisingEdge(dut.clk)
    job = job or {}
    words = _weight_image(job)
    if words is not None:
        await load_weights(dut, words, job.get("gap_prob", 0.0), random.Random(job.get("seed", 0)))


async def _short_image(dut, job: dict, man: dict, inputs: np.ndarray, results: dict) -> None:
    """After a short weight image: offer a sample for ``idle_check_cycles`` and count the
    input beats accepted and output beats seen (both must stay 0)."""
    dut.s_axis_tdata.value = pack(inputs[0], man["input"])[0]
    dut.s_axis_tvalid.value = 1
    dut.m_axis_tready.value = 1
    acc = outs = 0
    for _ in range(int(job.get("idle_check_cycles", 0)) or 200):
        await ReadOnly()
        acc += int(dut.s_axis_tready.value == 1)
        outs += int(dut.m_axis_tvalid.value == 1)
        if hasattr(dut, "w_axis_tready"):
            results["w_ready_after_image"] = int(dut.w_axis_tready.value)
        await RisingEdge(dut.clk)
    dut.s_axis_tvalid.value = 0
    results.update(short_image_inputs_accepted=acc, short_image_output_beats=outs)


async def _reset_midstream(dut, job: dict, man: dict, rng: random.Random, inputs: np.ndarray,
                           results: dict) -> np.ndarray:
    """The reset scenario (see the module docstring); returns the inputs streamed after reset."""
    spec = job["reset"]
    split = int(spec["resume_from"])
    drv = Driver(dut, man["input"], job.get("gap_prob", 0.0), rng)
    mon = Monitor(dut, man["output"], job.get("stall_prob", 0.0), rng)
    mon_task = cocotb.start_soon(mon.run())
    drv_task = cocotb.start_soon(drv.send(inputs[:split]))
    cycles = 0
    while len(drv.accepted) < int(spec["after_beats"]) and not drv_task.done():
        await RisingEdge(dut.clk)
        cycles += 1
    drv_task.cancel()
    mon_task.cancel()
    results["pre_reset_outputs"] = [list(map(int, s)) for s in mon.samples]
    results["pre_reset_beats_accepted"] = len(drv.accepted)
    results["reset_edge"] = upcoming_edge()
    await reset(dut, int(spec.get("cycles", 3)), job)
    return inputs[split:]


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
    await reset(dut, job=job)

    results: dict = {"samples": int(len(inputs))}
    if job.get("weight_image_words") is not None:
        await _short_image(dut, job, man, inputs, results)
        np.save(job["outputs"], np.zeros((0, 0), dtype=np.int64))
        Path(job["results"]).write_text(json.dumps(results, indent=1))
        return
    if job.get("reset"):
        inputs = await _reset_midstream(dut, job, man, rng, inputs, results)
        results["samples"] = int(len(inputs))
    probes = [Probe(dut, p) for p in job.get("probes") or []]
    # 1. latency: one sample alone, output always ready.
    if job.get("measure_latency", True) and len(inputs) and not job.get("reset"):
        drv = Driver(dut, man["input"], 0.0, rng)
        mon = Monitor(dut, man["output"], 0.0, rng)
        task = cocotb.start_soon(mon.run())
        await drv.send(inputs[:1])
        await mon.wait_for(1)
        task.cancel()
        results["latency_cycles"] = mon.sample_edges[0] - drv.accepted[0]
        await reset(dut, job=job)

    # 2. the whole stream, back to back (or with the requested gaps and backpressure).
    drv = Driver(dut, man["input"], job.get("gap_prob", 0.0), rng)
    mon = Monitor(dut, man["output"], job.get("stall_prob", 0.0), rng,
                  ProgressFile(job["progress"], len(inputs)) if job.get("progress") else None)
    task = cocotb.start_soon(mon.run())
    probe_tasks = [cocotb.start_soon(p.run()) for p in probes]
    await drv.send(inputs)
    await mon.wait_for(len(inputs))
    task.cancel()
    # Nothing more may come out: watch the idle output for a few cycles.
    for _ in range(int(job.get("idle_check_cycles", 0))):
        await ReadOnly()
        if dut.m_axis_tvalid.value == 1:
            results["extra_output_beats"] = results.get("extra_output_beats", 0) + 1
        await RisingEdge(dut.clk)
    for t in probe_tasks:
        t.cancel()
    if probes:
        np.savez(job["probes_out"], **{f"p{k}": p.samples() for k, p in enumerate(probes)})
    start = drv.accepted[0]
    edges = mon.sample_edges
    results["stream_cycles"] = edges[-1] - start if edges else 0
    if len(edges) > 1:
        results["initiation_interval"] = (edges[-1] - edges[0]) / (len(edges) - 1)
        gaps = np.diff(edges)
        results["ii_min"], results["ii_max"] = int(gaps.min()), int(gaps.max())
    results["framing_errors"] = mon.framing_errors[:20]
    results["x_errors"] = (mon.x_errors + [e for p in probes for e in p.x_errors])[:20]
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
