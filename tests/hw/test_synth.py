"""Synthesis and place-and-route of a digits-sized top on the UP5K (Yosys + nextpnr-ice40)."""
from __future__ import annotations

import pytest

from softfloor.hw import synth
from softfloor.hw.generate import generate
from tests.randmodel import digits_model

pytestmark = pytest.mark.synth


def test_digits_top_places_on_up5k(tmp_path):
    gen = generate(digits_model(), tmp_path)
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
