"""The flow: every stage of the chain, each reading only the artifact of the stage before it.

This is the one module that knows every stage. Each stage is a function ``stage(ctx)`` that
reads files from the output directory and writes its own, plus a small JSON record
(``stages/<stage>.json``) from which :func:`report` assembles ``report.json``.

Artifacts in ``DIR``::

    inputs.npz              codes (integer input codes), x (the real inputs),  data / inputs
                            labels (optional); codes re-made by export
                            from the model file's input quantizer
    model.pt, train.json    the trained torch model and its accuracies        train
    model.intmodel.json     the integer model file                            export
    vectors.npz             inputs, golden, rtl_<simulator>                   golden / sim
    softfloor_top.v, manifest.json                                           rtl
    synth/                  Yosys and nextpnr logs                            synth
    report.json                                                               report
"""
from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from . import golden, intmodel

MODEL_FILE = "model.intmodel.json"
SIMULATOR_CHOICES = ("verilator", "icarus", "both")
#: Network architectures of the train stage (kept in step with softfloor.train.ARCHS, tested).
ARCHS = ("mlp", "cnn")
#: Hidden activations of the train stage (kept in step with softfloor.models.ACTIVATIONS, tested).
ACTIVATIONS = ("relu", "hardtanh")
#: Scale kinds of the train stage (kept in step with softfloor.quant.SCALES, tested).
SCALES = ("po2", "free")
#: What the exported network outputs: its logits, or the class index (an argmax op at the end).
OUTPUTS = ("logits", "class")


@dataclass
class FlowOptions:
    """Everything the stages may be told. Defaults are the embedded default run."""
    out: Path = Path("build/demo")
    arch: str = "mlp"              # network trained: "mlp" or "cnn"
    per_channel: bool = False      # per-output-channel weight scales (hidden layers)
    activation: str = "relu"       # hidden activations: "relu" (unsigned) or "hardtanh" (signed)
    scales: str = "po2"            # "po2" (shift-only requant) or "free" (multiplier + shift)
    weight_bits: int = 4
    act_bits: int = 4
    first_weight_bits: int | None = None  # the first layer's weight bits (None: weight_bits)
    input_bits: int | None = None
    input_quant: str | None = None  # "global", "per_pixel", "learned" (None: trainer's default)
    surrogate: str | None = None
    batchnorm: bool | None = None  # None: the trainer's default
    augment_shift: int | None = None    # training augmentation (None: the trainer's default)
    augment_noise: float | None = None
    lr_schedule: str | None = None   # "cosine", "flat_cosine" (None: trainer's default)
    binary_act_grad: str | None = None  # "box", "triangle" (None: trainer's default)
    epochs: int = 60
    seed: int = 0
    simulator: str = "both"
    device: str = "up5k"
    objective: str = "throughput"  # folding planner objective (rtl): throughput or latency
    fold: tuple = ()               # per-layer folding overrides "LAYER=PExSIMD" (rtl)
    plan: Path | None = None       # a plan file to build instead of the planner's (rtl)
    plan_out: Path | None = None   # write the plan of the rtl stage here (rtl)
    allow_overfit: bool = False    # build a design whose estimate exceeds the device (rtl)
    output: str = "logits"         # what the network outputs: "logits" or "class" (export)
    synth: bool = True
    synth_cache: Path | None = None  # cache of synthesis results by Verilog hash + device
    board: str | None = None       # board top + bitstream (board stage): icebreaker, ulx3s, ...
    baud: int = 115200             # the board's UART baud rate
    model: Path | None = None      # an existing integer model file: skip data/train/export
    inputs: Path | None = None     # float inputs (.npy), one row per sample
    labels: Path | None = None     # optional labels (.npy)
    waves: bool = False
    quiet: bool = False

    def simulators(self) -> list[str]:
        if self.simulator not in SIMULATOR_CHOICES:
            raise ValueError(f"unknown simulator {self.simulator!r}; choose one of "
                             f"{', '.join(SIMULATOR_CHOICES)}")
        return ["verilator", "icarus"] if self.simulator == "both" else [self.simulator]


