"""The host link: a UART speaking :mod:`softfloor.protocol` in front of the accelerator.

::

    uart_rx ─► UARTRx ─► FrameReceiver ─► sample buffer ─► Feeder ─► s_axis ┐
                               │ (reply tokens, in order)                  core (softfloor_top)
    uart_tx ◄─ UARTTx ◄─ SlipEncoder ◄─ FrameSender ◄────────────── m_axis ┘

:class:`LinkTop` is the whole board logic but the clock (PLL) and pins: ports ``uart_rx``,
``uart_tx``, ``busy`` (a sample is in the core) and ``error`` (the last reply was an ERROR),
plus ``clk``/``rst`` of the ``sync`` domain. It depends on the core only through its port
contract (``s_axis_*``/``m_axis_*``, ``clk``, ``rst``; see :mod:`softfloor.hw.top`) and the beat
layouts of the manifest, carried here by a :class:`~softfloor.protocol.LinkInfo`.

A request's sample is buffered whole and checked (length, CRC) before any beat enters the core,
so a broken or malformed frame never disturbs the accelerator; its reply is an ERROR frame.
"""
from __future__ import annotations

from amaranth.hdl import Array, Cat, ClockSignal, Const, Instance, Module, Mux, ResetSignal, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from softfloor import protocol as proto
from softfloor.hw.uart import UARTRx, UARTTx, check_divisor, rx_byte_shape

__all__ = ["LinkTop", "SlipEncoder", "FrameReceiver", "FrameSender", "Feeder", "TokenQueue",
           "crc8_next",
           "symbol_shape", "CORE_PORTS"]

#: The accelerator's ports the link drives or reads (the SoftfloorTop contract).
CORE_PORTS = ("s_axis_tdata", "s_axis_tvalid", "s_axis_tlast", "s_axis_tready",
              "m_axis_tdata", "m_axis_tvalid", "m_axis_tlast", "m_axis_tready")

#: A byte of a frame on its way out, or a frame delimiter (END).
symbol_shape = data.StructLayout({"data": 8, "delim": 1})

#: Reply kinds queued by the receiver for the sender.
K_RESULT, K_INFO, K_ERROR = 0, 1, 2
token_shape = data.StructLayout({"kind": 2, "code": 3, "type": 8})


def _crc8_matrix() -> list[list[int]]:
    """CRC-8 of one byte is linear in ``crc ^ byte``: output bit ``i`` is the XOR of the input
    bits listed in row ``i`` (derived from :func:`softfloor.protocol.crc8` on unit vectors)."""
    cols = [proto.crc8(bytes([1 << j])) for j in range(8)]
    return [[j for j in range(8) if (cols[j] >> i) & 1] for i in range(8)]


def crc8_next(crc, byte):
    """Amaranth expression of :func:`softfloor.protocol.crc8` advanced by one byte (an XOR
    network: one small XOR per output bit)."""
    c = crc ^ byte
    bits = []
    for row in _crc8_matrix():
        v = c[row[0]]
        for j in row[1:]:
            v = v ^ c[j]
        bits.append(v)
    return Cat(*bits)


class SlipEncoder(wiring.Component):
    """Symbols (bytes and delimiters) -> escaped bytes (SLIP, RFC 1055)."""

    def __init__(self):
        super().__init__({"i": In(stream.Signature(symbol_shape)),
                          "o": Out(stream.Signature(8))})

    def elaborate(self, platform):
        m = Module()
        d, delim = self.i.payload.data, self.i.payload.delim
        special = ~delim & ((d == proto.END) | (d == proto.ESC))
        code = Signal(8)
        with m.FSM():
            with m.State("PASS"):
                m.d.comb += [self.o.valid.eq(self.i.valid),
                             self.o.payload.eq(Mux(delim, proto.END, Mux(special, proto.ESC, d))),
                             self.i.ready.eq(self.o.ready & ~special)]
                with m.If(self.i.valid & self.o.ready & special):
                    m.d.sync += code.eq(Mux(d == proto.END, proto.ESC_END, proto.ESC_ESC))
                    m.next = "SECOND"
            with m.State("SECOND"):
                m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(code),
                             self.i.ready.eq(self.o.ready)]
                with m.If(self.o.ready):
                    m.next = "PASS"
        return m


