"""The whole chain, as `make demo` runs it, and the chain from a user's model file."""
from __future__ import annotations

import json

import numpy as np
import pytest

from softfloor import cli, golden, intmodel
from softfloor.sim import tools
from tests.randmodel import random_model

REPORT_KEYS = [
    "accuracy.float", "accuracy.quantized", "accuracy.golden", "accuracy.rtl",
    "hardware.cycles_per_inference", "hardware.initiation_interval", "hardware.mac_units",
    "hardware.macs_per_inference", "synth.device", "synth.logic_cells", "synth.ff", "synth.dsp",
    "synth.ram_blocks", "synth.fmax_mhz", "timings",
]


def get(d: dict, dotted: str):
    for k in dotted.split("."):
        d = d[k]
    return d


@pytest.mark.sim
@pytest.mark.slow
def test_default_flow_is_bit_exact_on_both_simulators(tmp_path):
    for sim in tools.SIMULATORS:  # both, always: missing ones fail here
        tools.ensure(sim)
    out = tmp_path / "demo"
    assert cli.main(["flow", "--out", str(out), "--no-synth", "--quiet"]) == 0
    rep = json.loads((out / "report.json").read_text())
    for key in REPORT_KEYS:
        get(rep, key)  # present (synth values are null with --no-synth)
    acc = rep["accuracy"]
    assert acc["quantized"] >= 0.95
    assert acc["quantized"] == acc["golden"] == acc["rtl"]
    for sim in tools.SIMULATORS:
        assert rep["bit_exact"][sim] == {"samples": 360, "mismatches": 0, "first_mismatches": []}
    vec = np.load(out / "vectors.npz")
    assert vec["inputs"].shape == (360, 64) and vec["golden"].shape == (360, 10)
    for sim in tools.SIMULATORS:
        np.testing.assert_array_equal(vec[f"rtl_{sim}"], vec["golden"])
    model = intmodel.load(out / "model.intmodel.json")
    np.testing.assert_array_equal(golden.run(model, vec["inputs"]), vec["golden"])
    man = json.loads((out / "manifest.json").read_text())
    assert rep["hardware"]["cycles_per_inference"] == man["cycles_per_inference"]
    assert rep["hardware"]["initiation_interval"] == man["initiation_interval"]
    assert (out / f"{man['top']}.v").exists()
    assert set(rep["timings"]) >= {"data", "train", "export", "golden", "rtl", "sim"}
    # no training flag given: train.json records the w4a4 defaults, resolved, and that they are
    cfg = json.loads((out / "train.json").read_text())["config"]
    assert (cfg["surrogate"], cfg["batchnorm"]) == ("sigmoid", True)
    assert {"surrogate", "batchnorm", "lr", "lr_schedule", "augment_noise"} <= set(cfg["defaults"])


