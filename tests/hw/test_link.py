"""The UART and the host link in Amaranth's Python simulator, against their Python models."""
from __future__ import annotations

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.sim import Simulator

from softfloor import golden
from softfloor import protocol as proto
from softfloor.hw.link import LinkTop, SlipEncoder
from softfloor.hw.top import SoftfloorTop
from softfloor.hw.uart import UARTRx, UARTTx, decode_line, divisor_for, line_levels
from tests.randmodel import random_codes, random_model


def _sim(dut, levels, cycles):
    """Drive ``rx``-like input with ``levels`` (one per cycle) and record the tx-like output."""
    out = []

    async def tb(ctx):
        for k in range(cycles):
            if levels is not None:
                ctx.set(dut.uart_rx if hasattr(dut, "uart_rx") else dut.rx,
                        int(levels[k]) if k < len(levels) else 1)
            await ctx.tick()
            out.append(ctx.get(dut.uart_tx) if hasattr(dut, "uart_tx") else None)
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    return out


def test_line_model_round_trip_and_framing_error():
    data = bytes(range(0, 256, 7))
    for d in (4, 5, 16):
        assert decode_line(line_levels(data, d, idle=3, gap=2), d) == (data, [])
    lv = line_levels(b"\x55\xaa\x12", 6, gap=3, stop_bits=[1, 0, 1])
    assert decode_line(lv, 6) == (b"\x55\x12", [1])


@pytest.mark.parametrize("divisor", [4, 7])
def test_uart_rx_matches_line_model(divisor):
    rng = np.random.default_rng(divisor)
    data = bytes(rng.integers(0, 256, 12).tolist())
    stops = [0 if k == 5 else 1 for k in range(len(data))]
    lv = line_levels(data, divisor, idle=5, gap=int(rng.integers(0, 3)), stop_bits=stops)
    rx = UARTRx(divisor)
    got, errs = [], []

    async def tb(ctx):
        for k in range(len(lv) + 4 * divisor):
            ctx.set(rx.rx, int(lv[k]) if k < len(lv) else 1)
            await ctx.tick()
            if ctx.get(rx.o.valid):
                if ctx.get(rx.o.payload.error):
                    errs.append(len(got))
                else:
                    got.append(ctx.get(rx.o.payload.data))
    sim = Simulator(rx)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert (bytes(got), errs) == decode_line(lv, divisor)
    assert errs == [5]


def test_uart_tx_and_slip_encoder_match_models():
    """Symbols -> SlipEncoder -> UARTTx -> line, decoded by the line model, equal slip_encode."""
    from amaranth.lib import wiring
    body = bytes([1, proto.END, 7, proto.ESC, proto.ESC, 0x42])
    syms = [(0, 1)] + [(b, 0) for b in body] + [(0, 1)]
    m = Module()
    m.submodules.enc = enc = SlipEncoder()
    m.submodules.tx = tx = UARTTx(5)
    wiring.connect(m, enc.o, tx.i)
    line = []

    async def tb(ctx):
        k = 0
        for _ in range(5 * 10 * 20):
            if k < len(syms):
                ctx.set(enc.i.valid, 1)
                ctx.set(enc.i.payload.data, syms[k][0])
                ctx.set(enc.i.payload.delim, syms[k][1])
            else:
                ctx.set(enc.i.valid, 0)
            ready = ctx.get(enc.i.ready)
            line.append(ctx.get(tx.tx))
            await ctx.tick()
            if k < len(syms) and ready:
                k += 1
    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    got, errs = decode_line(np.array(line), 5)
    assert errs == [] and got == proto.slip_encode(body)


def test_divisor_for():
    assert divisor_for(12e6, 115200) == 104
    with pytest.raises(ValueError, match="too fast"):
        divisor_for(12e6, 4_000_000)
    with pytest.raises(ValueError, match="% off"):
        divisor_for(10e6, 2_000_000 + 300_000)


