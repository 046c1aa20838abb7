"""``softfloor sweep SPEC.toml --out DIR [--address ADDRESS]``: the command line of the sweep.

Writes into ``DIR``: ``sweep.sqlite`` (the results table, streamed as points finish),
``points/<id>/`` (one flow per point), ``synth-cache/`` (synthesis results by Verilog hash and
device), and at the end ``results.csv`` (every point), ``pareto.md``, ``pareto.png`` and
``pareto.json`` (the front).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", type=Path, metavar="SPEC.toml",
                   help="the sweep spec: axes over the flow's options, the stages (docs/sweep.md)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR",
                   help="sweep directory: results table, one directory per point, outputs "
                        "(a rerun with the same DIR skips the recorded points)")
    p.add_argument("--address", default=None, metavar="ADDRESS",
                   help="Ray cluster to run on (ray://HEAD:10001, HEAD:6379 or auto; default: "
                        "$RAY_ADDRESS, else a local Ray on this machine's CPUs)")
    p.add_argument("--cpus", type=int, default=None, metavar="N",
                   help="CPUs of the local Ray (default: all this process may use)")
    p.add_argument("--retry-failed", action="store_true",
                   help="rerun the points recorded as failed (default: keep their rows)")
    p.add_argument("--synth-cache", type=Path, default=None, metavar="CACHE_DIR",
                   help="synthesis cache directory (default DIR/synth-cache; share one across "
                        "sweeps to place and route a design once)")
    p.add_argument("--serial", action="store_true",
                   help="no Ray: run the points one after another in this process")
    p.add_argument("--dry-run", action="store_true", help="list the points and exit")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def main(args: argparse.Namespace) -> int:
    from softfloor import __version__
    from softfloor.sweep import engine
    from softfloor.sweep.flowpoint import run_flow_point
    from softfloor.sweep.spec import load_spec
    from softfloor.sweep.table import ResultsTable

    spec = load_spec(args.spec)
    points = spec.points()
    if not points:
        raise ValueError(f"{args.spec}: every point is excluded; nothing to run")
    if args.dry_run:
        for p in points:
            print(f"{p.id}  {p.label}")
        print(f"{len(points)} points, stages {', '.join(spec.stages)}")
        return 0
    out = args.out.resolve()
    cache = (args.synth_cache or out / "synth-cache").resolve()
    check_before_writing(args, out, cache)
    out.mkdir(parents=True, exist_ok=True)
    address = args.address or os.environ.get("RAY_ADDRESS") or None
    with ResultsTable(out / "sweep.sqlite") as table:
        table.set_meta(name=spec.name, spec=spec.text, softfloor=__version__)
        todo = engine.todo_points(points, table, args.retry_failed)
        where = ("in this process" if args.serial else f"on the Ray cluster at {address}"
                 if address else f"on a local Ray with {args.cpus or engine.local_cpus()} CPUs")
        if not args.quiet:
            print(f"sweep {spec.name}: {len(points)} points, {len(points) - len(todo)} already "
                  f"recorded, {len(todo)} to run {where}; table {out / 'sweep.sqlite'}",
                  file=sys.stderr, flush=True)
        summary = engine.run(points, run_flow_point, table, out / "points",
                             task_kwargs={"stages": list(spec.stages),
                                          "synth_cache": str(cache) if spec.synthesizes
                                          else None},
                             address=address, cpus=args.cpus, serial=args.serial,
                             retry_failed=args.retry_failed, progress=not args.quiet)
        print(f"sweep {spec.name}: {summary}", file=sys.stderr, flush=True)
        if summary.interrupted:
            return 130
        ids = {p.id for p in points}
        rows = [r for r in table.rows() if r["id"] in ids]
    write_outputs(spec, rows, out, quiet=args.quiet)
    failed = [r for r in rows if r["status"] == "failed"]
    if failed:
        print(f"softfloor: error: {len(failed)} of {len(rows)} points failed (first: "
              f"{failed[0]['label']}: {failed[0]['error'].splitlines()[0]}); their errors are in "
              f"{out / 'results.csv'} (column error)", file=sys.stderr)
        return 1
    return 0


def check_before_writing(args: argparse.Namespace, out: Path, cache: Path) -> None:
    """Everything of the command line a sweep checks before it writes or starts Ray: ``--cpus``,
    the directories (not files), the results table of a rerun (a sweep's SQLite table), Ray
    installed (unless ``--serial``). ValueError naming the option and what to do."""
    from softfloor.sweep import engine
    from softfloor.sweep.table import check_table
    if args.cpus is not None and args.cpus < 1:
        raise ValueError(f"--cpus {args.cpus}: give at least 1")
    for opt, d in (("--out", out), ("--synth-cache", cache)):
        for q in (d, *d.parents):
            if q.exists() and not q.is_dir():
                raise ValueError(f"{opt} {d}: {q} is a file, not a directory; give a directory")
    check_table(out / "sweep.sqlite")
    if not args.serial:
        engine.import_ray()


def write_outputs(spec, rows: list[dict], out: Path, quiet: bool = False) -> dict:
    """``results.csv`` and the Pareto files of a sweep's rows."""
    from softfloor.sweep import pareto
    from softfloor.sweep.table import write_csv
    write_csv(rows, out / "results.csv")
    color, marker = pareto.default_encodings(spec.axes, spec.mean_over)
    res = pareto.write(rows, out, spec.name, spec.mean_over, color, marker)
    if not quiet:
        print((out / "pareto.md").read_text())
        print(f"wrote {out / 'results.csv'}, " + ", ".join(str(out / f) for f in res["files"]))
    return res