@pytest.mark.sim
def test_flow_from_a_model_file_and_float_inputs(tmp_path):
    rng = np.random.default_rng(5)
    model = random_model(rng, (12, 6, 4), in_bits=4, in_signed=False)
    model.input.scale = 0.25
    mpath = intmodel.save(model, tmp_path / "user.intmodel.json")
    x = rng.uniform(-1, 5, (30, 12))
    y = rng.integers(0, 4, 30)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    out = tmp_path / "out"
    assert cli.main(["flow", "--out", str(out), "--model", str(mpath), "--inputs",
                     str(tmp_path / "x.npy"), "--labels", str(tmp_path / "y.npy"),
                     "--simulator", "verilator", "--no-synth", "--quiet"]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["bit_exact"]["verilator"]["mismatches"] == 0
    vec = np.load(out / "vectors.npz")
    np.testing.assert_array_equal(vec["inputs"], model.input.quantize(x))
    np.testing.assert_array_equal(vec["rtl_verilator"], golden.run(model, vec["inputs"]))
    assert rep["accuracy"]["golden"] == rep["accuracy"]["rtl"]


@pytest.mark.sim
@pytest.mark.slow
def test_flow_with_a_class_output_is_bit_exact_on_both_simulators(tmp_path):
    """``flow --output class``: the digits MLP ends in an argmax, the RTL streams one class
    index per sample; bit-exact on both simulators, RTL accuracy equal to golden's."""
    for sim in tools.SIMULATORS:
        tools.ensure(sim)
    out = tmp_path / "cls"
    assert cli.main(["flow", "--out", str(out), "--output", "class", "--epochs", "4",
                     "--no-synth", "--quiet"]) == 0
    rep = json.loads((out / "report.json").read_text())
    model = intmodel.load(out / "model.intmodel.json")
    assert model.layers[-1].op == "argmax" and model.output_shape == (1,)
    vec = np.load(out / "vectors.npz")
    assert vec["golden"].shape == (360, 1)
    for sim in tools.SIMULATORS:
        assert rep["bit_exact"][sim]["mismatches"] == 0
        np.testing.assert_array_equal(vec[f"rtl_{sim}"], vec["golden"])
    acc = rep["accuracy"]
    assert acc["golden"] == acc["rtl"] == acc["quantized"] > 0.5
    man = json.loads((out / "manifest.json").read_text())
    assert man["output"]["elements"] == 1 and man["layers"][-1]["kind"] == "argmax"


@pytest.mark.sim
def test_flow_with_a_sigmoid_lut_model_file(tmp_path):
    """A user's model with a sigmoid ``lut`` activation through ``flow --model`` on both
    simulators: bit-exact, the report's accuracies equal."""
    from tests.hw.test_lut_argmax import sigmoid_lut
    from tests.randmodel import acc_bits_for
    rng = np.random.default_rng(8)
    spec = intmodel.InputSpec((16,), 4, False, 0.25)
    t = spec.code_type
    w = rng.integers(-7, 8, (12, 16))
    b = rng.integers(-9, 10, 12)
    d0 = intmodel.Dense("fc0", w, b, 4, 5, acc_bits_for(w, b, t))
    rq = intmodel.Requant("rq0", 2, "half_even", 6, True, -32, 31)
    t1 = rq.out_type(d0.out_type(t))
    sig = sigmoid_lut(t1, 4, False, scale=0.15)
    w2 = rng.integers(-7, 8, (5, 12))
    b2 = rng.integers(-9, 10, 5)
    d1 = intmodel.Dense("fc1", w2, b2, 4, 5, acc_bits_for(w2, b2, sig.out_type(t1)))
    model = intmodel.IntModel(spec, [d0, rq, sig, d1], intmodel.OutputSpec(0.1), "sigmoid-mlp")
    mpath = intmodel.save(model, tmp_path / "sig.intmodel.json")
    x = rng.uniform(0, 4, (40, 16))
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", rng.integers(0, 5, 40))
    out = tmp_path / "out"
    assert cli.main(["flow", "--out", str(out), "--model", str(mpath), "--inputs",
                     str(tmp_path / "x.npy"), "--labels", str(tmp_path / "y.npy"),
                     "--plan-out", str(tmp_path / "plan.json"), "--no-synth", "--quiet"]) == 0
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert [(l["name"], l["kind"], l["memory"]) for l in plan["layers"]][1] == \
        ("sig", "lut", "logic")
    rep = json.loads((out / "report.json").read_text())
    vec = np.load(out / "vectors.npz")
    for sim in tools.SIMULATORS:
        assert rep["bit_exact"][sim]["mismatches"] == 0
        np.testing.assert_array_equal(vec[f"rtl_{sim}"], golden.run(model, vec["inputs"]))
    assert rep["accuracy"]["golden"] == rep["accuracy"]["rtl"]
    man = json.loads((out / "manifest.json").read_text())
    assert [l["kind"] for l in man["layers"]] == ["dense", "lut", "dense"]
