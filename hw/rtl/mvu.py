"""The matrix-vector unit (MVU): ``y = requant(W @ x + b)``, folded ``PE`` rows x ``SIMD`` columns.

:class:`MatrixVectorUnit` computes one :class:`~softfloor.intmodel.Dense` layer, optionally fused
with the :class:`~softfloor.intmodel.Requant` / :class:`~softfloor.intmodel.ChannelRequant` that
follows it. It is the Amaranth face of :class:`softfloor.hw.ops.dense.DenseOp` (which owns its
fold choices, cycle and latency formulas and resource estimate) and the compute core of the
convolution unit. Streams carry ``elements_per_transfer`` elements per transfer: element ``j``
at bits ``[j*b, (j+1)*b)`` of the payload (the payload is the element's own shape when one
element per transfer, else ``unsigned(n*b)``).

Micro-architecture (FINN MVAU style, ``PE`` output rows x ``SIMD`` input columns)
--------------------------------------------------------------------------------
::

    i ─► gather (SIMD elements) ─► input buffer (2 banks, SIMD-wide words)───┐
                          weight ROM (PE*SIMD weights per word) ────────────┼─► PE x SIMD products (reg)
                                                                             │   ─► PE adder trees (reg per level)
                          bias ROM (PE biases per word) ───────────────────────► PE accumulators (reg)
       ─► hold (PE results) ─► n lanes: *multiplier (reg) ─► round (reg) ─► saturate (reg) ─► skid ─► o

* The loader gathers ``SIMD`` input elements (arriving ``in_elements_per_transfer`` at a time)
  into one word of the free bank; the last word of a vector is zero-filled past ``cols``. When a
  vector is complete the bank is marked full and the loader switches banks (``i.ready`` is low
  only while both banks are full).
* The issuer walks (row group, fold) over the full bank, ``PE * SIMD`` MACs per cycle, without a
  bubble between row groups or between back-to-back vectors; the bank is released when its last
  word is read. Rows beyond ``rows`` (when ``PE`` does not divide it) and columns beyond ``cols``
  are padding: their inputs are zero, their results never leave.
* When a row group is complete its ``PE`` accumulators move to the hold register, which feeds the
  requantizer ``out_elements_per_transfer`` rows at a time while the next group accumulates. The
  MAC pipeline stalls only when a finished group cannot move to the hold register.
* Fully unrolled (``pe = rows``, ``simd = cols``): the weights and biases are constants in the
  logic, no ROM, no multiplier: the product stage and the tree levels are the matrix's
  shared-subexpression adder graph (:mod:`softfloor.hw.rtl.cmvm`), registered every two adder
  levels (:mod:`softfloor.hw.rtl.cmvm_emit`). Each input bank is one word, read without a
  register straight into the graph's first stage.

The module-level functions are the unit's arithmetic facts (product widths, partial products,
tree depth, ROM words) that the op's formulas and this unit share.
"""
from __future__ import annotations

import math

import numpy as np
from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from softfloor.intmodel import ChannelRequant, CodeType, Dense
from softfloor.hw.rtl import primitives as P
from softfloor.hw.rtl import spram
from softfloor.hw.rtl.cmvm import AdderGraph, matrix_graph, stages_of
from softfloor.hw.rtl.cmvm_emit import emit
from softfloor.hw.rtl.stream_io import transfer_shape
from softfloor.hw.rtl.tables import double_buffer_depth, positive_int, table_value

__all__ = ["MatrixVectorUnit", "MVU_LATENCY", "MVU_CONST_LATENCY", "mvu_latency",
           "SPLIT_WEIGHT_BITS", "DSP_MIN_PRODUCT_BITS",
           "tree_levels", "const_graph", "is_const", "requant_params",
           "product_bits", "product_selector_bits", "product_terms", "dsp_eligible",
           "check_fold", "weight_words", "bias_words"]

