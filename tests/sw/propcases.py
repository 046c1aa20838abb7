"""Examples of the property test for ``sweep`` and ``program``: sweep specs spoiled one way or
another (as TOML text), and a built board of a flow directory (a well-formed bitstream and the
board stage's record) with fake programmers."""
from __future__ import annotations

import copy
import json
import stat
from pathlib import Path

from hypothesis import strategies as st

from softfloor import board as board_mod
from softfloor import provenance
from softfloor.flow import read_rtl
from softfloor.hw import boards

#: A valid spec: 2 x 2 points less one excluded. Never run: the test stops the sweep at Ray.
BASE_SPEC = {"name": "prop", "stages": ["data", "train"], "fixed": {"epochs": 1},
             "axes": {"seed": [0, 1], "bits": [{"weight_bits": 2, "act_bits": 2},
                                               {"weight_bits": 4, "act_bits": 4}]},
             "exclude": [{"seed": 1, "weight_bits": 4}], "pareto": {"mean_over": ["seed"]}}

#: (where, value): each makes the spec invalid (``where`` a key path; value ``DELETE`` drops it).
DELETE = object()
SPOILS = (
    (("bogus",), 1), (("axes",), DELETE), (("axes",), {}), (("axes",), [1]),
    (("axes", "bitz"), [1, 2]), (("axes", "device"), ["xc7"]), (("axes", "weight_bits"), [0]),
    (("axes", "seed"), "0"), (("axes", "seed"), []), (("axes", "seed"), [0, {"seed": 1}]),
    (("axes", "seed"), [-1]), (("axes", "seed"), [9223372036854775807]),
    (("axes", "seed"), [1.5]), (("axes", "bits"), [{"weight_bits": 4, "bogus": 1}]),
    (("axes", "surrogate"), ["bogus"]), (("axes", "fold"), [["fc0=0x2"]]),
    (("axes", "fold"), [[3]]), (("axes", "epochs"), [True]),
    (("fixed",), [1]), (("fixed", "epochs"), "many"), (("fixed", "epochs"), 0),
    (("fixed", "out"), "x"), (("fixed", "seed"), 0), (("fixed", "device"), "xc7"),
    (("fixed", "simulator"), "modelsim"), (("fixed", "fold"), "fc0=2x2"),
    (("stages",), ["sim"]), (("stages",), "data"), (("stages",), []),
    (("stages",), ["data", "bogus"]), (("stages",), [1, {"a": 1}]), (("stages",), ["golden"]),
    (("pareto",), 5), (("pareto", "mean_over"), "seed"), (("pareto", "mean_over"), ["nope"]),
    (("pareto", "mean_over"), [1]), (("pareto", "bogus"), 1), (("exclude",), {"seed": 1}),
    (("exclude",), [{}]), (("exclude",), [{"seed": "x"}]), (("name",), [1]),
)
#: What may be done to the spec's text after it is written (truncation may leave it valid).
TEXT = ("none", "truncate", "not-utf8", "duplicate", "garbage")
#: The sweep's paths and options.
PATHS = ("none", "spec-missing", "spec-dir", "out-file", "out-parent-file", "table-garbage",
         "table-truncated", "table-other", "table-resume", "cache-file", "cpus-0")
#: Of those, the ones that leave a valid sweep (it reaches Ray).
VALID_PATHS = ("none", "table-resume")


def toml(obj: dict) -> str:
    """``obj`` as TOML: top-level scalars and arrays, then one [table] per dict, [[exclude]]."""
    lines, tables = [], []
    for k, v in obj.items():
        if isinstance(v, dict):
            tables.append(f"\n[{k}]\n" + "".join(f"{kk} = {_value(vv)}\n" for kk, vv in v.items()))
        elif k == "exclude" and isinstance(v, list) and v and all(isinstance(e, dict) for e in v):
            tables.extend(f"\n[[exclude]]\n" + "".join(f"{kk} = {_value(vv)}\n"
                                                       for kk, vv in e.items()) for e in v)
        else:
            lines.append(f"{k} = {_value(v)}")
    return "\n".join(lines) + "\n" + "".join(tables)


