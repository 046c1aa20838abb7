"""Drive a valid/ready stream DUT in Amaranth's Python simulator with random gaps and stalls."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from amaranth.sim import Simulator


@dataclass
class StreamRun:
    outputs: list = field(default_factory=list)       # output payloads in order
    lasts: list = field(default_factory=list)         # output last flags (if any)
    in_cycles: list = field(default_factory=list)     # cycle of each accepted input word
    out_cycles: list = field(default_factory=list)    # cycle of each accepted output word
    cycles: int = 0


def run_stream(dut, *, i_valid, i_ready, i_data, o_valid, o_ready, o_data, inputs, n_out,
               i_last=None, o_last=None, gap_prob=0.0, stall_prob=0.0, rng=None,
               max_cycles=200_000, idle_after=0) -> StreamRun:
    """Stream ``inputs`` (ints, or (data, last) pairs when ``i_last``) into ``dut``, collect ``n_out``.

    Each cycle the input is offered with probability ``1 - gap_prob`` and the output accepted with
    probability ``1 - stall_prob``; once offered, a word stays offered until accepted (AXI rule).
    Handshakes are sampled at the clock edge. ``idle_after`` extra cycles check nothing more comes.
    """
    rng = rng or np.random.default_rng(0)
    res = StreamRun()
    extra = []

    async def tb(ctx):
        i, cyc, offering, idle = 0, 0, False, 0
        while cyc < max_cycles:
            if len(res.outputs) >= n_out:
                if idle >= idle_after:
                    break
                idle += 1
            if not offering and i < len(inputs) and rng.random() >= gap_prob:
                offering = True
            if offering:
                word = inputs[i]
                if i_last is not None:
                    ctx.set(i_data, word[0])
                    ctx.set(i_last, word[1])
                else:
                    ctx.set(i_data, word)
            ctx.set(i_valid, int(offering))
            ctx.set(o_ready, int(rng.random() >= stall_prob))
            sampled = [i_ready, i_valid, o_valid, o_ready, o_data] + ([o_last] if o_last is not None
                                                                     else [])
            _, _, *vals = await ctx.tick().sample(*sampled)
            ir, iv, ov, ordy, od = vals[:5]
            if ir and iv:
                res.in_cycles.append(cyc)
                i += 1
                offering = False
            if ov and ordy:
                if len(res.outputs) >= n_out:
                    extra.append(od)
                res.outputs.append(od)
                res.out_cycles.append(cyc)
                if o_last is not None:
                    res.lasts.append(vals[5])
            cyc += 1
        res.cycles = cyc

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert not extra, f"{len(extra)} output word(s) beyond the expected {n_out}"
    assert len(res.outputs) == n_out, \
        f"got {len(res.outputs)} of {n_out} outputs in {res.cycles} cycles (deadlock?)"
    return res


def as_signed(v: int, bits: int) -> int:
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >> (bits - 1) else v
