"""generate(): manifest contract, Verilog port names, the digits-sized model."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from softfloor import golden, intmodel
from softfloor.hw.generate import build_manifest, generate
from softfloor.hw.top import SoftfloorTop

from tests.randmodel import digits_model, random_codes, random_model
from .test_top import check_timing

PORTS = {"s_axis_tdata": "input", "s_axis_tvalid": "input", "s_axis_tlast": "input",
         "s_axis_tready": "output", "m_axis_tdata": "output", "m_axis_tvalid": "output",
         "m_axis_tlast": "output", "m_axis_tready": "input", "clk": "input", "rst": "input"}
PORT_KEYS = {"tdata_width", "element_bits", "signed", "elements_per_beat", "beats_per_sample",
             "elements"}


def test_manifest_contract_digits():
    """The fully folded (1x1) digits top: every contract key and the old cycle numbers."""
    model = digits_model()
    man = build_manifest(model, folding={})
    assert {"top", "clock", "reset", "input", "output", "cycles_per_inference",
            "initiation_interval", "mac_units", "macs_per_inference", "layers",
            "model_layers"} <= set(man)
    assert (man["top"], man["clock"], man["reset"]) == ("softfloor_top", "clk", "rst")
    assert PORT_KEYS <= set(man["input"]) and PORT_KEYS <= set(man["output"])
    assert {k: man["input"][k] for k in PORT_KEYS} == dict(
        tdata_width=8, element_bits=4, signed=False, elements_per_beat=2, beats_per_sample=32,
        elements=64)
    # Raw 12-bit logits: 16-bit signed elements, one per beat.
    assert {k: man["output"][k] for k in PORT_KEYS} == dict(
        tdata_width=16, element_bits=16, signed=True, elements_per_beat=1, beats_per_sample=10,
        elements=10)
    assert man["io_pins"] == 32 and man["fits_up5k_sg48_pins"]
    assert man["initiation_interval"] == 64 * 64
    assert man["cycles_per_inference"] == 64 + 1 + (4096 + 8) + (2048 + 8) + (320 + 8)
    assert man["mac_units"] == 3 and man["macs_per_inference"] == 64 * 64 + 64 * 32 + 32 * 10
    assert [(l["name"], l["kind"], l["rows"], l["cols"], l["pe"], l["simd"], l["cycles"])
            for l in man["layers"]] == [("fc0", "dense", 64, 64, 1, 1, 4096),
                                        ("fc1", "dense", 32, 64, 1, 1, 2048),
                                        ("fc2", "dense", 10, 32, 1, 1, 320)]
    assert all("resources" in l and "acc_bits" in l for l in man["layers"])
    assert [(l["instance"], l["out_elements_per_transfer"], l["out_element_bits"],
             l["out_signed"]) for l in man["layers"]] == [
        ("engine0_fc0", 1, 4, False), ("engine1_fc1", 1, 4, False), ("engine2_fc2", 1, 12, True)]
    assert man["plan"] is None
    assert [l["name"] for l in man["model_layers"]] == [l.name for l in model.layers]
    json.dumps(man)


def test_default_manifest_is_the_throughput_plan():
    """generate's default: the planner's UP5K throughput plan, >= 90% MAC-lane utilisation."""
    model = digits_model()
    man = build_manifest(model)
    plan = man["plan"]
    assert plan["device"] == "up5k" and plan["objective"] == "throughput" and plan["fits"]
    assert [(l["pe"], l["simd"]) for l in man["layers"]] == [(l["pe"], l["simd"])
                                                          for l in plan["layers"]]
    assert man["initiation_interval"] == plan["initiation_interval"] < 64 * 64
    assert man["cycles_per_inference"] == plan["cycles_per_inference"]
    util = man["macs_per_inference"] / (man["mac_units"] * man["initiation_interval"])
    assert util >= 0.9, util
    assert man["fits_up5k_sg48_pins"]
    assert man["resources_estimate"]["lc"] == plan["estimate"]["lc"]


def test_generate_writes_verilog_and_manifest(tmp_path):
    """Smoke test of the Verilog export (first export takes ~10 s: the WASM Yosys compiles)."""
    rng = np.random.default_rng(3)
    model = random_model(rng, [16, 8, 4], final_requant=True)
    path = intmodel.save(model, tmp_path / "m.intmodel.json")
    res = generate(path, tmp_path / "rtl")
    assert res.verilog == tmp_path / "rtl" / "softfloor_top.v"
    text = res.verilog.read_text()
    header = re.search(r"^module softfloor_top\((.*?)\);", text, re.M | re.S)
    assert header, "no softfloor_top module"
    assert set(p.strip() for p in header.group(1).split(",")) == set(PORTS)
    body = text[header.end():text.index("endmodule", header.end())]
    for port, direction in PORTS.items():
        assert re.search(rf"^\s*{direction}\s+(\[\d+:0\]\s+)?{port};", body, re.M), port
    assert re.search(rf"input \[{res.manifest['input']['tdata_width'] - 1}:0\] s_axis_tdata;",
                     body)
    on_disk = json.loads(res.manifest_path.read_text())
    assert on_disk == json.loads(json.dumps(res.manifest))
    assert on_disk["verilog"] == "softfloor_top.v"


def test_generate_validates(tmp_path):
    model = random_model(np.random.default_rng(0), [4, 2])
    with pytest.raises(ValueError):
        build_manifest(model, name="not a name")
    with pytest.raises(TypeError):
        build_manifest({"layers": []})


@pytest.mark.slow
def test_digits_model_stream_and_timing():
    """64-64-32-10, planned: bit-exact with golden and the manifest's cycle counts."""
    model = digits_model()
    rng = np.random.default_rng(0)
    codes = random_codes(rng, model, 3)
    man = build_manifest(model)
    plan = {l["name"]: (l["pe"], l["simd"]) for l in man["layers"]}
    check_timing(SoftfloorTop(model, folding=plan), codes, man)
