"""Every bad input is a one-line error with a non-zero exit that leaves the previous artifacts
intact, and every stale artifact is refused (docs/verification.md, "Provenance").

One finished flow directory of a tiny model (Icarus, no synthesis) is made per module; every
case runs on a copy of it.
"""
from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest

from softfloor import artifacts, flow as flow_mod, intmodel, provenance, userinputs
from softfloor.sim import tools
from tests.conftest import require_tool
from tests.sw.errorcases import (assert_one_line_error, copy_flow, finished_flow, make_inputs,
                                 rewrite_npz, run_cli, snapshot, tiny_model, truncate)

pytestmark = pytest.mark.sim


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    require_tool("icarus", lambda: tools.ensure("icarus"))
    return finished_flow(tmp_path_factory.mktemp("done"), seed=0)


@pytest.fixture
def d(done, tmp_path):
    """A copy of the finished flow, the files it was made from, and a scratch dir."""
    out = copy_flow(done["out"], tmp_path / "out")
    return {**done, "out": out, "tmp": tmp_path}


def _npy(d, name, arr):
    p = d["tmp"] / name
    np.save(p, arr)
    return p


def _flow(d, *extra):
    return ["flow", "--out", d["out"], "--no-synth", "--simulator", "icarus", *extra]


def _model_flow(d, *extra):
    return _flow(d, "--model", d["model"], *extra)


def _x(d):
    return np.load(d["x"])


# Each case: (setup(d) -> argv, the text the error must contain).
CASES = {
    "flow --model without --inputs": (
        lambda d: _model_flow(d), "--model needs --inputs"),
    "--inputs without --model": (
        lambda d: _flow(d, "--inputs", d["x"]), "--inputs/--labels are the inputs of a --model"),
    "--labels without --model": (
        lambda d: _flow(d, "--labels", d["y"]), "--inputs/--labels are the inputs of a --model"),
    "--labels y.npz": (
        lambda d: _model_flow(d, "--inputs", d["x"], "--labels",
                              _npz(d, "y.npz", y=np.load(d["y"]))),
        "--labels"),
    ".npz given as --inputs": (
        lambda d: _model_flow(d, "--inputs", _npz(d, "x.npz", x=_x(d))), "an .npz archive"),
    "empty inputs array": (
        lambda d: _model_flow(d, "--inputs", _npy(d, "e.npy", np.zeros((0, 16)))),
        "empty array"),
    "inputs of the wrong width": (
        lambda d: _model_flow(d, "--inputs", _npy(d, "w.npy", np.zeros((4, 15)))),
        "expected one row of 16 values"),
    "inputs with NaN": (
        lambda d: _model_flow(d, "--inputs", _npy(d, "n.npy", _x(d) * np.nan)), "NaN"),
    "inputs as strings": (
        lambda d: _model_flow(d, "--inputs", _npy(d, "s.npy", np.array([["a"] * 16]))),
        "not numeric"),
    "inputs outside the calibrated range": (
        lambda d: _model_flow(d, "--inputs", _npy(d, "big.npy", _x(d) * 16)),
        "outside the model's calibrated range"),
    "labels out of class range": (
        lambda d: _model_flow(d, "--inputs", d["x"], "--labels",
                              _npy(d, "y.npy", np.arange(len(_x(d))) + 100)),
        "outside the model's classes 0..3"),
    "negative labels": (
        lambda d: _model_flow(d, "--inputs", d["x"], "--labels",
                              _npy(d, "y.npy", -np.ones(len(_x(d)), int))),
        "label -1 is negative"),
    "NaN labels": (
        lambda d: _model_flow(d, "--inputs", d["x"], "--labels",
                              _npy(d, "y.npy", np.full(len(_x(d)), np.nan))), "NaN"),
    "too few labels": (
        lambda d: _model_flow(d, "--inputs", d["x"], "--labels", _npy(d, "y.npy", [1, 2])),
        "one label per input row"),
    "--seed 99999999999999999999": (
        lambda d: _flow(d, "--seed", "99999999999999999999"),
        "--seed 99999999999999999999 is outside the supported range"),
    "--out is a file": (
        lambda d: ["flow", "--out", d["model"], "--model", d["model"], "--inputs", d["x"],
                   "--no-synth"], "is not a directory"),
    "truncated inputs.npz": (
        lambda d: _corrupt(d, "inputs.npz", truncate, "golden"),
        "inputs.npz is not the file `softfloor data` recorded writing"),
    "truncated vectors.npz": (
        lambda d: _corrupt(d, "vectors.npz", truncate, "sim"),
        "vectors.npz is not the file `softfloor sim` recorded writing"),
    "vectors.npz with a renamed key": (
        lambda d: _corrupt(d, "vectors.npz", lambda p: rewrite_npz(p, "key"), "sim"),
        "vectors.npz is not the file"),
    "manifest without top": (
        lambda d: _corrupt(d, "manifest.json", _drop_top, "sim"),
        "manifest.json is not the file `softfloor rtl` recorded writing"),
    "truncated manifest": (
        lambda d: _corrupt(d, "manifest.json", truncate, "report"),
        "manifest.json is not the file"),
    "truncated Verilog": (
        lambda d: _corrupt(d, "softfloor_top.v", truncate, "sim"),
        "softfloor_top.v is not the file `softfloor rtl` recorded writing"),
    "truncated model file": (
        lambda d: _corrupt(d, "model.intmodel.json", truncate, "rtl"),
        "model.intmodel.json is not the file"),
    "truncated stage record": (
        lambda d: _corrupt(d, "stages/rtl.json", truncate, "sim"),
        "rtl.json: truncated or not JSON"),
    "import-qonnx on an empty file": (
        lambda d: ["import-qonnx", _empty(d, "m.onnx"), "-o", d["out"] / "q.json"],
        "empty file, not an ONNX model"),
}


