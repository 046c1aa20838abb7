"""A FuseSoC (CAPI2) core file for the generated accelerator, with a self-checking testbench.

:func:`write_core` writes, beside ``softfloor_top.v``:

* ``softfloor_top.core``: fileset ``rtl`` (the Verilog), ``tb`` (the testbench and its vectors),
  one fileset per built board (board top + pin constraints); targets ``default`` (the core),
  ``sim`` (Icarus: the testbench streams the vectors through the core and checks every output
  beat), and one per built board (``icestorm`` / ``trellis`` flow with the board's nextpnr
  options);
* ``softfloor_top_tb.v``: plain Verilog-2001 testbench, parameters ``IN_BEATS``, ``OUT_BEATS``,
  ``IN_FILE``, ``OUT_FILE``, ``TIMEOUT_CYCLES`` (``vlogparam`` in the core file);
* ``tb_in.hex`` / ``tb_out.hex``: input beats and expected output beats (``$readmemh``);
* for a design with SPRAM weights: the testbench also loads ``weights_spram.hex`` through
  ``w_axis`` after reset (parameters ``W_BEATS``, ``W_FILE``) and the ``tb`` fileset carries
  the image and ``SB_SPRAM256KA.v`` (the cell's behavioural model, written here).

The testbench prints ``PASS: N beats`` or ``FAIL ...`` and stops with ``$fatal`` on failure.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from softfloor.intmodel import atomic_write_text
from softfloor.hw.rtl.spram import write_sim_model
from softfloor.hw.rtl.stream_io import BeatLayout

__all__ = ["write_core", "core_name", "CORE_FILE", "TB_TOP"]

CORE_FILE = "softfloor_top.core"
TB_TOP = "softfloor_top_tb"


def core_name(manifest: dict, version: str = "0.1.0") -> str:
    """The core's VLNV: ``softfloor:model:<model name>:<version>``."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", str(manifest.get("model") or manifest["top"])).lower()
    return f"softfloor:model:{name}:{version}"


def _hex_lines(words, width: int) -> str:
    digits = (width + 3) // 4
    return "".join(f"{int(w):0{digits}x}\n" for w in words)


def _weight_load(manifest: dict) -> dict:
    """The testbench pieces that load a design's SPRAM weight image through ``w_axis`` (the
    top's ``weight_load``; empty strings for a design without one)."""
    wl = manifest.get("weight_load")
    if not wl:
        return {"params": "", "regs": "", "ports": "", "read": "", "driver": ""}
    return {
        "params": f'  parameter W_BEATS = {wl["transfers"]};\n'
                  f'  parameter W_FILE = "{wl["file"]}";\n',
        "regs": f"  reg [{wl['transfer_bits'] - 1}:0] w_mem [0:W_BEATS-1];\n"
                f"  reg [{wl['transfer_bits'] - 1}:0] w_tdata = 0;\n"
                "  reg w_tvalid = 1'b0;\n  wire w_tready;\n  integer k = 0;\n",
        "ports": ",\n    .w_axis_tdata(w_tdata), .w_axis_tvalid(w_tvalid), "
                 ".w_axis_tready(w_tready)",
        "read": "    $readmemh(W_FILE, w_mem);\n",
        "driver": """
  // Weight loader: the SPRAM image after reset (the core takes no input before it is loaded).
  always @(posedge clk) begin
    if (!rst) begin
      if (w_tvalid && w_tready) k = k + 1;
      w_tvalid <= (k < W_BEATS);
      w_tdata <= (k < W_BEATS) ? w_mem[k] : 0;
    end
  end
"""}


