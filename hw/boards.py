"""Board tops: the accelerator behind a UART on a real board, a PLL, pins, and a bitstream.

Boards come from ``amaranth-boards`` (their pins, clocks and packages are the definitions used):

==============  =========================  ============  ==========================================
``--board``     platform                   FPGA          host link
==============  =========================  ============  ==========================================
``icebreaker``  ``ICEBreakerPlatform``     iCE40 UP5K    the FTDI's second channel (``uart`` 0)
``ulx3s``       ``ULX3S_85F_Platform``     ECP5-85F      the FTDI USB-serial (``uart`` 0)
``orangecrab``  ``OrangeCrabR0_2_25F``     ECP5-25F      a 3.3 V USB-serial adapter on the Feather
                                                          pins ``0`` (RX) and ``1`` (TX)
==============  =========================  ============  ==========================================

:class:`BoardTop` = the board's oscillator -> PLL -> ``sync`` domain (held in reset until the PLL
locks), :class:`~softfloor.hw.link.LinkTop` (UART + frame protocol + an instance of the
generated ``softfloor_top``), two LEDs (a sample in the core; the last reply was an error).

:func:`build_board` elaborates it through the platform (pin constraints from the board
definition), synthesizes and places it with the same tools as :mod:`softfloor.hw.synth`, and packs
the bitstream (``icepack`` -> ``.bin``, ``ecppack`` -> ``.bit``). The PLL clock is the fastest
setting not above the target; if the placed board top's Fmax comes out below it, the target is
lowered to that Fmax and the board top rebuilt, so the clock it runs at is one that timing
analysis supports.
"""
from __future__ import annotations

import importlib
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from amaranth.hdl import ClockDomain, Elaboratable, Instance, Module, Signal
from amaranth.lib import io
from amaranth.lib.cdc import ResetSynchronizer

from softfloor import protocol as proto
from softfloor.hw import synth
from softfloor.hw.link import LinkTop
from softfloor.hw.pll import PLLSetting, ecp5_pll, ice40_pll
from softfloor.hw.uart import divisor_for
from softfloor.intmodel import atomic_write_text, load

__all__ = ["Board", "BOARDS", "get_board", "BoardTop", "build_board", "BoardBuild",
           "check_core",
           "DEFAULT_BAUD", "BOARD_TOP"]

DEFAULT_BAUD = 115200
BOARD_TOP = "softfloor_board"


@dataclass(frozen=True)
class Board:
    name: str
    platform: str                   # "module:Class" in amaranth_boards
    device: str                     # softfloor.hw.synth device (resource budget)
    clock: str                      # oscillator resource
    leds: tuple[str, str]           # (busy, error) LED resources
    programmer: tuple[str, ...]     # command, "{bitstream}" replaced
    max_clock_mhz: float            # cap of the PLL target
    uart_pins: dict | None = None   # extra UART resource {"rx": pin, "tx": pin, "conn": (..)}

    @property
    def family(self) -> str:
        return "ice40" if self.device in ("up5k", "hx8k", "hx1k") else "ecp5"

    @property
    def bitstream_suffix(self) -> str:
        return ".bin" if self.family == "ice40" else ".bit"

    def make_platform(self):
        mod, cls = self.platform.split(":")
        try:
            plat = getattr(importlib.import_module(f"amaranth_boards.{mod}"), cls)()
        except ImportError as e:
            raise RuntimeError(f"--board {self.name} needs amaranth-boards: pip install "
                               f"amaranth-boards==0.0.21 ({e})") from None
        if self.uart_pins:
            from amaranth.build import Attrs
            from amaranth_boards.resources import UARTResource
            plat.add_resources([UARTResource(0, rx=self.uart_pins["rx"], tx=self.uart_pins["tx"],
                                             conn=self.uart_pins["conn"],
                                             attrs=Attrs(IO_TYPE="LVCMOS33", PULLMODE="UP"))])
        return plat

    def nextpnr_args(self, plat) -> tuple[str, ...]:
        """Device, package and speed arguments of nextpnr, from the platform."""
        if self.family == "ice40":
            return (f"--{plat.device.lower().replace('ice40', '')}", "--package",
                    plat.package.lower())
        size = plat.device.split("-")[1].lower().rstrip("f")
        return (f"--{size}k", "--package", plat._nextpnr_package_options[plat.package].upper(),
                "--speed", str(plat.speed))


