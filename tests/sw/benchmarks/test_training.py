"""The ``training`` benchmark section at a tiny size (its whole code path, in this process)."""
from __future__ import annotations

import json
import math

from softfloor.benchmarks import training


def test_section_tiny_run(tmp_path, monkeypatch):
    from softfloor.benchmarks.__main__ import main
    monkeypatch.setattr(training, "CONFIGS", tuple(c for c in training.CONFIGS
                                                   if c[0] in ("w2a2", "w1a1+BN")))
    monkeypatch.setattr(training, "SURROGATE_NAMES", ("ste", "sigmoid"))
    monkeypatch.setattr(training, "WITH_CNN", False)
    monkeypatch.setattr(training, "WORKERS", 1)
    assert main(["training", "--quick", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "training.json").read_text())
    # the figures: drawn with the run, and again from its JSON alone (labelled, 1000 px wide)
    assert set(res["curves"]) == {"w2a2", "w1a1+BN"} and res["run"]["seeds"] == [0]
    assert len(res["curves"]["w2a2"]["ste"]["0"]) == 4  # quick: 4 epochs
    from softfloor.benchmarks import training_plots
    assert training_plots.main([str(tmp_path / "training.json"), "--out",
                                str(tmp_path / "again")]) == 0
    for d in (tmp_path, tmp_path / "again"):
        for name in ("surrogates.png", "curves.png", "accuracy_vs_bits.png"):
            png = (d / name).read_bytes()
            assert int.from_bytes(png[16:20], "big") == 1000, (d, name)
    rows = {(r["surrogate"], r["config"]): r for r in res["rows"]}
    assert set(rows) == {("float", "float")} | {(s, c) for s in ("ste", "sigmoid")
                                                for c in ("w2a2", "w1a1+BN")}
    for r in rows.values():
        assert 0 < r["acc_mean"] <= 100 and r["epoch_time_vs_float"] > 0, r
    tables = res["tables"]
    assert {r["surrogate"] for r in tables["batchnorm_flipped"]} == {"ste", "sigmoid"}
    assert set(tables["batchnorm_flipped"][0]) == {"surrogate", "w2a2+BN", "w1a1"}
    times = {r["surrogate"]: r for r in tables["epoch time vs float MLP"]}
    assert set(times) == {"ste", "sigmoid", "ste (BatchNorm switched)",
                          "sigmoid (BatchNorm switched)"}
    assert set(times["ste (BatchNorm switched)"]) == {"surrogate", "w2a2+BN", "w1a1"}
    assert all(v > 0 for r in times.values() for k, v in r.items() if k != "surrogate")
    var = tables["variants (free scales, hardtanh)"]
    assert [(r["config"], r["surrogate"]) for r in var] == [("w2a2", "sigmoid"), ("w2a2", "ste")]
    assert all(set(r) >= {"po2 relu (main table)", "free scales", "hardtanh"} for r in var)
    assert [v["config"] for v in tables["smooth_vs_ste"]] == ["w2a2", "w1a1+BN"]
    assert "every QAT run bit-exact to its integer model: True" in res["notes"][0]
    assert "| surrogate | config |" in (tmp_path / "training.md").read_text()


def test_diverged_runs_are_reported_not_averaged():
    """A run that cannot be an integer model (NaN accuracy) shows as diverged in its cell, is
    left out of the mean, and ranks last."""
    from softfloor.benchmarks import training
    nan = float("nan")
    assert training._cell([0.9, 0.92, 0.94]) == "92.00 ± 1.63"
    assert training._cell([0.9, nan, 0.94]) == "92.00 ± 2.00 (1 of 3 diverged)"
    assert training._cell([nan, nan, nan]) == "diverged (3 of 3)"
    m, s = training._stats([nan, nan])
    assert math.isnan(m) and math.isnan(s) and training._pct(m) is None
    assert training._rank(m) < training._rank(0.0)
