# amaranth: UnusedElaboratable=no
# (the validation tests make adapters with bad arguments that are never elaborated)
"""Beat <-> element adapters: numpy pack/unpack faces and the Amaranth gearboxes."""
from __future__ import annotations

import numpy as np
import pytest
from amaranth.hdl import signed, unsigned

from softfloor.hw.rtl.stream_io import BeatLayout, BeatPacker, BeatUnpacker

from .streamsim import run_stream


def test_layout_defaults_and_validation():
    L = BeatLayout(unsigned(4), elements=9, elements_per_beat=2)
    assert (L.tdata_width, L.beats_per_sample, L.last_beat_elements) == (8, 5, 1)
    assert BeatLayout(signed(3), elements=4, elements_per_beat=2).tdata_width == 8
    with pytest.raises(ValueError):
        BeatLayout(unsigned(4), elements=4, elements_per_beat=3, tdata_width=12)
    with pytest.raises(ValueError):
        BeatLayout(unsigned(4), elements=4, elements_per_beat=0)


@pytest.mark.parametrize("shape,n,epb", [(unsigned(4), 9, 2), (signed(3), 7, 2),
                                         (signed(5), 5, 3), (unsigned(8), 3, 1)])
def test_pack_unpack_roundtrip(shape, n, epb):
    L = BeatLayout(shape, elements=n, elements_per_beat=epb)
    rng = np.random.default_rng(0)
    lo, hi = (-(1 << (shape.width - 1)), (1 << (shape.width - 1)) - 1) if shape.signed \
        else (0, (1 << shape.width) - 1)
    s = [int(v) for v in rng.integers(lo, hi + 1, n)]
    beats = L.pack(s)
    assert len(beats) == L.beats_per_sample
    assert [b[1] for b in beats] == [0] * (len(beats) - 1) + [1]
    assert all(0 <= b[0] < 1 << (epb * shape.width) for b in beats)   # unused bits zero
    assert L.unpack([b[0] for b in beats]) == s


@pytest.mark.parametrize("shape,n,epb,gap,stall", [
    (unsigned(4), 9, 2, 0.0, 0.0), (signed(3), 7, 2, 0.3, 0.5), (signed(5), 5, 3, 0.5, 0.2),
    (unsigned(8), 3, 1, 0.2, 0.2)])
def test_unpacker(shape, n, epb, gap, stall):
    L = BeatLayout(shape, elements=n, elements_per_beat=epb)
    rng = np.random.default_rng(1)
    samples = [[int(v) for v in rng.integers(-4 if shape.signed else 0, 4, n)] for _ in range(6)]
    beats = []
    for s in samples:
        for word, last in L.pack(s):
            # Garbage in the unused high bits must be ignored; tlast is ignored too.
            beats.append((word | (0 if epb * shape.width == L.tdata_width else
                                  (1 << (L.tdata_width - 1))), int(rng.integers(2))))
    dut = BeatUnpacker(L)
    r = run_stream(dut, i_valid=dut.i.valid, i_ready=dut.i.ready, i_data=dut.i.payload.data,
                   i_last=dut.i.payload.last, o_valid=dut.o.valid, o_ready=dut.o.ready,
                   o_data=dut.o.payload, inputs=beats, n_out=6 * n, gap_prob=gap,
                   stall_prob=stall, rng=rng, idle_after=5)
    # Partial last beats carry only their valid elements.
    assert r.outputs == [v for s in samples for v in s]
    if gap == stall == 0:
        assert np.all(np.diff(r.out_cycles) == 1)       # one element per cycle, no bubbles


@pytest.mark.parametrize("in_shape,shape,n,epb,gap,stall", [
    (unsigned(4), unsigned(4), 9, 2, 0.0, 0.0), (signed(13), signed(16), 4, 1, 0.3, 0.3),
    (signed(3), signed(3), 7, 2, 0.4, 0.5), (unsigned(2), unsigned(2), 5, 4, 0.1, 0.6)])
def test_packer(in_shape, shape, n, epb, gap, stall):
    L = BeatLayout(shape, elements=n, elements_per_beat=epb)
    rng = np.random.default_rng(2)
    lo = -(1 << (in_shape.width - 1)) if in_shape.signed else 0
    hi = (1 << (in_shape.width - 1)) - 1 if in_shape.signed else (1 << in_shape.width) - 1
    samples = [[int(v) for v in rng.integers(lo, hi + 1, n)] for _ in range(5)]
    dut = BeatPacker(L, in_shape)
    r = run_stream(dut, i_valid=dut.i.valid, i_ready=dut.i.ready, i_data=dut.i.payload,
                   o_valid=dut.o.valid, o_ready=dut.o.ready, o_data=dut.o.payload.data,
                   o_last=dut.o.payload.last, inputs=[v for s in samples for v in s],
                   n_out=5 * L.beats_per_sample, gap_prob=gap, stall_prob=stall, rng=rng,
                   idle_after=5)
    want = [b for s in samples for b in L.pack(s)]
    assert list(zip(r.outputs, r.lasts)) == want


