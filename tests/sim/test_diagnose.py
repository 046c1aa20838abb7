"""Diagnostics: a deliberately broken design is caught, and the report names layer and element."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from softfloor import arith, golden
from softfloor.hw.generate import build_manifest, generate
from softfloor.intmodel import Dense, InputSpec, IntModel, OutputSpec, Requant
from softfloor.sim import cosim, diagnose
from tests.randmodel import acc_bits_for, random_codes


def copy_model(model: IntModel) -> IntModel:
    return IntModel.from_dict(model.to_dict())


def base_model(seed=31):
    """12-8-6-4, 4-bit signed codes, shifts sized so the outputs rarely saturate (every
    rounding decision shows)."""
    rng = np.random.default_rng(seed)
    spec = InputSpec((12,), 4, True, scale=1.0)
    t, layers, sizes = spec.code_type, [], (12, 8, 6, 4)
    for k, (shift, mode) in enumerate([(3, "half_even"), (3, "half_up"), (2, "floor")]):
        w = rng.integers(-8, 8, size=(sizes[k + 1], sizes[k]))
        b = rng.integers(-16, 16, size=sizes[k + 1])
        d = Dense(f"fc{k}", w, b, 4, 6, acc_bits_for(w, b, t))
        rq = Requant(f"rq{k}", shift, mode, 6 if k < 2 else 8, True,
                     *arith.code_range(6 if k < 2 else 8, True))
        t = rq.out_type(d.out_type(t))
        layers += [d, rq]
    return IntModel(spec, layers, OutputSpec(1.0), "diag"), rng


def broken_rounding(model: IntModel, layer: str) -> IntModel:
    """The same model, but Requant ``layer`` rounds with a different mode (and shift >= 2)."""
    bad = copy_model(model)
    for k, lay in enumerate(bad.layers):
        if lay.name == layer:
            other = {"floor": "half_up", "half_up": "floor", "half_even": "floor"}[lay.rounding]
            bad.layers[k] = dataclasses.replace(lay, rounding=other)
    return bad


def first_diff(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.nonzero(a != b)[0][0])


# -- pure Python: probe plan and layer comparison -------------------------------------------

def test_probe_specs_fallbacks_and_manifest_fields():
    model, _ = base_model()
    man = build_manifest(model)
    # Fallbacks (a manifest without the PE x SIMD fields): engine{i}_{name}, 1 element per
    # transfer, bits/signedness of the golden type.
    for entry in man["layers"]:
        for k in ("instance", "out_elements_per_transfer", "out_element_bits", "out_signed"):
            entry.pop(k, None)
    specs = diagnose.probe_specs(man, model)
    assert [s["instance"] for s in specs] == [f"engine{i}_fc{i}" for i in range(3)]
    assert [s["layer"] for s in specs] == ["rq0", "rq1", "rq2"]
    types = model.types()
    for s in specs:
        t = types[s["golden_index"] + 1]
        assert (s["element_bits"], s["signed"], s["elements_per_transfer"]) == (t.bits, t.signed, 1)
    # The PE x SIMD manifest fields win over the fallbacks.
    man["layers"][1].update(instance="engine1_x", out_elements_per_transfer=2,
                            out_element_bits=9, out_signed=True)
    s1 = diagnose.probe_specs(man, model)[1]
    assert (s1["instance"], s1["elements_per_transfer"], s1["element_bits"], s1["signed"]) == \
        ("engine1_x", 2, 9, True)
    man["layers"][0]["fused"] = ["nope"]
    with pytest.raises(ValueError, match="not a layer"):
        diagnose.probe_specs(man, model)


def test_first_bad_layer_on_synthetic_probes():
    model, rng = base_model()
    x = random_codes(rng, model, 5)
    specs = diagnose.probe_specs(build_manifest(model), model)
    _, inter = golden.run(model, x, intermediates=True)
    probes = [inter[s["golden_index"]].copy() for s in specs]
    assert diagnose.first_bad_layer(model, specs, x, probes, 3)["layers_ok"] == ["rq0", "rq1", "rq2"]
    probes[1][3, 4] += 1
    probes[2][3, 0] += 1          # downstream damage is not the first bad layer
    d = diagnose.first_bad_layer(model, specs, x, probes, 3)
    assert (d["first_bad_layer"], d["element"], d["got"] - d["expected"]) == ("rq1", 4, 1)
    assert d["layers_ok"] == ["rq0"] and d["fused"] == ["fc1", "rq1"]
    d = diagnose.first_bad_layer(model, specs, x, [p[:2] for p in probes], 3)
    assert d["first_bad_layer"] == "rq0" and "never left" in d["note"]


def test_first_mismatch():
    a = np.array([[1, 2], [3, 4], [5, 6]])
    b = a.copy()
    assert diagnose.first_mismatch(a, b) is None
    b[1, 1] = 0
    assert diagnose.first_mismatch(a, b) == (1, 1)
    assert diagnose.first_mismatch(a[:1], a) == (1, 0)


# -- simulator-backed: broken RTL is caught and located --------------------------------------

@pytest.mark.sim
@pytest.mark.parametrize("layer", ["rq1"])
def test_wrong_rounding_mode_is_caught_and_located(simulator, layer, tmp_path):
    """RTL generated from a copy whose Requant ``layer`` rounds differently: the suite catches
    it, and the diagnosis names that layer, the first differing element and its codes."""
    model, rng = base_model()
    bad = broken_rounding(model, layer)
    x = random_codes(rng, model, 40)
    want = golden.run(model, x)
    assert np.any(golden.run(bad, x) != want), "fixture must change the outputs"
    gen = generate(bad, tmp_path / "rtl")
    r = cosim.cosimulate(gen.verilog, gen.manifest, x, simulator, tmp_path / "run",
                         expected=want, measure_latency=False)
    assert r.mismatches > 0
    d = diagnose.diagnose(model, gen.manifest, gen.verilog, x, want, r.outputs, simulator,
                          tmp_path / "diag")
    print(d)
    s = d.sample
    assert s == diagnose.first_mismatch(r.outputs, want)[0]
    _, good_i = golden.run(model, x, intermediates=True)
    _, bad_i = golden.run(bad, x, intermediates=True)
    k = [lay.name for lay in model.layers].index(layer)
    assert d.first_bad_layer == layer
    assert d.element == first_diff(bad_i[k][s], good_i[k][s])
    assert (d.expected, d.got) == (good_i[k][s][d.element], bad_i[k][s][d.element])
    assert d.waves and (tmp_path / "diag").exists()
    from pathlib import Path
    assert Path(d.waves).stat().st_size > 0
    assert f"first bad layer: {layer}" in str(d) and d.waves in str(d)


@pytest.mark.sim
def test_one_wrong_weight_is_located(simulator, tmp_path):
    """One weight of fc1 differs in the RTL: the diagnosis names engine fc1+rq1 and its row."""
    model, rng = base_model()
    bad = copy_model(model)
    fc1 = bad.layers[2]
    assert isinstance(fc1, Dense) and fc1.name == "fc1"
    w = np.array(fc1.weight)
    row, col = 5, 3
    lo, hi = (-1, 1) if fc1.weight_bits == 1 else (-(1 << fc1.weight_bits - 1),
                                                    (1 << fc1.weight_bits - 1) - 1)
    w[row, col] = lo if w[row, col] > (lo + hi) // 2 else hi
    bad.layers[2] = dataclasses.replace(fc1, weight=w, acc_bits=fc1.acc_bits + 4)
    x = random_codes(rng, model, 60)
    want = golden.run(model, x)
    assert np.any(golden.run(bad, x) != want), "fixture must change the outputs"
    gen = generate(bad, tmp_path / "rtl")
    r = cosim.cosimulate(gen.verilog, gen.manifest, x, simulator, tmp_path / "run",
                         expected=want, measure_latency=False)
    d = diagnose.diagnose(model, gen.manifest, gen.verilog, x, want, r.outputs, simulator,
                          tmp_path / "diag", waves=False)
    print(d)
    assert d.first_bad_layer == "rq1" and d.fused == ["fc1", "rq1"]
    assert d.element == row and d.bad_elements == 1
    assert d.layers_ok == ["rq0"]


@pytest.mark.sim
def test_a_good_design_needs_no_diagnosis(tmp_path):
    model, rng = base_model()
    x = random_codes(rng, model, 3)
    want = golden.run(model, x)
    assert diagnose.diagnose(model, {}, None, x, want, want.copy(), "icarus", tmp_path) is None
