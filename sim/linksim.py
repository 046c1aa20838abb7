"""The board top's link logic simulated on Icarus or Verilator, reachable over a TCP socket.

:func:`link_verilog` writes ``softfloor_link.v``: :class:`~softfloor.hw.link.LinkTop` (UART, frame
protocol, sample buffer) around an instance of the generated core, with the core's Verilog
appended -- the board top without its PLL and pins. :class:`SimulatedBoard` builds it (cached like
:mod:`softfloor.sim.cosim`'s builds), starts the :mod:`softfloor.sim.tb_link` bridge in the
background and gives the pyserial URL to connect to (``socket://127.0.0.1:PORT``), so the host
driver runs unchanged against the simulation::

    with SimulatedBoard(verilog, info, divisor, "verilator", work) as url:
        with host.Host.open(url, info.baud, reply_timeout=SIM_REPLY_TIMEOUT) as h:
            outputs = h.run(codes)
"""
from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

from amaranth.back import verilog as amaranth_verilog

from softfloor import protocol as proto
from softfloor.hw.link import LinkTop
from softfloor.intmodel import atomic_write_text
from softfloor.sim import cosim

__all__ = ["link_verilog", "SimulatedBoard", "LINK_TOP", "SIM_DIVISOR", "SIM_REPLY_TIMEOUT"]

LINK_TOP = "softfloor_link"
#: Clock cycles per UART bit in a fast simulation (the board's own divisor is hundreds).
SIM_DIVISOR = 4
#: Seconds a host waits for a reply from a simulation (a loaded machine simulates slowly).
SIM_REPLY_TIMEOUT = 600.0


def link_verilog(core_verilog, info: proto.LinkInfo, divisor: int, out_dir) -> Path:
    """Write ``out_dir/softfloor_link.v`` (LinkTop + the core's Verilog); return its path."""
    core_verilog = Path(core_verilog)
    top = LinkTop(info, divisor, core=core_verilog.stem)
    text = amaranth_verilog.convert(top, name=LINK_TOP, emit_src=False)
    return atomic_write_text(Path(out_dir) / f"{LINK_TOP}.v",
                             icarus_kick(text + "\n" + core_verilog.read_text()))


def icarus_kick(text: str) -> str:
    """Make Yosys's Verilog evaluate every ``always @*`` block once on Icarus.

    Yosys adds a register (``$auto$verilog_backend...``, initialised to 0) read by each
    ``always @*`` block so that simulators run the block at time 0; Icarus applies the
    initialiser before the blocks wait, so a block whose real inputs never change (a constant
    table indexed by a register still at its reset value) keeps X outputs. Toggling that
    register at 1 ps runs every block once (Verilator, 2-state and without delays, skips
    it); the logic is unchanged.
    """
    return re.sub(r"reg (\\\$auto\$verilog_backend\S*)\s+= 0;",
                  lambda m: f"reg {m.group(1)} = 0;\n`ifndef VERILATOR\n"
                            f"  initial #1 {m.group(1)} = 1;\n`endif", text)


class SimulatedBoard:
    """Context manager: the link top running in ``simulator``; ``__enter__`` returns the URL.

    ``stats`` (after exit): cycles simulated, bytes each way, request and reply frames.
    """

    def __init__(self, verilog, divisor: int, simulator: str, work_dir, *,
                 connect_timeout: float = 600.0):
        self.verilog = Path(verilog).resolve()
        self.divisor, self.simulator = divisor, simulator
        self.work = Path(work_dir).resolve() / simulator
        self.connect_timeout = connect_timeout
        self.stats: dict = {}
        self.build_seconds = 0.0
        self._thread = None
        self._error = None
        self._port = None

    def __enter__(self) -> str:
        self.work.mkdir(parents=True, exist_ok=True)
        port_file, results = self.work / "port", self.work / "results.json"
        for p in (port_file, results):
            p.unlink(missing_ok=True)
        job = {"divisor": self.divisor, "port_file": str(port_file), "results": str(results),
               "accept_timeout": self.connect_timeout}
        (self.work / "job.json").write_text(json.dumps(job))
        runner, build_dir, self.build_seconds = cosim.build(self.verilog, LINK_TOP,
                                                            self.simulator)

        def run():
            try:
                runner.test(test_module="softfloor.sim.tb_link", hdl_toplevel=LINK_TOP,
                            test_dir=self.work, build_dir=build_dir,
                            extra_env={"SOFTFLOOR_LINK_JOB": str(self.work / "job.json")},
                            log_file=self.work / "sim.log",
                            results_xml=str(self.work / "results.xml"),
                            timescale=cosim.TIMESCALE if self.simulator == "icarus" else None)
            except BaseException as e:          # SystemExit from cocotb's runner included
                self._error = e

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        t0 = time.monotonic()
        while not port_file.exists():
            if not self._thread.is_alive() or time.monotonic() - t0 > self.connect_timeout:
                raise cosim.CosimError(self._message("did not start listening"))
            time.sleep(0.05)
        self._port = int(port_file.read_text())
        return f"socket://127.0.0.1:{self._port}"

    def __exit__(self, *exc) -> None:
        if exc[0] is not None and self._port is not None:
            # The host failed before (or after) connecting: a connection closed at once ends
            # the simulation instead of leaving it waiting for a host.
            import socket
            try:
                socket.create_connection(("127.0.0.1", self._port), timeout=5).close()
            except OSError:
                pass
        self._thread.join(timeout=self.connect_timeout if exc[0] is None else 60)
        results = self.work / "results.json"
        if results.exists():
            self.stats = json.loads(results.read_text())
        if exc[0] is None and (self._thread.is_alive() or not results.exists()):
            raise cosim.CosimError(self._message("did not finish"))

    def _message(self, what: str) -> str:
        log = self.work / "sim.log"
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:]) \
            if log.exists() else ""
        return f"{self.simulator} simulation of {self.verilog.name} {what}; log: {log}\n{tail}"
