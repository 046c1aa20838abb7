"""Elementwise stream units: requantizer, multi-threshold activation, table lookup.

Each unit has ``elements_per_transfer`` lanes and takes one transfer per cycle through two
register stages and a skid buffer::

    i ─► n lanes: stage 1 (reg) ─► stage 2 (reg) ─► skid ─► o

so an element leaves :data:`ELEMENTWISE_LATENCY` cycles after it arrives (output ready).
Per-channel constants (a ChannelRequant's multipliers, per-channel thresholds) are chosen by a
transfer counter from ``channel_of`` (the channel of each element of a sample, in stream order),
see :func:`~softfloor.hw.rtl.tables.channel_tables`.

* :class:`RequantUnit`: ``saturate(round(x * multiplier >> shift))`` (Requant, ChannelRequant);
* :class:`ThresholdUnit`: ``out_bias + #{t : thresholds[c][t] <= x}`` (MultiThreshold, the
  FINN/QONNX activation): ``T`` comparators per lane, then a population count;
* :class:`LutUnit`: ``table[x - in_lo]`` (Lut): a constant table per lane, in logic (a
  multiplexer of constants) or in a ROM (a memory read port per lane, block RAM when large).

These are the Amaranth faces of the ops in :mod:`softfloor.hw.ops` (``requant``,
``multithreshold``, ``lut``), which own the numpy twins, the formulas and the estimates.
"""
from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from softfloor.intmodel import ChannelRequant, CodeType
from softfloor.hw.rtl import primitives as P
from softfloor.hw.rtl.mvu import requant_params
from softfloor.hw.rtl.stream_io import transfer_shape
from softfloor.hw.rtl.tables import channel_tables, positive_int, table_value

__all__ = ["ElementwiseUnit", "RequantUnit", "ThresholdUnit", "LutUnit", "ELEMENTWISE_LATENCY",
           "LUT_MEMORIES"]

#: Cycles from an element's input transfer to its output transfer: stage-1 register, stage-2
#: register, skid buffer.
ELEMENTWISE_LATENCY = 3
#: Where a :class:`LutUnit` keeps its table: ``"logic"`` (constants) or ``"rom"`` (a memory).
LUT_MEMORIES = ("logic", "rom")


class ElementwiseUnit(wiring.Component):
    """Base of the elementwise units (see the module docstring).

    Parameters
    ----------
    name : str
        The layer's name (for messages).
    in_type, out_type : CodeType
    elements : int
        Elements per sample.
    elements_per_transfer : int
        Lanes (divides ``elements``).
    channel_of : list of int or None
        Channel of each element of a sample in stream order (default: element ``e`` is
        channel ``e``).

    Members
    -------
    i : ``In(stream.Signature(transfer_shape(in_shape, elements_per_transfer)))``
    o : ``Out(stream.Signature(transfer_shape(out_shape, elements_per_transfer)))``
    """

    def __init__(self, name: str, in_type: CodeType, out_type: CodeType, *, elements: int,
                 elements_per_transfer: int = 1, channel_of=None):
        elements = positive_int("elements", elements)
        n = positive_int("elements_per_transfer", elements_per_transfer)
        if elements % n:
            raise ValueError(f"{name}: elements_per_transfer={n} must divide the "
                             f"{elements} elements")
        self.channel_of = list(range(elements)) if channel_of is None else list(channel_of)
        if len(self.channel_of) != elements:
            raise ValueError(f"{name}: channel_of has {len(self.channel_of)} entries "
                             f"for {elements} elements")
        self.name = name
        self.in_type, self.out_type, self.elements = in_type, out_type, elements
        self.in_ept = self.out_ept = n
        self.in_shape = P.code_shape(in_type.bits, in_type.signed)
        self.out_shape = P.code_shape(out_type.bits, out_type.signed)
        super().__init__({"i": In(stream.Signature(transfer_shape(self.in_shape, n))),
                          "o": Out(stream.Signature(transfer_shape(self.out_shape, n)))})

    def stage1(self, m: Module, j: int, x: Value, channels: list[int], tc: Value) -> Value:
        """Lane ``j``'s first-stage expression of input ``x`` (channels per counter value)."""
        raise NotImplementedError

    def stage1_register(self, m: Module, j: int, x: Value, channels: list[int], tc: Value,
                        advance: Value) -> Value:
        """Lane ``j``'s first-stage register (loaded with :meth:`stage1` when ``advance``)."""
        expr = self.stage1(m, j, x, channels, tc)
        r = Signal(expr.shape(), name=f"stage1_{j}")
        with m.If(advance):
            m.d.sync += r.eq(expr)
        return r

    def stage2(self, m: Module, j: int, r: Value) -> Value:
        """Lane ``j``'s output (an ``out_shape`` value) from the first-stage register ``r``."""
        raise NotImplementedError

    def prepare(self, m: Module) -> None:
        """Add what the lanes share (e.g. a memory) to ``m`` before the lanes are built."""

    def elaborate(self, platform):
        m = Module()
        self.prepare(m)
        n, b = self.in_ept, self.in_shape.width
        period, tables = channel_tables(self.channel_of, n)
        res = stream.Signature(transfer_shape(self.out_shape, n)).create()
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
            r = self.stage1_register(m, j, x, tables[j], tc, advance)
            y = Signal(self.out_shape, name=f"y{j}")
            m.d.comb += y.eq(self.stage2(m, j, r))
            outs.append(y)
        with m.If(advance):
            m.d.sync += [v1.eq(self.i.valid), res.valid.eq(v1), res.payload.eq(Cat(*outs))]
        out = P.skid_buffer(m, "skid", res, transfer_shape(self.out_shape, n))
        wiring.connect(m, out, wiring.flipped(self.o))
        return m


