"""Streaming compute engines: a matrix-vector unit per Dense layer, an elementwise requantizer.

:class:`DenseEngine` computes ``y = requant(W @ x + b)`` for one :class:`~softfloor.intmodel.Dense`
layer, optionally fused with the :class:`~softfloor.intmodel.Requant` that follows it.
:class:`RequantEngine` is a standalone elementwise :class:`~softfloor.intmodel.Requant` (used for a
Requant that does not follow a Dense). Both consume and produce one element per stream transfer.

Each engine exposes, FINN style:

* ``model(x)`` -- its numpy twin (calls the model's own ``execute``, i.e. ``softfloor.arith``);
* ``cycles`` -- compute cycles per vector when streaming (the engine's initiation interval);
* ``latency`` -- cycles from the handshake of the first input element of a vector to the
  handshake of its last output element, when the engine is otherwise idle, its input presented
  every cycle and its output always ready;
* ``resources()`` -- an estimate of iCE40 resources (LUT4, DFF, EBR, DSP).

DenseEngine micro-architecture (``pe = simd = 1``)
--------------------------------------------------
::

    i ──► loader ──► input buffer (2 banks, ping-pong) ──┐
                                      weight ROM ─────────┼─► x*w ─► acc ─► *mult ─► round ─► sat ─► skid ─► o
                                      bias ROM ───────────┘   (reg)   (reg)  (reg)   (reg)  (reg)

* The loader writes element ``c`` of a vector into the free bank; when the vector is complete the
  bank is marked full and the loader switches to the other bank (``i.ready`` is low only while
  both banks are full).
* The issuer walks ``(row, col)`` over the full bank, one MAC per cycle, without a bubble between
  rows or between back-to-back vectors; the bank is released when its last element is read.
* Stages: memory read (1) -> product register (1) -> accumulator (1) -> ``acc * multiplier``
  register (1) -> round register (1) -> saturate register (1) -> output skid buffer. The whole pipeline stalls
  only while a finished result cannot leave the round/saturate register.
"""
from __future__ import annotations

import math

import numpy as np
from amaranth.hdl import Cat, Const, Module, Mux, Shape, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .. import arith
from ..intmodel import CodeType, Dense, Requant
from . import primitives as P

__all__ = ["DenseEngine", "RequantEngine", "ENGINE_LATENCY", "REQUANT_LATENCY"]

#: Cycles from the last input element of a vector accepted to its last result accepted at ``o``
#: (minus the ``rows * cols`` compute cycles): bank-full flag (1), memory read (1), product (1),
#: accumulator (1), scale (1), round (1), saturate (1) registers; the skid buffer's output register
#: is the saturate register's successor and the handshake happens on its first valid cycle.
ENGINE_LATENCY = 7
#: Same for a RequantEngine: scale register, round/saturate register, skid buffer.
REQUANT_LATENCY = 3


def _out_shape(t: CodeType) -> Shape:
    return P.code_shape(t.bits, t.signed)


def _ebr_blocks(depth: int, width: int) -> int:
    """iCE40 SB_RAM40_4K count for a ``depth x width`` memory (256x16, 512x8, 1024x4, 2048x2)."""
    if depth * width <= 0:
        return 0
    best = None
    for d, w in ((256, 16), (512, 8), (1024, 4), (2048, 2)):
        n = math.ceil(depth / d) * math.ceil(width / w)
        best = n if best is None else min(best, n)
    return best


