"""cocotb bridge: a TCP socket <-> the UART pins of a simulated board top (``softfloor_link``).

Run by :mod:`softfloor.sim.linksim`. The simulator listens on ``127.0.0.1`` (the port goes to the
job's ``port_file``); a host connects -- e.g. pyserial's ``socket://127.0.0.1:PORT``, the same
driver code as for a real serial port -- and every byte it sends is driven onto ``uart_rx`` bit
by bit at ``divisor`` clock cycles per bit (start bit, 8 data bits LSB first, stop bit);
``uart_tx`` is read the same way (the middle of each bit) and each byte sent back. When the host
closes the connection the test ends and writes its counts (cycles, bytes each way, framing
errors seen on ``uart_tx``, the cycle at which each reply frame ended) to the job's
``results``.

The simulation only waits in real time when it has nothing to do: all request frames sent have
been answered and no byte is on its way. ``SOFTFLOOR_LINK_DEBUG=1`` logs every byte.
"""
from __future__ import annotations

import json
import os
import select
import socket
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, Timer
from cocotb.utils import get_sim_time

PERIOD_NS = 10
END = 0xC0


def _job() -> dict:
    path = os.environ.get("SOFTFLOOR_LINK_JOB")
    if not path:
        raise RuntimeError("SOFTFLOOR_LINK_JOB is not set: run through softfloor.sim.linksim")
    return json.loads(Path(path).read_text())


class FrameCounter:
    """Counts non-empty SLIP frames in a byte stream (one reply per request frame)."""

    def __init__(self):
        self.frames, self.open = 0, False

    def feed(self, b: int) -> None:
        if b == END:
            if self.open:
                self.frames += 1
            self.open = False
        else:
            self.open = True


@cocotb.test()
async def bridge(dut):
    job = _job()
    div = int(job["divisor"])
    bit = div * PERIOD_NS
    dut.uart_rx.value = 1
    dut.rst.value = 1
    dut.clk.value = 0
    await Timer(PERIOD_NS, unit="ns")
    cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns").start())
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 2)

    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", int(job.get("port", 0))))
    srv.listen(1)
    tmp = Path(job["port_file"] + ".tmp")
    tmp.write_text(str(srv.getsockname()[1]))
    tmp.replace(job["port_file"])
    srv.settimeout(float(job.get("accept_timeout", 120)))
    try:
        conn, _ = srv.accept()
    except socket.timeout:
        raise RuntimeError("no host connected to the simulated board") from None
    finally:
        srv.close()
    conn.setblocking(False)

    stats = {"bytes_in": 0, "bytes_out": 0, "tx_framing_errors": 0}
    sent, answered = FrameCounter(), FrameCounter()
    tx_busy = [False]
    reply_ends = []
    start_ns = get_sim_time("ns")

    async def monitor_tx():
        while True:
            await FallingEdge(dut.uart_tx)
            tx_busy[0] = True
            await Timer(bit // 2, unit="ns")
            v = 0
            for i in range(8):
                await Timer(bit, unit="ns")
                v |= int(dut.uart_tx.value) << i
            await Timer(bit, unit="ns")
            if not int(dut.uart_tx.value):
                stats["tx_framing_errors"] += 1
            try:
                conn.sendall(bytes([v]))
            except OSError:
                pass
            stats["bytes_out"] += 1
            before = answered.frames
            answered.feed(v)
            if answered.frames != before:
                reply_ends.append(int((get_sim_time("ns") - start_ns) // PERIOD_NS))
            if debug:
                dut._log.info(f"board -> host: {v:02x}")
            tx_busy[0] = False

    cocotb.start_soon(monitor_tx())
    pending = b""
    closed = False
    debug = bool(os.environ.get("SOFTFLOOR_LINK_DEBUG"))
    while not closed or pending:
        if not pending and not closed:
            idle = sent.frames == answered.frames and not tx_busy[0] and not sent.open
            r, _, _ = select.select([conn], [], [], 0.05 if idle else 0)
            if r:
                try:
                    data = conn.recv(4096)
                except BlockingIOError:
                    data = b""
                    r = []
                if r and not data:
                    closed = True
                pending += data
                if data and debug:
                    dut._log.info(f"host -> board: {data.hex()}")
        if pending:
            b, pending = pending[0], pending[1:]
            for level in [0] + [(b >> i) & 1 for i in range(8)] + [1]:
                dut.uart_rx.value = level
                await Timer(bit, unit="ns")
            stats["bytes_in"] += 1
            sent.feed(b)
        elif not closed:
            await Timer(10 * bit, unit="ns")
    # Let the last replies drain (the host has gone, but count them).
    for _ in range(200):
        if sent.frames == answered.frames and not tx_busy[0]:
            break
        await Timer(10 * bit, unit="ns")
    conn.close()
    stats["cycles"] = int((get_sim_time("ns") - start_ns) // PERIOD_NS)
    stats["request_frames"], stats["reply_frames"] = sent.frames, answered.frames
    stats["reply_end_cycles"] = reply_ends
    Path(job["results"]).write_text(json.dumps(stats))