#: Fixed cycles of an MVU from its last input transfer accepted to its last output transfer
#: accepted, on top of ``cycles + tree_levels + (last group transfers - 1)``: bank-full flag (1),
#: memory read (1), product (1), accumulator (1), hold (1), scale (1), round (1), saturate (1),
#: skid buffer output (1); the handshake is on the skid register's first valid cycle (-1).
MVU_LATENCY = 8
#: The same for a fully unrolled (constant-weight) MVU: its input buffer is two one-vector
#: banks, read without a register straight into the adder graph's first stage (one cycle less).
MVU_CONST_LATENCY = MVU_LATENCY - 1
#: Shift-add products whose narrower operand (the one whose bits gate the terms) is this wide
#: are split into two registered partial products.
SPLIT_WEIGHT_BITS = 6
#: Yosys maps a ``$mul`` to an iCE40/ECP5 DSP only when its result is at least this wide.
DSP_MIN_PRODUCT_BITS = 11


def mvu_latency(const: bool) -> int:
    """The fixed part of an MVU's tail latency: :data:`MVU_CONST_LATENCY` for constant weights
    (:func:`is_const`), else :data:`MVU_LATENCY`."""
    return MVU_CONST_LATENCY if const else MVU_LATENCY


def tree_levels(simd: int, product_terms: int = 1, const: bool = False, weight=None) -> int:
    """Registered adder-tree levels after the product stage of an MVU.

    Folded (ROM weights): ``ceil(log2(simd * product_terms))``, one add per level. Constant
    weights: the adder graph of the whole matrix ``weight`` (:func:`const_graph`) is
    registered every :data:`~softfloor.hw.rtl.cmvm.LEVELS_PER_STAGE` adder levels; its first
    stage is the product stage, so its stages - 1 (:func:`~softfloor.hw.rtl.cmvm.stages_of`,
    known without solving the graph).
    """
    if not const:
        return (simd * product_terms - 1).bit_length()
    if weight is None:
        raise ValueError("constant weights: the tree levels come from the weight matrix")
    return stages_of(weight) - 1


def const_graph(weight, in_type: CodeType) -> AdderGraph:
    """The shared-subexpression adder graph of the constant ``weight`` matrix on ``in_type``
    codes (:func:`softfloor.hw.rtl.cmvm.matrix_graph`, cached per matrix and code range)."""
    return matrix_graph(weight, in_type.lo, in_type.hi)


def is_const(rows: int, cols: int, pe: int, simd: int) -> bool:
    """A fully unrolled fold (``pe = rows``, ``simd = cols``) keeps its weights as constants."""
    return pe >= rows and simd >= cols


def requant_params(rq, channels: int) -> tuple[list[int], int]:
    """Per-channel multipliers and one common shift for ``rq`` (Requant or ChannelRequant).

    A ChannelRequant's shifts are folded into its multipliers: with ``S = max(shift)``, channel
    ``c`` uses ``multiplier[c] << (S - shift[c])`` and the shift ``S``. This is exact for every
    rounding mode: ``x * m * 2**(S-s) / 2**S`` *is* ``x * m / 2**s``, the rational that
    :func:`softfloor.arith.round_shift` rounds. One shift means one rounding unit per lane.
    """
    if isinstance(rq, ChannelRequant):
        if rq.channels != channels:
            raise ValueError(f"{rq.name}: {rq.channels} channels, but the stream carries "
                             f"{channels}")
        S = int(rq.shift.max())
        return [int(m) << (S - int(s)) for m, s in zip(rq.multiplier, rq.shift)], S
    return [int(rq.multiplier)] * channels, int(rq.shift)


def product_bits(weight_bits: int, in_type: CodeType) -> int:
    """Width of one ``weight * input`` product (Amaranth's exact widening)."""
    if weight_bits == 1:
        return in_type.bits + 1
    return weight_bits + in_type.bits + (0 if in_type.signed else 1)


def product_selector_bits(weight_bits: int, in_type: CodeType) -> int:
    """Gated terms of one shift-add ``weight x input`` product: the bits of the narrower operand
    (:func:`~softfloor.hw.rtl.primitives.multiply_narrow`); 1 for a 1-bit input, whose bit gates
    the weight (no adder)."""
    return min(weight_bits, in_type.bits)


def product_terms(weight_bits: int, in_type: CodeType, dsp: bool) -> int:
    """Registered partial products per MAC lane: 2 for a wide shift-add product (its narrower
    operand >= :data:`SPLIT_WEIGHT_BITS` bits, no DSP: each half is a shallower adder tree),
    else 1 (1-bit weights, DSP products, narrow inputs)."""
    wide = weight_bits >= 2 and product_selector_bits(weight_bits, in_type) >= SPLIT_WEIGHT_BITS
    return 2 if wide and not dsp else 1


