"""Unrolled constant-weight layers, softfloor against da4ml, side by side.

For each integer matrix -- the digits MLP's fc2 (32x64) and fc3 (10x32) at w2a2 and w4a4
(trained as the hardware benchmark trains them, cached with its models), and the hls4ml
jet-tagging topology 16-64-32-32-5 with random weights at 2, 4 and 6 bits (signed inputs to the
first layer, unsigned after it, as after a ReLU) -- two designs of ``y = W @ x``, each with a
registered input and the same number of pipeline stages after it:

* softfloor: the shared-subexpression adder graph (:func:`softfloor.hw.rtl.cmvm.solve`), emitted by
  :func:`softfloor.hw.rtl.cmvm_emit.emit` with a register every
  :data:`~softfloor.hw.rtl.cmvm.LEVELS_PER_STAGE` adder levels (``S = graph.stages()`` stages);
* da4ml 0.6 (``pip install da4ml==0.6.0``, the ``[bench]`` extra): its own trace of
  ``x @ W.T`` (``comb_trace``), cut into the same ``S`` stages (``to_pipeline``), its Verilog
  (``RTLModel``).

Both are synthesized by the same Yosys command (``synth_ecp5``; LUT4, CCU2C, TRELLIS_FF from its
``stat``; LUT slots = LUT4 + 2 x CCU2C) and placed and routed by nextpnr-ecp5 (ECP5-85F) inside
the same serial-in / serial-out wrapper for Fmax; both are simulated on Verilator (random and
extreme-sum vectors, one per cycle) and compared with ``x @ W.T``. Latency: ``S + 1`` cycles
(input register + ``S`` stages), in ns at each design's own Fmax.

Each design's measurements are cached in ``<out>/unrolled/<row>/<side>/measure.json`` by the
hash of its Verilog, so a rerun only redoes what changed.
``quick``: the digits fc3 rows only (10 training epochs).
"""
from __future__ import annotations

import hashlib
import json
import re
import subprocess
import time
from pathlib import Path

import numpy as np

from softfloor import arith

#: Targets of the comparison (softfloor / da4ml), reported per row, never asserted.
TARGET_SLOTS_RATIO = 0.9
TARGET_FMAX_RATIO = 1.0
#: Random vectors per bit-exactness check (plus every row's extreme-sum inputs).
CHECK_VECTORS = 2000
FMAX_TARGET_MHZ = 250
JET_SIZES = [16, 64, 32, 32, 5]


def _digits_matrices(out: Path, quick: bool) -> list[dict]:
    from softfloor.benchmarks.hardware import _train
    from softfloor.intmodel import Dense
    rows = []
    for wb in (2, 4):
        model, _ = _train(wb, wb, 10 if quick else 60, out / "hardware" / "models")
        types = model.types()
        for k, layer in enumerate(model.layers):
            if isinstance(layer, Dense) and layer.name in (("fc3",) if quick else ("fc2", "fc3")):
                t = types[k]
                rows.append({"name": f"digits-w{wb}a{wb} {layer.name}",
                             "W": np.asarray(layer.weight, dtype=np.int64),
                             "bits": t.bits, "signed": t.signed, "lo": t.lo, "hi": t.hi})
    return rows


def jet_matrices(bits: int, seed: int = 0) -> list[dict]:
    """The jet-tagging MLP 16-64-32-32-5: random ``bits``-wide signed weights (about one in
    eight zero), ``bits``-wide signed inputs to fc1, unsigned ones after it."""
    from softfloor import arith
    rng = np.random.default_rng(seed + bits)
    rows = []
    for k in range(len(JET_SIZES) - 1):
        W = rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), (JET_SIZES[k + 1], JET_SIZES[k]))
        W[rng.random(W.shape) < 0.125] = 0
        sgn = k == 0
        lo, hi = arith.code_range(bits, sgn)
        rows.append({"name": f"jet-w{bits}a{bits} fc{k + 1}", "W": W, "bits": bits,
                     "signed": sgn, "lo": lo, "hi": hi})
    return rows


# -- the two designs --------------------------------------------------------------------------

