"""SlidingWindow against its numpy twin (and Conv2d's own im2col), in Amaranth's simulator."""
from __future__ import annotations

import numpy as np
import pytest
from amaranth.hdl import signed, unsigned

from softfloor.hw.rtl.window import SlidingWindow, im2col, release_hazard, stream_index
from softfloor.intmodel import Conv2d

from .streamsim import run_stream
from .test_engine import pack_words, unpack_words


def run_window(win, frames, *, gap=0.0, stall=0.0, seed=0):
    flat = [int(v) for f in frames for v in f]
    b = win.element_shape.width
    r = run_stream(win, i_valid=win.i.valid, i_ready=win.i.ready, i_data=win.i.payload,
                   o_valid=win.o.valid, o_ready=win.o.ready, o_data=win.o.payload,
                   inputs=pack_words(flat, win.in_ept, b),
                   n_out=win.out_transfers * len(frames), gap_prob=gap, stall_prob=stall,
                   rng=np.random.default_rng(seed), idle_after=8)
    out = unpack_words(r.outputs, win.out_ept, b, win.element_shape.signed)
    return np.array(out).reshape(len(frames), -1), r


#: (C, H, W), order, kernel, stride, padding, in ept, out ept
CASES = [((1, 4, 4), "chw", (3, 3), (1, 1), (1, 1, 1, 1), 1, 1),
         ((2, 5, 4), "hwc", (2, 3), (2, 1), (0, 1, 1, 0), 2, 3),
         ((3, 3, 3), "chw", (1, 1), (1, 1), (0, 0, 0, 0), 1, 3),
         ((2, 4, 4), "hwc", (2, 2), (2, 2), (0, 0, 0, 0), 4, 4),
         ((1, 6, 5), "chw", (3, 2), (2, 2), (1, 0, 1, 1), 2, 2),
         ((4, 2, 2), "hwc", (3, 3), (1, 1), (1, 1, 1, 1), 8, 6),
         ((1, 2, 2), "chw", (3, 3), (1, 1), (1, 1, 1, 1), 1, 9),      # late release
         ((2, 1, 1), "hwc", (1, 1), (1, 1), (0, 0, 0, 0), 2, 2)]      # late release


@pytest.mark.parametrize("case", range(len(CASES)))
def test_window_matches_twin_and_timing(case):
    shape, order, kernel, stride, padding, k, n = CASES[case]
    rng = np.random.default_rng(case)
    sh = signed(5) if case % 2 else unsigned(4)
    lo, hi = (-16, 15) if case % 2 else (0, 15)
    win = SlidingWindow(shape, sh, order=order, kernel=kernel, stride=stride, padding=padding,
                        pad_value=int(rng.integers(lo, hi + 1)), in_elements_per_transfer=k,
                        out_elements_per_transfer=n)
    frames = rng.integers(lo, hi + 1, (6, int(np.prod(shape))))
    got = check_twin_and_timing(win, frames)
    got2, _ = run_window(win, frames, gap=0.3, stall=0.4, seed=case)
    np.testing.assert_array_equal(got2, got)


def check_twin_and_timing(win, frames):
    """Frames back to back: the twin's taps, the isolated latency and the II; the taps."""
    got, r = run_window(win, frames)
    np.testing.assert_array_equal(got, win.model(frames))
    per = win.out_transfers
    last_out = r.out_cycles[per - 1::per]
    assert last_out[0] - r.in_cycles[0] == win.latency
    assert set(np.diff(last_out[1:])) == {win.initiation_interval}, np.diff(last_out)
    return got


def test_window_twin_is_conv_im2col():
    """Window taps dotted with the conv weights == Conv2d.execute (the model's definition)."""
    rng = np.random.default_rng(5)
    C, H, W = 3, 5, 6
    w = rng.integers(-3, 4, (4, C, 3, 2))
    conv = Conv2d("c", w, rng.integers(-5, 6, 4), 3, 6, 16, (2, 1), (1, 0, 1, 1), 2)
    x = rng.integers(0, 8, (3, C, H, W))
    for order in ("chw", "hwc"):
        flat = np.zeros((3, C * H * W), dtype=np.int64)
        for c in range(C):
            for y in range(H):
                for xx in range(W):
                    flat[:, stream_index(order, (C, H, W), c, y, xx)] = x[:, c, y, xx]
        taps = im2col(flat, (C, H, W), order, (3, 2), (2, 1), (1, 0, 1, 1), 2)
        pixels = taps.shape[1] // (C * 3 * 2)
        acc = taps.reshape(3, pixels, -1) @ w.reshape(4, -1).T + conv.bias
        want = conv.execute(x)                                    # (N, O, OH, OW)
        np.testing.assert_array_equal(acc, want.transpose(0, 2, 3, 1).reshape(3, pixels, 4))


