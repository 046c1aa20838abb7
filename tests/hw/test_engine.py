"""DenseEngine / RequantEngine against their numpy twins (and softfloor.golden), in Amaranth sim."""
from __future__ import annotations

import numpy as np
import pytest

from softfloor import golden
from softfloor.hw.engine import DenseEngine, RequantEngine
from softfloor.intmodel import CodeType, Dense, Requant

from tests.randmodel import random_codes, random_model
from .streamsim import run_stream


def run_engine(eng, vectors, *, gap=0.0, stall=0.0, seed=0):
    flat = [int(v) for vec in vectors for v in vec]
    rows = eng.rows
    r = run_stream(eng, i_valid=eng.i.valid, i_ready=eng.i.ready, i_data=eng.i.payload,
                   o_valid=eng.o.valid, o_ready=eng.o.ready, o_data=eng.o.payload,
                   inputs=flat, n_out=rows * len(vectors), gap_prob=gap, stall_prob=stall,
                   rng=np.random.default_rng(seed), idle_after=8)
    return np.array(r.outputs).reshape(len(vectors), rows), r


@pytest.mark.parametrize("seed", range(8))
def test_dense_engine_random(seed):
    """Random layers (any input signedness, 1..8-bit weights, multipliers, all modes) vs twin."""
    rng = np.random.default_rng(100 + seed)
    sizes = [int(rng.integers(1, 9)), int(rng.integers(1, 7))]
    model = random_model(rng, sizes, final_requant=bool(seed % 2))
    layers = model.layers
    eng = DenseEngine(layers[0], model.input.code_type, layers[1] if len(layers) > 1 else None)
    codes = random_codes(rng, model, 5)
    got, _ = run_engine(eng, codes, gap=0.3 * (seed % 3 != 0), stall=0.4 * (seed % 2), seed=seed)
    np.testing.assert_array_equal(got, eng.model(codes))
    np.testing.assert_array_equal(got, golden.run(model, codes))


@pytest.mark.parametrize("rows,cols", [(1, 1), (1, 5), (4, 1), (3, 4), (5, 8)])
def test_dense_engine_timing(rows, cols):
    """Back-to-back vectors: one vector per rows*cols cycles; latency as advertised."""
    rng = np.random.default_rng(rows * 10 + cols)
    model = random_model(rng, [cols, rows], final_requant=True)
    eng = DenseEngine(model.layers[0], model.input.code_type, model.layers[1])
    codes = random_codes(rng, model, 6)
    got, r = run_engine(eng, codes)
    np.testing.assert_array_equal(got, eng.model(codes))
    last_out = r.out_cycles[rows - 1::rows]
    assert last_out[0] - r.in_cycles[0] == eng.latency
    assert set(np.diff(last_out[1:])) == {eng.cycles}, np.diff(last_out)


def test_dense_engine_one_bit_weights_and_signed_inputs():
    rng = np.random.default_rng(7)
    w = np.where(rng.random((6, 9)) < 0.5, -1, 1)
    b = rng.integers(-5, 6, 6)
    d = Dense("fc", w, b, 1, 4, 10)
    t = CodeType.full(5, True)
    d.check(t, "test")
    eng = DenseEngine(d, t, None)
    x = rng.integers(-16, 16, (7, 9))
    got, _ = run_engine(eng, x, gap=0.2, stall=0.2)
    np.testing.assert_array_equal(got, x @ w.T + b)


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_dense_engine_validates():
    d = Dense("fc", np.ones((2, 2), dtype=np.int64), np.zeros(2, dtype=np.int64), 2, 2, 6)
    t = CodeType.full(3, False)
    with pytest.raises(TypeError):
        DenseEngine("fc", t)
    with pytest.raises(ValueError):
        DenseEngine(d, t, pe=0)
    with pytest.raises(NotImplementedError):
        DenseEngine(d, t, pe=2)
    e = DenseEngine(d, t)
    e._MustUse__silence = True
    assert e.cycles == 4 and e.mac_units == 1
    assert set(e.resources()) >= {"lut4", "dff", "ebr", "dsp"}


@pytest.mark.parametrize("mode", ["floor", "half_up", "half_even"])
def test_requant_engine(mode):
    rng = np.random.default_rng(11)
    t = CodeType.full(9, True)
    rq = Requant("rq", 3, mode, 4, True, -6, 7, multiplier=5)
    eng = RequantEngine(rq, t, elements=4)
    x = rng.integers(-256, 256, (50, 4))
    x[0] = [-256, 255, 4 * 8 + 4, -(4 * 8 + 4)]
    flat = [int(v) for v in x.reshape(-1)]
    r = run_stream(eng, i_valid=eng.i.valid, i_ready=eng.i.ready, i_data=eng.i.payload,
                   o_valid=eng.o.valid, o_ready=eng.o.ready, o_data=eng.o.payload,
                   inputs=flat, n_out=len(flat), gap_prob=0.3, stall_prob=0.3,
                   rng=rng, idle_after=5)
    np.testing.assert_array_equal(np.array(r.outputs).reshape(x.shape), eng.model(x))


def test_requant_engine_timing():
    t = CodeType.full(6, False)
    eng = RequantEngine(Requant("rq", 1, "half_even", 3, False, 0, 7), t, elements=5)
    x = np.arange(30).reshape(6, 5) % 64
    flat = [int(v) for v in x.reshape(-1)]
    r = run_stream(eng, i_valid=eng.i.valid, i_ready=eng.i.ready, i_data=eng.i.payload,
                   o_valid=eng.o.valid, o_ready=eng.o.ready, o_data=eng.o.payload,
                   inputs=flat, n_out=len(flat))
    np.testing.assert_array_equal(np.array(r.outputs).reshape(x.shape), eng.model(x))
    assert r.out_cycles[4] - r.in_cycles[0] == eng.latency
    assert np.all(np.diff(r.out_cycles) == 1)
