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