def _testbench(manifest: dict) -> str:
    top = manifest["top"]
    iw, ow = manifest["input"]["tdata_width"], manifest["output"]["tdata_width"]
    ibps = manifest["input"]["beats_per_sample"]
    obps = manifest["output"]["beats_per_sample"]
    w = _weight_load(manifest)
    return f"""// Self-checking testbench of {top} (written by softfloor; plain Verilog-2001).
// Streams IN_FILE's input beats through the core back to back and compares every output beat
// with OUT_FILE; prints PASS or FAIL and stops with $fatal on a failure.
`timescale 1ns/1ps
module {TB_TOP};
  parameter IN_BEATS = {ibps};
  parameter OUT_BEATS = {obps};
  parameter IN_FILE = "tb_in.hex";
  parameter OUT_FILE = "tb_out.hex";
  parameter TIMEOUT_CYCLES = 1000000;
{w["params"]}  localparam IN_BPS = {ibps};
  localparam OUT_BPS = {obps};

  reg clk = 1'b0;
  reg rst = 1'b1;
  reg [{iw - 1}:0] in_mem [0:IN_BEATS-1];
  reg [{ow - 1}:0] out_mem [0:OUT_BEATS-1];
  reg [{iw - 1}:0] s_tdata = 0;
  reg s_tvalid = 1'b0, s_tlast = 1'b0;
  wire s_tready;
  wire [{ow - 1}:0] m_tdata;
  wire m_tvalid, m_tlast;
  integer i = 0, o = 0, errors = 0, cycles = 0;
{w["regs"]}
  {top} dut (
    .clk(clk), .rst(rst),
    .s_axis_tdata(s_tdata), .s_axis_tvalid(s_tvalid), .s_axis_tlast(s_tlast),
    .s_axis_tready(s_tready),
    .m_axis_tdata(m_tdata), .m_axis_tvalid(m_tvalid), .m_axis_tlast(m_tlast),
    .m_axis_tready(1'b1){w["ports"]});

  initial begin
    $readmemh(IN_FILE, in_mem);
    $readmemh(OUT_FILE, out_mem);
{w["read"]}    repeat (4) @(posedge clk);
    rst <= 1'b0;
  end
  always #5 clk = ~clk;
{w["driver"]}
  // Driver: beat i is offered until accepted, then beat i + 1.
  always @(posedge clk) begin
    cycles = cycles + 1;
    if (!rst) begin
      if (s_tvalid && s_tready) i = i + 1;
      s_tvalid <= (i < IN_BEATS);
      s_tdata <= (i < IN_BEATS) ? in_mem[i] : 0;
      s_tlast <= ((i + 1) % IN_BPS == 0);
    end
    if (cycles > TIMEOUT_CYCLES) begin
      $display("FAIL: timeout after %0d cycles, %0d of %0d output beats", cycles, o, OUT_BEATS);
      $fatal;
    end
  end

  // Monitor and scoreboard (the output is always ready).
  always @(posedge clk) begin
    if (!rst && m_tvalid) begin
      if (m_tdata !== out_mem[o] || m_tlast !== ((o + 1) % OUT_BPS == 0)) begin
        errors = errors + 1;
        if (errors <= 10)
          $display("MISMATCH beat %0d: got %h (last %b), want %h", o, m_tdata, m_tlast,
                   out_mem[o]);
      end
      o = o + 1;
      if (o == OUT_BEATS) begin
        if (errors == 0) begin
          $display("PASS: %0d beats (%0d samples) in %0d cycles", o, o / OUT_BPS, cycles);
          $finish;
        end else begin
          $display("FAIL: %0d of %0d output beats differ", errors, o);
          $fatal;
        end
      end
    end
  end
endmodule
"""


def _vectors(manifest: dict, inputs, outputs) -> tuple[str, str, int, int]:
    il = BeatLayout.from_dict(manifest["input"])
    ol = BeatLayout.from_dict(manifest["output"])
    ib = [w for row in np.asarray(inputs) for w, _ in il.pack(row)]
    ob = [w for row in np.asarray(outputs) for w, _ in ol.pack(row)]
    return (_hex_lines(ib, il.tdata_width), _hex_lines(ob, ol.tdata_width), len(ib), len(ob))


