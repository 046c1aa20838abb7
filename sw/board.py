"""Board commands: the flow's ``board`` stage, ``softfloor run`` and ``softfloor program``.

* :func:`board_stage`: board top -> bitstream (:func:`softfloor.hw.boards.build_board`), then the
  board's link logic simulated on Verilator and driven by the host driver with every test
  sample (bit-exact against the golden model through the UART).
* :func:`run`: the host driver on a serial port (a board) or on the simulated board top; checks
  that the board runs this model (INFO's hash), compares with the golden model, scores labels.
* :func:`program`: ``iceprog`` / ``openFPGALoader`` with the built bitstream.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np

from . import golden, intmodel
from .artifacts import load_json, load_npz, save_npz
from . import protocol as proto

__all__ = ["board_stage", "check_board_device", "run", "program", "RunResult"]

MODEL_FILE = "model.intmodel.json"


def check_board_device(board: str, device: str) -> str:
    """The device of ``board``; ValueError if ``device`` names another (``up5k`` is the
    default and yields to the board)."""
    from .hw.boards import get_board
    b = get_board(board)
    if device not in (b.device, "up5k"):
        raise ValueError(f"--board {board} is an {b.device}, but --device {device} was given: "
                         f"drop --device or give --device {b.device}")
    return b.device


def _need(path: Path, stage: str, out: Path) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `softfloor {stage} --out {out}` first")
    return path


def board_dir(out: Path, board: str) -> Path:
    return Path(out) / "board" / board


def board_stage(out, board: str, *, baud: int, bare: dict | None = None, say=print,
                simulator: str = "verilator") -> dict:
    """Build ``board``'s bitstream from the rtl stage's artifacts and check its link in
    simulation. Returns the stage record (``fusesoc_boards``: what the core file needs)."""
    from .hw.boards import build_board, check_core, get_board
    from .sim import linksim
    out = Path(out)
    b = get_board(board)
    man = json.loads(_need(out / "manifest.json", "rtl", out).read_text())
    check_core(man)
    verilog = _need(out / f"{man['top']}.v", "rtl", out)
    model_file = _need(out / MODEL_FILE, "export", out)
    d = board_dir(out, board)
    target = None
    if bare and bare.get("fmax_mhz") and bare.get("device") == b.device:
        target = 0.95 * bare["fmax_mhz"]           # the link adds a little logic
    r = build_board(b, d, verilog, man, model_file, baud=baud, target_mhz=target,
                    progress=lambda m: say(f"  {m} ..."))
    say(f"    {r}")
    built = json.loads((d / "board.json").read_text())
    info = proto.LinkInfo(**{**built["info"],
                             "input": proto.PortInfo(**_port(built["info"]["input"])),
                             "output": proto.PortInfo(**_port(built["info"]["output"]))})
    rec = r.to_dict()
    rec["bare_core"] = {k: (bare or {}).get(k) for k in ("device", "logic_cells", "ff", "dsp",
                                                         "ram_blocks", "fmax_mhz")}
    vec = load_npz(_need(out / "vectors.npz", "golden", out), {"inputs": "int", "golden": "int"},
                   rerun=f"rerun `softfloor golden --out {out}`")
    say(f"  {board} link: {len(vec['inputs'])} samples through the UART on {simulator} ...")
    v = linksim.link_verilog(verilog, info, linksim.SIM_DIVISOR, d / "sim")
    res = run_simulated(v, info, vec["inputs"], simulator, d / "sim")
    mism = int(np.sum(np.any(res.outputs != vec["golden"], axis=1)))
    rec["link"] = res.summary() | {"mismatches": mism}
    say(f"    link: {len(vec['inputs']) - mism}/{len(vec['inputs'])} bit-exact, "
        f"{res.cycles_per_inference:.0f} cycles per inference at {linksim.SIM_DIVISOR} "
        f"clocks per bit: {rec['link']['inferences_per_second']} inferences/s at {baud} baud")
    if mism:
        raise RuntimeError(f"{board}: {mism} samples differ from the golden model through the "
                           f"simulated UART link; see {d / 'sim'}")
    cons = d / ("softfloor_board.pcf" if b.family == "ice40" else "softfloor_board.lpf")
    from .hw.boards import BOARDS
    plat = b.make_platform()
    rec["fusesoc_boards"] = {board: {"verilog": str(d / "softfloor_board.v"),
                                     "constraints": str(cons), "family": b.family,
                                     "nextpnr_options": list(BOARDS[board].nextpnr_args(plat)),
                                     "top": "softfloor_board"}}
    return rec


def _port(d: dict) -> dict:
    return d | {"shape": tuple(d["shape"])}


class RunResult:
    """Outputs of a run through the link, and how long it took."""

    def __init__(self, outputs, seconds, info, stats=None):
        self.outputs, self.seconds, self.info, self.stats = outputs, seconds, info, stats or {}

    @property
    def cycles_per_inference(self) -> float:
        """Steady-state cycles between result replies (the last ``len(outputs)`` replies)."""
        ends = self.stats.get("reply_end_cycles", [])[-len(self.outputs):]
        if len(ends) >= 2:
            return (ends[-1] - ends[0]) / (len(ends) - 1)
        return self.stats.get("cycles", 0) / max(1, len(self.outputs))

    def summary(self) -> dict:
        from .sim import linksim
        d = {"samples": len(self.outputs), "seconds": round(self.seconds, 2)}
        if self.stats:
            # Simulated at ``divisor`` clocks per bit: one bit time = ``divisor`` cycles (the
            # core's own cycles are counted as bit times too: an underestimate of the rate).
            div = self.stats.get("divisor", linksim.SIM_DIVISOR)
            per = self.cycles_per_inference / div / self.info.baud
            d.update(simulator=self.stats.get("simulator"),
                     cycles_per_inference=round(self.cycles_per_inference, 1),
                     clocks_per_bit=div,
                     inferences_per_second=round(1 / per, 1) if per else None,
                     bytes_in=self.stats.get("bytes_in"), bytes_out=self.stats.get("bytes_out"))
        return d


def run_simulated(link_v, info: proto.LinkInfo, codes, simulator: str, work,
                  divisor: int | None = None) -> RunResult:
    """``codes`` through the simulated board top by the host driver (socket bridge)."""
    from .host import Host
    from .sim import linksim
    sim = linksim.SimulatedBoard(link_v, divisor or linksim.SIM_DIVISOR, simulator, work)
    with sim as url, Host.open(url, info.baud, reply_timeout=linksim.SIM_REPLY_TIMEOUT) as h:
        got = h.info()
        if got != info:
            raise RuntimeError(f"the simulated board reports {got}, expected {info}")
        t0 = time.monotonic()
        outputs = h.run(codes)
        dt = time.monotonic() - t0
    return RunResult(outputs, dt, info, sim.stats | {"simulator": simulator,
                                                     "divisor": sim.divisor})


def _inputs(model, inputs, labels, out: Path, clip: bool = False):
    from . import userinputs
    if inputs is None:
        if labels is not None:
            raise ValueError("--labels labels the --inputs given with it; give both, or neither "
                             "(the flow's test inputs carry their labels)")
        z = load_npz(_need(out / "inputs.npz", "data", out), {"codes": "int"},
                     rerun=f"rerun `softfloor data --out {out}`")
        return z["codes"], z.get("labels")
    u = userinputs.load(model, inputs, labels, clip)
    return u.codes, u.labels


def run(out, *, port: str | None = None, sim: bool = False, inputs=None, labels=None,
        baud: int = 115200, simulator: str = "verilator", board: str | None = None,
        say=print, clip: bool = False) -> dict:
    """``softfloor run``: the inputs through a board (``port``) or its simulation (``sim``).

    Returns a summary (samples, mismatches against the golden model, accuracy, inferences/s);
    the outputs go to ``<out>/run.npz``.
    """
    from .host import Host, LinkError
    out = Path(out)
    model_file = _need(out / MODEL_FILE, "export", out)
    model = intmodel.load(model_file)
    codes, y = _inputs(model, inputs, labels, out, clip)
    want = golden.run(model, codes)
    if sim:
        from .sim import linksim
        man = json.loads(_need(out / "manifest.json", "rtl", out).read_text())
        clock = baud * linksim.SIM_DIVISOR
        if board and (board_dir(out, board) / "board.json").exists():
            clock = json.loads((board_dir(out, board) / "board.json").read_text())["info"][
                "clock_hz"]
        info = proto.link_info(man, model, model_file, clock_hz=clock, baud=baud)
        work = out / "run_sim"
        v = linksim.link_verilog(out / f"{man['top']}.v", info, linksim.SIM_DIVISOR, work)
        say(f"simulated board top on {simulator}, {linksim.SIM_DIVISOR} clocks per bit")
        res = run_simulated(v, info, codes, simulator, work)
    else:
        with Host.open(port, baud) as h:
            h.resync()
            info = h.info()
            mine = proto.model_hash(model_file)
            if info.model_hash != mine:
                raise LinkError(f"the board on {port} runs model {info.model_hash}, not "
                                f"{model_file} ({mine}): program it (softfloor program --board "
                                f"... --out {out})")
            t0 = time.monotonic()
            outputs = h.run(codes)
            res = RunResult(outputs, time.monotonic() - t0, info)
    mism = int(np.sum(np.any(res.outputs != want, axis=1)))
    summary = res.summary() | {"mismatches_vs_golden": mism, "model_hash": info.model_hash,
                               "wall_inferences_per_second": round(len(codes) / res.seconds, 1)
                               if res.seconds else None}
    if y is not None:
        summary["accuracy"] = float(np.mean(golden.classify(model, res.outputs) == y))
    save_npz(out / "run.npz", inputs=codes, outputs=res.outputs, golden=want)
    return summary


#: What every bitstream of a family holds near its start: the iCE40 sync word (after the
#: ``FF 00 ... 00 FF`` comment), the ECP5 preamble.
BITSTREAM_MAGIC = {"ice40": b"\x7e\xaa\x99\x7e", "ecp5": b"\xff\xff\xbd\xb3"}
#: The iCE40 bitstream's last command (wakeup): a truncated one lacks it.
ICE40_END = b"\x01\x06\x00"


def check_bitstream(out, board: str, bitstream=None) -> Path:
    """The bitstream ``program`` would send to ``board``, checked: a file of the board's
    family (its sync word or preamble; an iCE40 one ends with the wakeup command); the one in
    DIR (no ``bitstream``) must also be the file the ``board`` stage recorded building, from
    the model, manifest and Verilog now in DIR. ``ArtifactError`` naming the file and what to
    rerun otherwise."""
    from .artifacts import ArtifactError
    from .hw.boards import get_board
    from .provenance import Lineage, StaleArtifact, sha256
    b = get_board(board)
    out = Path(out)
    rebuild = f"`softfloor board --board {board} --out {out}`"
    bit = Path(bitstream) if bitstream else \
        board_dir(out, board) / f"softfloor_board{b.bitstream_suffix}"
    if bitstream and not bit.is_file():
        raise FileNotFoundError(f"--bitstream {bit}: {'not a file' if bit.exists() else 'not found'}"
                                f"; give the {b.bitstream_suffix} bitstream that {rebuild} "
                                f"writes, or leave --bitstream out to program that one")
    if not bit.is_file():
        raise FileNotFoundError(f"{bit} not found: run `softfloor flow --board {board} --out "
                                f"{out}` (or {rebuild}) first")
    with open(bit, "rb") as f:
        head = f.read(4096)
        f.seek(max(0, bit.stat().st_size - len(ICE40_END)))
        tail = f.read()
    magic = BITSTREAM_MAGIC[b.family]
    if magic not in head or (b.family == "ice40" and tail != ICE40_END):
        raise ArtifactError(f"{bit} is not a whole {b.family.upper()} bitstream for the {board} "
                            f"(no {magic.hex().upper()} {'sync word' if b.family == 'ice40' else 'preamble'}"
                            f"{' or wakeup command at its end' if b.family == 'ice40' else ''}; "
                            f"empty, truncated or another file): rerun {rebuild}")
    if bitstream:  # the user's own file
        return bit
    lin = Lineage(out, "program")
    path = out / "stages" / "board.json"
    rec = load_json(path, rerun=f"rerun {rebuild}") if path.exists() else {}
    if rec.get("board") != board or "bitstream_sha256" not in rec:
        raise StaleArtifact(f"{bit}: no record of building it in {path} (built by an older "
                            f"softfloor or for another board since): rerun {rebuild}")
    if rec["bitstream_sha256"] != sha256(bit):
        raise StaleArtifact(f"{bit} is not the bitstream `softfloor board` recorded building "
                            f"(changed since, truncated, or left by an interrupted run): rerun "
                            f"{rebuild}")
    from .flow import read_rtl
    read_rtl(lin)
    lin.read(MODEL_FILE)
    try:
        lin.adopt("board", descends=False)
    except StaleArtifact:
        raise StaleArtifact(f"{bit} was built from another model or RTL than the one in {out} "
                            f"now: rerun {rebuild}") from None
    return bit


def program(out, board: str, bitstream=None) -> str:
    """Program ``board`` with the built bitstream (checked by :func:`check_bitstream`); one
    clear error when the programmer or the board is missing. Returns the programmer's last
    line."""
    from .hw.boards import check_core, get_board
    b = get_board(board)
    man = Path(out) / "manifest.json"
    if man.is_file():
        check_core(json.loads(man.read_text()))
    bit = check_bitstream(out, board, bitstream)
    tool = b.programmer[0]
    exe = shutil.which(tool)
    if exe is None:
        hint = ("apt-get install fpga-icestorm" if tool == "iceprog"
                else "apt-get install openfpgaloader")
        raise RuntimeError(f"{tool} not found: install it ({hint}) to program the {board}")
    cmd = [exe] + [a.replace("{bitstream}", str(bit)) for a in b.programmer[1:]]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{tool} did not finish in 300 s: is the {board} connected?") from None
    text = (p.stdout + p.stderr).strip().splitlines()
    last = text[-1] if text else ""
    if p.returncode != 0:
        raise RuntimeError(f"{tool} failed (exit {p.returncode}): no {board} found or it did "
                           f"not accept the bitstream: {last}")
    return last
