"""The Pareto front of a sweep: accuracy (up) against logic (down) and inferences/s (up).

A point is on the front when no other point is at least as good on every objective and better on
one. Logic is the synthesized count (iCE40 logic cells, ECP5 LUT4 slots) or, for points that
were not synthesized, the planner's estimate; an objective no point has (e.g. inferences/s
without synthesis) is left out. With ``mean_over`` (e.g. the seeds) the points that differ only
in those fields are averaged first (accuracy, logic and rate: means; ``n``: how many).

:func:`write` makes ``pareto.md`` (the front as a table), ``pareto.png`` (every point, the front
drawn solid) and ``pareto.json``.
"""
from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

#: (key, sense, axis label)
OBJECTIVES = (("accuracy", "max", "test accuracy (%)"),
              ("logic", "min", "logic (iCE40 LCs / ECP5 LUT4s)"),
              ("inferences_per_second", "max", "inferences / s (Fmax / II)"))


def candidates(rows: list[dict], mean_over=()) -> list[dict]:
    """The finished rows as front candidates: ``params``, ``label``, ``accuracy``, ``logic``
    (with ``logic_source``), ``inferences_per_second``, ``device``, ``n``, ``ids``."""
    items = []
    for r in rows:
        if r.get("status") != "done" or r.get("accuracy") is None:
            continue
        logic, src = r.get("logic_cells"), "synthesized"
        if logic is None and r.get("logic_estimate") is not None:
            logic, src = r["logic_estimate"], "estimate"
        items.append({"params": r["params"], "label": r["label"], "accuracy": r["accuracy"],
                      "logic": logic, "logic_source": src if logic is not None else None,
                      "inferences_per_second": r.get("inferences_per_second"),
                      "fmax_mhz": r.get("fmax_mhz"),
                      "initiation_interval": r.get("initiation_interval"),
                      "device": r.get("device") or r["params"].get("device"), "n": 1,
                      "ids": [r["id"]], "dir": r.get("dir")})
    if not mean_over:
        return items
    groups: dict[str, list[dict]] = {}
    for it in items:
        key = json.dumps({k: v for k, v in it["params"].items() if k not in mean_over},
                         sort_keys=True, default=str)
        groups.setdefault(key, []).append(it)
    out = []
    for g in groups.values():
        m = dict(g[0])
        m["params"] = {k: v for k, v in g[0]["params"].items() if k not in mean_over}
        m["label"] = " ".join(w for w in g[0]["label"].split()
                              if w.split("=", 1)[0] not in mean_over)
        for k in ("accuracy", "logic", "inferences_per_second", "fmax_mhz",
                  "initiation_interval"):
            vals = [x[k] for x in g if x[k] is not None]
            m[k] = statistics.fmean(vals) if len(vals) == len(g) else None
        m["accuracy_std"] = statistics.pstdev([x["accuracy"] for x in g]) if len(g) > 1 else 0.0
        m["n"], m["ids"], m["dir"] = len(g), [i for x in g for i in x["ids"]], None
        out.append(m)
    return out


def active_objectives(items: list[dict]) -> list[tuple[str, str, str]]:
    """The objectives at least one candidate has a value for."""
    return [o for o in OBJECTIVES if any(it.get(o[0]) is not None for it in items)]


def front_mask(items: list[dict], objectives) -> list[bool]:
    """``True`` for the non-dominated candidates (a candidate missing an objective: False)."""
    def vec(it):
        return [it[k] if s == "max" else -it[k] for k, s, _ in objectives]
    ok = [all(it.get(k) is not None and not (isinstance(it[k], float) and math.isnan(it[k]))
              for k, _, _ in objectives) for it in items]
    vecs = [vec(it) if o else None for it, o in zip(items, ok)]
    mask = []
    for i, v in enumerate(vecs):
        if v is None:
            mask.append(False)
            continue
        dominated = any(w is not None and j != i and all(a >= b for a, b in zip(w, v))
                        and any(a > b for a, b in zip(w, v)) for j, w in enumerate(vecs))
        mask.append(not dominated)
    return mask


