"""Brevitas and softfloor side by side: the issue's configurations, trained in the same run.

``make bench SECTIONS=compare`` (``--quick``: seed 0, 4 epochs). Needs the ``[compare]`` extra
(``pip install .[compare]``: Brevitas 0.13.4).

Every row trains the MLP 64-64-32-10 on the same digits split
(:func:`softfloor.data.load_digits_split`: 1437 training, 360 test samples), batch 64,
:data:`EPOCHS` epochs, seeds :data:`SEEDS`, on the configurations of :data:`CONFIGS` (float,
w8a8, w4a4, w2a2 with ternary weights, w1a2 + BatchNorm, w1a1 + BatchNorm). Per configuration:

* ``brevitas lr 1e-3``: the issue's Brevitas protocol, Adam at a constant 1e-3.
* ``brevitas softfloor lr``: the same Brevitas model with softfloor's optimiser: Adam at
  :attr:`softfloor.train.TrainConfig.learning_rate` of the configuration (5e-3 at >= 3 bits,
  2e-2 at 2 bits, 1e-2 at 1 bit; the float MLP 5e-3) with the per-step decay to 0 of
  :attr:`~softfloor.train.TrainConfig.learning_rate_schedule` with the STE (the flat cosine at
  w1a1 with a 1-bit input, else the cosine) and the configuration's
  :attr:`~softfloor.train.TrainConfig.adam_betas` (beta1 0.7 at w1a1 with a 1-bit input, else
  0.9), so the optimiser is not the whole difference.
* ``softfloor sigmoid`` and ``softfloor ste``: :func:`softfloor.train.train_qat` with the
  :class:`~softfloor.train.TrainConfig` defaults of the widths (the default surrogate, and the
  STE): learning rate and BatchNorm as the defaults choose them (BatchNorm on at w2a2 and w1a2,
  off at w1a1), input bits = activation bits. The float row is
  :func:`~softfloor.train.train_float` (one row: no surrogate).

The Brevitas model is :func:`softfloor.benchmarks.qonnx.build` (``QuantIdentity`` -> per hidden
layer ``QuantLinear`` [-> ``BatchNorm1d``] -> ``QuantReLU`` -> ``QuantLinear``): power-of-two
per-tensor scales as softfloor's (``Int8WeightPerTensorFixedPoint`` weights -- narrow range, so
2 bits are ternary; binary sign x scale at 1 bit -- ``Uint8ActPerTensorFixedPoint``
activations, ``Int32Bias`` biases), the issue's BatchNorm choice (w1a2, w1a1), float32.

How Brevitas sees the input: exactly softfloor's input codes (activation bits wide,
:func:`softfloor.data.digits_input_spec`: a pixel of 0..16 becomes ``min(pixel, 15)`` at 4 bits,
1 at pixel >= 6 at 1 bit, or the per-pixel thresholds softfloor's w1a1 calibrates,
:attr:`softfloor.train.TrainConfig.input_quantizer`; at w1a1 softfloor then trains those
thresholds, :mod:`softfloor.input_thresholds`, Brevitas keeps the calibrated ones, having no
such quantizer), passed as ``code * scale`` (the 1-bit
scale 3/4) through a constant-scale input quantizer
that leaves them unchanged (Brevitas's own input quantizer would round the ties ``x.5`` half
to even, i.e. other codes, and learn its own clipping). The float rows see the real inputs
``pixel / 16``, as softfloor's float baseline.

How the accuracy is measured: on the 360 test samples, argmax of the output. softfloor: the
hard-quantized model (integer output codes, bit-exact to the exported integer model, checked).
Brevitas: its ``eval()`` forward, which is its quantized model (weights, input, activations and
biases quantized, fake-quant in float32; BatchNorm with its running statistics, as Brevitas
evaluates it, not folded).

The validation table (not with ``--quick``): the issue's test split has 360 samples, one is
0.28 points, and the seed spread is about as large as the differences at 1-bit weights. So
Brevitas at softfloor's learning rate and the softfloor STE also train on each validation fold
(:func:`softfloor.data.validation_split`, folds :data:`VALIDATION_FOLDS` x the seeds) of
:data:`VALIDATION_CONFIGS` and are measured on the fold's validation part: a difference that
holds there is not the test split's luck.

Epoch time: a ratio to softfloor's float MLP measured in the same run as
:mod:`softfloor.benchmarks.training` does (:func:`~softfloor.benchmarks.training._epoch_seconds`:
median epoch CPU time of a short run, one thread, the float MLP measured before and after each
configuration, the faster kept).
"""
from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import brevitas  # noqa: F401  (the [compare] extra: the runner reports it missing at import)