class DenseEngine(wiring.Component):
    """Matrix-vector unit for one Dense layer, optionally fused with the following Requant.

    Parameters
    ----------
    dense : Dense
        The layer (integer weights ``(rows, cols)``, bias, ``acc_bits``).
    in_type : CodeType
        Code type of the input elements (from ``IntModel.types()``).
    requant : Requant or None
        Fused requantization/activation; ``None`` outputs the raw ``acc_bits`` accumulator.
    pe, simd : int
        Folding: output rows and input columns processed per cycle. Only ``1`` is implemented;
        the parameters are part of the interface (``cycles`` already uses them).

    Members
    -------
    i : ``In(stream.Signature(in_shape))``
        Input elements, ``cols`` per vector, in order.
    o : ``Out(stream.Signature(out_shape))``
        Output elements, ``rows`` per vector, in order.
    """

    def __init__(self, dense: Dense, in_type: CodeType, requant: Requant | None = None, *,
                 pe: int = 1, simd: int = 1):
        self._MustUse__silence = True           # no "never used" warning if validation fails
        if not isinstance(dense, Dense):
            raise TypeError(f"dense must be a Dense layer, got {type(dense).__name__}")
        if not isinstance(in_type, CodeType):
            raise TypeError(f"in_type must be a CodeType, got {in_type!r}")
        if requant is not None and not isinstance(requant, Requant):
            raise TypeError(f"requant must be a Requant layer or None, got {requant!r}")
        for name, v in (("pe", pe), ("simd", simd)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if pe != 1 or simd != 1:
            raise NotImplementedError("only pe=1, simd=1 is implemented")
        self.dense, self.requant, self.in_type = dense, requant, in_type
        self.pe, self.simd = pe, simd
        self.rows, self.cols = dense.out_features, dense.in_features
        self.acc_type = dense.out_type(in_type)
        self.out_type = requant.out_type(self.acc_type) if requant else self.acc_type
        self.in_shape = _out_shape(in_type)
        self.out_shape = _out_shape(self.out_type)
        super().__init__({"i": In(stream.Signature(self.in_shape)),
                          "o": Out(stream.Signature(self.out_shape))})
        self._MustUse__silence = False

    # -- the FINN-style faces ---------------------------------------------------------------
    def model(self, x: np.ndarray) -> np.ndarray:
        """Numpy twin: ``requant.execute(dense.execute(x))`` on ``(N, cols)`` codes."""
        y = self.dense.execute(np.asarray(x, dtype=np.int64))
        return self.requant.execute(y) if self.requant else y

    @property
    def cycles(self) -> int:
        """Compute cycles per vector = initiation interval of this engine alone."""
        return math.ceil(self.rows / self.pe) * math.ceil(self.cols / self.simd)

    @property
    def latency(self) -> int:
        """Cycles from the first input element accepted to the last output element accepted.

        Idle engine, input presented every cycle, output always ready:
        ``(cols - 1) + rows * cols + ENGINE_LATENCY``.
        """
        return self.cols - 1 + self.cycles + ENGINE_LATENCY

    @property
    def mac_units(self) -> int:
        return self.pe * self.simd

    def resources(self) -> dict:
        """Rough iCE40 estimate: LUT4s, DFFs, EBR blocks and DSPs (no DSP mapping assumed)."""
        wb, xb, ab = max(self.dense.weight_bits, 2), self.in_type.bits, self.dense.acc_bits
        idx = max(1, (self.cols - 1).bit_length())
        mult_luts = wb * xb + wb + xb               # array multiplier, LUT4 each partial product
        scale_bits = ab + (self.requant.multiplier.bit_length() if self.requant else 0)
        scale_luts = (ab * self.requant.multiplier.bit_length()
                      if self.requant and self.requant.multiplier != 1 else 0)
        out_bits = self.out_type.bits
        luts = (mult_luts + ab                      # accumulator adder (carry chain)
                + scale_luts + scale_bits + 2 * out_bits  # round adder, saturation muxes
                + 4 * idx + 2 * (self.rows * self.cols - 1).bit_length()  # counters
                + 20)                                # control
        dffs = (wb + xb + (wb + xb + 1) + ab + scale_bits + 2 * out_bits + self.dense.bias_bits
                + 4 * idx + 2 * (self.rows * self.cols - 1).bit_length() + 12)
        weight_bits = self.rows * self.cols * wb
        ebr = (_ebr_blocks(self.rows * self.cols, wb) + _ebr_blocks(2 << idx, xb)
               + (_ebr_blocks(self.rows, self.dense.bias_bits) if self.rows > 32 else 0))
        return {"lut4": int(luts), "dff": int(dffs), "ebr": int(ebr), "dsp": 0,
                "weight_bits": int(weight_bits)}

    # -- hardware ---------------------------------------------------------------------------
    def elaborate(self, platform):
        m = Module()
        rows, cols = self.rows, self.cols
        idx_w = max(1, (cols - 1).bit_length())
        wshape = signed(max(self.dense.weight_bits, 2))       # 1-bit weights are {-1, +1}
        bshape = signed(self.dense.bias_bits)
        acc_shape = signed(self.dense.acc_bits)

        # Memories: input ping-pong buffer, weight ROM (row-major), bias ROM.
        m.submodules.xbuf = xbuf = Memory(shape=self.in_shape, depth=2 << idx_w, init=[])
        m.submodules.wrom = wrom = Memory(
            shape=wshape, depth=rows * cols,
            init=[int(v) for v in np.asarray(self.dense.weight).reshape(-1)])
        m.submodules.brom = brom = Memory(
            shape=bshape, depth=rows, init=[int(v) for v in self.dense.bias])
        xw = xbuf.write_port()
        xr = xbuf.read_port()
        wr = wrom.read_port()
        br = brom.read_port()

        full = Signal(2)

        # ---- loader --------------------------------------------------------------------
        wr_bank = Signal()
        wr_idx = Signal(idx_w)
        m.d.comb += [
            self.i.ready.eq(~full.bit_select(wr_bank, 1)),
            xw.addr.eq(Cat(wr_idx, wr_bank)),
            xw.data.eq(self.i.payload),
            xw.en.eq(self.i.valid & self.i.ready),
        ]
        set_full = Signal(2)
        clr_full = Signal(2)
        with m.If(self.i.valid & self.i.ready):
            with m.If(wr_idx == cols - 1):
                m.d.sync += [wr_idx.eq(0), wr_bank.eq(~wr_bank)]
                m.d.comb += set_full.eq(Mux(wr_bank, 0b10, 0b01))
            with m.Else():
                m.d.sync += wr_idx.eq(wr_idx + 1)
        m.d.sync += full.eq((full | set_full) & ~clr_full)

        # ---- issuer --------------------------------------------------------------------
        advance = Signal()          # the whole MAC pipeline moves this cycle
        rd_bank = Signal()
        col = Signal(idx_w)
        row = Signal(range(rows))
        waddr = Signal(range(rows * cols))
        issue = Signal()
        first0, last0 = Signal(), Signal()
        m.d.comb += [
            issue.eq(full.bit_select(rd_bank, 1) & advance),
            first0.eq(col == 0),
            last0.eq(col == cols - 1),
            xr.addr.eq(Cat(col, rd_bank)), xr.en.eq(advance),
            wr.addr.eq(waddr), wr.en.eq(advance),
            br.addr.eq(row), br.en.eq(advance),
        ]
        with m.If(issue):
            with m.If(last0):
                m.d.sync += col.eq(0)
                with m.If(row == rows - 1):
                    m.d.sync += [row.eq(0), waddr.eq(0), rd_bank.eq(~rd_bank)]
                    m.d.comb += clr_full.eq(Mux(rd_bank, 0b10, 0b01))
                with m.Else():
                    m.d.sync += [row.eq(row + 1), waddr.eq(waddr + 1)]
            with m.Else():
                m.d.sync += [col.eq(col + 1), waddr.eq(waddr + 1)]

        # ---- stage 1: memory outputs valid; register the product -------------------------
        v1, first1, last1 = Signal(), Signal(), Signal()
        v2, first2, last2 = Signal(), Signal(), Signal()
        prod = Signal(P.multiply(Signal(wshape), Signal(self.in_shape)).shape())
        bias2 = Signal(bshape)
        acc = Signal(acc_shape)
        v3 = Signal()
        with m.If(advance):
            m.d.sync += [v1.eq(issue), first1.eq(first0), last1.eq(last0)]
            m.d.sync += [v2.eq(v1), first2.eq(first1), last2.eq(last1),
                         prod.eq(P.multiply(wr.data, xr.data)), bias2.eq(br.data)]
            # ---- stage 2: accumulate ---------------------------------------------------
            m.d.sync += v3.eq(v2 & last2)
        P.accumulate(m, acc, prod, enable=advance & v2, first=first2, init=bias2)

        # ---- stage 3/4: scale, then round + saturate ---------------------------------------
        rq = self.requant
        mult = rq.multiplier if rq else 1
        scaled = Signal(signed(len(acc) + (mult.bit_length() + 1 if mult != 1 else 0)))
        v4, v5 = Signal(), Signal()
        rounded = Signal(P.round_shift(scaled, rq.shift, rq.rounding).shape() if rq
                         else scaled.shape())
        res = stream.Signature(self.out_shape).create()
        with m.If(advance):
            m.d.sync += [v4.eq(v3), scaled.eq(acc * mult if mult != 1 else acc)]
            # Rounding and saturation in separate stages: together they are the critical path.
            m.d.sync += [v5.eq(v4),
                         rounded.eq(P.round_shift(scaled, rq.shift, rq.rounding) if rq else scaled)]
            if rq:
                m.d.sync += res.payload.eq(P.saturate(rounded, rq.lo, rq.hi, self.out_shape))
            else:
                m.d.sync += res.payload.eq(rounded)
            m.d.sync += res.valid.eq(v5)
        m.d.comb += advance.eq(~res.valid | res.ready)

        # ---- output skid buffer -----------------------------------------------------------
        out = P.skid_buffer(m, "skid", res, self.out_shape)
        m.d.comb += [self.o.payload.eq(out.payload), self.o.valid.eq(out.valid),
                     out.ready.eq(self.o.ready)]
        return m


class RequantEngine(wiring.Component):
    """Elementwise Requant on a stream (for a Requant that does not follow a Dense).

    One element per cycle; stages: ``x * multiplier`` register, round/saturate register, skid
    buffer (latency :data:`REQUANT_LATENCY`).

    Members
    -------
    i : ``In(stream.Signature(in_shape))``
    o : ``Out(stream.Signature(out_shape))``
    """

    def __init__(self, requant: Requant, in_type: CodeType, *, elements: int):
        self._MustUse__silence = True           # no "never used" warning if validation fails
        if not isinstance(requant, Requant):
            raise TypeError(f"requant must be a Requant layer, got {type(requant).__name__}")
        if isinstance(elements, bool) or not isinstance(elements, int) or elements < 1:
            raise ValueError(f"elements must be a positive integer, got {elements!r}")
        self.requant, self.in_type, self.elements = requant, in_type, elements
        self.out_type = requant.out_type(in_type)
        self.in_shape, self.out_shape = _out_shape(in_type), _out_shape(self.out_type)
        self.rows, self.cols = elements, 1
        super().__init__({"i": In(stream.Signature(self.in_shape)),
                          "o": Out(stream.Signature(self.out_shape))})
        self._MustUse__silence = False

    def model(self, x):
        return self.requant.execute(np.asarray(x, dtype=np.int64))

    @property
    def cycles(self) -> int:
        return self.elements

    @property
    def latency(self) -> int:
        return self.elements - 1 + REQUANT_LATENCY

    mac_units = 0

    def resources(self) -> dict:
        rq, xb = self.requant, self.in_type.bits
        mb = rq.multiplier.bit_length()
        luts = (xb * mb if rq.multiplier != 1 else 0) + xb + mb + 2 * self.out_type.bits + 4
        dffs = xb + mb + 1 + 2 * self.out_type.bits + 4
        return {"lut4": luts, "dff": dffs, "ebr": 0, "dsp": 0, "weight_bits": 0}

    def elaborate(self, platform):
        m = Module()
        rq = self.requant
        mult = rq.multiplier
        scaled = Signal(signed(len(self.i.payload) + 1 + (mult.bit_length() + 1
                                                            if mult != 1 else 0)))
        v1 = Signal()
        res = stream.Signature(self.out_shape).create()
        advance = Signal()
        m.d.comb += [advance.eq(~res.valid | res.ready), self.i.ready.eq(advance)]
        with m.If(advance):
            m.d.sync += [v1.eq(self.i.valid),
                         scaled.eq(self.i.payload * mult if mult != 1 else self.i.payload),
                         res.valid.eq(v1),
                         res.payload.eq(P.saturate(P.round_shift(scaled, rq.shift, rq.rounding),
                                                   rq.lo, rq.hi, self.out_shape))]
        out = P.skid_buffer(m, "skid", res, self.out_shape)
        m.d.comb += [self.o.payload.eq(out.payload), self.o.valid.eq(out.valid),
                     out.ready.eq(self.o.ready)]
        return m