@dataclass
class Context:
    opts: FlowOptions
    timings: dict = field(default_factory=dict)

    @property
    def out(self) -> Path:
        return Path(self.opts.out)

    def say(self, msg: str) -> None:
        if not self.opts.quiet:
            print(msg, flush=True)

    def record(self, stage: str, data: dict) -> None:
        d = self.out / "stages"
        d.mkdir(parents=True, exist_ok=True)
        intmodel.atomic_write_text(d / f"{stage}.json", json.dumps(data, indent=1) + "\n")

    def recorded(self, stage: str) -> dict:
        p = self.out / "stages" / f"{stage}.json"
        return json.loads(p.read_text()) if p.exists() else {}

    def need(self, name: str, stage: str) -> Path:
        p = self.out / name
        if not p.exists():
            raise FileNotFoundError(f"{p} not found: run `softfloor {stage} --out {self.out}` first")
        return p


# ----------------------------------------------------------------------------------------------
# Stages

def stage_data(ctx: Context) -> None:
    """Digits, stratified 80/20 split (random_state=0), pixels quantized to the input bits."""
    from . import train
    cfg = _train_config(ctx.opts)
    split = train.digits_split(cfg)
    np.savez(ctx.out / "dataset.npz", c_train=split.c_train, y_train=split.y_train,
             c_test=split.c_test, y_test=split.y_test)
    np.savez(ctx.out / "inputs.npz", codes=split.c_test, x=split.x_test, labels=split.y_test)
    ctx.record("data", {"dataset": "sklearn digits", "train": len(split.y_train),
                        "test": len(split.y_test), "input_bits": split.input_spec.bits,
                        "input_quant": cfg.input_quantizer})


def stage_inputs(ctx: Context) -> None:
    """Float inputs of a user's model, quantized with the model file's input spec."""
    o = ctx.opts
    model = intmodel.load(ctx.need(MODEL_FILE, "flow"))
    try:
        x = np.load(o.inputs)
    except (OSError, ValueError) as e:
        raise ValueError(f"{o.inputs}: cannot read float inputs as .npy: {e}") from None
    codes = model.input.quantize(x)
    arrays = {"codes": codes, "x": x}
    if o.labels is not None:
        labels = np.load(o.labels)
        if labels.shape != (len(codes),):
            raise ValueError(f"{o.labels}: expected {len(codes)} labels, got shape {labels.shape}")
        arrays["labels"] = labels.astype(np.int64)
    np.savez(ctx.out / "inputs.npz", **arrays)
    ctx.record("data", {"dataset": str(o.inputs), "test": len(codes)})


def _train_config(o: FlowOptions):
    """The training configuration the flow's options ask for."""
    from . import train
    return train.TrainConfig(arch=o.arch, per_channel=o.per_channel, activation=o.activation,
                             scales=o.scales,
                             weight_bits=o.weight_bits, act_bits=o.act_bits,
                             first_weight_bits=o.first_weight_bits,
                             input_bits=o.input_bits, input_quant=o.input_quant,
                             epochs=o.epochs, seed=o.seed,
                             batchnorm=o.batchnorm, augment_shift=o.augment_shift,
                             augment_noise=o.augment_noise, lr_schedule=o.lr_schedule,
                             binary_act_grad=o.binary_act_grad,
                             **({"surrogate": o.surrogate} if o.surrogate else {}))


def stage_train(ctx: Context) -> None:
    """Quantization-aware training with an annealed surrogate, plus a float baseline."""
    from . import train
    o = ctx.opts
    cfg = _train_config(o)
    split = train.digits_split(cfg)
    progress = _epoch_progress(ctx)
    fl = train.train_float(cfg, split, progress=progress("float"))
    res = train.train_qat(cfg, split, progress=progress(f"QAT w{o.weight_bits}a{o.act_bits}"))
    train.save_checkpoint(res, ctx.out / "model.pt")
    info = {"config": train.config_dict(cfg), "accuracy_float": fl.test_accuracy,
            "accuracy_quantized": res.test_accuracy}
    if cfg.input_quantizer == "learned":
        from .data import scale_thresholds
        info["input_thresholds"] = scale_thresholds(res.input_spec.scale).tolist()
        info["input_thresholds_moved"] = res.history[-1]["thresholds_moved"]
    intmodel.atomic_write_text(ctx.out / "train.json", json.dumps(info, indent=1) + "\n")
    ctx.record("train", info)


def stage_export(ctx: Context) -> None:
    """Hard-quantized torch model -> integer model file."""
    from . import export, train
    res = train.load_checkpoint(ctx.need("model.pt", "train"))
    model = export.export(res.model, res.input_spec, name=f"digits-{res.config.arch}",
                          meta=json.loads(ctx.need("train.json", "train").read_text()))
    model = with_output(model, ctx.opts.output)
    intmodel.save(model, ctx.out / MODEL_FILE)
    ctx.say(model.summary())
    changed = _requantize_inputs(ctx, model)
    ctx.record("export", {"layers": len(model.layers), "macs": model.macs(),
                          "inputs_requantized": changed})


