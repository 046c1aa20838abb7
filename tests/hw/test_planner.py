"""The folding planner: plans, objectives, overrides, link widths, and estimates vs synthesis."""
from __future__ import annotations

import json

import numpy as np
import pytest

from softfloor.hw import planfile, planner, synth
from softfloor.hw.generate import build_manifest, generate
from softfloor.hw.rtl import cmvm
from softfloor.hw.rtl.mvu import const_graph
from softfloor.intmodel import CodeType, Dense, InputSpec, IntModel, OutputSpec, Requant

from tests.randmodel import acc_bits_for, digits_model, random_model


def test_throughput_plan_balances_and_prints():
    p = planner.plan(digits_model(), "up5k", "throughput")
    assert p.fits and p.estimate["lc"] <= p.budget["lc"] and p.estimate["ram"] <= 30
    dense = [lp for lp in p.layers if lp.kind == "dense"]
    assert max(lp.cycles for lp in dense) == p.initiation_interval
    assert p.mac_utilisation >= 0.9
    # a fold one step faster for the bottleneck layer would not fit the budget
    text = str(p)
    for lp in p.layers:
        assert f"{lp.pe}x{lp.simd}" in text and lp.name in text
    assert "est LC" in text and "RAM" in text and "DSP" in text
    d = json.loads(json.dumps(p.to_dict()))
    assert d["initiation_interval"] == p.initiation_interval
    assert [l["name"] for l in d["layers"]] == ["fc0", "fc1", "fc2"]


def test_bigger_devices_give_smaller_ii_and_latency_objective_unrolls():
    m = digits_model()
    up = planner.plan(m, "up5k")
    big = planner.plan(m, "ecp5-85f")
    assert big.initiation_interval < up.initiation_interval
    lat = planner.plan(m, "up5k", "latency")
    assert lat.cycles_per_inference <= up.cycles_per_inference and lat.fits


def test_hx8k_plan_keeps_mac_lanes_busy():
    """The throughput search prefers folds without padded lanes: >= 90% MAC-lane utilisation
    on the HX8K too (a fold one cycle faster but with padded lanes used to win at 88%)."""
    m = digits_model()
    for dev in ("up5k", "hx8k", "ecp5-25f"):
        p = planner.plan(m, dev)
        assert p.fits and p.mac_utilisation >= planner.DEFAULT_MIN_UTILISATION, (dev, str(p))
    # without the utilisation floor: the smallest II that fits, whatever its utilisation
    loose = planner.plan(m, "hx8k", min_utilisation=0.0)
    assert loose.initiation_interval <= planner.plan(m, "hx8k").initiation_interval


def test_latency_objective_fully_unrolls_when_it_fits():
    """pe = rows and simd = cols for every layer when the device and the beats allow it: the
    weights become constants (no ROM: 0 RAM blocks), latency as the engines add it up."""
    rng = np.random.default_rng(5)
    m = random_model(rng, [12, 8, 4], weight_bits=4, final_requant=True)
    p = planner.plan(m, "ecp5-25f", "latency", elements_per_beat=(12, 4))
    assert [(lp.pe, lp.simd) for lp in p.layers if lp.kind == "dense"] == [(8, 12), (4, 8)]
    assert p.initiation_interval == 1 and p.estimate["ram"] == 0
    man = build_manifest(m, folding=p, device="ecp5-25f", elements_per_beat=(12, 4))
    assert man["cycles_per_inference"] == p.cycles_per_inference
    types = m.types()
    want = [const_graph(l.weight, types[k]).stages() - 1 for k, l in enumerate(m.layers)
            if isinstance(l, Dense)]
    assert [l["tree_levels"] for l in man["layers"] if l["kind"] == "dense"] == want
    # no beats given: the default one-element output beat cannot drain 4 results per cycle,
    # so the latency objective widens the beats to the narrowest that let every layer unroll
    q = planner.plan(m, "ecp5-25f", "latency")
    assert [(lp.pe, lp.simd) for lp in q.layers if lp.kind == "dense"] == [(8, 12), (4, 8)]
    assert q.cycles_per_inference == p.cycles_per_inference
    assert (q.pipeline.in_layout.elements_per_beat, q.pipeline.out_layout.elements_per_beat) \
        == (12, 4)
    assert any(n.startswith("beats: 12 input elements") for n in q.notes), q.notes
    # the plan's beats reach the top when the generator is given none
    man = build_manifest(m, folding=q, device="ecp5-25f")
    assert man["cycles_per_inference"] == q.cycles_per_inference
    assert man["input"]["elements_per_beat"] == 12 and man["output"]["elements_per_beat"] == 4
    # the throughput objective keeps the default beats
    assert planner.plan(m, "ecp5-25f").pipeline.in_layout.elements_per_beat == 1


