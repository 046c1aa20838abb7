"""The dense and requant ops' units against the ops' numpy twins (and softfloor.golden), in
Amaranth sim; the ops' cycle, II and latency formulas against the measured handshakes."""
from __future__ import annotations

import numpy as np
import pytest

from softfloor import golden
from softfloor.hw.ops import DenseOp, RequantOp
from softfloor.hw.rtl.mvu import const_graph
from softfloor.intmodel import CodeType, Dense, Requant

from tests.randmodel import random_codes, random_model
from .streamsim import run_stream


def pack_words(values, n, bits):
    """Elements -> transfers of ``n`` elements (element j at bits [j*bits, (j+1)*bits))."""
    mask = (1 << bits) - 1
    return [sum((int(v) & mask) << (j * bits) for j, v in enumerate(values[k:k + n]))
            for k in range(0, len(values), n)]


def unpack_words(words, n, bits, signed_):
    out = []
    for w in words:
        for j in range(n):
            v = (int(w) >> (j * bits)) & ((1 << bits) - 1)
            out.append(v - (1 << bits) if signed_ and v >> (bits - 1) else v)
    return out


def run_engine(op, vectors, *, gap=0.0, stall=0.0, seed=0):
    """Build ``op``'s unit and stream ``vectors`` through it (Amaranth's simulator)."""
    eng = op.build()
    flat = [int(v) for vec in vectors for v in vec]
    rows = op.out_elements                                  # outputs per sample
    win, wout = op.in_ept, op.out_ept
    osh = op.out_element_shape
    r = run_stream(eng, i_valid=eng.i.valid, i_ready=eng.i.ready, i_data=eng.i.payload,
                   o_valid=eng.o.valid, o_ready=eng.o.ready, o_data=eng.o.payload,
                   inputs=pack_words(flat, win, op.in_element_shape.width),
                   n_out=rows * len(vectors) // wout, gap_prob=gap, stall_prob=stall,
                   rng=np.random.default_rng(seed), idle_after=8)
    out = unpack_words(r.outputs, wout, osh.width, osh.signed)
    return np.array(out).reshape(len(vectors), rows), r


@pytest.mark.parametrize("seed", range(8))
def test_dense_engine_random(seed):
    """Random layers (any input signedness, 1..8-bit weights, multipliers, all modes) vs twin."""
    rng = np.random.default_rng(100 + seed)
    sizes = [int(rng.integers(1, 9)), int(rng.integers(1, 7))]
    model = random_model(rng, sizes, final_requant=bool(seed % 2))
    layers = model.layers
    eng = DenseOp.of(layers[0], model.input.code_type, layers[1] if len(layers) > 1 else None)
    codes = random_codes(rng, model, 5)
    got, _ = run_engine(eng, codes, gap=0.3 * (seed % 3 != 0), stall=0.4 * (seed % 2), seed=seed)
    np.testing.assert_array_equal(got, eng.model(codes))
    np.testing.assert_array_equal(got, golden.run(model, codes))


@pytest.mark.parametrize("rows,cols", [(1, 1), (1, 5), (4, 1), (3, 4), (5, 8)])
def test_dense_engine_timing(rows, cols):
    """Back-to-back vectors: one vector per rows*cols cycles; latency as advertised."""
    rng = np.random.default_rng(rows * 10 + cols)
    model = random_model(rng, [cols, rows], final_requant=True)
    eng = DenseOp.of(model.layers[0], model.input.code_type, model.layers[1])
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
    eng = DenseOp.of(d, t, None)
    x = rng.integers(-16, 16, (7, 9))
    got, _ = run_engine(eng, x, gap=0.2, stall=0.2)
    np.testing.assert_array_equal(got, x @ w.T + b)


#: (rows, cols, pe, simd, in per transfer, out per transfer): divisors, padded rows/columns,
#: gathered inputs, wide outputs, fully unrolled.
FOLDS = [(8, 8, 2, 2, 1, 1), (6, 12, 2, 3, 1, 1), (10, 32, 1, 3, 1, 1), (10, 32, 2, 2, 2, 2), (6, 9, 3, 4, 1, 3),
         (16, 16, 8, 2, 2, 1), (16, 16, 8, 4, 1, 2), (4, 4, 4, 4, 4, 4), (7, 5, 7, 5, 5, 7),
         (5, 12, 2, 6, 3, 1)]