def softfloor_design(W, lo: int, hi: int, bits: int, signed_: bool) -> dict:
    """The softfloor matrix: ports ``clk``, ``x_in`` (column ``c`` at bits ``[c*bits, ...)``),
    ``y_out`` (rows LSB first, each at its exact width)."""
    from amaranth.back import verilog
    from amaranth.hdl import Cat, ClockDomain, Module, Signal
    from amaranth.hdl import signed as s_, unsigned as u_
    from softfloor import arith
    from softfloor.hw.rtl import cmvm
    from softfloor.hw.rtl.cmvm_emit import emit
    g = cmvm.solve(W, [(lo, hi)] * W.shape[1])
    m = Module()
    m.domains.sync = cd = ClockDomain(reset_less=True)
    cols = W.shape[1]
    x_in = Signal(cols * bits, name="x_in")
    xr = [Signal(s_(bits) if signed_ else u_(bits), name=f"xr{c}") for c in range(cols)]
    m.d.sync += [xr[c].eq(x_in[c * bits:(c + 1) * bits]) for c in range(cols)]
    fields = []
    ys = []
    for r, o in enumerate(emit(m, xr, g)):
        b, sg = arith.bits_for_range(*g.output_range(r))
        y = Signal(s_(b) if sg else u_(b), name=f"y{r}")
        m.d.comb += y.eq(o)
        ys.append(y)
        fields.append((b, sg, 0))
    y_out = Signal(sum(len(y) for y in ys), name="y_out")
    m.d.comb += y_out.eq(Cat(*ys))
    text = verilog.convert(m, name="sf_matrix", ports=[cd.clk, x_in, y_out],
                           emit_src=False)
    return {"verilog": text, "top": "sf_matrix", "stages": g.stages(), "adders": len(g.adders),
            "in_width": cols * bits, "in_fields": [(bits, signed_, 0)] * cols,
            "out_fields": fields, "ports": ("clk", "x_in", "y_out")}


def da4ml_design(W, bits: int, signed_: bool, stages: int, work: Path) -> dict:
    """da4ml's design of the same matrix, cut into ``stages`` pipeline stages."""
    from da4ml.codegen import RTLModel
    from da4ml.trace import FixedVariableArrayInput, comb_trace
    from da4ml.trace.ops import quantize
    from da4ml.trace.pipeline import to_pipeline
    from da4ml.types import minimal_kif
    inp = FixedVariableArrayInput((W.shape[1],))
    x = quantize(inp, 1 if signed_ else 0, bits - (1 if signed_ else 0), 0)
    comb = comb_trace(inp, x @ W.T.astype(np.float32))
    adders = sum(1 for op in comb.ops if op.opcode in (0, 1) and op.id1 >= 0)
    depth = max(op.latency for op in comb.ops)
    pipe, found = None, None
    lo, hi = 0.0, float(depth) + 1
    for _ in range(40):                      # least cutoff with at most `stages` stages
        mid = (lo + hi) / 2
        p = to_pipeline(comb, mid, retiming=False, verbose=False)
        if len(p.solutions) <= stages:
            pipe, found, hi = p, mid, mid
        else:
            lo = mid
    if pipe is None:
        raise RuntimeError(f"da4ml: no cut into {stages} stages")
    pipe = to_pipeline(comb, found, retiming=True, verbose=False)
    out_dir = work / "da4ml"
    RTLModel(pipe, "da_matrix", out_dir, flavor="verilog").write()
    src = out_dir / "src"
    text = "\n".join(f.read_text() for f in sorted(src.glob("da_matrix*.v"))
                     if f.name != "da_matrix_wrapper.v")
    # the library modules it instantiates (lookup_table.v reads a memory file: not used here)
    text += "\n".join(f.read_text() for f in sorted((src / "static").glob("*.v"))
                      if re.search(rf"\b{f.stem}\s*(#|\w+\s*\()", text))
    in_fields = [(sum(minimal_kif(q)), bool(minimal_kif(q).keep_negative), minimal_kif(q).fractional)
                 for q in pipe.inp_qint]
    out_fields = [(sum(minimal_kif(q)), bool(minimal_kif(q).keep_negative), minimal_kif(q).fractional)
                  for q in pipe.out_qint]
    return {"verilog": text, "top": "da_matrix", "stages": len(pipe.solutions),
            "adders": adders, "graph_depth": float(depth), "in_fields": in_fields,
            "out_fields": out_fields, "ports": ("clk", "model_inp", "model_out"),
            "in_width": sum(f[0] for f in in_fields)}


