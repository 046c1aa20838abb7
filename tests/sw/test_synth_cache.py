"""Synthesis results cached by Verilog hash and device: one place-and-route per design."""
from __future__ import annotations

import json
import threading
import time

import pytest

from softfloor import flow, synth_cache
from softfloor.hw import synth

COUNTER = """module counter(input clk, output [3:0] q);
  reg [3:0] r = 0;
  always @(posedge clk) r <= r + 1;
  assign q = r;
endmodule
"""


@pytest.fixture
def fake_synth(monkeypatch):
    """synth.synthesize counted and fast (a SynthResult and a log file)."""
    calls = []

    def fake(verilog, top, out_dir, device="up5k", progress=None, **kw):
        calls.append((str(verilog), device))
        time.sleep(0.2)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "nextpnr.log").write_text(f"placed {top}\n")
        (out_dir / f"{top}.json").write_text("{}")           # the netlist: not cached
        return synth.SynthResult(device, 10 * len(calls), 5, 0, 0, 99.0, 5, "fake", 0.2)
    monkeypatch.setattr(synth, "synthesize", fake)
    monkeypatch.setattr(synth_cache, "tool_versions", lambda family: "fake tools")
    return calls


def test_same_verilog_and_device_synthesizes_once(tmp_path, fake_synth):
    v = tmp_path / "a.v"
    v.write_text(COUNTER)
    cache = tmp_path / "cache"
    r1, k1, hit1 = synth_cache.synthesize(v, "counter", tmp_path / "o1", "up5k", cache)
    r2, k2, hit2 = synth_cache.synthesize(v, "counter", tmp_path / "o2", "up5k", cache)
    assert (hit1, hit2) == (False, True) and k1 == k2 and r1 == r2
    assert len(fake_synth) == 1
    assert (tmp_path / "o2" / "nextpnr.log").read_text() == "placed counter\n"
    assert not (tmp_path / "o2" / "counter.json").exists()
    assert json.loads((cache / k1[:2] / k1 / "result.json").read_text())["logic_cells"] == 10
    # Another device, another Verilog text: other keys, other runs.
    _, k3, hit3 = synth_cache.synthesize(v, "counter", tmp_path / "o3", "hx8k", cache)
    v.write_text(COUNTER.replace("r + 1", "r + 2"))
    _, k4, hit4 = synth_cache.synthesize(v, "counter", tmp_path / "o4", "up5k", cache)
    assert not hit3 and not hit4 and len({k1, k3, k4}) == 3 and len(fake_synth) == 3


def test_key_covers_clock_seed_and_tools(tmp_path, monkeypatch):
    v = tmp_path / "a.v"
    v.write_text(COUNTER)
    monkeypatch.setattr(synth_cache, "tool_versions", lambda family: "yosys 1")
    base = synth_cache.cache_key(v, "counter", "up5k")
    assert base == synth_cache.cache_key(v, "counter", "up5k")
    assert base != synth_cache.cache_key(v, "counter", "up5k", freq_mhz=24.0)
    assert base != synth_cache.cache_key(v, "counter", "up5k", seed=2)
    assert base != synth_cache.cache_key(v, "top2", "up5k")
    monkeypatch.setattr(synth_cache, "tool_versions", lambda family: "yosys 2")
    assert base != synth_cache.cache_key(v, "counter", "up5k")


def test_concurrent_flows_wait_and_hit(tmp_path, fake_synth):
    v = tmp_path / "a.v"
    v.write_text(COUNTER)
    hits = []

    def one(i):
        hits.append(synth_cache.synthesize(v, "counter", tmp_path / f"o{i}", "up5k",
                                           tmp_path / "cache")[2])
    threads = [threading.Thread(target=one, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(fake_synth) == 1 and sorted(hits) == [False, True, True]


@pytest.mark.synth
def test_flow_synth_stage_uses_the_cache(tmp_path):
    """The flow's synth stage with FlowOptions.synth_cache: real Yosys + nextpnr once, then a
    hit recorded in report.json's synth.cache."""
    cache = tmp_path / "cache"
    reports = []
    for d in ("p1", "p2"):
        out = tmp_path / d
        out.mkdir()
        (out / "counter.v").write_text(COUNTER)
        (out / "manifest.json").write_text(json.dumps({"top": "counter"}))
        ctx = flow.Context(flow.FlowOptions(out=out, quiet=True, synth_cache=cache))
        flow.run_stage(ctx, "synth")
        reports.append(flow.report(ctx)["synth"])
    assert [r["cache"] for r in reports] == ["miss", "hit"]
    assert reports[0]["logic_cells"] == reports[1]["logic_cells"] > 0
    assert (tmp_path / "p2" / "synth" / "counter.asc").stat().st_size > 0
    assert json.loads((tmp_path / "p2" / "report.json").read_text())["synth"]["cache"] == "hit"
