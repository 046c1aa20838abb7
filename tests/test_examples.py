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


def readme_blocks(heading: str) -> tuple[str, str]:
    """The ``python`` block and the ``sh`` block after it under the README's ``heading``."""
    text = (EXAMPLES.parent / "README.md").read_text()
    section = text[text.index(f"## {heading}\n"):]
    py = section.split("```python\n", 1)[1].split("```", 1)[0]
    sh = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return py, sh


@pytest.mark.sim
@pytest.mark.slow
def test_readme_example_runs_as_written(tmp_path, monkeypatch, capsys):
    """The README's own-network example, as written but for its epochs (60 -> 1) on a small
    mnist5k file: it trains, exports, and its ``flow --model`` command co-simulates every test
    sample bit-exactly on Verilator and Icarus."""
    import shlex
    import numpy as np
    from softfloor import cli
    from softfloor.data import load_mnist5k
    from softfloor.sim import tools
    for sim in tools.SIMULATORS:
        tools.ensure(sim)
    py, sh = readme_blocks("Your own network, your own data")
    assert "epochs=60" in py and len(py.splitlines()) <= 30
    d = load_mnist5k()
    monkeypatch.chdir(tmp_path)
    np.savez("mine.npz", x_train=d["x_train"][:600], y_train=d["y_train"][:600],
             x_test=d["x_test"][:12], y_test=d["y_test"][:12])
    exec(compile(py.replace("epochs=60", "epochs=1"), "README.md", "exec"), {})
    assert "bit_exact': True" in capsys.readouterr().out
    (cmd,) = [line for line in sh.splitlines() if line.strip()]
    argv = shlex.split(cmd)
    assert argv[0].endswith("softfloor")
    assert cli.main(argv[1:] + ["--no-synth", "--quiet"]) == 0
    rep = json.loads((tmp_path / "build" / "mine" / "report.json").read_text())
    for sim in tools.SIMULATORS:
        assert rep["bit_exact"][sim] == {**rep["bit_exact"][sim], "samples": 12,
                                         "mismatches": 0}