def with_output(model: intmodel.IntModel, output: str) -> intmodel.IntModel:
    """``model`` as it should end for ``output``: ``"logits"`` unchanged, ``"class"`` with an
    ``argmax`` op appended (the output stream carries the class index; a model that already
    ends in one is unchanged)."""
    if output not in OUTPUTS:
        raise ValueError(f"unknown output {output!r}; choose one of {', '.join(OUTPUTS)}")
    if output == "logits" or isinstance(model.layers[-1], intmodel.Argmax):
        return model
    if model.output.per_channel:
        raise ValueError(f"{model.name}: --output class: the output has one scale per class, so "
                         f"its codes are not comparable across classes; keep --output logits")
    if len(model.output_shape) != 1:
        raise ValueError(f"{model.name}: --output class needs a flat output, not "
                         f"{model.output_shape}")
    names = {layer.name for layer in model.layers}
    name = next(n for n in ("argmax", "class", "argmax_out") if n not in names)
    return intmodel.IntModel(model.input, list(model.layers) +
                             [intmodel.Argmax(name, model.output_size)],
                             intmodel.OutputSpec(1.0), model.name, dict(model.meta))


def _requantize_inputs(ctx: Context, model: intmodel.IntModel) -> int | None:
    """Make ``inputs.npz``'s codes those of the model file's input quantizer (a trained one,
    e.g. learned input thresholds, differs from the data stage's); returns how many samples
    changed (None: the inputs carry no real values, e.g. written by an older version)."""
    path = ctx.need("inputs.npz", "data")
    inp = dict(np.load(path))
    if "x" not in inp:
        return None
    codes = model.input.quantize(inp["x"])
    changed = int(np.sum(np.any(codes != inp["codes"], axis=1)))
    if changed:
        inp["codes"] = codes
        tmp = path.with_name(f".{path.stem}.tmp.npz")
        np.savez(tmp, **inp)
        tmp.replace(path)
    return changed


def stage_golden(ctx: Context) -> None:
    """Golden integer model on the test inputs."""
    model = intmodel.load(ctx.need(MODEL_FILE, "export"))
    inp = np.load(ctx.need("inputs.npz", "data"))
    codes = inp["codes"]
    t0 = time.perf_counter()
    out = golden.run(model, codes)
    dt = time.perf_counter() - t0
    _save_vectors(ctx, inputs=codes, golden=out)
    rec = {"samples": len(codes), "seconds": dt}
    if "labels" in inp:
        rec["accuracy"] = float(np.mean(golden.classify(model, out) == inp["labels"]))
    ctx.record("golden", rec)


def stage_rtl(ctx: Context) -> None:
    """Integer model file -> one Verilog file + manifest.json (and the plan file if asked)."""
    from softfloor.hw import generate, planfile, planner
    o = ctx.opts
    model = intmodel.load(ctx.need(MODEL_FILE, "export"))
    if o.plan is not None:
        if o.fold:
            raise ValueError("give --plan or --fold, not both (edit the plan file's pe/simd)")
        plan = planfile.read_plan(o.plan, model, o.device)
    else:
        overrides = dict(planner.parse_fold(f) for f in (o.fold or ()))
        plan = planner.plan(model, o.device, o.objective, overrides)
    ctx.say(str(plan))
    if o.plan_out is not None:
        planfile.write_plan(plan, o.plan_out)
        ctx.say(f"  plan written to {o.plan_out}")
    if not o.allow_overfit:
        plan.check_fits()
    man = generate.generate(model, ctx.out, device=o.device, folding=plan).manifest
    _write_core(ctx, man)
    ctx.record("rtl", {"top": man["top"], "cycles_per_inference": man["cycles_per_inference"],
                       "initiation_interval": man["initiation_interval"],
                       "mac_units": man["mac_units"], "plan": man.get("plan"),
                       "plan_file": str(o.plan) if o.plan is not None else None})


