"""The sweep spec: axes over FlowOptions fields by name, validated before anything runs."""
from __future__ import annotations

import dataclasses

import pytest

from softfloor.flow import FlowOptions
from softfloor.sweep.spec import SpecError, load_spec, parse_spec, point_id


def spec(text: str, tmp_path):
    p = tmp_path / "s.toml"
    p.write_text(text, encoding="latin-1")  # "\xff": a byte that is not UTF-8
    return load_spec(p)


def test_cross_product_linked_axis_and_exclude(tmp_path):
    s = spec("""
name = "t"
stages = ["data", "train", "export", "golden"]
[fixed]
epochs = 2
[axes]
bits = [{weight_bits = 1, act_bits = 1}, {weight_bits = 4, act_bits = 4}]
surrogate = ["ste", "sigmoid"]
device = ["up5k", "ecp5-25f"]
[[exclude]]
weight_bits = 1
device = "ecp5-25f"
""", tmp_path)
    pts = s.points()
    assert len(pts) == 6
    assert pts[0].params == {"epochs": 2, "weight_bits": 1, "act_bits": 1, "surrogate": "ste",
                             "device": "up5k"}
    assert pts[0].label == "bits=weight_bits=1,act_bits=1 surrogate=ste device=up5k"
    assert not any(p.params["weight_bits"] == 1 and p.params["device"] == "ecp5-25f"
                   for p in pts)
    assert s.stages == ("data", "train", "export", "golden") and not s.synthesizes
    assert len({p.id for p in pts}) == 6


def test_point_ids_are_stable_and_ignore_order(tmp_path):
    """The id hashes the fields a point sets and its stages: not dict order, not defaults."""
    a = point_id({"weight_bits": 4, "seed": 1}, ("data", "train"))
    assert a == point_id({"seed": 1, "weight_bits": 4}, ("data", "train"))
    assert a != point_id({"seed": 1, "weight_bits": 4}, ("data", "train", "export"))
    assert a != point_id({"seed": 2, "weight_bits": 4}, ("data", "train"))
    assert a == "d74c0d3de250", a  # a stable hash: rerunning a sweep finds its directories


def test_list_values_become_tuples_and_exclude_matches_them(tmp_path):
    s = spec("""
stages = ["data", "train", "export", "rtl"]
[axes]
fold = [[], ["fc1=4x4"]]
[[exclude]]
fold = []
""", tmp_path)
    assert [p.params for p in s.points()] == [{"fold": ("fc1=4x4",)}]


@pytest.mark.parametrize("text, match", [
    ("[axes]\nbitz = [1, 2]", "unknown axis 'bitz'"),
    ("[axes]\nweight_bitss = [1, 2]", "did you mean 'weight_bits'?"),
    ("[axes]\nb = [{weight_bits = 1, colour = 2}]", "[axes] b[0].colour: unknown field 'colour'"),
    ("[fixed]\nepoch = 3\n[axes]\nseed = [0]", "[fixed] epoch: unknown field 'epoch'"),
    ("[axes]\nweight_bits = [4, 9]", "weight_bits[1]: --weight-bits 9 is outside"),
    ("[axes]\nweight_bits = ['4']", "'4' is not a valid weight_bits"),
    ("[axes]\nsurrogate = ['magic']", "'magic' is not one of"),
    ("[axes]\ndevice = ['xc7a35t']", "'xc7a35t' is not one of"),
    ("[axes]\nout = ['a', 'b']", "'out' is set by the sweep itself"),
    ("[axes]\nseed = []", "non-empty list"),
    ("[axes]\nseed = 3", "non-empty list"),
    ("[axes]\nb = [{seed = 1}, 2]", "mixes tables and plain values"),
    ("[fixed]\nseed = 1\n[axes]\nseed = [0, 1]", "'seed' is both in [fixed] and on an axis"),
    ("stages = ['data', 'rtl']\n[axes]\nseed = [0]", "'rtl' needs 'export'"),
    ("stages = ['data', 'place']\n[axes]\nseed = [0]", "unknown stage 'place'"),
    ("colour = 1\n[axes]\nseed = [0]", "unknown key 'colour'"),
    ("[axes]\nseed = [0]\n[pareto]\nmean_over = ['bits']", "mean_over 'bits' is not an axis"),
    ("[axes\nseed = [0]", "not valid TOML"),
    ("", "[axes] must be a table with at least one axis"),
    ("pareto = 5\n[axes]\nseed = [0]", "[pareto] must be a table"),
    ("[axes]\nseed = [0]\n[pareto]\nmean_over = 'seed'", "mean_over must be a list"),
    ("stages = [1, {a = 1}]\n[axes]\nseed = [0]", "unknown stage 1"),
    ("name = [1]\n[axes]\nseed = [0]", "name must be a string"),
    ("[axes]\nfold = [['fc0=0x2']]", "fold[0]: --fold 'fc0=0x2': expected LAYER=PExSIMD"),
    ("[fixed]\nfold = 'fc0=2x2'\n[axes]\nseed = [0]", "not a valid fold (FlowOptions.fold: a list"),
    ("[axes]\nseed = [0]\n\xff", "not a text file"),
])
def test_bad_specs_name_the_key(text, match, tmp_path):
    with pytest.raises(SpecError) as e:
        spec(text, tmp_path)
    assert match in str(e.value), str(e.value)
    assert str(tmp_path / "s.toml") in str(e.value)


def test_every_flow_option_is_an_axis_by_name():
    """Generic mapping: every FlowOptions field the sweep does not set itself can be an axis,
    with the default's type (so new flow options are sweepable without sweep changes)."""
    reserved = {"out", "quiet", "synth", "synth_cache"}
    for f in dataclasses.fields(FlowOptions):
        if f.name in reserved:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if default is None:
            continue
        value = list(default) if isinstance(default, tuple) else \
            str(default) if hasattr(default, "__fspath__") else default
        s = parse_spec({"axes": {f.name: [value]}})
        assert s.points()[0].params[f.name] == (tuple(value) if isinstance(value, list)
                                                else value)


@pytest.mark.parametrize("how, match", [
    ("out-file", "is a file, not a directory"),
    ("table-garbage", "is not a sweep's results table"),
    ("table-other", "no points table with id and status"),
    ("cache-file", "--synth-cache"),
])
def test_sweep_paths_are_checked_before_anything_is_written(tmp_path, how, match):
    import sqlite3

    from tests.sw.errorcases import assert_one_line_error, run_cli
    (tmp_path / "s.toml").write_text("stages = ['data']\n[axes]\nseed = [0]\n")
    out, extra = tmp_path / "out", []
    if how == "out-file":
        out.write_text("x")
    elif how == "cache-file":
        (tmp_path / "c").write_text("x")
        extra = ["--synth-cache", tmp_path / "c"]
    else:
        out.mkdir()
        if how == "table-garbage":
            (out / "sweep.sqlite").write_bytes(b"SQLite format 3\x00" + b"\x07" * 100)
        else:
            db = sqlite3.connect(out / "sweep.sqlite")
            db.execute("CREATE TABLE foo (a)")
            db.commit()
            db.close()
    before = sorted(tmp_path.rglob("*"))
    rc, err = run_cli(["sweep", tmp_path / "s.toml", "--out", out, "--serial", *extra])
    assert_one_line_error(rc, err)
    assert match in err
    assert sorted(tmp_path.rglob("*")) == before
