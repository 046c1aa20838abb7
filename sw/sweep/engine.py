"""Run a sweep's points on Ray (a local Ray, or a cluster) and stream their rows into the table.

:func:`run` submits every point not yet recorded as one Ray task (one CPU each), records each
row in the :class:`~softfloor.sweep.table.ResultsTable` as soon as its point finishes, and draws
a progress bar. A point whose task raises is recorded as ``failed`` with its error, and the
others go on. Ctrl-C (or SIGTERM) cancels the running points and shuts Ray down; every row
already written is whole (one transaction per row), so rerunning the same command finishes the
sweep without redoing the recorded points.

The task is any importable function ``task(params: dict, out: str, **task_kwargs) -> dict``
(:func:`softfloor.sweep.flowpoint.run_flow_point` for ``softfloor sweep``; the benchmarks run
their own); the keys of its result that are table columns fill them, the rest go to ``result``.
"""
from __future__ import annotations

import os
import signal
import socket
import sys
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from softfloor.sweep.spec import Point
from softfloor.sweep.table import ResultsTable

#: Ray's object store on a local Ray (bytes): rows are small; do not reserve GBs of /dev/shm.
LOCAL_OBJECT_STORE = 128 * 1024 ** 2
ERROR_CHARS = 4000
#: Seconds the running points of an interrupted sweep get to stop their tools.
CANCEL_GRACE_S = 5.0


class RayMissing(RuntimeError):
    """Ray is not installed."""


@dataclass
class Summary:
    """What one invocation of :func:`run` did."""
    total: int
    skipped: int = 0
    done: int = 0
    failed: int = 0
    interrupted: bool = False
    seconds: float = 0.0
    run: int = 0
    failed_kept: int = 0
    errors: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        s = (f"{self.done} done, {self.failed} failed, {self.skipped} already recorded "
             f"of {self.total} points in {self.seconds:.1f} s")
        if self.failed_kept:
            s += f"; {self.failed_kept} failed points kept (rerun them with --retry-failed)"
        if self.interrupted:
            s += "; INTERRUPTED: rerun the same command to finish"
        return s


def import_ray():
    try:
        import ray
    except ImportError:
        raise RayMissing("softfloor sweep needs Ray: pip install 'softfloor[sweep]' (or "
                         "pip install ray) in this environment") from None
    return ray


