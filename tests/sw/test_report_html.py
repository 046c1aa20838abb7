"""report.html: a flow's page, opened in headless Chromium; the report table's resources; info."""
from __future__ import annotations

import hashlib
import json
import shutil
import struct
import time

import numpy as np
import pytest

from softfloor import browser, cli, flow, intmodel
from softfloor.sim import tools
from tests.conftest import _missing, require_tool
from tests.randmodel import random_model

SECTIONS = ["summary", "accuracy", "bit-exact", "plan", "resources", "performance", "timings",
            "provenance"]


def test_resources_used_available_and_the_fits_verdict():
    sy = {"device": "up5k", "logic_cells": 5300, "ff": 100, "dsp": 0, "ram_blocks": 30,
          "io": 20, "fmax_mhz": 40.0}
    rows = dict(flow.resource_rows(sy))
    assert rows["up5k logic cells used / available"] == "5300 / 5280  (100.4%)"
    assert rows["up5k RAM blocks used / available"] == "30 / 30  (100.0%)"
    assert rows["fits up5k"] == "NO: a resource exceeds the device"
    fit = flow._utilisation(sy | {"logic_cells": 5280})
    assert fit["fits"] and fit["available"]["ff"] == 5280 and fit["utilisation"]["io"] == 0.5128


def _chromium():
    try:
        return browser.find_chromium()
    except browser.BrowserMissing as e:
        _missing("chromium", e)


@pytest.mark.sim
@pytest.mark.synth
def test_flow_writes_a_report_page_that_renders_in_chromium(tmp_path, capsys):
    """A user's small model through golden, RTL, Verilator and synthesis, its line log (not a
    terminal), report.html opened in headless Chromium: every section rendered, no console
    error, no broken image, a screenshot; then `info` on the model shows its plan."""
    require_tool("verilator", lambda: tools.ensure("verilator"))
    _chromium()
    rng = np.random.default_rng(3)
    model = random_model(rng, (12, 6, 4), in_bits=4, in_signed=False)
    model.input.scale = 0.25
    mpath = intmodel.save(model, tmp_path / "user.intmodel.json")
    np.save(tmp_path / "x.npy", rng.uniform(0, 3.5, (40, 12)))
    np.save(tmp_path / "y.npy", rng.integers(0, 4, 40))
    out = tmp_path / "out"
    assert cli.main(["flow", "--out", str(out), "--model", str(mpath), "--inputs",
                     str(tmp_path / "x.npy"), "--labels", str(tmp_path / "y.npy"),
                     "--simulator", "verilator"]) == 0
    log = capsys.readouterr().out
    for line in ("  verilator: 40/40 samples in ", "  yosys synth_ice40 ...",
                 "  yosys synth_ice40: done in ", "[synth] done in ", "fits up5k  "):
        assert line in log, line
    rep = json.loads((out / "report.json").read_text())
    assert rep["synth"]["fits"] is True and rep["synth"]["available"]["logic_cells"] == 5280
    assert rep["hardware"]["latency_ns"] > 0 and rep["html"].endswith("report.html")
    files = {a["file"]: a for a in rep["artifacts"]}
    assert files["model.intmodel.json"]["sha256"] == hashlib.sha256(
        (out / "model.intmodel.json").read_bytes()).hexdigest()
    assert files["softfloor_top.v"]["stage"] == "rtl" and "report.json" not in files

    html = (out / "report.html").read_text()
    assert "http://" not in html and "https://" not in html and "<script" not in html
    t0 = time.monotonic()
    page = browser.render(out / "report.html", tmp_path / "report.png")
    print(f"chromium: {page} ({time.monotonic() - t0:.1f} s)")
    assert page.console_errors == [] and page.broken_images == []
    assert [s["id"] for s in page.sections] == SECTIONS
    assert all(s["height"] > 60 and s["width"] > 500 for s in page.sections), page.sections
    assert page.title == "softfloor report: rand"
    png = (tmp_path / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert width == 1100 and height == page.height > 1500

    assert cli.main(["info", str(out / "model.intmodel.json")]) == 0
    info = capsys.readouterr().out
    assert "plan for up5k (throughput): II " in info and "fits up5k" in info
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(out / "manifest.json", other)
    intmodel.save(random_model(rng, (12, 5, 4)), other / "m.intmodel.json")
    assert cli.main(["info", str(other / "m.intmodel.json")]) == 0
    assert "is the RTL of another model (not shown)" in capsys.readouterr().out


def test_a_page_with_errors_is_caught(tmp_path):
    """The browser check itself: a console error, an exception and a broken image all show."""
    _chromium()
    (tmp_path / "bad.html").write_text(
        '<!DOCTYPE html><title>bad</title><section id="a"><h2>A</h2>'
        '<img alt="broken" src="data:image/png;base64,AAAA"></section>'
        '<script>console.error("boom"); missing();</script>')
    page = browser.render(tmp_path / "bad.html")
    assert page.title == "bad" and [s["id"] for s in page.sections] == ["a"]
    assert page.broken_images == ["broken"]
    assert any("boom" in e for e in page.console_errors)
    assert any("missing is not defined" in e for e in page.console_errors)


def test_plan_section_and_what_each_stage_read(tmp_path):
    """Without simulation or synthesis: the plan section shows the planner's folding (PE x SIMD,
    lanes, cycles, transfers, estimate, budget) and a plan file it was built from; each
    artifact names the files its stage read, hashed when read."""
    rng = np.random.default_rng(5)
    model = random_model(rng, (12, 6, 4), in_bits=4, in_signed=False)
    mpath = intmodel.save(model, tmp_path / "user.intmodel.json")
    np.save(tmp_path / "x.npy", rng.uniform(0, 3.5, (8, 12)))
    out = tmp_path / "out"
    plan_file = tmp_path / "plan.json"
    ctx = flow.Context(flow.FlowOptions(out=out, model=mpath, inputs=tmp_path / "x.npy",
                                        synth=False, quiet=True, plan_out=plan_file))
    out.mkdir()
    intmodel.save(model, out / flow.MODEL_FILE)
    flow.run_stage(ctx, "data", flow.stage_inputs)
    for stage in ("golden", "rtl"):
        flow.run_stage(ctx, stage)
    ctx.opts.plan, ctx.opts.plan_out = plan_file, None
    flow.run_stage(ctx, "rtl")
    rep = flow.report(ctx)
    assert rep["hardware"]["plan_file"] == str(plan_file)
    made = {a["file"]: a["made_from"] for a in rep["artifacts"]}
    sha = {a["file"]: a["sha256"] for a in rep["artifacts"]}
    assert made["vectors.npz"] == {"model.intmodel.json": sha["model.intmodel.json"],
                                   "inputs.npz": sha["inputs.npz"]}
    assert made["softfloor_top.v"] == {"model.intmodel.json": sha["model.intmodel.json"]}
    html = (out / "report.html").read_text()
    plan = html[html.index('<section id="plan">'):html.index('<section id="resources">')]
    lp = rep["hardware"]["plan"]["layers"][0]
    assert f"<td>{lp['pe']}&times;{lp['simd']}</td>" in plan
    for text in ("<th>in/out</th>", "<th>lanes</th>", "planner budget",
                 f"from the plan file <code>{plan_file}</code>",
                 "estimate within the planner's budget: <span class=\"badge ok\">yes",
                 "not synthesized"):
        assert text in plan or text in html, text
