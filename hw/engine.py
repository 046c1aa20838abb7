"""Streaming compute engines: a folded matrix-vector unit per Dense layer, an elementwise requantizer.

:class:`DenseEngine` computes ``y = requant(W @ x + b)`` for one :class:`~softfloor.intmodel.Dense`
layer, optionally fused with the :class:`~softfloor.intmodel.Requant` that follows it.
:class:`RequantEngine` is a standalone elementwise :class:`~softfloor.intmodel.Requant` (used for a
Requant that does not follow a Dense). Streams carry ``elements_per_transfer`` elements per
transfer: element ``j`` at bits ``[j*b, (j+1)*b)`` of the payload (the payload is the element's
own shape when one element per transfer, else ``unsigned(n*b)``).

Each engine exposes, FINN style:

* ``model(x)`` -- its numpy twin (calls the model's own ``execute``, i.e. ``softfloor.arith``);
* ``cycles`` -- compute cycles per vector (``(rows/PE) * (cols/SIMD)``, rounded up);
* ``initiation_interval`` -- cycles per vector when streaming: ``cycles``, or the input/output
  transfer count if a stream is the narrower pipe;
* ``latency`` -- cycles from the handshake of the first input transfer of a vector to the
  handshake of its last output transfer, when the engine is otherwise idle, its input presented
  every cycle and its output always ready;
* ``resources(device)`` -- the planner's estimate (see :mod:`softfloor.hw.planner`).

DenseEngine micro-architecture (FINN MVAU style, ``PE`` output rows x ``SIMD`` input columns)
------------------------------------------------------------------------------------------------
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
"""
from __future__ import annotations

import math

import numpy as np
from amaranth.hdl import Cat, Const, Module, Mux, Shape, Signal, Value, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .. import arith
from ..intmodel import ChannelRequant, CodeType, Dense, Requant
from . import primitives as P

__all__ = ["DenseEngine", "RequantEngine", "ElementwiseEngine", "EngineFaces", "ENGINE_LATENCY", "REQUANT_LATENCY",
           "payload_shape", "dsp_eligible", "requant_params", "channel_tables", "table_value",
           "tree_levels", "is_const", "const_graph"]

#: Fixed cycles of a DenseEngine from its last input transfer accepted to its last output transfer
#: accepted, on top of ``cycles + tree_levels + (last group transfers - 1)``: bank-full flag (1),
#: memory read (1), product (1), accumulator (1), hold (1), scale (1), round (1), saturate (1),
#: skid buffer output (1); the handshake is on the skid register's first valid cycle (-1).
ENGINE_LATENCY = 8
#: Same for a RequantEngine: scale register, round/saturate register, skid buffer.
REQUANT_LATENCY = 3
#: Shift-add products whose narrower operand (the one whose bits gate the terms) is this wide
#: are split into two registered partial products.
SPLIT_WEIGHT_BITS = 6
#: Yosys maps a ``$mul`` to an iCE40/ECP5 DSP only when its result is at least this wide.
DSP_MIN_PRODUCT_BITS = 11


def tree_levels(simd: int, product_terms: int = 1, const: bool = False, graph=None) -> int:
    """Registered adder-tree levels after the product stage of a DenseEngine.

    Folded (ROM weights): ``ceil(log2(simd * product_terms))``, one add per level. Constant
    weights: the adder graph of the whole matrix (``graph``, :func:`const_graph`) is
    registered every :data:`~softfloor.hw.cmvm.LEVELS_PER_STAGE` adder levels; its first stage
    is the product stage, so ``graph.stages() - 1``.
    """
    if not const:
        return (simd * product_terms - 1).bit_length()
    if graph is None:
        raise ValueError("constant weights: the tree levels come from the matrix's adder graph")
    return graph.stages() - 1


def const_graph(weight, in_type: CodeType):
    """The shared-subexpression adder graph of constant ``weight`` on ``in_type`` codes
    (:func:`softfloor.hw.cmvm.matrix_graph`, cached)."""
    from .cmvm import matrix_graph
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


def channel_tables(channel_of: list[int], ept: int) -> tuple[int, list[list[int]]]:
    """Channel of lane ``j`` at transfer ``t`` as ``(period, tables)``: ``tables[j][t % period]``.

    ``channel_of[e]`` is the channel of element ``e`` of a sample; transfers carry ``ept``
    consecutive elements. ``period`` is the smallest number of transfers after which the pattern
    repeats (a divisor of the transfers per sample), so a counter modulo ``period`` indexes it.
    """
    n = len(channel_of) // ept
    per = [[channel_of[t * ept + j] for j in range(ept)] for t in range(n)]
    period = next(p for p in range(1, n + 1) if n % p == 0
                  and all(per[t] == per[t % p] for t in range(n)))
    return period, [[per[t][j] for t in range(period)] for j in range(ept)]