def markdown(items: list[dict], mask: list[bool], objectives, title: str = "") -> str:
    """The front as a markdown table, most accurate first."""
    if not items:
        return (f"# Pareto front{': ' + title if title else ''}\n\nNo finished point has an "
                "accuracy (none finished, or the stages end before train): no front.\n")
    front = sorted((it for it, m in zip(items, mask) if m), key=lambda it: -it["accuracy"])
    objs = ", ".join(f"{k} ({'higher' if s == 'max' else 'lower'} is better)"
                     for k, s, _ in objectives)
    lines = [f"# Pareto front{': ' + title if title else ''}", "",
             f"{len(front)} of {len(items)} points are on the front of {objs}.", "",
             "| point | device | accuracy % | logic | inferences/s | Fmax MHz | II | n |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for it in front:
        acc = f"{100 * it['accuracy']:.2f}"
        if it.get("accuracy_std"):
            acc += f" ± {100 * it['accuracy_std']:.2f}"
        logic = "" if it["logic"] is None else f"{it['logic']:.0f}" + \
            (" (est.)" if it["logic_source"] == "estimate" else "")
        ips = "" if it["inferences_per_second"] is None else f"{it['inferences_per_second']:,.0f}"
        fm = "" if it["fmax_mhz"] is None else f"{it['fmax_mhz']:.1f}"
        ii = "" if it["initiation_interval"] is None else f"{it['initiation_interval']:.0f}"
        lines.append(f"| {it['label']} | {it['device'] or ''} | {acc} | {logic} | {ips} | {fm} "
                     f"| {ii} | {it['n']} |")
    return "\n".join(lines) + "\n"


def plot(items: list[dict], mask: list[bool], objectives, path: Path, title: str = "",
         color_by: str | None = None, marker_by: str | None = None) -> Path | None:
    """Accuracy against logic (and against inferences/s, when measured); the front solid, the
    dominated points faint. Colour by ``color_by``'s values, marker by ``marker_by``'s."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.lines import Line2D
        from matplotlib.ticker import EngFormatter, LogLocator, NullFormatter
    except ImportError:
        return None
    xs = [o for o in objectives if o[0] != "accuracy"]
    if not xs or not items:
        return None
    cvals = _values(items, color_by)
    mvals = _values(items, marker_by)
    numeric = cvals and all(isinstance(v, (int, float)) for v in cvals)
    cmap = plt.get_cmap("viridis" if numeric else "tab10")
    colors = {v: cmap(i / max(1, len(cvals) - 1) if numeric else i % 10)
              for i, v in enumerate(cvals)}
    markers = dict(zip(mvals, "osD^vP*Xph"))
    fig, axes = plt.subplots(1, len(xs), figsize=(5.0 * len(xs), 4.4), squeeze=False)  # 1000 px
    for ax, (key, sense, label) in zip(axes[0], xs):
        for it, on in sorted(zip(items, mask), key=lambda t: t[1]):
            if it.get(key) is None:
                continue
            c = colors.get(it["params"].get(color_by), "C0")
            mk = markers.get(it["params"].get(marker_by), "o")
            ax.scatter(it[key], 100 * it["accuracy"], s=70 if on else 28, marker=mk, color=c,
                       alpha=1.0 if on else 0.3, edgecolors="black" if on else "none",
                       linewidths=1.0, zorder=3 if on else 2)
        vals = [it[key] for it in items if it.get(key)]
        if vals and max(vals) / max(min(vals), 1e-9) > 5:
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(label + (" — fewer is better" if sense == "min" else " — more is better"),
                      fontsize=11)
        ax.set_ylabel("test accuracy (%) — more is better", fontsize=11)
        ax.grid(True, which="both", alpha=0.3)
        ax.tick_params(labelsize=10)
    handles = [Line2D([], [], ls="", marker="o", color=colors[v], markersize=8,
                      label=f"{color_by}={v}") for v in cvals]
    handles += [Line2D([], [], ls="", marker=markers[v], color="grey", markersize=8,
                       label=f"{marker_by}={v}") for v in mvals]
    handles += [Line2D([], [], ls="", marker="o", color="grey", markeredgecolor="black",
                       markersize=9, label="on the Pareto front"),
                Line2D([], [], ls="", marker="o", color="grey", alpha=0.3, markersize=6,
                       label="dominated")]
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), fontsize=10,
               frameon=False, ncol=min(len(handles), 5))
    n_front = sum(mask)
    fig.suptitle(f"{title + ': ' if title else ''}{n_front} of {len(items)} points on the "
                 f"Pareto front (accuracy, logic"
                 f"{', inferences/s' if len(xs) > 1 else ''})", fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def _values(items, key) -> list:
    if not key:
        return []
    vals = list(dict.fromkeys(it["params"].get(key) for it in items
                              if it["params"].get(key) is not None))
    try:
        return sorted(vals)
    except TypeError:
        return vals


def default_encodings(axes: dict, mean_over=()) -> tuple[str | None, str | None]:
    """(colour field, marker field): the device marks, the first other varied field colours."""
    varied = []
    for name, values in axes.items():
        if name in mean_over:
            continue
        if values and isinstance(values[0], dict):
            keys = list(dict.fromkeys(k for v in values for k in v))
            varied += [k for k in keys if len({json.dumps(v.get(k), default=str)
                                               for v in values}) > 1][:1]
        elif len(values) > 1:
            varied.append(name)
    marker = "device" if "device" in varied else (varied[1] if len(varied) > 1 else None)
    color = next((v for v in varied if v != marker), None)
    return color, marker


def write(rows: list[dict], out_dir: str | Path, title: str = "", mean_over=(),
          color_by: str | None = None, marker_by: str | None = None) -> dict:
    """``pareto.md``, ``pareto.png`` (if matplotlib is installed) and ``pareto.json`` in
    ``out_dir``; returns ``{"front": n, "candidates": n, "files": [...]}``."""
    out = Path(out_dir)
    items = candidates(rows, mean_over)
    objs = active_objectives(items)
    mask = front_mask(items, objs)
    files = []
    (out / "pareto.md").write_text(markdown(items, mask, objs, title))
    files.append("pareto.md")
    (out / "pareto.json").write_text(json.dumps(
        {"objectives": [o[0] for o in objs], "mean_over": list(mean_over),
         "front": [it for it, m in zip(items, mask) if m]}, indent=1, default=str) + "\n")
    files.append("pareto.json")
    if plot(items, mask, objs, out / "pareto.png", title, color_by, marker_by):
        files.append("pareto.png")
    return {"front": sum(mask), "candidates": len(items), "files": files}