def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{k} = {_value(x)}" for k, x in v.items()) + "}"


@st.composite
def sweep_examples(draw) -> dict:
    """A spec (spoiled or not), what happens to its text and paths, and the options."""
    spoils = draw(st.one_of(st.just([]), st.lists(st.sampled_from(SPOILS), min_size=1,
                                                  max_size=2)))
    text = draw(st.one_of(st.just("none"), st.sampled_from(TEXT)))
    paths = draw(st.one_of(st.sampled_from(VALID_PATHS), st.sampled_from(PATHS)))
    return {"spoils": spoils, "text": text, "paths": paths, "frac": draw(st.floats(0, 1)),
            "dry_run": draw(st.booleans()), "serial": draw(st.booleans()),
            "retry_failed": draw(st.booleans())}


def spec_text(ex: dict) -> bytes:
    spec = copy.deepcopy(BASE_SPEC)
    for where, value in ex["spoils"]:
        d = spec
        for k in where[:-1]:
            if not isinstance(d.get(k), dict):
                d[k] = {}
            d = d[k]
        if value is DELETE:
            d.pop(where[-1], None)
        else:
            d[where[-1]] = copy.deepcopy(value)
    data = toml(spec).encode()
    if ex["text"] == "truncate":
        data = data[:int(len(data) * ex["frac"])]
    elif ex["text"] == "not-utf8":
        data = data[:int(len(data) * ex["frac"])] + b"\xff\xfe" + data[int(len(data) * ex["frac"]):]
    elif ex["text"] == "duplicate":
        data += b'name = "again"\n'
    elif ex["text"] == "garbage":
        data = b"\x00[[[ = =\n" + data
    return data


def must_fail(ex: dict) -> bool:
    """The example cannot be a valid sweep (a dry run reads only the spec)."""
    paths = ex["paths"] in ("spec-missing", "spec-dir") if ex["dry_run"] else \
        ex["paths"] not in VALID_PATHS
    return bool(ex["spoils"]) or ex["text"] not in ("none", "truncate") or paths


# -- program


def fake_bitstream(path: Path, family: str, payload: bytes) -> Path:
    """A file with the structure of a ``family`` bitstream (not a design)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    end = board_mod.ICE40_END if family == "ice40" else b"\xff" * 4
    path.write_bytes(b"\xff\x00softfloor test\x00\xff" + board_mod.BITSTREAM_MAGIC[family]
                     + payload + end)
    return path


def fake_board(d: Path, board: str = "icebreaker") -> Path:
    """``d`` as after ``softfloor board --board board``: its bitstream (made of the Verilog's
    bytes) and the board record of the model and RTL now in ``d``."""
    b = boards.get_board(board)
    lin = provenance.Lineage(d, "board")
    _, verilog = read_rtl(lin)
    lin.read("model.intmodel.json")
    bit = fake_bitstream(board_mod.board_dir(d, board) / f"softfloor_board{b.bitstream_suffix}",
                         b.family, verilog.read_bytes()[:2000])
    rec = {"board": board, "bitstream_sha256": provenance.sha256(bit),
           "provenance": lin.record([])}
    (d / "stages" / "board.json").write_text(json.dumps(rec, indent=1))
    return bit


def programmers(root: Path) -> dict[str, Path]:
    """Directories for PATH: no programmer, programmers that find no board, programmers that
    succeed and log their arguments to the file ``$SF_PROGRAMMED``."""
    dirs = {"missing": root / "none"}
    dirs["missing"].mkdir(parents=True)
    for kind, script in (("no-board", "echo \"Can't find iCE FTDI USB device\" >&2\nexit 2\n"),
                         ("ok", "echo \"$@\" >> \"$SF_PROGRAMMED\"\necho VERIFY OK\n")):
        dirs[kind] = root / kind
        dirs[kind].mkdir()
        for tool in ("iceprog", "openFPGALoader"):
            p = dirs[kind] / tool
            p.write_text("#!/bin/sh\n" + script)
            p.chmod(p.stat().st_mode | stat.S_IEXEC)
    return dirs