#: (name, weight bits, activation bits, Brevitas BatchNorm); bits None: the float MLP.
CONFIGS = (
    ("float", None, None, False),
    ("w8a8", 8, 8, False),
    ("w4a4", 4, 4, False),
    ("w2a2", 2, 2, False),
    ("w1a2+BN", 1, 2, True),
    ("w1a1+BN", 1, 1, True),
)
#: The issue's Brevitas learning rate (Adam, constant).
ISSUE_LR = 1e-3
#: The rows of every configuration, in table order.
TRAINERS = ("brevitas lr 1e-3", "brevitas softfloor lr", "softfloor sigmoid", "softfloor ste")
SEEDS = (0, 1, 2)
EPOCHS = 60
#: ``--quick``: one seed, a few epochs.
QUICK_SEEDS = (0,)
QUICK_EPOCHS = 4
#: Epochs of the timing runs (the first is dropped as warm-up).
TIME_EPOCHS = 5
QUICK_TIME_EPOCHS = 3
#: Worker processes (None: the CPUs available, at most 2; 1: no pool, in this process).
WORKERS: int | None = None
#: The validation table: these configurations, Brevitas at softfloor's learning rate against
#: the softfloor STE, on the validation folds (3 folds x the seeds; never the test split).
VALIDATION_CONFIGS = ("w1a2+BN", "w1a1+BN")
VALIDATION_TRAINERS = ("brevitas softfloor lr", "softfloor ste")
VALIDATION_FOLDS = (0, 1, 2)


def _softfloor_kw(wb, ab, trainer: str) -> tuple[str, dict]:
    """(kind, TrainConfig options) of a softfloor row; defaults for everything else."""
    if wb is None:
        return "float", {}
    return "qat", {"weight_bits": wb, "act_bits": ab,
                   "surrogate": trainer.removeprefix("softfloor ")}


def _brevitas_lr(wb, ab, trainer: str) -> tuple[float, bool, float]:
    """(peak learning rate, decay: False or softfloor's schedule name, Adam's beta1) of a
    Brevitas row."""
    if trainer == "brevitas lr 1e-3":
        return ISSUE_LR, False, 0.9
    from softfloor.train import TrainConfig
    # softfloor's optimiser with the STE (Brevitas's quantizers train straight through)
    cfg = TrainConfig() if wb is None else TrainConfig(weight_bits=wb, act_bits=ab,
                                                       surrogate="ste")
    return cfg.learning_rate, cfg.learning_rate_schedule, cfg.adam_betas[0]


def brevitas_run(wb, ab, bn: bool, lr: float, cosine: bool | str, seed: int, epochs: int,
                 progress=None, fold: int | None = None, beta1: float = 0.9) -> dict:
    """Train one Brevitas MLP 64-64-32-10 (one thread); returns its test accuracy (with
    ``fold``: trained on that validation fold's training part, measured on its validation
    part, :func:`softfloor.data.validation_split`)."""
    import numpy as np
    import torch

    from softfloor.data import input_scale, load_digits_split
    from softfloor.models import SIZES
    from softfloor.train import TrainConfig

    from .qonnx import build, train
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        quant = "global" if wb is None else \
            TrainConfig(weight_bits=wb, act_bits=ab).input_quantizer
        split = load_digits_split(ab or 4, quant)
        if fold is not None:
            from softfloor.data import validation_split
            split = validation_split(split, fold)
        if wb is None:
            xtr, xte, inq = split.x_train, split.x_test, None
        else:
            # softfloor's codes (per-pixel thresholds too) times one scale
            scale = input_scale(split.input_bits)
            xtr, xte = split.c_train * scale, split.c_test * scale
            inq = (split.input_bits, scale)
        xtr, xte = xtr.astype(np.float32), xte.astype(np.float32)
        torch.manual_seed(seed)
        model = build("mlp", wb, ab, sizes=SIZES, batchnorm=bn, input_quant=inq)
        t0 = time.perf_counter()
        train(model, xtr, split.y_train, (SIZES[0],), epochs, seed, lr=lr, cosine=cosine,
              beta1=beta1, progress=progress)
        seconds = time.perf_counter() - t0
        with torch.no_grad():
            pred = model(torch.as_tensor(xte)).argmax(1).numpy()
    finally:
        torch.set_num_threads(n)
    return {"acc": float((pred == split.y_test).mean()), "sec_per_epoch": seconds / epochs}


def _job(args) -> dict:
    """One training run in a worker: ("brevitas", kwargs of brevitas_run) or a softfloor job
    of :func:`softfloor.benchmarks.training._job`."""
    kind, kw = args
    if kind == "brevitas":
        return brevitas_run(**kw)
    from .training import _job as softfloor_job
    return softfloor_job((kind, kw))