def stage_sim(ctx: Context) -> None:
    """cocotb co-simulation of every test sample on each requested simulator."""
    from softfloor.sim import cosim
    man = json.loads(ctx.need("manifest.json", "rtl").read_text())
    verilog = ctx.need(f"{man['top']}.v", "rtl")
    vec = dict(np.load(ctx.need("vectors.npz", "golden")))
    inp = np.load(ctx.need("inputs.npz", "data"))
    rec = {}
    for sim in ctx.opts.simulators():
        ctx.say(f"  co-simulating {len(vec['inputs'])} samples on {sim} ...")
        r = cosim.cosimulate(verilog, man, vec["inputs"], sim, ctx.out / "cosim",
                             expected=vec["golden"], waves=ctx.opts.waves)
        vec[f"rtl_{sim}"] = r.outputs
        n = min(len(r.outputs), len(vec["golden"]))
        mism = int(np.sum(np.any(r.outputs[:n] != vec["golden"][:n], axis=1))) + \
            abs(len(vec["golden"]) - len(r.outputs))
        rec[sim] = {"samples": int(len(vec["golden"])), "mismatches": mism,
                    "latency_cycles": r.latency_cycles,
                    "initiation_interval": r.initiation_interval,
                    "build_seconds": round(r.build_seconds, 2),
                    "run_seconds": round(r.run_seconds, 2),
                    "first_mismatches": r.first_mismatches[:5]}
        if "labels" in inp and len(r.outputs) == len(inp["labels"]):
            model = intmodel.load(ctx.out / MODEL_FILE)  # per-channel output scales: real argmax
            rec[sim]["accuracy"] = float(np.mean(golden.classify(model, r.outputs)
                                                  == inp["labels"]))
        if r.waves:
            rec[sim]["waves"] = r.waves
        ctx.say(f"    {r}")
        if mism:
            # Locate the fault: first bad layer and element, from engine-output probes + waves.
            from softfloor.sim import diagnose
            try:
                d = diagnose.diagnose(intmodel.load(ctx.need(MODEL_FILE, "export")), man,
                                      verilog, vec["inputs"], vec["golden"], r.outputs, sim,
                                      ctx.out / "cosim" / "diagnose")
            except Exception as e:  # the mismatch counts stand; say why there is no diagnosis
                d = None
                rec[sim]["diagnosis_error"] = f"{type(e).__name__}: {e}"[:2000]
                ctx.say(f"    MISMATCH -- diagnosis failed: {rec[sim]['diagnosis_error']}")
            if d is not None:
                rec[sim].update(first_bad_layer=d.first_bad_layer,
                                first_bad_instance=d.first_bad_instance,
                                diagnosis=d.to_dict(), diagnosis_waves=d.waves)
                ctx.say("    MISMATCH -- " + str(d).replace("\n", "\n    "))
    _save_vectors(ctx, **vec)
    ctx.record("sim", rec)


def stage_synth(ctx: Context) -> None:
    """Yosys synth_ice40 + nextpnr-ice40: logic cells, FFs, DSPs, RAM blocks, Fmax."""
    from softfloor.hw import synth
    synth.get_device(ctx.opts.device)
    man = json.loads(ctx.need("manifest.json", "rtl").read_text())
    verilog = ctx.need(f"{man['top']}.v", "rtl")
    progress = lambda m: ctx.say(f"  {m} ...")  # noqa: E731
    rec = {}
    if ctx.opts.synth_cache is not None:
        from . import synth_cache
        r, key, hit = synth_cache.synthesize(verilog, man["top"], ctx.out / "synth",
                                             ctx.opts.device, ctx.opts.synth_cache, progress)
        rec = {"cache": "hit" if hit else "miss", "cache_key": key}
    else:
        r = synth.synthesize(verilog, man["top"], ctx.out / "synth", ctx.opts.device,
                             progress=progress)
    ctx.say(f"    {r}")
    ctx.record("synth", r.to_dict() | rec)


def _write_core(ctx: Context, man: dict, boards: dict | None = None) -> None:
    """The FuseSoC core file beside the Verilog (its Icarus target checks the golden vectors,
    when the golden stage has written them)."""
    from .hw import fusesoc
    path = ctx.out / "vectors.npz"
    if not path.exists():
        fusesoc.write_core(ctx.out, man, None, None, boards)
        return
    vec = np.load(path)
    n = min(len(vec["inputs"]), 32)
    fusesoc.write_core(ctx.out, man, vec["inputs"][:n], vec["golden"][:n], boards)


def stage_board(ctx: Context) -> None:
    """Board top (UART link + PLL + pins) -> bitstream, then the link simulated end to end."""
    from .board import board_stage
    rec = board_stage(ctx.out, ctx.opts.board, baud=ctx.opts.baud,
                      bare=ctx.recorded("synth"), say=ctx.say)
    man = json.loads(ctx.need("manifest.json", "rtl").read_text())
    _write_core(ctx, man, rec.pop("fusesoc_boards"))
    ctx.record("board", rec)


