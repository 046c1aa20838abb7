"""Streaming units against their numpy twins in cocotb, on both simulators.

Each unit (the matrix-vector unit of a :class:`~softfloor.hw.ops.DenseOp` at one PE/SIMD
folding, the unit of a :class:`~softfloor.hw.ops.RequantOp`, the skid buffer and the beat
adapters of :mod:`softfloor.hw.rtl.stream_io`) is wrapped by :func:`softfloor.sim.units.stream_harness` behind
``s_axis``/``m_axis`` ports and run by the same driver -> monitor -> in-order scoreboard as whole
networks (:mod:`softfloor.sim.tb_stream`): random input gaps, random output backpressure, an
idle check after the last vector (nothing extra), the isolated-vector latency against the op's
``latency``. A mismatch names the vector, the element, expected and got.

Vectors per unit: :data:`N_RANDOM` random vectors plus the corners -- min/max codes, per output
row the two input vectors that drive its accumulator to the worst-case bounds ``acc_bits`` was
sized from (the bound needs every bit: ``acc_bits`` is the tight width), and for a fused
requant, for every output row, an input vector reaching every accumulator value whose scaled
value is a rounding tie (and the saturation edges) within the row's reachable range.
The testbench costs about four cocotb callbacks per transfer (~1,000-2,000 vectors/s on
Verilator, about half that on Icarus, measured on a 2-core machine); ``make test`` runs
:data:`N_TEST` (10,000) random vectors per unit on both simulators and ``make soak`` runs
:data:`N_SOAK` (every gap/backpressure pattern).
"""
from __future__ import annotations

import os

import numpy as np
import pytest
from amaranth.hdl import signed, unsigned

from softfloor import arith
from softfloor.hw.ops import DenseOp, RequantOp
from softfloor.hw.rtl import primitives as P
from softfloor.hw.rtl.stream_io import BeatLayout, BeatPacker, BeatUnpacker
from softfloor.intmodel import CodeType, Dense, Requant
from softfloor.sim import tools, units
from tests.conftest import require_tool

pytestmark = pytest.mark.sim

SOAK = os.environ.get("SOFTFLOOR_SOAK", "") not in ("", "0")
#: Random vectors (transfers, for the FIFOs) per unit: ``make test`` per simulator, ``make soak``.
N_TEST = {"verilator": 10_000, "icarus": 10_000}
N_SOAK = 20_000


def n_random(simulator: str) -> int:
    return N_SOAK if SOAK else N_TEST[simulator]


def sims_for(key: str) -> list[str]:
    """Every unit runs on both simulators, in ``make test`` and ``make soak``."""
    return list(tools.SIMULATORS)


def unit_cases(kind: str, names) -> list:
    """``(simulator, name)`` parameters (the ``simulator`` fixture is overridden: call
    :func:`need` in the test)."""
    return [pytest.param(s, n, id=f"{s}-{n}") for n in names for s in sims_for(f"{kind}:{n}")]


def need(simulator: str) -> None:
    """The simulator fixture's check: missing fails under CI, skips loudly elsewhere."""
    require_tool(simulator, lambda: tools.ensure(simulator))


# -- the layers ---------------------------------------------------------------------------------

def make_layer(rng, rows, cols, *, in_type: CodeType, weight_bits: int, requant: dict | None,
               worst_case=False):
    """A Dense with random weights (extreme codes only when ``worst_case``; every row has a
    weight of magnitude 1 so each row's accumulator takes every value between its bounds when
    the inputs span at least 3 codes), ``acc_bits`` exactly the worst-case width, and an optional
    fused Requant."""
    wlo, whi = (-1, 1) if weight_bits == 1 else arith.code_range(weight_bits, True)
    w = rng.integers(wlo, whi + 1, size=(rows, cols))
    if worst_case:
        w = np.where(w < 0, wlo, whi)
    if weight_bits == 1:
        w = np.where(w == 0, 1, w)
    else:
        w[np.arange(rows), rng.integers(cols, size=rows)] = rng.choice([-1, 1], size=rows)
    b = rng.integers(-20, 21, size=rows)
    lo, hi = arith.dense_bounds(w, b, in_type.lo, in_type.hi)
    acc_bits = max(2, arith.bits_for_range(min(int(min(lo)), -1), max(int(max(hi)), 0))[0])
    dense = Dense("fc", w.astype(np.int64), b.astype(np.int64), weight_bits, 6, acc_bits)
    rq = Requant("rq", **requant) if requant else None
    return dense, rq


