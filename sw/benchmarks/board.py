"""Board benchmark: the digits MLP (w4a4) as a bitstream on the iCEBreaker and the ULX3S.

Per board: the bare core (the planner's throughput plan for the board's FPGA, synthesized out of
context) beside the board top (UART link + PLL + pins) -- logic, FF, DSP, RAM, Fmax, the PLL
clock chosen (<= the board top's Fmax) and the bitstream's size; then the link end to end:

* every test sample through the simulated board top's UART, driven by the host driver over a
  socket (``softfloor run --sim``), on Verilator and on Icarus (4 clocks per bit): bit-exact
  against the golden model;
* a few samples at the board's own clock and baud divisor on Verilator: the measured
  inferences/s through the link at the chosen baud rate, beside the core's own (PLL clock / II).

``quick``: 10 training epochs, 60 samples. ``SOFTFLOOR_BENCH_BOARDS=icebreaker`` limits boards.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

BOARDS = ("icebreaker", "ulx3s")
BAUD = 115200
#: Samples run at the board's own divisor (hundreds of clocks per bit: slow to simulate).
REAL_DIVISOR_SAMPLES = 6


def _board_row(model, split, board: str, out: Path, n: int) -> dict:
    import numpy as np
    from softfloor import golden, intmodel
    from softfloor.artifacts import save_npz
    from softfloor import protocol as proto
    from softfloor.board import board_stage, run_simulated
    from softfloor.hw import boards, planner, synth
    from softfloor.hw.generate import generate
    from softfloor.sim import linksim
    b = boards.get_board(board)
    out.mkdir(parents=True, exist_ok=True)
    intmodel.save(model, out / "model.intmodel.json")
    codes, labels = split.c_test[:n], split.y_test[:n]
    want = golden.run(model, codes)
    save_npz(out / "inputs.npz", codes=codes, labels=labels)
    save_npz(out / "vectors.npz", inputs=codes, golden=want)
    plan = planner.plan(model, b.device, "throughput")
    man = generate(model, out, device=b.device, folding=plan).manifest
    bare = synth.synthesize(out / f"{man['top']}.v", man["top"], out / "synth", b.device)
    print(f"  bare core: {bare}", flush=True)
    rec = board_stage(out, board, baud=BAUD, bare=bare.to_dict(),
                      say=lambda m: print(m, flush=True))
    row = {"board": board, "device": b.device, "model": model.name, "samples": n,
           "bare_lc": bare.logic_cells, "bare_ff": bare.ff, "bare_dsp": bare.dsp,
           "bare_ram": bare.ram_blocks, "bare_fmax_mhz": bare.fmax_mhz,
           "board_lc": rec["logic_cells"], "board_ff": rec["ff"], "board_dsp": rec["dsp"],
           "board_ram": rec["ram_blocks"], "board_fmax_mhz": rec["fmax_mhz"],
           "pll_mhz": rec["pll_mhz"], "pll_attempts": len(rec["attempts"]),
           "bitstream": Path(rec["bitstream"]).name, "bitstream_bytes": rec["bitstream_bytes"],
           "baud": BAUD, "uart_divisor": rec["divisor"],
           "verilator_link_mismatches": rec["link"]["mismatches"]}
    # Icarus: every sample through the UART too.
    built = json.loads((out / "board" / board / "board.json").read_text())["info"]
    info = proto.LinkInfo(**{**built, "input": proto.PortInfo(**{**built["input"], "shape": tuple(
        built["input"]["shape"])}), "output": proto.PortInfo(**{**built["output"], "shape": tuple(
            built["output"]["shape"])})})
    v = out / "board" / board / "sim" / f"{linksim.LINK_TOP}.v"
    ic = run_simulated(v, info, codes, "icarus", out / "board" / board / "sim")
    row["icarus_link_mismatches"] = int(np.sum(np.any(ic.outputs != want, axis=1)))
    row["link_accuracy"] = float(np.mean(golden.classify(model, ic.outputs) == labels))
    # At the board's own clock and divisor: the measured end-to-end rate at BAUD.
    real = out / "board" / board / "real"
    vr = linksim.link_verilog(out / f"{man['top']}.v", info, rec["divisor"], real)
    k = REAL_DIVISOR_SAMPLES
    rr = run_simulated(vr, info, codes[:k], "verilator", real, divisor=rec["divisor"])
    row["real_divisor_mismatches"] = int(np.sum(np.any(rr.outputs != want[:k], axis=1)))
    cyc = rr.cycles_per_inference
    row["link_cycles_per_inference"] = round(cyc, 1)
    row["link_inferences_per_s"] = round(rec["pll_mhz"] * 1e6 / cyc, 1)
    req = len(proto.frame(proto.INFER, bytes(info.input.sample_bytes)))
    rep = len(proto.frame(proto.RESULT, bytes(info.output.sample_bytes)))
    row["link_bound_inferences_per_s"] = round(BAUD / (10 * max(req, rep)), 1)
    row["core_ii"] = man["initiation_interval"]
    row["core_inferences_per_s"] = round(rec["pll_mhz"] * 1e6 / man["initiation_interval"], 1)
    return row


def run(out_dir: Path, quick: bool) -> dict:
    from .hardware import _train
    out = Path(out_dir) / "board"
    epochs, n = (10, 60) if quick else (60, 360)
    model, split = _train(4, 4, epochs, Path(out_dir) / "hardware" / "models")
    boards = [b for b in os.environ.get("SOFTFLOOR_BENCH_BOARDS", ",".join(BOARDS)).split(",")
              if b]
    rows = []
    for board in boards:
        t0 = time.monotonic()
        try:
            row = _board_row(model, split, board, out / board, n)
        except Exception as e:                 # a failed row is reported, not hidden
            row = {"board": board, "error": f"{type(e).__name__}: {e}"[:500]}
        row["seconds"] = round(time.monotonic() - t0, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    notes = [f"digits MLP w4a4 ({epochs} epochs), {n} test samples through the UART of the "
             f"simulated board top on Verilator and Icarus at 4 clocks per bit (host driver "
             f"over a socket), bit-exact against the golden model; link inferences/s measured "
             f"at the board's own clock and UART divisor on Verilator "
             f"({REAL_DIVISOR_SAMPLES} samples, two requests in flight) at {BAUD} baud; "
             f"link-bound = baud / (10 x the longer frame in bytes); core = PLL clock / II",
             "bare_*: the core synthesized out of context (planner's throughput plan for the "
             "board's FPGA); board_*: the board top (core + UART link + PLL + pins)"]
    return {"rows": rows, "notes": notes}