def test_latency_objective_says_why_a_layer_stays_folded():
    """On a device too small to unroll, one note per folded layer names the reason."""
    rng = np.random.default_rng(5)
    m = random_model(rng, [12, 8, 4], weight_bits=4, final_requant=True)
    p = planner.plan(m, "hx1k", "latency")
    why = {n.split(" ")[0]: n for n in p.notes if "not fully unrolled" in n}
    assert set(why) == {"fc0", "fc1"}, p.notes
    assert "estimated logic cells > the budget of 960" in why["fc0"]
    assert "the streams cannot carry it" in why["fc1"] and "output stream" in why["fc1"]
    assert planner.plan(m, "hx1k").notes == []             # throughput: no such notes


def test_const_tree_counts_the_shared_adder_graph():
    """The constant-weight estimate counts the carry-chain bits of the matrix's adder graph
    (zeros free, low bits passed through) and its pipeline registers."""
    t = CodeType.full(4, False)
    assert planner.const_tree(np.zeros((3, 8), dtype=np.int64), t) == (0, 0)
    # a single term: no adder, the input registered once (the product stage), u4
    assert planner.const_tree(np.array([[1, 0, 0, 0]]), t) == (0, 4)
    # 7 = 8 - 1: one subtraction (x << 3) - x in [0, 105]: 7 bits, registered
    assert planner.const_tree(np.array([[7, 0, 0, 0]]), t) == (7, 7)
    # the same two columns in two rows: x0 + x1 built once (5 bits), then 2*(..) and 3*(..)
    adders, regs = planner.const_tree(np.array([[1, 1, 0], [3, 3, 0]]), t)
    assert adders == 5 + 7 and regs == 5 + 7
    # 2 rows with 3 shared pairs: fewer adder bits than the plain trees
    w = np.array([[1, 2, -1, 3], [1, 2, -1, -3]])
    shared = planner.const_tree(w, t)[0]
    assert shared < cmvm.naive(w, [(0, 15)] * 4).total_adder_bits


def test_overrides_are_kept_and_checked():
    m = digits_model()
    p = planner.plan(m, "up5k", overrides={"fc1": (2, 4)})
    fc1 = next(lp for lp in p.layers if lp.name == "fc1")
    assert (fc1.pe, fc1.simd, fc1.override) == (2, 4, True)
    assert p.initiation_interval >= 16 * 16
    assert "fc1 *" in str(p)
    with pytest.raises(ValueError, match="--fold fc7: no dense layer of that name"):
        planner.plan(m, "up5k", overrides={"fc7": (1, 1)})
    with pytest.raises(ValueError, match=r"--fold fc2=11x1: pe must be in 1..10"):
        planner.plan(m, "up5k", overrides={"fc2": (11, 1)})
    assert planner.parse_fold("fc1=8x4") == ("fc1", (8, 4))
    with pytest.raises(ValueError, match="expected LAYER=PExSIMD"):
        planner.parse_fold("fc1=8*4")
    with pytest.raises(ValueError, match="unknown objective"):
        planner.plan(m, "up5k", "area")


def test_plans_for_random_models_are_valid():
    """Whatever the shapes, the planner's folds build (link widths exist) and fit when possible."""
    for seed in range(6):
        rng = np.random.default_rng(seed)
        sizes = [int(v) for v in rng.integers(1, 40, 4)]
        m = random_model(rng, sizes)
        for dev in ("hx1k", "up5k"):
            for obj in planner.OBJECTIVES:
                p = planner.plan(m, dev, obj)
                man = build_manifest(m, folding=p, device=dev)
                assert man["initiation_interval"] == p.initiation_interval
                assert man["cycles_per_inference"] == p.cycles_per_inference


class Pool:
    """A layer of an op the generator has no engine for (as a future format may add)."""
    op = "maxpool"
    name = "pool"

    def check(self, t, where):
        pass

    def out_type(self, t):
        return t


def test_unsupported_op_names_layer_and_op(tmp_path):
    rng = np.random.default_rng(0)
    m = random_model(rng, [4, 3])
    m.layers.insert(1, Pool())
    with pytest.raises(planner.UnsupportedLayerError,
                       match=r"layers\[1\] \(pool\): op 'maxpool' has no hardware op"):
        generate(m, tmp_path)
    with pytest.raises(planner.UnsupportedLayerError, match="maxpool"):
        build_manifest(m, folding={})