def dsp_eligible(weight_bits: int, in_type: CodeType) -> bool:
    """Would Yosys put a ``weight x input`` product on a DSP block (if asked to)?"""
    return weight_bits >= 2 and product_bits(weight_bits, in_type) >= DSP_MIN_PRODUCT_BITS


def check_fold(name: str, rows: int, cols: int, pe, simd, in_ept, out_ept) -> None:
    """The folds and stream widths an MVU accepts; a ValueError naming the layer otherwise."""
    pe, simd = positive_int("pe", pe), positive_int("simd", simd)
    win = positive_int("in_elements_per_transfer", in_ept)
    wout = positive_int("out_elements_per_transfer", out_ept)
    if pe > rows:
        raise ValueError(f"{name}: pe={pe} exceeds the layer's {rows} output rows")
    if simd > cols:
        raise ValueError(f"{name}: simd={simd} exceeds the layer's {cols} input columns")
    folds = math.ceil(cols / simd)
    if simd % win or cols % win:
        raise ValueError(f"{name}: in_elements_per_transfer={win} must divide simd={simd} "
                         f"and cols={cols}")
    if pe % wout or rows % wout:
        raise ValueError(f"{name}: out_elements_per_transfer={wout} must divide pe={pe} "
                         f"and rows={rows}")
    if pe // wout > folds:
        raise ValueError(
            f"{name}: {pe} results per row group leave {wout} per transfer, "
            f"{pe // wout} transfers per group, more than the {folds} cycles a group "
            f"computes: raise out_elements_per_transfer to at least "
            f"{math.ceil(pe / folds)} (a divisor of pe and rows) or lower simd")


def weight_words(weight, weight_bits: int, pe: int, simd: int) -> list[int]:
    """Weight ROM: word ``g*folds + f`` holds ``W[g*pe + p, f*simd + s]`` at lane ``p*simd+s``
    (``weight_bits`` each; 1-bit weights {-1, +1} as their sign bit). Any weight width."""
    ws = weight_bits
    mask = (1 << ws) - 1
    W = np.asarray(weight, dtype=np.int64)
    rows, cols = W.shape
    groups, folds = math.ceil(rows / pe), math.ceil(cols / simd)
    pad = np.zeros((groups * pe, folds * simd), dtype=np.int64)
    pad[:rows, :cols] = W
    if ws == 1:
        pad = (pad > 0).astype(np.int64)            # sign bit: 1 -> +1, 0 -> -1 (pad: -1 x 0)
    words = []
    for g in range(groups):
        for f in range(folds):
            blk = pad[g * pe:(g + 1) * pe, f * simd:(f + 1) * simd]
            word = 0
            for k, v in enumerate(blk.reshape(-1)):
                word |= (int(v) & mask) << (k * ws)
            words.append(word)
    return words


def bias_words(bias, bias_bits: int, pe: int) -> list[int]:
    """Bias ROM: word ``g`` holds the biases of rows ``g*pe .. g*pe + pe - 1``."""
    mask = (1 << bias_bits) - 1
    rows = len(bias)
    groups = math.ceil(rows / pe)
    b = [int(v) for v in bias] + [0] * (groups * pe - rows)
    return [sum((b[g * pe + p] & mask) << (p * bias_bits) for p in range(pe))
            for g in range(groups)]


