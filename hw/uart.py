"""A UART (8 data bits, no parity, 1 stop bit, LSB first) with its line-level numpy face.

``divisor`` is clock cycles per bit (``round(clock_hz / baud)``, at least :data:`MIN_DIVISOR`).
The receiver samples the middle of each bit, ``divisor // 2`` cycles after the falling edge of
the start bit (through a two-flop synchronizer), so it tolerates a baud mismatch of about
``1 / (2 * 10)`` of a bit over a byte; :func:`divisor_for` refuses a clock whose nearest divisor
is more than :data:`MAX_BAUD_ERROR` off.

Numpy faces: :func:`line_levels` (bytes -> the line, one level per clock cycle, as
:class:`UARTTx` drives it) and :func:`decode_line` (the line -> bytes and framing errors, as
:class:`UARTRx` reads it).
"""
from __future__ import annotations

import numpy as np
from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["UARTRx", "UARTTx", "line_levels", "decode_line", "divisor_for", "check_divisor",
           "MIN_DIVISOR", "MAX_BAUD_ERROR", "rx_byte_shape"]

MIN_DIVISOR = 4
MAX_BAUD_ERROR = 0.02


def divisor_for(clock_hz: float, baud: int) -> int:
    """Clock cycles per bit for ``baud`` at ``clock_hz``; ValueError if too far off or too fast."""
    if baud <= 0:
        raise ValueError(f"baud rate must be positive, got {baud}")
    d = round(clock_hz / baud)
    if d < MIN_DIVISOR:
        raise ValueError(f"baud {baud} is too fast for a {clock_hz / 1e6:g} MHz clock: the UART "
                         f"needs at least {MIN_DIVISOR} clock cycles per bit")
    err = abs(clock_hz / d - baud) / baud
    if err > MAX_BAUD_ERROR:
        raise ValueError(f"baud {baud} at {clock_hz / 1e6:g} MHz: the nearest divisor {d} gives "
                         f"{clock_hz / d:.0f} baud, {100 * err:.1f}% off (at most "
                         f"{100 * MAX_BAUD_ERROR:g}%); choose another baud rate or clock")
    return d


def check_divisor(divisor) -> int:
    if isinstance(divisor, bool) or not isinstance(divisor, int) or divisor < MIN_DIVISOR:
        raise ValueError(f"divisor must be an integer >= {MIN_DIVISOR} (clock cycles per bit), "
                         f"got {divisor!r}")
    return divisor


# ---------------------------------------------------------------------------------------------
# numpy faces

def line_levels(data: bytes, divisor: int, *, idle: int = 0, gap: int = 0,
                stop_bits=None) -> np.ndarray:
    """Line level per clock cycle sending ``data`` (``idle`` cycles high first, ``gap`` idle
    cycles after each byte). ``stop_bits[k] = 0`` sends byte ``k`` with a broken stop bit."""
    divisor = check_divisor(divisor)
    bits = [1] * idle
    for k, b in enumerate(bytes(data)):
        stop = 1 if stop_bits is None else int(stop_bits[k])
        for bit in [0] + [(b >> i) & 1 for i in range(8)] + [stop]:
            bits += [bit] * divisor
        bits += [1] * gap
    return np.array(bits + [1], dtype=np.uint8)


def decode_line(levels, divisor: int) -> tuple[bytes, list[int]]:
    """Bytes a receiver reads from ``levels`` and the indices (into those bytes) of framing
    errors (stop bit 0: the byte is dropped, its index marks where). After a framing error the
    receiver waits for the line to go high before looking for a start bit again."""
    divisor = check_divisor(divisor)
    lv = np.asarray(levels)
    out, errors = bytearray(), []
    t = 0
    n = len(lv)
    while t < n:
        if lv[t]:
            t += 1
            continue
        mid = t + divisor // 2
        if mid >= n:
            break
        if lv[mid]:
            t = mid + 1             # a glitch, not a start bit
            continue
        samples = [mid + divisor * (i + 1) for i in range(9)]
        if samples[-1] >= n:
            break
        b = sum(int(lv[s]) << i for i, s in enumerate(samples[:8]))
        if lv[samples[8]]:
            out.append(b)
            t = samples[8] + 1
        else:
            errors.append(len(out))
            t = samples[8]
            while t < n and not lv[t]:
                t += 1
    return bytes(out), errors


# ---------------------------------------------------------------------------------------------
# Amaranth

#: Payload of the receiver's output: the byte and whether its stop bit was 0 (``data`` invalid).
rx_byte_shape = data.StructLayout({"data": 8, "error": 1})


class UARTRx(wiring.Component):
    """Serial line -> bytes. ``o`` is always ready (a UART cannot wait): one transfer per byte
    received, ``o.payload.error`` set on a framing error (stop bit 0; ``data`` then meaningless).
    """

    def __init__(self, divisor: int):
        self.divisor = check_divisor(divisor)
        super().__init__({"rx": In(1, init=1),
                          "o": Out(stream.Signature(rx_byte_shape, always_ready=True))})

    def elaborate(self, platform):
        m = Module()
        d = self.divisor
        sync1 = Signal(init=1)
        line = Signal(init=1)
        m.d.sync += [sync1.eq(self.rx), line.eq(sync1)]
        count = Signal(range(d))
        bit = Signal(range(9))
        shift = Signal(8)
        m.d.sync += self.o.valid.eq(0)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(~line):
                    m.d.sync += count.eq(d // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                m.d.sync += count.eq(count - 1)
                with m.If(count == 0):
                    with m.If(line):
                        m.next = "IDLE"                 # a glitch
                    with m.Else():
                        m.d.sync += [count.eq(d - 1), bit.eq(0)]
                        m.next = "DATA"
            with m.State("DATA"):
                m.d.sync += count.eq(count - 1)
                with m.If(count == 0):
                    m.d.sync += [shift.eq(Cat(shift[1:], line)), count.eq(d - 1),
                                 bit.eq(bit + 1)]
                    with m.If(bit == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                m.d.sync += count.eq(count - 1)
                with m.If(count == 0):
                    m.d.sync += [self.o.valid.eq(1), self.o.payload.data.eq(shift),
                                 self.o.payload.error.eq(~line)]
                    with m.If(line):
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "BREAK"
            with m.State("BREAK"):                     # wait for the line to return high
                with m.If(line):
                    m.next = "IDLE"
        return m


class UARTTx(wiring.Component):
    """Bytes -> serial line. ``i`` is a byte stream; the line idles high."""

    def __init__(self, divisor: int):
        self.divisor = check_divisor(divisor)
        super().__init__({"i": In(stream.Signature(8)), "tx": Out(1, init=1)})

    def elaborate(self, platform):
        m = Module()
        d = self.divisor
        count = Signal(range(d))
        bits = Signal(10, init=0x3FF)                   # stop, data[7:0], start: LSB goes first
        left = Signal(range(11))
        m.d.comb += [self.tx.eq(bits[0]), self.i.ready.eq(left == 0)]
        with m.If(left == 0):
            with m.If(self.i.valid):
                m.d.sync += [bits.eq(Cat(Const(0, 1), self.i.payload, Const(1, 1))),
                             left.eq(10), count.eq(d - 1)]
        with m.Else():
            m.d.sync += count.eq(count - 1)
            with m.If(count == 0):
                m.d.sync += [bits.eq(Cat(bits[1:], Const(1, 1))), left.eq(left - 1),
                             count.eq(d - 1)]
        return m
