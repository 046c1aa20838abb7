"""Standalone Verilog harnesses for the RTL primitives, and a runner that drives vectors through them.

A harness wraps function-style primitives of :mod:`softfloor.hw.rtl.primitives` (``multiply``,
``round_shift``, ``saturate``, ``relu``, ``requantize``) in one combinational Amaranth module
with a single wide input port ``vin`` (all input fields concatenated) and a single wide output
port ``vout`` (every configuration's output concatenated), converted to Verilog with
:func:`amaranth.back.verilog.convert`. :func:`run_vectors` applies one vector per nanosecond in
cocotb (:mod:`softfloor.sim.tb_unit`: one write, one ``Timer``, one read per vector) on Icarus or
Verilator and returns every output field as integer codes, to compare with the numpy twins.

>>> h = harness("rs", {"x": signed(12)},
...             {f"{m}_{s}": (lambda v, m=m, s=s: P.round_shift(v["x"], s, m))
...              for m in arith.ROUNDING_MODES for s in (1, 3)})
>>> got = run_vectors(h, {"x": xs}, "icarus", "build/units")      # doctest: +SKIP
>>> got["half_even_3"]                                             # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from amaranth.back import verilog
from amaranth.hdl import Cat, Module, Mux, Shape, Signal, Value
from amaranth.lib import data

from softfloor import arith
from softfloor.hw.rtl import spram

__all__ = ["Field", "Harness", "harness", "pack", "unpack", "run_vectors", "run_pipelined",
           "StreamHarness", "stream_harness", "run_stream"]


@dataclass(frozen=True)
class Field:
    """One field of a wide port: ``width`` bits at ``offset``, two's complement when signed."""
    name: str
    offset: int
    width: int
    signed: bool


@dataclass
class Harness:
    """A generated unit: Verilog text, top name and the field layout of ``vin``/``vout``."""
    top: str
    verilog: str
    inputs: list
    outputs: list

    def write(self, out_dir) -> Path:
        """Write ``<top>_<hash>.v`` into ``out_dir`` (name by content: safe to share)."""
        return _write_verilog(self.top, self.verilog, out_dir)