def test_dsp_lanes_only_where_products_qualify_and_fit():
    rng = np.random.default_rng(1)
    spec = InputSpec((16,), 8, False, 1.0)
    w = rng.integers(-128, 128, (8, 16))
    b = np.zeros(8, dtype=np.int64)
    d = Dense("fc0", w, b, 8, 2, acc_bits_for(w, b, spec.code_type))
    m = IntModel(spec, [d, Requant("rq", 12, "half_up", 8, False, 0, 255)], OutputSpec(1.0))
    p = planner.plan(m, "up5k", overrides={"fc0": (2, 4)})
    assert p.layers[0].dsp and p.estimate["dsp"] == 8
    p = planner.plan(m, "up5k", overrides={"fc0": (4, 4)})     # 16 lanes > 8 DSPs
    assert not p.layers[0].dsp and p.estimate["dsp"] == 0
    assert not planner.plan(m, "hx8k", overrides={"fc0": (2, 4)}).layers[0].dsp


def _layer_model(rows, cols, wb, xb, seed=0):
    rng = np.random.default_rng(seed)
    spec = InputSpec((cols,), xb, False, 1.0)
    w = rng.integers(-(1 << (wb - 1)), 1 << (wb - 1), (rows, cols))
    b = rng.integers(-64, 64, rows)
    d = Dense("fc0", w, b, wb, 8, acc_bits_for(w, b, spec.code_type))
    rq = Requant("act0", max(0, d.acc_bits - xb - 2), "half_up", xb, False, 0, (1 << xb) - 1)
    return IntModel(spec, [d, rq], OutputSpec(1.0))


@pytest.mark.synth
@pytest.mark.parametrize("rows,fold", [(32, (4, 4)), (16, (2, 8))])
def test_estimate_within_25_percent_of_synthesis(tmp_path, rows, fold):
    """Estimated vs synthesized logic cells (Yosys + nextpnr, UP5K) for a rows x 32 w4a4 layer
    (the hardware benchmark reports the same ratio for whole MLPs)."""
    m = _layer_model(rows, 32, 4, 4)
    gen = generate(m, tmp_path, folding={"fc0": fold})
    r = synth.synthesize(gen.verilog, gen.manifest["top"], tmp_path / "synth", "up5k")
    est = gen.manifest["resources_estimate"]
    ratio = est["lc"] / r.logic_cells
    print(f"fold {fold}: estimate {est['lc']} LC, synthesized {r.logic_cells} LC, "
          f"ratio {ratio:.2f}; RAM {est['ram']} vs {r.ram_blocks}")
    assert 0.75 <= ratio <= 1.25, (est, r)
    assert est["ram"] == r.ram_blocks


def _mlp(sizes, wb=4, xb=4, seed=0):
    """A w4a4 MLP as digits_model builds it (requant shifts that keep the activations live)."""
    rng = np.random.default_rng(seed)
    spec = InputSpec((sizes[0],), xb, False, 1.0)
    t, layers = spec.code_type, []
    for k in range(len(sizes) - 1):
        w = rng.integers(-(1 << (wb - 1)), 1 << (wb - 1), (sizes[k + 1], sizes[k]))
        b = rng.integers(-64, 64, sizes[k + 1])
        d = Dense(f"fc{k}", w, b, wb, 8, acc_bits_for(w, b, t))
        t = d.out_type(t)
        shift = max(0, max(abs(t.lo), abs(t.hi)).bit_length() - xb - 1)
        rq = Requant(f"act{k}", shift, "half_up", xb, False, 0, (1 << xb) - 1)
        layers += [d, rq]
        t = rq.out_type(t)
    return IntModel(spec, layers, OutputSpec(1.0))


@pytest.mark.synth
def test_ecp5_estimate_within_25_percent_of_synthesis(tmp_path):
    """ECP5 (Yosys synth_ecp5 + nextpnr-ecp5, LUT4 slots): a folded layer (ROM weights) feeding
    a fully unrolled one (constant weights): the estimate within 25% of the synthesized LUTs,
    no DSP, and the ROMs/buffers as the estimate maps them (logic and distributed RAM here)."""
    m = _mlp([16, 12, 4])
    gen = generate(m, tmp_path, folding={"fc0": (2, 4), "fc1": (4, 12)}, device="ecp5-25f",
                   elements_per_beat=(2, 4))
    assert [l["const_weights"] for l in gen.manifest["layers"] if l["kind"] == "dense"] == \
        [False, True]
    r = synth.synthesize(gen.verilog, gen.manifest["top"], tmp_path / "synth", "ecp5-25f")
    est = gen.manifest["resources_estimate"]
    ratio = est["lc"] / r.logic_cells
    print(f"ECP5: estimate {est['lc']} LUT4, synthesized {r.logic_cells} ({r.ff} FF), ratio "
          f"{ratio:.2f}; RAM {est['ram']} vs {r.ram_blocks}, {r.seconds:.0f} s ({r.tools})")
    assert 0.75 <= ratio <= 1.25, (est, r)
    assert est["ram"] == r.ram_blocks and r.dsp == 0
    assert r.fmax_mhz is not None and r.fmax_mhz > 20


