"""Co-simulation through cocotb on both simulators: random models, gaps, backpressure, timing."""
from __future__ import annotations

import numpy as np
import pytest

from softfloor import golden
from softfloor.hw.generate import generate
from softfloor.sim import cosim, tb_stream
from tests.randmodel import random_codes, random_model

pytestmark = pytest.mark.sim


def test_pack_unpack_round_trip():
    port = {"element_bits": 5, "elements_per_beat": 3, "elements": 7, "beats_per_sample": 3,
            "signed": True}
    sample = np.array([-16, 15, 0, -1, 7, -8, 3])
    assert tb_stream.unpack(tb_stream.pack(sample, port), port) == sample.tolist()


@pytest.mark.parametrize("seed", [1, 2])
def test_random_model_bit_exact_with_timing(simulator, seed, tmp_path):
    rng = np.random.default_rng(seed)
    model = random_model(rng, (int(rng.integers(3, 20)), int(rng.integers(2, 12)),
                               int(rng.integers(1, 8))))
    gen = generate(model, tmp_path)
    x = random_codes(rng, model, 25)
    want = golden.run(model, x)
    r = cosim.cosimulate(gen.verilog, gen.manifest, x, simulator, tmp_path / "run",
                         expected=want, strict=True, seed=seed)
    np.testing.assert_array_equal(r.outputs, want)
    assert r.mismatches == 0
    assert r.latency_cycles == gen.manifest["cycles_per_inference"]
    assert r.initiation_interval == gen.manifest["initiation_interval"]


def test_fully_unrolled_constant_weights(simulator, tmp_path):
    """The latency objective on a big device unrolls every layer (pe = rows, simd = cols,
    weights as constants): bit-exact, measured latency and II equal the manifest's."""
    rng = np.random.default_rng(11)
    model = random_model(rng, (10, 7, 4), in_bits=4, weight_bits=3, final_requant=False)
    gen = generate(model, tmp_path, device="ecp5-85f", objective="latency",
                   elements_per_beat=(5, 4))
    assert [(l["pe"], l["simd"], l["const_weights"]) for l in gen.manifest["layers"]
            if l["kind"] == "dense"] == [(7, 10, True), (4, 7, True)]
    assert gen.manifest["initiation_interval"] == 2
    x = random_codes(rng, model, 20)
    want = golden.run(model, x)
    r = cosim.cosimulate(gen.verilog, gen.manifest, x, simulator, tmp_path / "run",
                         expected=want, strict=True, seed=5)
    np.testing.assert_array_equal(r.outputs, want)
    assert r.latency_cycles == gen.manifest["cycles_per_inference"]
    assert r.initiation_interval == gen.manifest["initiation_interval"]
    # input gaps and output stalls: the unregistered bank read and the stalled graph
    x = random_codes(rng, model, 60)
    want = golden.run(model, x)
    r = cosim.cosimulate(gen.verilog, gen.manifest, x, simulator, tmp_path / "stalls",
                         expected=want, gap_prob=0.3, stall_prob=0.5, seed=6,
                         measure_latency=False)
    np.testing.assert_array_equal(r.outputs, want)


def test_output_elements_split_over_narrow_beats(simulator, tmp_path):
    """Raw 8-bit-model logits in 8-bit output beats (several beats per element): the
    testbench joins them through the manifest's layout; latency and II as the manifest says."""
    rng = np.random.default_rng(13)
    model = random_model(rng, (9, 5, 4), in_bits=8, weight_bits=8, act_bits=8,
                         final_requant=False)
    gen = generate(model, tmp_path, folding={}, elements_per_beat={"output_tdata_width": 8})
    assert gen.manifest["output"]["beats_per_element"] >= 2
    x = random_codes(rng, model, 12)
    want = golden.run(model, x)
    r = cosim.cosimulate(gen.verilog, gen.manifest, x, simulator, tmp_path / "run",
                         expected=want, strict=True, seed=4)
    np.testing.assert_array_equal(r.outputs, want)
    assert r.latency_cycles == gen.manifest["cycles_per_inference"]
    assert r.initiation_interval == gen.manifest["initiation_interval"]


def test_gaps_and_backpressure_lose_nothing(simulator, tmp_path):
    rng = np.random.default_rng(7)
    model = random_model(rng, (9, 5, 3), in_bits=3)
    gen = generate(model, tmp_path)
    x = random_codes(rng, model, 40)
    want = golden.run(model, x)
    r = cosim.cosimulate(gen.verilog, gen.manifest, x, simulator, tmp_path / "run",
                         expected=want, gap_prob=0.3, stall_prob=0.5, seed=3,
                         measure_latency=False)
    np.testing.assert_array_equal(r.outputs, want)


def test_a_wrong_expectation_is_reported(simulator, tmp_path):
    """The scoreboard is not vacuous: a corrupted expectation shows up as a mismatch."""
    rng = np.random.default_rng(4)
    model = random_model(rng, (6, 4, 2))
    gen = generate(model, tmp_path)
    x = random_codes(rng, model, 5)
    want = golden.run(model, x)
    want[3, 1] += 1
    r = cosim.cosimulate(gen.verilog, gen.manifest, x, simulator, tmp_path / "run",
                         expected=want, measure_latency=False)
    assert r.mismatches == 1
    assert r.first_mismatches[0]["sample"] == 3 and r.first_mismatches[0]["element"] == 1
    with pytest.raises(cosim.CosimError):
        cosim.cosimulate(gen.verilog, gen.manifest, x, simulator, tmp_path / "run2",
                         expected=want, measure_latency=False, strict=True)


@pytest.mark.parametrize("seed", [3, 4])
def test_random_cnn_bit_exact_with_timing(simulator, seed, tmp_path):
    """Conv (padding, stride, per-channel requant), max-pool, multi-threshold, flatten, dense:
    bit-exact on both simulators, measured latency and II equal to the manifest's; then with
    gaps and backpressure."""
    from softfloor.sim import randnet
    from tests.randcnn import random_cnn
    rng = np.random.default_rng(900 + seed)
    model = random_cnn(rng, threshold=bool(seed % 2), per_channel=True)
    t = model.input.code_type
    x = rng.integers(t.lo, t.hi + 1, (12, model.input.size))
    randnet.check_model(model, x, simulator, tmp_path / "a", seed=seed)
    randnet.check_model(model, x, simulator, tmp_path / "b", seed=seed, gap_prob=0.3,
                        stall_prob=0.4, lint_top=False)
