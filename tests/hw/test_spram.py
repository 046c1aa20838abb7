"""Weights in the UP5K's SPRAM: the planner's choice, the estimate, plan files, the image.

The model ``256 -> 128 -> 10`` at 4-bit weights has a 128 kbit first layer: no fold of it fits
the UP5K's 30 block RAMs (120 kbit), so the planner moves it to SPRAM; small models keep their
ROMs (their Verilog is unchanged). Simulation of the SPRAM path: ``tests/sim/test_units_spram.py``.
"""
from __future__ import annotations

import copy
import hashlib

import numpy as np
import pytest

from softfloor.hw import planfile, planner
from softfloor.hw.generate import WEIGHT_IMAGE, generate
from softfloor.hw.ops import DenseOp, lower
from softfloor.hw.rtl import spram
from softfloor.hw.rtl.mvu import weight_words
from tests.randcnn import random_cnn
from tests.randmodel import digits_model, random_model


@pytest.fixture(scope="module")
def big():
    """(model, plan): the throughput plan of a model whose first layer needs SPRAM."""
    m = random_model(np.random.default_rng(0), (256, 128, 10), in_bits=4, in_signed=False,
                     weight_bits=4, act_bits=4, final_requant=False)
    return m, planner.plan(m, "up5k")


def test_planner_puts_the_layer_block_ram_cannot_hold_in_spram(big):
    m, p = big
    assert p.fits, p
    fc0 = p.pipeline.ops[0]
    assert fc0.memory == "spram" and p.pipeline.ops[1].memory == "rom"
    assert fc0.weight_width <= 16 * 4 and fc0.groups * fc0.folds <= spram.SPRAM_DEPTH
    assert p.estimate["spram"] == spram.blocks(fc0.weight_width) <= p.budget["spram"] == 4
    assert p.layers[0].estimate["spram"] == p.estimate["spram"]
    assert any("SPRAM" in n for n in p.notes)
    assert "SPRAM" in str(p)                    # the plan table gets an SPRAM column
    # the same layer with its weights in a ROM needs more block RAM than the device has
    rom = fc0.with_spram(False).estimate("up5k")
    assert rom["ram"] > fc0.estimate("up5k")["ram"] and rom.get("spram", 0) == 0


def test_designs_that_fit_block_ram_keep_their_roms():
    p = planner.plan(digits_model(0), "up5k")
    assert p.fits and p.estimate["spram"] == 0
    assert all(op.memory != "spram" for op in p.pipeline.ops)
    assert "SPRAM" not in str(p)


def test_generated_image_and_manifest(big, tmp_path):
    m, p = big
    g = generate(m, tmp_path, folding=p)
    text = g.verilog.read_text()
    assert text.count("SB_SPRAM256KA ") == p.estimate["spram"]
    assert "w_axis_tdata" in text and "w_axis_tready" in text
    wl = g.manifest["weight_load"]
    img = (tmp_path / WEIGHT_IMAGE).read_text()
    assert wl["file"] == WEIGHT_IMAGE and wl["sha256"] == hashlib.sha256(img.encode()).hexdigest()
    words = [int(t, 16) for t in img.split()]
    assert len(words) == wl["transfers"] and all(0 <= w < 256 for w in words)
    fc0 = p.pipeline.ops[0]
    (lay,) = wl["layers"]
    assert lay == {"layer": "fc0", "offset": 0, "transfers": len(words),
                   "spram_blocks": spram.blocks(fc0.weight_width),
                   "words": fc0.groups * fc0.folds, "word_bits": fc0.weight_width}
    # the image read back gives the weight memory: word a = its blocks' bytes, low first
    per = 2 * lay["spram_blocks"]
    back = [sum(b << (8 * k) for k, b in enumerate(words[a * per:(a + 1) * per]))
            for a in range(lay["words"])]
    assert back == weight_words(fc0.dense.weight, fc0.dense.weight_bits, fc0.pe, fc0.simd)
    entry = g.manifest["layers"][0]
    assert entry["memory"] == "spram" and entry["spram_blocks"] == lay["spram_blocks"]
    assert g.manifest["io_pins"] == planner.plan_from_pipeline(
        p.pipeline, "up5k", "throughput").pipeline.io_pins
    # regenerating a design without SPRAM weights removes the stale image
    generate(digits_model(0), tmp_path)
    assert not (tmp_path / WEIGHT_IMAGE).exists()