class MatrixVectorUnit(wiring.Component):
    """Folded matrix-vector unit for one Dense layer, optionally fused with the following Requant.

    Usually built by :meth:`softfloor.hw.ops.dense.DenseOp.build`, which validated the fold.

    Parameters
    ----------
    dense : Dense
        The layer (integer weights ``(rows, cols)``, bias, ``acc_bits``).
    in_type : CodeType
        Code type of the input elements (from ``IntModel.types()``).
    requant : Requant, ChannelRequant or None
        Fused requantization/activation (per-tensor, or per output row: see
        :func:`requant_params`); ``None`` outputs the raw ``acc_bits`` accumulator.
    pe, simd : int
        Folding: output rows and input columns processed per cycle (``1 <= pe <= rows``,
        ``1 <= simd <= cols``; non-divisors are padded).
    in_elements_per_transfer, out_elements_per_transfer : int
        Elements per ``i`` / ``o`` transfer (see :func:`check_fold`).
    dsp : bool
        Build the ``weight x input`` products as ``$mul`` cells that synthesis maps to DSP blocks
        (when they are wide enough, see :func:`dsp_eligible`); otherwise as shift-and-add logic.
    weight_memory : {"rom", "spram"}
        ``"rom"``: the weights are the initial contents of a ROM (block RAM or logic).
        ``"spram"``: they sit in iCE40 UP5K SPRAM blocks (:mod:`softfloor.hw.rtl.spram`),
        written through the ``w`` stream after reset; ``i.ready`` stays low until all
        :meth:`load_words` were accepted. Ignored when fully unrolled (constants).

    Members
    -------
    i : ``In(stream.Signature(transfer_shape(in_shape, in_elements_per_transfer)))``
    o : ``Out(stream.Signature(transfer_shape(out_shape, out_elements_per_transfer)))``
    w : ``In(stream.Signature(unsigned(spram.LOAD_BITS)))``, only with ``weight_memory="spram"``
    """

    def __init__(self, dense: Dense, in_type: CodeType, requant=None, *, pe: int = 1,
                 simd: int = 1, in_elements_per_transfer: int = 1,
                 out_elements_per_transfer: int = 1, dsp: bool = False,
                 weight_memory: str = "rom"):
        if weight_memory not in ("rom", "spram"):
            raise ValueError(f"{dense.name}: weight_memory must be 'rom' or 'spram', got "
                             f"{weight_memory!r}")
        self.dense, self.requant, self.in_type = dense, requant, in_type
        self.rows, self.cols = dense.out_features, dense.in_features
        check_fold(dense.name, self.rows, self.cols, pe, simd, in_elements_per_transfer,
                   out_elements_per_transfer)
        self.pe, self.simd = pe, simd
        self.folds = math.ceil(self.cols / simd)
        self.groups = math.ceil(self.rows / pe)
        self.in_ept, self.out_ept = in_elements_per_transfer, out_elements_per_transfer
        self.const_weights = is_const(self.rows, self.cols, pe, simd)
        self.dsp = bool(dsp) and not self.const_weights
        self.product_terms = product_terms(dense.weight_bits, in_type, self.dsp)
        self.tree_levels = tree_levels(simd, self.product_terms, self.const_weights,
                                       dense.weight)
        last_rows = self.rows - (self.groups - 1) * pe
        self.last_group_transfers = last_rows // self.out_ept
        acc_type = dense.out_type(in_type)
        out_type = requant.out_type(acc_type) if requant else acc_type
        self.in_shape = P.code_shape(in_type.bits, in_type.signed)
        self.out_shape = P.code_shape(out_type.bits, out_type.signed)
        self.spram = weight_memory == "spram" and not self.const_weights
        ports = {"i": In(stream.Signature(transfer_shape(self.in_shape, self.in_ept))),
                 "o": Out(stream.Signature(transfer_shape(self.out_shape, self.out_ept)))}
        if self.spram:
            ports["w"] = In(stream.Signature(unsigned(spram.LOAD_BITS)))
        super().__init__(ports)

    def weight_words(self) -> list[int]:
        return weight_words(self.dense.weight, self.dense.weight_bits, self.pe, self.simd)

    def bias_words(self) -> list[int]:
        return bias_words(self.dense.bias, self.dense.bias_bits, self.pe)

    @property
    def weight_width(self) -> int:
        """Bits of one weight-memory word (``pe * simd * weight_bits``)."""
        return self.pe * self.simd * self.dense.weight_bits

    def load_words(self) -> list[int]:
        """The ``w`` stream's transfers that load the SPRAM weights (:func:`spram.load_words`)."""
        return spram.load_words(self.weight_words(), self.weight_width)

    # -- hardware ---------------------------------------------------------------------------
    def elaborate(self, platform):
        m = Module()
        pe, simd, F, G = self.pe, self.simd, self.folds, self.groups
        win = self.in_ept
        b = self.in_shape.width
        ws = self.dense.weight_bits
        ab = self.dense.acc_bits
        acc_shape = signed(ab)
        fold_w = max(0, (F - 1).bit_length())

        # ---- memories --------------------------------------------------------------------
        # Zero-initialised: a 4-state simulator never reads X from it (Verilator and the
        # FPGA start from zeros too).
        xdepth = double_buffer_depth(F)
        m.submodules.xbuf = xbuf = Memory(shape=unsigned(simd * b), depth=xdepth,
                                          init=[0] * xdepth)
        const = self.const_weights
        # Constant weights: one word per bank, read without a register (see MVU_CONST_LATENCY).
        xw, xr = xbuf.write_port(), xbuf.read_port(domain="comb" if const else "sync")
        loaded = None
        if not const and self.spram:
            waddr_sp, wen_sp = Signal(14), Signal()
            wdata, loaded = spram.weight_spram(m, pe * simd * ws, G * F, self.w, waddr_sp,
                                               wen_sp)
            m.submodules.brom = brom = Memory(shape=unsigned(pe * self.dense.bias_bits),
                                              depth=G, init=self.bias_words())
            br = brom.read_port()
        elif not const:
            m.submodules.wrom = wrom = Memory(shape=unsigned(pe * simd * ws), depth=G * F,
                                              init=self.weight_words())
            m.submodules.brom = brom = Memory(shape=unsigned(pe * self.dense.bias_bits),
                                              depth=G, init=self.bias_words())
            wr, br = wrom.read_port(), brom.read_port()
            wdata = wr.data

        def bank_addr(word, bank):
            return Cat(word, bank) if fold_w else bank

        full = Signal(2)
        set_full, clr_full = Signal(2), Signal(2)

        # ---- loader: gather SIMD elements per word -----------------------------------------
        wr_bank = Signal()
        wr_word = Signal(max(1, fold_w))
        slots = simd // win
        last_slots = (self.cols - (F - 1) * simd) // win
        take = Signal()
        room = ~full.bit_select(wr_bank, 1)
        m.d.comb += [self.i.ready.eq(room & loaded if self.spram else room),
                     take.eq(self.i.valid & self.i.ready)]
        data_in = Value.cast(self.i.payload)
        if slots == 1:
            word_data, word_done = data_in, Const(1, 1)
            slot = None
        else:
            gather = Signal(simd * b)
            slot = Signal(range(slots))
            word_data = Signal(simd * b)
            # One continuous expression (no If-overrides of a default): 4-state simulators
            # evaluate it at time 0 even when its inputs never change (Icarus left the
            # process-style version X: random network seed 1007).
            w = win * b
            m.d.comb += word_data.eq(Cat(*[Mux(slot == s, data_in[:w], gather[s * w:(s + 1) * w])
                                           for s in range(slots)]))
            word_done = Signal()
            last_word = (wr_word == F - 1) if F > 1 else Const(1, 1)
            m.d.comb += word_done.eq(Mux(last_word, slot == last_slots - 1, slot == slots - 1))
        m.d.comb += [xw.addr.eq(bank_addr(wr_word[:fold_w] if fold_w else wr_word, wr_bank)),
                     xw.data.eq(word_data), xw.en.eq(take & word_done)]
        with m.If(take):
            if slot is not None:
                with m.If(word_done):
                    m.d.sync += [slot.eq(0), gather.eq(0)]     # zero-fill past cols
                with m.Else():
                    m.d.sync += [slot.eq(slot + 1), gather.eq(word_data)]
            with m.If(word_done):
                if F > 1:
                    with m.If(wr_word == F - 1):
                        m.d.sync += [wr_word.eq(0), wr_bank.eq(~wr_bank)]
                        m.d.comb += set_full.eq(Mux(wr_bank, 0b10, 0b01))
                    with m.Else():
                        m.d.sync += wr_word.eq(wr_word + 1)
                else:
                    m.d.sync += wr_bank.eq(~wr_bank)
                    m.d.comb += set_full.eq(Mux(wr_bank, 0b10, 0b01))
        m.d.sync += full.eq((full | set_full) & ~clr_full)

        # ---- issuer ------------------------------------------------------------------------
        advance = Signal()
        rd_bank = Signal()
        fold = Signal(max(1, fold_w))
        group = Signal(range(max(2, G)))
        waddr = Signal(range(max(2, G * F)))
        issue = Signal()
        first0 = Signal()
        last0 = Signal()
        lastg0 = Signal()
        m.d.comb += [issue.eq(full.bit_select(rd_bank, 1) & advance),
                     first0.eq(fold == 0), last0.eq(fold == F - 1), lastg0.eq(group == G - 1),
                     xr.addr.eq(bank_addr(fold[:fold_w] if fold_w else fold, rd_bank))]
        if not const:
            m.d.comb += xr.en.eq(advance)
        if self.spram:
            m.d.comb += [waddr_sp.eq(waddr), wen_sp.eq(advance)]
        elif not const:
            m.d.comb += [wr.addr.eq(waddr), wr.en.eq(advance)]
        with m.If(issue):
            with m.If(last0):
                m.d.sync += fold.eq(0)
                with m.If(lastg0):
                    m.d.sync += [group.eq(0), waddr.eq(0), rd_bank.eq(~rd_bank)]
                    m.d.comb += clr_full.eq(Mux(rd_bank, 0b10, 0b01))
                with m.Else():
                    m.d.sync += [group.eq(group + 1), waddr.eq(waddr + 1)]
            with m.Else():
                m.d.sync += [fold.eq(fold + 1), waddr.eq(waddr + 1)]

        # ---- control pipeline: stage 1 = memory outputs, 2 = products, 3.. = tree levels ---
        # (constant weights: stage 1 = the adder graph's first stage, 2.. = its other stages)
        L = self.tree_levels
        T = (1 if const else 2) + L                 # stage whose registers feed the accumulator
        ctl = [(issue, first0, last0, lastg0, group)]
        for k in range(1, T + 1):
            v, f, l, lg = Signal(name=f"v{k}"), Signal(name=f"first{k}"), Signal(name=f"last{k}"), \
                Signal(name=f"lastg{k}")
            g = Signal.like(group, name=f"group{k}")
            pv, pf, pl, plg, pg = ctl[-1]
            with m.If(advance):
                m.d.sync += [v.eq(pv), f.eq(pf), l.eq(pl), lg.eq(plg), g.eq(pg)]
            ctl.append((v, f, l, lg, g))

        # stage 2: products
        xs = [xr.data[s * b:(s + 1) * b] for s in range(simd)]
        if self.in_shape.signed:
            xs = [x.as_signed() for x in xs]
        if const:
            sums = self._const_sums(m, xs, advance)
        else:
            sums = self._rom_sums(m, xs, wdata, advance, ab, L)

        # bias read one stage ahead of the accumulator (constants when fully unrolled)
        bb = self.dense.bias_bits
        if not const:
            m.d.comb += [br.addr.eq(ctl[T - 1][4]), br.en.eq(advance)]
        vT, firstT, lastT, lastgT, _ = ctl[T]
        accs = [Signal(acc_shape, name=f"acc{p}") for p in range(pe)]
        for p in range(pe):
            if const:
                bias = Const(int(self.dense.bias[p]) if p < self.rows else 0, signed(bb))
            else:
                bias = br.data[p * bb:(p + 1) * bb].as_signed()
            P.accumulate(m, accs[p], sums[p], enable=advance & vT, first=firstT, init=bias)
        self._output(m, accs, ctl, advance, vT, lastT, lastgT, ab)
        return m

    def _const_sums(self, m, xs, advance):
        """Per row: the sum from the shared-subexpression adder graph of the whole matrix
        (:mod:`softfloor.hw.rtl.cmvm`), registered by adder depth in ``1 + tree_levels``
        stages, the first being the product stage."""
        return emit(m, xs[:self.cols], const_graph(self.dense.weight, self.in_type),
                    enable=advance, name="cm")

    def _rom_sums(self, m, xs, wdata, advance, ab, L):
        pe, simd, ws = self.pe, self.simd, self.dense.weight_bits
        level = []
        for p in range(pe):
            lane = []
            for s in range(simd):
                k = p * simd + s
                wbits = wdata[k * ws:(k + 1) * ws]
                if ws == 1:
                    prods = [P.multiply_binary(wbits[0], xs[s])]
                elif self.dsp:
                    prods = [P.multiply(wbits.as_signed(), xs[s])]
                else:
                    prods = P.split_product_terms(wbits.as_signed(), xs[s], self.product_terms)
                for q, prod in enumerate(prods):
                    r = Signal(signed(min(len(prod), ab)), name=f"prod_{p}_{s}_{q}")
                    with m.If(advance):
                        m.d.sync += r.eq(prod)
                    lane.append(r)
            level.append(lane)
        # stages 3..T: adder tree levels (sums mod 2**acc_bits: the final value fits)
        for lv in range(L):
            nxt = []
            for p, lane in enumerate(level):
                out = []
                for j in range(0, len(lane), 2):
                    if j + 1 < len(lane):
                        expr = lane[j] + lane[j + 1]
                    else:
                        expr = lane[j]
                    r = Signal(signed(min(len(expr), ab)), name=f"sum{lv}_{p}_{j // 2}")
                    with m.If(advance):
                        m.d.sync += r.eq(expr)
                    out.append(r)
                nxt.append(out)
            level = nxt
        return [lane[0] for lane in level]

    def _output(self, m, accs, ctl, advance, vT, lastT, lastgT, ab):
        pe, wout = self.pe, self.out_ept
        acc_full = Signal()           # the accumulators hold a finished row group
        acc_lastg = Signal()
        with m.If(advance):
            m.d.sync += [acc_full.eq(vT & lastT), acc_lastg.eq(lastgT)]

        # ---- hold register: drain a finished group, wout results per transfer ---------------
        per_group = pe // wout
        hold = Signal(pe * ab)
        hold_cnt = Signal(range(per_group + 1))
        rq_adv = Signal()
        emit = Signal()
        hold_accept = Signal()
        m.d.comb += [emit.eq((hold_cnt != 0) & rq_adv),
                     hold_accept.eq((hold_cnt == 0) | ((hold_cnt == 1) & emit)),
                     advance.eq(~acc_full | hold_accept)]
        with m.If(emit):
            m.d.sync += [hold.eq(hold >> (wout * ab)), hold_cnt.eq(hold_cnt - 1)]
        with m.If(acc_full & hold_accept):
            m.d.sync += [hold.eq(Cat(*accs)),
                         hold_cnt.eq(Mux(acc_lastg, self.last_group_transfers, per_group))]

        # ---- requantize, wout lanes: scale, round, saturate ----------------------------------
        rq = self.requant
        mults, shift = requant_params(rq, self.rows) if rq else ([1] * self.rows, 0)
        res = stream.Signature(transfer_shape(self.out_shape, wout)).create()
        m.d.comb += rq_adv.eq(~res.valid | res.ready)
        va, vb = Signal(), Signal()
        lanes_out = []
        # output transfer index within the vector: selects per-row multipliers
        n_tr = self.rows // wout
        otr = Signal(range(max(2, n_tr)))
        if len(set(mults)) > 1:
            with m.If(emit):
                m.d.sync += otr.eq(Mux(otr == n_tr - 1, 0, otr + 1))
        mshape = unsigned(max(mults).bit_length())
        for j in range(wout):
            a = hold[j * ab:(j + 1) * ab].as_signed()
            lane_m = [mults[t * wout + j] for t in range(n_tr)]
            if len(set(lane_m)) == 1:
                sexpr = P.multiply_const(a, lane_m[0]) if lane_m[0] != 1 else a
            else:
                sexpr = P.multiply(a, table_value(m, lane_m, otr, mshape, f"mult{j}"))
            scaled = Signal(signed(len(sexpr)), name=f"scaled{j}")
            rexpr = P.round_shift(scaled, shift, rq.rounding) if rq else scaled
            rounded = Signal(rexpr.shape(), name=f"rounded{j}")
            with m.If(rq_adv):
                m.d.sync += [scaled.eq(sexpr), rounded.eq(rexpr)]
            lanes_out.append(P.saturate(rounded, rq.lo, rq.hi, self.out_shape) if rq
                             else rounded[:self.out_shape.width])
        with m.If(rq_adv):
            m.d.sync += [va.eq(hold_cnt != 0), vb.eq(va), res.valid.eq(vb),
                         res.payload.eq(Cat(*lanes_out))]

        out = P.skid_buffer(m, "skid", res, transfer_shape(self.out_shape, wout))
        m.d.comb += [self.o.payload.eq(out.payload), self.o.valid.eq(out.valid),
                     out.ready.eq(self.o.ready)]