@pytest.mark.parametrize("n,epb,k,gap,stall", [(12, 4, 2, 0.0, 0.0), (12, 4, 4, 0.3, 0.3),
                                               (10, 4, 2, 0.2, 0.4), (9, 3, 3, 0.0, 0.0)])
def test_unpacker_and_packer_several_elements_per_transfer(n, epb, k, gap, stall):
    """Transfers of k elements (element j at bits [j*b, (j+1)*b)) both ways, partial last beats."""
    shape = signed(3)
    L = BeatLayout(shape, elements=n, elements_per_beat=epb)
    rng = np.random.default_rng(k)
    samples = [[int(v) for v in rng.integers(-4, 4, n)] for _ in range(4)]
    beats = [b for s in samples for b in L.pack(s)]
    dut = BeatUnpacker(L, k)
    r = run_stream(dut, i_valid=dut.i.valid, i_ready=dut.i.ready, i_data=dut.i.payload.data,
                   i_last=dut.i.payload.last, o_valid=dut.o.valid, o_ready=dut.o.ready,
                   o_data=dut.o.payload, inputs=beats, n_out=4 * n // k, gap_prob=gap,
                   stall_prob=stall, rng=rng, idle_after=5)
    flat = [v for s in samples for v in s]
    words = [sum((v & 7) << (3 * j) for j, v in enumerate(flat[i:i + k]))
             for i in range(0, len(flat), k)]
    assert r.outputs == words
    if gap == stall == 0:
        assert np.all(np.diff(r.out_cycles) == 1)
    pk = BeatPacker(L, shape, k)
    r = run_stream(pk, i_valid=pk.i.valid, i_ready=pk.i.ready, i_data=pk.i.payload,
                   o_valid=pk.o.valid, o_ready=pk.o.ready, o_data=pk.o.payload.data,
                   o_last=pk.o.payload.last, inputs=words, n_out=4 * L.beats_per_sample,
                   gap_prob=gap, stall_prob=stall, rng=rng, idle_after=5)
    assert list(zip(r.outputs, r.lasts)) == beats


def test_elements_per_transfer_must_divide_the_beats():
    L = BeatLayout(unsigned(4), elements=10, elements_per_beat=4)
    with pytest.raises(ValueError, match="must divide the 4 elements per beat and the 2 of the"):
        BeatUnpacker(L, 4)
    with pytest.raises(ValueError, match="BeatPacker"):
        BeatPacker(L, unsigned(4), 3)


@pytest.mark.parametrize("in_shape,shape,tdata,gap,stall", [
    (signed(19), signed(32), 16, 0.0, 0.0), (signed(19), signed(32), 16, 0.3, 0.5),
    (signed(12), signed(20), 8, 0.2, 0.3), (unsigned(9), unsigned(16), 8, 0.0, 0.0)])
def test_packer_splits_elements_over_narrow_beats(in_shape, shape, tdata, gap, stall):
    """A beat narrower than an element: each element in beats_per_element beats, low part
    first, last on the final part; back to back, one beat per cycle without a bubble."""
    n = 5
    L = BeatLayout(shape, elements=n, elements_per_beat=1, tdata_width=tdata)
    k = -(-shape.width // tdata)
    assert (L.beats_per_element, L.beats_per_sample, L.to_dict()["beats_per_element"]) == \
        (k, n * k, k)
    assert BeatLayout.from_dict(L.to_dict()).beats_per_element == k
    rng = np.random.default_rng(tdata)
    lo = -(1 << (in_shape.width - 1)) if in_shape.signed else 0
    hi = (1 << (in_shape.width - 1)) - 1 if in_shape.signed else (1 << in_shape.width) - 1
    samples = [[int(v) for v in rng.integers(lo, hi + 1, n)] for _ in range(4)]
    samples[0][:2] = [lo, hi]
    for s in samples:
        beats = L.pack(s)
        assert all(0 <= w < 1 << tdata for w, _ in beats)
        assert L.unpack([w for w, _ in beats]) == s
    dut = BeatPacker(L, in_shape)
    r = run_stream(dut, i_valid=dut.i.valid, i_ready=dut.i.ready, i_data=dut.i.payload,
                   o_valid=dut.o.valid, o_ready=dut.o.ready, o_data=dut.o.payload.data,
                   o_last=dut.o.payload.last, inputs=[v for s in samples for v in s],
                   n_out=4 * L.beats_per_sample, gap_prob=gap, stall_prob=stall, rng=rng,
                   idle_after=5)
    assert list(zip(r.outputs, r.lasts)) == [b for s in samples for b in L.pack(s)]
    if gap == stall == 0:
        assert np.all(np.diff(r.out_cycles) == 1)
    with pytest.raises(ValueError, match="only the output splits"):
        BeatUnpacker(L)
    with pytest.raises(ValueError, match="whole number of bytes"):
        BeatLayout(shape, elements=n, elements_per_beat=2, tdata_width=tdata)
