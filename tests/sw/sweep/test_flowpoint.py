"""A flow point's options (FlowOptions fields by name) and its row (from report.json keys)."""
from __future__ import annotations

from pathlib import Path

from softfloor.sweep.flowpoint import flow_options, metrics

REPORT = {
    "accuracy": {"float": 0.97, "quantized": 0.92, "golden": 0.92, "rtl": 0.92,
                 "rtl_verilator": 0.92},
    "bit_exact": {"verilator": {"samples": 360, "mismatches": 0},
                  "icarus": {"samples": 360, "mismatches": 2}},
    "hardware": {"cycles_per_inference": 108, "initiation_interval": 16, "mac_units": 404,
                 "inferences_per_second": 3.1e6,
                 "plan": {"estimate": {"lc": 4381, "ff": 1629, "ram": 0, "dsp": 0}}},
    "synth": {"device": "ecp5-25f", "logic_cells": 4266, "ff": 1700, "dsp": 0, "ram_blocks": 0,
              "fmax_mhz": 118.6, "io": 40, "tools": "yowasp", "cache": "hit"},
    "timings": {"data": 1.0, "synth": 200.0},
}


def test_metrics_from_report_json():
    m = metrics(REPORT)
    assert m == {"accuracy": 0.92, "accuracy_float": 0.97, "accuracy_quantized": 0.92,
                 "accuracy_golden": 0.92, "accuracy_rtl": 0.92, "mismatches": 2,
                 "initiation_interval": 16, "cycles_per_inference": 108, "mac_units": 404,
                 "inferences_per_second": 3.1e6, "logic_estimate": 4381, "device": "ecp5-25f",
                 "synth_cache": "hit", "timings": {"data": 1.0, "synth": 200.0},
                 "logic_cells": 4266, "ff": 1700, "dsp": 0, "ram_blocks": 0, "fmax_mhz": 118.6}


def test_metrics_without_sim_or_synth():
    rep = {"accuracy": {"float": 0.9, "quantized": 0.8, "golden": 0.81, "rtl": None},
           "bit_exact": {}, "hardware": {"plan": None},
           "synth": {"device": "up5k", "skipped": True, "logic_cells": None}, "timings": {}}
    m = metrics(rep)
    assert m["accuracy"] == 0.81 and m["mismatches"] is None and m["logic_estimate"] is None
    assert "logic_cells" not in m and m["device"] == "up5k"


def test_flow_options_by_field_name(tmp_path):
    o = flow_options({"weight_bits": 2, "fold": ["fc1=4x4"], "model": "m.json"}, tmp_path,
                     ("data", "train", "export", "rtl", "synth"), tmp_path / "cache")
    assert o.weight_bits == 2 and o.fold == ("fc1=4x4",) and o.model == Path("m.json")
    assert o.out == tmp_path and o.synth and o.synth_cache == tmp_path / "cache"
    o = flow_options({}, tmp_path, ("data", "train"), tmp_path / "cache")
    assert not o.synth and o.synth_cache is None