def table_value(m: Module, values: list[int], index, shape, name: str) -> Value:
    """``values[index]`` as an expression: a constant when all values agree, else a mux."""
    if len(set(values)) == 1:
        return Const(values[0], shape)
    sig = Signal(shape, name=name)
    index = Value.cast(index)
    shape = Shape.cast(shape)
    # One continuous expression (a part-select of a constant), not an Array's case statement:
    # 4-state simulators evaluate it at time 0 even while the index keeps its initial value
    # (Icarus leaves a never-triggered combinational process X), and every index is covered.
    values = list(values) + [values[-1]] * ((1 << len(index)) - len(values))
    table = Cat(*[Const(v, shape) for v in values])
    word = table.word_select(index, shape.width)
    m.d.comb += sig.eq(word.as_signed() if shape.signed else word)
    return sig


def _code_shape(t: CodeType) -> Shape:
    return P.code_shape(t.bits, t.signed)


def payload_shape(element: Shape, n: int) -> Shape:
    """Stream payload of ``n`` elements: the element's shape if ``n == 1``, else ``unsigned(n*b)``."""
    element = Shape.cast(element)
    return element if n == 1 else unsigned(n * element.width)


def _pos(name: str, v) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return v


def _stored_weight_bits(weight_bits: int) -> int:
    """Weight bits in the ROM: 1-bit weights {-1, +1} are stored as their sign bit."""
    return weight_bits


def product_bits(weight_bits: int, in_type: CodeType) -> int:
    """Width of one ``weight * input`` product (Amaranth's exact widening)."""
    if weight_bits == 1:
        return in_type.bits + 1
    return weight_bits + in_type.bits + (0 if in_type.signed else 1)


def product_selector_bits(weight_bits: int, in_type: CodeType) -> int:
    """Gated terms of one shift-add ``weight x input`` product: the bits of the narrower operand
    (:func:`~softfloor.hw.primitives.multiply_narrow`); 1 for a 1-bit input, whose bit gates
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


class EngineFaces:
    """The faces every engine shares: ``latency`` from ``in_transfers`` and ``tail_latency``,
    ``resources(device)`` from the planner's estimate; no MAC lanes or DSPs unless it says so."""
    mac_units = 0
    dsp_blocks = 0

    @property
    def latency(self) -> int:
        """First input transfer accepted -> last output transfer accepted (idle engine)."""
        return self.in_transfers - 1 + self.tail_latency

    def resources(self, device: str = "up5k") -> dict:
        """The planner's estimate for ``device`` (see :func:`softfloor.hw.planner.estimate`)."""
        from .planner import estimate_engine
        return estimate_engine(self, device)


