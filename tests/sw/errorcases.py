"""Shared helpers of the error tests: a finished flow directory of a tiny model, the CLI run
in-process, corruptions of artifacts, snapshots of a directory."""
from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path

import numpy as np

from softfloor import cli, intmodel, userinputs
from tests.randmodel import random_model

#: Files of a finished flow directory (the co-simulation work dir is not an artifact).
SKIP = ("cosim",)


def tiny_model(seed: int) -> intmodel.IntModel:
    """16 inputs -> 8 -> 4 classes: a design that builds and simulates in seconds."""
    return random_model(np.random.default_rng(seed), (16, 8, 4), in_bits=4, final_requant=False,
                        multipliers=False)


def make_inputs(model: intmodel.IntModel, n: int, seed: int, where: Path) -> tuple[Path, Path]:
    """``n`` float inputs inside the model's calibrated range and labels, as .npy files."""
    rng = np.random.default_rng(seed)
    lo, hi = userinputs.calibrated_range(model)
    x = rng.uniform(lo + 0.5, hi - 0.5, size=(n, model.input.size))
    where.mkdir(parents=True, exist_ok=True)
    np.save(where / "x.npy", x)
    np.save(where / "y.npy", rng.integers(0, userinputs.classes(model), n))
    return where / "x.npy", where / "y.npy"


def finished_flow(root: Path, seed: int, n: int = 24) -> dict:
    """``flow --model`` of a tiny model (Icarus only, no synthesis) into ``root/out``."""
    src = root / "src"
    src.mkdir(parents=True)
    m = intmodel.save(tiny_model(seed), src / "m.intmodel.json")
    x, y = make_inputs(intmodel.load(m), n, seed, src)
    out = root / "out"
    rc, err = run_cli(["flow", "--model", str(m), "--inputs", str(x), "--labels", str(y),
                       "--no-synth", "--simulator", "icarus", "--out", str(out), "--quiet"])
    assert rc == 0, err
    return {"out": out, "model": m, "x": x, "y": y}


def run_cli(argv: list[str], stdout: io.StringIO | None = None) -> tuple[int, str]:
    """``softfloor argv`` in this process: (exit code, stderr); its output goes to ``stdout``."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(stdout or io.StringIO()):
        try:
            rc = cli.main([str(a) for a in argv])
        except SystemExit as e:  # argparse
            rc = e.code if isinstance(e.code, int) else 2
    return rc, err.getvalue()


def assert_one_line_error(rc: int, err: str) -> None:
    """A failed command: non-zero exit, not an internal error, one error line, no traceback."""
    assert rc not in (0, cli.INTERNAL_ERROR), err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1, err
    if not lines[0].startswith("usage") and "usage:" not in err:
        assert len(err.strip().splitlines()) == 1, err


def copy_flow(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(*SKIP))
    return dst


def snapshot(d: Path) -> dict[str, bytes]:
    """Every file under ``d`` (but the co-simulation work dir) and its bytes."""
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*"))
            if p.is_file() and not p.relative_to(d).parts[0] in SKIP}


def truncate(p: Path, frac: float = 0.5) -> None:
    data = p.read_bytes()
    p.write_bytes(data[:int(len(data) * frac)])


def rewrite_npz(p: Path, how: str) -> None:
    """Rewrite an .npz with a renamed first array (``"key"``) or its first array as float
    (``"dtype"``)."""
    with np.load(p) as z:
        arrays = {k: z[k] for k in z.files}
    first = sorted(arrays)[0]
    if how == "key":
        arrays[first + "_renamed"] = arrays.pop(first)
    else:
        arrays[first] = arrays[first].astype(np.float32) + 0.5
    np.savez(p, **arrays)