BOARDS = {
    "icebreaker": Board("icebreaker", "icebreaker:ICEBreakerPlatform", "up5k", "clk12",
                        ("led_g", "led_r"), ("iceprog", "{bitstream}"), 48.0),
    "ulx3s": Board("ulx3s", "ulx3s:ULX3S_85F_Platform", "ecp5-85f", "clk25", ("led", "led"),
                   ("openFPGALoader", "--board", "ulx3s", "{bitstream}"), 100.0),
    "orangecrab": Board("orangecrab", "orangecrab_r0_2:OrangeCrabR0_2_25FPlatform", "ecp5-25f",
                        "clk", ("rgb_led", "rgb_led"),
                        ("openFPGALoader", "--board", "orangecrab", "{bitstream}"), 100.0,
                        {"rx": "0", "tx": "1", "conn": ("io", 0)}),
}


def get_board(name: str) -> Board:
    if name not in BOARDS:
        raise ValueError(f"unknown board {name!r}; choose one of {', '.join(BOARDS)}")
    return BOARDS[name]


def pll_for(board: Board, fin_mhz: float, target_mhz: float) -> PLLSetting:
    fn = ice40_pll if board.family == "ice40" else ecp5_pll
    return fn(fin_mhz, target_mhz, at_most=True)


class BoardTop(Elaboratable):
    """The board's top module: oscillator -> PLL -> :class:`LinkTop`, UART pins, LEDs."""

    def __init__(self, board: Board, info: proto.LinkInfo, pll: PLLSetting, divisor: int,
                 core: str = "softfloor_top"):
        self.board, self.info, self.pll, self.divisor, self.core = board, info, pll, divisor, core

    def elaborate(self, platform):
        m = Module()
        b, pll = self.board, self.pll
        m.domains.sync = cd = ClockDomain("sync")
        locked = Signal()
        if b.family == "ice40":
            clk_port = platform.request(b.clock, dir="-")
            p = pll.params
            m.submodules.pll = Instance(
                "SB_PLL40_PAD", p_FEEDBACK_PATH="SIMPLE", p_DIVR=p["DIVR"], p_DIVF=p["DIVF"],
                p_DIVQ=p["DIVQ"], p_FILTER_RANGE=p["FILTER_RANGE"],
                i_PACKAGEPIN=clk_port.io, i_RESETB=1, i_BYPASS=0,
                o_PLLOUTGLOBAL=cd.clk, o_LOCK=locked)
        else:
            clk_port = platform.request(b.clock, dir="-")
            m.submodules.clk_buf = clk_buf = io.Buffer("i", clk_port)
            p = pll.params
            m.submodules.pll = Instance(
                "EHXPLLL",
                a_FREQUENCY_PIN_CLKI=f"{pll.fin_mhz:g}", a_FREQUENCY_PIN_CLKOP=f"{pll.fout_mhz:.6f}",
                a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1",
                a_MFG_GMCREF_SEL="2",
                p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
                p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_CLKOP_ENABLE="ENABLED",
                p_CLKI_DIV=p["CLKI_DIV"], p_CLKOP_DIV=p["CLKOP_DIV"],
                p_CLKOP_CPHASE=p["CLKOP_CPHASE"], p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP",
                p_CLKFB_DIV=p["CLKFB_DIV"],
                i_RST=0, i_STDBY=0, i_CLKI=clk_buf.i, i_CLKFB=cd.clk, o_CLKOP=cd.clk,
                i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1, i_PHASELOADREG=1,
                i_PLLWAKESYNC=0, i_ENCLKOP=0, o_LOCK=locked)
        # nextpnr derives the PLL output's constraint from the oscillator's (set by the board).
        m.submodules.reset_sync = ResetSynchronizer(~locked, domain="sync")

        m.submodules.link = link = LinkTop(self.info, self.divisor, core=self.core)
        uart = platform.request("uart", 0, dir="-")
        m.submodules.rx_buf = rx_buf = io.Buffer("i", uart.rx)
        m.submodules.tx_buf = tx_buf = io.Buffer("o", uart.tx)
        m.d.comb += [link.uart_rx.eq(rx_buf.i), tx_buf.o.eq(link.uart_tx)]
        if b.name == "ulx3s":                       # the FTDI's TX level shifter enable
            en = platform.request("uart_tx_enable", 0, dir="-")
            m.submodules.tx_en = tx_en = io.Buffer("o", en)
            m.d.comb += tx_en.o.eq(1)
        busy_led, err_led = b.leds
        if busy_led == err_led == "rgb_led":
            led = platform.request("rgb_led", 0, dir="-")
            m.submodules.led_g = g = io.Buffer("o", led.g)
            m.submodules.led_r = r = io.Buffer("o", led.r)
            m.d.comb += [g.o.eq(link.busy), r.o.eq(link.error)]
        elif busy_led == err_led:
            for k, sig in enumerate((link.busy, link.error)):
                m.submodules[f"led{k}"] = buf = io.Buffer("o", platform.request(busy_led, k,
                                                                                dir="-"))
                m.d.comb += buf.o.eq(sig)
        else:
            for name, sig in ((busy_led, link.busy), (err_led, link.error)):
                m.submodules[name] = buf = io.Buffer("o", platform.request(name, 0, dir="-"))
                m.d.comb += buf.o.eq(sig)
        return m