FOLDINGS = {
    # name: rows, cols, input type, weight bits, worst-case weights, requant, engine options
    "1x1": (3, 4, CodeType.full(4, True), 4, False,
            dict(shift=3, rounding="half_even", bits=4, signed=True, lo=-8, hi=7, multiplier=3),
            dict(pe=1, simd=1)),
    "divisors_2x3": (4, 6, CodeType.full(3, False), 2, True,
                     dict(shift=2, rounding="half_up", bits=3, signed=False, lo=0, hi=7,
                          multiplier=1),
                     dict(pe=2, simd=3)),
    "padded_2x3_split": (5, 7, CodeType.full(6, True), 8, False,   # 6-bit inputs: split
                         dict(shift=9, rounding="floor", bits=5, signed=True, lo=-9, hi=12,
                              multiplier=5),
                         dict(pe=2, simd=3)),
    "full_unroll_raw": (3, 4, CodeType.full(8, False), 1, False, None,
                        dict(pe=3, simd=4, in_elements_per_transfer=4,
                             out_elements_per_transfer=3)),
    "full_unroll_const_rq": (4, 3, CodeType.full(6, True), 5, False,
                             dict(shift=5, rounding="half_even", bits=6, signed=True, lo=-20,
                                  hi=31, multiplier=7),
                             dict(pe=4, simd=3, out_elements_per_transfer=4)),
    "wide_transfers_6x4": (6, 8, CodeType.full(2, True), 6, False,
                           dict(shift=1, rounding="half_even", bits=3, signed=True, lo=-4, hi=3,
                                multiplier=1),
                           dict(pe=6, simd=4, in_elements_per_transfer=2,
                                out_elements_per_transfer=3)),
    "dsp_2x2": (4, 6, CodeType.full(8, True), 8, False,
                dict(shift=12, rounding="half_up", bits=8, signed=True, lo=-128, hi=127,
                     multiplier=77),
                dict(pe=2, simd=2, dsp=True)),
}


def dense_engine(name: str, seed: int = 0) -> DenseOp:
    rows, cols, t, wb, worst, rq, opts = FOLDINGS[name]
    rng = np.random.default_rng(seed + sum(map(ord, name)))
    dense, requant = make_layer(rng, rows, cols, in_type=t, weight_bits=wb, requant=rq,
                                worst_case=worst)
    return DenseOp.of(dense, t, requant, **opts)


# -- corners ------------------------------------------------------------------------------------

def reach_tables(w_row, b, codes):
    """Per prefix of columns, the accumulator values the prefix can reach (boolean tables over
    ``[lo, hi]`` of that prefix), for the backtracking in :func:`input_for`."""
    tables = []
    lo = hi = int(b)
    cur = np.ones(1, dtype=bool)
    for w in w_row:
        terms = sorted({int(w) * int(v) for v in codes})
        nlo, nhi = lo + terms[0], hi + terms[-1]
        nxt = np.zeros(nhi - nlo + 1, dtype=bool)
        for t in terms:
            off = lo + t - nlo
            nxt[off:off + len(cur)] |= cur
        tables.append((lo, cur))
        lo, hi, cur = nlo, nhi, nxt
    tables.append((lo, cur))
    return tables


def input_for(w_row, codes, tables, target, rng):
    """An input vector whose row accumulator is exactly ``target`` (None if unreachable)."""
    lo, cur = tables[-1]
    if not (lo <= target < lo + len(cur)) or not cur[target - lo]:
        return None
    x = np.zeros(len(w_row), dtype=np.int64)
    for k in range(len(w_row) - 1, -1, -1):
        plo, prev = tables[k]
        ok = [v for v in codes if 0 <= target - int(w_row[k]) * v - plo < len(prev)
              and prev[target - int(w_row[k]) * v - plo]]
        v = ok[int(rng.integers(len(ok)))]
        x[k] = v
        target -= int(w_row[k]) * v
    return x


def requant_targets(rq: Requant, acc_lo: int, acc_hi: int) -> list[int]:
    """Accumulators in ``[acc_lo, acc_hi]`` whose scaled value is a rounding tie with a result
    within one code of ``[rq.lo, rq.hi]``, and the first/last accumulator of each output code
    next to a saturation edge."""
    acc = np.arange(acc_lo, acc_hi + 1, dtype=np.int64)
    scaled = acc * rq.multiplier
    raw = arith.round_shift(scaled, rq.shift, rq.rounding)
    near = (raw >= rq.lo - 1) & (raw <= rq.hi + 1)
    out = set()
    if rq.shift:
        tie = (scaled & ((1 << rq.shift) - 1)) == 1 << (rq.shift - 1)
        out |= set(acc[tie & near].tolist())
    for code in (rq.lo - 1, rq.lo, rq.hi, rq.hi + 1):
        hit = acc[raw == code]
        if len(hit):
            out |= {int(hit[0]), int(hit[-1])}
    return sorted(out)


