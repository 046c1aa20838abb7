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
    report.json, report.html                                                  report
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from . import golden, intmodel, userinputs
from . import progress as progress_mod
from .artifacts import ArtifactError, load_json, load_npz, save_npz
from .provenance import Lineage, sha256

MODEL_FILE = "model.intmodel.json"
SIMULATOR_CHOICES = ("verilator", "icarus", "both")
#: Network architectures of the train stage (kept in step with softfloor.train.ARCHS, tested);
#: ``--arch`` also takes ``mlp:WIDTHS``, ``cnn:SPEC`` and ``FILE.py:FUNCTION``
#: (:func:`softfloor.zoo.parse_arch`).
ARCHS = ("mlp", "cnn", "custom")
#: Data sets by name (kept in step with softfloor.data.DATASETS); ``--data`` also takes an .npz.
DATASETS = ("digits", "mnist5k")
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
    arch: str = "mlp"              # "mlp", "cnn", "mlp:WIDTHS", "cnn:SPEC" or "FILE.py:FUNCTION"
    data: str = "digits"           # "digits", "mnist5k" or an .npz data set
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
    clip: bool = False             # saturate inputs outside the model's calibrated range
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
    reads: dict = field(default_factory=dict)  # {file: sha256} the running stage needed
    _progress: progress_mod.Reporter | None = field(default=None, repr=False)

    @property
    def out(self) -> Path:
        return Path(self.opts.out)

    @property
    def progress(self) -> progress_mod.Reporter:
        """Progress of the long steps (:mod:`softfloor.progress`): live on a terminal, lines in
        a log, nothing with ``quiet``."""
        if self._progress is None:
            self._progress = progress_mod.reporter(self.opts.quiet)
        return self._progress

    def say(self, msg: str) -> None:
        if not self.opts.quiet:
            self.progress.say(msg)

    def record(self, stage: str, data: dict) -> None:
        d = self.out / "stages"
        d.mkdir(parents=True, exist_ok=True)
        intmodel.atomic_write_text(d / f"{stage}.json", json.dumps(data, indent=1) + "\n")

    def recorded(self, stage: str) -> dict:
        p = self.out / "stages" / f"{stage}.json"
        return load_json(p, rerun=f"rerun `softfloor {stage} --out {self.out}`") \
            if p.exists() else {}

    def lineage(self, stage: str) -> Lineage:
        """What ``stage`` reads, checked (:class:`softfloor.provenance.Lineage`); the files it
        reads are also hashed into :attr:`reads` (``stages/made_from.json``)."""
        return Lineage(self.out, stage, reads=self.reads)

    def need(self, name: str, stage: str) -> Path:
        """``DIR/name``, checked against the record of ``stage`` that wrote it (one file; a
        stage reading several uses :meth:`lineage`, which also checks them against each
        other)."""
        return self.lineage("?").read(name, stage)


# ----------------------------------------------------------------------------------------------
# Stages

def stage_data(ctx: Context) -> None:
    """The data set (digits by default: stratified 80/20 split, random_state=0), inputs
    quantized to the input bits; a data set file is checked before anything is written."""
    from . import train
    cfg = _train_config(ctx.opts)
    split = train.digits_split(cfg)
    save_npz(ctx.out / "dataset.npz", c_train=split.c_train, y_train=split.y_train,
             c_test=split.c_test, y_test=split.y_test)
    save_npz(ctx.out / "inputs.npz", codes=split.c_test, x=split.x_test, labels=split.y_test)
    lin = ctx.lineage("data")
    if cfg.data not in DATASETS:  # a data set file of the user's
        lin.source(cfg.data, "--data")
    ctx.record("data", {"dataset": "sklearn digits" if cfg.data == "digits" else cfg.data,
                        "train": len(split.y_train), "test": len(split.y_test),
                        "input_bits": split.input_spec.bits,
                        "input_quant": cfg.input_quantizer, "shape": list(split.shape),
                        "classes": split.classes,
                        "provenance": lin.record(["dataset.npz", "inputs.npz"])})


