"""The lut and argmax units against their ops' numpy twins in cocotb, on both simulators.

Each unit is built by its op (:class:`~softfloor.hw.ops.LutOp`,
:class:`~softfloor.hw.ops.ArgmaxOp`) and run behind :func:`softfloor.sim.units.stream_harness`
by the stream scoreboard of :mod:`softfloor.sim.tb_stream`: random input gaps, random output
backpressure, the idle check, and the isolated-vector latency against the op's ``latency``.

Corners: the lut sees every input code in every lane (so every table entry, both ends of the
table included) before its random vectors; the table is a random permutation of codes (any
function of one code), in logic and in a ROM. The argmax sees samples whose maximum sits at
every position, all-equal samples (the first index wins), and half its random samples drawn
from three codes (many ties across lanes and across transfers). ``make test`` runs
:data:`~tests.sim.test_units_stream.N_TEST` (10,000) vectors per unit and simulator.
"""
from __future__ import annotations

import numpy as np
import pytest

from softfloor import arith
from softfloor.hw.ops import ArgmaxOp, LutOp
from softfloor.intmodel import Argmax, CodeType, Lut

from .test_units_stream import engine_harness, n_random, need, run_unit, unit_cases

pytestmark = pytest.mark.sim

#: name: input type, output bits/signed, elements per sample, lanes, memory
LUTS = {
    "logic_s7_2lanes": (CodeType.full(7, True), 5, False, 4, 2, "logic"),
    "rom_u6": (CodeType.full(6, False), 6, True, 3, 1, "rom"),
}


@pytest.mark.parametrize("simulator,name", unit_cases("lut", LUTS))
def test_lut_unit(simulator, name, tmp_path):
    need(simulator)
    t, ob, osg, elements, lanes, memory = LUTS[name]
    rng = np.random.default_rng(sum(map(ord, name)))
    lo, hi = arith.code_range(ob, osg)
    table = rng.integers(lo, hi + 1, t.hi - t.lo + 5)         # two spare entries each side
    table[2], table[-3] = lo, hi                               # the output extremes are used
    lut = Lut("lut", table, t.lo - 2, ob, osg)
    op = LutOp.of(lut, t, elements=elements, elements_per_transfer=lanes, table_memory=memory)
    codes = np.arange(t.lo, t.hi + 1)
    every = np.stack([np.roll(codes, 5 * k) for k in range(elements)], axis=1)
    n = max(0, n_random(simulator) - len(every))
    x = np.concatenate([every, rng.integers(t.lo, t.hi, size=(n, elements), endpoint=True)])
    want = lut.execute(x)
    np.testing.assert_array_equal(op.model(x), want)
    run_unit(engine_harness(f"u_lut_{name}", op), x, want, simulator, tmp_path, seed=13,
             latency=op.latency)


#: name: input type, features, lanes
ARGMAXES = {
    "s9_6_by_3": (CodeType.full(9, True), 6, 3),
}


@pytest.mark.parametrize("simulator,name", unit_cases("argmax", ARGMAXES))
def test_argmax_unit(simulator, name, tmp_path):
    need(simulator)
    t, features, lanes = ARGMAXES[name]
    rng = np.random.default_rng(sum(map(ord, name)))
    op = ArgmaxOp.of(Argmax("am", features), t, elements_per_transfer=lanes)
    at = np.full((features, features), t.lo) + np.eye(features, dtype=np.int64) * (t.hi - t.lo)
    equal = np.array([np.full(features, v) for v in (t.lo, t.hi, 0)])
    n = max(0, n_random(simulator) - len(at) - len(equal))
    ties = rng.integers(t.lo, t.lo + 3, size=(n // 2, features))
    full = rng.integers(t.lo, t.hi, size=(n - n // 2, features), endpoint=True)
    x = np.concatenate([at, equal, ties, full])
    want = arith.argmax_first(x)[:, None]
    np.testing.assert_array_equal(op.model(x), want)
    assert (want[len(at):len(at) + len(equal)] == 0).all()
    run_unit(engine_harness(f"u_argmax_{name}", op), x, want, simulator, tmp_path, seed=14,
             latency=op.latency)
