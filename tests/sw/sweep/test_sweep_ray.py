"""``softfloor sweep`` on a local Ray, as a user runs it: a 12-point sweep (1-epoch trainings,
no synthesis) interrupted with Ctrl-C (SIGINT), then killed (SIGKILL), then rerun to the end,
with three deliberately failing points (hardtanh at 1 bit) that are recorded while the others go
on. Needs the [sweep] extra (Ray): under CI a missing Ray FAILS, elsewhere it skips."""
from __future__ import annotations

import csv
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from tests.conftest import require_extra

pytestmark = [pytest.mark.slow, pytest.mark.ray]

SPEC = """
name = "test sweep"
stages = ["data", "train", "export", "golden", "rtl"]

[fixed]
epochs = 1        # the rtl stage (~3 s a point) keeps the sweep running while it is interrupted

[axes]
net = [{weight_bits = 2, act_bits = 2}, {weight_bits = 4, act_bits = 4, surrogate = "ste"},
       {weight_bits = 2, act_bits = 2, activation = "hardtanh"},
       {weight_bits = 1, act_bits = 1, activation = "hardtanh"}]
seed = [0, 1, 2]

[pareto]
mean_over = ["seed"]
"""


def _rows(db) -> dict[str, tuple]:
    if not db.exists():
        return {}
    try:
        with sqlite3.connect(db, timeout=30) as c:
            return {r[0]: r[1:] for r in c.execute(
                "SELECT id, status, run, started, seconds, error FROM points")}
    except sqlite3.OperationalError:     # the table is not created yet
        return {}


def _default_sigint():
    # As from a terminal: a test run started in the background by a non-interactive shell
    # inherits SIGINT ignored, and Python keeps an ignored SIGINT ignored (no Ctrl-C).
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(spec, out, log):
    return subprocess.Popen([sys.executable, "-m", "softfloor", "sweep", str(spec), "--out",
                             str(out), "--cpus", "2"], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, preexec_fn=_default_sigint,
                            env=os.environ | {"PYTHONUNBUFFERED": "1"})


def _wait_rows(p, db, n, timeout=600):
    t0 = time.monotonic()
    while len(_rows(db)) < n:
        assert p.poll() is None, f"the sweep ended early (exit {p.returncode})"
        assert time.monotonic() - t0 < timeout, f"fewer than {n} rows after {timeout} s"
        time.sleep(0.2)


def _reap(p):
    """Whatever the killed driver left of its local Ray (same process group) goes too."""
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_sweep_interrupted_killed_and_resumed(tmp_path):
    require_extra("[sweep]", lambda: __import__("ray"))
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    out = tmp_path / "sweep"
    db = out / "sweep.sqlite"
    logs = [open(tmp_path / f"run{i}.log", "w+") for i in range(3)]
    try:
        # 1. Ctrl-C once two points are recorded: exit 130, whole rows only.
        p = _start(spec, out, logs[0])
        _wait_rows(p, db, 2)
        p.send_signal(signal.SIGINT)
        assert p.wait(timeout=120) == 130
        _reap(p)
        first = _rows(db)
        assert 2 <= len(first) < 12 and {r[1] for r in first.values()} == {1}
        logs[0].seek(0)
        assert "INTERRUPTED: rerun the same command to finish" in logs[0].read()
        # 2. Rerun, and SIGKILL it (no cleanup at all) two rows later.
        p = _start(spec, out, logs[1])
        _wait_rows(p, db, len(first) + 2)
        p.kill()
        p.wait(timeout=60)
        _reap(p)
        second = _rows(db)
        assert all(second[k] == v for k, v in first.items())  # recorded rows untouched
        assert 1 <= sum(r[1] == 2 for r in second.values())
        # 3. Rerun to the end: only the missing points run.
        p = _start(spec, out, logs[2])
        rc = p.wait(timeout=900)
        _reap(p)
        logs[2].seek(0)
        text = logs[2].read()
        assert rc == 1, text                           # 1: some points failed
        final = _rows(db)
    finally:
        for f in logs:
            f.close()
    assert len(final) == 12, text
    assert all(final[k] == v for k, v in second.items()), "a recorded point was redone"
    assert {k for k, v in final.items() if v[1] == 3} == set(final) - set(second)
    assert f"{len(second)} already recorded" in text
    failed = {k: v for k, v in final.items() if v[0] == "failed"}
    assert len(failed) == 3, final
    assert all("act_bits 1 is not supported with activation 'hardtanh'" in v[4]
               for v in failed.values())
    assert "3 of 12 points failed" in text
    # Every point ran in its own directory, named by its id, with its report.json.
    done = [k for k, v in final.items() if v[0] == "done"]
    assert all((out / "points" / k / "report.json").exists() for k in done)
    # The outputs: every point in the CSV, the front of the seed means in markdown and PNG.
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert len(rows) == 12 and {r["status"] for r in rows} == {"done", "failed"}
    assert all(0 <= float(r["accuracy"]) <= 1 and int(r["logic_estimate"]) > 0
               for r in rows if r["status"] == "done")
    md = (out / "pareto.md").read_text()
    assert "points are on the front of accuracy" in md and "| 3 |" in md   # means of 3 seeds
    assert (out / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    # A fourth run has nothing to do (no Ray started) and keeps the failed rows.
    r = subprocess.run([sys.executable, "-m", "softfloor", "sweep", str(spec), "--out", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "12 already recorded" in r.stderr
    assert "3 failed points kept (rerun them with --retry-failed)" in r.stderr
    assert _rows(db) == final
