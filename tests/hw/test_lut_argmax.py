"""The lut and argmax ops: units against the ops' numpy twins and the model's rules (Amaranth
sim), their latency and II formulas against the measured handshakes, and their lowering."""
from __future__ import annotations

import numpy as np
import pytest

from softfloor import arith, golden
from softfloor.hw import planner
from softfloor.hw.generate import build_manifest
from softfloor.hw.ops import ArgmaxOp, LutOp, lower
from softfloor.hw.ops.lut import ROM_ENTRIES
from softfloor.hw.top import SoftfloorTop
from softfloor.intmodel import (Argmax, CodeType, Conv2d, Dense, Flatten, InputSpec, IntModel,
                                Lut, MultiThreshold, OutputSpec, Requant)

from softfloor.sim.diagnose import stream_order
from tests.randmodel import acc_bits_for, random_codes
from .test_engine import run_engine
from .test_top import check_timing, stream_top


def sigmoid_lut(in_type: CodeType, bits: int = 4, signed: bool = False, name="sig",
                scale: float = 0.25, margin: int = 0) -> Lut:
    """A sigmoid table over ``in_type``'s codes (``margin`` extra entries each side)."""
    codes = np.arange(in_type.lo - margin, in_type.hi + margin + 1)
    lo, hi = arith.code_range(bits, signed)
    table = np.clip(np.rint(hi / (1 + np.exp(-codes * scale))), lo, hi).astype(np.int64)
    return Lut(name, table, int(codes[0]), bits, signed)


@pytest.mark.parametrize("bits,signed,ept,memory", [(4, True, 1, "logic"), (6, False, 2, "logic"),
                                                    (3, True, 3, "rom"), (8, True, 2, "rom")])
def test_lut_unit(bits, signed, ept, memory):
    """Every input code in every lane, gaps and backpressure; latency and II as the op says."""
    t = CodeType.full(bits, signed)
    rng = np.random.default_rng(bits)
    lut = sigmoid_lut(t, 5, True, margin=3)
    lut.table[:] = rng.permutation(lut.table)               # any function of one code
    op = LutOp.of(lut, t, elements=6, elements_per_transfer=ept, table_memory=memory)
    codes = np.arange(t.lo, t.hi + 1)
    x = np.stack([np.roll(codes, 3 * k) for k in range(6)], axis=1)
    want = lut.execute(x)
    np.testing.assert_array_equal(op.model(x), want)
    got, r = run_engine(op, x[:12])
    np.testing.assert_array_equal(got, want[:12])
    per = 6 // ept
    assert r.out_cycles[per - 1] - r.in_cycles[0] == op.latency
    assert set(np.diff(r.out_cycles[per - 1::per])) == {op.initiation_interval}
    got, _ = run_engine(op, x, gap=0.3, stall=0.4, seed=bits)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("features,ept,bits,signed", [(10, 1, 8, True), (10, 2, 4, False),
                                                      (12, 4, 6, True), (5, 5, 3, False),
                                                      (1, 1, 2, True), (7, 7, 16, True)])
def test_argmax_unit(features, ept, bits, signed):
    """First maximum (ties: the lowest index) per sample, narrow code ranges (many ties),
    gaps and backpressure; latency and II as the op says."""
    t = CodeType.full(bits, signed)
    rng = np.random.default_rng(features * ept)
    op = ArgmaxOp.of(Argmax("am", features), t, elements_per_transfer=ept)
    x = np.concatenate([rng.integers(t.lo, t.lo + 3, (20, features)),
                        rng.integers(t.lo, t.hi + 1, (20, features)),
                        np.full((2, features), t.hi), np.full((2, features), t.lo)])
    want = arith.argmax_first(x)[:, None]
    np.testing.assert_array_equal(op.model(x), want)
    got, r = run_engine(op, x[:6])
    np.testing.assert_array_equal(got, want[:6])
    assert r.out_cycles[0] - r.in_cycles[0] == op.latency
    assert set(np.diff(r.out_cycles[1:])) == {op.initiation_interval}
    got, _ = run_engine(op, x, gap=0.3, stall=0.5, seed=features)
    np.testing.assert_array_equal(got, want)


def mlp_lut_argmax(rng, sizes=(9, 8, 5), memory_entries=None) -> IntModel:
    """dense -> requant (8-bit signed) -> sigmoid lut -> dense -> argmax."""
    spec = InputSpec((sizes[0],), 3, False, 1.0)
    t = spec.code_type
    w = rng.integers(-7, 8, (sizes[1], sizes[0]))
    b = rng.integers(-9, 10, sizes[1])
    d0 = Dense("fc0", w, b, 4, 5, acc_bits_for(w, b, t))
    rq = Requant("rq0", 1, "half_even", 8, True, -128, 127)
    t1 = rq.out_type(d0.out_type(t))
    lut = sigmoid_lut(t1, 4, False, scale=0.05)
    t2 = lut.out_type(t1)
    w2 = rng.integers(-7, 8, (sizes[2], sizes[1]))
    b2 = rng.integers(-9, 10, sizes[2])
    d1 = Dense("fc1", w2, b2, 4, 5, acc_bits_for(w2, b2, t2))
    return IntModel(spec, [d0, rq, lut, d1, Argmax("cls", sizes[2])], OutputSpec(1.0), "lutnet")