def row_requant(rq, r: int) -> Requant:
    """Row ``r``'s requantization as a scalar Requant (a ChannelRequant has one per row)."""
    if isinstance(rq, Requant):
        return rq
    return Requant(rq.name, int(rq.shift[r]), rq.rounding, rq.bits, rq.signed, rq.lo, rq.hi,
                   int(rq.multiplier[r]))


def dense_corners(eng: DenseOp, rng) -> tuple[np.ndarray, dict]:
    """Corner input vectors of a dense op and what they cover (see the module docstring)."""
    t, d = eng.in_type, eng.dense
    W, b = np.asarray(d.weight), np.asarray(d.bias)
    cols = eng.cols
    vecs = [np.full(cols, t.lo), np.full(cols, t.hi), np.resize([t.lo, t.hi], cols),
            np.resize([t.hi, t.lo], cols), np.zeros(cols, dtype=np.int64).clip(t.lo, t.hi)]
    for r in range(eng.rows):                    # worst-case accumulations, row by row
        vecs.append(np.where(W[r] > 0, t.hi, t.lo))
        vecs.append(np.where(W[r] < 0, t.hi, t.lo))
    cover = {"targets": 0, "reached": 0}
    if eng.requant is not None:
        codes = np.arange(t.lo, t.hi + 1)
        lo_b, hi_b = arith.dense_bounds(W, b, t.lo, t.hi)
        for r in range(eng.rows):
            tables = reach_tables(W[r], b[r], codes)
            for target in requant_targets(row_requant(eng.requant, r), int(lo_b[r]),
                                          int(hi_b[r])):
                cover["targets"] += 1
                x = input_for(W[r], codes, tables, target, rng)
                if x is not None:
                    assert int(W[r] @ x + b[r]) == target
                    cover["reached"] += 1
                    vecs.append(x)
    return np.array(vecs, dtype=np.int64), cover


# -- running a unit -----------------------------------------------------------------------------

def run_unit(h, x, want, simulator, work, *, seed=0, gap=0.3, stall=0.3, latency=None):
    r = units.run_stream(h, x, simulator, work, expected=want, gap_prob=gap, stall_prob=stall,
                         seed=seed, idle_check_cycles=30, measure_latency=latency is not None)
    first = r.first_mismatches[:1]
    assert r.mismatches == 0 and r.outputs.shape == want.shape, \
        f"{h.top} on {simulator}: {r.mismatches} of {len(want)} vectors differ; first " \
        f"(vector, element, expected, got): {first}"
    np.testing.assert_array_equal(r.outputs, want)
    assert r.raw["framing_errors"] == [] and r.raw["x_errors"] == []
    assert not r.raw.get("extra_output_beats"), f"{h.top}: output beats after the last vector"
    if latency is not None:
        assert r.latency_cycles == latency, f"{h.top}: latency {r.latency_cycles} != {latency}"
    rate = len(x) / r.run_seconds
    print(f"{h.top} on {simulator}: {len(x)} vectors bit-exact, {rate:.0f} vectors/s "
          f"(run {r.run_seconds:.1f} s, build {r.build_seconds:.1f} s)")
    return r


def engine_harness(top, op):
    """``op``'s unit behind AXI4-Stream ports: one vector of the op per sample."""
    inl = BeatLayout(op.in_element_shape, elements=op.in_elements, elements_per_beat=op.in_ept)
    outl = BeatLayout(op.out_element_shape, elements=op.out_elements,
                      elements_per_beat=op.out_ept)
    return units.stream_harness(top, op.build(), inl, outl)


@pytest.mark.parametrize("simulator,folding", unit_cases("dense", FOLDINGS))
def test_dense_engine_folding(simulator, folding, tmp_path):
    """One dense op folding: random vectors + corners, gaps and backpressure, bit-exact."""
    need(simulator)
    eng = dense_engine(folding)
    rng = np.random.default_rng(1)
    corners, cover = dense_corners(eng, rng)
    if eng.requant is not None:                     # every reachable tie/edge got a vector
        assert cover["reached"] == cover["targets"] > 0, cover
    t = eng.in_type
    x = np.concatenate([corners, rng.integers(t.lo, t.hi, size=(n_random(simulator), eng.cols),
                                              endpoint=True)])
    want = eng.model(x)
    run_unit(engine_harness(f"u_dense_{folding}", eng), x, want, simulator, tmp_path,
             seed=len(folding), latency=eng.latency)
    print(f"  {folding}: {eng!r}: "
          f"in/out per transfer {eng.in_ept}/{eng.out_ept} dsp={eng.dsp}: {len(corners)} corner "
          f"vectors ({cover['reached']} requant ties/edges)")