def _brevitas_epoch_seconds(kw: dict, epochs: int) -> float:
    """Median CPU time of one Brevitas training epoch, as ``training._epoch_seconds``."""
    stamps = [time.process_time()]
    brevitas_run(**(kw | {"epochs": epochs, "seed": 0}),
                 progress=lambda e: stamps.append(time.process_time()))
    return statistics.median(b - a for a, b in zip(stamps[1:], stamps[2:]))


def _row_job(trainer: str, name: str, wb, ab, bn: bool, seed: int, epochs: int) -> tuple:
    if trainer.startswith("brevitas"):
        lr, cosine, beta1 = _brevitas_lr(wb, ab, trainer)
        return "brevitas", {"wb": wb, "ab": ab, "bn": bn, "lr": lr, "cosine": cosine,
                            "beta1": beta1,
                            "seed": seed, "epochs": epochs}
    kind, kw = _softfloor_kw(wb, ab, trainer)
    return kind, kw | {"seed": seed, "epochs": epochs}


def _trainers(wb) -> tuple[str, ...]:
    """The float configuration has one softfloor row (``softfloor float``)."""
    return TRAINERS if wb is not None else TRAINERS[:2] + ("softfloor float",)


def _epoch_ratios(configs, epochs: int) -> dict[tuple[str, str], float]:
    """Epoch CPU time / softfloor float MLP epoch CPU time, per (trainer, config)."""
    from .training import _epoch_seconds
    ratios = {}
    for name, wb, ab, bn in configs:
        fl = _epoch_seconds("float", {}, epochs)
        secs = {}
        for trainer in _trainers(wb):
            if trainer == "softfloor float":
                continue
            kind, kw = _row_job(trainer, name, wb, ab, bn, 0, epochs)
            secs[trainer] = (_brevitas_epoch_seconds(kw, epochs) if kind == "brevitas"
                             else _epoch_seconds(kind, kw, epochs))
        fl = min(fl, _epoch_seconds("float", {}, epochs))
        ratios.update({(t, name): s / fl for t, s in secs.items()})
        if wb is None:
            ratios[("softfloor float", name)] = 1.0
    return ratios


def _stats(xs: list[float]) -> tuple[float, float]:
    m = statistics.fmean(xs)
    return m, (statistics.pstdev(xs) if len(xs) > 1 else 0.0)


