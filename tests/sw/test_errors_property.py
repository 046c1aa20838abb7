"""Property: random argument vectors and corrupted artifacts never give a traceback, and never
an exit 0 with a result that disagrees with its inputs.

Two finished flow directories of tiny models (A and B, Icarus, no synthesis) are made once. Each
example copies A, corrupts some of its files (truncated, a key renamed or dropped, a dtype
changed, garbage, deleted, swapped with B's -- alone or together with B's stage records), runs one
subcommand in-process with random arguments, and checks:

* a failure is one error line, a non-zero exit that is not an internal error, no traceback,
  and the directory is left exactly as it was;
* a success agrees with the files: ``golden`` wrote the golden model's outputs on the current
  inputs; ``report`` names the current files' hashes and its bit-exact counts and accuracy are
  those recomputed from the current model, inputs and vectors.

Commands that would start minutes of work (rtl, sim, synth, board, run, flow) are only drawn
with a corruption or argument that must stop them before it. ``make test`` runs 500 examples
(derandomized), ``make soak`` 5,000 from a fresh seed.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from softfloor import golden, intmodel, provenance
from softfloor.sim import tools
from tests.conftest import require_tool
from tests.sw.errorcases import (assert_one_line_error, copy_flow, finished_flow, rewrite_npz,
                                 run_cli, snapshot, truncate)

pytestmark = pytest.mark.sim

settings.register_profile("errors-ci", max_examples=500, deadline=None, derandomize=True,
                          database=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow,
                                                 HealthCheck.function_scoped_fixture])
settings.register_profile("errors-soak", max_examples=5000, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow,
                                                 HealthCheck.function_scoped_fixture])
PROFILE = "errors-soak" if os.environ.get("SOFTFLOOR_SOAK") else "errors-ci"

ARTIFACTS = ("inputs.npz", "vectors.npz", "manifest.json", "softfloor_top.v",
             "model.intmodel.json")
RECORDS = ("stages/model.json", "stages/data.json", "stages/golden.json", "stages/rtl.json",
           "stages/sim.json")
#: What the expensive commands read first: a corruption of one of these stops them.
READS = {"rtl": ("model.intmodel.json",),
         "sim": ("manifest.json", "softfloor_top.v", "vectors.npz", "model.intmodel.json",
                 "inputs.npz"),
         "synth": ("manifest.json", "softfloor_top.v"),
         "board": ("manifest.json", "softfloor_top.v")}
KINDS = ("truncate", "key", "dtype", "garbage", "delete", "swap", "swap+records")
STOPPING = ("truncate", "key", "dtype", "garbage", "delete", "swap")

#: Bad --inputs/--labels files a flow must refuse before touching its directory.
BAD_USER = ("x.npz", "empty.npy", "nan.npy", "big.npy", "narrow.npy", "str.npy", "missing.npy")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    require_tool("icarus", lambda: tools.ensure("icarus"))
    root = tmp_path_factory.mktemp("prop")
    a = finished_flow(root / "a", seed=0, n=24)
    b = finished_flow(root / "b", seed=1, n=18)
    bad = root / "bad"
    bad.mkdir()
    x = np.load(a["x"])
    np.savez(bad / "x.npz", x=x)
    np.save(bad / "empty.npy", np.zeros((0, x.shape[1])))
    np.save(bad / "nan.npy", x * np.nan)
    np.save(bad / "big.npy", x * 100)
    np.save(bad / "narrow.npy", x[:, :-1])
    np.save(bad / "str.npy", np.array([["a"] * x.shape[1]]))
    np.save(bad / "labels_big.npy", np.arange(len(x)) + 50)
    return {"a": a, "b": b, "bad": bad}


def _corrupt(d: Path, other: Path, name: str, kind: str, frac: float, junk: bytes) -> None:
    p = d / name
    if kind == "delete":
        p.unlink(missing_ok=True)
    elif kind == "garbage" or not p.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(junk)
    elif kind == "truncate":
        truncate(p, frac)
    elif kind in ("key", "dtype"):
        if p.suffix == ".npz":
            try:
                rewrite_npz(p, kind)
            except Exception:  # already corrupted: truncate it further
                truncate(p, frac)
        else:
            try:
                obj = json.loads(p.read_text())
            except ValueError:
                obj = None
            if isinstance(obj, dict) and obj:
                k = sorted(obj)[int(frac * len(obj)) % len(obj)]
                if kind == "key":
                    del obj[k]
                else:
                    obj[k] = "not a number"
                p.write_text(json.dumps(obj))
            else:
                truncate(p, frac)
    else:  # swap with the other run's file (and, with "+records", the records of its writers)
        if (other / name).exists():
            shutil.copyfile(other / name, p)
        if kind == "swap+records":
            for w in provenance.writers(Path(name).name):
                rec = other / "stages" / f"{w}.json"
                if rec.exists():
                    shutil.copyfile(rec, d / "stages" / f"{w}.json")


corruption = st.tuples(st.sampled_from(ARTIFACTS + RECORDS + ("model.pt",)),
                       st.sampled_from(KINDS), st.floats(0.0, 0.95),
                       st.binary(min_size=0, max_size=64))
junk_args = st.lists(st.sampled_from(
    ["--quiet", "--simulator", "icarus", "modelsim", "--device", "up5k", "xc7", "--seed",
     "99999999999999999999", "-1", "7", "--weight-bits", "0", "3", "--fold", "fc0=2x2",
     "fc9=1x1", "bogus", "--epochs", "0", "--clip", "--board", "icebreaker"]), max_size=4)


@st.composite
def examples(draw):
    command = draw(st.sampled_from(("golden", "report", "info", "data", "export", "rtl", "sim",
                                    "synth", "board", "flow", "run", "import-qonnx")))
    if command in READS:
        first = (draw(st.sampled_from(READS[command])), draw(st.sampled_from(STOPPING)),
                 draw(st.floats(0.0, 0.95)), draw(st.binary(min_size=0, max_size=64)))
        corrupt = [first]  # only artifact corruptions: a deleted record would make them users'
    else:
        corrupt = draw(st.lists(corruption, max_size=3))
    return command, corrupt, draw(junk_args), draw(st.integers(0, 10**6))


def _argv(command: str, d: Path, runs: dict, args: list[str], pick: int) -> list:
    bad = runs["bad"]
    if command == "info":
        return ["info", d / (ARTIFACTS + RECORDS)[pick % 10]]
    if command == "import-qonnx":
        return ["import-qonnx", d / ARTIFACTS[pick % 5], "-o", d / "q.intmodel.json", *args]
    if command == "flow":  # always with one bad user file: refused before anything is touched
        x = bad / BAD_USER[pick % len(BAD_USER)]
        labels = ["--labels", bad / "labels_big.npy"] if pick % 3 == 0 else []
        model = d / "model.intmodel.json" if pick % 2 else runs["a"]["model"]
        if pick % 7 == 0:  # good inputs, bad labels
            x = runs["a"]["x"]
            labels = ["--labels", bad / "labels_big.npy"]
        return ["flow", "--out", d, "--model", model, "--inputs", x, *labels, "--no-synth",
                "--simulator", "icarus"]
    if command == "run":  # bad inputs for the simulated board: refused before simulating
        return ["run", "--out", d, "--sim", "--board", "icebreaker", "--inputs",
                bad / BAD_USER[pick % len(BAD_USER)]]
    if command == "board":
        return ["board", "--out", d, "--board", "icebreaker"]
    if command in ("rtl", "sim", "synth"):
        return [command, "--out", d]
    if command == "data":
        return ["data", "--out", d, *[a for a in args if a not in ("--board", "icebreaker")]]
    return [command, "--out", d, *args]


def _check_success(command: str, d: Path) -> None:
    """Exit 0: what was written agrees with the files it was made from."""
    if command == "golden":
        model = intmodel.load(d / "model.intmodel.json")
        with np.load(d / "inputs.npz") as z:
            codes = z["codes"]
        with np.load(d / "vectors.npz") as v:
            assert np.array_equal(v["inputs"], codes)
            assert np.array_equal(v["golden"], golden.run(model, codes))
    if command != "report":
        return
    rep = json.loads((d / "report.json").read_text())
    for name, h in rep["provenance"]["artifacts"].items():
        assert provenance.sha256(d / name) == h, name
    if not (d / "model.intmodel.json").exists() or not (d / "inputs.npz").exists():
        assert not rep["bit_exact"]
        return
    model = intmodel.load(d / "model.intmodel.json")
    with np.load(d / "inputs.npz") as z:
        codes, labels = z["codes"], (z["labels"] if "labels" in z.files else None)
    want = golden.run(model, codes)
    if rep["accuracy"]["golden"] is not None:
        assert rep["accuracy"]["golden"] == float(np.mean(golden.classify(model, want) == labels))
    vec = dict(np.load(d / "vectors.npz")) if rep["bit_exact"] else {}
    for sim, b in rep["bit_exact"].items():
        assert b["samples"] == len(codes)
        assert np.array_equal(vec["golden"], want)
        assert b["mismatches"] == int(np.sum(np.any(vec[f"rtl_{sim}"] != want, axis=1)))


@settings.get_profile(PROFILE)
@given(ex=examples())
def test_random_commands_on_corrupted_artifacts_never_lie(runs, ex):
    command, corrupt, args, pick = ex
    with tempfile.TemporaryDirectory(prefix="sf-prop-") as tmp:
        d = copy_flow(runs["a"]["out"], Path(tmp) / "out")
        for name, kind, frac, junk in corrupt:
            _corrupt(d, runs["b"]["out"], name, kind, frac, junk)
        before = snapshot(d)
        rc, err = run_cli(_argv(command, d, runs, args, pick))
        if rc == 0:
            _check_success(command, d)
        else:
            assert_one_line_error(rc, err)
            assert snapshot(d) == before, err
