"""``softfloor program`` / ``run`` / ``--board``: the clear one-line errors when no programmer,
no board or no serial port is there, and the board list kept in step."""
from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from softfloor import cli, intmodel
from softfloor import protocol as proto
from softfloor.host import Host, LinkError, _check
from softfloor.hw import boards
from tests.randmodel import random_model
from tests.sw.propcases import fake_bitstream


def _bitstream(tmp_path, board="icebreaker"):
    """A well-formed bitstream of the user's (not one DIR records): ``--bitstream`` args."""
    b = boards.get_board(board)
    bit = fake_bitstream(tmp_path / f"user{b.bitstream_suffix}", b.family, b"\x00" * 16)
    return ["--bitstream", str(bit)]


def test_board_choices_in_step():
    assert set(cli.BOARDS) == set(boards.BOARDS)


def test_program_without_programmer(tmp_path, monkeypatch, capsys):
    bit = _bitstream(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert cli.main(["program", "--board", "icebreaker", "--out", str(tmp_path), *bit]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "iceprog not found" in err[0]


def test_program_without_board(tmp_path, monkeypatch, capsys):
    bit = _bitstream(tmp_path, "ulx3s")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "openFPGALoader"
    fake.write_text("#!/bin/sh\necho 'unable to open ftdi device: -3 (device not found)' >&2\n"
                    "exit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    assert cli.main(["program", "--board", "ulx3s", "--out", str(tmp_path), *bit]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no ulx3s found" in err[0] and "device not found" in err[0]


@pytest.mark.parametrize("how", ["empty", "truncated", "other family", "no record",
                                 "changed since"])
def test_program_refuses_a_bitstream_it_cannot_trust(tmp_path, capsys, how):
    """A bitstream that is not whole, of another family, or not the one the board stage
    recorded building from DIR's files: one line naming it and what to rerun."""
    b = boards.get_board("icebreaker")
    bit = tmp_path / "board" / "icebreaker" / f"softfloor_board{b.bitstream_suffix}"
    fake_bitstream(bit, "ecp5" if how == "other family" else "ice40", b"\x01" * 64)
    if how == "empty":
        bit.write_bytes(b"")
    elif how == "truncated":
        bit.write_bytes(bit.read_bytes()[:-2])
    elif how == "changed since":
        (tmp_path / "stages").mkdir()
        (tmp_path / "stages" / "board.json").write_text(
            '{"board": "icebreaker", "bitstream_sha256": "00", '
            '"provenance": {"writes": {}, "made_from": {}}}')
    assert cli.main(["program", "--board", "icebreaker", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bit) in err[0] and "softfloor board --board icebreaker" in err[0]


def test_program_without_bitstream(tmp_path, capsys):
    assert cli.main(["program", "--board", "orangecrab", "--out", str(tmp_path)]) == 2
    assert "flow --board orangecrab" in capsys.readouterr().err


def test_run_without_serial_port(tmp_path, capsys):
    model = random_model(np.random.default_rng(1), (4, 3))
    intmodel.save(model, tmp_path / "model.intmodel.json")
    np.savez(tmp_path / "inputs.npz", codes=np.zeros((2, 4), dtype=np.int64))
    assert cli.main(["run", "--port", str(tmp_path / "ttyNONE"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot open" in err[0]


def test_board_device_mismatch(capsys):
    assert cli.main(["flow", "--board", "ulx3s", "--device", "hx8k", "--no-synth"]) == 2
    assert "--board ulx3s is an ecp5-85f" in capsys.readouterr().err


class Loopback:
    """A port whose far end is the protocol's device model (a board in Python)."""

    def __init__(self, dev):
        self.dev, self.buf = dev, b""

    def write(self, data):
        self.buf += self.dev.feed(bytes(data))

    def read(self, n):
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def close(self):
        pass


def test_host_driver_against_device_model():
    from softfloor import golden
    from softfloor.hw.generate import build_manifest
    rng = np.random.default_rng(5)
    model = random_model(rng, (7, 5, 3), in_bits=5, in_signed=True, final_requant=False)
    man = build_manifest(model, folding={})
    info = proto.LinkInfo(proto.VERSION, "00112233aabbccdd",
                          proto.PortInfo.from_manifest(man["input"], model.input.shape),
                          proto.PortInfo.from_manifest(man["output"], model.output_shape),
                          "codes", 1_000_000, 9600, 10, 10)
    h = Host(Loopback(proto.DeviceModel(info, lambda c: golden.run(model, c[None])[0])),
             reply_timeout=0.2)
    x = rng.integers(-16, 16, (9, 7))
    assert h.info() == info
    np.testing.assert_array_equal(h.run(x, window=3), golden.run(model, x))
    h.send(proto.frame(proto.INFER, b"\x01"))
    t, payload = h.reply()
    with pytest.raises(LinkError, match="ERROR 6 .wrong payload length"):
        _check(t, payload, proto.RESULT, "INFER")
    with pytest.raises(LinkError, match="no reply"):
        h.reply()
