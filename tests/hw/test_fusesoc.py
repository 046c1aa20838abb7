"""The FuseSoC core file: accepted by ``fusesoc`` itself, and its Icarus target runs and checks."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from softfloor import golden
from softfloor.hw.fusesoc import core_name, write_core
from softfloor.hw.generate import generate
from softfloor.sim import tools
from tests.conftest import require_tool
from tests.randmodel import random_codes, random_model

pytestmark = pytest.mark.sim


def _fusesoc(*args, cwd):
    exe = shutil.which("fusesoc") or str(Path(sys.executable).parent / "fusesoc")
    return subprocess.run([exe, "--monochrome", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def test_core_accepted_and_icarus_target_runs(tmp_path):
    require_tool("icarus", tools.ensure_icarus)
    rng = np.random.default_rng(7)
    model = random_model(rng, (9, 6, 4), in_bits=3, in_signed=True, final_requant=False)
    gen = generate(model, tmp_path, folding={})
    x = random_codes(rng, model, 12)
    y = golden.run(model, x)
    write_core(tmp_path, gen.manifest, x, y)
    vlnv = core_name(gen.manifest)
    r = _fusesoc("--cores-root", str(tmp_path), "core-info", vlnv, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "sim" in r.stdout and "default" in r.stdout
    r = _fusesoc("--cores-root", str(tmp_path), "run", "--work-root", str(tmp_path / "fs"),
                 "--target", "sim", vlnv, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "PASS: " in r.stdout and "(12 samples)" in r.stdout

    # The scoreboard can fail: one wrong expected beat makes the run fail.
    lines = (tmp_path / "tb_out.hex").read_text().splitlines()
    lines[3] = format(int(lines[3], 16) ^ 1, f"0{len(lines[3])}x")
    (tmp_path / "tb_out.hex").write_text("\n".join(lines) + "\n")
    r = _fusesoc("--cores-root", str(tmp_path), "run", "--work-root", str(tmp_path / "fs2"),
                 "--target", "sim", vlnv, cwd=tmp_path)
    assert r.returncode != 0 and "MISMATCH beat 3" in r.stdout


def test_icarus_target_loads_the_spram_image(tmp_path):
    """A design with SPRAM weights: the testbench loads ``weights_spram.hex`` through
    ``w_axis`` first (with the cell's model in the fileset); without the whole image the
    core stays idle and the run fails."""
    from softfloor.hw import planfile, planner
    require_tool("icarus", tools.ensure_icarus)
    rng = np.random.default_rng(8)
    model = random_model(rng, (9, 6, 4), in_bits=3, in_signed=False, final_requant=False)
    doc = planfile.plan_document(planner.plan(model, "up5k"), "m")
    doc["layers"][0].update(pe=2, simd=3, unrolled=False, memory="spram")
    p = planfile.parse_plan(doc, model, "up5k")
    gen = generate(model, tmp_path, folding=p)
    n = gen.manifest["weight_load"]["transfers"]
    assert n == 3 * 3 * -(-2 * 3 * model.layers[0].weight_bits // 16) * 2   # groups x folds
    x = random_codes(rng, model, 6)
    write_core(tmp_path, gen.manifest, x, golden.run(model, x))
    vlnv = core_name(gen.manifest)
    r = _fusesoc("--cores-root", str(tmp_path), "run", "--work-root", str(tmp_path / "fs"),
                 "--target", "sim", vlnv, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "PASS: " in r.stdout and "(6 samples)" in r.stdout
    img = tmp_path / "weights_spram.hex"
    img.write_text("".join(img.read_text().splitlines(keepends=True)[:-1]))
    tb = tmp_path / "softfloor_top_tb.v"
    tb.write_text(tb.read_text().replace(f"parameter W_BEATS = {n};",
                                         f"parameter W_BEATS = {n - 1};"))
    r = _fusesoc("--cores-root", str(tmp_path), "run", "--work-root", str(tmp_path / "fs2"),
                 "--target", "sim", vlnv, cwd=tmp_path)
    assert r.returncode != 0 and "FAIL: timeout" in r.stdout and ", 0 of " in r.stdout
