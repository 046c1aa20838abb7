"""``softfloor`` command line: one subcommand per stage, ``flow`` runs them all.

Errors are printed as one clear line (``softfloor: error: ...``) with a non-zero exit; nothing
half-written is left behind by the stage that failed (files are written atomically).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import flow as flow_mod

DEVICES = ("up5k", "hx8k", "hx1k")  # kept in step with softfloor.hw.synth.DEVICES (tested)


def _surrogates() -> tuple[str, ...]:
    try:
        from .surrogates import SURROGATES
        return tuple(SURROGATES)
    except ImportError:  # torch missing: the training stages will say so
        return ()


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


def _common(p: argparse.ArgumentParser, default_out: str = "build/demo") -> None:
    p.add_argument("--out", type=Path, default=Path(default_out), metavar="DIR",
                   help=f"output directory (default {default_out})")
    p.add_argument("--quiet", action="store_true", help="print less")


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weight-bits", type=_bits(1, 8, "--weight-bits"), default=4)
    p.add_argument("--act-bits", type=_bits(1, 8, "--act-bits"), default=4)
    p.add_argument("--input-bits", type=_bits(1, 8, "--input-bits"), default=None,
                   help="input quantization bits (default: --act-bits)")
    sur = _surrogates()
    p.add_argument("--surrogate", choices=sur or None, default=None,
                   help="surrogate of round/floor used in training (default: the trainer's)")
    p.add_argument("--batchnorm", action=argparse.BooleanOptionalAction, default=None,
                   help="BatchNorm after the hidden layers, folded before export "
                        "(default: on when weights or activations are 1-bit)")
    p.add_argument("--epochs", type=_bits(1, 10000, "--epochs"), default=60)
    p.add_argument("--seed", type=int, default=0)


def _sim_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--simulator", choices=flow_mod.SIMULATOR_CHOICES, default="both")
    p.add_argument("--waves", action="store_true", help="dump a waveform and print its path")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="softfloor", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("flow", help="run the whole chain: data -> train -> export -> golden -> "
                                    "rtl -> sim -> synth -> report")
    _common(p)
    _train_args(p)
    _sim_args(p)
    p.add_argument("--device", choices=DEVICES, default="up5k")
    p.add_argument("--no-synth", action="store_true", help="skip synthesis")
    p.add_argument("--model", type=Path, help="start from an existing integer model file "
                                              "(skips data, training, export)")
    p.add_argument("--inputs", type=Path, help="with --model: float inputs .npy, one row per sample")
    p.add_argument("--labels", type=Path, help="with --model: optional labels .npy")

    for name, helptext in [("data", "digits split, inputs quantized -> inputs.npz"),
                           ("train", "QAT + float baseline -> model.pt, train.json"),
                           ("export", "model.pt -> model.intmodel.json"),
                           ("golden", "integer model on inputs.npz -> vectors.npz"),
                           ("rtl", "model.intmodel.json -> Verilog + manifest.json"),
                           ("sim", "co-simulate vectors.npz through the Verilog"),
                           ("synth", "Yosys + nextpnr on the Verilog"),
                           ("report", "assemble report.json from the stage records")]:
        p = sub.add_parser(name, help=helptext)
        _common(p)
        if name in ("data", "train"):
            _train_args(p)
        if name == "sim":
            _sim_args(p)
        if name == "synth":
            p.add_argument("--device", choices=DEVICES, default="up5k")

    p = sub.add_parser("info", help="validate an integer model file and print its summary")
    p.add_argument("model", type=Path)
    return ap


def _options(args: argparse.Namespace) -> flow_mod.FlowOptions:
    o = flow_mod.FlowOptions(out=args.out, quiet=getattr(args, "quiet", False))
    for k in ("weight_bits", "act_bits", "input_bits", "surrogate", "batchnorm", "epochs",
              "seed", "simulator", "device", "model", "inputs", "labels", "waves"):
        if hasattr(args, k):
            setattr(o, k, getattr(args, k))
    if hasattr(args, "no_synth"):
        o.synth = not args.no_synth
    return o


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from .intmodel import ModelFormatError
    known = (ModelFormatError, ValueError, FileNotFoundError, RuntimeError, OSError)
    try:
        if args.command == "info":
            from . import intmodel
            print(intmodel.load(args.model).summary())
            return 0
        opts = _options(args)
        if args.command == "flow":
            rep = flow_mod.flow(opts)
            bad = [s for s, b in rep["bit_exact"].items() if b["mismatches"]]
            if bad:
                print(f"softfloor: error: RTL differs from the golden model on {', '.join(bad)}; "
                      f"see {opts.out / 'report.json'}", file=sys.stderr)
                return 1
            return 0
        ctx = flow_mod.Context(opts)
        if args.command == "report":
            print(flow_mod.format_table(flow_mod.report(ctx)))
        else:
            flow_mod.run_stage(ctx, args.command)
        return 0
    except known as e:
        print(f"softfloor: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("softfloor: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
