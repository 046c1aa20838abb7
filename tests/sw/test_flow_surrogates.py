"""`softfloor flow --weight-bits W --act-bits A --surrogate S`: every surrogate end to end.

Short trainings (2 epochs) through the CLI stages; the golden model of the exported file must
equal the torch hard-quantized forward, bit for bit. One configuration with a BatchNorm threshold
layer also goes through the RTL on Verilator (the default configuration's RTL test is in
test_flow.py).
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from softfloor import cli
from softfloor.surrogates import SURROGATES
from softfloor.train import float_hard_codes, hard_codes, load_checkpoint

CASES = [(8, 8, "fourier"), (2, 2, "dsq"), (1, 1, "pact"), (4, 1, "sigmoid"),
         (1, 4, "dsq_hard"), (2, 8, "ste_plain"), (4, 2, "lsq"), (1, 2, "ste")]


def test_cases_cover_every_surrogate_and_width():
    assert {c[2] for c in CASES} == set(SURROGATES)
    assert {c[0] for c in CASES} == {c[1] for c in CASES} == {8, 4, 2, 1}


def _train_args(wb, ab, sur):
    return ["--weight-bits", str(wb), "--act-bits", str(ab), "--surrogate", sur, "--epochs", "2"]


@pytest.mark.parametrize("wb, ab, sur", CASES)
def test_stages_golden_equals_torch(wb, ab, sur, tmp_path):
    out = tmp_path / "f"
    for stage in ("data", "train", "export", "golden"):
        extra = _train_args(wb, ab, sur) if stage in ("data", "train") else []
        assert cli.main([stage, "--out", str(out), "--quiet", *extra]) == 0, stage
    res = load_checkpoint(out / "model.pt")
    assert res.config.surrogate == sur
    vec = np.load(out / "vectors.npz")
    assert vec["inputs"].shape == (360, 64)
    np.testing.assert_array_equal(vec["golden"], hard_codes(res.model, vec["inputs"]))
    np.testing.assert_array_equal(vec["golden"], float_hard_codes(res.model, vec["inputs"]))
    train = json.loads((out / "train.json").read_text())
    assert train["config"]["batchnorm"] == (ab >= 2)
    assert "batchnorm" in train["config"]["defaults"]           # resolved, and said so
    assert "surrogate" not in train["config"]["defaults"]       # given on the command line
    # a 1-bit input gets one threshold per pixel, calibrated on the training samples and
    # trained with the network
    assert train["config"]["input_quant"] == ("learned" if ab == 1 else "global")


@pytest.mark.sim
def test_batchnorm_threshold_model_is_bit_exact_in_rtl(tmp_path):
    out = tmp_path / "f"
    assert cli.main(["flow", "--out", str(out), "--quiet", "--no-synth", "--simulator",
                     "verilator", *_train_args(1, 1, "dsq"), "--batchnorm"]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert json.loads((out / "train.json").read_text())["config"]["batchnorm"]
    assert rep["bit_exact"]["verilator"]["mismatches"] == 0
    assert rep["accuracy"]["golden"] == rep["accuracy"]["rtl"] == rep["accuracy"]["quantized"]
    # the learned per-pixel input quantizer is in the model file, and the codes the golden
    # model and the RTL ran are its codes of the real test inputs: pixel >= threshold
    from softfloor import intmodel
    from softfloor.data import digits_input_spec, load_digits_split
    model = intmodel.load(out / "model.intmodel.json")
    split = load_digits_split(1, "learned")
    learned = json.loads((out / "train.json").read_text())["input_thresholds"]
    assert model.input.per_value and model.input.to_dict() == digits_input_spec(1, learned).to_dict()
    assert model.input.to_dict() == load_checkpoint(out / "model.pt").input_spec.to_dict()
    codes = np.load(out / "inputs.npz")["codes"]
    assert np.array_equal(codes, model.input.quantize(split.x_test))
    assert np.array_equal(codes, (np.rint(split.x_test * 16) >= np.array(learned)).astype(int))
    assert np.array_equal(np.load(out / "vectors.npz")["inputs"], codes)


@pytest.mark.sim
@pytest.mark.parametrize("option, value", [("activation", "hardtanh"), ("scales", "free")])
def test_flow_option_is_bit_exact_in_rtl_on_both_simulators(option, value, tmp_path):
    """`flow --activation hardtanh` (signed activation codes between the RTL engines) and
    `flow --scales free` (requantization by integer multipliers): every test sample on Verilator
    through the flow, then the first 48 on Icarus (its run is ~20x slower)."""
    from softfloor import intmodel
    from softfloor.sim import cosim, tools
    for sim in tools.SIMULATORS:
        tools.ensure(sim)
    out = tmp_path / "f"
    assert cli.main(["flow", "--out", str(out), "--quiet", "--no-synth", "--simulator",
                     "verilator", f"--{option}", value, *_train_args(4, 3, "ste")]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["config"][option] == value
    assert json.loads((out / "train.json").read_text())["config"][option] == value
    assert rep["bit_exact"]["verilator"]["mismatches"] == 0
    assert rep["accuracy"]["golden"] == rep["accuracy"]["rtl"] == rep["accuracy"]["quantized"]
    model = intmodel.load(out / "model.intmodel.json")
    rqs = [x for x in model.layers if isinstance(x, intmodel.Requant)]
    man = json.loads((out / "manifest.json").read_text())
    if option == "activation":
        assert [x.signed for x in rqs] == [True, True]
        assert any(e.get("in_signed") for e in man["layers"])
    else:
        assert all(x.multiplier & (x.multiplier - 1) for x in rqs)  # not powers of two
    vec = np.load(out / "vectors.npz")
    r = cosim.cosimulate(out / f"{man['top']}.v", man, vec["inputs"][:48], "icarus",
                         tmp_path / "icarus", expected=vec["golden"][:48])
    np.testing.assert_array_equal(r.outputs, vec["golden"][:48])


@pytest.mark.sim
def test_first_weight_bits_is_bit_exact_in_rtl_on_both_simulators(tmp_path):
    """`flow --weight-bits 1 --act-bits 1 --first-weight-bits 8`: a binary network whose first
    layer (on the 1-bit input codes) keeps 8-bit weights; the RTL engines take each layer's own
    weight width. Every test sample on Verilator, the first 48 on Icarus."""
    from softfloor import intmodel
    from softfloor.sim import cosim, tools
    for sim in tools.SIMULATORS:
        tools.ensure(sim)
    out = tmp_path / "f"
    assert cli.main(["flow", "--out", str(out), "--quiet", "--no-synth", "--simulator",
                     "verilator", "--first-weight-bits", "8", *_train_args(1, 1, "ste")]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["config"]["first_weight_bits"] == 8 and rep["config"]["weight_bits"] == 1
    assert rep["bit_exact"]["verilator"]["mismatches"] == 0
    assert rep["accuracy"]["golden"] == rep["accuracy"]["rtl"] == rep["accuracy"]["quantized"]
    model = intmodel.load(out / "model.intmodel.json")
    dense = [x for x in model.layers if isinstance(x, intmodel.Dense)]
    assert [d.weight_bits for d in dense] == [8, 1, 1]
    assert len(np.unique(dense[0].weight)) > 3
    man = json.loads((out / "manifest.json").read_text())
    vec = np.load(out / "vectors.npz")
    r = cosim.cosimulate(out / f"{man['top']}.v", man, vec["inputs"][:48], "icarus",
                         tmp_path / "icarus", expected=vec["golden"][:48])
    np.testing.assert_array_equal(r.outputs, vec["golden"][:48])
