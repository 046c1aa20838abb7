"""The examples run end to end at reduced epochs: train, export, ``flow --model`` co-simulates a
few test samples bit-exactly on Verilator and Icarus (``make bench SECTIONS=mnist`` runs them at
full: 60 epochs, all 1,000 test samples)."""
import importlib.util
import json
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, argv: list, capsys) -> list[dict]:
    """Run ``examples/<name>.py`` with ``argv``: its JSON rows, each checked bit-exact against
    the golden model and on both simulators."""
    from softfloor.sim import tools
    tools.ensure("verilator")
    tools.ensure("icarus")
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(mod)
        assert mod.cli(argv) == 0
    finally:
        if str(EXAMPLES) in sys.path:
            sys.path.remove(str(EXAMPLES))
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()
            if line.startswith("{")]
    for r in rows:
        assert r["bit_exact_golden"] is True
        assert set(r["rtl"]) == {"verilator", "icarus", "accuracy"}
        for sim in ("verilator", "icarus"):
            assert r["rtl"][sim]["mismatches"] == 0 and r["rtl"][sim]["samples"] > 0
    return rows


@pytest.mark.sim
@pytest.mark.slow
def test_tfc_example_trains_exports_and_cosimulates(tmp_path, capsys):
    rows = run_example("tfc_mnist5k", ["--epochs", "2", "--samples", "4", "--out",
                                       str(tmp_path)], capsys)
    assert [r["width"] for r in rows] == ["w2a2", "w1a1"]  # accuracy: the benchmark's


@pytest.mark.sim
@pytest.mark.slow
def test_cnn_example_trains_exports_and_cosimulates(tmp_path, capsys):
    rows = run_example("cnn_mnist5k", ["--epochs", "1", "--samples", "3", "--channels", "4",
                                       "8", "--device", "up5k", "--out", str(tmp_path)], capsys)
    assert [r["width"] for r in rows] == ["w4a4"] and rows[0]["quantized"] > 0.5
