"""The constant-matrix adder graph (``softfloor.hw.rtl.cmvm``): its numpy twin against ``x @ W.T``
for random matrices of every weight width 1..8 bits, its exact ranges, its depth bound, the
sharing it finds; its Amaranth face (``softfloor.hw.rtl.cmvm_emit.emit``) against the twin in
Amaranth's simulator, combinational and pipelined. The same graphs on Icarus and Verilator:
``tests/sim/test_units_cmvm.py``."""
from __future__ import annotations

import numpy as np
import pytest
from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.sim import Simulator

from softfloor import arith
from softfloor.hw.ops import dense as dense_op
from softfloor.intmodel import CodeType
from softfloor.hw.rtl import cmvm
from softfloor.hw.rtl.cmvm_emit import emit
from softfloor.hw.rtl.primitives import csd_digits


def random_matrix(rng, rows, cols, bits, density=0.8):
    """Signed ``bits``-wide weights (1 bit: +-1), some zeros, a zero row and a negative row."""
    if bits == 1:
        w = np.where(rng.random((rows, cols)) < 0.5, -1, 1)
    else:
        w = rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), (rows, cols))
        w[rng.random((rows, cols)) > density] = 0
        if rows > 2:
            w[0] = 0
            w[1] = -np.abs(w[1])
    return w


def extreme_inputs(W, lo, hi):
    """Per row the inputs that reach its least and its greatest sum, and the all-lo/all-hi
    vectors."""
    lo, hi = np.asarray(lo), np.asarray(hi)
    out = [lo, hi]
    for row in np.asarray(W):
        out += [np.where(row > 0, hi, lo), np.where(row > 0, lo, hi)]
    return np.array(out, dtype=np.int64)


def vectors(rng, W, lo, hi, n):
    x = rng.integers(lo, np.asarray(hi) + 1, (n, W.shape[1]))
    return np.concatenate([x, extreme_inputs(W, lo, hi)])


@pytest.mark.parametrize("bits", range(1, 9))
def test_graph_equals_the_matrix_product(bits):
    """Every weight width 1..8, signed and unsigned inputs of several widths: the twin (every
    node wrapped at its own width) equals ``x @ W.T`` on random and extreme-sum vectors; the
    graph's matrix is ``W``; each output's range is exactly reached by its extreme inputs."""
    rng = np.random.default_rng(100 + bits)
    for rows, cols, xb, sgn in [(7, 13, 4, False), (16, 24, 2, False), (5, 9, 6, True),
                                (12, 5, 1, False), (3, 40, 8, True)]:
        W = random_matrix(rng, rows, cols, bits)
        lo, hi = arith.code_range(xb, sgn)
        g = cmvm.solve(W, [(lo, hi)] * cols)
        np.testing.assert_array_equal(g.matrix(), W)
        x = vectors(rng, W, [lo] * cols, [hi] * cols, 2000)
        np.testing.assert_array_equal(g.evaluate(x), x @ W.T)
        ext = extreme_inputs(W, [lo] * cols, [hi] * cols)
        y = ext @ W.T
        for r in range(rows):
            assert g.output_range(r) == (int(y[:, r].min()), int(y[:, r].max())), r
        # the stages are known without solving (the unit's latency, the planner's)
        assert cmvm.stages_of(W) == g.stages(), (rows, cols)
        assert list(cmvm.term_counts(W)) == [sum(len(csd_digits(int(v))) for v in row)
                                             for row in W]


def test_digits_sized_layers_ten_thousand_vectors():
    """The layers of a digits-sized w4a4 MLP: >= 10,000 random vectors plus the extremes."""
    from tests.randmodel import digits_model
    m = digits_model()
    rng = np.random.default_rng(7)
    types = m.types()
    for k, layer in enumerate(m.layers):
        if not hasattr(layer, "weight"):
            continue
        t = types[k]
        g = cmvm.solve(layer.weight, [(t.lo, t.hi)] * layer.in_features)
        x = vectors(rng, layer.weight, [t.lo] * layer.in_features, [t.hi] * layer.in_features,
                    10_000)
        np.testing.assert_array_equal(g.evaluate(x), x @ layer.weight.T)


def test_per_input_ranges_set_the_widths():
    """Inputs with different ranges: widths follow each node's exact range."""
    W = np.array([[1, 1], [1, -1], [3, 0]])
    g = cmvm.solve(W, [(0, 1), (-4, 3)])
    x = np.array([[a, b] for a in range(2) for b in range(-4, 4)])
    np.testing.assert_array_equal(g.evaluate(x), x @ W.T)
    for i, (lo, hi) in enumerate(g.ranges):
        assert g.shapes[i] == arith.bits_for_range(lo, hi)
    assert g.shapes[0] == (1, False) and g.shapes[1] == (3, True)


