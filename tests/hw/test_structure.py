"""How ``hw/`` is put together: every module imports alone, imports read from the text, no
private Amaranth API, and the planner, pipeline, top and generator never branch on an op kind."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

HW = Path(__file__).resolve().parents[2] / "hw"


def hw_modules() -> list[str]:
    out = []
    for p in sorted(HW.rglob("*.py")):
        rel = p.relative_to(HW).with_suffix("")
        parts = [x for x in rel.parts if x != "__init__"]
        out.append(".".join(["softfloor", "hw", *parts]))
    return out


def test_every_hw_module_imports_alone_in_a_fresh_interpreter():
    """One interpreter per module: an import cycle or a missing import shows as an error."""
    mods = hw_modules()
    assert "softfloor.hw.ops.dense" in mods and "softfloor.hw.rtl.mvu" in mods
    code = ("import subprocess, sys\n"
            "from concurrent.futures import ThreadPoolExecutor\n"
            "def one(m):\n"
            "    r = subprocess.run([sys.executable, '-W', 'error::DeprecationWarning', '-c',\n"
            "                        'import ' + m], capture_output=True, text=True)\n"
            "    return (m, r.stderr.strip().splitlines()[-1:]) if r.returncode else None\n"
            "with ThreadPoolExecutor(4) as ex:\n"
            f"    bad = [b for b in ex.map(one, {mods!r}) if b]\n"
            "print(bad)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr


def _trees():
    for p in sorted(HW.rglob("*.py")):
        yield p, ast.parse(p.read_text(), str(p))


def _project(node) -> bool:
    names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
    return bool(getattr(node, "level", 0)) or any(n.split(".")[0] == "softfloor" for n in names)


def test_no_function_local_or_relative_imports_in_hw():
    """Imports of softfloor modules are absolute and at module level (a function-local import
    of an optional third-party package, e.g. ``amaranth_boards``, is fine)."""
    for p, tree in _trees():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                pytest.fail(f"{p.name}:{node.lineno}: relative import (write softfloor....)")
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for sub in ast.walk(node):
                    if isinstance(sub, (ast.Import, ast.ImportFrom)) and _project(sub):
                        pytest.fail(f"{p.name}:{sub.lineno}: import inside {node.name}()")


def test_no_private_amaranth_api():
    for p in sorted(HW.rglob("*.py")):
        text = p.read_text()
        assert "_MustUse" not in text and "amaranth.hdl._" not in text, p


@pytest.mark.parametrize("module", ["planner.py", "pipeline.py", "top.py", "generate.py",
                                    "planfile.py"])
def test_search_and_build_never_branch_on_an_op_kind(module):
    """No comparison of a ``kind`` / ``op`` with a literal name (``kind == "dense"``, ``kind in
    ("conv", "pool")``) and no isinstance over op or layer classes in the modules that search,
    join and emit the ops: those questions go to the ops."""
    from softfloor.hw import ops
    from softfloor import intmodel
    names = {c.__name__ for c in ops.OPS} | {c.__name__ for c in intmodel.LAYER_TYPES}
    tree = ast.parse((HW / module).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            kinds = [s for s in sides if isinstance(s, ast.Attribute) and s.attr in ("kind", "op")]
            literal = any(isinstance(c, ast.Constant) and isinstance(c.value, str)
                          for s in sides
                          for c in ([s] if isinstance(s, ast.Constant) else
                                    s.elts if isinstance(s, (ast.Tuple, ast.List, ast.Set))
                                    else []))
            if kinds and literal:
                pytest.fail(f"{module}:{node.lineno}: compares .{kinds[0].attr} with a name")
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "isinstance":
            classes = node.args[1]
            elts = classes.elts if isinstance(classes, ast.Tuple) else [classes]
            for e in elts:
                name = getattr(e, "id", getattr(e, "attr", ""))
                assert name not in names, f"{module}:{node.lineno}: isinstance(..., {name})"