# -- measuring ----------------------------------------------------------------------------------

def yosys_counts(verilog: Path, top: str, out: Path) -> dict:
    """LUT4, CCU2C and TRELLIS_FF after ``synth_ecp5`` (the synthesis step of
    :func:`softfloor.hw.synth.synthesize`), from its ``stat``."""
    from softfloor.hw.synth import find_tools
    yosys, _, _ = find_tools("ecp5")
    log = out / f"{top}.yosys.log"
    subprocess.run(yosys + ["-q", "-l", str(log), "-p",
                            f"read_verilog {verilog}; synth_ecp5 -top {top}; stat"],
                   check=True, stdout=subprocess.DEVNULL)
    last = log.read_text().rsplit("Printing statistics", 1)[-1]
    cells = {k: int(v) for v, k in re.findall(r"^\s+(\d+)\s+(\w+)\s*$", last, re.M)} | \
        {k: int(v) for k, v in re.findall(r"^\s+(\w+)\s+(\d+)\s*$", last, re.M)}
    c = {k: cells.get(k, 0) for k in ("LUT4", "CCU2C", "TRELLIS_FF", "PFUMX", "L6MUX21")}
    c["slots"] = c["LUT4"] + 2 * c["CCU2C"]
    return c


def wrapper(d: dict, out_width: int) -> str:
    """Serial in, serial out (four pins): a shift register feeds the input port; the output
    port loads a shift register."""
    clk, pin, pout = d["ports"]
    n, k = d["in_width"], out_width
    return f"""
module wrap_{d['top']} (input clk, input si, input ld, output so);
  reg [{n - 1}:0] sin;
  always @(posedge clk) sin <= {{sin[{max(n - 2, 0)}:0], si}};
  wire [{k - 1}:0] y;
  {d['top']} dut (.{clk}(clk), .{pin}(sin), .{pout}(y));
  reg [{k - 1}:0] sout;
  always @(posedge clk) sout <= ld ? y : {{1'b0, sout[{k - 1}:1]}};
  assign so = sout[0];
endmodule
"""


def _pack(fields, row) -> int:
    word, off = 0, 0
    for (w, _, f), v in zip(fields, row):
        word |= ((int(v) << f) & ((1 << w) - 1)) << off     # value * 2**f as a w-bit code
        off += w
    return word


def _unpack(fields, word: int) -> list[int]:
    out, off = [], 0
    for w, sg, f in fields:
        v = arith.wrap(word >> off, w, sg) if w else 0
        out.append(v * (1 << -f) if f <= 0 else v >> f)
        off += w
    return out


def check(d: dict, W, lo: int, hi: int, work: Path, rng) -> dict:
    """Verilator, one vector per cycle: random and extreme-sum vectors against ``x @ W.T``."""
    from softfloor.sim import units
    cols = W.shape[1]
    x = rng.integers(lo, hi + 1, (CHECK_VECTORS, cols))
    ext = [np.full(cols, lo), np.full(cols, hi)]
    for row in W:
        ext += [np.where(row > 0, hi, lo), np.where(row > 0, lo, hi)]
    x = np.concatenate([x, np.array(ext)])
    vpath = work / f"{d['top']}.v"
    words = units.run_pipelined(vpath, d["top"], [_pack(d["in_fields"], r) for r in x],
                                d["stages"], "verilator", work / "sim", ports=d["ports"])
    got = np.array([_unpack(d["out_fields"], w) for w in words], dtype=np.int64)
    bad = int(np.count_nonzero(np.any(got != x @ W.T, axis=1)))
    return {"vectors": len(x), "mismatches": bad}


