"""Amaranth faces of softfloor.hw.rtl.primitives against their numpy faces (softfloor.arith)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.lib import stream
from amaranth.sim import Simulator

from softfloor import arith
from softfloor.hw.rtl import primitives as P

from .streamsim import run_stream


def comb_eval(inputs: dict, outputs: dict, vectors: list[dict]) -> list[dict]:
    """Simulate a combinational module: set each vector on ``inputs``, read all ``outputs``."""
    m = Module()
    sigs = {}
    for name, expr in outputs.items():
        sigs[name] = Signal(expr.shape(), name=name)
        m.d.comb += sigs[name].eq(expr)
    results = []

    async def tb(ctx):
        for vec in vectors:
            for k, v in vec.items():
                ctx.set(inputs[k], v)
            results.append({k: ctx.get(s) for k, s in sigs.items()})

    sim = Simulator(m)
    sim.add_testbench(tb)
    sim.run()
    return results


@pytest.mark.parametrize("shape", [signed(9), unsigned(8)])
def test_round_shift_exhaustive(shape):
    """Every value of a 9-bit signed / 8-bit unsigned input, every shift 0..10, every mode."""
    x = Signal(shape)
    outs = {f"{mode}_{s}": P.round_shift(x, s, mode)
            for mode in arith.ROUNDING_MODES for s in range(11)}
    lo, hi = arith.code_range(shape.width, shape.signed)
    xs = np.arange(lo, hi + 1)
    got = comb_eval({"x": x}, outs, [{"x": int(v)} for v in xs])
    for name in outs:
        mode, s = name.rsplit("_", 1)
        want = P.np_round_shift(xs, int(s), mode)
        have = np.array([g[name] for g in got])
        np.testing.assert_array_equal(have, want, err_msg=name)


def test_round_shift_ties_are_covered():
    """Sanity of the exhaustive test: ties exist for every shift >= 1 and differ by mode."""
    for s in range(1, 6):
        ties = np.arange(-256, 256)[(np.arange(-256, 256) & ((1 << s) - 1)) == 1 << (s - 1)]
        assert len(ties)
        up, even = arith.round_shift(ties, s, "half_up"), arith.round_shift(ties, s, "half_even")
        assert np.any(up != even)


def test_round_shift_rejects_bad_args():
    with pytest.raises(ValueError):
        P.round_shift(Signal(4), 1, "truncate")
    with pytest.raises(ValueError):
        P.round_shift(Signal(4), -1, "floor")


def test_saturate_edges():
    """Bounds around every edge: lo-1, lo, lo+1, hi-1, hi, hi+1 and the extremes of x."""
    x = Signal(signed(10))
    bounds = [(-512, 511), (0, 15), (-8, 7), (-3, -3), (5, 200), (-100, -2), (0, 0)]
    outs = {f"s{i}": P.saturate(x, lo, hi) for i, (lo, hi) in enumerate(bounds)}
    outs["relu"] = P.relu(x)
    xs = sorted({-512, 511, 0} | {b + d for lo, hi in bounds for b in (lo, hi) for d in (-1, 0, 1)
                                  if -512 <= b + d <= 511} | set(range(-20, 20)))
    got = comb_eval({"x": x}, outs, [{"x": v} for v in xs])
    for i, (lo, hi) in enumerate(bounds):
        assert [g[f"s{i}"] for g in got] == [P.np_saturate(v, lo, hi) for v in xs], (lo, hi)
    assert [g["relu"] for g in got] == [P.np_relu(v) for v in xs]


def test_saturate_shape_checks():
    with pytest.raises(ValueError):
        P.saturate(Signal(8), 5, 4)
    with pytest.raises(ValueError):
        P.saturate(Signal(8), -1, 4, unsigned(4))


@pytest.mark.parametrize("a_shape,b_shape", [(signed(4), unsigned(4)), (signed(3), signed(5)),
                                             (unsigned(3), unsigned(4)), (signed(2), signed(1))])
def test_multiply_exhaustive(a_shape, b_shape):
    a, b = Signal(a_shape), Signal(b_shape)
    ra = range(*(lambda lo, hi: (lo, hi + 1))(*arith.code_range(a_shape.width, a_shape.signed)))
    rb = range(*(lambda lo, hi: (lo, hi + 1))(*arith.code_range(b_shape.width, b_shape.signed)))
    vecs = [{"a": x, "b": y} for x, y in itertools.product(ra, rb)]
    got = comb_eval({"a": a, "b": b}, {"p": P.multiply(a, b)}, vecs)
    assert [g["p"] for g in got] == [P.np_multiply(v["a"], v["b"]) for v in vecs]


def test_requantize_random_configs_exhaustive_inputs():
    """40 random (multiplier, shift, mode, lo, hi) configs x every 11-bit signed accumulator."""
    rng = np.random.default_rng(1)
    acc = Signal(signed(11))
    configs = []
    for i in range(40):
        mult = int(rng.choice([1, 1, 2, 3, 7, 77, 255, 1000]))
        shift = int(rng.integers(0, 14))
        mode = arith.ROUNDING_MODES[i % 3]
        bits = int(rng.integers(1, 9))
        sgn = bool(rng.integers(2))
        clo, chi = arith.code_range(bits, sgn)
        lo = int(rng.integers(clo, chi + 1))
        hi = int(rng.integers(lo, chi + 1))
        if i % 5 == 0:
            lo, hi = clo, chi
        configs.append(dict(multiplier=mult, shift=shift, rounding=mode, lo=lo, hi=hi,
                            shape=P.code_shape(bits, sgn)))
    outs = {f"c{i}": P.requantize(acc, **c) for i, c in enumerate(configs)}
    xs = np.arange(-1024, 1024)
    got = comb_eval({"acc": acc}, outs, [{"acc": int(v)} for v in xs])
    n = 0
    for i, c in enumerate(configs):
        want = P.np_requantize(xs, multiplier=c["multiplier"], shift=c["shift"],
                               rounding=c["rounding"], lo=c["lo"], hi=c["hi"])
        have = np.array([g[f"c{i}"] for g in got])
        np.testing.assert_array_equal(have, want, err_msg=str(c))
        n += len(xs)
    assert n >= 1000


def test_requantize_wide_random():
    """Wide accumulators (30 bits) and large shifts, 2000 random values incl. ties."""
    rng = np.random.default_rng(2)
    acc = Signal(signed(30))
    cfgs = [(m, s, mode) for m in (1, 12345) for s in (0, 1, 9, 17, 29, 40)
            for mode in arith.ROUNDING_MODES]
    outs = {f"c{i}": P.requantize(acc, multiplier=m, shift=s, rounding=mode,
                                  lo=-(1 << 15), hi=(1 << 15) - 1, shape=signed(16))
            for i, (m, s, mode) in enumerate(cfgs)}
    xs = list(rng.integers(-(1 << 29), 1 << 29, 1500))
    xs += [k * (1 << s) + (1 << (s - 1)) for s in (1, 9, 17) for k in range(-80, 80)
           if -(1 << 29) <= k * (1 << s) + (1 << (s - 1)) < 1 << 29][:500]
    xs += [-(1 << 29), (1 << 29) - 1]
    got = comb_eval({"acc": acc}, outs, [{"acc": int(v)} for v in xs])
    for i, (m, s, mode) in enumerate(cfgs):
        want = [arith.requantize(int(v), s, mode, -(1 << 15), (1 << 15) - 1, m) for v in xs]
        assert [g[f"c{i}"] for g in got] == want, (m, s, mode)


def test_accumulate_matches_sums():
    rng = np.random.default_rng(3)
    m = Module()
    acc = Signal(signed(12))
    value, first, en, init = Signal(signed(6)), Signal(), Signal(), Signal(signed(8))
    P.accumulate(m, acc, value, enable=en, first=first, init=init)
    groups = [(int(rng.integers(-128, 128)), list(rng.integers(-32, 32, rng.integers(1, 20))))
              for _ in range(60)]
    seen = []

    async def tb(ctx):
        for b, vals in groups:
            for k, v in enumerate(vals):
                while rng.random() < 0.3:          # idle cycles must not change anything
                    ctx.set(en, 0)
                    await ctx.tick()
                ctx.set(en, 1)
                ctx.set(first, int(k == 0))
                ctx.set(init, b)
                ctx.set(value, int(v))
                await ctx.tick()
            ctx.set(en, 0)
            seen.append(ctx.get(acc))

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert seen == [b + sum(int(v) for v in vals) for b, vals in groups]


@pytest.mark.parametrize("gap,stall", [(0.0, 0.0), (0.5, 0.0), (0.0, 0.5), (0.4, 0.6)])
def test_skid_buffer_stream(gap, stall):
    dut = P.SkidBuffer(signed(7))
    rng = np.random.default_rng(4)
    data = [int(v) for v in rng.integers(-64, 64, 400)]
    r = run_stream(dut, i_valid=dut.i.valid, i_ready=dut.i.ready, i_data=dut.i.payload,
                   o_valid=dut.o.valid, o_ready=dut.o.ready, o_data=dut.o.payload,
                   inputs=data, n_out=len(data), gap_prob=gap, stall_prob=stall, rng=rng,
                   idle_after=5)
    assert r.outputs == data
    if gap == stall == 0:
        # Full throughput: one word per cycle, one cycle of latency.
        assert r.in_cycles == list(range(len(data)))
        assert r.out_cycles == list(range(1, len(data) + 1))


def test_skid_buffer_ready_is_registered():
    """i.ready must not depend combinationally on o.ready (it is ~skid_valid)."""
    dut = P.SkidBuffer(unsigned(4))
    seen = []

    async def tb(ctx):
        ctx.set(dut.o.ready, 0)
        ctx.set(dut.i.valid, 1)
        await ctx.tick()
        await ctx.tick()                      # output register and skid entry now full
        a = ctx.get(dut.i.ready)
        ctx.set(dut.o.ready, 1)               # combinational change only
        seen.append((a, ctx.get(dut.i.ready)))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert seen == [(0, 0)]


@pytest.mark.parametrize("wshape,xshape", [(signed(4), unsigned(4)), (signed(3), signed(5)),
                                           (signed(2), unsigned(3)), (signed(1), signed(4))])
def test_multiply_shift_add_exhaustive(wshape, xshape):
    """The $mul-free product (logic, never a DSP) equals the exact product everywhere."""
    w, x = Signal(wshape), Signal(xshape)
    wlo, whi = arith.code_range(wshape.width, True)
    xlo, xhi = arith.code_range(xshape.width, xshape.signed)
    vecs = [{"w": a, "x": b} for a in range(wlo, whi + 1) for b in range(xlo, xhi + 1)]
    got = comb_eval({"w": w, "x": x}, {"p": P.multiply_shift_add(w, x)}, vecs)
    assert [g["p"] for g in got] == [P.np_multiply_shift_add(v["w"], v["x"]) for v in vecs]


@pytest.mark.parametrize("xshape", [unsigned(4), signed(5)])
def test_multiply_binary_and_const(xshape):
    b, x = Signal(), Signal(xshape)
    xlo, xhi = arith.code_range(xshape.width, xshape.signed)
    consts = [1, 2, 3, 5, 8, 77, 255]
    outs = {"bin": P.multiply_binary(b, x)} | {f"c{c}": P.multiply_const(x, c) for c in consts}
    vecs = [{"b": s, "x": v} for s in (0, 1) for v in range(xlo, xhi + 1)]
    for vec, g in zip(vecs, comb_eval({"b": b, "x": x}, outs, vecs)):
        assert g["bin"] == (1 if vec["b"] else -1) * vec["x"]
        for c in consts:
            assert g[f"c{c}"] == vec["x"] * c
    with pytest.raises(ValueError):
        P.multiply_const(x, 0)


@pytest.mark.parametrize("parts", [1, 2, 3])
@pytest.mark.parametrize("xshape", [unsigned(5), unsigned(8), signed(7)])
def test_split_product_terms_sum_to_the_product(parts, xshape):
    """Slices of the narrower operand (the weight on a tie or when the input is wider)."""
    w, x = Signal(signed(6)), Signal(xshape)
    outs = {f"t{k}": t for k, t in enumerate(P.split_product_terms(w, x, parts))}
    lo, hi = (-(1 << (len(x) - 1)), 1 << (len(x) - 1)) if xshape.signed else (0, 1 << len(x))
    vecs = [{"w": a, "x": b} for a in range(-32, 32) for b in range(lo, hi, 7)]
    for vec, g in zip(vecs, comb_eval({"w": w, "x": x}, outs, vecs)):
        assert sum(g.values()) == vec["w"] * vec["x"]


@pytest.mark.parametrize("xshape", [unsigned(1), unsigned(2), signed(3), unsigned(8)])
def test_multiply_narrow_is_exact(xshape):
    """The shift-add product over the narrower operand: exact for narrow and wide inputs; a
    1-bit unsigned input is a gate (no adder: as wide as the weight plus its sign bit)."""
    w, x = Signal(signed(8)), Signal(xshape)
    prod = P.multiply_narrow(w, x)
    lo, hi = (-(1 << (len(x) - 1)), 1 << (len(x) - 1)) if xshape.signed else (0, 1 << len(x))
    vecs = [{"w": a, "x": b} for a in range(-128, 128, 3) for b in range(lo, hi, 5 if hi > 8 else 1)]
    for vec, g in zip(vecs, comb_eval({"w": w, "x": x}, {"p": prod}, vecs)):
        assert g["p"] == P.np_multiply_shift_add(vec["w"], vec["x"]) == vec["w"] * vec["x"]


def test_csd_digits_are_canonical():
    for c in range(-300, 301):
        d = P.csd_digits(c)
        assert sum(s << k for k, s in d) == c
        ks = [k for k, _ in d]
        assert all(b - a >= 2 for a, b in zip(ks, ks[1:]))          # no two adjacent
        assert len(d) <= (abs(c).bit_length() + 2) // 2 if c else d == []
    assert P.csd_digits(7) == [(0, -1), (3, 1)] and P.csd_digits(-8) == [(3, -1)]
