"""The examples run end to end at reduced epochs: train, export, ``flow --model`` co-simulates a
few test samples bit-exactly on Verilator and Icarus (``make bench SECTIONS=mnist`` runs them at
full: 60 epochs, all 1,000 test samples)."""
import importlib.util
import json
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _example(name: str):
    sys.path.insert(0, str(EXAMPLES))
    try:
        spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(EXAMPLES))


def _rows(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def _check(rows, widths):
    assert [r["width"] for r in rows] == widths
    for r in rows:
        assert r["bit_exact_golden"] is True
        assert set(r["rtl"]) == {"verilator", "icarus", "accuracy"}
        for sim in ("verilator", "icarus"):
            assert r["rtl"][sim]["mismatches"] == 0 and r["rtl"][sim]["samples"] > 0


@pytest.mark.sim
@pytest.mark.slow
def test_tfc_example_trains_exports_and_cosimulates(tmp_path, capsys):
    from softfloor.sim import tools
    tools.ensure("verilator")
    tools.ensure("icarus")
    sys.path.insert(0, str(EXAMPLES))
    try:
        code = _example("tfc_mnist5k").main(["--epochs", "2", "--samples", "6", "--out",
                                             str(tmp_path)])
    finally:
        sys.path.remove(str(EXAMPLES))
    assert code == 0
    rows = _rows(capsys.readouterr().out)
    _check(rows, ["w2a2", "w1a1"])
    assert rows[0]["quantized"] > 0.5  # it learns (60 epochs: the benchmark)


@pytest.mark.sim
@pytest.mark.slow
def test_cnn_example_trains_exports_and_cosimulates(tmp_path, capsys):
    from softfloor.sim import tools
    tools.ensure("verilator")
    tools.ensure("icarus")
    sys.path.insert(0, str(EXAMPLES))
    try:
        code = _example("cnn_mnist5k").main(["--epochs", "1", "--samples", "3", "--channels",
                                             "4", "8", "--device", "up5k", "--out",
                                             str(tmp_path)])
    finally:
        sys.path.remove(str(EXAMPLES))
    assert code == 0
    rows = _rows(capsys.readouterr().out)
    _check(rows, ["w4a4"])
    assert rows[0]["quantized"] > 0.5