def stage_inputs(ctx: Context) -> None:
    """Float inputs of a user's model, quantized with the model file's input spec."""
    o = ctx.opts
    lin = ctx.lineage("data")
    model = intmodel.load(lin.read(MODEL_FILE, "model"))
    u = userinputs.load(model, lin.source(o.inputs, "--inputs"),
                        o.labels and lin.source(o.labels, "--labels"), clip=o.clip)
    arrays = {"codes": u.codes, "x": u.x}
    if u.labels is not None:
        arrays["labels"] = u.labels
    save_npz(ctx.out / "inputs.npz", **arrays)
    rec = {"dataset": str(o.inputs), "test": len(u.codes)}
    if u.clipped:
        rec["clipped_samples"] = u.clipped
        ctx.say(f"  --clip: {u.clipped} samples had values outside the calibrated range")
    ctx.record("data", rec | {"provenance": lin.record(["inputs.npz"])})


def _train_config(o: FlowOptions):
    """The training configuration the flow's options ask for."""
    from . import train
    from .zoo import parse_arch
    return train.TrainConfig(**parse_arch(o.arch), data=str(o.data),
                             per_channel=o.per_channel, activation=o.activation,
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
    with ctx.progress.epochs("float") as update:
        fl = train.train_float(cfg, split, progress=update)
    with ctx.progress.epochs(f"QAT w{o.weight_bits}a{o.act_bits}") as update:
        res = train.train_qat(cfg, split, progress=update)
    train.save_checkpoint(res, ctx.out / "model.pt")
    info = {"config": train.config_dict(cfg), "accuracy_float": fl.test_accuracy,
            "accuracy_quantized": res.test_accuracy,
            "input_range": [float(split.x_train.min()), float(split.x_train.max())]}
    if cfg.input_quantizer == "learned":
        from .data import scale_thresholds
        info["input_thresholds"] = scale_thresholds(res.input_spec.scale).tolist()
        info["input_thresholds_moved"] = res.history[-1]["thresholds_moved"]
    intmodel.atomic_write_text(ctx.out / "train.json", json.dumps(info, indent=1) + "\n")
    ctx.say(f"  test accuracy ({len(split.y_test)} samples): float {100 * fl.test_accuracy:.2f}%,"
            f" quantized {100 * res.test_accuracy:.2f}% (hard-quantized, as exported)")
    curves = {k: [{f: h[f] for f in ("epoch", "loss", "acc") if f in h} for h in r.history]
              for k, r in (("float", fl), ("quantized", res))}
    lin = ctx.lineage("train")
    if cfg.data not in DATASETS:  # a data set file of the user's
        lin.source(cfg.data, "--data")
    ctx.record("train", info | {"history": curves,
                                "provenance": lin.record(["model.pt", "train.json"])})


def stage_export(ctx: Context) -> None:
    """Hard-quantized torch model -> integer model file."""
    from . import train
    from .nn import exporter as export
    lin = ctx.lineage("export")
    res = train.load_checkpoint(lin.read("model.pt"))
    meta = load_json(lin.read("train.json"), rerun=f"rerun `softfloor train --out {ctx.out}`")
    inp = load_npz(lin.read("inputs.npz", only=("data", "model")), {"codes": "int"},
                   rerun=f"rerun `softfloor data --out {ctx.out}`")
    data = res.config.data if res.config.data in DATASETS else Path(res.config.data).stem
    model = export.export(res.model, res.input_spec, name=f"{data}-{res.config.arch}", meta=meta)
    model = with_output(model, ctx.opts.output)
    intmodel.save(model, ctx.out / MODEL_FILE)
    ctx.say(model.summary())
    changed = _requantize_inputs(ctx, model, inp)
    ctx.record("export", {"layers": len(model.layers), "macs": model.macs(),
                          "inputs_requantized": changed,
                          "provenance": lin.record([MODEL_FILE, "inputs.npz"])})


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


def _requantize_inputs(ctx: Context, model: intmodel.IntModel, inp: dict) -> int | None:
    """Make ``inputs.npz``'s codes (``inp``) those of the model file's input quantizer (a
    trained one, e.g. learned input thresholds, differs from the data stage's); returns how
    many samples changed (None: the inputs carry no real values, e.g. written by an older
    version)."""
    if "x" not in inp:
        return None
    codes = model.input.quantize(inp["x"])
    changed = int(np.sum(np.any(codes != inp["codes"], axis=1)))
    if changed:
        save_npz(ctx.out / "inputs.npz", **(inp | {"codes": codes}))
    return changed


def stage_golden(ctx: Context) -> None:
    """Golden integer model on the test inputs."""
    lin = ctx.lineage("golden")
    model = intmodel.load(lin.read(MODEL_FILE))
    inp = _read_inputs(ctx, lin, model)
    codes = inp["codes"]
    t0 = time.perf_counter()
    out = golden.run(model, codes)
    dt = time.perf_counter() - t0
    save_npz(ctx.out / "vectors.npz", inputs=codes, golden=out)  # no older rtl_* beside it
    rec = {"samples": len(codes), "seconds": dt}
    if "labels" in inp:
        rec["accuracy"] = float(np.mean(golden.classify(model, out) == inp["labels"]))
    ctx.record("golden", rec | {"provenance": lin.record(["vectors.npz"])})


def _read_inputs(ctx: Context, lin: Lineage, model: intmodel.IntModel) -> dict:
    """``inputs.npz`` checked against ``model``: codes of its input size, made by its input
    quantizer (when the real inputs are stored), labels one per sample."""
    path = lin.read("inputs.npz")
    inp = load_npz(path, {"codes": "int"}, rerun=f"rerun `softfloor data --out {ctx.out}`")
    codes = inp["codes"]
    if codes.ndim != 2 or len(codes) == 0 or codes.shape[1] != model.input.size:
        raise ArtifactError(f"{path}: codes of shape {codes.shape}, the model "
                            f"{ctx.out / MODEL_FILE} expects (N, {model.input.size}) with N >= 1; "
                            f"rerun `softfloor data --out {ctx.out}`")
    if "x" in inp and not np.array_equal(model.input.quantize(inp["x"]), codes):
        raise ArtifactError(f"{path}: codes are not {ctx.out / MODEL_FILE}'s quantization of its "
                            f"inputs x; rerun `softfloor export --out {ctx.out}`")
    if "labels" in inp and inp["labels"].shape != (len(codes),):
        raise ArtifactError(f"{path}: {inp['labels'].shape} labels for {len(codes)} samples; "
                            f"rerun `softfloor data --out {ctx.out}`")
    return inp


def stage_rtl(ctx: Context) -> None:
    """Integer model file -> one Verilog file + manifest.json (and the plan file if asked)."""
    from softfloor.hw import generate, planfile, planner
    o = ctx.opts
    lin = ctx.lineage("rtl")
    model = intmodel.load(lin.read(MODEL_FILE))
    if o.plan is not None:
        if o.fold:
            raise ValueError("give --plan or --fold, not both (edit the plan file's pe/simd)")
        plan = planfile.read_plan(o.plan, model, o.device)
        lin.source(o.plan, "--plan")
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
                       "plan_text": str(plan),
                       "plan_file": str(o.plan) if o.plan is not None else None,
                       "provenance": lin.record([f"{man['top']}.v", "manifest.json"]
                                                + ([man["weight_load"]["file"]]
                                                   if man.get("weight_load") else []))})


