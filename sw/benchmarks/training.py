"""Training benchmark: every surrogate at every bit width, seeds 0, 1, 2, hard-quantized accuracy.

``make bench SECTIONS=training`` (``--quick``: seed 0, 4 epochs, a smoke run).

Same model (MLP 64-64-32-10), split (the digits, 1437/360), optimiser (Adam, the default
learning rate and decay of :class:`~softfloor.train.TrainConfig`), batch 64, epochs (60) and seeds
for every row; the accuracy is the hard-quantized model's on the test split (argmax of the
integer output codes; bit-exact to the exported integer model, checked on every run). Epoch time
is a ratio to the float baseline measured in the same run: median epoch CPU time of a short run
of each, one thread, the float one measured before and after each configuration (the faster kept).

Tables
------
* ``rows`` / ``accuracy``: the issue's table, one row per surrogate and configuration
  (1-bit weights or activations with BatchNorm, the default).
* ``batchnorm_flipped``: the same configurations with BatchNorm switched (on for >= 2 bits,
  off for 1 bit).
* ``schedules``: the smooth surrogates at w2a2 and w1a1 under other annealing schedules.
* ``smooth_vs_ste``: per configuration, the best smooth surrogate against the STE.
* ``epoch time vs float MLP``: the ``rows``' ratios as a table, plus
  :data:`TIME_FLIPPED_SURROGATES` with BatchNorm switched (the columns of ``batchnorm_flipped``).
* ``variants (free scales, hardtanh)``: :data:`VARIANT_SURROGATES` at :data:`VARIANT_CONFIGS`
  with free scales (``scales="free"``: integer multiplier + shift requantization) and with
  signed activations (``activation="hardtanh"``), next to the power-of-two ReLU cell.
* ``cnn``: the small CNN (:mod:`softfloor.cnn`, ``--arch cnn``) at :data:`CNN_CONFIG` with
  :data:`CNN_SURROGATES`, and its float twin; epoch time as a ratio to the float CNN (also in
  ``rows``, config ``cnn w4a4``).

Plots (PNG, if matplotlib is installed: ``pip install .[bench]``), drawn by
:mod:`softfloor.benchmarks.training_plots` from the JSON (``curves``: every main-table run's
loss per epoch; ``run``: seeds, epochs, commit), so they can be redrawn without training:
``surrogates.png`` (each surrogate and its gradient at several sharpness values),
``curves.png`` (training loss per epoch, median and range over seeds),
``accuracy_vs_bits.png`` (mean ± std over seeds per configuration).
"""
from __future__ import annotations

import math
import os
import statistics
from pathlib import Path

#: (name, weight_bits, act_bits, input_bits, batchnorm) -- input bits None: the act bits.
CONFIGS = (
    ("w8a8", 8, 8, None, False),
    ("w4a4", 4, 4, None, False),
    ("w2a2", 2, 2, None, False),
    ("w1a2+BN", 1, 2, None, True),
    ("w1a1+BN", 1, 1, None, True),
    ("w1a1+BN i4", 1, 1, 4, True),
)
#: Smooth surrogates (the rest are straight-through variants).
SMOOTH = ("sigmoid", "dsq", "dsq_hard", "fourier")
#: Extra schedules per smooth surrogate: (label, TrainConfig overrides).
SCHEDULES = (
    ("sharp start (k_start x8)", "k_start_x8"),
    ("half hard (hard_fraction 0.5)", {"hard_fraction": 0.5}),
    ("no hard phase", {"hard_fraction": 0.0}),
)
SCHEDULE_CONFIGS = ("w2a2", "w1a1+BN")
#: The CNN rows: (name, weight_bits, act_bits) and the surrogates (the default, and the STE).
CNN_CONFIG = ("cnn w4a4", 4, 4)
CNN_SURROGATES = ("sigmoid", "ste")
#: The other quantizer variants (TrainConfig overrides), at these configurations and surrogates.
VARIANTS = (("free scales", {"scales": "free"}), ("hardtanh", {"activation": "hardtanh"}))
VARIANT_CONFIGS = ("w4a4", "w2a2")
VARIANT_SURROGATES = ("sigmoid", "ste")
#: What a full run includes (a busy machine may need less: set these before ``run``).
WITH_FLIPPED = True
WITH_SCHEDULES = True
WITH_CNN = True
WITH_VARIANTS = True
#: Surrogates whose epoch time is also measured with BatchNorm switched.
TIME_FLIPPED_SURROGATES = ("sigmoid", "ste")
#: Surrogates of the flipped-BatchNorm table (None: all).
FLIPPED_SURROGATES: tuple[str, ...] | None = None
#: Surrogates of the main table (None: every one of ``SURROGATES``).
SURROGATE_NAMES: tuple[str, ...] | None = None
#: Worker processes (None: the CPUs available, at most 4; 1: no pool, in this process).
WORKERS: int | None = None


