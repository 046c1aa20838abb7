"""The host link's frame protocol: one definition for the board's RTL, the host driver and tests.

A board top (:mod:`softfloor.hw.link`) talks to a host over a UART (8 data bits, no parity, one
stop bit, least significant bit first). Bytes are grouped into frames with SLIP byte stuffing
(RFC 1055)::

    END  body (escaped)  END          END = 0xC0; inside the body 0xC0 -> 0xDB 0xDC,
                                      0xDB -> 0xDB 0xDD (ESC = 0xDB)
    body = TYPE  payload  CRC8        CRC8: polynomial 0x07, initial 0, over TYPE and payload

Requests (host -> board) and replies (board -> host), one reply per request, in order:

=========  ======  ============================  ============  ===============================
request    TYPE    payload                       reply TYPE    reply payload
=========  ======  ============================  ============  ===============================
INFER      0x01    one input sample: its         RESULT 0x81   the output sample: its
                   AXI4-Stream beats, each                      ``m_axis`` beats, each
                   ``ceil(tdata_width/8)`` bytes                ``ceil(tdata_width/8)`` bytes
                   little endian                                little endian (logits, or the
                                                                class index after an argmax)
INFO       0x02    none                          INFO 0x82     :func:`info_payload`: protocol
                                                                version, model hash, input and
                                                                output shapes and beat layouts
=========  ======  ============================  ============  ===============================

A request that cannot be served gets ``ERROR 0xE0`` with payload ``code, request TYPE`` (TYPE 0
when the frame had none): see :data:`ERRORS`. An empty frame (``END END``) is ignored: a host
sends END to resynchronise. A frame broken off mid-way (bytes lost, the host restarted) ends at
the next END -- the next frame's opening END -- and is answered with an error; the frame after it
is served normally. A broken frame never reaches the accelerator: the board buffers a sample and
streams it into the core only once its frame checked out.

At most :data:`MAX_IN_FLIGHT` requests may be outstanding (sent, reply not yet complete); the
driver (:mod:`softfloor.host`) keeps two in flight, so the UART's two directions overlap.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field

import numpy as np

from softfloor import provenance

__all__ = ["END", "ESC", "ESC_END", "ESC_ESC", "INFER", "INFO", "RESULT", "INFO_REPLY", "ERROR",
           "ERRORS", "VERSION", "MAX_IN_FLIGHT", "crc8", "slip_encode", "SlipDecoder",
           "frame", "request", "parse_body", "PortInfo", "LinkInfo", "info_payload",
           "parse_info", "model_hash", "beat_bytes", "sample_to_bytes", "bytes_to_sample",
           "DeviceModel", "ProtocolError"]

END, ESC, ESC_END, ESC_ESC = 0xC0, 0xDB, 0xDC, 0xDD
INFER, INFO = 0x01, 0x02
RESULT, INFO_REPLY, ERROR = 0x81, 0x82, 0xE0
VERSION = 1
#: Requests a host may have outstanding; the board's reply queue holds this many.
MAX_IN_FLIGHT = 4

#: Error codes of an ERROR reply, checked in this order (the first that applies is sent).
ERRORS = {
    1: "uart framing error (a stop bit was 0) inside the frame",
    2: "bad escape (ESC followed by neither ESC_END nor ESC_ESC)",
    3: "frame too short (no TYPE and CRC)",
    4: "CRC mismatch",
    5: "unknown request TYPE",
    6: "wrong payload length for the request TYPE",
    7: "busy: the previous sample was still entering the core",
}
E_UART, E_ESCAPE, E_SHORT, E_CRC, E_TYPE, E_LENGTH, E_BUSY = range(1, 8)


class ProtocolError(RuntimeError):
    """A reply that breaks the protocol, or an ERROR reply."""


def crc8(data: bytes, crc: int = 0) -> int:
    """CRC-8, polynomial x^8 + x^2 + x + 1 (0x07), MSB first, no reflection, no final XOR.

    ``crc8(body) == 0`` for a body that ends with its own CRC.
    """
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def slip_encode(body: bytes) -> bytes:
    """``END + escaped body + END``."""
    out = bytearray([END])
    for b in body:
        if b == END:
            out += bytes([ESC, ESC_END])
        elif b == ESC:
            out += bytes([ESC, ESC_ESC])
        else:
            out.append(b)
    out.append(END)
    return bytes(out)


def frame(type_: int, payload: bytes = b"") -> bytes:
    """A whole frame on the wire: TYPE, payload and CRC, SLIP-encoded."""
    body = bytes([type_]) + bytes(payload)
    return slip_encode(body + bytes([crc8(body)]))


request = frame


@dataclass
class SlipDecoder:
    """Incremental SLIP decoder: :meth:`feed` bytes, get complete frame bodies.

    Each body is ``(bytes, bad_escape)``; empty frames are dropped. ``uart_error`` marks the
    frame being received as broken (the board's receiver does the same on a framing error).
    """
    buf: bytearray = field(default_factory=bytearray)
    esc: bool = False
    bad_escape: bool = False
    uart_error: bool = False

    def feed(self, data: bytes) -> list[tuple[bytes, bool, bool]]:
        """Complete frames as ``(body, bad_escape, uart_error)``."""
        frames = []
        for b in data:
            if b == END:
                if self.buf or self.bad_escape or self.uart_error:
                    frames.append((bytes(self.buf), self.bad_escape, self.uart_error))
                self.buf.clear()
                self.esc = self.bad_escape = self.uart_error = False
            elif self.esc:
                self.esc = False
                if b == ESC_END:
                    self.buf.append(END)
                elif b == ESC_ESC:
                    self.buf.append(ESC)
                else:
                    self.bad_escape = True
            elif b == ESC:
                self.esc = True
            else:
                self.buf.append(b)
        return frames


def parse_body(body: bytes) -> tuple[int, bytes]:
    """(TYPE, payload) of a frame body whose CRC checks; :class:`ProtocolError` otherwise."""
    if len(body) < 2:
        raise ProtocolError(f"frame of {len(body)} bytes: too short for TYPE and CRC")
    if crc8(body):
        raise ProtocolError(f"CRC mismatch in a {len(body)}-byte frame of TYPE "
                            f"0x{body[0]:02X}")
    return body[0], bytes(body[1:-1])


# ---------------------------------------------------------------------------------------------
# Sample <-> bytes: the beats of the core's AXI4-Stream ports, whole bytes per beat.

@dataclass(frozen=True)
class PortInfo:
    """One stream direction as the board describes it in its INFO reply."""
    shape: tuple[int, ...]
    element_bits: int
    signed: bool
    elements_per_beat: int
    tdata_width: int
    beats_per_sample: int

    @property
    def elements(self) -> int:
        return int(np.prod(self.shape))

    @property
    def beat_bytes(self) -> int:
        return beat_bytes(self.tdata_width)

    @property
    def sample_bytes(self) -> int:
        return self.beats_per_sample * self.beat_bytes

    def layout(self):
        """The :class:`~softfloor.hw.rtl.stream_io.BeatLayout` (the one definition of packing)."""
        from softfloor.hw.rtl.stream_io import BeatLayout
        return BeatLayout.from_dict({"element_bits": self.element_bits, "signed": self.signed,
                                     "elements": self.elements,
                                     "elements_per_beat": self.elements_per_beat,
                                     "tdata_width": self.tdata_width})

    @classmethod
    def from_manifest(cls, port: dict, shape) -> "PortInfo":
        return cls(tuple(int(d) for d in shape), port["element_bits"], bool(port["signed"]),
                   port["elements_per_beat"], port["tdata_width"], port["beats_per_sample"])


def beat_bytes(tdata_width: int) -> int:
    return (int(tdata_width) + 7) // 8


def sample_to_bytes(layout, sample) -> bytes:
    """One sample's codes -> its beats, each ``beat_bytes`` little-endian bytes."""
    n = beat_bytes(layout.tdata_width)
    return b"".join(int(word).to_bytes(n, "little") for word, _ in layout.pack(sample))


def bytes_to_sample(layout, data: bytes) -> list[int]:
    """Inverse of :func:`sample_to_bytes`."""
    n = beat_bytes(layout.tdata_width)
    if len(data) != n * layout.beats_per_sample:
        raise ProtocolError(f"expected {n * layout.beats_per_sample} bytes of a sample, got "
                            f"{len(data)}")
    words = [int.from_bytes(data[k:k + n], "little") for k in range(0, len(data), n)]
    return layout.unpack(words)


# ---------------------------------------------------------------------------------------------
# INFO

@dataclass(frozen=True)
class LinkInfo:
    """What an INFO reply says: which model the board runs and how to talk to it."""
    version: int
    model_hash: str             # 16 hex digits: the first 8 bytes of the model file's SHA-256
    input: PortInfo
    output: PortInfo
    output_kind: str            # "codes" (logits or other output codes) or "class" (argmax)
    clock_hz: int
    baud: int
    cycles_per_inference: int
    initiation_interval: int

    def to_dict(self) -> dict:
        from dataclasses import asdict
        return asdict(self)


_KINDS = ("codes", "class")


def _port_bytes(p: PortInfo) -> bytes:
    if len(p.shape) > 4:
        raise ValueError(f"shape {p.shape}: at most 4 dimensions")
    return (struct.pack("<BBBHH", p.element_bits, int(p.signed), p.elements_per_beat,
                        p.tdata_width, p.beats_per_sample)
            + bytes([len(p.shape)]) + b"".join(struct.pack("<H", d) for d in p.shape))


def info_payload(info: LinkInfo) -> bytes:
    """INFO reply payload (little endian)::

        u8 version, 8 bytes model hash, u8 output kind (0 codes, 1 class index),
        u32 clock Hz, u32 baud, u32 cycles per inference, u32 initiation interval,
        input port, output port; a port is u8 element bits, u8 signed, u8 elements per beat,
        u16 tdata width, u16 beats per sample, u8 ndim, ndim x u16 dims
    """
    return (struct.pack("<B8sBIIII", info.version, bytes.fromhex(info.model_hash),
                        _KINDS.index(info.output_kind), info.clock_hz, info.baud,
                        info.cycles_per_inference, info.initiation_interval)
            + _port_bytes(info.input) + _port_bytes(info.output))


def parse_info(payload: bytes) -> LinkInfo:
    try:
        v, h, kind, clk, baud, cpi, ii = struct.unpack_from("<B8sBIIII", payload)
        off = struct.calcsize("<B8sBIIII")
        ports = []
        for _ in range(2):
            eb, sg, epb, tw, bps = struct.unpack_from("<BBBHH", payload, off)
            off += struct.calcsize("<BBBHH")
            nd = payload[off]
            off += 1
            dims = struct.unpack_from(f"<{nd}H", payload, off)
            off += 2 * nd
            ports.append(PortInfo(tuple(dims), eb, bool(sg), epb, tw, bps))
    except (struct.error, IndexError):
        raise ProtocolError(f"INFO reply of {len(payload)} bytes is truncated") from None
    if off != len(payload):
        raise ProtocolError(f"INFO reply has {len(payload) - off} unexpected trailing bytes")
    if v != VERSION:
        raise ProtocolError(f"the board speaks protocol version {v}; this host speaks {VERSION}")
    return LinkInfo(v, h.hex(), ports[0], ports[1], _KINDS[kind] if kind < 2 else "codes",
                    clk, baud, cpi, ii)


def model_hash(model_file: str | os.PathLike) -> str:
    """First 8 bytes (16 hex digits) of the SHA-256 of the model file's bytes."""
    return provenance.sha256(model_file)[:16]


def link_info(manifest: dict, model, model_file, *, clock_hz: int, baud: int) -> LinkInfo:
    """The :class:`LinkInfo` a board top built from ``manifest`` and ``model`` reports."""
    kind = "class" if model.layers and getattr(model.layers[-1], "op", "") == "argmax" \
        else "codes"
    return LinkInfo(VERSION, model_hash(model_file),
                    PortInfo.from_manifest(manifest["input"], model.input.shape),
                    PortInfo.from_manifest(manifest["output"], model.output_shape),
                    kind, int(clock_hz), int(baud), int(manifest["cycles_per_inference"]),
                    int(manifest["initiation_interval"]))


# ---------------------------------------------------------------------------------------------
# The board's behaviour, in Python: the model the RTL is checked against.

class DeviceModel:
    """What a board top does with request bytes, as a function: bytes in -> reply bytes out.

    ``compute(codes) -> output codes`` runs one sample (e.g. :func:`softfloor.golden.run` on
    one row). ``uart_error()`` marks the frame being received as broken, as a framing error on
    the line does.
    """

    def __init__(self, info: LinkInfo, compute):
        self.info = info
        self.compute = compute
        self.dec = SlipDecoder()
        self.in_layout = info.input.layout()
        self.out_layout = info.output.layout()

    def uart_error(self) -> None:
        self.dec.uart_error = True

    def feed(self, data: bytes) -> bytes:
        out = b""
        for body, bad_escape, uart_error in self.dec.feed(data):
            out += self.reply(body, bad_escape, uart_error)
        return out

    def reply(self, body: bytes, bad_escape: bool = False, uart_error: bool = False) -> bytes:
        type_ = body[0] if body else 0
        code = self.check(body, bad_escape, uart_error)
        if code:
            return frame(ERROR, bytes([code, type_]))
        if type_ == INFO:
            return frame(INFO_REPLY, info_payload(self.info))
        codes = bytes_to_sample(self.in_layout, body[1:-1])
        out = np.asarray(self.compute(np.asarray(codes, dtype=np.int64))).reshape(-1)
        return frame(RESULT, sample_to_bytes(self.out_layout, out))

    def check(self, body: bytes, bad_escape: bool, uart_error: bool) -> int:
        """The error code of a frame (0: none), in :data:`ERRORS` order."""
        if uart_error:
            return E_UART
        if bad_escape:
            return E_ESCAPE
        if len(body) < 2:
            return E_SHORT
        if crc8(body):
            return E_CRC
        if body[0] not in (INFER, INFO):
            return E_TYPE
        want = self.info.input.sample_bytes if body[0] == INFER else 0
        if len(body) != want + 2:
            return E_LENGTH
        return 0