STAGES: dict[str, Callable[[Context], None]] = {
    "data": stage_data, "train": stage_train, "export": stage_export, "golden": stage_golden,
    "rtl": stage_rtl, "sim": stage_sim, "synth": stage_synth, "board": stage_board,
}


def run_stage(ctx: Context, name: str, fn=None) -> None:
    ctx.out.mkdir(parents=True, exist_ok=True)
    ctx.say(f"[{name}]")
    t0 = time.monotonic()
    (fn or STAGES[name])(ctx)
    ctx.timings[name] = round(time.monotonic() - t0, 2)
    times = ctx.recorded("timings")
    times[name] = ctx.timings[name]
    ctx.record("timings", times)


def flow(opts: FlowOptions) -> dict:
    """Run the whole chain into ``opts.out`` and return the report."""
    ctx = Context(opts)
    opts.simulators()  # validate before spending minutes on training
    if opts.output not in OUTPUTS:
        raise ValueError(f"unknown output {opts.output!r}; choose one of {', '.join(OUTPUTS)}")
    if opts.plan is not None and not Path(opts.plan).is_file():
        raise FileNotFoundError(f"{opts.plan}: plan file not found (write one with "
                                f"`softfloor rtl --plan-out {opts.plan}`)")
    if opts.board:
        from .board import check_board_device
        opts.device = check_board_device(opts.board, opts.device)
    if opts.synth:
        from softfloor.hw import synth
        synth.get_device(opts.device)
    out = ctx.out
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("report.json", "vectors.npz"):
        (out / stale).unlink(missing_ok=True)
    shutil.rmtree(out / "stages", ignore_errors=True)
    if opts.model is not None:
        if opts.inputs is None:
            raise ValueError("--model needs --inputs INPUTS.npy (float inputs, one row per sample)")
        model = with_output(intmodel.load(opts.model), opts.output)  # validates first
        intmodel.save(model, out / MODEL_FILE)
        run_stage(ctx, "data", stage_inputs)
        steps = ["golden", "rtl", "sim"]
    else:
        steps = ["data", "train", "export", "golden", "rtl", "sim"]
    for name in steps:
        run_stage(ctx, name)
    if opts.synth:
        run_stage(ctx, "synth")
    if opts.board:
        run_stage(ctx, "board")
    rep = report(ctx)
    ctx.say(format_table(rep))
    return rep


# ----------------------------------------------------------------------------------------------
# Report

def report(ctx: Context) -> dict:
    """Assemble ``report.json`` from the stage records."""
    tr, gd, sm, sy = (ctx.recorded(s) for s in ("train", "golden", "sim", "synth"))
    man_path = ctx.out / "manifest.json"
    man = json.loads(man_path.read_text()) if man_path.exists() else {}
    rtl_acc = [v["accuracy"] for v in sm.values() if "accuracy" in v]
    measured_ii = [v["initiation_interval"] for v in sm.values() if v.get("initiation_interval")]
    measured_lat = [v["latency_cycles"] for v in sm.values() if v.get("latency_cycles")]
    rep = {
        "accuracy": {
            "float": tr.get("accuracy_float"),
            "quantized": tr.get("accuracy_quantized"),
            "golden": gd.get("accuracy"),
            "rtl": min(rtl_acc) if rtl_acc else None,
            **{f"rtl_{k}": v["accuracy"] for k, v in sm.items() if "accuracy" in v},
        },
        "bit_exact": {k: {"samples": v["samples"], "mismatches": v["mismatches"],
                          "first_mismatches": v.get("first_mismatches", []),
                          **{f: v[f] for f in ("first_bad_layer", "first_bad_instance",
                                               "diagnosis", "diagnosis_waves",
                                               "diagnosis_error") if f in v}}
                      for k, v in sm.items()},
        "hardware": {
            "cycles_per_inference": max(measured_lat) if measured_lat
            else man.get("cycles_per_inference"),
            "initiation_interval": max(measured_ii) if measured_ii
            else man.get("initiation_interval"),
            "cycles_per_inference_expected": man.get("cycles_per_inference"),
            "initiation_interval_expected": man.get("initiation_interval"),
            "mac_units": man.get("mac_units"),
            "macs_per_inference": man.get("macs_per_inference"),
            "plan": man.get("plan"),
            "simulators": {k: {"latency_cycles": v.get("latency_cycles"),
                               "initiation_interval": v.get("initiation_interval"),
                               "run_seconds": v.get("run_seconds")} for k, v in sm.items()},
        },
        "synth": ({k: sy.get(k) for k in ("device", "logic_cells", "ff", "dsp", "ram_blocks",
                                          "fmax_mhz", "io", "tools")}
                  | ({"cache": sy["cache"]} if "cache" in sy else {})
                  if sy else {"device": ctx.opts.device, "skipped": True, "logic_cells": None,
                              "ff": None, "dsp": None, "ram_blocks": None, "fmax_mhz": None}),
        "timings": ctx.recorded("timings"),
        **({"board": ctx.recorded("board")} if ctx.recorded("board") else {}),
        "model": str(ctx.out / MODEL_FILE),
        "config": tr.get("config"),
    }
    if sy and sy.get("fmax_mhz") and rep["hardware"]["initiation_interval"]:
        rep["hardware"]["inferences_per_second"] = round(
            sy["fmax_mhz"] * 1e6 / rep["hardware"]["initiation_interval"], 1)
    intmodel.atomic_write_text(ctx.out / "report.json", json.dumps(rep, indent=1) + "\n")
    return rep


