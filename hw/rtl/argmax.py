"""Argmax unit: the index of the first maximum of each sample, one output element per sample.

::

    i (n lanes) ─► first max of the transfer (compare tree, reg) ─► running first max ─► index (reg) ─► skid ─► o

A sample is ``features`` elements arriving ``n`` per transfer. Each transfer's lanes reduce to
their first maximum (a tree that keeps the lower index unless the higher one is strictly
greater), registered with its index; the running maximum takes a transfer's candidate only if it
is strictly greater, so ties keep the earliest index -- :func:`softfloor.arith.argmax_first`,
the rule of the ``argmax`` op. After the last transfer of a sample the index leaves as one
unsigned element of ``max(1, ceil(log2(features)))`` bits. One transfer per cycle; the index
leaves :data:`ARGMAX_LATENCY` cycles after the sample's last transfer (output ready).
"""
from __future__ import annotations

from amaranth.hdl import Const, Module, Mux, Signal, Value, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from softfloor.intmodel import CodeType
from softfloor.hw.rtl import primitives as P
from softfloor.hw.rtl.stream_io import transfer_shape
from softfloor.hw.rtl.tables import positive_int

__all__ = ["ArgmaxUnit", "ARGMAX_LATENCY", "index_bits"]

#: Cycles from a sample's last input transfer to its index's output transfer: candidate
#: register, result register, skid buffer.
ARGMAX_LATENCY = 3


def index_bits(features: int) -> int:
    """Bits of a class index ``0 .. features-1`` (as the ``argmax`` op's output type)."""
    return max(1, (features - 1).bit_length())


class ArgmaxUnit(wiring.Component):
    """Index of the first maximum of ``features`` codes, per sample.

    Parameters
    ----------
    name : str
        The layer's name (for messages).
    in_type : CodeType
        Code type of the values compared.
    features : int
        Elements per sample.
    elements_per_transfer : int
        Input lanes (divides ``features``).

    Members
    -------
    i : ``In(stream.Signature(transfer_shape(in_shape, elements_per_transfer)))``
    o : ``Out(stream.Signature(unsigned(index_bits(features))))``
    """

    def __init__(self, name: str, in_type: CodeType, *, features: int,
                 elements_per_transfer: int = 1):
        features = positive_int("features", features)
        n = positive_int("elements_per_transfer", elements_per_transfer)
        if features % n:
            raise ValueError(f"{name}: elements_per_transfer={n} must divide the {features} "
                             f"features")
        self.name, self.in_type, self.features = name, in_type, features
        self.in_ept, self.out_ept = n, 1
        self.in_shape = P.code_shape(in_type.bits, in_type.signed)
        self.out_shape = unsigned(index_bits(features))
        super().__init__({"i": In(stream.Signature(transfer_shape(self.in_shape, n))),
                          "o": Out(stream.Signature(self.out_shape))})

    def elaborate(self, platform):
        m = Module()
        n, b = self.in_ept, self.in_shape.width
        transfers = self.features // n
        ishape = self.out_shape
        res = stream.Signature(ishape).create()
        advance, take = Signal(), Signal()
        m.d.comb += [advance.eq(~res.valid | res.ready), self.i.ready.eq(advance),
                     take.eq(self.i.valid & advance)]
        t = Signal(range(max(2, transfers)))
        if transfers > 1:
            with m.If(take):
                m.d.sync += t.eq(Mux(t == transfers - 1, 0, t + 1))

        # this transfer's first maximum: (value, index) pairs, the lower index unless the
        # higher one is strictly greater
        data = Value.cast(self.i.payload)
        pairs = []
        for j in range(n):
            x = data[j * b:(j + 1) * b]
            pairs.append((x.as_signed() if self.in_shape.signed else x,
                          (t * n + j)[:ishape.width] if transfers > 1 else Const(j, ishape)))
        while len(pairs) > 1:
            nxt = []
            for k in range(0, len(pairs), 2):
                if k + 1 == len(pairs):
                    nxt.append(pairs[k])
                    continue
                (va, ia), (vb, ib) = pairs[k], pairs[k + 1]
                right = vb > va
                nxt.append((Mux(right, vb, va), Mux(right, ib, ia)))
            pairs = nxt
        cand_v = Signal(self.in_shape, name="cand_value")
        cand_i = Signal(ishape, name="cand_index")
        cand_valid, cand_first, cand_last = Signal(), Signal(), Signal()
        with m.If(advance):
            m.d.sync += [cand_v.eq(pairs[0][0]), cand_i.eq(pairs[0][1]),
                         cand_valid.eq(self.i.valid), cand_first.eq(t == 0),
                         cand_last.eq(t == transfers - 1)]

        # running first maximum over the sample's transfers
        best_v = Signal(self.in_shape, name="best_value")
        best_i = Signal(ishape, name="best_index")
        new_v, new_i = Signal(self.in_shape), Signal(ishape)
        keep = Signal()
        m.d.comb += [keep.eq(~cand_first & ~(cand_v > best_v)),
                     new_v.eq(Mux(keep, best_v, cand_v)), new_i.eq(Mux(keep, best_i, cand_i))]
        with m.If(advance):
            m.d.sync += res.valid.eq(cand_valid & cand_last)
            with m.If(cand_valid):
                m.d.sync += [best_v.eq(new_v), best_i.eq(new_i), res.payload.eq(new_i)]
        out = P.skid_buffer(m, "skid", res, ishape)
        wiring.connect(m, out, wiring.flipped(self.o))
        return m