@pytest.mark.parametrize("fold", [None, "plan"])
def test_top_with_lut_and_argmax(fold):
    """A network with a sigmoid lut and an argmax output: bit-exact with the golden model,
    gaps and backpressure; measured latency and II equal the manifest's."""
    rng = np.random.default_rng(3)
    model = mlp_lut_argmax(rng)
    folding = planner.plan(model, "up5k") if fold else {}
    pipeline = planner.realize(model, folding)
    assert [op.kind for op in pipeline.ops] == ["dense", "lut", "dense", "argmax"]
    man = build_manifest(model, folding=folding)
    assert man["output"]["element_bits"] == 3 and man["output"]["tdata_width"] == 8
    assert man["output"]["elements"] == 1 and not man["output"]["signed"]
    top = SoftfloorTop(model, folding=pipeline)
    codes = random_codes(rng, model, 12)
    check_timing(top, codes, man)
    out, _ = stream_top(SoftfloorTop(model, folding=folding), codes, gap=0.3, stall=0.4,
                        seed=4)
    np.testing.assert_array_equal(out, golden.run(model, codes))
    np.testing.assert_array_equal(golden.classify(model, out), out[:, 0])


def test_lut_memory_default_and_estimate():
    """Tables over more than ROM_ENTRIES reachable codes default to a ROM; the estimate grows
    with the table and the lanes."""
    small = LutOp.of(sigmoid_lut(CodeType.full(6, True)), CodeType.full(6, True), elements=4)
    assert small.memory == "logic"
    t = CodeType.full(10, True)
    model = IntModel(InputSpec((4,), 10, True, 1.0), [sigmoid_lut(t, 8, False, scale=0.01)],
                     OutputSpec(1.0))
    [op] = lower(model)
    assert op.entries > ROM_ENTRIES and op.memory == "rom"
    assert op.estimate("ecp5-25f")["ram"] >= 1
    e1 = small.estimate("up5k")["lc"]
    assert small.with_widths(2, 2).estimate("up5k")["lc"] > e1


def test_argmax_after_flattened_feature_map_is_rejected():
    """The index of a flattened HWC stream is not the model's: a clear error."""
    rng = np.random.default_rng(0)
    spec = InputSpec((2, 3, 3), 4, False, 1.0)
    w = rng.integers(-3, 4, (3, 2, 1, 1))
    b = np.zeros(3, dtype=np.int64)
    conv = Conv2d("conv", w, b, 3, 2, acc_bits_for(w.reshape(3, -1), b, spec.code_type))
    m = IntModel(spec, [conv, Flatten("flat"), Argmax("am", 27)], OutputSpec(1.0))
    with pytest.raises(ValueError, match=r"argmax of a flattened feature map.*put a dense"):
        lower(m)


def test_per_feature_activation_after_a_flattened_feature_map():
    """A per-feature MultiThreshold and a lut between a flatten of a multi-channel HWC map and
    the dense after it: each stream element takes the thresholds of its model (CHW) feature."""
    rng = np.random.default_rng(9)
    spec = InputSpec((2, 3, 3), 4, False, 1.0)
    w = rng.integers(-3, 4, (3, 2, 1, 1))
    b = rng.integers(-4, 5, 3)
    conv = Conv2d("conv", w, b, 3, 4, acc_bits_for(w.reshape(3, -1), b, spec.code_type))
    rq = Requant("rq", 1, "half_up", 5, True, -16, 15)
    t = rq.out_type(conv.out_type(spec.code_type))
    thr = np.sort(rng.integers(t.lo, t.hi + 1, (27, 3)), axis=1)
    mt = MultiThreshold("mt", thr, 3, False)
    t2 = mt.out_type(t)
    lut = Lut("lut", rng.permutation(np.arange(8)), 0, 3, False)
    w2 = rng.integers(-3, 4, (4, 27))
    b2 = rng.integers(-4, 5, 4)
    dense = Dense("fc", w2, b2, 3, 4, acc_bits_for(w2, b2, lut.out_type(t2)))
    model = IntModel(spec, [conv, rq, Flatten("flat"), mt, lut, dense], OutputSpec(1.0))
    pipeline = planner.realize(model, {})
    assert [op.kind for op in pipeline.ops] == ["conv", "threshold", "lut", "dense"]
    codes = random_codes(rng, model, 8)
    np.testing.assert_array_equal(pipeline.model_run(codes), golden.run(model, codes))
    out, _ = stream_top(SoftfloorTop(model, folding=pipeline), codes, gap=0.2, stall=0.3)
    np.testing.assert_array_equal(out, golden.run(model, codes))
    # the manifest says how the threshold's output streams, so a diagnosis compares the right
    # elements: the golden intermediate in that order is the unit's output
    entry = build_manifest(model, folding={})["layers"][1]
    assert entry["out_order"] == "hwc" and entry["out_frame"] == [3, 3, 3]
    inter = mt.execute(Flatten("f").execute(rq.execute(conv.execute(
        codes.reshape(-1, 2, 3, 3)))))
    twin = pipeline.ops[1].model(pipeline.ops[0].model(codes))
    for k in range(len(codes)):
        np.testing.assert_array_equal(
            stream_order(inter[k], entry["out_order"], entry["out_frame"]), twin[k])