class DenseEngine(EngineFaces, wiring.Component):
    """Folded matrix-vector unit for one Dense layer, optionally fused with the following Requant.

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
        Elements per ``i`` / ``o`` transfer. ``in`` must divide ``simd`` and ``cols``; ``out``
        must divide ``pe`` and ``rows`` and be wide enough to drain a row group while the next
        one computes (``pe / out <= ceil(cols / simd)``).
    dsp : bool
        Build the ``weight x input`` products as ``$mul`` cells that synthesis maps to DSP blocks
        (when they are wide enough, see :func:`dsp_eligible`); otherwise as shift-and-add logic.

    Members
    -------
    i : ``In(stream.Signature(payload_shape(in_shape, in_elements_per_transfer)))``
    o : ``Out(stream.Signature(payload_shape(out_shape, out_elements_per_transfer)))``
    """

    def __init__(self, dense: Dense, in_type: CodeType, requant: Requant | None = None, *,
                 pe: int = 1, simd: int = 1, in_elements_per_transfer: int = 1,
                 out_elements_per_transfer: int = 1, dsp: bool = False):
        self._MustUse__silence = True           # no "never used" warning if validation fails
        if not isinstance(dense, Dense):
            raise TypeError(f"dense must be a Dense layer, got {type(dense).__name__}")
        if not isinstance(in_type, CodeType):
            raise TypeError(f"in_type must be a CodeType, got {in_type!r}")
        if requant is not None and not isinstance(requant, (Requant, ChannelRequant)):
            raise TypeError(f"requant must be a Requant/ChannelRequant layer or None, got "
                            f"{requant!r}")
        pe, simd = _pos("pe", pe), _pos("simd", simd)
        win = _pos("in_elements_per_transfer", in_elements_per_transfer)
        wout = _pos("out_elements_per_transfer", out_elements_per_transfer)
        self.dense, self.requant, self.in_type = dense, requant, in_type
        self.rows, self.cols = dense.out_features, dense.in_features
        name = dense.name
        if pe > self.rows:
            raise ValueError(f"{name}: pe={pe} exceeds the layer's {self.rows} output rows")
        if simd > self.cols:
            raise ValueError(f"{name}: simd={simd} exceeds the layer's {self.cols} input columns")
        self.pe, self.simd = pe, simd
        self.folds = math.ceil(self.cols / simd)
        self.groups = math.ceil(self.rows / pe)
        if simd % win or self.cols % win:
            raise ValueError(f"{name}: in_elements_per_transfer={win} must divide simd={simd} "
                             f"and cols={self.cols}")
        if pe % wout or self.rows % wout:
            raise ValueError(f"{name}: out_elements_per_transfer={wout} must divide pe={pe} "
                             f"and rows={self.rows}")
        if pe // wout > self.folds:
            raise ValueError(
                f"{name}: {pe} results per row group leave {wout} per transfer, "
                f"{pe // wout} transfers per group, more than the {self.folds} cycles a group "
                f"computes: raise out_elements_per_transfer to at least "
                f"{math.ceil(pe / self.folds)} (a divisor of pe and rows) or lower simd")
        self.in_ept, self.out_ept = win, wout
        #: Fully unrolled: weights and biases are constants in the logic (no ROM, no
        #: multiplier: the matrix's shared-subexpression adder graph, :mod:`.cmvm`), never DSPs.
        self.const_weights = is_const(self.rows, self.cols, pe, simd)
        self.dsp = bool(dsp) and not self.const_weights
        self.acc_type = dense.out_type(in_type)
        self.out_type = requant.out_type(self.acc_type) if requant else self.acc_type
        self.in_shape = _code_shape(in_type)
        self.out_shape = _code_shape(self.out_type)
        super().__init__({"i": In(stream.Signature(payload_shape(self.in_shape, win))),
                          "o": Out(stream.Signature(payload_shape(self.out_shape, wout)))})
        self._MustUse__silence = False

    # -- the FINN-style faces ---------------------------------------------------------------
    def model(self, x: np.ndarray) -> np.ndarray:
        """Numpy twin: ``requant.execute(dense.execute(x))`` on ``(N, cols)`` codes."""
        y = self.dense.execute(np.asarray(x, dtype=np.int64))
        return self.requant.execute(y) if self.requant else y

    @property
    def cycles(self) -> int:
        """Compute cycles per vector: ``ceil(rows / pe) * ceil(cols / simd)``."""
        return self.groups * self.folds

    @property
    def in_transfers(self) -> int:
        return self.cols // self.in_ept

    @property
    def out_transfers(self) -> int:
        return self.rows // self.out_ept

    @property
    def initiation_interval(self) -> int:
        """Cycles per vector of this engine alone, streaming (input always valid, output ready)."""
        return max(self.cycles, self.in_transfers, self.out_transfers)

    @property
    def product_terms(self) -> int:
        """Registered partial products per MAC lane (:func:`product_terms`)."""
        return product_terms(self.dense.weight_bits, self.in_type, self.dsp)

    @property
    def tree_levels(self) -> int:
        """Registered adder-tree levels: ``ceil(log2(simd * product_terms))``; constant weights
        (fully unrolled): see :func:`tree_levels`."""
        return tree_levels(self.simd, self.product_terms, self.const_weights,
                           const_graph(self.dense.weight, self.in_type)
                           if self.const_weights else None)

    @property
    def last_group_transfers(self) -> int:
        last_rows = self.rows - (self.groups - 1) * self.pe
        return last_rows // self.out_ept

    @property
    def tail_latency(self) -> int:
        """Cycles from the last input transfer accepted to the last output transfer accepted."""
        return self.cycles + self.tree_levels + ENGINE_LATENCY + self.last_group_transfers - 1

    @property
    def mac_units(self) -> int:
        return self.pe * self.simd

    @property
    def dsp_blocks(self) -> int:
        """DSP blocks this engine asks synthesis for (0 unless ``dsp`` and the products qualify)."""
        return self.mac_units if self.dsp and dsp_eligible(self.dense.weight_bits,
                                                           self.in_type) else 0

    # -- ROM contents -----------------------------------------------------------------------
    def weight_words(self) -> list[int]:
        """Weight ROM: word ``g*folds + f`` holds ``W[g*pe + p, f*simd + s]`` at lane ``p*simd+s``."""
        ws = self.dense.weight_bits
        mask = (1 << ws) - 1
        W = np.asarray(self.dense.weight, dtype=np.int64)
        pad = np.zeros((self.groups * self.pe, self.folds * self.simd), dtype=np.int64)
        pad[:self.rows, :self.cols] = W
        if ws == 1:
            pad = (pad > 0).astype(np.int64)            # sign bit: 1 -> +1, 0 -> -1 (pad: -1 x 0)
        words = []
        for g in range(self.groups):
            for f in range(self.folds):
                blk = pad[g * self.pe:(g + 1) * self.pe, f * self.simd:(f + 1) * self.simd]
                word = 0
                for k, v in enumerate(blk.reshape(-1)):
                    word |= (int(v) & mask) << (k * ws)
                words.append(word)
        return words

    def bias_words(self) -> list[int]:
        bb = self.dense.bias_bits
        mask = (1 << bb) - 1
        b = list(int(v) for v in self.dense.bias) + [0] * (self.groups * self.pe - self.rows)
        return [sum((b[g * self.pe + p] & mask) << (p * bb) for p in range(self.pe))
                for g in range(self.groups)]

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
        m.submodules.xbuf = xbuf = Memory(shape=unsigned(simd * b), depth=2 << fold_w,
                                          init=[0] * (2 << fold_w))
        xw, xr = xbuf.write_port(), xbuf.read_port()
        const = self.const_weights
        if not const:
            m.submodules.wrom = wrom = Memory(shape=unsigned(pe * simd * ws), depth=G * F,
                                              init=self.weight_words())
            m.submodules.brom = brom = Memory(shape=unsigned(pe * self.dense.bias_bits),
                                              depth=G, init=self.bias_words())
            wr, br = wrom.read_port(), brom.read_port()

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
        m.d.comb += [self.i.ready.eq(~full.bit_select(wr_bank, 1)),
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
                     xr.addr.eq(bank_addr(fold[:fold_w] if fold_w else fold, rd_bank)),
                     xr.en.eq(advance)]
        if not const:
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
        L = self.tree_levels
        T = 2 + L                                   # stage whose registers feed the accumulator
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
            sums = self._const_sums(m, xs, advance, ab, L)
        else:
            sums = self._rom_sums(m, xs, wr, advance, ab, L)

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

    def _const_sums(self, m, xs, advance, ab, L):
        """Per row: the sum from the shared-subexpression adder graph of the whole matrix
        (:mod:`softfloor.hw.cmvm`), registered by adder depth in ``1 + L`` stages, the first
        being the product stage."""
        from .cmvm_rtl import emit
        return emit(m, xs[:self.cols], const_graph(self.dense.weight, self.in_type),
                    enable=advance, name="cm")

    def _rom_sums(self, m, xs, wr, advance, ab, L):
        pe, simd, ws = self.pe, self.simd, self.dense.weight_bits
        level = []
        for p in range(pe):
            lane = []
            for s in range(simd):
                k = p * simd + s
                wbits = wr.data[k * ws:(k + 1) * ws]
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
        res = stream.Signature(payload_shape(self.out_shape, wout)).create()
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

        out = P.skid_buffer(m, "skid", res, payload_shape(self.out_shape, wout))
        m.d.comb += [self.o.payload.eq(out.payload), self.o.valid.eq(out.valid),
                     out.ready.eq(self.o.ready)]