def _link_run(model, requests, divisor: int, *, stop_bits=None, gap=0, extra=4000, pause=0):
    """``requests``: bytes, or a list of byte strings sent ``pause`` idle cycles apart (the
    protocol allows MAX_IN_FLIGHT outstanding requests)."""
    from softfloor.hw.generate import build_manifest
    man = build_manifest(model, folding={})
    info = proto.LinkInfo(proto.VERSION, "0123456789abcdef",
                          proto.PortInfo.from_manifest(man["input"], model.input.shape),
                          proto.PortInfo.from_manifest(man["output"], model.output_shape),
                          "codes", 1_000_000, 1_000_000 // divisor,
                          man["cycles_per_inference"], man["initiation_interval"])
    dut = LinkTop(info, divisor, core=SoftfloorTop(model, folding={}))
    chunks = [requests] if isinstance(requests, bytes) else requests
    lv = np.concatenate([line_levels(c, divisor, idle=8 if k == 0 else pause, gap=gap,
                                     stop_bits=stop_bits) for k, c in enumerate(chunks)])
    out = _sim(dut, lv, len(lv) + extra)
    got, errs = decode_line(np.array(out), divisor)
    assert errs == []
    return info, got


def test_link_serves_infer_info_and_errors_like_the_device_model():
    rng = np.random.default_rng(3)
    model = random_model(rng, (6, 5, 3), in_bits=4, in_signed=False)
    x = random_codes(rng, model, 3)
    from softfloor.hw.generate import build_manifest
    man = build_manifest(model, folding={})
    in_layout = proto.PortInfo.from_manifest(man["input"], model.input.shape).layout()
    sample = [proto.sample_to_bytes(in_layout, row) for row in x]
    good0 = proto.frame(proto.INFER, sample[0])
    chunks = [good0 + proto.frame(proto.INFO)
              + good0[:5]                                  # broken off: ends at the next END
              + proto.frame(proto.INFER, sample[1]),
              proto.frame(proto.INFER, sample[2][:-1])     # malformed: wrong length
              + proto.frame(0x09)                          # unknown TYPE
              + bytes([proto.END, proto.INFER, 1, 2, 3, proto.END]),  # bad CRC
              bytes([proto.END, proto.ESC, 0x11, proto.END])          # bad escape
              + proto.frame(proto.INFER, sample[2])]
    reqs = b"".join(chunks)
    info, got = _link_run(model, chunks, divisor=4, pause=4000)
    dev = proto.DeviceModel(info, lambda c: golden.run(model, c[None])[0])
    want = dev.feed(reqs)
    assert got == want
    bodies = [b for b, _, _ in proto.SlipDecoder().feed(got)]
    kinds = [proto.parse_body(b) for b in bodies]
    assert [k[0] for k in kinds] == [proto.RESULT, proto.INFO_REPLY, proto.ERROR, proto.RESULT,
                                     proto.ERROR, proto.ERROR, proto.ERROR, proto.ERROR,
                                     proto.RESULT]
    assert [k[1][0] for k in kinds if k[0] == proto.ERROR] == [
        proto.E_CRC, proto.E_LENGTH, proto.E_TYPE, proto.E_CRC, proto.E_ESCAPE]
    out_layout = info.output.layout()
    for k, row in zip((0, 3, 8), x):
        np.testing.assert_array_equal(proto.bytes_to_sample(out_layout, kinds[k][1]),
                                      golden.run(model, row[None])[0])
    assert proto.parse_info(kinds[1][1]) == info


def test_link_framing_error_gives_uart_error_then_recovers():
    rng = np.random.default_rng(4)
    model = random_model(rng, (4, 3), in_bits=3, in_signed=True)
    x = random_codes(rng, model, 1)
    from softfloor.hw.generate import build_manifest
    man = build_manifest(model, folding={})
    lay = proto.PortInfo.from_manifest(man["input"], model.input.shape).layout()
    f = proto.frame(proto.INFER, proto.sample_to_bytes(lay, x[0]))
    reqs = f + f
    stops = [0 if k == 2 else 1 for k in range(len(reqs))]
    info, got = _link_run(model, reqs, divisor=4, stop_bits=stops, gap=2)
    bodies = [proto.parse_body(b) for b, _, _ in proto.SlipDecoder().feed(got)]
    assert bodies[0] == (proto.ERROR, bytes([proto.E_UART, proto.INFER]))
    assert bodies[1][0] == proto.RESULT
