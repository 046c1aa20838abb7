"""Synthesis and place-and-route of a digits-sized top on the UP5K (Yosys + nextpnr-ice40)."""
from __future__ import annotations

import pytest

from softfloor.hw import synth
from softfloor.hw.generate import generate
from tests.randmodel import digits_model

pytestmark = pytest.mark.synth


def test_digits_top_places_on_up5k(tmp_path):
    """The fully folded (1x1) top: quick to place; folded tops are in test_planner / bench."""
    gen = generate(digits_model(), tmp_path, folding={})
    r = synth.synthesize(gen.verilog, gen.manifest["top"], tmp_path / "synth", "up5k")
    dev = synth.DEVICES["up5k"]
    assert 0 < r.logic_cells <= dev.logic_cells
    assert r.ff > 0 and r.ram_blocks > 0
    assert r.io == gen.manifest["io_pins"] <= dev.io
    assert r.fmax_mhz is not None and r.fmax_mhz > 10


def test_unknown_device():
    with pytest.raises(ValueError, match="unknown device 'xc7'"):
        synth.get_device("xc7")


def test_ff_count_reads_every_dff_kind():
    log = "Printing statistics.\n     SB_DFF  3\n     SB_DFFE  4\n     SB_DFFSR  5\n     SB_LUT4  9\n"
    assert synth._count_ffs(log) == 12


def test_ecp5_devices_and_tools():
    for name in ("ecp5-25f", "ecp5-45f", "ecp5-85f"):
        dev = synth.get_device(name)
        assert dev.family == "ecp5" and dev.ram_block_bits == 18432
        assert dev.logic_cells > synth.DEVICES["hx8k"].logic_cells and dev.dsp > 0
    yosys, nextpnr, kind = synth.find_tools("ecp5")
    assert "nextpnr-ecp5" in nextpnr[0]


def test_ff_count_reads_ecp5_ffs():
    assert synth._count_ffs("Printing statistics.\n     TRELLIS_FF  7\n     LUT4  9\n") == 7
