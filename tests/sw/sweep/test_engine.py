"""The sweep's table and engine without Ray (serial): rows stream in, failures are recorded and
the others go on, a rerun skips recorded points, an interrupt leaves whole rows."""
from __future__ import annotations

import csv
import json

import pytest

from softfloor.sweep import engine
from softfloor.sweep.spec import Point, point_id
from softfloor.sweep.table import COLUMNS, ResultsTable

CALLS: list[int] = []


def task(params: dict, out: str, scale: float = 1.0) -> dict:
    """A trivial point: fails on x == 3, interrupts on x == 99."""
    CALLS.append(params["x"])
    if params["x"] == 3:
        raise ValueError("x = 3 is deliberately bad")
    if params["x"] == 99:
        raise KeyboardInterrupt
    return {"accuracy": scale * params["x"] / 10, "logic_estimate": 100 * params["x"],
            "extra": [params["x"]]}


def points(xs) -> list[Point]:
    return [Point(point_id({"x": x}), f"x={x}", {"x": x}) for x in xs]


def test_failed_point_recorded_others_go_on_rerun_skips(tmp_path):
    CALLS.clear()
    with ResultsTable(tmp_path / "t.sqlite") as t:
        s = engine.run(points(range(6)), task, t, tmp_path / "points", serial=True,
                       task_kwargs={"scale": 0.5}, progress=False)
        assert (s.done, s.failed, s.skipped, s.run) == (5, 1, 0, 1)
        rows = {r["label"]: r for r in t.rows()}
        assert rows["x=3"]["status"] == "failed"
        assert rows["x=3"]["error"].startswith("ValueError: x = 3 is deliberately bad")
        assert "Traceback" in rows["x=3"]["error"] or "line" in rows["x=3"]["error"]
        assert rows["x=4"]["accuracy"] == 0.2 and rows["x=4"]["logic_estimate"] == 400
        assert rows["x=4"]["result"] == {"extra": [4]}       # non-column keys: JSON
        assert rows["x=4"]["params"] == {"x": 4} and rows["x=4"]["run"] == 1
        assert rows["x=4"]["dir"].endswith(f"points/{point_id({'x': 4})}")
        assert CALLS == [0, 1, 2, 3, 4, 5]
        # A rerun (two more points in the spec) does only the new ones; failed ones are kept...
        s = engine.run(points(range(8)), task, t, tmp_path / "points", serial=True,
                       progress=False)
        assert (s.done, s.failed, s.skipped, s.failed_kept) == (2, 0, 6, 1)
        assert "rerun them with --retry-failed" in str(s)
        assert CALLS[6:] == [6, 7]
        # ...unless asked to retry them.
        s = engine.run(points(range(8)), task, t, tmp_path / "points", serial=True,
                       retry_failed=True, progress=False)
        assert (s.failed, s.skipped, CALLS[8:]) == (1, 7, [3])
        assert {r["label"]: r["run"] for r in t.rows()}["x=3"] == 3


def test_interrupt_leaves_whole_rows_and_rerun_finishes(tmp_path):
    CALLS.clear()
    xs = [0, 1, 99, 2]
    with ResultsTable(tmp_path / "t.sqlite") as t:
        s = engine.run(points(xs), task, t, tmp_path / "points", serial=True, progress=False)
        assert s.interrupted and s.done == 2 and "INTERRUPTED" in str(s)
        assert [r["label"] for r in t.rows()] == ["x=0", "x=1"]
        assert all(r["status"] == "done" and r["seconds"] is not None for r in t.rows())
    xs[2] = 5
    with ResultsTable(tmp_path / "t.sqlite") as t:
        s = engine.run(points(xs), task, t, tmp_path / "points", serial=True, progress=False)
        assert not s.interrupted and (s.done, s.skipped) == (2, 2)
        assert CALLS == [0, 1, 99, 5, 2]


def test_csv_has_one_column_per_parameter(tmp_path):
    with ResultsTable(tmp_path / "t.sqlite") as t:
        engine.run(points(range(4)), task, t, tmp_path / "points", serial=True, progress=False)
        t.to_csv(tmp_path / "r.csv")
    rows = list(csv.DictReader(open(tmp_path / "r.csv")))
    assert len(rows) == 4 and list(rows[0])[:4] == ["id", "label", "status", "x"]
    assert {r["x"]: r["status"] for r in rows} == {"0": "done", "1": "done", "2": "done",
                                                   "3": "failed"}
    assert json.loads(rows[1]["result"]) == {"extra": [1]}
    assert set(rows[0]) >= {c[0] for c in COLUMNS} - {"params"}


def test_table_meta_and_column_docs(tmp_path):
    with ResultsTable(tmp_path / "t.sqlite") as t:
        assert t.start_run() == 1 and t.start_run() == 2
        t.set_meta(spec="a = 1")
        assert t.get_meta("spec") == "a = 1"
    assert all(len(c) == 3 and c[2] for c in COLUMNS)


def test_missing_ray_is_a_clear_error(monkeypatch, tmp_path):
    import builtins
    real = builtins.__import__

    def no_ray(name, *a, **k):
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real(name, *a, **k)
    monkeypatch.setattr(builtins, "__import__", no_ray)
    with ResultsTable(tmp_path / "t.sqlite") as t, pytest.raises(engine.RayMissing,
                                                                 match=r"softfloor\[sweep\]"):
        engine.run(points([0]), task, t, tmp_path / "points", progress=False)