def test_sharing_halves_the_adders_of_a_repetitive_matrix():
    """Rows that repeat column pairs share them: far fewer adders than the plain trees, the
    same values, and no deeper than the plain trees' depth rounded up to whole stages."""
    rng = np.random.default_rng(3)
    W = random_matrix(rng, 32, 64, 2)
    rngs = [(0, 3)] * 64
    plain, shared = cmvm.naive(W, rngs), cmvm.solve(W, rngs)
    assert len(shared.adders) < 0.7 * len(plain.adders)
    assert shared.total_adder_bits < 0.75 * plain.total_adder_bits
    assert shared.stages() <= max(1, -(-plain.max_depth // cmvm.LEVELS_PER_STAGE))
    x = vectors(rng, W, [0] * 64, [3] * 64, 500)
    np.testing.assert_array_equal(shared.evaluate(x), plain.evaluate(x))


def test_outputs_are_positive_unless_a_row_is_all_negative():
    """The last adder of a row puts its positive term first: no output negation, except for a
    row whose terms are all negative."""
    W = np.array([[1, -2, 3, -1], [-1, -2, -3, -1], [0, 0, 0, 0], [-4, 0, 0, 0]])
    g = cmvm.solve(W, [(0, 7)] * 4)
    assert [o.neg for o in g.outputs] == [False, True, False, True]
    assert g.outputs[2].node is None
    assert g.outputs[3].shift == 2 and g.outputs[3].node == 0


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="2-D"):
        cmvm.solve([1, 2], [(0, 1)])
    with pytest.raises(ValueError, match="2 input ranges for 3 columns"):
        cmvm.solve([[1, 2, 3]], [(0, 1)] * 2)
    with pytest.raises(ValueError, match="empty range"):
        cmvm.solve([[1]], [(2, 1)])
    with pytest.raises(ValueError, match="integers"):
        cmvm.solve([[0.5]], [(0, 1)])
    with pytest.raises(ValueError, match="earlier nodes"):
        cmvm.AdderGraph(1, [(0, 1)], [cmvm.Adder(0, 0, 1, 0, False)], [])


def test_graph_prints():
    g = cmvm.solve([[3, 5], [7, 0]], [(0, 15), (0, 15)])
    text = str(g)
    assert text.startswith("AdderGraph: 2 inputs, 2 outputs")
    assert "x0 u4 [0..15]" in text and "y1 = " in text and " d1" in text


# -- the Amaranth face ---------------------------------------------------------------------------

def _simulate(W, t_lo, t_hi, xb, sgn, x, registered):
    g = cmvm.solve(W, [(t_lo, t_hi)] * W.shape[1])
    m = Module()
    xs = [Signal(signed(xb) if sgn else unsigned(xb), name=f"x{c}") for c in range(W.shape[1])]
    outs = emit(m, xs, g, registered=registered)
    ys = [Signal(o.shape(), name=f"y{r}") for r, o in enumerate(outs)]
    m.d.comb += [y.eq(o) for y, o in zip(ys, outs)]
    if registered:                      # an always-present sync domain even with no register
        dummy = Signal()
        m.d.sync += dummy.eq(~dummy)
    lat = g.stages() if registered else 0
    got = []
    sim = Simulator(m)

    async def bench(ctx):
        # one vector per cycle; after the tick that follows vector k's set-up, stage 1 holds
        # it, so its outputs show after `lat` ticks: read at iteration k + lat - 1
        for k in range(len(x) + max(lat - 1, 0)):
            if k < len(x):
                for c, s in enumerate(xs):
                    ctx.set(s, int(x[k, c]))
            if registered:
                await ctx.tick()
            else:
                await ctx.delay(1e-9)
            if k >= lat - 1 or not registered:
                got.append([ctx.get(y) for y in ys])
    if registered:
        sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return g, np.array(got, dtype=np.int64)


@pytest.mark.parametrize("registered", [False, True])
def test_emit_equals_the_twin_in_amaranth(registered):
    """Combinational and pipelined: outputs equal the twin (pipelined: ``graph.stages()``
    cycles later, one new vector per cycle)."""
    rng = np.random.default_rng(11)
    W = random_matrix(rng, 6, 10, 5)
    lo, hi = arith.code_range(4, True)
    x = vectors(rng, W, [lo] * 10, [hi] * 10, 60)
    g, got = _simulate(W, lo, hi, 4, True, x, registered)
    np.testing.assert_array_equal(got, g.evaluate(x))
    np.testing.assert_array_equal(got, x @ W.T)


def test_register_bits_count_what_emit_builds():
    """``register_bits`` is the flip-flop count of ``emit``'s pipeline."""
    rng = np.random.default_rng(12)
    W = random_matrix(rng, 9, 20, 4)
    g = cmvm.solve(W, [(0, 15)] * 20)
    m = Module()
    xs = [Signal(unsigned(4), name=f"x{c}") for c in range(20)]
    emit(m, xs, g)
    from amaranth.hdl import Fragment
    frag = Fragment.get(m, None)
    regs = sum(len(lhs) for dom, stmts in frag.statements.items() if dom == "sync"
               for st in stmts for lhs in [st.lhs])
    assert regs == g.register_bits()


def test_module_docstring_example_is_true():
    import doctest
    assert doctest.testmod(cmvm).failed == 0


def test_large_matrices_are_estimated_from_the_plain_trees():
    """Beyond SOLVE_TERMS terms the estimate is SHARED_FRACTION of the plain trees (no
    solve: seconds, not minutes); below it, the solved graph's own counts."""
    rng = np.random.default_rng(8)
    t = CodeType.full(8, True)
    big = random_matrix(rng, 64, 128, 8)
    assert cmvm.term_counts(big).sum() > dense_op.SOLVE_TERMS
    g = cmvm.matrix_naive(big, t.lo, t.hi)
    assert dense_op.const_tree(big, t) == (int(dense_op.SHARED_FRACTION * g.total_adder_bits),
                                           int(dense_op.SHARED_FRACTION * g.register_bits()))
    small = random_matrix(rng, 8, 12, 4)
    s = cmvm.matrix_graph(small, t.lo, t.hi)
    assert dense_op.const_tree(small, t) == (s.total_adder_bits, s.register_bits())
