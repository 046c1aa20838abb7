"""The benchmarks' many runs as the points of a sweep (:mod:`softfloor.sweep.engine`).

A section's runs -- ``{key: (kind, kwargs)}`` handed to its ``job((kind, kwargs))`` -- run on a
local Ray with the section's worker count (1: one after another in this process), each recorded
in a results table as it finishes. ``SOFTFLOOR_BENCH_RESUME=1`` keeps the rows an interrupted
benchmark recorded there, so rerunning it redoes only the missing runs.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable


def _point(params: dict, out: str, job: Callable) -> dict:
    params = dict(params)
    return job((params.pop("kind"), params))



def resume() -> bool:
    return os.environ.get("SOFTFLOOR_BENCH_RESUME") == "1"


def run_jobs(jobs: dict, job: Callable, table: Path, workers: int) -> tuple[dict, dict]:
    """``({key: job((kind, kwargs))}, {key: error})`` for every ``{key: (kind, kwargs)}``."""
    from functools import partial

    from softfloor.sweep.engine import run_jobs as engine_run_jobs
    return engine_run_jobs({k: {"kind": kind, **kw} for k, (kind, kw) in jobs.items()},
                           partial(_point, job=job), table, workers=workers, resume=resume())


def all_done(results: dict, errors: dict) -> dict:
    """``results``, or :class:`RuntimeError` naming the first failed run."""
    if errors:
        key, err = next(iter(errors.items()))
        raise RuntimeError(f"{len(errors)} runs failed; the first, {key}: {err}")
    return results
