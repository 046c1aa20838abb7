"""Width conversion between AXI4-Stream beats and one-element-per-transfer internal streams.

Beat layout (both directions): element ``i`` of a beat occupies bits ``[i*b, (i+1)*b)`` of
``data`` (``b`` = element bits); a sample is ``beats_per_sample`` beats; the last beat of a sample
may carry fewer elements, its unused high bits are zero on output and ignored on input.

Framing is by count. :class:`BeatUnpacker` ignores ``last`` on its input (a sample is always
``beats_per_sample`` beats); :class:`BeatPacker` drives ``last`` on the final beat of every sample.
"""
from __future__ import annotations

import math

from amaranth.hdl import Cat, Module, Mux, Shape, Signal, Value, signed, unsigned
from amaranth.lib import data
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from softfloor import arith

__all__ = ["BeatLayout", "beat_shape", "transfer_shape", "BeatUnpacker", "BeatPacker"]


def beat_shape(tdata_width: int) -> data.StructLayout:
    """Payload of a beat stream: ``data`` (``tdata_width`` bits) and ``last``."""
    return data.StructLayout({"data": unsigned(tdata_width), "last": 1})


def _pos_int(name, v):
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return v


class BeatLayout:
    """Geometry of one stream direction.

    Parameters
    ----------
    element_shape : shape-like
        Shape of one element inside the beat (its width is ``element_bits``).
    elements : int
        Elements per sample.
    elements_per_beat : int
    tdata_width : int or None
        Default: the smallest whole number of bytes holding ``elements_per_beat`` elements.
        A beat narrower than one element (``elements_per_beat = 1``) splits each element over
        ``beats_per_element = ceil(element_bits / tdata_width)`` beats, least significant
        part first (the two's complement code, zero above ``element_bits`` in the last part).
    """

    def __init__(self, element_shape, *, elements: int, elements_per_beat: int,
                 tdata_width: int | None = None):
        self.element_shape = Shape.cast(element_shape)
        self.element_bits = self.element_shape.width
        self.signed = self.element_shape.signed
        self.elements = _pos_int("elements", elements)
        self.elements_per_beat = _pos_int("elements_per_beat", elements_per_beat)
        need = self.elements_per_beat * self.element_bits
        if tdata_width is None:
            tdata_width = 8 * math.ceil(need / 8)
        _pos_int("tdata_width", tdata_width)
        split = self.elements_per_beat == 1 and tdata_width < need
        if tdata_width % 8 or (tdata_width < need and not split):
            raise ValueError(f"tdata_width {tdata_width} must be a whole number of bytes holding "
                             f"{self.elements_per_beat} x {self.element_bits}-bit elements (or, "
                             f"with one element per beat, a part of one)")
        self.tdata_width = tdata_width
        #: Beats carrying one element (> 1 only when the beat is narrower than an element).
        self.beats_per_element = math.ceil(self.element_bits / tdata_width) if split else 1
        self.beats_per_sample = (math.ceil(self.elements / self.elements_per_beat)
                                 * self.beats_per_element)
        self.last_beat_elements = (1 if split else self.elements
                                   - (self.beats_per_sample - 1) * elements_per_beat)

    @classmethod
    def from_dict(cls, port: dict) -> "BeatLayout":
        """The layout a manifest's ``input``/``output`` entry describes (inverse of to_dict)."""
        shape = (signed if port["signed"] else unsigned)(port["element_bits"])
        return cls(shape, elements=port["elements"], elements_per_beat=port["elements_per_beat"],
                   tdata_width=port.get("tdata_width"))

    def to_dict(self) -> dict:
        return {"tdata_width": self.tdata_width, "element_bits": self.element_bits,
                "signed": self.signed, "elements_per_beat": self.elements_per_beat,
                "beats_per_sample": self.beats_per_sample, "elements": self.elements,
                "beats_per_element": self.beats_per_element}

    # numpy faces -----------------------------------------------------------------------------
    def pack(self, sample) -> list[tuple[int, int]]:
        """One sample's element codes -> list of ``(tdata, last)`` beats (two's complement)."""
        sample = [int(v) for v in sample]
        if len(sample) != self.elements:
            raise ValueError(f"expected {self.elements} elements, got {len(sample)}")
        mask = (1 << self.element_bits) - 1
        beats = []
        if self.beats_per_element > 1:
            T, k = self.tdata_width, self.beats_per_element
            for e, v in enumerate(sample):
                for j in range(k):
                    beats.append((((v & mask) >> (j * T)) & ((1 << T) - 1),
                                  int(e == self.elements - 1 and j == k - 1)))
            return beats
        for k in range(self.beats_per_sample):
            chunk = sample[k * self.elements_per_beat:(k + 1) * self.elements_per_beat]
            word = 0
            for i, v in enumerate(chunk):
                word |= (v & mask) << (i * self.element_bits)
            beats.append((word, int(k == self.beats_per_sample - 1)))
        return beats

    def unpack(self, beats) -> list[int]:
        """``tdata`` words of one sample -> element codes (sign-extended when signed)."""
        out = []
        if self.beats_per_element > 1:
            T, k = self.tdata_width, self.beats_per_element
            beats = [int(w) for w in beats]
            for e in range(len(beats) // k):
                v = sum(beats[e * k + j] << (j * T) for j in range(k))
                out.append(arith.wrap(v, self.element_bits, self.signed))
            return out
        for k, word in enumerate(beats):
            n = self.last_beat_elements if k == self.beats_per_sample - 1 else self.elements_per_beat
            for i in range(n):
                out.append(arith.wrap(int(word) >> (i * self.element_bits), self.element_bits,
                                      self.signed))
        return out


def transfer_shape(element_shape, n: int) -> Shape:
    """Payload of an internal stream of ``n`` elements per transfer (element ``j`` at bits
    ``[j*b, (j+1)*b)``): the element's own shape when ``n == 1``, else ``unsigned(n*b)``."""
    element_shape = Shape.cast(element_shape)
    return element_shape if n == 1 else unsigned(n * element_shape.width)


def check_elements_per_transfer(layout: BeatLayout, n: int, what: str) -> int:
    """``n`` must divide the beat's elements and the last beat's elements."""
    _pos_int(f"{what} elements_per_transfer", n)
    if layout.elements_per_beat % n or layout.last_beat_elements % n:
        raise ValueError(f"{what}: {n} elements per transfer must divide the "
                         f"{layout.elements_per_beat} elements per beat and the "
                         f"{layout.last_beat_elements} of the last beat")
    return n


class BeatUnpacker(wiring.Component):
    """Beats in, ``elements_per_transfer`` elements per transfer out (``tdata`` -> elements).

    ``i.ready`` is high when the beat register is empty or its last transfer leaves this cycle,
    so a new beat is taken without a bubble. ``i.payload.last`` is ignored (framing by count).

    Members
    -------
    i : ``In(stream.Signature(beat_shape(tdata_width)))``
    o : ``Out(stream.Signature(transfer_shape(element_shape, elements_per_transfer)))``
    """

    def __init__(self, layout: BeatLayout, elements_per_transfer: int = 1):
        if not isinstance(layout, BeatLayout):
            raise TypeError(f"layout must be a BeatLayout, got {layout!r}")
        self.layout = layout
        if layout.beats_per_element > 1:
            raise ValueError(f"BeatUnpacker: {layout.element_bits}-bit elements do not fit a "
                             f"{layout.tdata_width}-bit input beat (only the output splits "
                             f"elements over beats)")
        self.elements_per_transfer = check_elements_per_transfer(
            layout, elements_per_transfer, "BeatUnpacker")
        super().__init__({"i": In(stream.Signature(beat_shape(layout.tdata_width))),
                          "o": Out(stream.Signature(transfer_shape(layout.element_shape,
                                                                   elements_per_transfer)))})

    def elaborate(self, platform):
        m = Module()
        L = self.layout
        b, epb, k = L.element_bits, L.elements_per_beat, self.elements_per_transfer
        buf = Signal(epb * b)
        n = Signal(range(epb // k + 1))             # transfers left in buf
        beat = Signal(range(L.beats_per_sample))    # index of the next beat in the sample
        take = Signal()
        m.d.comb += [
            self.o.valid.eq(n != 0),
            self.o.payload.eq(buf[:k * b]),
            self.i.ready.eq((n == 0) | ((n == 1) & self.o.ready)),
            take.eq(self.i.valid & self.i.ready),
        ]
        with m.If(take):
            m.d.sync += buf.eq(self.i.payload.data[:epb * b])
            with m.If(beat == L.beats_per_sample - 1):
                m.d.sync += [beat.eq(0), n.eq(L.last_beat_elements // k)]
            with m.Else():
                m.d.sync += [beat.eq(beat + 1), n.eq(epb // k)]
        with m.Elif(self.o.valid & self.o.ready):
            m.d.sync += [buf.eq(buf >> (k * b)), n.eq(n - 1)]
        return m


class BeatPacker(wiring.Component):
    """``elements_per_transfer`` elements per transfer in, beats out (elements -> ``tdata``).

    Elements are sign- or zero-extended (per the input shape) to ``element_bits``; ``last`` is set
    on the final beat of each sample; unused high bits of a partial beat are zero.

    Members
    -------
    i : ``In(stream.Signature(transfer_shape(in_shape, elements_per_transfer)))``
    o : ``Out(stream.Signature(beat_shape(tdata_width)))``
    """

    def __init__(self, layout: BeatLayout, in_shape, elements_per_transfer: int = 1):
        if not isinstance(layout, BeatLayout):
            raise TypeError(f"layout must be a BeatLayout, got {layout!r}")
        self.layout = layout
        self.in_shape = Shape.cast(in_shape)
        if self.in_shape.width > layout.element_bits:
            raise ValueError(f"{self.in_shape!r} is wider than {layout.element_bits}-bit elements")
        self.elements_per_transfer = check_elements_per_transfer(
            layout, elements_per_transfer, "BeatPacker")
        super().__init__({"i": In(stream.Signature(transfer_shape(self.in_shape,
                                                                  elements_per_transfer))),
                          "o": Out(stream.Signature(beat_shape(layout.tdata_width)))})

    def elaborate(self, platform):
        m = Module()
        L = self.layout
        if L.beats_per_element > 1:
            return self._elaborate_split(m)
        b, n = L.element_bits, self.elements_per_transfer
        epb = L.elements_per_beat // n              # slots of n elements per beat
        wi = self.in_shape.width
        raw = Value.cast(self.i.payload)
        parts = []
        for j in range(n):                          # sign/zero extension of each element
            e = Signal(L.element_shape, name=f"elem{j}")
            x = raw[j * wi:(j + 1) * wi]
            m.d.comb += e.eq(x.as_signed() if self.in_shape.signed else x)
            parts.append(e)
        elem = Cat(*parts)
        b = b * n
        k = Signal(range(epb))                      # slot of the next transfer in the beat
        beat = Signal(range(L.beats_per_sample))
        word = Signal(L.tdata_width)
        m.d.comb += [self.o.payload.data.eq(word),
                     self.i.ready.eq(~self.o.valid | self.o.ready)]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(self.i.valid & self.i.ready):
            for s in range(epb):
                with m.If(k == s):
                    if s == 0:
                        m.d.sync += word.eq(elem[:b])   # clears the other slots
                    else:
                        m.d.sync += word[s * b:(s + 1) * b].eq(elem)
            last_beat = beat == L.beats_per_sample - 1
            beat_done = Signal()
            m.d.comb += beat_done.eq(Mux(last_beat, k == L.last_beat_elements // n - 1, k == epb - 1))
            with m.If(beat_done):
                m.d.sync += [k.eq(0), self.o.valid.eq(1), self.o.payload.last.eq(last_beat),
                             beat.eq(Mux(last_beat, 0, beat + 1))]
            with m.Else():
                m.d.sync += k.eq(k + 1)
        return m

    def _elaborate_split(self, m):
        """One element over ``beats_per_element`` beats: load it (extended to element_bits),
        shift out ``tdata_width`` bits per beat. An element every ``beats_per_element`` cycles,
        no bubble between elements; ``last`` on the final part of the sample's last element."""
        L = self.layout
        T, k = L.tdata_width, L.beats_per_element
        x = Value.cast(self.i.payload)
        elem = Signal(L.element_shape)
        m.d.comb += elem.eq(x.as_signed() if self.in_shape.signed else x)
        word = Signal(k * T)
        part = Signal(range(k))
        elem_no = Signal(range(L.elements))
        last_elem = Signal()
        leaving = Signal()
        m.d.comb += [self.o.payload.data.eq(word[:T]),
                     leaving.eq(self.o.valid & self.o.ready),
                     self.i.ready.eq(~self.o.valid | (leaving & (part == k - 1)))]
        with m.If(leaving):
            m.d.sync += [word.eq(word >> T), part.eq(part + 1),
                         self.o.payload.last.eq(last_elem & (part == k - 2))]
            with m.If(part == k - 1):
                m.d.sync += [self.o.valid.eq(0), part.eq(0)]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [word.eq(elem.as_unsigned()), part.eq(0), self.o.valid.eq(1),
                         self.o.payload.last.eq(0),
                         last_elem.eq(elem_no == L.elements - 1),
                         elem_no.eq(Mux(elem_no == L.elements - 1, 0, elem_no + 1))]
        return m