@dataclass
class BoardBuild:
    """What :func:`build_board` made and measured."""
    board: str
    device: str
    pll_mhz: float
    pll: dict
    fmax_mhz: float | None
    timing_met: bool
    baud: int
    divisor: int
    logic_cells: int
    ff: int
    dsp: int
    ram_blocks: int
    io: int
    bitstream: str
    bitstream_bytes: int
    attempts: list = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return (f"{self.board}: {self.logic_cells} LC, {self.ff} FF, {self.dsp} DSP, "
                f"{self.ram_blocks} RAM, PLL {self.pll_mhz:.3f} MHz <= Fmax {self.fmax_mhz} MHz, "
                f"{self.baud} baud, {Path(self.bitstream).name} {self.bitstream_bytes} bytes")


def link_info_for(out_dir: Path, manifest: dict, model_file: Path, clock_hz: float,
                  baud: int) -> proto.LinkInfo:
    return proto.link_info(manifest, load(model_file), model_file, clock_hz=int(clock_hz),
                           baud=baud)


def elaborate_board(board: Board, info: proto.LinkInfo, pll: PLLSetting, divisor: int,
                    core_verilog: Path, out: Path) -> tuple[Path, Path]:
    """Write ``out/softfloor_board.v`` (board top + link; the core is read beside it) and the
    pin constraints (``.pcf`` / ``.lpf``) of the board definition. Returns both paths."""
    plat = board.make_platform()
    top = BoardTop(board, info, pll, divisor, core=_module_name(core_verilog))
    plan = plat.prepare(top, name=BOARD_TOP, debug_verilog=True)
    out.mkdir(parents=True, exist_ok=True)
    cons = ".pcf" if board.family == "ice40" else ".lpf"
    files = {}
    for name, content in plan.files.items():
        if name.endswith((".debug.v", cons)):
            dest = out / (BOARD_TOP + (".v" if name.endswith(".debug.v") else cons))
            text = content if isinstance(content, str) else content.decode()
            atomic_write_text(dest, text)
            files[dest.suffix] = dest
    return files[".v"], files[cons]


