"""The iCE40 UP5K's single-port RAM (``SB_SPRAM256KA``) as a run-time-loaded weight memory.

An SPRAM block is 16 bits x 16384 words, single-port, and has **no initial contents** in the
bitstream: a weight memory in SPRAM is written at run time through a load stream before the
unit computes. Layout of a ``depth x width`` weight memory (``width`` = ``pe * simd *
weight_bits``): ``ceil(width / 16)`` blocks side by side (block ``c`` holds bits ``[16c,
16c+16)`` of every word), ``depth <= 16384``.

Load protocol (bytes: the load port costs 10 pins, the UP5K SG48 has 39): word ``a`` of the
memory is sent as its ``ceil(width / 16)`` 16-bit slices, low slice first, each as two bytes, low
byte first, for ``a = 0 .. depth-1`` (:func:`load_words` is the order). A unit accepts exactly that many load transfers after reset, then drops the
load stream's ``ready`` and only then accepts inputs.

The blocks are instantiated as ``SB_SPRAM256KA`` cells (Yosys maps them as they are;
inferring them from an Amaranth memory is not possible, its memories always carry initial
contents). Simulators compile :data:`SIM_MODEL` (written by :func:`write_sim_model`) with the
design.
"""
from __future__ import annotations

import math
from pathlib import Path

from amaranth.hdl import Cat, ClockSignal, Const, Instance, Module, Mux, Signal

__all__ = ["SPRAM_WIDTH", "SPRAM_DEPTH", "LOAD_BITS", "blocks", "fits", "load_words", "image_text", "read_image",
           "SIM_MODEL", "write_sim_model", "uses_spram", "weight_spram"]

#: Bits per SPRAM word, words per SPRAM block.
SPRAM_WIDTH, SPRAM_DEPTH = 16, 16384
#: Bits per transfer of the weight-load stream; transfers per SPRAM word.
LOAD_BITS = 8
PER_WORD = SPRAM_WIDTH // LOAD_BITS


def blocks(width: int) -> int:
    """SPRAM blocks side by side for a ``width``-bit word."""
    return math.ceil(width / SPRAM_WIDTH)


def fits(depth: int, width: int, available: int) -> bool:
    """Does a ``depth x width`` memory fit ``available`` SPRAM blocks (no depth cascading)?"""
    return 1 <= depth <= SPRAM_DEPTH and blocks(width) <= available


def load_words(words: list[int], width: int) -> list[int]:
    """The :data:`LOAD_BITS`-bit load transfers of a memory of ``width``-bit ``words``, in load
    order."""
    mask = (1 << LOAD_BITS) - 1
    return [(w >> (LOAD_BITS * k)) & mask for w in words
            for k in range(blocks(width) * PER_WORD)]


def image_text(transfers: list[int]) -> str:
    """A weight image file's text: the load transfers in load order, one hex byte a line."""
    return "".join(f"{t:02x}\n" for t in transfers)


def read_image(text: str) -> list[int]:
    """The load transfers of a weight image file's text (:func:`image_text`'s inverse)."""
    return [int(t, 16) for t in text.split()]