class RequantUnit(ElementwiseUnit):
    """Elementwise Requant / ChannelRequant (a requant that does not follow a dense layer).

    Stages: ``x * multiplier`` register, round/saturate register, skid buffer. Per-channel
    multipliers (a ChannelRequant, see :func:`~softfloor.hw.rtl.mvu.requant_params`) come from
    ``channel_of``.
    """

    def __init__(self, requant, in_type: CodeType, *, elements: int,
                 elements_per_transfer: int = 1, channel_of=None):
        self.requant = requant
        super().__init__(requant.name, in_type, requant.out_type(in_type), elements=elements,
                         elements_per_transfer=elements_per_transfer, channel_of=channel_of)
        rq = requant
        self.mults, self.shift = requant_params(
            rq, rq.channels if isinstance(rq, ChannelRequant) else max(self.channel_of) + 1)

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


class ThresholdUnit(ElementwiseUnit):
    """Elementwise :class:`~softfloor.intmodel.MultiThreshold`: ``T`` comparisons register,
    count register, skid buffer. A single row of thresholds is shared by every element."""

    def __init__(self, layer, in_type: CodeType, *, elements: int,
                 elements_per_transfer: int = 1, channel_of=None):
        if layer.thresholds.shape[0] == 1:
            channel_of = [0] * positive_int("elements", elements)
        self.layer = layer
        super().__init__(layer.name, in_type, layer.out_type(in_type), elements=elements,
                         elements_per_transfer=elements_per_transfer, channel_of=channel_of)
        rows = layer.thresholds.shape[0]
        if max(self.channel_of) >= rows:
            raise ValueError(f"{layer.name}: channel_of must give one of {rows} channels for "
                             f"each of the {self.elements} elements")

    def stage1(self, m, j, x, channels, tc):
        """``T`` comparisons ``x >= threshold[c][t]`` (thresholds are constants or a mux)."""
        thr = self.layer.thresholds
        tshape = signed(max(int(abs(thr).max()).bit_length() + 1, self.in_shape.width + 1))
        return Cat(*[x >= table_value(m, [int(thr[c, s]) for c in channels], tc, tshape,
                                      f"thr{j}_{s}") for s in range(self.layer.steps)])

    def stage2(self, m, j, r):
        """``out_bias + popcount``."""
        return sum(r[s] for s in range(self.layer.steps)) + self.layer.out_bias


class LutUnit(ElementwiseUnit):
    """Elementwise :class:`~softfloor.intmodel.Lut`: ``y = table[x - in_lo]`` on every lane.

    Only the entries of the input codes ``in_type.lo .. in_type.hi`` are built (the codes the
    previous layer can produce). ``memory="logic"``: each lane indexes a constant (a multiplexer
    of constants), registered; ``memory="rom"``: one memory with a synchronous read port per
    lane (its data register is the first stage; Yosys maps it to block RAM when that is
    cheaper). Then a register and the skid buffer, like every elementwise unit.
    """

    def __init__(self, layer, in_type: CodeType, *, elements: int,
                 elements_per_transfer: int = 1, memory: str = "logic"):
        if memory not in LUT_MEMORIES:
            raise ValueError(f"{layer.name}: memory must be one of {LUT_MEMORIES}, got "
                             f"{memory!r}")
        self.layer, self.memory = layer, memory
        super().__init__(layer.name, in_type, layer.out_type(in_type), elements=elements,
                         elements_per_transfer=elements_per_transfer,
                         channel_of=[0] * positive_int("elements", elements))
        lo = int(in_type.lo) - int(layer.in_lo)
        self.entries = [int(v) for v in layer.table[lo:lo + in_type.hi - in_type.lo + 1]]
        self.index_bits = max(1, (len(self.entries) - 1).bit_length())
        self.rom = None

    def _index(self, x: Value) -> Value:
        return (x - self.in_type.lo).as_unsigned()[:self.index_bits]

    def stage1(self, m, j, x, channels, tc):
        return table_value(m, self.entries, self._index(x), self.out_shape, f"entry{j}")

    def prepare(self, m):
        if self.memory == "rom":
            w = self.out_shape.width
            m.submodules.rom = self.rom = Memory(shape=unsigned(w), depth=len(self.entries),
                                                 init=[v & ((1 << w) - 1) for v in self.entries])

    def stage1_register(self, m, j, x, channels, tc, advance):
        if self.memory == "logic":
            return super().stage1_register(m, j, x, channels, tc, advance)
        port = self.rom.read_port()
        m.d.comb += [port.addr.eq(self._index(x)), port.en.eq(advance)]
        return port.data.as_signed() if self.out_shape.signed else port.data

    def stage2(self, m, j, r):
        return r