def local_cpus() -> int:
    """The CPUs this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def execute(task: Callable, params: dict, out: str, task_kwargs: dict) -> dict:
    """Run one point (on a worker): its row's bookkeeping plus the task's result, or the error."""
    t0 = time.monotonic()
    row = {"node": socket.gethostname(),
           "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    try:
        res = task(params, out, **task_kwargs)
        row.update(res or {})
        row["status"] = "done"
    except Exception as e:
        row["status"] = "failed"
        row["error"] = _error_text(e)
    row["seconds"] = round(time.monotonic() - t0, 2)
    return row


def _error_text(e: BaseException) -> str:
    first = f"{type(e).__name__}: {e}".strip()
    tb = "".join(traceback.format_exception(e)[-6:])
    return (first + "\n" + tb)[:ERROR_CHARS]


class Progress:
    """A one-line progress bar on a terminal; one line per finished point otherwise."""

    def __init__(self, total: int, skipped: int, stream=None, enabled: bool = True):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.total, self.skipped = total, skipped
        self.done = self.failed = self.running = 0
        self.t0 = time.monotonic()
        self.enabled = enabled
        self._drawn = False

    def finished(self, label: str, row: dict) -> None:
        if row["status"] == "done":
            self.done += 1
            acc = row.get("accuracy")
            lc = row.get("logic_cells") or row.get("logic_estimate")
            what = " ".join(x for x in (f"acc {100 * acc:.2f}%" if acc is not None else "",
                                        f"{lc} LC" if lc else "",
                                        f"{row['inferences_per_second']:.0f}/s"
                                        if row.get("inferences_per_second") else "") if x) \
                or "done"
        else:
            self.failed += 1
            what = "FAILED " + row.get("error", "").splitlines()[0][:160]
        self._line(f"[sweep] {self.skipped + self.done + self.failed}/{self.total} "
                   f"{label}: {what} ({row.get('seconds', 0):.1f} s)")

    def tick(self, running: int) -> None:
        self.running = running
        if self.tty and self.enabled:
            self._bar()

    def _line(self, text: str) -> None:
        if not self.enabled:
            return
        if self._drawn:
            self.stream.write("\r\033[K")
        self.stream.write(text + "\n")
        if self.tty:
            self._bar()
        self.stream.flush()

    def _bar(self) -> None:
        n = self.skipped + self.done + self.failed
        width = 30
        fill = int(width * n / self.total) if self.total else width
        el = time.monotonic() - self.t0
        ran = self.done + self.failed
        todo = self.total - n
        eta = f", ~{_dur(el / ran * todo)} left" if ran and todo else ""
        self.stream.write(f"\r\033[K[sweep] [{'#' * fill}{'.' * (width - fill)}] {n}/{self.total}"
                          f" ({self.failed} failed, {self.running} running) {_dur(el)}{eta}")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn and self.enabled:
            self.running = 0
            self._bar()
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


def _dur(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else \
        f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def todo_points(points: list[Point], table: ResultsTable, retry_failed: bool) -> list[Point]:
    """The points a run must still do: not recorded, or failed when ``retry_failed``."""
    status = table.status()
    return [p for p in points if status.get(p.id) is None
            or (retry_failed and status[p.id] == "failed")]


def run(points: list[Point], task: Callable, table: ResultsTable, points_dir: str | Path, *,
        task_kwargs: dict | None = None, address: str | None = None, cpus: int | None = None,
        serial: bool = False, retry_failed: bool = False, progress: bool = True,
        runtime_env: dict | None = None) -> Summary:
    """Run ``task`` for every point of ``points`` not yet in ``table``; see the module docstring.

    Parameters
    ----------
    points_dir
        Each point runs in ``points_dir/<point id>`` (on a cluster: a path every node sees).
    address
        A Ray cluster (``ray://host:10001``, ``host:6379`` or ``auto``); None: a local Ray with
        ``cpus`` CPUs (default: this machine's).
    serial
        Run the points one after another in this process (no Ray).
    """
    task_kwargs = task_kwargs or {}
    points_dir = Path(points_dir).resolve()
    status = table.status()
    todo = todo_points(points, table, retry_failed)
    todo_ids = {p.id for p in todo}
    summary = Summary(total=len(points), skipped=len(points) - len(todo),
                      failed_kept=sum(1 for p in points if status.get(p.id) == "failed"
                                      and p.id not in todo_ids))
    summary.run = table.start_run()
    bar = Progress(len(points), summary.skipped, enabled=progress)
    t0 = time.monotonic()

    def record(p: Point, row: dict) -> None:
        row = row | {"id": p.id, "label": p.label, "params": p.params,
                     "stages": ",".join(p.stages), "dir": str(points_dir / p.id),
                     "run": summary.run}
        table.record(row)
        if row["status"] == "done":
            summary.done += 1
        else:
            summary.failed += 1
            summary.errors.append(f"{p.label}: {row.get('error', '').splitlines()[0]}")
        bar.finished(p.label, row)

    old_term = signal.getsignal(signal.SIGTERM)
    if _main_thread():
        signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        if not todo:
            pass
        elif serial:
            for p in todo:
                bar.tick(1)
                record(p, execute(task, p.params, str(points_dir / p.id), task_kwargs))
        else:
            _run_ray(todo, task, task_kwargs, points_dir, record, bar, address, cpus,
                     runtime_env)
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        if _main_thread():
            signal.signal(signal.SIGTERM, old_term)
        bar.close()
        summary.seconds = round(time.monotonic() - t0, 2)
    return summary


def _main_thread() -> bool:
    import threading
    return threading.current_thread() is threading.main_thread()


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _run_ray(todo, task, task_kwargs, points_dir, record, bar, address, cpus, runtime_env):
    if not address and "ray" not in sys.modules:
        # A private local Ray on the loopback address (Ray's single-machine mode, as on macOS)
        # rather than on this machine's network address: nothing else has to reach it.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray = import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        kw = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR",
              "runtime_env": runtime_env}
        if address:
            kw["address"] = address
        else:
            kw.update(address="local", num_cpus=cpus or local_cpus(),
                      object_store_memory=LOCAL_OBJECT_STORE)
        try:
            ray.init(**kw)
        except ConnectionError as e:
            raise RuntimeError(f"cannot reach the Ray cluster at {address}: {e}") from None
    remote = ray.remote(execute).options(num_cpus=1, max_retries=0)
    refs = {}
    try:
        for p in todo:
            refs[remote.remote(task, p.params, str(points_dir / p.id), task_kwargs)] = p
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1, timeout=1.0)
            for ref in ready:
                p = refs.pop(ref)
                try:
                    row = ray.get(ref)
                except Exception as e:       # the worker died (killed, out of memory, ...)
                    row = {"status": "failed", "error": _error_text(e)}
                record(p, row)
            bar.tick(min(len(refs), int(ray.cluster_resources().get("CPU", 1))))
    finally:
        # Interrupted: a KeyboardInterrupt in each running point first (subprocess.run kills the
        # tool it waits for: Yosys, nextpnr, a simulator), then the workers themselves.
        for force in (False, True):
            for ref in refs:
                try:
                    ray.cancel(ref, force=force)
                except Exception:  # already finished or gone: nothing to cancel
                    pass
            if refs and not force:
                ray.wait(list(refs), num_returns=len(refs), timeout=CANCEL_GRACE_S)
        if started_here:
            ray.shutdown()


def _job(params: dict, out: str, task: Callable) -> dict:
    return {"job": task(params, out)}


def run_jobs(jobs: dict, task: Callable, table_path: str | Path, *, workers: int = 1,
             resume: bool = False, progress: bool = True) -> tuple[dict, dict]:
    """Run ``task(params, out)`` for every ``{key: params}`` of ``jobs`` as the points of a
    sweep: on a local Ray with ``workers`` CPUs (1: one after another in this process), each
    result recorded in the table at ``table_path`` as it finishes (the benchmarks' runs).

    Returns ``({key: result}, {key: error})``. ``resume``: keep the rows an interrupted run
    recorded (else the table starts empty). Ctrl-C raises :class:`KeyboardInterrupt` after the
    table is left consistent."""
    from softfloor.sweep.spec import point_id
    table_path = Path(table_path)
    pts = {key: Point(point_id(params), " ".join(map(str, key)) if isinstance(key, tuple)
                      else str(key), params) for key, params in jobs.items()}
    unique = list({p.id: p for p in pts.values()}.values())
    with ResultsTable(table_path) as table:
        if not resume:
            table.clear()
        s = run(unique, _job, table, table_path.with_suffix(".points"),
                task_kwargs={"task": task}, cpus=workers, serial=workers == 1,
                progress=progress)
        if s.interrupted:
            raise KeyboardInterrupt
        rows = {r["id"]: r for r in table.rows()}
    results, errors = {}, {}
    for key, p in pts.items():
        r = rows[p.id]
        if r["status"] == "done":
            results[key] = r["result"]["job"]
        else:
            errors[key] = r["error"].splitlines()[0]
    return results, errors