def weight_spram(m: Module, width: int, depth: int, load, addr, en, name: str = "wspram"):
    """A ``depth x width`` weight memory in SPRAM, written through the stream ``load``
    (``unsigned(LOAD_BITS)`` payload) and then read: ``addr``/``en`` as a synchronous read port.

    Returns ``(data, loaded)``: the read data (one cycle after ``en``, held otherwise) and a
    signal high once all ``depth * blocks(width) * PER_WORD`` load transfers were accepted
    (reset clears it: load the image again after every reset).
    """
    if not 1 <= depth <= SPRAM_DEPTH:
        raise ValueError(f"{name}: {depth} words exceed the {SPRAM_DEPTH} of an SPRAM block")
    n = blocks(width)
    loaded = Signal(name=f"{name}_loaded")
    lcol = Signal(range(max(2, n)), name=f"{name}_lcol")
    laddr = Signal(14, name=f"{name}_laddr")
    take = Signal(name=f"{name}_take")
    low = Signal(SPRAM_WIDTH - LOAD_BITS, name=f"{name}_low")     # the bytes before the last
    part = Signal(range(PER_WORD), name=f"{name}_part")
    write = Signal(name=f"{name}_write")           # the last byte of a block word: write it
    m.d.comb += [load.ready.eq(~loaded), take.eq(load.valid & ~loaded),
                 write.eq(take & (part == PER_WORD - 1))]
    with m.If(take):
        m.d.sync += [part.eq(Mux(part == PER_WORD - 1, 0, part + 1)),
                     low.eq(Cat(low[LOAD_BITS:], load.payload))]
    with m.If(write):
        with m.If(lcol == n - 1):
            m.d.sync += lcol.eq(0)
            with m.If(laddr == depth - 1):
                m.d.sync += loaded.eq(1)
            with m.Else():
                m.d.sync += laddr.eq(laddr + 1)
        with m.Else():
            m.d.sync += lcol.eq(lcol + 1)
    a = Signal(14, name=f"{name}_addr")
    m.d.comb += a.eq(Mux(loaded, addr, laddr))
    outs = []
    for c in range(n):
        q = Signal(SPRAM_WIDTH, name=f"{name}_q{c}")
        cs = Signal(name=f"{name}_cs{c}")
        m.d.comb += cs.eq(Mux(loaded, en, write & (lcol == c)))
        m.submodules[f"{name}{c}"] = Instance(
            "SB_SPRAM256KA",
            i_ADDRESS=a, i_DATAIN=Cat(low, load.payload), i_MASKWREN=Const(0b1111, 4), i_WREN=~loaded,
            i_CHIPSELECT=cs, i_CLOCK=ClockSignal("sync"), i_STANDBY=Const(0, 1), i_SLEEP=Const(0, 1),
            i_POWEROFF=Const(1, 1), o_DATAOUT=q)
        outs.append(q)
    return Cat(*outs)[:width], loaded


#: Behavioural model of ``SB_SPRAM256KA`` for Icarus and Verilator (the ports and the write,
#: read and hold behaviour of Yosys' ``ice40/cells_sim.v``; no power modes).
SIM_MODEL = """\
// Behavioural model of the iCE40 UP5K SPRAM for simulation (not for synthesis).
module SB_SPRAM256KA (
    input [13:0] ADDRESS,
    input [15:0] DATAIN,
    input [3:0] MASKWREN,
    input WREN, CHIPSELECT, CLOCK, STANDBY, SLEEP, POWEROFF,
    output reg [15:0] DATAOUT
);
    reg [15:0] mem [0:16383];
    always @(posedge CLOCK) begin
        if (CHIPSELECT && !STANDBY && !SLEEP && POWEROFF) begin
            if (!WREN) begin
                DATAOUT <= mem[ADDRESS];
            end else begin
                if (MASKWREN[0]) mem[ADDRESS][3:0] <= DATAIN[3:0];
                if (MASKWREN[1]) mem[ADDRESS][7:4] <= DATAIN[7:4];
                if (MASKWREN[2]) mem[ADDRESS][11:8] <= DATAIN[11:8];
                if (MASKWREN[3]) mem[ADDRESS][15:12] <= DATAIN[15:12];
            end
        end
    end
endmodule
"""


def uses_spram(verilog_text: str) -> bool:
    """Does this Verilog instantiate ``SB_SPRAM256KA`` (and so need :data:`SIM_MODEL`)?"""
    return "SB_SPRAM256KA" in verilog_text


def write_sim_model(directory) -> Path:
    """Write :data:`SIM_MODEL` as ``SB_SPRAM256KA.v`` in ``directory``; its path."""
    p = Path(directory) / "SB_SPRAM256KA.v"
    p.parent.mkdir(parents=True, exist_ok=True)
    if not p.exists() or p.read_text() != SIM_MODEL:
        p.write_text(SIM_MODEL)
    return p