def test_release_hazard_cases():
    assert [release_hazard(c[0], c[1], c[2], c[3], c[4], c[5], c[6]) for c in CASES] == \
        [False] * 5 + [True] * 3


@pytest.mark.parametrize("shape,order,kernel,k,n", [((2, 3, 3), "chw", (1, 1), 1, 1),
                                                    ((3, 4, 4), "hwc", (2, 2), 2, 4)])
def test_window_long_output_stalls(shape, order, kernel, k, n):
    """Regression: long output stalls right after a frame's last tap transfer was issued (its
    bank already released) must not let the next frame overwrite the words the stalled reads
    still need (a conv before a slow layer, seen in a conv -> threshold -> lut -> dense top)."""
    rng = np.random.default_rng(11)
    win = SlidingWindow(shape, unsigned(4), order=order, kernel=kernel,
                        in_elements_per_transfer=k, out_elements_per_transfer=n)
    frames = rng.integers(0, 16, (12, int(np.prod(shape))))
    for seed in range(3):
        got, _ = run_window(win, frames, stall=0.9, seed=seed)
        np.testing.assert_array_equal(got, win.model(frames))


#: Line buffers: (C, H, W), kernel, stride, padding, in ept, out ept (all "hwc")
LINE_CASES = [((2, 5, 6), (3, 3), (1, 1), (1, 1, 1, 1), 1, 1),
              ((4, 6, 5), (3, 3), (2, 1), (0, 1, 1, 0), 2, 3),
              ((3, 8, 8), (3, 3), (1, 1), (0, 0, 0, 0), 1, 9),        # CNV conv: no padding
              ((2, 6, 6), (2, 2), (2, 2), (0, 0, 0, 0), 2, 4),        # CNV pool
              ((8, 5, 5), (3, 3), (1, 1), (0, 0, 0, 0), 8, 8),        # ring deeper than a frame
              ((1, 7, 5), (3, 2), (2, 2), (1, 0, 1, 1), 1, 2)]


@pytest.mark.parametrize("case", range(len(LINE_CASES)))
def test_line_buffer_matches_twin_and_timing(case):
    """The line buffer: the same taps as im2col; latency and II equal its cycle model's; the
    same taps again with input gaps and output stalls; a ring smaller than two frames."""
    shape, kernel, stride, padding, k, n = LINE_CASES[case]
    rng = np.random.default_rng(case)
    win = SlidingWindow(shape, unsigned(4), kernel=kernel, stride=stride, padding=padding,
                        pad_value=int(rng.integers(0, 16)), in_elements_per_transfer=k,
                        out_elements_per_transfer=n, mode="lines")
    frames = rng.integers(0, 16, (6, int(np.prod(shape))))
    got = check_twin_and_timing(win, frames)
    assert win.memory_words < 2 * win.in_transfers
    for seed in range(2):
        got2, _ = run_window(win, frames, gap=0.3, stall=0.6, seed=seed)
        np.testing.assert_array_equal(got2, got)


def test_line_buffer_size_and_rejections():
    """CNV's second conv (30x30x64, 1-bit): the ring holds 2 rows + 3 pixels and the frame
    boundary's lag (FINN's minimum is 2 rows + 3 pixels), not two frames; orders, widths and
    paddings a line buffer cannot serve are refused by name."""
    win = SlidingWindow((64, 30, 30), unsigned(1), kernel=(3, 3), mode="lines",
                        out_elements_per_transfer=8)
    assert (2 * 30 + 3) * 64 <= win.memory_words <= 2 * (2 * 30 + 3) * 64 + 8 * 64
    assert win.initiation_interval == max(win.in_transfers, win.out_transfers)
    for kw, why in [(dict(order="chw"), "hwc"), (dict(in_elements_per_transfer=4), "divide"),
                    (dict(padding=(3, 0, 0, 0)), "padding"), (dict(mode="ring"), "mode")]:
        with pytest.raises(ValueError, match=why):
            SlidingWindow((3, 6, 6), unsigned(4), kernel=(3, 3), **{"mode": "lines", **kw})
