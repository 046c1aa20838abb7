"""The whole streaming top against softfloor.golden, with AXI4-Stream gaps and backpressure."""
from __future__ import annotations

import numpy as np
import pytest

from softfloor import golden
from softfloor.hw import planner
from softfloor.hw.generate import build_manifest
from softfloor.hw.top import SoftfloorTop
from softfloor.intmodel import CodeType, Dense, InputSpec, IntModel, OutputSpec, Requant

from tests.randcnn import random_cnn
from tests.randmodel import random_codes, random_model
from .streamsim import run_stream


def stream_top(top, codes, *, gap=0.0, stall=0.0, seed=0):
    IL, OL = top.in_layout, top.out_layout
    beats = [b for s in codes for b in IL.pack(s)]
    n_out = len(codes) * OL.beats_per_sample
    r = run_stream(top, i_valid=top.s_axis_tvalid, i_ready=top.s_axis_tready,
                   i_data=top.s_axis_tdata, i_last=top.s_axis_tlast,
                   o_valid=top.m_axis_tvalid, o_ready=top.m_axis_tready,
                   o_data=top.m_axis_tdata, o_last=top.m_axis_tlast, inputs=beats, n_out=n_out,
                   gap_prob=gap, stall_prob=stall, rng=np.random.default_rng(seed),
                   idle_after=20)
    bps = OL.beats_per_sample
    out = np.array([OL.unpack(r.outputs[k * bps:(k + 1) * bps]) for k in range(len(codes))])
    assert r.lasts == ([0] * (bps - 1) + [1]) * len(codes)
    return out, r


def check_timing(top, codes, manifest):
    """Isolated latency and back-to-back II, measured, equal the manifest's numbers."""
    out, r = stream_top(top, codes)
    np.testing.assert_array_equal(out, golden.run(top.model, codes))
    bi, bo = top.in_layout.beats_per_sample, top.out_layout.beats_per_sample
    first_in = r.in_cycles[::bi]
    last_out = r.out_cycles[bo - 1::bo]
    assert last_out[0] - first_in[0] == manifest["cycles_per_inference"]
    ii = np.diff(last_out)
    assert set(ii[1:]) == {manifest["initiation_interval"]}, ii


@pytest.mark.parametrize("seed", range(6))
def test_top_16_8_4_random(seed):
    """16-8-4 with random bits/signedness/rounding; 5 samples, gaps and backpressure."""
    rng = np.random.default_rng(seed)
    model = random_model(rng, [16, 8, 4], final_requant=bool(seed % 2))
    codes = random_codes(rng, model, 5)
    top = SoftfloorTop(model)
    out, _ = stream_top(top, codes, gap=0.3, stall=0.5, seed=seed)
    np.testing.assert_array_equal(out, golden.run(model, codes))


@pytest.mark.parametrize("seed", range(3))
def test_top_timing_matches_manifest(seed):
    rng = np.random.default_rng(50 + seed)
    model = random_model(rng, [16, 8, 4], final_requant=bool(seed % 2))
    check_timing(SoftfloorTop(model), random_codes(rng, model, 4), build_manifest(model, folding={}))


def test_top_timing_when_a_later_layer_is_the_bottleneck():
    rng = np.random.default_rng(9)
    model = random_model(rng, [3, 12, 10, 2], final_requant=True)
    man = build_manifest(model, folding={})
    assert man["initiation_interval"] == 120
    check_timing(SoftfloorTop(model), random_codes(rng, model, 4), man)


