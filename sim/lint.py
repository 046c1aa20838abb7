"""Verilator ``--lint-only -Wall`` on generated Verilog, with documented waivers per warning kind.

The waivers live in ``sim/lint_waivers.toml`` (one table per kind: ``reason`` and ``match``
regular expressions). :func:`lint` returns a :class:`LintReport`; ``report.ok`` is true when every
warning is waived and there is no error. ``python -m softfloor.sim.lint FILE.v [TOP]`` prints it.
"""
from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from softfloor.hw.rtl import spram

from . import tools
from .cosim import cache_root

__all__ = ["lint", "load_waivers", "LintReport", "LintMessage", "WAIVERS"]

WAIVERS = Path(__file__).with_name("lint_waivers.toml")
_LINE = re.compile(r"^%(Warning|Error)(?:-([A-Z0-9_]+))?: ([^\n]*?):(\d+):(?:\d+:)? (.*)$")


@dataclass
class LintMessage:
    severity: str
    kind: str
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"%{self.severity}-{self.kind}: {self.file}:{self.line}: {self.message}"


@dataclass
class LintReport:
    """Verilator's messages split into waived (counted per kind) and unwaived (listed)."""
    verilog: str
    top: str
    waived: dict = field(default_factory=dict)
    unwaived: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.unwaived

    def __str__(self) -> str:
        head = (f"lint {self.verilog} ({self.top}): {len(self.unwaived)} unwaived, "
                f"{sum(self.waived.values())} waived {dict(sorted(self.waived.items()))}")
        return "\n".join([head] + [f"  {m}" for m in self.unwaived[:50]])


def load_waivers(path=WAIVERS) -> dict:
    """``{kind: {"reason": str, "match": [compiled regex, ...]}}``; every kind needs a reason."""
    data = tomllib.loads(Path(path).read_text())
    out = {}
    for kind, w in data.items():
        if not str(w.get("reason", "")).strip() or not w.get("match"):
            raise ValueError(f"{path}: waiver {kind} needs a non-empty reason and match list")
        out[kind] = {"reason": w["reason"], "match": [re.compile(p) for p in w["match"]]}
    return out


def lint(verilog, top: str, waivers: dict | None = None) -> LintReport:
    """Run ``verilator --lint-only -Wall`` on ``verilog`` and apply ``waivers``."""
    exe = tools.ensure_verilator()
    waivers = load_waivers() if waivers is None else waivers
    extra = []
    if spram.uses_spram(Path(verilog).read_text()):     # the SB_SPRAM256KA cells' model
        extra = [str(spram.write_sim_model(cache_root() / "models"))]
    proc = subprocess.run([exe, "--lint-only", "-Wall", "--top-module", top, str(verilog),
                           *extra], capture_output=True, text=True, timeout=600)
    rep = LintReport(str(verilog), top)
    for raw in proc.stderr.splitlines():
        m = _LINE.match(raw)
        if not m:
            continue
        sev, kind, fname, line, msg = m.groups()
        kind = kind or "ERROR"
        if "Exiting due to" in msg:
            continue
        w = waivers.get(kind)
        if sev == "Warning" and w and any(p.search(msg) for p in w["match"]):
            rep.waived[kind] = rep.waived.get(kind, 0) + 1
        else:
            rep.unwaived.append(LintMessage(sev, kind, fname, int(line), msg))
    if proc.returncode and not rep.unwaived and not rep.waived:
        rep.unwaived.append(LintMessage("Error", "ERROR", str(verilog), 0,
                                        proc.stderr.strip()[-500:] or "verilator failed"))
    return rep


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print("usage: python -m softfloor.sim.lint FILE.v [TOP]", file=sys.stderr)
        return 2
    rep = lint(argv[0], argv[1] if len(argv) > 1 else Path(argv[0]).stem)
    print(rep)
    return 0 if rep.ok else 1


if __name__ == "__main__":
    sys.exit(main())
