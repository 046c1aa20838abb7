"""Plan files through the CLI: ``rtl --plan-out`` / ``--plan`` round trip, edited plans, and
invalid plans or designs over budget as one-line errors (non-zero exit, no traceback)."""
from __future__ import annotations

import copy
import json
import subprocess
import sys

import numpy as np
import pytest

from softfloor import cli, intmodel
from softfloor.hw import planfile, planner
from tests.randmodel import digits_model


def run(*args):
    return subprocess.run([sys.executable, "-m", "softfloor", *args], capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def plan_dir(tmp_path_factory):
    """A digits-sized model and the planner's plan file for the UP5K."""
    d = tmp_path_factory.mktemp("plan")
    intmodel.save(digits_model(), d / "model.intmodel.json")
    r = run("rtl", "--out", str(d), "--quiet", "--plan-out", str(d / "plan.json"))
    assert r.returncode == 0, r.stderr
    return d


def one_line_error(r, *needles):
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("softfloor: error: "), r.stderr
    assert "Traceback" not in r.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])


def test_plan_file_round_trips_unchanged(plan_dir, tmp_path):
    """The planner's plan written, read back and written again: the same bytes; the Verilog
    built from it has the planner's numbers."""
    text = (plan_dir / "plan.json").read_text()
    doc = json.loads(text)
    assert doc["plan_version"] == planfile.PLAN_VERSION and doc["device"] == "up5k"
    assert [l["name"] for l in doc["layers"]] == ["fc0", "fc1", "fc2"]
    assert {"pe", "simd", "unrolled", "memory", "dsp", "report"} <= set(doc["layers"][0])
    r = run("rtl", "--out", str(plan_dir), "--quiet", "--plan", str(plan_dir / "plan.json"),
            "--plan-out", str(tmp_path / "again.json"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "again.json").read_text() == text
    man = json.loads((plan_dir / "manifest.json").read_text())
    p = planner.plan(digits_model(), "up5k")
    assert man["initiation_interval"] == p.initiation_interval == \
        doc["report"]["initiation_interval"]
    assert [(l["pe"], l["simd"]) for l in man["layers"]] == \
        [(l["pe"], l["simd"]) for l in doc["layers"]]


def test_an_edited_plan_is_built_as_written(tmp_path):
    """pe/simd edited, one layer fully unrolled (weights as constants): the manifest has them,
    the report of the written plan says what they cost."""
    out = tmp_path / "out"
    intmodel.save(digits_model(), out / "model.intmodel.json")
    r = run("rtl", "--out", str(out), "--quiet", "--device", "ecp5-85f",
            "--plan-out", str(tmp_path / "plan.json"))
    assert r.returncode == 0, r.stderr
    doc = json.loads((tmp_path / "plan.json").read_text())
    doc["layers"][0].update(pe=2, simd=4)
    doc["layers"][1].update(pe=32, simd=64, unrolled=True, memory="constants", dsp=False)
    doc["layers"][2].update(pe=1, simd=32)
    (tmp_path / "edited.json").write_text(json.dumps(doc))
    r = run("rtl", "--out", str(out), "--quiet", "--device", "ecp5-85f", "--plan",
            str(tmp_path / "edited.json"), "--plan-out", str(tmp_path / "written.json"))
    assert r.returncode == 0, r.stderr
    man = json.loads((out / "manifest.json").read_text())
    assert [(l["pe"], l["simd"], l["const_weights"]) for l in man["layers"]] == \
        [(2, 4, False), (32, 64, True), (1, 32, False)]
    written = json.loads((tmp_path / "written.json").read_text())
    assert written["layers"][0]["report"]["cycles"] == 32 * 16
    assert written["layers"][1]["report"]["estimate"]["ram"] == 0
    assert written["report"]["initiation_interval"] == man["initiation_interval"] == 512


def _invalid_plans(doc):
    """(name, edit of the plan document or raw text, words the error must contain)."""
    def edit(f):
        d = copy.deepcopy(doc)
        f(d)
        return d
    return [
        ("not_json", "{\"plan_version\": 1,", ["not JSON", "line"]),
        ("a_list", [doc], ["expected a JSON object"]),
        ("no_version", edit(lambda d: d.pop("plan_version")), ["missing plan_version"]),
        ("newer", edit(lambda d: d.update(plan_version=2)), ["plan_version 2 is newer"]),
        ("unknown_key", edit(lambda d: d.update(folding={})), ["unknown key(s) ['folding']"]),
        ("other_device", edit(lambda d: d.update(device="ecp5-85f")),
         ["made for 'ecp5-85f'", "--device ecp5-85f"]),
        ("layer_count", edit(lambda d: d["layers"].pop()),
         ["2 entries", "3 hardware layers", "another model"]),
        ("layer_name", edit(lambda d: d["layers"][1].update(name="fc9")),
         ["layers[1] is 'fc9'", "'fc1'", "another model"]),
        ("pe_range", edit(lambda d: d["layers"][0].update(pe=65)),
         ["layers[0] (fc0)", "fold 65x", "outside 1..64"]),
        ("pe_type", edit(lambda d: d["layers"][1].update(simd="8")),
         ["layers[1] (fc1).simd", "positive integer"]),
        ("unrolled_folded", edit(lambda d: d["layers"][2].update(unrolled=True)),
         ["layers[2] (fc2).unrolled", "pe = rows, simd = cols"]),
        ("memory_kind", edit(lambda d: d["layers"][0].update(memory="bram")),
         ["layers[0] (fc0).memory", "'bram'", "'rom' or 'constants'"]),
        ("constants_folded", edit(lambda d: d["layers"][0].update(memory="constants")),
         ["layers[0] (fc0).memory", "fully unrolled"]),
        ("dsp_narrow", edit(lambda d: d["layers"][0].update(dsp=True)),
         ["layers[0] (fc0).dsp", "do not qualify"]),
        ("layer_key", edit(lambda d: d["layers"][2].update(lanes=4)),
         ["layers[2] (fc2)", "unknown key(s) ['lanes']"]),
        ("no_stream_width", edit(lambda d: d["layers"][0].update(pe=64, simd=64, unrolled=True,
                                                                  memory="constants")),
         ["fc0: fold 64x64 finishes 64 results every 1 cycles", "smaller pe"]),
    ]


def test_invalid_plan_files_are_one_line_errors(plan_dir, tmp_path, capsys, recwarn):
    """Each invalid plan file: exit code 2, one line naming the file, layer and field, no
    warning, no Verilog written (in this process; three of them also as a command below)."""
    doc = json.loads((plan_dir / "plan.json").read_text())
    cases = _invalid_plans(doc)
    assert len(cases) >= 10
    out = tmp_path / "out"
    intmodel.save(digits_model(), out / "model.intmodel.json")
    for name, content, needles in cases:
        p = tmp_path / f"{name}.json"
        p.write_text(content if isinstance(content, str) else json.dumps(content))
        rc = cli.main(["rtl", "--out", str(out), "--quiet", "--plan", str(p)])
        err = capsys.readouterr().err
        one_line_error(subprocess.CompletedProcess([], rc, "", err), str(p), *needles)
        assert rc == 2 and not (out / "softfloor_top.v").exists(), name
    assert not recwarn.list, [str(w.message) for w in recwarn.list]
    for name, content, needles in cases[::7]:               # the same, as a command
        one_line_error(run("rtl", "--out", str(out), "--quiet", "--plan",
                           str(tmp_path / f"{name}.json")), *needles)


def test_missing_plan_file_and_plan_with_fold(plan_dir, tmp_path):
    r = run("rtl", "--out", str(plan_dir), "--quiet", "--plan", str(tmp_path / "nope.json"))
    one_line_error(r, "nope.json: plan file not found", "--plan-out")
    r = run("rtl", "--out", str(plan_dir), "--quiet", "--plan", str(plan_dir / "plan.json"),
            "--fold", "fc0=2x2")
    one_line_error(r, "give --plan or --fold, not both")
    r = run("flow", "--out", str(tmp_path / "flow"), "--plan", str(tmp_path / "nope.json"))
    one_line_error(r, "nope.json: plan file not found")     # before any training
    assert not (tmp_path / "flow").exists()


def test_a_design_over_budget_is_an_error_unless_allowed(tmp_path):
    """A plan over the HX1K's budget (and ``--fold fc0=64x64`` on the UP5K, once a TypeError):
    an error naming the resource and the layer; ``--allow-overfit`` builds it."""
    out = tmp_path / "out"
    intmodel.save(digits_model(), out / "model.intmodel.json")
    r = run("rtl", "--out", str(out), "--quiet", "--device", "hx1k", "--plan-out",
            str(tmp_path / "plan.json"))
    assert r.returncode == 0, r.stderr
    doc = json.loads((tmp_path / "plan.json").read_text())
    doc["layers"][0].update(pe=2, simd=8)
    (tmp_path / "big.json").write_text(json.dumps(doc))
    (out / "manifest.json").unlink()
    r = run("rtl", "--out", str(out), "--quiet", "--device", "hx1k", "--plan",
            str(tmp_path / "big.json"))
    one_line_error(r, "does not fit hx1k", "logic cells > the budget of 960", "layer fc0",
                   "--allow-overfit")
    assert not (out / "manifest.json").exists()
    r = run("rtl", "--out", str(out), "--quiet", "--fold", "fc0=64x64")
    one_line_error(r, "fc0")
    r = run("rtl", "--out", str(out), "--quiet", "--device", "hx1k", "--plan",
            str(tmp_path / "big.json"), "--allow-overfit")
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "manifest.json").read_text())["plan"]["fits"] is False


def test_plan_over_budget_names_ram_and_dsp():
    """The fit check names each resource over budget and the layer using most of it: RAM on
    a small device, DSP blocks a plan file asks for beyond the device's."""
    from tests.randmodel import random_model
    big = random_model(np.random.default_rng(0), [256, 128, 10], in_bits=8, weight_bits=8,
                       act_bits=8, final_requant=False)
    p = planner.plan(big, "hx1k")
    assert not p.fits and p.notes
    msg = str(pytest.raises(planner.DesignDoesNotFit, p.check_fits).value)
    assert "RAM blocks > the 16 it has, most in layer fc0" in msg and "\n" not in msg
    doc = planfile.plan_document(planner.plan(big, "up5k", overrides={"fc0": (4, 4)}))
    doc["layers"][0]["dsp"] = True                       # 16 lanes, the UP5K has 8 DSPs
    q = planfile.parse_plan(doc, big, "up5k")
    assert q.estimate["dsp"] > 8 and not q.fits
    msg = str(pytest.raises(planner.DesignDoesNotFit, q.check_fits).value)
    assert "estimated DSP blocks > the 8 it has, most in layer fc0 (16, fold 4x4)" in msg
