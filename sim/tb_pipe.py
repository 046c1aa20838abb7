"""cocotb testbench of a pipelined unit with one wide input port and one wide output port.

The job file (``SOFTFLOOR_PIPE_JOB``) names the ports (``clk``, ``input``, ``output``), the
input words (JSON list of decimal strings: words may be wider than 64 bits), the ``latency`` in
clock edges from the edge that captures a word to the edge after which its result is on the
output port, and the output file (JSON list of decimal strings). One word per clock cycle.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge, Timer


@cocotb.test()
async def apply_words(dut):
    job = json.loads(Path(os.environ["SOFTFLOOR_PIPE_JOB"]).read_text())
    words = [int(w) for w in json.loads(Path(job["inputs"]).read_text())]
    clk, port_in, port_out = (getattr(dut, job[k]) for k in ("clk", "input", "output"))
    lat = int(job["latency"])
    # inputs first, then the clock from low (Icarus: no X->1 edge at time 0)
    port_in.value = words[0] if words else 0
    clk.value = 0
    await Timer(1, unit="ns")
    cocotb.start_soon(Clock(clk, 10, unit="ns").start(start_high=False))
    out = []
    for j in range(len(words) + lat):
        port_in.value = words[j] if j < len(words) else 0
        await RisingEdge(clk)
        await ReadOnly()
        if j >= lat:
            out.append(str(int(port_out.value)))
        await FallingEdge(clk)
    Path(job["outputs"]).write_text(json.dumps(out))