class FrameReceiver(wiring.Component):
    """UART bytes -> checked requests: writes an INFER sample into the buffer and queues one
    reply token per non-empty frame (see :class:`softfloor.protocol.DeviceModel`, whose
    :meth:`~softfloor.protocol.DeviceModel.check` order it follows).

    ``start`` pulses when a good INFER frame ended (the buffer holds its sample); ``busy`` (in)
    says the feeder is still reading the buffer, so a sample arriving then is refused (BUSY).
    """

    def __init__(self, sample_bytes: int):
        self.sample_bytes = sample_bytes
        super().__init__({
            "i": In(stream.Signature(rx_byte_shape, always_ready=True)),
            "token": Out(stream.Signature(token_shape)),
            "wr_addr": Out(range(max(2, sample_bytes))), "wr_data": Out(8), "wr_en": Out(1),
            "start": Out(1), "busy": In(1)})

    def elaborate(self, platform):
        m = Module()
        n = self.sample_bytes
        limit = n + 3                                   # counts saturate past any valid length
        count = Signal(range(limit + 1))
        crc = Signal(8)
        type_ = Signal(8)
        esc, bad_esc, ferr, busy_seen = Signal(), Signal(), Signal(), Signal()
        b = self.i.payload.data
        byte = Signal(8)
        got = Signal()                                  # a body byte this cycle (unescaped)
        m.d.comb += self.start.eq(0)
        m.d.sync += self.token.valid.eq(self.token.valid & ~self.token.ready)

        with m.If(self.i.valid):
            with m.If(self.i.payload.error):
                m.d.sync += ferr.eq(1)
            with m.Elif(b == proto.END):
                with m.If((count != 0) | bad_esc | ferr):
                    self._finish(m, count, crc, type_, bad_esc, ferr, busy_seen)
                m.d.sync += [count.eq(0), crc.eq(0), esc.eq(0), bad_esc.eq(0), ferr.eq(0),
                             busy_seen.eq(0)]
            with m.Elif(esc):
                m.d.sync += esc.eq(0)
                with m.If(b == proto.ESC_END):
                    m.d.comb += [byte.eq(proto.END), got.eq(1)]
                with m.Elif(b == proto.ESC_ESC):
                    m.d.comb += [byte.eq(proto.ESC), got.eq(1)]
                with m.Else():
                    m.d.sync += bad_esc.eq(1)
            with m.Elif(b == proto.ESC):
                m.d.sync += esc.eq(1)
            with m.Else():
                m.d.comb += [byte.eq(b), got.eq(1)]

        with m.If(got):
            m.d.sync += crc.eq(crc8_next(crc, byte))
            with m.If(count != limit):
                m.d.sync += count.eq(count + 1)
            with m.If(count == 0):
                m.d.sync += type_.eq(byte)
            with m.Elif(count <= n):
                with m.If(self.busy):
                    m.d.sync += busy_seen.eq(1)
                with m.Else():
                    m.d.comb += [self.wr_en.eq(1), self.wr_addr.eq(count - 1),
                                 self.wr_data.eq(byte)]
        return m

    def _finish(self, m, count, crc, type_, bad_esc, ferr, busy_seen):
        n = self.sample_bytes
        code = Signal(3)
        infer, info = type_ == proto.INFER, type_ == proto.INFO
        with m.If(ferr):
            m.d.comb += code.eq(proto.E_UART)
        with m.Elif(bad_esc):
            m.d.comb += code.eq(proto.E_ESCAPE)
        with m.Elif(count < 2):
            m.d.comb += code.eq(proto.E_SHORT)
        with m.Elif(crc != 0):
            m.d.comb += code.eq(proto.E_CRC)
        with m.Elif(~infer & ~info):
            m.d.comb += code.eq(proto.E_TYPE)
        with m.Elif(count != Mux(infer, n + 2, 2)):
            m.d.comb += code.eq(proto.E_LENGTH)
        with m.Elif(infer & busy_seen):
            m.d.comb += code.eq(proto.E_BUSY)
        # A full reply queue drops the reply (at most MAX_IN_FLIGHT requests may be in flight).
        with m.If(~self.token.valid | self.token.ready):
            m.d.sync += [self.token.valid.eq(1), self.token.payload.code.eq(code),
                         self.token.payload.type.eq(Mux(count == 0, 0, type_)),
                         self.token.payload.kind.eq(Mux(code != 0, K_ERROR,
                                                        Mux(info, K_INFO, K_RESULT)))]
            m.d.comb += self.start.eq((code == 0) & infer)


