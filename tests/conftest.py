"""Shared fixtures. Under CI (CI=true) a missing simulator or tool FAILS; elsewhere it skips loudly."""
from __future__ import annotations

import os
import warnings

import pytest

from softfloor.sim import tools


def _missing(name: str, e: Exception):
    """A required tool or extra is missing: FAIL under CI, skip loudly elsewhere."""
    if tools.in_ci():
        pytest.fail(f"CI=true and {name} is missing: {e}")
    warnings.warn(f"SKIPPING: {name} missing: {e}")
    pytest.skip(f"{name} missing (outside CI): {e}")


def require_tool(name: str, check) -> None:
    try:
        check()
    except tools.ToolMissing as e:
        _missing(name, e)


def require_extra(extra: str, load):
    """``load()`` (imports of an optional extra, e.g. ``[qonnx]``); its result, or FAIL under CI
    and skip elsewhere when an import is missing."""
    try:
        return load()
    except ImportError as e:
        _missing(f"the {extra} extra", e)


@pytest.fixture(params=list(tools.SIMULATORS))
def simulator(request) -> str:
    """Each simulator in turn; missing ones fail under CI and skip loudly elsewhere."""
    require_tool(request.param, lambda: tools.ensure(request.param))
    return request.param


@pytest.fixture(scope="session", autouse=True)
def _sim_cache(tmp_path_factory):
    """One Verilator/Icarus build cache for the whole run (and across runs: build/sim_cache)."""
    os.environ.setdefault("SOFTFLOOR_SIM_CACHE",
                          os.path.join(os.path.dirname(__file__), "..", "build", "sim_cache"))
    # Small, short test designs: Verilator compile time dominates, so compile the C++ at -O0.
    os.environ.setdefault("SOFTFLOOR_VERILATOR_OPT", "-O0")
    yield
