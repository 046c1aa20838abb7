"""Convolution-side units against their numpy twins in cocotb, on both simulators.

The sliding window (:class:`~softfloor.hw.rtl.window.SlidingWindow`), and the units of the
ops :class:`~softfloor.hw.ops.MaxPool2dOp`, :class:`~softfloor.hw.ops.MultiThresholdOp`,
:class:`~softfloor.hw.ops.Conv2dOp` and per-channel requantization (a
:class:`~softfloor.intmodel.ChannelRequant` fused in a :class:`~softfloor.hw.ops.DenseOp` and
standalone in a :class:`~softfloor.hw.ops.RequantOp`), each behind
:func:`softfloor.sim.units.stream_harness` and run by the stream scoreboard of
:mod:`softfloor.sim.tb_stream` with random gaps and backpressure, the idle check and the
isolated-vector latency (see ``tests/sim/test_units_stream.py``).

Corners: every frame of a window or pool unit walks every output pixel (so every padding edge,
every stride step and every window border); window frames hold pairwise distinct codes different
from the pad value, so a tap taken from the wrong place (or padding where there is data) shows.
Max-pool gets a one-hot frame per input position (the maximum sits at every position of every
window in turn), all-equal frames (ties) and frames drawn from a narrow code range (many ties).
Thresholds include duplicates, unsorted rows and values outside the input range; every input code
(so every threshold ``t - 1``, ``t``, ``t + 1``) goes through every lane. Per-channel requant
gets, per output row, every reachable accumulator that is a rounding tie or a saturation edge of
that row's multiplier and shift. Vector counts: see :func:`n_frames` and ``n_random``.
"""
from __future__ import annotations

import numpy as np
import pytest
from amaranth.hdl import signed, unsigned

from softfloor import arith
from softfloor.hw.ops import Conv2dOp, DenseOp, MaxPool2dOp, MultiThresholdOp, RequantOp
from softfloor.hw.rtl.stream_io import BeatLayout
from softfloor.hw.rtl.window import SlidingWindow
from softfloor.intmodel import ChannelRequant, CodeType, Conv2d, MaxPool2d, MultiThreshold
from softfloor.sim import units

from .test_units_stream import (SOAK, dense_corners, engine_harness, make_layer, n_random,
                                need, run_unit, sims_for, unit_cases)

pytestmark = pytest.mark.sim


