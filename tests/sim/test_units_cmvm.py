"""Constant-matrix adder graphs (``softfloor.hw.rtl.cmvm``, emitted by ``cmvm_rtl.emit``) on both
simulators: the last two layers of a digits-sized w4a4 MLP (32x64, 10x32) and random
matrices of every weight width 1..8 bits, side by side in one combinational harness, >= 10,000
random vectors plus each row's extreme-sum inputs, against ``x @ W.T`` and the numpy twin.
(The pipelined emission runs on both simulators inside the fully unrolled engines of
``test_units_stream.py``.)"""
from __future__ import annotations

import os

import numpy as np
import pytest
from amaranth.hdl import signed, unsigned

from softfloor import arith
from softfloor.hw.rtl import cmvm
from softfloor.hw.rtl.cmvm_emit import emit
from softfloor.sim import units
from tests.hw.test_cmvm import extreme_inputs, random_matrix
from tests.randmodel import digits_model

pytestmark = pytest.mark.sim

N_RANDOM = 100_000 if os.environ.get("SOFTFLOOR_SOAK", "") not in ("", "0") else 10_000


def cases():
    """``[(name, W, input bits, signed)]``: the digits-sized 32x64 and 10x32 layers, then one
    random matrix per weight width 1..8 (input widths and signedness varied)."""
    m = digits_model()
    out = [(layer.name, np.asarray(layer.weight), 4, False) for layer in m.layers
           if hasattr(layer, "weight") and layer.name != "fc0"]
    rng = np.random.default_rng(23)
    for bits in range(1, 9):
        xb, sgn = [(2, False), (4, True), (6, False), (3, True)][bits % 4]
        out.append((f"w{bits}", random_matrix(rng, 4 + bits, 6 + 2 * bits, bits), xb, sgn))
    return out


def cmvm_unit(rng):
    """The harness, its input vectors and the expected outputs (checked on the twin too)."""
    inputs, graphs, xs = {}, [], {}
    for name, W, xb, sgn in cases():
        cols = W.shape[1]
        lo, hi = arith.code_range(xb, sgn)
        graphs.append((name, cmvm.solve(W, [(lo, hi)] * cols), W))
        inputs.update({f"{name}_x{c}": signed(xb) if sgn else unsigned(xb) for c in range(cols)})
        xs[name] = np.concatenate([rng.integers(lo, hi + 1, (N_RANDOM, cols)),
                                   extreme_inputs(W, [lo] * cols, [hi] * cols)])
    n = max(len(x) for x in xs.values())
    vectors, want = {}, {}
    for name, g, W in graphs:
        lo, hi = g.in_ranges[0]
        x = np.concatenate([xs[name], rng.integers(lo, hi + 1, (n - len(xs[name]), g.n_inputs))])
        vectors.update({f"{name}_x{c}": x[:, c] for c in range(g.n_inputs)})
        y = x @ W.T
        np.testing.assert_array_equal(g.evaluate(x), y)            # the twin, same vectors
        want.update({f"{name}_y{r}": y[:, r] for r in range(W.shape[0])})

    def logic(m, v):
        out = {}
        for name, g, _ in graphs:
            ys = emit(m, [v[f"{name}_x{c}"] for c in range(g.n_inputs)], g, registered=False,
                      name=name)
            out.update({f"{name}_y{r}": y for r, y in enumerate(ys)})
        return out
    return units.harness("u_cmvm", inputs, {}, logic), vectors, want


def test_cmvm_graphs_on_both_simulators(simulator, tmp_path):
    rng = np.random.default_rng(5)
    h, vectors, want = cmvm_unit(rng)
    n = len(next(iter(vectors.values())))
    assert n >= N_RANDOM
    got = units.run_vectors(h, vectors, simulator, tmp_path)
    for name, w in want.items():
        bad = np.nonzero(got[name] != w)[0]
        assert not len(bad), (f"{name}: {len(bad)} of {n} vectors differ; first at {bad[0]}: "
                              f"expected {int(w[bad[0]])} got {int(got[name][bad[0]])}")
    print(f"cmvm on {simulator}: {n} vectors x {len(want)} outputs")


def test_pipelined_graph_on_both_simulators(simulator, tmp_path):
    """The registered emission (a register every two adder levels, behind a registered input):
    one vector per cycle, the results ``graph.stages()`` edges after each was captured. The
    benchmark's softfloor matrix, so its bit-exactness check is tested too."""
    from softfloor.benchmarks import unrolled as U
    rng = np.random.default_rng(9)
    W = random_matrix(rng, 8, 24, 5)
    lo, hi = arith.code_range(4, True)
    d = U.softfloor_design(W, lo, hi, 4, True)
    assert d["stages"] == cmvm.solve(W, [(lo, hi)] * 24).stages() >= 2
    x = np.concatenate([rng.integers(lo, hi + 1, (3000, 24)),
                        extreme_inputs(W, [lo] * 24, [hi] * 24)])
    vpath = tmp_path / "sf_matrix.v"
    vpath.write_text(d["verilog"])
    words = units.run_pipelined(vpath, d["top"], [U._pack(d["in_fields"], r) for r in x],
                                d["stages"], simulator, tmp_path)
    got = np.array([U._unpack(d["out_fields"], w) for w in words])
    np.testing.assert_array_equal(got, x @ W.T)
    # one stage too few reads the previous vector's results: the check can fail
    early = units.run_pipelined(vpath, d["top"], [U._pack(d["in_fields"], r) for r in x[:50]],
                                d["stages"] - 1, simulator, tmp_path / "early")
    assert any(U._unpack(d["out_fields"], w) != list(y) for w, y in zip(early, x[:50] @ W.T))