class ElementwiseEngine(EngineFaces, wiring.Component):
    """Base of the elementwise stream engines: ``elements_per_transfer`` lanes, one transfer
    per cycle, two register stages (:meth:`stage1` -> register -> :meth:`stage2` -> register)
    and a skid buffer, so the latency after the last input is :data:`REQUANT_LATENCY`.

    Per-channel constants are chosen by a transfer counter from ``channel_of`` (the channel of
    each element of a sample, in stream order; default: element ``e`` is channel ``e``), see
    :func:`channel_tables`.

    Members
    -------
    i : ``In(stream.Signature(payload_shape(in_shape, elements_per_transfer)))``
    o : ``Out(stream.Signature(payload_shape(out_shape, elements_per_transfer)))``
    """

    def _setup(self, layer, in_type: CodeType, out_type: CodeType, elements: int,
               elements_per_transfer: int, channel_of):
        elements = _pos("elements", elements)
        n = _pos("elements_per_transfer", elements_per_transfer)
        if elements % n:
            raise ValueError(f"{layer.name}: elements_per_transfer={n} must divide the "
                             f"{elements} elements")
        self.channel_of = list(range(elements)) if channel_of is None else list(channel_of)
        if len(self.channel_of) != elements:
            raise ValueError(f"{layer.name}: channel_of has {len(self.channel_of)} entries "
                             f"for {elements} elements")
        self.in_type, self.out_type, self.elements = in_type, out_type, elements
        self.in_ept = self.out_ept = n
        self.in_shape, self.out_shape = _code_shape(in_type), _code_shape(out_type)
        self.rows, self.cols, self.pe, self.simd = elements, 1, n, 1
        super().__init__({"i": In(stream.Signature(payload_shape(self.in_shape, n))),
                          "o": Out(stream.Signature(payload_shape(self.out_shape, n)))})

    @property
    def cycles(self) -> int:
        return self.elements // self.in_ept

    in_transfers = out_transfers = initiation_interval = cycles

    @property
    def tail_latency(self) -> int:
        return REQUANT_LATENCY

    def stage1(self, m: Module, j: int, x: Value, channels: list[int], tc: Value) -> Value:
        """Lane ``j``'s first-stage expression of input ``x`` (channels per counter value)."""
        raise NotImplementedError

    def stage2(self, m: Module, j: int, r: Value) -> Value:
        """Lane ``j``'s output (an ``out_shape`` value) from the first-stage register ``r``."""
        raise NotImplementedError

    def elaborate(self, platform):
        m = Module()
        n, b = self.in_ept, self.in_shape.width
        period, tables = channel_tables(self.channel_of, n)
        res = stream.Signature(payload_shape(self.out_shape, n)).create()
        advance, v1 = Signal(), Signal()
        m.d.comb += [advance.eq(~res.valid | res.ready), self.i.ready.eq(advance)]
        tc = Signal(range(max(2, period)))
        if period > 1:
            with m.If(self.i.valid & advance):
                m.d.sync += tc.eq(Mux(tc == period - 1, 0, tc + 1))
        data = Value.cast(self.i.payload)
        outs = []
        for j in range(n):
            x = data[j * b:(j + 1) * b]
            x = x.as_signed() if self.in_shape.signed else x
            expr = self.stage1(m, j, x, tables[j], tc)
            r = Signal(expr.shape(), name=f"stage1_{j}")
            with m.If(advance):
                m.d.sync += r.eq(expr)
            y = Signal(self.out_shape, name=f"y{j}")
            m.d.comb += y.eq(self.stage2(m, j, r))
            outs.append(y)
        with m.If(advance):
            m.d.sync += [v1.eq(self.i.valid), res.valid.eq(v1), res.payload.eq(Cat(*outs))]
        out = P.skid_buffer(m, "skid", res, payload_shape(self.out_shape, n))
        wiring.connect(m, out, wiring.flipped(self.o))
        return m


