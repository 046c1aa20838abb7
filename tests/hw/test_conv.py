"""The conv2d and maxpool2d ops' units against the ops' numpy twins and the model's own ops
(Amaranth sim); the ops' latency and II formulas against the measured handshakes."""
from __future__ import annotations

import numpy as np
import pytest

from softfloor import arith
from softfloor.hw.ops import Conv2dOp, MaxPool2dOp
from softfloor.intmodel import ChannelRequant, CodeType, Conv2d, MaxPool2d, Requant

from tests.randcnn import acc_bits_for
from .test_engine import run_engine


def to_stream(x, order):
    """(N, C, H, W) -> (N, C*H*W) in ``order``."""
    return x.reshape(len(x), -1) if order == "chw" else x.transpose(0, 2, 3, 1).reshape(len(x), -1)


def from_hwc(y, shape):
    C, H, W = shape
    return y.reshape(len(y), H, W, C).transpose(0, 3, 1, 2)


def check_engine(eng, x, order, want, *, stall, seed):
    """Bit-exact against the model op (``want``, CHW) and the engine's twin; isolated latency
    and back-to-back II as advertised; the same outputs with input gaps and backpressure."""
    got, r = run_engine(eng, to_stream(x, order))
    np.testing.assert_array_equal(from_hwc(got, want.shape[1:]), want)
    np.testing.assert_array_equal(got, eng.model(to_stream(x, order)))
    per = eng.out_transfers
    last_out = r.out_cycles[per - 1::per]
    assert last_out[0] - r.in_cycles[0] == eng.latency
    assert set(np.diff(last_out[1:])) == {eng.initiation_interval}, np.diff(last_out)
    got2, _ = run_engine(eng, to_stream(x, order), gap=0.3, stall=stall, seed=seed)
    np.testing.assert_array_equal(got2, got)


#: (C, H, W), cout, kernel, stride, padding, order, pe, simd, in ept, tap ept, out ept, per-channel
CONVS = [((1, 6, 6), 4, (3, 3), (1, 1), (1, 1, 1, 1), "chw", 4, 9, 1, 1, 4, False),
         ((2, 5, 4), 3, (2, 2), (1, 2), (0, 1, 1, 0), "hwc", 1, 2, 2, 2, 1, True),
         ((3, 4, 4), 4, (3, 3), (1, 1), (1, 1, 1, 1), "hwc", 2, 3, 1, 3, 1, True),
         ((2, 4, 4), 2, (1, 1), (1, 1), (0, 0, 0, 0), "chw", 2, 2, 2, 2, 2, False)]


@pytest.mark.parametrize("case", range(len(CONVS)))
def test_conv_engine(case):
    shape, cout, kernel, stride, padding, order, pe, simd, k, n, wout, per_ch = CONVS[case]
    rng = np.random.default_rng(case)
    t = CodeType.full(4, bool(case % 2))
    w = rng.integers(-7, 8, (cout, shape[0]) + kernel)
    b = rng.integers(-20, 21, cout)
    conv = Conv2d("conv", w, b, 4, 7, acc_bits_for(w.reshape(cout, -1), b, t), stride, padding,
                  int(rng.integers(t.lo, t.hi + 1)))
    conv.check(t, "test")
    acc_t = conv.out_type(t)
    if per_ch:
        rq = ChannelRequant("rq", rng.integers(0, 5, cout), "half_even", 4, False, 0, 15,
                            rng.integers(1, 4, cout))
    else:
        rq = Requant("rq", 3, "half_up", 4, False, 0, 15)
    rq.check(acc_t, "test")
    eng = Conv2dOp.of(conv, t, shape, order=order, requant=rq, pe=pe, simd=simd,
                      in_elements_per_transfer=k, tap_elements_per_transfer=n,
                      out_elements_per_transfer=wout)
    x = rng.integers(t.lo, t.hi + 1, (3,) + shape)
    want = rq.execute(conv.execute(x))
    check_engine(eng, x, order, want, stall=0.4, seed=case)


@pytest.mark.parametrize("shape,kernel,stride,order,k,n", [
    ((3, 4, 4), (2, 2), (2, 2), "hwc", 1, 4), ((2, 5, 6), (2, 3), (1, 2), "chw", 2, 1),
    ((4, 4, 4), (2, 2), (2, 2), "hwc", 4, 2), ((1, 3, 3), (3, 3), (1, 1), "hwc", 1, 3)])
def test_maxpool_engine(shape, kernel, stride, order, k, n):
    rng = np.random.default_rng(sum(shape) + n)
    t = CodeType.full(5, order == "chw")
    pool = MaxPool2d("pool", kernel, stride)
    eng = MaxPool2dOp.of(pool, t, shape, order=order, in_elements_per_transfer=k,
                         tap_elements_per_transfer=n)
    x = rng.integers(t.lo, t.hi + 1, (4,) + shape)
    want = pool.execute(x)
    check_engine(eng, x, order, want, stall=0.5, seed=n)
