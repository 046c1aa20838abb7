"""Stream scoreboard on both simulators: reset mid-stream, backpressure, nothing lost/duplicated."""
from __future__ import annotations

import os

import numpy as np
import pytest

from softfloor import golden
from softfloor.hw.generate import generate
from softfloor.sim import cosim
from tests.randmodel import digits_model, random_codes, random_model

pytestmark = pytest.mark.sim
SOAK = os.environ.get("SOFTFLOOR_SOAK", "") not in ("", "0")


def distinct_samples(model, rng, n):
    """``n`` input samples whose golden outputs are pairwise different (so a reordered or
    duplicated output cannot pass the in-order scoreboard by coincidence)."""
    seen, xs = set(), []
    for _ in range(200):
        x = random_codes(rng, model, 4 * n)
        for row, y in zip(x, golden.run(model, x)):
            if tuple(y) not in seen:
                seen.add(tuple(y))
                xs.append(row)
            if len(xs) == n:
                return np.array(xs)
    raise AssertionError("model output range too small for distinct samples")


@pytest.fixture(scope="module")
def design(tmp_path_factory):
    rng = np.random.default_rng(11)
    # Raw accumulator logits out: a wide output range, so outputs are distinct per sample.
    model = random_model(rng, (10, 6, 4), in_bits=4, final_requant=False)
    gen = generate(model, tmp_path_factory.mktemp("streams"))
    return model, gen, rng


def test_backpressure_and_gaps_keep_order_and_count(simulator, design, tmp_path):
    """Random input gaps and output backpressure: in order, none lost, none duplicated."""
    model, gen, rng = design
    x = distinct_samples(model, np.random.default_rng(3), 30)
    want = golden.run(model, x)
    for k, (gap, stall) in enumerate([(0.5, 0.1), (0.1, 0.7), (0.4, 0.4)]):
        r = cosim.cosimulate(gen.verilog, gen.manifest, x, simulator, tmp_path / f"r{k}",
                             expected=want, gap_prob=gap, stall_prob=stall, seed=k,
                             measure_latency=False, idle_check_cycles=60)
        np.testing.assert_array_equal(r.outputs, want, err_msg=f"gap={gap} stall={stall}")
        assert r.mismatches == 0 and not r.raw.get("extra_output_beats")
        assert r.raw["framing_errors"] == [] and r.raw["x_errors"] == []


@pytest.mark.parametrize("after_beats,resume_from", [(1, 6), (14, 6), (45, 9)])
def test_reset_midstream_recovers(simulator, design, tmp_path, after_beats, resume_from):
    """rst asserted mid-stream (input mid-sample, samples in flight, outputs pending):
    samples delivered before reset are exact, the in-flight ones are dropped, and every sample
    sent after reset is exact, with nothing extra."""
    model, gen, _ = design
    x = distinct_samples(model, np.random.default_rng(5), 20)
    want = golden.run(model, x)
    bps = gen.manifest["input"]["beats_per_sample"]
    assert after_beats <= resume_from * bps
    r = cosim.cosimulate(gen.verilog, gen.manifest, x, simulator, tmp_path / "run",
                         expected=want[resume_from:], reset={"after_beats": after_beats,
                                                             "resume_from": resume_from,
                                                             "cycles": 3},
                         gap_prob=0.2, stall_prob=0.3, seed=after_beats, idle_check_cycles=60)
    pre = np.array(r.raw["pre_reset_outputs"], dtype=np.int64).reshape(-1, want.shape[1])
    np.testing.assert_array_equal(pre, want[:len(pre)])
    assert len(pre) < resume_from
    np.testing.assert_array_equal(r.outputs, want[resume_from:])
    assert not r.raw.get("extra_output_beats")
    assert r.raw["pre_reset_beats_accepted"] >= after_beats


def test_always_ready_sink_throughput_is_the_initiation_interval(simulator, tmp_path):
    """Back to back with an always-ready sink, every sample leaves exactly II cycles apart."""
    rng = np.random.default_rng(21)
    model = random_model(rng, (7, 9, 5, 3), final_requant=True)
    gen = generate(model, tmp_path)
    x = random_codes(rng, model, 12)
    r = cosim.cosimulate(gen.verilog, gen.manifest, x, simulator, tmp_path / "run",
                         expected=golden.run(model, x), strict=True)
    ii = gen.manifest["initiation_interval"]
    assert r.initiation_interval == ii
    assert r.raw["ii_min"] == r.raw["ii_max"] == ii
    assert r.latency_cycles == gen.manifest["cycles_per_inference"]


def test_digits_mlp_gaps_backpressure_and_reset(simulator, tmp_path):
    """The digits-sized 64-64-32-10 MLP: gaps + backpressure, then a reset while the first
    engine is mid-vector; every sample after reset exact. (200 samples under ``make soak``.)"""
    model = digits_model()
    gen = generate(model, tmp_path / "rtl")
    n = 200 if SOAK else 4
    x = random_codes(np.random.default_rng(8), model, n)
    want = golden.run(model, x)
    r = cosim.cosimulate(gen.verilog, gen.manifest, x, simulator, tmp_path / "bp",
                         expected=want, gap_prob=0.3, stall_prob=0.5, seed=2,
                         measure_latency=False, idle_check_cycles=20)
    np.testing.assert_array_equal(r.outputs, want)
    assert r.raw["x_errors"] == [] and not r.raw.get("extra_output_beats")
    bps = gen.manifest["input"]["beats_per_sample"]
    split = n // 2
    r = cosim.cosimulate(gen.verilog, gen.manifest, x, simulator, tmp_path / "rst",
                         expected=want[split:],
                         reset={"after_beats": bps * (split - 1) + bps // 2,
                                "resume_from": split, "cycles": 2}, seed=3)
    np.testing.assert_array_equal(r.outputs, want[split:])
    pre = np.array(r.raw["pre_reset_outputs"], dtype=np.int64).reshape(-1, want.shape[1])
    np.testing.assert_array_equal(pre, want[:len(pre)])