def run(out_dir: Path, quick: bool, *, configs=None, seeds=None, epochs: int | None = None,
        time_epochs: int | None = None, workers: int | None = None,
        validation: bool | None = None) -> dict:
    """Train every row of every configuration; ``configs``/``seeds``/``epochs``/
    ``time_epochs``/``workers`` override the module's settings (a small run for tests).

    With ``validation`` (default: not ``quick``) also the validation table: Brevitas at
    softfloor's learning rate and the softfloor STE on :data:`VALIDATION_CONFIGS`, trained on
    each of :data:`VALIDATION_FOLDS` x the seeds and measured on the fold's validation part
    (test-split differences of a sample or two are within a seed's spread; this shows which
    differences hold on other data)."""
    validation = (not quick) if validation is None else validation
    configs = CONFIGS if configs is None else configs
    seeds = (QUICK_SEEDS if quick else SEEDS) if seeds is None else tuple(seeds)
    epochs = (QUICK_EPOCHS if quick else EPOCHS) if epochs is None else epochs
    time_epochs = (QUICK_TIME_EPOCHS if quick else TIME_EPOCHS) if time_epochs is None \
        else time_epochs
    from softfloor.train import TrainConfig

    jobs = {}
    for seed in seeds:
        for name, wb, ab, bn in configs:
            for trainer in _trainers(wb):
                jobs[(trainer, name, seed)] = _row_job(trainer, name, wb, ab, bn, seed, epochs)
    vconfigs = [c for c in configs if c[0] in VALIDATION_CONFIGS] if validation else []
    for name, wb, ab, bn in vconfigs:
        for trainer in VALIDATION_TRAINERS:
            for fold in VALIDATION_FOLDS:
                for seed in seeds:
                    kind, kw = _row_job(trainer, name, wb, ab, bn, seed, epochs)
                    jobs[("val " + trainer, name, (fold, seed))] = (kind, kw | {"fold": fold})
    workers = workers or WORKERS or max(1, min(len(os.sched_getaffinity(0)), 2))
    workers = min(workers, len(jobs))
    t0 = time.monotonic()
    from softfloor.benchmarks.sweeprun import all_done, run_jobs   # 1 worker: no Ray
    results = all_done(*run_jobs(jobs, _job, Path(out_dir) / "compare-sweep.sqlite", workers))
    train_seconds = time.monotonic() - t0
    ratios = _epoch_ratios(configs, time_epochs)

    rows, acc_table, time_table = [], [], []
    for name, wb, ab, bn in configs:
        arow, trow = {"config": name}, {"config": name}
        for trainer in _trainers(wb):
            runs = [results[(trainer, name, s)] for s in seeds]
            accs = [r["acc"] for r in runs]
            m, sd = _stats(accs)
            kind, kw = jobs[(trainer, name, seeds[0])]
            if kind == "brevitas":
                lr = f"{kw['lr']:g}" + (f" {kw['cosine']}" if kw["cosine"] else "") \
                    + (f" beta1 {kw['beta1']:g}" if kw["beta1"] != 0.9 else "")
                use_bn, in_bits = bn, ab
            else:
                cfg = TrainConfig(**{k: v for k, v in kw.items() if k != "seed"})
                b1 = cfg.adam_betas[0] if kind == "qat" else 0.9
                lr = f"{cfg.learning_rate:g} {cfg.learning_rate_schedule}" \
                    + (f" beta1 {b1:g}" if b1 != 0.9 else "")
                use_bn = cfg.use_batchnorm if kind == "qat" else False
                in_bits = cfg.in_bits if kind == "qat" else None
            ratio = ratios[(trainer, name)]
            rows.append({"config": name, "trainer": trainer, "split": "test", "acc_mean": 100 * m,
                         "acc_std": 100 * sd,
                         "per_seed": ", ".join(f"{100 * a:.2f}" for a in accs),
                         "lr": lr, "batchnorm": use_bn,
                         "input_bits": in_bits if in_bits is not None else "real",
                         "epoch_time_vs_float": round(ratio, 2),
                         "bit_exact": all(r.get("bit_exact", True) for r in runs)
                         if not trainer.startswith("brevitas") else None})
            col = "softfloor sigmoid" if trainer == "softfloor float" else trainer
            arow[col] = f"{100 * m:.2f} ± {100 * sd:.2f}"
            trow[col] = f"{ratio:.1f}x"
            if trainer == "softfloor float":
                arow["softfloor ste"], trow["softfloor ste"] = arow[col], trow[col]
        acc_table.append(arow)
        time_table.append(trow)

    val_table = []
    for name, *_ in vconfigs:
        vrow = {"config": name}
        for trainer in VALIDATION_TRAINERS:
            runs = [results[("val " + trainer, name, (f, s))]
                    for f in VALIDATION_FOLDS for s in seeds]
            m, sd = _stats([r["acc"] for r in runs])
            vrow[trainer] = f"{100 * m:.2f} ± {100 * sd:.2f}"
            rows.append({"config": name, "trainer": trainer, "split": "validation",
                         "acc_mean": 100 * m, "acc_std": 100 * sd, "runs": len(runs),
                         "bit_exact": all(r.get("bit_exact", True) for r in runs)
                         if not trainer.startswith("brevitas") else None})
        val_table.append(vrow)

    exact = all(r["bit_exact"] for r in rows if r["bit_exact"] is not None)
    notes = [
        f"{len(results)} training runs ({train_seconds:.0f} s on {workers} Ray workers), "
        f"{epochs} epochs, seeds {list(seeds)}, batch 64, MLP 64-64-32-10, the digits split "
        "(360 test samples: one sample is 0.28 points).",
        "brevitas lr 1e-3: the issue's protocol (Adam, constant lr). brevitas softfloor lr: "
        "softfloor's default peak lr of the configuration with the STE's per-step decay (the "
        "flat cosine at w1a1 with a 1-bit input, else the cosine) and its Adam beta1 where it "
        "is not 0.9. "
        "softfloor rows: TrainConfig defaults of the widths (lr, BatchNorm, input bits = "
        "activation bits); the float row is softfloor's float MLP (both softfloor columns).",
        "Brevitas sees softfloor's input codes (code * scale through a constant-scale input "
        "quantizer); its accuracy is its eval() forward (quantized weights, input, activations, "
        "biases; BatchNorm with running statistics). softfloor: hard-quantized integer model; "
        f"every softfloor QAT run bit-exact to its integer model: {exact}.",
        "epoch time: median epoch CPU time, one thread, as a ratio to softfloor's float MLP "
        f"measured in the same process before and after each configuration ({time_epochs}-epoch "
        "runs, the first epoch dropped).",
    ]
    tables = {"accuracy (%, mean ± std over seeds)": acc_table,
              "epoch time vs float MLP": time_table}
    if val_table:
        tables[f"validation accuracy (%, folds {list(VALIDATION_FOLDS)} x seeds)"] = val_table
        notes.append("validation: trained on a fold's 1149 training samples, measured on its "
                     "288 validation samples (data.validation_split), folds x seeds; the test "
                     "split is not used.")
    return {"rows": rows, "tables": tables,
            "notes": notes, "seeds": list(seeds), "epochs": epochs, "quick": quick,
            "configs": [c[0] for c in configs]}