def test_top_standalone_requant_and_dense_dense():
    """Requant first (no Dense before it), two Denses back to back, raw logits out."""
    rng = np.random.default_rng(5)
    spec = InputSpec((6,), 8, True, 1.0)
    rq0 = Requant("pre", 2, "half_even", 5, True, -16, 15)
    t = rq0.out_type(spec.code_type)
    w1 = rng.integers(-4, 4, (5, 6))
    d1 = Dense("fc0", w1, np.zeros(5, dtype=np.int64), 3, 2, 12)
    w2 = rng.integers(-2, 2, (3, 5))
    d2 = Dense("fc1", w2, np.array([1, -1, 0]), 2, 2, 16)
    rq2 = Requant("post", 3, "floor", 6, True, -20, 31, multiplier=3)
    model = IntModel(spec, [rq0, d1, d2, rq2], OutputSpec(1.0))
    codes = rng.integers(-128, 128, (6, 6))
    codes[0] = [-128, 127, 2, -2, 6, -6]       # ties of the first requant
    top = SoftfloorTop(model)
    out, _ = stream_top(top, codes, gap=0.2, stall=0.3)
    np.testing.assert_array_equal(out, golden.run(model, codes))
    check_timing(SoftfloorTop(model), codes, build_manifest(model, folding={}))


@pytest.mark.parametrize("epb", [1, (3, 2), {"input": 4, "output": 3}])
def test_top_elements_per_beat(epb):
    rng = np.random.default_rng(21)
    model = random_model(rng, [10, 6, 5], in_bits=4, act_bits=3, final_requant=True)
    top = SoftfloorTop(model, elements_per_beat=epb)
    codes = random_codes(rng, model, 4)
    out, _ = stream_top(top, codes, gap=0.3, stall=0.3)
    np.testing.assert_array_equal(out, golden.run(model, codes))


