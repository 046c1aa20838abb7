"""The multithreshold op and a per-channel requant op: units against the ops' numpy twins and
the golden rules."""
from __future__ import annotations

import numpy as np
import pytest

from softfloor import arith
from softfloor.hw.ops import MultiThresholdOp, RequantOp
from softfloor.hw.rtl.mvu import requant_params
from softfloor.intmodel import ChannelRequant, CodeType, MultiThreshold

from .test_engine import run_engine


def _hwc_channels(C, pixels):
    return [e % C for e in range(C * pixels)]


@pytest.mark.parametrize("seed,ept,shared", [(0, 1, False), (1, 2, False), (2, 4, True),
                                             (3, 3, False), (4, 6, False)])
def test_threshold_engine(seed, ept, shared):
    rng = np.random.default_rng(seed)
    C, pixels, T = 6, 4, int(rng.integers(1, 8))
    t = CodeType.full(int(rng.integers(4, 9)), bool(seed % 2))
    thr = np.sort(rng.integers(t.lo, t.hi + 1, (1 if shared else C, T)), axis=1)
    out_bias = -int(rng.integers(0, 2)) * (T // 2)
    signed_out = out_bias < 0
    bits = T.bit_length() + 1
    layer = MultiThreshold("mt", thr, bits, signed_out, out_bias)
    layer.check(t, "test")
    eng = MultiThresholdOp.of(layer, t, elements=C * pixels, elements_per_transfer=ept,
                          channel_of=_hwc_channels(C, pixels))
    x = rng.integers(t.lo, t.hi + 1, (6, C * pixels))
    x[0, :] = thr[np.asarray(eng.channel_of) % thr.shape[0], 0]          # every boundary
    x[1, :] = thr[np.asarray(eng.channel_of) % thr.shape[0], -1] - 1
    got, _ = run_engine(eng, x, gap=0.3, stall=0.3, seed=seed)
    want = np.stack([arith.multithreshold(x[:, e], thr[c % thr.shape[0]][None, :], out_bias)
                     for e, c in enumerate(eng.channel_of)], axis=1)
    np.testing.assert_array_equal(eng.model(x), want)
    np.testing.assert_array_equal(got, want)


def test_requant_params_fold_shifts_exactly():
    rng = np.random.default_rng(3)
    rq = ChannelRequant("rq", np.array([0, 3, 5, 1]), "half_even", 4, True, -8, 7,
                        np.array([1, 3, 7, 2]))
    mults, S = requant_params(rq, 4)
    x = rng.integers(-5000, 5000, 20000)
    for c in range(4):
        for mode in arith.ROUNDING_MODES:
            np.testing.assert_array_equal(
                arith.requantize(x, S, mode, -8, 7, mults[c]),
                arith.requantize(x, int(rq.shift[c]), mode, -8, 7, int(rq.multiplier[c])))


@pytest.mark.parametrize("ept", [1, 2, 4])
def test_channel_requant_engine(ept):
    rng = np.random.default_rng(ept)
    C, pixels = 4, 3
    rq = ChannelRequant("rq", rng.integers(0, 6, C), str(rng.choice(arith.ROUNDING_MODES)), 5,
                        True, -12, 15, rng.integers(1, 9, C))
    t = CodeType.full(10, True)
    rq.check(t, "test")
    eng = RequantOp.of(rq, t, elements=C * pixels, elements_per_transfer=ept,
                        channel_of=_hwc_channels(C, pixels))
    x = rng.integers(t.lo, t.hi + 1, (8, C * pixels))
    got, _ = run_engine(eng, x, gap=0.2, stall=0.3, seed=ept)
    chw = x.reshape(8, pixels, C).transpose(0, 2, 1)                     # (N, C, pixels)
    want = rq.execute(chw).transpose(0, 2, 1).reshape(8, -1)
    np.testing.assert_array_equal(eng.model(x), want)
    np.testing.assert_array_equal(got, want)
