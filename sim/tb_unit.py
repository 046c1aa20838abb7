"""cocotb testbench of a combinational unit harness (:mod:`softfloor.sim.units`).

The job file (``SOFTFLOOR_UNIT_JOB``) names the input words (JSON list of decimal strings: the
words may be wider than 64 bits), the output ``.npy`` and the output field layout. One vector per
nanosecond: write ``vin``, wait 1 ns, read ``vout``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

import cocotb
from cocotb.triggers import Timer


@cocotb.test()
async def apply_vectors(dut):
    job = json.loads(Path(os.environ["SOFTFLOOR_UNIT_JOB"]).read_text())
    words = [int(w) for w in json.loads(Path(job["inputs"]).read_text())]
    fields = job["fields"]
    out = np.zeros((len(words), len(fields)), dtype=np.int64)
    for k, word in enumerate(words):
        dut.vin.value = word
        await Timer(1, unit="ns")
        v = int(dut.vout.value)
        for j, (_, off, width, sgn) in enumerate(fields):
            x = (v >> off) & ((1 << width) - 1)
            if sgn and x >> (width - 1):
                x -= 1 << width
            out[k, j] = x
    np.save(job["outputs"], out)