def _flip_name(name: str, bn: bool) -> str:
    return name.replace("+BN", "") if bn else name.split(" ")[0] + "+BN" + \
        ("" if " " not in name else " " + name.split(" ", 1)[1])


def _job(args) -> dict:
    """One training run in a worker: returns accuracy, seconds per epoch and the loss curve
    (``kw["fold"]``: trained and measured on that validation fold, not the test split)."""
    import torch
    torch.set_num_threads(1)
    from softfloor.train import TrainConfig, TrainingDiverged, digits_split, train_float, train_qat
    kind, kw = args
    kw = dict(kw)
    fold = kw.pop("fold", None)  # a validation fold (data.validation_split) instead of test
    cfg = TrainConfig(**kw)
    split = digits_split(cfg)
    if fold is not None:
        from softfloor.data import validation_split
        split = validation_split(split, fold)
    try:
        res = (train_float if kind == "float" else train_qat)(cfg, split)
    except TrainingDiverged as e:  # not an integer model: no accuracy, reported as diverged
        return {"acc": math.nan, "diverged": str(e), "sec_per_epoch": e.seconds / cfg.epochs,
                "bit_exact": True, "loss": [round(h["loss"], 5) for h in e.history]}
    return {"acc": res.test_accuracy, "sec_per_epoch": res.seconds / cfg.epochs,
            "bit_exact": res.accuracy.get("bit_exact", True),
            "loss": [round(h["loss"], 5) for h in res.history]}


def _epoch_seconds(kind: str, kw: dict, epochs: int) -> float:
    """Median wall time of one training epoch (the first one, warm-up, dropped)."""
    import time

    from softfloor.train import TrainConfig, TrainingDiverged, digits_split, train_float, train_qat
    cfg = TrainConfig(**(kw | {"epochs": epochs}))
    split = digits_split(cfg)
    stamps = [time.process_time()]
    try:
        (train_float if kind == "float" else train_qat)(
            cfg, split, progress=lambda e, n, info: stamps.append(time.process_time()))
    except TrainingDiverged:
        pass  # the epochs ran (and were timed); only the model is not an integer one
    # stamps[0] is before calibration: use the differences between epoch ends from epoch 2 on.
    return statistics.median(b - a for a, b in zip(stamps[1:], stamps[2:]))


def _epoch_ratios(surrogates, epochs: int, flipped: bool = False
                  ) -> dict[tuple[str, str], float]:
    """Epoch CPU time / float epoch CPU time (same process, one thread: CPU time, so a busy
    machine does not count), float measured before and after each configuration. With
    ``flipped``: the configurations with BatchNorm switched (keys named as in
    ``batchnorm_flipped``)."""
    ratios = {}
    for name, wb, ab, ib, bn in CONFIGS:
        if flipped:
            name, bn = _flip_name(name, bn), not bn
        fl = _epoch_seconds("float", {}, epochs)
        qs = {sur: _epoch_seconds("qat", {"weight_bits": wb, "act_bits": ab, "input_bits": ib,
                                          "surrogate": sur, "batchnorm": bn}, epochs)
              for sur in surrogates}
        fl = min(fl, _epoch_seconds("float", {}, epochs))
        ratios.update({(sur, name): q / fl for sur, q in qs.items()})
    return ratios


def _cnn_epoch_ratios(epochs: int) -> dict[str, float]:
    """CNN epoch CPU time / float CNN epoch CPU time, as :func:`_epoch_ratios`."""
    name, wb, ab = CNN_CONFIG
    fl = _epoch_seconds("float", {"arch": "cnn"}, epochs)
    qs = {sur: _epoch_seconds("qat", {"arch": "cnn", "weight_bits": wb, "act_bits": ab,
                                      "surrogate": sur}, epochs) for sur in CNN_SURROGATES}
    fl = min(fl, _epoch_seconds("float", {"arch": "cnn"}, epochs))
    return {sur: q / fl for sur, q in qs.items()} | {"float": 1.0}


