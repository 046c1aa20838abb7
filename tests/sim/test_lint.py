"""Verilator --lint-only -Wall on generated tops: zero unwaived warnings (sim/lint_waivers.toml)."""
from __future__ import annotations

import pytest

from softfloor.hw.generate import generate
from softfloor.sim import lint, tools
from tests.conftest import require_tool
from tests.randmodel import digits_model, random_network

pytestmark = pytest.mark.sim


@pytest.fixture(autouse=True)
def _verilator():
    require_tool("verilator", tools.ensure_verilator)


def test_waiver_file_documents_every_kind():
    w = lint.load_waivers()
    assert set(w) >= {"WIDTHEXPAND", "WIDTHTRUNC", "UNUSEDSIGNAL"}
    for kind, v in w.items():
        assert len(v["reason"].split()) >= 10, kind


@pytest.mark.parametrize("which", ["digits"] + [f"rand{s}" for s in range(2000, 2004)])
def test_generated_top_is_lint_clean(which, tmp_path):
    model = digits_model() if which == "digits" else random_network(int(which[4:]), max_depth=3)
    gen = generate(model, tmp_path)
    rep = lint.lint(gen.verilog, gen.manifest["top"])
    print(rep)
    assert rep.ok, str(rep)
    assert rep.waived  # the waivers are in use (Verilator really ran with -Wall)


def test_unwaived_warnings_and_errors_are_reported(tmp_path):
    v = tmp_path / "bad.v"
    v.write_text("module bad(input [3:0] a, output [3:0] y, output z);\n"
                 "  assign y = a;\nendmodule\n")
    rep = lint.lint(v, "bad")
    assert not rep.ok and {m.kind for m in rep.unwaived} == {"UNDRIVEN"}
    v.write_text("module bad(input a, output y);\n  assign y = b;\nendmodule\n")
    rep = lint.lint(v, "bad")
    assert not rep.ok and rep.unwaived[0].severity == "Error"
