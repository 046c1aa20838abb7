"""Sweep overhead: N trivial flows through ``softfloor sweep`` (a local Ray) against the same flows
run one after another in one process.

Each point is the flow's data stage alone (the digits split, quantized: well under a second),
one point per seed, so the difference is what the sweep adds: Ray's start-up and shut-down, a
task per point, a row per point in the SQLite table, the Pareto and CSV outputs. Both sides are
timed as whole commands (a fresh Python each, imports included). Target: under 1 s per point
(``overhead_per_point_s``), with 1 CPU (the sweep cannot win by running points side by side)
and with 2.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

POINTS = (12, 48)
QUICK_POINTS = (12,)
TARGET_S = 1.0

SEQUENTIAL = """
import sys
from softfloor.sweep.flowpoint import run_flow_point
out, n = sys.argv[1], int(sys.argv[2])
for seed in range(n):
    run_flow_point({"seed": seed}, f"{out}/{seed}", ("data",))
"""


def _spec(n: int) -> str:
    return f'name = "trivial"\nstages = ["data"]\n[axes]\nseed = {list(range(n))}\n'


def _timed(cmd: list[str]) -> float:
    t0 = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed (exit {p.returncode}): "
                           f"{p.stderr.strip().splitlines()[-1:]}")
    return time.monotonic() - t0


def run(out_dir: Path, quick: bool) -> dict:
    out = Path(out_dir) / "sweep"
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in QUICK_POINTS if quick else POINTS:
        seq = _timed([sys.executable, "-c", SEQUENTIAL, str(out / f"seq{n}"), str(n)])
        spec = out / f"trivial{n}.toml"
        spec.write_text(_spec(n))
        for cpus in (1, 2):
            d = out / f"sweep{n}-cpus{cpus}"
            shutil.rmtree(d, ignore_errors=True)
            sw = _timed([sys.executable, "-m", "softfloor", "sweep", str(spec), "--out", str(d),
                         "--cpus", str(cpus), "--quiet"])
            rerun = _timed([sys.executable, "-m", "softfloor", "sweep", str(spec), "--out",
                            str(d), "--quiet"])
            over = (sw - seq) / n
            rows.append({"points": n, "cpus": cpus, "sequential_s": round(seq, 2),
                         "sweep_s": round(sw, 2), "overhead_per_point_s": round(over, 3),
                         "target_met": over < TARGET_S, "rerun_all_recorded_s": round(rerun, 2)})
    notes = [f"trivial point: the flow's data stage for one seed; overhead per point = (sweep - "
             f"sequential) / points, target < {TARGET_S} s; rerun_all_recorded_s: the same "
             "sweep again, every point already recorded (no Ray started, outputs rewritten)"]
    return {"rows": rows, "notes": notes}