def _measure(d: dict, W, lo, hi, work: Path, rng) -> dict:
    """Counts, Fmax and the bit-exactness check of one design; cached in
    ``<work>/measure.json`` by the hash of its Verilog."""
    from softfloor.hw import synth
    work.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(d["verilog"].encode()).hexdigest()[:16]
    cache = work / "measure.json"
    if cache.exists() and json.loads(cache.read_text()).get("key") == key:
        return json.loads(cache.read_text())
    vpath = work / f"{d['top']}.v"
    vpath.write_text(d["verilog"])
    counts = yosys_counts(vpath, d["top"], work)
    out_width = sum(f[0] for f in d["out_fields"])
    wpath = work / f"wrap_{d['top']}.v"
    wpath.write_text(d["verilog"] + wrapper(d, out_width))
    r = synth.synthesize(wpath, f"wrap_{d['top']}", work / "pnr", "ecp5-85f",
                         freq_mhz=FMAX_TARGET_MHZ)
    ok = check(d, W, lo, hi, work, rng)
    lat = d["stages"] + 1
    res = {**counts, "fmax_mhz": r.fmax_mhz, "latency_cycles": lat,
           "latency_ns": round(1000 * lat / r.fmax_mhz, 1) if r.fmax_mhz else None,
           "adders": d["adders"], **ok, "key": key}
    cache.write_text(json.dumps(res, indent=1) + "\n")
    return res


def _row(mat: dict, out: Path) -> dict:
    W, name = mat["W"], mat["name"]
    sf = softfloor_design(W, mat["lo"], mat["hi"], mat["bits"], mat["signed"])
    work = out / "unrolled" / name.replace(" ", "-")
    work.mkdir(parents=True, exist_ok=True)
    da = da4ml_design(W, mat["bits"], mat["signed"], sf["stages"], work)
    t0 = time.monotonic()
    rng = np.random.default_rng(1)
    s = _measure(sf, W, mat["lo"], mat["hi"], work / "softfloor", rng)
    d = _measure(da, W, mat["lo"], mat["hi"], work / "da4ml", np.random.default_rng(1))
    row = {"layer": name, "shape": f"{W.shape[0]}x{W.shape[1]}",
           "input": f"{'s' if mat['signed'] else 'u'}{mat['bits']}",
           "stages": sf["stages"], "da4ml_stages": da["stages"]}
    for side, r in (("sf", s), ("da", d)):
        row.update({f"{side}_{k}": r[k] for k in ("LUT4", "CCU2C", "TRELLIS_FF", "slots",
                                                   "fmax_mhz", "latency_cycles", "latency_ns",
                                                   "adders")})
        row[f"{side}_bitexact"] = f"{r['vectors'] - r['mismatches']}/{r['vectors']}"
    row["slots_ratio"] = round(s["slots"] / d["slots"], 3)
    row["fmax_ratio"] = round(s["fmax_mhz"] / d["fmax_mhz"], 3) if d["fmax_mhz"] else None
    row["targets_met"] = bool(row["slots_ratio"] <= TARGET_SLOTS_RATIO and
                              (row["fmax_ratio"] or 0) >= TARGET_FMAX_RATIO)
    row["seconds"] = round(time.monotonic() - t0)
    return row


def run(out: Path, quick: bool) -> dict:
    try:
        import da4ml  # noqa: F401
    except ImportError:
        raise SystemExit("bench unrolled: da4ml is missing: pip install -e '.[bench]' "
                         "(da4ml==0.6.0)") from None
    mats = _digits_matrices(out, quick)
    if not quick:
        for bits in (2, 4, 6):
            mats += jet_matrices(bits)
    rows = []
    for mat in sorted(mats, key=lambda m: m["W"].size):      # the quick ones first
        print(f"[unrolled] {mat['name']} {mat['W'].shape}", flush=True)
        rows.append(_row(mat, out))
    met = sum(r["targets_met"] for r in rows)
    notes = [f"targets (slots <= {TARGET_SLOTS_RATIO} x da4ml's, Fmax >= da4ml's) met on "
             f"{met} of {len(rows)} rows",
             "slots = LUT4 + 2 x CCU2C (Yosys synth_ecp5 stat); Fmax: nextpnr-ecp5, ECP5-85F, "
             "serial-in/serial-out wrapper; latency = input register + stages",
             "bit-exact: Verilator, one vector per cycle, random and extreme-sum vectors "
             "against x @ W.T"]
    return {"rows": rows, "notes": notes}