def test_dense_corners_hit_the_bounds_and_ties():
    """The corner generator is not vacuous: worst-case rows reach the accumulator bounds that
    need all ``acc_bits`` bits, and the tie vectors land on ties of the fused requant."""
    for name in FOLDINGS:
        eng = dense_engine(name)
        d = eng.dense
        corners, cover = dense_corners(eng, np.random.default_rng(0))
        acc = d.execute(corners)
        lo, hi = arith.dense_bounds(d.weight, d.bias, eng.in_type.lo, eng.in_type.hi)
        assert np.array_equal(acc.min(axis=0), np.array(lo, dtype=np.int64)), name
        assert np.array_equal(acc.max(axis=0), np.array(hi, dtype=np.int64)), name
        assert arith.bits_for_range(min(acc.min(), -1), max(acc.max(), 0))[0] == d.acc_bits
        rq = eng.requant
        if rq is None or not rq.shift:
            continue
        scaled = acc * rq.multiplier
        ties = (scaled & ((1 << rq.shift) - 1)) == 1 << (rq.shift - 1)
        assert ties.any(axis=0).all(), f"{name}: a row without a tie vector"
        # Rounding modes disagree on ties: the set covers the cases where the mode matters.
        modes = {m: arith.round_shift(scaled[ties], rq.shift, m) for m in arith.ROUNDING_MODES}
        assert not np.array_equal(modes["half_up"], modes["half_even"]) or \
            not np.array_equal(modes["half_up"], modes["floor"]), name


@pytest.mark.parametrize("simulator", sims_for("reset"))
def test_dense_engine_reset_midstream(simulator, tmp_path):
    """rst in the middle of a folded engine's stream: vectors sent after it are exact."""
    need(simulator)
    eng = dense_engine("padded_2x3_split")
    assert eng.product_terms == 2
    rng = np.random.default_rng(4)
    x = rng.integers(eng.in_type.lo, eng.in_type.hi, size=(40, eng.cols), endpoint=True)
    want = eng.model(x)
    h = engine_harness("u_dense_padded_2x3_split", eng)
    r = units.run_stream(h, x, simulator, tmp_path, expected=want[20:], gap_prob=0.2,
                         stall_prob=0.3, seed=5, idle_check_cycles=30,
                         reset={"after_beats": 17 * eng.cols + 3, "resume_from": 20,
                                "cycles": 3})
    np.testing.assert_array_equal(r.outputs, want[20:])
    pre = np.array(r.raw["pre_reset_outputs"], dtype=np.int64).reshape(-1, eng.rows)
    np.testing.assert_array_equal(pre, want[:len(pre)])
    assert not r.raw.get("extra_output_beats")


@pytest.mark.parametrize("simulator", sims_for("requant"))
def test_requant_engine(simulator, tmp_path):
    """A requant op, 2 lanes: every input code (all ties, all saturation edges) in every lane,
    then random vectors."""
    need(simulator)
    t = CodeType.full(10, True)
    rq = Requant("rq", 4, "half_even", 4, True, -7, 5, multiplier=3)
    eng = RequantOp.of(rq, t, elements=4, elements_per_transfer=2)
    rng = np.random.default_rng(2)
    codes = np.arange(t.lo, t.hi + 1)
    every = np.stack([np.roll(codes, 7 * k) for k in range(eng.in_elements)], axis=1)
    n = max(0, n_random(simulator) - len(every))
    x = np.concatenate([every, rng.integers(t.lo, t.hi, size=(n, eng.in_elements), endpoint=True)])
    run_unit(engine_harness("u_requant", eng), x, eng.model(x), simulator, tmp_path, seed=3,
             latency=eng.latency)


# -- FIFOs and stream adapters: nothing lost, duplicated or reordered ---------------------------

def tagged(rng, n, shape, tag_bits):
    """``n`` codes of ``shape`` whose low ``tag_bits`` bits count up (so any lost, duplicated or
    reordered element shows), high bits random."""
    lo, hi = arith.code_range(shape.width, shape.signed)
    raw = (rng.integers(0, 1 << shape.width, size=n) & ~((1 << tag_bits) - 1)) | \
        (np.arange(n) & ((1 << tag_bits) - 1))
    return np.where(raw > hi, raw - (1 << shape.width), raw).clip(lo, hi)


