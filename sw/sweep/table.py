"""The results table of a sweep: one SQLite file, one row per finished point.

``DIR/sweep.sqlite`` holds

``points``
    one row per finished point (``status`` ``done`` or ``failed``), written in one transaction
    when the point finishes, so an interrupted sweep (Ctrl-C, a killed process) leaves only
    whole rows; see :data:`COLUMNS` for the columns.
``meta``
    ``key``/``value`` text: the spec, the number of runs, the softfloor version.

Read it with any SQLite client (``sqlite3 DIR/sweep.sqlite 'select label, accuracy,
logic_cells from points'``); ``params`` and ``result`` are JSON (``json_extract``).
"""
from __future__ import annotations

import csv
import json
import math
import sqlite3
from pathlib import Path

#: (column, SQLite type, meaning). The metric columns are filled from each point's report.json
#: (:mod:`softfloor.sweep.flowpoint`); a generic task's other results go to ``result``.
COLUMNS = (
    ("id", "TEXT PRIMARY KEY", "stable hash of the point's parameters and stages"),
    ("label", "TEXT", "the point's axis values, e.g. 'bits=weight_bits=4,act_bits=4 seed=0'"),
    ("status", "TEXT", "done or failed"),
    ("params", "TEXT", "JSON: the FlowOptions fields (or task parameters) the point sets"),
    ("stages", "TEXT", "the stages run, comma-separated"),
    ("dir", "TEXT", "the point's directory"),
    ("run", "INTEGER", "which invocation of the sweep recorded the row (1, 2, ...)"),
    ("node", "TEXT", "host name of the worker that ran it"),
    ("started", "TEXT", "UTC start time (ISO 8601)"),
    ("seconds", "REAL", "wall time of the point"),
    ("error", "TEXT", "failed points: the error (type: message) and the traceback's tail"),
    ("accuracy", "REAL", "the point's accuracy: RTL if simulated, else golden, else quantized"),
    ("accuracy_float", "REAL", "report.json accuracy.float"),
    ("accuracy_quantized", "REAL", "report.json accuracy.quantized"),
    ("accuracy_golden", "REAL", "report.json accuracy.golden"),
    ("accuracy_rtl", "REAL", "report.json accuracy.rtl"),
    ("mismatches", "INTEGER", "sum of report.json bit_exact.*.mismatches (NULL: not simulated)"),
    ("device", "TEXT", "report.json synth.device"),
    ("logic_cells", "INTEGER", "report.json synth.logic_cells (iCE40 LCs, ECP5 LUT4s)"),
    ("logic_estimate", "INTEGER", "report.json hardware.plan.estimate.lc (the planner's)"),
    ("ff", "INTEGER", "report.json synth.ff"),
    ("dsp", "INTEGER", "report.json synth.dsp"),
    ("ram_blocks", "INTEGER", "report.json synth.ram_blocks"),
    ("fmax_mhz", "REAL", "report.json synth.fmax_mhz"),
    ("initiation_interval", "INTEGER", "report.json hardware.initiation_interval (cycles)"),
    ("cycles_per_inference", "INTEGER", "report.json hardware.cycles_per_inference"),
    ("mac_units", "INTEGER", "report.json hardware.mac_units"),
    ("inferences_per_second", "REAL", "report.json hardware.inferences_per_second"),
    ("synth_cache", "TEXT", "report.json synth.cache: hit or miss (NULL: no synthesis)"),
    ("result", "TEXT", "JSON: anything else the point returned (timings; a task's results)"),
)
NAMES = tuple(c[0] for c in COLUMNS)
METRICS = NAMES[NAMES.index("accuracy"):NAMES.index("result")]