def _module_name(verilog: Path) -> str:
    return Path(verilog).stem


def check_core(manifest: dict) -> None:
    """A ValueError (one line, naming the layers and what to do) unless the board top can drive
    the core: the UART link does not send a run-time weight image (SPRAM weights,
    ``manifest["weight_load"]``), and without it the core never leaves reset's idle state."""
    wl = manifest.get("weight_load")
    if wl:
        layers = ", ".join(lay["layer"] for lay in wl.get("layers", [])) or "some layers"
        raise ValueError(
            f"layer(s) {layers} keep their weights in SPRAM, loaded at run time through "
            f"w_axis, which the board's UART link does not send: re-plan them without SPRAM "
            f"for a board (a --plan file with \"memory\": \"rom\" and a fold that fits block "
            f"RAM, or a smaller model)")


def build_board(board: Board | str, out_dir, core_verilog, manifest: dict, model_file, *,
                baud: int = DEFAULT_BAUD, target_mhz: float | None = None, attempts: int = 4,
                seed: int = 1, progress=None) -> BoardBuild:
    """Board top -> synthesis, place and route -> bitstream, at a PLL clock the board top meets.

    ``target_mhz`` (default: the board's cap) is the first PLL target; each attempt whose placed
    Fmax is below its PLL clock retries at the fastest PLL setting not above that Fmax.
    """
    board = get_board(board) if isinstance(board, str) else board
    check_core(manifest)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    core_verilog = Path(core_verilog).resolve()
    plat = board.make_platform()
    fin = plat.lookup(board.clock).clock.frequency / 1e6
    target = min(target_mhz or board.max_clock_mhz, board.max_clock_mhz)
    t0 = time.monotonic()
    tried = []
    for k in range(attempts):
        pll = pll_for(board, fin, target)
        divisor = divisor_for(pll.fout_mhz * 1e6, baud)
        info = link_info_for(out, manifest, Path(model_file), pll.fout_mhz * 1e6, baud)
        if progress:
            progress(f"{board.name}: {pll}, UART divisor {divisor}")
        v, cons = elaborate_board(board, info, pll, divisor, core_verilog, out)
        shutil.copyfile(core_verilog, out / core_verilog.name)
        r = synth.synthesize(v, BOARD_TOP, out / "pnr", board.device, freq_mhz=pll.fout_mhz,
                             seed=seed, sources=[out / core_verilog.name], constraints=cons,
                             nextpnr_args=board.nextpnr_args(plat), pack=True, progress=progress)
        tried.append({"pll_mhz": round(pll.fout_mhz, 4), "fmax_mhz": r.fmax_mhz})
        if r.fmax_mhz is not None and r.fmax_mhz >= pll.fout_mhz:
            break
        if r.fmax_mhz is None or k == attempts - 1:
            raise RuntimeError(
                f"{board.name}: the board top does not meet timing at {pll.fout_mhz:.2f} MHz "
                f"(Fmax {r.fmax_mhz} MHz after {k + 1} attempts: {tried}); see "
                f"{out / 'pnr' / 'nextpnr.log'}")
        target = 0.95 * r.fmax_mhz          # placement varies: keep a margin
    bit = out / f"{BOARD_TOP}{board.bitstream_suffix}"
    shutil.copyfile(Path(r.bitstream), bit)
    res = BoardBuild(board.name, board.device, round(pll.fout_mhz, 4), pll.params, r.fmax_mhz,
                     True, baud, divisor, r.logic_cells, r.ff, r.dsp, r.ram_blocks, r.io,
                     str(bit), bit.stat().st_size, tried, round(time.monotonic() - t0, 1))
    atomic_write_text(out / "board.json", json.dumps(res.to_dict() | {"info": info.to_dict()},
                                                     indent=1) + "\n")
    return res