def cnn_jobs(seeds, epochs: int) -> dict[tuple, tuple]:
    """The CNN's training runs: float CNN and every CNN surrogate, per seed."""
    name, wb, ab = CNN_CONFIG
    jobs = {}
    for seed in seeds:
        jobs[("cnn", "float", name, seed)] = ("float", {"arch": "cnn", "seed": seed,
                                                        "epochs": epochs})
        for sur in CNN_SURROGATES:
            jobs[("cnn", sur, name, seed)] = ("qat", {"arch": "cnn", "weight_bits": wb,
                                                      "act_bits": ab, "surrogate": sur,
                                                      "seed": seed, "epochs": epochs})
    return jobs


def cnn_rows(results: dict, seeds, ratios: dict[str, float]) -> list[dict]:
    """Rows of the CNN table from :func:`cnn_jobs` results."""
    name = CNN_CONFIG[0]
    rows = []
    for sur in ("float",) + CNN_SURROGATES:
        runs = [results[("cnn", sur, name, s)] for s in seeds if ("cnn", sur, name, s) in results]
        if not runs:
            continue
        m, sd = _stats([r["acc"] for r in runs])
        rows.append({"surrogate": sur, "config": name if sur != "float" else "cnn float",
                     "acc_mean": 100 * m, "acc_std": 100 * sd,
                     "epoch_time_vs_float": ratios.get(sur),
                     "sec_per_epoch_pool": statistics.fmean(r["sec_per_epoch"] for r in runs),
                     "bit_exact": all(r["bit_exact"] for r in runs)})
    return rows


def _stats(xs: list[float]) -> tuple[float, float]:
    """Mean and population std of the runs that did not diverge (NaN, NaN if all did)."""
    ok = [x for x in xs if not math.isnan(x)]
    if not ok:
        return math.nan, math.nan
    return statistics.fmean(ok), (statistics.pstdev(ok) if len(ok) > 1 else 0.0)


def _cell(xs: list[float]) -> str:
    m, s = _stats(xs)
    k = sum(math.isnan(x) for x in xs)
    if k == len(xs):
        return f"diverged ({k} of {k})"
    return f"{100 * m:.2f} ± {100 * s:.2f}" + (f" ({k} of {len(xs)} diverged)" if k else "")


def _rank(m: float) -> float:
    """Sort key of a mean accuracy: a configuration whose runs all diverged ranks last."""
    return -1.0 if math.isnan(m) else m


def _pct(m: float) -> float | None:
    """A mean as a JSON percentage (None when every run diverged)."""
    return None if math.isnan(m) else 100 * m


