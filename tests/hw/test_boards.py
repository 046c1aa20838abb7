"""Board tops: PLL settings as icepll/ecppll compute them, and pins as the board definitions say."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from softfloor import intmodel
from softfloor import protocol as proto
from softfloor.hw import boards
from softfloor.hw.generate import generate
from softfloor.hw.pll import ecp5_pll, ice40_pll
from softfloor.sim import tools
from tests.conftest import require_tool
from tests.randmodel import random_model


def _tool(name):
    """The YoWASP tool ``name``: FAILS under CI when missing, skips loudly elsewhere."""
    exe = shutil.which(name) or str(Path(sys.executable).parent / name)

    def check():
        if not Path(exe).exists():
            raise tools.ToolMissing(f"{name} not installed (the bootstrap's YoWASP wheels)")
    require_tool(name, check)
    return exe


@pytest.mark.synth
@pytest.mark.parametrize("fout", [24.0, 36.0, 47.3])
def test_ice40_pll_matches_icepll(fout, tmp_path):
    out = subprocess.run([_tool("yowasp-icepll"), "-i", "12", "-o", str(fout)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300).stdout
    want = {k: int(v) for k, v in re.findall(r"^(DIVR|DIVF|DIVQ|FILTER_RANGE):\s+(\d+)", out,
                                             re.M)}
    assert ice40_pll(12, fout).params == want


@pytest.mark.synth
@pytest.mark.parametrize("fin,fout", [(25, 40), (25, 66.6), (48, 61)])
def test_ecp5_pll_frequency_matches_ecppll(fin, fout, tmp_path):
    out = subprocess.run([_tool("yowasp-ecppll"), "-i", str(fin), "-o", str(fout)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300).stdout
    want = float(re.search(r"clkout0 frequency: ([\d.]+) MHz", out).group(1))
    got = ecp5_pll(fin, fout)
    assert got.fout_mhz == pytest.approx(want, abs=1e-3)
    assert 400 <= got.vco_mhz <= 800


def test_pll_at_most_never_exceeds_target():
    for t in (17.3, 30.0, 48.0, 61.2):
        assert ice40_pll(12, t, at_most=True).fout_mhz <= t
        assert ecp5_pll(25, t, at_most=True).fout_mhz <= t
    with pytest.raises(ValueError, match="no iCE40 PLL setting"):
        ice40_pll(12, 10, at_most=True)


@pytest.mark.parametrize("name", list(boards.BOARDS))
def test_board_top_pins_match_board_definition(name, tmp_path):
    """The constraint file's UART, clock and LED pins are the amaranth-boards resources'."""
    b = boards.get_board(name)
    rng = np.random.default_rng(2)
    model = random_model(rng, (5, 3), in_bits=4, in_signed=False)
    intmodel.save(model, tmp_path / "m.intmodel.json")
    gen = generate(model, tmp_path, folding={})
    plat = b.make_platform()
    fin = plat.lookup(b.clock).clock.frequency / 1e6
    pll = boards.pll_for(b, fin, 30.0)
    info = proto.link_info(gen.manifest, model, tmp_path / "m.intmodel.json",
                           clock_hz=pll.fout_mhz * 1e6, baud=115200)
    v, cons = boards.elaborate_board(b, info, pll, 260, gen.verilog, tmp_path / name)
    text = cons.read_text()
    if b.family == "ice40":
        pins = dict(re.findall(r"^set_io (\S+) (\S+)", text, re.M))
    else:
        pins = dict(re.findall(r'LOCATE COMP "(\S+)" SITE "(\S+)"', text))
    want = {"uart_0__rx__io": plat.lookup("uart", 0).ios[0].ios[0],
            "uart_0__tx__io": plat.lookup("uart", 0).ios[1].ios[0]}
    clk = plat.lookup(b.clock, 0).ios[0]
    want[f"{b.clock}_0__io"] = clk
    for port, pin_obj in want.items():
        names = pin_obj.map_names(plat._conn_pins, plat.lookup(b.clock, 0)) \
            if hasattr(pin_obj, "map_names") else pin_obj.names
        assert pins[port] == names[0], (port, pins[port], names)
    if name == "icebreaker":          # the iCEBreaker's FTDI channel B and 12 MHz oscillator
        assert (pins["uart_0__rx__io"], pins["uart_0__tx__io"], pins["clk12_0__io"]) == \
            ("6", "9", "35")
    if name == "ulx3s":
        assert (pins["uart_0__rx__io"], pins["uart_0__tx__io"], pins["clk25_0__io"]) == \
            ("M1", "L4", "G2")
        assert "uart_tx_enable_0__io" in pins
    assert "module softfloor_board" in v.read_text()