def test_top_narrow_output_bits_for_raw_logits():
    """``output_bits``: raw logits sent at their own width instead of sign-extended to 16/32
    bits (fewer pins), still bit-exact; narrower than the codes is refused."""
    rng = np.random.default_rng(23)
    model = random_model(rng, [10, 6, 5], in_bits=8, weight_bits=8, act_bits=8,
                         final_requant=False)
    acc = model.output_type.bits
    wide = build_manifest(model, folding={})
    man = build_manifest(model, folding={}, elements_per_beat={"output_bits": acc})
    assert wide["output"]["element_bits"] in (16, 32) and man["output"]["element_bits"] == acc
    assert man["output"]["tdata_width"] == 8 * -(-acc // 8)          # whole-byte beats
    assert man["io_pins"] == wide["io_pins"] - (wide["output"]["tdata_width"]
                                                - man["output"]["tdata_width"])
    top = SoftfloorTop(model, elements_per_beat={"output_bits": acc})
    codes = random_codes(rng, model, 4)
    out, _ = stream_top(top, codes, gap=0.2, stall=0.3)
    np.testing.assert_array_equal(out, golden.run(model, codes))
    with pytest.raises(ValueError, match=f"output_bits=3 must be an integer >= {acc}"):
        build_manifest(model, folding={}, elements_per_beat={"output_bits": 3})


def test_top_output_elements_split_over_narrow_beats():
    """``output_tdata_width`` narrower than the logits: each element in several beats; the
    manifest's latency (+ beats_per_element - 1) and II are what the stream shows; a last layer
    that emits faster than the beats drain is refused, and the planner avoids it."""
    rng = np.random.default_rng(29)
    model = random_model(rng, [12, 6, 5], in_bits=8, weight_bits=8, act_bits=8,
                         final_requant=False)
    epb = {"output_tdata_width": 8}
    man = build_manifest(model, folding={}, elements_per_beat=epb)
    k = man["output"]["beats_per_element"]
    assert k == man["output"]["element_bits"] // 8 >= 2 and man["output"]["tdata_width"] == 8
    top = SoftfloorTop(model, elements_per_beat=epb, folding={})
    codes = random_codes(rng, model, 5)
    check_timing(top, codes, man)
    out, _ = stream_top(top, codes, gap=0.3, stall=0.4, seed=2)
    np.testing.assert_array_equal(out, golden.run(model, codes))
    with pytest.raises(ValueError, match="at most one element every"):
        planner.realize(model, {"fc1": (5, 1)}, epb)
    p = planner.plan(model, "hx8k", elements_per_beat=epb)
    last = p.layers[-1]
    assert last.pe == 1 and -(-last.cols // last.simd) >= k
    assert build_manifest(model, folding=p, elements_per_beat=epb)["cycles_per_inference"] == \
        p.cycles_per_inference


@pytest.mark.parametrize("seed,fold", [
    (0, {"fc0": (4, 4), "fc1": (2, 4), "fc2": (1, 2)}),
    (1, {"fc0": (3, 5), "fc1": (3, 3), "fc2": (4, 1)}),          # padded rows and columns
    (2, {"fc0": (8, 16), "fc1": (4, 8), "fc2": (4, 4)})])         # fully unrolled
def test_top_folded_timing_and_gaps(seed, fold):
    """Folded tops: bit-exact, and measured latency / back-to-back II equal the manifest's."""
    rng = np.random.default_rng(70 + seed)
    model = random_model(rng, [16, 8, 4, 4], final_requant=bool(seed % 2))
    codes = random_codes(rng, model, 4)
    man = build_manifest(model, folding=fold, elements_per_beat={"input": 4, "output": 4})
    assert [(l["pe"], l["simd"]) for l in man["layers"]] == list(fold.values())
    top = SoftfloorTop(model, folding=fold, elements_per_beat={"input": 4, "output": 4})
    check_timing(top, codes, man)
    top = SoftfloorTop(model, folding=fold, elements_per_beat={"input": 4, "output": 4})
    out, _ = stream_top(top, codes, gap=0.3, stall=0.4, seed=seed)
    np.testing.assert_array_equal(out, golden.run(model, codes))


def test_top_unrolled_with_standalone_requants_and_wide_streams():
    """A Requant chain between the unpacker and an unrolled dense layer carries 3 elements per
    transfer; II is the input beat count."""
    rng = np.random.default_rng(12)
    spec = InputSpec((6,), 8, True, 1.0)
    rq0 = Requant("pre", 2, "half_even", 5, True, -16, 15)
    rq1 = Requant("pre2", 1, "floor", 4, True, -8, 7, multiplier=3)
    t = rq1.out_type(rq0.out_type(spec.code_type))
    w1 = rng.integers(-4, 4, (4, 6))
    d1 = Dense("fc0", w1, np.zeros(4, dtype=np.int64), 3, 2, 10)
    d1.check(t, "test")
    model = IntModel(spec, [rq0, rq1, d1], OutputSpec(1.0))
    fold = {"fc0": (4, 6)}
    man = build_manifest(model, folding=fold, elements_per_beat={"input": 3, "output": 4})
    assert [l["in_elements_per_transfer"] for l in man["layers"]] == [3, 3, 3]
    assert man["layers"][-1]["out_elements_per_transfer"] == 4
    assert man["initiation_interval"] == 2
    codes = rng.integers(-128, 128, (6, 6))
    top = SoftfloorTop(model, folding=fold, elements_per_beat={"input": 3, "output": 4})
    check_timing(top, codes, man)


def test_top_rejects_folds_that_cannot_drain():
    """pe 8 over 1 fold needs 8 results per transfer; the next layer's simd 3 cannot take it."""
    rng = np.random.default_rng(3)
    model = random_model(rng, [4, 8, 6], final_requant=True)
    with pytest.raises(ValueError, match=r"fc0: fold 8x4 finishes 8 results every 1 cycles"):
        build_manifest(model, folding={"fc0": (8, 4), "fc1": (1, 3)})
    with pytest.raises(ValueError, match="no dense layer named 'fc9'"):
        build_manifest(model, folding={"fc9": (1, 1)})


@pytest.mark.parametrize("seed", range(6))
def test_top_random_cnn(seed):
    """Random CNNs (conv, per-channel requant, max-pool, multi-threshold, flatten, dense):
    bit-exact with gaps and backpressure; isolated latency and II equal the manifest's."""
    rng = np.random.default_rng(700 + seed)
    model = random_cnn(rng)
    codes = rng.integers(model.input.code_type.lo, model.input.code_type.hi + 1,
                         (4, model.input.size))
    folding = planner.plan(model) if seed % 2 else {}
    top = SoftfloorTop(model, folding=folding)
    out, _ = stream_top(top, codes, gap=0.3, stall=0.4, seed=seed)
    np.testing.assert_array_equal(out, golden.run(model, codes))
    check_timing(SoftfloorTop(model, folding=folding), codes, build_manifest(model,
                                                                             folding=folding))