def run(out_dir: Path, quick: bool) -> dict:
    from softfloor.surrogates import SURROGATES, default_k
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seeds = (0,) if quick else (0, 1, 2)
    epochs = 4 if quick else 60
    surrogates = list(SURROGATE_NAMES or SURROGATES)
    info = _run_info(seeds, epochs)  # the commit the runs start from

    jobs: dict[tuple, tuple] = {}
    for seed in seeds:
        jobs[("float", "float", "", seed)] = ("float", {"seed": seed, "epochs": epochs})
        for sur in surrogates:
            for name, wb, ab, ib, bn in CONFIGS:
                base = {"weight_bits": wb, "act_bits": ab, "input_bits": ib, "surrogate": sur,
                        "seed": seed, "epochs": epochs}
                jobs[("main", sur, name, seed)] = ("qat", base | {"batchnorm": bn})
                if WITH_FLIPPED and (FLIPPED_SURROGATES is None or sur in FLIPPED_SURROGATES):
                    jobs[("flip", sur, _flip_name(name, bn), seed)] = (
                        "qat", base | {"batchnorm": not bn})
        if WITH_CNN:
            jobs.update(cnn_jobs((seed,), epochs))
        for label, over in VARIANTS if WITH_VARIANTS else ():
            for name, wb, ab, ib, bn in CONFIGS:
                for sur in VARIANT_SURROGATES:
                    if name in VARIANT_CONFIGS and sur in surrogates:
                        jobs[("var", sur, f"{name} {label}", seed)] = (
                            "qat", {"weight_bits": wb, "act_bits": ab, "input_bits": ib,
                                    "surrogate": sur, "seed": seed, "epochs": epochs,
                                    "batchnorm": bn} | over)
        if quick or not WITH_SCHEDULES:
            continue
        for sur in (s for s in SMOOTH if s in surrogates):
            for label, over in SCHEDULES:
                if over == "k_start_x8":
                    k0, k1 = default_k(sur)
                    over = {"k_start": min(8 * k0, k1 / 2)}
                for name, wb, ab, ib, bn in CONFIGS:
                    if name in SCHEDULE_CONFIGS:
                        jobs[("sched", sur, f"{name}: {label}", seed)] = (
                            "qat", {"weight_bits": wb, "act_bits": ab, "input_bits": ib,
                                    "surrogate": sur, "seed": seed, "epochs": epochs,
                                    "batchnorm": bn} | over)

    workers = WORKERS or max(1, min(len(os.sched_getaffinity(0)), 4))
    from softfloor.benchmarks.sweeprun import all_done, run_jobs
    results = all_done(*run_jobs(jobs, _job, out_dir / "training-sweep.sqlite", workers))

    ratios = _epoch_ratios(surrogates, 3 if quick else 5)
    time_flipped = [s for s in TIME_FLIPPED_SURROGATES if s in surrogates]
    flip_ratios = _epoch_ratios(time_flipped, 3 if quick else 5, flipped=True) \
        if WITH_FLIPPED else {}
    cnn_table = cnn_rows(results, seeds, _cnn_epoch_ratios(3 if quick else 5)) \
        if WITH_CNN else []

    def collect(table, sur, cfg):
        return [results[(table, sur, cfg, s)] for s in seeds if (table, sur, cfg, s) in results]

    float_runs = collect("float", "float", "")
    float_acc = [r["acc"] for r in float_runs]
    float_epoch = statistics.fmean(r["sec_per_epoch"] for r in float_runs)
    all_exact = all(r["bit_exact"] for r in results.values())

    rows = [{"surrogate": "float", "config": "float", "acc_mean": 100 * _stats(float_acc)[0],
             "acc_std": 100 * _stats(float_acc)[1], "epoch_time_vs_float": 1.0}]
    acc_table, flip_table = [{"surrogate": "float"} | {c[0]: _cell(float_acc) for c in CONFIGS}], []
    means: dict[tuple[str, str], float] = {}
    for sur in surrogates:
        arow, frow = {"surrogate": sur}, {"surrogate": sur}
        for name, *_ in CONFIGS:
            runs = collect("main", sur, name)
            accs = [r["acc"] for r in runs]
            m, s = _stats(accs)
            means[(sur, name)] = m
            ratio = ratios[(sur, name)]
            rows.append({"surrogate": sur, "config": name, "acc_mean": _pct(m), "acc_std": _pct(s),
                         "epoch_time_vs_float": ratio,
                         "diverged": sum(math.isnan(a) for a in accs)})
            arow[name] = _cell(accs)
        for name, _, _, _, bn in CONFIGS:
            fname = _flip_name(name, bn)
            runs = collect("flip", sur, fname)
            if runs:
                frow[fname] = _cell([r["acc"] for r in runs])
        acc_table.append(arow)
        if len(frow) > 1:
            flip_table.append(frow)

    time_table = []
    for sur in surrogates:
        row = {"surrogate": sur} | {name: round(ratios[(sur, name)], 2)
                                    for name, *_ in CONFIGS}
        time_table.append(row)
    for sur in time_flipped if flip_ratios else ():
        time_table.append({"surrogate": f"{sur} (BatchNorm switched)"} | {
            _flip_name(name, bn): round(flip_ratios[(sur, _flip_name(name, bn))], 2)
            for name, _, _, _, bn in CONFIGS})

    sched_table = []
    for sur in [s for s in SMOOTH if s in surrogates] if (WITH_SCHEDULES and not quick) else ():
        for cfg_name in SCHEDULE_CONFIGS:
            row = {"surrogate": sur, "config": cfg_name, "default": _cell(
                [r["acc"] for r in collect("main", sur, cfg_name)])}
            for label, _ in SCHEDULES:
                row[label] = _cell([r["acc"] for r in collect("sched", sur, f"{cfg_name}: {label}")])
            sched_table.append(row)

    var_table = []
    for name, *_ in CONFIGS:
        for sur in VARIANT_SURROGATES:
            row = {"config": name, "surrogate": sur}
            for label, _ in VARIANTS:
                runs = collect("var", sur, f"{name} {label}")
                if runs:
                    row[label] = _cell([r["acc"] for r in runs])
            if len(row) > 2:
                var_table.append({"config": name, "surrogate": sur, "po2 relu (main table)":
                                  _cell([r["acc"] for r in collect("main", sur, name)])} | row)

    verdict, notes = [], []
    for name, *_ in CONFIGS:
        ste = means[("ste", name)]
        best = max((s for s in SMOOTH if s in surrogates), key=lambda s: _rank(means[(s, name)]))
        best_any = max(surrogates, key=lambda s: _rank(means[(s, name)]))
        d = 100 * (means[(best, name)] - ste)
        verdict.append({"config": name, "ste": round(100 * ste, 2), "best_smooth": best,
                        "best_smooth_acc": round(100 * means[(best, name)], 2),
                        "smooth_minus_ste": round(d, 2), "best_overall": best_any,
                        "best_overall_acc": round(100 * means[(best_any, name)], 2)})
    wins = [v["config"] for v in verdict if v["smooth_minus_ste"] > 0]
    notes.append(f"{len(results)} training runs, {epochs} epochs, seeds {list(seeds)}, "
                 f"{workers} Ray workers (softfloor.sweep; runs recorded in "
                 f"training-sweep.sqlite); every QAT run bit-exact to its integer model: "
                 f"{all_exact}; float epoch {1000 * float_epoch:.0f} ms wall in the pool (the epoch-time "
                 "ratios are CPU times measured apart, in one process).")
    notes.append("Smooth surrogate ahead of STE (mean over seeds) at: "
                 f"{', '.join(wins) or 'none'}; see smooth_vs_ste for the margins "
                 "(one test sample is 0.28 points).")
    for v in verdict:
        v["smooth_minus_ste"] = f"{v['smooth_minus_ste']:+.2f}"

    if cnn_table:
        rows += [{k: r[k] for k in ("surrogate", "config", "acc_mean", "acc_std",
                                    "epoch_time_vs_float")} for r in cnn_table]
        notes.append("CNN rows (config 'cnn w4a4'): epoch time is a ratio to the float CNN, "
                     "not to the float MLP.")
    result = {"rows": rows, "tables": {"accuracy (%, mean ± std over seeds)": acc_table,
                                       "batchnorm_flipped": flip_table,
                                       "epoch time vs float MLP": time_table,
                                       "smooth_vs_ste": verdict, "schedules": sched_table,
                                       "variants (free scales, hardtanh)": var_table,
                                       "cnn": cnn_table},
              "notes": notes, "float_accuracy": float_acc, "quick": quick,
              "configs": [c[0] for c in CONFIGS],
              "curves": {name: {sur: {str(s): results[("main", sur, name, s)]["loss"]
                                      for s in seeds if ("main", sur, name, s) in results}
                                for sur in surrogates}
                         for name, *_ in CONFIGS},
              "run": info | {"runs": len(results)}}
    from softfloor.benchmarks.training_plots import write_all
    plots = write_all(result, out_dir)
    if plots:
        notes.append("plots: " + ", ".join(plots))
    return result


def _run_info(seeds, epochs: int) -> dict:
    """What the figures say about their data: seeds, epochs, commit, date, and what a reduced
    run left out."""
    import datetime
    import subprocess
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, cwd=Path(__file__).parent, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    left_out = [n for n, on in (("BatchNorm switched", WITH_FLIPPED), ("schedules",
                                WITH_SCHEDULES), ("CNN", WITH_CNN), ("variants", WITH_VARIANTS))
                if not on]
    return {"seeds": list(seeds), "epochs": epochs, "commit": commit or None,
            "date": datetime.date.today().isoformat(),
            "reduced": ("main table only; without " + ", ".join(left_out)) if left_out else ""}