class RequantEngine(ElementwiseEngine):
    """Elementwise Requant / ChannelRequant on a stream (a Requant that does not follow a Dense).

    Stages: ``x * multiplier`` register, round/saturate register, skid buffer. Per-channel
    multipliers (a ChannelRequant, see :func:`requant_params`) come from ``channel_of``.
    """

    def __init__(self, requant, in_type: CodeType, *, elements: int,
                 elements_per_transfer: int = 1, channel_of: list | None = None):
        self._MustUse__silence = True           # no "never used" warning if validation fails
        if not isinstance(requant, (Requant, ChannelRequant)):
            raise TypeError(f"requant must be a Requant layer, got {type(requant).__name__}")
        self.requant = requant
        self._setup(requant, in_type, requant.out_type(in_type), elements,
                    elements_per_transfer, channel_of)
        rq = requant
        self.mults, self.shift = requant_params(
            rq, rq.channels if isinstance(rq, ChannelRequant) else max(self.channel_of) + 1)
        self._MustUse__silence = False

    def model(self, x):
        """Numpy twin on ``(N, elements)`` codes in stream order."""
        x = np.asarray(x, dtype=np.int64)
        rq = self.requant
        if isinstance(rq, ChannelRequant):
            return np.stack([arith.requantize(x[:, e], int(rq.shift[c]), rq.rounding, rq.lo,
                                              rq.hi, int(rq.multiplier[c]))
                             for e, c in enumerate(self.channel_of)], axis=1)
        return rq.execute(x)

    def stage1(self, m, j, x, channels, tc):
        lane_m = [self.mults[c] for c in channels]
        if len(set(lane_m)) == 1:
            return P.multiply_const(x, lane_m[0]) if lane_m[0] != 1 else x
        mshape = unsigned(max(self.mults).bit_length())
        return P.multiply(x, table_value(m, lane_m, tc, mshape, f"mult{j}"))

    def stage2(self, m, j, r):
        rq = self.requant
        return P.saturate(P.round_shift(r, self.shift, rq.rounding), rq.lo, rq.hi,
                          self.out_shape)