class Feeder(wiring.Component):
    """Buffered sample -> ``s_axis`` beats (``beat_bytes`` bytes each, little endian)."""

    def __init__(self, port: proto.PortInfo):
        self.port = port
        bb = port.beat_bytes
        super().__init__({
            "start": In(1), "busy": Out(1),
            "rd_addr": Out(range(max(2, port.sample_bytes))), "rd_data": In(8),
            "tdata": Out(port.tdata_width), "tvalid": Out(1), "tlast": Out(1), "tready": In(1)})
        self._bb = bb

    def elaborate(self, platform):
        m = Module()
        p, bb = self.port, self._bb
        idx = Signal(range(p.sample_bytes + 1))
        j = Signal(range(bb + 1))
        beat = Signal(8 * bb)
        nbeat = Signal(range(p.beats_per_sample + 1))
        m.d.comb += [self.rd_addr.eq(idx), self.tdata.eq(beat[:p.tdata_width]),
                     self.tlast.eq(nbeat == p.beats_per_sample - 1)]
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [idx.eq(0), j.eq(0), nbeat.eq(0)]
                    m.next = "ADDR"
            with m.State("ADDR"):                      # rd_addr = idx; the byte comes next cycle
                m.d.comb += self.busy.eq(1)
                m.next = "DATA"
            with m.State("DATA"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += [beat.word_select(j, 8).eq(self.rd_data), idx.eq(idx + 1),
                             j.eq(j + 1)]
                m.next = "SEND" if bb == 1 else "ADDR"
                if bb > 1:
                    with m.If(j == bb - 1):
                        m.next = "SEND"
            with m.State("SEND"):
                m.d.comb += [self.busy.eq(1), self.tvalid.eq(1)]
                with m.If(self.tready):
                    m.d.sync += [nbeat.eq(nbeat + 1), j.eq(0)]
                    with m.If(nbeat == p.beats_per_sample - 1):
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "ADDR"
        return m


class FrameSender(wiring.Component):
    """Reply tokens -> frames: RESULT (the core's output beats), INFO (a constant block) or
    ERROR (code, request TYPE), each ``END TYPE payload CRC END`` as symbols for the
    :class:`SlipEncoder`."""

    def __init__(self, port: proto.PortInfo, info: bytes):
        self.port, self.info = port, bytes(info)
        super().__init__({
            "token": In(stream.Signature(token_shape)),
            "o": Out(stream.Signature(symbol_shape)),
            "tdata": In(port.tdata_width), "tvalid": In(1), "tready": Out(1)})

    def elaborate(self, platform):
        m = Module()
        p, bb = self.port, self.port.beat_bytes
        tok = Signal(token_shape)
        crc = Signal(8)
        idx = Signal(range(max(len(self.info), p.sample_bytes, 2) + 1))
        rom = Array(Const(v, 8) for v in self.info)
        beat = Signal(8 * bb)
        m.d.comb += beat.eq(self.tdata)
        j = Signal(range(bb))
        byte = Signal(8)
        send = Signal()                                 # emit ``byte`` as a body byte (CRC'd)
        m.d.comb += [self.o.payload.data.eq(byte), self.o.valid.eq(send)]
        with m.If(send & self.o.ready):
            m.d.sync += crc.eq(crc8_next(crc, byte))

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.token.ready.eq(1)
                with m.If(self.token.valid):
                    m.d.sync += [tok.eq(self.token.payload), crc.eq(0), idx.eq(0), j.eq(0)]
                    m.next = "OPEN"
            with m.State("OPEN"):
                m.d.comb += [self.o.valid.eq(1), self.o.payload.delim.eq(1)]
                with m.If(self.o.ready):
                    m.next = "TYPE"
            with m.State("TYPE"):
                m.d.comb += [send.eq(1), byte.eq(Array([Const(proto.RESULT, 8),
                                                        Const(proto.INFO_REPLY, 8),
                                                        Const(proto.ERROR, 8)])[tok.kind])]
                with m.If(self.o.ready):
                    with m.Switch(tok.kind):
                        with m.Case(K_RESULT):
                            m.next = "RESULT"
                        with m.Case(K_INFO):
                            m.next = "INFO"
                        with m.Default():
                            m.next = "ERROR"
            with m.State("RESULT"):
                m.d.comb += [send.eq(self.tvalid), byte.eq(beat.word_select(j, 8))]
                with m.If(self.tvalid & self.o.ready):
                    m.d.sync += j.eq(j + 1)
                    with m.If(j == bb - 1):
                        m.d.comb += self.tready.eq(1)
                        m.d.sync += [j.eq(0), idx.eq(idx + 1)]
                        with m.If(idx == p.beats_per_sample - 1):
                            m.next = "CRC"
            with m.State("INFO"):
                m.d.comb += [send.eq(1), byte.eq(rom[idx])]
                with m.If(self.o.ready):
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(idx == len(self.info) - 1):
                        m.next = "CRC"
            with m.State("ERROR"):
                m.d.comb += [send.eq(1), byte.eq(Mux(idx == 0, tok.code, tok.type))]
                with m.If(self.o.ready):
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(idx == 1):
                        m.next = "CRC"
            with m.State("CRC"):
                m.d.comb += [self.o.valid.eq(1), self.o.payload.data.eq(crc)]
                with m.If(self.o.ready):
                    m.next = "CLOSE"
            with m.State("CLOSE"):
                m.d.comb += [self.o.valid.eq(1), self.o.payload.delim.eq(1)]
                with m.If(self.o.ready):
                    m.next = "IDLE"
        return m


class TokenQueue(wiring.Component):
    """The reply tokens in order: a ring of ``depth`` registers (no memory, so no undefined
    read data on a 4-state simulator)."""

    def __init__(self, depth: int):
        self.depth = depth
        super().__init__({"i": In(stream.Signature(token_shape)),
                          "o": Out(stream.Signature(token_shape))})

    def elaborate(self, platform):
        m = Module()
        n = self.depth
        slots = Array(Signal(token_shape, name=f"slot{k}") for k in range(n))
        head, tail = Signal(range(n)), Signal(range(n))
        level = Signal(range(n + 1))
        push = self.i.valid & self.i.ready
        pop = self.o.valid & self.o.ready
        m.d.comb += [self.i.ready.eq(level != n), self.o.valid.eq(level != 0),
                     self.o.payload.eq(slots[head])]
        with m.If(push):
            m.d.sync += [slots[tail].eq(self.i.payload),
                         tail.eq(Mux(tail == n - 1, 0, tail + 1))]
        with m.If(pop):
            m.d.sync += head.eq(Mux(head == n - 1, 0, head + 1))
        m.d.sync += level.eq(level + push - pop)
        return m


class LinkTop(wiring.Component):
    """UART + frame protocol + the accelerator: the board top without its clock and pins.

    Parameters
    ----------
    info : LinkInfo
        What INFO replies (model hash, shapes) and the beat layouts of the core's ports.
    divisor : int
        Clock cycles per UART bit (:func:`softfloor.hw.uart.divisor_for`).
    core : str or wiring.Component
        The Verilog module name of the accelerator to instantiate (``"softfloor_top"``: its
        Verilog is read beside this one), or an Amaranth component with the ``s_axis_*`` /
        ``m_axis_*`` attributes (e.g. a :class:`~softfloor.hw.top.SoftfloorTop`, to simulate
        the link in Python).
    """

    def __init__(self, info: proto.LinkInfo, divisor: int, core="softfloor_top"):
        self.link_info, self.divisor, self.core = info, divisor, core
        self.info_bytes = proto.info_payload(info)
        check_divisor(divisor)
        super().__init__({"uart_rx": In(1, init=1), "uart_tx": Out(1, init=1),
                          "busy": Out(1), "error": Out(1)})

    def elaborate(self, platform):
        m = Module()
        info = self.link_info
        m.submodules.rx = rx = UARTRx(self.divisor)
        m.submodules.tx = tx = UARTTx(self.divisor)
        m.submodules.receiver = recv = FrameReceiver(info.input.sample_bytes)
        m.submodules.feeder = feed = Feeder(info.input)
        m.submodules.sender = send = FrameSender(info.output, self.info_bytes)
        m.submodules.slip = slip = SlipEncoder()
        m.submodules.tokens = tokens = TokenQueue(proto.MAX_IN_FLIGHT)
        m.submodules.buffer = buf = Memory(shape=8, depth=max(2, info.input.sample_bytes),
                                           init=[])
        wr = buf.write_port()
        rd = buf.read_port(transparent_for=())
        m.d.comb += [rx.rx.eq(self.uart_rx), self.uart_tx.eq(tx.tx)]
        wiring.connect(m, rx.o, recv.i)
        m.d.comb += [wr.addr.eq(recv.wr_addr), wr.data.eq(recv.wr_data), wr.en.eq(recv.wr_en),
                     rd.addr.eq(feed.rd_addr), feed.rd_data.eq(rd.data),
                     feed.start.eq(recv.start), recv.busy.eq(feed.busy | recv.start)]
        wiring.connect(m, recv.token, tokens.i)
        wiring.connect(m, tokens.o, send.token)
        wiring.connect(m, send.o, slip.i)
        wiring.connect(m, slip.o, tx.i)

        s = {name: Signal(info.input.tdata_width if name == "s_axis_tdata" else
                          info.output.tdata_width if name == "m_axis_tdata" else 1,
                          name=f"core_{name}") for name in CORE_PORTS}
        m.d.comb += [s["s_axis_tdata"].eq(feed.tdata), s["s_axis_tvalid"].eq(feed.tvalid),
                     s["s_axis_tlast"].eq(feed.tlast), feed.tready.eq(s["s_axis_tready"]),
                     send.tdata.eq(s["m_axis_tdata"]), send.tvalid.eq(s["m_axis_tvalid"]),
                     s["m_axis_tready"].eq(send.tready)]
        if isinstance(self.core, str):
            def port(name):
                return ("o_" if name in ("s_axis_tready", "m_axis_tdata", "m_axis_tvalid",
                                         "m_axis_tlast") else "i_") + name
            m.submodules.core = Instance(self.core, i_clk=ClockSignal(), i_rst=ResetSignal(),
                                         **{port(n): s[n] for n in CORE_PORTS})
        else:
            m.submodules.core = core = self.core
            for n in CORE_PORTS:
                if n in ("s_axis_tready", "m_axis_tdata", "m_axis_tvalid", "m_axis_tlast"):
                    m.d.comb += s[n].eq(getattr(core, n))
                else:
                    m.d.comb += getattr(core, n).eq(s[n])

        inflight = Signal(range(proto.MAX_IN_FLIGHT + 2))
        done = send.tready & (s["m_axis_tvalid"]) & s["m_axis_tlast"]
        m.d.sync += inflight.eq(inflight + recv.start - done)
        m.d.comb += self.busy.eq(inflight != 0)
        with m.If(recv.token.valid & recv.token.ready):
            m.d.sync += self.error.eq(recv.token.payload.kind == K_ERROR)
        return m