def check_table(path: str | Path) -> None:
    """An existing ``sweep.sqlite`` is a sweep's results table (read-only; nothing is created):
    ValueError naming it otherwise."""
    path = Path(path)
    if not path.exists():
        return
    what = (f"{path} is not a sweep's results table ({{}}): give another --out, or remove it "
            f"to start the sweep again")
    if not path.is_file():
        raise ValueError(what.format("not a file"))
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE "
                                               "type = 'table'")}
            cols = {r[1] for r in db.execute("PRAGMA table_info(points)")}
            if "points" in tables:
                db.execute("SELECT id, status FROM points").fetchall()
        finally:
            db.close()
    except sqlite3.Error as e:
        raise ValueError(what.format(f"SQLite says: {e}")) from None
    if tables and ("points" not in tables or not {"id", "status"} <= cols):
        raise ValueError(what.format("no points table with id and status"))


class ResultsTable:
    """The SQLite table of a sweep's finished points (one writer: the sweep's driver)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=30)
        cols = ", ".join(f"{n} {t}" for n, t, _ in COLUMNS)
        with self.db:
            self.db.execute(f"CREATE TABLE IF NOT EXISTS points ({cols})")
            self.db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            have = {r[1] for r in self.db.execute("PRAGMA table_info(points)")}
            for n, t, _ in COLUMNS:        # a table written by an older softfloor: add columns
                if n not in have:
                    self.db.execute(f"ALTER TABLE points ADD COLUMN {n} {t.split()[0]}")

    def close(self) -> None:
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- meta
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        r = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return r[0] if r else default

    def set_meta(self, **items) -> None:
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                [(k, str(v)) for k, v in items.items()])

    def start_run(self) -> int:
        """Count one more invocation of the sweep; returns its number (1, 2, ...)."""
        n = int(self.get_meta("runs", "0")) + 1
        self.set_meta(runs=n)
        return n

    # -- rows
    def status(self) -> dict[str, str]:
        """``{id: status}`` of every recorded point."""
        return dict(self.db.execute("SELECT id, status FROM points"))

    def record(self, row: dict) -> None:
        """Insert or replace one point's row, atomically (unknown keys go to ``result``)."""
        row = dict(row)
        extra = {k: row.pop(k) for k in list(row) if k not in NAMES}
        if extra:
            result = json.loads(row.get("result") or "{}") | extra
            row["result"] = json.dumps(result, default=str)
        for k in ("params", "result"):
            if k in row and not isinstance(row[k], str) and row[k] is not None:
                row[k] = json.dumps(row[k], sort_keys=True, default=str)
        keys = list(row)
        with self.db:
            self.db.execute(f"INSERT OR REPLACE INTO points ({', '.join(keys)}) VALUES "
                            f"({', '.join('?' * len(keys))})", [row[k] for k in keys])

    def clear(self) -> None:
        with self.db:
            self.db.execute("DELETE FROM points")

    def rows(self, status: str | None = None) -> list[dict]:
        """Every row as a dict, ``params`` and ``result`` decoded, in insertion order."""
        cur = self.db.execute("SELECT * FROM points" + (" WHERE status = ?" if status else "")
                              + " ORDER BY rowid", (status,) if status else ())
        names = [d[0] for d in cur.description]
        out = []
        for r in cur:
            d = dict(zip(names, r))
            for k in ("params", "result"):
                d[k] = json.loads(d[k]) if d.get(k) else {}
            out.append(d)
        return out

    def to_csv(self, path: str | Path) -> Path:
        """Every row as CSV (:func:`write_csv`)."""
        return write_csv(self.rows(), path)


def write_csv(rows: list[dict], path: str | Path) -> Path:
    """Rows (as :meth:`ResultsTable.rows` gives them) as CSV: one column per parameter (the
    points' axes and fixed fields), then the bookkeeping and metric columns; ``result`` stays
    JSON."""
    params = list(dict.fromkeys(k for r in rows for k in r["params"]))
    cols = ["id", "label", "status"] + params + \
        [n for n in NAMES if n not in ("id", "label", "status", "params") and n not in params]
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in rows:
            vals = {**{k: v for k, v in r.items() if k != "params"}, **r["params"]}
            vals["result"] = json.dumps(r["result"], sort_keys=True) if r["result"] else ""
            w.writerow([_csv(vals.get(c)) for c in cols])
    tmp.replace(path)
    return path


def _csv(v):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, (list, tuple)):
        return " ".join(map(str, v))
    return v