def n_frames(simulator: str, outputs_per_frame: int) -> int:
    """Random frames per window/pool/conv unit: enough for >= 10,000 checked output transfers
    (at least 60 frames) in ``make test``, 1,000 frames in ``make soak``; both simulators."""
    return 1_000 if SOAK else max(60, -(-N_RANDOM_OUTPUTS // outputs_per_frame))


#: Checked output transfers per unit and simulator in ``make test``.
N_RANDOM_OUTPUTS = 10_000


def harness(top, unit, in_shape, in_elements, out_shape, out_elements):
    inl = BeatLayout(in_shape, elements=in_elements, elements_per_beat=unit.in_ept)
    outl = BeatLayout(out_shape, elements=out_elements, elements_per_beat=unit.out_ept)
    return units.stream_harness(top, unit, inl, outl)


def distinct_frames(rng, n, size, shape, avoid=()):
    """``n`` frames of ``size`` pairwise distinct codes of ``shape`` (none in ``avoid``)."""
    lo, hi = arith.code_range(shape.width, shape.signed)
    pool = np.setdiff1d(np.arange(lo, hi + 1), np.asarray(avoid, dtype=np.int64))
    assert len(pool) >= size
    return np.stack([rng.choice(pool, size=size, replace=False) for _ in range(n)])


# -- sliding window -----------------------------------------------------------------------------

WINDOWS = {
    # name: shape, element shape, order, kernel, stride, padding, pad value, in/out per
    # transfer[, memory mode]
    "chw_k3x3_s2x1_pad": ((2, 4, 5), signed(7), "chw", (3, 3), (2, 1), (1, 1, 1, 0), -7, 2, 3),
    "hwc_k2x3_s1x2_pad": ((3, 3, 4), unsigned(6), "hwc", (2, 3), (1, 2), (0, 2, 1, 1), 63, 4, 2),
    "hwc_k1x1": ((4, 2, 3), signed(5), "hwc", (1, 1), (1, 1), (0, 0, 0, 0), 0, 1, 4),
    # line buffers: a CNV conv (3x3, stride 1, no padding), padding with stride 2x1 (the pool
    # unit's line buffer: POOLS)
    "lines_cnv_k3x3": ((4, 7, 6), unsigned(8), "hwc", (3, 3), (1, 1), (0, 0, 0, 0), 0, 2, 3,
                       "lines"),
    "lines_k3x3_s2x1_pad": ((2, 6, 5), signed(7), "hwc", (3, 3), (2, 1), (1, 1, 1, 0), -7, 1,
                            2, "lines"),
}


@pytest.mark.parametrize("simulator,name", unit_cases("window", WINDOWS))
def test_sliding_window(simulator, name, tmp_path):
    need(simulator)
    shape, el, order, k, s, pad, pv, kin, kout, *mode = WINDOWS[name]
    win = SlidingWindow(shape, el, order=order, kernel=k, stride=s, padding=pad, pad_value=pv,
                        in_elements_per_transfer=kin, out_elements_per_transfer=kout,
                        mode=(mode or ["frame"])[0], name=name)
    rng = np.random.default_rng(sum(map(ord, name)))
    lo, hi = arith.code_range(el.width, el.signed)
    corners = np.array([np.full(win.frame, lo), np.full(win.frame, hi),
                        np.full(win.frame, pv)])
    x = np.concatenate([corners, distinct_frames(rng, n_frames(simulator, win.out_transfers), win.frame, el,
                                                 avoid=[pv])])
    want = win.model(x)
    # Distinct frames avoid the pad value: it appears in their taps iff there is padding.
    assert np.any(want[len(corners):] == pv) == any(pad)
    run_unit(harness(f"u_win_{name}", win, el, win.frame, el, win.pixels * win.cols), x, want,
             simulator, tmp_path, seed=1, latency=win.latency)
    print(f"  {name}: {len(x)} frames x {win.pixels} pixels x {win.cols} taps = "
          f"{want.size} taps checked")


# -- max-pool -----------------------------------------------------------------------------------

POOLS = {
    "k2_s2_hwc": ((3, 4, 4), CodeType.full(5, True), "hwc", (2, 2), (2, 2), 1, 2),
    "k3_s2_chw": ((2, 5, 5), CodeType.full(4, False), "chw", (3, 3), (2, 2), 2, 3),
    "k2_s1_overlap": ((2, 3, 4), CodeType.full(6, True), "hwc", (2, 2), (1, 1), 1, 1),
    "lines_k2_s2": ((4, 6, 6), CodeType.full(3, False), "hwc", (2, 2), (2, 2), 2, 2, "lines"),
}


@pytest.mark.parametrize("simulator,name", unit_cases("pool", POOLS))
def test_maxpool_engine(simulator, name, tmp_path):
    need(simulator)
    shape, t, order, k, s, kin, taps, *mode = POOLS[name]
    eng = MaxPool2dOp.of(MaxPool2d("pool", k, s), t, shape, order=order,
                         in_elements_per_transfer=kin, tap_elements_per_transfer=taps,
                         window=(mode or ["frame"])[0])
    frame = int(np.prod(shape))
    rng = np.random.default_rng(sum(map(ord, name)))
    onehot = np.full((frame, frame), t.lo) + np.eye(frame, dtype=np.int64) * (t.hi - t.lo)
    equal = np.array([np.full(frame, v) for v in (t.lo, t.hi, (t.lo + t.hi) // 2)])
    narrow = rng.integers(t.lo, t.lo + 3, size=(n_frames(simulator, eng.out_transfers) // 2 + 1, frame))
    full = rng.integers(t.lo, t.hi, size=(n_frames(simulator, eng.out_transfers) // 2 + 1, frame), endpoint=True)
    x = np.concatenate([onehot, equal, narrow, full])
    want = eng.model(x)
    assert (want[:frame] == t.hi).any(axis=0).all()   # every output sees its window's max
    run_unit(engine_harness(f"u_pool_{name}", eng), x, want, simulator, tmp_path, seed=2,
             latency=eng.latency)


# -- multi-threshold ----------------------------------------------------------------------------

def thresholds_with_corners(rng, rows, steps, t: CodeType):
    """Random thresholds per row plus duplicates, unsorted order, and values at and beyond the
    input range (always / never reached)."""
    thr = rng.integers(t.lo, t.hi + 1, size=(rows, steps))
    thr[:, 0] = thr[:, 1]                                     # a duplicate per row
    thr[0, 2], thr[-1, 3] = t.lo, t.hi
    thr[rows // 2, 4] = t.lo - 5                              # always counted
    thr[rows // 2, 5] = t.hi + 9                              # never counted
    return thr


THRESHOLDS = {
    # name: in type, channels (0 = shared row), steps, out bits/signed/bias, elements, lanes
    "per_channel_hwc": (CodeType.full(8, True), 4, 7, (4, True, -3), 8, 2),
    "shared": (CodeType.full(5, False), 0, 15, (4, False, 0), 3, 1),
    "per_channel_wide": (CodeType.full(6, True), 3, 9, (5, True, -8), 6, 3),
}


@pytest.mark.parametrize("simulator,name", unit_cases("threshold", THRESHOLDS))
def test_threshold_engine(simulator, name, tmp_path):
    need(simulator)
    t, chans, steps, (ob, osg, bias), elements, lanes = THRESHOLDS[name]
    rng = np.random.default_rng(sum(map(ord, name)))
    thr = thresholds_with_corners(rng, max(chans, 1), steps, t)
    layer = MultiThreshold("thr", thr, ob, osg, out_bias=bias)
    channel_of = [e % chans for e in range(elements)] if chans else None
    eng = MultiThresholdOp.of(layer, t, elements=elements, elements_per_transfer=lanes,
                              channel_of=channel_of)
    codes = np.arange(t.lo, t.hi + 1)
    every = np.stack([np.roll(codes, 5 * k) for k in range(elements)], axis=1)
    n = max(0, n_random(simulator) - len(every))
    x = np.concatenate([every, rng.integers(t.lo, t.hi, size=(n, elements), endpoint=True)])
    want = eng.model(x)
    for c in range(max(chans, 1)):                  # every threshold boundary is crossed
        e = channel_of.index(c) if chans else 0
        for v in thr[c]:
            if t.lo < v <= t.hi:
                assert (want[x[:, e] == v, e] > want[x[:, e] == v - 1, e][0]).all()
    run_unit(engine_harness(f"u_thr_{name}", eng), x, want, simulator, tmp_path, seed=3,
             latency=eng.latency)


# -- per-channel requant ------------------------------------------------------------------------

def channel_requant(rng, rows, t_out_bits=4):
    shifts = rng.integers(0, 6, size=rows)
    mults = rng.choice([1, 3, 5, 77], size=rows)
    return ChannelRequant("crq", shifts.astype(np.int64), "half_even", t_out_bits, True,
                          -(1 << (t_out_bits - 1)) + 1, (1 << (t_out_bits - 1)) - 1,
                          mults.astype(np.int64))


@pytest.mark.parametrize("simulator", sims_for("per_channel_dense"))
def test_dense_engine_per_channel_requant(simulator, tmp_path):
    """A dense op (2x2 folding, 5 rows: padded) with a fused ChannelRequant: random vectors,
    worst-case rows, every reachable tie / saturation edge of each row's own scale."""
    need(simulator)
    rng = np.random.default_rng(17)
    t = CodeType.full(4, True)
    dense, _ = make_layer(rng, 5, 4, in_type=t, weight_bits=3, requant=None)
    eng = DenseOp.of(dense, t, channel_requant(rng, 5), pe=2, simd=2)
    corners, cover = dense_corners(eng, rng)
    assert cover["reached"] == cover["targets"] > 0, cover
    x = np.concatenate([corners, rng.integers(t.lo, t.hi, size=(n_random(simulator), eng.cols),
                                              endpoint=True)])
    run_unit(engine_harness("u_dense_per_channel", eng), x, eng.model(x), simulator, tmp_path,
             seed=4, latency=eng.latency)


@pytest.mark.parametrize("simulator", sims_for("per_channel_requant"))
def test_requant_engine_per_channel(simulator, tmp_path):
    """A standalone ChannelRequant over 6 elements of 3 channels (hwc order), 2 lanes: every
    input code in every lane, then random vectors."""
    need(simulator)
    rng = np.random.default_rng(18)
    t = CodeType.full(9, True)
    rq = channel_requant(rng, 3, 5)
    eng = RequantOp.of(rq, t, elements=6, elements_per_transfer=2,
                       channel_of=[e % 3 for e in range(6)])
    codes = np.arange(t.lo, t.hi + 1)
    every = np.stack([np.roll(codes, 11 * k) for k in range(6)], axis=1)
    n = max(0, n_random(simulator) - len(every))
    x = np.concatenate([every, rng.integers(t.lo, t.hi, size=(n, 6), endpoint=True)])
    run_unit(engine_harness("u_requant_per_channel", eng), x, eng.model(x), simulator,
             tmp_path, seed=5, latency=eng.latency)


# -- conv engine --------------------------------------------------------------------------------

CONVS = {
    # name: in shape, in type, order, out channels, kernel, stride, padding, pad value,
    #       weight bits, per-channel requant, engine options
    "chw_pad_stride_1x1fold": ((2, 4, 4), CodeType.full(3, True), "chw", 3, (3, 3), (2, 1),
                               (1, 0, 1, 1), -2, 4, True, dict(pe=1, simd=1)),
    "hwc_folded_wide": ((3, 3, 3), CodeType.full(4, False), "hwc", 4, (2, 2), (1, 1),
                        (0, 0, 0, 0), 0, 2, False,
                        dict(pe=2, simd=4, in_elements_per_transfer=1,
                             tap_elements_per_transfer=2, out_elements_per_transfer=2)),
    "lines_cnv": ((4, 6, 5), CodeType.full(1, False), "hwc", 4, (3, 3), (1, 1), (0, 0, 0, 0), 0,
                  2, False, dict(pe=4, simd=12, in_elements_per_transfer=2,
                                 tap_elements_per_transfer=6, out_elements_per_transfer=2,
                                 window="lines")),
}


@pytest.mark.parametrize("simulator,name", unit_cases("conv", CONVS))
def test_conv_engine(simulator, name, tmp_path):
    """A conv op: window + folded MVU + fused requant, random frames plus all-min/all-max/
    checkerboard frames (the MVU core's ties and worst cases are covered by the dense op
    foldings)."""
    need(simulator)
    shape, t, order, cout, k, s, pad, pv, wb, per_ch, opts = CONVS[name]
    rng = np.random.default_rng(sum(map(ord, name)))
    cin = shape[0]
    wlo, whi = arith.code_range(wb, True)
    w = rng.integers(wlo, whi + 1, size=(cout, cin) + k)
    b = rng.integers(-9, 10, size=cout)
    lo, hi = arith.dense_bounds(w.reshape(cout, -1), b, t.lo, t.hi)
    acc_bits = arith.bits_for_range(min(int(min(lo)), -1), max(int(max(hi)), 0))[0]
    conv = Conv2d("conv", w.astype(np.int64), b.astype(np.int64), wb, 5, max(2, acc_bits), s,
                  pad, pv)
    if per_ch:
        rq = channel_requant(rng, cout)
    else:
        from softfloor.intmodel import Requant
        rq = Requant("rq", 2, "half_up", 3, False, 0, 7, 3)
    eng = Conv2dOp.of(conv, t, shape, order=order, requant=rq, **opts)
    frame = int(np.prod(shape))
    corners = np.array([np.full(frame, t.lo), np.full(frame, t.hi),
                        np.resize([t.lo, t.hi], frame), np.resize([t.hi, t.lo], frame)])
    x = np.concatenate([corners, rng.integers(t.lo, t.hi, size=(n_frames(simulator, eng.out_transfers), frame),
                                              endpoint=True)])
    want = eng.model(x)
    run_unit(engine_harness(f"u_conv_{name}", eng), x, want, simulator, tmp_path, seed=6,
             latency=eng.latency)
