"""The flow's sim stage on a broken design: report.json names the first bad layer; --waves."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from softfloor import cli, intmodel
from softfloor.hw.generate import generate
from tests.sim.test_diagnose import base_model, broken_rounding

pytestmark = pytest.mark.sim


def test_sim_stage_reports_first_bad_layer_and_waves(tmp_path):
    model, rng = base_model()
    mpath = intmodel.save(model, tmp_path / "m.intmodel.json")
    np.save(tmp_path / "x.npy", rng.uniform(-8, 8, (40, 12)))
    out = tmp_path / "out"
    assert cli.main(["flow", "--out", str(out), "--model", str(mpath), "--inputs",
                     str(tmp_path / "x.npy"), "--simulator", "icarus", "--no-synth",
                     "--quiet"]) == 0
    good = json.loads((out / "report.json").read_text())["bit_exact"]["icarus"]
    assert good["mismatches"] == 0 and "first_bad_layer" not in good
    # Swap in RTL of a model whose rq1 rounds differently, then re-run only the sim stage.
    # Hand-made RTL is the user's own (no rtl record), else the stale-artifact check refuses it.
    generate(broken_rounding(model, "rq1"), out)
    (out / "stages" / "rtl.json").unlink()
    cli.main(["sim", "--out", str(out), "--simulator", "icarus", "--waves", "--quiet"])
    cli.main(["report", "--out", str(out), "--quiet"])
    rep = json.loads((out / "report.json").read_text())["bit_exact"]["icarus"]
    assert rep["mismatches"] > 0
    assert rep["first_bad_layer"] == "rq1" and rep["first_bad_instance"] == "engine1_fc1"
    d = rep["diagnosis"]
    assert d["sample"] == rep["first_mismatches"][0]["sample"]
    assert d["layers_ok"] == ["rq0"] and d["expected"] != d["got"]
    assert Path(rep["diagnosis_waves"]).stat().st_size > 0
    sim_rec = json.loads((out / "stages" / "sim.json").read_text())["icarus"]
    assert Path(sim_rec["waves"]).stat().st_size > 0        # --waves on demand