def _write_verilog(top: str, text: str, out_dir) -> Path:
    h = hashlib.sha256(text.encode()).hexdigest()[:12]
    path = Path(out_dir) / f"{top}_{h}.v"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        tmp = path.with_suffix(f".{time.monotonic_ns()}.tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return path


def _layout(shapes: dict) -> list:
    fields, off = [], 0
    for name, shape in shapes.items():
        shape = Shape.cast(shape)
        fields.append(Field(name, off, shape.width, shape.signed))
        off += shape.width
    return fields


def harness(top: str, inputs: dict, outputs: dict, logic=None) -> Harness:
    """Build a combinational harness.

    Parameters
    ----------
    top : Verilog module name.
    inputs : ``{name: shape}`` of the input fields.
    outputs : ``{name: fn}``, ``fn(signals) -> Value`` given ``{name: Signal}`` of the inputs.
    logic : callable, optional
        ``logic(m, signals) -> {name: Value}``: more outputs, from helpers that add their
        (combinational) logic to the module ``m``.
    """
    m = Module()
    sigs = {n: Signal(s, name=n) for n, s in inputs.items()}
    exprs = {name: fn(sigs) for name, fn in outputs.items()}
    if logic is not None:
        exprs.update(logic(m, sigs))
    outs = {}
    for name, expr in exprs.items():
        outs[name] = Signal(expr.shape(), name=f"o_{name}")
        m.d.comb += outs[name].eq(expr)
    in_fields = _layout(inputs)
    out_fields = _layout({n: s.shape() for n, s in outs.items()})
    vin = Signal(sum(f.width for f in in_fields), name="vin")
    vout = Signal(sum(f.width for f in out_fields), name="vout")
    m.d.comb += Cat(*sigs.values()).eq(vin)
    m.d.comb += vout.eq(Cat(*outs.values()))
    text = verilog.convert(m, name=top, ports=[vin, vout], emit_src=False)
    return Harness(top, text, in_fields, out_fields)


def pack(fields, row) -> int:
    """Integer codes of one vector -> the wide port word."""
    word = 0
    for f, v in zip(fields, row):
        word |= (int(v) & ((1 << f.width) - 1)) << f.offset
    return word


def unpack(fields, word: int) -> list[int]:
    """The wide port word -> integer codes of every field (sign-extended when signed)."""
    return [arith.wrap(word >> f.offset, f.width, f.signed) for f in fields]


def run_vectors(h: Harness, vectors: dict, simulator: str, work_dir) -> dict:
    """Apply ``vectors`` (``{input name: array}``, equal lengths) and return ``{output: array}``.

    The Verilog is built once per content hash (see :func:`softfloor.sim.cosim.build`).
    """
    from . import cosim
    work = Path(work_dir).resolve() / simulator
    work.mkdir(parents=True, exist_ok=True)
    cols = [np.asarray(vectors[f.name], dtype=object) for f in h.inputs]
    n = len(cols[0])
    if any(len(c) != n for c in cols):
        raise ValueError("all input vectors must have the same length")
    for f, c in zip(h.inputs, cols):
        lo, hi = (-(1 << f.width - 1), (1 << f.width - 1) - 1) if f.signed else (0, (1 << f.width) - 1)
        bad = [v for v in c if not lo <= int(v) <= hi]
        if bad:
            raise ValueError(f"input {f.name}: {bad[0]} outside [{lo}, {hi}]")
    words = [pack(h.inputs, row) for row in zip(*cols)]
    job = {"inputs": str(work / "vin.json"), "outputs": str(work / "vout.npy"),
           "fields": [[f.name, f.offset, f.width, f.signed] for f in h.outputs]}
    (work / "vin.json").write_text(json.dumps([str(w) for w in words]))
    _run_job(h.write(cosim.cache_root() / "units"), h.top, simulator, work, job,
             "softfloor.sim.tb_unit", "SOFTFLOOR_UNIT_JOB")
    out = np.load(work / "vout.npy")
    return {f.name: out[:, k] for k, f in enumerate(h.outputs)}


def run_pipelined(verilog, top: str, words: list[int], latency: int, simulator: str, work_dir,
                  *, ports=("clk", "x_in", "y_out")) -> list[int]:
    """Clock ``words`` (integers, one per cycle) into the input port of a pipelined unit and
    return the output port's words, ``latency`` edges after each was captured
    (:mod:`softfloor.sim.tb_pipe`). ``verilog`` is a file (or a list of files); ``ports`` are
    the clock, input and output port names. Built once per content (see
    :func:`softfloor.sim.cosim.build`)."""
    from . import cosim
    work = Path(work_dir).resolve() / simulator
    work.mkdir(parents=True, exist_ok=True)
    files = [Path(v) for v in (verilog if isinstance(verilog, (list, tuple)) else [verilog])]
    text = "\n".join(f.read_text() for f in files)
    vpath = _write_verilog(top, text, cosim.cache_root() / "units")
    job = {"inputs": str(work / "in.json"), "outputs": str(work / "out.json"),
           "latency": int(latency), "clk": ports[0], "input": ports[1], "output": ports[2]}
    (work / "in.json").write_text(json.dumps([str(int(w)) for w in words]))
    _run_job(vpath, top, simulator, work, job, "softfloor.sim.tb_pipe", "SOFTFLOOR_PIPE_JOB")
    return [int(w) for w in json.loads((work / "out.json").read_text())]


def _run_job(vpath: Path, top: str, simulator: str, work: Path, job: dict, test_module: str,
             env: str) -> None:
    """Write ``job`` (its ``outputs`` file removed first), build ``vpath`` (cached) and run
    the cocotb ``test_module`` on it with the job file in ``env``; a failed test or a missing
    output file is a :class:`~softfloor.sim.cosim.CosimError`."""
    from . import cosim
    Path(job["outputs"]).unlink(missing_ok=True)
    (work / "job.json").write_text(json.dumps(job))
    runner, build_dir, _ = cosim.build(vpath, top, simulator)
    try:
        runner.test(test_module=test_module, hdl_toplevel=top, test_dir=work,
                    build_dir=build_dir, extra_env={env: str(work / "job.json")},
                    log_file=work / "sim.log", results_xml=str(work / "results.xml"),
                    timescale=cosim.TIMESCALE if simulator == "icarus" else None)
    except SystemExit as e:
        raise cosim.CosimError(cosim._failure_message(simulator, work, e.code)) from None
    if not Path(job["outputs"]).exists():
        raise cosim.CosimError(cosim._failure_message(simulator, work, None))


# -- streaming units --------------------------------------------------------------------------

@dataclass
class StreamHarness:
    """A valid/ready unit behind the ports of a softfloor top (``s_axis_*``, ``m_axis_*``,
    ``clk``, ``rst``), so :mod:`softfloor.sim.tb_stream`'s driver, monitor and in-order
    scoreboard run it unchanged (:func:`softfloor.sim.cosim.cosimulate`).

    ``manifest`` has the keys the testbench reads: ``top``, ``input`` and ``output`` (beat
    layouts, :meth:`softfloor.hw.rtl.stream_io.BeatLayout.to_dict`). One *beat* is one transfer of
    the unit, one *sample* is one vector (``elements`` elements on each side). A unit with a
    weight-load stream ``w`` (SPRAM weights) also gets ``w_axis_*`` ports, ``weight_words`` (its
    load transfers) and a manifest ``weight_load`` entry: :meth:`write` writes the image
    (``<verilog stem>.weights.hex``) next to the Verilog.
    """
    top: str
    verilog: str
    manifest: dict
    weight_words: list | None = None

    def write(self, out_dir) -> Path:
        path = _write_verilog(self.top, self.verilog, out_dir)
        if self.weight_words is not None:
            img = path.with_name(self.manifest["weight_load"]["file"].replace(
                "{stem}", path.stem))
            if not img.exists():
                img.write_text(spram.image_text(self.weight_words))
        return path


def _has_last(payload) -> bool:
    return isinstance(payload, data.View) and "last" in dict(payload.shape().members)


def stream_harness(top: str, unit, in_layout, out_layout) -> StreamHarness:
    """Wrap ``unit`` (``i``/``o`` stream interfaces) as a top with AXI4-Stream-named ports.

    ``in_layout`` / ``out_layout`` (:class:`softfloor.hw.rtl.stream_io.BeatLayout`) say how one
    vector is split into the unit's transfers: ``elements_per_beat`` elements per transfer,
    element ``j`` at bits ``[j*b, (j+1)*b)``. ``s_axis_tdata`` drives the unit's payload (its
    ``data`` field and ``s_axis_tlast`` its ``last`` field, when the payload is a beat); the
    payload (or its ``data`` field) leaves zero-extended on ``m_axis_tdata``. ``m_axis_tlast`` is
    the unit's own ``last`` when it has one, else a counter of output transfers marks the last
    transfer of every vector (so the monitor's framing check counts transfers).
    """
    m = Module()
    m.submodules.dut = unit
    s_tdata = Signal(in_layout.tdata_width, name="s_axis_tdata")
    s_tvalid, s_tlast, s_tready = (Signal(name=f"s_axis_{n}") for n in ("tvalid", "tlast",
                                                                         "tready"))
    m_tdata = Signal(out_layout.tdata_width, name="m_axis_tdata")
    m_tvalid, m_tlast, m_tready = (Signal(name=f"m_axis_{n}") for n in ("tvalid", "tlast",
                                                                         "tready"))
    if _has_last(unit.i.payload):
        ip = unit.i.payload.data
        m.d.comb += unit.i.payload.last.eq(s_tlast)
    else:
        ip = unit.i.payload
    ip = Value.cast(ip)
    m.d.comb += [ip.eq(s_tdata[:len(ip)]), unit.i.valid.eq(s_tvalid), s_tready.eq(unit.i.ready),
                 m_tvalid.eq(unit.o.valid), unit.o.ready.eq(m_tready)]
    if _has_last(unit.o.payload):
        m.d.comb += [m_tdata.eq(Value.cast(unit.o.payload.data).as_unsigned()),
                     m_tlast.eq(unit.o.payload.last)]
    else:
        m.d.comb += m_tdata.eq(Value.cast(unit.o.payload).as_unsigned())
        n = out_layout.beats_per_sample
        if n == 1:
            m.d.comb += m_tlast.eq(1)
        else:
            cnt = Signal(range(n), name="harness_out_count")
            m.d.comb += m_tlast.eq(cnt == n - 1)
            with m.If(m_tvalid & m_tready):
                m.d.sync += cnt.eq(Mux(cnt == n - 1, 0, cnt + 1))
    ports = [s_tdata, s_tvalid, s_tlast, s_tready, m_tdata, m_tvalid, m_tlast, m_tready]
    manifest = {"top": top, "input": in_layout.to_dict(), "output": out_layout.to_dict()}
    words = None
    if "w" in unit.signature.members:
        w_tdata, w_tvalid, w_tready = (Signal(len(unit.w.payload), name="w_axis_tdata"),
                                       Signal(name="w_axis_tvalid"), Signal(name="w_axis_tready"))
        m.d.comb += [unit.w.payload.eq(w_tdata), unit.w.valid.eq(w_tvalid),
                     w_tready.eq(unit.w.ready)]
        ports += [w_tdata, w_tvalid, w_tready]
        words = unit.load_words()
    text = verilog.convert(m, name=top, ports=ports, emit_src=False)
    if words is not None:
        manifest["weight_load"] = {"file": "{stem}.weights.hex", "transfers": len(words)}
    return StreamHarness(top, text, manifest, words)


def run_stream(h: StreamHarness, inputs, simulator: str, work_dir, *, expected=None,
               **options):
    """Stream ``inputs`` (one vector per row) through ``h`` with :func:`cosim.cosimulate`
    (``options``: ``gap_prob``, ``stall_prob``, ``seed``, ``reset``, ``idle_check_cycles``,
    ``measure_latency``, ``waves``). The Verilog is built once per content hash."""
    from . import cosim
    vpath = h.write(cosim.cache_root() / "units")
    if h.weight_words is not None:
        options.setdefault("weight_image",
                           vpath.with_name(h.manifest["weight_load"]["file"].replace(
                               "{stem}", vpath.stem)))
    return cosim.cosimulate(vpath, h.manifest, inputs, simulator, work_dir, expected=expected,
                            **options)
