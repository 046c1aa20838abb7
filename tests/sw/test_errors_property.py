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

Commands that would start minutes of work (rtl, sim, synth, board, run, flow, train) are only
drawn with a corruption or argument that must stop them before it. ``sweep`` gets a spec spoiled
one way or another, or its paths (a file as ``--out``, a damaged results table, ...): a one-line
error with nothing written, or, for a valid sweep, the points of its spec handed to the engine,
which stops there instead of starting Ray. ``program`` runs on a built board (a well-formed
bitstream and the board record) with its files corrupted and a programmer that is missing,
finds no board, or succeeds: then it was given the bitstream built from the files in DIR.
Every subcommand is drawn. ``make test`` runs 500 examples (derandomized), ``make soak`` 5,000
from a fresh seed.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from softfloor import board as board_mod
from softfloor import cli, golden, intmodel, provenance
from softfloor.sim import tools
from softfloor.sweep import engine
from softfloor.sweep.spec import load_spec
from softfloor.sweep.table import ResultsTable
from tests.conftest import require_tool
from tests.sw import propcases
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
    np.savez(bad / "data_nokeys.npz", x=x)
    (bad / "data_garbage.npz").write_bytes(b"PK\x03\x04 not a zip")
    shutil.copyfile(bad / "x.npz", bad / "data_truncated.npz")
    truncate(bad / "data_truncated.npz", 0.6)
    prog = {k: copy_flow(runs["out"], root / f"{k}_prog")
            for k, runs in (("a", a), ("b", b))}
    for d in prog.values():
        propcases.fake_board(d)
    return {"a": a, "b": b, "bad": bad, "prog": prog,
            "programmers": propcases.programmers(root / "bin"), "tables": _tables(root)}