def format_table(rep: dict) -> str:
    def pct(v):
        return "-" if v is None else f"{100 * v:.2f}%"
    rows = [("accuracy float", pct(rep["accuracy"]["float"])),
            ("accuracy quantized (torch, hard)", pct(rep["accuracy"]["quantized"])),
            ("accuracy golden (integer model)", pct(rep["accuracy"]["golden"])),
            ("accuracy RTL", pct(rep["accuracy"]["rtl"]))]
    for sim, b in rep["bit_exact"].items():
        rows.append((f"bit-exact {sim}", f"{b['samples'] - b['mismatches']}/{b['samples']} "
                                         f"({b['mismatches']} mismatches)"))
    hw = rep["hardware"]
    rows += [("cycles per inference (measured)", hw["cycles_per_inference"]),
             ("initiation interval (measured)", hw["initiation_interval"]),
             ("MAC units / MACs per inference", f"{hw['mac_units']} / {hw['macs_per_inference']}")]
    sy = rep["synth"]
    if not sy.get("skipped"):
        rows += [(f"{sy['device']} logic cells / FF", f"{sy['logic_cells']} / {sy['ff']}"),
                 ("DSP / RAM blocks", f"{sy['dsp']} / {sy['ram_blocks']}"),
                 ("Fmax", f"{sy['fmax_mhz']} MHz"),
                 ("inferences/s (Fmax / II)", hw.get("inferences_per_second"))]
    bd = rep.get("board")
    if bd:
        lk = bd.get("link", {})
        rows += [(f"board {bd['board']} logic cells / FF", f"{bd['logic_cells']} / {bd['ff']}"),
                 ("board PLL clock / Fmax", f"{bd['pll_mhz']} / {bd['fmax_mhz']} MHz"),
                 ("bitstream", f"{bd['bitstream']} ({bd['bitstream_bytes']} bytes)"),
                 (f"link bit-exact ({lk.get('simulator')})",
                  f"{lk.get('samples', 0) - lk.get('mismatches', 0)}/{lk.get('samples')}"),
                 (f"inferences/s through the UART at {bd['baud']} baud",
                  lk.get("inferences_per_second"))]
    rows += [(f"time {k}", f"{v:.1f} s") for k, v in rep["timings"].items()]
    w = max(len(r[0]) for r in rows)
    line = "-" * (w + 26)
    return "\n".join([line] + [f"{k:<{w}}  {v}" for k, v in rows] + [line])


def _save_vectors(ctx: Context, **arrays) -> None:
    path = ctx.out / "vectors.npz"
    if path.exists():
        old = dict(np.load(path))
        old.update(arrays)
        arrays = old
    np.savez(path, **arrays)


def _epoch_progress(ctx: Context):
    def make(label: str):
        if ctx.opts.quiet:
            return None
        tty = sys.stdout.isatty()

        def progress(epoch: int, epochs: int, info: dict | None = None):
            extra = " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                             for k, v in (info or {}).items())
            msg = f"  {label}: epoch {epoch}/{epochs} {extra}"
            if tty:
                print("\r" + msg, end="\n" if epoch >= epochs else "", flush=True)
            elif epoch == epochs or epoch % 10 == 0:
                print(msg, flush=True)
        return progress
    return make