def stage_sim(ctx: Context) -> None:
    """cocotb co-simulation of every test sample on each requested simulator."""
    from softfloor.sim import cosim
    lin = ctx.lineage("sim")
    man, verilog = read_rtl(lin)
    vec = load_npz(lin.read("vectors.npz"), {"inputs": "int", "golden": "int"},
                   rerun=f"rerun `softfloor golden --out {ctx.out}`")
    model = intmodel.load(lin.read(MODEL_FILE))
    inp = _read_inputs(ctx, lin, model)
    if not np.array_equal(vec["inputs"], inp["codes"]):
        raise ArtifactError(f"{ctx.out / 'vectors.npz'}: inputs differ from "
                            f"{ctx.out / 'inputs.npz'}; rerun `softfloor golden --out {ctx.out}`")
    rec = {}
    for sim in ctx.opts.simulators():
        ctx.say(f"  co-simulating {len(vec['inputs'])} samples on {sim} ...")
        with ctx.progress.counter(sim, len(vec["inputs"])) as update:
            r = cosim.cosimulate(verilog, man, vec["inputs"], sim, ctx.out / "cosim",
                                 expected=vec["golden"], waves=ctx.opts.waves, progress=update)
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
            rec[sim]["accuracy"] = float(np.mean(golden.classify(model, r.outputs)
                                                  == inp["labels"]))
        if r.waves:
            rec[sim]["waves"] = r.waves
        ctx.say(f"    {r}")
        if mism:
            # Locate the fault: first bad layer and element, from engine-output probes + waves.
            from softfloor.sim import diagnose
            try:
                d = diagnose.diagnose(model, man,
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
    save_npz(ctx.out / "vectors.npz", **vec)
    ctx.record("sim", rec | {"provenance": lin.record(["vectors.npz"])})


def read_rtl(lin: Lineage) -> tuple[dict, Path]:
    """``manifest.json`` and the Verilog it names, both checked against the rtl record."""
    rerun = f"rerun `softfloor rtl --out {lin.out}`"
    man = load_json(lin.read("manifest.json"), ("top",), rerun=rerun)
    if not isinstance(man["top"], str) or not man["top"].isidentifier():
        raise ArtifactError(f"{lin.out / 'manifest.json'}: field 'top' is not a module name; "
                            f"{rerun}")
    if man.get("weight_load"):         # the SPRAM weight image the testbench loads
        lin.read(man["weight_load"]["file"], "rtl")
    return man, lin.read(f"{man['top']}.v", "rtl")


def stage_synth(ctx: Context) -> None:
    """Yosys synth_ice40 + nextpnr-ice40: logic cells, FFs, DSPs, RAM blocks, Fmax."""
    from softfloor.hw import synth
    synth.get_device(ctx.opts.device)
    lin = ctx.lineage("synth")
    man, verilog = read_rtl(lin)
    rec = {}
    with ctx.progress.steps("synth") as progress:
        if ctx.opts.synth_cache is not None:
            from . import synth_cache
            r, key, hit = synth_cache.synthesize(verilog, man["top"], ctx.out / "synth",
                                                 ctx.opts.device, ctx.opts.synth_cache, progress)
            rec = {"cache": "hit" if hit else "miss", "cache_key": key}
        else:
            r = synth.synthesize(verilog, man["top"], ctx.out / "synth", ctx.opts.device,
                                 progress=progress)
    ctx.say(f"    {r}")
    ctx.record("synth", r.to_dict() | rec | {"provenance": lin.record([])})


def _write_core(ctx: Context, man: dict, boards: dict | None = None) -> None:
    """The FuseSoC core file beside the Verilog (its Icarus target checks the golden vectors,
    when the golden stage has written them)."""
    from .hw import fusesoc
    path = ctx.out / "vectors.npz"
    try:  # the golden vectors of this model only
        lin = Lineage(ctx.out, "rtl")
        lin.read(MODEL_FILE)
        lin.read("vectors.npz")
    except ArtifactError:
        fusesoc.write_core(ctx.out, man, None, None, boards)
        return
    vec = load_npz(path, {"inputs": "int", "golden": "int"},
                   rerun=f"rerun `softfloor golden --out {ctx.out}`")
    n = min(len(vec["inputs"]), 32)
    fusesoc.write_core(ctx.out, man, vec["inputs"][:n], vec["golden"][:n], boards)


def stage_board(ctx: Context) -> None:
    """Board top (UART link + PLL + pins) -> bitstream, then the link simulated end to end."""
    from .board import board_stage
    lin = ctx.lineage("board")
    man, _ = read_rtl(lin)
    bare = lin.adopt("synth") or {}
    bare.pop("provenance", None)
    rec = board_stage(ctx.out, ctx.opts.board, baud=ctx.opts.baud, bare=bare, say=ctx.say)
    _write_core(ctx, man, rec.pop("fusesoc_boards"))
    # `program` sends only the bitstream built from this DIR's model and RTL: its hash.
    rec["bitstream_sha256"] = sha256(rec["bitstream"])
    ctx.record("board", rec | {"provenance": lin.record([])})


#: The stage record of what each stage read: ``{stage: {file: sha256 when it was read}}``.
PROVENANCE = "made_from"

STAGES: dict[str, Callable[[Context], None]] = {
    "data": stage_data, "train": stage_train, "export": stage_export, "golden": stage_golden,
    "rtl": stage_rtl, "sim": stage_sim, "synth": stage_synth, "board": stage_board,
}


def run_stage(ctx: Context, name: str, fn=None) -> None:
    ctx.out.mkdir(parents=True, exist_ok=True)
    ctx.say(f"[{name}]")
    t0 = time.monotonic()
    ctx.reads = {}
    (fn or STAGES[name])(ctx)
    ctx.timings[name] = round(time.monotonic() - t0, 2)
    made_from = ctx.recorded(PROVENANCE)
    made_from[name] = ctx.reads
    ctx.record(PROVENANCE, made_from)
    ctx.say(f"[{name}] done in {progress_mod.format_seconds(ctx.timings[name])}")
    times = ctx.recorded("timings")
    times[name] = ctx.timings[name]
    ctx.record("timings", times)


def _remove_previous(ctx: Context, keep_training: bool) -> None:
    """Remove the artifacts of a previous run in ``ctx.out``: the stage records, the report,
    the synthesis and board outputs, and every file the chain rebuilds (``keep_training``: the
    dataset, checkpoint and train.json, which a ``--model`` run does not touch)."""
    out = ctx.out
    out.mkdir(parents=True, exist_ok=True)
    names = {"report.json", "report.html", "vectors.npz", "inputs.npz", MODEL_FILE,
             "manifest.json"}
    if not keep_training:
        names |= {"dataset.npz", "model.pt", "train.json"}
    try:
        names.add(f"{load_json(out / 'manifest.json', ('top',))['top']}.v")
    except (ArtifactError, TypeError):
        pass
    names.add("softfloor_top.v")
    for name in sorted(names):
        if (out / name).is_file() and "/" not in name:
            (out / name).unlink()
    shutil.rmtree(out / "stages", ignore_errors=True)
    for sub in ("synth", "board"):
        if (out / sub).is_dir():
            shutil.rmtree(out / sub)


def check_training_options(opts: FlowOptions) -> None:
    """Raise what the trainer would on these options (the configuration, a ``--data`` file),
    before a stage creates or changes anything in ``--out``."""
    cfg = _train_config(opts)
    if cfg.data not in DATASETS:
        from . import train
        train.digits_split(cfg)


def flow(opts: FlowOptions) -> dict:
    """Run the whole chain into ``opts.out`` and return the report."""
    ctx = Context(opts)
    opts.simulators()  # validate before spending minutes on training
    if opts.output not in OUTPUTS:
        raise ValueError(f"unknown output {opts.output!r}; choose one of {', '.join(OUTPUTS)}")
    model = None
    if opts.model is None and (opts.inputs is not None or opts.labels is not None):
        raise ValueError("--inputs/--labels are the inputs of a --model MODEL_FILE; without "
                         "--model the flow trains on --data (digits by default): drop them or add "
                         "--model")
    if opts.model is not None:
        if opts.inputs is None:
            raise ValueError("--model needs --inputs INPUTS.npy (float inputs, one row per sample)")
        model = with_output(intmodel.load(opts.model), opts.output)  # validates first
        userinputs.load(model, opts.inputs, opts.labels, opts.clip)
    else:  # a configuration or data set file the trainer rejects fails here, not after deleting
        check_training_options(opts)
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
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a directory")
    # Everything is valid: only now remove what this run rebuilds or will not rebuild, so
    # that an interrupted run leaves nothing of the previous one to be mixed with its files.
    _remove_previous(ctx, keep_training=model is not None)
    if model is not None:
        intmodel.save(model, out / MODEL_FILE)
        lin = Lineage(out, "model")
        lin.source(opts.model, "--model")
        ctx.record("model", {"model": str(opts.model), "provenance": lin.record([MODEL_FILE])})
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
    """Assemble ``report.json`` from the stage records, after checking that the artifacts and
    the records are of one chain (:mod:`softfloor.provenance`): one model, one RTL; and
    ``report.html`` from it (:mod:`softfloor.report_html`)."""
    lin = Lineage(ctx.out, "report")
    read = {}
    for name in (MODEL_FILE, "inputs.npz", "vectors.npz", "manifest.json"):
        if (ctx.out / name).exists():
            read[name] = lin.read(name)
    man = {}
    if "manifest.json" in read:
        man, verilog = read_rtl(lin)
        read[verilog.name] = verilog
    tr = lin.adopt("train", descends=MODEL_FILE in read) or {}
    gd, sm, sy, bd = (lin.adopt(s) or {} for s in ("golden", "sim", "synth", "board"))
    for r in (tr, gd, sm, sy, bd):
        r.pop("provenance", None)
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
            "plan_file": ctx.recorded("rtl").get("plan_file"),
            "simulators": {k: {"latency_cycles": v.get("latency_cycles"),
                               "initiation_interval": v.get("initiation_interval"),
                               "run_seconds": v.get("run_seconds")} for k, v in sm.items()},
        },
        "synth": ({k: sy.get(k) for k in ("device", "logic_cells", "ff", "dsp", "ram_blocks",
                                          "spram", "fmax_mhz", "io", "tools")}
                  | ({"cache": sy["cache"]} if "cache" in sy else {})
                  if sy else {"device": ctx.opts.device, "skipped": True, "logic_cells": None,
                              "ff": None, "dsp": None, "ram_blocks": None, "fmax_mhz": None}),
        "timings": ctx.recorded("timings"),
        **({"board": bd} if bd else {}),
        "model": str(ctx.out / MODEL_FILE),
        "config": tr.get("config"),
        "provenance": {"artifacts": {n: sha256(p) for n, p in read.items()},
                       "made_from": dict(sorted(lin.made_from.items()))},
    }
    if sy and sy.get("fmax_mhz") and rep["hardware"]["initiation_interval"]:
        rep["hardware"]["inferences_per_second"] = round(
            sy["fmax_mhz"] * 1e6 / rep["hardware"]["initiation_interval"], 1)
    if sy and sy.get("fmax_mhz") and rep["hardware"]["cycles_per_inference"]:
        rep["hardware"]["latency_ns"] = round(
            rep["hardware"]["cycles_per_inference"] * 1e3 / sy["fmax_mhz"], 1)
    if sy:
        rep["synth"].update(_utilisation(rep["synth"]))
    from . import report_html
    rep["artifacts"] = report_html.artifacts(ctx.out, man.get("top", "softfloor_top"),
                                             exclude=("report.json",))
    rep["html"] = str(ctx.out / "report.html")
    intmodel.atomic_write_text(ctx.out / "report.json", json.dumps(rep, indent=1) + "\n")
    report_html.write(rep, ctx.out)
    return rep


