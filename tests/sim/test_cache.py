"""The simulation build cache is safe under parallel workers (pytest-xdist, two flows)."""
from __future__ import annotations

import multiprocessing as mp
import time

import numpy as np
import pytest

from softfloor import golden
from softfloor.hw.generate import generate
from softfloor.sim import cosim, tools
from tests.conftest import require_tool
from tests.randmodel import random_codes, random_model


def _hold(build_dir, log, k):
    with cosim.build_lock(build_dir):
        t0 = time.monotonic()
        time.sleep(0.3)
        log.put((k, t0, time.monotonic()))


def test_build_lock_is_exclusive_across_processes(tmp_path):
    ctx = mp.get_context("fork")
    log = ctx.Queue()
    procs = [ctx.Process(target=_hold, args=(tmp_path / "d", log, k)) for k in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    spans = sorted(log.get(timeout=5)[1:] for _ in procs)
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert start >= end, spans


def _build_and_run(verilog, manifest, x, want, work, cache, q):
    import os
    os.environ["SOFTFLOOR_SIM_CACHE"] = str(cache)
    try:
        r = cosim.cosimulate(verilog, manifest, x, "icarus", work, expected=want,
                             measure_latency=False)
        q.put(int(r.mismatches))
    except Exception as e:  # reported to the parent
        q.put(repr(e))


@pytest.mark.sim
def test_concurrent_builds_of_one_design(tmp_path):
    """Two processes building and running the same design into one fresh cache both succeed
    (one simulator is enough for the lock; Icarus builds in a second)."""
    require_tool("icarus", lambda: tools.ensure("icarus"))
    rng = np.random.default_rng(9)
    model = random_model(rng, (5, 4, 3))
    gen = generate(model, tmp_path / "rtl")
    x = random_codes(rng, model, 6)
    want = golden.run(model, x)
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_build_and_run,
                         args=(gen.verilog, gen.manifest, x, want, tmp_path / f"w{k}",
                               tmp_path / "cache", q)) for k in range(2)]
    for p in procs:
        p.start()
    results = [q.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(30)
    assert results == [0, 0], results
    stamps = list((tmp_path / "cache").glob("icarus-*/.softfloor-built"))
    assert len(stamps) == 1