def write_core(out_dir, manifest: dict, inputs, outputs, boards: dict | None = None,
               description: str | None = None) -> Path:
    """Write the core file, testbench and vectors into ``out_dir`` (beside the Verilog).

    ``inputs``/``outputs``: integer codes (one sample per row) for the simulation target, e.g.
    the golden model's vectors (``None``: no testbench, no ``sim`` target). ``boards``: ``{board name: {"verilog": path, "constraints":
    path, "family": "ice40"|"ecp5", "nextpnr_options": [...]}}`` of built board tops.
    """
    out = Path(out_dir)
    top = manifest["top"]
    verilog = manifest.get("verilog", f"{top}.v")
    sim = inputs is not None
    wl = manifest.get("weight_load")
    if sim:
        tin, tout, nin, nout = _vectors(manifest, inputs, outputs)
        atomic_write_text(out / "tb_in.hex", tin)
        atomic_write_text(out / "tb_out.hex", tout)
        atomic_write_text(out / f"{TB_TOP}.v", _testbench(manifest))
        if wl:
            write_sim_model(out)
    desc = description or (f"softfloor accelerator for model {manifest.get('model')}: "
                           f"AXI4-Stream in ({manifest['input']['tdata_width']} bits) and out "
                           f"({manifest['output']['tdata_width']} bits), II "
                           f"{manifest['initiation_interval']} cycles, latency "
                           f"{manifest['cycles_per_inference']} cycles")
    lines = ["CAPI=2:", f"name: {core_name(manifest)}", f"description: \"{desc}\"", "",
             "filesets:",
             "  rtl:", "    files:", f"      - {verilog}", "    file_type: verilogSource"]
    if sim:
        lines += ["  tb:", "    files:", f"      - {TB_TOP}.v",
                  "      - tb_in.hex: {copyto: tb_in.hex, file_type: user}",
                  "      - tb_out.hex: {copyto: tb_out.hex, file_type: user}"]
        if wl:
            lines += [f"      - {wl['file']}: {{copyto: {wl['file']}, file_type: user}}",
                      "      - SB_SPRAM256KA.v"]
        lines += ["    file_type: verilogSource"]
    for name, b in sorted((boards or {}).items()):
        cons_type = "PCF" if b["family"] == "ice40" else "LPF"
        rel_v = Path(b["verilog"]).resolve().relative_to(out.resolve())
        rel_c = Path(b["constraints"]).resolve().relative_to(out.resolve())
        lines += [f"  board_{name}:", "    files:", f"      - {rel_v}: {{file_type: verilogSource}}",
                  f"      - {rel_c}: {{file_type: {cons_type}}}"]
    if sim:
        lines += ["", "parameters:"]
        for pname, datatype, default in (("IN_BEATS", "int", nin), ("OUT_BEATS", "int", nout),
                                         ("IN_FILE", "str", "tb_in.hex"),
                                         ("OUT_FILE", "str", "tb_out.hex"),
                                         ("TIMEOUT_CYCLES", "int",
                                          1000 + 4 * (nin + nout) * max(
                                              1, manifest["initiation_interval"])
                                          + manifest["cycles_per_inference"]
                                          + (2 * wl["transfers"] if wl else 0))):
            lines += [f"  {pname}:", f"    datatype: {datatype}", f"    default: {default}",
                      "    paramtype: vlogparam"]
    lines += ["", "targets:", "  default:", "    filesets: [rtl]", f"    toplevel: {top}"]
    if sim:
        lines += ["  sim:", "    default_tool: icarus", "    filesets: [rtl, tb]",
                  "    parameters: [IN_BEATS, OUT_BEATS, IN_FILE, OUT_FILE, TIMEOUT_CYCLES]",
                  f"    toplevel: {TB_TOP}"]
    for name, b in sorted((boards or {}).items()):
        tool = "icestorm" if b["family"] == "ice40" else "trellis"
        opts = ", ".join(str(o) for o in b["nextpnr_options"])
        lines += [f"  {name}:", f"    default_tool: {tool}",
                  f"    filesets: [rtl, board_{name}]", f"    toplevel: {b.get('top', 'softfloor_board')}",
                  "    tools:", f"      {tool}:", f"        nextpnr_options: [{opts}]"]
        if tool == "icestorm":
            lines += ["        pnr: next"]
    return atomic_write_text(out / CORE_FILE, "\n".join(lines) + "\n")