@pytest.mark.parametrize("rows,cols,pe,simd,win,wout", FOLDS)
def test_folded_engine_timing(rows, cols, pe, simd, win, wout):
    """PE x SIMD folding: bit-exact; back to back one vector per max(cycles, transfers) cycles
    with no bubble; isolated latency exactly as advertised."""
    rng = np.random.default_rng(rows * 100 + cols * 10 + pe + simd)
    model = random_model(rng, [cols, rows], final_requant=bool(pe % 2))
    layers = model.layers
    eng = DenseOp.of(layers[0], model.input.code_type, layers[1] if len(layers) > 1 else None,
                      pe=pe, simd=simd, in_elements_per_transfer=win,
                   out_elements_per_transfer=wout)
    assert eng.cycles == -(-rows // pe) * -(-cols // simd)
    codes = random_codes(rng, model, 5)
    got, r = run_engine(eng, codes)
    np.testing.assert_array_equal(got, eng.model(codes))
    per = rows // wout
    last_out = r.out_cycles[per - 1::per]
    assert last_out[0] - r.in_cycles[0] == eng.latency
    assert set(np.diff(last_out[1:])) == {eng.initiation_interval}, np.diff(last_out)


@pytest.mark.parametrize("rows,cols,pe,simd,win,wout", FOLDS[1:6])
def test_folded_engine_gaps_and_backpressure(rows, cols, pe, simd, win, wout):
    rng = np.random.default_rng(rows + cols + pe)
    model = random_model(rng, [cols, rows], final_requant=True)
    eng = DenseOp.of(model.layers[0], model.input.code_type, model.layers[1], pe=pe, simd=simd,
                      in_elements_per_transfer=win, out_elements_per_transfer=wout)
    codes = random_codes(rng, model, 5)
    got, _ = run_engine(eng, codes, gap=0.3, stall=0.5, seed=rows)
    np.testing.assert_array_equal(got, golden.run(model, codes))


def test_folded_one_bit_weights_dsp_products():
    """Binary weights (sign-bit ROM) and $mul products (the DSP path) under folding."""
    rng = np.random.default_rng(8)
    w = np.where(rng.random((6, 10)) < 0.5, -1, 1)
    d = Dense("fc", w, rng.integers(-5, 6, 6), 1, 4, 10)
    t = CodeType.full(5, True)
    d.check(t, "test")
    x = rng.integers(-16, 16, (4, 10))
    got, _ = run_engine(DenseOp.of(d, t, pe=3, simd=4, out_elements_per_transfer=3), x)
    np.testing.assert_array_equal(got, x @ w.T + d.bias)
    w8 = rng.integers(-128, 128, (4, 6))
    d8 = Dense("fc8", w8, np.zeros(4, dtype=np.int64), 8, 2, 20)
    x8 = rng.integers(0, 256, (3, 6))
    e = DenseOp.of(d8, CodeType.full(8, False), pe=2, simd=3, dsp=True)
    assert e.dsp and e.estimate()["dsp"] == 6
    got, _ = run_engine(e, x8, stall=0.3)
    np.testing.assert_array_equal(got, x8 @ w8.T)


def test_dense_op_validates():
    """The op checks its fold and widths when made; the estimate has every manifest key."""
    d = Dense("fc", np.ones((2, 4), dtype=np.int64), np.zeros(2, dtype=np.int64), 2, 2, 6)
    t = CodeType.full(3, False)
    with pytest.raises(TypeError):
        DenseOp.of("fc", t)
    with pytest.raises(ValueError, match="pe must be a positive integer"):
        DenseOp.of(d, t, pe=0)
    with pytest.raises(ValueError, match="fc: fold 3x1 outside 1..2 x 1..4"):
        DenseOp.of(d, t, pe=3)
    with pytest.raises(ValueError, match="fold 1x5 outside"):
        DenseOp.of(d, t, simd=5)
    with pytest.raises(ValueError, match="in_elements_per_transfer=2 must divide simd=1"):
        DenseOp.of(d, t, in_elements_per_transfer=2)
    with pytest.raises(ValueError, match="raise out_elements_per_transfer to at least 2"):
        DenseOp.of(d, t, pe=2, simd=4)
    e = DenseOp.of(d, t, pe=2, simd=2)
    assert e.cycles == 2 and e.mac_units == 4 and e.tree_levels == 1
    assert set(e.resources()) >= {"lc", "ff", "ram", "dsp", "lut4", "dff", "ebr"}
    assert "fc: 2x4 2x2" in repr(e)


@pytest.mark.parametrize("mode", ["floor", "half_up", "half_even"])
def test_requant_engine(mode):
    rng = np.random.default_rng(11)
    t = CodeType.full(9, True)
    rq = Requant("rq", 3, mode, 4, True, -6, 7, multiplier=5)
    op = RequantOp.of(rq, t, elements=4)
    eng = op.build()
    x = rng.integers(-256, 256, (50, 4))
    x[0] = [-256, 255, 4 * 8 + 4, -(4 * 8 + 4)]
    flat = [int(v) for v in x.reshape(-1)]
    r = run_stream(eng, i_valid=eng.i.valid, i_ready=eng.i.ready, i_data=eng.i.payload,
                   o_valid=eng.o.valid, o_ready=eng.o.ready, o_data=eng.o.payload,
                   inputs=flat, n_out=len(flat), gap_prob=0.3, stall_prob=0.3,
                   rng=rng, idle_after=5)
    np.testing.assert_array_equal(np.array(r.outputs).reshape(x.shape), op.model(x))


def test_requant_engine_timing():
    t = CodeType.full(6, False)
    op = RequantOp.of(Requant("rq", 1, "half_even", 3, False, 0, 7), t, elements=5)
    eng = op.build()
    x = np.arange(30).reshape(6, 5) % 64
    flat = [int(v) for v in x.reshape(-1)]
    r = run_stream(eng, i_valid=eng.i.valid, i_ready=eng.i.ready, i_data=eng.i.payload,
                   o_valid=eng.o.valid, o_ready=eng.o.ready, o_data=eng.o.payload,
                   inputs=flat, n_out=len(flat))
    np.testing.assert_array_equal(np.array(r.outputs).reshape(x.shape), op.model(x))
    assert r.out_cycles[4] - r.in_cycles[0] == op.latency
    assert np.all(np.diff(r.out_cycles) == 1)


@pytest.mark.parametrize("wb,in_bits,in_signed,terms,levels", [
    (6, 8, None, 2, 3), (8, 8, None, 2, 3),                        # wide products: split
    (8, 1, False, 1, 2), (8, 3, False, 1, 2), (8, 4, True, 1, 2)])  # narrow inputs: one term
def test_product_terms_timing(wb, in_bits, in_signed, terms, levels):
    """Wide shift-add products become two registered partial products: one more tree level.
    8-bit weights on inputs narrower than SPLIT_WEIGHT_BITS: the product iterates over the
    input's bits (a 1-bit input gates the weight), one term per lane, no extra tree level."""
    rng = np.random.default_rng(wb if in_bits == 8 else in_bits)
    model = random_model(rng, [12, 6], in_bits=in_bits, in_signed=in_signed, weight_bits=wb,
                         final_requant=True, worst_case=in_bits < 8)
    eng = DenseOp.of(model.layers[0], model.input.code_type, model.layers[1], pe=2, simd=3)
    assert eng.product_terms == terms and eng.tree_levels == levels
    codes = random_codes(rng, model, 4)
    got, r = run_engine(eng, codes)
    np.testing.assert_array_equal(got, eng.model(codes))
    assert r.out_cycles[5] - r.in_cycles[0] == eng.latency


@pytest.mark.parametrize("rows,cols,pe,simd,win,wout", [(6, 9, 3, 4, 1, 3), (8, 8, 2, 2, 1, 1),
                                                        (10, 32, 2, 2, 2, 2)])
def test_dense_engine_per_row_requant(rows, cols, pe, simd, win, wout):
    """A fused ChannelRequant (per output row multiplier and shift) at several foldings."""
    from softfloor.intmodel import ChannelRequant
    from softfloor import arith
    rng = np.random.default_rng(rows * cols)
    model = random_model(rng, [cols, rows], final_requant=False)
    dense = model.layers[0]
    t = dense.out_type(model.input.code_type)
    rq = ChannelRequant("rq", rng.integers(0, 7, rows), str(rng.choice(arith.ROUNDING_MODES)),
                        4, True, -8, 7, rng.integers(1, 6, rows))
    rq.check(t, "test")
    eng = DenseOp.of(dense, model.input.code_type, rq, pe=pe, simd=simd,
                      in_elements_per_transfer=win, out_elements_per_transfer=wout)
    codes = random_codes(rng, model, 6)
    got, r = run_engine(eng, codes, gap=0.2, stall=0.3, seed=rows)
    np.testing.assert_array_equal(got, rq.execute(dense.execute(codes)))
    got, r = run_engine(eng, codes)
    last_out = r.out_cycles[rows // wout - 1::rows // wout]
    assert last_out[0] - r.in_cycles[0] == eng.latency


@pytest.mark.parametrize("wb", [1, 2, 4, 8])
def test_fully_unrolled_constant_weights(wb):
    """pe = rows, simd = cols: weights as constants (canonical signed digits, add/sub trees, no
    ROM); a zero row and an all-negative row included; bit-exact and timed as advertised."""
    rng = np.random.default_rng(40 + wb)
    model = random_model(rng, [23, 6], weight_bits=wb, final_requant=wb % 2 == 0)
    d = model.layers[0]
    if wb > 1:
        d.weight[0, :] = 0
    d.weight[1, :] = -np.abs(d.weight[1, :]) if wb > 1 else -1
    eng = DenseOp.of(d, model.input.code_type, model.layers[1] if len(model.layers) > 1
                      else None, pe=6, simd=23, in_elements_per_transfer=23,
                      out_elements_per_transfer=6)
    assert eng.const_weights and eng.cycles == 1
    # the shared-subexpression graph sets the depth: one register per two adder levels
    g = const_graph(d.weight, model.input.code_type)
    assert eng.tree_levels == g.stages() - 1 == -(-g.max_depth // 2) - 1
    codes = random_codes(rng, model, 6)
    got, r = run_engine(eng, codes)
    np.testing.assert_array_equal(got, golden.run(model, codes))
    assert r.out_cycles[0] - r.in_cycles[0] == eng.latency
    assert set(np.diff(r.out_cycles[1:])) == {1}
    got, _ = run_engine(eng, codes, gap=0.3, stall=0.5, seed=wb)
    np.testing.assert_array_equal(got, golden.run(model, codes))


@pytest.mark.parametrize("wb,pe,simd,dsp", [(10, 2, 3, False), (12, 1, 4, True),
                                            (16, 3, 2, False), (12, 5, 7, False)])
def test_weights_wider_than_8_bits(wb, pe, simd, dsp):
    """Product widths, ROM words, partial products, constants and estimates follow
    ``weight_bits`` (a QONNX import may bring weights wider than 8 bits): bit-exact folded,
    on DSP products and fully unrolled, with the op's latency."""
    from softfloor import arith
    rng = np.random.default_rng(wb + pe)
    w = rng.integers(*arith.code_range(wb, True), size=(5, 7), endpoint=True)
    w[0, 0], w[1, 1] = arith.code_range(wb, True)            # both extremes
    b = rng.integers(-100, 101, 5)
    t = CodeType.full(6, True)
    lo, hi = arith.dense_bounds(w, b, t.lo, t.hi)
    ab = arith.bits_for_range(int(min(lo)), int(max(hi)))[0]
    d = Dense("fc", w, b, wb, 8, ab)
    wout = 5 if pe == 5 else 1
    op = DenseOp.of(d, t, pe=pe, simd=simd, dsp=dsp, out_elements_per_transfer=wout,
                    in_elements_per_transfer=7 if simd == 7 else 1)
    assert op.estimate("up5k")["lc"] > 0 and op.estimate("ecp5-25f")["lc"] > 0
    x = rng.integers(t.lo, t.hi + 1, (6, 7))
    x[0] = np.where(w[0] > 0, t.hi, t.lo)                    # the accumulator bounds
    got, r = run_engine(op, x)
    np.testing.assert_array_equal(got, x @ w.T + b)
    assert r.out_cycles[5 // wout - 1] - r.in_cycles[0] == op.latency