#: Resources of ``report.json``'s ``synth`` checked against the device (``available``).
RESOURCES = ("logic_cells", "ff", "ram_blocks", "spram", "dsp", "io")


def _utilisation(sy: dict) -> dict:
    """``available`` (the device's budget per resource; flip-flops: one per logic cell),
    ``utilisation`` (used / available) and ``fits`` (every resource within its budget)."""
    from .hw import synth
    try:
        dev = synth.get_device(sy.get("device"))
    except ValueError:
        return {}
    avail = {"logic_cells": dev.logic_cells, "ff": dev.logic_cells, "ram_blocks": dev.ram_blocks,
             "spram": dev.spram, "dsp": dev.dsp, "io": dev.io}
    util = {k: round(sy[k] / avail[k], 4) for k in RESOURCES
            if sy.get(k) is not None and avail[k]}
    fits = all(sy.get(k) is None or sy[k] <= avail[k] for k in RESOURCES)
    return {"available": avail, "utilisation": util, "fits": fits}


def resource_rows(sy: dict) -> list[tuple[str, str]]:
    """``(label, "used / available (percent)")`` per resource of a synthesis record, and the
    fits verdict."""
    sy = sy if "available" in sy else sy | _utilisation(sy)
    avail, rows = sy.get("available") or {}, []
    for key, label in (("logic_cells", "logic cells"), ("ff", "flip-flops"),
                       ("ram_blocks", "RAM blocks"), ("spram", "SPRAM (SB_SPRAM256KA)"),
                       ("dsp", "DSP"), ("io", "I/O")):
        used, n = sy.get(key), avail.get(key)
        if key == "spram" and not n:
            continue                          # a device without SPRAM
        rows.append((f"{sy.get('device')} {label} used / available",
                     f"{used} / {n}  ({100 * used / n:.1f}%)" if used is not None and n
                     else f"{used} / {n if n is not None else '?'}"))
    if "fits" in sy:
        rows.append((f"fits {sy.get('device')}", "yes" if sy["fits"] else
                     "NO: a resource exceeds the device"))
    return rows


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
        rows += resource_rows(sy)
        rows += [("Fmax", f"{sy['fmax_mhz']} MHz"),
                 ("latency at Fmax", f"{hw['latency_ns']:,.0f} ns" if hw.get("latency_ns")
                  else None),
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
    if rep.get("html"):
        rows.append(("report page", rep["html"]))
    w = max(len(r[0]) for r in rows)
    line = "-" * (w + 26)
    return "\n".join([line] + [f"{k:<{w}}  {v}" for k, v in rows] + [line])