def test_cli_rtl_stage_prints_and_records_the_plan(tmp_path, capsys):
    from softfloor import cli, intmodel
    from softfloor.flow import MODEL_FILE
    m = random_model(np.random.default_rng(4), [12, 8, 4], final_requant=True)
    intmodel.save(m, tmp_path / MODEL_FILE)
    assert cli.main(["rtl", "--out", str(tmp_path), "--device", "hx8k", "--objective", "latency",
                     "--fold", "fc0=2x3"]) == 0
    out = capsys.readouterr().out
    assert "plan for hx8k (latency)" in out and "fc0 *" in out
    man = json.loads((tmp_path / "manifest.json").read_text())
    assert man["device"] == "hx8k" and man["plan"]["objective"] == "latency"
    assert (man["layers"][0]["pe"], man["layers"][0]["simd"]) == (2, 3)
    rec = json.loads((tmp_path / "stages" / "rtl.json").read_text())
    assert rec["plan"] == man["plan"]
    assert cli.main(["rtl", "--out", str(tmp_path), "--fold", "fc0=2"]) == 2
    assert "expected LAYER=PExSIMD" in capsys.readouterr().err


def test_plan_file_records_the_widened_beats():
    """A latency plan's widened beats go into the plan file and come back from it; default
    beats are not written; a malformed entry is a PlanFileError naming the field."""
    rng = np.random.default_rng(5)
    m = random_model(rng, [12, 8, 4], weight_bits=4, final_requant=True)
    q = planner.plan(m, "ecp5-25f", "latency")
    doc = planfile.plan_document(q)
    assert doc["elements_per_beat"] == {"input": 12, "output": 4}
    back = planfile.parse_plan(json.loads(json.dumps(doc)), m, "ecp5-25f")
    assert back.cycles_per_inference == q.cycles_per_inference
    assert planfile.plan_document(back) == doc
    assert "elements_per_beat" not in planfile.plan_document(planner.plan(m, "ecp5-25f"))
    bad = dict(doc, elements_per_beat={"input": 0, "output": 4})
    with pytest.raises(planfile.PlanFileError, match="elements_per_beat"):
        planfile.parse_plan(bad, m, "ecp5-25f")


def test_plan_file_window_memory():
    """Conv/pool entries record their window memory; a plan file may switch it where a line
    buffer is possible; a wrong value or an impossible line buffer is a one-line
    PlanFileError naming file, layer and field; the manifest records the choice."""
    from softfloor.benchmarks.workloads import random_network
    m = random_network((("conv", 8), ("conv", 8), ("pool",), ("dense", 3)), (3, 24, 24), 8, 2,
                       4)
    q = planner.plan(m, "ecp5-25f")
    doc = planfile.plan_document(q)
    modes = {e["name"]: e["window"] for e in doc["layers"] if "window" in e}
    assert modes == {"conv0": "frame", "conv1": "lines", "pool2": "lines"}
    assert planfile.plan_document(planfile.parse_plan(json.loads(json.dumps(doc)), m,
                                                      "ecp5-25f")) == doc
    k = next(i for i, e in enumerate(doc["layers"]) if e["name"] == "conv1")
    frame = json.loads(json.dumps(doc))
    frame["layers"][k]["window"] = "frame"
    back = planfile.parse_plan(frame, m, "ecp5-25f")
    assert back.pipeline.ops[k].window_mode == "frame"
    assert back.estimate["ram"] > q.estimate["ram"]
    for where, value, match in [(k, "ring", "conv1\\).window: 'ring' is not a window memory"),
                                (0, "lines", "conv0\\).window: \"lines\" is not possible")]:
        bad = json.loads(json.dumps(doc))
        bad["layers"][where]["window"] = value
        with pytest.raises(planfile.PlanFileError, match=match) as e:
            planfile.parse_plan(bad, m, "ecp5-25f", where="p.json")
        assert str(e.value).startswith("p.json: layers[") and "\n" not in str(e.value)
    man = build_manifest(m, device="ecp5-25f", folding=q)
    assert {l["name"]: l.get("window") for l in man["layers"]}["conv1"] == "lines"