def _tables(root: Path) -> dict[str, Path]:
    """Results tables a sweep may find in its --out: a rerun's (two of the base spec's points
    recorded under another spec), damaged ones, another program's SQLite file."""
    d = root / "tables"
    d.mkdir()
    spec = d / "base.toml"
    spec.write_text(propcases.toml(propcases.BASE_SPEC))
    points = load_spec(spec).points()
    with ResultsTable(d / "resume.sqlite") as t:
        t.set_meta(name="older", spec="name = 'older'")
        t.record({"id": points[0].id, "label": points[0].label, "status": "done"})
        t.record({"id": points[1].id, "label": points[1].label, "status": "failed",
                  "error": "ValueError: no"})
    data = (d / "resume.sqlite").read_bytes()
    (d / "truncated.sqlite").write_bytes(data[:len(data) // 3])
    (d / "garbage.sqlite").write_bytes(b"SQLite format 3\x00" + b"\x07" * 200)
    other = sqlite3.connect(d / "other.sqlite")
    other.execute("CREATE TABLE foo (a)")
    other.commit()
    other.close()
    return {"table-resume": d / "resume.sqlite", "table-truncated": d / "truncated.sqlite",
            "table-garbage": d / "garbage.sqlite", "table-other": d / "other.sqlite"}


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


#: Arguments that stop ``train`` before it trains.
TRAIN_STOPS = (["--epochs", "0"], ["--weight-bits", "0"], ["--act-bits", "9"],
               ["--seed", "99999999999999999999"], ["--arch", "bogus"],
               ["--arch", "mlp:64-x-10"], ["--data", "missing.npz"],
               ["--data", "data_nokeys.npz"], ["--data", "data_garbage.npz"],
               ["--data", "data_truncated.npz"],
               ["--augment-noise", "2"])
train_junk = st.lists(st.sampled_from([["--quiet"], ["--seed", "7"], ["--epochs", "2"],
                                        ["--weight-bits", "3"], ["--surrogate", "ste"]]),
                      max_size=2).map(lambda a: sum(a, []))
#: What ``program`` may find corrupted, and the --bitstream files it may be given.
PROGRAM_FILES = ("board/icebreaker/softfloor_board.bin", "stages/board.json",
                 "model.intmodel.json", "manifest.json", "softfloor_top.v", "stages/rtl.json",
                 "stages/model.json")
BITSTREAMS = ("default", "good", "truncated", "garbage", "dir", "missing", "ecp5")
COMMANDS = tuple(a.choices for a in cli.parser()._actions if a.dest == "command")[0]


@st.composite
def examples(draw):
    # sweep and program take a few milliseconds: drawn more often than the others
    command = draw(st.sampled_from(sorted(COMMANDS) + ["sweep", "program"] * 2))
    if command == "sweep":
        return command, draw(propcases.sweep_examples()), [], 0
    if command == "program":
        corrupt = draw(st.lists(st.tuples(st.sampled_from(PROGRAM_FILES),
                                          st.sampled_from(KINDS), st.floats(0.0, 0.95),
                                          st.binary(min_size=0, max_size=64)), max_size=2))
        return command, corrupt, [draw(st.sampled_from(("icebreaker", "icebreaker", "ulx3s"))),
                                  draw(st.one_of(st.just("default"), st.sampled_from(BITSTREAMS))),
                                  draw(st.sampled_from(("missing", "no-board", "ok")))], 0
    if command == "train":  # one argument that stops it, and junk
        return command, [], draw(st.sampled_from(TRAIN_STOPS)) + draw(train_junk), 0
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
    if command == "train":
        return ["train", "--out", d, *[bad / a if a.endswith(".npz") else a for a in args]]
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
    vec = dict(np.load(d / "vectors.npz")) if rep["bit_exact"] else {}
    for sim, b in rep["bit_exact"].items():  # the counts are those of the (checked) vectors
        assert b["samples"] == len(vec["golden"])
        assert b["mismatches"] == int(np.sum(np.any(vec[f"rtl_{sim}"] != vec["golden"], axis=1)))
    if not (d / "model.intmodel.json").exists() or not (d / "inputs.npz").exists():
        return
    model = intmodel.load(d / "model.intmodel.json")
    with np.load(d / "inputs.npz") as z:
        codes, labels = z["codes"], (z["labels"] if "labels" in z.files else None)
    want = golden.run(model, codes)
    if rep["accuracy"]["golden"] is not None:
        assert rep["accuracy"]["golden"] == float(np.mean(golden.classify(model, want) == labels))
    if rep["bit_exact"]:  # and the vectors are the golden model's on the current inputs
        assert np.array_equal(vec["inputs"], codes) and np.array_equal(vec["golden"], want)


@settings.get_profile(PROFILE)
@given(ex=examples())
def test_random_commands_on_corrupted_artifacts_never_lie(runs, ex):
    command, corrupt, args, pick = ex
    with tempfile.TemporaryDirectory(prefix="sf-prop-") as tmp:
        if command == "sweep":
            return _sweep(runs, corrupt, Path(tmp))
        if command == "program":
            return _program(runs, corrupt, *args, Path(tmp))
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


class ReachedRay(BaseException):
    """The sweep got as far as running its points (not an Exception: the CLI lets it through)."""


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None
            for p in sorted(root.rglob("*"))}


def _sweep(runs: dict, ex: dict, root: Path) -> None:
    """A spoiled sweep is a one-line error with nothing written; a valid one lists its spec's
    points (--dry-run) or hands them to the engine with the rerun's table intact."""
    spec, out = root / "spec.toml", root / "sweep"
    spec.write_bytes(propcases.spec_text(ex))
    paths = ex["paths"]
    extra = []
    if paths == "spec-missing":
        spec.unlink()
    elif paths == "spec-dir":
        spec.unlink()
        spec.mkdir()
    elif paths == "out-file":
        out.write_text("a file")
    elif paths == "out-parent-file":
        (root / "f").write_text("a file")
        out = root / "f" / "sweep"
    elif paths.startswith("table-"):
        out.mkdir()
        shutil.copyfile(runs["tables"][paths], out / "sweep.sqlite")
    elif paths == "cache-file":
        (root / "cache").write_text("a file")
        extra = ["--synth-cache", root / "cache"]
    elif paths == "cpus-0":
        extra = ["--cpus", "0"]
    flags = [f"--{k.replace('_', '-')}" for k in ("dry_run", "serial", "retry_failed") if ex[k]]
    before = _tree(root)
    reached = []

    def stop(points, task, table, points_dir, **kw):
        reached.append(([p.id for p in points], table.status()))
        raise ReachedRay

    stdout = io.StringIO()
    with mock.patch.object(engine, "run", stop):
        try:
            rc, err = run_cli(["sweep", spec, "--out", out, *extra, *flags], stdout=stdout)
        except ReachedRay:
            rc, err = None, ""
    if rc is None or rc == 0:
        assert not propcases.must_fail(ex), (rc, ex)
        want = [p.id for p in load_spec(spec).points()]
        if rc == 0:
            assert ex["dry_run"] and _tree(root) == before
            lines = stdout.getvalue().splitlines()
            assert [ln.split()[0] for ln in lines[:-1]] == want
            assert lines[-1].startswith(f"{len(want)} points")
        else:
            ids, status = reached[0]
            assert ids == want
            if paths == "table-resume":  # the rows of the earlier run are kept, as they were
                with ResultsTable(runs["tables"][paths]) as t:
                    assert status == t.status()
        return
    assert_one_line_error(rc, err)
    assert _tree(root) == before, err


def _program(runs: dict, corrupt: list, board: str, bitstream: str, programmer: str,
             root: Path) -> None:
    """Program succeeds only with the bitstream built from DIR's files (or the user's own,
    well-formed one), else a one-line error naming what to do."""
    d = copy_flow(runs["prog"]["a"], root / "out")
    for name, kind, frac, junk in corrupt:
        _corrupt(d, runs["prog"]["b"], name, kind, frac, junk)
    argv = ["program", "--board", board, "--out", d]
    family = "ice40" if board == "icebreaker" else "ecp5"
    user = root / "user.bin"
    if bitstream != "default":
        argv += ["--bitstream", user]
        if bitstream in ("good", "truncated"):
            propcases.fake_bitstream(user, family, b"\x01" * 100)
            if bitstream == "truncated":
                truncate(user, 0.5)
        elif bitstream == "garbage":
            user.write_bytes(b"\x00" * 50)
        elif bitstream == "dir":
            user.mkdir()
        elif bitstream == "ecp5":
            propcases.fake_bitstream(user, "ecp5" if family == "ice40" else "ice40", b"")
    log = root / "programmed.log"
    before = snapshot(d)
    with mock.patch.dict(os.environ, {"PATH": str(runs["programmers"][programmer]),
                                      "SF_PROGRAMMED": str(log)}):
        rc, err = run_cli(argv)
    if rc != 0:
        assert_one_line_error(rc, err)
        assert snapshot(d) == before, err
        assert not log.exists()
        return
    assert programmer == "ok" and bitstream in ("default", "good"), err
    bit = Path(log.read_text().split()[-1])
    head = bit.read_bytes()
    assert board_mod.BITSTREAM_MAGIC[family] in head[:4096]
    if bitstream == "default":
        rec = json.loads((d / "stages" / "board.json").read_text())
        assert rec["bitstream_sha256"] == provenance.sha256(bit)
        for name in ("model.intmodel.json", "manifest.json", "softfloor_top.v"):
            h = provenance.sha256(d / name)
            assert h in {v for k, v in rec["provenance"]["made_from"].items()
                         if k.endswith(":" + name)}, name