def _npz(d, name, **arrays):
    p = d["tmp"] / name
    np.savez(p, **arrays)
    return p


def _empty(d, name):
    p = d["tmp"] / name
    p.write_bytes(b"")
    return p


def _drop_top(p):
    man = json.loads(p.read_text())
    del man["top"]
    p.write_text(json.dumps(man))


def _corrupt(d, name, how, command):
    how(d["out"] / name)
    return [command, "--out", d["out"], "--simulator", "icarus"] if command == "sim" else \
        [command, "--out", d["out"]]


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_a_one_line_error_and_changes_nothing(case, d):
    setup, match = CASES[case]
    argv = setup(d)
    before = snapshot(d["out"])
    rc, err = run_cli(argv)
    assert_one_line_error(rc, err)
    assert match in err, err
    assert snapshot(d["out"]) == before


def test_truncated_checkpoint_and_user_files_without_records(tmp_path):
    """Files no stage record mentions are the user's: read, and their defects named."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.pt").write_bytes(b"PK\x03\x04 truncated")
    rc, err = run_cli(["export", "--out", out])
    assert_one_line_error(rc, err)
    assert "model.pt: truncated or not a softfloor checkpoint" in err
    (out / "manifest.json").write_text('{"cycles_per_inference": 1}')
    rc, err = run_cli(["synth", "--out", out])
    assert_one_line_error(rc, err)
    assert "manifest.json: no field 'top'" in err
    np.savez(out / "inputs.npz", codes=np.zeros((0, 3)))
    intmodel.save(tiny_model(0), out / "model.intmodel.json")
    rc, err = run_cli(["golden", "--out", out])
    assert_one_line_error(rc, err)
    assert "inputs.npz[" in err and "expected integer codes" in err


def test_clip_saturates_what_would_be_an_error(done, tmp_path):
    model = intmodel.load(done["model"])
    x = np.load(done["x"]) * 16
    np.save(tmp_path / "big.npy", x)
    with pytest.raises(artifacts.ArtifactError, match="calibrated range"):
        userinputs.load(model, tmp_path / "big.npy")
    u = userinputs.load(model, tmp_path / "big.npy", clip=True)
    assert u.clipped == len(x)
    assert np.array_equal(u.codes, model.input.quantize(x))


def test_files_are_written_atomically_with_the_usual_permissions(done):
    mask = os.umask(0o022)
    os.umask(mask)
    for p in done["out"].rglob("*"):
        if p.is_file() and "cosim" not in p.parts:
            assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~mask, p
    assert not list(done["out"].rglob(".*.tmp"))


def test_npz_bytes_are_deterministic(tmp_path):
    a = artifacts.save_npz(tmp_path / "a.npz", x=np.arange(5), y=np.eye(2))
    b = artifacts.save_npz(tmp_path / "b.npz", x=np.arange(5), y=np.eye(2))
    assert a.read_bytes() == b.read_bytes()
    with np.load(a) as z:
        assert np.array_equal(z["y"], np.eye(2))


# ----------------------------------------------------------------------------------------------
# Stale scenarios

def test_interrupted_flow_leaves_nothing_to_mix(d, monkeypatch):
    """Ctrl-C during a flow of another model into a finished directory, then single stages:
    the old vectors, RTL and records are gone, so nothing of the old model is reported."""
    other = intmodel.save(tiny_model(1), d["tmp"] / "other.intmodel.json")
    x2, _ = make_inputs(intmodel.load(other), 10, 1, d["tmp"] / "o")

    def interrupted(ctx):
        raise KeyboardInterrupt
    monkeypatch.setitem(flow_mod.STAGES, "golden", interrupted)
    rc, err = run_cli(_flow(d, "--model", other, "--inputs", x2))
    assert rc == 130
    monkeypatch.undo()
    for stage in (["sim"], ["synth"], ["board", "--board", "icebreaker"]):
        rc, err = run_cli([*stage, "--out", d["out"]])
        assert_one_line_error(rc, err)
        assert "manifest.json not found: run `softfloor rtl" in err
    assert not (d["out"] / "vectors.npz").exists()
    assert run_cli(["golden", "--out", d["out"]])[0] == 0
    assert run_cli(["report", "--out", d["out"]])[0] == 0
    rep = json.loads((d["out"] / "report.json").read_text())
    assert rep["bit_exact"] == {} and rep["accuracy"]["rtl"] is None
    assert rep["provenance"]["made_from"]["model:model.intmodel.json"] == \
        provenance.sha256(other)


def test_vectors_of_another_run_are_refused(d):
    """Vectors of another run (other inputs of the same model), alone or with their stage
    records: refused, naming both files and the stage to rerun."""
    x2 = _npy(d, "x2.npy", _x(d)[:20])
    o2 = d["tmp"] / "o2"
    assert run_cli(["flow", "--out", o2, "--model", d["model"], "--inputs", x2, "--no-synth",
                    "--simulator", "icarus", "--quiet"])[0] == 0
    (d["out"] / "vectors.npz").write_bytes((o2 / "vectors.npz").read_bytes())
    for argv in (["report"], ["sim", "--simulator", "icarus"]):
        rc, err = run_cli([*argv, "--out", d["out"]])
        assert_one_line_error(rc, err)
        assert "vectors.npz is not the file `softfloor sim` recorded writing" in err
    for rec in ("golden", "sim"):
        (d["out"] / "stages" / f"{rec}.json").write_bytes(
            (o2 / "stages" / f"{rec}.json").read_bytes())
    before = snapshot(d["out"])
    rc, err = run_cli(["report", "--out", d["out"]])
    assert_one_line_error(rc, err)
    assert f"{d['out'] / 'inputs.npz'} and {d['out'] / 'vectors.npz'} were made from different " \
        "versions of inputs.npz (written by `softfloor data`): rerun `softfloor golden" in err
    assert snapshot(d["out"]) == before


def test_rtl_fold_then_report_is_refused(d):
    rc, _ = run_cli(["rtl", "--out", d["out"], "--fold", "fc0=1x1", "--quiet"])
    assert rc == 0
    rc, err = run_cli(["report", "--out", d["out"]])
    assert_one_line_error(rc, err)
    assert "vectors.npz and" in err and "were made from different versions of " \
        "softfloor_top.v" in err and "rerun `softfloor sim" in err
    assert run_cli(["golden", "--out", d["out"]])[0] == 0
    rc, err = run_cli(["report", "--out", d["out"]])
    assert_one_line_error(rc, err)
    assert "stages/sim.json records a `sim` run whose vectors.npz is not the one" in err
    assert run_cli(["sim", "--out", d["out"], "--simulator", "icarus", "--quiet"])[0] == 0
    assert run_cli(["report", "--out", d["out"]])[0] == 0
    rep = json.loads((d["out"] / "report.json").read_text())
    assert rep["hardware"]["initiation_interval_expected"] == \
        json.loads((d["out"] / "manifest.json").read_text())["initiation_interval"]
    assert rep["bit_exact"]["icarus"]["mismatches"] == 0


@pytest.mark.slow
def test_training_then_report_is_refused(tmp_path):
    """`train` again after a finished chain: the report would put the new configuration beside
    the numbers of the model exported from the old one; refused until `export` reruns."""
    out = tmp_path / "digits"
    for argv in (["data"], ["train", "--epochs", "1"], ["export"], ["golden"], ["report"]):
        assert run_cli([*argv, "--out", out, "--quiet"])[0] == 0, argv
    assert run_cli(["train", "--out", out, "--epochs", "1", "--weight-bits", "2",
                    "--act-bits", "2", "--quiet"])[0] == 0
    rc, err = run_cli(["report", "--out", out])
    assert_one_line_error(rc, err)
    assert "stages/train.json records a `train` run whose model.pt is not the one" in err
    assert "rerun `softfloor export" in err
    for argv in (["export"], ["golden"], ["report"]):
        assert run_cli([*argv, "--out", out, "--quiet"])[0] == 0, argv
    rep = json.loads((out / "report.json").read_text())
    assert rep["config"]["weight_bits"] == 2
    assert rep["provenance"]["made_from"]["train:model.pt"] == provenance.sha256(out / "model.pt")


@pytest.mark.synth
@pytest.mark.slow
def test_no_synth_after_a_synthesized_run_removes_the_old_synthesis(d):
    assert run_cli(["synth", "--out", d["out"], "--quiet"])[0] == 0
    assert (d["out"] / "synth").is_dir()
    assert json.loads(run_report(d))["synth"].get("skipped") is None
    assert run_cli(_model_flow(d, "--inputs", d["x"], "--quiet"))[0] == 0
    assert not (d["out"] / "synth").exists()
    assert not (d["out"] / "stages" / "synth.json").exists()
    assert json.loads(run_report(d))["synth"]["skipped"] is True


def run_report(d) -> str:
    assert run_cli(["report", "--out", d["out"]])[0] == 0
    return (d["out"] / "report.json").read_text()
