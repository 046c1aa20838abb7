"""The board top's link logic on Icarus and Verilator, driven by the host driver over a socket:
bit-exact through the UART, a broken frame answered with an error and the link resynchronised."""
from __future__ import annotations

import numpy as np
import pytest

from softfloor import golden, intmodel
from softfloor import protocol as proto
from softfloor.host import Host
from softfloor.hw.generate import generate
from softfloor.sim import linksim
from tests.randmodel import random_codes, random_model

pytestmark = pytest.mark.sim

SAMPLES = 50


@pytest.fixture(scope="module")
def design(tmp_path_factory):
    """A digits-shaped random MLP (64 4-bit inputs -> 16 -> 10 logits) behind the link."""
    d = tmp_path_factory.mktemp("link")
    rng = np.random.default_rng(24)
    model = random_model(rng, (64, 16, 10), in_bits=4, in_signed=False, final_requant=False)
    intmodel.save(model, d / "model.intmodel.json")
    gen = generate(model, d, folding={})    # one MAC lane per layer: a small, quick model
    baud = 115200
    info = proto.link_info(gen.manifest, model, d / "model.intmodel.json",
                           clock_hz=baud * linksim.SIM_DIVISOR, baud=baud)
    v = linksim.link_verilog(gen.verilog, info, linksim.SIM_DIVISOR, d)
    x = random_codes(rng, model, SAMPLES)
    return model, info, v, x, d


def test_link_bit_exact_with_broken_frame_and_resync(simulator, design):
    model, info, v, x, d = design
    want = golden.run(model, x)
    in_lay = info.input.layout()
    sim = linksim.SimulatedBoard(v, linksim.SIM_DIVISOR, simulator, d / "run")
    with sim as url, Host.open(url, info.baud, reply_timeout=linksim.SIM_REPLY_TIMEOUT) as h:
        assert h.info() == info
        first = h.run(x[:10])
        # A frame broken off half-way (the host lost its place), then the next ones.
        f = proto.frame(proto.INFER, proto.sample_to_bytes(in_lay, x[10]))
        h.send(f[:len(f) // 2])
        h.send(proto.frame(proto.INFO))
        t, payload = h.reply()
        assert t == proto.ERROR and payload[0] in (proto.E_CRC, proto.E_LENGTH)
        t, payload = h.reply()
        assert (t, proto.parse_info(payload)) == (proto.INFO_REPLY, info)
        # A malformed frame (one byte short) gets a length error; nothing reaches the core.
        h.send(proto.frame(proto.INFER, proto.sample_to_bytes(in_lay, x[10])[:-1]))
        t, payload = h.reply()
        assert (t, payload) == (proto.ERROR, bytes([proto.E_LENGTH, proto.INFER]))
        rest = h.run(x[10:])
    got = np.concatenate([first, rest])
    np.testing.assert_array_equal(got, want)
    assert sim.stats["tx_framing_errors"] == 0
    assert sim.stats["request_frames"] == sim.stats["reply_frames"] == SAMPLES + 4


def test_cli_run_sim(design, capsys):
    """``softfloor run --sim``: the same driver through the CLI (same Verilog: a cached build)."""
    import json

    from softfloor import cli
    from softfloor.sim import tools
    from tests.conftest import require_tool
    require_tool("verilator", tools.ensure_verilator)
    model, info, v, x, d = design
    np.savez(d / "inputs.npz", codes=x[:5], labels=np.zeros(5, dtype=np.int64))
    assert cli.main(["run", "--sim", "--out", str(d), "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["samples"] == 5 and summary["mismatches_vs_golden"] == 0
    assert summary["model_hash"] == info.model_hash
    np.testing.assert_array_equal(np.load(d / "run.npz")["outputs"], golden.run(model, x[:5]))