def test_plan_file_round_trip_and_errors(big, tmp_path):
    m, p = big
    doc = planfile.plan_document(p, "big")
    assert doc["layers"][0]["memory"] == "spram"
    back = planfile.parse_plan(copy.deepcopy(doc), m, "up5k")
    assert back.pipeline.ops[0].memory == "spram" and back.estimate == p.estimate

    def error(edit, device="up5k"):
        d = copy.deepcopy(doc)
        edit(d["layers"][0])
        with pytest.raises(planfile.PlanFileError) as e:
            planfile.parse_plan(d, m, device, where="p.json")
        msg = str(e.value)
        assert "\n" not in msg and msg.startswith("p.json: layers[0] (fc0).memory")
        return msg

    d = copy.deepcopy(doc)
    d["device"] = "hx8k"
    with pytest.raises(planfile.PlanFileError, match=r"layers\[0\] \(fc0\)\.memory.*hx8k has "
                                                     r"no SPRAM"):
        planfile.parse_plan(d, m, "hx8k", where="p.json")
    assert "16384" in error(lambda e: e.update(pe=1, simd=1))          # 32768 words
    assert "SPRAM blocks side by side" in error(lambda e: e.update(pe=8, simd=8))
    assert "needs a folded layer" in error(lambda e: e.update(pe=128, simd=256, unrolled=True))
    # more SPRAM than the device has: the plan is built but does not fit, naming SPRAM
    d = copy.deepcopy(doc)
    d["layers"][1].update(memory="spram")
    over = planfile.parse_plan(d, m, "up5k")
    assert over.estimate["spram"] == p.estimate["spram"] + 1 > 4
    assert not over.fits and "SPRAM blocks" in "; ".join(over.over_budget())
    with pytest.raises(planner.DesignDoesNotFit, match="SPRAM blocks > the 4 it has, most in "
                                                       "layer fc0"):
        over.check_fits()


def test_conv_layers_keep_their_rom():
    m = random_cnn(np.random.default_rng(3), in_shape=(1, 8, 8), channels=(4, 8), classes=10)
    p = planner.plan(m, "up5k")
    doc = planfile.plan_document(p, "cnn")
    conv = next(k for k, e in enumerate(doc["layers"]) if e["kind"] == "conv")
    doc["layers"][conv]["memory"] = "spram"
    with pytest.raises(planfile.PlanFileError, match=r"memory: 'spram' is not possible: a conv"):
        planfile.parse_plan(doc, m, "up5k", where="p.json")
    op = p.pipeline.ops[conv]
    assert op.with_spram(True).memory == "rom"


def test_spram_estimate_counts_blocks_and_load_logic():
    m = random_model(np.random.default_rng(1), (64, 32), in_bits=4, in_signed=False,
                     weight_bits=3, act_bits=4, final_requant=True)
    op = DenseOp.of(m.layers[0], m.input.code_type, m.layers[1], pe=4, simd=8)
    rom, sp = op.estimate("up5k"), op.with_spram(True).estimate("up5k")
    assert sp["spram"] == spram.blocks(4 * 8 * 3) == 6 and rom["spram"] == 0
    assert sp["lc"] > 0 and sp["ff"] > rom["ff"]
    assert op.with_spram(True).spram_problem("up5k").startswith("fold 4x8 reads 96")
    assert op.with_spram(True).spram_problem("ecp5-25f") == "ecp5-25f has no SPRAM"
    assert op.with_fold(2, 8).spram_problem("up5k") is None


def test_board_refuses_a_core_with_spram_weights(big, tmp_path):
    """The UART board top does not send the weight image: one line naming the layer."""
    from softfloor.hw.boards import check_core
    m, p = big
    g = generate(m, tmp_path, folding=p)
    with pytest.raises(ValueError, match=r"^layer\(s\) fc0 keep their weights in SPRAM.*re-plan"):
        check_core(g.manifest)
    check_core(generate(digits_model(0), tmp_path / "d").manifest)     # ROM weights: fine


def test_unrolled_floor_is_a_lower_bound_and_prunes_tfc():
    """The planner drops an unrolled fold only when its cheap lower bound exceeds the device:
    the bound never exceeds the estimate (checked above and below SOLVE_TERMS), and TFC's
    784x64 first layer is over the UP5K by it (the plan no longer solves its adder graph)."""
    from softfloor.hw.ops.dense import SOLVE_TERMS
    from softfloor.hw.rtl import cmvm
    for sizes, wb in (((20, 12), 4), ((110, 100), 2)):
        m = random_model(np.random.default_rng(2), sizes, in_bits=2, in_signed=False,
                         weight_bits=wb, act_bits=2, final_requant=False)
        op = DenseOp.of(m.layers[0], m.input.code_type, None, pe=sizes[1], simd=sizes[0],
                        out_elements_per_transfer=sizes[1])
        assert op.const_weights
        terms = int(cmvm.term_counts(op.dense.weight).sum())
        assert (terms > SOLVE_TERMS) == (sizes[0] > 50)
        assert 0 < op.const_lc_floor("up5k") <= op.estimate("up5k")["lc"]
    from softfloor.benchmarks.hardware import tfc_model
    m, _ = tfc_model(1, 1)
    fc0 = lower(m)[0]
    op = fc0.with_fold(fc0.rows, fc0.cols)
    assert op.const_lc_floor("up5k") > 5280
    assert all(c[2:] != (fc0.rows, fc0.cols) for c in fc0.fold_options("up5k", True))