@pytest.mark.parametrize("simulator", sims_for("skid"))
@pytest.mark.parametrize("gap,stall", [(0.3, 0.3)] + ([(0.0, 0.6), (0.6, 0.0)] if SOAK else []))
def test_skid_buffer(simulator, gap, stall, tmp_path):
    """SkidBuffer: random transfers per gap/stall pattern (make soak: three patterns), in
    order, none lost or duplicated."""
    need(simulator)
    shape = signed(16)
    lay = BeatLayout(shape, elements=1, elements_per_beat=1)
    h = units.stream_harness("u_skid", P.SkidBuffer(shape), lay, lay)
    x = tagged(np.random.default_rng(6), n_random(simulator), shape, 14)[:, None]
    run_unit(h, x, x, simulator, tmp_path, gap=gap, stall=stall, seed=7, latency=1)


@pytest.mark.parametrize("simulator", sims_for("adapters"))
def test_beat_unpacker_and_packer(simulator, tmp_path):
    """BeatUnpacker (beats -> 2 elements per transfer) and BeatPacker (2 elements per transfer
    -> beats, sign extension 12 -> 16 bits): random vectors, in order, none lost or duplicated."""
    need(simulator)
    rng = np.random.default_rng(8)
    beats = BeatLayout(signed(12), elements=6, elements_per_beat=4, tdata_width=56)
    xfer = BeatLayout(signed(12), elements=6, elements_per_beat=2)
    n = n_random(simulator) // 3 + 1              # 3 transfers per vector
    x = tagged(rng, n * 6, signed(12), 11).reshape(n, 6)
    unp = units.stream_harness("u_unpack", BeatUnpacker(beats, 2), beats, xfer)
    run_unit(unp, x, x, simulator, tmp_path / "unpack", seed=9)
    out = BeatLayout(signed(16), elements=6, elements_per_beat=4)
    pk = units.stream_harness("u_pack", BeatPacker(out, signed(12), 2), xfer, out)
    run_unit(pk, x, x, simulator, tmp_path / "pack", seed=10)


def test_a_wrong_rounding_engine_is_caught(tmp_path):
    """Not vacuous: an engine that rounds half_up, scored against the half_even twin on the
    corner vectors alone, differs exactly on accumulators that are ties with an odd quotient."""
    need("icarus")
    good = dense_engine("1x1")
    bad_rq = Requant("rq", **{**FOLDINGS["1x1"][5], "rounding": "half_up"})
    bad = DenseOp.of(good.dense, good.in_type, bad_rq)
    x, _ = dense_corners(good, np.random.default_rng(1))
    want = good.model(x)
    r = units.run_stream(engine_harness("u_dense_wrong", bad), x, "icarus", tmp_path,
                         expected=want, measure_latency=False)
    differ = r.outputs != want
    assert r.mismatches and differ.any()
    rq = good.requant
    scaled = good.dense.execute(x) * rq.multiplier
    tie = (scaled & ((1 << rq.shift) - 1)) == 1 << (rq.shift - 1)
    even = (scaled >> rq.shift) % 2 == 0          # half_even rounds these ties down
    assert np.array_equal(differ, tie & even & (r.outputs == want + 1))


@pytest.mark.parametrize("simulator", sims_for("adapters"))
@pytest.mark.parametrize("element,in_shape,tdata", [(signed(20), signed(13), 8),
                                                     (unsigned(16), unsigned(16), 8),
                                                     (signed(12), signed(12), 8)])
def test_beat_packer_splits_elements_over_beats(simulator, element, in_shape, tdata, tmp_path):
    """BeatPacker with beats narrower than an element (``beats_per_element`` > 1, low part
    first, ``last`` on the final part of the sample's last element): tagged elements in order,
    none lost or duplicated, sign extension to the element width."""
    need(simulator)
    out = BeatLayout(element, elements=3, elements_per_beat=1, tdata_width=tdata)
    assert out.beats_per_element == -(-element.width // tdata) > 1
    xfer = BeatLayout(in_shape, elements=3, elements_per_beat=1)
    n = n_random(simulator) // 3 + 1
    x = tagged(np.random.default_rng(11), n * 3, in_shape, min(11, in_shape.width - 1))
    x = x.reshape(n, 3)
    h = units.stream_harness(f"u_pack_split{element.width}_{in_shape.width}",
                             BeatPacker(out, in_shape, 1), xfer, out)
    run_unit(h, x, x, simulator, tmp_path, seed=12)
