"""The training benchmark's figures, drawn from its results (``training.json``).

``make bench SECTIONS=training`` draws them next to its JSON; to redraw them from a finished run
without training again::

    python -m softfloor.benchmarks.training_plots build/bench/training.json --out docs/img

* ``surrogates.png``: each surrogate of round and its gradient at several sharpness values
  (no data needed);
* ``curves.png``: training loss per epoch, one panel per configuration, one line per surrogate
  (median over seeds, the band from the lowest to the highest seed);
* ``accuracy_vs_bits.png``: hard-quantized test accuracy per configuration, mean over seeds
  with ± one standard deviation, zoomed on the band where the surrogates differ, and the full
  range below it (where ``ste_plain`` falls).

Every figure is 1000 px wide (readable at 800), states its data source (run, commit) and has
labelled axes and a legend. Matplotlib is needed (``pip install .[bench]``).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

#: Figure size in inches at :data:`DPI`: 10 x 100 = 1000 px wide.
WIDTH_IN, DPI = 10.0, 100
#: One colour and marker per surrogate, the same in every figure.
STYLE = {"float": ("black", "s"), "ste": ("#1f77b4", "o"), "ste_plain": ("#7f7f7f", "x"),
         "sigmoid": ("#ff7f0e", "^"), "dsq": ("#2ca02c", "v"), "dsq_hard": ("#98df8a", "<"),
         "fourier": ("#d62728", "D"), "lsq": ("#9467bd", "P"), "pact": ("#8c564b", "*")}


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    plt.rcParams.update({"font.size": 10, "axes.titlesize": 10.5, "axes.labelsize": 10,
                         "legend.fontsize": 9, "xtick.labelsize": 9, "ytick.labelsize": 9})
    return plt


def check_labelled(fig) -> None:
    """Raise ValueError unless every visible axes of ``fig`` has an x and a y label (its own
    or a shared sibling's) and the figure has a legend: no figure leaves here without them."""
    axes = [a for a in fig.axes if a.get_visible()]

    def labelled(ax, which: str) -> bool:
        shared = ax.get_shared_x_axes() if which == "x" else ax.get_shared_y_axes()
        get = (lambda a: a.get_xlabel()) if which == "x" else (lambda a: a.get_ylabel())
        return any(get(a).strip() for a in shared.get_siblings(ax) if a.get_visible())
    for ax in axes:
        for which in "xy":
            if not labelled(ax, which):
                raise ValueError(f"axes {ax.get_title()!r}: no {which} label")
    if not fig.legends and not any(a.get_legend() for a in axes):
        raise ValueError("figure without a legend")


def _save(fig, path: Path) -> Path:
    check_labelled(fig)
    fig.savefig(path, dpi=DPI)
    import matplotlib.pyplot as plt
    plt.close(fig)
    return Path(path)


def _suptitle(fig, head: str, source: str) -> None:
    """The figure's title and, wrapped to the figure's width, where its data comes from."""
    import textwrap
    fig.suptitle(head + "\n" + textwrap.fill(source, 110), fontsize=10.5)


def _style(name: str, k: int = 0) -> tuple[str, str]:
    if name in STYLE:
        return STYLE[name]
    import matplotlib
    return matplotlib.colormaps["tab10"](k % 10), "o"


def surrogates_figure(path: Path) -> Path:
    """Each surrogate (forward, top row) and its derivative (bottom row, log scale) against
    the input in quantization steps, at the sharpness values its schedule passes through."""
    import torch

    from softfloor.surrogates import (dsq_alpha_from_k, dsq_round, dsq_round_grad, fourier_r,
                                      fourier_round, fourier_round_grad, smooth_round,
                                      smooth_round_grad)
    plt = _plt()
    x = torch.linspace(-1.5, 2.45, 3951, dtype=torch.float64)  # to 2.45: no jump to 3 at the edge
    step = torch.floor(x + 0.5)
    fams = [("sigmoid (normalised)", smooth_round, smooth_round_grad, (1, 4, 20, 80),
             lambda k: f"k = {k:g}"),
            ("DSQ", dsq_round, dsq_round_grad, (0.5, 2, 10, 40),
             lambda k: f"k = {k:g} (α = {dsq_alpha_from_k(k):.2g})"),
            ("Fourier / arctan", lambda v, k: fourier_round(v, fourier_r(k)),
             lambda v, k: fourier_round_grad(v, fourier_r(k)), (1.5, 5, 20, 100),
             lambda k: f"k = {k:g} (r = {fourier_r(k):.2f})")]
    fig, axes = plt.subplots(2, 4, figsize=(WIDTH_IN, 6.2), sharex=True)
    cmap = plt.get_cmap("viridis")
    for j, (title, f, g, ks, lab) in enumerate(fams):
        top, bot = axes[0, j], axes[1, j]
        for i, k in enumerate(ks):
            c = cmap(i / (len(ks) - 1) * 0.85)
            top.plot(x, f(x, float(k)), color=c, lw=1.4, label=lab(float(k)))
            bot.plot(x, g(x, float(k)), color=c, lw=1.4)
        top.plot(x, step, "k--", lw=0.9, label="round half up")
        top.set_title(title)
        top.legend(loc="upper left", fontsize=8, handlelength=1.2, framealpha=0.9)
        bot.set_yscale("log")
        bot.set_ylim(1e-3, 200)
    # The STE: forward clamp(round(x), 0, 1) (1-bit codes here); gradient 1 inside the codes'
    # rounding range [-0.5, 1.5) ("ste", clipped) or everywhere ("ste_plain").
    top, bot = axes[0, 3], axes[1, 3]
    top.plot(x, torch.clamp(step, 0, 1), color=STYLE["ste"][0], lw=1.6,
             label="clamp(round(x), 0, 1)")
    top.plot(x, step, "k--", lw=0.9, label="round half up")
    top.set_title("STE, codes 0..1 (1 bit)")
    top.legend(loc="upper left", fontsize=8, handlelength=1.2, framealpha=0.9)
    inside = ((x >= -0.5) & (x < 1.5)).double()
    bot.plot(x, inside, color=STYLE["ste"][0], lw=1.6, label="ste: 1 inside the codes")
    bot.plot(x, torch.ones_like(x), "--", color=STYLE["ste_plain"][0], lw=1.4,
             label="ste_plain: 1 everywhere")
    bot.set_ylim(-0.05, 1.35)
    bot.legend(loc="upper left", fontsize=8, handlelength=1.6, framealpha=0.9)
    for ax in axes[0]:
        ax.set_ylim(-1.7, 3.4)  # room for the legend above the staircase
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("input x (steps)")
        ax.grid(alpha=0.3, which="both" if ax is not axes[1, 3] else "major")
    for j in range(4):
        axes[0, j].set_ylabel("output (steps)")
        axes[1, j].set_ylabel("gradient d/dx" + (" (log)" if j < 3 else ""))
    fig.suptitle("Surrogates of round(x): forward (top) and gradient (bottom); sharpness k rises "
                 "during training", fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def curves_figure(path: Path, curves: dict, source: str, ncols: int = 3) -> Path:
    """Training loss per epoch: ``curves[config][surrogate]`` is a list of per-seed loss lists
    (or ``{seed: losses}``); the line is the median over seeds, the band their range."""
    import numpy as np
    plt = _plt()
    configs = list(curves)
    nrows = math.ceil(len(configs) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(WIDTH_IN, 3.0 * nrows + 1.3), sharex=True,
                             sharey=True, squeeze=False)
    names: list[str] = []
    for ax, cfg in zip(axes.flat, configs):
        for k, (sur, runs) in enumerate(curves[cfg].items()):
            runs = list(runs.values()) if isinstance(runs, dict) else list(runs)
            n = min(len(r) for r in runs)
            if not n:
                continue
            arr = np.array([r[:n] for r in runs], dtype=float)
            ep = np.arange(1, n + 1)
            color, _ = _style(sur, k)
            ax.plot(ep, np.median(arr, axis=0), color=color, lw=1.3,
                    ls="--" if sur == "ste_plain" else "-", label=sur)
            if len(runs) > 1:
                ax.fill_between(ep, arr.min(axis=0), arr.max(axis=0), color=color, alpha=0.15,
                                lw=0)
            if sur not in names:
                names.append(sur)
        ax.set_title(cfg)
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="major")
    for ax in axes.flat[len(configs):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    for ax in axes[:, 0]:
        ax.set_ylabel("training loss\n(cross-entropy, log)")
    handles = {h.get_label(): h for ax in axes.flat for h in ax.get_lines()}
    fig.legend([handles[n] for n in names], names, loc="lower center", ncol=min(9, len(names)),
               frameon=False, title="surrogate (line: median over seeds, band: min to max)")
    _suptitle(fig, "Training loss per epoch, digits MLP 64-64-32-10", source)
    fig.tight_layout(rect=(0, 0.09, 1, 1))
    return _save(fig, path)


def _by_config(rows: list[dict], configs: list[str]):
    """``({surrogate: {config: (mean, std)}}, (float mean, std) or None)`` from ``rows``."""
    by: dict[str, dict[str, tuple[float, float]]] = {}
    float_acc = None
    for r in rows:
        if r.get("surrogate") == "float" and r.get("config") == "float":
            float_acc = (r["acc_mean"], r.get("acc_std") or 0.0)
        elif r.get("config") in configs and r.get("acc_mean") is not None:
            by.setdefault(r["surrogate"], {})[r["config"]] = (r["acc_mean"], r.get("acc_std") or 0)
    return by, float_acc


def zoom_band(rows: list[dict], configs: list[str]) -> tuple[float, float]:
    """The accuracy band (%) where the surrogates that train differ: from the lowest mean minus
    its spread to the highest plus its, leaving out a surrogate whose mean is anywhere 30
    points below the best there (``ste_plain`` below 8 bits)."""
    by, float_acc = _by_config(rows, configs)
    best = {c: max(v[c][0] for v in by.values() if c in v) for c in configs
            if any(c in v for v in by.values())}
    trains = [s for s in by if all(by[s][c][0] > best[c] - 30 for c in by[s])]
    lo = min(by[s][c][0] - by[s][c][1] for s in trains for c in by[s])
    hi = max([by[s][c][0] + by[s][c][1] for s in trains for c in by[s]] +
             ([float_acc[0] + float_acc[1]] if float_acc else []))
    return float(math.floor(lo - 0.5)), float(min(100.0, math.ceil(hi + 0.5)))


def accuracy_figure(path: Path, rows: list[dict], configs: list[str], source: str,
                    zoom: tuple[float, float] | None = None) -> Path:
    """Mean test accuracy ± std over seeds per configuration and surrogate (``rows``: the
    benchmark's ``rows``: surrogate, config, acc_mean, acc_std in %). Top: the band the
    surrogates share (``zoom``, default :func:`zoom_band`); bottom: 0-100 %, every line."""
    import numpy as np
    plt = _plt()
    by, float_acc = _by_config(rows, configs)
    sur = list(by)
    zoom = zoom or zoom_band(rows, configs)
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(WIDTH_IN, 8.0), sharex=True,
                                  gridspec_kw={"height_ratios": (3, 1.3)})
    xs = np.arange(len(configs))
    width = 0.7
    off = {s: (i - (len(sur) - 1) / 2) * width / max(1, len(sur)) for i, s in enumerate(sur)}
    hidden = []
    for k, s in enumerate(sur):
        color, marker = _style(s, k)
        pts = [(xs[i] + off[s], *by[s][c]) for i, c in enumerate(configs) if c in by[s]]
        if not pts:
            continue
        x, m, e = (np.array(v) for v in zip(*pts))
        for a in (ax, ax2):
            a.errorbar(x, m, yerr=e, color=color, marker=marker, ms=5, lw=1.2, capsize=2.5,
                       ls="--" if s == "ste_plain" else "-", label=s)
        if (m < zoom[0]).any():
            hidden.append(f"{s} ({m.min():.0f}-{m.max():.0f} %)")
    for a in (ax, ax2):
        if float_acc:
            a.axhline(float_acc[0], color="black", ls=":", lw=1.2,
                      label=f"float ({float_acc[0]:.2f} ± {float_acc[1]:.2f} %)")
            a.axhspan(float_acc[0] - float_acc[1], float_acc[0] + float_acc[1], color="black",
                      alpha=0.07, lw=0)
        a.grid(alpha=0.3)
    ax.set_ylim(*zoom)
    ax2.set_ylim(0, 100)
    ax.set_ylabel("test accuracy (%)\nhard-quantized, mean ± std")
    ax2.set_ylabel("full range (%)")
    ax.set_title(f"zoom {zoom[0]:g}-{zoom[1]:g} %" + (
        f"; below it: {', '.join(hidden)}, see the full range" if hidden else ""))
    ax2.set_xticks(xs, configs)
    ax2.set_xlabel("configuration: weight bits / activation bits (+BN: BatchNorm, "
                   "i4: 4-bit input)")
    fig.legend(*ax.get_legend_handles_labels(), loc="lower center", ncol=5, frameon=False,
               title="surrogate (error bars: ± one standard deviation over seeds)")
    _suptitle(fig, "Test accuracy vs bit width, digits MLP (360 test samples)", source)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return _save(fig, path)


def source_text(result: dict) -> str:
    """Where a figure's data comes from: run size, seeds, epochs, commit and date."""
    run = result.get("run") or {}
    seeds = run.get("seeds")
    parts = ["make bench SECTIONS=training" + (" (reduced: " + run["reduced"] + ")"
                                              if run.get("reduced") else "")]
    if seeds is not None:
        parts.append(f"seeds {seeds[0]}-{seeds[-1]}" if len(seeds) > 1 else f"seed {seeds[0]}")
    if run.get("epochs"):
        parts.append(f"{run['epochs']} epochs")
    if run.get("commit"):
        parts.append(f"commit {run['commit']}")
    if run.get("date"):
        parts.append(run["date"])
    return ", ".join(parts)


def write_all(result: dict, out_dir: Path) -> list[str]:
    """Every figure of a training benchmark result into ``out_dir``; returns the file names
    (empty without matplotlib)."""
    try:
        _plt()
    except ImportError:
        return []
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    made = [surrogates_figure(out_dir / "surrogates.png").name]
    src = source_text(result)
    if result.get("curves"):
        made.append(curves_figure(out_dir / "curves.png", result["curves"], src).name)
    configs = result.get("configs") or list(result.get("curves") or {})
    if result.get("rows") and configs:
        made.append(accuracy_figure(out_dir / "accuracy_vs_bits.png", result["rows"], configs,
                                    src).name)
    return made


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m softfloor.benchmarks.training_plots",
                                 description="Redraw the training benchmark's figures from its "
                                             "JSON.")
    ap.add_argument("json", type=Path, help="training.json of make bench SECTIONS=training")
    ap.add_argument("--out", type=Path, default=None, help="directory (default: the JSON's)")
    args = ap.parse_args(argv)
    result = json.loads(args.json.read_text())
    made = write_all(result, args.out or args.json.parent)
    print("wrote", ", ".join(made) or "nothing (matplotlib missing)")
    return 0 if made else 1


if __name__ == "__main__":
    sys.exit(main())
