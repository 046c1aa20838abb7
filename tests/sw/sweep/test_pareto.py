"""The Pareto front of a sweep's rows: dominance, averaging over seeds, the table and the plot."""
from __future__ import annotations

from softfloor.sweep import pareto


def row(i, acc, lc, ips, seed=0, device="up5k", status="done", est=None):
    return {"id": f"p{i}", "label": f"w={i} seed={seed}", "status": status, "accuracy": acc,
            "logic_cells": lc, "logic_estimate": est, "inferences_per_second": ips,
            "device": device, "fmax_mhz": 50.0, "initiation_interval": 10, "dir": f"d{i}",
            "params": {"w": i, "seed": seed, "device": device}}


ROWS = [row(1, 0.90, 1000, 1e6),    # front: cheapest
        row(2, 0.95, 2000, 1e6),    # front: more accurate
        row(3, 0.94, 2500, 5e5),    # dominated by 2 (less accurate, more logic, slower)
        row(4, 0.94, 2500, 2e6),    # front: fastest
        row(5, 0.99, 9000, 1e5),    # front: most accurate
        row(6, 0.99, 9000, 1e5, status="failed"),
        row(7, 0.20, 500, None)]    # no rate: not a front candidate on three objectives


def test_front_of_three_objectives():
    items = pareto.candidates(ROWS)
    assert [it["ids"][0] for it in items] == ["p1", "p2", "p3", "p4", "p5", "p7"]
    objs = pareto.active_objectives(items)
    assert [o[0] for o in objs] == ["accuracy", "logic", "inferences_per_second"]
    mask = pareto.front_mask(items, objs)
    assert [it["ids"][0] for it, m in zip(items, mask) if m] == ["p1", "p2", "p4", "p5"]


def test_estimates_stand_in_for_synthesis_and_missing_objectives_drop():
    rows = [row(1, 0.9, None, None, est=3000), row(2, 0.8, None, None, est=4000),
            row(3, 0.95, None, None, est=5000)]
    items = pareto.candidates(rows)
    objs = pareto.active_objectives(items)
    assert [o[0] for o in objs] == ["accuracy", "logic"]
    assert pareto.front_mask(items, objs) == [True, False, True]
    md = pareto.markdown(items, pareto.front_mask(items, objs), objs, "t")
    assert "| w=3 seed=0 | up5k | 95.00 | 5000 (est.) |" in md


def test_mean_over_seeds():
    rows = [row(1, 0.90, 1000, 1e6, seed=0), row(1, 0.94, 1100, 1e6, seed=1),
            row(2, 0.80, 900, 1e6, seed=0), row(2, 0.82, 950, 1e6, seed=1)]
    for r, i in zip(rows, ("a", "b", "c", "d")):
        r["id"] = i
    items = pareto.candidates(rows, mean_over=("seed",))
    assert len(items) == 2
    a = items[0]
    assert a["n"] == 2 and a["ids"] == ["a", "b"] and a["label"] == "w=1"
    assert abs(a["accuracy"] - 0.92) < 1e-12 and a["logic"] == 1050
    assert abs(a["accuracy_std"] - 0.02) < 1e-12 and "seed" not in a["params"]
    md = pareto.markdown(items, [True, True], pareto.OBJECTIVES, "")
    assert "92.00 ± 2.00" in md


def test_write_makes_table_json_and_png(tmp_path):
    res = pareto.write(ROWS, tmp_path, "test", color_by="w", marker_by="device")
    assert res["front"] == 4 and res["candidates"] == 6
    assert set(res["files"]) == {"pareto.md", "pareto.json", "pareto.png"}
    assert (tmp_path / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    md = (tmp_path / "pareto.md").read_text()
    assert md.index("w=5") < md.index("w=2") < md.index("w=4") < md.index("w=1")  # by accuracy


def test_default_encodings():
    axes = {"bits": [{"weight_bits": 1, "act_bits": 1}, {"weight_bits": 2, "act_bits": 2}],
            "surrogate": ["ste", "sigmoid"], "device": ["up5k", "ecp5-25f"], "seed": [0, 1]}
    assert pareto.default_encodings(axes, ("seed",)) == ("weight_bits", "device")
    assert pareto.default_encodings({"seed": [0, 1], "surrogate": ["a", "b"]}) == \
        ("seed", "surrogate")
