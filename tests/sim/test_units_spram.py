"""The memory-fed matrix-vector unit with its weights in SPRAM, on both simulators.

A folded dense op whose weights sit in ``SB_SPRAM256KA`` blocks (:mod:`softfloor.hw.rtl.spram`,
simulated with its behavioural model) runs behind the stream harness: the testbench loads the
weight image through ``w_axis`` after reset (with random idle cycles), then streams random
vectors with input gaps and output backpressure; every output transfer is checked in order
against the op's numpy twin (>= 10,000 checked output transfers per simulator), and the
isolated-vector latency against the op's formula. A short image (one transfer missing) keeps
the unit idle: no input accepted, no output.
"""
from __future__ import annotations

import numpy as np
import pytest

from softfloor.hw.ops import DenseOp
from softfloor.hw.rtl import spram
from softfloor.intmodel import CodeType
from softfloor.sim import tools, units
from tests.sim.test_units_stream import engine_harness, make_layer, need

pytestmark = pytest.mark.sim

#: Output transfers checked per simulator (one per output element: ``out_ept`` = 1).
CHECKED_TRANSFERS = 10_000


def spram_engine() -> DenseOp:
    """23 x 30 at 3-bit weights, fold 3 x 5: 45-bit words over 3 blocks (the last one partly
    used), 8 row groups (the last padded) x 6 folds = 48 words."""
    rng = np.random.default_rng(22)
    t = CodeType.full(3, False)
    dense, rq = make_layer(rng, 23, 30, in_type=t, weight_bits=3,
                           requant=dict(shift=4, rounding="half_even", bits=3, signed=False,
                                        lo=0, hi=7, multiplier=3))
    op = DenseOp.of(dense, t, rq, pe=3, simd=5).with_spram(True)
    assert op.memory == "spram" and spram.blocks(op.weight_width) == 3
    return op


@pytest.mark.parametrize("simulator", list(tools.SIMULATORS))
def test_spram_engine_bit_exact(simulator, tmp_path):
    need(simulator)
    op = spram_engine()
    h = engine_harness("u_dense_spram", op)
    assert "SB_SPRAM256KA" in h.verilog and len(h.weight_words) == 48 * 3 * spram.PER_WORD
    rng = np.random.default_rng(5)
    n = -(-CHECKED_TRANSFERS // op.rows)
    t = op.in_type
    x = np.concatenate([np.full((1, op.cols), t.hi), np.full((1, op.cols), t.lo),
                        rng.integers(t.lo, t.hi, size=(n, op.cols), endpoint=True)])
    want = op.model(x)
    r = units.run_stream(h, x, simulator, tmp_path, expected=want, gap_prob=0.3,
                         stall_prob=0.3, seed=3, idle_check_cycles=30, measure_latency=True)
    assert r.mismatches == 0, f"{simulator}: first mismatches {r.first_mismatches[:2]}"
    np.testing.assert_array_equal(r.outputs, want)
    assert want.size >= CHECKED_TRANSFERS
    assert r.raw["framing_errors"] == [] and not r.raw.get("extra_output_beats")
    assert r.latency_cycles == op.latency
    if simulator == "verilator":                  # lint-clean with the cell's model
        from softfloor.sim import lint
        rep = lint.lint(h.write(tmp_path), "u_dense_spram")
        assert rep.ok, str(rep)


@pytest.mark.parametrize("simulator", list(tools.SIMULATORS))
def test_spram_engine_short_image_stays_idle(simulator, tmp_path):
    """One load transfer short: the unit never takes an input nor produces an output."""
    need(simulator)
    op = spram_engine()
    h = engine_harness("u_dense_spram", op)
    x = np.ones((2, op.cols), dtype=np.int64)
    r = units.run_stream(h, x, simulator, tmp_path, weight_image_words=len(h.weight_words) - 1,
                         idle_check_cycles=300, measure_latency=False)
    assert r.raw["short_image_inputs_accepted"] == 0
    assert r.raw["short_image_output_beats"] == 0
    assert r.raw["w_ready_after_image"] == 1          # still waiting for the last transfer
